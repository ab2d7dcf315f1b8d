//! The GPU engine as a validation [`Backend`]: for each run, an [`Engine`] with seeded random weights sized as the
//! simulator sizes the run (block size, KV capacity in slots, batch limits), driven by a [`GpuExecutor`] on a
//! [`WallClock`].

use std::collections::HashMap;
use std::path::PathBuf;

use crate::calib::Profile;
use crate::calib::engine_steps::gemm_policy;
use crate::engine::{Engine, EngineConfig, GemmPolicy, GpuExecutor, KvCapacity, WallClock};
use crate::gpu::Gpu;
use crate::model::StepShape;
use crate::sched::{StepOutcome, StepPlan, final_kv_tokens};
use crate::sim::run::{PreparedRun, profile_relative_path};
use crate::sim::serving::{Clock, ExecError, Executor};
use crate::units::Nanos;
use crate::workload::{RunSpec, Workload};

use super::driver::{Backend, MeasuredMemory, MeasuredRun};

/// Seed of the engine's random weights (their values do not change its speed).
const WEIGHT_SEED: u64 = 0x5eed;

/// Runs each validated run on one GPU, an engine at a time.
pub struct EngineBackend {
    /// The device, between runs (an engine owns it while its run lasts).
    gpu: Option<Gpu>,
    /// GEMM policies by profile path: the engine runs the GEMM its profile (so the cost model) finds faster.
    policies: HashMap<PathBuf, GemmPolicy>,
}

impl EngineBackend {
    pub fn new(gpu: Gpu) -> Self {
        Self {
            gpu: Some(gpu),
            policies: HashMap::new(),
        }
    }

    fn policy(&mut self, spec: &RunSpec, run: &PreparedRun) -> Result<GemmPolicy, String> {
        let Some(rel) = profile_relative_path(&spec.scenario, &run.model) else {
            return Ok(GemmPolicy::default());
        };
        let path = spec.base_dir.join(rel);
        if let Some(p) = self.policies.get(&path) {
            return Ok(p.clone());
        }
        let profile = Profile::load(&path).map_err(|e| e.to_string())?;
        let policy = gemm_policy(&profile)?;
        self.policies.insert(path, policy.clone());
        Ok(policy)
    }
}

impl Backend for EngineBackend {
    fn start<'a>(&'a mut self, spec: &'a RunSpec, run: &'a PreparedRun) -> Result<Box<dyn MeasuredRun + 'a>, String> {
        let gemm = self.policy(spec, run)?;
        let gpu = self
            .gpu
            .take()
            .ok_or("the GPU was lost by an earlier run that failed")?;
        let limits = &run.limits;
        let config = EngineConfig {
            block_size: limits.block_size,
            // The simulator sizes the cache from its GPU preset; the real card may hold a little less.
            kv: KvCapacity::AtMost {
                slots: limits.kv_capacity_slots,
                fraction: 0.95,
            },
            max_step_tokens: limits.max_batch_tokens as usize,
            max_seqs: limits.max_batch_size as usize,
            // Decode graphs cover the longest context the run reaches (their attention is sized by it).
            max_context: run.workload.requests.iter().map(|r| r.prompt_len + r.output_len).max(),
            prompt_seed: spec.scenario.seed,
            gemm,
            // As calibration ran the engine (the two CUDA events a step cost nothing measurable, but the conditions
            // the step model was fitted in are then exactly these).
            time_gpu: true,
            ..EngineConfig::default()
        };
        let engine = Engine::random(gpu, run.model.clone(), WEIGHT_SEED, config).map_err(|e| e.to_string())?;
        let held = engine.kv_capacity_slots();
        if held < limits.kv_capacity_slots {
            // Fewer slots than the simulator's scheduler may use: fine as long as the run can never need them all
            // (every request's whole KV at once, in blocks); otherwise refuse before anything runs.
            let demand = kv_demand_bound(&run.workload, limits.block_size);
            if demand > held {
                let gpu = engine.into_gpu();
                let _ = gpu.synchronize();
                self.gpu = Some(gpu);
                return Err(format!(
                    "the GPU holds {held} KV slots, fewer than the {} the simulator assumes, and this run may need \
                     up to {demand}: set memory.kv_capacity_tokens to at most {held}",
                    limits.kv_capacity_slots
                ));
            }
        }
        Ok(Box::new(EngineRun {
            executor: Some(GpuExecutor::new(engine, &run.workload)),
            home: &mut self.gpu,
            peak_blocks: 0,
        }))
    }
}

/// KV slots a run can never exceed: every request's whole cache at once, in whole blocks.
pub fn kv_demand_bound(workload: &Workload, block_size: u32) -> u64 {
    let block = u64::from(block_size);
    workload
        .requests
        .iter()
        .map(|r| final_kv_tokens(r.prompt_len, r.output_len).div_ceil(block) * block)
        .sum()
}

/// One run on the engine. Dropping it hands the GPU back to the backend.
struct EngineRun<'a> {
    executor: Option<GpuExecutor>,
    home: &'a mut Option<Gpu>,
    /// The most KV blocks the engine's own allocator had handed out at the end of a step (since the clock started).
    peak_blocks: u32,
}

impl EngineRun<'_> {
    fn executor(&mut self) -> &mut GpuExecutor {
        self.executor.as_mut().expect("present until dropped")
    }
}

impl Executor for EngineRun<'_> {
    fn execute(&mut self, plan: &StepPlan, shape: &StepShape) -> Result<Nanos, ExecError> {
        let ex = self.executor();
        let took = ex.execute(plan, shape)?;
        let seqs = ex.engine().sequences();
        let in_use = seqs.total_blocks() - seqs.free_blocks();
        self.peak_blocks = self.peak_blocks.max(in_use);
        Ok(took)
    }

    fn after_step(&mut self, outcome: &StepOutcome) {
        self.executor().after_step(outcome);
    }
}

impl MeasuredRun for EngineRun<'_> {
    fn clock(&mut self) -> Box<dyn Clock> {
        // What the warm-up used is not the measured run's.
        self.peak_blocks = 0;
        Box::new(WallClock::new())
    }

    fn memory(&self) -> Option<MeasuredMemory> {
        let engine = self.executor.as_ref()?.engine();
        let m = engine.memory();
        let spec = engine.spec();
        let layout = engine.kv_layout();
        // K and V, fp16, every layer.
        let block_bytes =
            2 * 2 * u64::from(spec.layers) * (layout.block_size * layout.kv_heads * layout.head_dim) as u64;
        // Everything the GPU held at the peak beyond what was used before the engine, its weights and its KV pool:
        // activation buffers, split-K and attention workspaces, cuBLAS — measured with cuMemGetInfo.
        let workspace = m.peak_used.saturating_sub(m.used_before + m.weights + m.kv_cache);
        Some(MeasuredMemory {
            weight_bytes: m.weights,
            kv_bytes: u64::from(self.peak_blocks) * block_bytes,
            workspace_bytes: workspace,
        })
    }
}

impl Drop for EngineRun<'_> {
    fn drop(&mut self) {
        if let Some(ex) = self.executor.take() {
            let gpu = ex.into_engine().into_gpu();
            // The engine's buffers are freed in stream order: wait, so the next run sees the memory free.
            let _ = gpu.synchronize();
            *self.home = Some(gpu);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::Request;

    #[test]
    fn the_kv_bound_is_every_request_whole_in_whole_blocks() {
        let request = |prompt_len, output_len| Request {
            id: 0,
            arrival: Nanos::ZERO,
            prompt_len,
            output_len,
        };
        let w = Workload {
            // 64 + 16 - 1 = 79 slots → 80 in blocks of 16; 16 + 1 - 1 = 16 → 16; 1 + 2 - 1 = 2 → 16.
            requests: vec![request(64, 16), request(16, 1), request(1, 2)],
            closed_loop: None,
        };
        assert_eq!(kv_demand_bound(&w, 16), 80 + 16 + 16);
        assert_eq!(kv_demand_bound(&w, 1), 79 + 16 + 2);
    }
}
