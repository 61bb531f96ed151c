//! The host's errors, and the exit status of each, in the spirit of
//! ntpd-rs's `exitcode` (BSD sysexits numbers where one fits).
//!
//! | status | meaning |
//! |---|---|
//! | 0 | success |
//! | 1 | `probe`: no sample succeeded |
//! | 2 | bad command line (clap) |
//! | 65 | a plugin could not be loaded or initialised (`probe`) or its file is refused |
//! | 66 | the config file cannot be read |
//! | 69 | `status`: no running host to ask |
//! | 70 | internal error |
//! | 71 | a process, thread or runtime could not be started |
//! | 73 | the runtime directory or a file in it cannot be created |
//! | 78 | the configuration is invalid (host keys, or ntpd-rs refuses it) |
//! | other | `run`: the ntpd-rs daemon exited with this status (78 config, 77 no permission, 70 software), passed through |

use std::path::PathBuf;

use crate::config::ConfigError;
use crate::loader::LoadError;

/// Exit statuses (see the module documentation).
pub mod exit {
    /// `probe`: no sample succeeded.
    pub const NO_SAMPLE: u8 = 1;
    /// A plugin could not be loaded or initialised.
    pub const PLUGIN: u8 = 65;
    /// The config file cannot be read.
    pub const NO_INPUT: u8 = 66;
    /// Nothing to ask (`status` without a running host).
    pub const UNAVAILABLE: u8 = 69;
    /// Internal error.
    pub const SOFTWARE: u8 = 70;
    /// A process, thread or runtime could not be started.
    pub const OS: u8 = 71;
    /// The runtime directory or a file in it cannot be created.
    pub const CANT_CREATE: u8 = 73;
    /// The configuration is invalid.
    pub const CONFIG: u8 = 78;
}

/// Everything that makes an `ntpd-host` command fail.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// The config file cannot be read.
    #[error("{path}: cannot read: {source}")]
    ReadConfig {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A host key is wrong.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A plugin source's library is refused before it is loaded.
    #[error("{origin}: path: {error}")]
    PluginFile {
        /// "FILE: [[source]] #N".
        origin: String,
        /// Why.
        error: LoadError,
    },
    /// `bridge` needs a `socket` per plugin source.
    #[error(
        "{origin}: socket: missing: bridge needs the path of a mode = \"sock\" source in your ntpd-rs config"
    )]
    BridgeSocket {
        /// "FILE: [[source]] #N".
        origin: String,
    },
    /// `bridge` with no plugin source.
    #[error("{file}: no [[source]] with mode = \"plugin\": nothing to bridge")]
    NothingToBridge {
        /// The config file.
        file: PathBuf,
    },
    /// ntpd-rs's own validation refuses the derived config.
    #[error("{file}: ntpd-rs rejects this config: {message}")]
    NtpdRejects {
        /// The user's config file.
        file: PathBuf,
        /// ntpd-rs's messages, on one line.
        message: String,
    },
    /// A plugin could not be loaded or initialised (`probe`).
    #[error(transparent)]
    Plugin(#[from] LoadError),
    /// A `probe` argument is wrong.
    #[error("{0}")]
    Usage(String),
    /// `probe`: every sample failed.
    #[error("{path}: no sample succeeded ({attempts} attempts)")]
    NoSample {
        /// The plugin.
        path: PathBuf,
        /// How many were tried.
        attempts: u32,
    },
    /// The runtime directory or a file in it cannot be created.
    #[error("{path}: {what}: {source}")]
    Create {
        /// The path.
        path: PathBuf,
        /// What was attempted.
        what: &'static str,
        /// Why.
        source: std::io::Error,
    },
    /// The runtime directory exists but must not be used.
    #[error(
        "{path}: refused as the runtime directory: it {why} (remove it, or choose another with --runtime-dir)"
    )]
    RuntimeDir {
        /// The directory.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// A process, thread or runtime could not be started.
    #[error("cannot start {what}: {source}")]
    Start {
        /// What.
        what: &'static str,
        /// Why.
        source: std::io::Error,
    },
    /// `status` found no running host.
    #[error(
        "{path}: cannot read the host's status: {source} (is ntpd-host running with --runtime-dir {runtime_dir}?)"
    )]
    NoStatus {
        /// The status socket.
        path: PathBuf,
        /// The runtime directory asked for.
        runtime_dir: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The ntpd-rs daemon ended on its own.
    #[error("the ntpd-rs daemon {how}; shutting down")]
    DaemonEnded {
        /// "exited with status N" or "was killed by signal N".
        how: String,
        /// Its exit status, if it exited.
        code: Option<i32>,
    },
    /// A worker was started without its spec.
    #[error("worker {name}: {problem}")]
    WorkerSpec {
        /// The source name.
        name: String,
        /// What is wrong.
        problem: String,
    },
}

impl HostError {
    /// The process exit status for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            HostError::ReadConfig { .. } => exit::NO_INPUT,
            HostError::Config(_)
            | HostError::BridgeSocket { .. }
            | HostError::NothingToBridge { .. }
            | HostError::NtpdRejects { .. } => exit::CONFIG,
            HostError::PluginFile { .. } | HostError::Plugin(_) => exit::PLUGIN,
            HostError::Usage(_) => 2,
            HostError::NoSample { .. } => exit::NO_SAMPLE,
            HostError::Create { .. } | HostError::RuntimeDir { .. } => exit::CANT_CREATE,
            HostError::Start { .. } => exit::OS,
            HostError::NoStatus { .. } => exit::UNAVAILABLE,
            HostError::DaemonEnded { code, .. } => code
                .and_then(|c| u8::try_from(c).ok())
                .filter(|c| *c != 0)
                .unwrap_or(exit::SOFTWARE),
            HostError::WorkerSpec { .. } => exit::SOFTWARE,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn daemon_exit_codes_pass_through() {
        let e = |code| HostError::DaemonEnded {
            how: String::new(),
            code,
        };
        assert_eq!(e(Some(78)).exit_code(), 78);
        assert_eq!(e(Some(77)).exit_code(), 77);
        assert_eq!(
            e(Some(0)).exit_code(),
            exit::SOFTWARE,
            "an exit the host did not ask for"
        );
        assert_eq!(e(None).exit_code(), exit::SOFTWARE);
        assert_eq!(e(Some(300)).exit_code(), exit::SOFTWARE);
    }

    #[test]
    fn categories_have_distinct_codes() {
        let io = || std::io::Error::other("x");
        let codes = [
            HostError::ReadConfig {
                path: PathBuf::new(),
                source: io(),
            }
            .exit_code(),
            HostError::NothingToBridge {
                file: PathBuf::new(),
            }
            .exit_code(),
            HostError::Plugin(LoadError::NotFound {
                path: PathBuf::new(),
            })
            .exit_code(),
            HostError::Usage(String::new()).exit_code(),
            HostError::NoSample {
                path: PathBuf::new(),
                attempts: 1,
            }
            .exit_code(),
            HostError::Create {
                path: PathBuf::new(),
                what: "",
                source: io(),
            }
            .exit_code(),
            HostError::Start {
                what: "",
                source: io(),
            }
            .exit_code(),
            HostError::NoStatus {
                path: PathBuf::new(),
                runtime_dir: PathBuf::new(),
                source: io(),
            }
            .exit_code(),
        ];
        let mut sorted = codes.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), codes.len(), "{codes:?}");
        assert!(!codes.contains(&0));
    }
}
