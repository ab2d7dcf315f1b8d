//! Charts drawn from a results folder: `<results>/charts/<id>.png` and `<id>.svg`, one pair per chart.
//!
//! Each chart family has its own file and works in two stages: read what it needs out of [`Results`] into plain
//! vectors (returning `None`, so no chart, when the data is absent), then draw through [`Figure`], which is generic
//! over the plotters backend so the PNG and the SVG come from the same code. Text is drawn with the embedded DejaVu
//! Sans through ab_glyph: no system font is looked up, so a chart renders the same on any machine. The PNG is drawn
//! at twice its size and averaged down, with text placed by [`raster`] (plotters' own placement is uneven).
//!
//! Same results, same bytes: nothing drawn depends on the clock, hash order or the host.

mod itl;
mod memory;
mod raster;
mod throughput;
mod timeline;
mod ttft;
mod validation;

use super::{Chart, EncodeError, ReportError, Results, RunTables};
use crate::metrics::Summary;
use crate::units::MIB;
use plotters::backend::{DrawingBackend, SVGBackend};
use plotters::chart::{ChartBuilder, ChartContext, MeshStyle};
use plotters::coord::Shift;
use plotters::coord::cartesian::Cartesian2d;
use plotters::coord::ranged1d::Ranged;
use plotters::drawing::{DrawingArea, DrawingAreaErrorKind, IntoDrawingArea};
use plotters::element::{Circle, Cross, PathElement, Rectangle, Text, TriangleMarker};
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::{Color, FontStyle, IntoFont, RGBAColor, RGBColor, ShapeStyle, TextStyle, WHITE};
use polars::prelude::{DataFrame, DataType, PolarsError};
use std::collections::HashSet;
use std::error::Error as StdError;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// Every chart id, in the order [`render_charts`] returns them.
pub const CHART_IDS: [&str; 7] = [
    "throughput_vs_batch",
    "ttft_distribution",
    "ttft_vs_queue",
    "itl_heatmap",
    "kv_growth",
    "peak_memory",
    "timeline",
];

/// The validation charts, drawn after [`CHART_IDS`] for a validated results folder (`validation.json`).
pub const VALIDATION_CHART_IDS: [&str; 2] = ["validation_parity", "step_error_by_kind"];

/// Size of a chart in pixels (PNG) and user units (SVG), unless it needs more room for many panels or bars.
pub const DEFAULT_SIZE: (u32, u32) = (1200, 800);

/// The family name plotters looks fonts up by; the embedded font is registered under it.
const FONT: &str = "sans-serif";
static FONT_BYTES: &[u8] = include_bytes!("../../../assets/fonts/DejaVuSans.ttf");

/// Why a chart could not be drawn; reported as the I/O error of the file being written.
#[derive(Debug, thiserror::Error)]
pub enum ChartError {
    #[error("the embedded chart font could not be loaded")]
    Font,
    #[error("drawing the chart failed: {0}")]
    Draw(#[source] Box<dyn StdError + Send + Sync>),
}

impl ChartError {
    fn at(self, path: &Path) -> ReportError {
        ReportError::Io {
            path: path.to_owned(),
            source: io::Error::other(self),
        }
    }
}

/// Draws every chart the results have data for into `<results.dir>/charts/` and returns them in [`CHART_IDS`]
/// order, then [`VALIDATION_CHART_IDS`] for a validated folder. A chart whose data is absent (no steps or tokens recorded, no runs) is skipped, and any file of it left
/// by an earlier render is removed.
pub fn render_charts(results: &Results) -> Result<Vec<Chart>, ReportError> {
    let dir = results.dir.join("charts");
    register_font().map_err(|e| e.at(&dir))?;
    let data = Data::read(results)?;
    let mut out = Output {
        dir,
        charts: Vec::new(),
    };
    out.emit("throughput_vs_batch", throughput::build(&data))?;
    out.emit("ttft_distribution", ttft::distribution(&data)?)?;
    out.emit("ttft_vs_queue", ttft::versus_queue(&data)?)?;
    out.emit("itl_heatmap", itl::build(&data)?)?;
    out.emit("kv_growth", memory::kv_growth(&data)?)?;
    out.emit("peak_memory", memory::peak_memory(&data))?;
    out.emit("timeline", timeline::build(&data)?)?;
    let validation = results.validation.as_ref();
    out.emit("validation_parity", validation::parity(&data, validation))?;
    out.emit("step_error_by_kind", validation::step_errors(&data, validation)?)?;
    Ok(out.charts)
}

/// Registers the embedded font once per process; plotters keeps it in a global table.
fn register_font() -> Result<(), ChartError> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| plotters::style::register_font(FONT, FontStyle::Normal, FONT_BYTES).is_ok());
    if ok { Ok(()) } else { Err(ChartError::Font) }
}

type DrawResult<DB> = Result<(), DrawingAreaErrorKind<<DB as DrawingBackend>::ErrorType>>;

/// A chart ready to draw: its data is prepared, drawing it cannot fail except in the backend.
trait Figure {
    fn size(&self) -> (u32, u32) {
        DEFAULT_SIZE
    }

    /// Draws onto `root`, already filled white.
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<DB>;
}

/// What a chart family hands back: the figure plus the words around it.
struct Spec<F> {
    title: String,
    caption: String,
    figure: F,
}

struct Output {
    dir: PathBuf,
    charts: Vec<Chart>,
}

impl Output {
    fn emit<F: Figure>(&mut self, id: &str, spec: Option<Spec<F>>) -> Result<(), ReportError> {
        let png = self.dir.join(format!("{id}.png"));
        let svg = self.dir.join(format!("{id}.svg"));
        let Some(spec) = spec else {
            // A chart drawn by an earlier render of the same folder would no longer describe these results.
            remove_if_present(&png)?;
            return remove_if_present(&svg);
        };
        fs::create_dir_all(&self.dir).map_err(|source| ReportError::Io {
            path: self.dir.clone(),
            source,
        })?;
        write_png(&spec.figure, &png)?;
        write_svg(&spec.figure, &svg)?;
        self.charts.push(Chart {
            id: id.to_owned(),
            title: spec.title,
            caption: spec.caption,
            png,
            svg,
        });
        Ok(())
    }
}

fn remove_if_present(path: &Path) -> Result<(), ReportError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(ReportError::Io {
            path: path.to_owned(),
            source: e,
        }),
        _ => Ok(()),
    }
}

fn draw_error<E: StdError + Send + Sync + 'static>(e: DrawingAreaErrorKind<E>) -> ChartError {
    ChartError::Draw(Box::new(e))
}

/// The bitmap backend encodes straight to a path (choosing PNG by its extension), so the PNG goes to a temporary
/// `.png` name in the same folder and is renamed into place: a reader never sees a half-written chart. See
/// [`raster`] for how it is drawn.
fn write_png<F: Figure>(figure: &F, path: &Path) -> Result<(), ReportError> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let stem = path.file_stem().map_or_else(Default::default, |n| n.to_string_lossy());
    let tmp = path.with_file_name(format!(
        ".{stem}.{}-{}.tmp.png",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let drawn = raster::write_png(figure, &tmp);
    let result = drawn.map_err(|e| e.at(path)).and_then(|()| {
        fs::rename(&tmp, path).map_err(|source| ReportError::Io {
            path: path.to_owned(),
            source,
        })
    });
    if result.is_err() {
        // Best effort: the error being returned matters more than a leftover temporary file.
        let _ = fs::remove_file(&tmp);
    }
    result
}

fn write_svg<F: Figure>(figure: &F, path: &Path) -> Result<(), ReportError> {
    let mut text = String::new();
    {
        let root = SVGBackend::with_string(&mut text, figure.size()).into_drawing_area();
        root.fill(&WHITE)
            .and_then(|()| figure.draw(&root))
            .and_then(|()| root.present())
            .map_err(|e| draw_error(e).at(path))?;
    }
    text.push('\n');
    super::write_atomically(path, |file| file.write_all(text.as_bytes()).map_err(EncodeError::from))
}

// ---------------------------------------------------------------------------------------------------------------
// Reading the results

/// One run as the charts see it: its summary row and its tables.
struct Run<'a> {
    name: &'a str,
    /// `<results>/runs/<name>`, for error messages about its tables.
    dir: PathBuf,
    tables: &'a RunTables,
    /// Index into [`Data::policies`].
    policy: usize,
    /// The value of each of [`Data::labels`] as text ("" where null).
    labels: Vec<String>,
    max_batch_size: Option<f64>,
    /// The offered load, from a label in [`LOAD_LABELS`] (0 without one).
    load: f64,
    output_tokens: f64,
    output_tok_per_s: Option<f64>,
    kv_bytes_per_token: Option<f64>,
    kv_capacity_mib: Option<f64>,
    weights_mib: Option<f64>,
    peak_kv_mib: Option<f64>,
    workspace_mib: Option<f64>,
}

impl Run<'_> {
    fn requests(&self, column: &str) -> Result<Vec<Option<f64>>, ReportError> {
        f64s(&self.tables.requests, column, &self.dir.join("requests.parquet"))
    }

    /// KV cache bytes per token slot, when the run has a KV cache at all.
    fn kv_bytes(&self) -> Option<f64> {
        self.kv_bytes_per_token.filter(|b| *b > 0.0)
    }
}

/// Everything the charts read, in the summary's run order.
struct Data<'a> {
    runs: Vec<Run<'a>>,
    /// Label columns of the summary (what identifies a run: sweep axes, model, policy, …), in column order.
    labels: Vec<String>,
    /// Policy names, in display order: static, continuous, grouped, then any other in order of appearance.
    policies: Vec<String>,
}

/// Label names (last dotted part) that set the offered load.
const LOAD_LABELS: [&str; 2] = ["rate", "clients"];

/// Policies with a fixed colour and place, so a policy looks the same in every chart and every report.
const KNOWN_POLICIES: [&str; 3] = ["static", "continuous", "grouped"];

impl<'a> Data<'a> {
    fn read(results: &'a Results) -> Result<Data<'a>, ReportError> {
        let summary = &results.summary;
        if summary.height() == 0 {
            // An empty sweep: its summary has the columns but nothing to draw (and untyped, all-null columns).
            return Ok(Data {
                runs: Vec::new(),
                labels: Vec::new(),
                policies: Vec::new(),
            });
        }
        let path = results.dir.join("summary.parquet");
        let metrics = summary_metric_names();
        let labels: Vec<String> = summary
            .get_column_names()
            .into_iter()
            .map(|name| name.to_string())
            .filter(|name| name != "run" && !metrics.contains(name))
            .collect();
        let names = strings(summary, "run", &path)?;
        let policy_names = if labels.iter().any(|l| l == "policy") {
            strings(summary, "policy", &path)?
        } else {
            vec![None; summary.height()]
        };
        let label_values = labels
            .iter()
            .map(|name| strings(summary, name, &path))
            .collect::<Result<Vec<_>, _>>()?;
        let metric = |name: &str| optional_f64s(summary, name, &path);
        let loads: Vec<usize> = (0..labels.len())
            .filter(|&i| LOAD_LABELS.contains(&short_label(&labels[i])))
            .collect();
        let max_batch_size = if labels.iter().any(|l| l == "max_batch_size") {
            f64s(summary, "max_batch_size", &path)?
        } else {
            vec![None; summary.height()]
        };
        let output_tokens = metric("output_tokens")?;
        let output_tok_per_s = metric("output_tok_per_s")?;
        let kv_bytes_per_token = metric("kv_bytes_per_token")?;
        let kv_capacity_mib = metric("kv_capacity_mib")?;
        let weights_mib = metric("weights_mib")?;
        let peak_kv_mib = metric("peak_kv_mib")?;
        let workspace_mib = metric("workspace_mib")?;

        let mut policies: Vec<String> = Vec::new();
        for known in KNOWN_POLICIES {
            if policy_names.iter().flatten().any(|p| p == known) {
                policies.push(known.to_owned());
            }
        }
        let mut runs = Vec::with_capacity(summary.height());
        for (row, name) in names.iter().enumerate() {
            let Some(name) = name else { continue };
            let Some(tables) = results.runs.iter().find(|r| &r.name == name) else {
                continue;
            };
            // A run without a policy label (a results folder from elsewhere) is still one series.
            let policy_name = policy_names[row].clone().unwrap_or_else(|| "run".to_owned());
            let policy = match policies.iter().position(|p| *p == policy_name) {
                Some(i) => i,
                None => {
                    policies.push(policy_name);
                    policies.len() - 1
                }
            };
            runs.push(Run {
                name: &tables.name,
                dir: results.dir.join("runs").join(name),
                tables,
                policy,
                labels: label_values
                    .iter()
                    .map(|v| v[row].clone().unwrap_or_default())
                    .collect(),
                max_batch_size: max_batch_size[row],
                load: loads
                    .iter()
                    .filter_map(|&i| label_values[i][row].as_deref()?.parse::<f64>().ok())
                    .fold(0.0, f64::max),
                output_tokens: output_tokens[row].unwrap_or(0.0),
                output_tok_per_s: output_tok_per_s[row],
                kv_bytes_per_token: kv_bytes_per_token[row],
                kv_capacity_mib: kv_capacity_mib[row],
                weights_mib: weights_mib[row],
                peak_kv_mib: peak_kv_mib[row],
                workspace_mib: workspace_mib[row],
            });
        }
        Ok(Data { runs, labels, policies })
    }

    /// For each policy (display order) that has a run passing `usable`: its run with the most output tokens; on a
    /// tie (a sweep's runs often all serve the same requests) the one with the largest batch limit (at batch limit
    /// 1 every policy does the same thing), then the heaviest load (rate or clients: where policies part ways),
    /// then the first in run order. In a sweep over a grid this picks the same configuration for every policy, so
    /// the per-run charts compare like with like.
    fn representatives(&self, usable: impl Fn(&Run) -> bool) -> Vec<&Run<'a>> {
        let key = |r: &Run| (r.output_tokens, r.max_batch_size.unwrap_or(0.0), r.load);
        let mut best: Vec<Option<&Run>> = vec![None; self.policies.len()];
        for run in self.runs.iter().filter(|r| usable(r)) {
            let slot = &mut best[run.policy];
            if slot.is_none_or(|b| key(run).partial_cmp(&key(b)) == Some(std::cmp::Ordering::Greater)) {
                *slot = Some(run);
            }
        }
        best.into_iter().flatten().collect()
    }

    /// Label columns (indices into `labels`) whose values differ between runs, leaving out `exclude` and any column
    /// that only repeats another (`model.name` beside `model`, `scheduler.policy` beside `policy`): these are what
    /// tells runs apart beyond the chart's own axes.
    fn varying_labels(&self, exclude: &[&str]) -> Vec<usize> {
        let partition = |i: usize| -> Vec<usize> {
            let mut seen: Vec<&str> = Vec::new();
            self.runs
                .iter()
                .map(|r| {
                    let v = r.labels[i].as_str();
                    seen.iter().position(|s| *s == v).unwrap_or_else(|| {
                        seen.push(v);
                        seen.len() - 1
                    })
                })
                .collect()
        };
        let mut taken: Vec<Vec<usize>> = (0..self.labels.len())
            .filter(|i| exclude.contains(&self.labels[*i].as_str()))
            .map(partition)
            .collect();
        // Of two columns that say the same, keep the plain name (`model`) over a sweep's dotted key (`model.name`,
        // whose last part alone would say little).
        let mut order: Vec<usize> = (0..self.labels.len()).collect();
        order.sort_by_key(|&i| self.labels[i].contains('.'));
        let mut out = Vec::new();
        for i in order {
            if exclude.contains(&self.labels[i].as_str()) {
                continue;
            }
            let p = partition(i);
            if p.iter().all(|&k| k == 0) || taken.contains(&p) {
                continue;
            }
            taken.push(p);
            out.push(i);
        }
        out.sort_unstable();
        out
    }

    /// `name=value, …` for the given label columns of `run`, with each name shortened to its last dotted part.
    fn describe(&self, run: &Run, columns: &[usize]) -> String {
        columns
            .iter()
            .map(|&i| format!("{}={}", short_label(&self.labels[i]), run.labels[i]))
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn policy_color(&self, policy: usize) -> RGBColor {
        policy_color(&self.policies, policy)
    }
}

/// `workload.prompt_len` → `prompt_len`: panel titles have little room.
fn short_label(name: &str) -> &str {
    name.rsplit('.').next().unwrap_or(name)
}

/// The summary's metric columns, from the summary itself, so a label is anything else.
fn summary_metric_names() -> HashSet<String> {
    Summary::column_names().into_iter().collect()
}

fn polars_error(path: &Path) -> impl FnOnce(PolarsError) -> ReportError + '_ {
    move |source| ReportError::Polars {
        path: path.to_owned(),
        source,
    }
}

/// A numeric column as f64 (integers converted).
fn f64s(df: &DataFrame, name: &str, path: &Path) -> Result<Vec<Option<f64>>, ReportError> {
    let column = df
        .column(name)
        .and_then(|c| c.cast(&DataType::Float64))
        .map_err(polars_error(path))?;
    let values = column.f64().map_err(polars_error(path))?;
    Ok(values.iter().collect())
}

/// As [`f64s`], all null when the column is absent (a summary from an older or other writer).
fn optional_f64s(df: &DataFrame, name: &str, path: &Path) -> Result<Vec<Option<f64>>, ReportError> {
    if df.get_column_index(name).is_some() {
        f64s(df, name, path)
    } else {
        Ok(vec![None; df.height()])
    }
}

/// Any column as text, the way its values read in a table.
fn strings(df: &DataFrame, name: &str, path: &Path) -> Result<Vec<Option<String>>, ReportError> {
    let column = df
        .column(name)
        .and_then(|c| c.cast(&DataType::String))
        .map_err(polars_error(path))?;
    let values = column.str().map_err(polars_error(path))?;
    Ok(values.iter().map(|v| v.map(str::to_owned)).collect())
}

/// A text column (the step kind).
fn strs(df: &DataFrame, name: &str, path: &Path) -> Result<Vec<String>, ReportError> {
    Ok(strings(df, name, path)?
        .into_iter()
        .map(Option::unwrap_or_default)
        .collect())
}

fn bytes_to_mib(bytes: f64) -> f64 {
    bytes / MIB
}

// ---------------------------------------------------------------------------------------------------------------
// Drawing helpers shared by the chart families

const TITLE_SIZE: f64 = 26.0;
const PANEL_TITLE_SIZE: f64 = 17.0;
const AXIS_DESC_SIZE: f64 = 15.0;
const TICK_SIZE: f64 = 13.0;
const LEGEND_SIZE: f64 = 15.0;
/// Height of the legend strip under the title.
const LEGEND_HEIGHT: u32 = 34;
/// Most panels in a grid: beyond this a chart shows the first ones and says so in its caption.
const MAX_PANELS: usize = 24;

const INK: RGBColor = RGBColor(34, 34, 34);
const GRID_BOLD: RGBColor = RGBColor(215, 215, 215);
const GRID_LIGHT: RGBColor = RGBColor(238, 238, 238);

/// tab10, with static red, continuous blue and grouped green; other policies take the rest in order.
const PALETTE: [RGBColor; 10] = [
    RGBColor(214, 39, 40),
    RGBColor(31, 119, 180),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

fn policy_color(policies: &[String], policy: usize) -> RGBColor {
    let name = policies[policy].as_str();
    if let Some(i) = KNOWN_POLICIES.iter().position(|k| *k == name) {
        return PALETTE[i];
    }
    let others = policies[..policy]
        .iter()
        .filter(|p| !KNOWN_POLICIES.contains(&p.as_str()))
        .count();
    PALETTE[KNOWN_POLICIES.len() + others % (PALETTE.len() - KNOWN_POLICIES.len())]
}

fn font(size: f64) -> TextStyle<'static> {
    TextStyle::from((FONT, size).into_font()).color(&INK)
}

/// A marker per policy as well as a colour, so overlapping points and grey-scale prints stay readable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Marker {
    Circle,
    Cross,
    Triangle,
}

fn policy_marker(policy: usize) -> Marker {
    [Marker::Circle, Marker::Triangle, Marker::Cross][policy % 3]
}

/// What a legend entry shows beside its name.
#[derive(Clone, Copy, Debug)]
enum Swatch {
    Line(RGBColor),
    Fill(RGBAColor),
    Point(RGBColor, Marker),
}

/// Draws a legend centred on one line of `area`.
fn draw_legend<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, entries: &[(String, Swatch)]) -> DrawResult<DB> {
    const SWATCH: i32 = 26;
    const GAP: i32 = 7;
    const SPACING: i32 = 28;
    let style = font(LEGEND_SIZE);
    let widths = entries
        .iter()
        .map(|(name, _)| area.estimate_text_size(name, &style).map(|(w, _)| w as i32))
        .collect::<Result<Vec<_>, _>>()?;
    let total: i32 = widths.iter().map(|w| SWATCH + GAP + w).sum::<i32>() + SPACING * (entries.len() as i32 - 1).max(0);
    let (width, height) = area.dim_in_pixel();
    let mut x = ((width as i32 - total) / 2).max(4);
    let y = height as i32 / 2;
    for ((name, swatch), w) in entries.iter().zip(widths) {
        match *swatch {
            Swatch::Line(color) => {
                area.draw(&PathElement::new(vec![(x, y), (x + SWATCH, y)], color.stroke_width(3)))?;
            }
            Swatch::Fill(color) => {
                area.draw(&Rectangle::new([(x, y - 8), (x + SWATCH, y + 8)], color.filled()))?;
                area.draw(&Rectangle::new([(x, y - 8), (x + SWATCH, y + 8)], GRID_BOLD))?;
            }
            Swatch::Point(color, marker) => {
                area.draw(&PathElement::new(vec![(x, y), (x + SWATCH, y)], color.stroke_width(2)))?;
                draw_marker(area, (x + SWATCH / 2, y), color, marker)?;
            }
        }
        x += SWATCH + GAP;
        area.draw(&Text::new(
            name.clone(),
            (x, y),
            style.pos(Pos::new(HPos::Left, VPos::Center)),
        ))?;
        x += w + SPACING;
    }
    Ok(())
}

/// One marker at a pixel position of `area` (legends; series draw theirs in data coordinates).
fn draw_marker<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    at: (i32, i32),
    color: RGBColor,
    marker: Marker,
) -> DrawResult<DB> {
    match marker {
        Marker::Circle => area.draw(&Circle::new(at, 4, color.filled())),
        Marker::Cross => area.draw(&Cross::new(at, 4, color.stroke_width(2))),
        Marker::Triangle => area.draw(&TriangleMarker::new(at, 5, color.filled())),
    }
}

/// A marker at each point of a series.
fn draw_markers<'a, DB, X, Y>(
    chart: &mut ChartContext<'a, DB, Cartesian2d<X, Y>>,
    points: &[(X::ValueType, Y::ValueType)],
    color: RGBColor,
    marker: Marker,
    size: i32,
) -> DrawResult<DB>
where
    DB: DrawingBackend + 'a,
    X: Ranged,
    Y: Ranged,
    X::ValueType: Clone + 'static,
    Y::ValueType: Clone + 'static,
{
    let at = points.iter().cloned();
    match marker {
        Marker::Circle => chart.draw_series(at.map(|c| Circle::new(c, size, color.filled())))?,
        Marker::Cross => chart.draw_series(at.map(|c| Cross::new(c, size, color.stroke_width(2))))?,
        Marker::Triangle => chart.draw_series(at.map(|c| TriangleMarker::new(c, size + 1, color.filled())))?,
    };
    Ok(())
}

/// Splits `root` into the title line, an optional legend strip and the body.
fn frame<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    legend: &[(String, Swatch)],
) -> Result<DrawingArea<DB, Shift>, DrawingAreaErrorKind<DB::ErrorType>> {
    let body = root.margin(10, 6, 8, 8).titled(title, font(TITLE_SIZE))?;
    if legend.is_empty() {
        return Ok(body);
    }
    let (strip, rest) = body.split_vertically(LEGEND_HEIGHT);
    draw_legend(&strip, legend)?;
    Ok(rest)
}

/// Draws a panel's title at the top of `area` and returns the room left below it. A title too wide for the panel
/// is set smaller and, failing that, broken after a comma onto a second line, then cut short with "…".
fn titled<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    title: &str,
) -> Result<DrawingArea<DB, Shift>, DrawingAreaErrorKind<DB::ErrorType>> {
    if title.is_empty() {
        return Ok(area.clone());
    }
    let (width, _) = area.dim_in_pixel();
    let room = width.saturating_sub(16);
    let fits = |text: &str, style: &TextStyle| -> Result<bool, DrawingAreaErrorKind<DB::ErrorType>> {
        Ok(area.estimate_text_size(text, style)?.0 <= room)
    };
    let mut chosen: Option<(TextStyle, Vec<String>)> = None;
    for size in [PANEL_TITLE_SIZE, PANEL_TITLE_SIZE - 2.0, PANEL_TITLE_SIZE - 4.0] {
        let style = font(size);
        if fits(title, &style)? {
            chosen = Some((style, vec![title.to_owned()]));
            break;
        }
        // Greedy: as many comma-separated parts on the first line as fit, the rest on the second.
        let parts: Vec<&str> = title.split(", ").collect();
        let mut first = parts[0].to_owned();
        let mut split = 1;
        while split < parts.len() && fits(&format!("{first}, {}", parts[split]), &style)? {
            first = format!("{first}, {}", parts[split]);
            split += 1;
        }
        let second = parts[split..].join(", ");
        if split < parts.len() && fits(&first, &style)? && fits(&second, &style)? {
            chosen = Some((style, vec![format!("{first},"), second]));
            break;
        }
    }
    let (style, lines) = match chosen {
        Some(c) => c,
        None => {
            let style = font(PANEL_TITLE_SIZE - 4.0);
            let mut cut: Vec<char> = title.chars().collect();
            while !cut.is_empty() && !fits(&format!("{}…", cut.iter().collect::<String>()), &style)? {
                cut.pop();
            }
            let line = format!("{}…", cut.iter().collect::<String>());
            (style, vec![line])
        }
    };
    let line_height = area.estimate_text_size("Ag", &style)?.1 as i32 + 4;
    let centred = style.pos(Pos::new(HPos::Center, VPos::Top));
    for (i, line) in lines.iter().enumerate() {
        area.draw(&Text::new(
            line.clone(),
            (width as i32 / 2, 6 + i as i32 * line_height),
            centred.clone(),
        ))?;
    }
    Ok(area.split_vertically(10 + lines.len() as i32 * line_height).1)
}

/// A panel's chart builder with the house margins and label room (titles come from [`titled`]).
fn panel<'a, 'b, DB: DrawingBackend>(area: &'a DrawingArea<DB, Shift>) -> ChartBuilder<'a, 'b, DB> {
    let mut builder = ChartBuilder::on(area);
    builder
        .margin_top(6)
        .margin_bottom(4)
        .margin_left(6)
        .margin_right(18)
        .x_label_area_size(46)
        .y_label_area_size(72);
    builder
}

/// The house mesh: light grid, axis descriptions (with their units) and tick labels.
fn style_mesh<'m, 'a, 'b, X: Ranged, Y: Ranged, DB: DrawingBackend>(
    mesh: &'m mut MeshStyle<'a, 'b, X, Y, DB>,
    x_desc: &str,
    y_desc: &str,
) -> &'m mut MeshStyle<'a, 'b, X, Y, DB> {
    mesh.x_desc(x_desc)
        .y_desc(y_desc)
        .axis_desc_style(font(AXIS_DESC_SIZE))
        .label_style(font(TICK_SIZE))
        .bold_line_style(GRID_BOLD)
        .light_line_style(GRID_LIGHT)
        .axis_style(RGBColor(120, 120, 120))
        .max_light_lines(2)
        .x_labels(8)
        .y_labels(7)
}

/// Tick labels without float noise: `0.3`, not `0.30000000000000004`; thousands as `12k`.
fn format_number(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        return "0".to_owned();
    }
    if a >= 1e6 {
        return format!("{}M", trim_zeros(&format!("{:.2}", v / 1e6)));
    }
    if a >= 1e4 {
        return format!("{}k", trim_zeros(&format!("{:.1}", v / 1e3)));
    }
    let decimals = (3 - a.log10().floor() as i32).clamp(0, 6) as usize;
    trim_zeros(&format!("{v:.decimals$}"))
}

/// Three to seven round numbers (steps of 1, 2 or 5 × 10ⁿ) within [lo, hi]; lo and hi themselves when the range
/// is too narrow for that.
fn linear_ticks(lo: f64, hi: f64) -> Vec<f64> {
    if hi.partial_cmp(&lo) != Some(std::cmp::Ordering::Greater) {
        return vec![lo];
    }
    let base = 10f64.powf((hi - lo).log10().floor() - 1.0);
    for step in [1.0, 2.0, 5.0, 10.0, 20.0, 50.0].map(|m| m * base) {
        let first = (lo / step).ceil() as i64;
        let last = (hi / step).floor() as i64;
        let count = last - first + 1;
        if (3..=7).contains(&count) {
            return (first..=last).map(|k| k as f64 * step).collect();
        }
    }
    vec![lo, hi]
}

fn trim_zeros(s: &str) -> String {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        s.to_owned()
    }
}

fn tick(v: &f64) -> String {
    format_number(*v)
}

/// Rows and columns for `n` panels in an area of the given shape: panels close to 4:3, few empty cells.
fn grid(n: usize, (width, height): (u32, u32)) -> (usize, usize) {
    let n = n.max(1);
    let score = |cols: usize| {
        let rows = n.div_ceil(cols);
        let aspect = (width as f64 / cols as f64) / (height as f64 / rows as f64);
        (aspect / 1.33).ln().abs() + 0.3 * (rows * cols - n) as f64
    };
    let cols = (1..=n).min_by(|a, b| score(*a).total_cmp(&score(*b))).unwrap_or(1);
    (n.div_ceil(cols), cols)
}

/// The figure size for a grid of panels: the default, grown so no panel gets smaller than about 280 × 250.
fn grid_size(rows: usize, cols: usize) -> (u32, u32) {
    (
        DEFAULT_SIZE.0.max(cols as u32 * 280 + 40),
        DEFAULT_SIZE.1.max(rows as u32 * 250 + 110),
    )
}

/// Milliseconds or seconds for a time axis, whichever keeps its numbers short.
#[derive(Clone, Copy, Debug)]
struct TimeUnit {
    per_ms: f64,
    name: &'static str,
}

impl TimeUnit {
    fn for_span_ms(span_ms: f64) -> TimeUnit {
        if span_ms >= 2000.0 {
            TimeUnit {
                per_ms: 1e-3,
                name: "s",
            }
        } else {
            TimeUnit {
                per_ms: 1.0,
                name: "ms",
            }
        }
    }

    fn of(self, ms: f64) -> f64 {
        ms * self.per_ms
    }
}

/// Upper end of a value axis: a little room above the largest value, and a usable range when all are zero.
fn headroom(max: f64) -> f64 {
    if max.is_finite() && max > 0.0 { max * 1.08 } else { 1.0 }
}

/// A shape style for filled bars.
fn filled(color: RGBColor) -> ShapeStyle {
    color.filled()
}

#[cfg(test)]
mod tests;
