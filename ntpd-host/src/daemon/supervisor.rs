//! The supervisor: starts one worker process per plugin source, follows its
//! events, and carries out the restart policy of [`crate::decide`]: a
//! crashed, hung or silent worker is restarted with backoff, a stopped
//! source stays stopped. A supervising task that itself fails (a bug in the
//! host) is noticed and restarted, so no source's status freezes.
//!
//! Worker processes sit behind [`Launcher`] and [`WorkerChild`], so the
//! supervision is tested with tokio's paused clock and scripted children.

use std::collections::HashMap;
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, BufReader};
use tokio::net::unix::pipe;
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio::task::{Id, JoinHandle, JoinSet};
use tokio::time::Instant;

use crate::decide::source::{SourceState, SourceStatus};
use crate::decide::supervisor::{
    EndCause, ProcessEnd, RestartPolicy, RestartTimes, Verdict, silence_limit,
};
use crate::protocol::worker::{self as proto, Event, LogLevel, WorkerSpec};

/// The running binary's image: executing it (not the path it was started
/// from) starts the very same program, even after a package upgrade
/// replaced the file on disk.
pub const SELF_EXE: &str = "/proc/self/exe";

/// How long a stopping child gets between SIGTERM and SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(2);

/// One line from a worker.
#[derive(Debug)]
pub enum Line {
    /// A well-formed event.
    Event(Event),
    /// Something that is not an event (logged, otherwise ignored).
    Garbled(String),
}

/// Starts worker processes.
pub trait Launcher: Clone + Send + Sync + 'static {
    /// A running worker.
    type Child: WorkerChild;
    /// Starts a worker for `spec`.
    fn launch(&self, spec: &WorkerSpec) -> std::io::Result<Self::Child>;
}

/// A running worker process.
pub trait WorkerChild: Send + 'static {
    /// Its process id.
    fn pid(&self) -> Option<u32>;
    /// Its next line; `None` when it closed its event channel.
    fn next_line(&mut self) -> impl Future<Output = Option<Line>> + Send;
    /// Kills it at once (SIGKILL).
    fn kill(&mut self);
    /// Asks it to stop (SIGTERM), kills it after `grace`, and reaps it.
    fn terminate(&mut self, grace: Duration) -> impl Future<Output = ()> + Send;
    /// Waits for it to end.
    fn wait(&mut self) -> impl Future<Output = ProcessEnd> + Send;
}

/// The real launcher: re-executes this binary as `ntpd-host worker NAME`,
/// with the event channel as its standard input and its standard output
/// and error (the plugin's prints) read into the log, labelled.
#[derive(Clone, Debug)]
pub struct ProcessLauncher {
    /// The workers' log filter.
    pub log_filter: String,
}

/// A real worker process.
pub struct ProcessChild {
    child: Child,
    events: BufReader<pipe::Receiver>,
}

/// The longest line of a plugin's output logged as it is; the rest of a
/// longer line is cut.
pub const MAX_OUTPUT_LINE: usize = 4096;

/// A line read with a length limit.
#[derive(Debug, PartialEq, Eq)]
pub enum BoundedLine {
    /// A line (without its newline; the last one may have had none).
    Line(String),
    /// A line longer than the limit: its first `limit` bytes, and its
    /// length.
    TooLong(String, usize),
}

/// Reads one line of at most `limit` bytes (lossily decoded); a longer line
/// is consumed to its end and reported as [`BoundedLine::TooLong`]. `None`
/// at the end of the stream.
pub async fn read_bounded_line<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    limit: usize,
) -> std::io::Result<Option<BoundedLine>> {
    let mut line = Vec::new();
    let mut total = 0usize;
    loop {
        let buf = reader.fill_buf().await?;
        if buf.is_empty() {
            if total == 0 {
                return Ok(None);
            }
            break;
        }
        let (chunk, found) = match buf.iter().position(|b| *b == b'\n') {
            Some(at) => (&buf[..at], true),
            None => (buf, false),
        };
        let room = limit.saturating_sub(line.len());
        line.extend_from_slice(&chunk[..chunk.len().min(room)]);
        total += chunk.len();
        let used = chunk.len() + usize::from(found);
        reader.consume(used);
        if found {
            break;
        }
    }
    let text = String::from_utf8_lossy(&line).into_owned();
    Ok(Some(if total > limit {
        BoundedLine::TooLong(text, total)
    } else {
        BoundedLine::Line(text)
    }))
}

/// Logs what a worker's plugin prints on `stream`, a line at a time,
/// labelled with the source, until the stream ends.
async fn log_output<R: AsyncRead + Unpin>(name: String, stream: &'static str, output: R) {
    let mut reader = BufReader::new(output);
    while let Ok(Some(line)) = read_bounded_line(&mut reader, MAX_OUTPUT_LINE).await {
        match line {
            BoundedLine::Line(text) => {
                tracing::info!(source = %name, stream, "plugin output: {}", proto::bounded_text(&text));
            }
            BoundedLine::TooLong(text, len) => tracing::info!(
                source = %name,
                stream,
                "plugin output ({len} bytes, cut): {}",
                proto::bounded_text(&text)
            ),
        }
    }
}

impl Launcher for ProcessLauncher {
    type Child = ProcessChild;

    fn launch(&self, spec: &WorkerSpec) -> std::io::Result<ProcessChild> {
        let (events, events_write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
        let mut cmd = std::process::Command::new(SELF_EXE);
        cmd.arg0("ntpd-host")
            .arg(proto::WORKER_COMMAND)
            .arg(&spec.source.name)
            .env(
                proto::SPEC_ENV,
                serde_json::to_string(spec).expect("specs serialize"),
            )
            .env(proto::LOG_ENV, &self.log_filter)
            .env(proto::PARENT_ENV, std::process::id().to_string())
            .env_remove(crate::daemon::notify::NOTIFY_ENV)
            .stdin(Stdio::from(events_write))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // The command (and with it the parent's copy of the pipe's write
        // end) is dropped at the end of this function: the channel ends when
        // the worker does.
        let mut child = Command::from(cmd).kill_on_drop(true).spawn()?;
        let name = spec.source.name.clone();
        if let Some(out) = child.stdout.take() {
            tokio::spawn(log_output(name.clone(), "stdout", out));
        }
        if let Some(err) = child.stderr.take() {
            tokio::spawn(log_output(name, "stderr", err));
        }
        Ok(ProcessChild {
            child,
            events: BufReader::new(pipe::Receiver::from_owned_fd(events)?),
        })
    }
}

impl WorkerChild for ProcessChild {
    fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    async fn next_line(&mut self) -> Option<Line> {
        match read_bounded_line(&mut self.events, proto::MAX_LINE).await {
            Ok(Some(BoundedLine::Line(line))) => Some(match proto::decode(&line) {
                Ok(event) => Line::Event(event),
                Err(why) => Line::Garbled(format!("{why}: {}", proto::bounded_text(&line))),
            }),
            Ok(Some(BoundedLine::TooLong(head, len))) => Some(Line::Garbled(format!(
                "{len} bytes, more than {} in one event: {}",
                proto::MAX_LINE,
                proto::bounded_text(&head)
            ))),
            Ok(None) | Err(_) => None,
        }
    }

    fn kill(&mut self) {
        let _ = self.child.start_kill();
    }

    async fn terminate(&mut self, grace: Duration) {
        stop_child(&mut self.child, grace).await;
    }

    async fn wait(&mut self) -> ProcessEnd {
        match self.child.wait().await {
            Ok(status) => ProcessEnd::of(status),
            Err(e) => ProcessEnd::Lost(e.to_string()),
        }
    }
}

/// Logs a worker's own log line at its level, labelled with the source.
fn log_worker_line(name: &str, level: LogLevel, message: &str) {
    match level {
        LogLevel::Error => tracing::error!(source = %name, "{message}"),
        LogLevel::Warn => tracing::warn!(source = %name, "{message}"),
        LogLevel::Info => tracing::info!(source = %name, "{message}"),
        LogLevel::Debug => tracing::debug!(source = %name, "{message}"),
    }
}

/// Sends SIGTERM, waits up to `grace`, then SIGKILL; reaps the child.
pub async fn stop_child(child: &mut Child, grace: Duration) {
    if let Some(pid) = child
        .id()
        .and_then(|p| i32::try_from(p).ok())
        .and_then(rustix::process::Pid::from_raw)
    {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    }
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        let _ = child.start_kill();
        let _ = child.wait().await;
    }
}

/// Locks a status, recovering it if a panicking task poisoned the lock (the
/// status itself is always consistent: every update is one call).
fn lock(state: &Mutex<SourceStatus>) -> MutexGuard<'_, SourceStatus> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Supervises the worker of one source until shutdown or until the source
/// stops for good.
async fn supervise<L: Launcher>(
    launcher: L,
    spec: WorkerSpec,
    times: RestartTimes,
    state: Arc<Mutex<SourceStatus>>,
    changes: Arc<watch::Sender<u64>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let name = spec.source.name.clone();
    let mut policy = RestartPolicy::new(times);
    let silence = silence_limit(&spec.source);
    loop {
        let started = Instant::now();
        let (cause, ran_for) = match launcher.launch(&spec) {
            Ok(mut child) => {
                lock(&state).on_spawned(child.pid());
                let mut killed_for_silence = false;
                loop {
                    tokio::select! {
                        line = tokio::time::timeout(silence, child.next_line()) => match line {
                            Ok(Some(Line::Event(Event::Log { level, message }))) => {
                                log_worker_line(&name, level, &message);
                            }
                            Ok(Some(Line::Event(event))) => {
                                lock(&state).on_event(&event);
                                changes.send_modify(|n| *n = n.wrapping_add(1));
                            }
                            Ok(Some(Line::Garbled(line))) => {
                                tracing::warn!(source = %name, "unreadable worker event: {line}");
                            }
                            Ok(None) => break,
                            Err(_) => {
                                tracing::error!(
                                    source = %name,
                                    "worker sent nothing for {:.0} s; killing it",
                                    silence.as_secs_f64()
                                );
                                killed_for_silence = true;
                                child.kill();
                                break;
                            }
                        },
                        _ = shutdown.changed() => {
                            child.terminate(STOP_GRACE).await;
                            lock(&state).on_stopped(None);
                            return;
                        }
                    }
                }
                let end = child.wait().await;
                (EndCause::of(end, killed_for_silence), started.elapsed())
            }
            Err(e) => (
                EndCause::Crashed(ProcessEnd::Lost(format!("cannot be started: {e}"))),
                Duration::ZERO,
            ),
        };
        if *shutdown.borrow() {
            lock(&state).on_stopped(None);
            return;
        }
        let verdict = policy.on_end(&cause, ran_for);
        let last_error = {
            let mut s = lock(&state);
            s.on_end(&cause, verdict);
            s.last_error.clone().unwrap_or_default()
        };
        let wait = match verdict {
            Verdict::GiveUp => {
                tracing::error!(source = %name, "source stopped: {last_error}");
                return;
            }
            Verdict::RestartAfter(wait) => wait,
        };
        tracing::warn!(
            source = %name,
            "worker ended ({last_error}); restarting in {} s",
            wait.as_secs_f64()
        );
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => {
                lock(&state).on_stopped(None);
                return;
            }
        }
    }
}

/// The text of a panic payload.
fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_owned())
}

/// One source's supervision, as the monitor restarts it.
struct Slot<L: Launcher> {
    launcher: L,
    spec: WorkerSpec,
    state: Arc<Mutex<SourceStatus>>,
    changes: Arc<watch::Sender<u64>>,
    /// Restarts of the supervising task itself (not of the worker).
    task_policy: RestartPolicy,
}

/// Watches the supervising tasks: a task that ends by a panic is reported
/// in its source's status and started again after a backoff.
async fn monitor<L: Launcher>(
    mut slots: Vec<Slot<L>>,
    times: RestartTimes,
    mut tasks: JoinSet<()>,
    mut ids: HashMap<Id, usize>,
    shutdown: watch::Receiver<bool>,
) {
    while let Some(result) = tasks.join_next_with_id().await {
        let (id, failure) = match result {
            Ok((id, ())) => (id, None),
            Err(e) if e.is_panic() => {
                let id = e.id();
                (id, Some(panic_text(&*e.into_panic())))
            }
            Err(e) => (e.id(), Some("the task was cancelled".to_owned())),
        };
        let Some(index) = ids.remove(&id) else {
            continue;
        };
        let Some(message) = failure else { continue };
        if *shutdown.borrow() {
            continue;
        }
        let slot = &mut slots[index];
        let wait = match slot.task_policy.on_end(
            &EndCause::Crashed(ProcessEnd::Lost(message.clone())),
            Duration::ZERO,
        ) {
            Verdict::RestartAfter(wait) => wait,
            Verdict::GiveUp => continue,
        };
        tracing::error!(
            source = %slot.spec.source.name,
            "internal error: the supervision of this source failed ({message}); \
             restarting it in {} s",
            wait.as_secs_f64()
        );
        lock(&slot.state).on_task_failure(&message);
        let (launcher, spec, state, changes) = (
            slot.launcher.clone(),
            slot.spec.clone(),
            slot.state.clone(),
            slot.changes.clone(),
        );
        let mut stop = shutdown.clone();
        let handle = tasks.spawn(async move {
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                _ = stop.changed() => {
                    lock(&state).on_stopped(None);
                    return;
                }
            }
            supervise(launcher, spec, times, state, changes, stop).await;
        });
        ids.insert(handle.id(), index);
    }
}

/// Running workers.
pub struct Supervisor {
    states: Vec<Arc<Mutex<SourceStatus>>>,
    changes: Arc<watch::Sender<u64>>,
    shutdown: watch::Sender<bool>,
    monitor: tokio::sync::Mutex<Option<JoinHandle<()>>>,
}

impl Supervisor {
    /// Starts a worker for each spec.
    pub fn start<L: Launcher>(launcher: &L, times: RestartTimes, specs: Vec<WorkerSpec>) -> Self {
        let (shutdown, _) = watch::channel(false);
        let changes = Arc::new(watch::channel(0u64).0);
        let mut tasks = JoinSet::new();
        let mut ids = HashMap::new();
        let mut slots = Vec::new();
        let mut states = Vec::new();
        for (index, spec) in specs.into_iter().enumerate() {
            let state = Arc::new(Mutex::new(SourceStatus::new(
                &spec.source,
                spec.socket.clone(),
            )));
            let handle = tasks.spawn(supervise(
                launcher.clone(),
                spec.clone(),
                times,
                state.clone(),
                changes.clone(),
                shutdown.subscribe(),
            ));
            ids.insert(handle.id(), index);
            states.push(state.clone());
            slots.push(Slot {
                launcher: launcher.clone(),
                spec,
                state,
                changes: changes.clone(),
                task_policy: RestartPolicy::new(times),
            });
        }
        let monitor = tokio::spawn(monitor(slots, times, tasks, ids, shutdown.subscribe()));
        Self {
            states,
            changes,
            shutdown,
            monitor: tokio::sync::Mutex::new(Some(monitor)),
        }
    }

    /// A snapshot of every source's state.
    pub fn snapshot(&self) -> Vec<SourceStatus> {
        self.states.iter().map(|s| lock(s).clone()).collect()
    }

    /// A receiver that sees a change after every worker event applied to a
    /// source's status (samples, errors, ...).
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// One source's state.
    pub fn source(&self, index: usize) -> Option<SourceStatus> {
        self.states.get(index).map(|s| lock(s).clone())
    }

    /// Waits until no source is in the `starting` state, or `timeout`.
    pub async fn wait_started(&self, timeout: Duration) {
        let until = Instant::now() + timeout;
        while Instant::now() < until {
            if self
                .snapshot()
                .iter()
                .all(|s| s.state != SourceState::Starting)
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops every worker and waits for them.
    pub async fn shutdown(&self) {
        let _ = self.shutdown.send(true);
        if let Some(monitor) = self.monitor.lock().await.take() {
            let _ = monitor.await;
        }
    }
}

/// Removes a socket file if it is there.
pub fn remove_socket(path: &std::path::Path) {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!("cannot remove {}: {e}", path.display()),
    }
}

/// The workers' specs: one per source, sending to `sockets[i]`, run as
/// `identity` (when the host is root) with `memory_limit` bytes of data.
pub fn specs(
    sources: &[crate::config::SourceConfig],
    sockets: &[PathBuf],
    reinit: RestartTimes,
    identity: Option<&proto::WorkerIdentity>,
    memory_limit: u64,
) -> Vec<WorkerSpec> {
    sources
        .iter()
        .zip(sockets)
        .map(|(source, socket)| WorkerSpec {
            source: source.clone(),
            socket: socket.clone(),
            backoff_initial: reinit.initial,
            backoff_max: reinit.max,
            identity: identity.cloned(),
            memory_limit,
        })
        .collect()
}

#[cfg(test)]
mod tests;
