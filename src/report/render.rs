//! The one reading of the summary table the report outputs share ([`SummaryView`]: which columns are labels,
//! which are metrics, their values as text and numbers) and the number formats of the markdown table, so the
//! findings, the HTML and the markdown report write every value the same way.

use crate::metrics::{MemoryModel, Recorder, Slo};
use polars::prelude::{Column, DataFrame, DataType};
use std::collections::HashSet;

/// The summary columns, in `Summary::cells()` order, taken from an empty run as `Table::summary` does.
pub(super) fn summary_column_names() -> Vec<String> {
    let empty = Recorder::new(0, false, false).finish(
        MemoryModel {
            weight_bytes: 0,
            workspace_bytes: 0,
            kv_bytes_per_slot: 0,
            kv_capacity_slots: 0,
        },
        Slo::default(),
    );
    empty.summary.cells().into_iter().map(|(name, _)| name).collect()
}

/// One column of the summary, read once.
pub(super) struct ViewColumn {
    pub name: String,
    /// Each row as text (labels as the markdown table writes them, unescaped); `None` for null.
    pub text: Vec<Option<String>>,
    /// Each row as a number, for numeric columns only.
    pub numbers: Option<Vec<Option<f64>>>,
    pub integer: bool,
}

/// The summary table split into its parts: `run`, the label columns, the metric columns.
pub(super) struct SummaryView {
    pub runs: Vec<String>,
    pub labels: Vec<ViewColumn>,
    pub metrics: Vec<ViewColumn>,
}

impl SummaryView {
    /// Labels are the columns between `run` and the first summary column (the layout `write_summary` writes);
    /// columns the summary did not have when this was built (later additions, validation columns) count as metrics
    /// when they come after it.
    pub fn new(df: &DataFrame) -> SummaryView {
        let known: HashSet<String> = summary_column_names().into_iter().collect();
        let mut runs = vec![String::new(); df.height()];
        let mut labels = Vec::new();
        let mut metrics = Vec::new();
        let mut in_metrics = false;
        for column in df.columns() {
            let name = column.name().as_str();
            if name == "run" {
                let view = ViewColumn::read(column);
                runs = view.text.into_iter().map(Option::unwrap_or_default).collect();
                continue;
            }
            in_metrics |= known.contains(name);
            if in_metrics {
                metrics.push(ViewColumn::read(column));
            } else {
                labels.push(ViewColumn::read(column));
            }
        }
        SummaryView { runs, labels, metrics }
    }

    pub fn rows(&self) -> usize {
        self.runs.len()
    }

    pub fn label(&self, name: &str) -> Option<&ViewColumn> {
        self.labels.iter().find(|c| c.name == name)
    }

    pub fn metric(&self, name: &str) -> Option<&ViewColumn> {
        self.metrics.iter().find(|c| c.name == name)
    }

    /// A metric's value in `row`; `None` when the column is missing, not numeric, or null there.
    pub fn number(&self, name: &str, row: usize) -> Option<f64> {
        self.metric(name)?.numbers.as_ref()?.get(row).copied().flatten()
    }
}

impl ViewColumn {
    fn read(column: &Column) -> ViewColumn {
        let name = column.name().to_string();
        let dtype = column.dtype();
        let integer = dtype.is_integer();
        let numbers = if dtype.is_primitive_numeric() {
            column
                .cast(&DataType::Float64)
                .ok()
                .and_then(|c| c.f64().ok().map(|ca| ca.iter().collect::<Vec<_>>()))
        } else {
            None
        };
        let text = if integer {
            let ints = column.cast(&DataType::Int64).ok();
            let ints = ints.as_ref().and_then(|c| c.i64().ok());
            match ints {
                Some(ca) => ca.iter().map(|v| v.map(|i| i.to_string())).collect(),
                None => vec![None; column.len()],
            }
        } else if let Some(numbers) = &numbers {
            // f64's Display: shortest round-trip form, `2` for 2.0, as the markdown table writes float labels.
            numbers.iter().map(|v| v.map(|f| f.to_string())).collect()
        } else if let Ok(ca) = column.str() {
            ca.iter().map(|v| v.map(str::to_owned)).collect()
        } else if let Ok(ca) = column.bool() {
            ca.iter().map(|v| v.map(|b| b.to_string())).collect()
        } else {
            (0..column.len())
                .map(|row| column.get(row).ok().filter(|v| !v.is_null()).map(|v| v.to_string()))
                .collect()
        };
        ViewColumn {
            name,
            text,
            numbers,
            integer,
        }
    }

    pub fn is_numeric(&self) -> bool {
        self.numbers.is_some()
    }

    pub fn is_constant(&self) -> bool {
        self.text.iter().all(|v| v == &self.text[0])
    }
}

/// How a summary value is written: the markdown table's formats, extended to every summary column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Format {
    Count,
    /// A fixed number of decimals.
    Fixed(usize),
    /// Up to 8 decimals, trailing zeros trimmed: MiB values are often exact binary fractions.
    Mib,
    /// Shortest round-trip form: columns whose scale is unknown lose nothing.
    Plain,
}

/// What a missing value shows, as in the markdown table.
pub(super) const MISSING: &str = "-";

impl Format {
    /// The format of a summary column: the markdown table's choice for its columns, the same rules for the rest.
    pub fn of_column(name: &str, integer: bool) -> Format {
        match name {
            "output_tok_per_s" | "total_tok_per_s" => Format::Fixed(1),
            // Request rates are often below 1/s, where one decimal would lose most of the value.
            "request_per_s" | "goodput_req_per_s" => Format::Fixed(2),
            "makespan_s" | "busy_fraction" => Format::Fixed(3),
            "mean_batch_size" => Format::Fixed(2),
            // Weights and workspace dwarf the exact KV fractions here: one decimal reads better.
            "peak_memory_mib" => Format::Fixed(1),
            _ if integer => Format::Count,
            _ if name.ends_with("_ms") => Format::Fixed(2),
            _ if name.ends_with("_mib") => Format::Mib,
            _ => Format::Plain,
        }
    }

    pub fn write(self, value: Option<f64>) -> String {
        let Some(v) = value else {
            return MISSING.to_owned();
        };
        match self {
            Format::Count => format!("{v:.0}"),
            Format::Fixed(decimals) => format!("{v:.decimals$}"),
            Format::Mib => {
                let s = format!("{v:.8}");
                if s.contains('.') {
                    s.trim_end_matches('0').trim_end_matches('.').to_owned()
                } else {
                    s // NaN, inf
                }
            }
            Format::Plain => v.to_string(),
        }
    }
}

/// A summary value of column `name` as the tables write it.
pub(super) fn format_metric(name: &str, value: Option<f64>) -> String {
    Format::of_column(name, false).write(value)
}

/// Results folders for the report tests, from the real simulator.
#[cfg(test)]
pub(super) mod fixture {
    use crate::metrics::RunReport;
    use crate::report::{Results, load_results, write_results};
    use crate::sim::run::{RecordOptions, simulate};
    use std::fs;
    use std::path::Path;

    /// A scenario name with characters every output must escape.
    pub const SCENARIO: &str = r#"mini "burst" <a&b> \ test"#;

    /// Policy (static, continuous, grouped) × max_batch_size (1, 4) on an analytic H100: 8 requests at once,
    /// prompts of 64 tokens, outputs 16, 32, 16, …; `steps` says whether the runs keep their step tables.
    pub fn scenario(steps: bool) -> String {
        format!(
            r#"
name = '{SCENARIO}'
seed = 3

[model]
name = "qwen2.5-0.5b"

[hardware]
gpu = "h100-sxm"

[cost]
kind = "analytic"

[workload]
arrival = "burst"
requests = 8
prompt_len = 64
output_len = [16, 32]

[output]
steps = {steps}

[sweep]
"scheduler.policy" = ["static", "continuous", "grouped"]
"scheduler.max_batch_size" = [1, 4]
"#
        )
    }

    /// Simulates `scenario` and writes its results under `dir`; returns the runs as simulated and as read back.
    pub fn simulated(dir: &Path, scenario: &str) -> (Vec<RunReport>, Results) {
        let path = dir.join("scenario.toml");
        fs::write(&path, scenario).unwrap();
        let runs: Vec<RunReport> = crate::workload::load_runs(&path, &[], None)
            .unwrap()
            .iter()
            .map(|spec| simulate(spec, RecordOptions::from_scenario(&spec.scenario)).unwrap())
            .collect();
        let out = dir.join("results");
        write_results(&out, &runs).unwrap();
        let results = load_results(&out).unwrap();
        (runs, results)
    }

    /// The six-run sweep with steps kept.
    pub fn sweep(dir: &Path) -> (Vec<RunReport>, Results) {
        simulated(dir, &scenario(true))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn summary_view_splits_labels_from_metrics() {
        let tmp = tempfile::tempdir().unwrap();
        let (runs, results) = fixture::sweep(tmp.path());
        let view = SummaryView::new(&results.summary);
        let labels: Vec<&str> = view.labels.iter().map(|c| c.name.as_str()).collect();
        let expected: Vec<&str> = runs[0].labels.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(labels, expected);
        let metrics: Vec<&str> = view.metrics.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(metrics, summary_column_names());
        assert_eq!(view.runs, runs.iter().map(|r| r.name.clone()).collect::<Vec<_>>());
        assert_eq!(
            view.number("output_tok_per_s", 2),
            Some(runs[2].metrics.summary.output_tok_per_s)
        );
    }

    #[test]
    fn formats_follow_the_markdown_table() {
        assert_eq!(format_metric("output_tok_per_s", Some(3120.44)), "3120.4");
        assert_eq!(format_metric("ttft_p95_ms", Some(12.345)), "12.35");
        assert_eq!(format_metric("kv_per_request_max_mib", Some(1.11328125)), "1.11328125");
        assert_eq!(format_metric("peak_memory_mib", Some(1052.26)), "1052.3");
        assert_eq!(format_metric("request_per_s", None), "-");
        assert_eq!(Format::of_column("requests", true).write(Some(16.0)), "16");
        assert_eq!(Format::of_column("something_new", false).write(Some(0.1)), "0.1");
    }
}
