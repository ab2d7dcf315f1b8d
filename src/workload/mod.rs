//! Scenario files (schema, validation, `--set` overrides, sweeps) and request generation.

pub mod scenario;

pub use scenario::*;

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
    #[error("{0}")]
    Invalid(String),
}

/// Reads a scenario file, applies `--set key=value` overrides and `--seed`, expands the sweep, validates every run.
pub fn load_runs(_path: &Path, _sets: &[String], _seed: Option<u64>) -> Result<Vec<RunSpec>, ScenarioError> {
    todo!("workload work item")
}

/// Draws the requests of a run (deterministic in `scenario.seed`).
pub fn generate(_scenario: &Scenario, _base_dir: &Path) -> Result<Workload, ScenarioError> {
    todo!("workload work item")
}
