//! Real time for the serving loop: the GPU engine's counterpart of the simulator's virtual clock.

use std::time::{Duration, Instant};

use crate::sim::serving::Clock;
use crate::units::Nanos;

/// Wall-clock time since the clock was made. Waiting sleeps until shortly before the deadline and spins the rest,
/// so an arrival is served within microseconds of its time, not a scheduler tick later.
#[derive(Clone, Copy, Debug)]
pub struct WallClock {
    origin: Instant,
}

/// Below this much time left, [`WallClock::wait_until`] spins instead of sleeping (sleeps overshoot by ~50–100 µs).
const SPIN: Duration = Duration::from_micros(200);

impl WallClock {
    pub fn new() -> Self {
        Self { origin: Instant::now() }
    }

    /// The instant `now()` counts from.
    pub fn origin(&self) -> Instant {
        self.origin
    }
}

impl Default for WallClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for WallClock {
    fn now(&self) -> Nanos {
        Nanos(u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX))
    }

    fn wait_until(&mut self, t: Nanos) {
        loop {
            let now = self.now();
            if now >= t {
                return;
            }
            let left = Duration::from_nanos((t - now).0);
            if left > SPIN {
                std::thread::sleep(left - SPIN);
            } else {
                std::hint::spin_loop();
            }
        }
    }

    /// The step's tokens exist now (the executor returned once they were on the host).
    fn step_finished(&mut self, _start: Nanos, _duration: Nanos) -> Nanos {
        self.now()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wall_clock_advances_and_waits() {
        let mut c = WallClock::new();
        let t0 = c.now();
        let target = t0 + Nanos::from_ms(3.0);
        c.wait_until(target);
        let t1 = c.now();
        assert!(t1 >= target, "{t1} < {target}");
        assert!(t1 < target + Nanos::from_ms(50.0), "overslept: {t1}");
        // A time already past returns at once.
        c.wait_until(t0);
        let t2 = c.step_finished(t0, Nanos::ZERO);
        assert!(t2 >= t1);
    }
}
