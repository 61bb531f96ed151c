//! Error bounds and disruption signals that the platform publishes next to a
//! PHC: AWS ENA's `phc_error_bound` sysfs file and Linux's vmclock device.
//!
//! Both describe how far the *reference itself* may be from true time, which
//! a PHC reading cannot tell:
//!
//! - **ENA** (AWS Nitro): the out-of-tree `ena` driver (the one Amazon Linux
//!   ships; mainline's driver has no such file) creates `phc_error_bound` in
//!   the NIC's PCI device directory, the parent of the PHC, so it is
//!   `/sys/class/ptp/ptpN/device/phc_error_bound`. It holds one unsigned
//!   decimal in nanoseconds: the bound the device returned with the most
//!   recent PHC reading (by anyone). A read fails with EBUSY after a
//!   reading the device flagged as bad, and with EOPNOTSUPP while the PHC is
//!   not active.
//! - **vmclock** (Linux 6.13+, `CONFIG_PTP_1588_CLOCK_VMCLOCK`): a page the
//!   hypervisor keeps updated, laid out as `struct vmclock_abi`
//!   (`include/uapi/linux/vmclock-abi.h`, little-endian), readable through
//!   `/dev/vmclockN` with `read()` (the driver retries until the sequence
//!   counter is stable) or a read-only `mmap`. Its `disruption_marker`
//!   changes when the VM's counter is disrupted (live migration, snapshot
//!   restore); `clock_status` and `time_maxerror_nanosec` qualify the time
//!   it carries. The same driver registers a PHC named `vmclockN` when the
//!   page carries usable time.
//!
//! The parsing and decisions here are pure; the only I/O is reading one
//! sysfs file or one device page, through paths the caller passes in (tests
//! point them at temporary trees).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use ntpd_plugin_api::Leap;
use thiserror::Error;

/// The sysfs file name of ENA's PHC error bound.
pub const ENA_ERROR_BOUND_FILE: &str = "phc_error_bound";

/// The vmclock page's magic number ("VCLK" in little-endian).
pub const VMCLOCK_MAGIC: u32 = 0x4b4c_4356;

/// The only `struct vmclock_abi` version defined.
pub const VMCLOCK_VERSION: u16 = 1;

/// The smallest page the kernel driver accepts: everything up to and
/// including `flags` (`offsetof(struct vmclock_abi, pad)`).
pub const VMCLOCK_MIN_SIZE: usize = 32;

/// How many bytes of the device to read: one page, the size the driver
/// requires before it offers `/dev/vmclockN` at all.
pub const VMCLOCK_READ_SIZE: usize = 4096;

/// Byte offsets of `struct vmclock_abi` fields.
mod offset {
    pub const MAGIC: usize = 0;
    pub const SIZE: usize = 4;
    pub const VERSION: usize = 8;
    pub const COUNTER_ID: usize = 10;
    pub const TIME_TYPE: usize = 11;
    pub const SEQ_COUNT: usize = 12;
    pub const DISRUPTION_MARKER: usize = 16;
    pub const FLAGS: usize = 24;
    pub const CLOCK_STATUS: usize = 34;
    pub const SMEARING_HINT: usize = 35;
    pub const TAI_OFFSET_SEC: usize = 36;
    pub const LEAP_INDICATOR: usize = 38;
    pub const COUNTER_PERIOD_SHIFT: usize = 39;
    pub const COUNTER_VALUE: usize = 40;
    pub const COUNTER_PERIOD_FRAC_SEC: usize = 48;
    pub const PERIOD_ESTERROR_RATE: usize = 56;
    pub const PERIOD_MAXERROR_RATE: usize = 64;
    pub const TIME_SEC: usize = 72;
    pub const TIME_FRAC_SEC: usize = 80;
    pub const TIME_ESTERROR_NS: usize = 88;
    pub const TIME_MAXERROR_NS: usize = 96;
    pub const VM_GENERATION_COUNTER: usize = 104;
}

/// `flags` bits of `struct vmclock_abi`.
pub mod flag {
    /// `tai_offset_sec` is valid.
    pub const TAI_OFFSET_VALID: u64 = 1 << 0;
    /// A disruption (maintenance) is expected in about a day.
    pub const DISRUPTION_SOON: u64 = 1 << 1;
    /// A disruption is expected in about an hour.
    pub const DISRUPTION_IMMINENT: u64 = 1 << 2;
    /// `counter_period_esterror_rate_frac_sec` is valid.
    pub const PERIOD_ESTERROR_VALID: u64 = 1 << 3;
    /// `counter_period_maxerror_rate_frac_sec` is valid.
    pub const PERIOD_MAXERROR_VALID: u64 = 1 << 4;
    /// `time_esterror_nanosec` is valid.
    pub const TIME_ESTERROR_VALID: u64 = 1 << 5;
    /// `time_maxerror_nanosec` is valid.
    pub const TIME_MAXERROR_VALID: u64 = 1 << 6;
    /// Time computed from the page never runs backwards across updates.
    pub const TIME_MONOTONIC: u64 = 1 << 7;
    /// `vm_generation_counter` is maintained.
    pub const VM_GEN_COUNTER_PRESENT: u64 = 1 << 8;
}

/// Where this PHC's platform information lives, when it has any.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PlatformSources {
    /// ENA's `phc_error_bound` file for this PHC.
    pub ena_error_bound: Option<PathBuf>,
    /// The vmclock device whose page describes this VM's clock.
    pub vmclock: Option<PathBuf>,
}

impl PlatformSources {
    /// Whether neither source exists.
    pub fn is_empty(&self) -> bool {
        self.ena_error_bound.is_none() && self.vmclock.is_none()
    }
}

/// The vmclock index of a PHC the vmclock driver registered: its
/// `clock_name` is `vmclockN`, the same N as `/dev/vmclockN`.
pub fn vmclock_index(clock_name: &str) -> Option<u32> {
    let digits = clock_name.strip_prefix("vmclock")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Finds the platform sources of the PHC `ptp` (`ptpN`, as in
/// `/sys/class/ptp`) with driver clock name `clock_name`:
///
/// - ENA: `<sys>/class/ptp/<ptp>/device/phc_error_bound`, when it exists;
/// - vmclock: `<dev>/vmclockN` for a PHC named `vmclockN`; for any other
///   PHC, `<dev>/vmclock0` when it exists, since its disruption marker
///   covers the whole VM (an ENA or ptp_kvm PHC is disrupted by a live
///   migration too).
pub fn find_sources(
    sys: &Path,
    dev: &Path,
    ptp: &str,
    clock_name: Option<&str>,
) -> PlatformSources {
    let ena = sys
        .join("class/ptp")
        .join(ptp)
        .join("device")
        .join(ENA_ERROR_BOUND_FILE);
    let vmclock = match clock_name.and_then(vmclock_index) {
        Some(n) => Some(dev.join(format!("vmclock{n}"))),
        None => Some(dev.join("vmclock0")),
    };
    PlatformSources {
        ena_error_bound: ena.exists().then_some(ena),
        vmclock: vmclock.filter(|p| p.exists()),
    }
}

/// Why a platform value could not be read.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum PlatformError {
    /// The file or device is not there (driver unloaded, device removed).
    #[error("{path}: not present ({errno})")]
    Missing {
        /// The file or device.
        path: String,
        /// The errno name and number.
        errno: String,
    },
    /// ENA: the device flagged its last PHC reading, so the driver withholds
    /// the bound until the next good reading (EBUSY).
    #[error(
        "{path}: the device flagged the last PHC reading; no error bound until the next good one (EBUSY)"
    )]
    EnaBusy {
        /// The file.
        path: String,
    },
    /// ENA: the PHC is not active (EOPNOTSUPP); enable it in the driver.
    #[error(
        "{path}: the ENA PHC is not active (EOPNOTSUPP); enable it (driver parameter phc_enable=1)"
    )]
    EnaInactive {
        /// The file.
        path: String,
    },
    /// ENA: the file did not hold one unsigned decimal.
    #[error("{path}: expected a number of nanoseconds, found {found:?}")]
    EnaMalformed {
        /// The file.
        path: String,
        /// What it held (trimmed, shortened).
        found: String,
    },
    /// No permission to read it.
    #[error(
        "{path}: permission denied; grant the user ntpd-host runs as read access (e.g. `chmod a+r`)"
    )]
    Denied {
        /// The file or device.
        path: String,
    },
    /// The vmclock page is not a valid page.
    #[error("{path}: {source}")]
    VmClock {
        /// The device.
        path: String,
        /// What is wrong with the page.
        source: VmClockError,
    },
    /// Any other read failure.
    #[error("{path}: read failed: {message}")]
    Io {
        /// The file or device.
        path: String,
        /// The error.
        message: String,
    },
}

impl PlatformError {
    /// Whether the next attempt may succeed (busy, a torn page, a timeout),
    /// as opposed to a missing or misconfigured source.
    pub fn is_transient(&self) -> bool {
        match self {
            PlatformError::EnaBusy { .. } | PlatformError::Io { .. } => true,
            PlatformError::VmClock { source, .. } => source.is_transient(),
            _ => false,
        }
    }
}

fn errno_name(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::ENOENT) => "ENOENT".to_owned(),
        Some(libc::ENODEV) => "ENODEV".to_owned(),
        Some(libc::ENXIO) => "ENXIO".to_owned(),
        Some(n) => format!("errno {n}"),
        None => e.to_string(),
    }
}

/// Maps a failed read of a platform file to an error. ENA's EBUSY and
/// EOPNOTSUPP have their own meaning (see [`PlatformError`]).
fn read_error(path: &Path, e: &io::Error) -> PlatformError {
    let path = path.display().to_string();
    match e.raw_os_error() {
        Some(libc::ENOENT | libc::ENODEV | libc::ENXIO) => PlatformError::Missing {
            errno: errno_name(e),
            path,
        },
        Some(libc::EACCES | libc::EPERM) => PlatformError::Denied { path },
        Some(libc::EBUSY) => PlatformError::EnaBusy { path },
        Some(libc::EOPNOTSUPP) => PlatformError::EnaInactive { path },
        _ => PlatformError::Io {
            message: e.to_string(),
            path,
        },
    }
}

/// Parses the content of `phc_error_bound`: one unsigned decimal (the
/// driver prints a `u32` with `%u\n`), surrounding whitespace allowed.
pub fn parse_ena_error_bound(path: &Path, text: &str) -> Result<u32, PlatformError> {
    let trimmed = text.trim();
    trimmed
        .parse::<u32>()
        .map_err(|_| PlatformError::EnaMalformed {
            path: path.display().to_string(),
            found: trimmed.chars().take(40).collect(),
        })
}

/// Reads ENA's error bound in nanoseconds. It describes the most recent PHC
/// reading, so read it right after taking a sample.
pub fn read_ena_error_bound(path: &Path) -> Result<u32, PlatformError> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse_ena_error_bound(path, &text),
        Err(e) => Err(read_error(path, &e)),
    }
}

/// What is wrong with a vmclock page.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum VmClockError {
    /// Fewer bytes than the fixed header.
    #[error("vmclock page too short: {len} bytes, need at least {VMCLOCK_MIN_SIZE}")]
    TooShort {
        /// Bytes available.
        len: usize,
    },
    /// Not a vmclock page.
    #[error("not a vmclock page (magic {found:#010x}, expected {VMCLOCK_MAGIC:#010x})")]
    BadMagic {
        /// The magic found.
        found: u32,
    },
    /// A layout version this code does not know.
    #[error("vmclock page version {found} is not supported (only {VMCLOCK_VERSION})")]
    UnsupportedVersion {
        /// The version found.
        found: u16,
    },
    /// The page declares a size smaller than its fixed header.
    #[error("vmclock page declares size {size}, smaller than {VMCLOCK_MIN_SIZE}")]
    BadSize {
        /// The declared size.
        size: u32,
    },
    /// The copy was taken while the hypervisor was updating the page (odd
    /// sequence count) or the counter moved during the copy: read again.
    #[error("vmclock page changed while it was read (seq_count {first} then {second}); read again")]
    Torn {
        /// The counter before the copy (or in it).
        first: u32,
        /// The counter after the copy.
        second: u32,
    },
}

impl VmClockError {
    /// Whether reading again may help.
    pub fn is_transient(&self) -> bool {
        matches!(self, VmClockError::Torn { .. })
    }
}

/// The outcome of a seqcount-protected read: the counter read before the
/// copy and the one read after it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SeqRead {
    /// Both reads saw the same even value: the copy is consistent.
    Consistent,
    /// The first read was odd: the writer was mid-update. Retry.
    WriterActive,
    /// The counter changed during the copy. Retry.
    Changed,
}

/// Judges a copy taken between two reads of a seqcount (low bit set while
/// the writer updates).
pub fn seq_read(before: u32, after: u32) -> SeqRead {
    if before & 1 == 1 {
        SeqRead::WriterActive
    } else if before != after {
        SeqRead::Changed
    } else {
        SeqRead::Consistent
    }
}

/// `clock_status` of a vmclock page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmClockStatus {
    /// 0: unknown.
    Unknown,
    /// 1: the host is still initialising its clock.
    Initializing,
    /// 2: the host's clock is synchronised.
    Synchronized,
    /// 3: the host's clock runs free.
    FreeRunning,
    /// 4: the counter or time must not be trusted.
    Unreliable,
    /// A value this code does not know.
    Other(u8),
    /// The page is too short to carry a status.
    Absent,
}

impl VmClockStatus {
    fn from_raw(v: u8) -> Self {
        match v {
            0 => VmClockStatus::Unknown,
            1 => VmClockStatus::Initializing,
            2 => VmClockStatus::Synchronized,
            3 => VmClockStatus::FreeRunning,
            4 => VmClockStatus::Unreliable,
            n => VmClockStatus::Other(n),
        }
    }
}

/// `time_type` of a vmclock page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmClockTimeType {
    /// 0: UTC, seconds since 1970.
    Utc,
    /// 1: TAI, seconds since 1970 (UTC = TAI - `tai_offset_sec`).
    Tai,
    /// 2: monotonic, undefined epoch.
    Monotonic,
    /// Smeared or unknown values (3, 4 and others): unusable as time.
    Other(u8),
}

impl VmClockTimeType {
    fn from_raw(v: u8) -> Self {
        match v {
            0 => VmClockTimeType::Utc,
            1 => VmClockTimeType::Tai,
            2 => VmClockTimeType::Monotonic,
            n => VmClockTimeType::Other(n),
        }
    }
}

/// A parsed `struct vmclock_abi`. Fields beyond the fixed header are `None`
/// when the page's `size` (or the bytes read) does not cover them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmClockPage {
    /// Declared size of the region.
    pub size: u32,
    /// Which CPU counter the page describes (0 arm vcnt, 1 x86 TSC, 0xff none).
    pub counter_id: u8,
    /// What `time_sec` counts.
    pub time_type: VmClockTimeType,
    /// The sequence count in the copy (even for a consistent copy).
    pub seq_count: u32,
    /// Changes whenever the VM's counter is disrupted.
    pub disruption_marker: u64,
    /// `flag::*` bits.
    pub flags: u64,
    /// The host clock's status.
    pub clock_status: VmClockStatus,
    /// `leap_second_smearing_hint` (0 strict, 1 noon-linear, 2 UTC-SLS):
    /// how the host would smear, should the guest want to; the page's time
    /// itself is never smeared.
    pub smearing_hint: Option<u8>,
    /// TAI - UTC in seconds, when the page carries it.
    pub tai_offset_sec: Option<i16>,
    /// Raw `leap_indicator`, when present.
    pub leap_indicator: Option<u8>,
    /// The counter's period and its max error rate, both in units of
    /// 2^-(64 + shift) s, with the shift; present when the page covers them.
    pub period: Option<CounterPeriod>,
    /// `time_sec` and `time_frac_sec` (units of 2^-64 s) at `counter_value`.
    pub time: Option<(u64, u64)>,
    /// `time_esterror_nanosec`, when present.
    pub time_esterror_ns: Option<u64>,
    /// `time_maxerror_nanosec`, when present.
    pub time_maxerror_ns: Option<u64>,
    /// `vm_generation_counter`, when present.
    pub vm_generation_counter: Option<u64>,
}

/// The counter calibration in a vmclock page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CounterPeriod {
    /// `counter_period_shift`.
    pub shift: u8,
    /// `counter_value`: the counter reading `time` refers to.
    pub counter_value: u64,
    /// `counter_period_frac_sec`.
    pub period_frac: u64,
    /// `counter_period_esterror_rate_frac_sec`.
    pub esterror_rate_frac: u64,
    /// `counter_period_maxerror_rate_frac_sec`.
    pub maxerror_rate_frac: u64,
}

fn le_u16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

impl VmClockPage {
    /// Parses a copy of the page. Validates the magic, version and size; a
    /// field is taken only when both the declared size and the bytes read
    /// cover it. An odd `seq_count` in the copy means it was taken during an
    /// update ([`VmClockError::Torn`]).
    pub fn parse(bytes: &[u8]) -> Result<Self, VmClockError> {
        if bytes.len() < VMCLOCK_MIN_SIZE {
            return Err(VmClockError::TooShort { len: bytes.len() });
        }
        let magic = le_u32(bytes, offset::MAGIC);
        if magic != VMCLOCK_MAGIC {
            return Err(VmClockError::BadMagic { found: magic });
        }
        let version = le_u16(bytes, offset::VERSION);
        if version != VMCLOCK_VERSION {
            return Err(VmClockError::UnsupportedVersion { found: version });
        }
        let size = le_u32(bytes, offset::SIZE);
        if (size as usize) < VMCLOCK_MIN_SIZE {
            return Err(VmClockError::BadSize { size });
        }
        let seq_count = le_u32(bytes, offset::SEQ_COUNT);
        if seq_count & 1 == 1 {
            return Err(VmClockError::Torn {
                first: seq_count,
                second: seq_count,
            });
        }
        let covered = bytes.len().min(size as usize);
        let has = |at: usize, len: usize| at + len <= covered;

        let period = has(offset::PERIOD_MAXERROR_RATE, 8).then(|| CounterPeriod {
            shift: bytes[offset::COUNTER_PERIOD_SHIFT],
            counter_value: le_u64(bytes, offset::COUNTER_VALUE),
            period_frac: le_u64(bytes, offset::COUNTER_PERIOD_FRAC_SEC),
            esterror_rate_frac: le_u64(bytes, offset::PERIOD_ESTERROR_RATE),
            maxerror_rate_frac: le_u64(bytes, offset::PERIOD_MAXERROR_RATE),
        });
        Ok(VmClockPage {
            size,
            counter_id: bytes[offset::COUNTER_ID],
            time_type: VmClockTimeType::from_raw(bytes[offset::TIME_TYPE]),
            seq_count,
            disruption_marker: le_u64(bytes, offset::DISRUPTION_MARKER),
            flags: le_u64(bytes, offset::FLAGS),
            clock_status: if has(offset::CLOCK_STATUS, 1) {
                VmClockStatus::from_raw(bytes[offset::CLOCK_STATUS])
            } else {
                VmClockStatus::Absent
            },
            smearing_hint: has(offset::SMEARING_HINT, 1).then(|| bytes[offset::SMEARING_HINT]),
            tai_offset_sec: has(offset::TAI_OFFSET_SEC, 2)
                .then(|| le_u16(bytes, offset::TAI_OFFSET_SEC).cast_signed()),
            leap_indicator: has(offset::LEAP_INDICATOR, 1).then(|| bytes[offset::LEAP_INDICATOR]),
            period,
            time: has(offset::TIME_FRAC_SEC, 8).then(|| {
                (
                    le_u64(bytes, offset::TIME_SEC),
                    le_u64(bytes, offset::TIME_FRAC_SEC),
                )
            }),
            time_esterror_ns: has(offset::TIME_ESTERROR_NS, 8)
                .then(|| le_u64(bytes, offset::TIME_ESTERROR_NS)),
            time_maxerror_ns: has(offset::TIME_MAXERROR_NS, 8)
                .then(|| le_u64(bytes, offset::TIME_MAXERROR_NS)),
            vm_generation_counter: has(offset::VM_GENERATION_COUNTER, 8)
                .then(|| le_u64(bytes, offset::VM_GENERATION_COUNTER)),
        })
    }

    /// The host's maximum error of the page's time at its reference point,
    /// in nanoseconds, when the page marks it valid.
    pub fn max_error_ns(&self) -> Option<u64> {
        (self.flags & flag::TIME_MAXERROR_VALID != 0)
            .then_some(self.time_maxerror_ns)
            .flatten()
    }

    /// The maximum error of the page's time `elapsed_ns` after its
    /// reference point: [`Self::max_error_ns`] plus the period's max error
    /// rate over that interval (rounded up). `None` when either part is not
    /// marked valid, since the growth could not be bounded.
    pub fn max_error_after_ns(&self, elapsed_ns: u64) -> Option<u64> {
        let base = self.max_error_ns()?;
        if self.flags & flag::PERIOD_MAXERROR_VALID == 0 {
            return None;
        }
        let p = self.period?;
        if p.period_frac == 0 {
            return None;
        }
        // Both are in units of 2^-(64+shift) s per tick, so their ratio is
        // the relative (dimensionless) error rate.
        let growth = (u128::from(elapsed_ns) * u128::from(p.maxerror_rate_frac))
            .div_ceil(u128::from(p.period_frac));
        Some(base.saturating_add(u64::try_from(growth).unwrap_or(u64::MAX)))
    }

    /// The leap-second announcement in the plugin API's terms: a pending
    /// insertion or deletion at the end of the month, else none. The page
    /// does not say which day, so the host must not act on it before the
    /// last day of the month.
    pub fn leap(&self) -> Leap {
        match self.leap_indicator {
            Some(1) => Leap::INSERT,
            Some(2) => Leap::DELETE,
            Some(_) => Leap::NONE,
            None => Leap::UNKNOWN,
        }
    }
}

/// Reads the vmclock device page. The driver copies it under its sequence
/// counter (retrying for up to 100 ms, then failing with ETIMEDOUT), so one
/// `pread` gives a consistent copy.
pub fn read_vmclock(path: &Path) -> Result<VmClockPage, PlatformError> {
    let file = File::open(path).map_err(|e| read_error(path, &e))?;
    let mut buf = vec![0u8; VMCLOCK_READ_SIZE];
    let mut len = 0;
    while len < buf.len() {
        match file.read_at(&mut buf[len..], len as u64) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(read_error(path, &e)),
        }
    }
    VmClockPage::parse(&buf[..len]).map_err(|source| PlatformError::VmClock {
        path: path.display().to_string(),
        source,
    })
}

/// What the latest disruption marker says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Disruption {
    /// The first marker seen: nothing to compare with yet.
    Baseline,
    /// The same marker as last time.
    Unchanged,
    /// The marker changed: the counter (and any calibration against it,
    /// including the daemon's frequency estimate) is no longer valid.
    Changed {
        /// The marker before.
        previous: u64,
        /// The marker now.
        current: u64,
    },
}

/// Follows a disruption marker across reads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DisruptionWatch {
    last: Option<u64>,
}

impl DisruptionWatch {
    /// Records `marker` and says how it relates to the previous one.
    pub fn observe(&mut self, marker: u64) -> Disruption {
        let previous = self.last.replace(marker);
        match previous {
            None => Disruption::Baseline,
            Some(p) if p == marker => Disruption::Unchanged,
            Some(p) => Disruption::Changed {
                previous: p,
                current: marker,
            },
        }
    }

    /// The last marker seen.
    pub fn marker(&self) -> Option<u64> {
        self.last
    }
}

/// How much a sample may be trusted, from the vmclock page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReferenceState {
    /// The host says its clock is synchronised.
    Synchronized,
    /// The host's clock runs free: usable with its (growing) error.
    FreeRunning,
    /// Not known yet (unknown, initialising, or no status in the page).
    Unknown,
    /// The host says the time must not be trusted.
    Unreliable,
}

/// Maps the page's status to a [`ReferenceState`].
pub fn reference_state(status: VmClockStatus) -> ReferenceState {
    match status {
        VmClockStatus::Synchronized => ReferenceState::Synchronized,
        VmClockStatus::FreeRunning => ReferenceState::FreeRunning,
        VmClockStatus::Unreliable => ReferenceState::Unreliable,
        VmClockStatus::Unknown
        | VmClockStatus::Initializing
        | VmClockStatus::Other(_)
        | VmClockStatus::Absent => ReferenceState::Unknown,
    }
}

/// The platform's view of one sample, ready for the plugin to report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlatformReport {
    /// The reference's own error bound against true time, in nanoseconds,
    /// when the platform publishes one.
    pub reference_error_ns: Option<u64>,
    /// The reference's state (`Synchronized` when only ENA is known).
    pub state: ReferenceState,
    /// Whether a disruption was detected since the previous sample.
    pub disrupted: bool,
}

/// Combines what was read for one sample: ENA's bound (if any), the
/// vmclock page (if any) with the time elapsed since its reference point,
/// and the disruption watch. With both, the larger error bound is kept.
pub fn assess(
    ena_bound_ns: Option<u32>,
    vmclock: Option<(&VmClockPage, u64)>,
    watch: &mut DisruptionWatch,
) -> PlatformReport {
    let mut report = PlatformReport {
        reference_error_ns: ena_bound_ns.map(u64::from),
        state: if ena_bound_ns.is_some() {
            ReferenceState::Synchronized
        } else {
            ReferenceState::Unknown
        },
        disrupted: false,
    };
    if let Some((page, elapsed_ns)) = vmclock {
        report.disrupted = matches!(
            watch.observe(page.disruption_marker),
            Disruption::Changed { .. }
        );
        let vm_state = reference_state(page.clock_status);
        // The vmclock page speaks for the host's time only when it carries
        // time; a disruption-only page (no counter, status unknown, as
        // qemu's device) leaves the state to the other source.
        if page.time.is_some() && page.counter_id != 0xff {
            report.state = vm_state;
            let vm_bound = page.max_error_after_ns(elapsed_ns);
            report.reference_error_ns = match (report.reference_error_ns, vm_bound) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            };
        } else if vm_state == ReferenceState::Unreliable {
            report.state = ReferenceState::Unreliable;
        }
    }
    report
}

/// Where the platform's view of the clock is read per sample, and the
/// disruption marker followed between samples: the plugin's I/O around
/// [`assess`].
#[derive(Clone, Debug, Default)]
pub struct Platform {
    /// The files read.
    pub sources: PlatformSources,
    watch: DisruptionWatch,
}

impl Platform {
    /// A platform reader for these sources.
    pub fn new(sources: PlatformSources) -> Self {
        Self {
            sources,
            watch: DisruptionWatch::default(),
        }
    }

    /// Reads the sources for a sample taken at `utc_ns` (the reference's
    /// time, UTC): ENA's bound, the vmclock page (with the time since its
    /// reference point) and the disruption marker. A source that cannot be
    /// read this time is left out (its error says why).
    pub fn read(&mut self, utc_ns: i128) -> (PlatformReport, Vec<PlatformError>) {
        let mut problems = Vec::new();
        let ena = self
            .sources
            .ena_error_bound
            .as_deref()
            .and_then(|p| read_ena_error_bound(p).map_err(|e| problems.push(e)).ok());
        let page = self
            .sources
            .vmclock
            .as_deref()
            .and_then(|p| read_vmclock(p).map_err(|e| problems.push(e)).ok());
        let vm = page
            .as_ref()
            .map(|page| (page, elapsed_since_page(page, utc_ns)));
        (assess(ena, vm, &mut self.watch), problems)
    }
}

/// Nanoseconds from the page's reference time to `utc_ns` (0 when the page
/// carries no time or the sample is older).
pub fn elapsed_since_page(page: &VmClockPage, utc_ns: i128) -> u64 {
    let Some((sec, frac)) = page.time else {
        return 0;
    };
    // frac is in units of 2^-64 s.
    let frac_ns = (u128::from(frac) * 1_000_000_000) >> 64;
    let mut page_ns = i128::from(sec) * 1_000_000_000 + i128::try_from(frac_ns).unwrap_or(0);
    if page.time_type == VmClockTimeType::Tai {
        page_ns -= i128::from(page.tai_offset_sec.unwrap_or(0)) * 1_000_000_000;
    }
    u64::try_from((utc_ns - page_ns).max(0)).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    /// Builds a vmclock page the way a hypervisor lays it out.
    #[derive(Clone)]
    struct PageBuilder {
        bytes: Vec<u8>,
    }

    impl PageBuilder {
        /// A full page: magic, size 4096, version 1, x86 TSC, UTC,
        /// status synchronised.
        fn new() -> Self {
            let mut b = PageBuilder {
                bytes: vec![0; VMCLOCK_READ_SIZE],
            };
            b.u32(offset::MAGIC, VMCLOCK_MAGIC)
                .u32(offset::SIZE, 4096)
                .u16(offset::VERSION, 1)
                .u8(offset::COUNTER_ID, 1)
                .u8(offset::TIME_TYPE, 0)
                .u32(offset::SEQ_COUNT, 10)
                .u64(offset::DISRUPTION_MARKER, 7)
                .u8(offset::CLOCK_STATUS, 2);
            b
        }
        fn u8(&mut self, at: usize, v: u8) -> &mut Self {
            self.bytes[at] = v;
            self
        }
        fn u16(&mut self, at: usize, v: u16) -> &mut Self {
            self.bytes[at..at + 2].copy_from_slice(&v.to_le_bytes());
            self
        }
        fn u32(&mut self, at: usize, v: u32) -> &mut Self {
            self.bytes[at..at + 4].copy_from_slice(&v.to_le_bytes());
            self
        }
        fn u64(&mut self, at: usize, v: u64) -> &mut Self {
            self.bytes[at..at + 8].copy_from_slice(&v.to_le_bytes());
            self
        }
        fn build(&self) -> Vec<u8> {
            self.bytes.clone()
        }
    }

    #[test]
    fn layout_offsets_match_the_kernel_header() {
        // struct vmclock_abi: 4+4+2+1+1+4 header, then u64 marker and flags,
        // 2 pad bytes, status, hint, i16 tai offset, leap, shift, then u64s.
        assert_eq!(offset::DISRUPTION_MARKER, 16);
        assert_eq!(offset::FLAGS, 24);
        assert_eq!(offset::CLOCK_STATUS, 34);
        assert_eq!(offset::TAI_OFFSET_SEC, 36);
        assert_eq!(offset::COUNTER_VALUE, 40);
        assert_eq!(offset::TIME_MAXERROR_NS, 96);
        assert_eq!(offset::VM_GENERATION_COUNTER + 8, 112);
        assert_eq!(offset::SMEARING_HINT, 35);
    }

    #[test]
    fn full_page_parses_every_field() {
        let mut b = PageBuilder::new();
        b.u64(
            offset::FLAGS,
            flag::TIME_MAXERROR_VALID | flag::TAI_OFFSET_VALID,
        )
        .u8(offset::SMEARING_HINT, 1)
        .u16(offset::TAI_OFFSET_SEC, 37)
        .u8(offset::LEAP_INDICATOR, 1)
        .u8(offset::COUNTER_PERIOD_SHIFT, 3)
        .u64(offset::COUNTER_VALUE, 123_456)
        .u64(offset::COUNTER_PERIOD_FRAC_SEC, 1 << 40)
        .u64(offset::PERIOD_MAXERROR_RATE, 1 << 20)
        .u64(offset::TIME_SEC, 1_700_000_000)
        .u64(offset::TIME_FRAC_SEC, 1 << 63)
        .u64(offset::TIME_ESTERROR_NS, 300)
        .u64(offset::TIME_MAXERROR_NS, 5_000)
        .u64(offset::VM_GENERATION_COUNTER, 99);
        let p = VmClockPage::parse(&b.build()).unwrap();
        assert_eq!(p.size, 4096);
        assert_eq!(p.counter_id, 1);
        assert_eq!(p.time_type, VmClockTimeType::Utc);
        assert_eq!(p.seq_count, 10);
        assert_eq!(p.disruption_marker, 7);
        assert_eq!(p.clock_status, VmClockStatus::Synchronized);
        assert_eq!(p.smearing_hint, Some(1));
        assert_eq!(p.tai_offset_sec, Some(37));
        assert_eq!(p.leap(), Leap::INSERT);
        let period = p.period.unwrap();
        assert_eq!(
            (period.shift, period.counter_value, period.period_frac),
            (3, 123_456, 1 << 40)
        );
        assert_eq!(p.time, Some((1_700_000_000, 1 << 63)));
        assert_eq!(p.time_esterror_ns, Some(300));
        assert_eq!(p.max_error_ns(), Some(5_000));
        assert_eq!(p.vm_generation_counter, Some(99));
    }

    #[test]
    fn negative_tai_offset_is_twos_complement() {
        let mut b = PageBuilder::new();
        b.u16(offset::TAI_OFFSET_SEC, (-2i16) as u16);
        assert_eq!(
            VmClockPage::parse(&b.build()).unwrap().tai_offset_sec,
            Some(-2)
        );
    }

    #[test]
    fn invalid_pages_are_rejected_with_the_reason() {
        assert_eq!(
            VmClockPage::parse(&[0; 31]),
            Err(VmClockError::TooShort { len: 31 })
        );
        let mut b = PageBuilder::new();
        b.u32(offset::MAGIC, 0xdead_beef);
        assert_eq!(
            VmClockPage::parse(&b.build()),
            Err(VmClockError::BadMagic { found: 0xdead_beef })
        );
        let mut b = PageBuilder::new();
        b.u16(offset::VERSION, 2);
        let e = VmClockPage::parse(&b.build()).unwrap_err();
        assert_eq!(e, VmClockError::UnsupportedVersion { found: 2 });
        assert!(e.to_string().contains("version 2"), "{e}");
        let mut b = PageBuilder::new();
        b.u32(offset::SIZE, 16);
        assert_eq!(
            VmClockPage::parse(&b.build()),
            Err(VmClockError::BadSize { size: 16 })
        );
        // Big-endian magic is not accepted: the ABI is little-endian.
        let mut b = PageBuilder::new();
        b.bytes[0..4].copy_from_slice(&VMCLOCK_MAGIC.to_be_bytes());
        assert!(matches!(
            VmClockPage::parse(&b.build()),
            Err(VmClockError::BadMagic { .. })
        ));
    }

    #[test]
    fn odd_seq_count_in_the_copy_is_torn() {
        let mut b = PageBuilder::new();
        b.u32(offset::SEQ_COUNT, 11);
        let e = VmClockPage::parse(&b.build()).unwrap_err();
        assert!(e.is_transient());
        assert!(matches!(e, VmClockError::Torn { first: 11, .. }));
    }

    #[test]
    fn short_pages_leave_later_fields_absent() {
        // Declared size 32: only the header and flags.
        let mut b = PageBuilder::new();
        b.u32(offset::SIZE, 32)
            .u64(offset::FLAGS, flag::TIME_MAXERROR_VALID)
            .u64(offset::TIME_MAXERROR_NS, 5);
        let p = VmClockPage::parse(&b.build()).unwrap();
        assert_eq!(p.clock_status, VmClockStatus::Absent);
        assert_eq!(p.period, None);
        assert_eq!(p.time, None);
        assert_eq!(p.max_error_ns(), None, "declared size does not cover it");
        assert_eq!(p.leap(), Leap::UNKNOWN);

        // Size 104 (before vm_generation_counter existed): no generation.
        let mut b = PageBuilder::new();
        b.u32(offset::SIZE, 104)
            .u64(offset::VM_GENERATION_COUNTER, 5);
        let p = VmClockPage::parse(&b.build()).unwrap();
        assert!(p.time_maxerror_ns.is_some());
        assert_eq!(p.vm_generation_counter, None);

        // Fewer bytes read than declared: only what was read counts.
        let b = PageBuilder::new();
        let p = VmClockPage::parse(&b.build()[..40]).unwrap();
        assert_eq!(p.clock_status, VmClockStatus::Synchronized);
        assert_eq!(p.period, None);
    }

    #[test]
    fn max_error_needs_its_valid_flag() {
        let mut b = PageBuilder::new();
        b.u64(offset::TIME_MAXERROR_NS, 5_000);
        let p = VmClockPage::parse(&b.build()).unwrap();
        assert_eq!(p.time_maxerror_ns, Some(5_000));
        assert_eq!(p.max_error_ns(), None);
    }

    #[test]
    fn max_error_grows_with_the_period_error_rate() {
        // Period 1 ns in units of 2^-(64+0) s is 2^64/1e9; use a round
        // ratio instead: maxerror rate = period / 1e6, i.e. 1 ppm.
        let period: u64 = 1_000_000 << 20;
        let mut b = PageBuilder::new();
        b.u64(
            offset::FLAGS,
            flag::TIME_MAXERROR_VALID | flag::PERIOD_MAXERROR_VALID,
        )
        .u64(offset::COUNTER_PERIOD_FRAC_SEC, period)
        .u64(offset::PERIOD_MAXERROR_RATE, period / 1_000_000)
        .u64(offset::TIME_MAXERROR_NS, 1_000);
        let p = VmClockPage::parse(&b.build()).unwrap();
        assert_eq!(p.max_error_after_ns(0), Some(1_000));
        // 1 s at 1 ppm: 1000 ns more.
        assert_eq!(p.max_error_after_ns(1_000_000_000), Some(2_000));
        // Rounded up: 1 ns at 1 ppm is a fraction of a nanosecond -> 1.
        assert_eq!(p.max_error_after_ns(1), Some(1_001));
        // Huge intervals saturate instead of wrapping.
        let mut b2 = b.clone();
        b2.u64(offset::PERIOD_MAXERROR_RATE, u64::MAX)
            .u64(offset::COUNTER_PERIOD_FRAC_SEC, 1);
        let p2 = VmClockPage::parse(&b2.build()).unwrap();
        assert_eq!(p2.max_error_after_ns(u64::MAX), Some(u64::MAX));
        // Without the period flag the growth is unknown.
        b.u64(offset::FLAGS, flag::TIME_MAXERROR_VALID);
        let p = VmClockPage::parse(&b.build()).unwrap();
        assert_eq!(p.max_error_ns(), Some(1_000));
        assert_eq!(p.max_error_after_ns(5), None);
    }

    #[test]
    fn seq_read_judges_two_counter_reads() {
        assert_eq!(seq_read(4, 4), SeqRead::Consistent);
        assert_eq!(seq_read(5, 5), SeqRead::WriterActive);
        assert_eq!(seq_read(5, 6), SeqRead::WriterActive);
        assert_eq!(seq_read(4, 6), SeqRead::Changed);
        assert_eq!(seq_read(4, 5), SeqRead::Changed);
        assert_eq!(seq_read(u32::MAX - 1, u32::MAX - 1), SeqRead::Consistent);
        assert_eq!(seq_read(u32::MAX - 1, 0), SeqRead::Changed);
    }

    #[test]
    fn seq_read_retry_loop_over_a_changing_page() {
        // A reader loop built on seq_read, over a fake writer that is
        // mid-update on the first attempt and moves on the second.
        let counters = [(7u32, 8u32), (8, 10), (10, 10)];
        let mut attempts = 0;
        let result = counters.iter().find(|(a, b)| {
            attempts += 1;
            seq_read(*a, *b) == SeqRead::Consistent
        });
        assert_eq!(result, Some(&(10, 10)));
        assert_eq!(attempts, 3);
    }

    #[test]
    fn disruption_watch_reports_changes_only() {
        let mut w = DisruptionWatch::default();
        assert_eq!(w.marker(), None);
        assert_eq!(w.observe(7), Disruption::Baseline);
        assert_eq!(w.observe(7), Disruption::Unchanged);
        assert_eq!(
            w.observe(9),
            Disruption::Changed {
                previous: 7,
                current: 9
            }
        );
        assert_eq!(w.observe(9), Disruption::Unchanged);
        assert_eq!(w.marker(), Some(9));
        // Any change counts, also a smaller value (the ABI promises only
        // "another non-repeating value").
        assert!(matches!(w.observe(1), Disruption::Changed { .. }));
    }

    #[test]
    fn status_values_map_to_reference_states() {
        let cases = [
            (0u8, ReferenceState::Unknown),
            (1, ReferenceState::Unknown),
            (2, ReferenceState::Synchronized),
            (3, ReferenceState::FreeRunning),
            (4, ReferenceState::Unreliable),
            (9, ReferenceState::Unknown),
        ];
        for (raw, want) in cases {
            let mut b = PageBuilder::new();
            b.u8(offset::CLOCK_STATUS, raw);
            let p = VmClockPage::parse(&b.build()).unwrap();
            assert_eq!(reference_state(p.clock_status), want, "status {raw}");
        }
    }

    #[test]
    fn leap_indicator_values() {
        for (raw, want) in [
            (0u8, Leap::NONE),
            (1, Leap::INSERT),
            (2, Leap::DELETE),
            (3, Leap::NONE),
            (4, Leap::NONE),
            (5, Leap::NONE),
        ] {
            let mut b = PageBuilder::new();
            b.u8(offset::LEAP_INDICATOR, raw);
            assert_eq!(VmClockPage::parse(&b.build()).unwrap().leap(), want);
        }
    }

    /// A page as qemu's `-device vmclock` writes it: no counter, status
    /// unknown, only the disruption marker.
    fn qemu_page(marker: u64) -> VmClockPage {
        let mut b = PageBuilder::new();
        b.u8(offset::COUNTER_ID, 0xff)
            .u8(offset::CLOCK_STATUS, 0)
            .u64(offset::DISRUPTION_MARKER, marker);
        let p = VmClockPage::parse(&b.build()).unwrap();
        // qemu leaves the time fields zero, but the page covers them.
        assert_eq!(p.time, Some((0, 0)));
        p
    }

    /// The first 32 bytes of `/dev/vmclock0` as read (`dd bs=4096 count=1`)
    /// in a qemu 10.0.2 guest with `-device vmclock`, Debian's 7.3.4 kernel
    /// (trixie-backports) and its `ptp_vmclock` module; the rest of the page
    /// was zero. After a migration the marker read 2.
    const QEMU_PAGE_HEAD: [u8; 32] = [
        0x56, 0x43, 0x4c, 0x4b, 0x00, 0x10, 0x00, 0x00, 0x01, 0x00, 0xff, 0x00, 0x02, 0x00, 0x00,
        0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00,
    ];

    #[test]
    fn parses_the_page_qemu_exposes() {
        let mut page = vec![0u8; VMCLOCK_READ_SIZE];
        page[..32].copy_from_slice(&QEMU_PAGE_HEAD);
        let p = VmClockPage::parse(&page).unwrap();
        assert_eq!(p.size, 4096);
        assert_eq!(p.counter_id, 0xff, "no counter: disruption marker only");
        assert_eq!(p.time_type, VmClockTimeType::Utc);
        assert_eq!(p.seq_count, 2);
        assert_eq!(p.disruption_marker, 1);
        assert_eq!(p.flags, 0);
        assert_eq!(p.clock_status, VmClockStatus::Unknown);
        assert_eq!(p.max_error_ns(), None);
        let mut w = DisruptionWatch::default();
        let r = assess(None, Some((&p, 0)), &mut w);
        assert_eq!(r.state, ReferenceState::Unknown);
        assert_eq!(r.reference_error_ns, None);
        // The same guest after a migration.
        page[16] = 2;
        let after = VmClockPage::parse(&page).unwrap();
        assert!(assess(None, Some((&after, 0)), &mut w).disrupted);
    }

    #[test]
    fn assess_ena_only() {
        let mut w = DisruptionWatch::default();
        let r = assess(Some(25_000), None, &mut w);
        assert_eq!(r.reference_error_ns, Some(25_000));
        assert_eq!(r.state, ReferenceState::Synchronized);
        assert!(!r.disrupted);
        let r = assess(None, None, &mut w);
        assert_eq!(r.reference_error_ns, None);
        assert_eq!(r.state, ReferenceState::Unknown);
    }

    #[test]
    fn assess_disruption_only_page_keeps_the_ena_bound() {
        let mut w = DisruptionWatch::default();
        let r = assess(Some(25_000), Some((&qemu_page(1), 0)), &mut w);
        assert_eq!(r.reference_error_ns, Some(25_000));
        assert_eq!(r.state, ReferenceState::Synchronized);
        assert!(!r.disrupted, "first marker is the baseline");
        let r = assess(Some(25_000), Some((&qemu_page(1), 0)), &mut w);
        assert!(!r.disrupted);
        let r = assess(Some(25_000), Some((&qemu_page(2), 0)), &mut w);
        assert!(r.disrupted, "marker 1 -> 2 after a migration");
        let r = assess(Some(25_000), Some((&qemu_page(2), 0)), &mut w);
        assert!(!r.disrupted, "reported once");
    }

    #[test]
    fn assess_timed_page_takes_the_larger_bound_and_its_status() {
        let period: u64 = 1_000_000 << 20;
        let mut b = PageBuilder::new();
        b.u64(
            offset::FLAGS,
            flag::TIME_MAXERROR_VALID | flag::PERIOD_MAXERROR_VALID,
        )
        .u64(offset::COUNTER_PERIOD_FRAC_SEC, period)
        .u64(offset::PERIOD_MAXERROR_RATE, period / 1_000_000)
        .u64(offset::TIME_MAXERROR_NS, 30_000)
        .u8(offset::CLOCK_STATUS, 3);
        let page = VmClockPage::parse(&b.build()).unwrap();
        let mut w = DisruptionWatch::default();
        let r = assess(Some(25_000), Some((&page, 2_000_000_000)), &mut w);
        assert_eq!(r.reference_error_ns, Some(32_000));
        assert_eq!(r.state, ReferenceState::FreeRunning);
        let r = assess(Some(40_000), Some((&page, 0)), &mut w);
        assert_eq!(r.reference_error_ns, Some(40_000));
        let r = assess(None, Some((&page, 0)), &mut w);
        assert_eq!(r.reference_error_ns, Some(30_000));
    }

    #[test]
    fn assess_unreliable_even_without_time() {
        let mut b = PageBuilder::new();
        b.u8(offset::COUNTER_ID, 0xff).u8(offset::CLOCK_STATUS, 4);
        let page = VmClockPage::parse(&b.build()).unwrap();
        let r = assess(Some(1), Some((&page, 0)), &mut DisruptionWatch::default());
        assert_eq!(r.state, ReferenceState::Unreliable);
    }

    #[test]
    fn platform_reads_ena_and_vmclock_and_follows_the_marker() {
        let (_root, sys, dev) = fake_tree("ptp0", Some("25000\n"));
        let mut page = PageBuilder::new();
        fs::write(dev.join("vmclock0"), page.build()).unwrap();
        let sources = find_sources(&sys, &dev, "ptp0", Some("ena-ptp-05"));
        assert!(sources.vmclock.is_some() && sources.ena_error_bound.is_some());
        let mut p = Platform::new(sources);
        let (r, problems) = p.read(0);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(r.reference_error_ns, Some(25_000));
        assert!(!r.disrupted, "the first marker is a baseline");
        assert!(!p.read(0).0.disrupted);
        // A live migration: the marker changes, once.
        page.u64(offset::DISRUPTION_MARKER, 8);
        fs::write(dev.join("vmclock0"), page.build()).unwrap();
        assert!(p.read(0).0.disrupted);
        assert!(!p.read(0).0.disrupted);
        // ENA busy: the bound is left out this time, with the reason.
        fs::remove_file(
            sys.join("devices/pci0000:00/0000:00:05.0")
                .join(ENA_ERROR_BOUND_FILE),
        )
        .unwrap();
        let (r, problems) = p.read(0);
        assert_eq!(r.reference_error_ns, None);
        assert_eq!(problems.len(), 1, "{problems:?}");
    }

    #[test]
    fn elapsed_since_the_page_time() {
        let mut b = PageBuilder::new();
        // 1000 s and a half (frac 2^63 units of 2^-64 s).
        b.u64(offset::TIME_SEC, 1000)
            .u64(offset::TIME_FRAC_SEC, 1 << 63);
        let page = VmClockPage::parse(&b.build()).unwrap();
        assert_eq!(elapsed_since_page(&page, 1_000_500_000_000 + 250), 250);
        assert_eq!(elapsed_since_page(&page, 0), 0, "an older sample");
        // TAI page: its time is TAI-UTC ahead.
        b.u8(offset::TIME_TYPE, 1)
            .u16(offset::TAI_OFFSET_SEC, 37)
            .u64(offset::FLAGS, flag::TAI_OFFSET_VALID);
        let page = VmClockPage::parse(&b.build()).unwrap();
        assert_eq!(elapsed_since_page(&page, 963_500_000_000 + 7), 7);
        let page = VmClockPage::parse(&PageBuilder::new().build()).unwrap();
        assert_eq!(elapsed_since_page(&page, 5), 5, "time 0: since the epoch");
    }

    #[test]
    fn vmclock_index_from_clock_name() {
        assert_eq!(vmclock_index("vmclock0"), Some(0));
        assert_eq!(vmclock_index("vmclock12"), Some(12));
        assert_eq!(vmclock_index("vmclock"), None);
        assert_eq!(vmclock_index("vmclock1a"), None);
        assert_eq!(vmclock_index("ena-ptp-05"), None);
        assert_eq!(vmclock_index("vmclock+1"), None);
    }

    /// A fake sysfs/dev tree: `class/ptp/<ptp>/device -> ../../../devices/pci/<slot>`.
    fn fake_tree(ptp: &str, with_bound: Option<&str>) -> (tempfile::TempDir, PathBuf, PathBuf) {
        let root = tempfile::tempdir().unwrap();
        let sys = root.path().join("sys");
        let dev = root.path().join("dev");
        fs::create_dir_all(&dev).unwrap();
        let pci = sys.join("devices/pci0000:00/0000:00:05.0");
        fs::create_dir_all(&pci).unwrap();
        let class = sys.join("class/ptp").join(ptp);
        fs::create_dir_all(&class).unwrap();
        std::os::unix::fs::symlink(&pci, class.join("device")).unwrap();
        if let Some(text) = with_bound {
            fs::write(pci.join(ENA_ERROR_BOUND_FILE), text).unwrap();
        }
        (root, sys, dev)
    }

    #[test]
    fn ena_bound_found_through_the_device_link_and_read() {
        let (_root, sys, dev) = fake_tree("ptp0", Some("25000\n"));
        let s = find_sources(&sys, &dev, "ptp0", Some("ena-ptp-05"));
        let path = s.ena_error_bound.clone().unwrap();
        assert!(path.ends_with("class/ptp/ptp0/device/phc_error_bound"));
        assert_eq!(s.vmclock, None);
        assert!(!s.is_empty());
        assert_eq!(read_ena_error_bound(&path), Ok(25_000));
    }

    #[test]
    fn no_platform_sources_on_a_plain_phc() {
        let (_root, sys, dev) = fake_tree("ptp1", None);
        let s = find_sources(&sys, &dev, "ptp1", Some("igb"));
        assert!(s.is_empty(), "{s:?}");
        // A clock that sysfs does not list at all.
        assert!(find_sources(&sys, &dev, "ptp9", None).is_empty());
    }

    #[test]
    fn vmclock_device_found_by_clock_name_or_default() {
        let (_root, sys, dev) = fake_tree("ptp2", None);
        fs::write(dev.join("vmclock1"), b"").unwrap();
        let s = find_sources(&sys, &dev, "ptp2", Some("vmclock1"));
        assert_eq!(s.vmclock, Some(dev.join("vmclock1")));
        // A vmclockN PHC whose device node is missing (page < 4 KiB).
        let s = find_sources(&sys, &dev, "ptp2", Some("vmclock3"));
        assert_eq!(s.vmclock, None);
        // Any other PHC picks up the VM-wide vmclock0 when present.
        assert_eq!(find_sources(&sys, &dev, "ptp2", Some("igb")).vmclock, None);
        fs::write(dev.join("vmclock0"), b"").unwrap();
        assert_eq!(
            find_sources(&sys, &dev, "ptp2", Some("KVM virtual PTP")).vmclock,
            Some(dev.join("vmclock0"))
        );
    }

    #[test]
    fn ena_bound_parsing() {
        let p = Path::new("/sys/x/phc_error_bound");
        assert_eq!(parse_ena_error_bound(p, "0\n"), Ok(0));
        assert_eq!(parse_ena_error_bound(p, " 4294967295 \n"), Ok(u32::MAX));
        for bad in ["", "\n", "-1\n", "12 34", "4294967296", "1e3", "0x10"] {
            let e = parse_ena_error_bound(p, bad).unwrap_err();
            assert!(matches!(e, PlatformError::EnaMalformed { .. }), "{bad:?}");
            let msg = e.to_string();
            assert!(
                msg.contains("/sys/x/phc_error_bound") && msg.contains("nanoseconds"),
                "{msg}"
            );
        }
    }

    #[test]
    fn ena_read_errors_map_by_errno() {
        let p = Path::new("/sys/x/phc_error_bound");
        let err = |n| read_error(p, &io::Error::from_raw_os_error(n));
        assert!(matches!(err(libc::EBUSY), PlatformError::EnaBusy { .. }));
        assert!(err(libc::EBUSY).is_transient());
        let inactive = err(libc::EOPNOTSUPP);
        assert!(matches!(inactive, PlatformError::EnaInactive { .. }));
        assert!(!inactive.is_transient());
        assert!(inactive.to_string().contains("phc_enable"), "{inactive}");
        assert!(matches!(err(libc::ENOENT), PlatformError::Missing { .. }));
        assert!(matches!(err(libc::ENODEV), PlatformError::Missing { .. }));
        assert!(matches!(err(libc::EACCES), PlatformError::Denied { .. }));
        assert!(matches!(err(libc::EIO), PlatformError::Io { .. }));
        assert!(err(libc::EIO).is_transient());
    }

    #[test]
    fn ena_missing_file_is_reported_with_its_path() {
        let (_root, sys, _dev) = fake_tree("ptp0", None);
        let path = sys.join("class/ptp/ptp0/device/phc_error_bound");
        let e = read_ena_error_bound(&path).unwrap_err();
        assert!(matches!(e, PlatformError::Missing { .. }), "{e}");
        assert!(e.to_string().contains("phc_error_bound"), "{e}");
    }

    #[test]
    fn unreadable_ena_file_is_denied_unless_root() {
        let (_root, sys, _dev) = fake_tree("ptp0", Some("10\n"));
        let path = sys.join("class/ptp/ptp0/device/phc_error_bound");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o000)).unwrap();
        match read_ena_error_bound(&path) {
            // root ignores file modes (CAP_DAC_OVERRIDE).
            Ok(v) => assert_eq!(v, 10),
            Err(e) => assert!(matches!(e, PlatformError::Denied { .. }), "{e}"),
        }
    }

    #[test]
    fn vmclock_read_from_a_fake_device_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vmclock0");
        let mut b = PageBuilder::new();
        b.u64(offset::DISRUPTION_MARKER, 42);
        fs::write(&path, b.build()).unwrap();
        let page = read_vmclock(&path).unwrap();
        assert_eq!(page.disruption_marker, 42);

        // A short file (a page that declares only its header) still parses.
        fs::write(&path, &b.build()[..64]).unwrap();
        assert_eq!(read_vmclock(&path).unwrap().disruption_marker, 42);

        // A torn copy is transient; garbage is not.
        b.u32(offset::SEQ_COUNT, 3);
        fs::write(&path, b.build()).unwrap();
        let e = read_vmclock(&path).unwrap_err();
        assert!(e.is_transient(), "{e}");
        fs::write(&path, [0u8; 64]).unwrap();
        let e = read_vmclock(&path).unwrap_err();
        assert!(!e.is_transient());
        assert!(e.to_string().contains("not a vmclock page"), "{e}");
        assert!(e.to_string().contains("vmclock0"), "{e}");

        let e = read_vmclock(&dir.path().join("vmclock9")).unwrap_err();
        assert!(matches!(e, PlatformError::Missing { .. }), "{e}");
    }
}
