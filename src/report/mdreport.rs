//! `report.md`: the findings, the charts as PNG links with their captions, and the runs as the markdown table
//! `simulate` prints (same columns, same number formats), built from the summary DataFrame.

use super::findings::Finding;
use super::markdown::{aligned_table, escape as escape_cell_md};
use super::render::{Format, MISSING, SummaryView, ViewColumn, url_path};
use super::{Chart, ReportError, Results, write_atomically};
use std::io::Write;
use std::path::Path;

/// The metric columns of the markdown table, `(header, summary column)`, in the order `markdown_table` writes them.
pub(super) const KEY_METRICS: [(&str, &str); 11] = [
    ("requests", "requests"),
    ("out tok/s", "output_tok_per_s"),
    ("req/s", "request_per_s"),
    ("TTFT mean ms", "ttft_mean_ms"),
    ("TTFT p95 ms", "ttft_p95_ms"),
    ("ITL mean ms", "itl_mean_ms"),
    ("ITL p95 ms", "itl_p95_ms"),
    ("TPOT mean ms", "tpot_mean_ms"),
    ("E2E mean ms", "e2e_mean_ms"),
    ("KV/req max MiB", "kv_per_request_max_mib"),
    ("peak mem MiB", "peak_memory_mib"),
];

/// The label columns that tell the runs apart, as `markdown_table` chooses them: with several runs, a label that is
/// the same in every run, or repeats an earlier kept column value for value (the sweep axis `scheduler.policy` and
/// the `policy` column), is left out.
pub(super) fn distinguishing_labels(view: &SummaryView) -> Vec<&ViewColumn> {
    let mut kept: Vec<&ViewColumn> = Vec::new();
    for column in &view.labels {
        let constant = view.rows() > 1 && column.is_constant();
        if !constant && !kept.iter().any(|k| k.text == column.text) {
            kept.push(column);
        }
    }
    kept
}

/// The summary as the markdown table `simulate` prints: `run`, the distinguishing labels, then the key metrics;
/// numeric columns right-aligned and every cell padded so the raw text lines up.
pub(super) fn key_table(view: &SummaryView) -> String {
    let labels = distinguishing_labels(view);
    let mut headers: Vec<String> = vec!["run".to_owned()];
    let mut right: Vec<bool> = vec![false];
    for label in &labels {
        headers.push(escape_cell_md(&label.name));
        right.push(label.is_numeric());
    }
    for (header, _) in KEY_METRICS {
        headers.push(header.to_owned());
        right.push(true);
    }

    let rows: Vec<Vec<String>> = (0..view.rows())
        .map(|row| {
            let mut cells = vec![escape_cell_md(&view.runs[row])];
            for label in &labels {
                cells.push(
                    label.text[row]
                        .as_deref()
                        .map_or_else(|| MISSING.to_owned(), escape_cell_md),
                );
            }
            for (_, column) in KEY_METRICS {
                let integer = view.metric(column).is_some_and(|c| c.integer);
                cells.push(Format::of_column(column, integer).write(view.number(column, row)));
            }
            cells
        })
        .collect();

    aligned_table(&headers, &right, &rows)
}

/// The report's title: the scenario (or scenarios) the results come from.
pub(super) fn report_title(view: &SummaryView) -> String {
    let mut names: Vec<&str> = Vec::new();
    if let Some(column) = view.label("scenario") {
        for name in column.text.iter().flatten() {
            if !names.contains(&name.as_str()) {
                names.push(name);
            }
        }
    }
    if names.is_empty() {
        "batchlab report".to_owned()
    } else {
        format!("batchlab report: {}", names.join(", "))
    }
}

/// Text for a markdown paragraph or list item: one line, and no `<` that could open an HTML tag.
fn inline(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\n' | '\r' => out.push(' '),
            '<' if chars
                .peek()
                .is_some_and(|n| n.is_ascii_alphabetic() || "/!?".contains(*n)) =>
            {
                out.push_str("&lt;")
            }
            c => out.push(c),
        }
    }
    out
}

/// The text of `report.md`, which lives in `folder` (chart links are relative to it).
pub(super) fn markdown(results: &Results, charts: &[Chart], findings: &[Finding], folder: &Path) -> String {
    let view = SummaryView::new(&results.summary);
    let mut out = format!("# {}\n\n", inline(&report_title(&view)));
    let shared: Vec<String> = view
        .shared_labels()
        .into_iter()
        .map(|(name, value)| format!("{name} = {value}"))
        .collect();
    if !shared.is_empty() {
        out.push_str(&format!("{}\n\n", inline(&shared.join(" · "))));
    }

    out.push_str("## Findings\n\n");
    if findings.is_empty() {
        out.push_str(if view.rows() == 0 {
            "None: the results have no runs.\n\n"
        } else {
            "None: no summary values to compare.\n\n"
        });
    } else {
        for finding in findings {
            out.push_str(&format!("- {}\n", inline(&finding.text)));
        }
        out.push('\n');
    }

    if let Some(validation) = &results.validation {
        out.push_str("## Validation: simulated against measured\n\n");
        out.push_str(&super::validation::markdown(validation, 3));
    }

    if !charts.is_empty() {
        out.push_str("## Charts\n\n");
        for chart in charts {
            let title = inline(&chart.title);
            let alt = title.replace('[', "\\[").replace(']', "\\]");
            let src = url_path(folder, &chart.png);
            out.push_str(&format!(
                "### {title}\n\n![{alt}]({src})\n\n{}\n\n",
                inline(&chart.caption)
            ));
        }
    }

    out.push_str("## Runs\n\n");
    if view.rows() == 0 {
        out.push_str("No runs.\n");
    } else {
        out.push_str(&key_table(&view));
        out.push_str(
            "\nEvery summary column is in `summary.csv` (also `.parquet`, `.json`; Prometheus text in `metrics.prom`); \
             each run's tables are in `runs/<run>/`: `requests.parquet`, `steps.parquet` and `trace.json` (Perfetto) \
             when steps were kept, `tokens.parquet` when tokens were traced.\n",
        );
    }
    out
}

/// Writes `report.md` (charts linked relative to the folder of `path`).
pub fn write_markdown(
    results: &Results,
    charts: &[Chart],
    findings: &[Finding],
    path: &Path,
) -> Result<(), ReportError> {
    let text = markdown(results, charts, findings, path.parent().unwrap_or(Path::new("")));
    write_atomically(path, |file| Ok(file.write_all(text.as_bytes())?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::findings::findings;
    use crate::report::html::tests::demo_chart;
    use crate::report::markdown_table;
    use crate::report::render::fixture;
    use std::fs;

    #[test]
    fn the_table_is_the_one_simulate_prints() {
        let tmp = tempfile::tempdir().unwrap();
        let (runs, results) = fixture::sweep(tmp.path());
        let view = SummaryView::new(&results.summary);
        assert_eq!(key_table(&view), markdown_table(&runs));
        // One run: nothing is "shared", every label shows, as in `markdown_table`.
        let one = tempfile::tempdir().unwrap();
        let single = fixture::scenario(true).replace(
            "\"scheduler.max_batch_size\" = [1, 4]",
            "\"scheduler.max_batch_size\" = [4]",
        );
        let single = single.replace("[\"static\", \"continuous\", \"grouped\"]", "[\"grouped\"]");
        let (runs, results) = fixture::simulated(one.path(), &single);
        assert_eq!(runs.len(), 1);
        assert_eq!(key_table(&SummaryView::new(&results.summary)), markdown_table(&runs));
    }

    #[test]
    fn the_report_opens_with_the_findings_then_charts_then_runs() {
        let tmp = tempfile::tempdir().unwrap();
        let (runs, results) = fixture::sweep(tmp.path());
        let chart = demo_chart(&results.dir);
        let found = findings(&results);
        let path = results.dir.join("report.md");
        write_markdown(&results, std::slice::from_ref(&chart), &found, &path).unwrap();
        let text = fs::read_to_string(&path).unwrap();

        let (head, body) = text.split_once("## Findings\n\n").unwrap();
        assert!(
            head.starts_with("# batchlab report: mini \"burst\" &lt;a&b> \\ test\n"),
            "{head}"
        );
        assert!(head.contains("seed = 3 · model = qwen2.5-0.5b · cost = analytic · gpu = h100-sxm"));
        let bullets: Vec<&str> = body.lines().take_while(|l| l.starts_with("- ")).collect();
        let expected: Vec<String> = found.iter().map(|f| format!("- {}", f.text)).collect();
        assert_eq!(bullets, expected);
        let charts = body.find("## Charts").unwrap();
        // `<demo>` could open an HTML tag where the markdown is rendered.
        assert!(
            body[charts..]
                .contains("### A &lt;demo> chart\n\n![A &lt;demo> chart](charts/demo.png)\n\nRed & square.\n")
        );
        let table = body.find("## Runs\n\n").unwrap();
        assert!(table > charts);
        assert!(body.contains(&markdown_table(&runs)));
    }

    #[test]
    fn labels_cannot_break_the_markdown() {
        assert_eq!(escape_cell_md("a|b\nc"), "a\\|b c");
        assert_eq!(inline("x <b>y</b> <1% a\nb"), "x &lt;b>y&lt;/b> <1% a b");
    }
}
