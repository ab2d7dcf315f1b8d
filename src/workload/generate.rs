//! Request generation: arrival times and lengths, deterministic in the scenario's seed.
//!
//! Arrivals, prompt lengths and output lengths are drawn from three separate ChaCha8 streams of the same seed, so
//! changing one spec (say, the output lengths) leaves the other two sequences exactly as they were.
//!
//! Open-loop arrival times are computed in f64 seconds as a running sum of gaps and converted to `Nanos` once per
//! request, so rounding never accumulates over a long workload.
//!
//! Poisson and gamma processes start at t = 0 with no request there: the first request arrives after the first gap,
//! so the count of arrivals in [0, t] is Poisson(rate·t) from the start (vLLM's `bench serve` sends its first
//! request at 0 instead; for makespan-based metrics, which run from the first arrival, the two are the same).

use super::trace;
use super::validate::check;
use super::{ArrivalKind, ClosedLoop, LengthDist, LengthSpec, Request, Scenario, ScenarioError, Workload};
use crate::units::Nanos;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Exp, Gamma, LogNormal, Normal, Zipf};
use std::path::Path;

const ARRIVAL_STREAM: u64 = 0;
const PROMPT_STREAM: u64 = 1;
const OUTPUT_STREAM: u64 = 2;

fn stream(seed: u64, stream: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(stream);
    rng
}

fn invalid(message: String) -> ScenarioError {
    ScenarioError::Invalid(message)
}

pub(super) fn generate(scenario: &Scenario, base_dir: &Path) -> Result<Workload, ScenarioError> {
    // Scenarios built in code never went through `load_runs`; parameters the draws rely on must be sane.
    check(scenario).map_err(|e| invalid(e.message))?;
    let w = &scenario.workload;
    let seed = scenario.seed;
    let mut arrival_rng = stream(seed, ARRIVAL_STREAM);
    let required = |value: Option<f64>, key: &str| value.ok_or_else(|| invalid(format!("{key} is required")));

    let mut closed_loop = None;
    let mut trace_lengths = None;
    let arrivals: Vec<Nanos> = match w.arrival {
        ArrivalKind::Trace => {
            let path = w
                .trace
                .as_deref()
                .ok_or_else(|| invalid("workload.trace is required".to_string()))?;
            let path = base_dir.join(path);
            let mut rows = trace::read(&path)?;
            // Stable: requests with equal arrival times keep their order in the file.
            rows.sort_by(|a, b| a.arrival_s.total_cmp(&b.arrival_s));
            if let Some(cap) = w.requests {
                rows.truncate(usize::try_from(cap).unwrap_or(usize::MAX));
            }
            trace_lengths = Some(rows.iter().map(|r| (r.prompt_len, r.output_len)).collect::<Vec<_>>());
            rows.iter().map(|r| Nanos::from_secs(r.arrival_s)).collect()
        }
        kind => {
            let n = w
                .requests
                .ok_or_else(|| invalid("workload.requests is required".to_string()))?;
            let n = usize::try_from(n).map_err(|_| invalid(format!("workload.requests is too large, got {n}")))?;
            match kind {
                ArrivalKind::Burst => vec![Nanos::ZERO; n],
                ArrivalKind::Closed => {
                    let clients = w
                        .clients
                        .ok_or_else(|| invalid("workload.clients is required".to_string()))?;
                    closed_loop = Some(ClosedLoop {
                        clients,
                        think: Nanos::from_ms(w.think_ms),
                    });
                    vec![Nanos::ZERO; n]
                }
                ArrivalKind::Constant => {
                    let rate = required(w.rate, "workload.rate")?;
                    (0..n).map(|i| Nanos::from_secs(i as f64 / rate)).collect()
                }
                ArrivalKind::Poisson => {
                    let rate = required(w.rate, "workload.rate")?;
                    let gaps = Exp::new(rate).map_err(|e| invalid(format!("workload.rate: {e}")))?;
                    cumulative(n, || gaps.sample(&mut arrival_rng))
                }
                ArrivalKind::Gamma => {
                    let rate = required(w.rate, "workload.rate")?;
                    let cv = required(w.cv, "workload.cv")?;
                    // Mean shape·scale = 1/rate; variance shape·scale² = cv²/rate², i.e. cv of the gaps = cv.
                    let gaps = Gamma::new(1.0 / (cv * cv), cv * cv / rate)
                        .map_err(|e| invalid(format!("workload.rate/workload.cv: {e}")))?;
                    cumulative(n, || gaps.sample(&mut arrival_rng))
                }
                ArrivalKind::Trace => unreachable!("handled above"),
            }
        }
    };

    let n = arrivals.len();
    let (prompts, outputs) = match (&w.prompt_len, &w.output_len, &trace_lengths) {
        (Some(p), Some(o), _) => (lengths(p, n, seed, PROMPT_STREAM)?, lengths(o, n, seed, OUTPUT_STREAM)?),
        (p, o, Some(trace)) => (
            match p {
                Some(p) => lengths(p, n, seed, PROMPT_STREAM)?,
                None => trace.iter().map(|&(p, _)| p).collect(),
            },
            match o {
                Some(o) => lengths(o, n, seed, OUTPUT_STREAM)?,
                None => trace.iter().map(|&(_, o)| o).collect(),
            },
        ),
        _ => {
            return Err(invalid(
                "workload.prompt_len and workload.output_len are required".to_string(),
            ));
        }
    };

    let requests = arrivals
        .into_iter()
        .zip(prompts.into_iter().zip(outputs))
        .enumerate()
        .map(|(id, (arrival, (prompt_len, output_len)))| Request {
            // `check` bounds generated counts to u32; a trace longer than that cannot be numbered.
            id: u32::try_from(id).unwrap_or(u32::MAX),
            arrival,
            prompt_len,
            output_len,
        })
        .collect::<Vec<_>>();
    if requests.len() > u32::MAX as usize {
        return Err(invalid(format!(
            "a workload holds at most {} requests, got {}",
            u32::MAX,
            requests.len()
        )));
    }
    Ok(Workload { requests, closed_loop })
}

/// Arrival times as the running sum of `n` gaps (seconds), the first request at the first gap.
fn cumulative(n: usize, mut gap: impl FnMut() -> f64) -> Vec<Nanos> {
    let mut t = 0.0;
    (0..n)
        .map(|_| {
            t += gap();
            Nanos::from_secs(t)
        })
        .collect()
}

/// Rounds a continuous draw and clamps it to [min, max].
fn clamp_round(x: f64, min: Option<u32>, max: Option<u32>) -> u32 {
    let lo = f64::from(min.unwrap_or(1));
    let hi = f64::from(max.unwrap_or(u32::MAX));
    // f64::max/min return the other operand for NaN (clamp would keep it), so no draw escapes [lo, hi].
    x.round().max(lo).min(hi) as u32
}

fn lengths(spec: &LengthSpec, n: usize, seed: u64, stream_id: u64) -> Result<Vec<u32>, ScenarioError> {
    let mut rng = stream(seed, stream_id);
    let bad = |e: &dyn std::fmt::Display| invalid(format!("length distribution: {e}"));
    Ok(match spec {
        LengthSpec::Fixed(len) => vec![*len; n],
        LengthSpec::Cycle(list) if list.is_empty() => return Err(invalid("an empty length list".to_string())),
        LengthSpec::Cycle(list) => list.iter().copied().cycle().take(n).collect(),
        LengthSpec::Dist(LengthDist::Uniform { min, max }) => {
            if min > max {
                return Err(invalid(format!("uniform length: min {min} > max {max}")));
            }
            (0..n).map(|_| rng.random_range(*min..=*max)).collect()
        }
        LengthSpec::Dist(LengthDist::Normal { mean, std, min, max }) => {
            let dist = Normal::new(*mean, *std).map_err(|e| bad(&e))?;
            (0..n).map(|_| clamp_round(dist.sample(&mut rng), *min, *max)).collect()
        }
        LengthSpec::Dist(LengthDist::Lognormal { mean, sigma, min, max }) => {
            // E[exp(N(mu, sigma²))] = exp(mu + sigma²/2): choose mu so the lengths (not their logs) have `mean`.
            let mu = mean.ln() - sigma * sigma / 2.0;
            let dist = LogNormal::new(mu, *sigma).map_err(|e| bad(&e))?;
            (0..n).map(|_| clamp_round(dist.sample(&mut rng), *min, *max)).collect()
        }
        LengthSpec::Dist(LengthDist::Zipf { max, exponent, scale }) => {
            let dist = Zipf::new(f64::from(*max), *exponent).map_err(|e| bad(&e))?;
            let scale = scale.unwrap_or(1);
            // Zipf draws are integers in [1, max] held in a float.
            (0..n)
                .map(|_| (dist.sample(&mut rng) as u32).clamp(1, *max).saturating_mul(scale))
                .collect()
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn scenario(workload: &str) -> Scenario {
        let text = format!(
            "name = \"t\"\nseed = 42\n[model]\nname = \"qwen2.5-0.5b\"\n[cost]\nkind = \"analytic\"\n\
             [scheduler]\npolicy = \"continuous\"\nmax_batch_size = 8\n[workload]\n{workload}\n"
        );
        toml::from_str(&text).unwrap_or_else(|e| panic!("{e}"))
    }

    fn run(s: &Scenario) -> Workload {
        generate(s, Path::new(".")).unwrap_or_else(|e| panic!("{e}"))
    }

    fn fixtures() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
    }

    fn gaps_secs(w: &Workload) -> Vec<f64> {
        let mut last = Nanos::ZERO;
        w.requests
            .iter()
            .map(|r| {
                let gap = (r.arrival - last).as_secs();
                last = r.arrival;
                gap
            })
            .collect()
    }

    fn mean_cv(xs: &[f64]) -> (f64, f64) {
        let n = xs.len() as f64;
        let mean = xs.iter().sum::<f64>() / n;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
        (mean, var.sqrt() / mean)
    }

    #[test]
    fn burst_cycles_output_lengths_with_dense_ids() {
        let w = run(&scenario(
            "arrival = \"burst\"\nrequests = 5\nprompt_len = 512\noutput_len = [16, 32]",
        ));
        assert_eq!(w.closed_loop, None);
        let got: Vec<(u32, u64, u32, u32)> = w
            .requests
            .iter()
            .map(|r| (r.id, r.arrival.0, r.prompt_len, r.output_len))
            .collect();
        assert_eq!(
            got,
            [
                (0, 0, 512, 16),
                (1, 0, 512, 32),
                (2, 0, 512, 16),
                (3, 0, 512, 32),
                (4, 0, 512, 16)
            ]
        );
    }

    #[test]
    fn constant_arrivals_are_exact_multiples_of_the_period() {
        let w = run(&scenario(
            "arrival = \"constant\"\nrate = 3\nrequests = 1000000\nprompt_len = 1\noutput_len = 1",
        ));
        // Computed per request, not accumulated: request i is at round(i/3 s) to the nanosecond.
        assert_eq!(w.requests[1].arrival, Nanos(333_333_333));
        assert_eq!(w.requests[2].arrival, Nanos(666_666_667));
        assert_eq!(w.requests[999_999].arrival, Nanos(333_333_000_000_000));
    }

    #[test]
    fn closed_loop_sets_clients_and_think_time() {
        let w = run(&scenario(
            "arrival = \"closed\"\nclients = 4\nthink_ms = 250\nrequests = 10\nprompt_len = 8\noutput_len = 8",
        ));
        assert_eq!(
            w.closed_loop,
            Some(ClosedLoop {
                clients: 4,
                think: Nanos(250_000_000)
            })
        );
        assert_eq!(w.requests.len(), 10);
        assert!(w.requests.iter().all(|r| r.arrival == Nanos::ZERO));
    }

    #[test]
    fn poisson_gaps_are_exponential_with_mean_one_over_rate() {
        let w = run(&scenario(
            "arrival = \"poisson\"\nrate = 20\nrequests = 100000\nprompt_len = 1\noutput_len = 1",
        ));
        assert!(
            w.requests[0].arrival > Nanos::ZERO,
            "the first request arrives after the first gap"
        );
        assert!(w.requests.windows(2).all(|p| p[0].arrival <= p[1].arrival));
        let (mean, cv) = mean_cv(&gaps_secs(&w));
        assert!((mean * 20.0 - 1.0).abs() < 0.03, "mean gap {mean}");
        assert!((cv - 1.0).abs() < 0.05, "exponential gaps have cv 1, got {cv}");
    }

    #[test]
    fn gamma_gaps_have_the_requested_mean_and_cv() {
        for cv_want in [0.5, 2.0] {
            let w = run(&scenario(&format!(
                "arrival = \"gamma\"\nrate = 10\ncv = {cv_want}\nrequests = 100000\nprompt_len = 1\noutput_len = 1"
            )));
            let (mean, cv) = mean_cv(&gaps_secs(&w));
            assert!((mean * 10.0 - 1.0).abs() < 0.03, "mean gap {mean}");
            assert!((cv / cv_want - 1.0).abs() < 0.05, "cv {cv}, want {cv_want}");
        }
    }

    #[test]
    fn lognormal_lengths_have_the_requested_mean() {
        let w = run(&scenario(
            "arrival = \"burst\"\nrequests = 100000\nprompt_len = { dist = \"lognormal\", mean = 512, sigma = 0.6 }\n\
             output_len = { dist = \"lognormal\", mean = 128, sigma = 1.0, max = 100000 }",
        ));
        let mean = |f: fn(&Request) -> u32| w.requests.iter().map(|r| f64::from(f(r))).sum::<f64>() / 1e5;
        let (prompt, output) = (mean(|r| r.prompt_len), mean(|r| r.output_len));
        assert!((prompt / 512.0 - 1.0).abs() < 0.03, "prompt mean {prompt}");
        assert!((output / 128.0 - 1.0).abs() < 0.03, "output mean {output}");
        assert!(w.requests.iter().all(|r| r.prompt_len >= 1 && r.output_len >= 1));
    }

    #[test]
    fn bounded_distributions_stay_in_bounds() {
        let w = run(&scenario(
            "arrival = \"burst\"\nrequests = 20000\nprompt_len = { dist = \"uniform\", min = 10, max = 20 }\n\
             output_len = { dist = \"normal\", mean = 50, std = 30, min = 40, max = 60 }",
        ));
        let prompts: Vec<u32> = w.requests.iter().map(|r| r.prompt_len).collect();
        assert!(prompts.iter().all(|p| (10..=20).contains(p)));
        assert!(
            prompts.contains(&10) && prompts.contains(&20),
            "both ends of a uniform are drawn"
        );
        let outputs: Vec<u32> = w.requests.iter().map(|r| r.output_len).collect();
        assert!(outputs.iter().all(|o| (40..=60).contains(o)));
        // std 30 around 50: about 37% of draws fall below 40 and are clamped there.
        let clamped = outputs.iter().filter(|&&o| o == 40).count() as f64 / 20000.0;
        assert!((0.3..0.45).contains(&clamped), "clamped share {clamped}");

        let w = run(&scenario(
            "arrival = \"burst\"\nrequests = 20000\n\
             prompt_len = { dist = \"zipf\", max = 8, exponent = 1.2, scale = 64 }\n\
             output_len = 1",
        ));
        let prompts: Vec<u32> = w.requests.iter().map(|r| r.prompt_len).collect();
        assert!(prompts.iter().all(|p| p % 64 == 0 && (64..=512).contains(p)));
        let ones = prompts.iter().filter(|&&p| p == 64).count();
        let twos = prompts.iter().filter(|&&p| p == 128).count();
        // Zipf: P(1)/P(2) = 2^1.2 ≈ 2.30.
        assert!(
            (ones as f64 / twos as f64 - 2.3).abs() < 0.15,
            "{ones} ones, {twos} twos"
        );
    }

    #[test]
    fn same_seed_same_workload_other_seed_other_arrivals() {
        let spec = "arrival = \"poisson\"\nrate = 5\nrequests = 1000\n\
                    prompt_len = { dist = \"lognormal\", mean = 512, sigma = 0.6 }\n\
                    output_len = { dist = \"uniform\", min = 1, max = 64 }";
        let a = scenario(spec);
        assert_eq!(run(&a), run(&a.clone()));
        let mut b = a.clone();
        b.seed = 43;
        let (wa, wb) = (run(&a), run(&b));
        assert_ne!(
            wa.requests.iter().map(|r| r.arrival).collect::<Vec<_>>(),
            wb.requests.iter().map(|r| r.arrival).collect::<Vec<_>>()
        );
        assert_ne!(
            wa.requests.iter().map(|r| r.prompt_len).collect::<Vec<_>>(),
            wb.requests.iter().map(|r| r.prompt_len).collect::<Vec<_>>()
        );
    }

    #[test]
    fn changing_one_length_spec_leaves_arrivals_and_the_other_lengths_alone() {
        let spec = |output: &str| {
            scenario(&format!(
                "arrival = \"poisson\"\nrate = 5\nrequests = 1000\n\
                 prompt_len = {{ dist = \"uniform\", min = 1, max = 4096 }}\noutput_len = {output}"
            ))
        };
        let a = run(&spec("{ dist = \"uniform\", min = 1, max = 64 }"));
        let b = run(&spec("{ dist = \"lognormal\", mean = 100, sigma = 1 }"));
        let c = run(&spec("[16, 32]"));
        for other in [&b, &c] {
            assert!(
                a.requests
                    .iter()
                    .zip(&other.requests)
                    .all(|(x, y)| x.arrival == y.arrival && x.prompt_len == y.prompt_len)
            );
        }
        assert_ne!(
            a.requests.iter().map(|r| r.output_len).collect::<Vec<_>>(),
            b.requests.iter().map(|r| r.output_len).collect::<Vec<_>>()
        );
    }

    #[test]
    fn csv_trace_is_sorted_by_arrival_and_capped() {
        let mut s = scenario("arrival = \"trace\"\ntrace = \"trace.csv\"");
        let w = generate(&s, &fixtures()).unwrap();
        let got: Vec<(u32, u64, u32, u32)> = w
            .requests
            .iter()
            .map(|r| (r.id, r.arrival.0, r.prompt_len, r.output_len))
            .collect();
        // Equal arrivals (0.5 s) keep their file order.
        assert_eq!(
            got,
            [
                (0, 0, 200, 20),
                (1, 250_000_000, 300, 30),
                (2, 500_000_000, 100, 10),
                (3, 500_000_000, 400, 40)
            ]
        );
        s.workload.requests = Some(2);
        assert_eq!(generate(&s, &fixtures()).unwrap().requests.len(), 2);
        // A length spec replaces the trace's lengths, the arrivals stay.
        s.workload.output_len = Some(LengthSpec::Fixed(7));
        let w = generate(&s, &fixtures()).unwrap();
        assert_eq!(
            w.requests
                .iter()
                .map(|r| (r.prompt_len, r.output_len))
                .collect::<Vec<_>>(),
            [(200, 7), (300, 7)]
        );
    }

    #[test]
    fn jsonl_trace_is_parsed_from_an_absolute_path_too() {
        let path = fixtures().join("trace.jsonl");
        let s = scenario(&format!(
            "arrival = \"trace\"\ntrace = {:?}",
            path.display().to_string()
        ));
        let w = generate(&s, Path::new("/elsewhere")).unwrap();
        let got: Vec<(u64, u32, u32)> = w
            .requests
            .iter()
            .map(|r| (r.arrival.0, r.prompt_len, r.output_len))
            .collect();
        assert_eq!(
            got,
            [(500_000_000, 64, 4), (1_000_000_000, 32, 2), (1_500_000_000, 128, 8)]
        );
    }

    fn trace_error(name: &str, text: &str) -> String {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(name), text).unwrap();
        let s = scenario(&format!("arrival = \"trace\"\ntrace = \"{name}\""));
        let e = generate(&s, dir.path()).unwrap_err().to_string();
        e.replace(&format!("{}/", dir.path().display()), "")
    }

    #[test]
    fn trace_errors_name_file_and_line() {
        let header = "arrival_s,prompt_len,output_len\n";
        assert_eq!(
            trace_error("t.csv", &format!("{header}0,1,1\n0.5,abc,3\n")),
            "t.csv:3: prompt_len must be a positive integer, got `abc`"
        );
        assert_eq!(
            trace_error("t.csv", &format!("{header}0,1\n")),
            "t.csv:2: expected 3 fields as in the header, got 2"
        );
        assert_eq!(
            trace_error("t.csv", &format!("{header}\n-1,1,1\n")),
            "t.csv:3: arrival_s must be a finite number >= 0, got -1"
        );
        assert_eq!(
            trace_error("t.csv", &format!("{header}1,0,1\n")),
            "t.csv:2: prompt_len must be >= 1, got 0"
        );
        assert_eq!(
            trace_error("t.csv", "arrival,prompt_len,output_len\n"),
            "t.csv:1: the header has no `arrival_s` column (expected `arrival_s,prompt_len,output_len`), \
             got `arrival,prompt_len,output_len`"
        );
        assert!(trace_error("t.csv", "").starts_with("t.csv:1: empty trace"));
        let e = trace_error(
            "t.jsonl",
            "{\"arrival_s\": 0, \"prompt_len\": 1, \"output_len\": 1}\n{\"arrival_s\": 1, \"prompt_len\": 2}\n",
        );
        assert!(
            e.starts_with("t.jsonl:2: column ") && e.contains("missing field `output_len`"),
            "{e}"
        );
        assert!(
            trace_error("t.jsonl", "{\"arrival_s\": 0, \"prompt_len\": -1, \"output_len\": 1}\n")
                .starts_with("t.jsonl:1: column ")
        );
    }

    #[test]
    fn missing_trace_file_is_an_io_error() {
        let s = scenario("arrival = \"trace\"\ntrace = \"no-such-trace.csv\"");
        let e = generate(&s, &fixtures()).unwrap_err();
        assert!(matches!(e, ScenarioError::Io { .. }), "{e}");
        assert!(e.to_string().contains("no-such-trace.csv"), "{e}");
    }

    #[test]
    fn generate_rejects_an_invalid_scenario_instead_of_panicking() {
        let mut s = scenario("arrival = \"poisson\"\nrate = 2\nrequests = 3\nprompt_len = 1\noutput_len = 1");
        s.workload.rate = Some(-1.0);
        let e = generate(&s, Path::new(".")).unwrap_err().to_string();
        assert_eq!(e, "workload.rate must be > 0 for arrival = \"poisson\", got -1");
    }
}
