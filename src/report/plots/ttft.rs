//! Time to first token: its distribution per policy (`ttft_distribution`) and how it grows with the queue a request
//! finds when it arrives (`ttft_vs_queue`).

use super::{
    Data, DrawResult, Figure, LOAD_LABELS, MAX_PANELS, Spec, Swatch, draw_markers, frame, grid, grid_size, headroom,
    panel, policy_marker, short_label, style_mesh, tick, titled,
};
use crate::report::ReportError;
use indexmap::IndexMap;
use plotters::backend::DrawingBackend;
use plotters::coord::Shift;
use plotters::coord::combinators::IntoLogRange;
use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::drawing::DrawingArea;
use plotters::series::LineSeries;
use plotters::style::{Color, RGBColor};

const CDF_TITLE: &str = "TTFT distribution per policy";
const QUEUE_TITLE: &str = "Mean TTFT vs requests queued at arrival";

/// Most points drawn per CDF: beyond this the curve is sampled at evenly spaced quantiles (a million-request run
/// would otherwise write a million SVG points for a curve a few hundred pixels wide).
const MAX_CDF_POINTS: usize = 2000;

struct CdfPanel {
    title: String,
    /// Per policy: TTFTs in ms, sorted.
    series: Vec<(usize, Vec<f64>)>,
}

pub(super) struct TtftDistribution {
    policies: Vec<(String, RGBColor)>,
    panels: Vec<CdfPanel>,
    size: (u32, u32),
}

pub(super) fn distribution(data: &Data) -> Result<Option<Spec<TtftDistribution>>, ReportError> {
    let loads: Vec<usize> = data
        .varying_labels(&["policy"])
        .into_iter()
        .filter(|&i| LOAD_LABELS.contains(&short_label(&data.labels[i])))
        .collect();
    let mut panels: IndexMap<Vec<&str>, (String, Vec<Vec<f64>>)> = IndexMap::new();
    for run in &data.runs {
        let key: Vec<&str> = loads.iter().map(|&i| run.labels[i].as_str()).collect();
        let title = loads
            .iter()
            .map(|&i| load_title(short_label(&data.labels[i]), &run.labels[i]))
            .collect::<Vec<_>>()
            .join(", ");
        let (_, per_policy) = panels
            .entry(key)
            .or_insert_with(|| (title, vec![Vec::new(); data.policies.len()]));
        per_policy[run.policy].extend(run.requests("ttft_ms")?.into_iter().flatten().filter(|t| t.is_finite()));
    }
    let total_panels = panels.len();
    let panels: Vec<CdfPanel> = panels
        .into_values()
        .take(MAX_PANELS)
        .map(|(title, per_policy)| CdfPanel {
            title,
            series: per_policy
                .into_iter()
                .enumerate()
                .filter(|(_, v)| !v.is_empty())
                .map(|(p, mut v)| {
                    v.sort_by(f64::total_cmp);
                    (p, v)
                })
                .collect(),
        })
        .filter(|p| !p.series.is_empty())
        .collect();
    if panels.is_empty() {
        return Ok(None);
    }
    let mut caption = "Share of requests whose first token came within a given time (CDF of TTFT), one curve per \
                       policy pooling every run of that policy"
        .to_owned();
    if !loads.is_empty() {
        caption += ", one panel per load";
    }
    caption += ": further left is better, and a long flat step shows requests left waiting behind a batch.";
    if total_panels > panels.len() {
        caption += &format!(" Only the first {} of {total_panels} loads are drawn.", panels.len());
    }
    let (rows, cols) = grid(panels.len(), super::DEFAULT_SIZE);
    Ok(Some(Spec {
        title: CDF_TITLE.to_owned(),
        caption,
        figure: TtftDistribution {
            policies: policy_styles(data),
            size: grid_size(rows, cols),
            panels,
        },
    }))
}

fn load_title(name: &str, value: &str) -> String {
    match name {
        "rate" => format!("rate {value} req/s"),
        "clients" => format!("{value} clients"),
        _ => format!("{name}={value}"),
    }
}

fn policy_styles(data: &Data) -> Vec<(String, RGBColor)> {
    (0..data.policies.len())
        .map(|p| (data.policies[p].clone(), data.policy_color(p)))
        .collect()
}

fn legend(policies: &[(String, RGBColor)], with_markers: bool) -> Vec<(String, Swatch)> {
    if policies.len() < 2 {
        return Vec::new();
    }
    policies
        .iter()
        .enumerate()
        .map(|(i, (name, color))| {
            let swatch = if with_markers {
                Swatch::Point(*color, policy_marker(i))
            } else {
                Swatch::Line(*color)
            };
            (name.clone(), swatch)
        })
        .collect()
}

/// The empirical CDF as a staircase: each value raises the share by 1/n. Long inputs are sampled at quantiles.
pub(super) fn cdf_steps(sorted: &[f64]) -> Vec<(f64, f64)> {
    let n = sorted.len();
    let mut out = Vec::with_capacity(2 * n.min(MAX_CDF_POINTS) + 1);
    out.push((sorted[0], 0.0));
    if n <= MAX_CDF_POINTS {
        for (i, v) in sorted.iter().enumerate() {
            out.push((*v, i as f64 / n as f64));
            out.push((*v, (i + 1) as f64 / n as f64));
        }
    } else {
        for k in 1..=MAX_CDF_POINTS {
            let share = k as f64 / MAX_CDF_POINTS as f64;
            let i = ((share * n as f64).ceil() as usize).clamp(1, n) - 1;
            out.push((sorted[i], share));
        }
    }
    out
}

/// TTFTs spanning more than this ratio (largest / smallest) get a log time axis: a policy that queues requests for
/// seconds would otherwise flatten one that serves them in milliseconds against the axis.
const LOG_AXIS_RATIO: f64 = 50.0;

impl Figure for TtftDistribution {
    fn size(&self) -> (u32, u32) {
        self.size
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        let body = frame(root, CDF_TITLE, &legend(&self.policies, false))?;
        let (rows, cols) = grid(self.panels.len(), body.dim_in_pixel());
        for (area, p) in body.split_evenly((rows, cols)).iter().zip(&self.panels) {
            let values = || p.series.iter().flat_map(|(_, v)| v.iter().copied());
            let max = values().fold(0.0, f64::max);
            let min_positive = values().filter(|v| *v > 0.0).fold(f64::INFINITY, f64::min);
            let area = titled(area, &p.title)?;
            if min_positive.is_finite() && max / min_positive > LOG_AXIS_RATIO {
                let range = (min_positive / 1.2..max * 1.2).log_scale();
                self.draw_panel(&area, p, range, "TTFT (ms, log scale)")?;
            } else {
                self.draw_panel(&area, p, 0.0..headroom(max), "TTFT (ms)")?;
            }
        }
        Ok(())
    }
}

impl TtftDistribution {
    fn draw_panel<DB, X>(&self, area: &DrawingArea<DB, Shift>, p: &CdfPanel, x: X, x_desc: &str) -> DrawResult<DB>
    where
        DB: DrawingBackend,
        X: AsRangedCoord<Value = f64>,
        X::CoordDescType: ValueFormatter<f64>,
    {
        let mut chart = panel(area).build_cartesian_2d(x, 0.0..1.0)?;
        style_mesh(&mut chart.configure_mesh(), x_desc, "share of requests (fraction)")
            .x_label_formatter(&tick)
            .y_label_formatter(&tick)
            .draw()?;
        for (policy, values) in &p.series {
            let color = self.policies[*policy].1;
            // A log axis has no zero: a zero TTFT (not possible in practice) would have nowhere to go.
            let steps = cdf_steps(values).into_iter().filter(|(t, _)| *t > 0.0);
            // Policies often agree over part of the curve (at batch limit 1 they are the same): each curve is drawn
            // narrower than the one before, so coinciding curves show as nested stripes rather than the last alone.
            let width = 2 + (self.policies.len() - 1 - policy) as u32 * 2;
            chart.draw_series(LineSeries::new(steps, color.stroke_width(width)))?;
        }
        Ok(())
    }
}

/// Queue depths up to this get a bucket each; deeper queues are bucketed into about this many ranges.
const QUEUE_BUCKETS: usize = 24;

pub(super) struct TtftVsQueue {
    policies: Vec<(String, RGBColor)>,
    /// Per policy: (bucket centre in requests, mean TTFT in ms).
    series: Vec<(usize, Vec<(f64, f64)>)>,
    bucket_width: usize,
    max_depth: usize,
}

pub(super) fn versus_queue(data: &Data) -> Result<Option<Spec<TtftVsQueue>>, ReportError> {
    // (policy, queue depth at arrival, TTFT ms) for every request of every run that kept its steps.
    let mut samples: Vec<(usize, usize, f64)> = Vec::new();
    for run in &data.runs {
        let Some(steps) = &run.tables.steps else { continue };
        let path = run.dir.join("steps.parquet");
        let starts = super::f64s(steps, "start_ms", &path)?;
        let queue = super::f64s(steps, "queue_depth", &path)?;
        let arrivals = run.requests("arrival_ms")?;
        let ttfts = run.requests("ttft_ms")?;
        for (arrival, ttft) in arrivals.into_iter().zip(ttfts) {
            let (Some(arrival), Some(ttft)) = (arrival, ttft) else {
                continue;
            };
            // Steps are in time order: the last one starting at or before the arrival says how many were queued.
            let i = starts.partition_point(|s| s.is_some_and(|s| s <= arrival));
            let depth = if i == 0 { 0.0 } else { queue[i - 1].unwrap_or(0.0) };
            samples.push((run.policy, depth.max(0.0) as usize, ttft));
        }
    }
    if samples.is_empty() {
        return Ok(None);
    }
    let max_depth = samples.iter().map(|s| s.1).max().unwrap_or(0);
    let bucket_width = if max_depth < QUEUE_BUCKETS {
        1
    } else {
        (max_depth + 1).div_ceil(QUEUE_BUCKETS)
    };
    let buckets = max_depth / bucket_width + 1;
    let mut sums = vec![vec![(0.0, 0usize); buckets]; data.policies.len()];
    for (policy, depth, ttft) in samples {
        let cell = &mut sums[policy][depth / bucket_width];
        cell.0 += ttft;
        cell.1 += 1;
    }
    let series: Vec<(usize, Vec<(f64, f64)>)> = sums
        .into_iter()
        .enumerate()
        .map(|(p, cells)| {
            let points = cells
                .into_iter()
                .enumerate()
                .filter(|(_, (_, n))| *n > 0)
                .map(|(b, (sum, n))| {
                    let centre = (b * bucket_width) as f64 + (bucket_width - 1) as f64 / 2.0;
                    (centre, sum / n as f64)
                })
                .collect::<Vec<_>>();
            (p, points)
        })
        .filter(|(_, points)| !points.is_empty())
        .collect();
    let buckets_word = if bucket_width == 1 {
        "per queue depth".to_owned()
    } else {
        format!("in buckets of {bucket_width} queued requests")
    };
    Ok(Some(Spec {
        title: QUEUE_TITLE.to_owned(),
        caption: format!(
            "Mean time to first token of requests grouped by how many requests were queued when they arrived \
             (the queue depth after the last step that started at or before the arrival), {buckets_word}, pooled \
             over every run that kept its steps: a steep line means waiting, not computing, dominates TTFT."
        ),
        figure: TtftVsQueue {
            policies: policy_styles(data),
            series,
            bucket_width,
            max_depth,
        },
    }))
}

impl Figure for TtftVsQueue {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        let body = frame(root, QUEUE_TITLE, &legend(&self.policies, true))?;
        let area = body.margin(0, 10, 20, 20);
        let y_max = headroom(
            self.series
                .iter()
                .flat_map(|(_, s)| s.iter().map(|p| p.1))
                .fold(0.0, f64::max),
        );
        let x_max = (self.max_depth + self.bucket_width) as f64 - 0.5;
        let mut chart = panel(&area).build_cartesian_2d(-0.5..x_max, 0.0..y_max)?;
        style_mesh(
            &mut chart.configure_mesh(),
            "requests queued at arrival (requests)",
            "mean TTFT (ms)",
        )
        .x_label_formatter(&tick)
        .y_label_formatter(&tick)
        .draw()?;
        for (policy, points) in &self.series {
            let color = self.policies[*policy].1;
            chart.draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?;
            draw_markers(&mut chart, points, color, policy_marker(*policy), 5)?;
        }
        Ok(())
    }
}
