//! Detection of the read method (once, at init) and taking samples, over any
//! [`PhcDevice`].

use ntpd_plugin_api::{ReadMethod, Sample};

use crate::device::{Caps, Errno, ErrnoClass, PhcDevice, RawBatch};
use crate::error::PhcError;
use crate::process::{
    BatchError, DelayFilter, Measurement, process, process_with_noise, to_utc_offset,
};

/// Attempts per request when the device says "try again" (EINTR, EAGAIN,
/// EBUSY, ETIMEDOUT) or a batch is spoiled (negative delay) during
/// detection, before giving up on that request.
pub const DETECT_ATTEMPTS: usize = 3;

/// Extra batches read at init, after detection, to estimate the precision
/// from typical rather than first-call delays (the first call on a new path
/// can take much longer) and from the scatter of their offsets.
pub const PRECISION_BATCHES: usize = 8;

/// The fewest batches with a band spread that [`band_noise_ns`] judges.
pub const SPREAD_MIN_BATCHES: usize = 4;

/// A read method.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// PTP_SYS_OFFSET_PRECISE: a hardware cross-timestamp.
    Precise,
    /// PTP_SYS_OFFSET_EXTENDED: driver-bracketed readings.
    Extended,
    /// PTP_SYS_OFFSET: kernel-bracketed readings.
    Standard,
}

impl Method {
    /// Every method, in the order detection tries them.
    pub const ALL: [Method; 3] = [Method::Precise, Method::Extended, Method::Standard];

    /// The configuration name.
    pub fn name(self) -> &'static str {
        match self {
            Method::Precise => "precise",
            Method::Extended => "extended",
            Method::Standard => "standard",
        }
    }

    /// The ioctl's name, for messages.
    pub fn request(self) -> &'static str {
        match self {
            Method::Precise => "PTP_SYS_OFFSET_PRECISE",
            Method::Extended => "PTP_SYS_OFFSET_EXTENDED",
            Method::Standard => "PTP_SYS_OFFSET",
        }
    }

    /// The ABI's name for it.
    pub fn read_method(self) -> ReadMethod {
        match self {
            Method::Precise => ReadMethod::PRECISE,
            Method::Extended => ReadMethod::EXTENDED,
            Method::Standard => ReadMethod::STANDARD,
        }
    }

    /// Whether `readings` applies.
    pub fn uses_readings(self) -> bool {
        self != Method::Precise
    }
}

/// Issues one request of `method`.
fn read<D: PhcDevice>(dev: &mut D, method: Method, readings: u32) -> Result<RawBatch, Errno> {
    match method {
        Method::Precise => dev.precise(),
        Method::Extended => dev.extended(readings),
        Method::Standard => dev.standard(readings),
    }
}

/// The error for a failed call, by errno class. `at_init` decides what an
/// unexpected errno is: fatal at init, "detect again" (unavailable) later.
pub fn errno_error(label: &str, op: &'static str, errno: Errno, at_init: bool) -> PhcError {
    let label = label.to_owned();
    match errno.class() {
        ErrnoClass::Gone => PhcError::Gone { label, op, errno },
        ErrnoClass::Retry => PhcError::Busy { label, op, errno },
        ErrnoClass::Denied => PhcError::Denied { label, op, errno },
        ErrnoClass::Unsupported | ErrnoClass::Other if at_init => {
            PhcError::Fatal { label, op, errno }
        }
        ErrnoClass::Unsupported | ErrnoClass::Other => PhcError::Failed { label, op, errno },
    }
}

/// What detection found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Detection {
    /// The clock's capabilities.
    pub caps: Caps,
    /// The first method that gave a valid reading.
    pub method: Method,
    /// That reading.
    pub first: Measurement,
    /// What each method tried before it returned, e.g.
    /// `precise: EOPNOTSUPP`.
    pub skipped: Vec<String>,
}

/// Reads the capabilities, then tries the methods in order (precise,
/// extended, standard, or only the configured one) and keeps the first that
/// yields a valid measurement. A request that succeeds with no readings is
/// not valid.
pub fn detect<D: PhcDevice>(
    dev: &mut D,
    label: &str,
    forced: Option<Method>,
    readings: u32,
) -> Result<Detection, PhcError> {
    let caps = {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match dev.caps() {
                Ok(c) => break c,
                Err(e) if e.class() == ErrnoClass::Retry && attempt < DETECT_ATTEMPTS => {}
                Err(e) if e.class() == ErrnoClass::Unsupported => {
                    return Err(PhcError::NotAPhc {
                        label: label.to_owned(),
                        op: "PTP_CLOCK_GETCAPS",
                        errno: e,
                    });
                }
                Err(e) => return Err(errno_error(label, "PTP_CLOCK_GETCAPS", e, true)),
            }
        }
    };

    let mut skipped = Vec::new();
    let candidates: Vec<Method> = match forced {
        Some(method) => vec![method],
        None => {
            let mut m = Vec::with_capacity(3);
            if caps.cross_timestamping {
                m.push(Method::Precise);
            } else {
                skipped.push("precise: the driver offers no cross-timestamp".to_owned());
            }
            m.extend([Method::Extended, Method::Standard]);
            m
        }
    };

    // The device counts as gone only if the last method tried found it
    // gone: ENODEV from PRECISE alone can mean just that the system
    // clocksource cannot be cross-timestamped, and the next method works.
    let mut gone: Option<(Method, Errno)> = None;
    for method in candidates {
        gone = None;
        let mut attempt = 0;
        let outcome = loop {
            attempt += 1;
            let last = attempt >= DETECT_ATTEMPTS;
            match read(dev, method, readings) {
                Ok(batch) => match process(&batch) {
                    Ok(m) => {
                        return Ok(Detection {
                            caps,
                            method,
                            first: m,
                            skipped,
                        });
                    }
                    Err(BatchError::NoReadings) => break BatchError::NoReadings.to_string(),
                    Err(e) if last => break e.to_string(),
                    Err(_) => {}
                },
                Err(e) => match e.class() {
                    ErrnoClass::Retry if !last => {}
                    // Busy through every attempt: report it rather than
                    // settle for a worse method for the source's lifetime.
                    ErrnoClass::Retry | ErrnoClass::Denied => {
                        return Err(errno_error(label, method.request(), e, true));
                    }
                    ErrnoClass::Gone => {
                        gone = Some((method, e));
                        break e.to_string();
                    }
                    ErrnoClass::Unsupported | ErrnoClass::Other => break e.to_string(),
                },
            }
        };
        skipped.push(format!("{}: {outcome}", method.name()));
    }

    let label = label.to_owned();
    let detail = skipped.join("; ");
    Err(match (gone, forced) {
        (Some((method, errno)), _) => PhcError::Gone {
            label,
            op: method.request(),
            errno,
        },
        (None, Some(method)) => PhcError::MethodUnsupported {
            label,
            method: method.name(),
            detail,
        },
        (None, None) => PhcError::NoMethod { label, detail },
    })
}

/// The precision estimate (ns) and the smallest read delay (ns) from the
/// measurements taken at init (the detection batch first).
///
/// Precision is one standard deviation of a sample's offset:
/// - a cross-timestamp: the scatter of the measurements after the detection
///   batch around their straight line ([`clock_noise_ns`]), at least the
///   clock's resolution;
/// - a bracketed read: the read path's spread ([`read_path_ns`]). Its
///   scatter holds that spread and any noise of the clock's own: when that
///   noise is beyond what the brackets explain, [`widened_noise_ns`] widens
///   the band and [`widened_precision`] measures again.
///
/// The per-sample error bound stays the full delay / 2.
pub fn estimate_precision(method: Method, measurements: &[Measurement]) -> (u64, u64) {
    let min_delay = measurements
        .iter()
        .map(|m| m.min_delay_ns)
        .min()
        .unwrap_or(0);
    let precision = if method.uses_readings() {
        read_path_ns(method, measurements)
    } else {
        clock_noise_ns(measurements)
    };
    (precision.max(crate::process::RESOLUTION_NS), min_delay)
}

/// The precision (ns) and the smallest read delay (ns) from measurements
/// taken with the band widened by the clock's noise: the larger of the read
/// path's spread and their scatter.
pub fn widened_precision(method: Method, measurements: &[Measurement]) -> (u64, u64) {
    let (path, min_delay) = estimate_precision(method, measurements);
    (path.max(clock_noise_ns(measurements)), min_delay)
}

/// The upper median of `values` (the middle one; of the middle two, the
/// larger); `None` for none.
fn upper_median(mut values: Vec<u64>) -> Option<u64> {
    values.sort_unstable();
    values.get(values.len() / 2).copied()
}

/// The median of the measurements' smallest read delays, ns (0 for none).
fn median_delay_ns(measurements: &[Measurement]) -> u64 {
    upper_median(measurements.iter().map(|m| m.min_delay_ns).collect()).unwrap_or(0)
}

/// The spread the read path allows, one standard deviation, ns: 0 for a
/// cross-timestamp; for a bracketed read the median minimum delay /
/// sqrt(12) (a read anywhere in its bracket, uniformly).
pub fn read_path_ns(method: Method, measurements: &[Measurement]) -> u64 {
    if method == Method::Precise {
        return 0;
    }
    // sqrt(12) = 3.4641; rounded to the nearest nanosecond.
    let sd = (u128::from(median_delay_ns(measurements)) * 10_000 + 17_320) / 34_641;
    u64::try_from(sd).unwrap_or(u64::MAX)
}

/// The timestamp noise the brackets do not explain, ns, when it is large
/// enough to widen the band ([`crate::process::noisy_band_limit`]) of a
/// bracketed read; `None` otherwise. Two scatters hold the read path's own
/// spread ([`read_path_ns`]) and the clock's: that of the readings within
/// each batch's lowest-delay band ([`band_noise_ns`]) and that of the
/// measurements ([`clock_noise_ns`]). The larger, less the path's spread
/// (sqrt(scatter^2 - path^2)), is the clock's. Read-path noise alone
/// (disturbed reads) must not widen the band: that is what the band keeps
/// out.
#[allow(
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss
)]
// ns values far below 2^52; the result is >= 0
pub fn widened_noise_ns(method: Method, measurements: &[Measurement]) -> Option<u64> {
    if !method.uses_readings() {
        return None;
    }
    let scatter = clock_noise_ns(measurements).max(band_noise_ns(measurements)) as f64;
    let path = read_path_ns(method, measurements) as f64;
    let noise = (scatter * scatter - path * path).max(0.0).sqrt().round() as u64;
    let median = i128::from(median_delay_ns(measurements));
    (crate::process::noisy_band_limit(median, noise) > crate::process::band_limit(median))
        .then_some(noise)
}

/// The median scatter of the readings within the measurements' lowest-delay
/// bands (`band_spread_ns`), ns; 0 when fewer than [`SPREAD_MIN_BATCHES`]
/// batches had a band to measure. Averaging hides a noisy clock from the
/// scatter of whole measurements when the band holds a few readings (1 us
/// of noise left 260-365 ns there, within a 500 ns bracket's spread); the
/// readings themselves show it whole.
pub fn band_noise_ns(measurements: &[Measurement]) -> u64 {
    let spreads: Vec<u64> = measurements
        .iter()
        .filter_map(|m| m.band_spread_ns)
        .collect();
    if spreads.len() < SPREAD_MIN_BATCHES {
        return 0;
    }
    upper_median(spreads).unwrap_or(0)
}

/// The clock's own noise (ns) in the measurements taken at init (the
/// detection batch first): the scatter of the others around their line,
/// leaving out a batch whose every reading was disturbed (its smallest
/// delay over twice the median plus [`crate::process::DELAY_SLACK_NS`]: it
/// is off by up to half that delay, which is no clock noise); 0 when too few.
pub fn clock_noise_ns(measurements: &[Measurement]) -> u64 {
    if measurements.is_empty() {
        return 0;
    }
    let median = median_delay_ns(measurements);
    let limit = median
        .saturating_mul(2)
        .saturating_add(crate::process::DELAY_SLACK_NS);
    let typical: Vec<Measurement> = measurements
        .iter()
        .skip(1)
        .filter(|m| m.min_delay_ns <= limit)
        .copied()
        .collect();
    offset_scatter_ns(&typical).unwrap_or(0)
}

/// The standard deviation (ns, rounded) of the measurements' offsets
/// around their least-squares line against system time (the clocks drift
/// apart meanwhile), with n - 2 degrees of freedom; `None` for fewer than
/// four measurements.
#[allow(
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss
)]
// ns differences between batches a few ms apart; the result is small and >= 0
pub fn offset_scatter_ns(measurements: &[Measurement]) -> Option<u64> {
    let first = measurements.first()?;
    if measurements.len() < 4 {
        return None;
    }
    let n = measurements.len() as f64;
    let points: Vec<(f64, f64)> = measurements
        .iter()
        .map(|m| {
            (
                (m.system_time_ns - first.system_time_ns) as f64,
                (m.offset_ns - first.offset_ns) as f64,
            )
        })
        .collect();
    let mean_t = points.iter().map(|p| p.0).sum::<f64>() / n;
    let mean_o = points.iter().map(|p| p.1).sum::<f64>() / n;
    let stt: f64 = points.iter().map(|p| (p.0 - mean_t).powi(2)).sum();
    let sto: f64 = points.iter().map(|p| (p.0 - mean_t) * (p.1 - mean_o)).sum();
    let slope = if stt > 0.0 { sto / stt } else { 0.0 };
    let residuals: f64 = points
        .iter()
        .map(|p| (p.1 - mean_o - slope * (p.0 - mean_t)).powi(2))
        .sum();
    Some((residuals / (n - 2.0)).sqrt().round() as u64)
}

/// Where TAI-UTC comes from, for a TAI clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaiSource {
    /// The PHC runs UTC: nothing to subtract.
    None,
    /// Configured (`tai-offset`), seconds.
    Fixed(i64),
    /// The kernel's value (adjtimex, read-only), read at every sample so a
    /// leap second is followed.
    Kernel,
}

/// Reads the kernel's TAI-UTC offset, seconds.
pub type KernelTai = fn() -> Result<i32, Errno>;

/// The kernel's TAI-UTC if it is set and plausible.
pub fn kernel_tai_value(read: KernelTai) -> Result<i64, String> {
    match read() {
        Ok(v) if crate::config::TAI_OFFSET_RANGE.contains(&i64::from(v)) => Ok(i64::from(v)),
        Ok(v) => Err(format!(
            "`timescale` = \"tai\" but the kernel's TAI-UTC offset is {v} s (not set); set `tai-offset` (37 since 2017) or have a daemon set it"
        )),
        Err(e) => Err(format!(
            "cannot read the kernel's TAI-UTC offset (adjtimex: {e})"
        )),
    }
}

/// An open clock with its detected method: takes samples.
pub struct Reader<D: PhcDevice> {
    dev: D,
    label: String,
    method: Method,
    readings: u32,
    tai: TaiSource,
    correction_ns: i64,
    kernel_tai: KernelTai,
    delays: DelayFilter,
    /// The clock's own noise measured at init, ns (widens the band).
    noise_ns: u64,
}

impl<D: PhcDevice> Reader<D> {
    /// A reader for a detected method.
    pub fn new(
        dev: D,
        label: String,
        method: Method,
        readings: u32,
        tai: TaiSource,
        correction_ns: i64,
        kernel_tai: KernelTai,
    ) -> Self {
        Self {
            dev,
            label,
            method,
            readings,
            tai,
            correction_ns,
            kernel_tai,
            delays: DelayFilter::new(),
            noise_ns: 0,
        }
    }

    /// Sets the clock's own noise, ns ([`clock_noise_ns`]): later batches
    /// average every reading whose bracket is within it
    /// ([`crate::process::noisy_band_limit`]).
    pub fn set_noise(&mut self, noise_ns: u64) {
        self.noise_ns = noise_ns;
    }

    /// The device, for tests to look at what was asked of it.
    #[cfg(test)]
    pub(crate) fn device(&self) -> &D {
        &self.dev
    }

    /// Feeds a measurement taken outside [`Reader::measure`] (the detection
    /// batch) to the delay filter's history.
    pub fn learn(&mut self, m: &Measurement) {
        if self.method.uses_readings() {
            // Warm-up: the verdict on the first batches is always Ok.
            let _ = self.delays.check(m.min_delay_ns);
        }
    }

    /// The device as messages name it.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// One raw measurement in the PHC's time scale.
    pub fn measure(&mut self) -> Result<Measurement, PhcError> {
        let batch = read(&mut self.dev, self.method, self.readings)
            .map_err(|e| errno_error(&self.label, self.method.request(), e, false))?;
        let spoiled = |source| PhcError::Batch {
            label: self.label.clone(),
            source,
        };
        let m = process_with_noise(&batch, self.noise_ns).map_err(spoiled)?;
        if self.method.uses_readings() {
            self.delays.check(m.min_delay_ns).map_err(spoiled)?;
        }
        Ok(m)
    }

    /// The offset to subtract for the time scale, seconds.
    fn tai_utc(&self) -> Result<i64, PhcError> {
        match self.tai {
            TaiSource::None => Ok(0),
            TaiSource::Fixed(s) => Ok(s),
            TaiSource::Kernel => {
                kernel_tai_value(self.kernel_tai).map_err(|message| PhcError::Tai {
                    label: self.label.clone(),
                    message,
                    transient: true,
                })
            }
        }
    }

    /// Converts a measurement to the host's sample (UTC-based, corrected).
    pub fn to_sample(&self, m: &Measurement) -> Result<Sample, PhcError> {
        let tai = self.tai_utc()?;
        let offset = to_utc_offset(m.offset_ns, tai, self.correction_ns).map_err(|source| {
            PhcError::Batch {
                label: self.label.clone(),
                source,
            }
        })?;
        let mut sample = Sample::new(m.system_time_ns, offset, m.error_ns);
        sample.readings = m.readings;
        Ok(sample)
    }

    /// Takes one sample now.
    pub fn sample(&mut self) -> Result<Sample, PhcError> {
        let m = self.measure()?;
        self.to_sample(&m)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::device::{Bracket, Stamp};
    use crate::process::NS_PER_S;
    use ntpd_plugin_api::ErrorKind;
    use std::collections::VecDeque;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    pub(crate) const T0: i64 = 1_763_800_000 * NS_PER_S;

    pub(crate) fn st(ns: i64) -> Stamp {
        Stamp::new(ns.div_euclid(NS_PER_S), ns.rem_euclid(NS_PER_S) as u32)
    }

    /// `n` brackets of `delay` ns with the PHC `offset` ns ahead.
    pub(crate) fn bracketed(n: usize, delay: i64, offset: i64) -> RawBatch {
        RawBatch::Bracketed(
            (0..n as i64)
                .map(|i| {
                    let before = T0 + i * 10_000;
                    Bracket {
                        before: st(before),
                        phc: st(before + delay / 2 + offset),
                        after: st(before + delay),
                    }
                })
                .collect(),
        )
    }

    pub(crate) fn precise_batch(offset: i64) -> RawBatch {
        RawBatch::Precise {
            phc: st(T0 + offset),
            system: st(T0),
        }
    }

    /// A scripted fake PHC: each request type answers from its own queue;
    /// an empty queue answers EOPNOTSUPP. Records every call.
    #[derive(Default)]
    pub(crate) struct Fake {
        pub caps: VecDeque<Result<Caps, Errno>>,
        pub precise: VecDeque<Result<RawBatch, Errno>>,
        pub extended: VecDeque<Result<RawBatch, Errno>>,
        pub standard: VecDeque<Result<RawBatch, Errno>>,
        pub calls: Vec<String>,
        pub dropped: Option<Arc<AtomicBool>>,
        pub repeat_last: bool,
    }

    impl Fake {
        pub(crate) fn with_caps(cross: bool) -> Self {
            let mut f = Fake::default();
            f.caps.push_back(Ok(Caps {
                max_adj_ppb: 500_000,
                cross_timestamping: cross,
            }));
            f
        }
    }

    fn next(q: &mut VecDeque<Result<RawBatch, Errno>>, repeat: bool) -> Result<RawBatch, Errno> {
        match (q.len(), repeat) {
            (0, _) => Err(Errno(libc::EOPNOTSUPP)),
            (1, true) => q[0].clone(),
            _ => q.pop_front().unwrap(),
        }
    }

    impl PhcDevice for Fake {
        fn caps(&mut self) -> Result<Caps, Errno> {
            self.calls.push("caps".into());
            self.caps.pop_front().unwrap_or(Err(Errno(libc::ENOTTY)))
        }
        fn precise(&mut self) -> Result<RawBatch, Errno> {
            self.calls.push("precise".into());
            next(&mut self.precise, self.repeat_last)
        }
        fn extended(&mut self, n: u32) -> Result<RawBatch, Errno> {
            self.calls.push(format!("extended({n})"));
            next(&mut self.extended, self.repeat_last)
        }
        fn standard(&mut self, n: u32) -> Result<RawBatch, Errno> {
            self.calls.push(format!("standard({n})"));
            next(&mut self.standard, self.repeat_last)
        }
    }

    impl Drop for Fake {
        fn drop(&mut self) {
            if let Some(flag) = &self.dropped {
                flag.store(true, Ordering::SeqCst);
            }
        }
    }

    const L: &str = "/dev/ptp0";

    fn e(n: i32) -> Errno {
        Errno(n)
    }

    #[test]
    fn precise_first_when_offered() {
        let mut f = Fake::with_caps(true);
        f.precise.push_back(Ok(precise_batch(7)));
        f.extended.push_back(Ok(bracketed(5, 300, 7)));
        let d = detect(&mut f, L, None, 5).unwrap();
        assert_eq!(d.method, Method::Precise);
        assert_eq!(d.first.offset_ns, 7);
        assert_eq!(f.calls, ["caps", "precise"]);
    }

    #[test]
    fn precise_is_skipped_when_caps_say_no_cross_timestamping() {
        // The igb case: extended and standard only.
        let mut f = Fake::with_caps(false);
        f.extended.push_back(Ok(bracketed(5, 400, -3)));
        let d = detect(&mut f, L, None, 5).unwrap();
        assert_eq!(d.method, Method::Extended);
        assert_eq!(f.calls, ["caps", "extended(5)"]);
        assert!(d.skipped[0].contains("cross-timestamp"));
    }

    #[test]
    fn falls_back_precise_to_extended_to_standard() {
        // A driver with only .gettime64: precise and extended EOPNOTSUPP.
        let mut f = Fake::with_caps(true);
        f.standard.push_back(Ok(bracketed(7, 500, 11)));
        let d = detect(&mut f, L, None, 7).unwrap();
        assert_eq!(d.method, Method::Standard);
        assert_eq!(d.first.offset_ns, 11);
        assert_eq!(f.calls, ["caps", "precise", "extended(7)", "standard(7)"]);
        assert_eq!(d.skipped, ["precise: EOPNOTSUPP", "extended: EOPNOTSUPP"]);
    }

    #[test]
    fn success_without_readings_is_not_valid() {
        // What ptp-time's own calls (n_samples = 0) would give.
        let mut f = Fake::with_caps(false);
        f.extended.push_back(Ok(RawBatch::Bracketed(vec![])));
        f.standard.push_back(Ok(bracketed(3, 600, 1)));
        let d = detect(&mut f, L, None, 3).unwrap();
        assert_eq!(d.method, Method::Standard);
        assert!(d.skipped[1].contains("no readings"), "{:?}", d.skipped);
    }

    #[test]
    fn busy_is_retried_then_reported_not_downgraded() {
        let mut f = Fake::with_caps(true);
        f.precise.push_back(Err(e(libc::EBUSY)));
        f.precise.push_back(Ok(precise_batch(1)));
        let d = detect(&mut f, L, None, 5).unwrap();
        assert_eq!(d.method, Method::Precise);

        let mut f = Fake::with_caps(true);
        f.repeat_last = true;
        f.precise.push_back(Err(e(libc::EINTR)));
        f.extended.push_back(Ok(bracketed(5, 300, 0)));
        let err = detect(&mut f, L, None, 5).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::TRANSIENT);
        assert!(err.to_string().contains("EINTR"), "{err}");
        assert_eq!(f.calls.len(), 1 + DETECT_ATTEMPTS);
    }

    #[test]
    fn spoiled_batch_is_retried_during_detection() {
        let mut f = Fake::with_caps(false);
        let stepped = RawBatch::Bracketed(vec![Bracket {
            before: st(T0 + 1000),
            phc: st(T0 + 1000),
            after: st(T0),
        }]);
        f.extended.push_back(Ok(stepped));
        f.extended.push_back(Ok(bracketed(5, 300, 2)));
        let d = detect(&mut f, L, None, 5).unwrap();
        assert_eq!(d.method, Method::Extended);
        assert_eq!(f.calls, ["caps", "extended(5)", "extended(5)"]);
    }

    #[test]
    fn enodev_from_precise_alone_falls_back() {
        // get_device_system_crosststamp returns ENODEV when the system
        // clocksource cannot be cross-timestamped.
        let mut f = Fake::with_caps(true);
        f.precise.push_back(Err(e(libc::ENODEV)));
        f.extended.push_back(Ok(bracketed(5, 300, 2)));
        let d = detect(&mut f, L, None, 5).unwrap();
        assert_eq!(d.method, Method::Extended);
    }

    #[test]
    fn enodev_from_precise_then_other_failures_is_not_gone() {
        let mut f = Fake::with_caps(true);
        f.precise.push_back(Err(e(libc::ENODEV)));
        let err = detect(&mut f, L, None, 5).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::FATAL, "{err}");
        assert!(err.to_string().contains("precise: ENODEV"), "{err}");
    }

    #[test]
    fn device_gone_during_detection_is_unavailable() {
        let mut f = Fake::with_caps(true);
        f.repeat_last = true;
        f.precise.push_back(Err(e(libc::ENODEV)));
        f.extended.push_back(Err(e(libc::ENODEV)));
        f.standard.push_back(Err(e(libc::ENODEV)));
        let err = detect(&mut f, L, None, 5).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::UNAVAILABLE);
        assert!(err.to_string().contains("/dev/ptp0") && err.to_string().contains("ENODEV"));
    }

    #[test]
    fn caps_errors() {
        for (errno, kind) in [
            (libc::ENOTTY, ErrorKind::CONFIGURATION),
            (libc::ENODEV, ErrorKind::UNAVAILABLE),
            (libc::EIO, ErrorKind::UNAVAILABLE),
            (libc::ENXIO, ErrorKind::UNAVAILABLE),
            (libc::EACCES, ErrorKind::CONFIGURATION),
            (libc::EFAULT, ErrorKind::FATAL),
        ] {
            let mut f = Fake::default();
            f.caps.push_back(Err(e(errno)));
            let err = detect(&mut f, L, None, 5).unwrap_err();
            assert_eq!(err.kind(), kind, "{err}");
            assert!(err.to_string().contains("/dev/ptp0"), "{err}");
        }
        let mut f = Fake::default();
        f.caps.push_back(Err(e(libc::EAGAIN)));
        f.caps.push_back(Ok(Caps::default()));
        f.standard.push_back(Ok(bracketed(1, 100, 0)));
        assert_eq!(detect(&mut f, L, None, 1).unwrap().method, Method::Standard);
    }

    #[test]
    fn permission_denied_stops_detection() {
        let mut f = Fake::with_caps(true);
        f.precise.push_back(Err(e(libc::EPERM)));
        f.extended.push_back(Ok(bracketed(5, 300, 2)));
        let err = detect(&mut f, L, None, 5).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::CONFIGURATION);
        assert!(err.to_string().contains("udev rule"));
    }

    #[test]
    fn forced_method_is_the_only_one_tried() {
        let mut f = Fake::with_caps(true);
        f.precise.push_back(Ok(precise_batch(1)));
        f.standard.push_back(Ok(bracketed(4, 500, 9)));
        let d = detect(&mut f, L, Some(Method::Standard), 4).unwrap();
        assert_eq!(d.method, Method::Standard);
        assert_eq!(f.calls, ["caps", "standard(4)"]);

        // Forced precise is tried even when caps say no, and its failure is
        // a configuration error naming the key.
        let mut f = Fake::with_caps(false);
        f.extended.push_back(Ok(bracketed(4, 500, 9)));
        let err = detect(&mut f, L, Some(Method::Precise), 4).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::CONFIGURATION);
        let msg = err.to_string();
        assert!(
            msg.contains("`method` = \"precise\"") && msg.contains("EOPNOTSUPP"),
            "{msg}"
        );
        assert_eq!(f.calls, ["caps", "precise"]);
    }

    #[test]
    fn nothing_works_is_fatal_with_every_reason() {
        let mut f = Fake::with_caps(true);
        f.standard.push_back(Ok(RawBatch::Bracketed(vec![])));
        let err = detect(&mut f, L, None, 5).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::FATAL);
        let msg = err.to_string();
        assert!(
            msg.contains("precise: EOPNOTSUPP")
                && msg.contains("extended: EOPNOTSUPP")
                && msg.contains("standard: the request returned no readings"),
            "{msg}"
        );
    }

    fn reader(f: Fake, method: Method, tai: TaiSource, correction: i64) -> Reader<Fake> {
        Reader::new(f, L.into(), method, 5, tai, correction, || Ok(37))
    }

    #[test]
    fn sample_errors_map_to_kinds() {
        for (errno, kind) in [
            (libc::ENODEV, ErrorKind::UNAVAILABLE),
            (libc::ENOENT, ErrorKind::UNAVAILABLE),
            (libc::EIO, ErrorKind::UNAVAILABLE),
            (libc::ENXIO, ErrorKind::UNAVAILABLE),
            (libc::EINTR, ErrorKind::TRANSIENT),
            (libc::EAGAIN, ErrorKind::TRANSIENT),
            (libc::EBUSY, ErrorKind::TRANSIENT),
            (libc::ETIMEDOUT, ErrorKind::TRANSIENT),
            (libc::EACCES, ErrorKind::CONFIGURATION),
            (libc::EPERM, ErrorKind::CONFIGURATION),
            // Worked at init, not now: re-create the source and re-detect.
            (libc::EOPNOTSUPP, ErrorKind::UNAVAILABLE),
        ] {
            let mut f = Fake::default();
            f.extended.push_back(Err(e(errno)));
            let mut r = reader(f, Method::Extended, TaiSource::None, 0);
            let err = r.sample().unwrap_err();
            assert_eq!(err.kind(), kind, "{err}");
            assert!(err.to_string().contains("/dev/ptp0"), "{err}");
            assert!(err.to_string().contains("PTP_SYS_OFFSET_EXTENDED"), "{err}");
        }
    }

    #[test]
    fn spoiled_or_empty_batches_are_transient() {
        let mut f = Fake::default();
        f.standard.push_back(Ok(RawBatch::Bracketed(vec![Bracket {
            before: st(T0 + 500),
            phc: st(T0),
            after: st(T0),
        }])));
        f.standard.push_back(Ok(RawBatch::Bracketed(vec![])));
        f.standard.push_back(Ok(bracketed(3, 300, 5)));
        let mut r = reader(f, Method::Standard, TaiSource::None, 0);
        let err = r.sample().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::TRANSIENT);
        assert!(err.to_string().contains("negative delay"), "{err}");
        assert_eq!(r.sample().unwrap_err().kind(), ErrorKind::TRANSIENT);
        assert_eq!(r.sample().unwrap().offset_ns, 5, "the next batch is fine");
    }

    #[test]
    fn samples_are_utc_based_and_corrected() {
        let tai = 37 * NS_PER_S;
        let mut f = Fake::default();
        f.repeat_last = true;
        f.extended.push_back(Ok(bracketed(5, 300, tai + 120)));
        let mut r = reader(f, Method::Extended, TaiSource::Fixed(37), -20);
        let s = r.sample().unwrap();
        assert_eq!(s.offset_ns, 100);
        assert_eq!(s.error_ns, 150);
        assert_eq!(s.readings, 5);
        assert_eq!(s.system_time_ns, T0 + 2 * 10_000 + 150);

        let mut f = Fake::default();
        f.precise.push_back(Ok(precise_batch(tai - 8)));
        let mut r = reader(f, Method::Precise, TaiSource::Kernel, 0);
        let s = r.sample().unwrap();
        assert_eq!(s.offset_ns, -8);
        assert_eq!(s.error_ns, 1);
        assert_eq!(s.readings, 1);
    }

    #[test]
    fn a_batch_of_only_disturbed_reads_is_dropped() {
        let mut f = Fake::default();
        for _ in 0..4 {
            f.extended.push_back(Ok(bracketed(5, 300, 10)));
        }
        f.extended.push_back(Ok(bracketed(5, 9000, 4000)));
        f.extended.push_back(Ok(bracketed(5, 310, 10)));
        let mut r = reader(f, Method::Extended, TaiSource::None, 0);
        for _ in 0..4 {
            assert_eq!(r.sample().unwrap().offset_ns, 10);
        }
        let err = r.sample().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::TRANSIENT);
        assert!(err.to_string().contains("9000 ns"), "{err}");
        assert_eq!(r.sample().unwrap().offset_ns, 10);
    }

    #[test]
    fn kernel_tai_unset_later_is_transient() {
        let mut f = Fake::default();
        f.precise.push_back(Ok(precise_batch(5)));
        let mut r = Reader::new(
            f,
            L.into(),
            Method::Precise,
            1,
            TaiSource::Kernel,
            0,
            || Ok(0),
        );
        let err = r.sample().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::TRANSIENT);
        assert!(err.to_string().contains("tai-offset"), "{err}");
        assert!(kernel_tai_value(|| Ok(37)).is_ok());
        assert!(kernel_tai_value(|| Err(Errno(libc::EPERM))).is_err());
    }

    #[test]
    fn dropping_the_reader_drops_the_device() {
        let flag = Arc::new(AtomicBool::new(false));
        let mut f = Fake::default();
        f.dropped = Some(flag.clone());
        let r = reader(f, Method::Extended, TaiSource::None, 0);
        assert!(!flag.load(Ordering::SeqCst));
        drop(r);
        assert!(flag.load(Ordering::SeqCst));
    }

    #[test]
    fn never_detects_again_on_a_poll() {
        let mut f = Fake::default();
        f.repeat_last = true;
        f.extended.push_back(Ok(bracketed(5, 300, 0)));
        let mut r = reader(f, Method::Extended, TaiSource::None, 0);
        for _ in 0..3 {
            r.sample().unwrap();
        }
        assert_eq!(r.dev.calls, ["extended(5)", "extended(5)", "extended(5)"]);
    }

    #[test]
    fn precision_follows_the_median_delay_and_precise_claims_one_ns() {
        let m = |error_ns, min_delay_ns| Measurement {
            system_time_ns: T0,
            offset_ns: 0,
            error_ns,
            readings: 1,
            min_delay_ns,
            band_spread_ns: None,
        };
        // A slow first call (0.3 ms) does not set the estimate.
        assert_eq!(
            estimate_precision(
                Method::Extended,
                &[m(150_000, 300_000), m(160, 320), m(150, 300)]
            ),
            (92, 300),
            "320 ns / sqrt(12)"
        );
        assert_eq!(estimate_precision(Method::Standard, &[m(1, 0)]), (1, 0));
        assert_eq!(estimate_precision(Method::Standard, &[m(2, 3)]), (1, 3));
        assert_eq!(estimate_precision(Method::Precise, &[m(1, 0)]), (1, 0));
        assert_eq!(estimate_precision(Method::Standard, &[]), (1, 0));
    }

    #[test]
    fn precision_sees_the_clocks_own_scatter() {
        // Offsets 1 us apart on alternate batches, 1 ms apart, on a line of
        // 20 ppm: the drift is no noise, the alternation is.
        let m = |i: i64, noise: i64| Measurement {
            system_time_ns: T0 + i * 1_000_000,
            offset_ns: 20 * i + noise,
            error_ns: 150,
            readings: 10,
            min_delay_ns: 300,
            band_spread_ns: None,
        };
        let quiet: Vec<Measurement> = (0..9).map(|i| m(i, 0)).collect();
        assert_eq!(offset_scatter_ns(&quiet[1..]), Some(0), "drift only");
        assert_eq!(estimate_precision(Method::Extended, &quiet), (87, 300));
        assert_eq!(widened_precision(Method::Extended, &quiet), (87, 300));
        let noisy: Vec<Measurement> = (0..9)
            .map(|i| m(i, if i % 2 == 0 { 500 } else { -500 }))
            .collect();
        let scatter = offset_scatter_ns(&noisy[1..]).unwrap();
        assert!((500..600).contains(&scatter), "{scatter}");
        // A bracketed read reports its path's spread until the band is
        // widened; a cross-timestamp reports the scatter.
        assert_eq!(estimate_precision(Method::Extended, &noisy).0, 87);
        assert_eq!(widened_precision(Method::Extended, &noisy).0, scatter);
        assert_eq!(estimate_precision(Method::Precise, &noisy).0, scatter);
        // Only noise beyond the read path's widens the band: 1 us apart
        // on 300 ns brackets does, 200 ns does not (87 ns is the path's).
        let noise = widened_noise_ns(Method::Extended, &noisy).unwrap();
        assert_eq!(noise, (scatter * scatter - 87 * 87).isqrt());
        let mild: Vec<Measurement> = (0..9)
            .map(|i| m(i, if i % 2 == 0 { 100 } else { -100 }))
            .collect();
        assert!(offset_scatter_ns(&mild[1..]).unwrap() > 87);
        assert_eq!(widened_noise_ns(Method::Extended, &mild), None);
        assert_eq!(widened_noise_ns(Method::Precise, &noisy), None);
        // The detection batch (a slow first call) is left out, and three
        // measurements say nothing.
        let mut first_off = quiet.clone();
        first_off[0].offset_ns += 100_000;
        assert_eq!(estimate_precision(Method::Extended, &first_off), (87, 300));
        assert_eq!(offset_scatter_ns(&noisy[..3]), None);
        // So is a batch whose every reading was disturbed.
        let mut slow = quiet.clone();
        slow[4].min_delay_ns = 100_000;
        slow[4].offset_ns += 40_000;
        assert_eq!(estimate_precision(Method::Extended, &slow), (87, 300));
    }

    #[test]
    fn a_noisy_clock_shows_within_the_band_even_when_batches_agree() {
        // Every batch's band averages to the same line: the batches do not
        // scatter, but the reads within each band do.
        let m = |i: i64, spread: Option<u64>| Measurement {
            system_time_ns: T0 + i * 1_000_000,
            offset_ns: 20 * i,
            error_ns: 150,
            readings: 5,
            min_delay_ns: 300,
            band_spread_ns: spread,
        };
        let noisy: Vec<Measurement> = (0..9).map(|i| m(i, Some(560))).collect();
        assert_eq!(clock_noise_ns(&noisy), 0);
        assert_eq!(band_noise_ns(&noisy), 560);
        assert_eq!(
            widened_noise_ns(Method::Extended, &noisy),
            Some(553),
            "sqrt(560^2 - 87^2) = 553.2, rounded"
        );
        assert_eq!(widened_noise_ns(Method::Precise, &noisy), None);
        // A clean clock's band: a few ns, well within the path's spread.
        let clean: Vec<Measurement> = (0..9).map(|i| m(i, Some(14))).collect();
        assert_eq!(widened_noise_ns(Method::Extended, &clean), None);
        // Noise the band would not widen for: 100 ns on 300 ns brackets.
        let mild: Vec<Measurement> = (0..9).map(|i| m(i, Some(100))).collect();
        assert_eq!(widened_noise_ns(Method::Extended, &mild), None);
        // The median: one odd batch does not decide, nor do too few bands.
        let mut one = clean.clone();
        one[3].band_spread_ns = Some(5000);
        assert_eq!(band_noise_ns(&one), 14);
        let few: Vec<Measurement> = (0..9)
            .map(|i| m(i, (i < SPREAD_MIN_BATCHES as i64 - 1).then_some(560)))
            .collect();
        assert_eq!(band_noise_ns(&few), 0);
        assert_eq!(widened_noise_ns(Method::Extended, &few), None);
    }
}
