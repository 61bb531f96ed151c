//! The plugin's configuration: the `[source.config]` table, as JSON.
//!
//! Keys are kebab-case serde types: an unknown key is refused
//! (`deny_unknown_fields`), each key's type checks its value and words the
//! error, and the SDK names the key at fault (`invalid plugin config:
//! readings: 30 is out of range: ...`). What involves several keys (exactly
//! one way to find the clock; `tai-offset` only with TAI) is checked in
//! [`Config::try_from`].

use serde::Deserialize;
use serde::de::{Deserializer, Error as _};
use thiserror::Error;

use crate::process::NS_PER_S;
use crate::source::Method;

/// Most readings one request can return (the kernel's `PTP_MAX_SAMPLES`).
pub const MAX_READINGS: u32 = 25;

/// Readings per request unless configured: the most one request returns,
/// as chrony's `refclock PHC` takes. The more brackets, the better the
/// chance that some were not hit by an interrupt or bus traffic, and the
/// lowest-delay band (`process.rs`) is made of those. Measured in the qemu
/// guest (`docs/benchmarks.md`, same boot, 10 against 25): the closed loop's
/// RMS went from 112 and 164 ns to 101 and 91 ns on EXTENDED reads and from
/// 123 and 100 ns to 93 and 46 ns on basic ones. The kernel calls the driver
/// once per reading, so a driver's lock (which ptp4l's packet timestamps
/// share) is held for one reading at a time, not for the whole request.
pub const DEFAULT_READINGS: u32 = MAX_READINGS;

/// Readings per request unless configured on an AWS ENA PHC (clock name
/// `ena-ptp-*`): the device accepts at most 125 reads a second and refuses
/// reads for a while after one over its limit; 5 keeps the start (ten
/// requests back to back) at 50 reads and the start-up burst at 80 a second.
pub const ENA_READINGS: u32 = 5;

/// The clock-name prefix of AWS ENA PHCs.
pub const ENA_CLOCK_PREFIX: &str = "ena-ptp-";

/// The readings per request when `readings` is not set, for a clock with
/// this driver clock name.
pub fn default_readings(clock_name: Option<&str>) -> u32 {
    if clock_name.is_some_and(|n| n.starts_with(ENA_CLOCK_PREFIX)) {
        ENA_READINGS
    } else {
        DEFAULT_READINGS
    }
}

/// Largest `offset` accepted, seconds: a fixed correction is small; a
/// value beyond a day is a typo.
pub const MAX_OFFSET_S: f64 = 86_400.0;

/// Accepted range of `tai-offset`, seconds. TAI-UTC was 10 s when leap
/// seconds began in 1972 and is 37 s since 2017.
pub const TAI_OFFSET_RANGE: std::ops::RangeInclusive<i64> = 10..=100;

/// A configuration error that involves several keys: one line, naming them.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[error("invalid plugin config: {0}")]
pub struct ConfigError(pub String);

/// How the PHC is found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Locator {
    /// A device path, e.g. `/dev/ptp0` or a udev link like `/dev/ptp_kvm`.
    Device(String),
    /// The driver's clock name, `/sys/class/ptp/ptpN/clock_name`.
    ClockName(String),
    /// The PHC of a network interface.
    Interface(String),
}

impl Locator {
    /// The configuration key that selected the PHC.
    pub fn key(&self) -> &'static str {
        match self {
            Locator::Device(_) => "device",
            Locator::ClockName(_) => "clock-name",
            Locator::Interface(_) => "interface",
        }
    }
}

/// The `timescale` key, with where TAI-UTC comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Timescale {
    /// The PHC carries UTC.
    Utc,
    /// The PHC carries TAI; TAI-UTC from `tai-offset` (`Some`) or the kernel
    /// (`None`).
    Tai(Option<i64>),
}

/// A validated configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Which PHC.
    pub locator: Locator,
    /// The read method `method` forces; `None` detects it (`auto`).
    pub method: Option<Method>,
    /// Readings per extended/standard request, 1..=25, as configured;
    /// `None`: [`default_readings`] for the clock.
    pub readings: Option<u32>,
    /// The PHC's time scale.
    pub timescale: Timescale,
    /// Fixed correction added to every offset, ns.
    pub offset_ns: i64,
}

/// The keys as written.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ConfigToml {
    device: Option<DevicePath>,
    clock_name: Option<ClockName>,
    interface: Option<InterfaceName>,
    method: Option<MethodKey>,
    readings: Option<Readings>,
    timescale: Option<TimescaleKey>,
    tai_offset: Option<TaiOffset>,
    offset: Option<OffsetSeconds>,
}

/// A non-empty string.
fn non_empty<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    if s.trim().is_empty() {
        Err(D::Error::custom("must not be empty"))
    } else {
        Ok(s)
    }
}

/// `device`: an absolute path.
#[derive(Debug)]
struct DevicePath(String);

impl<'de> Deserialize<'de> for DevicePath {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let path = non_empty(d)?;
        if path.starts_with('/') {
            Ok(Self(path))
        } else {
            Err(D::Error::custom(format!(
                "{path:?} must be an absolute path such as /dev/ptp0"
            )))
        }
    }
}

/// `clock-name`: a name or pattern as in `/sys/class/ptp/ptpN/clock_name`.
#[derive(Debug)]
struct ClockName(String);

impl<'de> Deserialize<'de> for ClockName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = non_empty(d)?;
        if name.contains(['\n', '/']) {
            Err(D::Error::custom(format!(
                "{name:?} is not a clock name (as in /sys/class/ptp/ptpN/clock_name)"
            )))
        } else {
            Ok(Self(name))
        }
    }
}

/// `interface`: a network interface name.
#[derive(Debug)]
struct InterfaceName(String);

impl<'de> Deserialize<'de> for InterfaceName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = non_empty(d)?;
        // IFNAMSIZ is 16 with the terminating NUL.
        if name.len() > 15 || name.contains(['/', ' ', '\n']) || name == "." || name == ".." {
            Err(D::Error::custom(format!(
                "{name:?} is not a network interface name"
            )))
        } else {
            Ok(Self(name))
        }
    }
}

/// `method`: `auto` or a method's name.
#[derive(Debug)]
struct MethodKey(Option<Method>);

impl<'de> Deserialize<'de> for MethodKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        if name == "auto" {
            return Ok(Self(None));
        }
        Method::ALL
            .into_iter()
            .find(|m| m.name() == name)
            .map(|m| Self(Some(m)))
            .ok_or_else(|| {
                D::Error::custom(format!(
                    "{name:?} is not a method; valid: auto, precise, extended, standard"
                ))
            })
    }
}

/// `readings`: 1 to 25.
#[derive(Debug)]
struct Readings(u32);

impl<'de> Deserialize<'de> for Readings {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = u64::deserialize(d)?;
        u32::try_from(n)
            .ok()
            .filter(|n| (1..=MAX_READINGS).contains(n))
            .map(Self)
            .ok_or_else(|| {
                D::Error::custom(format!(
                    "{n} is out of range: 1 to {MAX_READINGS} readings per sample"
                ))
            })
    }
}

/// `timescale`.
#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
enum TimescaleKey {
    Utc,
    Tai,
}

/// `tai-offset`: whole seconds within [`TAI_OFFSET_RANGE`].
#[derive(Debug)]
struct TaiOffset(i64);

impl<'de> Deserialize<'de> for TaiOffset {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = i64::deserialize(d)?;
        if TAI_OFFSET_RANGE.contains(&n) {
            Ok(Self(n))
        } else {
            Err(D::Error::custom(format!(
                "{n} s is implausible: TAI-UTC is 37 s since 2017 (accepted: {} to {})",
                TAI_OFFSET_RANGE.start(),
                TAI_OFFSET_RANGE.end()
            )))
        }
    }
}

/// `offset`: seconds, at most [`MAX_OFFSET_S`] either way, kept in ns.
#[derive(Debug)]
struct OffsetSeconds(i64);

impl<'de> Deserialize<'de> for OffsetSeconds {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = f64::deserialize(d)?;
        if s.is_finite() && s.abs() <= MAX_OFFSET_S {
            // Within +-86400 s: far inside i64 nanoseconds.
            #[allow(clippy::cast_possible_truncation, clippy::cast_precision_loss)]
            Ok(Self((s * NS_PER_S as f64).round() as i64))
        } else {
            Err(D::Error::custom(format!(
                "{s} s is out of range (at most {MAX_OFFSET_S} s either way)"
            )))
        }
    }
}

impl TryFrom<ConfigToml> for Config {
    type Error = ConfigError;

    /// The checks that involve several keys.
    fn try_from(raw: ConfigToml) -> Result<Self, ConfigError> {
        let mut given: Vec<Locator> = [
            raw.device.map(|d| Locator::Device(d.0)),
            raw.clock_name.map(|c| Locator::ClockName(c.0)),
            raw.interface.map(|i| Locator::Interface(i.0)),
        ]
        .into_iter()
        .flatten()
        .collect();
        let locator = match given.len() {
            1 => given.remove(0),
            0 => {
                return Err(ConfigError(
                    "set one of `device` (e.g. \"/dev/ptp0\"), `clock-name` (e.g. \"ptp_kvm\") or `interface` (e.g. \"eth0\")"
                        .to_owned(),
                ));
            }
            _ => {
                let keys: Vec<String> = given.iter().map(|l| format!("`{}`", l.key())).collect();
                return Err(ConfigError(format!(
                    "{} select the clock in different ways; set only one",
                    keys.join(" and ")
                )));
            }
        };
        let timescale = match (raw.timescale, raw.tai_offset) {
            (Some(TimescaleKey::Tai), offset) => Timescale::Tai(offset.map(|o| o.0)),
            (_, Some(_)) => {
                return Err(ConfigError(
                    "`tai-offset` only applies with `timescale` = \"tai\"".to_owned(),
                ));
            }
            (Some(TimescaleKey::Utc) | None, None) => Timescale::Utc,
        };
        Ok(Config {
            locator,
            method: raw.method.and_then(|m| m.0),
            readings: raw.readings.map(|r| r.0),
            timescale,
            offset_ns: raw.offset.map_or(0, |o| o.0),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<Config, String> {
        let raw: ConfigToml = ntpd_plugin_api::parse_config(json)?;
        Config::try_from(raw).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults() {
        let c = parse(r#"{"device": "/dev/ptp0"}"#).unwrap();
        assert_eq!(
            c,
            Config {
                locator: Locator::Device("/dev/ptp0".into()),
                method: None,
                readings: None,
                timescale: Timescale::Utc,
                offset_ns: 0,
            }
        );
    }

    #[test]
    fn default_readings_are_the_most_except_on_an_ena_phc() {
        assert_eq!(default_readings(None), MAX_READINGS);
        assert_eq!(default_readings(Some("ptp_kvm")), MAX_READINGS);
        assert_eq!(default_readings(Some("ena-ptp-05")), ENA_READINGS);
        assert_eq!(default_readings(Some("ptp-ena-05")), MAX_READINGS);
    }

    #[test]
    fn every_key() {
        let c = parse(
            r#"{"interface": "enp1s0", "method": "extended", "readings": 25,
                "timescale": "tai", "tai-offset": 37, "offset": -0.0000015}"#,
        )
        .unwrap();
        assert_eq!(c.locator, Locator::Interface("enp1s0".into()));
        assert_eq!(c.method, Some(Method::Extended));
        assert_eq!(c.readings, Some(25));
        assert_eq!(c.timescale, Timescale::Tai(Some(37)));
        assert_eq!(c.offset_ns, -1500);
        let c =
            parse(r#"{"clock-name": "ptp_kvm", "method": "precise", "timescale": "tai"}"#).unwrap();
        assert_eq!(c.locator, Locator::ClockName("ptp_kvm".into()));
        assert_eq!(c.method, Some(Method::Precise));
        assert_eq!(c.timescale, Timescale::Tai(None));
        let c =
            parse(r#"{"device": "/dev/ptp_kvm", "method": "standard", "readings": 1}"#).unwrap();
        assert_eq!(c.method, Some(Method::Standard));
        assert_eq!(c.readings, Some(1));
    }

    #[test]
    fn errors_are_one_line_and_name_the_key() {
        for (json, want) in [
            (
                r#"{"devcie": "/dev/ptp0"}"#,
                "devcie: unknown field `devcie`",
            ),
            (
                r#"{"device": 0}"#,
                "device: invalid type: integer `0`, expected a string",
            ),
            (r#"{"device": ""}"#, "device: must not be empty"),
            (
                r#"{"device": "ptp0"}"#,
                "device: \"ptp0\" must be an absolute path",
            ),
            (
                r#"{"clock-name": "a/b"}"#,
                "clock-name: \"a/b\" is not a clock name",
            ),
            (
                r#"{"interface": "much-too-long-name0"}"#,
                "interface: \"much-too-long-name0\" is not a network interface name",
            ),
            (
                r#"{"interface": "../x"}"#,
                "interface: \"../x\" is not a network",
            ),
            (r#"{}"#, "set one of `device`"),
            (
                r#"{"device": "/dev/ptp0", "clock-name": "igb"}"#,
                "`device` and `clock-name` select the clock in different ways",
            ),
            (
                r#"{"device": "/dev/ptp0", "method": "fast"}"#,
                "method: \"fast\" is not a method; valid: auto, precise",
            ),
            (
                r#"{"device": "/dev/ptp0", "method": 1}"#,
                "method: invalid type",
            ),
            (
                r#"{"device": "/dev/ptp0", "readings": 0}"#,
                "readings: 0 is out of range: 1 to 25",
            ),
            (
                r#"{"device": "/dev/ptp0", "readings": 26}"#,
                "readings: 26 is out of range",
            ),
            (
                r#"{"device": "/dev/ptp0", "readings": "ten"}"#,
                "readings: invalid type",
            ),
            (
                r#"{"device": "/dev/ptp0", "readings": 2.5}"#,
                "readings: invalid type",
            ),
            (
                r#"{"device": "/dev/ptp0", "readings": -1}"#,
                "readings: invalid value",
            ),
            (
                r#"{"device": "/dev/ptp0", "timescale": "gps"}"#,
                "timescale: unknown variant `gps`, expected `utc` or `tai`",
            ),
            (
                r#"{"device": "/dev/ptp0", "timescale": "tai", "tai-offset": 3700}"#,
                "tai-offset: 3700 s is implausible",
            ),
            (
                r#"{"device": "/dev/ptp0", "timescale": "tai", "tai-offset": "37"}"#,
                "tai-offset: invalid type",
            ),
            (
                r#"{"device": "/dev/ptp0", "tai-offset": 37}"#,
                "`tai-offset` only applies with `timescale` = \"tai\"",
            ),
            (
                r#"{"device": "/dev/ptp0", "timescale": "utc", "tai-offset": 37}"#,
                "`tai-offset` only applies",
            ),
            (
                r#"{"device": "/dev/ptp0", "offset": "1ms"}"#,
                "offset: invalid type",
            ),
            (
                r#"{"device": "/dev/ptp0", "offset": 1e9}"#,
                "offset: 1000000000 s is out of range",
            ),
        ] {
            let e = parse(json).expect_err(json);
            assert!(e.starts_with("invalid plugin config: "), "{json}: {e}");
            assert!(e.contains(want), "{json}:\n want {want}\n got  {e}");
            assert!(!e.contains('\n'), "{json}: {e}");
        }
    }

    #[test]
    fn offset_is_rounded_to_nanoseconds() {
        let c = parse(r#"{"device": "/dev/ptp0", "offset": 0.0000000004}"#).unwrap();
        assert_eq!(c.offset_ns, 0);
        let c = parse(r#"{"device": "/dev/ptp0", "offset": 37.000000001}"#).unwrap();
        assert_eq!(c.offset_ns, 37_000_000_001);
        let c = parse(r#"{"device": "/dev/ptp0", "offset": 2}"#).unwrap();
        assert_eq!(c.offset_ns, 2 * NS_PER_S);
    }
}
