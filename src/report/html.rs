//! `report.html`: one self-contained page — the findings, the charts (PNG inlined as `data:` URIs), the runs' key
//! metrics and every summary column in tables sortable by clicking a header, and links to each run's files.
//!
//! Self-contained means it loads nothing: no stylesheet, script, font or image from anywhere, not even from the
//! results folder (links to the Parquet files are only followed when clicked). The CSS and the sorting script are
//! inline; fonts are the system's. The same results give the same bytes.

use super::findings::Finding;
use super::mdreport::{KEY_METRICS, distinguishing_labels, report_title};
use super::render::{Format, MISSING, SummaryView, ViewColumn, url_path};
use super::{Chart, ReportError, Results, write_atomically};
use std::fmt::Write as _;
use std::fs;
use std::io::Write;
use std::path::Path;

/// Text safe in element content and in double-quoted attribute values (the only kind this page writes, so an
/// apostrophe stays as it is).
pub(super) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}

/// Standard base64 (RFC 4648, with padding), for `data:` URIs.
pub(super) fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A PNG's width and height from its header, so the page reserves the image's space before decoding it.
fn png_size(png: &[u8]) -> Option<(u32, u32)> {
    const SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";
    if png.len() < 24 || &png[..8] != SIGNATURE || &png[12..16] != b"IHDR" {
        return None;
    }
    let be = |at: usize| u32::from_be_bytes([png[at], png[at + 1], png[at + 2], png[at + 3]]);
    Some((be(16), be(20)))
}

const STYLE: &str = r#"
:root { --fg: #1f2328; --muted: #59636e; --line: #d1d9e0; --bg-alt: #f6f8fa; --accent: #0969da; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--fg); background: #fff; line-height: 1.5;
  font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
header, main, footer { max-width: 1440px; margin: 0 auto; padding: 0 24px; }
header { padding-top: 24px; }
h1 { font-size: 26px; margin: 0 0 4px; }
h2 { font-size: 20px; margin: 32px 0 12px; padding-bottom: 4px; border-bottom: 1px solid var(--line); }
.shared { color: var(--muted); margin: 0; }
a { color: var(--accent); }
ul.findings { margin: 0; padding: 0; list-style: none; }
ul.findings li { margin: 0 0 8px; padding: 8px 12px; border-left: 4px solid var(--accent); background: var(--bg-alt);
  border-radius: 0 6px 6px 0; }
ul.findings li.overview { border-left-color: #1a7f37; font-weight: 600; }
.charts { display: grid; grid-template-columns: repeat(auto-fill, minmax(560px, 1fr)); gap: 24px; }
figure { margin: 0; }
figure img { display: block; max-width: 100%; height: auto; border: 1px solid var(--line); border-radius: 6px; }
figcaption { color: var(--muted); font-size: 14px; margin-top: 6px; }
figcaption strong { color: var(--fg); }
.scroll { display: inline-block; vertical-align: top; max-width: 100%; overflow: auto; max-height: 80vh;
  border: 1px solid var(--line); border-radius: 6px; }
table { border-collapse: collapse; font-size: 13px; font-variant-numeric: tabular-nums; white-space: nowrap; }
th, td { padding: 4px 8px; border-bottom: 1px solid var(--line); text-align: left; }
td.num, th.num { text-align: right; }
td.null { color: var(--muted); }
thead th { position: sticky; top: 0; background: var(--bg-alt); box-shadow: inset 0 -1px 0 var(--line); }
.sortable thead th { cursor: pointer; user-select: none; }
.sortable thead th:hover { background: #eaeef2; }
.sortable thead th::after { content: " \2195"; color: #afb8c1; }
.sortable thead th[aria-sort="ascending"]::after { content: " \25B2"; color: var(--fg); }
.sortable thead th[aria-sort="descending"]::after { content: " \25BC"; color: var(--fg); }
tbody tr:nth-child(even) { background: #fbfcfd; }
tbody tr:hover { background: #eef4ff; }
.note { color: var(--muted); font-size: 14px; }
footer { color: var(--muted); font-size: 13px; padding-top: 24px; padding-bottom: 32px; }
"#;

/// Sorts a table by the clicked header, ascending then descending; numbers by their exact value (`data-v`), text
/// with numeric collation (r2 before r10); empty cells last either way. The sort is stable, so ties keep the
/// previous order.
const SCRIPT: &str = r#"
"use strict";
document.querySelectorAll("table.sortable").forEach(function (table) {
  var heads = Array.prototype.slice.call(table.tHead.rows[0].cells);
  heads.forEach(function (th, col) {
    th.tabIndex = 0;
    function sort() {
      var dir = th.getAttribute("aria-sort") === "ascending" ? -1 : 1;
      heads.forEach(function (h) { h.removeAttribute("aria-sort"); });
      th.setAttribute("aria-sort", dir === 1 ? "ascending" : "descending");
      var numeric = th.classList.contains("num");
      var body = table.tBodies[0];
      var rows = Array.prototype.slice.call(body.rows);
      rows.sort(function (a, b) {
        var x = a.cells[col], y = b.cells[col];
        if (numeric) {
          var u = x.getAttribute("data-v"), v = y.getAttribute("data-v");
          if (u === null || v === null) { return (u === null) - (v === null); }
          return dir * (Number(u) - Number(v));
        }
        return dir * x.textContent.localeCompare(y.textContent, "en", { numeric: true });
      });
      rows.forEach(function (r) { body.appendChild(r); });
    }
    th.addEventListener("click", sort);
    th.addEventListener("keydown", function (e) {
      if (e.key === "Enter" || e.key === " ") { e.preventDefault(); sort(); }
    });
  });
});
"#;

/// A table cell: numbers right-aligned and carrying their exact value for sorting.
pub(super) fn cell(text: Option<&str>, number: Option<f64>) -> String {
    match (text, number) {
        (None, _) => format!("<td class=\"null\">{MISSING}</td>"),
        (Some(text), Some(v)) if v.is_finite() => format!("<td class=\"num\" data-v=\"{v:?}\">{}</td>", escape(text)),
        (Some(text), Some(_)) => format!("<td class=\"num\">{}</td>", escape(text)),
        (Some(text), None) => format!("<td>{}</td>", escape(text)),
    }
}

fn label_cell(column: &ViewColumn, row: usize) -> String {
    let number = column.numbers.as_ref().and_then(|n| n[row]);
    cell(column.text[row].as_deref(), number)
}

fn metric_cell(column: &ViewColumn, row: usize) -> String {
    let number = column.numbers.as_ref().and_then(|n| n[row]);
    match (&column.numbers, number) {
        (Some(_), Some(v)) => {
            let text = Format::of_column(&column.name, column.integer).write(Some(v));
            cell(Some(&text), Some(v))
        }
        (Some(_), None) => cell(None, None),
        (None, _) => cell(column.text[row].as_deref(), None),
    }
}

pub(super) fn header(name: &str, title: Option<&str>, numeric: bool) -> String {
    let class = if numeric { " class=\"num\"" } else { "" };
    let title = title.map_or_else(String::new, |t| format!(" title=\"{}\"", escape(t)));
    format!("<th scope=\"col\"{class}{title}>{}</th>", escape(name))
}

/// A table of ready header and body cells, sortable by clicking a header when `sortable`.
pub(super) fn table(headers: &[String], rows: &[Vec<String>], sortable: bool) -> String {
    let class = if sortable { " class=\"sortable\"" } else { "" };
    let mut out = format!("<div class=\"scroll\"><table{class}>\n<thead><tr>");
    for h in headers {
        out.push_str(h);
    }
    out.push_str("</tr></thead>\n<tbody>\n");
    for row in rows {
        out.push_str("<tr>");
        for c in row {
            out.push_str(c);
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody></table></div>\n");
    out
}

/// The runs' key metrics: the markdown table's columns.
fn key_table(view: &SummaryView) -> String {
    let labels = distinguishing_labels(view);
    let mut headers = vec![header("run", None, false)];
    headers.extend(labels.iter().map(|c| header(&c.name, None, c.is_numeric())));
    headers.extend(
        KEY_METRICS
            .iter()
            .map(|(title, column)| header(title, Some(column), true)),
    );
    let rows: Vec<Vec<String>> = (0..view.rows())
        .map(|row| {
            let mut cells = vec![cell(Some(&view.runs[row]), None)];
            cells.extend(labels.iter().map(|c| label_cell(c, row)));
            for (_, column) in KEY_METRICS {
                cells.push(match view.metric(column) {
                    Some(c) => metric_cell(c, row),
                    None => cell(None, None),
                });
            }
            cells
        })
        .collect();
    table(&headers, &rows, true)
}

/// Every summary column, as `summary.csv` has them.
fn full_table(view: &SummaryView) -> String {
    let mut headers = vec![header("run", None, false)];
    headers.extend(view.labels.iter().map(|c| header(&c.name, None, c.is_numeric())));
    headers.extend(view.metrics.iter().map(|c| header(&c.name, None, c.is_numeric())));
    let rows: Vec<Vec<String>> = (0..view.rows())
        .map(|row| {
            let mut cells = vec![cell(Some(&view.runs[row]), None)];
            cells.extend(view.labels.iter().map(|c| label_cell(c, row)));
            cells.extend(view.metrics.iter().map(|c| metric_cell(c, row)));
            cells
        })
        .collect();
    table(&headers, &rows, true)
}

/// A link to `path` relative to the page's folder, when the file exists.
fn file_link(folder: &Path, path: &Path, text: &str) -> Option<String> {
    path.is_file()
        .then(|| format!("<a href=\"{}\">{}</a>", escape(&url_path(folder, path)), escape(text)))
}

/// Each run's files, and the summary's.
fn files_section(results: &Results, view: &SummaryView, folder: &Path) -> String {
    let mut out = String::new();
    let summary: Vec<String> = [
        "summary.csv",
        "summary.parquet",
        "summary.json",
        "metrics.prom",
        "report.md",
    ]
    .iter()
    .filter_map(|name| file_link(folder, &results.dir.join(name), name))
    .collect();
    if !summary.is_empty() {
        let _ = writeln!(out, "<p>Summary: {}</p>", summary.join(" · "));
    }
    if view.rows() == 0 {
        return out;
    }
    let labels = distinguishing_labels(view);
    const FILES: [&str; 4] = ["requests.parquet", "steps.parquet", "tokens.parquet", "trace.json"];
    let mut headers = vec![header("run", None, false)];
    headers.extend(labels.iter().map(|c| header(&c.name, None, c.is_numeric())));
    headers.push(header("files", None, false));
    let rows: Vec<Vec<String>> = (0..view.rows())
        .map(|row| {
            let name = &view.runs[row];
            let mut cells = vec![cell(Some(name), None)];
            cells.extend(labels.iter().map(|c| label_cell(c, row)));
            let run_dir = results.dir.join("runs").join(name);
            let links: Vec<String> = FILES
                .iter()
                .filter_map(|file| file_link(folder, &run_dir.join(file), file))
                .collect();
            cells.push(format!("<td>{}</td>", links.join(" · ")));
            cells
        })
        .collect();
    // Links and labels only: nothing worth sorting.
    out.push_str(&table(&headers, &rows, false));
    out.push_str(
        "<p class=\"note\">trace.json opens in Perfetto (ui.perfetto.dev) or chrome://tracing: one track per step \
         kind and per request.</p>\n",
    );
    out
}

/// The page's text.
pub(super) fn html(
    results: &Results,
    charts: &[Chart],
    findings: &[Finding],
    folder: &Path,
) -> Result<String, ReportError> {
    let view = SummaryView::new(&results.summary);
    let title = report_title(&view);
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>{}</title>\n\
         <style>{STYLE}</style>\n</head>\n<body>\n<header>\n<h1>{}</h1>\n",
        escape(&title),
        escape(&title)
    );
    let shared: Vec<String> = view
        .shared_labels()
        .into_iter()
        .map(|(name, value)| format!("{name} = {value}"))
        .collect();
    if !shared.is_empty() {
        let _ = writeln!(out, "<p class=\"shared\">{}</p>", escape(&shared.join(" · ")));
    }
    out.push_str("</header>\n<main>\n<section id=\"findings\">\n<h2>Findings</h2>\n");
    if findings.is_empty() {
        let why = if view.rows() == 0 {
            "the results have no runs"
        } else {
            "no summary values to compare"
        };
        let _ = writeln!(out, "<p class=\"note\">None: {why}.</p>");
    } else {
        out.push_str("<ul class=\"findings\">\n");
        for finding in findings {
            let class = match finding.kind {
                super::findings::FindingKind::Overview => " class=\"overview\"",
                _ => "",
            };
            let _ = writeln!(out, "<li{class}>{}</li>", escape(&finding.text));
        }
        out.push_str("</ul>\n");
    }
    out.push_str("</section>\n");

    if let Some(validation) = &results.validation {
        out.push_str("<section id=\"validation\">\n<h2>Validation: simulated against measured</h2>\n");
        out.push_str(&super::validation::html(validation));
        out.push_str("</section>\n");
    }

    if !charts.is_empty() {
        out.push_str("<section id=\"charts\">\n<h2>Charts</h2>\n<div class=\"charts\">\n");
        for chart in charts {
            let png = fs::read(&chart.png).map_err(|source| ReportError::Io {
                path: chart.png.clone(),
                source,
            })?;
            let size = png_size(&png).map_or_else(String::new, |(w, h)| format!(" width=\"{w}\" height=\"{h}\""));
            let svg = file_link(folder, &chart.svg, "SVG").map_or_else(String::new, |link| format!(" ({link})"));
            let _ = writeln!(
                out,
                "<figure id=\"chart-{}\">\n<img src=\"data:image/png;base64,{}\" alt=\"{}\"{size}>\n\
                 <figcaption><strong>{}.</strong> {}{svg}</figcaption>\n</figure>",
                escape(&chart.id),
                base64(&png),
                escape(&chart.title),
                escape(&chart.title),
                escape(&chart.caption),
            );
        }
        out.push_str("</div>\n</section>\n");
    }

    out.push_str("<section id=\"runs\">\n<h2>Runs</h2>\n");
    if view.rows() == 0 {
        out.push_str("<p class=\"note\">No runs.</p>\n");
    } else {
        out.push_str("<p class=\"note\">Click a header to sort; hover a metric header for its summary column.</p>\n");
        out.push_str(&key_table(&view));
        out.push_str("<h2>All summary columns</h2>\n");
        out.push_str(&full_table(&view));
    }
    out.push_str("</section>\n<section id=\"files\">\n<h2>Files</h2>\n");
    out.push_str(&files_section(results, &view, folder));
    let _ = write!(
        out,
        "</section>\n</main>\n<footer>Written by batchlab {}.</footer>\n<script>{SCRIPT}</script>\n</body>\n</html>\n",
        env!("CARGO_PKG_VERSION")
    );
    Ok(out)
}

/// Writes `report.html`; links to the results' files are relative to the folder of `path`.
pub fn write_html(results: &Results, charts: &[Chart], findings: &[Finding], path: &Path) -> Result<(), ReportError> {
    let text = html(results, charts, findings, path.parent().unwrap_or(Path::new("")))?;
    write_atomically(path, |file| Ok(file.write_all(text.as_bytes())?))
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::report::findings::findings;
    use crate::report::render::fixture;
    use crate::report::render_report;
    use plotters::prelude::{BitMapBackend, IntoDrawingArea, RED};
    use polars::prelude::{Column, DataFrame, PlSmallStr};

    /// A real (tiny) PNG chart under `<dir>/charts/`, with text the page must escape.
    pub(in crate::report) fn demo_chart(dir: &Path) -> Chart {
        let charts = dir.join("charts");
        fs::create_dir_all(&charts).unwrap();
        let png = charts.join("demo.png");
        let root = BitMapBackend::new(&png, (64, 48)).into_drawing_area();
        root.fill(&RED).unwrap();
        root.present().unwrap();
        drop(root);
        let svg = charts.join("demo.svg");
        fs::write(&svg, "<svg xmlns=\"http://www.w3.org/2000/svg\"/>").unwrap();
        Chart {
            id: "demo".into(),
            title: "A <demo> chart".into(),
            caption: "Red & square.".into(),
            png,
            svg,
        }
    }

    /// Checks that every element opened is closed in order (void elements aside), attributes are quoted, and the
    /// raw text of `<script>` and `<style>` holds no closing tag of its own; returns the element names in order.
    fn check_well_formed(html: &str) -> Vec<String> {
        const VOID: [&str; 3] = ["meta", "img", "br"];
        let mut stack: Vec<String> = Vec::new();
        let mut seen = Vec::new();
        let mut rest = html.strip_prefix("<!DOCTYPE html>\n").expect("doctype first");
        while let Some(open) = rest.find('<') {
            assert!(!rest[..open].contains('>'), "stray > in {:?}", &rest[..open]);
            rest = &rest[open..];
            let close = rest.find('>').expect("unterminated tag");
            let tag = &rest[1..close];
            rest = &rest[close + 1..];
            if let Some(name) = tag.strip_prefix('/') {
                assert_eq!(stack.pop().as_deref(), Some(name), "</{name}> closes the wrong element");
                continue;
            }
            let name: String = tag.chars().take_while(|c| c.is_ascii_alphanumeric()).collect();
            assert!(!name.is_empty(), "bad tag <{tag}>");
            // Every attribute value is double-quoted: outside quotes there is no other `=` form.
            let mut quoted = false;
            let bytes = tag.as_bytes();
            for (i, &b) in bytes.iter().enumerate() {
                if b == b'"' {
                    quoted = !quoted;
                } else if b == b'=' && !quoted {
                    assert_eq!(bytes.get(i + 1), Some(&b'"'), "unquoted attribute in <{tag}>");
                }
            }
            assert!(!quoted, "unbalanced quotes in <{tag}>");
            seen.push(name.clone());
            if name == "script" || name == "style" {
                let end = format!("</{name}>");
                let at = rest.find(&end).expect("raw text element not closed");
                assert!(!rest[..at].contains("</"), "closing tag inside <{name}>");
                rest = &rest[at + end.len()..];
            } else if !VOID.contains(&name.as_str()) {
                stack.push(name);
            }
        }
        assert!(stack.is_empty(), "unclosed: {stack:?}");
        seen
    }

    #[test]
    fn the_page_is_self_contained_and_holds_everything() {
        let tmp = tempfile::tempdir().unwrap();
        let (runs, results) = fixture::sweep(tmp.path());
        let dir = results.dir.clone();
        let chart = demo_chart(&dir);
        let charts = vec![chart.clone()];
        let written = render_report(&dir, |_| Ok(charts.clone())).unwrap();
        let html = fs::read_to_string(&written.html).unwrap();

        // Nothing is loaded from anywhere: no URL scheme, no external script or stylesheet, images only inline.
        for forbidden in [
            "http://",
            "https://",
            "<script src",
            "<link",
            "url(",
            "@import",
            "<iframe",
            "<object",
        ] {
            assert!(!html.contains(forbidden), "report.html contains {forbidden:?}");
        }
        for (at, _) in html.match_indices("src=") {
            assert!(html[at..].starts_with("src=\"data:image/png;base64,"), "non-inline src");
        }
        let elements = check_well_formed(&html);
        assert_eq!(elements.iter().filter(|e| *e == "script").count(), 1);
        assert!(html.starts_with("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">"));

        // Findings first, every one of them, then the chart, then the tables.
        let found = findings(&results);
        assert!(!found.is_empty());
        let mut last = 0;
        for finding in &found {
            let at = html
                .find(&format!("<li>{}</li>", escape(&finding.text)))
                .or_else(|| html.find(&format!("<li class=\"overview\">{}</li>", escape(&finding.text))))
                .unwrap_or_else(|| panic!("finding missing: {}", finding.text));
            assert!(at > last);
            last = at;
        }
        let png = fs::read(&chart.png).unwrap();
        let img = html
            .find(&format!("src=\"data:image/png;base64,{}\"", base64(&png)))
            .expect("chart inline");
        assert!(img > last);
        assert!(html.contains("alt=\"A &lt;demo&gt; chart\" width=\"64\" height=\"48\""));
        assert!(html.contains("Red &amp; square."));
        assert!(html.contains("<a href=\"charts/demo.svg\">SVG</a>"));
        let tables = html.find("<table class=\"sortable\">").unwrap();
        assert!(tables > img);

        // The scenario name only appears escaped.
        assert!(!html.contains(fixture::SCENARIO));
        assert!(html.contains(&escape(fixture::SCENARIO)));

        // Every run in the key table, the full table and the files table, with links to its files.
        for run in &runs {
            assert_eq!(
                html.matches(&format!("<tr><td>{}</td>", run.name)).count(),
                3,
                "{}",
                run.name
            );
            for file in ["requests.parquet", "steps.parquet", "trace.json"] {
                assert!(html.contains(&format!("<a href=\"runs/{}/{file}\">{file}</a>", run.name)));
            }
            // The runs kept no token trace? Then no link to one.
            let tokens = dir.join("runs").join(&run.name).join("tokens.parquet");
            assert_eq!(
                html.contains(&format!("runs/{}/tokens.parquet", run.name)),
                tokens.is_file()
            );
        }
        // The full table has every summary column; numbers sort by their exact value.
        for column in results.summary.get_column_names() {
            assert!(html.contains(&format!(">{column}</th>")), "column {column} missing");
        }
        let tp = runs[0].metrics.summary.output_tok_per_s;
        assert!(html.contains(&format!("<td class=\"num\" data-v=\"{tp:?}\">{tp:.1}</td>")));
    }

    #[test]
    fn empty_results_still_make_a_page() {
        let tmp = tempfile::tempdir().unwrap();
        // As `load_results` would read an empty sweep (which it cannot yet: the empty summary's `run` column is
        // written as f64).
        let results = Results {
            dir: tmp.path().to_owned(),
            summary: DataFrame::new(
                0,
                vec![
                    Column::new(PlSmallStr::from_str("run"), Vec::<String>::new()),
                    Column::new(PlSmallStr::from_str("output_tok_per_s"), Vec::<f64>::new()),
                ],
            )
            .unwrap(),
            runs: Vec::new(),
            validation: None,
        };
        let path = tmp.path().join("report.html");
        write_html(&results, &[], &findings(&results), &path).unwrap();
        let html = fs::read_to_string(&path).unwrap();
        check_well_formed(&html);
        assert!(html.contains("None: the results have no runs."));
        assert!(html.contains("No runs."));
    }

    #[test]
    fn a_validated_folder_gets_a_well_formed_validation_section() {
        use crate::validate::fake::{Factors, PerturbedBackend};
        let tmp = tempfile::tempdir().unwrap();
        let scenario = crate::report::render::fixture::scenario(true);
        let specs = crate::workload::load_runs_str(&scenario, &tmp.path().join("s.toml"), &[], None).unwrap();
        let prepared: Vec<_> = specs.iter().map(|s| crate::sim::run::prepare(s).unwrap()).collect();
        let options = crate::validate::ValidateOptions {
            warmup_steps: 0,
            record: crate::sim::run::RecordOptions::from_scenario(&specs[0].scenario),
            repeats: 1,
        };
        let mut backend = PerturbedBackend::new(Factors::uniform(1.05));
        let v = crate::validate::validate_runs(&specs, &prepared, &mut backend, &options, &mut |_| {}).unwrap();
        crate::validate::write_validation(tmp.path(), &v, "x").unwrap();
        let written = render_report(tmp.path(), |_| Ok(Vec::new())).unwrap();
        let html = fs::read_to_string(&written.html).unwrap();
        let elements = check_well_formed(&html);
        assert!(elements.iter().filter(|e| *e == "table").count() >= 6);
        let section =
            &html[html.find("<section id=\"validation\">").unwrap()..html.find("<section id=\"runs\">").unwrap()];
        // The scenario's name and labels carry characters that must be escaped.
        assert!(
            section.contains("Metrics: FAIL"),
            "5% off everywhere misses the median target"
        );
        assert!(section.contains("<th scope=\"col\">step kind</th>"));
        assert!(section.contains("data-v=\"0.05"), "errors sort by value");
    }

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        for (input, expected) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(input.as_bytes()), expected, "{input:?}");
        }
        assert_eq!(base64(&[0xff, 0xfe, 0xfd]), "//79");
    }

    #[test]
    fn text_is_escaped() {
        assert_eq!(escape("<a href=\"x\">&'"), "&lt;a href=&quot;x&quot;&gt;&amp;'");
    }
}
