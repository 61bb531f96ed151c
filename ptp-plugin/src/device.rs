//! The device layer as a small trait, so that detection, fallbacks, error
//! mapping and sample processing run against scripted fakes in tests.
//!
//! [`PhcDevice`] speaks plain Rust values ([`Caps`], [`RawBatch`], [`Errno`]);
//! the conversions from the kernel's structs are pure functions here, and
//! [`crate::sys::Phc`] is the one real implementation.

use std::fmt;

use ptp_time::ptp::{
    PTP_MAX_SAMPLES, ptp_clock_caps, ptp_clock_time, ptp_sys_offset, ptp_sys_offset_extended,
    ptp_sys_offset_precise,
};

use crate::sys::Phc;

/// An errno value from a failed device call.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Errno(pub i32);

impl Errno {
    /// The symbolic name (`ENODEV`) of the values this crate reacts to, else
    /// `errno N`.
    pub fn name(self) -> String {
        let name = match self.0 {
            libc::ENODEV => "ENODEV",
            libc::ENOENT => "ENOENT",
            libc::EIO => "EIO",
            libc::ENXIO => "ENXIO",
            libc::EINTR => "EINTR",
            libc::EAGAIN => "EAGAIN",
            libc::EBUSY => "EBUSY",
            libc::ETIMEDOUT => "ETIMEDOUT",
            libc::EMFILE => "EMFILE",
            libc::ENFILE => "ENFILE",
            libc::ENOMEM => "ENOMEM",
            libc::EACCES => "EACCES",
            libc::EPERM => "EPERM",
            libc::EOPNOTSUPP => "EOPNOTSUPP",
            libc::ENOTTY => "ENOTTY",
            libc::EINVAL => "EINVAL",
            libc::ENOSYS => "ENOSYS",
            libc::EFAULT => "EFAULT",
            libc::EISDIR => "EISDIR",
            n => return format!("errno {n}"),
        };
        name.to_owned()
    }

    /// What the errno means for the caller.
    pub fn class(self) -> ErrnoClass {
        match self.0 {
            libc::ENODEV | libc::ENOENT | libc::EIO | libc::ENXIO => ErrnoClass::Gone,
            libc::EINTR
            | libc::EAGAIN
            | libc::EBUSY
            | libc::ETIMEDOUT
            | libc::EMFILE
            | libc::ENFILE
            | libc::ENOMEM => ErrnoClass::Retry,
            libc::EACCES | libc::EPERM => ErrnoClass::Denied,
            libc::EOPNOTSUPP | libc::ENOTTY | libc::EINVAL | libc::ENOSYS => {
                ErrnoClass::Unsupported
            }
            _ => ErrnoClass::Other,
        }
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

impl fmt::Debug for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// How an errno is handled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrnoClass {
    /// The device is gone or broken (ENODEV, ENOENT, EIO, ENXIO): unavailable.
    Gone,
    /// Try again later (EINTR, EAGAIN, EBUSY, ETIMEDOUT; EMFILE, ENFILE,
    /// ENOMEM when out of descriptors or memory): transient.
    Retry,
    /// No permission (EACCES, EPERM): a configuration error.
    Denied,
    /// The driver does not offer this request (EOPNOTSUPP, ENOTTY, EINVAL,
    /// ENOSYS).
    Unsupported,
    /// Anything else.
    Other,
}

/// The capabilities this crate uses from `PTP_CLOCK_GETCAPS`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Caps {
    /// Maximum frequency adjustment, ppb.
    pub max_adj_ppb: i32,
    /// Whether the driver offers hardware cross-timestamps (PRECISE).
    pub cross_timestamping: bool,
}

impl From<&ptp_clock_caps> for Caps {
    fn from(c: &ptp_clock_caps) -> Self {
        Self {
            max_adj_ppb: c.max_adj,
            cross_timestamping: c.cross_timestamping != 0,
        }
    }
}

/// A kernel timestamp: seconds and nanoseconds, as the kernel gave them
/// (not yet validated).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Stamp {
    /// Seconds.
    pub sec: i64,
    /// Nanoseconds; valid values are below 1e9.
    pub nsec: u32,
}

impl Stamp {
    /// A timestamp from seconds and nanoseconds.
    pub const fn new(sec: i64, nsec: u32) -> Self {
        Self { sec, nsec }
    }
}

impl From<&ptp_clock_time> for Stamp {
    fn from(t: &ptp_clock_time) -> Self {
        Self {
            sec: t.sec,
            nsec: t.nsec,
        }
    }
}

/// One bracketed reading: system clock, PHC, system clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bracket {
    /// CLOCK_REALTIME just before the PHC read.
    pub before: Stamp,
    /// The PHC.
    pub phc: Stamp,
    /// CLOCK_REALTIME just after the PHC read.
    pub after: Stamp,
}

/// The raw result of one read request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RawBatch {
    /// A hardware cross-timestamp: PHC and CLOCK_REALTIME at one instant.
    Precise {
        /// The PHC.
        phc: Stamp,
        /// CLOCK_REALTIME at the same instant.
        system: Stamp,
    },
    /// Bracketed readings, in the order the kernel took them.
    Bracketed(Vec<Bracket>),
}

impl From<&ptp_sys_offset_precise> for RawBatch {
    fn from(p: &ptp_sys_offset_precise) -> Self {
        RawBatch::Precise {
            phc: (&p.device).into(),
            system: (&p.sys_realtime).into(),
        }
    }
}

/// The readings of a `PTP_SYS_OFFSET_EXTENDED` answer: `ts[i]` is
/// `[system, phc, system]`. Takes no more than was requested, than the
/// kernel says it filled, or than the array holds.
pub fn extended_readings(r: &ptp_sys_offset_extended, requested: u32) -> RawBatch {
    let n = requested.min(r.n_samples).min(PTP_MAX_SAMPLES) as usize;
    RawBatch::Bracketed(
        r.ts[..n]
            .iter()
            .map(|t| Bracket {
                before: (&t[0]).into(),
                phc: (&t[1]).into(),
                after: (&t[2]).into(),
            })
            .collect(),
    )
}

/// The readings of a `PTP_SYS_OFFSET` answer: `ts` interleaves
/// `system, phc, system, phc, ..., system` (2n + 1 stamps), so reading `i`
/// is `ts[2i], ts[2i+1], ts[2i+2]` and neighbours share a system stamp.
pub fn standard_readings(r: &ptp_sys_offset, requested: u32) -> RawBatch {
    let n = requested.min(r.n_samples).min(PTP_MAX_SAMPLES) as usize;
    RawBatch::Bracketed(
        (0..n)
            .map(|i| Bracket {
                before: (&r.ts[2 * i]).into(),
                phc: (&r.ts[2 * i + 1]).into(),
                after: (&r.ts[2 * i + 2]).into(),
            })
            .collect(),
    )
}

/// The reading requests of a PTP hardware clock.
pub trait PhcDevice: Send {
    /// `PTP_CLOCK_GETCAPS`.
    fn caps(&mut self) -> Result<Caps, Errno>;
    /// `PTP_SYS_OFFSET_PRECISE`.
    fn precise(&mut self) -> Result<RawBatch, Errno>;
    /// `PTP_SYS_OFFSET_EXTENDED` with `n` readings.
    fn extended(&mut self, n: u32) -> Result<RawBatch, Errno>;
    /// `PTP_SYS_OFFSET` with `n` readings.
    fn standard(&mut self, n: u32) -> Result<RawBatch, Errno>;
}

impl PhcDevice for Phc {
    fn caps(&mut self) -> Result<Caps, Errno> {
        Phc::caps(self).map(|c| Caps::from(&c)).map_err(Errno)
    }

    fn precise(&mut self) -> Result<RawBatch, Errno> {
        Phc::precise(self)
            .map(|p| RawBatch::from(&p))
            .map_err(Errno)
    }

    fn extended(&mut self, n: u32) -> Result<RawBatch, Errno> {
        Phc::extended(self, n)
            .map(|r| extended_readings(&r, n))
            .map_err(Errno)
    }

    fn standard(&mut self, n: u32) -> Result<RawBatch, Errno> {
        Phc::standard(self, n)
            .map(|r| standard_readings(&r, n))
            .map_err(Errno)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(sec: i64, nsec: u32) -> ptp_clock_time {
        ptp_clock_time {
            sec,
            nsec,
            reserved: 0,
        }
    }

    #[test]
    fn standard_layout_is_interleaved() {
        let mut r = ptp_sys_offset {
            n_samples: 2,
            ..Default::default()
        };
        r.ts[0] = t(10, 100);
        r.ts[1] = t(47, 150);
        r.ts[2] = t(10, 200);
        r.ts[3] = t(47, 260);
        r.ts[4] = t(10, 310);
        let RawBatch::Bracketed(b) = standard_readings(&r, 2) else {
            panic!("bracketed expected")
        };
        assert_eq!(b.len(), 2);
        assert_eq!(b[0].before, Stamp::new(10, 100));
        assert_eq!(b[0].phc, Stamp::new(47, 150));
        assert_eq!(b[0].after, Stamp::new(10, 200));
        assert_eq!(b[1].before, Stamp::new(10, 200));
        assert_eq!(b[1].phc, Stamp::new(47, 260));
        assert_eq!(b[1].after, Stamp::new(10, 310));
    }

    #[test]
    fn extended_layout_is_triples() {
        let mut r = ptp_sys_offset_extended {
            n_samples: 3,
            ..Default::default()
        };
        for i in 0..3 {
            r.ts[i] = [t(5, i as u32), t(6, 10 + i as u32), t(5, 20 + i as u32)];
        }
        let RawBatch::Bracketed(b) = extended_readings(&r, 3) else {
            panic!("bracketed expected")
        };
        assert_eq!(b.len(), 3);
        assert_eq!(
            b[2],
            Bracket {
                before: Stamp::new(5, 2),
                phc: Stamp::new(6, 12),
                after: Stamp::new(5, 22)
            }
        );
    }

    #[test]
    fn reading_counts_never_exceed_request_answer_or_array() {
        let r = ptp_sys_offset_extended {
            n_samples: 0,
            ..Default::default()
        };
        assert_eq!(extended_readings(&r, 10), RawBatch::Bracketed(vec![]));
        let r = ptp_sys_offset_extended {
            n_samples: 99,
            ..Default::default()
        };
        let RawBatch::Bracketed(b) = extended_readings(&r, 99) else {
            panic!()
        };
        assert_eq!(b.len(), 25);
        let r = ptp_sys_offset {
            n_samples: 99,
            ..Default::default()
        };
        let RawBatch::Bracketed(b) = standard_readings(&r, 4) else {
            panic!()
        };
        assert_eq!(b.len(), 4);
        let RawBatch::Bracketed(b) = standard_readings(&r, 60) else {
            panic!()
        };
        assert_eq!(b.len(), 25, "never past ts[50]");
    }

    #[test]
    fn precise_uses_device_and_realtime_not_monoraw() {
        let p = ptp_sys_offset_precise {
            device: t(100, 1),
            sys_realtime: t(63, 2),
            sys_monoraw: t(7, 3),
            rsv: [0; 4],
        };
        assert_eq!(
            RawBatch::from(&p),
            RawBatch::Precise {
                phc: Stamp::new(100, 1),
                system: Stamp::new(63, 2)
            }
        );
    }

    #[test]
    fn errno_classes() {
        for e in [libc::ENODEV, libc::ENOENT, libc::EIO, libc::ENXIO] {
            assert_eq!(Errno(e).class(), ErrnoClass::Gone, "{e}");
        }
        for e in [
            libc::EINTR,
            libc::EAGAIN,
            libc::EBUSY,
            libc::ETIMEDOUT,
            libc::EMFILE,
        ] {
            assert_eq!(Errno(e).class(), ErrnoClass::Retry, "{e}");
        }
        for e in [libc::EACCES, libc::EPERM] {
            assert_eq!(Errno(e).class(), ErrnoClass::Denied, "{e}");
        }
        for e in [libc::EOPNOTSUPP, libc::ENOTTY, libc::EINVAL] {
            assert_eq!(Errno(e).class(), ErrnoClass::Unsupported, "{e}");
        }
        assert_eq!(Errno(libc::EFAULT).class(), ErrnoClass::Other);
        assert_eq!(Errno(libc::ENODEV).to_string(), "ENODEV");
        assert_eq!(Errno(9999).to_string(), "errno 9999");
    }
}
