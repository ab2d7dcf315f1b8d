//! Writers: summary and per-run tables (Parquet, CSV, JSON) and the markdown table printed on stdout.
//! (Implemented by the report work item.)

use crate::metrics::RunReport;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("{0}")]
    Io(String),
}

/// Writes `<out>/summary.{csv,parquet,json}` and `<out>/runs/<name>/{requests,steps,tokens}.parquet`.
pub fn write_results(_out: &Path, _runs: &[RunReport]) -> Result<(), ReportError> {
    todo!("report work item")
}

/// A markdown table of the key summary columns, one row per run.
pub fn markdown_table(_runs: &[RunReport]) -> String {
    todo!("report work item")
}
