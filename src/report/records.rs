//! Per-run record tables: one row per request, per step and per output token. Integers keep the records' own
//! unsigned widths; times are milliseconds (f64) since the start of the run.

use crate::metrics::{RequestRecord, StepRecord, TokenRecord};
use crate::units::Nanos;
use polars::prelude::{Column, DataFrame, NamedFrom, PlSmallStr, PolarsResult, Series};

fn col<T, P: ?Sized>(name: &str, values: T) -> Column
where
    Series: NamedFrom<T, P>,
{
    Column::new(PlSmallStr::from_str(name), values)
}

fn ms(t: Nanos) -> f64 {
    t.as_ms()
}

pub(crate) fn requests(records: &[RequestRecord]) -> PolarsResult<DataFrame> {
    let f = |get: fn(&RequestRecord) -> f64| records.iter().map(get).collect::<Vec<f64>>();
    let opt = |get: fn(&RequestRecord) -> Option<f64>| records.iter().map(get).collect::<Vec<Option<f64>>>();
    let u = |get: fn(&RequestRecord) -> u32| records.iter().map(get).collect::<Vec<u32>>();
    DataFrame::new(
        records.len(),
        vec![
            col("id", u(|r| r.id)),
            col("arrival_ms", f(|r| ms(r.arrival))),
            col("prompt_len", u(|r| r.prompt_len)),
            col("output_len", u(|r| r.output_len)),
            col("tokens", u(|r| r.tokens)),
            col("ttft_ms", opt(|r| r.ttft().map(ms))),
            col("e2e_ms", opt(|r| r.e2e().map(ms))),
            col("tpot_ms", opt(|r| r.tpot_ns().map(|ns| ns / 1e6))),
            // With fewer than two tokens there is no gap at all: null, not a misleading 0.
            col("max_itl_ms", opt(|r| (r.tokens >= 2).then(|| ms(r.max_itl)))),
            col(
                "kv_peak_slots",
                records.iter().map(|r| r.kv_peak_slots).collect::<Vec<u64>>(),
            ),
            col("preemptions", u(|r| r.preemptions)),
        ],
    )
}

pub(crate) fn steps(records: &[StepRecord]) -> PolarsResult<DataFrame> {
    let f = |get: fn(&StepRecord) -> f64| records.iter().map(get).collect::<Vec<f64>>();
    let u = |get: fn(&StepRecord) -> u32| records.iter().map(get).collect::<Vec<u32>>();
    let u64s = |get: fn(&StepRecord) -> u64| records.iter().map(get).collect::<Vec<u64>>();
    DataFrame::new(
        records.len(),
        vec![
            col("index", u64s(|s| s.index)),
            col("start_ms", f(|s| ms(s.start))),
            col("duration_ms", f(|s| ms(s.duration))),
            col("end_ms", f(|s| ms(s.end()))),
            col("kind", records.iter().map(|s| s.kind().as_str()).collect::<Vec<&str>>()),
            col("prefill_seqs", u(|s| s.prefill_seqs)),
            col("decode_seqs", u(|s| s.decode_seqs)),
            col("prefill_tokens", u(|s| s.prefill_tokens)),
            col("decode_tokens", u(|s| s.decode_tokens)),
            col("padding_tokens", u(|s| s.padding_tokens)),
            col("emitted_tokens", u(|s| s.emitted_tokens)),
            col("kv_slots", u64s(|s| s.kv_slots)),
            col("queue_depth", u(|s| s.queue_depth)),
            col("running", u(|s| s.running)),
            col("preempted", u(|s| s.preempted)),
        ],
    )
}

pub(crate) fn tokens(records: &[TokenRecord]) -> PolarsResult<DataFrame> {
    DataFrame::new(
        records.len(),
        vec![
            col("request", records.iter().map(|t| t.request).collect::<Vec<u32>>()),
            col("index", records.iter().map(|t| t.index).collect::<Vec<u32>>()),
            col("time_ms", records.iter().map(|t| ms(t.time)).collect::<Vec<f64>>()),
        ],
    )
}
