//! `run`, `bridge`, `validate` and `status`: the host's processes, wired
//! together.
//!
//! `run` checks the config, starts one worker per plugin source, writes the
//! derived ntpd-rs config, runs the real ntpd-rs daemon on it as a child of
//! this binary, serves its status and shuts everything down on SIGTERM or
//! SIGINT.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::signal::unix::{Signal, SignalKind, signal};

use crate::config::{self, HostConfig};
use crate::daemon::notify::{CHILD_NOTIFY_SOCKET, ChildNotice, ChildReadiness, SystemNotifier};
use crate::daemon::rundir::{self, Owners};
use crate::daemon::supervisor::{self, ProcessLauncher, Supervisor, remove_socket};
use crate::daemon::{clockbound, ntpd, privileges, status as status_io};
use crate::decide::daemon::{DaemonPolicy, DaemonVerdict};
use crate::decide::supervisor::{ProcessEnd, RestartTimes};
use crate::error::HostError;
use crate::loader::{self, LoadOptions};
use crate::protocol::status::{self, HostStatus, STATUS_SOCKET};
use crate::protocol::worker::WorkerIdentity;

/// Settings shared by `run`, `bridge`, `validate` and `status`.
#[derive(Clone, Debug)]
pub struct HostArgs {
    /// The ntpd-rs config file.
    pub config: PathBuf,
    /// Directory for sockets and the derived config.
    pub runtime_dir: PathBuf,
    /// Log level handed to the daemon and workers.
    pub log_level: Option<String>,
}

/// How long `run` waits for the plugins' precision estimates.
const ESTIMATE_WAIT: Duration = Duration::from_secs(5);

/// Reads and parses the config, then checks each plugin file (without
/// loading it). Errors are one line naming the file, source and key.
pub fn load_config(path: &Path) -> Result<HostConfig, HostError> {
    let text = std::fs::read_to_string(path).map_err(|source| HostError::ReadConfig {
        path: path.to_owned(),
        source,
    })?;
    let cfg = config::parse(path, &text)?;
    for p in &cfg.plugins {
        loader::check_file(
            &p.path,
            LoadOptions {
                allow_insecure: p.allow_insecure_plugin,
            },
        )
        .map_err(|error| HostError::PluginFile {
            origin: p.origin(),
            error,
        })?;
    }
    Ok(cfg)
}

fn write_file(path: &Path, text: &str) -> Result<(), HostError> {
    std::fs::write(path, text).map_err(|source| HostError::Create {
        path: path.to_owned(),
        what: "cannot write",
        source,
    })
}

/// The plugin sources' sockets of a `bridge` config: each needs a `socket`.
fn bridge_sockets(cfg: &HostConfig) -> Result<Vec<PathBuf>, HostError> {
    if cfg.plugins.is_empty() {
        return Err(HostError::NothingToBridge {
            file: cfg.file.clone(),
        });
    }
    cfg.plugins
        .iter()
        .map(|p| {
            p.socket
                .clone()
                .ok_or_else(|| HostError::BridgeSocket { origin: p.origin() })
        })
        .collect()
}

/// Runs ntpd-rs's own validation on a derived config text, in a private
/// temporary directory.
fn ntpd_validation(text: &str) -> Result<ntpd::Validation, HostError> {
    let dir = tempfile::Builder::new()
        .prefix("ntpd-host-validate-")
        .tempdir()
        .map_err(|source| HostError::Create {
            path: std::env::temp_dir(),
            what: "cannot create a temporary directory",
            source,
        })?;
    let file = dir.path().join("ntp.toml");
    write_file(&file, text)?;
    ntpd::validate(&file).map_err(|source| HostError::Start {
        what: "ntpd-rs's validation",
        source,
    })
}

/// Checks a config without starting anything; returns the lines to print.
/// With `bridge`, checks it as a `bridge` config (plugin sources with
/// sockets; no ntpd-rs settings).
pub fn validate(args: &HostArgs, bridge: bool) -> Result<Vec<String>, HostError> {
    let cfg = load_config(&args.config)?;
    if bridge {
        let sockets = bridge_sockets(&cfg)?;
        return Ok(vec![format!(
            "{}: ok: bridge with {} plugin source(s)",
            args.config.display(),
            sockets.len()
        )]);
    }
    let derived = config::derive(&cfg, &args.runtime_dir, &vec![None; cfg.plugins.len()]);
    let verdict = ntpd_validation(&derived.text)?;
    if !verdict.accepted {
        return Err(HostError::NtpdRejects {
            file: args.config.clone(),
            message: verdict.message,
        });
    }
    // A missing precision is no warning here: at run time the plugin gives
    // its own estimate (the fallback warning only applies when it cannot).
    Ok(vec![format!(
        "{}: ok: {} plugin source(s), {} other [[source]] entr{}",
        args.config.display(),
        cfg.plugins.len(),
        cfg.other_entries,
        if cfg.other_entries == 1 { "y" } else { "ies" }
    )])
}

fn log_filter(level: Option<&str>) -> String {
    level.unwrap_or("info").to_owned()
}

/// SIGTERM and SIGINT, listened to from the first moment of `run` and
/// `bridge`: whatever stage start-up is at, a signal ends it cleanly.
struct Stop {
    term: Signal,
    int: Signal,
}

impl Stop {
    fn listen() -> Result<Self, HostError> {
        let listen = |kind| {
            signal(kind).map_err(|source| HostError::Start {
                what: "the signal handlers",
                source,
            })
        };
        Ok(Self {
            term: listen(SignalKind::terminate())?,
            int: listen(SignalKind::interrupt())?,
        })
    }

    /// Waits for SIGTERM or SIGINT; returns its name.
    async fn requested(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}

/// Everything `run` and `bridge` started, to be stopped and removed on the
/// way out, whichever way that is.
struct Running {
    supervisor: Option<Arc<Supervisor>>,
    status_server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    clockbound: Option<tokio::task::JoinHandle<()>>,
    sockets: Vec<PathBuf>,
}

impl Running {
    fn new() -> Self {
        Self {
            supervisor: None,
            status_server: None,
            clockbound: None,
            sockets: Vec::new(),
        }
    }

    async fn stop(self) {
        if let Some(server) = self.status_server {
            server.abort();
        }
        // The segment is left as it is: its bound keeps growing at the
        // published drift and it goes void on its own.
        if let Some(publisher) = self.clockbound {
            publisher.abort();
        }
        if let Some(sup) = self.supervisor {
            sup.shutdown().await;
        }
        for socket in &self.sockets {
            remove_socket(socket);
        }
    }
}

/// The daemon's part of the host status, shared with the status server.
#[derive(Clone, Debug, Default)]
struct DaemonState {
    pid: Option<u32>,
    restarts: u64,
    last_end: Option<String>,
}

/// Serves the host's status on `path` (for its group only): `fixed` with
/// the supervisor's source states and the daemon's state filled in at each
/// request.
fn serve_status(
    path: &Path,
    owners: Owners,
    sup: Arc<Supervisor>,
    daemon: Arc<Mutex<DaemonState>>,
    bound: clockbound::Shared,
    fixed: HostStatus,
) -> Result<tokio::task::JoinHandle<std::io::Result<()>>, HostError> {
    let listener = status_io::bind(path).map_err(|source| HostError::Create {
        path: path.to_owned(),
        what: "cannot create the status socket",
        source,
    })?;
    rundir::status_socket(path, owners)?;
    Ok(tokio::spawn(status_io::serve(listener, move || {
        let d = daemon
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        HostStatus {
            sources: sup.snapshot(),
            daemon_pid: d.pid,
            daemon_restarts: d.restarts,
            daemon_last_end: d.last_end,
            clockbound: bound.lock().unwrap_or_else(PoisonError::into_inner).clone(),
            ..fixed.clone()
        }
    })))
}

/// The identity workers run as, and who owns what in the runtime
/// directory; the directory made ready.
fn prepare(
    args: &HostArgs,
    cfg: &HostConfig,
) -> Result<(Option<WorkerIdentity>, Owners), HostError> {
    let identity = privileges::resolve(&cfg.host, &cfg.file)?;
    let owners = Owners::for_workers(identity.as_ref());
    rundir::prepare(&args.runtime_dir, owners)?;
    Ok((identity, owners))
}

/// `ntpd-host run`: the daemon plus plugin workers.
pub async fn run(args: HostArgs) -> Result<(), HostError> {
    // Sockets the daemon creates come out 0770 (see rundir).
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(rundir::UMASK));
    let notifier = SystemNotifier::from_env();
    let mut stop = Stop::listen()?;
    let mut running = Running::new();
    let started = tokio::select! {
        started = start_run(&args, &mut running) => started,
        why = stop.requested() => {
            tracing::info!("{why} during start-up: shutting down");
            notifier.stopping(&format!("{why} during start-up"));
            running.stop().await;
            return Ok(());
        }
    };
    let outcome = match started {
        Ok(started) => {
            let readiness = ChildReadiness::bind(&args.runtime_dir.join(CHILD_NOTIFY_SOCKET))
                .map_err(|source| HostError::Start {
                    what: "the daemon's readiness socket",
                    source,
                })?;
            supervise_daemon(
                &started,
                args.log_level.as_deref(),
                &mut stop,
                &Readiness {
                    child: readiness,
                    system: notifier.clone(),
                },
            )
            .await
        }
        Err(e) => Err(e),
    };
    notifier.stopping(&match &outcome {
        Ok(()) => "stopping".to_owned(),
        Err(e) => format!("stopping: {e}"),
    });
    running.stop().await;
    outcome
}

/// What `run` has started before the daemon.
struct Started {
    /// The derived ntpd-rs config.
    derived_path: PathBuf,
    /// The daemon state the status shows.
    daemon_state: Arc<Mutex<DaemonState>>,
    /// How many plugin sources run.
    sources: usize,
}

/// The daemon child's readiness socket and the service manager's.
struct Readiness {
    child: ChildReadiness,
    system: SystemNotifier,
}

/// `run` up to the daemon's start: config, runtime directory, workers and
/// their estimates, the derived config, the status socket.
async fn start_run(args: &HostArgs, running: &mut Running) -> Result<Started, HostError> {
    let cfg = load_config(&args.config)?;
    tracing::info!(
        "starting {} plugin source(s) from {}",
        cfg.plugins.len(),
        args.config.display()
    );
    let (identity, owners) = prepare(args, &cfg)?;
    rundir::sources_dir(&args.runtime_dir, owners)?;

    // Let ntpd-rs check everything it will see before anything starts. It
    // runs configs its check warns about (ntp-daemon does), so its warnings
    // are passed on; a config it cannot load makes the daemon exit with
    // ntpd-rs's configuration status, which `run` then passes on.
    // It runs while the workers start (both take a process start; the
    // daemon starts only after both).
    let first = config::derive(&cfg, &args.runtime_dir, &vec![None; cfg.plugins.len()]);
    let validation = {
        let text = first.text.clone();
        tokio::task::spawn_blocking(move || ntpd_validation(&text))
    };

    let launcher = ProcessLauncher {
        log_filter: log_filter(args.log_level.as_deref()),
    };
    let times = RestartTimes::default();
    running.sockets.extend(first.sockets.iter().cloned());
    let sup = Arc::new(Supervisor::start(
        &launcher,
        times,
        supervisor::specs(
            &cfg.plugins,
            &first.sockets,
            times,
            identity.as_ref(),
            cfg.host.worker_memory_limit << 20,
        ),
    ));
    running.supervisor = Some(sup.clone());
    let verdict = validation.await.map_err(|e| HostError::Start {
        what: "ntpd-rs's validation",
        source: std::io::Error::other(e),
    })??;
    if !verdict.accepted {
        tracing::warn!(
            "ntpd-rs's validation of the derived config: {}",
            verdict.message
        );
    }
    // Give each plugin a moment to report its precision estimate.
    sup.wait_started(ESTIMATE_WAIT).await;
    #[allow(clippy::cast_precision_loss)] // ns estimates are small
    let estimates: Vec<Option<f64>> = sup
        .snapshot()
        .iter()
        .map(|s| s.precision_ns.map(|p| p as f64 * 1e-9))
        .collect();
    let derived = config::derive(&cfg, &args.runtime_dir, &estimates);
    for w in &derived.warnings {
        tracing::warn!("{w}");
    }
    let derived_path = args.runtime_dir.join("ntp.toml");
    rundir::write_private(&derived_path, &derived.text)?;
    tracing::info!(
        "derived ntpd-rs config written to {}",
        derived_path.display()
    );
    if derived.observation_path.starts_with(&args.runtime_dir) {
        running.sockets.push(derived.observation_path.clone());
    }

    let bound = clockbound::Shared::default();
    if let Some(settings) = clockbound::Settings::of(
        &cfg,
        &derived.sockets,
        &derived.observation_path,
        derived.steering,
    ) {
        running.clockbound = Some(tokio::spawn(clockbound::run(
            settings,
            sup.clone(),
            bound.clone(),
        )));
    }

    let status_path = args.runtime_dir.join(STATUS_SOCKET);
    running.sockets.push(status_path.clone());
    let daemon_state = Arc::new(Mutex::new(DaemonState::default()));
    running.status_server = Some(serve_status(
        &status_path,
        owners,
        sup.clone(),
        daemon_state.clone(),
        bound,
        HostStatus {
            version: env!("CARGO_PKG_VERSION").into(),
            mode: "run".into(),
            config_file: args.config.clone(),
            observation_path: Some(derived.observation_path.clone()),
            ..HostStatus::default()
        },
    )?);
    Ok(Started {
        derived_path,
        daemon_state,
        sources: cfg.plugins.len(),
    })
}

/// Runs the ntpd-rs daemon and carries out [`DaemonPolicy`]: a crash is
/// restarted with backoff, a deliberate exit ends `run` with its status.
/// Returns on SIGTERM or SIGINT (stopping the daemon) or that exit.
async fn supervise_daemon(
    started: &Started,
    log_level: Option<&str>,
    stop: &mut Stop,
    readiness: &Readiness,
) -> Result<(), HostError> {
    let state = &started.daemon_state;
    let set =
        |f: &dyn Fn(&mut DaemonState)| f(&mut state.lock().unwrap_or_else(PoisonError::into_inner));
    let mut policy = DaemonPolicy::new(RestartTimes::default());
    let mut announced = false;
    loop {
        let started_at = tokio::time::Instant::now();
        let mut command =
            ntpd::daemon_command(&started.derived_path, log_level, readiness.child.path());
        let end = match command.spawn() {
            Ok(mut daemon) => {
                let pid = daemon.id();
                set(&|d| d.pid = pid);
                tracing::info!("ntpd-rs daemon started (pid {})", pid.unwrap_or(0));
                loop {
                    tokio::select! {
                        why = stop.requested() => {
                            tracing::info!("{why}: shutting down");
                            readiness.system.stopping(&format!("{why}: shutting down"));
                            supervisor::stop_child(&mut daemon, Duration::from_secs(5)).await;
                            set(&|d| d.pid = None);
                            return Ok(());
                        }
                        status = daemon.wait() => break match status {
                            Ok(status) => ProcessEnd::of(status),
                            Err(e) => ProcessEnd::Lost(e.to_string()),
                        },
                        notice = readiness.child.next() => {
                            if let Ok(ChildNotice::Ready) = notice {
                                let restarts = state.lock().unwrap_or_else(PoisonError::into_inner).restarts;
                                let text = ready_status(started.sources, pid, restarts);
                                tracing::info!("ntpd-rs daemon ready: {text}");
                                if announced {
                                    readiness.system.status(&text);
                                } else {
                                    readiness.system.ready(&text);
                                    announced = true;
                                }
                            }
                        }
                    }
                }
            }
            Err(e) => ProcessEnd::Lost(format!("cannot be started: {e}")),
        };
        set(&|d| d.pid = None);
        let how = describe_end(&end);
        match policy.on_end(&end, started_at.elapsed()) {
            DaemonVerdict::Exit(code) => {
                tracing::error!(
                    "the ntpd-rs daemon {how} on its own: that is ntpd-rs's decision \
                     (70: for example its panic threshold on a too-large step; 77: no \
                     permission to control the clock; 78: its configuration); stopping \
                     everything and exiting with its status"
                );
                return Err(HostError::DaemonEnded {
                    how,
                    code: Some(code),
                });
            }
            DaemonVerdict::RestartAfter(wait) => {
                set(&|d| {
                    d.restarts += 1;
                    d.last_end = Some(how.clone());
                });
                tracing::warn!(
                    "the ntpd-rs daemon {how}; restarting it in {} s (the plugin workers keep running)",
                    wait.as_secs_f64()
                );
                readiness.system.status(&format!(
                    "ntpd-rs daemon {how}; restarting it in {} s",
                    wait.as_secs_f64()
                ));
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    why = stop.requested() => {
                        tracing::info!("{why}: shutting down");
                        return Ok(());
                    }
                }
            }
        }
    }
}

/// The service manager's status line once the daemon is up.
fn ready_status(sources: usize, pid: Option<u32>, restarts: u64) -> String {
    let pid = pid.map_or_else(String::new, |p| format!(" (pid {p})"));
    let restarts = match restarts {
        0 => String::new(),
        n => format!(", {n} restart(s)"),
    };
    format!("ntpd-rs daemon running{pid}{restarts}, {sources} plugin source(s)")
}

/// "exited with status N", "was killed by signal N", ...
fn describe_end(end: &ProcessEnd) -> String {
    end.to_string()
}

/// `ntpd-host bridge`: workers only, feeding a separately installed
/// ntpd-rs through the sockets its own config names.
pub async fn bridge(args: HostArgs) -> Result<(), HostError> {
    let notifier = SystemNotifier::from_env();
    let mut stop = Stop::listen()?;
    let mut running = Running::new();
    let outcome = tokio::select! {
        outcome = bridge_inner(&args, &mut running, &notifier) => outcome,
        why = stop.requested() => {
            tracing::info!("{why}: shutting down");
            Ok(())
        }
    };
    notifier.stopping("stopping");
    running.stop().await;
    outcome
}

async fn bridge_inner(
    args: &HostArgs,
    running: &mut Running,
    notifier: &SystemNotifier,
) -> Result<(), HostError> {
    let cfg = load_config(&args.config)?;
    let sockets = bridge_sockets(&cfg)?;
    if cfg.host.clockbound.is_some() {
        tracing::warn!(
            "{}: [ntpd-host] clockbound: ignored by `bridge`: the bound needs the daemon's \
             state, which only `run` follows",
            cfg.file.display()
        );
    }
    let (identity, owners) = prepare(args, &cfg)?;
    let launcher = ProcessLauncher {
        log_filter: log_filter(args.log_level.as_deref()),
    };
    let times = RestartTimes::default();
    let sup = Arc::new(Supervisor::start(
        &launcher,
        times,
        supervisor::specs(
            &cfg.plugins,
            &sockets,
            times,
            identity.as_ref(),
            cfg.host.worker_memory_limit << 20,
        ),
    ));
    running.supervisor = Some(sup.clone());
    let status_path = args.runtime_dir.join(STATUS_SOCKET);
    running.sockets.push(status_path.clone());
    running.status_server = Some(serve_status(
        &status_path,
        owners,
        sup,
        Arc::new(Mutex::new(DaemonState::default())),
        clockbound::Shared::default(),
        HostStatus {
            version: env!("CARGO_PKG_VERSION").into(),
            mode: "bridge".into(),
            config_file: args.config.clone(),
            ..HostStatus::default()
        },
    )?);
    notifier.ready(&format!(
        "{} plugin source(s) feeding their sockets",
        cfg.plugins.len()
    ));
    // Runs until a signal ends it (the caller's select).
    std::future::pending().await
}

/// `ntpd-host status`: the joined view, as text or JSON.
pub fn status(args: &HostArgs, json: bool) -> Result<String, HostError> {
    let path = args.runtime_dir.join(STATUS_SOCKET);
    let host = status_io::read_host(&path).map_err(|source| HostError::NoStatus {
        path: path.clone(),
        runtime_dir: args.runtime_dir.clone(),
        source,
    })?;
    let (daemon, daemon_error) = match &host.observation_path {
        Some(p) => match status_io::read_daemon(p) {
            Ok(v) => (Some(v), None),
            Err(e) => (None, Some(format!("{}: {e}", p.display()))),
        },
        None => (None, None),
    };
    let view = status::join(&host, daemon.as_ref(), ntpd_plugin_api::realtime_now_ns());
    Ok(if json {
        let mut text = serde_json::to_string(&view).expect("the status serializes");
        text.push('\n');
        text
    } else {
        status::render(&view, daemon_error.as_deref())
    })
}
