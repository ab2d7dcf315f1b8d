//! Real execution of a Qwen2/Llama model. So far: host weights (seeded random, or a Hugging Face safetensors
//! checkpoint) and the f32 CPU reference forward pass the GPU engine's logits are checked against.

pub mod reference;
pub mod step;
pub mod weights;

pub use reference::{HfLogits, ReferenceModel, SeqId, StepErrors, argmax};
pub use weights::{HostTensor, HostWeights, TensorSpec, WeightsError, expected_tensors};

#[cfg(test)]
mod tests;
