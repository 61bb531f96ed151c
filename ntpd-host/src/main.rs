//! The `ntpd-host` command line.
//!
//! One binary, several roles: started as `ntp-daemon` or `ntp-ctl` (argv[0])
//! it is the embedded ntpd-rs; otherwise it is the host with its
//! subcommands. Exit statuses: [`ntpd_host::error`].

#![forbid(unsafe_code)]

use std::ffi::OsStr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use ntpd_host::cli::{Cli, Command, HostOpts};
use ntpd_host::config::{DEFAULT_CONFIG_PATH, DEFAULT_RUNTIME_DIR};
use ntpd_host::daemon::host::{self, HostArgs};
use ntpd_host::daemon::metrics::{self, MetricsArgs};
use ntpd_host::daemon::ntpd::{CTL_ARG0, DAEMON_ARG0};
use ntpd_host::daemon::worker::{self, EventChannel};
use ntpd_host::error::HostError;
use ntpd_host::probe::{self, ProbeArgs};
use ntpd_host::protocol::worker::{LOG_ENV, PARENT_ENV, SPEC_ENV, WorkerSpec};

/// Reads `--config` of `probe`: JSON text or `@FILE`; checks it is a JSON
/// object.
fn plugin_config_arg(arg: Option<String>) -> Result<String, HostError> {
    let Some(arg) = arg else {
        return Ok("{}".to_owned());
    };
    let (text, origin) = match arg.strip_prefix('@') {
        Some(file) => (
            std::fs::read_to_string(file)
                .map_err(|e| HostError::Usage(format!("--config @{file}: {e}")))?,
            file.to_owned(),
        ),
        None => (arg, "--config".to_owned()),
    };
    match serde_json::from_str::<serde_json::Value>(&text) {
        Ok(serde_json::Value::Object(_)) => Ok(text),
        Ok(_) => Err(HostError::Usage(format!(
            "{origin}: the plugin config must be a JSON object, like {{\"device\": \"/dev/ptp0\"}}"
        ))),
        Err(e) => Err(HostError::Usage(format!("{origin}: not valid JSON: {e}"))),
    }
}

/// Logs to stderr, one line per event, with terminal colours only when
/// stderr is a terminal (not in journald or a CI log).
fn init_logging(filter: &str) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
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

fn runtime() -> Result<tokio::runtime::Runtime, HostError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| HostError::Start {
            what: "the async runtime",
            source,
        })
}

/// The embedded ntpd-rs roles, chosen by argv[0].
fn ntpd_role() -> Option<ExitCode> {
    let arg0 = std::env::args_os().next().unwrap_or_default();
    match PathBuf::from(&arg0).file_name().and_then(OsStr::to_str) {
        Some(DAEMON_ARG0) => {
            die_with_parent();
            if let Err(e) = ntpd_host::daemon::privileges::confine_daemon() {
                eprintln!("ntp-daemon: {e}");
                return Some(ExitCode::from(ntpd_host::error::exit::OS));
            }
            Some(match ntpd::daemon_main() {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("ntp-daemon: {e}");
                    ExitCode::FAILURE
                }
            })
        }
        Some(CTL_ARG0) => Some(match ntpd::ctl_main() {
            Ok(code) => code,
            Err(e) => {
                eprintln!("ntp-ctl: {e}");
                ExitCode::FAILURE
            }
        }),
        _ => None,
    }
}

/// `ntpd-host worker NAME`: the spec comes from the environment, events
/// and the worker's own log lines go to the supervisor over the event
/// channel (the pipe on stdin), and stdout and stderr are left to the
/// plugin.
fn worker_role(name: String) -> Result<ExitCode, HostError> {
    die_with_parent();
    let events = EventChannel::from_stdin().map_err(|source| HostError::Start {
        what: "the worker's event channel",
        source,
    })?;
    let filter = std::env::var(LOG_ENV).unwrap_or_else(|_| "info".into());
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(events.clone())
        .without_time()
        .with_level(false)
        .with_target(false)
        .with_ansi(false)
        // The message only: the supervisor labels it with the source.
        .fmt_fields(tracing_subscriber::fmt::format::debug_fn(
            |w, field, value| {
                if field.name() == "message" {
                    write!(w, "{value:?}")
                } else {
                    Ok(())
                }
            },
        ))
        .try_init();
    let text = std::env::var(SPEC_ENV).map_err(|_| HostError::WorkerSpec {
        name: name.clone(),
        problem: format!("{SPEC_ENV} is not set"),
    })?;
    let spec: WorkerSpec = serde_json::from_str(&text).map_err(|e| HostError::WorkerSpec {
        name,
        problem: format!("bad {SPEC_ENV}: {e}"),
    })?;
    let code = worker::run(&spec, &events).code();
    Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
}

fn probe_role(
    plugin: PathBuf,
    plugin_config: Option<String>,
    count: u32,
    interval: f64,
    json: bool,
    allow_insecure: bool,
) -> Result<(), HostError> {
    if !(interval.is_finite() && (0.0..=86_400.0).contains(&interval)) {
        return Err(HostError::Usage(
            "--interval: must be between 0 and 86400 seconds".to_owned(),
        ));
    }
    let args = ProbeArgs {
        plugin,
        config_json: plugin_config_arg(plugin_config)?,
        count,
        interval: Duration::from_secs_f64(interval),
        json,
        allow_insecure,
    };
    probe::run(&args, &mut std::io::stdout().lock())
}

/// `ntpd-host metrics`: `--listen` wins; without it the config is read for
/// `metrics-listen` (parsed only: the plugins are not this process's
/// business).
fn metrics_role(args: HostArgs, listen: Option<std::net::SocketAddr>) -> Result<(), HostError> {
    let configured = match listen {
        Some(_) => None,
        None => {
            let text =
                std::fs::read_to_string(&args.config).map_err(|source| HostError::ReadConfig {
                    path: args.config.clone(),
                    source,
                })?;
            ntpd_host::config::parse(&args.config, &text)?
                .host
                .metrics_listen
        }
    };
    let args = MetricsArgs {
        runtime_dir: args.runtime_dir,
        listen: metrics::listen_address(listen, configured),
    };
    runtime()?.block_on(metrics::run(args))
}

fn host_role(cli: Cli) -> Result<ExitCode, HostError> {
    let command = cli.command.unwrap_or(Command::Run(HostOpts::default()));
    let opts = match &command {
        Command::Run(o)
        | Command::Bridge(o)
        | Command::Validate { host: o, .. }
        | Command::Status { host: o, .. }
        | Command::Metrics { host: o, .. } => o.clone().or(&cli.host),
        Command::Probe { .. } | Command::Worker { .. } => cli.host.clone(),
    };
    let level = opts.log_level.map(ntpd_host::cli::LogLevel::as_str);
    let host_args = HostArgs {
        config: opts.config.unwrap_or_else(|| DEFAULT_CONFIG_PATH.into()),
        runtime_dir: opts
            .runtime_dir
            .unwrap_or_else(|| DEFAULT_RUNTIME_DIR.into()),
        log_level: level.map(str::to_owned),
    };
    match command {
        Command::Run(_) => {
            init_logging(level.unwrap_or("info"));
            runtime()?.block_on(host::run(host_args))?;
        }
        Command::Bridge(_) => {
            init_logging(level.unwrap_or("info"));
            runtime()?.block_on(host::bridge(host_args))?;
        }
        Command::Validate { bridge, .. } => {
            init_logging(level.unwrap_or("warn"));
            for line in host::validate(&host_args, bridge)? {
                println!("{line}");
            }
        }
        Command::Status { json, .. } => print!("{}", host::status(&host_args, json)?),
        Command::Metrics { listen, .. } => {
            init_logging(level.unwrap_or("info"));
            metrics_role(host_args, listen)?;
        }
        Command::Worker { name } => return worker_role(name),
        Command::Probe {
            plugin,
            plugin_config,
            count,
            interval,
            json,
            allow_insecure_plugin,
        } => probe_role(
            plugin,
            plugin_config,
            count,
            interval,
            json,
            allow_insecure_plugin,
        )?,
    }
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    if let Some(code) = ntpd_role() {
        return code;
    }
    match host_role(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ntpd-host: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
