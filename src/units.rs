//! Time in the core is integer nanoseconds: ordering and equality are exact, so two runs of the same scenario
//! agree to the last bit and event ties are broken by insertion order, never by float rounding.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::ops::{Add, AddAssign, Sub};

/// A point in time or a duration, in nanoseconds since the start of a run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Nanos(pub u64);

impl Nanos {
    pub const ZERO: Nanos = Nanos(0);
    pub const MAX: Nanos = Nanos(u64::MAX);

    pub fn from_ms(ms: f64) -> Nanos {
        Nanos::from_secs(ms / 1e3)
    }

    pub fn from_us(us: f64) -> Nanos {
        Nanos::from_secs(us / 1e6)
    }

    /// Rounds to the nearest nanosecond; negative and NaN inputs become zero.
    pub fn from_secs(secs: f64) -> Nanos {
        let ns = (secs * 1e9).round();
        if ns.is_nan() || ns <= 0.0 {
            Nanos(0)
        } else if ns >= u64::MAX as f64 {
            Nanos::MAX
        } else {
            Nanos(ns as u64)
        }
    }

    pub fn as_secs(self) -> f64 {
        self.0 as f64 / 1e9
    }

    pub fn as_ms(self) -> f64 {
        self.0 as f64 / 1e6
    }

    pub fn saturating_sub(self, other: Nanos) -> Nanos {
        Nanos(self.0.saturating_sub(other.0))
    }
}

impl Add for Nanos {
    type Output = Nanos;
    fn add(self, rhs: Nanos) -> Nanos {
        Nanos(self.0.saturating_add(rhs.0))
    }
}

impl AddAssign for Nanos {
    fn add_assign(&mut self, rhs: Nanos) {
        *self = *self + rhs;
    }
}

impl Sub for Nanos {
    type Output = Nanos;
    /// Panics in debug builds on underflow: a negative duration is always a logic error in the loop.
    fn sub(self, rhs: Nanos) -> Nanos {
        debug_assert!(self.0 >= rhs.0, "negative duration: {} - {}", self.0, rhs.0);
        Nanos(self.0.wrapping_sub(rhs.0))
    }
}

impl fmt::Display for Nanos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.3} ms", self.as_ms())
    }
}

pub const MIB: f64 = 1024.0 * 1024.0;
pub const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_round_to_nearest_nanosecond() {
        assert_eq!(Nanos::from_ms(20.0), Nanos(20_000_000));
        assert_eq!(Nanos::from_us(1.4), Nanos(1_400));
        assert_eq!(Nanos::from_secs(-1.0), Nanos(0));
        assert_eq!(Nanos::from_secs(f64::NAN), Nanos(0));
        assert_eq!(Nanos(1_280_000_000).as_secs(), 1.28);
    }
}
