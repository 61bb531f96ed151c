//! One `[[source]] mode = "plugin"` entry: its keys as serde types.
//!
//! Every key has a type of its own whose `Deserialize` checks the value and
//! words the error ("must be an integer from -1 (0.5 s) to 6 (64 s)");
//! `deny_unknown_fields` refuses any other key, and `serde_path_to_error`
//! (in [`super::parse`]) names the key at fault.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};
use toml::{Table, Value};

/// Poll interval bounds the host accepts, log2 seconds.
pub const POLL_MIN: i8 = -1;
/// Poll interval bounds the host accepts, log2 seconds.
pub const POLL_MAX: i8 = 6;
/// The default poll interval, log2 seconds (1 s).
pub const POLL_DEFAULT: i8 = 0;
/// The shortest `reading-interval`, log2 seconds (1/16 s).
pub const READING_MIN: i8 = -4;
/// The default `reading-interval`, log2 seconds (0.25 s: four readings a
/// second, as chrony reads a PHC by default).
pub const READING_DEFAULT: i8 = -2;
/// The default `sample-timeout`.
pub const SAMPLE_TIMEOUT_DEFAULT: Duration = Duration::from_secs(10);
/// Longest unix socket path (`sun_path` is 108 bytes with the terminator).
pub const MAX_SOCKET_PATH: usize = 107;
/// The directory of the private sample sockets in the runtime directory.
pub const SOURCES_DIR: &str = "sources";

/// A plugin source, validated: what a worker runs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct SourceConfig {
    /// The config file it came from (for messages).
    pub file: PathBuf,
    /// 1-based position among all `[[source]]` entries.
    pub position: usize,
    /// Label for logs and status: the `name` key, or `<file stem>#<position>`.
    pub name: String,
    /// Absolute path of the plugin library.
    pub path: PathBuf,
    /// Poll interval, log2 seconds: one datagram per interval.
    pub poll_interval: i8,
    /// Reading interval, log2 seconds: how often the plugin is read; the
    /// readings of one poll interval are combined into its datagram.
    pub reading_interval: i8,
    /// Whether the source starts with a burst of readings and 1 s polls
    /// (see `decide::worker::Phase`), to be counted and locked sooner.
    pub startup_burst: bool,
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

impl SourceConfig {
    /// The poll interval as a duration.
    pub fn poll_duration(&self) -> Duration {
        poll_duration(self.poll_interval)
    }

    /// The socket this source's samples go to: the `socket` key, or a
    /// private one in `runtime_dir`'s `sources/` directory.
    pub fn socket_path(&self, runtime_dir: &Path) -> PathBuf {
        self.socket.clone().unwrap_or_else(|| {
            runtime_dir
                .join(SOURCES_DIR)
                .join(format!("source-{}.sock", self.position))
        })
    }

    /// "FILE: [[source]] #N", the prefix of every message about this source.
    pub fn origin(&self) -> String {
        format!("{}: [[source]] #{}", self.file.display(), self.position)
    }
}

/// 2^`log2` seconds.
pub fn poll_duration(log2: i8) -> Duration {
    Duration::from_secs_f64(2f64.powi(i32::from(log2)))
}

/// The keys of a plugin source as written.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct PluginSourceToml {
    #[allow(dead_code)] // always "plugin": only such entries are read here
    pub mode: String,
    pub path: Option<PluginPath>,
    pub name: Option<SourceName>,
    pub poll_interval: Option<PollInterval>,
    pub reading_interval: Option<ReadingInterval>,
    pub startup_burst: Option<Flag>,
    pub precision: Option<Precision>,
    pub accuracy: Option<Accuracy>,
    pub socket: Option<SocketPath>,
    pub sample_timeout: Option<SampleTimeout>,
    pub allow_insecure_plugin: Option<Flag>,
    pub config: Option<PluginTable>,
}

/// "a string", "an integer", ... for messages.
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

/// A number of seconds (TOML float or integer).
fn seconds(v: &Value) -> Result<f64, String> {
    match v {
        Value::Float(f) => Ok(*f),
        // Integers in configs are small; the range checks follow.
        #[allow(clippy::cast_precision_loss)]
        Value::Integer(i) => Ok(*i as f64),
        other => Err(format!("must be a number, got {}", type_name(other))),
    }
}

/// The longest source `name`, characters.
pub const MAX_NAME: usize = 64;

/// A source name: not blank, at most [`MAX_NAME`] characters, none of them
/// a control character or a line or paragraph separator.
pub fn is_label(s: &str) -> bool {
    !s.trim().is_empty()
        && s.chars().count() <= MAX_NAME
        && !s
            .chars()
            .any(|c| c.is_control() || matches!(c, '\u{2028}' | '\u{2029}'))
}

/// Defines a key type deserialized from a TOML value by a checking function.
macro_rules! key_type {
    ($(#[$m:meta])* $name:ident($inner:ty), |$v:ident| $check:expr) => {
        $(#[$m])*
        #[derive(Clone, Debug, PartialEq)]
        pub(super) struct $name(pub $inner);

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let $v = Value::deserialize(d)?;
                let checked: Result<$inner, String> = $check;
                checked.map($name).map_err(de::Error::custom)
            }
        }
    };
}

key_type!(
    /// `path`: an absolute path.
    PluginPath(PathBuf),
    |v| match v {
        Value::String(s) if Path::new(&s).is_absolute() => Ok(PathBuf::from(s)),
        Value::String(s) => Err(format!(
            "{s:?} is relative; give an absolute path like /usr/lib/ntpd-rs/libntpd_ptp.so"
        )),
        other => Err(format!("must be a string, got {}", type_name(&other))),
    }
);

key_type!(
    /// `name`: a non-empty label of printable characters (it appears in
    /// every log line and in `status`).
    SourceName(String),
    |v| match v {
        Value::String(s) if is_label(&s) => Ok(s),
        Value::String(s) => Err(format!(
            "{s:?} is not a name: use 1 to {MAX_NAME} printable characters on one line"
        )),
        other => Err(format!(
            "must be a non-empty string on one line, got {}",
            type_name(&other)
        )),
    }
);

key_type!(
    /// `poll-interval`: log2 seconds within the host's range.
    PollInterval(i8),
    |v| match v {
        Value::Integer(i) if (i64::from(POLL_MIN)..=i64::from(POLL_MAX)).contains(&i) => {
            Ok(i8::try_from(i).expect("range checked"))
        }
        other => Err(format!(
            "must be an integer from {POLL_MIN} (0.5 s) to {POLL_MAX} (64 s), log2 seconds; got {other}"
        )),
    }
);

key_type!(
    /// `reading-interval`: log2 seconds, from 1/16 s to the longest poll.
    ReadingInterval(i8),
    |v| match v {
        Value::Integer(i) if (i64::from(READING_MIN)..=i64::from(POLL_MAX)).contains(&i) => {
            Ok(i8::try_from(i).expect("range checked"))
        }
        other => Err(format!(
            "must be an integer from {READING_MIN} (1/16 s) to {POLL_MAX} (64 s), log2 seconds; got {other}"
        )),
    }
);

key_type!(
    /// `precision`: seconds, above 0 and at most 1.
    Precision(f64),
    |v| seconds(&v).and_then(|p| {
            if p.is_finite() && p > 0.0 && p <= 1.0 {
                Ok(p)
            } else {
                Err(format!(
                    "must be a number of seconds above 0 and at most 1, got {p}"
                ))
            }
        })
);

key_type!(
    /// `accuracy`: seconds, 0 to 1.
    Accuracy(f64),
    |v| seconds(&v).and_then(|a| {
            if a.is_finite() && (0.0..=1.0).contains(&a) {
                Ok(a)
            } else {
                Err(format!("must be a number of seconds from 0 to 1, got {a}"))
            }
        })
);

key_type!(
    /// `sample-timeout`: 0.1 to 3600 seconds.
    SampleTimeout(Duration),
    |v| seconds(&v).and_then(|s| {
            if s.is_finite() && (0.1..=3600.0).contains(&s) {
                Ok(Duration::from_secs_f64(s))
            } else {
                Err(format!("must be between 0.1 and 3600 seconds, got {s}"))
            }
        })
);

key_type!(
    /// `socket`: an absolute path short enough for a unix socket.
    SocketPath(PathBuf),
    |v| match v {
        Value::String(s) if !Path::new(&s).is_absolute() => {
            Err(format!("{s:?} is relative; give an absolute path"))
        }
        Value::String(s) if s.len() > MAX_SOCKET_PATH => Err(format!(
            "path is {} bytes; unix sockets allow at most {MAX_SOCKET_PATH}",
            s.len()
        )),
        Value::String(s) => Ok(PathBuf::from(s)),
        other => Err(format!("must be a string, got {}", type_name(&other))),
    }
);

key_type!(
    /// A boolean key.
    Flag(bool),
    |v| match v {
        Value::Boolean(b) => Ok(b),
        other => Err(format!("must be true or false, got {}", type_name(&other))),
    }
);

key_type!(
    /// `[source.config]`: a table, handed to the plugin as JSON.
    PluginTable(Table),
    |v| match v {
        Value::Table(t) => Ok(t),
        other => Err(format!(
            "must be a table ([source.config]), got {}",
            type_name(&other)
        )),
    }
);
