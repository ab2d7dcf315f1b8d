//! Loading a scenario file: parse, `--set` overrides, sweep expansion, deserialization, validation.
//!
//! The file is parsed into toml's *spanned* document (`DeTable`) rather than a `toml::Table`, and overrides and
//! sweep values are spliced into that document before it is deserialized into a [`Scenario`]. Every value thus
//! keeps the byte range it came from, so a mistake in the file is reported at its `file:line:column` even when a
//! sweep or `--set` had to fill in a required key first (quickstart sweeps `scheduler.policy`, which has no default:
//! parsing the file alone as a `Scenario` would fail). Sweep values keep the span of their element in `[sweep]`;
//! keys a sweep creates get the span of the sweep key; `--set` values get a span past the end of the file that
//! encodes which `--set` they came from.

use super::validate::check;
use super::{RunSpec, Scenario, ScenarioError};
use serde::Deserialize;
use std::borrow::Cow;
use std::ops::Range;
use std::path::Path;
use toml::Spanned;
use toml::de::{DeArray, DeTable, DeValue};

type Span = Range<usize>;

/// The scenario text, for turning byte spans into positions.
struct Source<'a> {
    path: &'a Path,
    text: &'a str,
}

/// Where a span points.
enum Origin {
    /// 1-based line and column in the scenario file.
    File(usize, usize),
    /// The `--set` argument with this index.
    Set(usize),
    Unknown,
}

impl Source<'_> {
    /// The span given to everything the `--set` with this index brings: past the end of the text, so it can never
    /// be mistaken for a position, and one byte long, so it contains its own start (see `in_sweep`).
    fn set_span(&self, index: usize) -> Span {
        let start = self.text.len() + 1 + index;
        start..start + 1
    }

    fn origin(&self, span: Option<&Span>) -> Origin {
        let Some(span) = span else { return Origin::Unknown };
        if span.start > self.text.len() {
            return Origin::Set(span.start - self.text.len() - 1);
        }
        let before = &self.text[..span.start];
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let line = before.matches('\n').count() + 1;
        // Columns count characters, as editors do, not bytes.
        let column = before[line_start..].chars().count() + 1;
        Origin::File(line, column)
    }

    /// `path:line:column: ` (or `path: --set arg: `) followed by the run context and the message.
    fn error(&self, span: Option<&Span>, sets: &[String], run: Option<&str>, message: &str) -> ScenarioError {
        let path = self.path.display();
        let run = run.map(|r| format!("{r}: ")).unwrap_or_default();
        ScenarioError::Invalid(match self.origin(span) {
            Origin::File(line, column) => format!("{path}:{line}:{column}: {run}{message}"),
            Origin::Set(i) => format!(
                "{path}: {run}--set {}: {message}",
                sets.get(i).map_or("?", |s| s.as_str())
            ),
            Origin::Unknown => format!("{path}: {run}{message}"),
        })
    }
}

/// One sweep axis: a dotted key and its values, as spanned document values (to splice in) and as plain values
/// (for [`RunSpec::axes`]).
struct Axis<'i> {
    key: String,
    key_span: Span,
    values: Vec<Spanned<DeValue<'i>>>,
    plain: Vec<toml::Value>,
}

pub(super) fn load_runs(path: &Path, sets: &[String], seed: Option<u64>) -> Result<Vec<RunSpec>, ScenarioError> {
    let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    load_runs_str(&text, path, sets, seed)
}

pub(super) fn load_runs_str(
    text: &str,
    path: &Path,
    sets: &[String],
    seed: Option<u64>,
) -> Result<Vec<RunSpec>, ScenarioError> {
    let source = Source { path, text };
    let parsed = DeTable::parse(text).map_err(|e| source.error(e.span().as_ref(), sets, None, e.message()))?;
    let root_span = parsed.span();
    let mut root = parsed.into_inner();

    let mut axes = match root.remove("sweep") {
        Some(sweep) => parse_sweep(&source, sweep)?,
        None => Vec::new(),
    };
    for index in 0..sets.len() {
        apply_set(&source, sets, &mut root, &mut axes, index)?;
    }
    if seed.is_some() {
        // `--seed` pins the seed, like a `--set` of an axis pins that axis.
        axes.retain(|axis| axis.key != "seed");
    }

    let count = axes
        .iter()
        .try_fold(1usize, |n, axis| n.checked_mul(axis.values.len()))
        .ok_or_else(|| ScenarioError::Invalid(format!("{}: the sweep has too many runs", path.display())))?;
    let digits = count.to_string().len().max(3);
    let base_dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => Path::new(".").to_path_buf(),
    };
    // Errors located inside `[sweep]` depend on the run; everything else would fail in every run alike.
    let sweep_spans: Vec<Span> = axes
        .iter()
        .flat_map(|axis| std::iter::once(axis.key_span.clone()).chain(axis.values.iter().map(|v| v.span())))
        .collect();
    let in_sweep = |span: Option<&Span>| span.is_some_and(|s| sweep_spans.iter().any(|w| w.contains(&s.start)));

    let mut runs = Vec::with_capacity(count);
    for index in 0..count {
        let name = format!("r{index:0digits$}");
        // Mixed-radix digits of the index, the last axis varying fastest.
        let mut choice = vec![0; axes.len()];
        let mut rest = index;
        for (slot, axis) in choice.iter_mut().zip(&axes).rev() {
            *slot = rest % axis.values.len();
            rest /= axis.values.len();
        }
        let axis_values: Vec<(String, toml::Value)> = axes
            .iter()
            .zip(&choice)
            .map(|(axis, &c)| (axis.key.clone(), axis.plain[c].clone()))
            .collect();
        let context = (!axes.is_empty()).then(|| {
            let values: Vec<String> = axis_values.iter().map(|(k, v)| format!("{k} = {v}")).collect();
            format!("run {name} ({})", values.join(", "))
        });

        let mut table = root.clone();
        for (axis, &c) in axes.iter().zip(&choice) {
            set_path(&mut table, &axis.key, axis.values[c].clone(), &axis.key_span)
                .map_err(|m| source.error(Some(&axis.key_span), sets, context.as_deref(), &m))?;
        }
        let document = toml::de::Deserializer::from(Spanned::new(root_span.clone(), table.clone()));
        let mut scenario = Scenario::deserialize(document).map_err(|e| {
            let span = e.span();
            let run = if in_sweep(span.as_ref()) {
                context.as_deref()
            } else {
                None
            };
            source.error(span.as_ref(), sets, run, &describe(&e))
        })?;
        if let Some(seed) = seed {
            scenario.seed = seed;
        }
        check(&scenario).map_err(|invalid| {
            let span = span_of(&table, &invalid.key);
            source.error(span.as_ref(), sets, context.as_deref(), &invalid.message)
        })?;
        runs.push(RunSpec {
            index,
            name,
            axes: axis_values,
            scenario,
            base_dir: base_dir.clone(),
        });
    }
    Ok(runs)
}

/// The deserializer's message plus the dotted key it happened in (toml only shows that in its `Display`, and only
/// when it has no source text to quote, which is the case here).
fn describe(e: &toml::de::Error) -> String {
    let shown = e.to_string();
    let keys = shown
        .trim_end()
        .strip_prefix(e.message())
        .map(str::trim)
        .unwrap_or_default();
    match keys.strip_prefix("in ") {
        Some(keys) if !keys.is_empty() => format!("{} (in {keys})", e.message()),
        _ => e.message().to_string(),
    }
}

/// `[sweep]`: a table of dotted keys → non-empty lists.
///
/// An unquoted dotted key (`workload.rate = [1, 2]`) is a nested table to TOML; it is read as the same axis as the
/// quoted `"workload.rate"`. Nesting groups keys by their first part, so axes are put back in the order the file
/// wrote them (by the position of their last key part), which is the order of the product.
fn parse_sweep<'i>(source: &Source, sweep: Spanned<DeValue<'i>>) -> Result<Vec<Axis<'i>>, ScenarioError> {
    let span = sweep.span();
    let DeValue::Table(table) = sweep.into_inner() else {
        let message = "sweep must be a table of dotted keys to lists of values";
        return Err(source.error(Some(&span), &[], None, message));
    };
    let mut axes = Vec::with_capacity(table.len());
    flatten_sweep(source, "", table, &mut axes)?;
    axes.sort_by_key(|axis| axis.key_span.start);
    Ok(axes)
}

fn flatten_sweep<'i>(
    source: &Source,
    prefix: &str,
    table: DeTable<'i>,
    axes: &mut Vec<Axis<'i>>,
) -> Result<(), ScenarioError> {
    for (key, values) in table {
        let key_span = key.span();
        let key = format!("{prefix}{}", key.into_inner());
        let values_span = values.span();
        let values = match values.into_inner() {
            DeValue::Table(nested) => {
                flatten_sweep(source, &format!("{key}."), nested, axes)?;
                continue;
            }
            values => Spanned::new(values_span, values),
        };
        check_key(&key).map_err(|m| source.error(Some(&key_span), &[], None, &format!("sweep key `{key}`: {m}")))?;
        axes.push(axis(key, key_span, values).map_err(|(span, m)| source.error(Some(&span), &[], None, &m))?);
    }
    Ok(())
}

fn axis<'i>(key: String, key_span: Span, values: Spanned<DeValue<'i>>) -> Result<Axis<'i>, (Span, String)> {
    let span = values.span();
    let values = match values.into_inner() {
        DeValue::Array(values) if !values.is_empty() => values,
        DeValue::Array(_) => return Err((span, format!("sweep.\"{key}\" must be a non-empty list, got []"))),
        other => {
            let got = other.type_str();
            return Err((span, format!("sweep.\"{key}\" must be a list of values, got a {got}")));
        }
    };
    let values: Vec<_> = values.into_iter().collect();
    let plain = values
        .iter()
        .map(|v| {
            let span = v.span();
            toml::Value::deserialize(toml::de::ValueDeserializer::from(v.clone()))
                .map_err(|e| (span, format!("sweep.\"{key}\": {}", e.message())))
        })
        .collect::<Result<_, _>>()?;
    Ok(Axis {
        key,
        key_span,
        values,
        plain,
    })
}

/// A dotted key must name a path of the schema; `sweep` itself cannot be swept or set as a whole.
fn check_key(key: &str) -> Result<(), String> {
    if key.split('.').any(|segment| segment.trim().is_empty()) {
        return Err("every part of a dotted key must be non-empty".to_string());
    }
    if key == "sweep" || key.starts_with("sweep.") {
        return Err("`sweep` is the sweep table, not a key of the scenario".to_string());
    }
    Ok(())
}

/// `--set key=value`. `--set sweep.<key>=[…]` adds or replaces a sweep axis; any other key pins that key, removing
/// a sweep axis of the same name (the command line is more specific than the file).
fn apply_set<'i>(
    source: &Source,
    sets: &'i [String],
    root: &mut DeTable<'i>,
    axes: &mut Vec<Axis<'i>>,
    index: usize,
) -> Result<(), ScenarioError> {
    let set = sets[index].as_str();
    let cli_error = |m: String| ScenarioError::Invalid(format!("--set {set}: {m}"));
    let Some((key, value)) = set.split_once('=') else {
        return Err(cli_error("expected key=value, e.g. --set workload.rate=4".to_string()));
    };
    let key = key.trim();
    if key.is_empty() {
        return Err(cli_error("the key before `=` is empty".to_string()));
    }
    let span = source.set_span(index);
    let value = value.trim();
    // A TOML value when it parses as one, so numbers, booleans and lists keep their type; otherwise the text as a
    // string, so `--set model.name=qwen2.5-1.5b` needs no shell-quoted TOML quotes.
    let value = match DeValue::parse(value) {
        Ok(parsed) => respan(parsed.into_inner(), &span),
        Err(_) => DeValue::String(Cow::Borrowed(value)),
    };
    let value = Spanned::new(span.clone(), value);
    if let Some(axis_key) = key.strip_prefix("sweep.") {
        check_key(axis_key).map_err(cli_error)?;
        let new = axis(axis_key.to_string(), span, value).map_err(|(_, m)| cli_error(m))?;
        match axes.iter_mut().find(|a| a.key == axis_key) {
            Some(old) => *old = new,
            None => axes.push(new),
        }
        return Ok(());
    }
    check_key(key).map_err(cli_error)?;
    set_path(root, key, value, &span).map_err(|m| source.error(Some(&span), sets, None, &m))?;
    axes.retain(|axis| axis.key != key);
    Ok(())
}

/// Gives every part of a parsed `--set` value the `--set`'s span (the parser's spans are offsets into the argument,
/// which would read as positions in the file).
fn respan<'i>(value: DeValue<'i>, span: &Span) -> DeValue<'i> {
    match value {
        DeValue::Array(items) => DeValue::Array(
            items
                .into_iter()
                .map(|item| Spanned::new(span.clone(), respan(item.into_inner(), span)))
                .collect::<DeArray>(),
        ),
        DeValue::Table(table) => DeValue::Table(
            table
                .into_iter()
                .map(|(k, v)| {
                    (
                        Spanned::new(span.clone(), k.into_inner()),
                        Spanned::new(span.clone(), respan(v.into_inner(), span)),
                    )
                })
                .collect(),
        ),
        other => other,
    }
}

/// Sets `dotted.key` in the document, creating intermediate tables (with `span`) as needed.
fn set_path<'i>(root: &mut DeTable<'i>, key: &str, value: Spanned<DeValue<'i>>, span: &Span) -> Result<(), String> {
    let segments: Vec<&str> = key.split('.').map(str::trim).collect();
    let (last, parents) = segments.split_last().ok_or_else(|| "empty key".to_string())?;
    let mut table = root;
    for (depth, segment) in parents.iter().enumerate() {
        if !table.contains_key(*segment) {
            let created = Spanned::new(span.clone(), DeValue::Table(DeTable::new()));
            table.insert(Spanned::new(span.clone(), Cow::Owned(segment.to_string())), created);
        }
        match table.get_mut(*segment).map(Spanned::get_mut) {
            Some(DeValue::Table(child)) => table = child,
            Some(other) => {
                let prefix = segments[..=depth].join(".");
                return Err(format!(
                    "cannot set `{key}`: `{prefix}` is a {}, not a table",
                    other.type_str()
                ));
            }
            None => unreachable!("inserted above"),
        }
    }
    merge(table, Spanned::new(span.clone(), Cow::Owned(last.to_string())), value);
    Ok(())
}

/// Sets `key` in `table`; a table value merged into an existing table key by key, so one sweep value such as
/// `scheduler = [{ chunked_prefill = false, max_batch_tokens = 16640 }, …]` sets several keys together and
/// leaves the section's other keys alone.
fn merge<'i>(table: &mut DeTable<'i>, key: Spanned<Cow<'i, str>>, value: Spanned<DeValue<'i>>) {
    if let (Some(DeValue::Table(existing)), DeValue::Table(_)) = (
        table.get_mut(key.get_ref().as_ref()).map(Spanned::get_mut),
        value.get_ref(),
    ) {
        let DeValue::Table(new) = value.into_inner() else {
            unreachable!("matched a table above")
        };
        for (k, v) in new {
            merge(existing, k, v);
        }
        return;
    }
    table.insert(key, value);
}

/// The span of `dotted.key` in the document, or of its deepest existing ancestor table (a missing required key is
/// best shown at the table it belongs in). `key[3]` is looked up as `key`.
fn span_of(root: &DeTable, key: &str) -> Option<Span> {
    let key = key.split('[').next().unwrap_or(key);
    let mut table = root;
    let mut found = None;
    for segment in key.split('.') {
        let Some(value) = table.get(segment) else { break };
        found = Some(value.span());
        match value.get_ref() {
            DeValue::Table(child) => table = child,
            _ => break,
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::{ArrivalKind, CostKind, LengthDist, LengthSpec, PolicyKind, validate};
    use std::path::PathBuf;

    const BASE: &str = r#"name = "t"
[model]
name = "qwen2.5-0.5b"
[cost]
kind = "analytic"
[scheduler]
policy = "static"
max_batch_size = 8
[workload]
arrival = "burst"
requests = 4
prompt_len = 16
output_len = [16, 32]
"#;

    /// Writes `text` as a scenario file in a fresh folder; the folder lives as long as the returned guard.
    fn file(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.toml");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    fn load(text: &str, sets: &[&str]) -> Result<Vec<RunSpec>, String> {
        let (_dir, path) = file(text);
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        load_runs(&path, &sets, None).map_err(|e| e.to_string().replace(&path.display().to_string(), "s.toml"))
    }

    fn load_err(text: &str, sets: &[&str]) -> String {
        match load(text, sets) {
            Ok(runs) => panic!("expected an error, got {} runs", runs.len()),
            Err(e) => e,
        }
    }

    #[test]
    fn malformed_toml_is_reported_at_file_line_column() {
        let e = load_err("name = \"t\"\n[model]\nname = = 3\n", &[]);
        assert!(e.starts_with("s.toml:3:8: "), "{e}");
        assert!(e.len() > "s.toml:3:8: ".len(), "the parser's explanation follows: {e}");
    }

    #[test]
    fn columns_count_characters_not_bytes() {
        let e = load_err("name = \"é\" x\n", &[]);
        assert!(e.starts_with("s.toml:1:12: "), "{e}");
    }

    #[test]
    fn unknown_key_is_positioned_and_lists_the_valid_keys() {
        let e = load_err(&format!("{BASE}rat = 3\n"), &[]);
        assert!(
            e.starts_with("s.toml:14:1: unknown field `rat`, expected one of"),
            "{e}"
        );
        assert!(
            e.contains("`rate`") && e.contains("`requests`") && e.contains("(in `workload`)"),
            "{e}"
        );
    }

    #[test]
    fn unknown_key_is_positioned_even_when_a_required_key_comes_from_the_sweep() {
        let text = BASE
            .replace("policy = \"static\"\n", "")
            .replace("[workload]\n", "[workload]\nratee = 2\n");
        let e = load_err(
            &format!("{text}[sweep]\n\"scheduler.policy\" = [\"static\", \"continuous\"]\n"),
            &[],
        );
        assert!(e.starts_with("s.toml:9:1: unknown field `ratee`"), "{e}");
        assert!(!e.contains("run r000"), "a base error is not blamed on a run: {e}");
    }

    #[test]
    fn unknown_policy_lists_the_policies() {
        let e = load_err(&BASE.replace("\"static\"", "\"dynamic\""), &[]);
        assert!(
            e.starts_with("s.toml:7:10: unknown variant `dynamic`, expected one of `static`, `continuous`, `grouped`"),
            "{e}"
        );
    }

    #[test]
    fn unknown_length_distribution_and_missing_parameter_are_named() {
        let e = load_err(
            &BASE.replace("prompt_len = 16", "prompt_len = { dist = \"lognorm\", mean = 5 }"),
            &[],
        );
        assert!(
            e.contains("unknown variant `lognorm`, expected one of `uniform`, `normal`, `lognormal`, `zipf`"),
            "{e}"
        );
        let e = load_err(
            &BASE.replace("prompt_len = 16", "prompt_len = { dist = \"lognormal\", mean = 5 }"),
            &[],
        );
        assert!(e.starts_with("s.toml:12:14: missing field `sigma`"), "{e}");
        let e = load_err(&BASE.replace("prompt_len = 16", "prompt_len = -4"), &[]);
        assert!(
            e.starts_with("s.toml:12:14: invalid value: -4, expected a length"),
            "{e}"
        );
    }

    #[test]
    fn set_parses_scalars_lists_and_plain_strings_and_creates_tables() {
        let runs = load(
            BASE,
            &[
                "workload.requests=12",
                "workload.output_len=[7, 9, 11]",
                "model.name=qwen2.5-1.5b",
                "slo.ttft_ms=250",
            ],
        )
        .unwrap();
        let s = &runs[0].scenario;
        assert_eq!(s.workload.requests, Some(12));
        assert_eq!(s.workload.output_len, Some(LengthSpec::Cycle(vec![7, 9, 11])));
        assert_eq!(s.model.name.as_deref(), Some("qwen2.5-1.5b"));
        assert_eq!(s.slo.ttft_ms, Some(250.0));
        // A quoted TOML string works as well, and the last --set of a key wins.
        let runs = load(
            BASE,
            &[
                "scheduler.policy=\"grouped\"",
                "scheduler.max_batch_size=2",
                "scheduler.max_batch_size=3",
            ],
        )
        .unwrap();
        assert_eq!(runs[0].scenario.scheduler.policy, PolicyKind::Grouped);
        assert_eq!(runs[0].scenario.scheduler.max_batch_size, 3);
    }

    #[test]
    fn malformed_set_is_named() {
        assert_eq!(
            load_err(BASE, &["workload.rate"]),
            "--set workload.rate: expected key=value, e.g. --set workload.rate=4"
        );
        assert_eq!(load_err(BASE, &["=4"]), "--set =4: the key before `=` is empty");
        assert!(load_err(BASE, &["workload..rate=4"]).starts_with("--set workload..rate=4: every part"));
        let e = load_err(BASE, &["model.name.size=2"]);
        assert_eq!(
            e,
            "s.toml: --set model.name.size=2: cannot set `model.name.size`: `model.name` is a string, not a table"
        );
    }

    #[test]
    fn errors_in_set_values_name_the_set() {
        let e = load_err(BASE, &["workload.rat=3"]);
        assert!(
            e.starts_with("s.toml: --set workload.rat=3: unknown field `rat`"),
            "{e}"
        );
        let e = load_err(BASE, &["workload.arrival=poisson", "workload.rate=-2"]);
        assert_eq!(
            e,
            "s.toml: --set workload.rate=-2: workload.rate must be > 0 for arrival = \"poisson\", got -2"
        );
    }

    #[test]
    fn sweep_is_a_product_in_key_order_with_padded_names() {
        let policies = "[\"static\", \"continuous\", \"grouped\"]";
        let sweep = format!("[sweep]\n\"workload.requests\" = [1, 2]\n\"scheduler.policy\" = {policies}\n");
        let text = format!("{BASE}{sweep}");
        let runs = load(&text, &[]).unwrap();
        let got: Vec<(String, u64, PolicyKind)> = runs
            .iter()
            .map(|r| {
                (
                    r.name.clone(),
                    r.scenario.workload.requests.unwrap(),
                    r.scenario.scheduler.policy,
                )
            })
            .collect();
        use PolicyKind::*;
        let want = [
            (1, Static),
            (1, Continuous),
            (1, Grouped),
            (2, Static),
            (2, Continuous),
            (2, Grouped),
        ];
        for (i, (got, want)) in got.iter().zip(want).enumerate() {
            assert_eq!(
                (got.0.as_str(), got.1, got.2),
                (format!("r{i:03}").as_str(), want.0, want.1)
            );
        }
        assert_eq!(runs.len(), 6);
        assert_eq!(runs[4].index, 4);
        assert_eq!(
            runs[4].axes[0],
            ("workload.requests".to_string(), toml::Value::Integer(2))
        );
        assert_eq!(
            runs[4].axes[1],
            ("scheduler.policy".to_string(), toml::Value::String("continuous".into()))
        );
        assert!(runs.iter().all(|r| r.scenario.sweep.is_empty()));
    }

    #[test]
    fn run_names_widen_past_999_runs() {
        let ten = "[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]";
        let blocks = "[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]";
        let text = format!(
            "{BASE}[sweep]\nseed = {ten}\n\"memory.block_size\" = {blocks}\n\"scheduler.max_wait_ms\" = {ten}\n"
        );
        let runs = load(&text, &[]).unwrap();
        assert_eq!(runs.len(), 1000);
        assert_eq!((runs[0].name.as_str(), runs[999].name.as_str()), ("r0000", "r0999"));
        assert_eq!((runs[999].scenario.seed, runs[999].scenario.memory.block_size), (9, 10));
    }

    #[test]
    fn unquoted_dotted_sweep_keys_keep_the_written_order() {
        let sweep = "[sweep]\nworkload.requests = [1, 2]\nscheduler.policy = [\"static\", \"grouped\"]\nworkload.prompt_len = [8, 9]\n";
        let runs = load(&format!("{BASE}{sweep}"), &[]).unwrap();
        let keys: Vec<&str> = runs[0].axes.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["workload.requests", "scheduler.policy", "workload.prompt_len"]);
        let last = &runs[7].scenario;
        assert_eq!(
            (last.workload.requests, last.scheduler.policy, &last.workload.prompt_len),
            (Some(2), PolicyKind::Grouped, &Some(LengthSpec::Fixed(9)))
        );
    }

    #[test]
    fn invalid_sweeps_are_rejected() {
        let e = load_err(&format!("{BASE}[sweep]\n\"workload.rate\" = []\n"), &[]);
        assert_eq!(
            e,
            "s.toml:15:19: sweep.\"workload.rate\" must be a non-empty list, got []"
        );
        let e = load_err(&format!("{BASE}[sweep]\n\"workload.requests\" = 4\n"), &[]);
        assert_eq!(
            e,
            "s.toml:15:23: sweep.\"workload.requests\" must be a list of values, got a integer"
        );
        // A key outside the schema names the sweep key and the run.
        let e = load_err(&format!("{BASE}[sweep]\n\"workload.reqests\" = [4]\n"), &[]);
        assert!(
            e.starts_with("s.toml:15:1: run r000 (workload.reqests = 4): unknown field `reqests`"),
            "{e}"
        );
        let e = load_err(
            &format!("{BASE}[sweep]\n\"scheduler.policy\" = [\"static\", \"batch\"]\n"),
            &[],
        );
        assert!(
            e.starts_with("s.toml:15:33: run r001 (scheduler.policy = \"batch\"): unknown variant `batch`"),
            "{e}"
        );
        let e = load_err(&format!("{BASE}[sweep]\n\"model.name.x\" = [1]\n"), &[]);
        assert!(
            e.contains("run r000 (model.name.x = 1): cannot set `model.name.x`: `model.name` is a string"),
            "{e}"
        );
        let e = load_err(&format!("sweep = 3\n{BASE}"), &[]);
        assert_eq!(e, "s.toml:1:9: sweep must be a table of dotted keys to lists of values");
    }

    #[test]
    fn validation_errors_name_the_run_and_point_at_the_value() {
        let text = BASE.replace("\"burst\"", "\"poisson\"");
        let e = load_err(&format!("{text}[sweep]\n\"workload.rate\" = [4, -2]\n"), &[]);
        assert_eq!(
            e,
            "s.toml:15:23: run r001 (workload.rate = -2): workload.rate must be > 0 for arrival = \"poisson\", got -2"
        );
        let e = load_err(&BASE.replace("requests = 4", "requests = 0"), &[]);
        assert_eq!(e, "s.toml:11:12: workload.requests must be > 0, got 0");
        // A missing key is shown at its table.
        let e = load_err(&text, &[]);
        assert_eq!(
            e,
            "s.toml:9:1: workload.rate (requests/s) is required for arrival = \"poisson\""
        );
    }

    #[test]
    fn set_and_seed_pin_sweep_axes_and_set_can_add_one() {
        let text = format!("{BASE}[sweep]\n\"scheduler.policy\" = [\"static\", \"continuous\"]\nseed = [1, 2, 3]\n");
        assert_eq!(load(&text, &[]).unwrap().len(), 6);
        let runs = load(&text, &["scheduler.policy=grouped"]).unwrap();
        assert_eq!(runs.len(), 3);
        assert!(
            runs.iter()
                .all(|r| r.scenario.scheduler.policy == PolicyKind::Grouped && r.axes.len() == 1)
        );
        let (_dir, path) = file(&text);
        let runs = load_runs(&path, &[], Some(u64::MAX)).unwrap();
        assert_eq!(runs.len(), 2);
        assert!(runs.iter().all(|r| r.scenario.seed == u64::MAX));
        let runs = load(BASE, &["sweep.workload.requests=[5, 6]"]).unwrap();
        assert_eq!(
            runs.iter()
                .map(|r| r.scenario.workload.requests.unwrap())
                .collect::<Vec<_>>(),
            [5, 6]
        );
        assert!(load_err(BASE, &["sweep.workload.requests=5"]).contains("must be a list of values"));
        let e = load_err(BASE, &["sweep.workload.rate=[1, 2]"]);
        assert!(
            e.starts_with("s.toml: run r000 (workload.rate = 1): --set sweep.workload.rate=[1, 2]: "),
            "{e}"
        );
        assert!(load_err(BASE, &["sweep=3"]).starts_with("--set sweep=3: `sweep` is the sweep table"));
    }

    #[test]
    fn a_table_sweep_value_sets_several_keys_and_keeps_the_rest() {
        let text = format!(
            "{BASE}\n[sweep]\nscheduler = [{{ chunked_prefill = false, max_batch_tokens = 4096 }}, {{ max_batch_tokens = 512 }}]\n"
        );
        let runs = load(&text, &[]).unwrap();
        assert_eq!(runs.len(), 2);
        let (a, b) = (&runs[0].scenario.scheduler, &runs[1].scenario.scheduler);
        assert_eq!((a.chunked_prefill, a.max_batch_tokens), (false, 4096));
        assert_eq!((b.chunked_prefill, b.max_batch_tokens), (true, 512));
        // Keys the value does not name keep their values from the file.
        assert_eq!((a.policy, a.max_batch_size), (b.policy, b.max_batch_size));
        assert_eq!(runs[0].axes[0].0, "scheduler");
    }

    #[test]
    fn base_dir_is_the_scenario_folder() {
        let (dir, path) = file(BASE);
        let runs = load_runs(&path, &[], None).unwrap();
        assert_eq!(runs[0].base_dir, dir.path());
    }

    /// The shipped scenario with each field in turn made invalid: every message names the key, what was expected
    /// and what was got.
    #[test]
    fn validation_messages() {
        let base = load(BASE, &[]).unwrap().remove(0).scenario;
        assert_eq!(validate(&base), Ok(()));
        type Edit = fn(&mut Scenario);
        let cases: Vec<(Edit, &str)> = vec![
            (
                |s| s.model.config = Some("c.json".into()),
                "model needs exactly one of model.name (a built-in model) or model.config (a config.json path), got both",
            ),
            (|s| s.model.name = None, "got neither"),
            (|s| s.name = " ".into(), "name must not be empty"),
            (
                |s| s.hardware.memory_gib = Some(0.0),
                "hardware.memory_gib must be > 0, got 0",
            ),
            (
                |s| s.cost.base_ms = Some(1.0),
                "cost.base_ms does not apply to cost.kind = \"analytic\" (its keys: bandwidth_efficiency, compute_efficiency, step_overhead_us), got 1",
            ),
            (
                |s| s.cost.bandwidth_efficiency = Some(1.5),
                "cost.bandwidth_efficiency must be in (0, 1], got 1.5",
            ),
            (
                |s| s.cost.compute_efficiency = Some(0.0),
                "cost.compute_efficiency must be in (0, 1], got 0",
            ),
            (
                |s| s.cost.step_overhead_us = Some(-1.0),
                "cost.step_overhead_us must be >= 0, got -1",
            ),
            (|s| s.cost.time_scale = Some(0.0), "cost.time_scale must be > 0, got 0"),
            (
                |s| s.cost.kind = CostKind::Linear,
                "cost.base_ms is required for cost.kind = \"linear\"",
            ),
            (
                |s| {
                    s.cost.kind = CostKind::Linear;
                    s.cost.base_ms = Some(1.0);
                    s.cost.per_seq_ms = Some(-0.5)
                },
                "cost.per_seq_ms must be >= 0, got -0.5",
            ),
            (
                |s| {
                    s.cost.kind = CostKind::Linear;
                    s.cost.base_ms = Some(1.0);
                    s.cost.step_overhead_us = Some(3.0)
                },
                "cost.step_overhead_us does not apply to cost.kind = \"linear\"",
            ),
            (
                |s| s.cost.kind = CostKind::Calibrated,
                "cost.profile (a profile written by `batchlab calibrate`) is required for cost.kind = \"calibrated\"",
            ),
            (
                |s| s.cost.profile = Some("p.json".into()),
                "cost.profile does not apply to cost.kind = \"analytic\"",
            ),
            (
                |s| s.memory.gpu_memory_utilization = 0.0,
                "memory.gpu_memory_utilization must be in (0, 1], got 0",
            ),
            (
                |s| s.memory.gpu_memory_utilization = f64::NAN,
                "memory.gpu_memory_utilization must be in (0, 1], got NaN",
            ),
            (|s| s.memory.block_size = 0, "memory.block_size must be > 0, got 0"),
            (
                |s| s.memory.kv_capacity_tokens = Some(0),
                "memory.kv_capacity_tokens must be > 0, got 0",
            ),
            (
                |s| s.memory.workspace_mib = Some(-1.0),
                "memory.workspace_mib must be >= 0, got -1",
            ),
            (
                |s| s.scheduler.max_batch_size = 0,
                "scheduler.max_batch_size must be > 0, got 0",
            ),
            (
                |s| s.scheduler.max_batch_tokens = 0,
                "scheduler.max_batch_tokens must be > 0, got 0",
            ),
            (
                |s| s.scheduler.max_wait_ms = -5.0,
                "scheduler.max_wait_ms must be >= 0, got -5",
            ),
            (
                |s| s.scheduler.max_wait_ms = f64::INFINITY,
                "scheduler.max_wait_ms must be >= 0, got inf",
            ),
            (
                |s| s.workload.requests = None,
                "workload.requests is required for arrival = \"burst\"",
            ),
            (
                |s| s.workload.requests = Some(1 << 32),
                "workload.requests must be <= 4294967295 (request ids are 32-bit), got 4294967296",
            ),
            (
                |s| s.workload.rate = Some(4.0),
                "workload.rate does not apply to arrival = \"burst\" (its keys: requests, prompt_len, output_len), got 4",
            ),
            (
                |s| s.workload.arrival = ArrivalKind::Constant,
                "workload.rate (requests/s) is required for arrival = \"constant\"",
            ),
            (
                |s| {
                    s.workload.arrival = ArrivalKind::Poisson;
                    s.workload.rate = Some(f64::NAN)
                },
                "workload.rate must be > 0 for arrival = \"poisson\", got NaN",
            ),
            (
                |s| {
                    s.workload.arrival = ArrivalKind::Gamma;
                    s.workload.rate = Some(2.0)
                },
                "workload.cv (coefficient of variation) is required for arrival = \"gamma\"",
            ),
            (
                |s| {
                    s.workload.arrival = ArrivalKind::Gamma;
                    s.workload.rate = Some(2.0);
                    s.workload.cv = Some(0.0)
                },
                "workload.cv must be > 0 for arrival = \"gamma\", got 0",
            ),
            (
                |s| {
                    s.workload.arrival = ArrivalKind::Poisson;
                    s.workload.rate = Some(2.0);
                    s.workload.cv = Some(1.0)
                },
                "workload.cv does not apply to arrival = \"poisson\"",
            ),
            (
                |s| s.workload.arrival = ArrivalKind::Closed,
                "workload.clients is required for arrival = \"closed\"",
            ),
            (
                |s| {
                    s.workload.arrival = ArrivalKind::Closed;
                    s.workload.clients = Some(0)
                },
                "workload.clients must be > 0 for arrival = \"closed\", got 0",
            ),
            (
                |s| {
                    s.workload.arrival = ArrivalKind::Closed;
                    s.workload.clients = Some(2);
                    s.workload.think_ms = -1.0
                },
                "workload.think_ms must be >= 0, got -1",
            ),
            (
                |s| s.workload.think_ms = 10.0,
                "workload.think_ms does not apply to arrival = \"burst\"",
            ),
            (
                |s| s.workload.clients = Some(3),
                "workload.clients does not apply to arrival = \"burst\"",
            ),
            (
                |s| s.workload.arrival = ArrivalKind::Trace,
                "workload.trace (a CSV or JSONL file) is required for arrival = \"trace\"",
            ),
            (
                |s| s.workload.trace = Some("t.csv".into()),
                "workload.trace does not apply to arrival = \"burst\" (its keys: requests, prompt_len, output_len), got \"t.csv\"",
            ),
            (
                |s| s.workload.prompt_len = None,
                "workload.prompt_len is required for arrival = \"burst\"",
            ),
            (
                |s| s.workload.output_len = None,
                "workload.output_len is required for arrival = \"burst\"",
            ),
            (
                |s| s.workload.prompt_len = Some(LengthSpec::Fixed(0)),
                "workload.prompt_len must be >= 1, got 0",
            ),
            (
                |s| s.workload.output_len = Some(LengthSpec::Cycle(vec![])),
                "workload.output_len must be a non-empty list, got []",
            ),
            (
                |s| s.workload.output_len = Some(LengthSpec::Cycle(vec![3, 0])),
                "workload.output_len[1] must be >= 1, got 0",
            ),
            (
                |s| s.workload.prompt_len = Some(LengthSpec::Dist(LengthDist::Uniform { min: 9, max: 3 })),
                "workload.prompt_len.min must be <= workload.prompt_len.max (3), got 9",
            ),
            (
                |s| s.workload.prompt_len = Some(LengthSpec::Dist(LengthDist::Uniform { min: 0, max: 3 })),
                "workload.prompt_len.min must be >= 1, got 0",
            ),
            (
                |s| {
                    s.workload.prompt_len = Some(LengthSpec::Dist(LengthDist::Normal {
                        mean: 10.0,
                        std: -1.0,
                        min: None,
                        max: None,
                    }))
                },
                "workload.prompt_len.std must be >= 0, got -1",
            ),
            (
                |s| {
                    s.workload.prompt_len = Some(LengthSpec::Dist(LengthDist::Normal {
                        mean: 0.0,
                        std: 1.0,
                        min: None,
                        max: None,
                    }))
                },
                "workload.prompt_len.mean must be > 0, got 0",
            ),
            (
                |s| {
                    s.workload.prompt_len = Some(LengthSpec::Dist(LengthDist::Normal {
                        mean: 10.0,
                        std: 1.0,
                        min: Some(20),
                        max: Some(5),
                    }))
                },
                "workload.prompt_len.min must be <= workload.prompt_len.max (5), got 20",
            ),
            (
                |s| {
                    s.workload.output_len = Some(LengthSpec::Dist(LengthDist::Lognormal {
                        mean: 10.0,
                        sigma: f64::NAN,
                        min: None,
                        max: None,
                    }))
                },
                "workload.output_len.sigma must be >= 0, got NaN",
            ),
            (
                |s| {
                    s.workload.output_len = Some(LengthSpec::Dist(LengthDist::Lognormal {
                        mean: -3.0,
                        sigma: 1.0,
                        min: None,
                        max: None,
                    }))
                },
                "workload.output_len.mean must be > 0, got -3",
            ),
            (
                |s| {
                    s.workload.output_len = Some(LengthSpec::Dist(LengthDist::Zipf {
                        max: 0,
                        exponent: 1.0,
                        scale: None,
                    }))
                },
                "workload.output_len.max must be >= 1, got 0",
            ),
            (
                |s| {
                    s.workload.output_len = Some(LengthSpec::Dist(LengthDist::Zipf {
                        max: 10,
                        exponent: 0.0,
                        scale: None,
                    }))
                },
                "workload.output_len.exponent must be > 0, got 0",
            ),
            (
                |s| {
                    s.workload.output_len = Some(LengthSpec::Dist(LengthDist::Zipf {
                        max: 1 << 20,
                        exponent: 1.0,
                        scale: Some(1 << 20),
                    }))
                },
                "must fit in 32 bits",
            ),
            (|s| s.slo.ttft_ms = Some(0.0), "slo.ttft_ms must be > 0, got 0"),
            (|s| s.slo.tpot_ms = Some(-1.0), "slo.tpot_ms must be > 0, got -1"),
            (|s| s.slo.e2e_ms = Some(f64::NAN), "slo.e2e_ms must be > 0, got NaN"),
        ];
        for (edit, want) in cases {
            let mut s = base.clone();
            edit(&mut s);
            match validate(&s) {
                Ok(()) => panic!("accepted; expected {want:?}"),
                Err(got) => assert!(
                    got.starts_with(want) || got.contains(want),
                    "got {got:?}, expected {want:?}"
                ),
            }
        }
        // Keys of the chosen kind are accepted.
        let mut s = base.clone();
        s.workload.arrival = ArrivalKind::Trace;
        s.workload.trace = Some("t.csv".into());
        (s.workload.requests, s.workload.prompt_len, s.workload.output_len) = (None, None, None);
        assert_eq!(validate(&s), Ok(()));
    }

    fn shipped(name: &str) -> Vec<RunSpec> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios").join(name);
        load_runs(&path, &[], None).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn every_shipped_scenario_loads_and_validates() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".toml"))
            .collect();
        names.sort();
        for name in [
            "long-context.toml",
            "poisson.toml",
            "quickstart.toml",
            "seed-matrix.toml",
        ] {
            assert!(names.iter().any(|n| n == name), "scenarios/{name} is missing");
        }
        for name in &names {
            let runs = shipped(name);
            assert!(!runs.is_empty(), "{name}");
            for run in &runs {
                assert_eq!(validate(&run.scenario), Ok(()), "{name} {}", run.name);
                crate::workload::generate(&run.scenario, &run.base_dir).unwrap_or_else(|e| panic!("{name}: {e}"));
            }
        }
    }

    #[test]
    fn shipped_scenarios_have_the_promised_runs() {
        let quick = shipped("quickstart.toml");
        let policies: Vec<PolicyKind> = quick.iter().map(|r| r.scenario.scheduler.policy).collect();
        assert_eq!(policies, PolicyKind::ALL);
        let matrix = shipped("seed-matrix.toml");
        assert_eq!(matrix.len(), 162);
        assert_eq!(matrix[161].name, "r161");
        assert!(matrix.iter().all(|r| r.scenario.seed == 7));
        assert_eq!(matrix[80].scenario.model.name.as_deref(), Some("qwen2.5-0.5b"));
        assert_eq!(matrix[81].scenario.model.name.as_deref(), Some("qwen2.5-1.5b"));
        assert_eq!(shipped("poisson.toml").len(), 10);
        let long = shipped("long-context.toml");
        assert_eq!(
            long.iter()
                .map(|r| r.scenario.scheduler.chunked_prefill)
                .collect::<Vec<_>>(),
            [false, true]
        );
        // Unchunked, the longest prompt must fit one step's token budget; chunked, the budget is small enough to
        // split every prompt.
        for run in &long {
            let Some(LengthSpec::Dist(LengthDist::Uniform { min, max })) = run.scenario.workload.prompt_len else {
                panic!("long-context prompts are uniform")
            };
            let budget = run.scenario.scheduler.max_batch_tokens;
            if run.scenario.scheduler.chunked_prefill {
                assert!(budget < min);
            } else {
                assert!(max <= budget);
            }
        }
    }

    #[test]
    fn missing_file_is_an_io_error_naming_the_path() {
        let e = load_runs(Path::new("/nonexistent/s.toml"), &[], None).unwrap_err();
        assert!(matches!(e, ScenarioError::Io { .. }));
        assert!(e.to_string().starts_with("cannot read /nonexistent/s.toml: "), "{e}");
    }
}
