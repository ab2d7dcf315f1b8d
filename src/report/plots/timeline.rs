//! `timeline`: one run per policy step by step: running batch, queue depth and KV utilisation over time, with the
//! steps that computed prompts shaded.

use super::{
    AXIS_DESC_SIZE, Data, DrawResult, Figure, Spec, Swatch, TICK_SIZE, TimeUnit, font, frame, headroom, panel,
    style_mesh, tick, titled,
};
use crate::report::ReportError;
use crate::units::MIB;
use plotters::backend::DrawingBackend;
use plotters::coord::Shift;
use plotters::drawing::DrawingArea;
use plotters::element::Rectangle;
use plotters::series::LineSeries;
use plotters::style::{Color, RGBAColor, RGBColor};

const TITLE: &str = "Timeline: batch, queue and KV cache over time";

/// At most this many runs (one per policy) are drawn.
const MAX_RUNS: usize = 3;
/// Runs with more steps than this are drawn from time buckets (the maximum of each quantity in a bucket, and a
/// bucket shaded when any of its steps computed a prompt), so a long run keeps its peaks without a huge SVG.
const MAX_STEPS: usize = 3000;
const BUCKETS: usize = 1500;

const RUNNING: RGBColor = RGBColor(31, 119, 180);
const QUEUED: RGBColor = RGBColor(255, 127, 14);
const KV: RGBColor = RGBColor(44, 160, 44);
const PREFILL: RGBAColor = RGBAColor(214, 39, 40, 0.16);
const MIXED: RGBAColor = RGBAColor(148, 103, 189, 0.22);

/// One drawn interval: [start, end) in ms, the state after it, and what kind of work it held.
#[derive(Clone, Copy, Debug, Default)]
struct Interval {
    start: f64,
    end: f64,
    running: f64,
    queued: f64,
    /// Percent of the KV capacity, when known.
    kv: Option<f64>,
    prefill: bool,
    mixed: bool,
}

struct Lane {
    title: String,
    intervals: Vec<Interval>,
}

pub(super) struct Timeline {
    lanes: Vec<Lane>,
}

pub(super) fn build(data: &Data) -> Result<Option<Spec<Timeline>>, ReportError> {
    let describe = data.varying_labels(&["policy"]);
    let mut lanes = Vec::new();
    let mut bucketed = false;
    for run in data
        .representatives(|r| r.tables.steps.as_ref().is_some_and(|s| s.height() > 0))
        .into_iter()
        .take(MAX_RUNS)
    {
        let Some(steps) = &run.tables.steps else { continue };
        let path = run.dir.join("steps.parquet");
        let start = super::f64s(steps, "start_ms", &path)?;
        let duration = super::f64s(steps, "duration_ms", &path)?;
        let kind = super::strs(steps, "kind", &path)?;
        let running = super::f64s(steps, "running", &path)?;
        let queued = super::f64s(steps, "queue_depth", &path)?;
        let slots = super::f64s(steps, "kv_slots", &path)?;
        // Capacity in slots = capacity in bytes / bytes per slot.
        let capacity = match (run.kv_capacity_mib, run.kv_bytes()) {
            (Some(mib), Some(per_slot)) if mib > 0.0 => Some(mib * MIB / per_slot),
            _ => None,
        };
        let mut intervals: Vec<Interval> = (0..steps.height())
            .map(|i| {
                let s = start[i].unwrap_or(0.0);
                Interval {
                    start: s,
                    end: s + duration[i].unwrap_or(0.0),
                    running: running[i].unwrap_or(0.0),
                    queued: queued[i].unwrap_or(0.0),
                    kv: capacity.zip(slots[i]).map(|(c, s)| 100.0 * s / c),
                    prefill: kind[i] == "prefill",
                    mixed: kind[i] == "mixed",
                }
            })
            .collect();
        if intervals.len() > MAX_STEPS {
            bucketed = true;
            intervals = bucket(&intervals);
        }
        let mut title = format!("{} · run {}", data.policies[run.policy], run.name);
        let config = data.describe(run, &describe);
        if !config.is_empty() {
            title += &format!(" ({config})");
        }
        lanes.push(Lane { title, intervals });
    }
    if lanes.is_empty() {
        return Ok(None);
    }
    let mut caption = "Requests running (holding a batch slot) and queued, and the KV cache in use as a share of its \
                       capacity, after each engine step, for the run of each policy with the most output tokens; \
                       shading marks steps that computed prompts (prefill-only, or mixed with decodes)."
        .to_owned();
    if bucketed {
        caption += " Long runs are drawn from time buckets: the largest value in each, shaded if any step in it \
                    computed a prompt.";
    }
    Ok(Some(Spec {
        title: TITLE.to_owned(),
        caption,
        figure: Timeline { lanes },
    }))
}

/// Merges steps into [`BUCKETS`] equal time buckets (empty buckets dropped).
fn bucket(steps: &[Interval]) -> Vec<Interval> {
    let t0 = steps.first().map_or(0.0, |s| s.start);
    let t1 = steps.iter().map(|s| s.end).fold(t0, f64::max);
    let width = ((t1 - t0) / BUCKETS as f64).max(f64::MIN_POSITIVE);
    let mut out: Vec<Option<Interval>> = vec![None; BUCKETS];
    for s in steps {
        let k = (((s.start - t0) / width) as usize).min(BUCKETS - 1);
        let b = out[k].get_or_insert(Interval {
            start: t0 + k as f64 * width,
            end: t0 + (k + 1) as f64 * width,
            kv: s.kv,
            ..Default::default()
        });
        b.running = b.running.max(s.running);
        b.queued = b.queued.max(s.queued);
        b.kv = match (b.kv, s.kv) {
            (Some(a), Some(c)) => Some(a.max(c)),
            (a, c) => a.or(c),
        };
        b.prefill |= s.prefill;
        b.mixed |= s.mixed;
    }
    out.into_iter().flatten().collect()
}

/// A quantity as a staircase: the value after each interval holds from its end to the next one's end.
fn staircase(intervals: &[Interval], unit: TimeUnit, value: impl Fn(&Interval) -> Option<f64>) -> Vec<(f64, f64)> {
    let mut out = Vec::with_capacity(2 * intervals.len());
    let mut previous: Option<f64> = None;
    for s in intervals {
        let Some(v) = value(s) else { continue };
        let t = unit.of(s.end);
        if let Some(p) = previous {
            out.push((t, p));
        }
        out.push((t, v));
        previous = Some(v);
    }
    out
}

impl Figure for Timeline {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        let has_kv = self.lanes.iter().any(|l| l.intervals.iter().any(|s| s.kv.is_some()));
        let mut legend = vec![
            ("running (requests)".to_owned(), Swatch::Line(RUNNING)),
            ("queued (requests)".to_owned(), Swatch::Line(QUEUED)),
        ];
        if has_kv {
            legend.push(("KV in use (% of capacity)".to_owned(), Swatch::Line(KV)));
        }
        legend.push(("prefill step".to_owned(), Swatch::Fill(PREFILL)));
        legend.push(("mixed step".to_owned(), Swatch::Fill(MIXED)));
        let body = frame(root, TITLE, &legend)?;
        let t_end = self
            .lanes
            .iter()
            .flat_map(|l| l.intervals.iter().map(|s| s.end))
            .fold(0.0, f64::max);
        let unit = TimeUnit::for_span_ms(t_end);
        // One time axis for every lane, so policies compare by how long the same work took.
        let x_range = 0.0..unit.of(headroom(t_end));
        for (area, lane) in body.split_evenly((self.lanes.len(), 1)).iter().zip(&self.lanes) {
            let y_max = headroom(
                lane.intervals
                    .iter()
                    .map(|s| s.running.max(s.queued))
                    .fold(0.0, f64::max),
            );
            // The KV axis ends a little above the run's peak use (at most 100 %): a small model on a large GPU
            // uses a fraction of a percent, which a 0–100 axis would flatten onto the floor.
            let kv_max = headroom(lane.intervals.iter().filter_map(|s| s.kv).fold(0.0, f64::max)).min(100.0);
            let area = titled(area, &lane.title)?;
            let mut chart = panel(&area)
                .right_y_label_area_size(if has_kv { 72 } else { 0 })
                .build_cartesian_2d(x_range.clone(), 0.0..y_max)?
                .set_secondary_coord(x_range.clone(), 0.0..kv_max);
            // Shading first, so the lines stay on top.
            chart.draw_series(lane.intervals.iter().filter(|s| s.prefill || s.mixed).map(|s| {
                let color = if s.mixed { MIXED } else { PREFILL };
                Rectangle::new([(unit.of(s.start), 0.0), (unit.of(s.end), y_max)], color.filled())
            }))?;
            style_mesh(
                &mut chart.configure_mesh(),
                &format!("time ({})", unit.name),
                "requests",
            )
            .x_label_formatter(&tick)
            .y_label_formatter(&tick)
            .y_labels(5)
            .draw()?;
            if has_kv {
                chart
                    .configure_secondary_axes()
                    .y_desc("KV in use (%)")
                    .axis_desc_style(font(AXIS_DESC_SIZE))
                    .label_style(font(TICK_SIZE))
                    .y_label_formatter(&tick)
                    .y_labels(5)
                    .draw()?;
                chart.draw_secondary_series(LineSeries::new(
                    staircase(&lane.intervals, unit, |s| s.kv),
                    KV.stroke_width(2),
                ))?;
            }
            chart.draw_series(LineSeries::new(
                staircase(&lane.intervals, unit, |s| Some(s.queued)),
                QUEUED.stroke_width(2),
            ))?;
            chart.draw_series(LineSeries::new(
                staircase(&lane.intervals, unit, |s| Some(s.running)),
                RUNNING.stroke_width(2),
            ))?;
        }
        Ok(())
    }
}
