//! The summary table as typed columns, built once and rendered to Parquet, CSV and JSON, so the three files agree on
//! column order, dtypes and values.

use super::ReportError;
use crate::metrics::{Cell, RunReport, Summary};
use indexmap::{IndexMap, IndexSet};
use polars::prelude::{Column, DataFrame, PlSmallStr};
use serde_json::{Map, Number, Value};

/// One column's values, typed from its cells.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Values {
    Bool(Vec<Option<bool>>),
    Int(Vec<Option<i64>>),
    Float(Vec<Option<f64>>),
    Str(Vec<Option<String>>),
}

/// The type a column's cells agree on: the least general one that holds them all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Null,
    Bool,
    Int,
    Float,
    Str,
}

impl Kind {
    fn of(cell: &Cell) -> Kind {
        match cell {
            Cell::Null => Kind::Null,
            Cell::Bool(_) => Kind::Bool,
            Cell::Int(_) => Kind::Int,
            Cell::Float(_) => Kind::Float,
            Cell::Str(_) => Kind::Str,
        }
    }

    fn join(self, other: Kind) -> Kind {
        match (self, other) {
            (a, b) if a == b => a,
            (Kind::Null, k) | (k, Kind::Null) => k,
            (Kind::Int, Kind::Float) | (Kind::Float, Kind::Int) => Kind::Float,
            // Any other mix (text with numbers, booleans with numbers) has no common numeric type.
            _ => Kind::Str,
        }
    }
}

impl Values {
    /// Types `cells`. A column with no value at all becomes f64: the summary's all-null columns are statistics or
    /// goodput (floats when present), so the schema stays the same whether or not, say, an SLO was given.
    pub(crate) fn from_cells(cells: &[Cell]) -> Values {
        let kind = cells.iter().map(Kind::of).fold(Kind::Null, Kind::join);
        match kind {
            Kind::Bool => Values::Bool(
                cells
                    .iter()
                    .map(|c| match c {
                        Cell::Bool(b) => Some(*b),
                        _ => None,
                    })
                    .collect(),
            ),
            Kind::Int => Values::Int(
                cells
                    .iter()
                    .map(|c| match c {
                        Cell::Int(i) => Some(*i),
                        _ => None,
                    })
                    .collect(),
            ),
            Kind::Null | Kind::Float => Values::Float(cells.iter().map(Cell::as_f64).collect()),
            Kind::Str => Values::Str(cells.iter().map(cell_text).collect()),
        }
    }

    fn to_column(&self, name: &str) -> Column {
        let name = PlSmallStr::from_str(name);
        match self {
            Values::Bool(v) => Column::new(name, v),
            Values::Int(v) => Column::new(name, v),
            Values::Float(v) => Column::new(name, v),
            Values::Str(v) => Column::new(name, v),
        }
    }

    fn json(&self, row: usize) -> Value {
        match self {
            Values::Bool(v) => v[row].map_or(Value::Null, Value::Bool),
            Values::Int(v) => v[row].map_or(Value::Null, |i| Value::Number(i.into())),
            // JSON has no NaN or infinity: those become null (Parquet and CSV keep them).
            Values::Float(v) => v[row].and_then(Number::from_f64).map_or(Value::Null, Value::Number),
            Values::Str(v) => v[row].clone().map_or(Value::Null, Value::String),
        }
    }
}

/// A cell as text, for columns that mix text with other types. Floats use Rust's shortest round-trip form with a
/// decimal point (`2.0`, `1e-7`), so they stay recognisable as floats.
fn cell_text(cell: &Cell) -> Option<String> {
    match cell {
        Cell::Null => None,
        Cell::Str(s) => Some(s.clone()),
        Cell::Int(i) => Some(i.to_string()),
        Cell::Float(f) => Some(format!("{f:?}")),
        Cell::Bool(b) => Some(b.to_string()),
    }
}

/// Named, typed columns of equal length.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Table {
    pub(crate) columns: Vec<(String, Values)>,
    pub(crate) rows: usize,
}

impl Table {
    /// One row per run: `run`, the labels (in order of first appearance across runs), then the summary columns.
    /// A run lacking a label another run has gets null there.
    pub(crate) fn summary(runs: &[RunReport]) -> Result<Table, ReportError> {
        let mut label_names: IndexSet<String> = IndexSet::new();
        let mut summary_names: IndexSet<String> = IndexSet::new();
        let mut rows: Vec<IndexMap<String, Cell>> = Vec::with_capacity(runs.len());
        for run in runs {
            let mut row: IndexMap<String, Cell> = IndexMap::new();
            row.insert("run".to_owned(), Cell::Str(run.name.clone()));
            let summary = run.metrics.summary.cells();
            for (name, cell) in run.labels.iter().cloned().chain(summary.iter().cloned()) {
                if row.contains_key(&name) {
                    return Err(ReportError::DuplicateColumn {
                        run: run.name.clone(),
                        column: name,
                    });
                }
                row.insert(name, cell);
            }
            label_names.extend(run.labels.iter().map(|(name, _)| name.clone()));
            summary_names.extend(summary.into_iter().map(|(name, _)| name));
            rows.push(row);
        }
        if runs.is_empty() {
            // No run to ask for the summary columns: take them from an empty run, so an empty sweep still writes
            // the full schema.
            summary_names.extend(Summary::column_names());
        }
        let names = std::iter::once("run".to_owned())
            .chain(label_names)
            .chain(summary_names);
        let columns = names
            .map(|name| {
                let cells: Vec<Cell> = rows
                    .iter()
                    .map(|row| row.get(&name).cloned().unwrap_or(Cell::Null))
                    .collect();
                let values = if name == "run" && cells.is_empty() {
                    // `run` holds names, also when there are no runs to show it.
                    Values::Str(Vec::new())
                } else {
                    Values::from_cells(&cells)
                };
                (name, values)
            })
            .collect();
        Ok(Table {
            columns,
            rows: runs.len(),
        })
    }

    pub(crate) fn to_data_frame(&self) -> polars::prelude::PolarsResult<DataFrame> {
        let columns = self
            .columns
            .iter()
            .map(|(name, values)| values.to_column(name))
            .collect();
        DataFrame::new(self.rows, columns)
    }

    /// An array of one object per row, keys in column order.
    pub(crate) fn to_json(&self) -> Value {
        let rows = (0..self.rows)
            .map(|row| {
                let object: Map<String, Value> = self
                    .columns
                    .iter()
                    .map(|(name, values)| (name.clone(), values.json(row)))
                    .collect();
                Value::Object(object)
            })
            .collect();
        Value::Array(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn column_types_follow_their_cells() {
        use Cell::*;
        assert_eq!(
            Values::from_cells(&[Int(1), Null, Int(3)]),
            Values::Int(vec![Some(1), None, Some(3)])
        );
        assert_eq!(
            Values::from_cells(&[Int(1), Float(2.5)]),
            Values::Float(vec![Some(1.0), Some(2.5)])
        );
        assert_eq!(Values::from_cells(&[Null, Null]), Values::Float(vec![None, None]));
        assert_eq!(
            Values::from_cells(&[Bool(true), Null]),
            Values::Bool(vec![Some(true), None])
        );
        assert_eq!(
            Values::from_cells(&[Str("a".into()), Int(2), Float(2.0), Bool(false), Null]),
            Values::Str(vec![
                Some("a".into()),
                Some("2".into()),
                Some("2.0".into()),
                Some("false".into()),
                None
            ])
        );
        assert_eq!(
            Values::from_cells(&[Bool(true), Int(1)]),
            Values::Str(vec![Some("true".into()), Some("1".into())])
        );
    }

    #[test]
    fn json_has_no_non_finite_numbers() {
        let v = Values::Float(vec![Some(f64::NAN), Some(1.5)]);
        assert_eq!(v.json(0), Value::Null);
        assert_eq!(v.json(1), serde_json::json!(1.5));
    }
}
