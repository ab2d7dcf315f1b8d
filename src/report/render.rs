//! `batchlab report`: a results folder → `report.html`, `report.md`, `metrics.prom` and a Perfetto trace per run.
//!
//! Also the one reading of the summary table the report outputs share ([`SummaryView`]: which columns are labels,
//! which are metrics, their values as text and numbers) and the number formats of the markdown table, so the
//! findings, the HTML and the markdown report write every value the same way.

use super::findings::findings;
use super::markdown::format_mib;
use super::{Chart, ReportError, Results, load_results, remove_if_present};
use crate::metrics::Summary;
use polars::prelude::{Column, DataFrame, DataType};
use std::collections::HashSet;
use std::path::{Component, Path, PathBuf};

/// What [`render_report`] wrote.
#[derive(Clone, Debug, PartialEq)]
pub struct ReportFiles {
    pub html: PathBuf,
    pub markdown: PathBuf,
    pub prometheus: PathBuf,
    /// `runs/<name>/trace.json` of every run that kept its steps, in the summary's order.
    pub traces: Vec<PathBuf>,
    /// The charts drawn, as the chart function returned them.
    pub charts: Vec<Chart>,
}

/// Loads the results in `dir`, draws the charts with `charts`, computes the findings and writes `dir/report.html`,
/// `dir/report.md`, `dir/metrics.prom` and `dir/runs/<name>/trace.json` for every run with a step table.
pub fn render_report(
    dir: &Path,
    charts: impl FnOnce(&Results) -> Result<Vec<Chart>, ReportError>,
) -> Result<ReportFiles, ReportError> {
    let results = load_results(dir)?;
    let charts = charts(&results)?;
    let findings = findings(&results);

    let mut traces = Vec::new();
    for run in &results.runs {
        let path = dir.join("runs").join(&run.name).join("trace.json");
        if run.steps.is_some() {
            super::perfetto::write_trace(run, &path)?;
            traces.push(path);
        } else {
            // A trace left by an earlier report of a run with steps would be mistaken for this one's.
            remove_if_present(&path)?;
        }
    }
    let prometheus = dir.join("metrics.prom");
    super::prometheus::write_prometheus(&results, &prometheus)?;
    let markdown = dir.join("report.md");
    super::mdreport::write_markdown(&results, &charts, &findings, &markdown)?;
    // Last: the HTML links to the other files, so it appears only once they exist.
    let html = dir.join("report.html");
    super::html::write_html(&results, &charts, &findings, &html)?;
    Ok(ReportFiles {
        html,
        markdown,
        prometheus,
        traces,
        charts,
    })
}

/// The summary columns, in `Summary::cells()` order, taken from an empty run as `Table::summary` does.
pub(super) fn summary_column_names() -> Vec<String> {
    Summary::column_names().into_iter().collect()
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

    /// The labels every run shares, when there are several runs (as `shared_labels`).
    pub fn shared_labels(&self) -> Vec<(&str, &str)> {
        if self.rows() < 2 {
            return Vec::new();
        }
        self.labels
            .iter()
            .filter(|c| c.is_constant())
            .filter_map(|c| Some((c.name.as_str(), c.text[0].as_deref()?)))
            .collect()
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
pub(super) use super::markdown::MISSING;

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
            Format::Mib => format_mib(v),
            Format::Plain => v.to_string(),
        }
    }
}

/// `path` as a URL relative to `folder` (where the page linking to it lives), each component percent-encoded;
/// a path outside `folder` is linked as given.
pub(super) fn url_path(folder: &Path, path: &Path) -> String {
    let relative = path.strip_prefix(folder).unwrap_or(path);
    let mut out = String::new();
    for (i, component) in relative.components().enumerate() {
        match component {
            Component::RootDir => out.push('/'),
            Component::Normal(name) => {
                if i > 0 && !out.ends_with('/') {
                    out.push('/');
                }
                out.push_str(&percent_encode(&name.to_string_lossy()));
            }
            Component::CurDir => {}
            Component::ParentDir => {
                if i > 0 && !out.ends_with('/') {
                    out.push('/');
                }
                out.push_str("..");
            }
            Component::Prefix(prefix) => out.push_str(&prefix.as_os_str().to_string_lossy()),
        }
    }
    out
}

/// Percent-encodes everything but RFC 3986's unreserved characters, so a name is one safe path segment.
pub(super) fn percent_encode(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
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
    use std::fs;

    use crate::report::tests::files;

    fn no_charts(_: &Results) -> Result<Vec<Chart>, ReportError> {
        Ok(Vec::new())
    }

    #[test]
    fn render_report_writes_every_file_the_same_way_twice() {
        let tmp = tempfile::tempdir().unwrap();
        let (_, results) = fixture::sweep(tmp.path());
        let dir = results.dir.clone();
        let written = render_report(&dir, no_charts).unwrap();
        assert_eq!(written.html, dir.join("report.html"));
        assert_eq!(written.markdown, dir.join("report.md"));
        assert_eq!(written.prometheus, dir.join("metrics.prom"));
        let expected_traces: Vec<PathBuf> = results
            .runs
            .iter()
            .map(|r| dir.join("runs").join(&r.name).join("trace.json"))
            .collect();
        assert_eq!(written.traces, expected_traces);
        let first = files(&dir);
        for path in [&written.html, &written.markdown, &written.prometheus]
            .into_iter()
            .chain(&written.traces)
        {
            let bytes = &first[path.strip_prefix(&dir).unwrap()];
            assert!(bytes.len() > 100, "{} is nearly empty", path.display());
        }
        // No temporary file left behind.
        assert!(
            first.keys().all(|p| !p.to_string_lossy().ends_with(".tmp")),
            "{:?}",
            first.keys()
        );

        render_report(&dir, no_charts).unwrap();
        assert_eq!(files(&dir), first, "a second render changed some file");
        // And a fresh folder from the same scenario gives the same report.
        let tmp2 = tempfile::tempdir().unwrap();
        let (_, results2) = fixture::sweep(tmp2.path());
        render_report(&results2.dir, no_charts).unwrap();
        assert_eq!(files(&results2.dir), first);
    }

    #[test]
    fn runs_without_steps_get_no_trace_and_lose_a_stale_one() {
        let tmp = tempfile::tempdir().unwrap();
        let (_, results) = fixture::simulated(tmp.path(), &fixture::scenario(false));
        assert!(results.runs.iter().all(|r| r.steps.is_none()));
        let stale = results.dir.join("runs").join(&results.runs[0].name).join("trace.json");
        fs::write(&stale, "{}").unwrap();
        let written = render_report(&results.dir, no_charts).unwrap();
        assert!(written.traces.is_empty());
        assert!(!stale.exists(), "a trace from an earlier render survived");
        assert!(written.html.is_file() && written.markdown.is_file() && written.prometheus.is_file());
    }

    #[test]
    fn chart_errors_stop_the_report() {
        let tmp = tempfile::tempdir().unwrap();
        let (_, results) = fixture::sweep(tmp.path());
        let err = render_report(&results.dir, |_| Err(ReportError::DuplicateRun("chart failure".into()))).unwrap_err();
        assert!(err.to_string().contains("chart failure"));
        assert!(!results.dir.join("report.html").exists());
    }

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
        let shared: Vec<&str> = view.shared_labels().into_iter().map(|(n, _)| n).collect();
        assert_eq!(shared, ["scenario", "seed", "model", "cost", "gpu"]);
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

    #[test]
    fn links_are_relative_and_encoded() {
        let folder = Path::new("/out/x");
        assert_eq!(url_path(folder, Path::new("/out/x/charts/a b.png")), "charts/a%20b.png");
        assert_eq!(url_path(folder, Path::new("/elsewhere/c.png")), "/elsewhere/c.png");
        assert_eq!(
            url_path(folder, Path::new("runs/r#1/x?.parquet")),
            "runs/r%231/x%3F.parquet"
        );
        assert_eq!(percent_encode("q=1&<é>"), "q%3D1%26%3C%C3%A9%3E");
    }
}
