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

pub mod config;
pub mod device;
pub mod error;
pub mod locate;
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

use crate::config::{Config, RawConfig, Timescale};
use crate::device::{Errno, ErrnoClass, PhcDevice};
use crate::error::PhcError;
use crate::locate::{clock_for_rdev, describe_clocks, list_clocks, resolve};
use crate::source::{
    PRECISION_BATCHES, Reader, TaiSource, detect, estimate_precision, kernel_tai_value,
};
use crate::sys::Phc;

/// The plugin type handed to `export_plugin!`.
pub struct PtpPlugin;

/// An open PHC with its detected read method: the plugin's source object.
/// Generic over the device so tests can run it on a fake.
pub struct PtpSource<D: PhcDevice = Phc> {
    reader: Reader<D>,
    capabilities: Capabilities,
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

/// Opens the PHC, mapping `open` failures with [`open_error`].
fn open(path: &Path, label: &str, roots: Roots<'_>) -> Result<Phc, PhcError> {
    Phc::open(path).map_err(|e| {
        open_error(
            label,
            Errno(e.raw_os_error().unwrap_or(libc::EIO)),
            roots.sys,
        )
    })
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
        _ => source::errno_error(label, "open", errno, true),
    }
}

impl<D: PhcDevice> PtpSource<D> {
    /// A source for a device that is already open: detects the read method
    /// and measures the read delay (see [`start`]).
    pub fn from_device(dev: D, config: &Config, setup: &Setup) -> Result<Self, PhcError> {
        let (reader, capabilities) = start(dev, config, setup)?;
        Ok(PtpSource {
            reader,
            capabilities,
        })
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

        let setup = Setup {
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
    let detection = detect(&mut dev, label, config.method, config.readings)?;
    let mut measured = vec![detection.first];
    let mut reader = Reader::new(
        dev,
        label.clone(),
        detection.method,
        config.readings,
        tai,
        config.offset_ns,
        setup.kernel_tai,
    );
    reader.learn(&detection.first);
    if detection.method.uses_readings() {
        for _ in 0..PRECISION_BATCHES {
            if let Ok(m) = reader.measure() {
                measured.push(m);
            }
        }
    }
    let (precision_ns, delay_ns) = estimate_precision(detection.method, &measured);
    let clock_name = entry.as_ref().and_then(|e| e.clock_name.clone());
    let readings = if detection.method.uses_readings() {
        config.readings
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
        description.push_str(&format!(" x{readings}, best read delay {delay_ns} ns"));
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
        let raw: RawConfig = ctx.config()?;
        let config = Config::from_raw(raw).map_err(PhcError::from)?;
        Ok(PtpSource::open(&config, Roots::system())?)
    }
}

impl<D: PhcDevice + 'static> Source for PtpSource<D> {
    fn capabilities(&self) -> Result<Capabilities, PluginError> {
        Ok(self.capabilities.clone())
    }

    fn sample(&mut self) -> Result<Sample, PluginError> {
        Ok(self.reader.sample()?)
    }
}

export_plugin!(PtpPlugin);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::locate::tests::Scratch;
    use crate::source::tests::{Fake, bracketed, precise_batch};
    use ntpd_plugin_api::{ErrorKind, ReadMethod};

    fn init(json: &str) -> Result<PtpSource, PluginError> {
        PtpPlugin::init(InitContext::new(json, "test"))
    }

    fn open_in(json: &str, scratch: &Scratch) -> Result<PtpSource, PhcError> {
        let raw: RawConfig = serde_json::from_str(json).unwrap();
        let config = Config::from_raw(raw).unwrap();
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
        assert!(e.message.contains("`readings`"), "{}", e.message);
        let e = init("").err().unwrap();
        assert!(e.message.contains("`device`"), "{}", e.message);
    }

    fn setup(tai: TaiSource) -> Setup {
        Setup {
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
        Config::from_raw(serde_json::from_str(json).unwrap()).unwrap()
    }

    fn extensions(caps: &Capabilities) -> serde_json::Value {
        serde_json::from_str(caps.extensions.as_str()).unwrap()
    }

    #[test]
    fn start_reports_method_device_clock_name_and_precision() {
        // Detection batch slow (first call on the path), then two typical.
        let mut f = Fake::with_caps(false);
        f.extended.push_back(Ok(bracketed(10, 300_000, 5)));
        f.extended.push_back(Ok(bracketed(10, 320, 5)));
        f.extended.push_back(Ok(bracketed(10, 300, 5)));
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
        assert_eq!(ext["readings"], 10);
        assert_eq!(ext["delay-ns"], 300);
        assert!(caps.description.contains("ptp1"), "{}", caps.description);
        assert!(caps.description.contains("PTP_SYS_OFFSET_EXTENDED x10"));
        // The reader goes on with the next batch, not a new detection.
        assert_eq!(reader.sample().unwrap().error_ns, 155);
    }

    #[test]
    fn start_with_precise_and_tai() {
        let mut f = Fake::with_caps(true);
        f.precise
            .push_back(Ok(precise_batch(37 * process::NS_PER_S + 4)));
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
        f.standard.push_back(Ok(bracketed(3, 600, 250)));
        f.standard.push_back(Ok(bracketed(3, 600, 250)));
        f.standard.push_back(Ok(bracketed(3, 600, 250)));
        f.standard.push_back(Ok(bracketed(3, 600, 250)));
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
            assert_eq!(e.kind(), ErrorKind::CONFIGURATION);
            let m = e.to_string();
            assert!(
                m.starts_with("no permission to read PTP clock /dev/ptp0 (open: "),
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
