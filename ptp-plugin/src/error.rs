//! The plugin's errors and the error kind each one is for the host.
//!
//! Kinds follow what the host should do next: `unavailable` when the clock
//! is missing or went away (the host drops the source, which closes the
//! device, and calls `init` again later, which detects the method anew);
//! `transient` when only this attempt failed; `configuration` when no
//! retry can help. Every message is one line and names the device.

use ntpd_plugin_api::{ErrorKind, PluginError};
use thiserror::Error;

use crate::config::ConfigError;
use crate::device::Errno;
use crate::locate::LocateError;
use crate::process::BatchError;

/// How to let the daemon read the clock, for permission errors.
pub const ACCESS_HINT: &str = "let the plugin workers read it: the package's udev rule gives PTP clocks to group ntpd-host (SUBSYSTEM==\"ptp\", GROUP=\"ntpd-host\", MODE=\"0640\"), or add the device's group (see `ls -l`) to [ntpd-host] worker-groups";

/// Everything that can go wrong in this plugin.
#[derive(Debug, Error)]
pub enum PhcError {
    /// A bad configuration key or value.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The clock named by `clock-name` or `interface` was not found.
    #[error("{0}")]
    Locate(#[from] LocateError),
    /// The device path does not exist.
    #[error("PTP clock {label} does not exist (PTP clocks in /sys/class/ptp: {present})")]
    Missing {
        /// The device as configured.
        label: String,
        /// The clocks that do exist.
        present: String,
    },
    /// No permission to open the device: unavailable, retried, because a
    /// device that has just appeared may still be waiting for the udev rule
    /// that gives the worker's group access to it.
    #[error(
        "no permission to open PTP clock {label} ({errno}); will retry (a new device may still be \
         waiting for its udev rule); if this lasts: {hint}",
        hint = ACCESS_HINT
    )]
    OpenDenied {
        /// The device.
        label: String,
        /// Its errno.
        errno: Errno,
    },
    /// No permission to read the open device.
    #[error("no permission to read PTP clock {label} ({op}: {errno}); {hint}", hint = ACCESS_HINT)]
    Denied {
        /// The device.
        label: String,
        /// The call that failed.
        op: &'static str,
        /// Its errno.
        errno: Errno,
    },
    /// The device went away or broke (ENODEV, ENOENT, EIO, ENXIO).
    #[error("PTP clock {label} is gone ({op}: {errno}); it will be opened again")]
    Gone {
        /// The device.
        label: String,
        /// The call that failed.
        op: &'static str,
        /// Its errno.
        errno: Errno,
    },
    /// The device asked us to try again (EINTR, EAGAIN, EBUSY, ETIMEDOUT).
    #[error("PTP clock {label} is busy ({op}: {errno}); will retry")]
    Busy {
        /// The device.
        label: String,
        /// The call that failed.
        op: &'static str,
        /// Its errno.
        errno: Errno,
    },
    /// The path is not a PTP clock.
    #[error("{label} is not a PTP clock ({op}: {errno})")]
    NotAPhc {
        /// The device.
        label: String,
        /// The call that failed.
        op: &'static str,
        /// Its errno.
        errno: Errno,
    },
    /// The method forced by `method` does not work on this clock.
    #[error("PTP clock {label} does not support `method` = \"{method}\" ({detail}); use \"auto\"")]
    MethodUnsupported {
        /// The device.
        label: String,
        /// The configured method.
        method: &'static str,
        /// What the attempt returned.
        detail: String,
    },
    /// No read method works on this clock.
    #[error("PTP clock {label}: no read method works ({detail})")]
    NoMethod {
        /// The device.
        label: String,
        /// What each attempt returned.
        detail: String,
    },
    /// A call that worked at init failed in a way that is neither transient
    /// nor a missing device; the source is re-created, which detects anew.
    #[error("PTP clock {label}: {op} failed ({errno}); detecting the read method again")]
    Failed {
        /// The device.
        label: String,
        /// The call that failed.
        op: &'static str,
        /// Its errno.
        errno: Errno,
    },
    /// Opening or querying the device failed unexpectedly at init.
    #[error("PTP clock {label}: {op} failed ({errno})")]
    Fatal {
        /// The device.
        label: String,
        /// The call that failed.
        op: &'static str,
        /// Its errno.
        errno: Errno,
    },
    /// One batch of readings was unusable and was dropped.
    #[error("PTP clock {label}: sample dropped: {source}")]
    Batch {
        /// The device.
        label: String,
        /// Why.
        source: BatchError,
    },
    /// `timescale` = "tai" without a usable TAI-UTC offset.
    #[error("PTP clock {label}: {message}")]
    Tai {
        /// The device.
        label: String,
        /// What is wrong.
        message: String,
        /// Whether a later sample may succeed (the kernel value changed
        /// after init) rather than the configuration being unusable.
        transient: bool,
    },
}

impl PhcError {
    /// The host-facing kind of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            PhcError::Locate(e) if e.may_appear_later() => ErrorKind::UNAVAILABLE,
            PhcError::Config(_)
            | PhcError::Denied { .. }
            | PhcError::NotAPhc { .. }
            | PhcError::MethodUnsupported { .. }
            | PhcError::Locate(_) => ErrorKind::CONFIGURATION,
            PhcError::Missing { .. }
            | PhcError::OpenDenied { .. }
            | PhcError::Gone { .. }
            | PhcError::Failed { .. } => ErrorKind::UNAVAILABLE,
            PhcError::Busy { .. } | PhcError::Batch { .. } => ErrorKind::TRANSIENT,
            PhcError::Tai { transient, .. } => {
                if *transient {
                    ErrorKind::TRANSIENT
                } else {
                    ErrorKind::CONFIGURATION
                }
            }
            PhcError::NoMethod { .. } | PhcError::Fatal { .. } => ErrorKind::FATAL,
        }
    }
}

impl From<PhcError> for PluginError {
    fn from(e: PhcError) -> Self {
        PluginError::new(e.kind(), e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_messages() {
        let label = || "/dev/ptp0".to_owned();
        let cases: Vec<(PhcError, ErrorKind)> = vec![
            (
                PhcError::Missing {
                    label: label(),
                    present: "none".into(),
                },
                ErrorKind::UNAVAILABLE,
            ),
            (
                PhcError::Gone {
                    label: label(),
                    op: "PTP_SYS_OFFSET",
                    errno: Errno(libc::ENODEV),
                },
                ErrorKind::UNAVAILABLE,
            ),
            (
                PhcError::Busy {
                    label: label(),
                    op: "PTP_SYS_OFFSET",
                    errno: Errno(libc::EBUSY),
                },
                ErrorKind::TRANSIENT,
            ),
            (
                PhcError::Denied {
                    label: label(),
                    op: "open",
                    errno: Errno(libc::EACCES),
                },
                ErrorKind::CONFIGURATION,
            ),
            (
                PhcError::Batch {
                    label: label(),
                    source: BatchError::NoReadings,
                },
                ErrorKind::TRANSIENT,
            ),
            (
                PhcError::NoMethod {
                    label: label(),
                    detail: "x".into(),
                },
                ErrorKind::FATAL,
            ),
        ];
        for (e, kind) in cases {
            assert_eq!(e.kind(), kind, "{e}");
            let p = PluginError::from(e);
            assert_eq!(p.kind, kind);
            assert!(p.message.contains("/dev/ptp0"), "{}", p.message);
            assert!(!p.message.contains('\n'), "{}", p.message);
        }
    }

    #[test]
    fn a_denied_open_is_retried_and_says_how_to_grant_access() {
        let e = PhcError::OpenDenied {
            label: "/dev/ptp0".into(),
            errno: Errno(libc::EACCES),
        };
        assert_eq!(e.kind(), ErrorKind::UNAVAILABLE);
        let m = e.to_string();
        assert!(
            m.starts_with("no permission to open PTP clock /dev/ptp0 (EACCES); will retry")
                && m.contains("udev rule")
                && m.contains("group"),
            "{m}"
        );
    }

    #[test]
    fn permission_message_says_how_to_grant_access() {
        let m = PhcError::Denied {
            label: "/dev/ptp0".into(),
            op: "open",
            errno: Errno(libc::EACCES),
        }
        .to_string();
        assert!(
            m.contains("EACCES") && m.contains("group") && m.contains("udev rule"),
            "{m}"
        );
    }
}
