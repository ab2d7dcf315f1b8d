//! The PNG path. plotters' bitmap backend draws aliased lines and, through ab_glyph in 0.3.7, places each glyph
//! without its left side bearing and with the baseline half a font size below the text's top — gaps of a pixel or
//! two inside words ("TTF T") and text sitting high. So charts are drawn at twice their size through
//! [`Supersampled`], which sets text glyph by glyph at the bearings read from the embedded font, then averaged down:
//! smooth lines, evenly spaced text. The SVG path needs none of this (the viewer sets its own text).

use super::{ChartError, FONT_BYTES, Figure, draw_error};
use plotters::backend::{BitMapBackend, DrawingBackend};
use plotters::drawing::IntoDrawingArea;
use plotters::style::text_anchor::{HPos, VPos};
use plotters::style::{FontDesc, WHITE};
use plotters_backend::{BackendColor, BackendCoord, BackendStyle, BackendTextStyle, DrawingErrorKind};
use std::path::Path;
use std::sync::OnceLock;

/// Drawing pixels per output pixel, along each axis.
const K: i32 = 2;

/// Draws `figure` into the PNG file `path`.
pub(super) fn write_png<F: Figure>(figure: &F, path: &Path) -> Result<(), ChartError> {
    let (w, h) = figure.size();
    let mut big = vec![255u8; (w * h) as usize * 3 * (K * K) as usize];
    {
        let inner = BitMapBackend::with_buffer(&mut big, (w * K as u32, h * K as u32));
        let root = Supersampled { inner, size: (w, h) }.into_drawing_area();
        root.fill(&WHITE)
            .and_then(|()| figure.draw(&root))
            .and_then(|()| root.present())
            .map_err(draw_error)?;
    }
    let small = downsample(&big, w as usize, h as usize);
    let mut out = BitMapBackend::new(path, (w, h));
    out.blit_bitmap((0, 0), (w, h), &small)
        .and_then(|()| out.present())
        .map_err(|e| ChartError::Draw(Box::new(e)))
}

/// Each output pixel is the mean of its K × K drawn pixels (RGB, 8 bits, rounded).
fn downsample(big: &[u8], w: usize, h: usize) -> Vec<u8> {
    let k = K as usize;
    let big_w = w * k;
    let mut out = vec![0u8; w * h * 3];
    for y in 0..h {
        for x in 0..w {
            for c in 0..3 {
                let mut sum = 0u32;
                for dy in 0..k {
                    for dx in 0..k {
                        sum += u32::from(big[((y * k + dy) * big_w + x * k + dx) * 3 + c]);
                    }
                }
                out[(y * w + x) * 3 + c] = ((sum + (k * k) as u32 / 2) / (k * k) as u32) as u8;
            }
        }
    }
    out
}

/// A backend of the chart's size that draws onto a bitmap K times larger: coordinates, stroke widths, radii and
/// font sizes scaled by K. Charts lay themselves out in output pixels, unaware of the scaling.
struct Supersampled<'a> {
    inner: BitMapBackend<'a>,
    size: (u32, u32),
}

/// A style with its stroke widened K times.
struct Wide<'s, S>(&'s S);

impl<S: BackendStyle> BackendStyle for Wide<'_, S> {
    fn color(&self) -> BackendColor {
        self.0.color()
    }

    fn stroke_width(&self) -> u32 {
        self.0.stroke_width() * K as u32
    }
}

/// The centre of an output pixel on the big bitmap: where lines and shapes through that pixel go.
fn centre((x, y): BackendCoord) -> BackendCoord {
    (x * K + K / 2, y * K + K / 2)
}

fn corner((x, y): BackendCoord) -> BackendCoord {
    (x * K, y * K)
}

type Drawn<E> = Result<(), DrawingErrorKind<E>>;

impl DrawingBackend for Supersampled<'_> {
    type ErrorType = <BitMapBackend<'static> as DrawingBackend>::ErrorType;

    fn get_size(&self) -> (u32, u32) {
        self.size
    }

    fn ensure_prepared(&mut self) -> Drawn<Self::ErrorType> {
        self.inner.ensure_prepared()
    }

    fn present(&mut self) -> Drawn<Self::ErrorType> {
        self.inner.present()
    }

    fn draw_pixel(&mut self, point: BackendCoord, color: BackendColor) -> Drawn<Self::ErrorType> {
        let (x, y) = corner(point);
        // The bitmap fills rectangles up to, not including, the bottom-right corner.
        self.inner.draw_rect((x, y), (x + K, y + K), &color, true)
    }

    fn draw_line<S: BackendStyle>(
        &mut self,
        from: BackendCoord,
        to: BackendCoord,
        style: &S,
    ) -> Drawn<Self::ErrorType> {
        self.inner.draw_line(centre(from), centre(to), &Wide(style))
    }

    fn draw_rect<S: BackendStyle>(
        &mut self,
        upper_left: BackendCoord,
        bottom_right: BackendCoord,
        style: &S,
        fill: bool,
    ) -> Drawn<Self::ErrorType> {
        if fill {
            // Filled: the same pixels an SVG rect of that corner and size covers.
            self.inner
                .draw_rect(corner(upper_left), corner(bottom_right), style, true)
        } else {
            self.inner
                .draw_rect(centre(upper_left), centre(bottom_right), &Wide(style), false)
        }
    }

    fn draw_path<S: BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        path: I,
        style: &S,
    ) -> Drawn<Self::ErrorType> {
        self.inner.draw_path(path.into_iter().map(centre), &Wide(style))
    }

    fn draw_circle<S: BackendStyle>(
        &mut self,
        center: BackendCoord,
        radius: u32,
        style: &S,
        fill: bool,
    ) -> Drawn<Self::ErrorType> {
        self.inner
            .draw_circle(centre(center), radius * K as u32, &Wide(style), fill)
    }

    fn fill_polygon<S: BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        vert: I,
        style: &S,
    ) -> Drawn<Self::ErrorType> {
        self.inner.fill_polygon(vert.into_iter().map(centre), style)
    }

    fn draw_text<T: BackendTextStyle>(&mut self, text: &str, style: &T, pos: BackendCoord) -> Drawn<Self::ErrorType> {
        let color = style.color();
        if color.alpha == 0.0 {
            return Ok(());
        }
        let size = style.size() * f64::from(K);
        let font = FontDesc::new(style.family(), size, style.style());
        let Some(metrics) = FontMetrics::get() else {
            // Without the font's metrics, plotters' own placement: uneven, but every glyph is there.
            let scaled = font.color(&plotters::style::RGBAColor(
                color.rgb.0,
                color.rgb.1,
                color.rgb.2,
                color.alpha,
            ));
            let scaled = scaled.transform(style.transform()).pos(style.anchor());
            return self.inner.draw_text(text, &scaled, corner(pos));
        };
        // ab_glyph scales a font so that ascent − descent spans `size` pixels.
        let scale = size / metrics.height;
        let mut pens = Vec::with_capacity(text.len());
        let mut pen = 0.0;
        for c in text.chars() {
            pens.push(pen);
            pen += metrics.advance(c) * scale;
        }
        let width = pen.round() as i32;
        // The height plotters assumes when it lays text out (`size / 1.24`), so anchoring agrees with its layout.
        let height = (size / 1.24) as i32;
        let anchor = style.anchor();
        let dx = match anchor.h_pos {
            HPos::Left => 0,
            HPos::Right => -width,
            HPos::Center => -width / 2,
        };
        let dy = match anchor.v_pos {
            VPos::Top => 0,
            VPos::Center => -height / 2,
            VPos::Bottom => -height,
        };
        // plotters draws the baseline `size / 2` below the top of the text; a capital's height below reads right.
        let baseline = (metrics.cap_height * scale - size / 2.0).round() as i32;
        let transform = style.transform();
        let origin = corner(pos);
        let (w, h) = self.inner.get_size();
        let mut glyph = [0u8; 4];
        for (c, pen) in text.chars().zip(pens) {
            if c.is_whitespace() {
                continue;
            }
            // ab_glyph rasterises a glyph from the left of its ink box, `floor(bearing)` right of the pen; the
            // fraction is in the coverage it returns.
            let left = pen.round() as i32 + (metrics.bearing(c) * scale).floor() as i32 + dx;
            let inner = &mut self.inner;
            let drawn = font.draw(c.encode_utf8(&mut glyph), (0, 0), |x, y, coverage| {
                let (tx, ty) = transform.transform(left + x, y + dy + baseline);
                let (px, py) = (origin.0 + tx, origin.1 + ty);
                if px >= 0 && py >= 0 && (px as u32) < w && (py as u32) < h {
                    inner.draw_pixel((px, py), color.mix(f64::from(coverage)))
                } else {
                    Ok(())
                }
            });
            match drawn {
                Ok(result) => result?,
                Err(e) => return Err(DrawingErrorKind::FontError(Box::new(e))),
            }
        }
        Ok(())
    }
}

/// What text placement needs from the embedded font, read from its tables: `hhea` (ascent, descent, metric count),
/// `hmtx` (advance and left side bearing per glyph), `cmap` format 4 (character → glyph), and the top of `H` from
/// `loca`/`glyf` (capital height). In font units.
struct FontMetrics {
    height: f64,
    cap_height: f64,
    cmap: &'static [u8],
    hmtx: &'static [u8],
    long_metrics: usize,
}

impl FontMetrics {
    fn get() -> Option<&'static FontMetrics> {
        static METRICS: OnceLock<Option<FontMetrics>> = OnceLock::new();
        METRICS.get_or_init(|| FontMetrics::parse(FONT_BYTES)).as_ref()
    }

    fn parse(font: &'static [u8]) -> Option<FontMetrics> {
        let table = |tag: &[u8; 4]| -> Option<&'static [u8]> {
            let tables = usize::from(be16(font, 4)?);
            (0..tables).find_map(|i| {
                let record = 12 + 16 * i;
                if font.get(record..record + 4)? != tag {
                    return None;
                }
                let offset = be32(font, record + 8)? as usize;
                let length = be32(font, record + 12)? as usize;
                font.get(offset..offset + length)
            })
        };
        let hhea = table(b"hhea")?;
        let ascent = f64::from(be16(hhea, 4)? as i16);
        let descent = f64::from(be16(hhea, 6)? as i16);
        let long_metrics = usize::from(be16(hhea, 34)?);
        let cmap_table = table(b"cmap")?;
        // The Windows Unicode BMP subtable (platform 3, encoding 1), or Unicode (platform 0) — both format 4.
        let cmap = (0..usize::from(be16(cmap_table, 2)?)).find_map(|i| {
            let record = 4 + 8 * i;
            let platform = be16(cmap_table, record)?;
            let encoding = be16(cmap_table, record + 2)?;
            let sub = cmap_table.get(be32(cmap_table, record + 4)? as usize..)?;
            ((platform == 3 && encoding == 1 || platform == 0) && be16(sub, 0)? == 4).then_some(sub)
        })?;
        let mut metrics = FontMetrics {
            height: ascent - descent,
            cap_height: 0.0,
            cmap,
            hmtx: table(b"hmtx")?,
            long_metrics,
        };
        let head = table(b"head")?;
        let loca = table(b"loca")?;
        let glyf = table(b"glyf")?;
        let h = usize::from(metrics.glyph('H')?);
        let offset = if be16(head, 50)? == 0 {
            usize::from(be16(loca, 2 * h)?) * 2
        } else {
            be32(loca, 4 * h)? as usize
        };
        metrics.cap_height = f64::from(be16(glyf, offset + 8)? as i16);
        (metrics.height > 0.0 && metrics.cap_height > 0.0).then_some(metrics)
    }

    /// The glyph of `c` (0, the missing glyph, when the font lacks it).
    fn glyph(&self, c: char) -> Option<u16> {
        let c = u16::try_from(u32::from(c)).ok()?;
        let t = self.cmap;
        let segments = usize::from(be16(t, 6)? / 2);
        let ends = 14;
        let starts = ends + 2 * segments + 2;
        let deltas = starts + 2 * segments;
        let ranges = deltas + 2 * segments;
        for s in 0..segments {
            if be16(t, ends + 2 * s)? < c {
                continue;
            }
            let start = be16(t, starts + 2 * s)?;
            if start > c {
                return Some(0);
            }
            let delta = be16(t, deltas + 2 * s)?;
            let range = usize::from(be16(t, ranges + 2 * s)?);
            if range == 0 {
                return Some(c.wrapping_add(delta));
            }
            let at = ranges + 2 * s + range + 2 * usize::from(c - start);
            let g = be16(t, at)?;
            return Some(if g == 0 { 0 } else { g.wrapping_add(delta) });
        }
        Some(0)
    }

    fn advance(&self, c: char) -> f64 {
        let g = usize::from(self.glyph(c).unwrap_or(0)).min(self.long_metrics.saturating_sub(1));
        f64::from(be16(self.hmtx, 4 * g).unwrap_or(0))
    }

    fn bearing(&self, c: char) -> f64 {
        let g = usize::from(self.glyph(c).unwrap_or(0));
        let at = if g < self.long_metrics {
            4 * g + 2
        } else {
            4 * self.long_metrics + 2 * (g - self.long_metrics)
        };
        f64::from(be16(self.hmtx, at).unwrap_or(0) as i16)
    }
}

fn be16(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(bytes.get(at..at + 2)?.try_into().ok()?))
}

fn be32(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn font_metrics_agree_with_the_rasteriser() {
        super::super::register_font().unwrap();
        let m = FontMetrics::get().expect("the embedded font's tables parse");
        assert!(m.glyph('n').unwrap() != 0 && m.glyph('H').unwrap() != 0);
        assert_eq!(
            m.glyph('\u{e000}'),
            Some(0),
            "a private-use character is not in DejaVu Sans"
        );
        // Widths as plotters (ab_glyph) lays text out, with a letter that has no kerning pairs.
        for size in [13.0, 26.0, 100.0] {
            let font = FontDesc::new(
                plotters::style::FontFamily::SansSerif,
                size,
                plotters::style::FontStyle::Normal,
            );
            let ((x0, _), (x1, _)) = font.layout_box("nnnnnnnnnn").unwrap();
            let ours = 10.0 * m.advance('n') * size / m.height;
            assert!(
                (f64::from(x1 - x0) - ours).abs() <= 1.0,
                "size {size}: {} vs {ours}",
                x1 - x0
            );
        }
        // DejaVu Sans: capitals are 0.73 em tall, `n` starts 0.09 em right of the pen.
        let em = 2048.0;
        assert!((m.cap_height / em - 0.729).abs() < 0.01, "{}", m.cap_height);
        assert!((m.bearing('n') / em - 0.09).abs() < 0.02, "{}", m.bearing('n'));
    }

    #[test]
    fn downsampling_averages_blocks() {
        // 2 × 1 output pixels from a 4 × 2 bitmap: black/white checks average to mid-grey, white stays white.
        let mut big = vec![255u8; 4 * 2 * 3];
        for (x, y) in [(0, 0), (1, 1)] {
            big[(y * 4 + x) * 3..(y * 4 + x) * 3 + 3].fill(0);
        }
        assert_eq!(downsample(&big, 2, 1), [128, 128, 128, 255, 255, 255]);
    }
}
