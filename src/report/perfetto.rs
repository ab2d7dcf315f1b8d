//! A run's timeline as a Chrome trace-event file (JSON), which Perfetto (ui.perfetto.dev) and `chrome://tracing`
//! open: one process for the run; one track per step kind (prefill / decode / mixed) with a complete event per step;
//! one track per request with its wait for the first token (arrival → first token) and its decoding (first → last
//! token); counters for queue depth, running requests and KV slots after each step.
//!
//! Times are whole nanoseconds in the run's records; the file gives microseconds (the format's unit) with three
//! decimals, so nothing is rounded away. Track metadata come first, then the events by time (ties keep steps,
//! requests and counters in record order), one per line, so the same run gives the same bytes and traces diff
//! cleanly.

use super::{ReportError, RunTables, write_atomically};
use polars::prelude::{DataFrame, DataType, PolarsResult};
use serde_json::{Value, json};
use std::io::Write;
use std::path::Path;

const PID: u32 = 1;
/// Request `id` is track `REQUEST_TID + id`, after the step tracks.
const REQUEST_TID: u64 = 100;
const STEP_KINDS: [&str; 3] = ["prefill", "decode", "mixed"];

/// Milliseconds (as the tables store them) → whole nanoseconds, the records' own resolution.
fn ns(ms: f64) -> i64 {
    (ms * 1e6).round() as i64
}

/// Nanoseconds → the format's microseconds; three decimals print exactly (the shortest form of ns / 1000).
fn us(ns: i64) -> Value {
    json!(ns as f64 / 1000.0)
}

fn f64s(df: &DataFrame, name: &str) -> PolarsResult<Vec<Option<f64>>> {
    Ok(df.column(name)?.cast(&DataType::Float64)?.f64()?.iter().collect())
}

fn i64s(df: &DataFrame, name: &str) -> PolarsResult<Vec<Option<i64>>> {
    Ok(df.column(name)?.cast(&DataType::Int64)?.i64()?.iter().collect())
}

/// An event with its sort time.
struct Event {
    metadata: bool,
    ts: i64,
    value: Value,
}

fn metadata(name: &str, tid: u64, args: Value) -> Event {
    Event {
        metadata: true,
        ts: 0,
        value: json!({"ph": "M", "name": name, "pid": PID, "tid": tid, "ts": 0, "args": args}),
    }
}

fn step_events(steps: &DataFrame, events: &mut Vec<Event>) -> PolarsResult<()> {
    let kinds: Vec<Option<String>> = steps
        .column("kind")?
        .str()?
        .iter()
        .map(|k| k.map(str::to_owned))
        .collect();
    let start = f64s(steps, "start_ms")?;
    let duration = f64s(steps, "duration_ms")?;
    // Nulls (which the writer never produces) count as 0 rather than dropping the step.
    let int =
        |name: &str| -> PolarsResult<Vec<i64>> { Ok(i64s(steps, name)?.into_iter().map(|v| v.unwrap_or(0)).collect()) };
    let index = int("index")?;
    let prefill_seqs = int("prefill_seqs")?;
    let decode_seqs = int("decode_seqs")?;
    let prefill_tokens = int("prefill_tokens")?;
    let decode_tokens = int("decode_tokens")?;
    let padding_tokens = int("padding_tokens")?;
    let emitted_tokens = int("emitted_tokens")?;
    let kv_slots = int("kv_slots")?;
    let queue_depth = int("queue_depth")?;
    let running = int("running")?;
    let preempted = int("preempted")?;

    for (tid, kind) in (1u64..).zip(STEP_KINDS) {
        if kinds.iter().any(|k| k.as_deref() == Some(kind)) {
            events.push(metadata("thread_name", tid, json!({"name": format!("{kind} steps")})));
            events.push(metadata("thread_sort_index", tid, json!({"sort_index": tid})));
        }
    }
    for row in 0..steps.height() {
        let (Some(kind), Some(start), Some(duration)) = (kinds[row].as_deref(), start[row], duration[row]) else {
            continue;
        };
        let tid = STEP_KINDS
            .iter()
            .position(|k| *k == kind)
            .map_or(STEP_KINDS.len() as u64 + 1, |i| i as u64 + 1);
        let ts = ns(start);
        let args = json!({
            "index": index[row],
            "seqs": prefill_seqs[row] + decode_seqs[row],
            "tokens": prefill_tokens[row] + decode_tokens[row],
            "prefill_seqs": prefill_seqs[row],
            "decode_seqs": decode_seqs[row],
            "prefill_tokens": prefill_tokens[row],
            "decode_tokens": decode_tokens[row],
            "padding_tokens": padding_tokens[row],
            "emitted_tokens": emitted_tokens[row],
            "kv_slots": kv_slots[row],
            "queue_depth": queue_depth[row],
            "running": running[row],
            "preempted": preempted[row],
        });
        events.push(Event {
            metadata: false,
            ts,
            value: json!({"ph": "X", "name": kind, "cat": "step", "pid": PID, "tid": tid, "ts": us(ts),
                "dur": us(ns(duration)), "args": args}),
        });
    }
    // The state each step leaves behind, as counter tracks.
    for row in 0..steps.height() {
        let (Some(start), Some(duration)) = (start[row], duration[row]) else {
            continue;
        };
        let ts = ns(start) + ns(duration);
        for (name, values) in [
            ("queue_depth", &queue_depth),
            ("running", &running),
            ("kv_slots", &kv_slots),
        ] {
            events.push(Event {
                metadata: false,
                ts,
                value: json!({"ph": "C", "name": name, "pid": PID, "ts": us(ts), "args": {name: values[row]}}),
            });
        }
    }
    Ok(())
}

fn request_events(requests: &DataFrame, events: &mut Vec<Event>) -> PolarsResult<()> {
    let ids = i64s(requests, "id")?;
    let arrival = f64s(requests, "arrival_ms")?;
    let ttft = f64s(requests, "ttft_ms")?;
    let e2e = f64s(requests, "e2e_ms")?;
    let prompt = i64s(requests, "prompt_len")?;
    let output = i64s(requests, "output_len")?;
    let tokens = i64s(requests, "tokens")?;
    for row in 0..requests.height() {
        let (Some(id), Some(arrival)) = (ids[row], arrival[row]) else {
            continue;
        };
        let tid = REQUEST_TID + id as u64;
        events.push(metadata("thread_name", tid, json!({"name": format!("request {id}")})));
        events.push(metadata("thread_sort_index", tid, json!({"sort_index": tid})));
        let arrived = ns(arrival);
        // A request that never produced a token (an unfinished run) has no spans.
        let Some(ttft) = ttft[row] else { continue };
        let first = arrived + ns(ttft);
        events.push(Event {
            metadata: false,
            ts: arrived,
            value: json!({"ph": "X", "name": "waiting for first token", "cat": "request", "pid": PID, "tid": tid,
                "ts": us(arrived), "dur": us(first - arrived),
                "args": {"id": id, "prompt_len": prompt[row], "output_len": output[row], "ttft_ms": ttft}}),
        });
        if let Some(e2e) = e2e[row] {
            let last = arrived + ns(e2e);
            events.push(Event {
                metadata: false,
                ts: first,
                value: json!({"ph": "X", "name": "decoding", "cat": "request", "pid": PID, "tid": tid,
                    "ts": us(first), "dur": us(last - first),
                    "args": {"id": id, "tokens": tokens[row], "e2e_ms": e2e}}),
            });
        }
    }
    Ok(())
}

/// The trace as text: `{"traceEvents":[…],"displayTimeUnit":"ms"}`, one event per line.
pub(super) fn trace_json(run: &RunTables) -> PolarsResult<String> {
    let mut events = vec![metadata(
        "process_name",
        0,
        json!({"name": format!("run {}", run.name)}),
    )];
    if let Some(steps) = &run.steps {
        step_events(steps, &mut events)?;
    }
    request_events(&run.requests, &mut events)?;
    // Metadata (track names, all at 0) first, then by time; stable, so ties keep steps, requests and counters in
    // record order.
    events.sort_by_key(|e| (!e.metadata, e.ts));
    let lines: Vec<String> = events.iter().map(|e| e.value.to_string()).collect();
    Ok(format!(
        "{{\"traceEvents\":[\n{}\n],\n\"displayTimeUnit\":\"ms\"}}\n",
        lines.join(",\n")
    ))
}

/// Writes the run's trace to `path` (conventionally `runs/<name>/trace.json`).
pub fn write_trace(run: &RunTables, path: &Path) -> Result<(), ReportError> {
    let text = trace_json(run).map_err(|source| ReportError::Polars {
        path: path.to_owned(),
        source,
    })?;
    write_atomically(path, |file| Ok(file.write_all(text.as_bytes())?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::render::fixture;
    use std::collections::{BTreeMap, BTreeSet};
    use std::fs;

    #[test]
    fn traces_load_and_keep_one_track_per_step_kind_and_request() {
        let tmp = tempfile::tempdir().unwrap();
        let (_, results) = fixture::sweep(tmp.path());
        let mut kinds_seen = BTreeSet::new();
        for run in &results.runs {
            let path = tmp.path().join(format!("{}.json", run.name));
            write_trace(run, &path).unwrap();
            let text = fs::read_to_string(&path).unwrap();
            let trace: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(trace["displayTimeUnit"], "ms");
            let events = trace["traceEvents"].as_array().unwrap();

            // Metadata first, then non-decreasing times.
            let first_timed = events.iter().position(|e| e["ph"] != "M").unwrap();
            assert!(events[first_timed..].iter().all(|e| e["ph"] != "M"));
            let ts: Vec<f64> = events[first_timed..]
                .iter()
                .map(|e| e["ts"].as_f64().unwrap())
                .collect();
            assert!(ts.windows(2).all(|w| w[0] <= w[1]), "{}: events out of order", run.name);

            let track_names: BTreeMap<u64, String> = events
                .iter()
                .filter(|e| e["ph"] == "M" && e["name"] == "thread_name")
                .map(|e| {
                    (
                        e["tid"].as_u64().unwrap(),
                        e["args"]["name"].as_str().unwrap().to_owned(),
                    )
                })
                .collect();
            let process: Vec<&Value> = events.iter().filter(|e| e["name"] == "process_name").collect();
            assert_eq!(process.len(), 1);
            assert_eq!(process[0]["args"]["name"], format!("run {}", run.name));

            // One track per step kind: every step of a kind on the same tid, no two kinds sharing one.
            let steps = run.steps.as_ref().unwrap();
            let step_events: Vec<&Value> = events.iter().filter(|e| e["cat"] == "step").collect();
            assert_eq!(step_events.len(), steps.height());
            let mut tid_of_kind: BTreeMap<String, u64> = BTreeMap::new();
            for e in &step_events {
                assert_eq!(e["ph"], "X");
                assert!(e["dur"].as_f64().unwrap() > 0.0);
                let kind = e["name"].as_str().unwrap().to_owned();
                let tid = e["tid"].as_u64().unwrap();
                assert_eq!(
                    *tid_of_kind.entry(kind.clone()).or_insert(tid),
                    tid,
                    "{kind} on two tracks"
                );
                assert_eq!(track_names[&tid], format!("{kind} steps"));
                for arg in ["seqs", "tokens", "kv_slots", "queue_depth"] {
                    assert!(e["args"][arg].is_u64(), "step lacks {arg}: {e}");
                }
                kinds_seen.insert(kind);
            }
            let tids: BTreeSet<u64> = tid_of_kind.values().copied().collect();
            assert_eq!(tids.len(), tid_of_kind.len());
            // The first step's arguments are its record's.
            let seqs =
                i64s(steps, "prefill_seqs").unwrap()[0].unwrap() + i64s(steps, "decode_seqs").unwrap()[0].unwrap();
            assert_eq!(step_events[0]["args"]["seqs"], seqs);
            assert_eq!(
                step_events[0]["args"]["kv_slots"],
                i64s(steps, "kv_slots").unwrap()[0].unwrap()
            );

            // One track per request, with its two spans meeting at the first token and ending at the last.
            let requests = &run.requests;
            let ids = i64s(requests, "id").unwrap();
            let arrival = f64s(requests, "arrival_ms").unwrap();
            let e2e = f64s(requests, "e2e_ms").unwrap();
            let ttft = f64s(requests, "ttft_ms").unwrap();
            for row in 0..requests.height() {
                let id = ids[row].unwrap();
                let spans: Vec<&Value> = events
                    .iter()
                    .filter(|e| e["cat"] == "request" && e["args"]["id"] == id)
                    .collect();
                assert_eq!(spans.len(), 2, "request {id}");
                let tid = spans[0]["tid"].as_u64().unwrap();
                assert_eq!(spans[1]["tid"].as_u64().unwrap(), tid);
                assert_eq!(track_names[&tid], format!("request {id}"));
                assert!(!tids.contains(&tid));
                let us = |ms: f64| (ms * 1e6).round() / 1e3;
                assert_eq!(spans[0]["ts"].as_f64().unwrap(), us(arrival[row].unwrap()));
                assert_eq!(spans[0]["dur"].as_f64().unwrap(), us(ttft[row].unwrap()));
                let end = spans[1]["ts"].as_f64().unwrap() + spans[1]["dur"].as_f64().unwrap();
                assert!((end - us(arrival[row].unwrap() + e2e[row].unwrap())).abs() < 1e-6);
            }
            let request_tracks = track_names.keys().filter(|t| !tids.contains(t)).count();
            assert_eq!(request_tracks, requests.height());
            assert!(events.iter().any(|e| e["ph"] == "C" && e["name"] == "queue_depth"));
            // Same run, same bytes.
            assert_eq!(trace_json(run).unwrap(), text);
        }
        // Static and grouped steps are prefill or decode; continuous batching mixes them.
        assert_eq!(
            kinds_seen,
            BTreeSet::from(["decode".into(), "mixed".into(), "prefill".into()])
        );
    }
}
