//! The config ntpd-rs runs on, derived from the user's: each plugin source
//! becomes a `mode = "sock"` source on its socket; everything else stays.

use std::fmt;
use std::path::{Path, PathBuf};

use toml::{Table, Value};

use super::HostConfig;

/// Precision used when neither the config nor the plugin gives one, seconds.
pub const FALLBACK_PRECISION: f64 = 1e-6;
/// The smallest precision derived from a plugin's estimate, seconds (a
/// configured `precision` is taken as written).
///
/// A plugin estimates the noise of its reading (1 ns for an exact
/// cross-timestamp), but what ntpd-rs's filter sees also holds the system
/// clock's own noise between samples. Handed 1 ns, the filter trusts every
/// sample fully and its frequency estimate follows the noise: in the guest
/// bench (PRECISE, 1 s polls, `slew-minimum-duration` 0.5) the loop's RMS
/// was 30 ns at 1 ns, 6 ns at 10 ns and 21 ns at 30 ns (a dead band
/// around the offset). See docs/benchmarks.md.
pub const MIN_PRECISION: f64 = 1e-8;

/// Something the user should know about the derived config.
#[derive(Clone, Debug, PartialEq)]
pub enum Warning {
    /// A plugin source has no configured precision and its plugin gave no
    /// estimate in time (it could not start): a fallback was used.
    PrecisionFallback {
        /// The config file.
        file: PathBuf,
        /// The source's position.
        position: usize,
        /// The precision used, seconds.
        used: f64,
    },
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Warning::PrecisionFallback {
                file,
                position,
                used,
            } => write!(
                f,
                "{}: [[source]] #{position}: precision: the plugin did not report an estimate \
                 in time; using {used} s (set `precision` to choose)",
                file.display()
            ),
        }
    }
}

/// How the daemon will steer the clock, from the derived config's
/// `[synchronization.algorithm]` table (ntpd-rs's defaults where it says nothing): what
/// the ClockBound drift allowance must cover.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Steering {
    /// `step-threshold`: larger offsets are stepped, seconds.
    pub step_threshold: f64,
    /// `slew-minimum-duration`: an offset is slewed over at least this,
    /// seconds.
    pub slew_minimum_duration: f64,
    /// `slew-maximum-frequency-offset`: the fastest slew, as a fraction.
    pub slew_maximum_frequency_offset: f64,
}

impl Default for Steering {
    /// ntpd-rs 1.9's defaults.
    fn default() -> Self {
        Self {
            step_threshold: 0.010,
            slew_minimum_duration: 8.0,
            slew_maximum_frequency_offset: 200e-6,
        }
    }
}

impl Steering {
    /// The settings in `table` (a whole ntpd-rs config).
    pub fn of(table: &Table) -> Self {
        let d = Self::default();
        let algorithm = table
            .get("synchronization")
            .and_then(|s| s.get("algorithm"))
            .and_then(Value::as_table);
        #[allow(clippy::cast_precision_loss)] // small integers
        let get = |key: &str, default: f64| match algorithm.and_then(|a| a.get(key)) {
            Some(Value::Float(f)) => *f,
            Some(Value::Integer(i)) => *i as f64,
            _ => default,
        };
        Self {
            step_threshold: get("step-threshold", d.step_threshold),
            slew_minimum_duration: get("slew-minimum-duration", d.slew_minimum_duration),
            slew_maximum_frequency_offset: get(
                "slew-maximum-frequency-offset",
                d.slew_maximum_frequency_offset,
            ),
        }
    }
}

/// ntpd-rs `[synchronization.algorithm]` settings the host writes into the
/// derived config when it has plugin sources and the user set the key
/// nowhere (a user's own setting always wins), with the reason.
///
/// - `slew-minimum-duration = 0.5` (ntpd-rs: 8 s): every offset correction
///   of ntpd-rs is a slew lasting at least this, and no new offset
///   correction starts during one. A PHC read every second leaves offsets
///   of tens of nanoseconds, which 8 s slews spread so thin that the start
///   (after the first step) and every frequency change take tens of
///   seconds to settle; half a second still slews (never steps) and keeps
///   the rate far below `slew-maximum-frequency-offset` for such offsets.
/// - `steer-offset-threshold = 1` (ntpd-rs: 2) and `steer-offset-leftover
///   = 0` (ntpd-rs: 1): ntpd-rs corrects its offset estimate only when it
///   exceeds this many standard deviations of its uncertainty, and then
///   leaves `leftover` of them uncorrected. With a PHC's steady readings
///   the frequency settles within seconds and an offset below the
///   threshold stays for good: in the guest bench (EXTENDED, precision
///   133 ns, uncertainty 38 ns) ntpd-rs held its own estimate of +63 ns
///   for the whole window. Correcting every estimate beyond one standard
///   deviation, all of it, leaves no such standing offset (each correction
///   is still a slew of the estimate, never of a raw reading).
pub const DERIVED_ALGORITHM: &[(&str, f64)] = &[
    ("slew-minimum-duration", 0.5),
    ("steer-offset-threshold", 1.0),
    ("steer-offset-leftover", 0.0),
];

/// Writes [`DERIVED_ALGORITHM`] into `table` where it says nothing.
fn derive_algorithm(table: &mut Table) {
    let Value::Table(sync) = table
        .entry("synchronization")
        .or_insert_with(|| Value::Table(Table::new()))
    else {
        // Not a table: ntpd-rs's own check will name it.
        return;
    };
    let Value::Table(algorithm) = sync
        .entry("algorithm")
        .or_insert_with(|| Value::Table(Table::new()))
    else {
        // Not a table: ntpd-rs's own check will name it.
        return;
    };
    for (key, value) in DERIVED_ALGORITHM {
        algorithm
            .entry((*key).to_owned())
            .or_insert(Value::Float(*value));
    }
}

/// The derived config.
#[derive(Clone, Debug, PartialEq)]
pub struct Derived {
    /// The derived config file's text.
    pub text: String,
    /// Each plugin source's socket, in plugin order.
    pub sockets: Vec<PathBuf>,
    /// Each plugin source's precision as written, seconds.
    pub precisions: Vec<f64>,
    /// The daemon's observation socket.
    pub observation_path: PathBuf,
    /// How the daemon will steer the clock.
    pub steering: Steering,
    /// Things the user should know.
    pub warnings: Vec<Warning>,
}

/// Translates the config for ntpd-rs. `estimates[i]` is plugin `i`'s own
/// precision estimate in seconds, when known (the worker reported its
/// capabilities).
pub fn derive(cfg: &HostConfig, runtime_dir: &Path, estimates: &[Option<f64>]) -> Derived {
    let mut table = cfg.table.clone();
    // The host's own settings are not ntpd-rs's.
    table.remove(super::host::TABLE);
    let mut warnings = Vec::new();
    let mut sockets = Vec::new();
    let mut precisions = Vec::new();

    if let Some(Value::Array(items)) = table.get_mut("source") {
        let plugin_items = items
            .iter_mut()
            .filter(|item| item.get("mode").and_then(Value::as_str) == Some("plugin"));
        for (index, (item, plugin)) in plugin_items.zip(&cfg.plugins).enumerate() {
            let socket = plugin.socket_path(runtime_dir);
            let estimate = estimates.get(index).copied().flatten();
            let precision = match (plugin.precision, estimate) {
                (Some(p), _) => p,
                (None, Some(e)) => e.max(MIN_PRECISION),
                (None, None) => {
                    warnings.push(Warning::PrecisionFallback {
                        file: cfg.file.clone(),
                        position: plugin.position,
                        used: FALLBACK_PRECISION,
                    });
                    FALLBACK_PRECISION
                }
            };
            let mut sock = Table::new();
            sock.insert("mode".into(), Value::String("sock".into()));
            sock.insert("path".into(), Value::String(socket.display().to_string()));
            sock.insert("precision".into(), Value::Float(precision));
            // ntpd-rs rejects accuracy = 0; absent means 0.
            if let Some(a) = plugin.accuracy.filter(|a| *a > 0.0) {
                sock.insert("accuracy".into(), Value::Float(a));
            }
            *item = Value::Table(sock);
            sockets.push(socket);
            precisions.push(precision);
        }
    }

    if !cfg.plugins.is_empty() {
        derive_algorithm(&mut table);
    }

    let observability = table
        .entry("observability")
        .or_insert_with(|| Value::Table(Table::new()));
    let observation_path = match observability
        .get("observation-path")
        .and_then(Value::as_str)
    {
        Some(p) => PathBuf::from(p),
        None => {
            let p = runtime_dir.join("observe");
            if let Value::Table(t) = observability {
                t.insert(
                    "observation-path".into(),
                    Value::String(p.display().to_string()),
                );
            }
            p
        }
    };

    // The file name goes in a comment, where a line break or another
    // control character would break the TOML: escape them.
    let text = format!(
        "# Derived by ntpd-host from {} — do not edit; edit that file instead.\n{}",
        cfg.file.display().to_string().escape_debug(),
        toml::to_string(&table).expect("a TOML table serializes")
    );
    Derived {
        text,
        sockets,
        precisions,
        observation_path,
        steering: Steering::of(&table),
        warnings,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;

    fn parse_ok(text: &str) -> HostConfig {
        parse(Path::new("/etc/ntpd-rs/ntp.toml"), text).unwrap()
    }

    #[test]
    fn algorithm_settings_are_derived_only_where_the_user_set_none() {
        let cfg = parse_ok(crate::config::tests::PTP);
        let d = derive(&cfg, Path::new("/run/ntpd-host"), &[None]);
        let t: Table = d.text.parse().unwrap();
        let a = &t["synchronization"]["algorithm"];
        assert_eq!(a["slew-minimum-duration"].as_float(), Some(0.5));
        assert!((d.steering.slew_minimum_duration - 0.5).abs() < f64::EPSILON);
        assert_eq!(a["steer-offset-threshold"].as_float(), Some(1.0));
        assert_eq!(a["steer-offset-leftover"].as_float(), Some(0.0));
        // The user's own value wins, and their other keys stay.
        let text = format!(
            "{}\n[synchronization.algorithm]\nslew-minimum-duration = 3\nstep-threshold = 0.2\n",
            crate::config::tests::PTP
        );
        let d = derive(&parse_ok(&text), Path::new("/run/ntpd-host"), &[None]);
        let t: Table = d.text.parse().unwrap();
        let a = &t["synchronization"]["algorithm"];
        assert_eq!(a["slew-minimum-duration"].as_integer(), Some(3));
        assert_eq!(a["step-threshold"].as_float(), Some(0.2));
        // The keys the user did not set are still derived beside theirs.
        assert_eq!(a["steer-offset-threshold"].as_float(), Some(1.0));
        // No plugin source: nothing is derived.
        let d = derive(
            &parse_ok("[[source]]\nmode = \"server\"\naddress = \"ntp.example.org\"\n"),
            Path::new("/run/ntpd-host"),
            &[],
        );
        for (key, _) in DERIVED_ALGORITHM {
            assert!(!d.text.contains(key), "{key}: {}", d.text);
        }
    }

    #[test]
    fn translation_keeps_everything_else() {
        let cfg = parse_ok(crate::config::tests::PTP);
        let d = derive(&cfg, Path::new("/run/ntpd-host"), &[None]);
        let t: Table = d.text.parse().unwrap();
        let sources = t["source"].as_array().unwrap();
        assert_eq!(sources[0]["mode"].as_str(), Some("server"));
        assert_eq!(sources[0]["address"].as_str(), Some("ntp.example.org"));
        let sock = sources[1].as_table().unwrap();
        assert_eq!(sock["mode"].as_str(), Some("sock"));
        assert_eq!(
            sock["path"].as_str(),
            Some("/run/ntpd-host/sources/source-2.sock")
        );
        assert_eq!(sock["precision"].as_float(), Some(1e-7));
        assert!(!sock.contains_key("accuracy"), "accuracy 0 must be omitted");
        assert!(!sock.contains_key("config"));
        assert_eq!(
            t["synchronization"]["single-step-panic-threshold"].as_integer(),
            Some(1000)
        );
        assert_eq!(
            t["observability"]["observation-path"].as_str(),
            Some("/run/ntpd-host/observe")
        );
        assert_eq!(
            d.sockets,
            [PathBuf::from("/run/ntpd-host/sources/source-2.sock")]
        );
        assert!(d.warnings.is_empty(), "{:?}", d.warnings);
        let with_host = format!(
            "{}\n[ntpd-host]\nworker-user = \"nobody\"\n",
            crate::config::tests::PTP
        );
        let d = derive(&parse_ok(&with_host), Path::new("/r"), &[None]);
        let t: Table = d.text.parse().unwrap();
        assert!(
            !t.contains_key("ntpd-host"),
            "ntpd-rs never sees the host's table"
        );
    }

    #[test]
    fn precision_comes_from_config_then_plugin_then_fallback() {
        let text = r#"
[[source]]
mode = "plugin"
path = "/a.so"
[[source]]
mode = "plugin"
path = "/b.so"
precision = 2e-6
accuracy = 1e-6
[[source]]
mode = "plugin"
path = "/c.so"
[[source]]
mode = "plugin"
path = "/d.so"
"#;
        let cfg = parse_ok(text);
        let d = derive(
            &cfg,
            Path::new("/r"),
            &[Some(5e-8), Some(1.0), None, Some(1e-9)],
        );
        assert_eq!(
            d.precisions,
            [5e-8, 2e-6, FALLBACK_PRECISION, MIN_PRECISION]
        );
        assert_eq!(
            d.warnings,
            [Warning::PrecisionFallback {
                file: "/etc/ntpd-rs/ntp.toml".into(),
                position: 3,
                used: FALLBACK_PRECISION
            }]
        );
        assert!(d.warnings[0].to_string().contains("#3: precision"));
        let t: Table = d.text.parse().unwrap();
        assert_eq!(t["source"][1]["accuracy"].as_float(), Some(1e-6));
    }

    #[test]
    fn steering_follows_the_users_algorithm_settings() {
        let d = derive(&parse_ok(""), Path::new("/r"), &[]);
        assert_eq!(d.steering, Steering::default());
        let text = "[synchronization.algorithm]\nstep-threshold = 0.5\nslew-minimum-duration = 2\n";
        let d = derive(&parse_ok(text), Path::new("/r"), &[]);
        assert_eq!(
            d.steering,
            Steering {
                step_threshold: 0.5,
                slew_minimum_duration: 2.0,
                ..Steering::default()
            }
        );
    }

    #[test]
    fn existing_observation_path_is_kept() {
        let text = "[observability]\nobservation-path = \"/var/run/ntpd-rs/observe\"\n";
        let d = derive(&parse_ok(text), Path::new("/r"), &[]);
        assert_eq!(
            d.observation_path,
            PathBuf::from("/var/run/ntpd-rs/observe")
        );
        let t: Table = d.text.parse().unwrap();
        assert_eq!(
            t["observability"]["observation-path"].as_str(),
            Some("/var/run/ntpd-rs/observe")
        );
    }
}
