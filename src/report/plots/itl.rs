//! `itl_heatmap`: the gap before each output token, by token position and request, for one run per policy.

use super::{AXIS_DESC_SIZE, Data, DrawResult, Figure, Spec, TICK_SIZE, font, frame, panel, style_mesh, tick, titled};
use crate::report::ReportError;
use plotters::backend::DrawingBackend;
use plotters::coord::Shift;
use plotters::drawing::DrawingArea;
use plotters::element::{PathElement, Rectangle, Text};
use plotters::style::colors::colormaps::ViridisRGB;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::{Color, RGBColor};

const TITLE: &str = "Inter-token latency by token position and request";

/// Most cells drawn per panel along each axis; longer runs are binned (mean ITL per bin), which keeps the SVG small
/// and every cell at least a few pixels.
const MAX_ROWS: usize = 96;
const MAX_COLS: usize = 160;
/// Width of the colour scale at the right.
const SCALE_WIDTH: u32 = 150;

struct Heat {
    title: String,
    requests: usize,
    positions: usize,
    row_bin: usize,
    col_bin: usize,
    /// Mean ITL (ms) per bin, row-major; `None` where no token has a gap (first tokens, beyond a request's end).
    cells: Vec<Option<f64>>,
}

pub(super) struct ItlHeatmap {
    panels: Vec<Heat>,
    /// Colour scale limits (ms), shared by every panel.
    lo: f64,
    hi: f64,
}

pub(super) fn build(data: &Data) -> Result<Option<Spec<ItlHeatmap>>, ReportError> {
    let describe = data.varying_labels(&["policy"]);
    let mut panels = Vec::new();
    for run in data.representatives(|r| r.tables.tokens.as_ref().is_some_and(|t| t.height() > 0)) {
        let Some(tokens) = &run.tables.tokens else { continue };
        let path = run.dir.join("tokens.parquet");
        let request = super::f64s(tokens, "request", &path)?;
        let index = super::f64s(tokens, "index", &path)?;
        let time = super::f64s(tokens, "time_ms", &path)?;
        // (request, position, time): sorted so consecutive entries of a request are consecutive tokens.
        let mut rows: Vec<(usize, usize, f64)> = request
            .into_iter()
            .zip(index)
            .zip(time)
            .filter_map(|((r, i), t)| Some((r? as usize, i? as usize, t?)))
            .collect();
        rows.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)).then(a.2.total_cmp(&b.2)));
        let requests = rows
            .iter()
            .map(|r| r.0 + 1)
            .max()
            .unwrap_or(0)
            .max(run.tables.requests.height());
        let positions = rows.iter().map(|r| r.1 + 1).max().unwrap_or(0);
        if requests == 0 || positions < 2 {
            continue;
        }
        let row_bin = requests.div_ceil(MAX_ROWS);
        let col_bin = positions.div_ceil(MAX_COLS);
        let (n_rows, n_cols) = (requests.div_ceil(row_bin), positions.div_ceil(col_bin));
        let mut sums = vec![(0.0, 0usize); n_rows * n_cols];
        for pair in rows.windows(2) {
            let ((r0, i0, t0), (r1, i1, t1)) = (pair[0], pair[1]);
            if r0 == r1 && i1 == i0 + 1 {
                let cell = &mut sums[(r1 / row_bin) * n_cols + i1 / col_bin];
                cell.0 += t1 - t0;
                cell.1 += 1;
            }
        }
        let cells = sums
            .into_iter()
            .map(|(sum, n)| (n > 0).then(|| sum / n as f64))
            .collect();
        let mut title = format!("{} · run {}", data.policies[run.policy], run.name);
        let config = data.describe(run, &describe);
        if !config.is_empty() {
            title += &format!(" ({config})");
        }
        panels.push(Heat {
            title,
            requests,
            positions,
            row_bin,
            col_bin,
            cells,
        });
    }
    let values = || {
        panels
            .iter()
            .flat_map(|p| p.cells.iter().flatten().copied())
            .filter(|v| *v > 0.0)
    };
    let (Some(lo), Some(hi)) = (values().reduce(f64::min), values().reduce(f64::max)) else {
        return Ok(None);
    };
    // A log scale needs a range: widen a constant ITL to ±5 %.
    let (lo, hi) = if hi / lo < 1.1 {
        (lo / 1.05, hi * 1.05)
    } else {
        (lo, hi)
    };
    let binned = panels.iter().any(|p| p.row_bin > 1 || p.col_bin > 1);
    let mut caption = "Inter-token latency: the gap before each output token (colour, log scale) by token position \
                       and request, for the run of each policy with the most output tokens; blank cells have no gap \
                       (a first token, or past a request's last token)."
        .to_owned();
    if binned {
        caption += " Long runs are binned: a cell is the mean gap over several tokens or requests.";
    }
    Ok(Some(Spec {
        title: TITLE.to_owned(),
        caption,
        figure: ItlHeatmap { panels, lo, hi },
    }))
}

impl ItlHeatmap {
    fn color(&self, ms: f64) -> RGBColor {
        let t = (ms.max(self.lo).ln() - self.lo.ln()) / (self.hi.ln() - self.lo.ln());
        ViridisRGB::get_color(t.clamp(0.0, 1.0))
    }
}

impl Figure for ItlHeatmap {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        let body = frame(root, TITLE, &[])?;
        let (width, _) = body.dim_in_pixel();
        let (main, scale) = body.split_horizontally(width - SCALE_WIDTH);
        for (area, p) in main.split_evenly((self.panels.len(), 1)).iter().zip(&self.panels) {
            // Integer positions and request ids at cell centres; request 0 at the top, as in a list of requests.
            let (rows, cols) = (p.requests as f64 - 0.5, p.positions as f64 - 0.5);
            let area = titled(area, &p.title)?;
            let mut chart = panel(&area).build_cartesian_2d(-0.5..cols, rows..-0.5)?;
            chart.plotting_area().fill(&RGBColor(246, 246, 246))?;
            let n_cols = p.positions.div_ceil(p.col_bin);
            chart.draw_series(p.cells.iter().enumerate().filter_map(|(k, v)| {
                let v = (*v)?;
                let (r, c) = (k / n_cols, k % n_cols);
                let x0 = (c * p.col_bin) as f64 - 0.5;
                let x1 = ((c + 1) * p.col_bin).min(p.positions) as f64 - 0.5;
                let y0 = (r * p.row_bin) as f64 - 0.5;
                let y1 = ((r + 1) * p.row_bin).min(p.requests) as f64 - 0.5;
                Some(Rectangle::new([(x0, y0), (x1, y1)], self.color(v).filled()))
            }))?;
            style_mesh(
                &mut chart.configure_mesh(),
                "output token position (tokens)",
                "request (id)",
            )
            .disable_mesh()
            .x_label_formatter(&integer_tick)
            .y_label_formatter(&integer_tick)
            .draw()?;
        }
        self.draw_scale(&scale)
    }
}

/// Positions and ids are whole numbers: no label between them.
fn integer_tick(v: &f64) -> String {
    if (v - v.round()).abs() < 1e-9 {
        tick(v)
    } else {
        String::new()
    }
}

impl ItlHeatmap {
    /// Tick values for the colour scale: round numbers, from the coarsest set of mantissas that puts at least
    /// three in the range; failing that (a narrow range, where a log scale is nearly linear), evenly spaced round
    /// numbers.
    fn scale_ticks(&self) -> Vec<f64> {
        let (lo, hi) = (self.lo, self.hi);
        let sets: [&[f64]; 4] = [
            &[1.0],
            &[1.0, 2.0, 5.0],
            &[1.0, 1.5, 2.0, 3.0, 5.0, 7.0],
            &[1.0, 1.2, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0],
        ];
        for mantissas in sets {
            let mut ticks = Vec::new();
            for e in lo.log10().floor() as i32..=hi.log10().ceil() as i32 {
                for m in mantissas {
                    let v = m * 10f64.powi(e);
                    if v >= lo && v <= hi {
                        ticks.push(v);
                    }
                }
            }
            if ticks.len() >= 3 {
                return ticks;
            }
        }
        super::linear_ticks(lo, hi)
    }

    /// The colour scale: a vertical gradient, low at the bottom, with ITL ticks in ms on a log axis.
    fn draw_scale<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        const LEFT: i32 = 24;
        const BAR: i32 = 28;
        let (_, height) = area.dim_in_pixel();
        let (top, bottom) = (52, height as i32 - 70);
        area.draw(&Text::new(
            "ITL (ms)",
            (LEFT + BAR / 2, top - 14),
            font(AXIS_DESC_SIZE).pos(Pos::new(HPos::Center, VPos::Bottom)),
        ))?;
        let span = (self.hi / self.lo).ln();
        let y_of = |v: f64| bottom - (((v / self.lo).ln() / span) * (bottom - top) as f64).round() as i32;
        for y in top..bottom {
            let share = (bottom - y) as f64 / (bottom - top) as f64;
            let v = self.lo * (share * span).exp();
            area.draw(&Rectangle::new(
                [(LEFT, y), (LEFT + BAR, y + 1)],
                self.color(v).filled(),
            ))?;
        }
        area.draw(&Rectangle::new(
            [(LEFT, top), (LEFT + BAR, bottom)],
            RGBColor(120, 120, 120),
        ))?;
        let style = font(TICK_SIZE).pos(Pos::new(HPos::Left, VPos::Center));
        for v in self.scale_ticks() {
            let y = y_of(v);
            area.draw(&PathElement::new(
                vec![(LEFT + BAR, y), (LEFT + BAR + 5, y)],
                RGBColor(120, 120, 120),
            ))?;
            area.draw(&Text::new(super::format_number(v), (LEFT + BAR + 8, y), style.clone()))?;
        }
        Ok(())
    }
}
