//! Findings in plain words, computed from the summary table: what each policy buys (or costs) over static batching
//! in every configuration the runs share, summarised when there are many, and how the metrics range over a sweep
//! of one policy. Every number is a summary value written as the tables write it, or a ratio of two of them, so a
//! reader can find it in the table.

use super::Results;
use super::render::{SummaryView, ViewColumn, format_metric};
use crate::metrics::percentile_sorted;
use indexmap::IndexMap;

/// One finding: a sentence or two.
#[derive(Clone, Debug, PartialEq)]
pub struct Finding {
    pub text: String,
    pub kind: FindingKind,
    /// The runs (`run` column) whose summary rows the numbers come from; for a comparison the baseline run first.
    pub runs: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FindingKind {
    /// One policy against the baseline over many configurations: median and range.
    Overview,
    /// One policy against the baseline in one configuration.
    Comparison,
    /// How a metric ranges over runs (a sweep of one policy, or the best run of all).
    Sweep,
    /// The only run.
    Run,
}

/// The baseline every other policy is compared with, when the results have it.
const BASELINE: &str = "static";

/// Individual comparisons given after an overview; with at most this many configurations each is given instead.
const TOP_CASES: usize = 3;

/// The metrics a comparison reports besides throughput: (words, summary column, unit). Lower is better for all.
const CHANGES: [(&str, &str, &str); 4] = [
    ("TTFT mean", "ttft_mean_ms", "ms"),
    ("TTFT p95", "ttft_p95_ms", "ms"),
    ("ITL p95", "itl_p95_ms", "ms"),
    ("peak KV", "peak_kv_mib", "MiB"),
];

const THROUGHPUT: &str = "output_tok_per_s";

/// A summary value fit for a sentence: present and finite (a NaN says nothing in words).
fn value(view: &SummaryView, column: &str, row: usize) -> Option<f64> {
    view.number(column, row).filter(|v| v.is_finite())
}

/// The findings for a results folder; none for empty results.
pub fn findings(results: &Results) -> Vec<Finding> {
    let view = SummaryView::new(&results.summary);
    if view.rows() == 0 {
        return Vec::new();
    }
    let policies = view.label("policy").map(distinct).unwrap_or_default();
    if policies.len() < 2 {
        return sweep_findings(&view, policies.first().map(String::as_str));
    }
    let mut out = policy_findings(&view, &policies);
    if out.is_empty() {
        // No two runs share a configuration (every run differs in more than its policy): ranges are all there is.
        return sweep_findings(&view, None);
    }
    if view.rows() > 2 {
        out.extend(best_run(&view));
    }
    out
}

/// The label columns that restate the policy value for value: `policy` and a `scheduler.policy` sweep axis.
fn restating_policy(view: &SummaryView) -> Vec<&str> {
    let Some(policy) = view.label("policy") else {
        return Vec::new();
    };
    view.labels
        .iter()
        .filter(|c| c.text == policy.text)
        .map(|c| c.name.as_str())
        .collect()
}

/// Distinct non-null values in order of first appearance.
fn distinct(column: &ViewColumn) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for value in column.text.iter().flatten() {
        if !out.contains(value) {
            out.push(value.clone());
        }
    }
    out
}

/// `text` with its first letter in upper case.
fn sentence(text: String) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => text,
    }
}

/// The label columns that say how the runs' configurations differ: those that vary, once each (a sweep axis that
/// repeats a fixed column, `scheduler.max_batch_size` and `max_batch_size`, appears under the fixed column's name).
/// `skip` leaves out columns that only restate the policy.
fn describing_columns<'a>(view: &'a SummaryView, skip: &[&str]) -> Vec<&'a ViewColumn> {
    let mut kept: Vec<&ViewColumn> = Vec::new();
    for column in &view.labels {
        if skip.contains(&column.name.as_str()) || column.is_constant() {
            continue;
        }
        match kept.iter_mut().find(|k| k.text == column.text) {
            Some(k) if k.name.contains('.') && !column.name.contains('.') => *k = column,
            Some(_) => {}
            None => kept.push(column),
        }
    }
    kept
}

/// How one configuration reads in words: "on qwen2.5-1.5b at prompt_len 512, max_batch_size 8 with 16 requests".
struct Describer<'a> {
    columns: Vec<(&'a ViewColumn, String)>,
}

impl<'a> Describer<'a> {
    fn new(columns: Vec<&'a ViewColumn>) -> Describer<'a> {
        let last = |name: &str| name.rsplit('.').next().unwrap_or(name).to_owned();
        let named = columns
            .iter()
            .map(|c| {
                let short = last(&c.name);
                // Two axes ending alike (`scheduler.x`, `workload.x`) keep their full names.
                let clash = columns.iter().any(|o| o.name != c.name && last(&o.name) == short);
                (*c, if clash { c.name.clone() } else { short })
            })
            .collect();
        Describer { columns: named }
    }

    fn is_model(column: &ViewColumn) -> bool {
        column.name == "model" || column.name == "model.name"
    }

    fn requests(count: &str) -> String {
        if count == "1" {
            "1 request".to_owned()
        } else {
            format!("{count} requests")
        }
    }

    fn value(column: &ViewColumn, row: usize) -> Option<&str> {
        column.text[row].as_deref()
    }

    /// " on M at a 1, b 2 with N requests", or "" when nothing varies.
    fn situation(&self, row: usize) -> String {
        let mut model = None;
        let mut settings = Vec::new();
        let mut requests = None;
        for (column, short) in &self.columns {
            let Some(value) = Self::value(column, row) else {
                continue;
            };
            if Self::is_model(column) {
                model = Some(value);
            } else if short == "requests" {
                requests = Some(value);
            } else {
                settings.push(format!("{short} {value}"));
            }
        }
        let mut out = String::new();
        if let Some(model) = model {
            out.push_str(&format!(" on {model}"));
        }
        if !settings.is_empty() {
            out.push_str(&format!(" at {}", settings.join(", ")));
        }
        if let Some(requests) = requests {
            out.push_str(&format!(" with {}", Self::requests(requests)));
        }
        out
    }

    /// "qwen2.5-1.5b, prompt_len 512, 16 requests": the same, as a list.
    fn list(&self, row: usize) -> String {
        let items: Vec<String> = self
            .columns
            .iter()
            .filter_map(|(column, short)| {
                let value = Self::value(column, row)?;
                Some(if Self::is_model(column) {
                    value.to_owned()
                } else if short == "requests" {
                    Self::requests(value)
                } else {
                    format!("{short} {value}")
                })
            })
            .collect();
        items.join(", ")
    }
}

/// One policy against the baseline in one configuration.
struct Case {
    base: usize,
    row: usize,
    /// Output throughput over the baseline's; `None` when the baseline has none.
    ratio: Option<f64>,
}

fn throughput_ratio(view: &SummaryView, base: usize, row: usize) -> Option<f64> {
    let a = value(view, THROUGHPUT, base)?;
    let b = value(view, THROUGHPUT, row)?;
    (a > 0.0).then(|| b / a)
}

/// A ratio as written: two decimals.
fn ratio_text(ratio: f64) -> String {
    format!("{ratio:.2}")
}

/// "fell 24%", "rose under 1%": the relative change from `a` to `b`, which must differ.
fn relative_change(a: f64, b: f64) -> String {
    let direction = if b < a { "fell" } else { "rose" };
    let percent = ((b - a) / a).abs() * 100.0;
    if percent < 1.0 {
        format!("{direction} under 1%")
    } else {
        format!("{direction} {percent:.0}%")
    }
}

/// "TTFT mean fell 24% (340.00 → 260.00 ms)"; `None` when either value is missing.
fn change_clause(
    view: &SummaryView,
    (words, column, unit): (&str, &str, &str),
    base: usize,
    row: usize,
) -> Option<String> {
    let a = value(view, column, base)?;
    let b = value(view, column, row)?;
    let (fa, fb) = (format_metric(column, Some(a)), format_metric(column, Some(b)));
    Some(if fa == fb {
        format!("{words} unchanged ({fa} {unit})")
    } else if a == 0.0 {
        let direction = if b < a { "fell" } else { "rose" };
        format!("{words} {direction} from {fa} to {fb} {unit}")
    } else {
        format!("{words} {} ({fa} → {fb} {unit})", relative_change(a, b))
    })
}

fn comparison(view: &SummaryView, describer: &Describer, policy: &str, baseline: &str, case: &Case) -> Finding {
    let situation = describer.situation(case.row);
    let a = value(view, THROUGHPUT, case.base);
    let b = value(view, THROUGHPUT, case.row);
    let mut text = match (case.ratio, a, b) {
        (Some(ratio), Some(a), Some(b)) => {
            let verdict = if ratio_text(ratio) == "1.00" {
                format!("matched {baseline}'s output throughput")
            } else if ratio > 1.0 {
                format!("raised output throughput {}× over {baseline}", ratio_text(ratio))
            } else {
                format!("lost {:.0}% of {baseline}'s output throughput", (1.0 - ratio) * 100.0)
            };
            format!(
                "{policy} batching {verdict}{situation} ({} → {} tok/s)",
                format_metric(THROUGHPUT, Some(a)),
                format_metric(THROUGHPUT, Some(b))
            )
        }
        _ => format!("{policy} batching compared with {baseline}{situation}"),
    };
    let changes: Vec<String> = CHANGES
        .into_iter()
        .filter_map(|metric| change_clause(view, metric, case.base, case.row))
        .collect();
    if !changes.is_empty() {
        text.push_str(&format!("; {}", changes.join(", ")));
    }
    text.push('.');
    Finding {
        text: sentence(text),
        kind: FindingKind::Comparison,
        runs: vec![view.runs[case.base].clone(), view.runs[case.row].clone()],
    }
}

fn median(mut values: Vec<f64>) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    Some(percentile_sorted(&values, 50.0))
}

/// "+3%", "-35%", "0%".
fn signed_percent(percent: f64) -> String {
    if percent.abs() < 0.5 {
        "0%".to_owned()
    } else {
        format!("{percent:+.0}%")
    }
}

fn overview(view: &SummaryView, policy: &str, baseline: &str, cases: &[&Case]) -> Option<Finding> {
    let ratios: Vec<f64> = cases.iter().filter_map(|c| c.ratio).collect();
    let median_ratio = median(ratios.clone())?;
    let lowest = ratios.iter().copied().fold(f64::INFINITY, f64::min);
    let highest = ratios.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let equal = ratios.iter().filter(|&&r| ratio_text(r) == "1.00").count();
    let higher = ratios.iter().filter(|&&r| r > 1.0 && ratio_text(r) != "1.00").count();
    let lower = ratios.len() - equal - higher;
    let mut text = format!(
        "across {} configurations, {policy} batching's output throughput was a median {}× {baseline}'s (range \
         {}×–{}×; higher in {higher}, equal in {equal}, lower in {lower})",
        ratios.len(),
        ratio_text(median_ratio),
        ratio_text(lowest),
        ratio_text(highest),
    );
    let medians: Vec<String> = CHANGES
        .into_iter()
        .filter_map(|(words, column, _)| {
            let percents = cases
                .iter()
                .filter_map(|c| {
                    let a = value(view, column, c.base)?;
                    let b = value(view, column, c.row)?;
                    (a > 0.0).then(|| (b - a) / a * 100.0)
                })
                .collect();
            Some(format!("{words} {}", signed_percent(median(percents)?)))
        })
        .collect();
    if !medians.is_empty() {
        text.push_str(&format!("; median change in {}", medians.join(", ")));
    }
    text.push('.');
    let mut runs: Vec<String> = Vec::new();
    for case in cases.iter().filter(|c| c.ratio.is_some()) {
        runs.push(view.runs[case.base].clone());
        runs.push(view.runs[case.row].clone());
    }
    Some(Finding {
        text: sentence(text),
        kind: FindingKind::Overview,
        runs,
    })
}

/// Each non-baseline policy against the baseline, configuration by configuration: configurations are the groups of
/// runs that agree on every label except the policy (and columns that restate it).
fn policy_findings(view: &SummaryView, policies: &[String]) -> Vec<Finding> {
    let Some(policy_column) = view.label("policy") else {
        return Vec::new();
    };
    let restating = restating_policy(view);
    let key_columns: Vec<&ViewColumn> = view
        .labels
        .iter()
        .filter(|c| !restating.contains(&c.name.as_str()))
        .collect();
    let mut groups: IndexMap<Vec<Option<&str>>, Vec<usize>> = IndexMap::new();
    for row in 0..view.rows() {
        let key = key_columns.iter().map(|c| c.text[row].as_deref()).collect();
        groups.entry(key).or_default().push(row);
    }
    let describer = Describer::new(describing_columns(view, &restating));
    let baseline = policies
        .iter()
        .find(|p| p.as_str() == BASELINE)
        .unwrap_or(&policies[0])
        .as_str();
    let policy_of = |row: usize| policy_column.text[row].as_deref();

    let mut out = Vec::new();
    for policy in policies.iter().filter(|p| p.as_str() != baseline) {
        let cases: Vec<Case> = groups
            .values()
            .filter_map(|rows| {
                let base = *rows.iter().find(|&&r| policy_of(r) == Some(baseline))?;
                let row = *rows.iter().find(|&&r| policy_of(r) == Some(policy.as_str()))?;
                Some(Case {
                    base,
                    row,
                    ratio: throughput_ratio(view, base, row),
                })
            })
            .collect();
        if cases.len() <= TOP_CASES {
            out.extend(
                cases
                    .iter()
                    .map(|case| comparison(view, &describer, policy, baseline, case)),
            );
            continue;
        }
        let mut ranked: Vec<&Case> = cases.iter().filter(|c| c.ratio.is_some()).collect();
        let Some(finding) = overview(view, policy, baseline, &ranked) else {
            continue;
        };
        // The most telling cases: the largest changes either way (by |ln ratio|, so 2× and 0.5× weigh the same);
        // a policy that gains in most configurations can still lose badly in a few, and those matter most.
        let size = |c: &Case| c.ratio.map_or(0.0, |r| r.ln().abs());
        ranked.sort_by(|a, b| size(b).total_cmp(&size(a)));
        out.push(finding);
        out.extend(
            ranked
                .iter()
                .take(TOP_CASES)
                .map(|case| comparison(view, &describer, policy, baseline, case)),
        );
    }
    out
}

/// A run in words: "r003 (continuous, max_batch_size 8)", or just "r003" when nothing tells it apart.
fn run_label(view: &SummaryView, describer: &Describer, row: usize, with_policy: bool) -> String {
    let mut items = Vec::new();
    if with_policy && let Some(policy) = view.label("policy").and_then(|c| c.text[row].as_deref()) {
        items.push(policy.to_owned());
    }
    let list = describer.list(row);
    if !list.is_empty() {
        items.push(list);
    }
    if items.is_empty() {
        view.runs[row].clone()
    } else {
        format!("{} ({})", view.runs[row], items.join(", "))
    }
}

/// The run with the highest output throughput, when there are several policies and configurations.
fn best_run(view: &SummaryView) -> Option<Finding> {
    let (row, value) = (0..view.rows())
        .filter_map(|row| Some((row, value(view, THROUGHPUT, row)?)))
        .fold(None, |best: Option<(usize, f64)>, (row, v)| match best {
            Some((_, b)) if b >= v => best,
            _ => Some((row, v)),
        })?;
    let describer = Describer::new(describing_columns(view, &restating_policy(view)));
    Some(Finding {
        text: format!(
            "The highest output throughput, {} tok/s, came from run {}.",
            format_metric(THROUGHPUT, Some(value)),
            run_label(view, &describer, row, true)
        ),
        kind: FindingKind::Sweep,
        runs: vec![view.runs[row].clone()],
    })
}

/// (words, column, unit) of the metrics whose ranges a sweep reports.
const RANGES: [(&str, &str, &str); 5] = [
    ("output throughput", THROUGHPUT, "tok/s"),
    ("TTFT mean", "ttft_mean_ms", "ms"),
    ("TTFT p95", "ttft_p95_ms", "ms"),
    ("ITL p95", "itl_p95_ms", "ms"),
    ("peak memory", "peak_memory_mib", "MiB"),
];

/// The only run's numbers, or each metric's range over the runs; `policy` is the one policy all runs share, if so.
fn sweep_findings(view: &SummaryView, policy: Option<&str>) -> Vec<Finding> {
    let describer = Describer::new(describing_columns(view, &[]));
    let policy = policy.map(|p| format!("{p} batching"));
    if view.rows() == 1 {
        let values: Vec<String> = RANGES
            .into_iter()
            .filter_map(|(words, column, unit)| {
                let value = value(view, column, 0)?;
                Some(format!("{words} {} {unit}", format_metric(column, Some(value))))
            })
            .collect();
        if values.is_empty() {
            return Vec::new();
        }
        let what = policy.map_or_else(String::new, |p| format!(" ({p})"));
        return vec![Finding {
            text: format!("Run {}{what}: {}.", view.runs[0], values.join(", ")),
            kind: FindingKind::Run,
            runs: vec![view.runs[0].clone()],
        }];
    }
    let lead = policy.map_or_else(String::new, |p| format!("with {p}, "));
    RANGES
        .into_iter()
        .filter_map(|(words, column, unit)| {
            let values: Vec<(usize, f64)> = (0..view.rows())
                .filter_map(|row| Some((row, value(view, column, row)?)))
                .collect();
            // The first run holding the extreme, so ties name the earliest run.
            let low = values.iter().copied().reduce(|m, x| if x.1 < m.1 { x } else { m })?;
            let high = values.iter().copied().reduce(|m, x| if x.1 > m.1 { x } else { m })?;
            let (fl, fh) = (format_metric(column, Some(low.1)), format_metric(column, Some(high.1)));
            let text = if fl == fh {
                format!("{lead}{words} was {fl} {unit} in every run.")
            } else {
                let ratio = if low.1 > 0.0 {
                    format!(", {}×", ratio_text(high.1 / low.1))
                } else {
                    String::new()
                };
                format!(
                    "{lead}{words} ranged from {fl} {unit} in {} to {fh} {unit} in {}{ratio}.",
                    run_label(view, &describer, low.0, false),
                    run_label(view, &describer, high.0, false),
                )
            };
            Some(Finding {
                text: sentence(text),
                kind: FindingKind::Sweep,
                runs: vec![view.runs[low.0].clone(), view.runs[high.0].clone()],
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::render::fixture;
    use polars::prelude::{Column, DataFrame, PlSmallStr};
    use std::path::PathBuf;

    fn results(columns: Vec<Column>) -> Results {
        let height = columns.first().map_or(0, |c| c.len());
        Results {
            dir: PathBuf::from("unused"),
            summary: DataFrame::new(height, columns).unwrap(),
            runs: Vec::new(),
            validation: None,
        }
    }

    fn strs(name: &str, values: &[&str]) -> Column {
        Column::new(PlSmallStr::from_str(name), values)
    }

    fn f64s(name: &str, values: &[f64]) -> Column {
        Column::new(PlSmallStr::from_str(name), values)
    }

    fn i64s(name: &str, values: &[i64]) -> Column {
        Column::new(PlSmallStr::from_str(name), values)
    }

    fn texts(findings: &[Finding]) -> Vec<&str> {
        findings.iter().map(|f| f.text.as_str()).collect()
    }

    /// Each comparison of the simulated sweep, recomputed from the summary DataFrame as a reader would.
    #[test]
    fn comparisons_match_the_summary_columns() {
        let tmp = tempfile::tempdir().unwrap();
        let (_, results) = fixture::sweep(tmp.path());
        let df = &results.summary;
        let found = findings(&results);
        let row_of = |run: &str| {
            let runs: Vec<&str> = df.column("run").unwrap().str().unwrap().iter().flatten().collect();
            runs.iter().position(|r| *r == run).unwrap()
        };
        let f = |name: &str, row: usize| df.column(name).unwrap().f64().unwrap().get(row).unwrap();
        let text = |name: &str, row: usize| df.column(name).unwrap().get(row).unwrap().to_string();

        // Two configurations (max_batch_size 1 and 4), each with continuous and grouped against static, then the
        // best run.
        let comparisons: Vec<&Finding> = found.iter().filter(|f| f.kind == FindingKind::Comparison).collect();
        assert_eq!(comparisons.len(), 4, "{:#?}", texts(&found));
        for finding in comparisons {
            let (base, row) = (row_of(&finding.runs[0]), row_of(&finding.runs[1]));
            assert_eq!(text("policy", base), "\"static\"");
            let policy = text("policy", row).trim_matches('"').to_owned();
            assert_eq!(text("max_batch_size", base), text("max_batch_size", row));
            let (a, b) = (f("output_tok_per_s", base), f("output_tok_per_s", row));
            let ratio = b / a;
            let verdict = if format!("{ratio:.2}") == "1.00" {
                "matched static's output throughput".to_owned()
            } else if ratio > 1.0 {
                format!("raised output throughput {ratio:.2}× over static")
            } else {
                format!("lost {:.0}% of static's output throughput", (1.0 - ratio) * 100.0)
            };
            let mut policy_word = policy.clone();
            policy_word[..1].make_ascii_uppercase();
            let expected = format!(
                "{policy_word} batching {verdict} at max_batch_size {} ({a:.1} → {b:.1} tok/s); ",
                text("max_batch_size", row)
            );
            assert!(
                finding.text.starts_with(&expected),
                "{}\nexpected to start with\n{expected}",
                finding.text
            );
            let (ta, tb) = (f("ttft_mean_ms", base), f("ttft_mean_ms", row));
            let ttft = if format!("{ta:.2}") == format!("{tb:.2}") {
                format!("TTFT mean unchanged ({ta:.2} ms)")
            } else {
                format!("({ta:.2} → {tb:.2} ms)")
            };
            assert!(finding.text.contains(&ttft), "{} lacks {ttft}", finding.text);
            let (ka, kb) = (f("peak_kv_mib", base), f("peak_kv_mib", row));
            assert!(finding.text.contains("peak KV"), "{}", finding.text);
            if ka != kb {
                let percent = ((kb - ka) / ka * 100.0).abs();
                assert!(
                    finding.text.contains(&format!("{percent:.0}%")) || percent < 1.0,
                    "{}",
                    finding.text
                );
            }
        }
        // Grouped loses at max batch 4, as the README's worked example says it must once lengths diverge.
        assert!(
            found
                .iter()
                .any(|f| f.text.starts_with("Grouped batching lost") && f.text.contains("max_batch_size 4")),
            "{:#?}",
            texts(&found)
        );
        // The best run is the one with the highest throughput.
        let best = found.last().unwrap();
        assert_eq!(best.kind, FindingKind::Sweep);
        let tp = df.column("output_tok_per_s").unwrap().f64().unwrap();
        let max = (0..df.height()).map(|r| tp.get(r).unwrap()).fold(f64::MIN, f64::max);
        assert_eq!(f("output_tok_per_s", row_of(&best.runs[0])), max);
        assert!(best.text.contains(&format!("{max:.1} tok/s")), "{}", best.text);
    }

    /// Five configurations: continuous gains 1.0×–3.0× (median 2.0×), grouped loses 46% everywhere.
    fn five_configurations() -> Results {
        let mut run = Vec::new();
        let mut policy = Vec::new();
        let mut batch = Vec::new();
        let mut throughput = Vec::new();
        let mut ttft = Vec::new();
        let continuous = [100.0, 150.0, 300.0, 200.0, 250.0];
        let continuous_ttft = [10.0, 8.0, 5.0, 6.0, 4.0];
        for i in 0..5 {
            for (p, tp, t) in [
                ("static", 100.0, 10.0),
                ("continuous", continuous[i], continuous_ttft[i]),
                ("grouped", 54.0, 12.0),
            ] {
                run.push(format!("r{:02}", run.len()));
                policy.push(p);
                batch.push(i as i64 + 1);
                throughput.push(tp);
                ttft.push(t);
            }
        }
        let run: Vec<&str> = run.iter().map(String::as_str).collect();
        results(vec![
            strs("run", &run),
            strs("scenario.policy", &policy),
            strs("policy", &policy),
            i64s("max_batch_size", &batch),
            strs("gpu", &vec!["h100-sxm"; run.len()]),
            i64s("requests", &vec![16; run.len()]),
            f64s("output_tok_per_s", &throughput),
            f64s("ttft_mean_ms", &ttft),
        ])
    }

    #[test]
    fn many_configurations_give_an_overview_then_the_top_three() {
        let found = findings(&five_configurations());
        let texts = texts(&found);
        assert_eq!(
            texts[0],
            "Across 5 configurations, continuous batching's output throughput was a median 2.00× static's \
             (range 1.00×–3.00×; higher in 4, equal in 1, lower in 0); median change in TTFT mean -40%."
        );
        assert_eq!(found[0].kind, FindingKind::Overview);
        assert_eq!(found[0].runs.len(), 10);
        // The largest gains, largest first.
        assert_eq!(
            texts[1],
            "Continuous batching raised output throughput 3.00× over static at max_batch_size 3 (100.0 → 300.0 \
             tok/s); TTFT mean fell 50% (10.00 → 5.00 ms)."
        );
        assert!(
            texts[2].contains("2.50× over static at max_batch_size 5"),
            "{}",
            texts[2]
        );
        assert!(
            texts[3].contains("2.00× over static at max_batch_size 4"),
            "{}",
            texts[3]
        );
        assert_eq!(found[1].runs, ["r06", "r07"]);
        // Grouped loses everywhere: its overview, then its (equal) losses in configuration order.
        assert_eq!(
            texts[4],
            "Across 5 configurations, grouped batching's output throughput was a median 0.54× static's \
             (range 0.54×–0.54×; higher in 0, equal in 0, lower in 5); median change in TTFT mean +20%."
        );
        assert_eq!(
            texts[5],
            "Grouped batching lost 46% of static's output throughput at max_batch_size 1 (100.0 → 54.0 tok/s); \
             TTFT mean rose 20% (10.00 → 12.00 ms)."
        );
        assert!(texts[6].contains("max_batch_size 2 ") && texts[7].contains("max_batch_size 3 "));
        assert_eq!(
            texts[8],
            "The highest output throughput, 300.0 tok/s, came from run r07 (continuous, max_batch_size 3)."
        );
        assert_eq!(texts.len(), 9);
    }

    /// Labels laid out as `simulate` writes a sweep over model, prompt length, batch size, requests and policy.
    #[test]
    fn configurations_read_as_words() {
        let found = findings(&results(vec![
            strs("run", &["r0", "r1", "r2", "r3"]),
            strs(
                "model.name",
                &["qwen2.5-0.5b", "qwen2.5-0.5b", "qwen2.5-1.5b", "qwen2.5-1.5b"],
            ),
            i64s("workload.prompt_len", &[512; 4]),
            i64s("scheduler.max_batch_size", &[8; 4]),
            i64s("workload.requests", &[1, 1, 16, 16]),
            strs("scheduler.policy", &["static", "continuous", "static", "continuous"]),
            strs(
                "model",
                &["qwen2.5-0.5b", "qwen2.5-0.5b", "qwen2.5-1.5b", "qwen2.5-1.5b"],
            ),
            strs("policy", &["static", "continuous", "static", "continuous"]),
            i64s("max_batch_size", &[8; 4]),
            i64s("requests", &[1, 1, 16, 16]),
            f64s("output_tok_per_s", &[100.0, 100.0, 100.0, 142.0]),
        ]));
        assert_eq!(
            texts(&found),
            [
                "Continuous batching matched static's output throughput on qwen2.5-0.5b with 1 request (100.0 → 100.0 \
                 tok/s).",
                "Continuous batching raised output throughput 1.42× over static on qwen2.5-1.5b with 16 requests \
                 (100.0 → 142.0 tok/s).",
                "The highest output throughput, 142.0 tok/s, came from run r3 (continuous, qwen2.5-1.5b, 16 requests).",
            ]
        );
    }

    #[test]
    fn without_a_static_run_the_first_policy_is_the_baseline() {
        let found = findings(&results(vec![
            strs("run", &["a", "b"]),
            strs("policy", &["continuous", "grouped"]),
            f64s("output_tok_per_s", &[200.0, 100.0]),
        ]));
        assert_eq!(
            texts(&found),
            ["Grouped batching lost 50% of continuous's output throughput (200.0 → 100.0 tok/s)."]
        );
    }

    #[test]
    fn one_policy_gives_the_ranges_over_the_sweep() {
        let found = findings(&results(vec![
            strs("run", &["r0", "r1", "r2"]),
            strs("policy", &["continuous"; 3]),
            i64s("workload.prompt_len", &[64, 256, 512]),
            f64s("output_tok_per_s", &[300.0, 200.0, 100.0]),
            f64s("ttft_mean_ms", &[5.0, 5.0, 5.0]),
            f64s("ttft_p95_ms", &[0.0, 1.0, 2.0]),
        ]));
        assert_eq!(
            texts(&found),
            [
                "With continuous batching, output throughput ranged from 100.0 tok/s in r2 (prompt_len 512) to \
                 300.0 tok/s in r0 (prompt_len 64), 3.00×.",
                "With continuous batching, TTFT mean was 5.00 ms in every run.",
                "With continuous batching, TTFT p95 ranged from 0.00 ms in r0 (prompt_len 64) to 2.00 ms in r2 \
                 (prompt_len 512).",
            ]
        );
        assert!(found.iter().all(|f| f.kind == FindingKind::Sweep));
        assert_eq!(found[0].runs, ["r2", "r0"]);
    }

    #[test]
    fn a_single_run_and_no_runs() {
        let one = findings(&results(vec![
            strs("run", &["r0"]),
            strs("policy", &["static"]),
            i64s("requests", &[8]),
            f64s("output_tok_per_s", &[1234.56]),
            f64s("ttft_mean_ms", &[7.0]),
            f64s("itl_p95_ms", &[f64::NAN]),
        ]));
        assert_eq!(
            texts(&one),
            ["Run r0 (static batching): output throughput 1234.6 tok/s, TTFT mean 7.00 ms."]
        );
        assert_eq!(one[0].kind, FindingKind::Run);
        let none = findings(&results(vec![
            Column::new(PlSmallStr::from_str("run"), Vec::<String>::new()),
            f64s("output_tok_per_s", &[]),
        ]));
        assert!(none.is_empty());
        // A column of nulls only (no throughput at all) gives no comparison, not a panic.
        let nulls = findings(&results(vec![
            strs("run", &["a", "b"]),
            strs("policy", &["static", "continuous"]),
            Column::new(PlSmallStr::from_str("output_tok_per_s"), &[None::<f64>, None]),
        ]));
        assert_eq!(texts(&nulls), ["Continuous batching compared with static."]);
    }
}
