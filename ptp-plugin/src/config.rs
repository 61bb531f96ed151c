//! The plugin's configuration: the `[source.config]` table, as JSON.
//!
//! Keys are kebab-case; an unknown key is refused by serde
//! (`deny_unknown_fields`). Each value is taken as raw JSON and checked here,
//! so that every error is one line naming its key (serde's own type errors
//! do not name the field).

use serde::Deserialize;
use serde_json::Value;
use thiserror::Error;

use crate::process::NS_PER_S;

/// Most readings one request can return (the kernel's `PTP_MAX_SAMPLES`).
pub const MAX_READINGS: u32 = 25;

/// Readings per sample unless configured. Ten brackets give several
/// undisturbed ones even when interrupts or PCIe traffic hit a few, so the
/// minimum-delay filter has something to choose from, while one request stays
/// short (about 10 us on a NIC PHC at ~1 us per read) and holds the driver's
/// register lock, which ptp4l's packet timestamps share, only briefly. chrony
/// takes 10 readings for interface PHCs (25 for `refclock PHC`), phc2sys 5.
/// It also keeps an AWS ENA PHC, which refuses more than 125 reads per
/// second, far below its limit at the fastest poll (2 per second).
pub const DEFAULT_READINGS: u32 = 10;

/// Largest `offset` accepted, seconds: a fixed correction is small; a
/// value beyond a day is a typo.
pub const MAX_OFFSET_S: f64 = 86_400.0;

/// Accepted range of `tai-offset`, seconds. TAI-UTC was 10 s when leap
/// seconds began in 1972 and is 37 s since 2017.
pub const TAI_OFFSET_RANGE: std::ops::RangeInclusive<i64> = 10..=100;

/// A configuration error: one line, naming the key.
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

/// The `method` key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MethodChoice {
    /// Detect: precise, then extended, then standard.
    Auto,
    /// Only PTP_SYS_OFFSET_PRECISE.
    Precise,
    /// Only PTP_SYS_OFFSET_EXTENDED.
    Extended,
    /// Only PTP_SYS_OFFSET.
    Standard,
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
    /// Which read method.
    pub method: MethodChoice,
    /// Readings per extended/standard request, 1..=25.
    pub readings: u32,
    /// The PHC's time scale.
    pub timescale: Timescale,
    /// Fixed correction added to every offset, ns.
    pub offset_ns: i64,
}

/// The keys as they arrive; every value still raw JSON.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawConfig {
    device: Option<Value>,
    clock_name: Option<Value>,
    interface: Option<Value>,
    method: Option<Value>,
    readings: Option<Value>,
    timescale: Option<Value>,
    tai_offset: Option<Value>,
    offset: Option<Value>,
}

fn err(msg: String) -> ConfigError {
    ConfigError(msg)
}

fn string<'a>(key: &str, v: &'a Value) -> Result<&'a str, ConfigError> {
    match v {
        Value::String(s) if !s.trim().is_empty() => Ok(s),
        Value::String(_) => Err(err(format!("`{key}` must not be empty"))),
        other => Err(err(format!("`{key}` must be a string, not {other}"))),
    }
}

fn integer(key: &str, v: &Value) -> Result<i64, ConfigError> {
    v.as_i64()
        .ok_or_else(|| err(format!("`{key}` must be an integer, not {v}")))
}

fn choice<'a>(key: &str, v: &Value, valid: &[&'a str]) -> Result<&'a str, ConfigError> {
    let s = string(key, v)?;
    valid
        .iter()
        .copied()
        .find(|c| *c == s)
        .ok_or_else(|| err(format!("`{key}` = {v}; valid values: {}", valid.join(", "))))
}

impl Config {
    /// Validates the raw keys.
    pub fn from_raw(raw: RawConfig) -> Result<Self, ConfigError> {
        let mut given = Vec::new();
        if let Some(v) = &raw.device {
            let path = string("device", v)?;
            if !path.starts_with('/') {
                return Err(err(format!(
                    "`device` = {v} must be an absolute path such as /dev/ptp0"
                )));
            }
            given.push(Locator::Device(path.to_owned()));
        }
        if let Some(v) = &raw.clock_name {
            let name = string("clock-name", v)?;
            if name.contains(['\n', '/']) {
                return Err(err(format!(
                    "`clock-name` = {v} is not a clock name (as in /sys/class/ptp/ptpN/clock_name)"
                )));
            }
            given.push(Locator::ClockName(name.to_owned()));
        }
        if let Some(v) = &raw.interface {
            let name = string("interface", v)?;
            // IFNAMSIZ is 16 with the terminating NUL.
            if name.len() > 15 || name.contains(['/', ' ', '\n']) || name == "." || name == ".." {
                return Err(err(format!(
                    "`interface` = {v} is not a network interface name"
                )));
            }
            given.push(Locator::Interface(name.to_owned()));
        }
        let locator = match given.len() {
            1 => given.remove(0),
            0 => {
                return Err(err(
                    "set one of `device` (e.g. \"/dev/ptp0\"), `clock-name` (e.g. \"ptp_kvm\") or `interface` (e.g. \"eth0\")"
                        .to_owned(),
                ));
            }
            _ => {
                let keys: Vec<String> = given.iter().map(|l| format!("`{}`", l.key())).collect();
                return Err(err(format!(
                    "{} select the clock in different ways; set only one",
                    keys.join(" and ")
                )));
            }
        };

        let method = match &raw.method {
            None => MethodChoice::Auto,
            Some(v) => match choice("method", v, &["auto", "precise", "extended", "standard"])? {
                "precise" => MethodChoice::Precise,
                "extended" => MethodChoice::Extended,
                "standard" => MethodChoice::Standard,
                _ => MethodChoice::Auto,
            },
        };

        let readings = match &raw.readings {
            None => DEFAULT_READINGS,
            Some(v) => {
                let n = integer("readings", v)?;
                if !(1..=i64::from(MAX_READINGS)).contains(&n) {
                    return Err(err(format!(
                        "`readings` = {n} is out of range: 1 to {MAX_READINGS} readings per sample"
                    )));
                }
                n as u32
            }
        };

        let tai = match &raw.timescale {
            None => false,
            Some(v) => choice("timescale", v, &["utc", "tai"])? == "tai",
        };
        let tai_offset = match &raw.tai_offset {
            None => None,
            Some(v) => {
                let n = integer("tai-offset", v)?;
                if !TAI_OFFSET_RANGE.contains(&n) {
                    return Err(err(format!(
                        "`tai-offset` = {n} s is implausible: TAI-UTC is 37 s since 2017 (accepted: {} to {})",
                        TAI_OFFSET_RANGE.start(),
                        TAI_OFFSET_RANGE.end()
                    )));
                }
                if !tai {
                    return Err(err(
                        "`tai-offset` only applies with `timescale` = \"tai\"".to_owned()
                    ));
                }
                Some(n)
            }
        };
        let timescale = if tai {
            Timescale::Tai(tai_offset)
        } else {
            Timescale::Utc
        };

        let offset_ns = match &raw.offset {
            None => 0,
            Some(v) => {
                let s = v
                    .as_f64()
                    .filter(|s| s.is_finite())
                    .ok_or_else(|| err(format!("`offset` must be a number of seconds, not {v}")))?;
                if s.abs() > MAX_OFFSET_S {
                    return Err(err(format!(
                        "`offset` = {s} s is out of range (at most {MAX_OFFSET_S} s either way)"
                    )));
                }
                (s * NS_PER_S as f64).round() as i64
            }
        };

        Ok(Config {
            locator,
            method,
            readings,
            timescale,
            offset_ns,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<Config, String> {
        let raw: RawConfig = serde_json::from_str(json).map_err(|e| e.to_string())?;
        Config::from_raw(raw).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults() {
        let c = parse(r#"{"device": "/dev/ptp0"}"#).unwrap();
        assert_eq!(
            c,
            Config {
                locator: Locator::Device("/dev/ptp0".into()),
                method: MethodChoice::Auto,
                readings: DEFAULT_READINGS,
                timescale: Timescale::Utc,
                offset_ns: 0,
            }
        );
    }

    #[test]
    fn every_key() {
        let c = parse(
            r#"{"interface": "enp1s0", "method": "extended", "readings": 25,
                "timescale": "tai", "tai-offset": 37, "offset": -0.0000015}"#,
        )
        .unwrap();
        assert_eq!(c.locator, Locator::Interface("enp1s0".into()));
        assert_eq!(c.method, MethodChoice::Extended);
        assert_eq!(c.readings, 25);
        assert_eq!(c.timescale, Timescale::Tai(Some(37)));
        assert_eq!(c.offset_ns, -1500);
        let c =
            parse(r#"{"clock-name": "ptp_kvm", "method": "precise", "timescale": "tai"}"#).unwrap();
        assert_eq!(c.locator, Locator::ClockName("ptp_kvm".into()));
        assert_eq!(c.method, MethodChoice::Precise);
        assert_eq!(c.timescale, Timescale::Tai(None));
        let c =
            parse(r#"{"device": "/dev/ptp_kvm", "method": "standard", "readings": 1}"#).unwrap();
        assert_eq!(c.method, MethodChoice::Standard);
        assert_eq!(c.readings, 1);
    }

    #[test]
    fn errors_are_one_line_and_name_the_key() {
        for (json, key) in [
            (r#"{"devcie": "/dev/ptp0"}"#, "devcie"),
            (r#"{"device": 0}"#, "`device`"),
            (r#"{"device": ""}"#, "`device`"),
            (r#"{"device": "ptp0"}"#, "`device`"),
            (r#"{"clock-name": "a/b"}"#, "`clock-name`"),
            (r#"{"interface": "much-too-long-name0"}"#, "`interface`"),
            (r#"{"interface": "../x"}"#, "`interface`"),
            (r#"{}"#, "`device`"),
            (
                r#"{"device": "/dev/ptp0", "clock-name": "igb"}"#,
                "`clock-name`",
            ),
            (r#"{"device": "/dev/ptp0", "method": "fast"}"#, "`method`"),
            (r#"{"device": "/dev/ptp0", "method": 1}"#, "`method`"),
            (r#"{"device": "/dev/ptp0", "readings": 0}"#, "`readings`"),
            (r#"{"device": "/dev/ptp0", "readings": 26}"#, "`readings`"),
            (
                r#"{"device": "/dev/ptp0", "readings": "ten"}"#,
                "`readings`",
            ),
            (r#"{"device": "/dev/ptp0", "readings": 2.5}"#, "`readings`"),
            (
                r#"{"device": "/dev/ptp0", "timescale": "gps"}"#,
                "`timescale`",
            ),
            (
                r#"{"device": "/dev/ptp0", "timescale": "tai", "tai-offset": 3700}"#,
                "`tai-offset`",
            ),
            (
                r#"{"device": "/dev/ptp0", "timescale": "tai", "tai-offset": "37"}"#,
                "`tai-offset`",
            ),
            (
                r#"{"device": "/dev/ptp0", "tai-offset": 37}"#,
                "`tai-offset`",
            ),
            (r#"{"device": "/dev/ptp0", "offset": "1ms"}"#, "`offset`"),
            (r#"{"device": "/dev/ptp0", "offset": 1e9}"#, "`offset`"),
        ] {
            let e = parse(json).expect_err(json);
            assert!(e.contains(key), "{json}: {e}");
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
