//! The CPU share a volunteer gives ("duty cycle"), made smooth: a compute thread works for
//! duty × [`WINDOW_MS`], then rests for the rest of the window, instead of computing whole
//! tiles at full speed and then sleeping for seconds. A tile is cut into row bands (A is
//! row-major, so a band of C needs a contiguous band of A and all of B) sized to fit one
//! window at the measured speed.
//!
//! The compute thread (`thread.rs`, wasm32 only) runs this policy; the page keeps its own
//! [`parse_duty`] (web/src/volunteer/duty.js) for the setting it shows and stores, and the
//! JavaScript twins of the other two stay there with the same cases in web's unit tests.

/// Length of one compute-then-rest window, in milliseconds: short enough that a fan or a UI
/// never feels bursts.
pub const WINDOW_MS: f64 = 150.0;

/// Rows per band before the thread has measured its speed: small, so a first band at a low
/// duty cannot overrun its window by much.
const UNMEASURED_BAND_ROWS: usize = 8;

/// Smallest share accepted: below it a thread would rest almost forever between bands.
const MIN_DUTY: f64 = 0.05;

/// Clamps a stored or typed duty (already a number, as JavaScript's `Number(value)` makes it)
/// to [0.05, 1]; anything unreadable, zero or negative means full speed.
pub fn parse_duty(value: f64) -> f64 {
    if !value.is_finite() || value <= 0.0 {
        return 1.0;
    }
    value.clamp(MIN_DUTY, 1.0)
}

/// How long to rest after `busy_ms` of computing so that the thread's share is `duty`.
pub fn rest_after(busy_ms: f64, duty: f64) -> f64 {
    let d = parse_duty(duty);
    // An unmeasurable band (no time, or NaN) earns no rest.
    if d >= 1.0 || busy_ms.is_nan() || busy_ms <= 0.0 {
        return 0.0;
    }
    busy_ms * (1.0 - d) / d
}

/// Rows of C (m×n, inner dimension k) to compute in one go: at full duty the whole tile (the
/// fastest, one call), else as many rows as fit in duty × [`WINDOW_MS`] at `gflops`, at least
/// one and at most `m`.
pub fn band_rows(m: usize, k: usize, n: usize, gflops: f64, duty: f64) -> usize {
    let d = parse_duty(duty);
    if d >= 1.0 {
        return m;
    }
    if gflops.is_nan() || gflops <= 0.0 {
        return m.clamp(1, UNMEASURED_BAND_ROWS);
    }
    let flops_per_row = 2.0 * k as f64 * n as f64;
    let budget = WINDOW_MS * d * gflops * 1e6; // flops in the busy part of a window
                                               // An empty row (k or n = 0) costs nothing: the quotient is infinite and the band is m.
    let rows = (budget / flops_per_row).floor().min(m as f64);
    // The float-to-int cast saturates, and `rows` is already at most m.
    (rows as usize).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rest_keeps_the_share_and_full_duty_never_rests() {
        assert_eq!(rest_after(100.0, 1.0), 0.0);
        assert_eq!(rest_after(50.0, 0.5), 50.0);
        assert_eq!(rest_after(30.0, 0.25), 90.0);
        assert!((rest_after(75.0, 0.75) - 25.0).abs() < 1e-9);
        for d in [0.25, 0.5, 0.75] {
            let busy = 40.0;
            assert!((busy / (busy + rest_after(busy, d)) - d).abs() < 1e-9);
        }
        assert_eq!(
            rest_after(0.0, 0.5),
            0.0,
            "a band too quick to measure earns no rest"
        );
        assert_eq!(rest_after(f64::NAN, 0.5), 0.0);
    }

    #[test]
    fn duty_values_are_clamped_and_unreadable_ones_mean_full_speed() {
        assert_eq!(parse_duty(0.5), 0.5);
        assert_eq!(parse_duty(f64::NAN), 1.0); // Number("abc")
        assert_eq!(parse_duty(0.0), 1.0);
        assert_eq!(parse_duty(-0.5), 1.0);
        assert_eq!(parse_duty(7.0), 1.0);
        assert_eq!(parse_duty(f64::INFINITY), 1.0);
        assert_eq!(parse_duty(0.001), 0.05);
    }

    #[test]
    fn row_bands_fit_the_busy_part_of_one_window_at_the_measured_speed() {
        // 1 GFLOP/s, k = n = 500: a row is 0.5 MFLOP = 0.5 ms; half of 150 ms holds 150 rows.
        assert_eq!(band_rows(1000, 500, 500, 1.0, 0.5), 150);
        assert_eq!(
            band_rows(100, 500, 500, 1.0, 0.5),
            100,
            "never more than the tile"
        );
        assert_eq!(
            band_rows(1000, 100_000, 1000, 1.0, 0.25),
            1,
            "at least one row"
        );
        assert_eq!(
            band_rows(1000, 500, 500, 1.0, 1.0),
            1000,
            "full duty: the whole tile"
        );
        assert_eq!(
            band_rows(1000, 500, 500, 0.0, 0.5),
            8,
            "no measurement yet: small bands"
        );
        assert_eq!(band_rows(3, 500, 500, 0.0, 0.5), 3);
        let rows = band_rows(4096, 256, 256, 3.0, 0.75);
        let busy_ms = 2.0 * (rows * 256 * 256) as f64 / 3e9 * 1000.0;
        assert!(busy_ms <= WINDOW_MS * 0.75 + 1e-9 && busy_ms > WINDOW_MS * 0.7);
    }

    #[test]
    fn a_band_is_never_empty_nor_larger_than_the_tile() {
        for m in [1, 2, 7, 64, 1000] {
            for (k, n) in [(0, 5), (1, 1), (512, 512), (1 << 20, 1 << 12)] {
                for gflops in [0.0, f64::NAN, 1e-9, 0.5, 40.0, f64::INFINITY] {
                    for duty in [0.05, 0.25, 0.5, 1.0, f64::NAN] {
                        let rows = band_rows(m, k, n, gflops, duty);
                        assert!(
                            (1..=m).contains(&rows),
                            "{m}×{k}×{n} at {gflops}, {duty}: {rows}"
                        );
                    }
                }
            }
        }
    }
}
