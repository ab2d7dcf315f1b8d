//! Scenario files (schema, validation, `--set` overrides, sweeps) and request generation.

mod generate;
mod load;
pub mod scenario;
mod trace;
mod validate;

pub use scenario::*;
pub use validate::validate;

use crate::units::Nanos;
use std::path::{Path, PathBuf};

/// One request of a workload. Ids are dense, 0-based, in arrival order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request {
    pub id: u32,
    /// Ignored for closed-loop workloads: the serving loop sets it when the client sends the request.
    pub arrival: Nanos,
    pub prompt_len: u32,
    pub output_len: u32,
}

/// Closed-loop clients: each sends its next request `think` after its previous one completes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClosedLoop {
    pub clients: u32,
    pub think: Nanos,
}

/// The requests of one run. Open loop: `requests` sorted by arrival. Closed loop: the k-th request a client sends
/// is `requests[k]` (lengths only), and the first `clients` requests are sent at t = 0.
#[derive(Clone, Debug, PartialEq)]
pub struct Workload {
    pub requests: Vec<Request>,
    pub closed_loop: Option<ClosedLoop>,
}

/// One run of a scenario: the scenario with one combination of sweep values (and `--set` overrides) applied.
#[derive(Clone, Debug, PartialEq)]
pub struct RunSpec {
    /// 0-based position in the sweep's cartesian product.
    pub index: usize,
    /// `r000`, `r001`, … (zero-padded to the sweep size): the run's folder name and `run` column.
    pub name: String,
    /// (dotted key, value) of each sweep axis, in the `[sweep]` table's order.
    pub axes: Vec<(String, toml::Value)>,
    /// The fully resolved scenario (its `sweep` table emptied).
    pub scenario: Scenario,
    /// The folder relative paths in the scenario are taken from.
    pub base_dir: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// A complete message: `file:line:column: …` where the position is known.
    #[error("{0}")]
    Invalid(String),
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Reads a scenario file, applies `--set key=value` overrides and `--seed`, expands the sweep, validates every run.
///
/// `--set` values are TOML values when they parse as one, plain strings otherwise; `--set sweep.<key>=[…]` adds or
/// replaces a sweep axis, and a `--set` (or `--seed`) of a key that is a sweep axis pins it, removing the axis.
/// Runs are the cartesian product of the axes in `[sweep]` order, the first axis varying slowest.
pub fn load_runs(path: &Path, sets: &[String], seed: Option<u64>) -> Result<Vec<RunSpec>, ScenarioError> {
    load::load_runs(path, sets, seed)
}

/// As [`load_runs`], for scenario text that is not read from a file (an embedded scenario); `path` names it in
/// errors and relative paths are taken from its folder.
pub fn load_runs_str(
    text: &str,
    path: &Path,
    sets: &[String],
    seed: Option<u64>,
) -> Result<Vec<RunSpec>, ScenarioError> {
    load::load_runs_str(text, path, sets, seed)
}

/// Draws the requests of a run (deterministic in `scenario.seed`); relative trace paths are taken from `base_dir`.
pub fn generate(scenario: &Scenario, base_dir: &Path) -> Result<Workload, ScenarioError> {
    generate::generate(scenario, base_dir)
}
