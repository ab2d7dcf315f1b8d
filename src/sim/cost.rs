//! Cost models: a step's shape → its duration.

use crate::calib::profile::StepParts;
use crate::model::StepShape;
use crate::sched::StepPlan;
use crate::units::Nanos;

/// Predicts how long one engine step takes. Implementations must be pure functions of the step: the simulator's
/// determinism rests on it.
pub trait CostModel: Send + Sync {
    /// The step's duration from its aggregate shape.
    fn step_time(&self, shape: &StepShape) -> Nanos;
    /// The step's duration with its plan at hand, for models that need each sequence's chunk and context (the
    /// calibrated model composes per-chunk attention times); by default the aggregate shape is enough.
    fn plan_time(&self, plan: &StepPlan, shape: &StepShape) -> Nanos {
        let _ = plan;
        self.step_time(shape)
    }
    /// How the step's time splits between the host issuing it and the GPU running it, for models that know
    /// (the calibrated model with an engine step model); `validate` sets each beside what the engine measured.
    fn plan_parts(&self, plan: &StepPlan, shape: &StepShape) -> Option<StepParts> {
        let _ = (plan, shape);
        None
    }
    /// One line for `explain` and report headers.
    fn describe(&self) -> String;
}

/// Another model's step times multiplied by `factor`: the scenario's `cost.time_scale` (a what-if for a machine
/// that runs every step that much slower or faster), and the sensitivity bands of `validate` and
/// `simulate --sensitivity` ([`super::run::SENSITIVITY_SCALES`]).
pub struct ScaledCost<M> {
    pub inner: M,
    pub factor: f64,
}

impl<M> ScaledCost<M> {
    fn scale(&self, t: Nanos) -> Nanos {
        Nanos((t.0 as f64 * self.factor).round().max(0.0) as u64)
    }
}

impl<M: std::ops::Deref<Target = dyn CostModel> + Send + Sync> CostModel for ScaledCost<M> {
    fn step_time(&self, shape: &StepShape) -> Nanos {
        self.scale(self.inner.step_time(shape))
    }

    fn plan_time(&self, plan: &StepPlan, shape: &StepShape) -> Nanos {
        self.scale(self.inner.plan_time(plan, shape))
    }

    fn plan_parts(&self, plan: &StepPlan, shape: &StepShape) -> Option<StepParts> {
        self.inner.plan_parts(plan, shape).map(|p| StepParts {
            gpu_us: p.gpu_us * self.factor,
            issue_us: p.issue_us * self.factor,
            after_us: p.after_us * self.factor,
        })
    }

    fn describe(&self) -> String {
        format!("{}, every step × {}", self.inner.describe(), self.factor)
    }
}

/// `base + per_token·tokens + per_seq·seqs + per_kv_token·kv_tokens_read`, with user-given coefficients: for
/// what-if studies and for replaying published results.
#[derive(Clone, Debug, PartialEq)]
pub struct LinearCost {
    pub base: f64,
    pub per_token: f64,
    pub per_seq: f64,
    pub per_kv_token: f64,
}

impl LinearCost {
    /// Coefficients in the scenario's units: ms, µs per token, ms per sequence, ns per KV token read.
    pub fn from_units(base_ms: f64, per_token_us: f64, per_seq_ms: f64, per_kv_token_ns: f64) -> LinearCost {
        LinearCost {
            base: base_ms * 1e6,
            per_token: per_token_us * 1e3,
            per_seq: per_seq_ms * 1e6,
            per_kv_token: per_kv_token_ns,
        }
    }
}

impl CostModel for LinearCost {
    fn step_time(&self, s: &StepShape) -> Nanos {
        let ns = self.base
            + self.per_token * s.tokens as f64
            + self.per_seq * s.seqs() as f64
            + self.per_kv_token * s.kv_read_tokens as f64;
        Nanos(ns.round().max(0.0) as u64)
    }

    fn describe(&self) -> String {
        format!(
            "linear: {:.3} ms + {:.3} µs/token + {:.3} ms/seq + {:.3} ns/KV token",
            self.base / 1e6,
            self.per_token / 1e3,
            self.per_seq / 1e6,
            self.per_kv_token
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_cost_adds_its_terms() {
        let c = LinearCost::from_units(19.2, 1.4, 0.19, 2.0);
        let mut s = StepShape::default();
        s.add_prefill(0, 100, 0, true);
        s.add_decode(50, false);
        // 19.2 ms + 101 × 1.4 µs + 2 × 0.19 ms + (100 + 50) × 2 ns
        let expected = 19_200_000.0 + 101.0 * 1_400.0 + 2.0 * 190_000.0 + 150.0 * 2.0;
        assert_eq!(c.step_time(&s), Nanos(expected as u64));
    }

    #[test]
    fn a_scaled_model_multiplies_every_step_and_says_so() {
        let inner: Box<dyn CostModel> = Box::new(LinearCost::from_units(1.0, 0.0, 0.0, 0.0));
        let scaled = ScaledCost { inner, factor: 1.02 };
        let s = StepShape::default();
        assert_eq!(scaled.step_time(&s), Nanos(1_020_000));
        assert_eq!(scaled.plan_time(&StepPlan::default(), &s), Nanos(1_020_000));
        assert!(
            scaled.describe().ends_with("every step × 1.02"),
            "{}",
            scaled.describe()
        );
    }
}
