//! The `ntpd-host` command line.
//!
//! One binary, several roles: started as `ntp-daemon` or `ntp-ctl` (argv[0])
//! it is the embedded ntpd-rs; otherwise it is the host with its
//! subcommands.

#![forbid(unsafe_code)]

use std::ffi::OsStr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use ntpd_host::config::{DEFAULT_CONFIG_PATH, DEFAULT_RUNTIME_DIR};
use ntpd_host::host::{self, HostArgs};
use ntpd_host::probe::{self, ProbeArgs};
use ntpd_host::supervisor::PARENT_ENV;
use ntpd_host::worker;

/// ntpd-rs with plugin time sources (PTP hardware clocks and more).
///
/// Without a subcommand it runs the daemon, like `ntp-daemon`.
#[derive(Parser, Debug)]
#[command(name = "ntpd-host", version, about)]
struct Cli {
    #[command(flatten)]
    host: HostOpts,
    #[command(subcommand)]
    command: Option<Command>,
}

/// Options of the host roles (`run`, `bridge`, `validate`, `status`).
#[derive(clap::Args, Debug, Clone, Default)]
struct HostOpts {
    /// The ntpd-rs configuration file [default: /etc/ntpd-rs/ntp.toml].
    #[arg(short = 'c', long = "config", value_name = "PATH")]
    config: Option<PathBuf>,
    /// Log level.
    #[arg(short = 'l', long = "log-level", value_name = "LEVEL")]
    log_level: Option<LogLevel>,
    /// Directory for the sockets, the derived ntpd-rs config and the status
    /// socket [default: /run/ntpd-host].
    #[arg(long, value_name = "DIR")]
    runtime_dir: Option<PathBuf>,
}

impl HostOpts {
    /// These options, with `fallback` filling in what is not given.
    fn or(self, fallback: &HostOpts) -> HostOpts {
        HostOpts {
            config: self.config.or_else(|| fallback.config.clone()),
            log_level: self.log_level.or(fallback.log_level),
            runtime_dir: self.runtime_dir.or_else(|| fallback.runtime_dir.clone()),
        }
    }
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

impl LogLevel {
    fn as_str(self) -> &'static str {
        match self {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run ntpd-rs with the plugin sources (the default).
    Run(HostOpts),
    /// Run only the plugin workers, feeding a separately installed ntpd-rs
    /// through the `socket` each plugin source names.
    Bridge(HostOpts),
    /// Check a config without starting anything.
    Validate {
        #[command(flatten)]
        host: HostOpts,
        /// Check it as a `bridge` config (plugin sources with sockets only).
        #[arg(long)]
        bridge: bool,
    },
    /// Show the daemon's sources joined with each plugin worker's state.
    Status {
        #[command(flatten)]
        host: HostOpts,
        /// Print one JSON document.
        #[arg(long)]
        json: bool,
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

/// Reads `--config` of `probe`: JSON text or `@FILE`; checks it is a JSON
/// object.
fn plugin_config_arg(arg: Option<String>) -> Result<String, String> {
    let Some(arg) = arg else {
        return Ok("{}".to_owned());
    };
    let (text, origin) = match arg.strip_prefix('@') {
        Some(file) => (
            std::fs::read_to_string(file).map_err(|e| format!("--config @{file}: {e}"))?,
            file.to_owned(),
        ),
        None => (arg, "--config".to_owned()),
    };
    match serde_json::from_str::<serde_json::Value>(&text) {
        Ok(serde_json::Value::Object(_)) => Ok(text),
        Ok(_) => Err(format!(
            "{origin}: the plugin config must be a JSON object, like {{\"device\": \"/dev/ptp0\"}}"
        )),
        Err(e) => Err(format!("{origin}: not valid JSON: {e}")),
    }
}

fn init_logging(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Dies with the parent: a child of the host must not outlive it. The host
/// names itself in [`PARENT_ENV`]; if it is already gone by the time the
/// death signal is armed, exit now.
fn die_with_parent() {
    let _ = rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::TERM));
    let expected = std::env::var(PARENT_ENV)
        .ok()
        .and_then(|p| p.parse::<i32>().ok());
    let parent = rustix::process::getppid().map(|p| p.as_raw_nonzero().get());
    if expected.is_some() && parent != expected {
        std::process::exit(1);
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn main() -> ExitCode {
    // argv[0] dispatch: the embedded ntpd-rs.
    let arg0 = std::env::args_os().next().unwrap_or_default();
    match PathBuf::from(&arg0).file_name().and_then(OsStr::to_str) {
        Some("ntp-daemon") => {
            die_with_parent();
            return match ntpd::daemon_main() {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("ntp-daemon: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        Some("ntp-ctl") => {
            return match ntpd::ctl_main() {
                Ok(code) => code,
                Err(e) => {
                    eprintln!("ntp-ctl: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        _ => {}
    }

    let cli = Cli::parse();
    let command = cli.command.unwrap_or(Command::Run(HostOpts::default()));
    let opts = match &command {
        Command::Run(o)
        | Command::Bridge(o)
        | Command::Validate { host: o, .. }
        | Command::Status { host: o, .. } => o.clone().or(&cli.host),
        _ => cli.host.clone(),
    };
    let level = opts.log_level.map(LogLevel::as_str);
    let host_args = HostArgs {
        config: opts.config.unwrap_or_else(|| DEFAULT_CONFIG_PATH.into()),
        runtime_dir: opts
            .runtime_dir
            .unwrap_or_else(|| DEFAULT_RUNTIME_DIR.into()),
        log_level: level.map(str::to_owned),
    };
    let result: Result<(), String> = match command {
        Command::Run(_) => {
            init_logging(level.unwrap_or("info"));
            runtime().block_on(host::run(host_args))
        }
        Command::Bridge(_) => {
            init_logging(level.unwrap_or("info"));
            runtime().block_on(host::bridge(host_args))
        }
        Command::Validate { bridge, .. } => {
            init_logging(level.unwrap_or("warn"));
            host::validate(&host_args, bridge).map(|lines| {
                for l in lines {
                    println!("{l}");
                }
            })
        }
        Command::Status { json, .. } => host::status(&host_args, json).map(|text| print!("{text}")),
        Command::Worker { name } => {
            die_with_parent();
            let filter = std::env::var("NTPD_HOST_LOG").unwrap_or_else(|_| "info".into());
            init_logging(&filter);
            let spec = std::env::var(worker::SPEC_ENV)
                .map_err(|_| format!("worker {name}: {} is not set", worker::SPEC_ENV))
                .and_then(|s| {
                    serde_json::from_str::<worker::WorkerSpec>(&s)
                        .map_err(|e| format!("worker {name}: bad {}: {e}", worker::SPEC_ENV))
                });
            match spec {
                Ok(spec) => {
                    let code = worker::run(spec);
                    return ExitCode::from(u8::try_from(code).unwrap_or(1));
                }
                Err(e) => Err(e),
            }
        }
        Command::Probe {
            plugin,
            plugin_config,
            count,
            interval,
            json,
            allow_insecure_plugin,
        } => (|| {
            if !(interval.is_finite() && (0.0..=86_400.0).contains(&interval)) {
                return Err("--interval: must be between 0 and 86400 seconds".to_owned());
            }
            let args = ProbeArgs {
                plugin,
                config_json: plugin_config_arg(plugin_config)?,
                count,
                interval: Duration::from_secs_f64(interval),
                json,
                allow_insecure: allow_insecure_plugin,
            };
            probe::run(&args, &mut std::io::stdout().lock())
        })(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(line) => {
            eprintln!("ntpd-host: {line}");
            ExitCode::FAILURE
        }
    }
}
