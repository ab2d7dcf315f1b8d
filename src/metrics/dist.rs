//! Latency distributions: exact while small, an HDR histogram once large.

use hdrhistogram::Histogram;
use serde::Serialize;

/// Samples kept exactly before a distribution switches to a histogram (32 MiB of u64).
pub const EXACT_SAMPLE_LIMIT: usize = 1 << 22;

/// Mean, percentiles (numpy's linear interpolation, as vLLM reports them) and max; `None` when there is no sample.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Stats {
    pub count: u64,
    pub mean: Option<f64>,
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub p95: Option<f64>,
    pub p99: Option<f64>,
    pub max: Option<f64>,
}

impl Stats {
    /// Stats of `values` (sorted in place), each multiplied by `scale`.
    pub fn from_values(values: &mut [f64], scale: f64) -> Stats {
        if values.is_empty() {
            return Stats::default();
        }
        values.sort_by(f64::total_cmp);
        let mean = values.iter().sum::<f64>() / values.len() as f64;
        let max = values[values.len() - 1];
        Stats::from_percentiles(values.len() as u64, mean * scale, max * scale, |q| {
            percentile_sorted(values, q) * scale
        })
    }

    /// Stats from a sample's count, mean, max and percentile function (q in [0, 100]).
    fn from_percentiles(count: u64, mean: f64, max: f64, p: impl Fn(f64) -> f64) -> Stats {
        Stats {
            count,
            mean: Some(mean),
            p50: Some(p(50.0)),
            p90: Some(p(90.0)),
            p95: Some(p(95.0)),
            p99: Some(p(99.0)),
            max: Some(max),
        }
    }

    pub fn named(&self) -> [(&'static str, Option<f64>); 6] {
        [
            ("mean", self.mean),
            ("p50", self.p50),
            ("p90", self.p90),
            ("p95", self.p95),
            ("p99", self.p99),
            ("max", self.max),
        ]
    }
}

/// numpy's default (linear) percentile of sorted values, q in [0, 100].
pub fn percentile_sorted(sorted: &[f64], q: f64) -> f64 {
    let rank = q / 100.0 * (sorted.len() - 1) as f64;
    let lo = rank.floor() as usize;
    let hi = rank.ceil() as usize;
    sorted[lo] + (sorted[hi] - sorted[lo]) * (rank - lo as f64)
}

/// Non-negative integer samples (nanoseconds). The mean is always exact; percentiles are exact until
/// [`EXACT_SAMPLE_LIMIT`] samples, then within 0.1% (3 significant digits).
#[derive(Clone, Debug, Default)]
pub struct Distribution {
    count: u64,
    sum: u128,
    max: u64,
    exact: Vec<u64>,
    hist: Option<Histogram<u64>>,
    // Steps of a continuous batch give most sequences the same gap: runs of equal values are coalesced before
    // they reach the histogram.
    run_value: u64,
    run_len: u64,
}

impl Distribution {
    pub fn record(&mut self, v: u64) {
        self.count += 1;
        self.sum += u128::from(v);
        self.max = self.max.max(v);
        match &mut self.hist {
            None => {
                self.exact.push(v);
                if self.exact.len() >= EXACT_SAMPLE_LIMIT {
                    self.spill();
                }
            }
            Some(_) if v == self.run_value => self.run_len += 1,
            Some(_) => {
                self.flush_run();
                self.run_value = v;
                self.run_len = 1;
            }
        }
    }

    fn spill(&mut self) {
        // 1 ns .. ~1 h, auto-resizing beyond; 3 significant digits.
        let mut h = Histogram::<u64>::new_with_bounds(1, 3_600_000_000_000, 3).expect("valid histogram bounds");
        h.auto(true);
        for &v in &self.exact {
            h.saturating_record(v.max(1));
        }
        self.exact = Vec::new();
        self.hist = Some(h);
        self.run_len = 0;
    }

    fn flush_run(&mut self) {
        if let (Some(h), n) = (&mut self.hist, self.run_len)
            && n > 0
        {
            h.saturating_record_n(self.run_value.max(1), n);
        }
        self.run_len = 0;
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    /// Stats with every value divided by 1e6 (nanoseconds → milliseconds).
    pub fn stats_ns_to_ms(&self) -> Stats {
        if self.count == 0 {
            return Stats::default();
        }
        let ms = 1e-6;
        let mean = self.sum as f64 / self.count as f64 * ms;
        let max = self.max as f64 * ms;
        match &self.hist {
            None => {
                let mut sorted: Vec<f64> = self.exact.iter().map(|&v| v as f64).collect();
                sorted.sort_by(f64::total_cmp);
                Stats::from_percentiles(self.count, mean, max, |q| percentile_sorted(&sorted, q) * ms)
            }
            Some(h) => {
                let mut h = h.clone();
                if self.run_len > 0 {
                    h.saturating_record_n(self.run_value.max(1), self.run_len);
                }
                Stats::from_percentiles(self.count, mean, max, |q| {
                    h.value_at_quantile(q / 100.0).min(self.max) as f64 * ms
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_follow_numpy_linear_interpolation() {
        // numpy.percentile([1, 2, 3, 4], [50, 90, 95, 99]) = 2.5, 3.7, 3.85, 3.97
        let v = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(percentile_sorted(&v, 50.0), 2.5);
        assert!((percentile_sorted(&v, 90.0) - 3.7).abs() < 1e-12);
        assert!((percentile_sorted(&v, 95.0) - 3.85).abs() < 1e-12);
        assert!((percentile_sorted(&v, 99.0) - 3.97).abs() < 1e-12);
        assert_eq!(percentile_sorted(&[7.0], 99.0), 7.0);
    }

    #[test]
    fn exact_distribution_reports_exact_stats() {
        let mut d = Distribution::default();
        for v in [4_000_000u64, 1_000_000, 3_000_000, 2_000_000] {
            d.record(v);
        }
        let s = d.stats_ns_to_ms();
        assert_eq!(s.count, 4);
        assert_eq!(s.mean, Some(2.5));
        assert_eq!(s.p50, Some(2.5));
        assert_eq!(s.max, Some(4.0));
    }

    #[test]
    fn large_distribution_stays_within_histogram_precision() {
        let mut d = Distribution::default();
        let n = EXACT_SAMPLE_LIMIT as u64 + 1000;
        for i in 0..n {
            // a sawtooth of 1..=1000 µs, in runs of equal values
            d.record(((i / 7) % 1000 + 1) * 1000);
        }
        assert!(d.hist.is_some(), "should have spilled into a histogram");
        let s = d.stats_ns_to_ms();
        assert_eq!(s.count, n);
        let p50 = s.p50.unwrap();
        assert!((p50 - 0.5).abs() / 0.5 < 0.005, "p50 {p50}");
        let p99 = s.p99.unwrap();
        assert!((p99 - 0.99).abs() / 0.99 < 0.005, "p99 {p99}");
        assert_eq!(s.max, Some(1.0));
        assert!((s.mean.unwrap() - 0.5005).abs() < 0.001);
    }
}
