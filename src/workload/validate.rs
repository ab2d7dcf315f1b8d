//! Value checks the schema's types cannot express. Every message names the dotted key, what was expected and what
//! was got. Model existence, context length and KV capacity need the model and are checked where it is loaded.

use super::{ArrivalKind, CostKind, LengthDist, LengthSpec, Scenario};

/// A failed check: the dotted key (to locate it in the file) and the message.
#[derive(Debug)]
pub(super) struct Invalid {
    pub key: String,
    pub message: String,
}

type Check = Result<(), Invalid>;

fn fail(key: &str, message: String) -> Check {
    Err(Invalid {
        key: key.to_string(),
        message,
    })
}

/// `x > 0` and finite (NaN fails every comparison, so it is never accepted).
fn positive(key: &str, value: f64, context: &str) -> Check {
    if value.is_finite() && value > 0.0 {
        Ok(())
    } else {
        fail(key, format!("{key} must be > 0{context}, got {value}"))
    }
}

fn non_negative(key: &str, value: f64) -> Check {
    if value.is_finite() && value >= 0.0 {
        Ok(())
    } else {
        fail(key, format!("{key} must be >= 0, got {value}"))
    }
}

fn fraction(key: &str, value: f64) -> Check {
    if value > 0.0 && value <= 1.0 {
        Ok(())
    } else {
        fail(key, format!("{key} must be in (0, 1], got {value}"))
    }
}

fn positive_opt(key: &str, value: Option<f64>) -> Check {
    value.map_or(Ok(()), |v| positive(key, v, ""))
}

fn non_negative_opt(key: &str, value: Option<f64>) -> Check {
    value.map_or(Ok(()), |v| non_negative(key, v))
}

/// Rejects a key given in a section whose `kind` does not use it.
fn unused(key: &str, given: Option<String>, kind: &str, valid: &[&str]) -> Check {
    match given {
        Some(got) => fail(
            key,
            format!(
                "{key} does not apply to {kind} (its keys: {}), got {got}",
                valid.join(", ")
            ),
        ),
        None => Ok(()),
    }
}

/// Checks one resolved run; the error message is complete (key, expectation, value).
pub fn validate(scenario: &Scenario) -> Result<(), String> {
    check(scenario).map_err(|invalid| invalid.message)
}

pub(super) fn check(s: &Scenario) -> Check {
    if s.name.trim().is_empty() {
        fail("name", "name must not be empty".to_string())?;
    }
    check_model(s)?;
    check_hardware(s)?;
    check_cost(s)?;
    check_memory(s)?;
    check_scheduler(s)?;
    check_workload(s)?;
    let slo = &s.slo;
    positive_opt("slo.ttft_ms", slo.ttft_ms)?;
    positive_opt("slo.tpot_ms", slo.tpot_ms)?;
    positive_opt("slo.e2e_ms", slo.e2e_ms)
}

fn check_model(s: &Scenario) -> Check {
    match (&s.model.name, &s.model.config) {
        (Some(name), None) if name.trim().is_empty() => fail("model.name", "model.name must not be empty".to_string()),
        (Some(_), None) | (None, Some(_)) => Ok(()),
        (name, _) => {
            let got = if name.is_some() { "both" } else { "neither" };
            fail(
                "model",
                format!(
                    "model needs exactly one of model.name (a built-in model) or model.config (a config.json path), \
                     got {got}"
                ),
            )
        }
    }
}

fn check_hardware(s: &Scenario) -> Check {
    let h = &s.hardware;
    if h.gpu.trim().is_empty() {
        fail("hardware.gpu", "hardware.gpu must not be empty".to_string())?;
    }
    positive_opt("hardware.memory_gib", h.memory_gib)?;
    positive_opt("hardware.mem_bandwidth_gbps", h.mem_bandwidth_gbps)?;
    positive_opt("hardware.fp16_tflops", h.fp16_tflops)?;
    non_negative_opt("hardware.launch_overhead_us", h.launch_overhead_us)
}

fn check_cost(s: &Scenario) -> Check {
    const LINEAR: [&str; 4] = ["base_ms", "per_token_us", "per_seq_ms", "per_kv_token_ns"];
    const ANALYTIC: [&str; 3] = ["bandwidth_efficiency", "compute_efficiency", "step_overhead_us"];
    const CALIBRATED: [&str; 1] = ["profile"];
    let c = &s.cost;
    let (kind, valid): (&str, &[&str]) = match c.kind {
        CostKind::Linear => ("cost.kind = \"linear\"", &LINEAR),
        CostKind::Analytic => ("cost.kind = \"analytic\"", &ANALYTIC),
        CostKind::Calibrated => ("cost.kind = \"calibrated\"", &CALIBRATED),
    };
    let numbers = [
        ("base_ms", c.base_ms),
        ("per_token_us", c.per_token_us),
        ("per_seq_ms", c.per_seq_ms),
        ("per_kv_token_ns", c.per_kv_token_ns),
        ("bandwidth_efficiency", c.bandwidth_efficiency),
        ("compute_efficiency", c.compute_efficiency),
        ("step_overhead_us", c.step_overhead_us),
    ];
    for (name, value) in numbers {
        if !valid.contains(&name) {
            unused(&format!("cost.{name}"), value.map(|v| v.to_string()), kind, valid)?;
        }
    }
    if !valid.contains(&"profile") {
        unused(
            "cost.profile",
            c.profile.as_ref().map(|p| format!("{:?}", p.display().to_string())),
            kind,
            valid,
        )?;
    }
    positive_opt("cost.time_scale", c.time_scale)?;
    match c.kind {
        CostKind::Linear => {
            let Some(base) = c.base_ms else {
                return fail("cost.base_ms", format!("cost.base_ms is required for {kind}"));
            };
            non_negative("cost.base_ms", base)?;
            non_negative_opt("cost.per_token_us", c.per_token_us)?;
            non_negative_opt("cost.per_seq_ms", c.per_seq_ms)?;
            non_negative_opt("cost.per_kv_token_ns", c.per_kv_token_ns)
        }
        CostKind::Analytic => {
            if let Some(v) = c.bandwidth_efficiency {
                fraction("cost.bandwidth_efficiency", v)?;
            }
            if let Some(v) = c.compute_efficiency {
                fraction("cost.compute_efficiency", v)?;
            }
            non_negative_opt("cost.step_overhead_us", c.step_overhead_us)
        }
        CostKind::Calibrated => match &c.profile {
            Some(p) if !p.as_os_str().is_empty() => Ok(()),
            _ => fail(
                "cost.profile",
                format!("cost.profile (a profile written by `batchlab calibrate`) is required for {kind}"),
            ),
        },
    }
}

fn check_memory(s: &Scenario) -> Check {
    let m = &s.memory;
    fraction("memory.gpu_memory_utilization", m.gpu_memory_utilization)?;
    if m.block_size == 0 {
        fail("memory.block_size", "memory.block_size must be > 0, got 0".to_string())?;
    }
    if m.kv_capacity_tokens == Some(0) {
        fail(
            "memory.kv_capacity_tokens",
            "memory.kv_capacity_tokens must be > 0, got 0".to_string(),
        )?;
    }
    non_negative_opt("memory.workspace_mib", m.workspace_mib)
}

fn check_scheduler(s: &Scenario) -> Check {
    let c = &s.scheduler;
    if c.max_batch_size == 0 {
        fail(
            "scheduler.max_batch_size",
            "scheduler.max_batch_size must be > 0, got 0".to_string(),
        )?;
    }
    if c.max_batch_tokens == 0 {
        fail(
            "scheduler.max_batch_tokens",
            "scheduler.max_batch_tokens must be > 0, got 0".to_string(),
        )?;
    }
    non_negative("scheduler.max_wait_ms", c.max_wait_ms)
}

fn arrival_name(kind: ArrivalKind) -> &'static str {
    match kind {
        ArrivalKind::Burst => "burst",
        ArrivalKind::Poisson => "poisson",
        ArrivalKind::Gamma => "gamma",
        ArrivalKind::Constant => "constant",
        ArrivalKind::Closed => "closed",
        ArrivalKind::Trace => "trace",
    }
}

fn check_workload(s: &Scenario) -> Check {
    let w = &s.workload;
    let arrival = format!("arrival = \"{}\"", arrival_name(w.arrival));
    let ctx = format!(" for {arrival}");
    let valid: &[&str] = match w.arrival {
        ArrivalKind::Burst => &["requests", "prompt_len", "output_len"],
        ArrivalKind::Poisson | ArrivalKind::Constant => &["requests", "rate", "prompt_len", "output_len"],
        ArrivalKind::Gamma => &["requests", "rate", "cv", "prompt_len", "output_len"],
        ArrivalKind::Closed => &["requests", "clients", "think_ms", "prompt_len", "output_len"],
        ArrivalKind::Trace => &["trace", "requests", "prompt_len", "output_len"],
    };
    let workload_key = |name: &str| format!("workload.{name}");
    let given = [
        ("rate", w.rate.map(|v| v.to_string())),
        ("cv", w.cv.map(|v| v.to_string())),
        ("clients", w.clients.map(|v| v.to_string())),
        // think_ms has a default, so only a non-zero value can be told apart from "not given".
        ("think_ms", (w.think_ms != 0.0).then(|| w.think_ms.to_string())),
        (
            "trace",
            w.trace.as_ref().map(|p| format!("{:?}", p.display().to_string())),
        ),
    ];
    for (name, got) in given {
        if !valid.contains(&name) {
            unused(&workload_key(name), got, &arrival, valid)?;
        }
    }

    match w.requests {
        None if w.arrival != ArrivalKind::Trace => {
            return fail("workload.requests", format!("workload.requests is required{ctx}"));
        }
        Some(0) => return fail("workload.requests", "workload.requests must be > 0, got 0".to_string()),
        Some(n) if n > u64::from(u32::MAX) => {
            let message = format!(
                "workload.requests must be <= {} (request ids are 32-bit), got {n}",
                u32::MAX
            );
            return fail("workload.requests", message);
        }
        _ => {}
    }
    match w.arrival {
        ArrivalKind::Poisson | ArrivalKind::Gamma | ArrivalKind::Constant => match w.rate {
            Some(rate) => positive("workload.rate", rate, &ctx)?,
            None => return fail("workload.rate", format!("workload.rate (requests/s) is required{ctx}")),
        },
        _ => {}
    }
    if w.arrival == ArrivalKind::Gamma {
        match w.cv {
            Some(cv) => positive("workload.cv", cv, &ctx)?,
            None => {
                return fail(
                    "workload.cv",
                    format!("workload.cv (coefficient of variation) is required{ctx}"),
                );
            }
        }
    }
    if w.arrival == ArrivalKind::Closed {
        match w.clients {
            Some(0) => return fail("workload.clients", format!("workload.clients must be > 0{ctx}, got 0")),
            Some(_) => {}
            None => return fail("workload.clients", format!("workload.clients is required{ctx}")),
        }
        non_negative("workload.think_ms", w.think_ms)?;
    }
    if w.arrival == ArrivalKind::Trace && w.trace.as_ref().is_none_or(|p| p.as_os_str().is_empty()) {
        return fail(
            "workload.trace",
            format!("workload.trace (a CSV or JSONL file) is required{ctx}"),
        );
    }
    for (name, spec) in [("prompt_len", &w.prompt_len), ("output_len", &w.output_len)] {
        let key = workload_key(name);
        match spec {
            Some(spec) => check_length(&key, spec)?,
            // A trace carries its own lengths; a given length spec replaces them.
            None if w.arrival == ArrivalKind::Trace => {}
            None => return fail(&key, format!("{key} is required{ctx}")),
        }
    }
    Ok(())
}

fn at_least_one(key: &str, value: u32) -> Check {
    if value >= 1 {
        Ok(())
    } else {
        fail(key, format!("{key} must be >= 1, got {value}"))
    }
}

/// Optional clamp bounds: min ≥ 1 and min ≤ max.
fn check_bounds(key: &str, min: Option<u32>, max: Option<u32>) -> Check {
    if let Some(min) = min {
        at_least_one(&format!("{key}.min"), min)?;
    }
    if let Some(max) = max {
        at_least_one(&format!("{key}.max"), max)?;
    }
    let min = min.unwrap_or(1);
    match max {
        Some(max) if min > max => fail(key, format!("{key}.min must be <= {key}.max ({max}), got {min}")),
        _ => Ok(()),
    }
}

fn check_length(key: &str, spec: &LengthSpec) -> Check {
    match spec {
        LengthSpec::Fixed(n) => at_least_one(key, *n),
        LengthSpec::Cycle(list) if list.is_empty() => fail(key, format!("{key} must be a non-empty list, got []")),
        LengthSpec::Cycle(list) => {
            for (i, &n) in list.iter().enumerate() {
                at_least_one(&format!("{key}[{i}]"), n)?;
            }
            Ok(())
        }
        LengthSpec::Dist(LengthDist::Uniform { min, max }) => check_bounds(key, Some(*min), Some(*max)),
        LengthSpec::Dist(LengthDist::Normal { mean, std, min, max }) => {
            positive(&format!("{key}.mean"), *mean, "")?;
            non_negative(&format!("{key}.std"), *std)?;
            check_bounds(key, *min, *max)
        }
        LengthSpec::Dist(LengthDist::Lognormal { mean, sigma, min, max }) => {
            positive(&format!("{key}.mean"), *mean, "")?;
            non_negative(&format!("{key}.sigma"), *sigma)?;
            check_bounds(key, *min, *max)
        }
        LengthSpec::Dist(LengthDist::Zipf { max, exponent, scale }) => {
            at_least_one(&format!("{key}.max"), *max)?;
            positive(&format!("{key}.exponent"), *exponent, "")?;
            let scale = scale.unwrap_or(1);
            at_least_one(&format!("{key}.scale"), scale)?;
            if max.checked_mul(scale).is_none() {
                let message = format!("{key}.max × {key}.scale must fit in 32 bits, got {max} × {scale}");
                return fail(key, message);
            }
            Ok(())
        }
    }
}
