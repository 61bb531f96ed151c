//! The protocol between the supervisor and a worker process, in one place.
//!
//! - **Start**: the supervisor executes its own binary image
//!   (`/proc/self/exe`, never the path on disk, so an upgraded package
//!   never pairs a new worker with an old supervisor) as
//!   `ntpd-host worker NAME`, with the [`WorkerSpec`] as JSON in the
//!   environment variable [`SPEC_ENV`] and its own pid in [`PARENT_ENV`].
//!   When the host runs as root the worker switches to the spec's
//!   [`WorkerIdentity`] before it loads the plugin.
//! - **Events**: the worker reports each [`Event`] as one line of JSON
//!   ([`encode`] / [`decode`], at most [`MAX_LINE`] bytes) on the pipe it
//!   finds as its standard input, which it moves off fd 0 before the plugin
//!   is loaded. Its standard output and error are the plugin's: whatever a
//!   plugin prints can never be read as, or split, an event; the supervisor
//!   logs it, labelled with the source. The worker's own log lines travel as
//!   [`Event::Log`].
//! - **End**: the worker's exit status is a [`WorkerExit`]; anything else
//!   (a signal, another status) is a crash.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::SourceConfig;
use crate::protocol::records::{CapabilitiesRecord, ErrorRecord, PluginIdentity, SampleRecord};

/// Environment variable carrying the worker's [`WorkerSpec`] as JSON.
pub const SPEC_ENV: &str = "NTPD_HOST_WORKER_SPEC";

/// Environment variable in which the host passes its pid to its children,
/// so a child that starts after the host died can tell.
pub const PARENT_ENV: &str = "NTPD_HOST_PARENT_PID";

/// Environment variable carrying the workers' log filter.
pub const LOG_ENV: &str = "NTPD_HOST_LOG";

/// The argument that starts a worker: `ntpd-host worker NAME`.
pub const WORKER_COMMAND: &str = "worker";

/// The longest event line the supervisor reads; a longer one is dropped as
/// garbled. Strings from a plugin are cut well below this in the worker.
pub const MAX_LINE: usize = 64 * 1024;

/// The longest plugin string (an error message, a description) an event
/// carries, bytes; longer ones are cut (at a character boundary) and marked.
pub const MAX_TEXT: usize = 1024;

/// Who a worker runs as, resolved by the host (as root) from
/// `[ntpd-host] worker-user` and `worker-groups`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct WorkerIdentity {
    /// The user's name (for messages).
    pub user: String,
    /// Its uid.
    pub uid: u32,
    /// Its primary gid.
    pub gid: u32,
    /// The supplementary groups kept.
    pub groups: Vec<u32>,
}

/// Everything a worker needs to know.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct WorkerSpec {
    /// The source, as configured.
    pub source: SourceConfig,
    /// Where the datagrams go.
    pub socket: PathBuf,
    /// Re-init backoff: the first wait.
    pub backoff_initial: Duration,
    /// Re-init backoff: the longest wait (further capped at the poll
    /// interval).
    pub backoff_max: Duration,
    /// Who the worker runs as; `None` when the host does not run as root
    /// (the worker keeps the host's identity, which has no privileges).
    pub identity: Option<WorkerIdentity>,
    /// The worker's data limit (`RLIMIT_DATA`), bytes.
    pub memory_limit: u64,
}

/// Which plugin call an event is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Call {
    /// Loading the library.
    Load,
    /// `init()` (with `capabilities()`).
    Init,
    /// `sample()`.
    Sample,
}

impl Call {
    /// The name as in logs: `load`, `init`, `sample`.
    pub fn name(self) -> &'static str {
        match self {
            Call::Load => "load",
            Call::Init => "init",
            Call::Sample => "sample",
        }
    }
}

/// What a worker does about a failed call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reaction {
    /// Skip this sample and go on polling.
    Skip,
    /// Drop the source and call `init` again after a backoff.
    Reinit,
    /// Stop this source for good.
    Stop,
}

/// One report from a worker to the supervisor.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(
    tag = "event",
    rename_all = "kebab-case",
    rename_all_fields = "kebab-case",
    deny_unknown_fields
)]
pub enum Event {
    /// The library is loaded.
    Loaded {
        /// The plugin's identity.
        plugin: PluginIdentity,
    },
    /// `init` succeeded; the source is polling.
    Ready {
        /// What the source reported it can do.
        capabilities: CapabilitiesRecord,
    },
    /// A sample was taken (and sent, if `delivered`).
    Sample {
        /// The sample.
        sample: SampleRecord,
        /// Whether the daemon's socket accepted the datagram.
        delivered: bool,
        /// From the start of the plugin call to the datagram sent, ns.
        latency_ns: u64,
    },
    /// A plugin call failed.
    Error {
        /// Which call.
        call: Call,
        /// The error.
        error: ErrorRecord,
        /// What the worker does about it.
        reaction: Reaction,
        /// Seconds until the next `init`, for [`Reaction::Reinit`].
        retry_in_s: Option<f64>,
    },
    /// A plugin call did not return within the source's `sample-timeout`;
    /// the worker exits with [`WorkerExit::Hung`].
    Hung {
        /// Which call hung.
        call: Call,
        /// How long it had been running, seconds.
        seconds: f64,
    },
    /// A sample the host refuses to pass on (it breaks the contract: see
    /// `decide::worker::check_sample`); it is counted, not sent.
    Rejected {
        /// The sample.
        sample: SampleRecord,
        /// Why, one line.
        reason: String,
    },
    /// A log line of the worker itself.
    Log {
        /// Its level.
        level: LogLevel,
        /// The message, one line.
        message: String,
    },
}

/// The level of an [`Event::Log`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogLevel {
    /// Debugging detail.
    Debug,
    /// Normal operation.
    Info,
    /// A handled problem.
    Warn,
    /// A failure.
    Error,
}

/// At most [`MAX_TEXT`] bytes of `text`, cut at a character boundary, with
/// " [cut]" appended when it was longer; line breaks become spaces.
pub fn bounded_text(text: &str) -> String {
    let mut end = text.len().min(MAX_TEXT);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let mut out: String = text[..end]
        .chars()
        .map(|c| {
            if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}') {
                ' '
            } else {
                c
            }
        })
        .collect();
    if end < text.len() {
        out.push_str(" [cut]");
    }
    out
}

/// Encodes an event as one line of JSON (without the newline).
pub fn encode(event: &Event) -> String {
    serde_json::to_string(event).expect("events always serialize")
}

/// Why a worker's line is no event: the JSON error, bounded and on one
/// line (it may quote the line).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DecodeError(String);

/// Decodes one line from a worker.
pub fn decode(line: &str) -> Result<Event, DecodeError> {
    serde_json::from_str(line).map_err(|e| DecodeError(bounded_text(&e.to_string())))
}

/// A worker's exit status, as the supervisor reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkerExit {
    /// The worker could not run at all (no runtime, no thread, no socket),
    /// or lost the supervisor. Restarted with backoff.
    Failed,
    /// The source is stopped for good (a configuration or fatal error):
    /// not restarted.
    Stopped,
    /// A plugin call hung past the deadline. Restarted with backoff.
    Hung,
}

impl WorkerExit {
    /// The process exit status.
    pub fn code(self) -> i32 {
        match self {
            WorkerExit::Failed => 1,
            WorkerExit::Stopped => 3,
            WorkerExit::Hung => 4,
        }
    }

    /// The exit for a process exit status, if it is one of ours.
    pub fn from_code(code: i32) -> Option<Self> {
        [WorkerExit::Failed, WorkerExit::Stopped, WorkerExit::Hung]
            .into_iter()
            .find(|e| e.code() == code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ntpd_plugin_api::{ErrorKind, Leap};

    #[test]
    fn events_round_trip_as_one_line() {
        let events = [
            Event::Loaded {
                plugin: PluginIdentity {
                    name: "ptp".into(),
                    ..PluginIdentity::default()
                },
            },
            Event::Sample {
                sample: SampleRecord {
                    system_time_ns: 1,
                    offset_ns: -2,
                    error_ns: 3,
                    reference_error_ns: 0,
                    leap: Leap::INSERT,
                    readings: 10,
                    flags: 0,
                },
                delivered: true,
                latency_ns: 55,
            },
            Event::Error {
                call: Call::Sample,
                error: ErrorRecord {
                    kind: ErrorKind(77),
                    message: "a\nb".into(),
                },
                reaction: Reaction::Skip,
                retry_in_s: None,
            },
            Event::Hung {
                call: Call::Init,
                seconds: 10.5,
            },
        ];
        for e in events {
            let line = encode(&e);
            assert!(!line.contains('\n'), "{line}");
            assert_eq!(decode(&line).unwrap(), e);
        }
        assert!(
            encode(&Event::Hung {
                call: Call::Sample,
                seconds: 1.0
            })
            .starts_with(r#"{"event":"hung","call":"sample""#)
        );
    }

    #[test]
    fn garbage_and_unknown_fields_are_not_events() {
        for line in [
            "",
            "{",
            r#"{"event":"nope"}"#,
            r#"{"event":"hung","call":"sample","seconds":1,"extra":2}"#,
            r#"{"event":"hung","call":"eat","seconds":1}"#,
        ] {
            assert!(decode(line).is_err(), "{line}");
        }
    }

    #[test]
    fn plugin_text_is_bounded_and_on_one_line() {
        assert_eq!(bounded_text("a\nb\r\tc"), "a b  c");
        let long = "é".repeat(MAX_TEXT);
        let cut = bounded_text(&long);
        assert!(cut.ends_with(" [cut]"));
        assert!(cut.len() <= MAX_TEXT + 6);
        assert_eq!(bounded_text("short"), "short");
    }

    #[test]
    fn exit_codes_are_distinct_and_round_trip() {
        for e in [WorkerExit::Failed, WorkerExit::Stopped, WorkerExit::Hung] {
            assert_eq!(WorkerExit::from_code(e.code()), Some(e));
        }
        assert_eq!(WorkerExit::from_code(0), None);
        assert_eq!(WorkerExit::from_code(101), None);
    }
}
