//! Request and step records → summary statistics, following vLLM `bench serve` conventions so the numbers are
//! comparable with what users already measure.
//!
//! A token exists when the step that produced it has finished. TTFT = first token − arrival; ITL = gaps between
//! consecutive tokens of one request, pooled over all requests; TPOT = (E2E − TTFT)/(output − 1) per request;
//! E2E = last token − arrival; throughput = Σ output targets / makespan (first arrival → last completion).
//!
//! Per-request values are kept exactly (one record per request). Pooled ITLs are kept exactly up to
//! [`EXACT_SAMPLE_LIMIT`] samples and streamed into an HDR histogram (3 significant digits) beyond, so a run of a
//! million requests does not hold every token time in memory.

mod dist;

pub use dist::{Distribution, EXACT_SAMPLE_LIMIT, Stats, percentile_sorted};

use crate::units::{MIB, Nanos};
use serde::Serialize;

/// One request's life, filled in as its tokens appear.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct RequestRecord {
    pub id: u32,
    pub arrival: Nanos,
    pub prompt_len: u32,
    pub output_len: u32,
    /// Tokens emitted so far; equals `output_len` once complete.
    pub tokens: u32,
    pub first_token: Option<Nanos>,
    pub last_token: Option<Nanos>,
    /// Longest gap between two of its tokens.
    pub max_itl: Nanos,
    /// The most KV cache slots (token positions, block-rounded where the cache is paged) it ever held.
    pub kv_peak_slots: u64,
    pub preemptions: u32,
}

impl RequestRecord {
    pub fn ttft(&self) -> Option<Nanos> {
        self.first_token.map(|t| t - self.arrival)
    }

    pub fn e2e(&self) -> Option<Nanos> {
        self.last_token.map(|t| t - self.arrival)
    }

    /// (E2E − TTFT)/(output − 1) in nanoseconds; `None` for single-token outputs, as vLLM.
    pub fn tpot_ns(&self) -> Option<f64> {
        match (self.first_token, self.last_token) {
            (Some(first), Some(last)) if self.tokens > 1 => Some((last - first).0 as f64 / (self.tokens - 1) as f64),
            _ => None,
        }
    }

    pub fn is_complete(&self) -> bool {
        self.tokens == self.output_len && self.last_token.is_some()
    }
}

/// One engine step: its shape, when it ran and what state it left behind.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct StepRecord {
    pub index: u64,
    pub start: Nanos,
    pub duration: Nanos,
    pub prefill_seqs: u32,
    pub decode_seqs: u32,
    /// Prompt tokens computed, padding included.
    pub prefill_tokens: u32,
    pub decode_tokens: u32,
    /// Tokens computed only because of padding (static batches: padded prompts and finished sequences).
    pub padding_tokens: u32,
    /// Tokens that became visible to users at the end of this step.
    pub emitted_tokens: u32,
    /// KV slots held after the step.
    pub kv_slots: u64,
    /// Requests waiting (arrived, not admitted) after the step.
    pub queue_depth: u32,
    /// Requests holding a batch slot after the step.
    pub running: u32,
    pub preempted: u32,
}

impl StepRecord {
    pub fn end(&self) -> Nanos {
        self.start + self.duration
    }

    pub fn kind(&self) -> StepKind {
        match (self.prefill_seqs > 0, self.decode_seqs > 0) {
            (true, true) => StepKind::Mixed,
            (true, false) => StepKind::Prefill,
            _ => StepKind::Decode,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StepKind {
    Prefill,
    Decode,
    Mixed,
}

impl StepKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StepKind::Prefill => "prefill",
            StepKind::Decode => "decode",
            StepKind::Mixed => "mixed",
        }
    }
}

/// One output token, for the full per-token trace of small runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct TokenRecord {
    pub request: u32,
    /// 0-based position in the request's output.
    pub index: u32,
    pub time: Nanos,
}

/// What memory a run needs besides the KV cache, and how big one KV slot is.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct MemoryModel {
    pub weight_bytes: u64,
    pub workspace_bytes: u64,
    pub kv_bytes_per_slot: u64,
    pub kv_capacity_slots: u64,
}

/// SLO thresholds in nanoseconds (absent = not required).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Slo {
    pub ttft: Option<Nanos>,
    pub tpot: Option<Nanos>,
    pub e2e: Option<Nanos>,
}

impl Slo {
    pub fn is_set(&self) -> bool {
        self.ttft.is_some() || self.tpot.is_some() || self.e2e.is_some()
    }

    pub fn met_by(&self, r: &RequestRecord) -> bool {
        let ttft_ok = self.ttft.is_none_or(|slo| r.ttft().is_some_and(|t| t <= slo));
        let tpot_ok = self
            .tpot
            .is_none_or(|slo| r.tpot_ns().is_none_or(|t| t <= slo.0 as f64));
        let e2e_ok = self.e2e.is_none_or(|slo| r.e2e().is_some_and(|t| t <= slo));
        r.is_complete() && ttft_ok && tpot_ok && e2e_ok
    }
}

/// Collects a run as it happens. Request ids must be dense (0, 1, 2, … in order of arrival).
pub struct Recorder {
    requests: Vec<RequestRecord>,
    steps: Vec<StepRecord>,
    keep_steps: bool,
    tokens: Option<Vec<TokenRecord>>,
    itl: Distribution,
    peak_kv_slots: u64,
    busy: Nanos,
    step_count: u64,
    batch_sum: u64,
    max_running: u32,
    max_queue: u32,
}

impl Recorder {
    /// `keep_steps`: keep one record per step; `trace_tokens`: keep one record per output token.
    pub fn new(expected_requests: usize, keep_steps: bool, trace_tokens: bool) -> Recorder {
        Recorder {
            requests: Vec::with_capacity(expected_requests),
            steps: Vec::new(),
            keep_steps,
            tokens: trace_tokens.then(Vec::new),
            itl: Distribution::default(),
            peak_kv_slots: 0,
            busy: Nanos::ZERO,
            step_count: 0,
            batch_sum: 0,
            max_running: 0,
            max_queue: 0,
        }
    }

    pub fn on_arrival(&mut self, id: u32, arrival: Nanos, prompt_len: u32, output_len: u32) {
        assert_eq!(
            id as usize,
            self.requests.len(),
            "request ids must be dense and in arrival order"
        );
        self.requests.push(RequestRecord {
            id,
            arrival,
            prompt_len,
            output_len,
            ..Default::default()
        });
    }

    /// A token of request `id` became visible at `time`. Returns true when it was the request's last.
    pub fn on_token(&mut self, id: u32, time: Nanos) -> bool {
        let r = &mut self.requests[id as usize];
        debug_assert!(r.tokens < r.output_len, "request {id} emitted more than its target");
        if let Some(last) = r.last_token {
            let gap = time - last;
            self.itl.record(gap.0);
            r.max_itl = r.max_itl.max(gap);
        } else {
            r.first_token = Some(time);
        }
        if let Some(tokens) = &mut self.tokens {
            tokens.push(TokenRecord {
                request: id,
                index: r.tokens,
                time,
            });
        }
        r.tokens += 1;
        r.last_token = Some(time);
        r.tokens == r.output_len
    }

    pub fn on_kv_peak(&mut self, id: u32, slots: u64) {
        let r = &mut self.requests[id as usize];
        r.kv_peak_slots = r.kv_peak_slots.max(slots);
    }

    pub fn on_preempt(&mut self, id: u32) {
        self.requests[id as usize].preemptions += 1;
    }

    pub fn on_step(&mut self, step: StepRecord) {
        self.peak_kv_slots = self.peak_kv_slots.max(step.kv_slots);
        self.busy += step.duration;
        self.step_count += 1;
        self.batch_sum += u64::from(step.prefill_seqs + step.decode_seqs);
        self.max_running = self.max_running.max(step.running);
        self.max_queue = self.max_queue.max(step.queue_depth);
        if self.keep_steps {
            self.steps.push(step);
        }
    }

    /// The steps so far (none unless made with `keep_steps`).
    pub fn steps(&self) -> &[StepRecord] {
        &self.steps
    }

    pub fn requests(&self) -> &[RequestRecord] {
        &self.requests
    }

    pub fn finish(self, memory: MemoryModel, slo: Slo) -> RunMetrics {
        let summary = Summary::compute(&self, memory, slo);
        RunMetrics {
            summary,
            requests: self.requests,
            steps: self.steps,
            tokens: self.tokens,
        }
    }
}

/// Everything measured about one run.
#[derive(Clone, Debug)]
pub struct RunMetrics {
    pub summary: Summary,
    pub requests: Vec<RequestRecord>,
    /// Empty when the run did not keep steps.
    pub steps: Vec<StepRecord>,
    pub tokens: Option<Vec<TokenRecord>>,
}

/// A run's summary statistics. Latencies in milliseconds, memory in MiB (2^20 bytes).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Summary {
    pub requests: u64,
    pub completed: u64,
    pub prompt_tokens: u64,
    pub output_tokens: u64,
    pub makespan_s: f64,
    pub output_tok_per_s: f64,
    pub request_per_s: f64,
    pub total_tok_per_s: f64,
    pub goodput_req_per_s: Option<f64>,
    pub ttft_ms: Stats,
    pub itl_ms: Stats,
    pub tpot_ms: Stats,
    pub e2e_ms: Stats,
    pub steps: u64,
    pub busy_fraction: f64,
    pub mean_batch_size: f64,
    pub max_running: u32,
    pub max_queue_depth: u32,
    pub preemptions: u64,
    pub kv_bytes_per_token: u64,
    pub kv_per_request_max_mib: f64,
    pub kv_per_request_mean_mib: f64,
    pub peak_kv_mib: f64,
    pub kv_capacity_mib: f64,
    pub weights_mib: f64,
    pub workspace_mib: f64,
    pub peak_memory_mib: f64,
}

/// A summary value as it goes into a table cell.
#[derive(Clone, Debug, PartialEq)]
pub enum Cell {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    Null,
}

impl Cell {
    /// The value as a number: integers and floats; `None` for text, booleans and nulls.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Cell::Int(i) => Some(*i as f64),
            Cell::Float(f) => Some(*f),
            _ => None,
        }
    }
}

/// A run's results as they go into the output files: its name, the label columns that identify it (sweep axes,
/// model, policy, …, in order) and its metrics.
#[derive(Clone, Debug)]
pub struct RunReport {
    pub name: String,
    pub labels: Vec<(String, Cell)>,
    pub metrics: RunMetrics,
}

impl Summary {
    fn compute(rec: &Recorder, memory: MemoryModel, slo: Slo) -> Summary {
        let reqs = &rec.requests;
        let first_arrival = reqs.iter().map(|r| r.arrival).min().unwrap_or(Nanos::ZERO);
        let last_completion = reqs.iter().filter_map(|r| r.last_token).max().unwrap_or(first_arrival);
        let makespan = last_completion.saturating_sub(first_arrival).as_secs();
        let per_s = |x: f64| if makespan > 0.0 { x / makespan } else { 0.0 };
        let prompt_tokens: u64 = reqs.iter().map(|r| u64::from(r.prompt_len)).sum();
        let output_tokens: u64 = reqs.iter().map(|r| u64::from(r.output_len)).sum();
        let completed = reqs.iter().filter(|r| r.is_complete()).count() as u64;
        let mut ttft = Distribution::default();
        let mut tpot = Vec::with_capacity(reqs.len());
        let mut e2e = Distribution::default();
        for r in reqs {
            if let Some(t) = r.ttft() {
                ttft.record(t.0);
            }
            if let Some(t) = r.tpot_ns() {
                tpot.push(t);
            }
            if let Some(t) = r.e2e() {
                e2e.record(t.0);
            }
        }
        let mib = |slots: u64| (slots * memory.kv_bytes_per_slot) as f64 / MIB;
        let kv_max = reqs.iter().map(|r| r.kv_peak_slots).max().unwrap_or(0);
        let kv_mean = if reqs.is_empty() {
            0.0
        } else {
            reqs.iter().map(|r| mib(r.kv_peak_slots)).sum::<f64>() / reqs.len() as f64
        };
        let weights_mib = memory.weight_bytes as f64 / MIB;
        let workspace_mib = memory.workspace_bytes as f64 / MIB;
        let peak_kv_mib = mib(rec.peak_kv_slots);
        Summary {
            requests: reqs.len() as u64,
            completed,
            prompt_tokens,
            output_tokens,
            makespan_s: makespan,
            output_tok_per_s: per_s(output_tokens as f64),
            request_per_s: per_s(reqs.len() as f64),
            total_tok_per_s: per_s((prompt_tokens + output_tokens) as f64),
            goodput_req_per_s: slo
                .is_set()
                .then(|| per_s(reqs.iter().filter(|r| slo.met_by(r)).count() as f64)),
            ttft_ms: ttft.stats_ns_to_ms(),
            itl_ms: rec.itl.stats_ns_to_ms(),
            tpot_ms: Stats::from_values(&mut tpot, 1e-6),
            e2e_ms: e2e.stats_ns_to_ms(),
            steps: rec.step_count,
            busy_fraction: if makespan > 0.0 {
                rec.busy.as_secs() / makespan
            } else {
                0.0
            },
            mean_batch_size: if rec.step_count > 0 {
                rec.batch_sum as f64 / rec.step_count as f64
            } else {
                0.0
            },
            max_running: rec.max_running,
            max_queue_depth: rec.max_queue,
            preemptions: reqs.iter().map(|r| u64::from(r.preemptions)).sum(),
            kv_bytes_per_token: memory.kv_bytes_per_slot,
            kv_per_request_max_mib: mib(kv_max),
            kv_per_request_mean_mib: kv_mean,
            peak_kv_mib,
            kv_capacity_mib: mib(memory.kv_capacity_slots),
            weights_mib,
            workspace_mib,
            peak_memory_mib: weights_mib + peak_kv_mib + workspace_mib,
        }
    }

    /// The names of [`Summary::cells`], in order, without a run (from an empty one): the summary table's schema.
    pub fn column_names() -> Vec<String> {
        let none = MemoryModel {
            weight_bytes: 0,
            workspace_bytes: 0,
            kv_bytes_per_slot: 0,
            kv_capacity_slots: 0,
        };
        let empty = Recorder::new(0, false, false).finish(none, Slo::default());
        empty.summary.cells().into_iter().map(|(name, _)| name).collect()
    }

    /// Every summary column in a fixed order: the single source of the summary table's schema.
    pub fn cells(&self) -> Vec<(String, Cell)> {
        let mut out: Vec<(String, Cell)> = vec![
            ("requests".into(), Cell::Int(self.requests as i64)),
            ("completed".into(), Cell::Int(self.completed as i64)),
            ("prompt_tokens".into(), Cell::Int(self.prompt_tokens as i64)),
            ("output_tokens".into(), Cell::Int(self.output_tokens as i64)),
            ("makespan_s".into(), Cell::Float(self.makespan_s)),
            ("output_tok_per_s".into(), Cell::Float(self.output_tok_per_s)),
            ("request_per_s".into(), Cell::Float(self.request_per_s)),
            ("total_tok_per_s".into(), Cell::Float(self.total_tok_per_s)),
            (
                "goodput_req_per_s".into(),
                self.goodput_req_per_s.map_or(Cell::Null, Cell::Float),
            ),
        ];
        for (name, stats) in [
            ("ttft", &self.ttft_ms),
            ("itl", &self.itl_ms),
            ("tpot", &self.tpot_ms),
            ("e2e", &self.e2e_ms),
        ] {
            for (stat, value) in stats.named() {
                out.push((format!("{name}_{stat}_ms"), value.map_or(Cell::Null, Cell::Float)));
            }
        }
        out.extend([
            ("steps".into(), Cell::Int(self.steps as i64)),
            ("busy_fraction".into(), Cell::Float(self.busy_fraction)),
            ("mean_batch_size".into(), Cell::Float(self.mean_batch_size)),
            ("max_running".into(), Cell::Int(i64::from(self.max_running))),
            ("max_queue_depth".into(), Cell::Int(i64::from(self.max_queue_depth))),
            ("preemptions".into(), Cell::Int(self.preemptions as i64)),
            ("kv_bytes_per_token".into(), Cell::Int(self.kv_bytes_per_token as i64)),
            (
                "kv_per_request_max_mib".into(),
                Cell::Float(self.kv_per_request_max_mib),
            ),
            (
                "kv_per_request_mean_mib".into(),
                Cell::Float(self.kv_per_request_mean_mib),
            ),
            ("peak_kv_mib".into(), Cell::Float(self.peak_kv_mib)),
            ("kv_capacity_mib".into(), Cell::Float(self.kv_capacity_mib)),
            ("weights_mib".into(), Cell::Float(self.weights_mib)),
            ("workspace_mib".into(), Cell::Float(self.workspace_mib)),
            ("peak_memory_mib".into(), Cell::Float(self.peak_memory_mib)),
        ]);
        out
    }
}
