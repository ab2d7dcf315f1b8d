//! The markdown table printed after a run: the handful of numbers people compare between policies.

use crate::metrics::{Cell, RunReport, Summary};
use indexmap::IndexSet;

/// How a summary value is written.
#[derive(Clone, Copy)]
enum Format {
    Count,
    /// A fixed number of decimals.
    Fixed(usize),
    /// Up to 8 decimals, trailing zeros trimmed: MiB values are often exact binary fractions (1.11328125) and
    /// rounding them would hide that two configurations hold exactly the same memory.
    Mib,
}

struct Metric {
    header: &'static str,
    format: Format,
    value: fn(&Summary) -> Option<f64>,
}

const METRICS: [Metric; 11] = [
    Metric {
        header: "requests",
        format: Format::Count,
        value: |s| Some(s.requests as f64),
    },
    Metric {
        header: "out tok/s",
        format: Format::Fixed(1),
        value: |s| Some(s.output_tok_per_s),
    },
    // Request rates are often below 1/s, where one decimal would lose most of the value.
    Metric {
        header: "req/s",
        format: Format::Fixed(2),
        value: |s| Some(s.request_per_s),
    },
    Metric {
        header: "TTFT mean ms",
        format: Format::Fixed(2),
        value: |s| s.ttft_ms.mean,
    },
    Metric {
        header: "TTFT p95 ms",
        format: Format::Fixed(2),
        value: |s| s.ttft_ms.p95,
    },
    Metric {
        header: "ITL mean ms",
        format: Format::Fixed(2),
        value: |s| s.itl_ms.mean,
    },
    Metric {
        header: "ITL p95 ms",
        format: Format::Fixed(2),
        value: |s| s.itl_ms.p95,
    },
    Metric {
        header: "TPOT mean ms",
        format: Format::Fixed(2),
        value: |s| s.tpot_ms.mean,
    },
    Metric {
        header: "E2E mean ms",
        format: Format::Fixed(2),
        value: |s| s.e2e_ms.mean,
    },
    Metric {
        header: "KV/req max MiB",
        format: Format::Mib,
        value: |s| Some(s.kv_per_request_max_mib),
    },
    Metric {
        header: "peak mem MiB",
        // Weights and workspace dwarf the exact KV fractions here: one decimal reads better.
        format: Format::Fixed(1),
        value: |s| Some(s.peak_memory_mib),
    },
];

/// What a missing value (no samples, a label the run lacks) shows.
pub(super) const MISSING: &str = "-";

fn format_value(value: Option<f64>, format: Format) -> String {
    let Some(v) = value else {
        return MISSING.to_owned();
    };
    match format {
        Format::Count => format!("{v:.0}"),
        Format::Fixed(decimals) => format!("{v:.decimals$}"),
        Format::Mib => format_mib(v),
    }
}

/// Text safe inside a table cell: a `|` would end the cell early and a line break the row.
pub(super) fn escape(text: &str) -> String {
    text.replace('|', "\\|").replace(['\n', '\r'], " ")
}

/// The labels every run shares (name, formatted value), when there are several runs: what the markdown table leaves
/// out, for a line above it.
pub fn shared_labels(runs: &[RunReport]) -> Vec<(String, String)> {
    let Some((first, rest)) = runs.split_first() else {
        return Vec::new();
    };
    if rest.is_empty() {
        return Vec::new();
    }
    first
        .labels
        .iter()
        .filter(|(name, cell)| {
            rest.iter()
                .all(|r| r.labels.iter().any(|(n, c)| n == name && c == cell))
        })
        .map(|(name, cell)| (name.clone(), format_label(Some(cell))))
        .collect()
}

fn format_label(cell: Option<&Cell>) -> String {
    match cell {
        None | Some(Cell::Null) => MISSING.to_owned(),
        Some(Cell::Str(s)) => escape(s),
        Some(Cell::Int(i)) => i.to_string(),
        Some(Cell::Float(f)) => f.to_string(),
        Some(Cell::Bool(b)) => b.to_string(),
    }
}

/// A GitHub markdown table of the key summary columns, one row per run in the given order: `run`, the labels that
/// tell the runs apart (in order of first appearance; see [`shared_labels`] for the rest), then throughput, latency
/// and memory. Numeric columns are right-aligned, and cells are
/// padded so the raw text lines up in a terminal too.
pub fn markdown_table(runs: &[RunReport]) -> String {
    let all_labels: IndexSet<&str> = runs
        .iter()
        .flat_map(|r| r.labels.iter().map(|(name, _)| name.as_str()))
        .collect();
    let label_of = |run: &'_ RunReport, label: &str| -> String {
        format_label(run.labels.iter().find(|(name, _)| name == label).map(|(_, c)| c))
    };
    // With several runs, a label that is the same in every run (listed by `shared_labels` instead), or repeats an
    // earlier column value for value (a sweep axis `scheduler.policy` and the `policy` column), says nothing about
    // the rows: leave it out.
    let mut columns: Vec<(&str, Vec<String>)> = Vec::new();
    for &label in &all_labels {
        let values: Vec<String> = runs.iter().map(|r| label_of(r, label)).collect();
        let constant = runs.len() > 1 && values.iter().all(|v| v == &values[0]);
        if !constant && !columns.iter().any(|(_, kept)| kept == &values) {
            columns.push((label, values));
        }
    }
    let labels: Vec<&str> = columns.iter().map(|(label, _)| *label).collect();

    let mut headers: Vec<String> = vec!["run".to_owned()];
    let mut right: Vec<bool> = vec![false];
    for &label in &labels {
        headers.push(escape(label));
        let mut cells = runs
            .iter()
            .filter_map(|r| r.labels.iter().find(|(name, _)| name == label).map(|(_, c)| c));
        let numeric = cells.all(|c| matches!(c, Cell::Int(_) | Cell::Float(_) | Cell::Null));
        right.push(numeric);
    }
    for metric in &METRICS {
        headers.push(metric.header.to_owned());
        right.push(true);
    }

    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|run| {
            let mut row = vec![escape(&run.name)];
            for &label in &labels {
                row.push(label_of(run, label));
            }
            for metric in &METRICS {
                row.push(format_value((metric.value)(&run.metrics.summary), metric.format));
            }
            row
        })
        .collect();

    aligned_table(&headers, &right, &rows)
}

/// A markdown table whose cells are padded so the raw text lines up too; `right` marks right-aligned columns.
pub(crate) fn aligned_table(headers: &[String], right: &[bool], rows: &[Vec<String>]) -> String {
    // The separator needs at least three dashes.
    let widths: Vec<usize> = (0..headers.len())
        .map(|i| {
            rows.iter()
                .map(|row| row[i].chars().count())
                .chain([headers[i].chars().count(), 3])
                .max()
                .unwrap_or(3)
        })
        .collect();
    let line = |cells: &[String]| {
        let padded: Vec<String> = (cells.iter().zip(&widths).zip(right))
            .map(|((cell, &width), &right)| {
                if right {
                    format!("{cell:>width$}")
                } else {
                    format!("{cell:<width$}")
                }
            })
            .collect();
        format!("| {} |\n", padded.join(" | "))
    };
    let separator: Vec<String> = (widths.iter().zip(right))
        .map(|(&width, &right)| {
            if right {
                format!("{}:", "-".repeat(width - 1))
            } else {
                "-".repeat(width)
            }
        })
        .collect();
    let mut out = line(headers);
    out.push_str(&line(&separator));
    for row in rows {
        out.push_str(&line(row));
    }
    out
}

/// MiB with up to 8 decimals, trailing zeros trimmed (exact binary fractions such as 1.11328125 stay exact).
pub(crate) fn format_mib(v: f64) -> String {
    let s = format!("{v:.8}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        s // NaN, inf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mib_values_keep_exact_binary_fractions() {
        assert_eq!(format_value(Some(1.11328125), Format::Mib), "1.11328125");
        assert_eq!(format_value(Some(1024.0), Format::Mib), "1024");
        assert_eq!(format_value(Some(0.5), Format::Mib), "0.5");
        assert_eq!(format_value(Some(1.0 / 3.0), Format::Mib), "0.33333333");
        assert_eq!(format_value(None, Format::Mib), "-");
        assert_eq!(format_value(Some(2.345), Format::Fixed(1)), "2.3");
        assert_eq!(format_value(Some(12.0), Format::Count), "12");
    }

    #[test]
    fn text_cannot_break_the_table() {
        assert_eq!(escape("a|b\nc"), "a\\|b c");
        assert_eq!(format_label(Some(&Cell::Str("x|y".into()))), "x\\|y");
    }
}
