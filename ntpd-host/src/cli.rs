//! The command line, as clap types (also the source of the man pages and
//! shell completions).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// ntpd-rs with plugin time sources (PTP hardware clocks and more).
///
/// Without a subcommand it runs the daemon, like `ntp-daemon`.
#[derive(Parser, Debug)]
#[command(name = "ntpd-host", version, about)]
pub struct Cli {
    /// Options of the host roles.
    #[command(flatten)]
    pub host: HostOpts,
    /// What to do (default: run).
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Options of the host roles (`run`, `bridge`, `validate`, `status`,
/// `metrics`).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct HostOpts {
    /// The ntpd-rs configuration file [default: /etc/ntpd-rs/ntp.toml].
    #[arg(short = 'c', long = "config", value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Log level.
    #[arg(short = 'l', long = "log-level", value_name = "LEVEL")]
    pub log_level: Option<LogLevel>,
    /// Directory for the sockets, the derived ntpd-rs config and the status
    /// socket [default: /run/ntpd-host].
    #[arg(long, value_name = "DIR")]
    pub runtime_dir: Option<PathBuf>,
}

impl HostOpts {
    /// These options, with `fallback` filling in what is not given.
    #[must_use]
    pub fn or(self, fallback: &HostOpts) -> HostOpts {
        HostOpts {
            config: self.config.or_else(|| fallback.config.clone()),
            log_level: self.log_level.or(fallback.log_level),
            runtime_dir: self.runtime_dir.or_else(|| fallback.runtime_dir.clone()),
        }
    }
}

/// A log level.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LogLevel {
    /// Everything.
    Trace,
    /// Debugging detail.
    Debug,
    /// Normal operation.
    Info,
    /// Problems that are handled.
    Warn,
    /// Failures.
    Error,
}

impl LogLevel {
    /// The level's name as tracing filters and ntpd-rs take it.
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }
}

/// The subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run ntpd-rs with the plugin sources (the default).
    Run(HostOpts),
    /// Run only the plugin workers, feeding a separately installed ntpd-rs
    /// through the `socket` each plugin source names.
    Bridge(HostOpts),
    /// Check a config without starting anything.
    Validate {
        /// Options of the host roles.
        #[command(flatten)]
        host: HostOpts,
        /// Check it as a `bridge` config (plugin sources with sockets only).
        #[arg(long)]
        bridge: bool,
    },
    /// Show the daemon's sources joined with each plugin worker's state.
    Status {
        /// Options of the host roles.
        #[command(flatten)]
        host: HostOpts,
        /// Print one JSON document.
        #[arg(long)]
        json: bool,
    },
    /// Serve the host's and the daemon's metrics (OpenMetrics) over HTTP,
    /// like ntpd-rs's `ntp-metrics-exporter`: a process of its own that
    /// reads the status socket on each scrape of /metrics.
    Metrics {
        /// Options of the host roles.
        #[command(flatten)]
        host: HostOpts,
        /// Listen on this address, overriding `metrics-listen` of the config
        /// (the config is then not read) [default: 127.0.0.1:9976].
        #[arg(long, value_name = "IP:PORT")]
        listen: Option<SocketAddr>,
    },
    /// Load a plugin, print its info and capabilities, take samples.
    Probe {
        /// Path of the plugin library (.so).
        plugin: PathBuf,
        /// The plugin's configuration: JSON text, or @FILE to read it from a file.
        #[arg(long = "config", value_name = "JSON|@FILE")]
        plugin_config: Option<String>,
        /// Number of samples to take.
        #[arg(long, default_value_t = 5)]
        count: u32,
        /// Seconds between samples.
        #[arg(long, default_value_t = 1.0, value_name = "SECONDS")]
        interval: f64,
        /// Print one JSON object per line (info, capabilities, samples, summary).
        #[arg(long)]
        json: bool,
        /// Load the plugin even if someone other than root or you could modify it.
        #[arg(long)]
        allow_insecure_plugin: bool,
    },
    /// Internal: one plugin worker (started by `run` and `bridge`).
    #[command(hide = true)]
    Worker {
        /// The source's name (for `ps`); the spec comes from the environment.
        name: String,
    },
}
