//! Validation charts: each headline metric simulated against measured, one point per run (`validation_parity`), and
//! the distribution of step-time prediction errors by step kind (`step_error_by_kind`). Drawn only for a validated
//! results folder.

use super::{
    Data, DrawResult, Figure, GRID_BOLD, Spec, Swatch, draw_markers, frame, grid, grid_size, panel, policy_marker,
    style_mesh, tick, titled,
};
use crate::report::ReportError;
use crate::report::validation::percent;
use crate::validate::{HEADLINE_METRICS, ValidationSummary};
use plotters::backend::DrawingBackend;
use plotters::coord::Shift;
use plotters::coord::combinators::IntoLogRange;
use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::drawing::DrawingArea;
use plotters::element::{PathElement, Polygon};
use plotters::series::LineSeries;
use plotters::style::{Color, RGBAColor, RGBColor};

const PARITY_TITLE: &str = "Simulated vs measured, per run";
const STEP_TITLE: &str = "Step-time prediction error by step kind";

/// Values spanning more than this ratio get log axes, as the TTFT chart does.
const LOG_AXIS_RATIO: f64 = 50.0;

const BAND: RGBAColor = RGBAColor(44, 160, 44, 0.13);
const INNER_BAND: RGBAColor = RGBAColor(44, 160, 44, 0.16);
const DIAGONAL: RGBColor = RGBColor(90, 90, 90);

/// The unit a summary column is in, for the axis descriptions.
fn unit(metric: &str) -> &'static str {
    if metric.ends_with("_ms") {
        "ms"
    } else if metric.ends_with("_mib") {
        "MiB"
    } else if metric == "output_tok_per_s" {
        "tok/s"
    } else {
        "value"
    }
}

struct ParityPanel {
    title: String,
    unit: &'static str,
    /// (policy, measured, simulated) per run.
    points: Vec<(usize, f64, f64)>,
}

pub(super) struct Parity {
    policies: Vec<(String, RGBColor)>,
    panels: Vec<ParityPanel>,
    band: f64,
    inner: f64,
    size: (u32, u32),
}

/// The policy index (into `data.policies`) of a validated run.
fn policy_of(data: &Data, run: &str) -> Option<usize> {
    data.runs.iter().find(|r| r.name == run).map(|r| r.policy)
}

pub(super) fn parity(data: &Data, v: Option<&ValidationSummary>) -> Option<Spec<Parity>> {
    let v = v?;
    let panels: Vec<ParityPanel> = HEADLINE_METRICS
        .iter()
        .filter_map(|(metric, title)| {
            let points: Vec<(usize, f64, f64)> = v
                .runs
                .iter()
                .filter_map(|r| {
                    let m = r.metrics.iter().find(|m| m.metric == *metric)?;
                    let (meas, sim) = (m.measured?, m.simulated?);
                    (meas.is_finite() && sim.is_finite()).then_some((policy_of(data, &r.run)?, meas, sim))
                })
                .collect();
            if points.is_empty() {
                return None;
            }
            let median = v.metrics.iter().find(|a| a.metric == *metric).and_then(|a| a.median);
            Some(ParityPanel {
                title: format!("{title}, median error {}", percent(median)),
                unit: unit(metric),
                points,
            })
        })
        .collect();
    if panels.is_empty() {
        return None;
    }
    let (rows, cols) = grid(panels.len(), super::DEFAULT_SIZE);
    Some(Spec {
        title: PARITY_TITLE.to_owned(),
        caption: format!(
            "Each run's headline metric as simulated (up) against as measured (across), one panel per metric, one \
             point per run: on the diagonal the simulation is exact; the darker band is ±{:.0}% (the median target), \
             the lighter ±{:.0}% (the p95 target).",
            100.0 * v.target_median,
            100.0 * v.target_p95
        ),
        figure: Parity {
            policies: (0..data.policies.len())
                .map(|p| (data.policies[p].clone(), data.policy_color(p)))
                .collect(),
            panels,
            band: v.target_p95,
            inner: v.target_median,
            size: grid_size(rows, cols),
        },
    })
}

impl Figure for Parity {
    fn size(&self) -> (u32, u32) {
        self.size
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        let legend: Vec<(String, Swatch)> = self
            .policies
            .iter()
            .enumerate()
            .map(|(i, (name, color))| (name.clone(), Swatch::Point(*color, policy_marker(i))))
            .collect();
        let body = frame(root, PARITY_TITLE, &legend)?;
        let (rows, cols) = grid(self.panels.len(), body.dim_in_pixel());
        for (area, p) in body.split_evenly((rows, cols)).iter().zip(&self.panels) {
            let values = || p.points.iter().flat_map(|(_, m, s)| [*m, *s]);
            let max = values().fold(0.0, f64::max);
            let min_positive = values().filter(|v| *v > 0.0).fold(f64::INFINITY, f64::min);
            let all_positive = values().all(|v| v > 0.0);
            let area = titled(area, &p.title)?;
            if all_positive && max / min_positive > LOG_AXIS_RATIO {
                let range = || (min_positive / 1.2..max * 1.2).log_scale();
                self.draw_panel(
                    &area,
                    p,
                    range(),
                    range(),
                    (min_positive / 1.2, max * 1.2),
                    " log scale",
                )?;
            } else {
                // A tight range around the points: the interesting part is their distance from the diagonal.
                let lo = values().fold(f64::INFINITY, f64::min);
                let pad = ((max - lo) * 0.1).max(max.abs() * (self.band + 0.02)).max(1e-9);
                let (lo, hi) = ((lo - pad).max(if lo >= 0.0 { 0.0 } else { f64::MIN }), max + pad);
                self.draw_panel(&area, p, lo..hi, lo..hi, (lo, hi), "")?;
            }
        }
        Ok(())
    }
}

impl Parity {
    fn draw_panel<DB, R>(
        &self,
        area: &DrawingArea<DB, Shift>,
        p: &ParityPanel,
        x: R,
        y: R,
        (lo, hi): (f64, f64),
        scale: &str,
    ) -> DrawResult<DB>
    where
        DB: DrawingBackend,
        R: AsRangedCoord<Value = f64>,
        R::CoordDescType: ValueFormatter<f64>,
    {
        let mut chart = panel(area).build_cartesian_2d(x, y)?;
        style_mesh(
            &mut chart.configure_mesh(),
            &format!("measured ({}{scale})", p.unit),
            &format!("simulated ({}{scale})", p.unit),
        )
        .x_label_formatter(&tick)
        .y_label_formatter(&tick)
        .draw()?;
        for (band, color) in [(self.band, BAND), (self.inner, INNER_BAND)] {
            chart.draw_series(std::iter::once(Polygon::new(
                vec![
                    (lo, lo * (1.0 - band)),
                    (hi, hi * (1.0 - band)),
                    (hi, hi * (1.0 + band)),
                    (lo, lo * (1.0 + band)),
                ],
                color.filled(),
            )))?;
        }
        chart.draw_series(LineSeries::new([(lo, lo), (hi, hi)], DIAGONAL.stroke_width(1)))?;
        for (policy, (_, color)) in self.policies.iter().enumerate() {
            let points: Vec<(f64, f64)> = p
                .points
                .iter()
                .filter(|(q, _, _)| *q == policy)
                .map(|(_, m, s)| (*m, *s))
                .collect();
            if !points.is_empty() {
                draw_markers(&mut chart, &points, *color, policy_marker(policy), 5)?;
            }
        }
        Ok(())
    }
}

/// Step kinds in display order with their colours (prefill and mixed as the timeline shades them).
const KINDS: [(&str, &str, RGBColor); 3] = [
    ("decode", "decode-only", RGBColor(23, 190, 207)),
    ("prefill", "prefill-only", RGBColor(214, 39, 40)),
    ("mixed", "mixed", RGBColor(148, 103, 189)),
];

pub(super) struct StepErrors {
    /// Per kind present: (legend text, colour, signed errors in percent, sorted).
    series: Vec<(String, RGBColor, Vec<f64>)>,
    band: f64,
    inner: f64,
}

pub(super) fn step_errors(data: &Data, v: Option<&ValidationSummary>) -> Result<Option<Spec<StepErrors>>, ReportError> {
    let Some(v) = v else { return Ok(None) };
    let mut per_kind: Vec<Vec<f64>> = vec![Vec::new(); KINDS.len()];
    for run in &data.runs {
        let Some(steps) = &run.tables.step_errors else { continue };
        let path = run.dir.join("step_errors.parquet");
        let kinds = super::strs(steps, "kind", &path)?;
        let errors = super::f64s(steps, "signed_error", &path)?;
        for (kind, error) in kinds.iter().zip(errors) {
            let Some(error) = error.filter(|e| e.is_finite()) else {
                continue;
            };
            if let Some(i) = KINDS.iter().position(|(k, _, _)| k == kind) {
                per_kind[i].push(100.0 * error);
            }
        }
    }
    let series: Vec<(String, RGBColor, Vec<f64>)> = per_kind
        .into_iter()
        .zip(KINDS)
        .filter(|(e, _)| !e.is_empty())
        .map(|(mut errors, (kind, name, color))| {
            errors.sort_by(f64::total_cmp);
            let median = v.steps.iter().find(|s| s.kind == kind).and_then(|s| s.median);
            let label = format!("{name}: {} steps, median |error| {}", errors.len(), percent(median));
            (label, color, errors)
        })
        .collect();
    if series.is_empty() {
        return Ok(None);
    }
    Ok(Some(Spec {
        title: STEP_TITLE.to_owned(),
        caption: format!(
            "Share of steps (CDF) whose predicted time was off by at most a given signed error, (predicted − measured) \
             / measured, per step kind, pooled over every run: each measured step is predicted by the cost model for \
             the very plan it ran. A curve left of zero means the model predicts that kind too fast; the shaded bands \
             are ±{:.0}% and ±{:.0}%.",
            100.0 * v.target_median,
            100.0 * v.target_p95
        ),
        figure: StepErrors {
            series,
            band: 100.0 * v.target_p95,
            inner: 100.0 * v.target_median,
        },
    }))
}

impl Figure for StepErrors {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        let legend: Vec<(String, Swatch)> = self
            .series
            .iter()
            .map(|(name, color, _)| (name.clone(), Swatch::Line(*color)))
            .collect();
        let body = frame(root, STEP_TITLE, &legend)?;
        let area = body.margin(0, 10, 20, 20);
        let extent = self
            .series
            .iter()
            .flat_map(|(_, _, e)| [e[0].abs(), e[e.len() - 1].abs()])
            .fold(self.band * 1.25, f64::max)
            * 1.05;
        let mut chart = panel(&area).build_cartesian_2d(-extent..extent, 0.0..1.0)?;
        style_mesh(
            &mut chart.configure_mesh(),
            "step-time error, (predicted − measured) / measured (%)",
            "share of steps (fraction)",
        )
        .x_label_formatter(&tick)
        .y_label_formatter(&tick)
        .draw()?;
        for (band, color) in [(self.band, BAND), (self.inner, INNER_BAND)] {
            chart.draw_series(std::iter::once(plotters::element::Rectangle::new(
                [(-band, 0.0), (band, 1.0)],
                color.filled(),
            )))?;
        }
        chart.draw_series(std::iter::once(PathElement::new(
            vec![(0.0, 0.0), (0.0, 1.0)],
            GRID_BOLD.stroke_width(2),
        )))?;
        for (_, color, errors) in &self.series {
            chart.draw_series(LineSeries::new(super::ttft::cdf_steps(errors), color.stroke_width(3)))?;
        }
        Ok(())
    }
}
