//! `run`, `bridge` and `validate`: the host's processes, wired together.
//!
//! `run` checks the config, starts one worker per plugin source, writes the
//! derived ntpd-rs config, runs the real ntpd-rs daemon on it as a child of
//! this binary (argv[0] = `ntp-daemon`), serves its status and shuts
//! everything down on SIGTERM or SIGINT.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};

use crate::config::{self, HostConfig};
use crate::plugin::{self, LoadOptions};
use crate::status::{self, HostStatus};
use crate::supervisor::{self, Options, Supervisor};

/// Settings shared by `run`, `bridge` and `validate`.
#[derive(Clone, Debug)]
pub struct HostArgs {
    /// The ntpd-rs config file.
    pub config: PathBuf,
    /// Directory for sockets and the derived config.
    pub runtime_dir: PathBuf,
    /// Log level handed to the daemon and workers.
    pub log_level: Option<String>,
}

/// Reads and parses the config, then checks each plugin file (without
/// loading it). Errors are one line naming the file, source and key.
pub fn load_config(path: &Path) -> Result<HostConfig, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    let cfg = config::parse(path, &text).map_err(|e| e.to_string())?;
    for p in &cfg.plugins {
        plugin::check_file(
            &p.path,
            LoadOptions {
                allow_insecure: p.allow_insecure_plugin,
            },
        )
        .map_err(|e| format!("{}: [[source]] #{}: path: {e}", path.display(), p.position))?;
    }
    Ok(cfg)
}

/// Runs ntpd-rs's own validation (`ntp-ctl validate`) on a derived config.
/// Returns ntpd-rs's complaint when it cannot load the file.
fn ntpd_validate(derived: &Path) -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find own executable: {e}"))?;
    let out = std::process::Command::new(exe)
        .arg0("ntp-ctl")
        .arg("validate")
        .arg("-c")
        .arg(derived)
        .output()
        .map_err(|e| format!("cannot run ntpd-rs validation: {e}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if let Some(at) = text.find("Could not load configuration:") {
        let msg = text[at + "Could not load configuration:".len()..]
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        return Err(msg);
    }
    Ok(())
}

fn write_private(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("{}: cannot write: {e}", path.display()))
}

fn ensure_runtime_dir(dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| {
        format!(
            "{}: cannot create the runtime directory: {e} (choose another with --runtime-dir)",
            dir.display()
        )
    })
}

/// Checks the plugin sources of a `bridge` config: each needs a `socket`.
fn bridge_sockets(args: &HostArgs, cfg: &HostConfig) -> Result<Vec<PathBuf>, String> {
    if cfg.plugins.is_empty() {
        return Err(format!(
            "{}: no [[source]] with mode = \"plugin\": nothing to bridge",
            args.config.display()
        ));
    }
    cfg.plugins
        .iter()
        .map(|p| {
            p.socket.clone().ok_or_else(|| {
                format!(
                    "{}: [[source]] #{}: socket: missing: bridge needs the path of a mode = \"sock\" source in your ntpd-rs config",
                    args.config.display(),
                    p.position
                )
            })
        })
        .collect()
}

/// Checks a config without starting anything; returns the lines to print.
/// With `bridge`, checks it as a `bridge` config (plugin sources with
/// sockets; no ntpd-rs settings).
pub fn validate(args: &HostArgs, bridge: bool) -> Result<Vec<String>, String> {
    let cfg = load_config(&args.config)?;
    if bridge {
        let sockets = bridge_sockets(args, &cfg)?;
        return Ok(vec![format!(
            "{}: ok: bridge with {} plugin source(s)",
            args.config.display(),
            sockets.len()
        )]);
    }
    let derived = config::derive(&cfg, &args.runtime_dir, &vec![None; cfg.plugins.len()]);
    let dir = tempdir()?;
    let file = dir.join("ntp.toml");
    write_private(&file, &derived.text)?;
    let result = ntpd_validate(&file);
    let _ = std::fs::remove_dir_all(&dir);
    result.map_err(|e| {
        format!(
            "{}: ntpd-rs rejects this config: {e}",
            args.config.display()
        )
    })?;
    // Missing precision is only a warning at run time (the plugin gives one).
    let mut lines: Vec<String> = derived
        .warnings
        .into_iter()
        .filter(|w| !w.contains(": precision:"))
        .map(|w| format!("warning: {w}"))
        .collect();
    if lines.iter().any(|l| l.contains("minimum-agreeing-sources")) {
        return Err(lines.remove(0).trim_start_matches("warning: ").to_owned());
    }
    lines.push(format!(
        "{}: ok: {} plugin source(s), {} other source(s)",
        args.config.display(),
        cfg.plugins.len(),
        cfg.other_sources
    ));
    Ok(lines)
}

fn tempdir() -> Result<PathBuf, String> {
    let dir = std::env::temp_dir().join(format!("ntpd-host-validate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: cannot create: {e}", dir.display()))?;
    Ok(dir)
}

fn log_filter(level: &Option<String>) -> String {
    level.clone().unwrap_or_else(|| "info".into())
}

/// Serves the host's status on `path`: `fixed` with the supervisor's live
/// source states filled in at each request.
fn serve_status(
    path: &Path,
    sup: std::sync::Arc<Supervisor>,
    fixed: HostStatus,
) -> tokio::task::JoinHandle<std::io::Result<()>> {
    tokio::spawn(status::serve(path.to_owned(), move || HostStatus {
        sources: sup.snapshot(),
        ..fixed.clone()
    }))
}

/// Waits for SIGTERM or SIGINT.
async fn terminated() -> &'static str {
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}

/// `ntpd-host run`: the daemon plus plugin workers.
pub async fn run(args: HostArgs) -> Result<(), String> {
    let cfg = load_config(&args.config)?;
    ensure_runtime_dir(&args.runtime_dir)?;

    // Let ntpd-rs check everything it will see before anything starts.
    let derived_path = args.runtime_dir.join("ntp.toml");
    let first = config::derive(&cfg, &args.runtime_dir, &vec![None; cfg.plugins.len()]);
    write_private(&derived_path, &first.text)?;
    ntpd_validate(&derived_path).map_err(|e| {
        format!(
            "{}: ntpd-rs rejects this config: {e}",
            args.config.display()
        )
    })?;

    let exe = std::env::current_exe().map_err(|e| format!("cannot find own executable: {e}"))?;
    let opts = Options::new(exe.clone(), log_filter(&args.log_level));
    let sup = Supervisor::start(&opts, &cfg.plugins, &first.sockets);
    // Give each plugin a moment to report its precision estimate.
    sup.wait_started(Duration::from_secs(5)).await;
    let estimates: Vec<Option<f64>> = sup
        .snapshot()
        .iter()
        .map(|s| s.precision_ns.map(|p| p as f64 * 1e-9))
        .collect();
    let derived = config::derive(&cfg, &args.runtime_dir, &estimates);
    for w in &derived.warnings {
        tracing::warn!("{w}");
    }
    write_private(&derived_path, &derived.text)?;
    tracing::info!(
        "derived ntpd-rs config written to {}",
        derived_path.display()
    );

    let mut daemon = tokio::process::Command::new(&exe);
    daemon
        .arg0("ntp-daemon")
        .arg("-c")
        .arg(&derived_path)
        .env(supervisor::PARENT_ENV, std::process::id().to_string());
    if let Some(level) = &args.log_level {
        daemon.arg("-l").arg(level);
    }
    daemon.kill_on_drop(true);
    let mut daemon = match daemon.spawn() {
        Ok(d) => d,
        Err(e) => {
            sup.shutdown().await;
            return Err(format!("cannot start the ntpd-rs daemon: {e}"));
        }
    };
    let daemon_pid = daemon.id();
    tracing::info!("ntpd-rs daemon started (pid {})", daemon_pid.unwrap_or(0));

    let sup = std::sync::Arc::new(sup);
    let status_path = args.runtime_dir.join(status::STATUS_SOCKET);
    let server = serve_status(
        &status_path,
        sup.clone(),
        HostStatus {
            version: env!("CARGO_PKG_VERSION").into(),
            mode: "run".into(),
            config_file: args.config.clone(),
            daemon_pid,
            observation_path: Some(derived.observation_path.clone()),
            sources: Vec::new(),
        },
    );

    let outcome = tokio::select! {
        why = terminated() => {
            tracing::info!("{why}: shutting down");
            Ok(())
        }
        status = daemon.wait() => Err(match status {
            Ok(s) => format!("the ntpd-rs daemon {}; shutting down", supervisor::describe_exit(&s)),
            Err(e) => format!("lost the ntpd-rs daemon: {e}"),
        }),
    };
    server.abort();
    supervisor::stop_child(&mut daemon, Duration::from_secs(5)).await;
    sup.shutdown().await;
    for s in derived.sockets.iter().chain([&status_path]) {
        supervisor::remove_socket(s);
    }
    if derived.observation_path.starts_with(&args.runtime_dir) {
        supervisor::remove_socket(&derived.observation_path);
    }
    outcome
}

/// `ntpd-host bridge`: workers only, feeding a separately installed
/// ntpd-rs through the sockets its own config names.
pub async fn bridge(args: HostArgs) -> Result<(), String> {
    let cfg = load_config(&args.config)?;
    let sockets = bridge_sockets(&args, &cfg)?;
    ensure_runtime_dir(&args.runtime_dir)?;
    let exe = std::env::current_exe().map_err(|e| format!("cannot find own executable: {e}"))?;
    let opts = Options::new(exe, log_filter(&args.log_level));
    let sup = std::sync::Arc::new(Supervisor::start(&opts, &cfg.plugins, &sockets));
    let status_path = args.runtime_dir.join(status::STATUS_SOCKET);
    let server = serve_status(
        &status_path,
        sup.clone(),
        HostStatus {
            version: env!("CARGO_PKG_VERSION").into(),
            mode: "bridge".into(),
            config_file: args.config.clone(),
            daemon_pid: None,
            observation_path: None,
            sources: Vec::new(),
        },
    );
    let why = terminated().await;
    tracing::info!("{why}: shutting down");
    server.abort();
    sup.shutdown().await;
    supervisor::remove_socket(&status_path);
    Ok(())
}

/// `ntpd-host status`: prints the joined view.
pub fn status(args: &HostArgs, json: bool) -> Result<String, String> {
    let path = args.runtime_dir.join(status::STATUS_SOCKET);
    let host = status::read_host(&path).map_err(|e| {
        format!(
            "{}: cannot read the host's status: {e} (is ntpd-host running with --runtime-dir {}?)",
            path.display(),
            args.runtime_dir.display()
        )
    })?;
    let (daemon, daemon_error) = match &host.observation_path {
        Some(p) => match status::read_daemon(p) {
            Ok(v) => (Some(v), None),
            Err(e) => (None, Some(format!("{}: {e}", p.display()))),
        },
        None => (None, None),
    };
    let now = ntpd_plugin_api::realtime_now_ns();
    Ok(if json {
        status::joined_json(&host, daemon.as_ref(), now).to_string()
    } else {
        status::render(&host, daemon.as_ref(), daemon_error.as_deref(), now)
    })
}
