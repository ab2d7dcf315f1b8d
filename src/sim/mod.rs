//! The discrete-event serving loop, clocks and cost models.

pub mod analytic;
pub mod cost;
pub mod hardware;

pub use cost::{CostModel, LinearCost};
