//! A results folder read back: what `simulate` (and later `validate`) wrote, as DataFrames, for the charts, the HTML
//! and markdown reports and the exports. Reading back, rather than passing in-memory results along, lets
//! `batchlab report <dir>` redraw any earlier run and keeps one path for both.

use super::ReportError;
use crate::validate::ValidationSummary;
use polars::prelude::{DataFrame, ParquetReader, SerReader};
use std::fs::File;
use std::path::{Path, PathBuf};

/// One run's tables.
#[derive(Clone, Debug)]
pub struct RunTables {
    /// The run's name (its folder under `runs/` and its `run` column in the summary).
    pub name: String,
    /// One row per request: see `records.rs` for the columns.
    pub requests: DataFrame,
    /// One row per step, when the run kept them.
    pub steps: Option<DataFrame>,
    /// One row per output token, for runs small enough to trace.
    pub tokens: Option<DataFrame>,
    /// One row per step with the cost model's prediction beside the measured time (validated runs only).
    pub step_errors: Option<DataFrame>,
}

/// Everything in a results folder.
#[derive(Clone, Debug)]
pub struct Results {
    pub dir: PathBuf,
    /// One row per run: `run`, the label columns, then every summary metric.
    pub summary: DataFrame,
    /// In the summary's row order.
    pub runs: Vec<RunTables>,
    /// What `validate` found, when the folder holds a validation (`validation.json`).
    pub validation: Option<ValidationSummary>,
}

fn read(path: &Path) -> Result<DataFrame, ReportError> {
    let file = File::open(path).map_err(|source| ReportError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    ParquetReader::new(file).finish().map_err(|source| ReportError::Polars {
        path: path.to_path_buf(),
        source,
    })
}

fn read_optional(path: &Path) -> Result<Option<DataFrame>, ReportError> {
    if path.is_file() { read(path).map(Some) } else { Ok(None) }
}

/// Reads `dir/summary.parquet` and each run's tables.
pub fn load_results(dir: &Path) -> Result<Results, ReportError> {
    let summary = read(&dir.join("summary.parquet"))?;
    let names = summary
        .column("run")
        .and_then(|c| c.str().cloned())
        .map_err(|source| ReportError::Polars {
            path: dir.join("summary.parquet"),
            source,
        })?;
    let mut runs = Vec::with_capacity(summary.height());
    for name in names.iter().flatten() {
        let run_dir = dir.join("runs").join(name);
        runs.push(RunTables {
            name: name.to_string(),
            requests: read(&run_dir.join("requests.parquet"))?,
            steps: read_optional(&run_dir.join("steps.parquet"))?,
            tokens: read_optional(&run_dir.join("tokens.parquet"))?,
            step_errors: read_optional(&run_dir.join("step_errors.parquet"))?,
        });
    }
    Ok(Results {
        dir: dir.to_path_buf(),
        summary,
        runs,
        validation: super::validation::load_validation(dir)?,
    })
}
