//! Trace files for `arrival = "trace"`: one request per line, as CSV with the header `arrival_s,prompt_len,output_len`
//! (columns in any order, other columns ignored, no quoted fields) or as JSON Lines objects with those keys (other
//! keys ignored). Blank lines and CSV lines starting with `#` are skipped. Errors name `file:line`.

use super::ScenarioError;
use serde::Deserialize;
use std::path::Path;

#[derive(Clone, Copy, Debug, PartialEq, Deserialize)]
pub(super) struct TraceRow {
    pub arrival_s: f64,
    pub prompt_len: u32,
    pub output_len: u32,
}

const COLUMNS: [&str; 3] = ["arrival_s", "prompt_len", "output_len"];

/// Reads a trace, rows in file order.
pub(super) fn read(path: &Path) -> Result<Vec<TraceRow>, ScenarioError> {
    let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let at = |line: usize, message: String| ScenarioError::Invalid(format!("{}:{line}: {message}", path.display()));
    let extension = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
    let jsonl = match extension.as_deref() {
        Some("jsonl" | "ndjson") => true,
        Some("csv") => false,
        // Any other name: JSON Lines if the first non-blank line is an object.
        _ => text
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .is_some_and(|l| l.starts_with('{')),
    };
    let rows = if jsonl {
        read_jsonl(&text, at)?
    } else {
        read_csv(&text, at)?
    };
    for (line, row) in &rows {
        if !(row.arrival_s.is_finite() && row.arrival_s >= 0.0) {
            return Err(at(
                *line,
                format!("arrival_s must be a finite number >= 0, got {}", row.arrival_s),
            ));
        }
        for (name, value) in [("prompt_len", row.prompt_len), ("output_len", row.output_len)] {
            if value == 0 {
                return Err(at(*line, format!("{name} must be >= 1, got 0")));
            }
        }
    }
    Ok(rows.into_iter().map(|(_, row)| row).collect())
}

fn read_jsonl(
    text: &str,
    at: impl Fn(usize, String) -> ScenarioError,
) -> Result<Vec<(usize, TraceRow)>, ScenarioError> {
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let row = serde_json::from_str::<TraceRow>(line).map_err(|e| {
            // serde_json appends " at line 1 column N" (its position within this one line); keep only the column.
            let message = e.to_string();
            let suffix = format!(" at line {} column {}", e.line(), e.column());
            let message = message.strip_suffix(&suffix).unwrap_or(&message);
            at(i + 1, format!("column {}: {message}", e.column()))
        })?;
        rows.push((i + 1, row));
    }
    Ok(rows)
}

fn read_csv(text: &str, at: impl Fn(usize, String) -> ScenarioError) -> Result<Vec<(usize, TraceRow)>, ScenarioError> {
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty() && !l.trim_start().starts_with('#'));
    let Some((header_line, header)) = lines.next() else {
        return Err(at(
            1,
            format!("empty trace: expected the header `{}`", COLUMNS.join(",")),
        ));
    };
    let names: Vec<&str> = header.split(',').map(str::trim).collect();
    let mut index = [0; 3];
    for (slot, column) in index.iter_mut().zip(COLUMNS) {
        *slot = names.iter().position(|n| *n == column).ok_or_else(|| {
            at(
                header_line + 1,
                format!(
                    "the header has no `{column}` column (expected `{}`), got `{header}`",
                    COLUMNS.join(",")
                ),
            )
        })?;
    }
    let mut rows = Vec::new();
    for (i, line) in lines {
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        if fields.len() != names.len() {
            return Err(at(
                i + 1,
                format!("expected {} fields as in the header, got {}", names.len(), fields.len()),
            ));
        }
        let field = |k: usize| fields[index[k]];
        let arrival_s = field(0).parse::<f64>().map_err(|_| {
            at(
                i + 1,
                format!("arrival_s must be a number of seconds, got `{}`", field(0)),
            )
        })?;
        let length = |k: usize| {
            field(k).parse::<u32>().map_err(|_| {
                at(
                    i + 1,
                    format!("{} must be a positive integer, got `{}`", COLUMNS[k], field(k)),
                )
            })
        };
        rows.push((
            i + 1,
            TraceRow {
                arrival_s,
                prompt_len: length(1)?,
                output_len: length(2)?,
            },
        ));
    }
    Ok(rows)
}
