//! The supervision loop with scripted worker processes, on tokio's paused
//! clock: restart and backoff sequences, the healthy reset, the silence
//! watchdog, stopped sources, shutdown, and a supervising task that panics.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::*;
use crate::config::SourceConfig;
use crate::protocol::records::{CapabilitiesRecord, PluginIdentity};
use crate::protocol::worker::Call;
use ntpd_plugin_api::{Capabilities, ReadMethod, TimeScale};

const S: fn(u64) -> Duration = Duration::from_secs;

/// What one launch does.
#[derive(Clone, Debug)]
enum Plan {
    /// Send these events (each after its delay), then end like this after
    /// the given delay.
    Run(Vec<(Duration, Event)>, Duration, Ending),
    /// Send these events, then nothing at all, never exiting by itself.
    Wedge(Vec<(Duration, Event)>),
    /// `launch` fails.
    SpawnError,
    /// `launch` panics (a bug in the host's supervision).
    Panic,
}

#[derive(Clone, Copy, Debug)]
enum Ending {
    Exit(i32),
    Signal(i32),
}

#[derive(Default)]
struct Record {
    launches: Vec<Instant>,
    terminated: usize,
    killed: usize,
}

#[derive(Clone)]
struct FakeLauncher {
    plans: Arc<Mutex<VecDeque<Plan>>>,
    record: Arc<Mutex<Record>>,
}

impl FakeLauncher {
    fn new(plans: Vec<Plan>) -> Self {
        Self {
            plans: Arc::new(Mutex::new(plans.into())),
            record: Arc::default(),
        }
    }

    /// Seconds between launches.
    fn gaps(&self) -> Vec<u64> {
        let r = self.record.lock().unwrap();
        r.launches
            .windows(2)
            .map(|w| w[1].duration_since(w[0]).as_secs())
            .collect()
    }

    fn launches(&self) -> usize {
        self.record.lock().unwrap().launches.len()
    }
}

struct FakeChild {
    events: VecDeque<(Duration, Event)>,
    /// After the events: how long it lives on (sending a heartbeat sample
    /// every second, as a healthy worker does) and how it ends; `None`
    /// for a wedged worker that sends nothing more.
    end: Option<(Duration, Ending)>,
    /// When it ends, once the events are out.
    end_at: Option<Instant>,
    killed: bool,
    record: Arc<Mutex<Record>>,
}

fn heartbeat() -> Event {
    Event::Sample {
        sample: crate::protocol::records::SampleRecord::from(&ntpd_plugin_api::Sample::new(
            0, 0, 1,
        )),
        delivered: true,
        latency_ns: 0,
    }
}

impl Launcher for FakeLauncher {
    type Child = FakeChild;

    fn launch(&self, _spec: &WorkerSpec) -> std::io::Result<FakeChild> {
        self.record.lock().unwrap().launches.push(Instant::now());
        // With no plan left, a worker that runs quietly well forever.
        let plan = self
            .plans
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or_else(|| Plan::Run(vec![(S(0), ready())], S(100_000), Ending::Exit(0)));
        let (events, end) = match plan {
            Plan::Run(events, after, ending) => (events, Some((after, ending))),
            Plan::Wedge(events) => (events, None),
            Plan::SpawnError => return Err(std::io::Error::other("fork failed")),
            Plan::Panic => panic!("injected supervision bug"),
        };
        Ok(FakeChild {
            events: events.into(),
            end,
            end_at: None,
            killed: false,
            record: self.record.clone(),
        })
    }
}

impl WorkerChild for FakeChild {
    fn pid(&self) -> Option<u32> {
        Some(4242)
    }

    async fn next_line(&mut self) -> Option<Line> {
        if self.killed {
            return None;
        }
        if let Some((delay, event)) = self.events.pop_front() {
            tokio::time::sleep(delay).await;
            return Some(Line::Event(event));
        }
        let Some((after, _)) = self.end else {
            return std::future::pending().await;
        };
        let end_at = *self.end_at.get_or_insert_with(|| Instant::now() + after);
        let now = Instant::now();
        if now >= end_at {
            return None;
        }
        tokio::time::sleep((end_at - now).min(S(1))).await;
        if Instant::now() >= end_at {
            None
        } else {
            Some(Line::Event(heartbeat()))
        }
    }

    fn kill(&mut self) {
        self.killed = true;
        self.record.lock().unwrap().killed += 1;
    }

    async fn terminate(&mut self, _grace: Duration) {
        self.killed = true;
        self.record.lock().unwrap().terminated += 1;
    }

    async fn wait(&mut self) -> ProcessEnd {
        match (self.killed, self.end) {
            (true, _) => ProcessEnd::Signalled(9),
            (false, Some((_, Ending::Exit(code)))) => ProcessEnd::Exited(code),
            (false, Some((_, Ending::Signal(sig)))) => ProcessEnd::Signalled(sig),
            (false, None) => std::future::pending().await,
        }
    }
}

fn ready() -> Event {
    Event::Ready {
        capabilities: CapabilitiesRecord::from(&Capabilities::new(
            ReadMethod::PRECISE,
            TimeScale::UTC,
            1,
            "fake",
        )),
    }
}

fn spec(name: &str) -> WorkerSpec {
    WorkerSpec {
        source: SourceConfig {
            file: "/etc/ntpd-rs/ntp.toml".into(),
            position: 1,
            name: name.into(),
            path: "/p.so".into(),
            poll_interval: 0,
            reading_interval: 0,
            startup_burst: false,
            precision: None,
            accuracy: None,
            socket: None,
            sample_timeout: S(10),
            allow_insecure_plugin: false,
            config_json: "{}".into(),
        },
        socket: "/run/s.sock".into(),
        backoff_initial: S(1),
        backoff_max: S(64),
        identity: None,
        memory_limit: 256 << 20,
    }
}

/// A worker that reports ready, then crashes after `ran` seconds.
fn crash_after(ran: u64) -> Plan {
    Plan::Run(vec![(S(0), ready())], S(ran), Ending::Signal(11))
}

/// Lets the paused clock run for `d`.
async fn run_for(d: Duration) {
    tokio::time::sleep(d).await;
}

#[tokio::test(start_paused = true)]
async fn crashes_restart_with_doubling_backoff() {
    let launcher = FakeLauncher::new((0..6).map(|_| crash_after(0)).collect());
    let sup = Supervisor::start(&launcher, RestartTimes::default(), vec![spec("a")]);
    run_for(S(100)).await;
    assert_eq!(launcher.gaps()[..6], [1, 2, 4, 8, 16, 32]);
    let s = &sup.snapshot()[0];
    assert_eq!(s.restarts, 6);
    assert_eq!(s.state, SourceState::Running, "the 7th worker runs");
    assert_eq!(
        s.last_error.as_deref(),
        Some("worker was killed by signal 11")
    );
    sup.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_healthy_run_resets_the_backoff() {
    // Crash at once twice (waits 1, 2), then run 300 s and crash: wait 1.
    let launcher = FakeLauncher::new(vec![
        crash_after(0),
        crash_after(0),
        crash_after(300),
        crash_after(0),
    ]);
    let sup = Supervisor::start(&launcher, RestartTimes::default(), vec![spec("a")]);
    run_for(S(400)).await;
    assert_eq!(launcher.gaps()[..4], [1, 2, 301, 2]);
    sup.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_stopped_source_is_not_restarted() {
    let launcher = FakeLauncher::new(vec![Plan::Run(
        vec![
            (S(0), ready()),
            (
                S(1),
                Event::Error {
                    call: Call::Sample,
                    error: crate::protocol::records::ErrorRecord {
                        kind: ntpd_plugin_api::ErrorKind::FATAL,
                        message: "broken".into(),
                    },
                    reaction: crate::protocol::worker::Reaction::Stop,
                    retry_in_s: None,
                },
            ),
        ],
        S(0),
        Ending::Exit(3),
    )]);
    let sup = Supervisor::start(&launcher, RestartTimes::default(), vec![spec("a")]);
    run_for(S(600)).await;
    assert_eq!(launcher.launches(), 1);
    let s = &sup.snapshot()[0];
    assert_eq!(
        (s.state, s.restarts, s.pid),
        (SourceState::Stopped, 0, None)
    );
    assert_eq!(s.last_error.as_deref(), Some("sample: fatal: broken"));
    sup.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_hung_worker_is_restarted_and_counted() {
    let launcher = FakeLauncher::new(vec![Plan::Run(
        vec![
            (S(0), ready()),
            (
                S(11),
                Event::Hung {
                    call: Call::Sample,
                    seconds: 10.0,
                },
            ),
        ],
        S(0),
        Ending::Exit(4),
    )]);
    let sup = Supervisor::start(&launcher, RestartTimes::default(), vec![spec("a")]);
    run_for(S(20)).await;
    assert_eq!(launcher.gaps(), [12]);
    let s = &sup.snapshot()[0];
    assert_eq!((s.hangs, s.restarts, s.state), (1, 1, SourceState::Running));
    sup.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_silent_worker_is_killed_at_the_limit_and_restarted() {
    let launcher = FakeLauncher::new(vec![Plan::Wedge(vec![(S(0), ready())])]);
    let sup = Supervisor::start(&launcher, RestartTimes::default(), vec![spec("a")]);
    // sample-timeout 10 s + two 1 s polls + 10 s = 22 s of silence.
    run_for(S(21)).await;
    assert_eq!(launcher.launches(), 1);
    assert_eq!(launcher.record.lock().unwrap().killed, 0);
    run_for(S(3)).await;
    assert_eq!(launcher.record.lock().unwrap().killed, 1);
    assert_eq!(launcher.gaps(), [23], "killed at 22 s, restarted 1 s later");
    let s = &sup.snapshot()[0];
    assert_eq!(s.restarts, 1);
    assert_eq!(
        s.last_error.as_deref(),
        Some("worker went silent and was killed")
    );
    sup.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_worker_that_cannot_be_started_is_retried_with_backoff() {
    let launcher = FakeLauncher::new(vec![Plan::SpawnError, Plan::SpawnError]);
    let sup = Supervisor::start(&launcher, RestartTimes::default(), vec![spec("a")]);
    run_for(S(10)).await;
    assert_eq!(launcher.gaps(), [1, 2]);
    let s = &sup.snapshot()[0];
    assert_eq!((s.restarts, s.state), (2, SourceState::Running));
    sup.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_panicking_supervising_task_is_noticed_and_restarted() {
    let a = FakeLauncher::new(vec![Plan::Panic]);
    let b = FakeLauncher::new(vec![]);
    // Two sources with their own launchers: only a's supervision fails.
    let sup_a = Supervisor::start(&a, RestartTimes::default(), vec![spec("a")]);
    let sup_b = Supervisor::start(&b, RestartTimes::default(), vec![spec("b")]);
    run_for(Duration::from_millis(100)).await;
    let s = &sup_a.snapshot()[0];
    assert_eq!(s.state, SourceState::RestartWait);
    assert_eq!(s.restarts, 1);
    assert!(
        s.last_error
            .as_deref()
            .is_some_and(|e| e.contains("internal error") && e.contains("injected supervision bug")),
        "{s:?}"
    );
    run_for(S(2)).await;
    assert_eq!(a.gaps(), [1], "restarted after the backoff");
    assert_eq!(sup_a.snapshot()[0].state, SourceState::Running);
    assert_eq!(sup_b.snapshot()[0].state, SourceState::Running);
    assert_eq!(b.launches(), 1);
    sup_a.shutdown().await;
    sup_b.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn repeated_supervision_panics_back_off() {
    let a = FakeLauncher::new(vec![Plan::Panic, Plan::Panic, Plan::Panic]);
    let sup = Supervisor::start(&a, RestartTimes::default(), vec![spec("a")]);
    run_for(S(20)).await;
    assert_eq!(a.gaps()[..3], [1, 2, 4]);
    let s = &sup.snapshot()[0];
    assert_eq!((s.restarts, s.state), (3, SourceState::Running));
    sup.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn shutdown_terminates_running_workers_and_stops_restarts() {
    let launcher = FakeLauncher::new(vec![crash_after(0)]);
    let sup = Supervisor::start(
        &launcher,
        RestartTimes::default(),
        vec![spec("a"), spec("b")],
    );
    // a crashed and waits to restart; b runs.
    run_for(Duration::from_millis(500)).await;
    sup.shutdown().await;
    assert_eq!(launcher.record.lock().unwrap().terminated, 1);
    assert!(
        sup.snapshot()
            .iter()
            .all(|s| s.state == SourceState::Stopped && s.pid.is_none())
    );
    run_for(S(10)).await;
    assert_eq!(launcher.launches(), 2, "no restart after shutdown");
}

#[tokio::test]
async fn lines_are_read_with_a_limit() {
    let input: &[u8] = b"short\nexactly10\n0123456789ABC\npartial";
    let mut r = BufReader::with_capacity(4, input);
    let mut got = Vec::new();
    while let Some(line) = read_bounded_line(&mut r, 10).await.unwrap() {
        got.push(line);
    }
    assert_eq!(
        got,
        [
            BoundedLine::Line("short".into()),
            BoundedLine::Line("exactly10".into()),
            BoundedLine::TooLong("0123456789".into(), 13),
            BoundedLine::Line("partial".into()),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn worker_log_lines_change_no_state() {
    let launcher = FakeLauncher::new(vec![Plan::Run(
        vec![
            (S(0), ready()),
            (
                S(1),
                Event::Log {
                    level: LogLevel::Warn,
                    message: "hello".into(),
                },
            ),
        ],
        S(100_000),
        Ending::Exit(0),
    )]);
    let sup = Supervisor::start(&launcher, RestartTimes::default(), vec![spec("a")]);
    run_for(S(3)).await;
    let s = &sup.snapshot()[0];
    assert_eq!(
        (s.state, s.last_error.as_deref()),
        (SourceState::Running, None)
    );
    sup.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn events_reach_the_status_and_loaded_identity_is_kept() {
    let launcher = FakeLauncher::new(vec![Plan::Run(
        vec![
            (
                S(0),
                Event::Loaded {
                    plugin: PluginIdentity {
                        name: "fake".into(),
                        ..PluginIdentity::default()
                    },
                },
            ),
            (S(1), ready()),
        ],
        S(100_000),
        Ending::Exit(0),
    )]);
    let sup = Supervisor::start(&launcher, RestartTimes::default(), vec![spec("a")]);
    run_for(Duration::from_millis(500)).await;
    assert_eq!(sup.snapshot()[0].state, SourceState::Starting);
    sup.wait_started(S(5)).await;
    let s = &sup.snapshot()[0];
    assert_eq!(s.state, SourceState::Running);
    assert_eq!(s.plugin.as_ref().map(|p| p.name.as_str()), Some("fake"));
    assert_eq!(s.pid, Some(4242));
    sup.shutdown().await;
}
