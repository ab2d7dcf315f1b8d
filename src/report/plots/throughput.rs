//! `throughput_vs_batch`: output throughput against the batch limit, one line per policy, a panel per combination of
//! the other labels that vary (model, prompt length, request count, …).

use super::{
    Data, DrawResult, Figure, MAX_PANELS, Spec, Swatch, TICK_SIZE, draw_markers, filled, font, frame, grid, grid_size,
    headroom, panel, policy_marker, style_mesh, tick, titled,
};
use indexmap::IndexMap;
use plotters::backend::DrawingBackend;
use plotters::coord::Shift;
use plotters::coord::ranged1d::{IntoSegmentedCoord, SegmentValue};
use plotters::drawing::DrawingArea;
use plotters::element::{EmptyElement, Rectangle, Text};
use plotters::series::LineSeries;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::{Color, RGBColor};

/// Lines over batch limits, or (with one batch limit in the whole sweep) bars over policies.
enum Mode {
    Lines,
    Bars { max_batch_size: Option<f64> },
}

/// (policy, category) → (sum of throughputs, runs).
type Cells = IndexMap<(usize, usize), (f64, usize)>;

struct Panel {
    title: String,
    /// Per policy (index into `policies`): (category, mean throughput) in category order.
    series: Vec<(usize, Vec<(usize, f64)>)>,
}

pub(super) struct Throughput {
    title: String,
    mode: Mode,
    /// Category labels along x: batch limits (lines) or policy names (bars).
    categories: Vec<String>,
    policies: Vec<(String, RGBColor)>,
    panels: Vec<Panel>,
    size: (u32, u32),
}

pub(super) fn build(data: &Data) -> Option<Spec<Throughput>> {
    let runs: Vec<_> = data.runs.iter().filter(|r| r.output_tok_per_s.is_some()).collect();
    if runs.is_empty() {
        return None;
    }
    let mut limits: Vec<f64> = runs.iter().filter_map(|r| r.max_batch_size).collect();
    limits.sort_by(f64::total_cmp);
    limits.dedup();
    let mode = if limits.len() >= 2 {
        Mode::Lines
    } else {
        Mode::Bars {
            max_batch_size: limits.first().copied(),
        }
    };
    let facets = data.varying_labels(&["policy", "max_batch_size"]);

    // Runs that share a panel, policy and batch limit (seeds, say) are averaged.
    let mut panels: IndexMap<Vec<&str>, (String, Cells)> = IndexMap::new();
    for run in &runs {
        let category = match mode {
            Mode::Lines => match run.max_batch_size {
                Some(m) => limits.iter().position(|l| *l == m).unwrap_or(0),
                None => continue,
            },
            Mode::Bars { .. } => run.policy,
        };
        let key: Vec<&str> = facets.iter().map(|&i| run.labels[i].as_str()).collect();
        let (_, cells) = panels
            .entry(key)
            .or_insert_with(|| (data.describe(run, &facets), Cells::new()));
        let cell = cells.entry((run.policy, category)).or_insert((0.0, 0));
        cell.0 += run.output_tok_per_s.unwrap_or(0.0);
        cell.1 += 1;
    }
    let total_panels = panels.len();
    let panels: Vec<Panel> = panels
        .into_values()
        .take(MAX_PANELS)
        .map(|(title, cells)| {
            let mut series: Vec<(usize, Vec<(usize, f64)>)> = Vec::new();
            for policy in 0..data.policies.len() {
                let mut points: Vec<(usize, f64)> = cells
                    .iter()
                    .filter(|((p, _), _)| *p == policy)
                    .map(|((_, c), (sum, n))| (*c, sum / *n as f64))
                    .collect();
                points.sort_by_key(|(c, _)| *c);
                if !points.is_empty() {
                    series.push((policy, points));
                }
            }
            Panel { title, series }
        })
        .collect();

    let categories = match mode {
        Mode::Lines => limits.iter().map(|l| super::format_number(*l)).collect(),
        Mode::Bars { .. } => data.policies.clone(),
    };
    let (rows, cols) = grid(panels.len(), super::DEFAULT_SIZE);
    let facet_names: Vec<&str> = facets.iter().map(|&i| super::short_label(&data.labels[i])).collect();
    let mut caption = match mode {
        Mode::Lines => "Output throughput (generated tokens per second of makespan) against the batch limit, one line \
                        per policy"
            .to_owned(),
        Mode::Bars { .. } => "Output throughput (generated tokens per second of makespan) per policy, at the sweep's \
                              one batch limit"
            .to_owned(),
    };
    if !facet_names.is_empty() {
        caption += &format!(", one panel per {}", facet_names.join(" × "));
    }
    caption += "; each panel has its own y scale.";
    if total_panels > panels.len() {
        caption += &format!(" Only the first {} of {total_panels} panels are drawn.", panels.len());
    }
    caption += " Runs that differ in nothing else (seeds) are averaged.";
    let title = match mode {
        Mode::Bars {
            max_batch_size: Some(m),
        } => format!(
            "Output throughput per policy (max batch size {})",
            super::format_number(m)
        ),
        _ => "Output throughput vs max batch size".to_owned(),
    };
    Some(Spec {
        title: title.clone(),
        caption,
        figure: Throughput {
            title,
            mode,
            categories,
            policies: (0..data.policies.len())
                .map(|p| (data.policies[p].clone(), data.policy_color(p)))
                .collect(),
            size: grid_size(rows, cols),
            panels,
        },
    })
}

impl Figure for Throughput {
    fn size(&self) -> (u32, u32) {
        self.size
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        let legend: Vec<(String, Swatch)> = if self.policies.len() > 1 {
            self.policies
                .iter()
                .enumerate()
                .map(|(i, (name, color))| {
                    let swatch = match self.mode {
                        Mode::Lines => Swatch::Point(*color, policy_marker(i)),
                        Mode::Bars { .. } => Swatch::Fill(color.to_rgba()),
                    };
                    (name.clone(), swatch)
                })
                .collect()
        } else {
            Vec::new()
        };
        let body = frame(root, &self.title, &legend)?;
        let (rows, cols) = grid(self.panels.len(), body.dim_in_pixel());
        for (area, p) in body.split_evenly((rows, cols)).iter().zip(&self.panels) {
            self.draw_panel(area, p)?;
        }
        Ok(())
    }
}

impl Throughput {
    fn draw_panel<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>, p: &Panel) -> DrawResult<DB> {
        let n = self.categories.len() as i32;
        let y_max = headroom(
            p.series
                .iter()
                .flat_map(|(_, s)| s.iter().map(|(_, v)| *v))
                .fold(0.0, f64::max),
        );
        let area = titled(area, &p.title)?;
        let mut chart = panel(&area).build_cartesian_2d((0..n - 1).into_segmented(), 0.0..y_max)?;
        let categories = &self.categories;
        let x_label = |v: &SegmentValue<i32>| match v {
            SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => usize::try_from(*i)
                .ok()
                .and_then(|i| categories.get(i))
                .cloned()
                .unwrap_or_default(),
            SegmentValue::Last => String::new(),
        };
        let x_desc = match self.mode {
            Mode::Lines => "max batch size (sequences)",
            Mode::Bars { .. } => "policy",
        };
        style_mesh(&mut chart.configure_mesh(), x_desc, "output throughput (tok/s)")
            .x_labels(self.categories.len() + 1)
            .x_label_formatter(&x_label)
            .y_label_formatter(&tick)
            .disable_x_mesh()
            .draw()?;
        for (policy, points) in &p.series {
            let color = self.policies[*policy].1;
            match self.mode {
                Mode::Lines => {
                    let xy: Vec<(SegmentValue<i32>, f64)> = points
                        .iter()
                        .map(|(c, v)| (SegmentValue::CenterOf(*c as i32), *v))
                        .collect();
                    chart.draw_series(LineSeries::new(xy.iter().cloned(), color.stroke_width(2)))?;
                    draw_markers(&mut chart, &xy, color, policy_marker(*policy), 4)?;
                }
                Mode::Bars { .. } => {
                    chart.draw_series(points.iter().map(|(c, v)| {
                        let c = *c as i32;
                        let mut bar = Rectangle::new(
                            [(SegmentValue::Exact(c), 0.0), (SegmentValue::Exact(c + 1), *v)],
                            filled(color),
                        );
                        bar.set_margin(0, 0, 14, 14);
                        bar
                    }))?;
                    // The value on top of each bar: bars invite reading exact numbers.
                    let style = font(TICK_SIZE).pos(Pos::new(HPos::Center, VPos::Bottom));
                    chart.draw_series(points.iter().map(|(c, v)| {
                        EmptyElement::at((SegmentValue::CenterOf(*c as i32), *v))
                            + Text::new(tick(v), (0, -3), style.clone())
                    }))?;
                }
            }
        }
        Ok(())
    }
}
