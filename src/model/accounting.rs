//! Parameter, weight-byte and per-step FLOP/byte accounting. (Implemented by the model work item.)

use super::{ModelSpec, StepShape};
use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum OpKind {
    Gemm,
    Attention,
    Elementwise,
}

/// FLOPs and bytes moved by one op of a step, summed over layers.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct OpCost {
    pub name: &'static str,
    pub kind: OpKind,
    pub flops: f64,
    pub bytes: f64,
    /// Kernel launches this op takes in the step (layers × launches per layer).
    pub launches: u32,
}

/// Every op of one step.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StepOps {
    pub ops: Vec<OpCost>,
}

impl ModelSpec {
    pub fn parameters(&self) -> u64 {
        todo!("model work item")
    }

    pub fn weight_bytes(&self) -> u64 {
        todo!("model work item")
    }

    pub fn step_ops(&self, _shape: &StepShape) -> StepOps {
        todo!("model work item")
    }
}
