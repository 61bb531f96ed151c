//! The ntpd-rs configuration with plugin sources, and its translation.
//!
//! ntpd-host reads the ntpd-rs config file users already have. Every setting
//! stays as written, except that each `[[source]] mode = "plugin"` entry is
//! replaced by a `mode = "sock"` source on a private socket, which a plugin
//! worker feeds ([`derive`]). Everything but the plugin entries belongs to
//! ntpd-rs, which checks it itself. All of this is pure: parsing and
//! translation take text and return text.

mod derive;
mod host;
mod source;

use std::fmt;
use std::path::{Path, PathBuf};

use toml::{Table, Value};

pub use derive::{DERIVED_ALGORITHM, Derived, Steering, Warning, derive};
pub use host::{
    DEFAULT_METRICS_LISTEN, DEFAULT_WORKER_MEMORY_LIMIT_MIB, DEFAULT_WORKER_USER, HostSettings,
};
pub use source::{
    MAX_SOCKET_PATH, POLL_DEFAULT, POLL_MAX, POLL_MIN, READING_DEFAULT, READING_MIN,
    SAMPLE_TIMEOUT_DEFAULT, SOURCES_DIR, SourceConfig, poll_duration,
};

use source::PluginSourceToml;

/// The default ntpd-rs config path (the same as `ntp-daemon`'s).
pub const DEFAULT_CONFIG_PATH: &str = "/etc/ntpd-rs/ntp.toml";
/// The default directory for sockets and the derived config.
pub const DEFAULT_RUNTIME_DIR: &str = "/run/ntpd-host";

/// Where in the file a problem is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Section {
    /// The `[[source]]` entry at this 1-based position.
    Source(usize),
    /// The `[ntpd-host]` table.
    Host,
}

impl fmt::Display for Section {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Section::Source(n) => write!(f, "[[source]] #{n}"),
            Section::Host => write!(f, "[{}]", host::TABLE),
        }
    }
}

/// A configuration problem, reported as one line naming the file, the
/// section and the key.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// The config file.
    pub file: PathBuf,
    /// The section, if the problem is in one.
    pub section: Option<Section>,
    /// The key at fault, if any (a dotted path for nested keys).
    pub key: Option<String>,
    /// What is wrong and what would be valid.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(section) = &self.section {
            write!(f, ": {section}")?;
        }
        if let Some(key) = &self.key {
            write!(f, ": {key}")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// A parsed config file.
#[derive(Clone, Debug, PartialEq)]
pub struct HostConfig {
    /// Where it was read from (for messages).
    pub file: PathBuf,
    /// The whole document as written.
    pub table: Table,
    /// The `[ntpd-host]` settings.
    pub host: HostSettings,
    /// The plugin sources, in file order.
    pub plugins: Vec<SourceConfig>,
    /// How many `[[source]]` entries are not plugin sources (ntpd-rs's own).
    pub other_entries: usize,
}

/// Collapses white space (and line breaks) to single spaces.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Parses and validates the config text read from `file`.
pub fn parse(file: &Path, text: &str) -> Result<HostConfig, ConfigError> {
    let err = |section: Option<Section>, key: Option<String>, message: String| ConfigError {
        file: file.to_owned(),
        section,
        key,
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
        err(
            None,
            None,
            format!("invalid TOML{at}: {}", one_line(e.message())),
        )
    })?;

    let sources = match table.get("source") {
        None => &Vec::new(),
        Some(Value::Array(items)) => items,
        Some(_) => {
            return Err(err(
                None,
                Some("source".into()),
                "must be an array of tables ([[source]])".into(),
            ));
        }
    };

    let mut plugins = Vec::new();
    let mut other_entries = 0;
    for (i, item) in sources.iter().enumerate() {
        let position = i + 1;
        let Value::Table(t) = item else {
            return Err(err(
                Some(Section::Source(position)),
                None,
                "must be a table".into(),
            ));
        };
        if t.get("mode").and_then(Value::as_str) == Some("plugin") {
            plugins.push(parse_plugin(file, position, t)?);
        } else {
            other_entries += 1;
        }
    }

    let host = match table.get(host::TABLE) {
        None => HostSettings::default(),
        Some(v) if !v.is_table() => {
            return Err(err(
                Some(Section::Host),
                None,
                format!(
                    "must be a table of settings ([{}] with key = value lines), got {}",
                    host::TABLE,
                    v.type_str()
                ),
            ));
        }
        Some(v) => serde_path_to_error::deserialize(v.clone()).map_err(|e| {
            // Escaped, as in a plugin source: a quoted key may hold anything.
            let key = e.path().to_string().escape_debug().to_string();
            err(
                Some(Section::Host),
                (key != ".").then_some(key),
                one_line(e.inner().message()),
            )
        })?,
    };

    check_clockbound(&host, &plugins)
        .map_err(|(key, message)| err(Some(Section::Host), Some(key.to_owned()), message))?;

    Ok(HostConfig {
        file: file.to_owned(),
        table,
        host,
        plugins,
        other_entries,
    })
}

/// The ClockBound settings name a plugin source that exists.
fn check_clockbound(
    host: &HostSettings,
    plugins: &[SourceConfig],
) -> Result<(), (&'static str, String)> {
    let names = || {
        plugins
            .iter()
            .map(|p| format!("{:?}", p.name))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match &host.clockbound_source {
        Some(name) if !plugins.iter().any(|p| &p.name == name) => Err((
            "clockbound-source",
            if plugins.is_empty() {
                format!("{name:?}: there are no plugin sources")
            } else {
                format!(
                    "{name:?} is not a plugin source's name; the plugin sources are {}",
                    names()
                )
            },
        )),
        _ if host.clockbound.is_some() && plugins.is_empty() => Err((
            "clockbound",
            "needs a plugin source to build the bound on; add a [[source]] with mode = \"plugin\""
                .to_owned(),
        )),
        _ => Ok(()),
    }
}

impl HostConfig {
    /// The plugin source the ClockBound bound is built on, with its index
    /// among the plugin sources, when the segment is enabled.
    pub fn clockbound_source(&self) -> Option<(usize, &SourceConfig)> {
        self.host.clockbound.as_ref()?;
        match &self.host.clockbound_source {
            Some(name) => self
                .plugins
                .iter()
                .enumerate()
                .find(|(_, p)| &p.name == name),
            None => self.plugins.first().map(|p| (0, p)),
        }
    }
}

/// Validates one plugin source entry.
fn parse_plugin(file: &Path, position: usize, t: &Table) -> Result<SourceConfig, ConfigError> {
    let err = |key: &str, message: String| ConfigError {
        file: file.to_owned(),
        section: Some(Section::Source(position)),
        key: Some(key.to_owned()),
        message,
    };
    let raw: PluginSourceToml =
        serde_path_to_error::deserialize(Value::Table(t.clone())).map_err(|e| {
            // The key is as written, and TOML allows any character in a
            // quoted key: escape it, or the message is not one line.
            let key = e.path().to_string().escape_debug().to_string();
            err(&key, one_line(e.inner().message()))
        })?;

    let Some(path) = raw.path.map(|p| p.0) else {
        return Err(err(
            "path",
            "missing: give the absolute path of the plugin library (.so)".into(),
        ));
    };
    let name = raw.name.map_or_else(
        || {
            let stem = path
                .file_stem()
                .map_or_else(|| "plugin".into(), |s| s.to_string_lossy().into_owned());
            format!("{}#{position}", stem.trim_start_matches("lib"))
        },
        |n| n.0,
    );
    let config_json = raw.config.map_or_else(
        || Ok("{}".to_owned()),
        |t| {
            serde_json::to_string(&t.0).map_err(|e| {
                err(
                    "config",
                    format!("cannot be passed to the plugin as JSON: {e}"),
                )
            })
        },
    )?;

    Ok(SourceConfig {
        file: file.to_owned(),
        position,
        name,
        path,
        poll_interval: raw.poll_interval.map_or(POLL_DEFAULT, |p| p.0),
        reading_interval: raw.reading_interval.map_or(READING_DEFAULT, |r| r.0),
        startup_burst: raw.startup_burst.is_none_or(|f| f.0),
        precision: raw.precision.map(|p| p.0),
        accuracy: raw.accuracy.map(|a| a.0),
        socket: raw.socket.map(|s| s.0),
        sample_timeout: raw.sample_timeout.map_or(SAMPLE_TIMEOUT_DEFAULT, |s| s.0),
        allow_insecure_plugin: raw.allow_insecure_plugin.is_some_and(|f| f.0),
        config_json,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const FILE: &str = "/etc/ntpd-rs/ntp.toml";

    fn parse_ok(text: &str) -> HostConfig {
        parse(Path::new(FILE), text).unwrap()
    }

    fn parse_err(text: &str) -> String {
        parse(Path::new(FILE), text).unwrap_err().to_string()
    }

    pub(super) const PTP: &str = r#"
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
        assert_eq!(cfg.other_entries, 1);
        let p = &cfg.plugins[0];
        assert_eq!(p.position, 2);
        assert_eq!(p.name, "ntpd_ptp#2");
        assert_eq!(p.poll_interval, -1);
        assert_eq!(p.poll_duration(), Duration::from_millis(500));
        assert_eq!(p.precision, Some(1e-7));
        assert_eq!(p.sample_timeout, SAMPLE_TIMEOUT_DEFAULT);
        assert!(!p.allow_insecure_plugin);
        assert_eq!(p.origin(), "/etc/ntpd-rs/ntp.toml: [[source]] #2");
        let json: serde_json::Value = serde_json::from_str(&p.config_json).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"device": "/dev/ptp0", "readings": 9})
        );
    }

    #[test]
    fn defaults_and_every_key() {
        let cfg = parse_ok(
            "[[source]]\nmode = \"plugin\"\npath = \"/a.so\"\nname = \"phc\"\npoll-interval = 6\n\
             precision = 1\naccuracy = 1e-6\nsocket = \"/run/x.sock\"\nsample-timeout = 0.5\n\
             allow-insecure-plugin = true\n",
        );
        let p = &cfg.plugins[0];
        assert_eq!(
            (p.name.as_str(), p.poll_interval, p.precision, p.accuracy),
            ("phc", 6, Some(1.0), Some(1e-6))
        );
        assert_eq!(p.socket.as_deref(), Some(Path::new("/run/x.sock")));
        assert_eq!(p.sample_timeout, Duration::from_millis(500));
        assert!(p.allow_insecure_plugin);
        assert_eq!(p.config_json, "{}");
        let cfg = parse_ok("[[source]]\nmode = \"plugin\"\npath = \"/a.so\"\n");
        assert_eq!(cfg.plugins[0].poll_interval, POLL_DEFAULT);
        assert_eq!(cfg.host, HostSettings::default());
        let cfg = parse_ok("[ntpd-host]\nworker-user = \"nobody\"\n");
        assert_eq!(cfg.host.worker_user, "nobody");
    }

    #[test]
    fn clockbound_source_is_chosen_by_name_or_first() {
        let two = "[[source]]\nmode = \"plugin\"\npath = \"/a.so\"\nname = \"a\"\n\
                   [[source]]\nmode = \"plugin\"\npath = \"/b.so\"\nname = \"b\"\n";
        assert!(
            parse_ok(two).clockbound_source().is_none(),
            "off by default"
        );
        let cfg = parse_ok(&format!("{two}[ntpd-host]\nclockbound = true\n"));
        assert_eq!(
            cfg.clockbound_source().map(|(i, p)| (i, p.name.as_str())),
            Some((0, "a"))
        );
        let cfg = parse_ok(&format!(
            "{two}[ntpd-host]\nclockbound = true\nclockbound-source = \"b\"\n"
        ));
        assert_eq!(
            cfg.clockbound_source().map(|(i, p)| (i, p.name.as_str())),
            Some((1, "b"))
        );
        assert_eq!(
            parse_err(&format!(
                "{two}[ntpd-host]\nclockbound = true\nclockbound-source = \"c\"\n"
            )),
            "/etc/ntpd-rs/ntp.toml: [ntpd-host]: clockbound-source: \"c\" is not a plugin \
             source's name; the plugin sources are \"a\", \"b\""
        );
        assert_eq!(
            parse_err("[ntpd-host]\nclockbound = true\n"),
            "/etc/ntpd-rs/ntp.toml: [ntpd-host]: clockbound: needs a plugin source to build the \
             bound on; add a [[source]] with mode = \"plugin\""
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
        let cfg = parse_ok("[[source]]\nmode = \"plugin\"\npath = \"/a.so\"\n");
        assert_eq!(
            cfg.plugins[0].socket_path(Path::new("/r")),
            PathBuf::from("/r/sources/source-1.sock")
        );
    }

    #[test]
    fn names_are_printable_labels_and_the_host_table_a_table() {
        let name =
            |n: &str| format!("[[source]]\nmode = \"plugin\"\npath = \"/a.so\"\nname = {n}\n");
        for (text, want) in [
            (
                name("\"\""),
                "[[source]] #1: name: \"\" is not a name: use 1 to 64 printable characters on one line",
            ),
            (
                name("\"a\\nb\""),
                "[[source]] #1: name: \"a\\nb\" is not a name: use 1 to 64",
            ),
            (
                name("\"a\\u001bb\""),
                "[[source]] #1: name: \"a\\u{1b}b\" is not a name",
            ),
            (name("\"a\\u2028b\""), "is not a name"),
            (name(&format!("\"{}\"", "x".repeat(65))), "is not a name"),
            (
                name("3"),
                "[[source]] #1: name: must be a non-empty string on one line, got an integer",
            ),
            (
                "ntpd-host = []\n".to_owned(),
                "/etc/ntpd-rs/ntp.toml: [ntpd-host]: must be a table of settings ([ntpd-host] \
                 with key = value lines), got array",
            ),
        ] {
            let got = parse_err(&text);
            assert!(
                got.contains(want),
                "config:\n{text}\nwant: {want}\ngot:  {got}"
            );
            assert!(!got.contains('\n'), "one line: {got}");
        }
        assert_eq!(
            parse_ok(&name(&format!("\"{}\"", "é".repeat(64)))).plugins[0]
                .name
                .chars()
                .count(),
            64
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
                "[[source]]\nmode = \"plugin\"\npath = \"/a.so\"\npoll-interval = 1.5\n",
                "[[source]] #1: poll-interval: must be an integer from -1",
            ),
            (
                "[[source]]\nmode = \"plugin\"\npath = \"lib.so\"\n",
                "[[source]] #1: path: \"lib.so\" is relative",
            ),
            (
                "[[source]]\nmode = \"plugin\"\npath = 3\n",
                "[[source]] #1: path: must be a string, got an integer",
            ),
            (
                "[[source]]\nmode = \"plugin\"\n",
                "[[source]] #1: path: missing",
            ),
            (
                "[[source]]\nmode = \"server\"\naddress = \"x\"\n[[source]]\nmode = \"plugin\"\npath = \"/a.so\"\ndevice = \"/dev/ptp0\"\n",
                "[[source]] #2: device: unknown field `device`, expected one of `mode`, `path`",
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
                "[[source]]\nmode = \"plugin\"\npath = \"/a.so\"\naccuracy = 2\n",
                "[[source]] #1: accuracy: must be a number of seconds from 0 to 1, got 2",
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
                "[[source]]\nmode = \"plugin\"\npath = \"/a.so\"\nallow-insecure-plugin = \"yes\"\n",
                "[[source]] #1: allow-insecure-plugin: must be true or false, got a string",
            ),
            (
                "[[source]]\nmode = \"plugin\"\npath = \"/a.so\"\nsocket = \"/",
                "/etc/ntpd-rs/ntp.toml: invalid TOML (line 4): invalid basic string",
            ),
            (
                "[[source]\nmode = 1",
                "/etc/ntpd-rs/ntp.toml: invalid TOML (line 1)",
            ),
            (
                "source = 3\n",
                "/etc/ntpd-rs/ntp.toml: source: must be an array of tables",
            ),
            (
                "source = [3]\n",
                "/etc/ntpd-rs/ntp.toml: [[source]] #1: must be a table",
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
        let long = format!(
            "[[source]]\nmode = \"plugin\"\npath = \"/a.so\"\nsocket = \"/{}\"\n",
            "s".repeat(MAX_SOCKET_PATH)
        );
        assert!(parse_err(&long).contains("socket: path is 108 bytes"));
    }

    #[test]
    fn everything_else_is_ntpd_rs_business() {
        // Unknown ntpd-rs keys, other modes, tables: kept, not checked here.
        let cfg = parse_ok("[[source]]\nmode = \"carrier-pigeon\"\nwings = 2\n[whatever]\nx = 1\n");
        assert!(cfg.plugins.is_empty());
        assert_eq!(cfg.other_entries, 1);
        assert_eq!(cfg.table["whatever"]["x"].as_integer(), Some(1));
    }
}
