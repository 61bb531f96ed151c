//! The `[ntpd-host]` table: settings of the host itself (not of a source).
//! ntpd-rs never sees it: the derived config leaves it out.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};
use toml::Value;

use crate::protocol::clockbound::DEFAULT_PATH as CLOCKBOUND_DEFAULT_PATH;

/// The table's name in the config file.
pub const TABLE: &str = "ntpd-host";

/// The user plugin workers run as when the host runs as root.
pub const DEFAULT_WORKER_USER: &str = "ntpd-host";

/// A worker's data limit unless configured, MiB. A worker with the PTP
/// plugin uses about 7 MB; this leaves a vendor plugin room and still ends
/// one that leaks long before it hurts the machine.
pub const DEFAULT_WORKER_MEMORY_LIMIT_MIB: u64 = 256;

/// The system clock's drift bound unless configured: 1 ppm, what
/// ClockBound itself assumes; a server's crystal held by a daemon stays well
/// within it, a sudden temperature swing may not.
pub const DEFAULT_CLOCKBOUND_MAX_DRIFT: f64 = 1e-6;

/// The largest drift bound accepted: 500 ppm, about what ntpd-rs may steer
/// (its `maximum-frequency-steer` is 495 ppm).
pub const MAX_CLOCKBOUND_MAX_DRIFT: f64 = 500e-6;

/// Where `ntpd-host metrics` listens unless `metrics-listen` or `--listen`
/// says otherwise: loopback, next to ntpd-rs's own exporter (9975).
pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9976";

/// Settings of the host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct HostSettings {
    /// The unprivileged user plugin workers switch to when the host runs as
    /// root (with its primary group).
    #[serde(default = "default_worker_user", deserialize_with = "user_name")]
    pub worker_user: String,
    /// Supplementary groups the workers keep, e.g. a group that may read the
    /// PHC devices when that is not the worker user's own group.
    #[serde(default, deserialize_with = "group_names")]
    pub worker_groups: Vec<String>,
    /// A worker's memory limit (data, heap and anonymous mappings), MiB: a
    /// plugin that allocates past it ends its worker, which is restarted.
    #[serde(default = "default_memory_limit", deserialize_with = "memory_limit")]
    pub worker_memory_limit: u64,
    /// Where to publish the ClockBound error bound: `false` (the default)
    /// publishes none, `true` the protocol's path, a string that path.
    #[serde(default, deserialize_with = "clockbound_path")]
    pub clockbound: Option<PathBuf>,
    /// The drift bound of the system clock between updates of the
    /// ClockBound segment, as a fraction (1e-6 = 1 ppm), the ntpd-rs way of
    /// writing a frequency.
    /// Held in ppb, rounded up.
    #[serde(
        rename = "clockbound-max-drift",
        default = "default_clockbound_max_drift",
        deserialize_with = "max_drift"
    )]
    pub clockbound_max_drift_ppb: u32,
    /// The plugin source whose samples the bound is built on, by name;
    /// unset: the first plugin source.
    #[serde(default)]
    pub clockbound_source: Option<String>,
    /// Where `ntpd-host metrics` serves its OpenMetrics endpoint; unset:
    /// [`DEFAULT_METRICS_LISTEN`]. The host itself serves nothing.
    #[serde(default, deserialize_with = "listen_address")]
    pub metrics_listen: Option<SocketAddr>,
}

impl Default for HostSettings {
    fn default() -> Self {
        Self {
            worker_user: default_worker_user(),
            worker_groups: Vec::new(),
            worker_memory_limit: DEFAULT_WORKER_MEMORY_LIMIT_MIB,
            clockbound: None,
            clockbound_max_drift_ppb: default_clockbound_max_drift(),
            clockbound_source: None,
            metrics_listen: None,
        }
    }
}

fn default_worker_user() -> String {
    DEFAULT_WORKER_USER.to_owned()
}

fn default_clockbound_max_drift() -> u32 {
    drift_ppb(DEFAULT_CLOCKBOUND_MAX_DRIFT)
}

/// A drift fraction in ppb, rounded up (within the accepted range).
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // at most 500_000
fn drift_ppb(fraction: f64) -> u32 {
    (fraction * 1e9).ceil() as u32
}

fn default_memory_limit() -> u64 {
    DEFAULT_WORKER_MEMORY_LIMIT_MIB
}

/// A user or group name as the system tools accept it.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 32
        && !name.starts_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
}

fn user_name<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let name = match Value::deserialize(d)? {
        Value::String(s) => s,
        other => {
            return Err(de::Error::custom(format!(
                "must be a user name (a string), got {other}"
            )));
        }
    };
    if !valid_name(&name) {
        return Err(de::Error::custom(format!("{name:?} is not a user name")));
    }
    if name == "root" {
        return Err(de::Error::custom(
            "must be an unprivileged user, not root: plugins never run with the host's privileges",
        ));
    }
    Ok(name)
}

fn group_names<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let items = match Value::deserialize(d)? {
        Value::Array(items) => items,
        other => {
            return Err(de::Error::custom(format!(
                "must be an array of group names, got {other}"
            )));
        }
    };
    items
        .into_iter()
        .map(|v| match v {
            Value::String(s) if valid_name(&s) && s != "root" => Ok(s),
            Value::String(s) if s == "root" => Err(de::Error::custom(
                "must not contain root: workers keep no privileged group",
            )),
            other => Err(de::Error::custom(format!("{other} is not a group name"))),
        })
        .collect()
}

fn memory_limit<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    match Value::deserialize(d)? {
        Value::Integer(n) if (16..=65_536).contains(&n) => {
            Ok(u64::try_from(n).expect("range checked"))
        }
        other => Err(de::Error::custom(format!(
            "must be an integer from 16 to 65536 (MiB), got {other}"
        ))),
    }
}

fn clockbound_path<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
    match Value::deserialize(d)? {
        Value::Boolean(false) => Ok(None),
        Value::Boolean(true) => Ok(Some(PathBuf::from(CLOCKBOUND_DEFAULT_PATH))),
        Value::String(s) if s.starts_with('/') && !s.ends_with('/') && !s.contains('\0') => {
            Ok(Some(PathBuf::from(s)))
        }
        other => Err(de::Error::custom(format!(
            "must be true, false or the absolute path of the segment file \
             (e.g. \"{CLOCKBOUND_DEFAULT_PATH}\"), got {other}"
        ))),
    }
}

fn listen_address<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    match Value::deserialize(d)? {
        Value::String(s) => s.parse().map(Some).map_err(|_| {
            de::Error::custom(format!(
                "{s:?} is not an address: must be \"IP:PORT\" (e.g. \"{DEFAULT_METRICS_LISTEN}\", \"[::1]:9976\")"
            ))
        }),
        other => Err(de::Error::custom(format!(
            "must be a string \"IP:PORT\" (e.g. \"{DEFAULT_METRICS_LISTEN}\"), got {other}"
        ))),
    }
}

fn max_drift<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    #[allow(clippy::cast_precision_loss)] // small integers only
    let v = match Value::deserialize(d)? {
        Value::Float(f) => Some(f),
        Value::Integer(i) => Some(i as f64),
        _ => None,
    };
    match v {
        Some(f) if f > 0.0 && f <= MAX_CLOCKBOUND_MAX_DRIFT => Ok(drift_ppb(f)),
        _ => Err(de::Error::custom(format!(
            "must be a frequency as a fraction above 0 and at most {MAX_CLOCKBOUND_MAX_DRIFT:e} \
             (e.g. 1e-6 for 1 ppm)"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<HostSettings, String> {
        let v: Value = toml::from_str::<toml::Table>(text).unwrap().into();
        serde_path_to_error::deserialize(v)
            .map_err(|e| format!("{}: {}", e.path(), e.inner().message()))
    }

    #[test]
    fn defaults_and_keys() {
        assert_eq!(parse("").unwrap(), HostSettings::default());
        let s = parse(
            "worker-user = \"ntpd-worker\"\nworker-groups = [\"ptp\", \"dialout\"]\nworker-memory-limit = 64\n",
        )
        .unwrap();
        assert_eq!(s.worker_user, "ntpd-worker");
        assert_eq!(s.worker_groups, ["ptp", "dialout"]);
        assert_eq!(s.worker_memory_limit, 64);
        assert_eq!(s.clockbound, None);
        let s = parse("clockbound = true").unwrap();
        assert_eq!(s.clockbound, Some(PathBuf::from(CLOCKBOUND_DEFAULT_PATH)));
        assert_eq!(s.clockbound_max_drift_ppb, 1_000);
        let s = parse(
            "clockbound = \"/run/cb/shm0\"\nclockbound-max-drift = 5e-6\nclockbound-source = \"phc\"",
        )
        .unwrap();
        assert_eq!(s.clockbound, Some(PathBuf::from("/run/cb/shm0")));
        assert_eq!(s.clockbound_max_drift_ppb, 5_000);
        assert_eq!(
            parse("clockbound-max-drift = 1e-12")
                .unwrap()
                .clockbound_max_drift_ppb,
            1,
            "rounded up"
        );
        assert_eq!(s.clockbound_source.as_deref(), Some("phc"));
        assert_eq!(parse("clockbound = false").unwrap().clockbound, None);
        assert_eq!(
            parse("metrics-listen = \"[::1]:9100\"")
                .unwrap()
                .metrics_listen,
            Some("[::1]:9100".parse().unwrap())
        );
        assert_eq!(parse("").unwrap().metrics_listen, None);
    }

    #[test]
    fn errors_name_the_key() {
        for (text, want) in [
            (
                "worker-user = \"root\"",
                "worker-user: must be an unprivileged user, not root",
            ),
            (
                "worker-user = \"a b\"",
                "worker-user: \"a b\" is not a user name",
            ),
            (
                "worker-user = 3",
                "worker-user: must be a user name (a string), got 3",
            ),
            (
                "worker-groups = \"ptp\"",
                "worker-groups: must be an array of group names",
            ),
            (
                "worker-groups = [\"root\"]",
                "worker-groups: must not contain root",
            ),
            (
                "worker-memory-limit = 8",
                "worker-memory-limit: must be an integer from 16 to 65536",
            ),
            (
                "clockbound = \"run/shm0\"",
                "clockbound: must be true, false or the absolute path",
            ),
            ("clockbound = 1", "clockbound: must be true, false or"),
            (
                "clockbound-max-drift = 0",
                "clockbound-max-drift: must be a frequency as a fraction above 0",
            ),
            (
                "clockbound-max-drift = 1.0",
                "clockbound-max-drift: must be a frequency",
            ),
            (
                "clockbound-max-drift = \"1ppm\"",
                "clockbound-max-drift: must be a frequency",
            ),
            (
                "metrics-listen = \"localhost:9976\"",
                "metrics-listen: \"localhost:9976\" is not an address: must be \"IP:PORT\"",
            ),
            (
                "metrics-listen = 9976",
                "metrics-listen: must be a string \"IP:PORT\"",
            ),
            (
                "worker-users = \"x\"",
                "worker-users: unknown field `worker-users`",
            ),
        ] {
            let e = parse(text).unwrap_err();
            assert!(e.starts_with(want), "{text}: {e}");
        }
    }
}
