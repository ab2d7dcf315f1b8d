use super::*;
use crate::metrics::{Cell, MemoryModel, Recorder, RunMetrics, Slo, StepRecord};
use crate::units::Nanos;
use polars::prelude::{CsvReadOptions, DataType, ParquetReader, SerReader};
use std::collections::BTreeMap;

/// Qwen2.5-0.5B: 24 layers × (K + V) × 2 KV heads × 64 dims × 2 bytes.
const KV_BYTES_PER_SLOT: u64 = 12_288;

fn ms(v: f64) -> Nanos {
    Nanos::from_ms(v)
}

/// A static batch of two requests: request 0 (3 tokens) arrives at 0, request 1 (1 token) at 1 ms; a padded
/// prefill 1 → 10 ms, then two decode steps of 2.5 ms in which finished request 1 keeps its slot.
fn recorded(keep_steps: bool, trace_tokens: bool, slo: Slo) -> RunMetrics {
    let mut rec = Recorder::new(2, keep_steps, trace_tokens);
    rec.on_arrival(0, ms(0.0), 100, 3);
    rec.on_arrival(1, ms(1.0), 60, 1);
    let step = |index: u64, start: f64, duration: f64| StepRecord {
        index,
        start: ms(start),
        duration: ms(duration),
        ..Default::default()
    };
    rec.on_step(StepRecord {
        prefill_seqs: 2,
        prefill_tokens: 200,
        padding_tokens: 40,
        emitted_tokens: 2,
        kv_slots: 190,
        running: 2,
        ..step(0, 1.0, 9.0)
    });
    rec.on_token(0, ms(10.0));
    assert!(rec.on_token(1, ms(10.0)));
    for (index, start) in [(1, 10.0), (2, 12.5)] {
        rec.on_step(StepRecord {
            decode_seqs: 2,
            decode_tokens: 2,
            padding_tokens: 1,
            emitted_tokens: 1,
            kv_slots: 190 + index,
            running: 2,
            ..step(index, start, 2.5)
        });
        rec.on_token(0, ms(start + 2.5));
    }
    // 95 slots × 12 KiB = 1.11328125 MiB: an exact binary fraction the markdown table must not round.
    rec.on_kv_peak(0, 95);
    rec.on_kv_peak(1, 94);
    rec.finish(
        MemoryModel {
            weight_bytes: 988 * 1024 * 1024,
            workspace_bytes: 64 * 1024 * 1024,
            kv_bytes_per_slot: KV_BYTES_PER_SLOT,
            kv_capacity_slots: 4096,
        },
        slo,
    )
}

/// Run "static-2" keeps steps and tokens and has an SLO (request 1 meets TTFT ≤ 9.5 ms, request 0 does not); run
/// "continuous-8" keeps neither and has no SLO, so its goodput is null. Their `rate` labels are Int and Float.
fn two_runs() -> Vec<RunReport> {
    let slo = Slo {
        ttft: Some(ms(9.5)),
        ..Default::default()
    };
    vec![
        RunReport {
            name: "static-2".into(),
            labels: vec![
                ("policy".into(), Cell::Str("static".into())),
                ("max_batch_size".into(), Cell::Int(2)),
                ("rate".into(), Cell::Float(0.5)),
                ("chunked_prefill".into(), Cell::Bool(false)),
            ],
            metrics: recorded(true, true, slo),
        },
        RunReport {
            name: "continuous-8".into(),
            labels: vec![
                ("policy".into(), Cell::Str("continuous".into())),
                ("max_batch_size".into(), Cell::Int(8)),
                ("rate".into(), Cell::Int(1)),
                ("chunked_prefill".into(), Cell::Bool(true)),
            ],
            metrics: recorded(false, false, Slo::default()),
        },
    ]
}

fn read_parquet(path: &Path) -> DataFrame {
    let file = File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    ParquetReader::new(file).finish().unwrap()
}

fn read_csv(path: &Path) -> DataFrame {
    CsvReadOptions::default()
        .with_has_header(true)
        .try_into_reader_with_file_path(Some(path.to_owned()))
        .unwrap()
        .finish()
        .unwrap()
}

fn f64s(df: &DataFrame, name: &str) -> Vec<Option<f64>> {
    df.column(name).unwrap().f64().unwrap().iter().collect()
}

fn expected_columns(runs: &[RunReport]) -> Vec<String> {
    let mut names = vec!["run".to_owned()];
    names.extend(runs[0].labels.iter().map(|(n, _)| n.clone()));
    names.extend(runs[0].metrics.summary.cells().into_iter().map(|(n, _)| n));
    names
}

/// Every file under `dir`, by relative path.
pub(crate) fn files(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                out.insert(path.strip_prefix(root).unwrap().to_owned(), fs::read(&path).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

#[test]
fn summary_round_trips_through_parquet_and_csv() {
    let runs = two_runs();
    let dir = tempfile::tempdir().unwrap();
    write_results(dir.path(), &runs).unwrap();

    let df = read_parquet(&dir.path().join("summary.parquet"));
    let names: Vec<String> = df.get_column_names().iter().map(|n| n.to_string()).collect();
    assert_eq!(names, expected_columns(&runs));
    assert_eq!(df.height(), 2);

    let dtype = |name: &str| df.column(name).unwrap().dtype().clone();
    assert_eq!(dtype("run"), DataType::String);
    assert_eq!(dtype("policy"), DataType::String);
    assert_eq!(dtype("max_batch_size"), DataType::Int64);
    assert_eq!(
        dtype("rate"),
        DataType::Float64,
        "Int and Float cells make an f64 column"
    );
    assert_eq!(dtype("chunked_prefill"), DataType::Boolean);
    assert_eq!(dtype("requests"), DataType::Int64);
    assert_eq!(dtype("goodput_req_per_s"), DataType::Float64);
    assert_eq!(dtype("ttft_mean_ms"), DataType::Float64);

    let runs_col: Vec<Option<&str>> = df.column("run").unwrap().str().unwrap().iter().collect();
    assert_eq!(runs_col, [Some("static-2"), Some("continuous-8")]);
    let bools: Vec<Option<bool>> = df.column("chunked_prefill").unwrap().bool().unwrap().iter().collect();
    assert_eq!(bools, [Some(false), Some(true)]);
    let ints: Vec<Option<i64>> = df.column("max_batch_size").unwrap().i64().unwrap().iter().collect();
    assert_eq!(ints, [Some(2), Some(8)]);
    assert_eq!(f64s(&df, "rate"), [Some(0.5), Some(1.0)]);
    // Makespan 0 → 15 ms; one request of two meets the SLO.
    let goodput = f64s(&df, "goodput_req_per_s");
    assert!((goodput[0].unwrap() - 1.0 / 0.015).abs() < 1e-9, "{goodput:?}");
    assert_eq!(goodput[1], None);
    assert_eq!(f64s(&df, "ttft_mean_ms"), [Some(9.5), Some(9.5)]);
    assert_eq!(f64s(&df, "kv_per_request_max_mib"), [Some(1.11328125); 2]);

    // The CSV infers back to the same schema and values: floats are written in a form that reads back as floats,
    // bit for bit.
    let csv = read_csv(&dir.path().join("summary.csv"));
    assert_eq!(csv.schema(), df.schema());
    assert!(csv.equals_missing(&df), "csv:\n{csv}\nparquet:\n{df}");
}

#[test]
fn summary_json_has_keys_in_column_order() {
    let runs = two_runs();
    let dir = tempfile::tempdir().unwrap();
    write_results(dir.path(), &runs).unwrap();

    let text = fs::read_to_string(dir.path().join("summary.json")).unwrap();
    assert!(text.ends_with("}\n]\n"), "pretty-printed with a trailing newline");
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let rows = json.as_array().unwrap();
    assert_eq!(rows.len(), 2);
    for row in rows {
        let keys: Vec<&String> = row.as_object().unwrap().keys().collect();
        assert_eq!(keys, expected_columns(&runs).iter().collect::<Vec<_>>());
    }
    assert_eq!(rows[0]["run"], "static-2");
    assert_eq!(rows[0]["max_batch_size"], 2);
    assert!(rows[0]["max_batch_size"].is_i64());
    assert_eq!(rows[1]["chunked_prefill"], true);
    // The f64 column keeps the Int cell a float.
    assert!(rows[1]["rate"].is_f64());
    assert_eq!(rows[1]["rate"].as_f64(), Some(1.0));
    assert!(rows[0]["goodput_req_per_s"].is_f64());
    assert!(rows[1]["goodput_req_per_s"].is_null());
    assert_eq!(rows[0]["kv_per_request_max_mib"].as_f64(), Some(1.11328125));
}

#[test]
fn writing_twice_gives_identical_bytes() {
    let runs = two_runs();
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    write_results(a.path(), &runs).unwrap();
    let first = files(a.path());
    write_results(b.path(), &runs).unwrap();
    assert_eq!(files(b.path()), first);
    // Again over the first output: same files, no temporaries left behind.
    write_results(a.path(), &runs).unwrap();
    assert_eq!(files(a.path()), first);

    let names: Vec<String> = first.keys().map(|p| p.display().to_string()).collect();
    assert_eq!(
        names,
        [
            "runs/continuous-8/requests.parquet",
            "runs/static-2/requests.parquet",
            "runs/static-2/steps.parquet",
            "runs/static-2/tokens.parquet",
            "summary.csv",
            "summary.json",
            "summary.parquet",
        ]
    );
}

#[test]
fn run_tables_hold_the_records() {
    let runs = two_runs();
    let dir = tempfile::tempdir().unwrap();
    write_results(dir.path(), &runs).unwrap();
    let run_dir = dir.path().join("runs/static-2");

    let requests = read_parquet(&run_dir.join("requests.parquet"));
    let names: Vec<&str> = requests.get_column_names().iter().map(|n| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "id",
            "arrival_ms",
            "prompt_len",
            "output_len",
            "tokens",
            "ttft_ms",
            "e2e_ms",
            "tpot_ms",
            "max_itl_ms",
            "kv_peak_slots",
            "preemptions"
        ]
    );
    assert_eq!(requests.column("id").unwrap().dtype(), &DataType::UInt32);
    assert_eq!(requests.column("kv_peak_slots").unwrap().dtype(), &DataType::UInt64);
    assert_eq!(f64s(&requests, "arrival_ms"), [Some(0.0), Some(1.0)]);
    assert_eq!(f64s(&requests, "ttft_ms"), [Some(10.0), Some(9.0)]);
    assert_eq!(f64s(&requests, "e2e_ms"), [Some(15.0), Some(9.0)]);
    // A one-token request has neither a TPOT nor an inter-token gap.
    assert_eq!(f64s(&requests, "tpot_ms"), [Some(2.5), None]);
    assert_eq!(f64s(&requests, "max_itl_ms"), [Some(2.5), None]);

    let steps = read_parquet(&run_dir.join("steps.parquet"));
    assert_eq!(steps.height(), 3);
    let kinds: Vec<Option<&str>> = steps.column("kind").unwrap().str().unwrap().iter().collect();
    assert_eq!(kinds, [Some("prefill"), Some("decode"), Some("decode")]);
    assert_eq!(f64s(&steps, "end_ms"), [Some(10.0), Some(12.5), Some(15.0)]);
    let padding: Vec<Option<u32>> = steps.column("padding_tokens").unwrap().u32().unwrap().iter().collect();
    assert_eq!(padding, [Some(40), Some(1), Some(1)]);

    let tokens = read_parquet(&run_dir.join("tokens.parquet"));
    let request: Vec<Option<u32>> = tokens.column("request").unwrap().u32().unwrap().iter().collect();
    assert_eq!(request, [Some(0), Some(1), Some(0), Some(0)]);
    assert_eq!(
        f64s(&tokens, "time_ms"),
        [Some(10.0), Some(10.0), Some(12.5), Some(15.0)]
    );

    let other = dir.path().join("runs/continuous-8");
    assert!(other.join("requests.parquet").is_file());
    assert!(!other.join("steps.parquet").exists(), "no steps kept, no steps file");
    assert!(
        !other.join("tokens.parquet").exists(),
        "no tokens traced, no tokens file"
    );
}

#[test]
fn rewriting_a_run_without_steps_removes_its_stale_tables() {
    let mut runs = two_runs();
    let dir = tempfile::tempdir().unwrap();
    write_run(dir.path(), &runs[0]).unwrap();
    let run_dir = dir.path().join("runs/static-2");
    assert!(run_dir.join("steps.parquet").is_file());
    runs[0].metrics.steps.clear();
    runs[0].metrics.tokens = None;
    write_run(dir.path(), &runs[0]).unwrap();
    assert!(!run_dir.join("steps.parquet").exists());
    assert!(!run_dir.join("tokens.parquet").exists());
    assert!(!dir.path().join("summary.csv").exists(), "write_run writes no summary");
}

#[test]
fn an_empty_sweep_still_writes_the_summary_schema() {
    let dir = tempfile::tempdir().unwrap();
    write_results(dir.path(), &[]).unwrap();
    let df = read_parquet(&dir.path().join("summary.parquet"));
    assert_eq!(df.height(), 0);
    let names: Vec<&str> = df.get_column_names().iter().map(|n| n.as_str()).collect();
    assert_eq!(names.first(), Some(&"run"));
    assert!(names.contains(&"goodput_req_per_s") && names.contains(&"peak_memory_mib"));
    assert_eq!(df.column("ttft_p99_ms").unwrap().dtype(), &DataType::Float64);
    assert_eq!(fs::read_to_string(dir.path().join("summary.json")).unwrap(), "[]\n");
}

#[test]
fn bad_inputs_are_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let mut runs = two_runs();
    runs[1].name = "../escape".into();
    let err = write_results(dir.path(), &runs).unwrap_err();
    assert!(matches!(err, ReportError::RunName { .. }), "{err}");
    assert!(fs::read_dir(dir.path()).unwrap().next().is_none(), "nothing written");

    runs[1].name = "static-2".into();
    let err = write_results(dir.path(), &runs).unwrap_err();
    assert!(
        matches!(err, ReportError::DuplicateRun(ref n) if n == "static-2"),
        "{err}"
    );

    let mut runs = two_runs();
    runs[1].labels.push(("requests".into(), Cell::Int(3)));
    let err = write_summary(dir.path(), &runs).unwrap_err();
    assert!(
        matches!(err, ReportError::DuplicateColumn { ref run, ref column } if run == "continuous-8" && column == "requests"),
        "{err}"
    );
}

#[test]
fn errors_name_the_path() {
    let dir = tempfile::tempdir().unwrap();
    // A file where the output folder should be.
    let out = dir.path().join("out");
    fs::write(&out, b"not a folder").unwrap();
    let err = write_results(&out, &two_runs()).unwrap_err();
    assert!(matches!(err, ReportError::Io { .. }), "{err:?}");
    assert!(err.to_string().contains(&*out.to_string_lossy()), "{err}");
}

#[test]
fn markdown_table_has_one_aligned_line_per_run() {
    let runs = two_runs();
    let table = markdown_table(&runs);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 2 + runs.len(), "{table}");
    assert!(table.ends_with('\n'));

    let cells = |line: &str| -> Vec<String> {
        line.trim_matches('|')
            .split(" | ")
            .map(|c| c.trim().to_owned())
            .collect()
    };
    let header = cells(lines[0]);
    assert_eq!(
        header,
        [
            "run",
            "policy",
            "max_batch_size",
            "rate",
            "chunked_prefill",
            "requests",
            "out tok/s",
            "req/s",
            "TTFT mean ms",
            "TTFT p95 ms",
            "ITL mean ms",
            "ITL p95 ms",
            "TPOT mean ms",
            "E2E mean ms",
            "KV/req max MiB",
            "peak mem MiB"
        ]
    );
    let separator = cells(lines[1]);
    assert!(separator[0].chars().all(|c| c == '-'), "run is left-aligned");
    assert!(separator[1].chars().all(|c| c == '-'), "text labels are left-aligned");
    assert!(
        separator[2].ends_with(':') && separator[3].ends_with(':'),
        "numeric labels are right-aligned"
    );
    assert!(
        separator[4].chars().all(|c| c == '-'),
        "boolean labels are left-aligned"
    );
    assert!(separator[5..].iter().all(|s| s.ends_with(':')));

    // 4 tokens and 2 requests in 15 ms; TTFTs 10 and 9 ms; ITLs 2.5 ms; E2E 15 and 9 ms;
    // peak memory 988 + 192 slots × 12 KiB + 64 MiB.
    let row = cells(lines[2]);
    assert_eq!(
        row,
        [
            "static-2",
            "static",
            "2",
            "0.5",
            "false",
            "2",
            "266.7",
            "133.33",
            "9.50",
            "9.95",
            "2.50",
            "2.50",
            "2.50",
            "12.00",
            "1.11328125",
            "1054.2"
        ]
    );
    assert_eq!(cells(lines[3])[..5], ["continuous-8", "continuous", "8", "1", "true"]);
    // Padded cells: every line is as wide as the header.
    assert!(
        lines.iter().all(|l| l.chars().count() == lines[0].chars().count()),
        "{table}"
    );
}

#[test]
fn markdown_leaves_shared_and_repeated_labels_out_of_the_table() {
    let mut runs = two_runs();
    for run in &mut runs {
        let policy = run.labels[0].1.clone();
        run.labels.insert(0, ("scenario".into(), Cell::Str("s".into())));
        run.labels.insert(1, ("scheduler.policy".into(), policy));
    }
    let table = markdown_table(&runs);
    let header = table.lines().next().unwrap();
    assert!(!header.contains("scenario"), "{header}");
    assert!(
        header.contains("scheduler.policy") && !header.contains("| policy"),
        "{header}"
    );
    assert!(header.contains("max_batch_size"), "{header}");
    assert_eq!(
        crate::report::shared_labels(&runs),
        [("scenario".to_string(), "s".to_string())]
    );
    // A single run keeps every label: nothing else says what it ran.
    let one = markdown_table(&runs[..1]);
    assert!(one.lines().next().unwrap().contains("scenario"));
    assert!(crate::report::shared_labels(&runs[..1]).is_empty());
}

#[test]
fn results_read_back_as_written() {
    let dir = tempfile::tempdir().unwrap();
    let runs = two_runs();
    write_results(dir.path(), &runs).unwrap();
    let r = crate::report::load_results(dir.path()).unwrap();
    assert_eq!(r.summary.height(), 2);
    let names: Vec<&str> = r.runs.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["static-2", "continuous-8"]);
    assert!(r.runs[0].steps.is_some() && r.runs[0].tokens.is_some());
    assert!(r.runs[1].steps.is_none() && r.runs[1].tokens.is_none());
    assert_eq!(r.runs[0].requests.height(), runs[0].metrics.requests.len());
}

#[test]
fn an_empty_results_folder_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    write_results(dir.path(), &[]).unwrap();
    let r = crate::report::load_results(dir.path()).unwrap();
    assert_eq!(r.summary.height(), 0);
    assert!(r.runs.is_empty());
}
