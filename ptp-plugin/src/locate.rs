//! Finding the PHC: `/sys/class/ptp` for clock names and device numbers,
//! `/sys/class/net/IFACE/device/ptp/` for an interface's PHC.
//!
//! `/dev/ptpN` numbers change between boots (and when a driver is reloaded
//! while an old descriptor is still open), so a clock can be named by its
//! driver's clock name or by its network interface instead. Every function
//! takes the sysfs root as a parameter so the tests run on a fake tree.

use std::fs;
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::config::Locator;
use crate::device::Errno;

/// One entry of `/sys/class/ptp`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClockEntry {
    /// `ptpN`.
    pub name: String,
    /// The driver's `clock_name`, e.g. `ptp_kvm`.
    pub clock_name: Option<String>,
    /// Device number from the `dev` file (`major:minor`).
    pub dev: Option<(u32, u32)>,
}

impl ClockEntry {
    fn index(&self) -> u64 {
        self.name
            .strip_prefix("ptp")
            .and_then(|n| n.parse().ok())
            .unwrap_or(u64::MAX)
    }
}

fn read_trimmed(path: &Path) -> Option<String> {
    fs::read_to_string(path)
        .ok()
        .map(|s| s.trim_end_matches(['\n', '\r', ' ']).to_owned())
}

fn parse_dev(s: &str) -> Option<(u32, u32)> {
    let (major, minor) = s.trim().split_once(':')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// The PTP clocks the kernel knows, in index order (`ptp2` before `ptp10`).
/// A missing `/sys/class/ptp` (no PTP support loaded) is an empty list.
pub fn list_clocks(sys: &Path) -> Vec<ClockEntry> {
    let dir = sys.join("class/ptp");
    let Ok(entries) = fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut clocks: Vec<ClockEntry> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            name.starts_with("ptp").then(|| ClockEntry {
                clock_name: read_trimmed(&dir.join(&name).join("clock_name")),
                dev: read_trimmed(&dir.join(&name).join("dev")).and_then(|d| parse_dev(&d)),
                name,
            })
        })
        .collect();
    clocks.sort_by_key(|c| (c.index(), c.name.clone()));
    clocks
}

/// The clocks as one line for messages: `ptp0 "ptp_kvm", ptp1 "igb"`, or
/// `none`.
pub fn describe_clocks(clocks: &[ClockEntry]) -> String {
    if clocks.is_empty() {
        return "none".to_owned();
    }
    clocks
        .iter()
        .map(|c| match &c.clock_name {
            Some(n) => format!("{} {n:?}", c.name),
            None => c.name.clone(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Splits a Linux `dev_t` (as `st_rdev`) into major and minor numbers.
pub fn dev_major_minor(rdev: u64) -> (u32, u32) {
    let major = ((rdev >> 8) & 0xfff) | ((rdev >> 32) & !0xfff);
    let minor = (rdev & 0xff) | ((rdev >> 12) & !0xff);
    // Linux majors and minors are 32 bits wide (12 + 20 and 8 + 24 bits from
    // the 64-bit dev_t): the masks above leave no more.
    let narrow = |v: u64| u32::try_from(v & 0xffff_ffff).expect("masked to 32 bits");
    (narrow(major), narrow(minor))
}

/// The `/sys/class/ptp` entry of an opened device, by device number.
pub fn clock_for_rdev(clocks: &[ClockEntry], rdev: u64) -> Option<&ClockEntry> {
    let dev = dev_major_minor(rdev);
    clocks.iter().find(|c| c.dev == Some(dev))
}

/// The udev link names systemd gives virtual PHCs, accepted as aliases of
/// their drivers' clock names (`ptp_kvm` reports "KVM virtual PTP").
pub const CLOCK_NAME_ALIASES: &[(&str, &str)] =
    &[("ptp_kvm", "KVM virtual PTP"), ("ptp_hyperv", "hyperv")];

/// Whether a configured `clock-name` selects a clock whose sysfs
/// `clock_name` is `clock`: equal, equal through an alias, or matching as a
/// pattern in which `*` stands for any run of characters and `?` for one
/// (as in udev rules, e.g. `ena-ptp-*`).
pub fn clock_name_matches(pattern: &str, clock: &str) -> bool {
    if CLOCK_NAME_ALIASES
        .iter()
        .any(|(alias, real)| *alias == pattern && *real == clock)
    {
        return true;
    }
    glob(pattern.as_bytes(), clock.as_bytes())
}

/// Wildcard match with `*` and `?`, linear-time with one backtrack point.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == b'?' || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// Why the configured clock could not be found.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum LocateError {
    /// No clock has that clock name (its driver may not be loaded yet).
    #[error("no PTP clock is named {name:?} (PTP clocks in /sys/class/ptp: {present})")]
    NoSuchClockName {
        /// The configured name.
        name: String,
        /// The clocks present, as [`describe_clocks`] gives them.
        present: String,
    },
    /// More than one clock has that name.
    #[error(
        "`clock-name` = {name:?} matches {matches}; select the clock by `interface` or `device` instead"
    )]
    AmbiguousClockName {
        /// The configured name.
        name: String,
        /// The matching clocks.
        matches: String,
    },
    /// No such network interface (its driver may not be loaded yet).
    #[error("network interface {iface} does not exist")]
    NoSuchInterface {
        /// The configured interface.
        iface: String,
    },
    /// The interface exists but has no PHC (yet: some drivers register the
    /// PHC a moment after the network device).
    #[error(
        "network interface {iface} has no PTP hardware clock (neither ethtool's timestamping info nor /sys/class/net/{iface}/device/ptp shows one)"
    )]
    InterfaceWithoutPhc {
        /// The configured interface.
        iface: String,
    },
}

impl LocateError {
    /// Whether waiting could help (a driver not loaded yet, or a NIC driver
    /// such as igb that registers its PHC just after the interface), as
    /// opposed to a configuration that cannot work.
    pub fn may_appear_later(&self) -> bool {
        !matches!(self, LocateError::AmbiguousClockName { .. })
    }
}

/// The device to open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The path to open.
    pub path: PathBuf,
    /// How messages name the clock: the configured path, or
    /// `/dev/ptp1 (clock-name "ptp_kvm")`, `/dev/ptp2 (interface eth0)`.
    pub label: String,
}

/// Asks the kernel for an interface's PHC index (`ETHTOOL_GET_TS_INFO`):
/// `Some(n)` for `/dev/ptpN`, `None` for no PHC.
pub type PhcIndexFn = fn(&str) -> Result<Option<u32>, Errno>;

/// The `ptpN` under `/sys/class/net/IFACE/device/ptp/`, the lowest if
/// several.
fn sysfs_phc(sys: &Path, iface: &str) -> Result<String, LocateError> {
    let net = sys.join("class/net").join(iface);
    if !net.exists() {
        return Err(LocateError::NoSuchInterface {
            iface: iface.to_owned(),
        });
    }
    let mut phcs: Vec<String> = fs::read_dir(net.join("device/ptp"))
        .map(|d| {
            d.filter_map(Result::ok)
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| n.starts_with("ptp"))
                .collect()
        })
        .unwrap_or_default();
    phcs.sort_by_key(|n| {
        (
            n.strip_prefix("ptp")
                .and_then(|i| i.parse::<u64>().ok())
                .unwrap_or(u64::MAX),
            n.clone(),
        )
    });
    phcs.into_iter()
        .next()
        .ok_or_else(|| LocateError::InterfaceWithoutPhc {
            iface: iface.to_owned(),
        })
}

/// Resolves the configured clock to a device path. An interface's PHC is
/// taken from the ethtool query (authoritative: it also covers ports that
/// share a PHC registered by another port) and from sysfs when the query
/// finds none or cannot be made.
pub fn resolve(
    locator: &Locator,
    sys: &Path,
    dev: &Path,
    phc_index: PhcIndexFn,
) -> Result<Target, LocateError> {
    match locator {
        Locator::Device(path) => Ok(Target {
            path: PathBuf::from(path),
            label: path.clone(),
        }),
        Locator::ClockName(name) => {
            let clocks = list_clocks(sys);
            let matches: Vec<&ClockEntry> = clocks
                .iter()
                .filter(|c| {
                    c.clock_name
                        .as_deref()
                        .is_some_and(|clock| clock_name_matches(name, clock))
                })
                .collect();
            match matches.as_slice() {
                [] => Err(LocateError::NoSuchClockName {
                    name: name.clone(),
                    present: describe_clocks(&clocks),
                }),
                [one] => {
                    let path = dev.join(&one.name);
                    Ok(Target {
                        label: format!("{} (clock-name {name:?})", path.display()),
                        path,
                    })
                }
                many => Err(LocateError::AmbiguousClockName {
                    name: name.clone(),
                    matches: many
                        .iter()
                        .map(|c| c.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                }),
            }
        }
        Locator::Interface(iface) => {
            let name = match phc_index(iface) {
                Ok(Some(n)) => format!("ptp{n}"),
                Err(e) if e.0 == libc::ENODEV => {
                    return Err(LocateError::NoSuchInterface {
                        iface: iface.clone(),
                    });
                }
                Ok(None) | Err(_) => sysfs_phc(sys, iface)?,
            };
            let path = dev.join(name);
            Ok(Target {
                label: format!("{} (interface {iface})", path.display()),
                path,
            })
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A scratch directory under the system temp dir, removed on drop.
    pub(crate) struct Scratch(pub PathBuf);

    impl Scratch {
        pub(crate) fn new() -> Self {
            static N: AtomicU32 = AtomicU32::new(0);
            let dir = std::env::temp_dir().join(format!(
                "ntpd-ptp-test-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::SeqCst)
            ));
            fs::create_dir_all(&dir).unwrap();
            Scratch(dir)
        }

        /// Adds `class/ptp/<name>` with a clock name and device number.
        pub(crate) fn clock(&self, name: &str, clock_name: &str, dev: &str) {
            let d = self.0.join("class/ptp").join(name);
            fs::create_dir_all(&d).unwrap();
            fs::write(d.join("clock_name"), format!("{clock_name}\n")).unwrap();
            fs::write(d.join("dev"), format!("{dev}\n")).unwrap();
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn missing_or_empty_class_dir_lists_none() {
        let s = Scratch::new();
        assert!(list_clocks(&s.0).is_empty());
        fs::create_dir_all(s.0.join("class/ptp")).unwrap();
        assert!(list_clocks(&s.0).is_empty());
        assert_eq!(describe_clocks(&list_clocks(&s.0)), "none");
    }

    #[test]
    fn clocks_are_listed_in_index_order_with_names() {
        let s = Scratch::new();
        s.clock("ptp10", "igb", "246:10");
        s.clock("ptp2", "ptp_kvm", "246:2");
        let clocks = list_clocks(&s.0);
        assert_eq!(clocks[0].name, "ptp2");
        assert_eq!(clocks[0].dev, Some((246, 2)));
        assert_eq!(describe_clocks(&clocks), r#"ptp2 "ptp_kvm", ptp10 "igb""#);
    }

    #[test]
    fn clock_name_resolves_to_its_dev_node() {
        let s = Scratch::new();
        s.clock("ptp0", "igb", "246:0");
        s.clock("ptp1", "ptp_kvm", "246:1");
        let t = resolve(
            &Locator::ClockName("ptp_kvm".into()),
            &s.0,
            Path::new("/dev"),
            no_ethtool,
        )
        .unwrap();
        assert_eq!(t.path, PathBuf::from("/dev/ptp1"));
        assert!(t.label.contains("/dev/ptp1") && t.label.contains("ptp_kvm"));
    }

    #[test]
    fn clock_name_patterns_and_aliases() {
        assert!(clock_name_matches("igb", "igb"));
        assert!(!clock_name_matches("igb", "igb2"));
        assert!(!clock_name_matches("ig", "igb"));
        assert!(clock_name_matches("ena-ptp-*", "ena-ptp-05"));
        assert!(!clock_name_matches("ena-ptp-*", "ptp-ena-05"));
        assert!(clock_name_matches("*", ""));
        assert!(clock_name_matches("e?a-*-0*5", "ena-ptp-05"));
        assert!(
            !clock_name_matches("*ptp*", "KVM virtual PTP"),
            "case matters"
        );
        assert!(clock_name_matches("*PTP", "KVM virtual PTP"));
        assert!(clock_name_matches("ptp_kvm", "KVM virtual PTP"));
        assert!(clock_name_matches("ptp_hyperv", "hyperv"));
        assert!(!clock_name_matches("ptp_kvm", "hyperv"));
        assert!(clock_name_matches("a*b*c", "aXXbYYbZc"));
        assert!(!clock_name_matches("a*b*c", "aXXbYYbZ"));
    }

    #[test]
    fn ptp_kvm_alias_and_ena_pattern_resolve() {
        let s = Scratch::new();
        s.clock("ptp0", "KVM virtual PTP", "246:0");
        s.clock("ptp1", "ena-ptp-05", "246:1");
        let t = resolve(
            &Locator::ClockName("ptp_kvm".into()),
            &s.0,
            Path::new("/dev"),
            no_ethtool,
        )
        .unwrap();
        assert_eq!(t.path, PathBuf::from("/dev/ptp0"));
        let t = resolve(
            &Locator::ClockName("ena-ptp-*".into()),
            &s.0,
            Path::new("/dev"),
            no_ethtool,
        )
        .unwrap();
        assert_eq!(t.path, PathBuf::from("/dev/ptp1"));
        let e = resolve(
            &Locator::ClockName("*".into()),
            &s.0,
            Path::new("/dev"),
            no_ethtool,
        )
        .unwrap_err();
        assert!(matches!(e, LocateError::AmbiguousClockName { .. }), "{e}");
    }

    #[test]
    fn unknown_and_ambiguous_clock_names() {
        let s = Scratch::new();
        s.clock("ptp0", "igb", "246:0");
        s.clock("ptp1", "igb", "246:1");
        let e = resolve(
            &Locator::ClockName("ptp_kvm".into()),
            &s.0,
            Path::new("/dev"),
            no_ethtool,
        )
        .unwrap_err();
        assert!(e.may_appear_later());
        assert_eq!(
            e.to_string(),
            r#"no PTP clock is named "ptp_kvm" (PTP clocks in /sys/class/ptp: ptp0 "igb", ptp1 "igb")"#
        );
        let e = resolve(
            &Locator::ClockName("igb".into()),
            &s.0,
            Path::new("/dev"),
            no_ethtool,
        )
        .unwrap_err();
        assert!(!e.may_appear_later());
        assert!(e.to_string().contains("ptp0, ptp1"), "{e}");
    }

    fn no_ethtool(_: &str) -> Result<Option<u32>, Errno> {
        Err(Errno(libc::EOPNOTSUPP))
    }

    fn ethtool_no_phc(_: &str) -> Result<Option<u32>, Errno> {
        Ok(None)
    }

    fn ethtool_ptp7(_: &str) -> Result<Option<u32>, Errno> {
        Ok(Some(7))
    }

    fn ethtool_enodev(_: &str) -> Result<Option<u32>, Errno> {
        Err(Errno(libc::ENODEV))
    }

    fn iface(name: &str, s: &Scratch, ethtool: PhcIndexFn) -> Result<Target, LocateError> {
        resolve(
            &Locator::Interface(name.into()),
            &s.0,
            Path::new("/dev"),
            ethtool,
        )
    }

    #[test]
    fn interface_resolves_through_sysfs_without_ethtool() {
        let s = Scratch::new();
        fs::create_dir_all(s.0.join("class/net/enp1s0/device/ptp/ptp3")).unwrap();
        fs::create_dir_all(s.0.join("class/net/virbr0")).unwrap();
        for ethtool in [no_ethtool as PhcIndexFn, ethtool_no_phc] {
            let t = iface("enp1s0", &s, ethtool).unwrap();
            assert_eq!(t.path, PathBuf::from("/dev/ptp3"));
            assert!(t.label.contains("interface enp1s0"));
            let e = iface("virbr0", &s, ethtool).unwrap_err();
            assert_eq!(
                e,
                LocateError::InterfaceWithoutPhc {
                    iface: "virbr0".into()
                }
            );
            assert!(
                e.may_appear_later(),
                "its driver may register the PHC later"
            );
            let e = iface("eth9", &s, ethtool).unwrap_err();
            assert_eq!(
                e,
                LocateError::NoSuchInterface {
                    iface: "eth9".into()
                }
            );
            assert!(e.may_appear_later());
        }
    }

    #[test]
    fn ethtool_phc_index_wins_over_sysfs() {
        // A port sharing the PHC another port registered: no device/ptp dir.
        let s = Scratch::new();
        fs::create_dir_all(s.0.join("class/net/ens2f1")).unwrap();
        let t = iface("ens2f1", &s, ethtool_ptp7).unwrap();
        assert_eq!(t.path, PathBuf::from("/dev/ptp7"));
        let e = iface("ens2f1", &s, ethtool_enodev).unwrap_err();
        assert_eq!(
            e,
            LocateError::NoSuchInterface {
                iface: "ens2f1".into()
            }
        );
    }

    #[test]
    fn real_loopback_has_no_phc() {
        let e = resolve(
            &Locator::Interface("lo".into()),
            Path::new("/sys"),
            Path::new("/dev"),
            |i| crate::sys::ethtool_phc_index(i).map_err(Errno),
        )
        .unwrap_err();
        assert_eq!(e, LocateError::InterfaceWithoutPhc { iface: "lo".into() });
    }

    #[test]
    fn device_paths_are_taken_as_given() {
        let t = resolve(
            &Locator::Device("/dev/ptp_kvm".into()),
            Path::new("/nonexistent"),
            Path::new("/dev"),
            no_ethtool,
        )
        .unwrap();
        assert_eq!(t.path, PathBuf::from("/dev/ptp_kvm"));
        assert_eq!(t.label, "/dev/ptp_kvm");
    }

    #[test]
    fn dev_t_split_and_lookup() {
        // glibc's makedev(246, 1) and a large minor.
        assert_eq!(dev_major_minor(0xf601), (246, 1));
        let big = (0x123u64 << 8) | 0x45 | (0x678u64 << 20);
        assert_eq!(dev_major_minor(big), (0x123, 0x67845));
        let clocks = vec![ClockEntry {
            name: "ptp1".into(),
            clock_name: Some("ptp_kvm".into()),
            dev: Some((246, 1)),
        }];
        assert_eq!(clock_for_rdev(&clocks, 0xf601).unwrap().name, "ptp1");
        assert!(clock_for_rdev(&clocks, 0xf602).is_none());
    }
}
