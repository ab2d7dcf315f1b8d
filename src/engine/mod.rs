//! Real execution of a Qwen2/Llama model on the GPU, and the f32 CPU reference its logits are checked against.
//!
//! | file | owns |
//! |---|---|
//! | [`weights`] | host weights: seeded random, or a Hugging Face safetensors checkpoint (load, save) |
//! | [`reference`] | the f32 CPU forward pass over per-sequence KV caches (the oracle), transformers' record |
//! | [`device`] | [`GpuWeights`]: weights on the GPU in the fused layout, uploaded or generated there |
//! | [`step`] | host side of a step: per-request KV blocks and tokens, synthetic prompts, a plan's flat inputs |
//! | [`forward`] | [`Engine`]: KV cache sized from free memory or a capacity, buffers, the forward pass of a plan |
//! | [`executor`] | [`GpuExecutor`]: the serving loop's executor on the engine, measured wall time per step |
//! | [`clock`] | [`WallClock`]: real time for the serving loop |
//!
//! GPU tests: `tests/gpu_engine.rs` (engine logits against [`ReferenceModel`] and against transformers).

pub mod clock;
pub mod device;
pub mod executor;
pub mod forward;
pub mod reference;
pub mod step;
pub mod weights;

pub use clock::WallClock;
pub use device::GpuWeights;
pub use executor::GpuExecutor;
pub use forward::{
    Engine, EngineConfig, EngineError, EngineMemory, GemmBackend, GemmOp, GemmPolicy, GemmRule, HostCalls, KvCapacity,
    StepOutput, StepTiming, WeightSource,
};
pub use reference::{HfLogits, ReferenceModel, SeqId, StepErrors, argmax};
pub use step::{GRAPH_BUCKETS, Sequences, StepError, StepInputs, prompt_token};
pub use weights::{HostTensor, HostWeights, TensorSpec, WeightsError, expected_tensors};

/// What the engine's whole steps are, as far as their timing goes: `calibrate` records it in a profile beside the
/// steps it measured on the engine, and `validate` warns when a profile's differs from this build's (the op tables
/// stay valid, the step model fitted to those steps may not).
///
/// - 0: profiles that do not record it (measured before 2026-11-28).
/// - 1: every decode graph launched once right after capture (engines that skipped it replayed their graphs about
///   100 µs per step slower until some later launch, depending on the order of the run's batch sizes); cuBLAS with a
///   workspace of its own.
pub const ENGINE_REVISION: u32 = 1;

#[cfg(test)]
mod tests;
