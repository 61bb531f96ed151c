//! Every line of `unsafe` in this crate: the PHC ioctls on our own file
//! descriptor, the ethtool query for an interface's PHC index, and a
//! read-only `adjtimex`.
//!
//! ptp-time 0.1.0 supplies the kernel's struct types (`ptp_clock_caps`,
//! `ptp_sys_offset`, `ptp_sys_offset_extended`, `ptp_sys_offset_precise`),
//! but its `get_sys_offset()` and `get_sys_offset_extended()` send
//! `n_samples = 0`, so the kernel returns no readings, and its `PtpDevice`
//! keeps its file private. So [`Phc`] opens the device itself and issues all
//! four requests on that one descriptor, with the request numbers built by
//! libc's `_IOR`/`_IOW`/`_IOWR` from those struct types (the encoding is
//! per architecture; the x86-64 values are pinned in a test).
//!
//! Nothing here interprets a reading: the raw kernel structs go to
//! [`crate::device`], which converts them into plain Rust values.

use std::fs::{File, OpenOptions};
use std::io;
use std::mem::{self, MaybeUninit};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use ptp_time::ptp::{
    PTP_CLK_MAGIC, PTP_MAX_SAMPLES, ptp_clock_caps, ptp_sys_offset, ptp_sys_offset_extended,
    ptp_sys_offset_precise,
};

/// `PTP_CLOCK_GETCAPS`: `_IOR(PTP_CLK_MAGIC, 1, struct ptp_clock_caps)`.
pub(crate) const PTP_CLOCK_GETCAPS: libc::Ioctl =
    libc::_IOR::<ptp_clock_caps>(PTP_CLK_MAGIC as u32, 1);
/// `PTP_SYS_OFFSET`: `_IOW(PTP_CLK_MAGIC, 5, struct ptp_sys_offset)`. The
/// kernel header declares it write-only although the kernel fills it in.
pub(crate) const PTP_SYS_OFFSET: libc::Ioctl =
    libc::_IOW::<ptp_sys_offset>(PTP_CLK_MAGIC as u32, 5);
/// `PTP_SYS_OFFSET_PRECISE`: `_IOWR(PTP_CLK_MAGIC, 8, struct ptp_sys_offset_precise)`.
pub(crate) const PTP_SYS_OFFSET_PRECISE: libc::Ioctl =
    libc::_IOWR::<ptp_sys_offset_precise>(PTP_CLK_MAGIC as u32, 8);
/// `PTP_SYS_OFFSET_EXTENDED`: `_IOWR(PTP_CLK_MAGIC, 9, struct ptp_sys_offset_extended)`.
pub(crate) const PTP_SYS_OFFSET_EXTENDED: libc::Ioctl =
    libc::_IOWR::<ptp_sys_offset_extended>(PTP_CLK_MAGIC as u32, 9);

/// An open PTP hardware clock. Dropping it closes the descriptor.
#[derive(Debug)]
pub struct Phc {
    file: File,
}

/// The errno of the last failed call.
fn last_errno() -> i32 {
    io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

impl Phc {
    /// Opens `path` read-only (every request used here is a read; the
    /// kernel asks for write access only to steer the clock), close-on-exec
    /// (std's default) and non-blocking, so that a misconfigured path to a
    /// FIFO cannot hang `init` (PHC ioctls ignore the flag).
    pub fn open(path: &Path) -> io::Result<Self> {
        Ok(Self {
            file: OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(path)?,
        })
    }

    /// The open file, for `fstat`.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// `PTP_CLOCK_GETCAPS`.
    pub fn caps(&self) -> Result<ptp_clock_caps, i32> {
        let mut caps = MaybeUninit::<ptp_clock_caps>::zeroed();
        // SAFETY: the descriptor is open for the life of `self`; the request
        // number encodes `size_of::<ptp_clock_caps>()`, which is exactly the
        // buffer `caps` provides, and the kernel writes at most that many
        // bytes into it during the call. The pointer is not kept afterwards.
        let rc =
            unsafe { libc::ioctl(self.file.as_raw_fd(), PTP_CLOCK_GETCAPS, caps.as_mut_ptr()) };
        if rc != 0 {
            return Err(last_errno());
        }
        // SAFETY: `caps` was zero-initialised, and every field of this
        // plain C struct is an integer, for which all-zero and any bytes the
        // kernel wrote are valid values.
        Ok(unsafe { caps.assume_init() })
    }

    /// `PTP_SYS_OFFSET_PRECISE`: one hardware cross-timestamp.
    pub fn precise(&self) -> Result<ptp_sys_offset_precise, i32> {
        let mut req = ptp_sys_offset_precise::default();
        // SAFETY: `req` is a live, initialised `ptp_sys_offset_precise`, the
        // type whose size the request number encodes; the kernel reads and
        // writes only within it, only during the call.
        let rc = unsafe {
            libc::ioctl(
                self.file.as_raw_fd(),
                PTP_SYS_OFFSET_PRECISE,
                &mut req as *mut ptp_sys_offset_precise,
            )
        };
        if rc != 0 {
            return Err(last_errno());
        }
        Ok(req)
    }

    /// `PTP_SYS_OFFSET_EXTENDED` with `n_samples = n` (clamped to 1..=25).
    /// The reserved words stay zero: system timestamps are CLOCK_REALTIME,
    /// and older kernels reject any non-zero reserved word.
    pub fn extended(&self, n: u32) -> Result<Box<ptp_sys_offset_extended>, i32> {
        let mut req = Box::<ptp_sys_offset_extended>::default();
        req.n_samples = n.clamp(1, PTP_MAX_SAMPLES);
        // SAFETY: `req` points to a live, initialised
        // `ptp_sys_offset_extended` (1216 bytes, the size the request number
        // encodes); with n_samples <= PTP_MAX_SAMPLES the kernel fills at
        // most the 25 x 3 timestamps the array holds, during the call only.
        let rc = unsafe {
            libc::ioctl(
                self.file.as_raw_fd(),
                PTP_SYS_OFFSET_EXTENDED,
                &mut *req as *mut ptp_sys_offset_extended,
            )
        };
        if rc != 0 {
            return Err(last_errno());
        }
        Ok(req)
    }

    /// `PTP_SYS_OFFSET` with `n_samples = n` (clamped to 1..=25).
    pub fn standard(&self, n: u32) -> Result<Box<ptp_sys_offset>, i32> {
        let mut req = Box::<ptp_sys_offset>::default();
        req.n_samples = n.clamp(1, PTP_MAX_SAMPLES);
        // SAFETY: `req` points to a live, initialised `ptp_sys_offset` (832
        // bytes, the size the request number encodes); with n_samples <=
        // PTP_MAX_SAMPLES the kernel writes at most 2 * 25 + 1 = 51
        // timestamps, exactly the array's length, during the call only.
        let rc = unsafe {
            libc::ioctl(
                self.file.as_raw_fd(),
                PTP_SYS_OFFSET,
                &mut *req as *mut ptp_sys_offset,
            )
        };
        if rc != 0 {
            return Err(last_errno());
        }
        Ok(req)
    }
}

/// The kernel's TAI-UTC offset in seconds, read with `adjtimex` and
/// `modes = 0`: a pure read that changes nothing about the system clock.
pub fn kernel_tai_offset() -> Result<i32, i32> {
    let mut tx = MaybeUninit::<libc::timex>::zeroed();
    // SAFETY: `tx` is a zeroed `timex` (all integer fields, so zero is a
    // valid value), hence `modes == 0`: the kernel only reads its state into
    // the struct, which lives across the call and is not kept afterwards.
    let rc = unsafe { libc::adjtimex(tx.as_mut_ptr()) };
    if rc == -1 {
        return Err(last_errno());
    }
    // SAFETY: zero-initialised above and filled by the kernel; every field
    // is an integer or a struct of integers.
    let tx = unsafe { tx.assume_init() };
    Ok(tx.tai)
}

/// `SIOCETHTOOL`, the ethtool ioctl on a socket.
const SIOCETHTOOL: libc::Ioctl = 0x8946;
/// `ETHTOOL_GET_TS_INFO`: timestamping capabilities and PHC index.
const ETHTOOL_GET_TS_INFO: u32 = 0x41;

/// `struct ethtool_ts_info` from `linux/ethtool.h` (44 bytes).
#[repr(C)]
#[derive(Default)]
struct EthtoolTsInfo {
    cmd: u32,
    so_timestamping: u32,
    phc_index: i32,
    tx_types: u32,
    tx_reserved: [u32; 3],
    rx_filters: u32,
    rx_reserved: [u32; 3],
}

// The kernel copies exactly its own struct's size into ours.
const _: () = assert!(size_of::<EthtoolTsInfo>() == 44);

/// The PHC index of network interface `iface` by `ETHTOOL_GET_TS_INFO`
/// (a query any user may make): `Some(n)` for `/dev/ptpN`, `None` when the
/// driver reports no PHC. The interface name must be shorter than
/// `IFNAMSIZ` and contain no NUL (else EINVAL).
pub fn ethtool_phc_index(iface: &str) -> Result<Option<u32>, i32> {
    let name = iface.as_bytes();
    if name.len() >= libc::IFNAMSIZ || name.contains(&0) {
        return Err(libc::EINVAL);
    }
    // SAFETY: socket() takes no pointers; the result is checked below.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(last_errno());
    }
    // SAFETY: `raw` is a descriptor socket() just returned and nothing else
    // owns; the OwnedFd closes it when this function returns.
    let sock = unsafe { OwnedFd::from_raw_fd(raw) };

    let mut info = EthtoolTsInfo {
        cmd: ETHTOOL_GET_TS_INFO,
        ..Default::default()
    };
    // SAFETY: `ifreq` is a plain C struct of integers, arrays and a union
    // of integers and pointers, for which all-zero bytes are valid.
    let mut req: libc::ifreq = unsafe { mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name) {
        *dst = libc::c_char::from_ne_bytes([*src]);
    }
    req.ifr_ifru.ifru_data = (&mut info as *mut EthtoolTsInfo).cast();
    // SAFETY: `req` holds a NUL-terminated name (zeroed, name shorter than
    // IFNAMSIZ) and points `ifru_data` at `info`, a live, initialised
    // `ethtool_ts_info` of the size the kernel copies for this command;
    // both outlive the call and the kernel keeps no pointer afterwards.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), SIOCETHTOOL, &mut req as *mut libc::ifreq) };
    if rc != 0 {
        return Err(last_errno());
    }
    Ok(u32::try_from(info.phc_index).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn request_numbers_match_the_kernel_header_on_x86_64() {
        // The values the kernel's _IOR/_IOW/_IOWR macros give on x86-64 (and
        // that ptp-time 0.1.0 hard-codes).
        assert_eq!(PTP_CLOCK_GETCAPS, 0x8050_3d01u32 as libc::Ioctl);
        assert_eq!(PTP_SYS_OFFSET, 0x4340_3d05u32 as libc::Ioctl);
        assert_eq!(PTP_SYS_OFFSET_PRECISE, 0xc040_3d08u32 as libc::Ioctl);
        assert_eq!(PTP_SYS_OFFSET_EXTENDED, 0xc4c0_3d09u32 as libc::Ioctl);
    }

    #[test]
    fn a_file_that_is_not_a_phc_answers_enotty() {
        let phc = Phc::open(Path::new("/dev/null")).expect("open /dev/null");
        assert_eq!(phc.caps().unwrap_err(), libc::ENOTTY);
        assert_eq!(phc.precise().unwrap_err(), libc::ENOTTY);
        assert_eq!(phc.extended(5).unwrap_err(), libc::ENOTTY);
        assert_eq!(phc.standard(5).unwrap_err(), libc::ENOTTY);
    }

    #[test]
    fn opening_a_missing_path_is_enoent() {
        let err = Phc::open(Path::new("/dev/ptp-ntpd-host-test-missing")).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOENT));
    }

    #[test]
    fn ethtool_reports_no_phc_for_loopback() {
        // The kernel's default timestamping info: software only, index -1.
        assert_eq!(ethtool_phc_index("lo"), Ok(None));
    }

    #[test]
    fn ethtool_on_a_missing_interface_is_enodev() {
        assert_eq!(ethtool_phc_index("ntpdtest9"), Err(libc::ENODEV));
        assert_eq!(
            ethtool_phc_index("a-name-longer-than-15"),
            Err(libc::EINVAL)
        );
    }

    #[test]
    fn kernel_tai_offset_is_readable_and_plausible() {
        // Read-only (modes = 0). Unset on most machines (0), 37 where a
        // daemon has set it; never negative.
        let tai = kernel_tai_offset().expect("adjtimex read");
        assert!((0..=1000).contains(&tai), "{tai}");
    }
}
