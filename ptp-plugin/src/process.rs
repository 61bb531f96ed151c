//! From raw readings to one measurement: pure, integer nanoseconds.
//!
//! For a bracketed reading (system `before`, PHC, system `after`):
//! `delay = after - before` and `offset = phc - (before + after) / 2`. The
//! PHC was read somewhere inside the bracket, so the true offset lies within
//! `delay / 2` of that value. Readings with a larger delay were disturbed
//! (an interrupt, bus contention) on one side of the PHC read, which moves
//! their midpoint: so the estimate keeps the minimum-delay reading and
//! averages it with the others in a narrow band above it, the lowest-delay
//! band (see [`band_limit`]).
//!
//! A negative delay means the system clock was stepped during the read: the
//! whole batch is dropped. Arithmetic is in `i128` nanoseconds, so second
//! boundaries, 37 s TAI offsets and far-off PHCs need no special cases.

use thiserror::Error;

use crate::device::{RawBatch, Stamp};

/// Nanoseconds per second.
pub const NS_PER_S: i64 = 1_000_000_000;

/// The finest resolution a PHC timestamp has: a sample never claims an
/// error bound below it.
pub const RESOLUTION_NS: u64 = 1;

/// One measurement of the PHC against CLOCK_REALTIME, in the PHC's own time
/// scale (no TAI conversion, no configured offset yet).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Measurement {
    /// CLOCK_REALTIME at which `offset_ns` holds, ns since 1970.
    pub system_time_ns: i64,
    /// PHC minus CLOCK_REALTIME, ns.
    pub offset_ns: i64,
    /// Bound on the error of `offset_ns`, ns (at least [`RESOLUTION_NS`]).
    pub error_ns: u64,
    /// Readings combined into this measurement.
    pub readings: u32,
    /// The smallest bracket width in the batch, ns (0 for a cross-timestamp).
    pub min_delay_ns: u64,
    /// How far the offsets of the readings in the batch's lowest-delay band
    /// ([`band_limit`], never widened) scatter, one standard deviation, ns
    /// ([`band_spread_ns`]); `None` for a cross-timestamp or a band of fewer
    /// than [`SPREAD_MIN_READINGS`] readings.
    pub band_spread_ns: Option<u64>,
}

/// The fewest readings in a band whose scatter [`band_spread_ns`] reports.
pub const SPREAD_MIN_READINGS: usize = 3;

/// Why a batch gave no measurement.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum BatchError {
    /// The request succeeded but returned no readings.
    #[error("the request returned no readings")]
    NoReadings,
    /// A timestamp is malformed (nanoseconds >= 1e9, zero, or out of range).
    #[error("reading {index} has an invalid timestamp ({sec} s {nsec} ns)")]
    InvalidTimestamp {
        /// Index of the reading in the batch.
        index: usize,
        /// Its seconds.
        sec: i64,
        /// Its nanoseconds.
        nsec: u32,
    },
    /// The system clock went backwards inside a bracket: it was stepped
    /// during the read.
    #[error(
        "reading {index} has a negative delay ({delay_ns} ns): the system clock was stepped during the read"
    )]
    NegativeDelay {
        /// Index of the reading in the batch.
        index: usize,
        /// The negative delay, ns.
        delay_ns: i128,
    },
    /// The result does not fit in 64-bit nanoseconds.
    #[error("the offset does not fit in 64-bit nanoseconds")]
    Overflow,
    /// Even the best reading of the batch took far longer than usual: every
    /// read was disturbed (see [`DelayFilter`]).
    #[error(
        "best read delay {delay_ns} ns is over the limit of {limit_ns} ns (twice the recent typical {typical_ns} ns, plus {DELAY_SLACK_NS} ns): every read in the batch was disturbed"
    )]
    SlowBatch {
        /// The batch's smallest delay, ns.
        delay_ns: u64,
        /// The recent typical smallest delay, ns.
        typical_ns: u64,
        /// The limit it exceeded, ns.
        limit_ns: u64,
    },
}

/// A timestamp as nanoseconds since 1970; `None` when malformed. A zero
/// timestamp is rejected too: no kernel clock reads exactly the epoch, but
/// an untouched (zeroed) slot does.
fn ns(s: Stamp) -> Option<i128> {
    if i64::from(s.nsec) >= NS_PER_S || (s.sec == 0 && s.nsec == 0) {
        return None;
    }
    Some(i128::from(s.sec) * i128::from(NS_PER_S) + i128::from(s.nsec))
}

/// Readings with a delay up to this limit form the lowest-delay band, given
/// the minimum delay `min`: `min + min / 8`, so at most 12.5 % more
/// disturbance than the best reading (about 40 ns on a 300 ns bracket).
/// Readings that close add less bias than they remove noise by averaging;
/// anything wider is left out.
pub fn band_limit(min: i128) -> i128 {
    min + min / 8
}

/// The band's limit for a clock whose own timestamps scatter by `noise_ns`
/// (one standard deviation; 0 for a clean clock): [`band_limit`], widened
/// to every reading whose bracket spread (delay / sqrt(12)) is within that
/// noise. Such a reading adds less uncertainty than the noise it averages
/// away; on a noisy clock the band then holds most of the batch.
pub fn noisy_band_limit(min: i128, noise_ns: u64) -> i128 {
    // sqrt(12) = 3.4641
    band_limit(min).max(i128::from(noise_ns) * 34_641 / 10_000)
}

/// Divides rounding half away from zero.
fn div_round(n: i128, d: i128) -> i128 {
    let q = n / d;
    let r = n % d;
    if 2 * r.abs() >= d { q + n.signum() } else { q }
}

/// Reduces one raw batch to a measurement (a clean clock's band).
pub fn process(batch: &RawBatch) -> Result<Measurement, BatchError> {
    process_with_noise(batch, 0)
}

/// Reduces one raw batch to a measurement, for a clock whose timestamps
/// scatter by `noise_ns` ([`noisy_band_limit`]).
pub fn process_with_noise(batch: &RawBatch, noise_ns: u64) -> Result<Measurement, BatchError> {
    match batch {
        RawBatch::Precise { phc, system } => {
            let invalid = |s: Stamp| BatchError::InvalidTimestamp {
                index: 0,
                sec: s.sec,
                nsec: s.nsec,
            };
            let p = ns(*phc).ok_or(invalid(*phc))?;
            let t = ns(*system).ok_or(invalid(*system))?;
            Ok(Measurement {
                system_time_ns: i64::try_from(t).map_err(|_| BatchError::Overflow)?,
                offset_ns: i64::try_from(p - t).map_err(|_| BatchError::Overflow)?,
                error_ns: RESOLUTION_NS,
                readings: 1,
                min_delay_ns: 0,
                band_spread_ns: None,
            })
        }
        RawBatch::Bracketed(readings) => process_bracketed(readings, noise_ns),
    }
}

/// One bracketed reading in nanoseconds: delay, twice the midpoint, twice the
/// offset (doubled so that odd delays lose nothing).
struct Reading {
    delay: i128,
    mid2: i128,
    offset2: i128,
}

fn process_bracketed(
    brackets: &[crate::device::Bracket],
    noise_ns: u64,
) -> Result<Measurement, BatchError> {
    if brackets.is_empty() {
        return Err(BatchError::NoReadings);
    }
    let mut readings = Vec::with_capacity(brackets.len());
    for (index, b) in brackets.iter().enumerate() {
        let stamp = |s: Stamp| {
            ns(s).ok_or(BatchError::InvalidTimestamp {
                index,
                sec: s.sec,
                nsec: s.nsec,
            })
        };
        let before = stamp(b.before)?;
        let phc = stamp(b.phc)?;
        let after = stamp(b.after)?;
        let delay = after - before;
        if delay < 0 {
            return Err(BatchError::NegativeDelay {
                index,
                delay_ns: delay,
            });
        }
        let mid2 = before + after;
        readings.push(Reading {
            delay,
            mid2,
            offset2: 2 * phc - mid2,
        });
    }
    let min = readings.iter().map(|r| r.delay).min().unwrap_or(0);
    let band_spread_ns = band_spread_ns(&readings, band_limit(min));
    let limit = noisy_band_limit(min, noise_ns);
    let band: Vec<&Reading> = readings.iter().filter(|r| r.delay <= limit).collect();
    let count = band.len() as i128;
    let widest = band.iter().map(|r| r.delay).max().unwrap_or(min);
    let offset = div_round(band.iter().map(|r| r.offset2).sum::<i128>(), 2 * count);
    let system = div_round(band.iter().map(|r| r.mid2).sum::<i128>(), 2 * count);
    // Every reading in the band is within delay/2 of the truth, so their
    // mean is within widest/2; round up, and never below the resolution.
    let error = ((widest + 1) / 2).max(i128::from(RESOLUTION_NS));
    Ok(Measurement {
        system_time_ns: i64::try_from(system).map_err(|_| BatchError::Overflow)?,
        offset_ns: i64::try_from(offset).map_err(|_| BatchError::Overflow)?,
        error_ns: u64::try_from(error).map_err(|_| BatchError::Overflow)?,
        readings: u32::try_from(band.len()).map_err(|_| BatchError::Overflow)?,
        min_delay_ns: u64::try_from(min).map_err(|_| BatchError::Overflow)?,
        band_spread_ns,
    })
}

/// The standard deviation (n - 1, ns, rounded down) of the offsets of the
/// readings whose delay is within `limit` (the lowest-delay band): `None`
/// for fewer than [`SPREAD_MIN_READINGS`] or a scatter beyond 128-bit
/// arithmetic.
///
/// Readings in the lowest-delay band have nearly the same bracket, so a
/// clean clock's offsets in it differ only by where in its bracket each
/// read fell: at most delay / sqrt(12) if anywhere uniformly, and far less
/// in practice (13-14 ns on 460-500 ns brackets of the guest's test clock,
/// where 1 us of uniform timestamp noise shows as 557-562 ns). Unlike the
/// scatter of whole batches, this sees a clock's own noise however few
/// readings the band averages.
fn band_spread_ns(readings: &[Reading], limit: i128) -> Option<u64> {
    let band = || readings.iter().filter(|r| r.delay <= limit);
    let n = band().count() as i128;
    if n < SPREAD_MIN_READINGS as i128 {
        return None;
    }
    // Offsets are kept doubled (offset2) so that odd delays lose nothing.
    let mean2 = div_round(band().map(|r| r.offset2).sum::<i128>(), n);
    let squares = band().try_fold(0i128, |acc, r| {
        let d = r.offset2.checked_sub(mean2)?;
        acc.checked_add(d.checked_mul(d)?)
    })?;
    // offset = offset2 / 2: a quarter of the doubled variance
    let variance = squares / (4 * (n - 1));
    u64::try_from(variance.cast_unsigned().isqrt()).ok()
}

/// Batches remembered by [`DelayFilter`].
pub const DELAY_WINDOW: usize = 15;

/// Batches [`DelayFilter`] sees before it judges any.
pub const DELAY_WARMUP: usize = 3;

/// Slack added to the delay limit, ns, so that a very short typical delay
/// does not make ordinary jitter look like a disturbance.
pub const DELAY_SLACK_NS: u64 = 100;

/// Rejects a batch whose best delay is far above the recent typical one.
///
/// The sock protocol that carries samples to ntpd-rs has no error field, so
/// a batch in which every read was disturbed (all readings delayed by an
/// interrupt storm, a preempted thread, bus contention) would reach the
/// daemon as an ordinary sample with an error of up to half its delay. The
/// filter keeps the best delays of the last [`DELAY_WINDOW`] batches,
/// rejected ones included (so a lasting change of the typical delay is
/// adopted within about half a window), and rejects a batch whose best delay
/// exceeds twice their median plus [`DELAY_SLACK_NS`].
#[derive(Clone, Debug, Default)]
pub struct DelayFilter {
    recent: std::collections::VecDeque<u64>,
}

impl DelayFilter {
    /// A filter with no history.
    pub fn new() -> Self {
        Self::default()
    }

    /// The (lower) median of the remembered delays, once warmed up.
    pub fn typical(&self) -> Option<u64> {
        if self.recent.len() < DELAY_WARMUP {
            return None;
        }
        let mut sorted: Vec<u64> = self.recent.iter().copied().collect();
        sorted.sort_unstable();
        Some(sorted[(sorted.len() - 1) / 2])
    }

    /// Judges a batch by its best delay, then remembers that delay.
    pub fn check(&mut self, delay_ns: u64) -> Result<(), BatchError> {
        let verdict = match self.typical() {
            Some(typical_ns) => {
                let limit_ns = typical_ns.saturating_mul(2).saturating_add(DELAY_SLACK_NS);
                if delay_ns > limit_ns {
                    Err(BatchError::SlowBatch {
                        delay_ns,
                        typical_ns,
                        limit_ns,
                    })
                } else {
                    Ok(())
                }
            }
            None => Ok(()),
        };
        if self.recent.len() == DELAY_WINDOW {
            self.recent.pop_front();
        }
        self.recent.push_back(delay_ns);
        verdict
    }
}

/// Converts a measurement's PHC-scale offset to the UTC-based offset the
/// host expects: subtracts the TAI-UTC offset (seconds; 0 for a UTC PHC)
/// and adds the configured fixed correction (ns).
pub fn to_utc_offset(
    phc_offset_ns: i64,
    tai_utc_s: i64,
    correction_ns: i64,
) -> Result<i64, BatchError> {
    let v = i128::from(phc_offset_ns) - i128::from(tai_utc_s) * i128::from(NS_PER_S)
        + i128::from(correction_ns);
    i64::try_from(v).map_err(|_| BatchError::Overflow)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::Bracket;

    /// A reading from nanoseconds since 1970 (split into sec/nsec as the
    /// kernel does).
    fn st(ns: i64) -> Stamp {
        Stamp::new(ns.div_euclid(NS_PER_S), ns.rem_euclid(NS_PER_S) as u32)
    }

    fn br(before: i64, phc: i64, after: i64) -> Bracket {
        Bracket {
            before: st(before),
            phc: st(phc),
            after: st(after),
        }
    }

    const T0: i64 = 1_763_800_000 * NS_PER_S; // November 2025

    #[test]
    fn single_reading_uses_the_midpoint_not_the_pre_read_time() {
        // PHC read 100 ns into a 400 ns bracket: midpoint at +200.
        let m = process(&RawBatch::Bracketed(vec![br(T0, T0 + 500, T0 + 400)])).unwrap();
        assert_eq!(m.offset_ns, 300);
        assert_eq!(m.system_time_ns, T0 + 200);
        assert_eq!(m.error_ns, 200);
        assert_eq!(m.readings, 1);
        assert_eq!(m.min_delay_ns, 400);
    }

    #[test]
    fn minimum_delay_reading_wins_over_disturbed_ones() {
        // Offset truly 1000 ns. Reading 0 and 2 were disturbed after the PHC
        // read (long delays pull their midpoints late, offsets low).
        let batch = RawBatch::Bracketed(vec![
            br(T0, T0 + 1000 + 150, T0 + 5000),
            br(T0 + 10_000, T0 + 11_000 + 150, T0 + 10_300),
            br(T0 + 20_000, T0 + 21_000 + 150, T0 + 22_000),
        ]);
        let m = process(&batch).unwrap();
        assert_eq!(m.offset_ns, 1000);
        assert_eq!(m.readings, 1);
        assert_eq!(m.error_ns, 150);
        assert_eq!(m.system_time_ns, T0 + 10_150);
    }

    #[test]
    fn readings_in_the_low_delay_band_are_averaged() {
        // Delays 800, 850 (within 800 + 100) and 2000 (outside).
        let batch = RawBatch::Bracketed(vec![
            br(T0, T0 + 400 + 10, T0 + 800),
            br(T0 + 5000, T0 + 5425 + 30, T0 + 5850),
            br(T0 + 9000, T0 + 10_000 + 5000, T0 + 11_000),
        ]);
        let m = process(&batch).unwrap();
        assert_eq!(m.readings, 2);
        assert_eq!(m.offset_ns, 20, "mean of 10 and 30");
        assert_eq!(m.error_ns, 425, "half the widest delay in the band");
        assert_eq!(m.min_delay_ns, 800);
        assert_eq!(m.system_time_ns, T0 + (400 + 5425) / 2 + 1);
    }

    #[test]
    fn a_noisy_clock_widens_the_band() {
        // Delays 300, 600, 900 ns; offsets 0, +100, -100 ns around the truth.
        let batch = RawBatch::Bracketed(vec![
            br(T0, T0 + 150, T0 + 300),
            br(T0, T0 + 400, T0 + 600),
            br(T0, T0 + 350, T0 + 900),
        ]);
        assert_eq!(process(&batch).unwrap().readings, 1, "clean: the best only");
        assert_eq!(noisy_band_limit(300, 0), 337);
        assert_eq!(noisy_band_limit(300, 200), 692);
        let m = process_with_noise(&batch, 200).unwrap();
        assert_eq!((m.readings, m.offset_ns), (2, 50));
        assert_eq!(m.error_ns, 300, "half the widest delay in the band");
        let m = process_with_noise(&batch, 300).unwrap();
        assert_eq!((m.readings, m.offset_ns), (3, 0));
    }

    #[test]
    fn band_limit_is_an_eighth_above_the_minimum() {
        assert_eq!(band_limit(0), 0);
        assert_eq!(band_limit(300), 337);
        assert_eq!(band_limit(800), 900);
    }

    #[test]
    fn odd_delays_keep_the_half_nanosecond() {
        // Bracket of 3 ns: midpoint at +1.5, PHC at +1.5 + 7 = offset 7.
        let m = process(&RawBatch::Bracketed(vec![br(T0, T0 + 8, T0 + 3)])).unwrap();
        assert_eq!(m.offset_ns, 7); // 2*8 - 3 = 13 -> 6.5 -> rounds to 7
        assert_eq!(m.error_ns, 2, "1.5 ns rounded up");
    }

    #[test]
    fn zero_delay_still_claims_the_resolution() {
        let m = process(&RawBatch::Bracketed(vec![br(T0, T0 + 5, T0)])).unwrap();
        assert_eq!(m.error_ns, RESOLUTION_NS);
        assert_eq!(m.offset_ns, 5);
    }

    #[test]
    fn negative_delay_drops_the_whole_batch() {
        let batch = RawBatch::Bracketed(vec![
            br(T0, T0 + 10, T0 + 300),
            br(T0 + 1000, T0 + 1010, T0 + 1000 - NS_PER_S), // stepped back 1 s
            br(T0 + 2000, T0 + 2010, T0 + 2300),
        ]);
        assert_eq!(
            process(&batch).unwrap_err(),
            BatchError::NegativeDelay {
                index: 1,
                delay_ns: -i128::from(NS_PER_S)
            }
        );
    }

    #[test]
    fn empty_batch_is_no_readings() {
        assert_eq!(
            process(&RawBatch::Bracketed(vec![])).unwrap_err(),
            BatchError::NoReadings
        );
    }

    #[test]
    fn malformed_timestamps_are_rejected() {
        let bad_nsec = Bracket {
            before: st(T0),
            phc: Stamp::new(T0 / NS_PER_S, 1_000_000_000),
            after: st(T0 + 100),
        };
        assert!(matches!(
            process(&RawBatch::Bracketed(vec![bad_nsec])),
            Err(BatchError::InvalidTimestamp { index: 0, .. })
        ));
        let zero = Bracket {
            before: st(T0),
            phc: Stamp::default(),
            after: st(T0 + 100),
        };
        assert!(matches!(
            process(&RawBatch::Bracketed(vec![br(T0, T0, T0 + 1), zero])),
            Err(BatchError::InvalidTimestamp { index: 1, .. })
        ));
        assert!(matches!(
            process(&RawBatch::Precise {
                phc: Stamp::default(),
                system: st(T0)
            }),
            Err(BatchError::InvalidTimestamp { .. })
        ));
    }

    #[test]
    fn second_boundaries_inside_a_bracket() {
        // before 0.999999900, after 1.000000100 of the next second; the PHC
        // read lands on the other side of its own second boundary.
        let before = T0 + NS_PER_S - 100;
        let after = T0 + NS_PER_S + 100;
        let phc = T0 + NS_PER_S + 42;
        let b = br(before, phc, after);
        assert_eq!(b.before.nsec, 999_999_900);
        assert_eq!(b.after.nsec, 100);
        let m = process(&RawBatch::Bracketed(vec![b])).unwrap();
        assert_eq!(m.offset_ns, 42);
        assert_eq!(m.error_ns, 100);
        assert_eq!(m.system_time_ns, T0 + NS_PER_S);
        // And a negative offset crossing the boundary the other way.
        let m = process(&RawBatch::Bracketed(vec![br(
            before,
            T0 + NS_PER_S - 150,
            after,
        )]))
        .unwrap();
        assert_eq!(m.offset_ns, -150);
    }

    #[test]
    fn tai_phc_37_seconds_ahead_keeps_nanosecond_precision() {
        let tai = 37 * NS_PER_S;
        let batch = RawBatch::Bracketed(vec![
            br(
                T0 + 999_999_950,
                T0 + tai + 1_000_000_003,
                T0 + 1_000_000_050,
            ),
            br(
                T0 + 2_000_000_000,
                T0 + tai + 2_000_000_500,
                T0 + 2_000_001_000,
            ),
        ]);
        let m = process(&batch).unwrap();
        assert_eq!(m.offset_ns, tai + 3);
        assert_eq!(m.readings, 1);
        assert_eq!(to_utc_offset(m.offset_ns, 37, 0).unwrap(), 3);
    }

    #[test]
    fn precise_is_zero_width_but_claims_the_resolution() {
        let m = process(&RawBatch::Precise {
            phc: st(T0 + 37 * NS_PER_S + 12),
            system: st(T0),
        })
        .unwrap();
        assert_eq!(m.offset_ns, 37 * NS_PER_S + 12);
        assert_eq!(m.system_time_ns, T0);
        assert_eq!(m.error_ns, 1);
        assert_eq!(m.min_delay_ns, 0);
        assert_eq!(m.readings, 1);
        assert_eq!(m.band_spread_ns, None);
    }

    #[test]
    fn utc_conversion_and_correction() {
        assert_eq!(to_utc_offset(37 * NS_PER_S - 5, 37, 0).unwrap(), -5);
        assert_eq!(to_utc_offset(100, 0, -30).unwrap(), 70);
        assert_eq!(to_utc_offset(-100, 0, 1_500_000).unwrap(), 1_499_900);
        assert_eq!(
            to_utc_offset(i64::MIN, 37, 0).unwrap_err(),
            BatchError::Overflow
        );
    }

    #[test]
    fn delay_filter_learns_then_rejects_disturbed_batches() {
        let mut f = DelayFilter::new();
        // Warm-up: even a slow first call (0.3 ms) is accepted.
        assert!(f.check(300_000).is_ok());
        assert!(f.check(320).is_ok());
        assert!(f.check(300).is_ok());
        assert_eq!(f.typical(), Some(320));
        assert!(f.check(740).is_ok(), "limit 2 * 320 + 100 = 740");
        assert_eq!(
            f.check(5000),
            Err(BatchError::SlowBatch {
                delay_ns: 5000,
                typical_ns: 320,
                limit_ns: 740
            })
        );
        assert!(f.check(310).is_ok());
    }

    #[test]
    fn delay_filter_adopts_a_lasting_change() {
        let mut f = DelayFilter::new();
        for _ in 0..DELAY_WINDOW {
            f.check(300).unwrap();
        }
        // The typical delay moves to 2 us for good: rejected at first, then
        // accepted once it is the median of the window.
        let verdicts: Vec<bool> = (0..DELAY_WINDOW).map(|_| f.check(2000).is_ok()).collect();
        let first_ok = verdicts.iter().position(|ok| *ok).unwrap();
        assert_eq!(first_ok, DELAY_WINDOW / 2 + 1);
        assert!(verdicts[first_ok..].iter().all(|ok| *ok));
    }

    /// A small deterministic generator (xorshift64*), so the property test
    /// below needs no dependency and always sees the same cases.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: u64) -> i64 {
            (self.next() % n) as i64
        }
    }

    #[test]
    fn the_truth_always_lies_within_the_error_bound() {
        // Random batches: the PHC is read `pre` ns after the first system
        // read and `post` ns before the second, with occasional long
        // disturbances on either side, true offsets up to +-40 s (TAI and
        // negative ones included) and brackets across second boundaries.
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for case in 0..20_000 {
            let truth = rng.below(80 * NS_PER_S as u64) - 40 * NS_PER_S;
            let n = 1 + rng.below(25) as usize;
            let mut t = T0 + rng.below(NS_PER_S as u64);
            let mut readings = Vec::with_capacity(n);
            for _ in 0..n {
                let disturbed = |rng: &mut Rng| {
                    if rng.below(8) == 0 {
                        rng.below(20_000)
                    } else {
                        rng.below(300)
                    }
                };
                let pre = 20 + disturbed(&mut rng);
                let post = 20 + disturbed(&mut rng);
                readings.push(br(t, t + pre + truth, t + pre + post));
                t += pre + post + rng.below(1000);
            }
            let m = process(&RawBatch::Bracketed(readings)).unwrap();
            let miss = (m.offset_ns - truth).unsigned_abs();
            assert!(
                miss <= m.error_ns,
                "case {case}: offset {} truth {truth} error bound {}",
                m.offset_ns,
                m.error_ns
            );
            assert!(m.readings >= 1 && m.readings as usize <= n);
        }
    }

    #[test]
    fn far_off_phc_reports_instead_of_overflowing() {
        // An unset NIC PHC at 1970 + 5 s while the system is in 2025.
        let m = process(&RawBatch::Bracketed(vec![br(T0, 5 * NS_PER_S, T0 + 100)])).unwrap();
        assert_eq!(m.offset_ns, 5 * NS_PER_S - (T0 + 50));
    }

    /// A batch of reads 10 us apart, each at the middle of its bracket
    /// (`delays`) plus its offset (`offsets`).
    fn batch(delays: &[i64], offsets: &[i64]) -> RawBatch {
        RawBatch::Bracketed(
            delays
                .iter()
                .zip(offsets)
                .enumerate()
                .map(|(i, (&d, &o))| {
                    let before = T0 + i as i64 * 10_000;
                    br(before, before + d / 2 + o, before + d)
                })
                .collect(),
        )
    }

    #[test]
    fn band_spread_is_the_scatter_of_the_lowest_delay_reads_only() {
        // Three reads in the band (400-450 ns) at -600, 0, +600: sd 600;
        // the slow reads (900 ns) are far off and do not count.
        let m = process(&batch(
            &[400, 450, 420, 900, 900],
            &[-600, 0, 600, 5000, -5000],
        ))
        .unwrap();
        assert_eq!(m.band_spread_ns, Some(600));
        assert_eq!(m.readings, 3);
        // Odd doubled offsets keep their half nanosecond: -1, 0, +1.5 ns
        // around the middle have an sd of 1.26 ns, rounded down.
        let odd = RawBatch::Bracketed(vec![
            br(T0, T0 + 199, T0 + 400),
            br(T0 + 1000, T0 + 1200, T0 + 1400),
            br(T0 + 2000, T0 + 2202, T0 + 2401),
        ]);
        assert_eq!(process(&odd).unwrap().band_spread_ns, Some(1));
        // Two reads in the band: too few to say.
        let m = process(&batch(&[400, 420, 900], &[-600, 600, 0])).unwrap();
        assert_eq!(m.band_spread_ns, None);
        // A widened band averages more reads, but the spread stays that of
        // the clean band: it measures the clock the same way every time.
        let delays = [400, 410, 420, 800, 850];
        let offsets = [-100, 0, 100, 1000, -1000];
        let clean = process(&batch(&delays, &offsets)).unwrap();
        let wide = process_with_noise(&batch(&delays, &offsets), 1000).unwrap();
        assert_eq!((clean.readings, wide.readings), (3, 5));
        assert_eq!(clean.band_spread_ns, Some(100));
        assert_eq!(wide.band_spread_ns, Some(100));
        // A far-off PHC: large offsets, small scatter, no overflow.
        let far = RawBatch::Bracketed(
            (0..3)
                .map(|i| {
                    br(
                        T0 + i * 1000,
                        5 * NS_PER_S + i * 1000 + 100 * i,
                        T0 + i * 1000 + 200,
                    )
                })
                .collect(),
        );
        assert_eq!(process(&far).unwrap().band_spread_ns, Some(100));
    }
}
