//! batchlab: what continuous batching buys over static batching in LLM inference, from first principles.
//!
//! | module | owns |
//! |---|---|
//! | [`units`] | `Nanos`, the integer time of the core |
//! | [`model`] | architecture specs, catalog, HF `config.json`, parameter/FLOP/byte accounting, the engine's workspace |
//! | [`workload`] | scenario schema and validation, sweeps, request generation |
//! | [`sched`] | the `Scheduler` trait, the policies, the KV block manager |
//! | [`sim`] | event queue, `ServingLoop`, clocks, cost models, hardware presets |
//! | [`metrics`] | request/step records → summary statistics |
//! | [`calib`] | calibration profiles, interpolation, profile comparison, the measurement driver |
//! | [`gpu`] | the only `unsafe`: CUDA context, NVRTC kernel registry, cuBLAS, events, typed kernel wrappers |
//! | [`engine`] | real execution: host weights (random or safetensors), the f32 CPU reference forward pass |
//! | [`validate`] | measured against simulated: per-metric, per-step and per-plan comparison, the validation driver |
//! | [`report`] | Parquet/CSV/JSON writers, markdown tables, charts, HTML/markdown reports (validation's included), the comparison with transformers |
//! | [`cli`] | argument parsing → validated config → library calls |
//!
//! The scheduler and the serving loop do not know whether time is simulated or real: the simulator is the loop
//! driven by a virtual clock and a cost model.

pub mod calib;
pub mod cli;
pub mod engine;
pub mod gpu;
pub mod metrics;
pub mod model;
pub mod report;
pub mod sched;
pub mod sim;
pub mod units;
pub mod validate;
pub mod workload;
