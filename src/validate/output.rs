//! The files of a validation (layout in `report`'s module doc): the measured runs where `simulate` puts its runs,
//! so every chart and export of a report describes the real execution; the simulated runs under `simulated/`; the
//! comparisons beside them.

use super::compare::{MetricComparison, StepComparison};
use super::driver::Validation;
use super::fingerprint::DeviceFingerprint;
use crate::metrics::RunReport;
use crate::report::{self, DEVICE_JSON, ReportError, VALIDATION_JSON, write_atomically, write_csv, write_parquet};
use crate::units::Nanos;
use polars::prelude::{Column, DataFrame, NamedFrom, PlSmallStr, PolarsResult, Series};
use std::io::Write;
use std::path::Path;

fn col<T, P: ?Sized>(name: &str, values: T) -> Column
where
    Series: NamedFrom<T, P>,
{
    Column::new(PlSmallStr::from_str(name), values)
}

/// One row per metric: `metric, measured, simulated, rel_error`, after a `run` column when `run` is given.
fn comparison_frame(rows: &[(&str, &MetricComparison)], with_run: bool) -> PolarsResult<DataFrame> {
    let mut columns = Vec::new();
    if with_run {
        columns.push(col("run", rows.iter().map(|(r, _)| *r).collect::<Vec<&str>>()));
    }
    columns.extend([
        col(
            "metric",
            rows.iter().map(|(_, m)| m.metric.as_str()).collect::<Vec<&str>>(),
        ),
        col(
            "measured",
            rows.iter().map(|(_, m)| m.measured).collect::<Vec<Option<f64>>>(),
        ),
        col(
            "simulated",
            rows.iter().map(|(_, m)| m.simulated).collect::<Vec<Option<f64>>>(),
        ),
        col(
            "rel_error",
            rows.iter().map(|(_, m)| m.rel_error).collect::<Vec<Option<f64>>>(),
        ),
    ]);
    DataFrame::new(rows.len(), columns)
}

/// The per-step table: shape, measured and predicted milliseconds, signed and absolute relative error, and the
/// host's issue and the GPU's time of each, measured and predicted (empty where either side gives none), the SM
/// clock it ran at, and whether the host was issuing slower than calibrated around it.
pub(crate) fn step_frame(steps: &[StepComparison]) -> PolarsResult<DataFrame> {
    let u = |get: fn(&StepComparison) -> u32| steps.iter().map(get).collect::<Vec<u32>>();
    let u64s = |get: fn(&StepComparison) -> u64| steps.iter().map(get).collect::<Vec<u64>>();
    let f = |get: fn(&StepComparison) -> f64| steps.iter().map(get).collect::<Vec<f64>>();
    let ms = |get: fn(&StepComparison) -> Option<Nanos>| {
        steps
            .iter()
            .map(|s| get(s).map(Nanos::as_ms))
            .collect::<Vec<Option<f64>>>()
    };
    DataFrame::new(
        steps.len(),
        vec![
            col("index", u64s(|s| s.index)),
            col("kind", steps.iter().map(|s| s.kind.as_str()).collect::<Vec<&str>>()),
            col("prefill_seqs", u(|s| s.prefill_seqs)),
            col("decode_seqs", u(|s| s.decode_seqs)),
            col("prefill_tokens", u(|s| s.prefill_tokens)),
            col("decode_tokens", u(|s| s.decode_tokens)),
            col("padding_tokens", u(|s| s.padding_tokens)),
            col("kv_read_tokens", u64s(|s| s.kv_read_tokens)),
            col("max_context", u64s(|s| s.max_context)),
            col("measured_ms", f(|s| s.measured.as_ms())),
            col("predicted_ms", f(|s| s.predicted.as_ms())),
            col("signed_error", f(StepComparison::signed_error)),
            col("rel_error", f(StepComparison::rel_error)),
            col("measured_issue_ms", ms(|s| s.measured_issue)),
            col("predicted_issue_ms", ms(|s| s.predicted_issue)),
            col("measured_gpu_ms", ms(|s| s.measured_gpu)),
            col("predicted_gpu_ms", ms(|s| s.predicted_gpu)),
            col(
                "sm_clock_mhz",
                steps.iter().map(|s| s.sm_mhz).collect::<Vec<Option<u32>>>(),
            ),
            col(
                "clock_slowed",
                steps.iter().map(|s| s.slowed).collect::<Vec<Option<bool>>>(),
            ),
            col(
                "host_slowed",
                steps.iter().map(|s| s.host_slowed).collect::<Vec<Option<bool>>>(),
            ),
        ],
    )
}

fn polars_at(path: &Path) -> impl FnOnce(polars::prelude::PolarsError) -> ReportError + '_ {
    move |source| ReportError::Polars {
        path: path.to_owned(),
        source,
    }
}

/// Writes everything a validation produced under `out`; `title` names it in `validation.md` (the scenario).
pub fn write_validation(out: &Path, v: &Validation, title: &str) -> Result<(), ReportError> {
    let measured: Vec<RunReport> = v.runs.iter().map(|r| r.measured.clone()).collect();
    let simulated: Vec<RunReport> = v.runs.iter().map(|r| r.simulated.clone()).collect();
    // Removes a validation left by earlier results in the folder before anything else is written.
    report::write_results(out, &measured)?;
    report::write_results(&out.join("simulated"), &simulated)?;

    for run in &v.runs {
        let dir = out.join("runs").join(&run.name);
        let rows: Vec<(&str, &MetricComparison)> = run.metrics.iter().map(|m| (run.name.as_str(), m)).collect();
        let path = dir.join("comparison.csv");
        write_csv(&path, &mut comparison_frame(&rows, false).map_err(polars_at(&path))?)?;
        let parquet = dir.join("step_errors.parquet");
        write_parquet(&parquet, || step_frame(&run.steps))?;
        let csv = dir.join("step_errors.csv");
        write_csv(&csv, &mut step_frame(&run.steps).map_err(polars_at(&csv))?)?;
    }

    let rows: Vec<(&str, &MetricComparison)> = v
        .runs
        .iter()
        .flat_map(|r| r.metrics.iter().map(move |m| (r.name.as_str(), m)))
        .collect();
    write_parquet(&out.join("validation.parquet"), || comparison_frame(&rows, true))?;
    let csv = out.join("validation.csv");
    write_csv(&csv, &mut comparison_frame(&rows, true).map_err(polars_at(&csv))?)?;

    let md = report::validation_markdown(&v.summary, title);
    write_atomically(&out.join("validation.md"), |file| Ok(file.write_all(md.as_bytes())?))?;
    // Last: its presence marks the folder as validated.
    let json_path = out.join(VALIDATION_JSON);
    let mut json = serde_json::to_vec_pretty(&v.summary).map_err(|source| ReportError::Json {
        path: json_path.clone(),
        source,
    })?;
    json.push(b'\n');
    write_atomically(&json_path, |file| Ok(file.write_all(&json)?))
}

/// Writes `<out>/device.json`: the card the measured runs ran on, so what reads the folder later (a comparison with
/// another tool's numbers, say) can tell which card it describes.
pub fn write_device(out: &Path, device: &DeviceFingerprint) -> Result<(), ReportError> {
    let path = out.join(DEVICE_JSON);
    let mut json = serde_json::to_vec_pretty(device).map_err(|source| ReportError::Json {
        path: path.clone(),
        source,
    })?;
    json.push(b'\n');
    write_atomically(&path, |file| Ok(file.write_all(&json)?))
}
