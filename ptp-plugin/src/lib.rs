//! `libntpd_ptp.so`: a PTP hardware clock (`/dev/ptpN`) as an ntpd-host
//! time source.
//!
//! At `init` the plugin finds the clock (by `device`, `clock-name` or
//! `interface`), opens it read-only, reads its capabilities and detects the
//! best read method once: a hardware cross-timestamp
//! (`PTP_SYS_OFFSET_PRECISE`), else driver-bracketed readings
//! (`PTP_SYS_OFFSET_EXTENDED`), else kernel-bracketed readings
//! (`PTP_SYS_OFFSET`). Each `sample` issues that one request and reduces
//! its readings to one offset in integer nanoseconds (see [`process`]).
//! The keys are documented in the crate's README.
//!
//! Layout: [`sys`] holds all `unsafe` (the ioctls and a read-only
//! `adjtimex`); [`device`] puts it behind the [`device::PhcDevice`] trait;
//! [`source`] detects and samples over that trait; [`process`], [`config`]
//! and [`locate`] are the pure parts; [`error`] maps failures to what the
//! host should do.

#![deny(unsafe_code)]
// Tests build fixtures from small literals and compare exact values.
#![cfg_attr(
    test,
    allow(
        clippy::cast_possible_truncation,
        clippy::cast_possible_wrap,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss,
        clippy::cast_lossless,
        clippy::float_cmp,
        clippy::unnecessary_wraps
    )
)]

pub mod config;
pub mod device;
pub mod error;
pub mod locate;
pub mod platform;
pub mod process;
pub mod source;
#[allow(unsafe_code)]
pub mod sys;

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use ntpd_plugin_api::{
    Capabilities, Info, InitContext, Plugin, PluginError, Sample, Source, TimeScale, export_plugin,
};
use serde_json::json;

use crate::config::{Config, ConfigToml, Timescale, default_readings};
use crate::device::{Errno, ErrnoClass, PhcDevice};
use crate::error::PhcError;
use crate::locate::{clock_for_rdev, describe_clocks, list_clocks, resolve};
use crate::platform::{Platform, PlatformSources, ReferenceState, find_sources};
use crate::source::{
    PRECISION_BATCHES, Reader, TaiSource, detect, estimate_precision, kernel_tai_value,
    widened_noise_ns, widened_precision,
};
use crate::sys::Phc;

/// The plugin type handed to `export_plugin!`.
pub struct PtpPlugin;

/// An open PHC with its detected read method: the plugin's source object.
/// Generic over the device so tests can run it on a fake.
pub struct PtpSource<D: PhcDevice = Phc> {
    reader: Reader<D>,
    capabilities: Capabilities,
    /// The platform's view (ENA's error bound, a vmclock page), read with
    /// every sample.
    platform: Platform,
}

/// Where the plugin looks clocks up: sysfs, device nodes and the ethtool
/// query; tests point these elsewhere.
#[derive(Clone, Copy, Debug)]
pub struct Roots<'a> {
    /// sysfs mount point, normally `/sys`.
    pub sys: &'a Path,
    /// Device directory, normally `/dev`.
    pub dev: &'a Path,
    /// An interface's PHC index, normally [`sys::ethtool_phc_index`].
    pub phc_index: locate::PhcIndexFn,
}

impl Roots<'static> {
    /// The real system: `/sys`, `/dev` and the kernel's ethtool query.
    pub fn system() -> Self {
        Roots {
            sys: Path::new("/sys"),
            dev: Path::new("/dev"),
            phc_index: |iface| sys::ethtool_phc_index(iface).map_err(Errno),
        }
    }
}

/// The kernel's TAI-UTC through [`sys::kernel_tai_offset`].
fn kernel_tai() -> Result<i32, Errno> {
    sys::kernel_tai_offset().map_err(Errno)
}

/// The shortest interval at which the host may call `sample()`, log2
/// seconds (1/16 s), reported as the capabilities' shortest poll: a PHC
/// read is a few ioctls of microseconds, and the host reads it several
/// times per poll interval (its `reading-interval`) and in a burst at start.
pub const MIN_READING_INTERVAL: i8 = -4;

/// How often, and how far apart, an `open` refused for lack of permission
/// is tried again before init reports it: a device that has just appeared
/// gets its group from udev a few milliseconds later.
pub const DENIED_OPEN_TRIES: u32 = 10;
/// See [`DENIED_OPEN_TRIES`].
pub const DENIED_OPEN_PAUSE: std::time::Duration = std::time::Duration::from_millis(20);

/// Opens the PHC, mapping `open` failures with [`open_error`].
fn open(path: &Path, label: &str, roots: Roots<'_>) -> Result<Phc, PhcError> {
    let errno = |e: std::io::Error| Errno(e.raw_os_error().unwrap_or(libc::EIO));
    let opened = retry_denied(
        || Phc::open(path).map_err(errno),
        || {
            std::thread::sleep(DENIED_OPEN_PAUSE);
        },
    );
    opened.map_err(|e| open_error(label, e, roots.sys))
}

/// Calls `open` up to [`DENIED_OPEN_TRIES`] times while it fails for lack
/// of permission, with `pause` between the attempts.
pub fn retry_denied<T>(
    mut open: impl FnMut() -> Result<T, Errno>,
    mut pause: impl FnMut(),
) -> Result<T, Errno> {
    let mut tries = 1;
    loop {
        match open() {
            Err(e) if e.class() == ErrnoClass::Denied && tries < DENIED_OPEN_TRIES => {
                tries += 1;
                pause();
            }
            other => return other,
        }
    }
}

/// The error for a failed `open`: a missing path (ENOENT, or ENODEV/ENXIO
/// for a node without a driver) lists the clocks that do exist; no
/// permission says how to grant it.
pub fn open_error(label: &str, errno: Errno, sys: &Path) -> PhcError {
    match errno.class() {
        ErrnoClass::Gone => PhcError::Missing {
            label: label.to_owned(),
            present: describe_clocks(&list_clocks(sys)),
        },
        ErrnoClass::Denied => PhcError::OpenDenied {
            label: label.to_owned(),
            errno,
        },
        _ => source::errno_error(label, "open", errno, true),
    }
}

impl<D: PhcDevice> PtpSource<D> {
    /// A source for a device that is already open: detects the read method
    /// and measures the read delay (see [`start`]).
    pub fn from_device(dev: D, config: &Config, setup: &Setup) -> Result<Self, PhcError> {
        let (reader, mut capabilities) = start(dev, config, setup)?;
        let platform = Platform::new(setup.platform.clone());
        if !platform.sources.is_empty() {
            let mut ext: serde_json::Value =
                serde_json::from_str(capabilities.extensions.as_str()).unwrap_or(json!({}));
            ext["platform"] = json!({
                "ena-error-bound": platform.sources.ena_error_bound,
                "vmclock": platform.sources.vmclock,
            });
            capabilities.extensions = ext.to_string().into();
        }
        Ok(PtpSource {
            reader,
            capabilities,
            platform,
        })
    }

    /// One sample with the platform's view added: the reference's error
    /// bound, when the platform publishes one; a disruption (the vmclock
    /// marker changed) ends this sample as [`ErrorKind::DISRUPTED`] instead.
    fn sample_with_platform(&mut self) -> Result<Sample, PluginError> {
        let mut sample = self.reader.sample()?;
        if self.platform.sources.is_empty() {
            return Ok(sample);
        }
        let utc = i128::from(sample.system_time_ns) + i128::from(sample.offset_ns);
        let (report, _unreadable) = self.platform.read(utc);
        if report.disrupted {
            return Err(PluginError::disrupted(format!(
                "PTP clock {}: the platform reports a disruption of the VM's clock (vmclock \
                 marker changed: a live migration); earlier samples no longer hold",
                self.reader.label()
            )));
        }
        if report.state == ReferenceState::Unreliable {
            return Err(PluginError::transient(format!(
                "PTP clock {}: the platform says its clock is unreliable (vmclock status)",
                self.reader.label()
            )));
        }
        sample.reference_error_ns = report.reference_error_ns.unwrap_or(0);
        Ok(sample)
    }
}

impl PtpSource<Phc> {
    /// Opens and detects the configured clock.
    pub fn open(config: &Config, roots: Roots<'_>) -> Result<Self, PhcError> {
        let target = resolve(&config.locator, roots.sys, roots.dev, roots.phc_index)?;
        let label = target.label.clone();

        let tai = match config.timescale {
            Timescale::Utc => TaiSource::None,
            Timescale::Tai(Some(s)) => TaiSource::Fixed(s),
            Timescale::Tai(None) => {
                kernel_tai_value(kernel_tai).map_err(|message| PhcError::Tai {
                    label: label.clone(),
                    message,
                    transient: false,
                })?;
                TaiSource::Kernel
            }
        };

        let phc = open(&target.path, &label, roots)?;
        // The driver's clock name, found by device number (works for udev
        // links such as /dev/ptp_kvm too).
        let clocks = list_clocks(roots.sys);
        let entry = phc
            .file()
            .metadata()
            .ok()
            .and_then(|m| clock_for_rdev(&clocks, m.rdev()).cloned());

        let platform = entry.as_ref().map_or_else(PlatformSources::default, |e| {
            find_sources(roots.sys, roots.dev, &e.name, e.clock_name.as_deref())
        });
        let setup = Setup {
            platform,
            label,
            path: target.path.display().to_string(),
            entry,
            tai,
            kernel_tai,
        };
        PtpSource::from_device(phc, config, &setup)
    }
}

/// What `init` knows about the clock before it reads it.
#[derive(Clone, Debug)]
pub struct Setup {
    /// Where the platform publishes its view of this clock.
    pub platform: PlatformSources,
    /// How messages name the clock.
    pub label: String,
    /// The device path opened.
    pub path: String,
    /// Its `/sys/class/ptp` entry, if found.
    pub entry: Option<locate::ClockEntry>,
    /// Where TAI-UTC comes from.
    pub tai: TaiSource,
    /// How to read the kernel's TAI-UTC.
    pub kernel_tai: source::KernelTai,
}

/// Detects the read method on an open device, measures its read delay and
/// builds the capabilities: everything `init` does once the device is open.
pub fn start<D: PhcDevice>(
    mut dev: D,
    config: &Config,
    setup: &Setup,
) -> Result<(Reader<D>, Capabilities), PhcError> {
    let label = &setup.label;
    let tai = setup.tai;
    let entry = &setup.entry;
    let clock_name = entry.as_ref().and_then(|e| e.clock_name.clone());
    let readings = config
        .readings
        .unwrap_or_else(|| default_readings(clock_name.as_deref()));
    let detection = detect(&mut dev, label, config.method, readings)?;
    let mut measured = vec![detection.first];
    let mut reader = Reader::new(
        dev,
        label.clone(),
        detection.method,
        readings,
        tai,
        config.offset_ns,
        setup.kernel_tai,
    );
    reader.learn(&detection.first);
    for _ in 0..PRECISION_BATCHES {
        if let Ok(m) = reader.measure() {
            measured.push(m);
        }
    }
    let mut estimate = estimate_precision(detection.method, &measured);
    let noise = widened_noise_ns(detection.method, &measured);
    if let Some(noise) = noise {
        // From now on a batch averages the band this noise widens, so its
        // samples scatter less: measure that scatter for the precision.
        reader.set_noise(noise);
        let mut again = vec![detection.first];
        for _ in 0..PRECISION_BATCHES {
            if let Ok(m) = reader.measure() {
                again.push(m);
            }
        }
        estimate = widened_precision(detection.method, &again);
    }
    let (precision_ns, delay_ns) = estimate;
    let readings = if detection.method.uses_readings() {
        readings
    } else {
        1
    };
    let method = detection.method;
    let mut description = format!(
        "PHC {label}{} via {}",
        match (&entry, &clock_name) {
            (Some(e), Some(n)) => format!(" ({}, clock {n:?})", e.name),
            (Some(e), None) => format!(" ({})", e.name),
            _ => String::new(),
        },
        method.request()
    );
    if method.uses_readings() {
        description.push_str(&format!(
            " x{readings}, best read delay {delay_ns} ns, precision {precision_ns} ns"
        ));
        if let Some(noise) = noise {
            description.push_str(&format!(
                " (timestamp noise {noise} ns: readings averaged within it)"
            ));
        }
    } else {
        description.push_str(" (hardware cross-timestamp)");
    }
    match tai {
        TaiSource::None => {}
        TaiSource::Fixed(s) => description.push_str(&format!(", TAI-UTC {s} s (configured)")),
        TaiSource::Kernel => description.push_str(", TAI-UTC from the kernel"),
    }
    if config.offset_ns != 0 {
        description.push_str(&format!(", offset {:+} ns", config.offset_ns));
    }

    let timescale = match tai {
        TaiSource::None => TimeScale::UTC,
        _ => TimeScale::TAI,
    };
    let mut capabilities =
        Capabilities::new(method.read_method(), timescale, precision_ns, description);
    capabilities.min_poll_log2 = MIN_READING_INTERVAL;
    let mut ext = json!({
        "device": setup.path,
        "clock-name": clock_name,
        "readings": readings,
        "delay-ns": delay_ns,
        "max-adj-ppb": detection.caps.max_adj_ppb,
        "cross-timestamping": detection.caps.cross_timestamping,
        "detection": detection.skipped,
    });
    if let TaiSource::Fixed(s) = tai {
        ext["tai-offset"] = json!(s);
    }
    capabilities.extensions = ext.to_string().into();

    Ok((reader, capabilities))
}

impl Plugin for PtpPlugin {
    type Source = PtpSource;

    fn info() -> Info {
        Info {
            name: "ptp",
            vendor: "ntpd-host project",
            version: env!("CARGO_PKG_VERSION"),
            description: "PTP hardware clock (/dev/ptpN): cross-timestamp, extended or standard reads",
        }
    }

    fn init(ctx: InitContext<'_>) -> Result<PtpSource, PluginError> {
        let raw: ConfigToml = ctx.config()?;
        let config = Config::try_from(raw).map_err(PhcError::from)?;
        Ok(PtpSource::open(&config, Roots::system())?)
    }
}

impl<D: PhcDevice + 'static> Source for PtpSource<D> {
    fn capabilities(&self) -> Result<Capabilities, PluginError> {
        Ok(self.capabilities.clone())
    }

    fn sample(&mut self) -> Result<Sample, PluginError> {
        self.sample_with_platform()
    }
}

export_plugin!(PtpPlugin);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::{Bracket, RawBatch};
    use crate::locate::tests::Scratch;
    use crate::process::Measurement;
    use crate::source::offset_scatter_ns;
    use crate::source::tests::{Fake, bracketed, precise_batch, st};
    use ntpd_plugin_api::{ErrorKind, ReadMethod};

    fn init(json: &str) -> Result<PtpSource, PluginError> {
        PtpPlugin::init(InitContext::new(json, "test"))
    }

    fn open_in(json: &str, scratch: &Scratch) -> Result<PtpSource, PhcError> {
        let raw: ConfigToml = serde_json::from_str(json).unwrap();
        let config = Config::try_from(raw).unwrap();
        PtpSource::open(
            &config,
            Roots {
                sys: &scratch.0,
                dev: &scratch.0.join("dev"),
                phc_index: |_| Err(Errno(libc::EOPNOTSUPP)),
            },
        )
    }

    #[test]
    fn missing_device_is_unavailable_and_lists_the_clocks() {
        let s = Scratch::new();
        let e = open_in(r#"{"device": "/dev/ptp-ntpd-test-missing"}"#, &s)
            .err()
            .unwrap();
        assert_eq!(e.kind(), ErrorKind::UNAVAILABLE);
        assert_eq!(
            e.to_string(),
            "PTP clock /dev/ptp-ntpd-test-missing does not exist (PTP clocks in /sys/class/ptp: none)"
        );
        s.clock("ptp1", "ptp_kvm", "246:1");
        let e = open_in(r#"{"device": "/dev/ptp-ntpd-test-missing"}"#, &s)
            .err()
            .unwrap();
        assert!(
            e.to_string()
                .ends_with(r#"(PTP clocks in /sys/class/ptp: ptp1 "ptp_kvm")"#)
        );
    }

    #[test]
    fn a_file_that_is_not_a_clock_is_a_configuration_error() {
        let s = Scratch::new();
        let e = open_in(r#"{"device": "/dev/null"}"#, &s).err().unwrap();
        assert_eq!(e.kind(), ErrorKind::CONFIGURATION);
        assert_eq!(
            e.to_string(),
            "/dev/null is not a PTP clock (PTP_CLOCK_GETCAPS: ENOTTY)"
        );
        let e = open_in(r#"{"device": "/"}"#, &s).err().unwrap();
        assert_eq!(e.kind(), ErrorKind::CONFIGURATION);
        // A FIFO would block a plain open; the plugin opens non-blocking.
        let fifo = s.0.join("fifo");
        assert!(
            std::process::Command::new("mkfifo")
                .arg(&fifo)
                .status()
                .unwrap()
                .success()
        );
        let json = format!(r#"{{"device": "{}"}}"#, fifo.display());
        let e = open_in(&json, &s).err().unwrap();
        assert_eq!(e.kind(), ErrorKind::CONFIGURATION, "{e}");
    }

    #[test]
    fn clock_name_not_present_is_unavailable() {
        let s = Scratch::new();
        let e = open_in(r#"{"clock-name": "ptp_kvm"}"#, &s).err().unwrap();
        assert_eq!(e.kind(), ErrorKind::UNAVAILABLE);
        assert!(e.to_string().contains("\"ptp_kvm\""));
    }

    #[test]
    fn init_errors_through_the_sdk() {
        let e = init(r#"{"device": "/dev/ptp-ntpd-test-missing"}"#)
            .err()
            .unwrap();
        assert_eq!(e.kind, ErrorKind::UNAVAILABLE);
        assert!(e.message.contains("/dev/ptp-ntpd-test-missing"));
        let e = init(r#"{"devcie": "/dev/ptp0"}"#).err().unwrap();
        assert_eq!(e.kind, ErrorKind::CONFIGURATION);
        assert!(e.message.contains("devcie"), "{}", e.message);
        let e = init(r#"{"device": "/dev/ptp0", "readings": 99}"#)
            .err()
            .unwrap();
        assert_eq!(e.kind, ErrorKind::CONFIGURATION);
        assert_eq!(
            e.message.as_str(),
            "invalid plugin config: readings: 99 is out of range: 1 to 25 readings per sample"
        );
        let e = init("").err().unwrap();
        assert!(e.message.contains("`device`"), "{}", e.message);
    }

    fn setup(tai: TaiSource) -> Setup {
        Setup {
            platform: PlatformSources::default(),
            label: "/dev/ptp_kvm".into(),
            path: "/dev/ptp_kvm".into(),
            entry: Some(locate::ClockEntry {
                name: "ptp1".into(),
                clock_name: Some("ptp_kvm".into()),
                dev: Some((246, 1)),
            }),
            tai,
            kernel_tai: || Ok(37),
        }
    }

    fn config(json: &str) -> Config {
        Config::try_from(serde_json::from_str::<ConfigToml>(json).unwrap()).unwrap()
    }

    fn extensions(caps: &Capabilities) -> serde_json::Value {
        serde_json::from_str(caps.extensions.as_str()).unwrap()
    }

    #[test]
    fn readings_default_to_the_most_but_five_on_an_ena_phc_and_a_set_value_wins() {
        let run = |clock_name: &str, json: &str| {
            let mut f = Fake::with_caps(false);
            for _ in 0..=PRECISION_BATCHES + 1 {
                f.extended.push_back(Ok(bracketed(10, 300, 5)));
            }
            let mut s = setup(TaiSource::None);
            s.entry.as_mut().unwrap().clock_name = Some(clock_name.into());
            let (mut reader, caps) = start(f, &config(json), &s).unwrap();
            reader.sample().unwrap();
            let asked: Vec<String> = reader.device().calls.clone();
            let reads: Vec<&String> = asked.iter().filter(|c| c.starts_with("extended")).collect();
            assert!(reads.len() > PRECISION_BATCHES, "{asked:?}");
            let n = extensions(&caps)["readings"].as_u64().unwrap();
            assert!(
                reads.iter().all(|c| **c == format!("extended({n})")),
                "{asked:?} against {n}"
            );
            n
        };
        let any = r#"{"device": "/dev/ptp_kvm"}"#;
        assert_eq!(run("ptp_kvm", any), 25);
        assert_eq!(run("ena-ptp-05", any), 5);
        let set = r#"{"device": "/dev/ptp_kvm", "readings": 12}"#;
        assert_eq!(run("ptp_kvm", set), 12);
        assert_eq!(run("ena-ptp-05", set), 12);
    }

    #[test]
    fn start_reports_method_device_clock_name_and_precision() {
        // Detection batch slow (first call on the path), then the typical
        // ones of the precision estimate, then a sample's.
        let mut f = Fake::with_caps(false);
        f.extended.push_back(Ok(bracketed(10, 300_000, 5)));
        for i in 0..PRECISION_BATCHES {
            let delay = if i % 2 == 0 { 320 } else { 300 };
            f.extended.push_back(Ok(bracketed(10, delay, 5)));
        }
        f.extended.push_back(Ok(bracketed(10, 310, 5)));
        let (mut reader, caps) = start(
            f,
            &config(r#"{"device": "/dev/ptp_kvm"}"#),
            &setup(TaiSource::None),
        )
        .unwrap();
        assert_eq!(caps.method, ReadMethod::EXTENDED);
        assert_eq!(caps.timescale, TimeScale::UTC);
        assert_eq!(caps.precision_ns, 92, "median min delay 320 ns / sqrt(12)");
        let ext = extensions(&caps);
        assert_eq!(ext["device"], "/dev/ptp_kvm");
        assert_eq!(ext["clock-name"], "ptp_kvm");
        assert_eq!(ext["readings"], config::DEFAULT_READINGS);
        assert_eq!(ext["delay-ns"], 300);
        assert!(caps.description.contains("ptp1"), "{}", caps.description);
        assert!(caps.description.contains("PTP_SYS_OFFSET_EXTENDED x25"));
        // The reader goes on with the next batch, not a new detection.
        assert_eq!(reader.sample().unwrap().error_ns, 155);
    }

    #[test]
    fn samples_carry_the_platform_bound_and_a_disruption_ends_one_sample() {
        let dir = tempfile::tempdir().unwrap();
        let ena = dir.path().join("phc_error_bound");
        let vmclock = dir.path().join("vmclock0");
        std::fs::write(&ena, "1500\n").unwrap();
        // A minimal vmclock page (magic, size 32, version 1, no counter):
        // only its disruption marker (at byte 16) matters here.
        let page = |marker: u64| {
            let mut b = vec![0u8; 32];
            b[0..4].copy_from_slice(&0x4b4c_4356u32.to_le_bytes());
            b[4..8].copy_from_slice(&32u32.to_le_bytes());
            b[8..10].copy_from_slice(&1u16.to_le_bytes());
            b[10] = 0xff;
            b[16..24].copy_from_slice(&marker.to_le_bytes());
            b
        };
        std::fs::write(&vmclock, page(1)).unwrap();
        let mut f = Fake::with_caps(true);
        for _ in 0..PRECISION_BATCHES + 5 {
            f.precise.push_back(Ok(precise_batch(1_000)));
        }
        let mut s = setup(TaiSource::None);
        s.platform = PlatformSources {
            ena_error_bound: Some(ena.clone()),
            vmclock: Some(vmclock.clone()),
        };
        let mut src =
            PtpSource::from_device(f, &config(r#"{"device": "/dev/ptp_kvm"}"#), &s).unwrap();
        let ext = extensions(&src.capabilities().unwrap());
        assert_eq!(
            ext["platform"]["ena-error-bound"],
            ena.display().to_string()
        );
        let first = src.sample().unwrap();
        assert_eq!(first.reference_error_ns, 1500);
        assert_eq!(first.offset_ns, 1_000);
        // A live migration: the marker changes; that sample is a disruption.
        std::fs::write(&vmclock, page(2)).unwrap();
        let e = src.sample().unwrap_err();
        assert_eq!(e.kind, ErrorKind::DISRUPTED);
        assert!(e.message.contains("live migration"), "{}", e.message);
        // The next sample is good again.
        std::fs::write(&ena, "2500\n").unwrap();
        assert_eq!(src.sample().unwrap().reference_error_ns, 2500);
        // An unreadable bound is left out, not an error.
        std::fs::remove_file(&ena).unwrap();
        assert_eq!(src.sample().unwrap().reference_error_ns, 0);
    }

    /// Read `i` of a batch (reads 10 us apart): a bracket of `delay` ns with
    /// the PHC read at its middle, `off` ns off the system clock.
    fn centred_read(i: i64, delay: i64, off: i64) -> Bracket {
        let before = 1_800_000_000_000_000_000 + i * 10_000;
        Bracket {
            before: st(before),
            phc: st(before + delay / 2 + off),
            after: st(before + delay),
        }
    }

    #[test]
    fn a_noisy_clock_is_measured_twice_and_reports_the_wider_bands_scatter() {
        // Batches of three readings, delays 300, 600 and 900 ns: the first
        // read on the offset, the others 100 ns apart around it. The first
        // round alternates by +-500 ns (the lowest-delay band only), the
        // second by +-200 ns (the band the first round's noise widened).
        let batch = |offset: i64| {
            Ok(RawBatch::Bracketed(vec![
                centred_read(0, 300, offset),
                centred_read(1, 600, offset + 100),
                centred_read(2, 900, offset - 100),
            ]))
        };
        let mut f = Fake::with_caps(false);
        f.extended.push_back(batch(0));
        for i in 0..PRECISION_BATCHES {
            f.extended
                .push_back(batch(if i % 2 == 0 { 500 } else { -500 }));
        }
        for i in 0..PRECISION_BATCHES {
            f.extended
                .push_back(batch(if i % 2 == 0 { 200 } else { -200 }));
        }
        f.extended.push_back(batch(0));
        let (mut reader, caps) = start(
            f,
            &config(r#"{"device": "/dev/ptp_kvm"}"#),
            &setup(TaiSource::None),
        )
        .unwrap();
        let round = |a: i64| {
            let m = |i: usize| Measurement {
                system_time_ns: 1_800_000_000_000_000_000,
                offset_ns: if i.is_multiple_of(2) { a } else { -a },
                error_ns: 1,
                readings: 1,
                min_delay_ns: 300,
                band_spread_ns: None,
            };
            offset_scatter_ns(&(0..PRECISION_BATCHES).map(m).collect::<Vec<_>>()).unwrap()
        };
        assert_eq!(caps.precision_ns, round(200), "the second round's scatter");
        // Later samples average the whole widened band: all three reads.
        assert_eq!(reader.sample().unwrap().readings, 3);
        assert!(
            round(500) * 34_641 / 10_000 > 900,
            "the band holds the 900 ns read"
        );
    }

    #[test]
    fn a_clock_noisy_within_each_batch_is_found_though_batches_agree() {
        // Four reads a batch: three in the band (300-320 ns) at -600, 0 and
        // +600 ns, one slow (900 ns) on the offset. Every band averages to
        // 0, so the batches agree; only the reads within them show the noise.
        let batch = || {
            Ok(RawBatch::Bracketed(vec![
                centred_read(0, 300, -600),
                centred_read(1, 310, 0),
                centred_read(2, 320, 600),
                centred_read(3, 900, 0),
            ]))
        };
        let mut f = Fake::with_caps(false);
        for _ in 0..=2 * PRECISION_BATCHES + 1 {
            f.extended.push_back(batch());
        }
        let (mut reader, caps) = start(
            f,
            &config(r#"{"device": "/dev/ptp_kvm"}"#),
            &setup(TaiSource::None),
        )
        .unwrap();
        assert!(
            caps.description.contains("timestamp noise 594 ns"),
            "sqrt(600^2 - 87^2) = 593.7: {}",
            caps.description
        );
        // The widened band holds the slow read too.
        assert_eq!(reader.sample().unwrap().readings, 4);
    }

    #[test]
    fn start_with_precise_and_tai() {
        let mut f = Fake::with_caps(true);
        for _ in 0..=PRECISION_BATCHES {
            f.precise
                .push_back(Ok(precise_batch(37 * process::NS_PER_S + 4)));
        }
        f.precise
            .push_back(Ok(precise_batch(37 * process::NS_PER_S + 6)));
        let (mut reader, caps) = start(
            f,
            &config(r#"{"clock-name": "ptp_kvm", "timescale": "tai", "tai-offset": 37}"#),
            &setup(TaiSource::Fixed(37)),
        )
        .unwrap();
        assert_eq!(caps.method, ReadMethod::PRECISE);
        assert_eq!(caps.timescale, TimeScale::TAI);
        assert_eq!(caps.precision_ns, 1);
        let ext = extensions(&caps);
        assert_eq!(ext["readings"], 1);
        assert_eq!(ext["delay-ns"], 0);
        assert_eq!(ext["tai-offset"], 37);
        assert_eq!(reader.sample().unwrap().offset_ns, 6, "TAI PHC, UTC offset");
    }

    #[test]
    fn start_propagates_detection_errors() {
        let mut f = Fake::default();
        f.caps.push_back(Err(Errno(libc::ENODEV)));
        let e = start(
            f,
            &config(r#"{"device": "/dev/ptp_kvm"}"#),
            &setup(TaiSource::None),
        )
        .err()
        .unwrap();
        assert_eq!(e.kind(), ErrorKind::UNAVAILABLE);
        assert!(e.to_string().contains("/dev/ptp_kvm"));
    }

    #[test]
    fn source_through_the_abi_boundary() {
        // The same panic-guarded wrapper a loaded plugin gets.
        let mut f = Fake::with_caps(false);
        // Detection, the precision estimate's batches, one sample.
        for _ in 0..PRECISION_BATCHES + 2 {
            f.standard.push_back(Ok(bracketed(3, 600, 250)));
        }
        f.standard.push_back(Err(Errno(libc::ENODEV)));
        let source = PtpSource::from_device(
            f,
            &config(r#"{"device": "/dev/ptp_kvm", "readings": 3, "offset": 0.00000005}"#),
            &setup(TaiSource::None),
        )
        .unwrap();
        let mut boxed = ntpd_plugin_api::boxed_source(source);
        let caps = boxed.capabilities().into_result().unwrap();
        assert_eq!(caps.method, ReadMethod::STANDARD);
        assert!(
            caps.description.contains("offset +50 ns"),
            "{}",
            caps.description
        );
        let s = boxed.sample().into_result().unwrap();
        assert_eq!(s.offset_ns, 300, "250 ns measured + 50 ns configured");
        assert_eq!(s.readings, 3);
        let e = boxed.sample().into_result().unwrap_err();
        assert_eq!(e.kind, ErrorKind::UNAVAILABLE);
        assert!(e.message.contains("/dev/ptp_kvm") && e.message.contains("ENODEV"));
    }

    #[test]
    fn a_denied_open_is_tried_again_briefly() {
        let mut calls = 0;
        let mut pauses = 0;
        // Granted on the third try (udev was a little late).
        let r = retry_denied(
            || {
                calls += 1;
                if calls < 3 {
                    Err(Errno(libc::EACCES))
                } else {
                    Ok(7)
                }
            },
            || pauses += 1,
        );
        assert_eq!((r, calls, pauses), (Ok(7), 3, 2));
        // Never granted: reported after the last try.
        let mut calls = 0;
        let r: Result<(), Errno> = retry_denied(
            || {
                calls += 1;
                Err(Errno(libc::EPERM))
            },
            || {},
        );
        assert_eq!((r, calls), (Err(Errno(libc::EPERM)), DENIED_OPEN_TRIES));
        // Other errors are not retried.
        let mut calls = 0;
        let r: Result<(), Errno> = retry_denied(
            || {
                calls += 1;
                Err(Errno(libc::ENOENT))
            },
            || {},
        );
        assert_eq!((r, calls), (Err(Errno(libc::ENOENT)), 1));
    }

    #[test]
    fn open_errors() {
        let s = Scratch::new();
        s.clock("ptp0", "igb", "246:0");
        for errno in [libc::ENOENT, libc::ENODEV, libc::ENXIO] {
            let e = open_error("/dev/ptp1", Errno(errno), &s.0);
            assert_eq!(e.kind(), ErrorKind::UNAVAILABLE);
            assert_eq!(
                e.to_string(),
                r#"PTP clock /dev/ptp1 does not exist (PTP clocks in /sys/class/ptp: ptp0 "igb")"#
            );
        }
        for errno in [libc::EACCES, libc::EPERM] {
            let e = open_error("/dev/ptp0", Errno(errno), &s.0);
            // Retried: udev may not have applied its rule to a new device yet.
            assert_eq!(e.kind(), ErrorKind::UNAVAILABLE);
            let m = e.to_string();
            assert!(
                m.starts_with("no permission to open PTP clock /dev/ptp0 ("),
                "{m}"
            );
            assert!(m.contains("udev rule") && m.contains("group"), "{m}");
        }
        assert_eq!(
            open_error("/dev/ptp0", Errno(libc::EINTR), &s.0).kind(),
            ErrorKind::TRANSIENT
        );
        assert_eq!(
            open_error("/dev/ptp0", Errno(libc::EMFILE), &s.0).kind(),
            ErrorKind::TRANSIENT,
            "out of descriptors: try again later"
        );
        assert_eq!(
            open_error("/dev/ptp0", Errno(libc::ELOOP), &s.0).kind(),
            ErrorKind::FATAL
        );
    }

    /// Descriptors of this process open on `path`.
    fn fds_on(path: &Path) -> usize {
        std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| std::fs::read_link(e.path()).ok().as_deref() == Some(path))
            .count()
    }

    #[test]
    fn descriptors_are_closed_on_drop_and_on_failed_init() {
        let s = Scratch::new();
        let file = s.0.join("not-a-phc");
        std::fs::write(&file, b"").unwrap();
        let phc = Phc::open(&file).unwrap();
        assert_eq!(fds_on(&file), 1);
        drop(phc);
        assert_eq!(fds_on(&file), 0);
        // init opens it, finds it is no PHC, and must not leak the fd.
        let json = format!(r#"{{"device": "{}"}}"#, file.display());
        assert_eq!(
            open_in(&json, &s).err().unwrap().kind(),
            ErrorKind::CONFIGURATION
        );
        assert_eq!(fds_on(&file), 0);
    }

    #[test]
    fn info_names_the_plugin() {
        assert_eq!(PtpPlugin::info().name, "ptp");
    }
}
