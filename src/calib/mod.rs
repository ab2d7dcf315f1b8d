//! Calibration: the profile format (versioned serde types) and interpolation over its measured grids (pure), and
//! the measurement driver behind `batchlab calibrate`.

pub mod bench;
pub mod bench_engine;
pub mod compare;
pub mod driver;
pub mod engine_steps;
pub mod interp;
pub mod profile;

pub use profile::{PROFILE_FORMAT, Profile, ProfileError};
