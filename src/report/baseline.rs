//! `batchlab baseline-report`: batchlab's measured output throughput beside Hugging Face transformers' on the same
//! burst workloads, and whether batchlab is the required multiple faster.
//!
//! Two sources, joined on (model, prompt length, max batch, requests):
//!
//! - a `batchlab validate` folder: `summary.json` holds one entry per *measured* run (its labels and metrics;
//!   `validation.json` beside it marks the folder as measured rather than simulated) and `device.json` the card;
//! - the CSV(s) `scripts/hf_baseline.py` writes: one row per configuration and transformers mode (`generate` on
//!   static padded batches, `generate_batch` for its continuous batching with per-request lengths,
//!   `generate_batch_call` for the literal one-length call), with the card and library versions in every row.
//!
//! Both count output throughput the same way: Σ output targets / wall time of the burst (first arrival to last
//! token). Before two numbers are divided, their output token counts must agree (the same workload); a
//! configuration found in one source only, or whose workloads disagree, is listed, never silently dropped.

use super::markdown::{aligned_table, escape};
use crate::sim::hardware::GpuSpec;
use crate::units::MIB;
use crate::validate::DeviceFingerprint;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

/// batchlab's output tok/s must be at least this multiple of transformers' at the headline configuration.
pub const TARGET_SPEEDUP: f64 = 50.0;
/// The headline configuration: the largest batch limit and burst of the seed matrix.
pub const HEADLINE_MAX_BATCH: u32 = 8;
pub const HEADLINE_REQUESTS: u32 = 16;

/// The transformers modes `scripts/hf_baseline.py` measures, in report order.
pub const MODES: [&str; 3] = ["generate", "generate_batch", "generate_batch_call"];

/// Columns a baseline CSV must have.
const REQUIRED_COLUMNS: [&str; 12] = [
    "model",
    "prompt_len",
    "max_batch",
    "requests",
    "mode",
    "output_tokens",
    "wall_s",
    "output_tok_per_s",
    "gpu",
    "torch",
    "transformers",
    "error",
];

#[derive(Debug, thiserror::Error)]
pub enum BaselineError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}: {source}", path.display())]
    Json { path: PathBuf, source: serde_json::Error },
    /// The message names the file, and the line, entry or column.
    #[error("{0}")]
    Invalid(String),
}

fn read(path: &Path) -> Result<String, BaselineError> {
    std::fs::read_to_string(path).map_err(|source| BaselineError::Io {
        path: path.to_owned(),
        source,
    })
}

/// One configuration of the burst workload.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConfigKey {
    pub model: String,
    pub prompt_len: u32,
    pub max_batch: u32,
    pub requests: u32,
}

impl fmt::Display for ConfigKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}, prompt {}, max batch {}, {} requests",
            self.model, self.prompt_len, self.max_batch, self.requests
        )
    }
}

// --- the validate folder --------------------------------------------------------------------------------------------

/// One measured run of a validate folder.
#[derive(Clone, Debug, PartialEq)]
pub struct MeasuredRun {
    pub run: String,
    pub key: ConfigKey,
    pub policy: String,
    pub output_tokens: u64,
    pub output_tok_per_s: f64,
    /// The engine's weights (the summary's `weights_mib`, measured), where the summary has them.
    pub weight_bytes: Option<u64>,
}

/// What a `batchlab validate` folder says about its measured runs and its card.
#[derive(Clone, Debug, PartialEq)]
pub struct ValidatedRuns {
    pub dir: PathBuf,
    pub runs: Vec<MeasuredRun>,
    /// `device.json`; `None` for folders written before validate recorded it.
    pub device: Option<DeviceFingerprint>,
    /// The `gpu` labels of the runs: the cost model's hardware preset, not a card name.
    pub gpu_presets: BTreeSet<String>,
}

/// Reads the measured runs of a `batchlab validate` folder.
pub fn load_validated(dir: &Path) -> Result<ValidatedRuns, BaselineError> {
    if !dir.join(super::VALIDATION_JSON).is_file() {
        return Err(BaselineError::Invalid(format!(
            "{}: no {} here, so this is not a folder written by `batchlab validate` (a `simulate` folder holds \
             predictions, not measurements)",
            dir.display(),
            super::VALIDATION_JSON
        )));
    }
    let path = dir.join("summary.json");
    let text = read(&path)?;
    let runs = parse_summary(&path.display().to_string(), &text)?;
    let mut gpu_presets = BTreeSet::new();
    let entries: Vec<Value> = serde_json::from_str(&text).map_err(|source| BaselineError::Json {
        path: path.clone(),
        source,
    })?;
    for entry in &entries {
        if let Some(gpu) = entry.get("gpu").and_then(Value::as_str) {
            gpu_presets.insert(gpu.to_owned());
        }
    }
    let device_path = dir.join(super::DEVICE_JSON);
    let device = if device_path.is_file() {
        let text = read(&device_path)?;
        Some(serde_json::from_str(&text).map_err(|source| BaselineError::Json {
            path: device_path,
            source,
        })?)
    } else {
        None
    };
    Ok(ValidatedRuns {
        dir: dir.to_owned(),
        runs,
        device,
        gpu_presets,
    })
}

/// The runs of a `summary.json` (`file` names it in errors). The prompt length is the sweep label
/// `workload.prompt_len` where the scenario sweeps it, else prompt tokens / requests (a fixed prompt length).
pub fn parse_summary(file: &str, text: &str) -> Result<Vec<MeasuredRun>, BaselineError> {
    let entries: Vec<Value> = serde_json::from_str(text)
        .map_err(|e| BaselineError::Invalid(format!("{file}: not a JSON array of runs: {e}")))?;
    let mut runs = Vec::with_capacity(entries.len());
    for (i, entry) in entries.iter().enumerate() {
        let run_name = entry.get("run").and_then(Value::as_str).unwrap_or("?");
        let at = || format!("{file}: entry {} (run {run_name})", i + 1);
        let field = |key: &str| -> Result<&Value, BaselineError> {
            match entry.get(key) {
                None => Err(BaselineError::Invalid(format!("{}: `{key}` is missing", at()))),
                Some(Value::Null) => Err(BaselineError::Invalid(format!("{}: `{key}` has no value", at()))),
                Some(v) => Ok(v),
            }
        };
        let string = |key: &str| -> Result<String, BaselineError> {
            let v = field(key)?;
            v.as_str()
                .map(str::to_owned)
                .ok_or_else(|| BaselineError::Invalid(format!("{}: `{key}` is not a string, got {v}", at())))
        };
        let whole = |key: &str| -> Result<u64, BaselineError> {
            let v = field(key)?;
            v.as_u64()
                .ok_or_else(|| BaselineError::Invalid(format!("{}: `{key}` is not a whole number, got {v}", at())))
        };
        let small = |key: &str| -> Result<u32, BaselineError> {
            let v = whole(key)?;
            u32::try_from(v).map_err(|_| BaselineError::Invalid(format!("{}: `{key}` is too large, got {v}", at())))
        };
        let requests = small("requests")?;
        let prompt_len = match entry.get("workload.prompt_len") {
            Some(_) => small("workload.prompt_len")?,
            None => {
                let prompt_tokens = whole("prompt_tokens")?;
                if requests == 0 || prompt_tokens % u64::from(requests) != 0 {
                    return Err(BaselineError::Invalid(format!(
                        "{}: no `workload.prompt_len` label and {prompt_tokens} prompt tokens over {requests} \
                         requests is not one fixed prompt length",
                        at()
                    )));
                }
                u32::try_from(prompt_tokens / u64::from(requests))
                    .map_err(|_| BaselineError::Invalid(format!("{}: prompt length too large", at())))?
            }
        };
        let tok_s = field("output_tok_per_s")?;
        let output_tok_per_s = tok_s.as_f64().filter(|v| v.is_finite() && *v > 0.0).ok_or_else(|| {
            BaselineError::Invalid(format!(
                "{}: `output_tok_per_s` is not a positive number, got {tok_s}",
                at()
            ))
        })?;
        runs.push(MeasuredRun {
            run: string("run")?,
            key: ConfigKey {
                model: string("model")?,
                prompt_len,
                max_batch: small("max_batch_size")?,
                requests,
            },
            policy: string("policy")?,
            output_tokens: whole("output_tokens")?,
            output_tok_per_s,
            weight_bytes: entry
                .get("weights_mib")
                .and_then(Value::as_f64)
                .filter(|v| v.is_finite() && *v > 0.0)
                .map(|mib| (mib * MIB).round() as u64),
        });
    }
    Ok(runs)
}

// --- the transformers CSV -------------------------------------------------------------------------------------------

/// One measurement of transformers (a row of the baseline CSV).
#[derive(Clone, Debug, PartialEq)]
pub struct BaselineRow {
    /// `file:line`, for messages.
    pub source: String,
    pub key: ConfigKey,
    pub mode: String,
    /// The measurement, or the error the script recorded instead.
    pub result: Result<Throughput, String>,
    pub gpu: String,
    pub torch: String,
    pub transformers: String,
    pub settings: String,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Throughput {
    pub output_tokens: u64,
    pub wall_s: f64,
    pub output_tok_per_s: f64,
}

/// Splits one CSV record (RFC 4180 quoting: `"a, b"`, `""` for a quote). Records span one line: the script writes
/// every cell on one line.
fn split_record(line: &str) -> Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        let mut field = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    None => return Err("a quoted field is not closed on its line".to_owned()),
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    Some('"') => break,
                    Some(c) => field.push(c),
                }
            }
            match chars.next() {
                None => {
                    fields.push(field);
                    return Ok(fields);
                }
                Some(',') => fields.push(field),
                Some(c) => return Err(format!("`{c}` after the closing quote of field {}", fields.len() + 1)),
            }
        } else {
            loop {
                match chars.next() {
                    None => {
                        fields.push(field);
                        return Ok(fields);
                    }
                    Some(',') => break,
                    Some(c) => field.push(c),
                }
            }
            fields.push(field);
        }
    }
}

/// Parses a baseline CSV (`file` names it in errors). Blank lines and lines starting with `#` are skipped.
pub fn parse_baseline_csv(file: &str, text: &str) -> Result<Vec<BaselineRow>, BaselineError> {
    let invalid = |line: usize, message: String| BaselineError::Invalid(format!("{file}:{line}: {message}"));
    let mut records = text
        .lines()
        .enumerate()
        .map(|(i, line)| (i + 1, line))
        .filter(|(_, line)| !line.trim().is_empty() && !line.starts_with('#'));
    let Some((header_line, header)) = records.next() else {
        return Err(BaselineError::Invalid(format!(
            "{file}: empty: expected a header with the columns {}",
            REQUIRED_COLUMNS.join(",")
        )));
    };
    let header = split_record(header).map_err(|e| invalid(header_line, e))?;
    let column = |name: &str| header.iter().position(|h| h.trim() == name);
    for name in REQUIRED_COLUMNS {
        if column(name).is_none() {
            return Err(invalid(
                header_line,
                format!(
                    "the header has no `{name}` column (columns: {}; scripts/hf_baseline.py writes them)",
                    header.join(",")
                ),
            ));
        }
    }
    let index = |name: &str| column(name).expect("checked above");
    let settings_at = column("settings");

    let mut rows = Vec::new();
    for (line, record) in records {
        let fields = split_record(record).map_err(|e| invalid(line, e))?;
        if fields.len() != header.len() {
            return Err(invalid(
                line,
                format!("{} fields, the header has {}", fields.len(), header.len()),
            ));
        }
        let cell = |name: &str| fields[index(name)].trim();
        let bad = |name: &str, what: &str| {
            invalid(
                line,
                format!(
                    "column `{name}` (field {}): `{}` is not {what}",
                    index(name) + 1,
                    cell(name)
                ),
            )
        };
        let count = |name: &str| -> Result<u32, BaselineError> {
            cell(name)
                .parse::<u32>()
                .ok()
                .filter(|&v| v > 0)
                .ok_or_else(|| bad(name, "a positive whole number"))
        };
        let key = ConfigKey {
            model: cell("model").to_owned(),
            prompt_len: count("prompt_len")?,
            max_batch: count("max_batch")?,
            requests: count("requests")?,
        };
        if key.model.is_empty() {
            return Err(bad("model", "a model name"));
        }
        let mode = cell("mode").to_owned();
        if !MODES.contains(&mode.as_str()) {
            return Err(bad("mode", &format!("one of {}", MODES.join(", "))));
        }
        let error = cell("error");
        let result = if error.is_empty() {
            let positive = |name: &str| -> Result<f64, BaselineError> {
                cell(name)
                    .parse::<f64>()
                    .ok()
                    .filter(|v| v.is_finite() && *v > 0.0)
                    .ok_or_else(|| bad(name, "a positive number"))
            };
            let output_tokens = cell("output_tokens")
                .parse::<u64>()
                .ok()
                .filter(|&v| v > 0)
                .ok_or_else(|| bad("output_tokens", "a positive whole number"))?;
            let wall_s = positive("wall_s")?;
            let output_tok_per_s = positive("output_tok_per_s")?;
            let implied = output_tokens as f64 / wall_s;
            if (output_tok_per_s / implied - 1.0).abs() > 1e-3 {
                return Err(invalid(
                    line,
                    format!(
                        "output_tok_per_s {output_tok_per_s} is not output_tokens / wall_s = {output_tokens} / \
                         {wall_s} = {implied:.3}"
                    ),
                ));
            }
            Ok(Throughput {
                output_tokens,
                wall_s,
                output_tok_per_s,
            })
        } else {
            Err(error.to_owned())
        };
        rows.push(BaselineRow {
            source: format!("{file}:{line}"),
            key,
            mode,
            result,
            gpu: cell("gpu").to_owned(),
            torch: cell("torch").to_owned(),
            transformers: cell("transformers").to_owned(),
            settings: settings_at.map_or_else(String::new, |i| fields[i].trim().to_owned()),
        });
    }
    Ok(rows)
}

/// Reads one or several baseline CSVs (one per model, say); a configuration and mode measured twice is an error.
pub fn load_baseline(paths: &[PathBuf]) -> Result<Vec<BaselineRow>, BaselineError> {
    let mut rows = Vec::new();
    for path in paths {
        rows.extend(parse_baseline_csv(&path.display().to_string(), &read(path)?)?);
    }
    check_unique_modes(&rows)?;
    Ok(rows)
}

fn check_unique_modes(rows: &[BaselineRow]) -> Result<(), BaselineError> {
    let mut seen: BTreeMap<(&ConfigKey, &str), &str> = BTreeMap::new();
    for row in rows {
        if let Some(first) = seen.insert((&row.key, &row.mode), &row.source) {
            return Err(BaselineError::Invalid(format!(
                "{} and {} both measure {} with {}: keep one",
                first, row.source, row.key, row.mode
            )));
        }
    }
    Ok(())
}

// --- the comparison -------------------------------------------------------------------------------------------------

/// Everything known about one configuration, from both sources.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Joined {
    /// batchlab's output tok/s per policy (`static`, `continuous`, `grouped`).
    pub batchlab: BTreeMap<String, f64>,
    /// transformers' output tok/s per mode, where measured.
    pub transformers: BTreeMap<String, f64>,
    /// The model's weights as batchlab's engine held them.
    pub weight_bytes: Option<u64>,
}

impl Joined {
    pub fn policy(&self, policy: &str) -> Option<f64> {
        self.batchlab.get(policy).copied()
    }

    pub fn mode(&self, mode: &str) -> Option<f64> {
        self.transformers.get(mode).copied()
    }

    /// The fastest batchlab policy and its output tok/s.
    pub fn best(&self) -> Option<(&str, f64)> {
        self.batchlab
            .iter()
            .map(|(p, &v)| (p.as_str(), v))
            .max_by(|a, b| a.1.total_cmp(&b.1))
    }

    /// batchlab's best policy ÷ a transformers mode.
    pub fn best_over(&self, mode: &str) -> Option<f64> {
        Some(self.best()?.1 / self.mode(mode)?)
    }

    /// One batchlab policy ÷ one transformers mode.
    pub fn ratio(&self, policy: &str, mode: &str) -> Option<f64> {
        Some(self.policy(policy)? / self.mode(mode)?)
    }

    /// The most output tokens per second any engine can serve at `max_batch` sequences per step on a card whose
    /// memory moves `gbps` GB/s: each step reads every weight from memory once and gives each of its sequences
    /// at most one token ([`Comparison::ceiling_markdown`] says why).
    pub fn ceiling(&self, max_batch: u32, gbps: f64) -> Option<f64> {
        let w = self.weight_bytes.filter(|&w| w > 0)? as f64;
        Some(f64::from(max_batch) * gbps * 1e9 / w)
    }

    /// What the target asks of batchlab here: the target times the faster transformers mode.
    pub fn target_tok_s(&self) -> Option<f64> {
        let fastest = ["generate", "generate_batch"]
            .iter()
            .filter_map(|m| self.mode(m))
            .max_by(f64::total_cmp)?;
        Some(TARGET_SPEEDUP * fastest)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Fail,
    /// A number needed for the verdict is missing (not measured, failed, or the workloads disagree).
    Missing,
}

impl Verdict {
    /// PASS when every ratio is at least the target; MISSING when any is unknown.
    pub fn of(ratios: &[Option<f64>]) -> Verdict {
        if ratios.iter().any(Option::is_none) {
            Verdict::Missing
        } else if ratios.iter().flatten().all(|&r| r >= TARGET_SPEEDUP) {
            Verdict::Pass
        } else {
            Verdict::Fail
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "PASS",
            Verdict::Fail => "FAIL",
            Verdict::Missing => "MISSING",
        }
    }
}

/// The headline check for one (model, prompt length) at max batch 8 with 16 requests.
#[derive(Clone, Debug, PartialEq)]
pub struct Headline {
    pub key: ConfigKey,
    /// batchlab's best policy ≥ 50× `generate` and ≥ 50× `generate_batch`.
    pub best: Verdict,
    /// Like for like: `static` ≥ 50× `generate` and `continuous` ≥ 50× `generate_batch`.
    pub like_for_like: Verdict,
}

/// The two sources joined.
#[derive(Clone, Debug, PartialEq)]
pub struct Comparison {
    pub validated_dir: PathBuf,
    pub baseline_files: Vec<PathBuf>,
    pub configs: BTreeMap<ConfigKey, Joined>,
    /// Configurations batchlab measured and the CSVs do not have (or only as failures).
    pub only_batchlab: Vec<ConfigKey>,
    /// Configurations the CSVs have and batchlab did not measure.
    pub only_baseline: Vec<ConfigKey>,
    /// Configurations whose output token counts disagree: not the same workload, so not compared.
    pub mismatched: Vec<(ConfigKey, String)>,
    /// The failures the script recorded: (configuration, mode, source, error).
    pub failures: Vec<(ConfigKey, String, String, String)>,
    pub headlines: Vec<Headline>,
    pub cards: Cards,
    /// Distinct settings per mode, as the script recorded them.
    pub settings: BTreeMap<String, BTreeSet<String>>,
}

/// Which card each source names.
#[derive(Clone, Debug, PartialEq)]
pub struct Cards {
    pub batchlab: Option<DeviceFingerprint>,
    pub batchlab_presets: BTreeSet<String>,
    pub baseline_gpus: BTreeSet<String>,
    pub torch: BTreeSet<String>,
    pub transformers: BTreeSet<String>,
}

impl Cards {
    /// Why the two sources may not describe the same card, if they may not.
    pub fn warning(&self) -> Option<String> {
        let names: Vec<&str> = self.baseline_gpus.iter().map(String::as_str).collect();
        if names.len() > 1 {
            return Some(format!(
                "the transformers CSVs name {} cards ({}): their rows come from different GPUs",
                names.len(),
                names.join(", ")
            ));
        }
        match (&self.batchlab, names.first()) {
            (None, _) => Some(
                "the validate folder does not record its card (no device.json: it was written before `batchlab \
                 validate` recorded one), so nothing confirms that both sources ran on the same card"
                    .to_owned(),
            ),
            (Some(_), None) => Some("the transformers CSVs have no rows, so they name no card".to_owned()),
            (Some(device), Some(&name)) if device.gpu_name.trim() != name => Some(format!(
                "the sources name different cards: batchlab measured on {}, transformers on {name}; the ratios \
                 compare two GPUs, not two engines",
                device.gpu_name
            )),
            _ => None,
        }
    }
}

/// Joins the measured runs with the baseline rows.
pub fn compare(
    validated: &ValidatedRuns,
    baseline: &[BaselineRow],
    baseline_files: &[PathBuf],
) -> Result<Comparison, BaselineError> {
    let summary = validated.dir.join("summary.json");
    let mut batchlab: BTreeMap<ConfigKey, (u64, BTreeMap<String, f64>)> = BTreeMap::new();
    let mut weights: BTreeMap<ConfigKey, u64> = BTreeMap::new();
    let mut run_of: BTreeMap<(&ConfigKey, &str), &str> = BTreeMap::new();
    for run in &validated.runs {
        if let Some(other) = run_of.insert((&run.key, &run.policy), &run.run) {
            return Err(BaselineError::Invalid(format!(
                "{}: runs {other} and {} both measure {} with the {} policy; the report needs one run per \
                 configuration and policy",
                summary.display(),
                run.run,
                run.key,
                run.policy
            )));
        }
        let entry = batchlab
            .entry(run.key.clone())
            .or_insert_with(|| (run.output_tokens, BTreeMap::new()));
        if let Some(w) = run.weight_bytes {
            weights.insert(run.key.clone(), w);
        }
        if entry.0 != run.output_tokens {
            return Err(BaselineError::Invalid(format!(
                "{}: run {} ({}) has {} output tokens, another policy of the same configuration {}",
                summary.display(),
                run.run,
                run.key,
                run.output_tokens,
                entry.0
            )));
        }
        entry.1.insert(run.policy.clone(), run.output_tok_per_s);
    }

    let mut transformers: BTreeMap<ConfigKey, BTreeMap<String, Throughput>> = BTreeMap::new();
    let mut failures = Vec::new();
    let mut settings: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for row in baseline {
        match &row.result {
            Ok(t) => {
                transformers
                    .entry(row.key.clone())
                    .or_default()
                    .insert(row.mode.clone(), *t);
                if !row.settings.is_empty() {
                    settings
                        .entry(row.mode.clone())
                        .or_default()
                        .insert(row.settings.clone());
                }
            }
            Err(e) => failures.push((row.key.clone(), row.mode.clone(), row.source.clone(), e.clone())),
        }
    }

    let mut configs = BTreeMap::new();
    let mut only_batchlab = Vec::new();
    let mut mismatched = Vec::new();
    for (key, (tokens, policies)) in &batchlab {
        let mut joined = Joined {
            batchlab: policies.clone(),
            transformers: BTreeMap::new(),
            weight_bytes: weights.get(key).copied(),
        };
        match transformers.get(key) {
            None => only_batchlab.push(key.clone()),
            Some(modes) => {
                let disagree: Vec<String> = modes
                    .iter()
                    .filter(|(_, t)| t.output_tokens != *tokens)
                    .map(|(mode, t)| format!("{mode} {}", t.output_tokens))
                    .collect();
                if disagree.is_empty() {
                    joined.transformers = modes.iter().map(|(m, t)| (m.clone(), t.output_tok_per_s)).collect();
                } else {
                    mismatched.push((
                        key.clone(),
                        format!("batchlab {tokens} output tokens, transformers {}", disagree.join(", ")),
                    ));
                }
            }
        }
        configs.insert(key.clone(), joined);
    }
    let failed: BTreeSet<&ConfigKey> = failures.iter().map(|(k, ..)| k).collect();
    let only_baseline: Vec<ConfigKey> = transformers
        .keys()
        .chain(failed)
        .filter(|k| !batchlab.contains_key(*k))
        .cloned()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();

    // Every (model, prompt length) either source knows, at the headline batch limit and burst.
    let headline_keys: BTreeSet<ConfigKey> = configs
        .keys()
        .chain(&only_baseline)
        .map(|k| ConfigKey {
            max_batch: HEADLINE_MAX_BATCH,
            requests: HEADLINE_REQUESTS,
            ..k.clone()
        })
        .collect();
    let headlines = headline_keys
        .into_iter()
        .map(|key| {
            let j = configs.get(&key).cloned().unwrap_or_default();
            Headline {
                best: Verdict::of(&[j.best_over("generate"), j.best_over("generate_batch")]),
                like_for_like: Verdict::of(&[j.ratio("static", "generate"), j.ratio("continuous", "generate_batch")]),
                key,
            }
        })
        .collect();

    let set = |get: fn(&BaselineRow) -> &String| baseline.iter().map(|r| get(r).clone()).collect::<BTreeSet<_>>();
    Ok(Comparison {
        validated_dir: validated.dir.clone(),
        baseline_files: baseline_files.to_vec(),
        configs,
        only_batchlab,
        only_baseline,
        mismatched,
        failures,
        headlines,
        cards: Cards {
            batchlab: validated.device.clone(),
            batchlab_presets: validated.gpu_presets.clone(),
            baseline_gpus: set(|r| &r.gpu),
            torch: set(|r| &r.torch),
            transformers: set(|r| &r.transformers),
        },
        settings,
    })
}

// --- the markdown report --------------------------------------------------------------------------------------------

fn tok_s(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.1}"))
}

/// A ratio: one decimal, two below 10 (where 1.04× and 1.0× say different things).
fn times(v: Option<f64>) -> String {
    match v {
        None => "-".to_owned(),
        Some(v) if v < 10.0 => format!("{v:.2}×"),
        Some(v) => format!("{v:.1}×"),
    }
}

fn code_list(items: &BTreeSet<String>) -> String {
    if items.is_empty() {
        "(none)".to_owned()
    } else {
        items
            .iter()
            .map(|s| format!("`{}`", escape(s)))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl Comparison {
    /// The headline section alone (what the command prints).
    pub fn headline_markdown(&self) -> String {
        let mut out = format!(
            "## Headline: max batch {HEADLINE_MAX_BATCH}, {HEADLINE_REQUESTS} requests (target: batchlab ≥ \
             {TARGET_SPEEDUP:.0}× transformers)\n\n"
        );
        out.push_str(&format!(
            "**best**: batchlab's fastest policy at least {t:.0}× `model.generate` and at least {t:.0}× \
             `generate_batch` (transformers' continuous batching). **like for like**: static at least {t:.0}× \
             `generate` and continuous at least {t:.0}× `generate_batch`.\n\n",
            t = TARGET_SPEEDUP
        ));
        let headers: Vec<String> = [
            "model",
            "prompt",
            "batchlab best tok/s",
            "generate tok/s",
            "generate_batch tok/s",
            "best ÷ generate",
            "best ÷ generate_batch",
            "best",
            "static ÷ generate",
            "continuous ÷ generate_batch",
            "like for like",
        ]
        .map(str::to_owned)
        .to_vec();
        let right = [false, true, false, true, true, true, true, false, true, true, false];
        let rows: Vec<Vec<String>> = self
            .headlines
            .iter()
            .map(|h| {
                let j = self.configs.get(&h.key).cloned().unwrap_or_default();
                vec![
                    escape(&h.key.model),
                    h.key.prompt_len.to_string(),
                    j.best()
                        .map_or_else(|| "-".to_owned(), |(p, v)| format!("{v:.1} ({p})")),
                    tok_s(j.mode("generate")),
                    tok_s(j.mode("generate_batch")),
                    times(j.best_over("generate")),
                    times(j.best_over("generate_batch")),
                    h.best.as_str().to_owned(),
                    times(j.ratio("static", "generate")),
                    times(j.ratio("continuous", "generate_batch")),
                    h.like_for_like.as_str().to_owned(),
                ]
            })
            .collect();
        out.push_str(&aligned_table(&headers, &right, &rows));
        let count = |get: fn(&Headline) -> Verdict| self.headlines.iter().filter(|h| get(h) == Verdict::Pass).count();
        out.push_str(&format!(
            "\nTarget met (best) in {} of {} configuration(s); like for like in {} of {}.\n",
            count(|h| h.best),
            self.headlines.len(),
            count(|h| h.like_for_like),
            self.headlines.len()
        ));
        if self.headlines.iter().any(|h| h.best == Verdict::Missing) {
            out.push_str(
                "MISSING: a number the verdict needs was not measured, failed, or its workload disagrees; see \
                 below.\n",
            );
        }
        out
    }

    /// The card's peak memory bandwidth: the datasheet figure of the GPU preset the runs were validated with,
    /// when they name exactly one.
    pub fn peak_bandwidth(&self) -> Option<(&str, f64)> {
        let mut presets = self.cards.batchlab_presets.iter();
        let (Some(name), None) = (presets.next(), presets.next()) else {
            return None;
        };
        let spec = GpuSpec::preset(name).ok()?;
        Some((name.as_str(), spec.mem_bandwidth_gbps))
    }

    /// The physical ceiling of the headline configurations beside what the target asks.
    pub fn ceiling_markdown(&self) -> String {
        let mut out = String::from(
            "## What the card allows

",
        );
        let Some((preset, gbps)) = self.peak_bandwidth() else {
            out.push_str("The runs name no single GPU preset with a datasheet bandwidth, so no ceiling is computed.\n");
            return out;
        };
        out.push_str(&format!(
            "Every step of a dense model, prefill, decode or mixed, reads every weight from the GPU's memory once \
             (lm_head, tied to the embedding, reads the whole table; hundreds of MB to GB of weights against an L2 \
             cache of tens of MB, so nothing stays cached from one step to the next), and gives each sequence in it \
             at most one token. At max batch {b} no engine can therefore serve more than {b} × bandwidth ÷ weight bytes output \
             tokens per second, whatever it does about launches, attention or prefill. At the datasheet peak of \
             the card's memory (GPU preset `{preset}`: {gbps:.0} GB/s; what kernels reach is below it) and the \
             weights batchlab's engine held:\n\n",
            b = HEADLINE_MAX_BATCH,
        ));
        let headers: Vec<String> = [
            "model",
            "prompt",
            "weights MB",
            "ceiling tok/s",
            "target tok/s",
            "target ÷ ceiling",
            "batchlab best tok/s",
            "best ÷ ceiling",
            "target within the ceiling",
        ]
        .map(str::to_owned)
        .to_vec();
        let right = [false, true, true, true, true, true, true, true, false];
        let percent = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{:.0}%", 100.0 * v));
        let rows: Vec<Vec<String>> = self
            .headlines
            .iter()
            .map(|h| {
                let j = self.configs.get(&h.key).cloned().unwrap_or_default();
                let ceiling = j.ceiling(h.key.max_batch, gbps);
                let target = j.target_tok_s();
                let of = |v: Option<f64>| Some(v? / ceiling?);
                vec![
                    escape(&h.key.model),
                    h.key.prompt_len.to_string(),
                    j.weight_bytes
                        .map_or_else(|| "-".to_owned(), |w| format!("{:.0}", w as f64 / 1e6)),
                    tok_s(ceiling),
                    tok_s(target),
                    percent(of(target)),
                    tok_s(j.best().map(|b| b.1)),
                    percent(of(j.best().map(|b| b.1))),
                    match of(target) {
                        Some(r) if r > 1.0 => "no: beyond the ceiling".to_owned(),
                        Some(_) => "yes".to_owned(),
                        None => "-".to_owned(),
                    },
                ]
            })
            .collect();
        out.push_str(&aligned_table(&headers, &right, &rows));
        out.push_str(&format!(
            "\nTarget: {TARGET_SPEEDUP:.0}× the faster of `generate` and `generate_batch` (what the headline \
             asks). Where it is beyond the ceiling, no engine on this card meets it against these transformers \
             numbers; where it is within, the share says how close to the memory's peak, over the whole burst \
             (prefill included), an engine would have to run.\n"
        ));
        out
    }

    fn card_markdown(&self) -> String {
        let c = &self.cards;
        let mut out = String::from("## Card\n\n");
        match &c.batchlab {
            Some(d) => out.push_str(&format!(
                "- batchlab (`{}`): **{}** — compute capability {}, {} SMs, {:.1} GiB, driver {}, CUDA {}, kernel \
                 source {}\n",
                self.validated_dir.join(super::DEVICE_JSON).display(),
                escape(&d.gpu_name),
                d.compute_capability,
                d.sm_count,
                d.memory_bytes as f64 / f64::from(1u32 << 30),
                d.driver_version.as_deref().unwrap_or("unknown"),
                d.cuda_version,
                d.kernel_source_hash
            )),
            None => out.push_str(&format!(
                "- batchlab: not recorded (no device.json in `{}`); its runs name the cost model's hardware preset \
                 {}, not a card\n",
                self.validated_dir.display(),
                code_list(&c.batchlab_presets)
            )),
        }
        out.push_str(&format!(
            "- transformers (the CSVs' `gpu` column): {}; torch {}, transformers {}\n",
            code_list(&c.baseline_gpus),
            code_list(&c.torch),
            code_list(&c.transformers)
        ));
        match c.warning() {
            Some(w) => out.push_str(&format!("\n**Warning:** {w}.\n")),
            None => out.push_str("- Both sources name the same card.\n"),
        }
        out
    }

    fn table_markdown(&self) -> String {
        let call = self.configs.values().any(|j| j.mode("generate_batch_call").is_some());
        let mut headers: Vec<String> = [
            "model",
            "prompt",
            "max batch",
            "requests",
            "static",
            "continuous",
            "grouped",
            "generate",
            "generate_batch",
        ]
        .map(str::to_owned)
        .to_vec();
        if call {
            headers.push("generate_batch (one call)".to_owned());
        }
        headers.extend(
            [
                "best ÷ generate",
                "best ÷ generate_batch",
                "static ÷ generate",
                "continuous ÷ generate_batch",
            ]
            .map(str::to_owned),
        );
        let mut right = vec![false];
        right.resize(headers.len(), true);
        let rows: Vec<Vec<String>> = self
            .configs
            .iter()
            .map(|(k, j)| {
                let mut row = vec![
                    escape(&k.model),
                    k.prompt_len.to_string(),
                    k.max_batch.to_string(),
                    k.requests.to_string(),
                    tok_s(j.policy("static")),
                    tok_s(j.policy("continuous")),
                    tok_s(j.policy("grouped")),
                    tok_s(j.mode("generate")),
                    tok_s(j.mode("generate_batch")),
                ];
                if call {
                    row.push(tok_s(j.mode("generate_batch_call")));
                }
                row.extend([
                    times(j.best_over("generate")),
                    times(j.best_over("generate_batch")),
                    times(j.ratio("static", "generate")),
                    times(j.ratio("continuous", "generate_batch")),
                ]);
                row
            })
            .collect();
        let mut out = String::from(
            "## Every configuration\n\nOutput tokens per second; the ratios are batchlab ÷ transformers (best: the \
             fastest batchlab policy of the row). `-`: not measured, failed, or a workload mismatch (listed below).\n\n",
        );
        out.push_str(&aligned_table(&headers, &right, &rows));
        out
    }

    fn gaps_markdown(&self) -> String {
        let mut out = String::new();
        let list = |title: &str, keys: &[ConfigKey], out: &mut String| {
            if !keys.is_empty() {
                out.push_str(&format!("\n### {title} ({})\n\n", keys.len()));
                for k in keys {
                    out.push_str(&format!("- {}\n", escape(&k.to_string())));
                }
            }
        };
        list(
            "Measured by batchlab only (not in the transformers CSVs, or only as failures)",
            &self.only_batchlab,
            &mut out,
        );
        list(
            "In the transformers CSVs only (batchlab did not measure them)",
            &self.only_baseline,
            &mut out,
        );
        if !self.mismatched.is_empty() {
            out.push_str(&format!(
                "\n### Workloads that disagree ({}): not compared\n\n",
                self.mismatched.len()
            ));
            for (k, why) in &self.mismatched {
                out.push_str(&format!("- {}: {}\n", escape(&k.to_string()), escape(why)));
            }
        }
        if !self.failures.is_empty() {
            out.push_str(&format!("\n### transformers failures ({})\n\n", self.failures.len()));
            for (k, mode, source, error) in &self.failures {
                out.push_str(&format!(
                    "- {} — {mode} ({source}): {}\n",
                    escape(&k.to_string()),
                    escape(error)
                ));
            }
        }
        if out.is_empty() {
            "## Coverage\n\nEvery configuration is in both sources, with the same output token counts.\n".to_owned()
        } else {
            format!("## Not compared\n{out}")
        }
    }

    /// The whole report.
    pub fn markdown(&self) -> String {
        let files: Vec<String> = self
            .baseline_files
            .iter()
            .map(|p| format!("`{}`", p.display()))
            .collect();
        let mut out = String::from("# batchlab against Hugging Face transformers\n\n");
        out.push_str(
            "Output tokens per second of the same burst workloads (every request arrives at once; synthetic prompt \
             tokens; output targets alternating 16 and 32 tokens, honoured exactly), measured on batchlab's GPU \
             engine by `batchlab validate` and with transformers on random fp16 weights of the same model \
             configuration by `scripts/hf_baseline.py`.\n\n",
        );
        out.push_str(&format!(
            "- batchlab: `{}` ({} configuration(s))\n- transformers: {}\n\n",
            self.validated_dir.display(),
            self.configs.len(),
            files.join(", ")
        ));
        out.push_str(&self.card_markdown());
        out.push('\n');
        out.push_str(&self.headline_markdown());
        out.push('\n');
        out.push_str(&self.ceiling_markdown());
        out.push('\n');
        out.push_str(&self.table_markdown());
        out.push('\n');
        out.push_str(&self.gaps_markdown());
        out.push_str(
            "\n## How the numbers were taken\n\n\
             - batchlab: `output_tok_per_s` of each measured run in the validate folder's `summary.json` (Σ output \
             targets / makespan, first arrival to last token), one run per policy.\n\
             - transformers: Σ output targets / wall time of the burst, from just before the first request is \
             submitted to the last token (torch.cuda.synchronize() on both sides), after an untimed warm-up burst; \
             the median of the script's repeats.\n\
             - `generate`: `model.generate` on static batches of up to max batch requests in arrival order, each \
             run to its longest target (min_new_tokens = max_new_tokens); a request counts only its own target.\n\
             - `generate_batch`: transformers' continuous batching with each request's own target, through the \
             ContinuousBatchingManager that `model.generate_batch` wraps (`generate_batch` itself takes one \
             max_new_tokens for all requests); at most max batch requests per step.\n\
             - `generate_batch (one call)`: the literal `model.generate_batch` call: every request runs to the \
             longest target (32), only its own target is counted.\n",
        );
        if !self.settings.is_empty() {
            out.push_str("\nSettings each transformers mode ran with, as the CSVs record them:\n\n");
            for (mode, all) in &self.settings {
                for s in all {
                    out.push_str(&format!("- {mode}: {}\n", escape(s)));
                }
            }
        }
        out
    }
}

/// Reads both sources and joins them.
pub fn baseline_comparison(validated: &Path, baseline: &[PathBuf]) -> Result<Comparison, BaselineError> {
    let runs = load_validated(validated)?;
    let rows = load_baseline(baseline)?;
    compare(&runs, &rows, baseline)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(name: &str) -> DeviceFingerprint {
        DeviceFingerprint {
            gpu_name: name.to_owned(),
            gpu_uuid: None,
            compute_capability: "9.0".to_owned(),
            sm_count: 132,
            memory_bytes: 85_520_809_984,
            driver_version: Some("580.159.04".to_owned()),
            cuda_version: "13.0".to_owned(),
            kernel_source_hash: "abc123".to_owned(),
            engine_revision: crate::engine::ENGINE_REVISION,
            issue_cpu: None,
        }
    }

    fn entry(run: &str, model: &str, prompt: u32, batch: u32, requests: u32, policy: &str, tok_s: f64) -> Value {
        // Outputs alternate 16, 32, …
        let output = 16 * u64::from(requests.div_ceil(2)) + 32 * u64::from(requests / 2);
        serde_json::json!({
            "run": run, "scenario": "seed-matrix", "seed": 7, "model.name": model,
            "workload.prompt_len": prompt, "scheduler.max_batch_size": batch, "workload.requests": requests,
            "scheduler.policy": policy, "model": model, "policy": policy, "max_batch_size": batch,
            "cost": "calibrated", "gpu": "h100-sxm", "requests": requests, "completed": requests,
            "prompt_tokens": u64::from(prompt) * u64::from(requests), "output_tokens": output,
            "makespan_s": output as f64 / tok_s, "output_tok_per_s": tok_s, "weights_mib": 942.29,
        })
    }

    /// A validate folder: max batch 8 / 16 requests for two prompts of qwen2.5-0.5b, and one configuration the
    /// baseline lacks.
    fn validated_folder(dir: &Path, device_name: Option<&str>) {
        let m = "qwen2.5-0.5b";
        let runs = vec![
            entry("r0", m, 64, 8, 16, "static", 30_000.0),
            entry("r1", m, 64, 8, 16, "continuous", 36_000.0),
            entry("r2", m, 64, 8, 16, "grouped", 20_000.0),
            entry("r3", m, 512, 8, 16, "static", 9_000.0),
            entry("r4", m, 512, 8, 16, "continuous", 12_000.0),
            entry("r5", m, 256, 1, 4, "static", 900.0),
        ];
        std::fs::write(dir.join("summary.json"), serde_json::to_string_pretty(&runs).unwrap()).unwrap();
        std::fs::write(dir.join("validation.json"), "{}").unwrap();
        if let Some(name) = device_name {
            let json = serde_json::to_string_pretty(&device(name)).unwrap();
            std::fs::write(dir.join("device.json"), json).unwrap();
        }
    }

    const HEADER: &str = "model,prompt_len,max_batch,requests,mode,output_tokens,wall_s,output_tok_per_s,repeats,\
                          wall_s_min,wall_s_max,gpu,torch,transformers,settings,error";

    fn row(prompt: u32, batch: u32, requests: u32, mode: &str, tokens: u64, wall: f64) -> String {
        format!(
            "qwen2.5-0.5b,{prompt},{batch},{requests},{mode},{tokens},{wall},{:.3},1,{wall},{wall},\
             NVIDIA H100 80GB HBM3,2.11.0+cu130,5.17.0,\"greedy, attn=sdpa\",",
            tokens as f64 / wall
        )
    }

    /// 384 output tokens (16 requests of 16/32): generate at 500 tok/s, generate_batch at 600 tok/s for prompt 64;
    /// for prompt 512 generate at 200 and generate_batch at 300; a failure; a configuration batchlab lacks.
    fn baseline_csv() -> String {
        [
            HEADER.to_owned(),
            row(64, 8, 16, "generate", 384, 0.768),
            row(64, 8, 16, "generate_batch", 384, 0.64),
            row(512, 8, 16, "generate", 384, 1.92),
            row(512, 8, 16, "generate_batch", 384, 1.28),
            "qwen2.5-0.5b,64,8,16,generate_batch_call,,,,,,,NVIDIA H100 80GB HBM3,2.11.0+cu130,5.17.0,,\
             \"RuntimeError('no result for request req_3')\""
                .to_owned(),
            row(64, 4, 8, "generate", 192, 1.0),
        ]
        .join("\r\n")
    }

    fn comparison(device_name: Option<&str>) -> Comparison {
        let tmp = tempfile::tempdir().unwrap();
        validated_folder(tmp.path(), device_name);
        let csv = tmp.path().join("hf.csv");
        std::fs::write(&csv, baseline_csv()).unwrap();
        let mut c = baseline_comparison(tmp.path(), std::slice::from_ref(&csv)).unwrap();
        // Stable paths for the assertions below.
        c.validated_dir = PathBuf::from("validated");
        c.baseline_files = vec![PathBuf::from("hf.csv")];
        c
    }

    fn key(prompt: u32, batch: u32, requests: u32) -> ConfigKey {
        ConfigKey {
            model: "qwen2.5-0.5b".to_owned(),
            prompt_len: prompt,
            max_batch: batch,
            requests,
        }
    }

    #[test]
    fn the_sources_join_on_the_configuration_with_their_ratios() {
        let c = comparison(Some("NVIDIA H100 80GB HBM3"));
        let j = &c.configs[&key(64, 8, 16)];
        assert_eq!(j.best(), Some(("continuous", 36_000.0)));
        assert!((j.mode("generate").unwrap() - 500.0).abs() < 1e-9);
        assert!((j.mode("generate_batch").unwrap() - 600.0).abs() < 1e-9);
        assert!((j.best_over("generate").unwrap() - 72.0).abs() < 1e-9);
        assert!((j.best_over("generate_batch").unwrap() - 60.0).abs() < 1e-9);
        assert!((j.ratio("static", "generate").unwrap() - 60.0).abs() < 1e-9);
        assert!((j.ratio("continuous", "generate_batch").unwrap() - 60.0).abs() < 1e-9);
        assert_eq!(j.mode("generate_batch_call"), None, "a recorded failure has no number");

        let j = &c.configs[&key(512, 8, 16)];
        assert!((j.best_over("generate").unwrap() - 60.0).abs() < 1e-9);
        assert!((j.best_over("generate_batch").unwrap() - 40.0).abs() < 1e-9);

        assert_eq!(c.only_batchlab, vec![key(256, 1, 4)]);
        assert_eq!(c.only_baseline, vec![key(64, 4, 8)]);
        assert!(c.mismatched.is_empty());
        assert_eq!(c.failures.len(), 1);
        assert_eq!(c.failures[0].1, "generate_batch_call");
        assert!(c.failures[0].2.ends_with("hf.csv:6"), "{}", c.failures[0].2);
    }

    #[test]
    fn the_headline_passes_only_at_fifty_times_both() {
        let c = comparison(Some("NVIDIA H100 80GB HBM3"));
        let verdicts: Vec<(u32, Verdict, Verdict)> = c
            .headlines
            .iter()
            .map(|h| (h.key.prompt_len, h.best, h.like_for_like))
            .collect();
        assert_eq!(
            verdicts,
            [
                // 72× and 60×; static 60×, continuous 60×.
                (64, Verdict::Pass, Verdict::Pass),
                // The (model, prompt 256) is known only at max batch 1: nothing at the headline configuration.
                (256, Verdict::Missing, Verdict::Missing),
                // 60× generate but 40× generate_batch.
                (512, Verdict::Fail, Verdict::Fail),
            ]
        );
        let md = c.markdown();
        assert!(
            md.contains("Target met (best) in 1 of 3 configuration(s); like for like in 1 of 3."),
            "{md}"
        );
        assert!(md.contains("| 36000.0 (continuous) |"), "{md}");
        assert!(md.contains("72.0×") && md.contains("40.0×"), "{md}");
        assert!(md.contains("- Both sources name the same card."), "{md}");
        assert!(!md.contains("**Warning:**"), "{md}");
        assert!(
            md.contains("- qwen2.5-0.5b, prompt 256, max batch 1, 4 requests\n"),
            "{md}"
        );
        assert!(
            md.contains("- qwen2.5-0.5b, prompt 64, max batch 4, 8 requests\n"),
            "{md}"
        );
        assert!(
            md.contains("hf.csv:6): RuntimeError('no result for request req_3')"),
            "{md}"
        );
        assert!(md.contains("- generate: greedy, attn=sdpa"), "{md}");
        assert!(
            !md.contains("generate_batch (one call) |"),
            "no column without a number in it: {md}"
        );
    }

    #[test]
    fn the_ceiling_is_the_batch_times_the_bandwidth_over_the_weights() {
        let c = comparison(Some("NVIDIA H100 80GB HBM3"));
        // The runs name the preset h100-sxm: 3,350 GB/s at its datasheet peak.
        assert_eq!(c.peak_bandwidth(), Some(("h100-sxm", 3350.0)));
        let j = &c.configs[&key(64, 8, 16)];
        let weights = 942.29 * MIB;
        assert!((j.weight_bytes.unwrap() as f64 - weights).abs() <= 0.5);
        let ceiling = j.ceiling(8, 3350.0).unwrap();
        assert!((ceiling - 8.0 * 3350e9 / weights).abs() < 0.01, "{ceiling}");
        // 50× the faster mode: 600 tok/s (generate_batch) at prompt 64 → 30,000, beyond 27,123; at prompt 512,
        // 50 × 300 = 15,000, within.
        assert!((j.target_tok_s().unwrap() - 30_000.0).abs() < 1e-6);
        assert!((c.configs[&key(512, 8, 16)].target_tok_s().unwrap() - 15_000.0).abs() < 1e-6);
        let md = c.ceiling_markdown();
        assert!(md.contains("GPU preset `h100-sxm`: 3350 GB/s"), "{md}");
        let row = |prompt: &str| {
            md.lines()
                .find(|l| l.contains(&format!("| {prompt} |")))
                .unwrap_or("")
                .to_owned()
        };
        assert!(
            row("    64").contains("no: beyond the ceiling") && row("    64").contains("111%"),
            "{md}"
        );
        assert!(row("   512").ends_with("| yes                       |"), "{md}");
        // Without the weights in the summary there is no ceiling to give.
        let mut bare = c.clone();
        for j in bare.configs.values_mut() {
            j.weight_bytes = None;
        }
        assert!(
            bare.ceiling_markdown().contains("| -   "),
            "{}",
            bare.ceiling_markdown()
        );
    }

    #[test]
    fn a_card_that_differs_or_is_unknown_is_a_warning() {
        let c = comparison(Some("NVIDIA H200"));
        let w = c.cards.warning().unwrap();
        assert!(
            w.contains("batchlab measured on NVIDIA H200, transformers on NVIDIA H100 80GB HBM3"),
            "{w}"
        );
        assert!(c.markdown().contains("**Warning:** the sources name different cards"));

        let c = comparison(None);
        assert!(c.cards.warning().unwrap().contains("no device.json"));
        let md = c.markdown();
        assert!(md.contains("- batchlab: not recorded (no device.json"), "{md}");
        assert!(md.contains("`h100-sxm`"), "{md}");
    }

    #[test]
    fn output_tokens_that_disagree_are_listed_not_compared() {
        let tmp = tempfile::tempdir().unwrap();
        validated_folder(tmp.path(), Some("NVIDIA H100 80GB HBM3"));
        let runs = load_validated(tmp.path()).unwrap();
        let csv = [HEADER.to_owned(), row(64, 8, 16, "generate", 512, 1.0)].join("\n");
        let rows = parse_baseline_csv("hf.csv", &csv).unwrap();
        let c = compare(&runs, &rows, &[]).unwrap();
        assert_eq!(c.configs[&key(64, 8, 16)].mode("generate"), None);
        assert_eq!(
            c.mismatched,
            vec![(
                key(64, 8, 16),
                "batchlab 384 output tokens, transformers generate 512".to_owned()
            )]
        );
        assert_eq!(c.headlines[0].best, Verdict::Missing);
    }

    #[test]
    fn csv_errors_name_the_file_line_and_column() {
        let err = |text: &str| parse_baseline_csv("hf.csv", text).unwrap_err().to_string();
        let e = err("model,prompt_len,max_batch,requests,mode,output_tokens,wall_s,gpu,torch,transformers,error\n");
        assert!(
            e.starts_with("hf.csv:1: the header has no `output_tok_per_s` column"),
            "{e}"
        );
        assert_eq!(
            err(&format!(
                "{HEADER}\n{}",
                row(64, 8, 16, "generate", 384, 0.5).replace(",0.5,", ",abc,")
            )),
            "hf.csv:2: column `wall_s` (field 7): `abc` is not a positive number"
        );
        assert_eq!(
            err(&format!("# comment\n{HEADER}\n\n{}", row(64, 8, 16, "beam", 384, 0.5))),
            "hf.csv:4: column `mode` (field 5): `beam` is not one of generate, generate_batch, generate_batch_call"
        );
        assert_eq!(
            err(&format!("{HEADER}\nqwen2.5-0.5b,64,8")),
            "hf.csv:2: 3 fields, the header has 16"
        );
        assert_eq!(
            err(&format!("{HEADER}\nqwen2.5-0.5b,\"64")),
            "hf.csv:2: a quoted field is not closed on its line"
        );
        let e = err(&format!(
            "{HEADER}\n{}",
            row(64, 8, 16, "generate", 384, 0.5).replace(",768.000,", ",700,")
        ));
        assert!(
            e.starts_with("hf.csv:2: output_tok_per_s 700 is not output_tokens / wall_s"),
            "{e}"
        );
        assert!(err("").starts_with("hf.csv: empty"));
    }

    #[test]
    fn the_same_configuration_twice_is_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        let (a, b) = (tmp.path().join("a.csv"), tmp.path().join("b.csv"));
        std::fs::write(&a, format!("{HEADER}\n{}", row(64, 8, 16, "generate", 384, 0.5))).unwrap();
        std::fs::write(&b, format!("{HEADER}\n\n{}", row(64, 8, 16, "generate", 384, 0.6))).unwrap();
        let e = load_baseline(&[a, b]).unwrap_err().to_string();
        assert!(e.contains("a.csv:2 and "), "{e}");
        assert!(
            e.ends_with(
                "b.csv:3 both measure qwen2.5-0.5b, prompt 64, max batch 8, 16 requests with generate: keep one"
            ),
            "{e}"
        );
    }

    #[test]
    fn summary_errors_name_the_entry_and_key() {
        let err = |v: Value| parse_summary("s.json", &v.to_string()).unwrap_err().to_string();
        let mut e = entry("r7", "m", 64, 8, 16, "static", 1.0);
        e.as_object_mut().unwrap().remove("output_tok_per_s");
        assert_eq!(
            err(serde_json::json!([entry("r6", "m", 64, 8, 16, "static", 1.0), e])),
            "s.json: entry 2 (run r7): `output_tok_per_s` is missing"
        );
        let mut e = entry("r8", "m", 64, 8, 16, "static", 1.0);
        e["max_batch_size"] = serde_json::json!("eight");
        assert_eq!(
            err(serde_json::json!([e])),
            "s.json: entry 1 (run r8): `max_batch_size` is not a whole number, got \"eight\""
        );
        // Without the sweep label, a fixed prompt length is prompt tokens / requests.
        let mut e = entry("r9", "m", 64, 8, 16, "static", 1.0);
        e.as_object_mut().unwrap().remove("workload.prompt_len");
        let runs = parse_summary("s.json", &serde_json::json!([e]).to_string()).unwrap();
        assert_eq!(runs[0].key.prompt_len, 64);
    }

    #[test]
    fn a_simulate_folder_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        validated_folder(tmp.path(), None);
        std::fs::remove_file(tmp.path().join("validation.json")).unwrap();
        let e = load_validated(tmp.path()).unwrap_err().to_string();
        assert!(e.contains("not a folder written by `batchlab validate`"), "{e}");
    }

    #[test]
    fn the_committed_validated_seed_matrix_reads() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("reports/seed-matrix-h100-validated");
        let runs = load_validated(&dir).unwrap();
        assert_eq!(runs.runs.len(), 162);
        let device = runs.device.as_ref().expect("validate recorded the card in device.json");
        assert_eq!(device.gpu_name, "NVIDIA H100 80GB HBM3");
        let r = &runs.runs[161];
        assert_eq!(
            (r.key.clone(), r.policy.as_str(), r.output_tokens),
            (
                ConfigKey {
                    model: "qwen2.5-1.5b".to_owned(),
                    prompt_len: 512,
                    max_batch: 8,
                    requests: 16
                },
                "grouped",
                384
            )
        );
    }

    #[test]
    fn quoted_fields_keep_commas_and_quotes() {
        assert_eq!(
            split_record("a,\"b, \"\"c\"\"\",,d").unwrap(),
            ["a", "b, \"c\"", "", "d"]
        );
        assert_eq!(
            split_record("\"x\"y").unwrap_err(),
            "`y` after the closing quote of field 1"
        );
    }
}
