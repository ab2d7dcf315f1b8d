//! The discrete-event serving loop, clocks and cost models.

pub mod analytic;
pub mod calibrated;
pub mod cost;
pub mod event;
pub mod hardware;
pub mod run;
pub mod serving;

pub use cost::{CostModel, LinearCost, ScaledCost};
pub use serving::{Clock, Executor, SimExecutor, VirtualClock, serve};

#[cfg(test)]
mod policy_tests;
