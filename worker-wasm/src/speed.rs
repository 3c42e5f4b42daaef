//! The speed a compute thread measures of itself: an exponentially weighted GFLOP/s over its
//! timed computations. It sizes the thread's row bands ([`crate::duty::band_rows`]) and goes
//! to the page with every result, whose own meter (web/src/volunteer/stats.js) keeps the same
//! average of the times the thread reports.

/// Multiply-adds count twice: the flops of one m×k by k×n product.
pub fn task_flops(m: usize, k: usize, n: usize) -> f64 {
    2.0 * m as f64 * k as f64 * n as f64
}

/// Weight of the newest sample, the same as the page's meter gives it.
pub const ALPHA: f64 = 0.3;

/// An exponentially weighted average of GFLOP/s; the first sample counts in full.
#[derive(Debug, Clone, PartialEq)]
pub struct SpeedMeter {
    /// Weight of the newest sample.
    alpha: f64,
    /// The current average, 0 before any sample.
    gflops: f64,
    /// Samples taken; the first one replaces the zero instead of being averaged with it.
    samples: u32,
}

impl Default for SpeedMeter {
    fn default() -> Self {
        Self::new(ALPHA)
    }
}

impl SpeedMeter {
    pub fn new(alpha: f64) -> Self {
        Self {
            alpha,
            gflops: 0.0,
            samples: 0,
        }
    }

    /// Adds one computation of `flops` that took `ms` of pure compute time and returns the new
    /// average. A sample that cannot be a speed (no time measured, no work) is ignored.
    pub fn add(&mut self, flops: f64, ms: f64) -> f64 {
        if ms.is_nan() || ms <= 0.0 || flops.is_nan() || flops <= 0.0 {
            return self.gflops;
        }
        let g = flops / ms / 1e6;
        self.gflops = if self.samples == 0 {
            g
        } else {
            (1.0 - self.alpha) * self.gflops + self.alpha * g
        };
        self.samples = self.samples.saturating_add(1);
        self.gflops
    }

    /// The average so far, 0 before any sample.
    pub fn gflops(&self) -> f64 {
        self.gflops
    }

    pub fn samples(&self) -> u32 {
        self.samples
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_sample_then_an_exponential_average() {
        let mut m = SpeedMeter::new(0.5);
        assert_eq!(m.add(2e9, 1000.0), 2.0);
        assert_eq!(m.add(4e9, 1000.0), 3.0);
        assert_eq!(m.add(1e9, 0.0), 3.0, "no time measured: ignored");
        assert_eq!(m.add(0.0, 5.0), 3.0, "no work: ignored");
        assert_eq!(m.add(1e9, f64::NAN), 3.0);
        assert_eq!(m.samples(), 2);
    }

    #[test]
    fn the_default_weighs_the_newest_sample_at_three_tenths() {
        let mut m = SpeedMeter::default();
        assert_eq!(m.gflops(), 0.0);
        m.add(10e9, 1000.0);
        m.add(20e9, 1000.0);
        assert!((m.gflops() - 13.0).abs() < 1e-9);
    }

    #[test]
    fn flops_count_a_multiply_add_twice_without_overflow() {
        assert_eq!(task_flops(150, 70, 130), 2.0 * 150.0 * 70.0 * 130.0);
        assert_eq!(task_flops(1 << 20, 1 << 20, 1 << 20), 2f64.powi(61));
    }
}
