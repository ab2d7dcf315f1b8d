//! End-to-end tests of the built `batchlab` binary.

use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn batchlab(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_batchlab"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("the binary runs")
}

fn ok(args: &[&str]) -> Output {
    let out = batchlab(args);
    assert!(
        out.status.success(),
        "batchlab {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn fails(args: &[&str]) -> String {
    let out = batchlab(args);
    assert!(!out.status.success(), "batchlab {args:?} should fail");
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        !stderr.contains("panicked"),
        "a panic is not an error message:\n{stderr}"
    );
    assert!(!stderr.contains("RUST_BACKTRACE"), "{stderr}");
    stderr
}

fn summary(dir: &Path) -> Vec<BTreeMap<String, Value>> {
    let text = std::fs::read_to_string(dir.join("summary.json")).expect("summary.json");
    serde_json::from_str(&text).expect("summary.json parses")
}

/// Every file under `dir`, relative path → bytes.
fn files(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.insert(
                    path.strip_prefix(dir).unwrap().to_path_buf(),
                    std::fs::read(&path).unwrap(),
                );
            }
        }
    }
    out
}

fn scenario_file(dir: &Path, text: &str) -> String {
    let path = dir.join("s.toml");
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

const SMALL: &str = r#"
name = "small"
seed = 3
[model]
name = "qwen2.5-0.5b"
[cost]
kind = "analytic"
[scheduler]
policy = "continuous"
max_batch_size = 4
[workload]
requests = 12
arrival = "poisson"
rate = 20.0
prompt_len = { dist = "lognormal", mean = 100, sigma = 0.5 }
output_len = { dist = "uniform", min = 4, max = 40 }
[sweep]
"scheduler.policy" = ["static", "continuous", "grouped"]
"#;

#[test]
fn quickstart_runs_and_prints_a_table() {
    let tmp = tempfile::tempdir().unwrap();
    let out_dir = tmp.path().join("q");
    let out = ok(&[
        "simulate",
        "scenarios/quickstart.toml",
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    for policy in ["static", "continuous", "grouped"] {
        assert!(stdout.contains(policy), "{stdout}");
    }
    let rows = summary(&out_dir);
    assert_eq!(rows.len(), 3);
    assert!(rows.iter().all(|r| r["completed"] == 16 && r["output_tokens"] == 384));
    for name in [
        "summary.csv",
        "summary.parquet",
        "runs/r0/requests.parquet",
        "runs/r0/steps.parquet",
    ] {
        let name = name.replace("r0", rows[0]["run"].as_str().unwrap());
        assert!(out_dir.join(&name).is_file(), "{name} missing");
    }
    // On this burst every batch runs about as many steps either way; continuous batching admits the second half as
    // soon as slots free up, so its requests wait less, and grouped batching loses throughput once lengths diverge.
    let by_policy = |metric: &str| -> BTreeMap<String, f64> {
        rows.iter()
            .map(|r| (r["policy"].as_str().unwrap().to_string(), r[metric].as_f64().unwrap()))
            .collect()
    };
    let (ttft, tput) = (by_policy("ttft_mean_ms"), by_policy("output_tok_per_s"));
    assert!(ttft["continuous"] < ttft["static"], "{ttft:?}");
    assert!(tput["grouped"] < 0.8 * tput["static"], "{tput:?}");
    assert_eq!(rows[0]["cost"], "calibrated");
}

#[test]
fn same_seed_gives_byte_identical_outputs_serial_or_parallel() {
    let tmp = tempfile::tempdir().unwrap();
    let s = scenario_file(tmp.path(), SMALL);
    let (a, b, c) = (tmp.path().join("a"), tmp.path().join("b"), tmp.path().join("c"));
    ok(&["simulate", &s, "--quiet", "--out", a.to_str().unwrap()]);
    ok(&["simulate", &s, "--quiet", "--serial", "--out", b.to_str().unwrap()]);
    let (fa, fb) = (files(&a), files(&b));
    assert!(fa.len() >= 3 + 3 * 3, "{:?}", fa.keys());
    assert_eq!(fa.keys().collect::<Vec<_>>(), fb.keys().collect::<Vec<_>>());
    for (path, bytes) in &fa {
        assert!(
            bytes == &fb[path],
            "{} differs between a parallel and a serial run",
            path.display()
        );
    }
    // Another seed draws other arrivals.
    ok(&["simulate", &s, "--quiet", "--seed", "4", "--out", c.to_str().unwrap()]);
    let (sa, sc) = (summary(&a), summary(&c));
    assert_ne!(sa[0]["makespan_s"], sc[0]["makespan_s"]);
    assert_eq!(sc[0]["seed"], 4);
}

/// `--sensitivity` simulates each run with every step 0.98-1.02x as long: each headline metric's band holds its
/// simulated value, and the file is the same in parallel and serially.
#[test]
fn sensitivity_writes_each_headline_metrics_band() {
    let tmp = tempfile::tempdir().unwrap();
    let s = scenario_file(tmp.path(), SMALL);
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let out = ok(&[
        "simulate",
        &s,
        "--sensitivity",
        "--no-report",
        "--out",
        a.to_str().unwrap(),
    ]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("Sensitivity"));
    ok(&[
        "simulate",
        &s,
        "--sensitivity",
        "--serial",
        "--quiet",
        "--no-report",
        "--out",
        b.to_str().unwrap(),
    ]);
    let csv = std::fs::read_to_string(a.join("sensitivity.csv")).unwrap();
    assert_eq!(csv, std::fs::read_to_string(b.join("sensitivity.csv")).unwrap());
    let rows: Vec<Vec<&str>> = csv.lines().skip(1).map(|l| l.split(',').collect()).collect();
    // 3 runs × 6 headline metrics.
    assert_eq!(rows.len(), 18, "{csv}");
    let sums = summary(&a);
    for row in &rows {
        let (simulated, least, most): (f64, f64, f64) = (
            row[2].parse().unwrap(),
            row[3].parse().unwrap(),
            row[4].parse().unwrap(),
        );
        assert!(least <= simulated && simulated <= most, "{row:?}");
        let run = sums.iter().find(|r| r["run"] == row[0]).unwrap();
        assert_eq!(run[row[1]].as_f64().unwrap(), simulated, "{row:?}");
    }
    // Throughput scales with the steps: it moves, by about the scale.
    let tput = rows.iter().find(|r| r[1] == "output_tok_per_s").unwrap();
    let hw: f64 = tput[5].parse().unwrap();
    assert!(hw > 0.001 && hw < 0.05, "{tput:?}");
    // Without the flag, no sensitivity.csv.
    let c = tmp.path().join("c");
    ok(&["simulate", &s, "--quiet", "--no-report", "--out", c.to_str().unwrap()]);
    assert!(!c.join("sensitivity.csv").exists());
}

#[test]
fn seed_matrix_static_kv_per_request_is_exact() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("m");
    ok(&[
        "simulate",
        "scenarios/seed-matrix.toml",
        "--quiet",
        "--out",
        out.to_str().unwrap(),
    ]);
    let rows = summary(&out);
    assert_eq!(rows.len(), 162);
    let expected: BTreeMap<(&str, i64), f64> = [
        (("qwen2.5-0.5b", 64), 1.11328125),
        (("qwen2.5-0.5b", 256), 3.36328125),
        (("qwen2.5-0.5b", 512), 6.36328125),
        (("qwen2.5-1.5b", 64), 2.59765625),
        (("qwen2.5-1.5b", 256), 7.84765625),
        (("qwen2.5-1.5b", 512), 14.84765625),
    ]
    .into_iter()
    .collect();
    let mut seen = 0;
    for r in rows.iter().filter(|r| r["policy"] == "static") {
        let key = (r["model"].as_str().unwrap(), r["workload.prompt_len"].as_i64().unwrap());
        assert_eq!(r["kv_per_request_max_mib"].as_f64().unwrap(), expected[&key], "{key:?}");
        assert_eq!(r["completed"], r["requests"]);
        seen += 1;
    }
    assert_eq!(seen, 54);
}

#[test]
fn explain_lists_runs_without_writing() {
    let tmp = tempfile::tempdir().unwrap();
    let s = scenario_file(tmp.path(), SMALL);
    let out = ok(&["explain", &s]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("3 run(s)") && stdout.contains("scheduler.policy=\"grouped\""),
        "{stdout}"
    );
    assert!(!tmp.path().join("out").exists());
}

/// `batchlab … | head`: the reader has closed the pipe when batchlab prints; it stops without a panic or a backtrace.
#[test]
fn a_reader_that_stops_early_ends_batchlab_quietly() {
    let (reader, writer) = std::io::pipe().expect("a pipe");
    drop(reader);
    let out = Command::new(env!("CARGO_BIN_EXE_batchlab"))
        .args([
            "check-profile",
            "calibration/h100-80gb-hbm3/qwen2.5-0.5b.json",
            "calibration/h100-80gb-hbm3/qwen2.5-0.5b.offset.json",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(writer)
        .output()
        .expect("the binary runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("panicked") && !stderr.contains("RUST_BACKTRACE"),
        "{stderr}"
    );
    assert_eq!(out.status.code(), Some(141), "{stderr}");
}

#[test]
fn models_and_gpus_list_the_catalogs() {
    let models = String::from_utf8_lossy(&ok(&["models"]).stdout).to_string();
    assert!(models.contains("qwen2.5-7b") && models.contains("494.0M"), "{models}");
    let gpus = String::from_utf8_lossy(&ok(&["gpus"]).stdout).to_string();
    assert!(
        gpus.contains("h100-sxm") && gpus.contains("rtx-pro-4000-blackwell"),
        "{gpus}"
    );
}

#[test]
fn bad_input_fails_clearly_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let out_dir = tmp.path().join("out");
    let out = out_dir.to_str().unwrap();
    let case = |text: &str, extra: &[&str]| -> String {
        let s = scenario_file(tmp.path(), text);
        let mut args = vec!["simulate", s.as_str(), "--out", out];
        args.extend_from_slice(extra);
        let err = fails(&args);
        assert!(!out_dir.join("summary.json").exists(), "output written despite: {err}");
        err
    };
    let err = case("name = \"x\"\n[model\nname = 1\n", &[]);
    assert!(err.contains("s.toml:2:"), "{err}");
    let err = case(
        &SMALL.replace("max_batch_size = 4", "max_batch_size = 4\nmax_batch = 3"),
        &[],
    );
    assert!(err.contains("max_batch") && err.contains("max_batch_size"), "{err}");
    let err = case(SMALL, &["--set", "model.name=llama-9000"]);
    assert!(err.contains("llama-9000") && err.contains("qwen2.5-0.5b"), "{err}");
    let err = case(SMALL, &["--set", "scheduler.policy=fifo"]);
    assert!(err.contains("fifo") && err.contains("continuous"), "{err}");
    let err = case(SMALL, &["--set", "workload.rate=-2"]);
    assert!(err.contains("workload.rate"), "{err}");
    let err = case(SMALL, &["--set", "scheduler.max_batch_size=0"]);
    assert!(err.contains("max_batch_size"), "{err}");
    // Prompt + output beyond the model's context (32768 tokens).
    let err = case(
        SMALL,
        &[
            "--set",
            "workload.prompt_len=32000",
            "--set",
            "workload.output_len=1000",
        ],
    );
    assert!(err.contains("context"), "{err}");
    // A cache too small for one request.
    let err = case(
        SMALL,
        &[
            "--set",
            "memory.kv_capacity_tokens=50",
            "--set",
            "workload.prompt_len=100",
        ],
    );
    assert!(err.contains("KV"), "{err}");
    let err = fails(&["simulate", "does/not/exist.toml"]);
    assert!(err.contains("does/not/exist.toml"), "{err}");
}

#[test]
fn gpu_commands_fail_with_one_clear_sentence_when_the_gpu_is_missing() {
    // Ordinal 99 exists nowhere: without a driver this reports the missing driver, with one the missing device.
    for cmd in [
        &["calibrate", "--gpu", "99"][..],
        &["bench-kernels", "--gpu", "99"][..],
        &["bench-engine", "--gpu", "99"][..],
    ] {
        let err = fails(cmd);
        let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{err}");
        assert!(
            lines[0].starts_with("error: ") && (err.contains("driver") || err.contains("GPU")),
            "{err}"
        );
    }
}

#[test]
fn bench_engine_checks_its_plans_profile_before_the_gpu() {
    // A profile of another model, and one that does not exist: input errors (exit 2) before any GPU is opened.
    let other = "calibration/h100-80gb-hbm3/qwen2.5-1.5b.json";
    let wrong = batchlab(&[
        "bench-engine",
        "--model",
        "qwen2.5-0.5b",
        "--plans",
        other,
        "--gpu",
        "99",
    ]);
    assert_eq!(wrong.status.code(), Some(2));
    let err = String::from_utf8_lossy(&wrong.stderr);
    assert!(err.contains("a profile of qwen2.5-1.5b, not of qwen2.5-0.5b"), "{err}");
    let missing = batchlab(&["bench-engine", "--plans", "no/such/profile.json", "--gpu", "99"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no/such/profile.json"));
    // The model's own profile passes the check; the command then stops at the missing GPU (exit 1).
    let own = "calibration/h100-80gb-hbm3/qwen2.5-0.5b.json";
    let out = batchlab(&["bench-engine", "--model", "qwen2.5-0.5b", "--plans", own, "--gpu", "99"]);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    // Decode steps between prefills: 1 to 64 of them.
    for bad in ["0", "65", "x"] {
        let out = batchlab(&["bench-engine", "--prefill-after-decodes", bad, "--gpu", "99"]);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{bad}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = batchlab(&[
        "bench-engine",
        "--prefill",
        "1x64",
        "--prefill-after-decodes",
        "8",
        "--gpu",
        "99",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    // Engine sizing and how many engines: positive, at most 16 engines; valid ones reach the missing GPU.
    for bad in [
        &["--engines", "0"][..],
        &["--engines", "17"][..],
        &["--step-tokens", "0"][..],
        &["--context", "-4"][..],
        &["--kv-tokens", "0"][..],
    ] {
        let out = batchlab(&[&["bench-engine", "--gpu", "99"][..], bad].concat());
        assert_eq!(
            out.status.code(),
            Some(2),
            "{bad:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let sized = [
        "bench-engine",
        "--step-tokens",
        "131072",
        "--context",
        "5120",
        "--engines",
        "4",
        "--kv-tokens",
        "2359296",
        "--gpu",
        "99",
    ];
    let out = batchlab(&sized);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn validate_explains_itself() {
    let out = ok(&["validate", "--help"]);
    let help = String::from_utf8_lossy(&out.stdout);
    for text in [
        "same scheduler as the simulator",
        "|simulated − measured| / measured",
        "median ≤ 3% and p95 ≤ 8%",
        "--warmup-steps <N>",
        "--no-report",
        "--gpu <GPU>",
        "refuses any other",
    ] {
        assert!(help.contains(text), "validate --help lacks {text:?}:\n{help}");
    }
}

/// CI has no GPU: validate checks its input (exit 2), then stops with one sentence at the missing driver (exit 1).
/// On a machine with a driver this test does not apply: it then runs the GPU engine.
#[test]
fn validate_without_a_gpu_says_so_in_one_sentence() {
    if Path::new("/proc/driver/nvidia/version").exists() {
        eprintln!("skipped: this machine has an NVIDIA driver");
        return;
    }
    let out = batchlab(&[
        "validate",
        "scenarios/quickstart.toml",
        "--out",
        "/nonexistent/never-written",
    ]);
    assert_eq!(out.status.code(), Some(1));
    // Warnings may come first (a committed profile measured with other kernels than this build's is said so).
    let stderr = String::from_utf8_lossy(&out.stderr);
    let errors: Vec<&str> = stderr.lines().filter(|l| !l.contains("WARN")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(errors[0].starts_with("error: no CUDA driver found"), "{stderr}");
    assert!(!Path::new("/nonexistent/never-written").exists());

    let stderr = fails(&["validate", "scenarios/no-such-scenario.toml"]);
    assert!(stderr.contains("no-such-scenario.toml"), "{stderr}");
    let out = batchlab(&["validate", "scenarios/no-such-scenario.toml"]);
    assert_eq!(out.status.code(), Some(2));
}

/// `baseline-report` joins a validate folder with a transformers CSV, writes the report and prints the headline; a
/// malformed CSV is bad input (exit 2) named by file and line.
#[test]
fn baseline_report_joins_a_validate_folder_and_a_transformers_csv() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("validated");
    std::fs::create_dir(&dir).unwrap();
    let run = |name: &str, policy: &str, tok_s: f64| {
        serde_json::json!({
            "run": name, "model": "qwen2.5-0.5b", "policy": policy, "max_batch_size": 8,
            "workload.prompt_len": 512, "requests": 16, "prompt_tokens": 8192, "output_tokens": 384,
            "output_tok_per_s": tok_s, "gpu": "h100-sxm",
        })
    };
    let summary = serde_json::json!([run("r0", "static", 20000.0), run("r1", "continuous", 30000.0)]);
    std::fs::write(dir.join("summary.json"), summary.to_string()).unwrap();
    std::fs::write(dir.join("validation.json"), "{}").unwrap();
    let header = "model,prompt_len,max_batch,requests,mode,output_tokens,wall_s,output_tok_per_s,gpu,torch,\
                  transformers,settings,error";
    let csv = tmp.path().join("hf.csv");
    std::fs::write(
        &csv,
        format!(
            "{header}\nqwen2.5-0.5b,512,8,16,generate,384,1.0,384.000,NVIDIA H100 80GB HBM3,2.11.0,5.17.0,,\n\
             qwen2.5-0.5b,512,8,16,generate_batch,384,0.5,768.000,NVIDIA H100 80GB HBM3,2.11.0,5.17.0,,\n"
        ),
    )
    .unwrap();
    let report = tmp.path().join("out/baseline.md");
    let out = ok(&[
        "baseline-report",
        "--validated",
        dir.to_str().unwrap(),
        "--baseline",
        csv.to_str().unwrap(),
        "--out",
        report.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    // 30000 / 384 = 78.1×, 30000 / 768 = 39.1×: the target is missed against generate_batch.
    assert!(stdout.contains("## Headline: max batch 8, 16 requests"), "{stdout}");
    assert!(
        stdout.contains("78.1×") && stdout.contains("39.1×") && stdout.contains("FAIL"),
        "{stdout}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("warning: the validate folder does not record its card"),
        "{stderr}"
    );
    let md = std::fs::read_to_string(&report).unwrap();
    assert!(md.starts_with("# batchlab against Hugging Face transformers"), "{md}");

    std::fs::write(&csv, format!("{header}\nqwen2.5-0.5b,512,8,sixteen\n")).unwrap();
    let out = batchlab(&[
        "baseline-report",
        "--validated",
        dir.to_str().unwrap(),
        "--baseline",
        csv.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("hf.csv:2: 4 fields, the header has 13"), "{stderr}");
}

/// `report` on a folder kept without its runs (as the validated ones under reports/ are) says what is missing and
/// how to get it back, once.
#[test]
fn report_on_a_folder_without_its_runs_says_so() {
    let err = fails(&["report", "reports/seed-matrix-h200-validated"]);
    assert!(
        err.contains("has no runs/ folder") && err.contains("validating again"),
        "{err}"
    );
    assert_eq!(err.matches("error:").count(), 1, "{err}");
    // A folder that is no results folder at all.
    let err = fails(&["report", "scenarios"]);
    assert!(err.contains("is not a results folder"), "{err}");
}
