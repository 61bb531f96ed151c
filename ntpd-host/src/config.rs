//! The ntpd-rs configuration with plugin sources, and its translation.
//!
//! ntpd-host reads the ntpd-rs config file users already have. Every setting
//! stays as written, except that each `[[source]] mode = "plugin"` entry is
//! replaced by a `mode = "sock"` source on a private socket, which a plugin
//! worker feeds. All of this is pure: parsing and translation take text and
//! return text, so they are tested without files or processes.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::{Table, Value};

/// The default ntpd-rs config path (the same as `ntp-daemon`'s).
pub const DEFAULT_CONFIG_PATH: &str = "/etc/ntpd-rs/ntp.toml";
/// The default directory for sockets and the derived config.
pub const DEFAULT_RUNTIME_DIR: &str = "/run/ntpd-host";
/// Poll interval bounds, log2 seconds.
pub const POLL_MIN: i64 = -1;
/// Poll interval bounds, log2 seconds.
pub const POLL_MAX: i64 = 6;
/// Precision used when neither the config nor the plugin gives one, seconds.
pub const FALLBACK_PRECISION: f64 = 1e-6;
/// Longest unix socket path (sun_path is 108 bytes with the terminator).
const MAX_SOCKET_PATH: usize = 107;

/// A configuration problem, reported as one line naming the file, the
/// source and the key.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// The config file.
    pub file: PathBuf,
    /// 1-based position of the `[[source]]` entry, if the problem is in one.
    pub entry: Option<usize>,
    /// The key at fault, if any.
    pub key: Option<String>,
    /// What is wrong and what would be valid.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(n) = self.entry {
            write!(f, ": [[source]] #{n}")?;
        }
        if let Some(key) = &self.key {
            write!(f, ": {key}")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// One `mode = "plugin"` source, validated.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct PluginSource {
    /// 1-based position among all `[[source]]` entries.
    pub position: usize,
    /// Label for logs and status: the `name` key, or `<file stem>#<position>`.
    pub name: String,
    /// Absolute path of the plugin library.
    pub path: PathBuf,
    /// Poll interval, log2 seconds (-1 ..= 6).
    pub poll_interval: i8,
    /// Configured precision, seconds.
    pub precision: Option<f64>,
    /// Configured accuracy, seconds.
    pub accuracy: Option<f64>,
    /// Explicit socket path (required by `bridge`).
    pub socket: Option<PathBuf>,
    /// How long one plugin call may take before the worker is restarted.
    pub sample_timeout: Duration,
    /// Load the plugin even if its file ownership or mode is unsafe.
    pub allow_insecure_plugin: bool,
    /// The `[source.config]` table as JSON text.
    pub config_json: String,
}

impl PluginSource {
    /// The poll interval as a duration.
    pub fn poll_duration(&self) -> Duration {
        Duration::from_secs_f64(2f64.powi(i32::from(self.poll_interval)))
    }

    /// The socket this source's samples go to: the `socket` key, or a
    /// private one in `runtime_dir`.
    pub fn socket_path(&self, runtime_dir: &Path) -> PathBuf {
        self.socket
            .clone()
            .unwrap_or_else(|| runtime_dir.join(format!("source-{}.sock", self.position)))
    }
}

/// A parsed config file.
#[derive(Clone, Debug, PartialEq)]
pub struct HostConfig {
    /// Where it was read from (for messages).
    pub file: PathBuf,
    /// The whole document as written.
    pub table: Table,
    /// The plugin sources, in file order.
    pub plugins: Vec<PluginSource>,
    /// The other sources, counted the way ntpd-rs counts them for
    /// `minimum-agreeing-sources` (a pool counts its `count`; PPS counts 0).
    pub other_sources: usize,
    /// `[synchronization] minimum-agreeing-sources` (ntpd-rs default 3).
    pub minimum_agreeing_sources: usize,
}

/// Keys a plugin source accepts.
pub const PLUGIN_KEYS: &[&str] = &[
    "mode",
    "path",
    "name",
    "poll-interval",
    "precision",
    "accuracy",
    "socket",
    "sample-timeout",
    "allow-insecure-plugin",
    "config",
];

/// Parses and validates the config text read from `file`.
pub fn parse(file: &Path, text: &str) -> Result<HostConfig, ConfigError> {
    let err = |entry: Option<usize>, key: Option<&str>, message: String| ConfigError {
        file: file.to_owned(),
        entry,
        key: key.map(str::to_owned),
        message,
    };
    let table: Table = text.parse().map_err(|e: toml::de::Error| {
        let at = e
            .span()
            .map(|span| {
                let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
                format!(" (line {line})")
            })
            .unwrap_or_default();
        let message = e.message().split_whitespace().collect::<Vec<_>>().join(" ");
        err(None, None, format!("invalid TOML{at}: {message}"))
    })?;

    let sources = match table.get("source") {
        None => Vec::new(),
        Some(Value::Array(items)) => items.clone(),
        Some(_) => {
            return Err(err(
                None,
                Some("source"),
                "must be an array of tables ([[source]])".into(),
            ));
        }
    };

    let mut plugins = Vec::new();
    let mut other_sources = 0;
    for (i, item) in sources.iter().enumerate() {
        let position = i + 1;
        let Value::Table(t) = item else {
            return Err(err(Some(position), None, "must be a table".into()));
        };
        match t.get("mode").and_then(Value::as_str) {
            Some("plugin") => plugins.push(parse_plugin(file, position, t)?),
            Some("pool" | "nts-pool") => {
                other_sources += t
                    .get("count")
                    .and_then(Value::as_integer)
                    .and_then(|c| usize::try_from(c).ok())
                    .unwrap_or(4);
            }
            Some("pps") => {}
            // ntpd-rs validates the rest; count them as one source each.
            _ => other_sources += 1,
        }
    }

    let minimum_agreeing_sources = match table
        .get("synchronization")
        .and_then(|s| s.get("minimum-agreeing-sources"))
    {
        None => 3,
        Some(Value::Integer(n)) if *n >= 1 => *n as usize,
        Some(other) => {
            return Err(err(
                None,
                Some("synchronization.minimum-agreeing-sources"),
                format!("must be a positive integer, got {other}"),
            ));
        }
    };

    Ok(HostConfig {
        file: file.to_owned(),
        table,
        plugins,
        other_sources,
        minimum_agreeing_sources,
    })
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::String(_) => "a string",
        Value::Integer(_) => "an integer",
        Value::Float(_) => "a float",
        Value::Boolean(_) => "a boolean",
        Value::Datetime(_) => "a datetime",
        Value::Array(_) => "an array",
        Value::Table(_) => "a table",
    }
}

fn parse_plugin(file: &Path, position: usize, t: &Table) -> Result<PluginSource, ConfigError> {
    let err = |key: &str, message: String| ConfigError {
        file: file.to_owned(),
        entry: Some(position),
        key: Some(key.to_owned()),
        message,
    };
    for key in t.keys() {
        if !PLUGIN_KEYS.contains(&key.as_str()) {
            return Err(err(
                key,
                format!(
                    "unknown key for a plugin source; valid keys: {}",
                    PLUGIN_KEYS.join(", ")
                ),
            ));
        }
    }
    let number = |key: &str| -> Result<Option<f64>, ConfigError> {
        match t.get(key) {
            None => Ok(None),
            Some(Value::Float(f)) => Ok(Some(*f)),
            Some(Value::Integer(i)) => Ok(Some(*i as f64)),
            Some(v) => Err(err(key, format!("must be a number, got {}", type_name(v)))),
        }
    };

    let path = match t.get("path") {
        None => {
            return Err(err(
                "path",
                "missing: give the absolute path of the plugin library (.so)".into(),
            ));
        }
        Some(Value::String(s)) => PathBuf::from(s),
        Some(v) => {
            return Err(err(
                "path",
                format!("must be a string, got {}", type_name(v)),
            ));
        }
    };
    if !path.is_absolute() {
        return Err(err(
            "path",
            format!(
                "{:?} is relative; give an absolute path like /usr/lib/ntpd-rs/libntpd_ptp.so",
                path
            ),
        ));
    }

    let name = match t.get("name") {
        None => format!(
            "{}#{position}",
            path.file_stem()
                .map(|s| s.to_string_lossy().trim_start_matches("lib").to_owned())
                .unwrap_or_else(|| "plugin".into())
        ),
        Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
        Some(v) => {
            return Err(err(
                "name",
                format!("must be a non-empty string, got {}", type_name(v)),
            ));
        }
    };

    let poll_interval = match t.get("poll-interval") {
        None => 0,
        Some(Value::Integer(i)) if (POLL_MIN..=POLL_MAX).contains(i) => *i as i8,
        Some(v) => {
            return Err(err(
                "poll-interval",
                format!(
                    "must be an integer from {POLL_MIN} (0.5 s) to {POLL_MAX} (64 s), log2 seconds; got {v}"
                ),
            ));
        }
    };

    let precision = number("precision")?;
    if let Some(p) = precision
        && !(p.is_finite() && p > 0.0 && p <= 1.0)
    {
        return Err(err(
            "precision",
            format!("must be a number of seconds above 0 and at most 1, got {p}"),
        ));
    }
    let accuracy = number("accuracy")?;
    if let Some(a) = accuracy
        && !(a.is_finite() && (0.0..=1.0).contains(&a))
    {
        return Err(err(
            "accuracy",
            format!("must be a number of seconds from 0 to 1, got {a}"),
        ));
    }

    let socket = match t.get("socket") {
        None => None,
        Some(Value::String(s)) => {
            let p = PathBuf::from(s);
            if !p.is_absolute() {
                return Err(err(
                    "socket",
                    format!("{s:?} is relative; give an absolute path"),
                ));
            }
            if s.len() > MAX_SOCKET_PATH {
                return Err(err(
                    "socket",
                    format!(
                        "path is {} bytes; unix sockets allow at most {MAX_SOCKET_PATH}",
                        s.len()
                    ),
                ));
            }
            Some(p)
        }
        Some(v) => {
            return Err(err(
                "socket",
                format!("must be a string, got {}", type_name(v)),
            ));
        }
    };

    let sample_timeout = match number("sample-timeout")? {
        None => Duration::from_secs(10),
        Some(s) if s.is_finite() && (0.1..=3600.0).contains(&s) => Duration::from_secs_f64(s),
        Some(s) => {
            return Err(err(
                "sample-timeout",
                format!("must be between 0.1 and 3600 seconds, got {s}"),
            ));
        }
    };

    let allow_insecure_plugin = match t.get("allow-insecure-plugin") {
        None => false,
        Some(Value::Boolean(b)) => *b,
        Some(v) => {
            return Err(err(
                "allow-insecure-plugin",
                format!("must be true or false, got {}", type_name(v)),
            ));
        }
    };

    let config_json = match t.get("config") {
        None => "{}".to_owned(),
        Some(v @ Value::Table(_)) => serde_json::to_string(v).map_err(|e| {
            err(
                "config",
                format!("cannot be passed to the plugin as JSON: {e}"),
            )
        })?,
        Some(v) => {
            return Err(err(
                "config",
                format!("must be a table ([source.config]), got {}", type_name(v)),
            ));
        }
    };

    Ok(PluginSource {
        position,
        name,
        path,
        poll_interval,
        precision,
        accuracy,
        socket,
        sample_timeout,
        allow_insecure_plugin,
        config_json,
    })
}

/// The config ntpd-rs runs on, derived from the user's.
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
    /// Things the user should know (one line each).
    pub warnings: Vec<String>,
}

/// Translates the config for ntpd-rs. `estimates[i]` is plugin `i`'s own
/// precision estimate in seconds, when known (the worker reported its
/// capabilities).
pub fn derive(cfg: &HostConfig, runtime_dir: &Path, estimates: &[Option<f64>]) -> Derived {
    let mut table = cfg.table.clone();
    let mut warnings = Vec::new();
    let mut sockets = Vec::new();
    let mut precisions = Vec::new();

    if let Some(Value::Array(items)) = table.get_mut("source") {
        let mut plugin_index = 0;
        for item in items.iter_mut() {
            let is_plugin = item.get("mode").and_then(Value::as_str) == Some("plugin");
            if !is_plugin {
                continue;
            }
            let plugin = &cfg.plugins[plugin_index];
            let socket = plugin.socket_path(runtime_dir);
            let precision = match (
                plugin.precision,
                estimates.get(plugin_index).copied().flatten(),
            ) {
                (Some(p), _) => p,
                (None, Some(e)) => e.max(1e-9),
                (None, None) => {
                    warnings.push(format!(
                        "{}: [[source]] #{}: precision: the plugin did not report an estimate in time; \
                         using {FALLBACK_PRECISION} s (set `precision` to choose)",
                        cfg.file.display(),
                        plugin.position
                    ));
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
            plugin_index += 1;
        }
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

    let total = cfg.other_sources + cfg.plugins.len();
    if total > 0 && total < cfg.minimum_agreeing_sources {
        warnings.push(format!(
            "{}: {total} source(s) configured but [synchronization] minimum-agreeing-sources is {}: \
             ntpd-rs will not steer the clock; for a lone PHC set minimum-agreeing-sources = 1",
            cfg.file.display(),
            cfg.minimum_agreeing_sources
        ));
    }

    let text = format!(
        "# Derived by ntpd-host from {} — do not edit; edit that file instead.\n{}",
        cfg.file.display(),
        toml::to_string(&table).expect("a TOML table serializes")
    );
    Derived {
        text,
        sockets,
        precisions,
        observation_path,
        warnings,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "/etc/ntpd-rs/ntp.toml";

    fn parse_ok(text: &str) -> HostConfig {
        parse(Path::new(FILE), text).unwrap()
    }

    fn parse_err(text: &str) -> String {
        parse(Path::new(FILE), text).unwrap_err().to_string()
    }

    const PTP: &str = r#"
[[source]]
mode = "server"
address = "ntp.example.org"

[[source]]
mode = "plugin"
path = "/usr/lib/ntpd-rs/libntpd_ptp.so"
poll-interval = -1
precision = 1e-7
accuracy = 0.0
[source.config]
device = "/dev/ptp0"
readings = 9

[synchronization]
minimum-agreeing-sources = 1
single-step-panic-threshold = 1000
"#;

    #[test]
    fn parses_plugin_sources() {
        let cfg = parse_ok(PTP);
        assert_eq!(cfg.plugins.len(), 1);
        assert_eq!(cfg.other_sources, 1);
        assert_eq!(cfg.minimum_agreeing_sources, 1);
        let p = &cfg.plugins[0];
        assert_eq!(p.position, 2);
        assert_eq!(p.name, "ntpd_ptp#2");
        assert_eq!(p.poll_interval, -1);
        assert_eq!(p.poll_duration(), Duration::from_millis(500));
        assert_eq!(p.precision, Some(1e-7));
        let json: serde_json::Value = serde_json::from_str(&p.config_json).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"device": "/dev/ptp0", "readings": 9})
        );
    }

    #[test]
    fn translation_keeps_everything_else() {
        let cfg = parse_ok(PTP);
        let d = derive(&cfg, Path::new("/run/ntpd-host"), &[None]);
        let t: Table = d.text.parse().unwrap();
        let sources = t["source"].as_array().unwrap();
        assert_eq!(sources[0]["mode"].as_str(), Some("server"));
        assert_eq!(sources[0]["address"].as_str(), Some("ntp.example.org"));
        let sock = sources[1].as_table().unwrap();
        assert_eq!(sock["mode"].as_str(), Some("sock"));
        assert_eq!(sock["path"].as_str(), Some("/run/ntpd-host/source-2.sock"));
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
        assert_eq!(d.sockets, [PathBuf::from("/run/ntpd-host/source-2.sock")]);
        assert!(d.warnings.is_empty(), "{:?}", d.warnings);
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
"#;
        let cfg = parse_ok(text);
        let d = derive(&cfg, Path::new("/r"), &[Some(5e-8), Some(1.0), None]);
        assert_eq!(d.precisions, [5e-8, 2e-6, FALLBACK_PRECISION]);
        assert!(d.warnings.iter().any(|w| w.contains("#3: precision")));
        let t: Table = d.text.parse().unwrap();
        assert_eq!(t["source"][1]["accuracy"].as_float(), Some(1e-6));
    }

    #[test]
    fn existing_observation_path_is_kept() {
        let text = "[observability]\nobservation-path = \"/var/run/ntpd-rs/observe\"\n";
        let d = derive(&parse_ok(text), Path::new("/r"), &[]);
        assert_eq!(
            d.observation_path,
            PathBuf::from("/var/run/ntpd-rs/observe")
        );
    }

    #[test]
    fn warns_when_sources_cannot_agree() {
        let text = "[[source]]\nmode = \"plugin\"\npath = \"/a.so\"\nprecision = 1e-7\n";
        let d = derive(&parse_ok(text), Path::new("/r"), &[None]);
        assert_eq!(d.warnings.len(), 1);
        assert!(d.warnings[0].contains("minimum-agreeing-sources = 1"));
        // A pool counts its `count`.
        let text = "[[source]]\nmode = \"pool\"\naddress = \"p\"\ncount = 2\n\
                    [[source]]\nmode = \"plugin\"\npath = \"/a.so\"\nprecision = 1e-7\n";
        assert!(
            derive(&parse_ok(text), Path::new("/r"), &[None])
                .warnings
                .is_empty()
        );
    }

    #[test]
    fn socket_key_overrides_the_private_socket() {
        let text =
            "[[source]]\nmode = \"plugin\"\npath = \"/a.so\"\nsocket = \"/run/ntpd-rs/ptp.sock\"\n";
        let cfg = parse_ok(text);
        assert_eq!(
            cfg.plugins[0].socket_path(Path::new("/r")),
            PathBuf::from("/run/ntpd-rs/ptp.sock")
        );
    }

    #[test]
    fn errors_name_file_source_and_key() {
        let cases: &[(&str, &str)] = &[
            (
                "[[source]]\nmode = \"plugin\"\npath = \"/a.so\"\npoll-interval = 7\n",
                "/etc/ntpd-rs/ntp.toml: [[source]] #1: poll-interval: must be an integer from -1 (0.5 s) to 6 (64 s), log2 seconds; got 7",
            ),
            (
                "[[source]]\nmode = \"plugin\"\npath = \"/a.so\"\npoll-interval = -2\n",
                "[[source]] #1: poll-interval: must be an integer from -1",
            ),
            (
                "[[source]]\nmode = \"plugin\"\npath = \"lib.so\"\n",
                "[[source]] #1: path: \"lib.so\" is relative",
            ),
            (
                "[[source]]\nmode = \"plugin\"\n",
                "[[source]] #1: path: missing",
            ),
            (
                "[[source]]\nmode = \"server\"\naddress = \"x\"\n[[source]]\nmode = \"plugin\"\npath = \"/a.so\"\ndevice = \"/dev/ptp0\"\n",
                "[[source]] #2: device: unknown key for a plugin source; valid keys: mode, path",
            ),
            (
                "[[source]]\nmode = \"plugin\"\npath = \"/a.so\"\nprecision = 0\n",
                "[[source]] #1: precision: must be a number of seconds above 0",
            ),
            (
                "[[source]]\nmode = \"plugin\"\npath = \"/a.so\"\naccuracy = \"x\"\n",
                "[[source]] #1: accuracy: must be a number, got a string",
            ),
            (
                "[[source]]\nmode = \"plugin\"\npath = \"/a.so\"\nconfig = 3\n",
                "[[source]] #1: config: must be a table",
            ),
            (
                "[[source]]\nmode = \"plugin\"\npath = \"/a.so\"\nsample-timeout = 0\n",
                "[[source]] #1: sample-timeout: must be between 0.1 and 3600",
            ),
            (
                "[[source]]\nmode = \"plugin\"\npath = \"/a.so\"\nsocket = \"rel.sock\"\n",
                "[[source]] #1: socket: \"rel.sock\" is relative",
            ),
            (
                "[[source]\nmode = 1",
                "/etc/ntpd-rs/ntp.toml: invalid TOML (line 1)",
            ),
            (
                "[synchronization]\nminimum-agreeing-sources = 0\n",
                "synchronization.minimum-agreeing-sources: must be a positive integer",
            ),
        ];
        for (text, want) in cases {
            let got = parse_err(text);
            assert!(
                got.contains(want),
                "config:\n{text}\nwant: {want}\ngot:  {got}"
            );
            assert!(!got.contains('\n'), "one line: {got}");
        }
    }
}
