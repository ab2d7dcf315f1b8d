//! Writers: summary and per-run tables (Parquet, CSV, JSON), the markdown table printed on stdout, and the report
//! drawn from a results folder (charts, HTML and markdown reports, Prometheus and Perfetto exports).
//!
//! Layout under the output folder:
//!
//! ```text
//! summary.csv, summary.parquet, summary.json   one row per run: run, labels…, Summary::cells()…
//! runs/<name>/requests.parquet                  one row per request
//! runs/<name>/steps.parquet                     one row per step (only when the run kept steps)
//! runs/<name>/tokens.parquet                    one row per output token (only when the run traced tokens)
//! runs/<name>/trace.json                        Chrome/Perfetto trace of the steps and requests (report)
//! charts/<id>.png, charts/<id>.svg              the charts (report)
//! report.html, report.md                        findings, charts and tables (report)
//! metrics.prom                                  the summary in Prometheus text format (report)
//! ```
//!
//! A validated folder (`batchlab validate`) holds the *measured* runs in that layout, and besides:
//!
//! ```text
//! simulated/summary.*, simulated/runs/<name>/…  the same runs simulated
//! runs/<name>/comparison.csv                    every summary metric measured, simulated, relative error
//! runs/<name>/step_errors.parquet, .csv         one row per measured step: shape, measured, predicted, error
//! validation.csv, validation.parquet            comparison.csv of every run, with a `run` column
//! validation.json                               the aggregate: per-metric median/p95, step kinds, plans, ranking
//! validation.md                                 the same in words and tables
//! device.json                                   the GPU the runs were measured on (name, compute capability, …)
//! ```
//!
//! Same input, same bytes: Parquet is written with fixed compression and statistics settings and carries no
//! timestamp, CSV and JSON are plain text in a fixed order. Every file is written under a temporary name and renamed
//! into place, and the summary is written after every run's files, so an interrupted write never leaves a
//! complete-looking summary beside partial runs.

pub mod baseline;
mod findings;
mod html;
mod markdown;
mod mdreport;
mod perfetto;
pub mod plots;
mod prometheus;
mod records;
mod render;
mod results;
mod table;
mod validation;

pub use findings::{Finding, FindingKind, findings};
pub use html::write_html;
pub use markdown::{markdown_table, shared_labels};
pub use mdreport::write_markdown;
pub use perfetto::write_trace;
pub use plots::render_charts;
pub use prometheus::write_prometheus;
pub use render::{ReportFiles, render_report};
pub use results::{Results, RunTables, load_results};
pub use validation::{VALIDATION_JSON, headline_markdown, load_validation, validation_markdown};

/// One rendered chart: `<results>/charts/<id>.png` and `.svg`.
#[derive(Clone, Debug, PartialEq)]
pub struct Chart {
    /// File stem, unique in the report.
    pub id: String,
    pub title: String,
    /// One or two sentences saying what the chart shows and how to read it.
    pub caption: String,
    pub png: PathBuf,
    pub svg: PathBuf,
}

use crate::metrics::RunReport;
use polars::prelude::{
    Column, CsvWriter, DataFrame, ParquetCompression, ParquetWriter, PolarsError, PolarsResult, SerWriter,
    StatisticsOptions,
};
use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use table::Table;

pub const SUMMARY_FILES: [&str; 3] = ["summary.csv", "summary.parquet", "summary.json"];

/// The files that mark a results folder as validated (written by `validate` after the measured results).
pub const VALIDATION_FILES: [&str; 5] = [
    "validation.json",
    "validation.md",
    "validation.csv",
    "validation.parquet",
    DEVICE_JSON,
];

/// `<results>/device.json`: the GPU a validation measured on (`validate` writes it; older folders lack it).
pub const DEVICE_JSON: &str = "device.json";

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{}: {source}", path.display())]
    Polars { path: PathBuf, source: PolarsError },
    #[error("{}: {source}", path.display())]
    Json { path: PathBuf, source: serde_json::Error },
    #[error("run name {name:?} cannot be a folder name: {reason}")]
    RunName { name: String, reason: &'static str },
    #[error("two runs are named {0:?}")]
    DuplicateRun(String),
    #[error(
        "run {run:?}: column {column:?} appears twice (labels must differ from each other, `run` and the summary columns)"
    )]
    DuplicateColumn { run: String, column: String },
}

/// Writes every run's files, then the summary: `<out>/runs/<name>/…` and `<out>/summary.{csv,parquet,json}`.
pub fn write_results(out: &Path, runs: &[RunReport]) -> Result<(), ReportError> {
    check_run_names(runs)?;
    // A summary left by an earlier write to the same folder would describe other runs; remove it first, so that if
    // this write is interrupted the folder has no summary at all.
    for file in SUMMARY_FILES {
        remove_if_present(&out.join(file))?;
    }
    // Likewise a validation of earlier runs: `validate` writes its own after these results.
    for file in VALIDATION_FILES {
        remove_if_present(&out.join(file))?;
    }
    for run in runs {
        write_run(out, run)?;
    }
    write_summary(out, runs)
}

/// Writes one run's record tables under `<out>/runs/<name>/`. Depends only on its arguments, so runs may be written
/// in parallel.
pub fn write_run(out: &Path, run: &RunReport) -> Result<(), ReportError> {
    check_run_name(&run.name)?;
    let dir = out.join("runs").join(&run.name);
    fs::create_dir_all(&dir).map_err(|source| ReportError::Io {
        path: dir.clone(),
        source,
    })?;
    let metrics = &run.metrics;
    write_parquet(&dir.join("requests.parquet"), || records::requests(&metrics.requests))?;
    // Optional tables are absent rather than empty when not recorded; a stale one from an earlier write to the same
    // folder would be mistaken for this run's.
    let steps_path = dir.join("steps.parquet");
    if metrics.steps.is_empty() {
        remove_if_present(&steps_path)?;
    } else {
        write_parquet(&steps_path, || records::steps(&metrics.steps))?;
    }
    let tokens_path = dir.join("tokens.parquet");
    match &metrics.tokens {
        Some(tokens) => write_parquet(&tokens_path, || records::tokens(tokens))?,
        None => remove_if_present(&tokens_path)?,
    }
    Ok(())
}

/// Writes `<out>/summary.{csv,parquet,json}`: one row per run, in the given order.
pub fn write_summary(out: &Path, runs: &[RunReport]) -> Result<(), ReportError> {
    check_run_names(runs)?;
    let table = Table::summary(runs)?;
    fs::create_dir_all(out).map_err(|source| ReportError::Io {
        path: out.to_owned(),
        source,
    })?;

    let csv_path = out.join("summary.csv");
    let mut df = table.to_data_frame().map_err(|source| ReportError::Polars {
        path: csv_path.clone(),
        source,
    })?;
    write_atomically(&csv_path, |file| {
        CsvWriter::new(file).finish(&mut df)?;
        Ok(())
    })?;
    write_parquet(&out.join("summary.parquet"), || Ok(df.clone()))?;

    let json_path = out.join("summary.json");
    let mut json = serde_json::to_vec_pretty(&table.to_json()).map_err(|source| ReportError::Json {
        path: json_path.clone(),
        source,
    })?;
    json.push(b'\n');
    write_atomically(&json_path, |file| Ok(file.write_all(&json)?))
}

fn check_run_names(runs: &[RunReport]) -> Result<(), ReportError> {
    let mut seen = HashSet::new();
    for run in runs {
        check_run_name(&run.name)?;
        if !seen.insert(run.name.as_str()) {
            return Err(ReportError::DuplicateRun(run.name.clone()));
        }
    }
    Ok(())
}

/// A run name becomes one folder under `runs/`: it must not be empty, climb out or nest.
fn check_run_name(name: &str) -> Result<(), ReportError> {
    let reason = if name.is_empty() {
        Some("it is empty")
    } else if name == "." || name == ".." {
        Some("it names a folder that exists already")
    } else if name.contains(['/', '\\']) {
        Some("it contains a path separator")
    } else if name.chars().any(char::is_control) {
        Some("it contains a control character")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(ReportError::RunName {
            name: name.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

fn remove_if_present(path: &Path) -> Result<(), ReportError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(ReportError::Io {
            path: path.to_owned(),
            source: e,
        }),
        _ => Ok(()),
    }
}

/// Why encoding a file failed, before the path is attached.
pub(crate) enum EncodeError {
    Io(io::Error),
    Polars(PolarsError),
}

impl From<io::Error> for EncodeError {
    fn from(e: io::Error) -> Self {
        EncodeError::Io(e)
    }
}

impl From<PolarsError> for EncodeError {
    fn from(e: PolarsError) -> Self {
        EncodeError::Polars(e)
    }
}

impl EncodeError {
    fn at(self, path: &Path) -> ReportError {
        let path = path.to_owned();
        match self {
            EncodeError::Io(source) => ReportError::Io { path, source },
            EncodeError::Polars(source) => ReportError::Polars { path, source },
        }
    }
}

/// Writes `path` through a temporary file in the same folder, renamed into place once complete: a reader (or an
/// interrupted run) sees the old file, no file, or the whole new one, never a truncated one.
pub(crate) fn write_atomically(
    path: &Path,
    encode: impl FnOnce(&mut File) -> Result<(), EncodeError>,
) -> Result<(), ReportError> {
    // Unique within the process (runs may be written from several threads) and across processes.
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let name = path.file_name().map_or_else(Default::default, |n| n.to_string_lossy());
    let tmp = path.with_file_name(format!(
        ".{name}.{}-{}.tmp",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let result = File::create(&tmp)
        .map_err(EncodeError::from)
        .and_then(|mut file| {
            encode(&mut file)?;
            file.flush()?;
            Ok(())
        })
        .map_err(|e| e.at(path))
        .and_then(|()| {
            fs::rename(&tmp, path).map_err(|source| ReportError::Io {
                path: path.to_owned(),
                source,
            })
        });
    if result.is_err() {
        // Best effort: the error being returned matters more than a leftover temporary file.
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Writes a text file (a markdown report, say) through a temporary file, creating its folder.
pub fn write_markdown_file(path: &Path, text: &str) -> Result<(), ReportError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(|source| ReportError::Io {
            path: dir.to_owned(),
            source,
        })?;
    }
    write_atomically(path, |file| Ok(file.write_all(text.as_bytes())?))
}

/// One headline metric of one simulated run, as simulated and at the least and most it reaches with every step's
/// time scaled by each of [`crate::sim::run::SENSITIVITY_SCALES`] (`simulate --sensitivity`).
#[derive(Clone, Debug, PartialEq)]
pub struct SensitivityRow {
    pub run: String,
    pub metric: &'static str,
    pub simulated: f64,
    pub least: f64,
    pub most: f64,
}

impl SensitivityRow {
    /// Half the band relative to the simulated value (0 where that is not positive).
    pub fn half_width(&self) -> f64 {
        crate::validate::compare::band_half_width(self.simulated, (self.least, self.most)).unwrap_or(0.0)
    }
}

/// Writes `sensitivity.csv`: run, metric, simulated, least, most, half_width.
pub fn write_sensitivity(path: &Path, rows: &[SensitivityRow]) -> Result<(), ReportError> {
    let column = |name: &str, f: &dyn Fn(&SensitivityRow) -> f64| {
        Column::new(name.into(), rows.iter().map(f).collect::<Vec<f64>>())
    };
    let df = DataFrame::new(
        rows.len(),
        vec![
            Column::new("run".into(), rows.iter().map(|r| r.run.as_str()).collect::<Vec<&str>>()),
            Column::new("metric".into(), rows.iter().map(|r| r.metric).collect::<Vec<&str>>()),
            column("simulated", &|r| r.simulated),
            column("least", &|r| r.least),
            column("most", &|r| r.most),
            column("half_width", &SensitivityRow::half_width),
        ],
    );
    let mut df = df.map_err(|source| ReportError::Polars {
        path: path.to_owned(),
        source,
    })?;
    write_csv(path, &mut df)
}

/// Writes `df` as CSV (the summary's format), through a temporary file.
pub(crate) fn write_csv(path: &Path, df: &mut DataFrame) -> Result<(), ReportError> {
    write_atomically(path, |file| {
        CsvWriter::new(file).finish(df)?;
        Ok(())
    })
}

/// Parquet with every setting that affects the bytes fixed: zstd at the library's default level, min/max/null-count
/// statistics, one row group up to 512² rows, 1 MiB pages. Polars writes `created_by = "Polars"` and the Arrow
/// schema as metadata, nothing time- or host-dependent.
pub(crate) fn write_parquet(path: &Path, frame: impl FnOnce() -> PolarsResult<DataFrame>) -> Result<(), ReportError> {
    let mut df = frame().map_err(|source| ReportError::Polars {
        path: path.to_owned(),
        source,
    })?;
    write_atomically(path, |file| {
        let mut buffered = BufWriter::new(file);
        ParquetWriter::new(&mut buffered)
            .with_compression(ParquetCompression::Zstd(None))
            .with_statistics(StatisticsOptions {
                min_value: true,
                max_value: true,
                distinct_count: false,
                null_count: true,
                binary_statistics_truncate_length: None,
            })
            .with_row_group_size(Some(512 * 512))
            .with_data_page_size(Some(1024 * 1024))
            .with_key_value_metadata(None)
            .finish(&mut df)?;
        buffered.flush()?;
        Ok(())
    })
}

#[cfg(test)]
mod tests;
