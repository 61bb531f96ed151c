//! Several readings of one poll interval made into the one sample the
//! daemon gets, without I/O.
//!
//! The worker reads the plugin several times per poll interval (the
//! `reading-interval` key) and sends one datagram right after the last
//! reading. Between readings the system clock keeps drifting and the
//! daemon may be slewing it, so the offsets lie on a line, not at a point:
//! [`combine`] fits that line robustly (Theil–Sen: the median of the
//! pairwise slopes), moves every reading along it to the last reading's
//! time, and takes the median. One wild reading (a preempted read, an
//! interrupt between the timestamps) moves neither the slope nor the
//! median. A step of the system clock between readings (the daemon steps
//! large offsets) splits them into two time bases: only the readings after
//! the last such jump are used. When a poll has more than
//! [`SELECT_ABOVE`] readings (a long poll interval), only the least
//! disturbed take part ([`least_disturbed`]): a reading's error bound is
//! its read delay, and the readings with the shortest delays are the ones
//! least moved by what happened during the read.

use ntpd_plugin_api::Sample;

/// The largest change of offset between two readings that is still drift,
/// beyond [`JUMP_RATE_PPM`] times the time between them, ns.
pub const JUMP_FLOOR_NS: i64 = 1_000_000;
/// The fastest the offset can drift, ppm: ntpd-rs slews at no more than
/// 200 ppm and a clock's own error is far below the rest.
pub const JUMP_RATE_PPM: i64 = 500;

/// With at most this many readings in a poll all are used (at the default
/// four readings per 1 s poll nothing is left out); with more, only the
/// least disturbed ([`least_disturbed`]), when at least this many are.
pub const SELECT_ABOVE: usize = 4;

/// A reading is among the least disturbed when its error bound is at most
/// this many halves of the poll's smallest bound (1.5 times it).
pub const DISTURBED_HALVES: u64 = 3;

/// The readings (in the order taken) whose error bound is within
/// [`DISTURBED_HALVES`] halves of the smallest, when there are more than
/// [`SELECT_ABOVE`] readings and at least that many such readings; all of
/// them otherwise. The error bound of a bracketed read is half its delay,
/// so this keeps the reads whose brackets were the narrowest in the whole
/// poll: an interrupt or a busy bus during a read widens its bracket and
/// moves its offset. Readings that all share one bound (a cross-timestamp,
/// a plugin with a fixed bound) are all kept.
pub fn least_disturbed(readings: &[Sample]) -> Vec<Sample> {
    if readings.len() <= SELECT_ABOVE {
        return readings.to_vec();
    }
    let min = readings
        .iter()
        .map(|r| r.error_ns)
        .min()
        .unwrap_or_default();
    let limit = min.saturating_mul(DISTURBED_HALVES) / 2;
    let kept: Vec<Sample> = readings
        .iter()
        .filter(|r| r.error_ns <= limit)
        .copied()
        .collect();
    if kept.len() < SELECT_ABOVE {
        readings.to_vec()
    } else {
        kept
    }
}

/// Whether the offset changed between `a` and `b` more than drift and
/// slewing can explain: the system clock was stepped between them.
pub fn is_jump(a: &Sample, b: &Sample) -> bool {
    let dt = b
        .system_time_ns
        .saturating_sub(a.system_time_ns)
        .unsigned_abs();
    let allowed =
        JUMP_FLOOR_NS.unsigned_abs() + dt.saturating_mul(JUMP_RATE_PPM.unsigned_abs()) / 1_000_000;
    b.offset_ns.abs_diff(a.offset_ns) > allowed
}

/// The median of `values` (the mean of the middle two for an even count);
/// `None` for no values.
fn median(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len() % 2 == 1 {
        values[mid]
    } else {
        f64::midpoint(values[mid - 1], values[mid])
    })
}

/// The slope of offset against system time, ns per ns: the median of the
/// slopes between every pair of readings taken at different times (0 when
/// there is no such pair).
pub fn theil_sen_slope(readings: &[Sample]) -> f64 {
    let mut slopes = Vec::with_capacity(readings.len() * readings.len().saturating_sub(1) / 2);
    for (i, a) in readings.iter().enumerate() {
        for b in &readings[i + 1..] {
            let dt = b.system_time_ns - a.system_time_ns;
            if dt != 0 {
                #[allow(clippy::cast_precision_loss)] // ns differences within one poll
                slopes.push((b.offset_ns - a.offset_ns) as f64 / dt as f64);
            }
        }
    }
    median(&mut slopes).unwrap_or(0.0)
}

/// One sample from the readings of a poll interval, in the order taken;
/// `None` for no readings. The readings used are those since the last step
/// of the system clock, of them the least disturbed ([`least_disturbed`]).
///
/// - `system_time_ns`, `leap`, `reference_error_ns`, `flags`: the last
///   reading's (the datagram is sent right after it);
/// - `offset_ns`: the median of the readings moved along the fitted line to
///   the last reading's time;
/// - `error_ns`: the median of the readings' own bounds plus the median
///   distance of the moved readings from the result (their scatter), so
///   the bound never claims more than the readings support;
/// - `readings`: the sum of the readings' counts.
pub fn combine(readings: &[Sample]) -> Option<Sample> {
    let last = *readings.last()?;
    // Only the readings since the last step of the system clock.
    let start = readings
        .windows(2)
        .rposition(|w| is_jump(&w[0], &w[1]))
        .map_or(0, |i| i + 1);
    let used = least_disturbed(&readings[start..]);
    if used.len() == 1 {
        return Some(last);
    }
    let slope = theil_sen_slope(&used);
    #[allow(clippy::cast_precision_loss)] // ns within one poll interval
    let mut moved: Vec<f64> = used
        .iter()
        .map(|r| r.offset_ns as f64 + slope * (last.system_time_ns - r.system_time_ns) as f64)
        .collect();
    let offset = median(&mut moved.clone())?;
    let mut spread: Vec<f64> = moved.iter_mut().map(|m| (*m - offset).abs()).collect();
    let scatter = median(&mut spread)?;
    #[allow(clippy::cast_precision_loss)] // error bounds are far below 2^52 ns
    let mut errors: Vec<f64> = used.iter().map(|r| r.error_ns as f64).collect();
    let error = median(&mut errors)? + scatter;
    let mut sample = last;
    #[allow(clippy::cast_possible_truncation)] // |offset| <= 2^31 s in ns, checked before
    {
        sample.offset_ns = offset.round() as i64;
    }
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // >= 0, small
    {
        sample.error_ns = (error.ceil() as u64).max(1);
    }
    sample.readings = used
        .iter()
        .map(|r| r.readings.max(1))
        .fold(0u32, u32::saturating_add);
    Some(sample)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reading at `t` ns with `offset` and `error`.
    fn r(t: i64, offset: i64, error: u64) -> Sample {
        let mut s = Sample::new(t, offset, error);
        s.readings = 1;
        s
    }

    const T0: i64 = 1_800_000_000_000_000_000;
    const MS: i64 = 1_000_000;

    #[test]
    fn nothing_from_nothing_and_one_reading_is_itself() {
        assert_eq!(combine(&[]), None);
        let one = r(T0, 42, 7);
        assert_eq!(combine(&[one]), Some(one));
    }

    #[test]
    fn drift_is_followed_to_the_last_reading() {
        // 20 ppm: the offset grows 5 us per 250 ms; the combined offset is
        // the last reading's, not the middle of the poll.
        let readings: Vec<Sample> = (0..4)
            .map(|i| r(T0 + i * 250 * MS, 1_000 + i * 5_000, 10))
            .collect();
        let s = combine(&readings).unwrap();
        assert_eq!(s.offset_ns, 16_000);
        assert_eq!(s.system_time_ns, T0 + 750 * MS);
        assert_eq!(s.error_ns, 10, "no scatter on a clean line");
        assert_eq!(s.readings, 4);
        assert!((theil_sen_slope(&readings) - 20e-6).abs() < 1e-12);
    }

    #[test]
    fn one_wild_reading_moves_neither_slope_nor_median() {
        let mut readings: Vec<Sample> = (0..5).map(|i| r(T0 + i * 250 * MS, 100, 5)).collect();
        readings[2].offset_ns = 900_000; // 0.9 ms off: not a step, just wrong
        let s = combine(&readings).unwrap();
        assert_eq!(s.offset_ns, 100);
        assert_eq!(s.error_ns, 5);
    }

    #[test]
    fn scatter_widens_the_bound() {
        let offsets = [0, 40, -40, 40, -40, 0, 40];
        let readings: Vec<Sample> = offsets
            .iter()
            .enumerate()
            .map(|(i, &o)| r(T0 + i64::try_from(i).unwrap() * 250 * MS, o, 3))
            .collect();
        let s = combine(&readings).unwrap();
        assert!(s.offset_ns.abs() <= 40, "{}", s.offset_ns);
        assert!(s.error_ns > 3, "the scatter is added: {}", s.error_ns);
        assert!(s.error_ns < 60, "{}", s.error_ns);
    }

    #[test]
    fn a_step_between_readings_keeps_only_the_readings_after_it() {
        // The daemon stepped the clock by 200 ms after the second reading.
        let readings = [
            r(T0, 200_000_000, 5),
            r(T0 + 250 * MS, 200_000_010, 5),
            r(T0 + 200 * MS + 500 * MS, 30, 5),
            r(T0 + 200 * MS + 750 * MS, 40, 5),
        ];
        assert!(is_jump(&readings[1], &readings[2]));
        let s = combine(&readings).unwrap();
        assert_eq!(s.offset_ns, 40);
        assert_eq!(s.readings, 2);
        // A step as the very last reading leaves that reading alone.
        let s = combine(&readings[..3]).unwrap();
        assert_eq!((s.offset_ns, s.readings), (30, 1));
    }

    #[test]
    fn slewing_at_the_fastest_rate_is_not_a_jump() {
        let a = r(T0, 0, 1);
        // 200 ppm for 16 s is 3.2 ms: within 1 ms + 500 ppm * 16 s.
        let b = r(T0 + 16_000 * MS, 3_200_000, 1);
        assert!(!is_jump(&a, &b));
        assert!(is_jump(&a, &r(T0 + 250 * MS, 1_200_000, 1)));
        assert!(is_jump(&a, &r(T0 + 250 * MS, -1_200_000, 1)));
    }

    #[test]
    fn a_long_poll_uses_its_least_disturbed_readings() {
        // 16 readings on a clean line at 20 ppm; the narrow brackets (bound
        // 100) read 0 off it, the wide ones (bound 400: disturbed reads)
        // 300 ns high. A plain median would take the wide ones' side.
        let readings: Vec<Sample> = (0..16)
            .map(|i| {
                let t = i * 250 * MS;
                let wide = i % 4 != 0;
                r(
                    T0 + t,
                    t / 50_000 + if wide { 300 } else { 0 },
                    if wide { 400 } else { 100 },
                )
            })
            .collect();
        let s = combine(&readings).unwrap();
        assert_eq!(s.offset_ns, 15 * 250 * MS / 50_000, "on the line");
        assert_eq!(s.readings, 4, "the four narrow ones");
        assert_eq!(s.error_ns, 100);
        assert_eq!(
            s.system_time_ns,
            T0 + 15 * 250 * MS,
            "still the last reading's time"
        );
        // Within 1.5 times the smallest bound counts as narrow.
        let mut near = readings.clone();
        near[1].error_ns = 150;
        near[1].offset_ns -= 300;
        assert_eq!(combine(&near).unwrap().readings, 5);
    }

    #[test]
    fn few_readings_or_few_narrow_ones_are_all_used() {
        // Four readings: all of them, whatever their bounds.
        let four = [
            r(T0, 0, 100),
            r(T0 + MS, 0, 900),
            r(T0 + 2 * MS, 0, 900),
            r(T0 + 3 * MS, 0, 900),
        ];
        assert_eq!(least_disturbed(&four).len(), 4);
        // Eight readings with three narrow ones: too few to take a median
        // that survives one bad read among them, so all eight.
        let mut eight: Vec<Sample> = (0..8).map(|i| r(T0 + i * MS, 0, 900)).collect();
        for e in &mut eight[..3] {
            e.error_ns = 100;
        }
        assert_eq!(least_disturbed(&eight).len(), 8);
        eight[3].error_ns = 100;
        assert_eq!(least_disturbed(&eight).len(), 4);
        // One shared bound (a cross-timestamp): all.
        let same: Vec<Sample> = (0..16).map(|i| r(T0 + i * MS, 0, 1)).collect();
        assert_eq!(least_disturbed(&same).len(), 16);
        assert!(least_disturbed(&[]).is_empty());
    }

    #[test]
    fn readings_at_one_time_have_no_slope() {
        let readings = [r(T0, 10, 1), r(T0, 30, 1), r(T0, 20, 1)];
        assert!(theil_sen_slope(&readings).abs() < f64::EPSILON);
        assert_eq!(combine(&readings).unwrap().offset_ns, 20);
    }

    #[test]
    fn the_last_readings_leap_and_reference_bound_are_kept() {
        let mut last = r(T0 + 250 * MS, 0, 1);
        last.leap = ntpd_plugin_api::Leap::INSERT;
        last.reference_error_ns = 100;
        let s = combine(&[r(T0, 0, 1), last]).unwrap();
        assert_eq!((s.leap, s.reference_error_ns), (last.leap, 100));
    }
}
