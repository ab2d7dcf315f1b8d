//! Memory: how each request's KV cache grows (`kv_growth`) and what each run's peak GPU memory is made of
//! (`peak_memory`).

use super::{
    Data, DrawResult, Figure, Spec, Swatch, TICK_SIZE, TimeUnit, bytes_to_mib, draw_markers, filled, font, frame,
    headroom, panel, policy_marker, style_mesh, tick, titled,
};
use crate::report::ReportError;
use plotters::backend::DrawingBackend;
use plotters::coord::Shift;
use plotters::coord::ranged1d::{IntoSegmentedCoord, SegmentValue};
use plotters::drawing::DrawingArea;
use plotters::element::{EmptyElement, PathElement, Rectangle, Text};
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::{Color, RGBColor};

const KV_TITLE: &str = "KV cache per request";
const PEAK_TITLE: &str = "Peak GPU memory per run";

/// Most scatter points per policy: beyond this every k-th distinct point is drawn.
const MAX_SCATTER_POINTS: usize = 5000;
/// Most request lines per lifetime panel: beyond this every k-th request is drawn.
const MAX_LIFETIMES: usize = 2000;

/// One request's KV over its life: (first token, prompt KV) → (last token, peak KV); times in ms, KV in MiB.
type Lifetime = ((f64, f64), (f64, f64));

struct LifetimePanel {
    title: String,
    policy: usize,
    lines: Vec<Lifetime>,
}

pub(super) struct KvGrowth {
    policies: Vec<(String, RGBColor)>,
    lifetimes: Vec<LifetimePanel>,
    /// Per policy: (prompt tokens, KV MiB) of each request of every run, duplicates removed.
    scatter: Vec<(usize, Vec<(f64, f64)>)>,
}

pub(super) fn kv_growth(data: &Data) -> Result<Option<Spec<KvGrowth>>, ReportError> {
    let describe = data.varying_labels(&["policy"]);
    let mut lifetimes = Vec::new();
    for run in data.representatives(|r| r.kv_bytes().is_some() && r.tables.requests.height() > 0) {
        let per_token = run.kv_bytes().unwrap_or(0.0);
        let arrival = run.requests("arrival_ms")?;
        let ttft = run.requests("ttft_ms")?;
        let e2e = run.requests("e2e_ms")?;
        let prompt = run.requests("prompt_len")?;
        let peak = run.requests("kv_peak_slots")?;
        let mut lines: Vec<Lifetime> = (0..arrival.len())
            .filter_map(|i| {
                let (a, first, last) = (arrival[i]?, ttft[i]?, e2e[i]?);
                let from = bytes_to_mib(prompt[i]? * per_token);
                let to = bytes_to_mib(peak[i]? * per_token);
                Some(((a + first, from), (a + last, to)))
            })
            .collect();
        if lines.len() > MAX_LIFETIMES {
            let stride = lines.len().div_ceil(MAX_LIFETIMES);
            lines = lines.into_iter().step_by(stride).collect();
        }
        if lines.is_empty() {
            continue;
        }
        let mut title = format!("{} · run {}", data.policies[run.policy], run.name);
        let config = data.describe(run, &describe);
        if !config.is_empty() {
            title += &format!(" ({config})");
        }
        lifetimes.push(LifetimePanel {
            title,
            policy: run.policy,
            lines,
        });
    }

    let mut scatter: Vec<Vec<(f64, f64)>> = vec![Vec::new(); data.policies.len()];
    for run in &data.runs {
        let Some(per_token) = run.kv_bytes() else { continue };
        let prompt = run.requests("prompt_len")?;
        let peak = run.requests("kv_peak_slots")?;
        for (p, k) in prompt.into_iter().zip(peak) {
            if let (Some(p), Some(k)) = (p, k) {
                scatter[run.policy].push((p, bytes_to_mib(k * per_token)));
            }
        }
    }
    let mut thinned = false;
    let scatter: Vec<(usize, Vec<(f64, f64)>)> = scatter
        .into_iter()
        .enumerate()
        .map(|(policy, mut points)| {
            points.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)));
            points.dedup();
            if points.len() > MAX_SCATTER_POINTS {
                thinned = true;
                let stride = points.len().div_ceil(MAX_SCATTER_POINTS);
                points = points.into_iter().step_by(stride).collect();
            }
            (policy, points)
        })
        .filter(|(_, points)| !points.is_empty())
        .collect();
    if lifetimes.is_empty() && scatter.is_empty() {
        return Ok(None);
    }
    let mut caption = "Left: each request's KV cache from its first token (its prompt's KV) to its last token (the \
                       most KV it ever held: in a static batch, finished sequences keep growing until the batch ends), \
                       for the run of each policy with the most output tokens. Right: the most KV each request held \
                       against its prompt length, every run; the excess over the prompt is output, padding and block \
                       rounding."
        .to_owned();
    if thinned {
        caption += " Large sweeps are thinned to every k-th distinct point.";
    }
    Ok(Some(Spec {
        title: KV_TITLE.to_owned(),
        caption,
        figure: KvGrowth {
            policies: (0..data.policies.len())
                .map(|p| (data.policies[p].clone(), data.policy_color(p)))
                .collect(),
            lifetimes,
            scatter,
        },
    }))
}

impl Figure for KvGrowth {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        let legend: Vec<(String, Swatch)> = if self.policies.len() > 1 {
            self.policies
                .iter()
                .enumerate()
                .map(|(i, (name, color))| (name.clone(), Swatch::Point(*color, policy_marker(i))))
                .collect()
        } else {
            Vec::new()
        };
        let body = frame(root, KV_TITLE, &legend)?;
        let (width, _) = body.dim_in_pixel();
        let (left, right) = if self.lifetimes.is_empty() {
            body.split_horizontally(0)
        } else if self.scatter.is_empty() {
            body.split_horizontally(width)
        } else {
            body.split_horizontally(width * 3 / 5)
        };
        if !self.lifetimes.is_empty() {
            self.draw_lifetimes(&left)?;
        }
        if !self.scatter.is_empty() {
            self.draw_scatter(&right)?;
        }
        Ok(())
    }
}

impl KvGrowth {
    fn draw_lifetimes<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        let all = || self.lifetimes.iter().flat_map(|p| p.lines.iter());
        let t_max = all().map(|l| l.1.0).fold(0.0, f64::max);
        let t_min = all().map(|l| l.0.0).fold(t_max, f64::min);
        let unit = TimeUnit::for_span_ms(t_max);
        let kv_max = headroom(all().map(|l| l.1.1.max(l.0.1)).fold(0.0, f64::max));
        let x_range = unit.of(t_min.min(0.0))..unit.of(headroom(t_max));
        for (area, p) in area.split_evenly((self.lifetimes.len(), 1)).iter().zip(&self.lifetimes) {
            let area = titled(area, &p.title)?;
            let mut chart = panel(&area).build_cartesian_2d(x_range.clone(), 0.0..kv_max)?;
            style_mesh(
                &mut chart.configure_mesh(),
                &format!("time since the first arrival ({})", unit.name),
                "KV per request (MiB)",
            )
            .x_label_formatter(&tick)
            .y_label_formatter(&tick)
            .y_labels(5)
            .draw()?;
            let color = self.policies[p.policy].1;
            chart.draw_series(p.lines.iter().map(|((t0, k0), (t1, k1))| {
                PathElement::new(
                    vec![(unit.of(*t0), *k0), (unit.of(*t1), *k1)],
                    color.mix(0.7).stroke_width(2),
                )
            }))?;
            let ends: Vec<(f64, f64)> = p.lines.iter().map(|(_, (t, k))| (unit.of(*t), *k)).collect();
            draw_markers(&mut chart, &ends, color, policy_marker(p.policy), 3)?;
        }
        Ok(())
    }

    fn draw_scatter<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        let points = || self.scatter.iter().flat_map(|(_, s)| s.iter());
        let x_max = headroom(points().map(|p| p.0).fold(0.0, f64::max));
        let y_max = headroom(points().map(|p| p.1).fold(0.0, f64::max));
        let mut chart = panel(&titled(area, "KV per request vs prompt length (all runs)")?)
            .build_cartesian_2d(0.0..x_max, 0.0..y_max)?;
        style_mesh(
            &mut chart.configure_mesh(),
            "prompt length (tokens)",
            "KV per request, peak (MiB)",
        )
        .x_label_formatter(&tick)
        .y_label_formatter(&tick)
        .x_labels(6)
        .draw()?;
        for (policy, points) in &self.scatter {
            draw_markers(&mut chart, points, self.policies[*policy].1, policy_marker(*policy), 4)?;
        }
        Ok(())
    }
}

/// The parts of peak memory, bottom to top.
const PARTS: [(&str, RGBColor); 3] = [
    ("weights", RGBColor(158, 166, 176)),
    ("KV cache (peak)", RGBColor(0, 128, 128)),
    ("workspace", RGBColor(230, 171, 2)),
];

struct Bar {
    run: String,
    policy: String,
    color: RGBColor,
    /// Weights, peak KV, workspace (MiB).
    parts: [f64; 3],
}

pub(super) struct PeakMemory {
    bars: Vec<Bar>,
    size: (u32, u32),
}

pub(super) fn peak_memory(data: &Data) -> Option<Spec<PeakMemory>> {
    let bars: Vec<Bar> = data
        .runs
        .iter()
        .filter_map(|r| {
            Some(Bar {
                run: r.name.to_owned(),
                policy: data.policies[r.policy].clone(),
                color: data.policy_color(r.policy),
                parts: [r.weights_mib?, r.peak_kv_mib?, r.workspace_mib?],
            })
        })
        .collect();
    if bars.is_empty() {
        return None;
    }
    // Wide enough for every bar to keep about 22 pixels, up to a width a report can still show.
    let width = super::DEFAULT_SIZE.0.max((bars.len() as u32 * 22 + 160).min(2400));
    Some(Spec {
        title: PEAK_TITLE.to_owned(),
        caption: "Peak GPU memory of each run, stacked: model weights, the most KV cache held at once, and the \
                  activation workspace (MiB); the KV share is what batching policy and batch limits change."
            .to_owned(),
        figure: PeakMemory {
            bars,
            size: (width, super::DEFAULT_SIZE.1),
        },
    })
}

impl Figure for PeakMemory {
    fn size(&self) -> (u32, u32) {
        self.size
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        let n = self.bars.len();
        // Labels under every k-th bar, as many as fit side by side (the plot is about 120 pixels narrower than the
        // figure). Once thinned, names no longer sit under every bar: a strip in the policy's colour does.
        let label_style = font(TICK_SIZE).pos(Pos::new(HPos::Center, VPos::Top));
        let widest = self
            .bars
            .iter()
            .flat_map(|b| [&b.run, &b.policy])
            .map(|t| root.estimate_text_size(t, &label_style).map(|(w, _)| w))
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .max()
            .unwrap_or(0);
        let slot = self.size.0.saturating_sub(120) / n.max(1) as u32;
        let every = ((widest + 10) / slot.max(1) + 1) as usize;
        let mut legend: Vec<(String, Swatch)> = PARTS
            .iter()
            .map(|(name, color)| (name.to_string(), Swatch::Fill(color.to_rgba())))
            .collect();
        if every > 1 {
            let mut seen: Vec<&str> = Vec::new();
            for bar in &self.bars {
                if !seen.contains(&bar.policy.as_str()) {
                    seen.push(&bar.policy);
                    legend.push((format!("policy {}", bar.policy), Swatch::Fill(bar.color.to_rgba())));
                }
            }
        }
        let body = frame(root, PEAK_TITLE, &legend)?;
        let total = headroom(
            self.bars
                .iter()
                .map(|b| b.parts.iter().sum::<f64>())
                .fold(0.0, f64::max),
        );
        let mut chart = panel(&body)
            .x_label_area_size(76)
            .build_cartesian_2d((0..n as i32 - 1).into_segmented(), 0.0..total)?;
        // Run names and policies are set below each bar by hand, on two lines; the mesh draws no x labels.
        style_mesh(&mut chart.configure_mesh(), "run (name, policy)", "GPU memory (MiB)")
            .x_labels(n + 1)
            .x_label_formatter(&|_| String::new())
            .y_label_formatter(&tick)
            .disable_x_mesh()
            .draw()?;
        let margin = (slot / 6).min(12);
        for (part, (_, color)) in PARTS.iter().enumerate() {
            chart.draw_series(self.bars.iter().enumerate().map(|(i, bar)| {
                let base: f64 = bar.parts[..part].iter().sum();
                let i = i as i32;
                let mut rect = Rectangle::new(
                    [
                        (SegmentValue::Exact(i), base),
                        (SegmentValue::Exact(i + 1), base + bar.parts[part]),
                    ],
                    filled(*color),
                );
                rect.set_margin(0, 0, margin, margin);
                rect
            }))?;
        }
        if every == 1 {
            chart.draw_series(self.bars.iter().enumerate().map(|(i, bar)| {
                EmptyElement::at((SegmentValue::CenterOf(i as i32), 0.0))
                    + Text::new(bar.run.clone(), (0, 8), label_style.clone())
                    + Text::new(bar.policy.clone(), (0, 26), label_style.clone().color(&bar.color))
            }))?;
        } else {
            let half = (slot / 2).saturating_sub(margin).max(1) as i32;
            chart.draw_series(self.bars.iter().enumerate().map(|(i, bar)| {
                EmptyElement::at((SegmentValue::CenterOf(i as i32), 0.0))
                    + Rectangle::new([(-half, 3), (half, 9)], filled(bar.color))
            }))?;
            chart.draw_series(self.bars.iter().enumerate().step_by(every).map(|(i, bar)| {
                EmptyElement::at((SegmentValue::CenterOf(i as i32), 0.0))
                    + Text::new(bar.run.clone(), (0, 14), label_style.clone())
            }))?;
        }
        // Totals on top when there is room to read them.
        if slot >= 48 {
            let style = font(TICK_SIZE).pos(Pos::new(HPos::Center, VPos::Bottom));
            chart.draw_series(self.bars.iter().enumerate().map(|(i, bar)| {
                let sum: f64 = bar.parts.iter().sum();
                EmptyElement::at((SegmentValue::CenterOf(i as i32), sum))
                    + Text::new(tick(&sum), (0, -3), style.clone())
            }))?;
        }
        Ok(())
    }
}
