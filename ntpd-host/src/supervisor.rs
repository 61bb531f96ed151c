//! The supervisor: starts one worker process per plugin source, follows its
//! events, restarts it when it crashes or hangs, and keeps the per-source
//! state that `ntpd-host status` shows.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::backoff::Backoff;
use crate::config::PluginSource;
use crate::worker::{self, Event, WorkerSpec};

/// Environment variable in which the host passes its pid to its children,
/// so a child that starts after the host died can tell.
pub const PARENT_ENV: &str = "NTPD_HOST_PARENT_PID";

/// Plugin identity as a worker reported it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct PluginIdentity {
    /// Plugin name.
    pub name: String,
    /// Vendor.
    pub vendor: String,
    /// Plugin version.
    pub version: String,
    /// API version it was built against.
    pub api_version: String,
}

/// What the host knows about one plugin source.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct SourceStatus {
    /// Source label.
    pub name: String,
    /// Position among `[[source]]` entries.
    pub position: usize,
    /// Plugin library path.
    pub path: PathBuf,
    /// The daemon socket the samples go to.
    pub socket: PathBuf,
    /// starting, running, reinit-wait, restart-wait or stopped.
    pub state: String,
    /// Worker process id, while one runs.
    pub pid: Option<u32>,
    /// Plugin identity, once loaded.
    pub plugin: Option<PluginIdentity>,
    /// Reading method, once initialised.
    pub method: Option<String>,
    /// Reference time scale, once initialised.
    pub timescale: Option<String>,
    /// Plugin's precision estimate, ns.
    pub precision_ns: Option<u64>,
    /// Plugin's description of the source.
    pub description: Option<String>,
    /// Device, from the capabilities' extensions.
    pub device: Option<String>,
    /// Clock name, from the capabilities' extensions.
    pub clock_name: Option<String>,
    /// Last offset, ns (reference minus system).
    pub last_offset_ns: Option<i64>,
    /// Last error bound, ns.
    pub last_error_ns: Option<u64>,
    /// System time of the last sample, ns since 1970.
    pub last_sample_time_ns: Option<i64>,
    /// Samples taken.
    pub samples: u64,
    /// Samples the daemon's socket accepted.
    pub delivered: u64,
    /// Failed plugin calls by error kind.
    pub errors: BTreeMap<String, u64>,
    /// Worker restarts (crash or hang).
    pub restarts: u64,
    /// Hangs detected.
    pub hangs: u64,
    /// The last error, one line.
    pub last_error: Option<String>,
}

impl SourceStatus {
    /// Applies one worker event.
    pub fn apply(&mut self, event: &Event) {
        match event {
            Event::Loaded {
                name,
                vendor,
                version,
                api_version,
            } => {
                self.plugin = Some(PluginIdentity {
                    name: name.clone(),
                    vendor: vendor.clone(),
                    version: version.clone(),
                    api_version: api_version.clone(),
                });
            }
            Event::Ready {
                method,
                timescale,
                precision_ns,
                description,
                extensions,
            } => {
                self.state = "running".into();
                self.method = Some(method.clone());
                self.timescale = Some(timescale.clone());
                self.precision_ns = Some(*precision_ns);
                self.description = Some(description.clone());
                let ext: serde_json::Value =
                    serde_json::from_str(extensions).unwrap_or(serde_json::Value::Null);
                self.device = ext
                    .get("device")
                    .and_then(|v| v.as_str())
                    .map(str::to_owned);
                self.clock_name = ext
                    .get("clock-name")
                    .and_then(|v| v.as_str())
                    .map(str::to_owned);
            }
            Event::Sample {
                offset_ns,
                error_ns,
                system_time_ns,
                delivered,
                ..
            } => {
                self.samples += 1;
                self.delivered += u64::from(*delivered);
                self.last_offset_ns = Some(*offset_ns);
                self.last_error_ns = Some(*error_ns);
                self.last_sample_time_ns = Some(*system_time_ns);
            }
            Event::Error {
                kind_name,
                message,
                reaction,
                call,
                ..
            } => {
                *self.errors.entry(kind_name.clone()).or_default() += 1;
                self.last_error = Some(format!("{call}: {kind_name}: {message}"));
                match reaction.as_str() {
                    "reinit" => self.state = "reinit-wait".into(),
                    "stop" => self.state = "stopped".into(),
                    _ => {}
                }
            }
            Event::Hung { call, seconds } => {
                self.hangs += 1;
                self.last_error = Some(format!("{call}() hung for {seconds:.1} s"));
            }
        }
    }
}

/// How workers are run.
#[derive(Clone, Debug)]
pub struct Options {
    /// The binary to re-execute as a worker.
    pub exe: PathBuf,
    /// Log level for workers (RUST_LOG-style filter).
    pub log_filter: String,
    /// Restart/re-init backoff: first wait.
    pub backoff_initial: Duration,
    /// Restart/re-init backoff: longest wait.
    pub backoff_max: Duration,
    /// Running this long without failing resets the restart backoff.
    pub healthy_after: Duration,
}

impl Options {
    /// The documented defaults (1 s doubling to 64 s, healthy after 5 min),
    /// with `exe` the running binary.
    pub fn new(exe: PathBuf, log_filter: String) -> Self {
        Self {
            exe,
            log_filter,
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(64),
            healthy_after: Duration::from_secs(300),
        }
    }
}

/// Running workers.
pub struct Supervisor {
    states: Vec<Arc<Mutex<SourceStatus>>>,
    tasks: tokio::sync::Mutex<JoinSet<()>>,
    shutdown: watch::Sender<bool>,
}

/// Starts one worker process for `spec`.
fn spawn_worker(opts: &Options, spec: &WorkerSpec) -> std::io::Result<Child> {
    let mut cmd = Command::new(&opts.exe);
    cmd.arg("worker")
        .arg(&spec.source.name)
        .env(
            worker::SPEC_ENV,
            serde_json::to_string(spec).expect("spec serializes"),
        )
        .env("NTPD_HOST_LOG", &opts.log_filter)
        .env(PARENT_ENV, std::process::id().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    cmd.spawn()
}

/// Sends SIGTERM, waits up to `grace`, then SIGKILL; reaps the child.
pub async fn stop_child(child: &mut Child, grace: Duration) {
    if let Some(pid) = child
        .id()
        .and_then(|p| rustix::process::Pid::from_raw(p as i32))
    {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    }
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        let _ = child.start_kill();
        let _ = child.wait().await;
    }
}

async fn supervise(
    opts: Options,
    spec: WorkerSpec,
    state: Arc<Mutex<SourceStatus>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let name = spec.source.name.clone();
    let mut backoff = Backoff::new(opts.backoff_initial, opts.backoff_max, opts.healthy_after);
    // A worker that sends nothing for this long is wedged beyond what its own
    // deadline catches: kill it.
    let silence_limit =
        spec.source.sample_timeout + spec.source.poll_duration() * 2 + Duration::from_secs(10);
    loop {
        let started = Instant::now();
        let mut child = match spawn_worker(&opts, &spec) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!("{name}: cannot start worker: {e}");
                let mut s = state.lock().expect("state lock");
                s.state = "stopped".into();
                s.last_error = Some(format!("cannot start worker: {e}"));
                return;
            }
        };
        {
            let mut s = state.lock().expect("state lock");
            s.pid = child.id();
            if s.state != "reinit-wait" {
                s.state = "starting".into();
            }
        }
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut lines = BufReader::new(stdout).lines();
        let mut killed_for_silence = false;
        loop {
            tokio::select! {
                line = tokio::time::timeout(silence_limit, lines.next_line()) => match line {
                    Ok(Ok(Some(line))) => match serde_json::from_str::<Event>(&line) {
                        Ok(event) => state.lock().expect("state lock").apply(&event),
                        Err(e) => tracing::warn!("{name}: unreadable worker event ({e}): {line}"),
                    },
                    Ok(_) => break,
                    Err(_) => {
                        tracing::error!(
                            "{name}: worker sent nothing for {:.0} s; killing it",
                            silence_limit.as_secs_f64()
                        );
                        killed_for_silence = true;
                        let _ = child.start_kill();
                        break;
                    }
                },
                _ = shutdown.changed() => {
                    stop_child(&mut child, Duration::from_secs(2)).await;
                    let mut s = state.lock().expect("state lock");
                    s.pid = None;
                    s.state = "stopped".into();
                    return;
                }
            }
        }
        let status = child.wait().await;
        let ran_for = started.elapsed();
        if *shutdown.borrow() {
            let mut s = state.lock().expect("state lock");
            s.pid = None;
            s.state = "stopped".into();
            return;
        }
        let code = status.as_ref().ok().and_then(|s| s.code());
        let how = match &status {
            Ok(s) => describe_exit(s),
            Err(e) => format!("could not be waited for: {e}"),
        };
        {
            let mut s = state.lock().expect("state lock");
            s.pid = None;
            if code == Some(worker::EXIT_STOP) {
                s.state = "stopped".into();
                tracing::error!(
                    "{name}: source stopped: {}",
                    s.last_error.clone().unwrap_or_default()
                );
                return;
            }
            s.restarts += 1;
            s.state = "restart-wait".into();
            if code != Some(worker::EXIT_HUNG) {
                s.last_error = Some(if killed_for_silence {
                    "worker went silent and was killed".to_owned()
                } else {
                    format!("worker {how}")
                });
            }
        }
        let wait = backoff.failure(ran_for);
        tracing::warn!(
            "{name}: worker {how}; restarting in {} s",
            wait.as_secs_f64()
        );
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => {
                state.lock().expect("state lock").state = "stopped".into();
                return;
            }
        }
    }
}

/// "exited with status N" or "was killed by signal N".
pub fn describe_exit(status: &std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(sig)) => format!("was killed by signal {sig}"),
        _ => "ended".to_owned(),
    }
}

impl Supervisor {
    /// Starts a worker for each source, sending to `sockets[i]`.
    pub fn start(opts: &Options, sources: &[PluginSource], sockets: &[PathBuf]) -> Self {
        let (shutdown, _) = watch::channel(false);
        let mut tasks = JoinSet::new();
        let mut states = Vec::new();
        for (source, socket) in sources.iter().zip(sockets) {
            let state = Arc::new(Mutex::new(SourceStatus {
                name: source.name.clone(),
                position: source.position,
                path: source.path.clone(),
                socket: socket.clone(),
                state: "starting".into(),
                ..SourceStatus::default()
            }));
            let spec = WorkerSpec {
                source: source.clone(),
                socket: socket.clone(),
                backoff_initial: opts.backoff_initial.as_secs_f64(),
                backoff_max: opts.backoff_max.as_secs_f64(),
            };
            tasks.spawn(supervise(
                opts.clone(),
                spec,
                state.clone(),
                shutdown.subscribe(),
            ));
            states.push(state);
        }
        Self {
            states,
            tasks: tokio::sync::Mutex::new(tasks),
            shutdown,
        }
    }

    /// A snapshot of every source's state.
    pub fn snapshot(&self) -> Vec<SourceStatus> {
        self.states
            .iter()
            .map(|s| s.lock().expect("state lock").clone())
            .collect()
    }

    /// Waits until every source has left the `starting` state, or `timeout`.
    pub async fn wait_started(&self, timeout: Duration) {
        let until = Instant::now() + timeout;
        while Instant::now() < until {
            if self.snapshot().iter().all(|s| s.state != "starting") {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops every worker and waits for them.
    pub async fn shutdown(&self) {
        let _ = self.shutdown.send(true);
        let mut tasks = self.tasks.lock().await;
        while tasks.join_next().await.is_some() {}
    }
}

/// Removes a socket file if it is there.
pub fn remove_socket(path: &Path) {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!("cannot remove {}: {e}", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_update_the_status() {
        let mut s = SourceStatus::default();
        s.apply(&Event::Ready {
            method: "extended".into(),
            timescale: "utc".into(),
            precision_ns: 300,
            description: "d".into(),
            extensions: r#"{"device":"/dev/ptp0","clock-name":"ptp_kvm"}"#.into(),
        });
        assert_eq!(s.state, "running");
        assert_eq!(s.device.as_deref(), Some("/dev/ptp0"));
        assert_eq!(s.clock_name.as_deref(), Some("ptp_kvm"));
        s.apply(&Event::Sample {
            offset_ns: 12,
            error_ns: 3,
            system_time_ns: 5,
            leap: "none".into(),
            readings: 5,
            delivered: false,
            latency_ns: 1,
        });
        assert_eq!((s.samples, s.delivered, s.last_offset_ns), (1, 0, Some(12)));
        s.apply(&Event::Error {
            kind: 2,
            kind_name: "unavailable".into(),
            message: "/dev/ptp0: gone".into(),
            reaction: "reinit".into(),
            call: "sample".into(),
            retry_in: Some(1.0),
        });
        assert_eq!(s.state, "reinit-wait");
        assert_eq!(s.errors["unavailable"], 1);
        assert!(s.last_error.as_deref().unwrap().contains("/dev/ptp0: gone"));
    }
}
