//! The summary as Prometheus text exposition (format 0.0.4), for dashboards and the node exporter's textfile
//! collector: one gauge family `batchlab_<column>` per numeric summary column, one sample per run, labelled with
//! `run` and every label column of the summary (model, policy, max_batch_size, the sweep axes, …). Nulls (a
//! statistic without samples, goodput without an SLO) are left out rather than written as NaN.

use super::render::{SummaryView, ViewColumn};
use super::{ReportError, Results, write_atomically};
use std::io::Write;
use std::path::Path;

/// What a summary column measures, for its `# HELP` line.
fn help(column: &str) -> String {
    let known = match column {
        "requests" => "Requests in the run",
        "completed" => "Requests that emitted their whole output",
        "prompt_tokens" => "Prompt tokens over all requests",
        "output_tokens" => "Output tokens over all requests (their targets)",
        "makespan_s" => "First arrival to last completion, seconds",
        "output_tok_per_s" => "Output tokens per second of makespan",
        "request_per_s" => "Requests per second of makespan",
        "total_tok_per_s" => "Prompt and output tokens per second of makespan",
        "goodput_req_per_s" => "Requests meeting every SLO per second of makespan",
        "steps" => "Engine steps",
        "busy_fraction" => "Fraction of the makespan spent in steps",
        "mean_batch_size" => "Sequences per step, mean over steps",
        "max_running" => "Most requests holding a batch slot at once",
        "max_queue_depth" => "Most requests waiting at once",
        "preemptions" => "Preemptions over all requests",
        "kv_bytes_per_token" => "KV cache bytes per token position",
        "kv_per_request_max_mib" => "Most KV cache one request held, MiB",
        "kv_per_request_mean_mib" => "KV cache a request held at its peak, mean over requests, MiB",
        "peak_kv_mib" => "Most KV cache held at once, MiB",
        "kv_capacity_mib" => "KV cache capacity, MiB",
        "weights_mib" => "Model weights, MiB",
        "workspace_mib" => "Workspace (activations, logits, library workspace), MiB",
        "peak_memory_mib" => "Weights + peak KV + workspace, MiB",
        _ => "",
    };
    if !known.is_empty() {
        return known.to_owned();
    }
    // Latency statistics: `<metric>_<stat>_ms`.
    let latency = column.strip_suffix("_ms").and_then(|rest| {
        let (metric, stat) = rest.rsplit_once('_')?;
        let metric = match metric {
            "ttft" => "Time to first token",
            "itl" => "Inter-token latency (pooled over requests)",
            "tpot" => "Time per output token",
            "e2e" => "End-to-end latency",
            _ => return None,
        };
        let stat = match stat {
            "mean" => "mean",
            "max" => "maximum",
            p if p.starts_with('p') => p,
            _ => return None,
        };
        Some(format!("{metric}, {stat}, milliseconds"))
    });
    latency.unwrap_or_else(|| format!("Summary column {column}"))
}

/// A valid metric or label name: `[a-zA-Z_][a-zA-Z0-9_]*`, every other character an underscore
/// (`workload.prompt_len` → `workload_prompt_len`).
pub(super) fn sanitise_name(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    // Names starting with `__` are reserved for Prometheus's own use.
    if out.starts_with("__") {
        out.insert_str(0, "label");
    }
    out
}

/// A label value between double quotes: backslash, double quote and line feed escaped.
fn escape_label_value(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// `# HELP` text: backslash and line feed escaped.
fn escape_help(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\n', "\\n")
}

/// A sample value as Prometheus parses it (Go's ParseFloat): integers as integers, floats in their shortest
/// round-trip form, `NaN`, `+Inf`, `-Inf`.
fn sample_value(column: &ViewColumn, row: usize) -> Option<String> {
    if column.integer {
        return column.text[row].clone();
    }
    let v = column.numbers.as_ref()?[row]?;
    Some(if v.is_nan() {
        "NaN".to_owned()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else {
        format!("{v:?}")
    })
}

/// The exposition text.
pub(super) fn prometheus_text(results: &Results) -> String {
    let view = SummaryView::new(&results.summary);
    // Label names after sanitising, made unique (`a.b` and `a_b` would otherwise collide) and kept clear of `run`.
    let mut names: Vec<String> = vec!["run".to_owned()];
    let mut labels: Vec<(String, &ViewColumn)> = Vec::new();
    for column in &view.labels {
        let base = sanitise_name(&column.name);
        let mut name = base.clone();
        let mut n = 2;
        while names.contains(&name) {
            name = format!("{base}_{n}");
            n += 1;
        }
        names.push(name.clone());
        labels.push((name, column));
    }
    let label_sets: Vec<String> = (0..view.rows())
        .map(|row| {
            let mut pairs = vec![format!("run=\"{}\"", escape_label_value(&view.runs[row]))];
            // A null label is the same as no label to Prometheus: leave it out.
            for (name, column) in &labels {
                if let Some(value) = &column.text[row] {
                    pairs.push(format!("{name}=\"{}\"", escape_label_value(value)));
                }
            }
            pairs.join(",")
        })
        .collect();

    let mut out = String::new();
    let mut families: Vec<String> = Vec::new();
    for column in view.metrics.iter().filter(|c| c.is_numeric()) {
        let name = format!("batchlab_{}", sanitise_name(&column.name));
        if families.contains(&name) {
            continue; // two columns sanitised alike: the first wins, as a family may appear once
        }
        let samples: Vec<String> = label_sets
            .iter()
            .enumerate()
            .filter_map(|(row, labels)| Some(format!("{name}{{{labels}}} {}\n", sample_value(column, row)?)))
            .collect();
        // A family without samples (goodput when no SLO was set) says nothing: leave it out.
        if samples.is_empty() {
            continue;
        }
        families.push(name.clone());
        out.push_str(&format!("# HELP {name} {}\n", escape_help(&help(&column.name))));
        out.push_str(&format!("# TYPE {name} gauge\n"));
        out.extend(samples);
    }
    out
}

/// Writes the summary's Prometheus text exposition to `path` (conventionally `metrics.prom`).
pub fn write_prometheus(results: &Results, path: &Path) -> Result<(), ReportError> {
    let text = prometheus_text(results);
    write_atomically(path, |file| Ok(file.write_all(text.as_bytes())?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::render::{fixture, summary_column_names};
    use std::collections::{BTreeMap, BTreeSet};

    #[test]
    fn names_and_values_are_made_valid() {
        assert_eq!(sanitise_name("workload.prompt_len"), "workload_prompt_len");
        assert_eq!(sanitise_name("9lives"), "_9lives");
        assert_eq!(sanitise_name("__x"), "label__x");
        assert_eq!(sanitise_name(""), "_");
        assert_eq!(escape_label_value("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        assert_eq!(help("ttft_p95_ms"), "Time to first token, p95, milliseconds");
        assert_eq!(help("new_column"), "Summary column new_column");
    }

    type Labels = Vec<(String, String)>;

    fn is_name(name: &str) -> bool {
        let mut chars = name.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    }

    fn is_label_name(name: &str) -> bool {
        is_name(name) && !name.contains(':') && !name.starts_with("__")
    }

    /// A sample line `name{label="value",…} value`, parsed by the text format's grammar: the metric name, the
    /// labels with their values unescaped, and the value.
    fn parse_sample(line: &str) -> Result<(String, Labels, f64), String> {
        let open = line.find('{').ok_or("no label set")?;
        let name = &line[..open];
        if !is_name(name) {
            return Err(format!("bad metric name {name:?}"));
        }
        let mut labels = Vec::new();
        let mut rest = &line[open + 1..];
        loop {
            if let Some(after) = rest.strip_prefix('}') {
                rest = after;
                break;
            }
            let eq = rest.find('=').ok_or("label without =")?;
            let label = &rest[..eq];
            if !is_label_name(label) {
                return Err(format!("bad label name {label:?}"));
            }
            let mut chars = rest[eq + 1..].char_indices();
            if chars.next().map(|(_, c)| c) != Some('"') {
                return Err("label value not quoted".into());
            }
            let mut value = String::new();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => match chars.next().map(|(_, c)| c) {
                        Some('\\') => value.push('\\'),
                        Some('"') => value.push('"'),
                        Some('n') => value.push('\n'),
                        other => return Err(format!("bad escape {other:?}")),
                    },
                    '"' => {
                        end = Some(eq + 1 + i + 1);
                        break;
                    }
                    '\n' => return Err("raw line feed in a label value".into()),
                    c => value.push(c),
                }
            }
            let end = end.ok_or("unterminated label value")?;
            labels.push((label.to_owned(), value));
            rest = &rest[end..];
            rest = rest.strip_prefix(',').unwrap_or(rest);
        }
        let value = rest.strip_prefix(' ').ok_or("no space before the value")?;
        let value = match value {
            "NaN" => f64::NAN,
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse::<f64>().map_err(|e| format!("value {v:?}: {e}"))?,
        };
        Ok((name.to_owned(), labels, value))
    }

    #[test]
    fn every_line_follows_the_text_format() {
        let tmp = tempfile::tempdir().unwrap();
        let (runs, results) = fixture::sweep(tmp.path());
        let path = tmp.path().join("metrics.prom");
        write_prometheus(&results, &path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.ends_with('\n'));

        let mut help: BTreeSet<String> = BTreeSet::new();
        let mut typed: BTreeSet<String> = BTreeSet::new();
        let mut samples: BTreeMap<String, Vec<(Labels, f64)>> = BTreeMap::new();
        let mut current: Option<String> = None;
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, doc) = rest.split_once(' ').unwrap();
                assert!(is_name(name) && !doc.is_empty(), "{line}");
                assert!(help.insert(name.to_owned()), "family {name} twice");
                current = Some(name.to_owned());
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                assert_eq!(
                    Some(rest.to_owned()),
                    current.as_ref().map(|n| format!("{n} gauge")),
                    "{line}"
                );
                typed.insert(current.clone().unwrap());
            } else {
                let (name, labels, value) = parse_sample(line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
                assert_eq!(Some(&name), current.as_ref(), "sample outside its family: {line}");
                assert!(typed.contains(&name), "sample before # TYPE: {line}");
                samples.entry(name).or_default().push((labels, value));
            }
        }
        assert_eq!(help, typed);

        // One family per numeric summary column that has a value (goodput has none: no SLO), one sample per run.
        let expected: BTreeSet<String> = summary_column_names()
            .into_iter()
            .filter(|c| c != "goodput_req_per_s")
            .map(|c| format!("batchlab_{c}"))
            .collect();
        assert_eq!(samples.keys().cloned().collect::<BTreeSet<_>>(), expected);
        for (name, family) in &samples {
            assert_eq!(family.len(), runs.len(), "{name}");
            let label_sets: BTreeSet<&Labels> = family.iter().map(|(l, _)| l).collect();
            assert_eq!(label_sets.len(), runs.len(), "{name}: two samples with the same labels");
        }

        // Labels: run, the identifying columns and the sweep axes, sanitised; values unescaped back to the original.
        // Runs go policy-major: r002 is continuous at max_batch_size 1.
        let (labels, value) = &samples["batchlab_output_tok_per_s"][2];
        let names: Vec<&str> = labels.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "run",
                "scenario",
                "seed",
                "scheduler_policy",
                "scheduler_max_batch_size",
                "model",
                "policy",
                "max_batch_size",
                "cost",
                "gpu"
            ]
        );
        let label = |name: &str| &labels.iter().find(|(n, _)| n == name).unwrap().1;
        assert_eq!(label("run"), &runs[2].name);
        assert_eq!(label("scenario"), fixture::SCENARIO);
        assert_eq!(label("policy"), "continuous");
        assert_eq!(label("max_batch_size"), "1");
        // The value round-trips exactly.
        assert_eq!(*value, runs[2].metrics.summary.output_tok_per_s);
        let (_, requests) = &samples["batchlab_requests"][0];
        assert_eq!(*requests, 8.0);
    }
}
