//! What a worker does, decided without I/O: a state machine that takes what
//! happened ([`Input`]) and returns what to do ([`Action`]). The worker's
//! loop (`daemon::worker`) owns the timer, the plugin thread and the
//! socket, feeds the machine and carries out its actions.

use std::time::Duration;

use ntpd_plugin_api::{Capabilities, ErrorKind, PluginError, Sample};
use tokio::time::Instant;

use crate::config::SourceConfig;
use crate::decide::backoff::Backoff;
use crate::decide::combine::{combine, is_jump};
use crate::protocol::records::{CapabilitiesRecord, ErrorRecord, PluginIdentity, SampleRecord};
use crate::protocol::worker::{Call, Event, Reaction, WorkerExit, WorkerSpec};

/// How long after start a worker stays quiet about an absent daemon socket
/// (the daemon starts after the workers).
pub const DELIVERY_GRACE: Duration = Duration::from_secs(10);

/// Readings delivered one by one at start (and after every successful
/// `init`) when `startup-burst` is on: ntpd-rs counts a sock source once it
/// has 8 measurements, and takes its first step then; two spare readings
/// cover a late one. Only delivered readings count: the daemon starts after
/// the workers.
pub const BURST_READINGS: u32 = 10;
/// When a burst reading shows that the daemon stepped the clock, the burst
/// goes on for this many more delivered readings (a second at 62.5 ms):
/// ntpd-rs's filter starts from the mean offset of its first 8 measurements
/// and no frequency, steps, and learns the clock's frequency error from the
/// readings after the step, from these instead of from 1 s polls.
pub const BURST_AFTER_STEP: u32 = 16;
/// The burst ends after this many readings even if the daemon took fewer
/// than it needs (half a minute at 62.5 ms: nobody is listening).
pub const BURST_MAX_TRIES: u32 = 480;
/// The interval of the start-up burst's readings, log2 seconds (62.5 ms;
/// never shorter than the plugin's shortest poll interval).
pub const BURST_INTERVAL: i8 = -4;
/// After the burst, polls this long or shorter (log2 seconds: 1 s) ...
pub const SETTLE_POLL: i8 = 0;
/// ... this many times, so the daemon learns the clock's frequency before a
/// long configured poll interval takes over.
pub const SETTLE_POLLS: u32 = 16;

/// Where the reading schedule is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// The start-up burst: every reading is sent at once.
    Burst,
    /// Settling: one datagram per second at most, from the readings of
    /// that second.
    Settle,
    /// The configured poll interval.
    Steady,
}

/// When the plugin is read and how many readings make one datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Schedule {
    /// Where the schedule is.
    pub phase: Phase,
    /// Time between readings, log2 seconds.
    pub reading: i8,
    /// Readings per datagram.
    pub per_datagram: u32,
    /// Datagrams left in this phase (`None`: no end).
    pub left: Option<u32>,
}

impl Schedule {
    /// The schedule of `phase` for a source polled every 2^`poll` s, read
    /// every 2^`reading` s, whose plugin may be read every 2^`min_poll` s.
    pub fn of(phase: Phase, poll: i8, reading: i8, min_poll: i8) -> Self {
        let floor = min_poll.max(crate::config::READING_MIN);
        match phase {
            Phase::Burst => Self {
                phase,
                reading: BURST_INTERVAL.max(floor).min(poll),
                per_datagram: 1,
                left: Some(BURST_READINGS),
            },
            Phase::Settle | Phase::Steady => {
                let poll = if phase == Phase::Settle {
                    poll.min(SETTLE_POLL)
                } else {
                    poll
                };
                let reading = reading.max(floor).min(poll);
                let shift = u32::try_from(poll - reading).expect("reading <= poll");
                Self {
                    phase,
                    reading,
                    per_datagram: 1 << shift,
                    left: (phase == Phase::Settle).then_some(SETTLE_POLLS),
                }
            }
        }
    }

    /// Time between readings.
    pub fn period(&self) -> Duration {
        crate::config::poll_duration(self.reading)
    }
}

/// The documented reaction to a `sample()` error of `kind`. A kind this host
/// does not know is treated as transient.
pub fn reaction(kind: ErrorKind) -> Reaction {
    match kind {
        ErrorKind::UNAVAILABLE => Reaction::Reinit,
        ErrorKind::CONFIGURATION | ErrorKind::FATAL => Reaction::Stop,
        _ => Reaction::Skip,
    }
}

/// The reaction to an `init()` error: as [`reaction`], except that a kind
/// that would be skipped for a sample is retried (there is no source yet).
pub fn init_reaction(kind: ErrorKind) -> Reaction {
    match reaction(kind) {
        Reaction::Stop => Reaction::Stop,
        Reaction::Skip | Reaction::Reinit => Reaction::Reinit,
    }
}

/// The longest wait between `init` attempts of an unavailable source: the
/// backoff doubles up to the poll interval (at least `initial`, at most
/// `max`), so a device that comes back is sampled again within two poll
/// intervals. A failing `init` of a missing device is cheap (an `open`).
pub fn reinit_backoff_max(initial: Duration, max: Duration, poll: Duration) -> Duration {
    poll.max(initial).min(max)
}

/// Where the worker is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkerState {
    /// The library is being loaded.
    Loading,
    /// Waiting to call `init` at the given time.
    InitWait {
        /// When `init` is due.
        at: Instant,
    },
    /// `init` is running.
    Initialising,
    /// The source is polling.
    Ready,
    /// The worker is done; it exits.
    Stopped,
}

/// Something that happened.
#[derive(Debug)]
pub enum Input {
    /// The library loaded.
    Loaded(PluginIdentity),
    /// The library could not be loaded (one line).
    LoadFailed(String),
    /// The time for `init` ([`WorkerMachine::next_init`]) has come.
    InitDue,
    /// `init` returned (with the source's capabilities).
    InitDone(Result<Capabilities, PluginError>),
    /// The poll timer ticked.
    Tick,
    /// `sample` returned; the system clock read just before and just after
    /// the call.
    SampleDone {
        /// What it returned.
        result: Result<Sample, PluginError>,
        /// When the call ran.
        window: CallWindow,
    },
    /// The datagram for a sample was sent (or not).
    Sent {
        /// The sample.
        sample: Sample,
        /// Whether the daemon's socket took it.
        delivered: bool,
    },
    /// The call in flight passed its deadline ([`WorkerMachine::call_deadline`]).
    Overdue,
}

/// Something to do, in order.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Load the plugin library on the plugin thread.
    CallLoad,
    /// Call `init` on the plugin thread (closing any old source first).
    CallInit,
    /// Call `sample` on the plugin thread.
    CallSample,
    /// Drop the source object (closing its device).
    DropSource,
    /// Send this sample's datagram to the daemon, then report
    /// [`Input::Sent`].
    Send(Sample),
    /// Report an event to the supervisor.
    Emit(Event),
    /// Restart the reading timer: it ticks every `period`, the first time
    /// now (`immediately`) or after one period.
    StartTimer {
        /// Time between ticks.
        period: Duration,
        /// Whether the first tick is now.
        immediately: bool,
    },
    /// Exit the worker process with this status.
    Exit(WorkerExit),
}

/// CLOCK_REALTIME just before and just after a plugin call, ns since 1970.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CallWindow {
    /// Before the call.
    pub before_ns: i64,
    /// After the call.
    pub after_ns: i64,
}

/// How far a sample's system time may lie outside its call's window: a
/// plugin measures during the call, but the daemon may step the clock
/// meanwhile.
pub const WINDOW_SLACK_NS: i64 = 1_000_000_000;

/// The largest offset passed on, ns: ntpd-rs holds offsets as 32.32 fixed
/// point seconds, so anything beyond 2^31 s (68 years) is not a time at all.
pub const MAX_OFFSET_NS: i64 = (1 << 31) * 1_000_000_000;

/// Why a sample breaks the plugin contract, if it does: its error bound is
/// 0 (the contract asks for at least the clock's resolution), its offset is
/// beyond what any clock could mean, or it was not measured during the call
/// (a system time of 1970, say). Such a sample is counted, not sent.
pub fn check_sample(sample: &Sample, window: CallWindow) -> Result<(), String> {
    if sample.error_ns == 0 {
        return Err(
            "its error bound is 0 ns; a sample claims at least the clock's resolution (1 ns)"
                .to_owned(),
        );
    }
    if sample.offset_ns.unsigned_abs() > MAX_OFFSET_NS.unsigned_abs() {
        return Err(format!(
            "its offset {} ns is beyond +-2^31 s",
            sample.offset_ns
        ));
    }
    let earliest = window.before_ns.saturating_sub(WINDOW_SLACK_NS);
    let latest = window.after_ns.saturating_add(WINDOW_SLACK_NS);
    if !(earliest..=latest).contains(&sample.system_time_ns) {
        return Err(format!(
            "its system time {} ns was not during the call ({}..{} ns)",
            sample.system_time_ns, window.before_ns, window.after_ns
        ));
    }
    Ok(())
}

/// A call in flight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct InFlight {
    call: Call,
    since: Instant,
}

/// The worker's decisions.
#[derive(Clone, Debug)]
pub struct WorkerMachine {
    label: String,
    origin: String,
    poll_interval: i8,
    reading_interval: i8,
    startup_burst: bool,
    /// The plugin's shortest poll interval, from its capabilities.
    min_poll: i8,
    schedule: Schedule,
    /// Readings of the current poll interval, in order.
    readings: Vec<Sample>,
    /// Reading calls made in the current poll interval.
    calls_in_poll: u32,
    /// Datagrams sent in the current burst, delivered or not.
    burst_tries: u32,
    /// The last reading of the current burst the daemon took.
    burst_last: Option<Sample>,
    sample_timeout: Duration,
    backoff: Backoff,
    state: WorkerState,
    in_flight: Option<InFlight>,
    /// When the last sample call started (for the latency of its datagram).
    last_sample_call: Option<Instant>,
    started: Instant,
    undelivered: u64,
}

impl WorkerMachine {
    /// A machine for `spec`, started at `now`.
    pub fn new(spec: &WorkerSpec, now: Instant) -> Self {
        let src = &spec.source;
        Self::for_source(src, spec.backoff_initial, spec.backoff_max, now)
    }

    /// A machine for `source` with the given re-init backoff.
    pub fn for_source(
        source: &SourceConfig,
        backoff_initial: Duration,
        backoff_max: Duration,
        now: Instant,
    ) -> Self {
        let cap = reinit_backoff_max(backoff_initial, backoff_max, source.poll_duration());
        Self {
            label: source.name.clone(),
            origin: source.origin(),
            poll_interval: source.poll_interval,
            reading_interval: source.reading_interval,
            startup_burst: source.startup_burst,
            min_poll: crate::config::POLL_MIN,
            schedule: Schedule::of(
                Phase::Steady,
                source.poll_interval,
                source.reading_interval,
                crate::config::POLL_MIN,
            ),
            readings: Vec::new(),
            calls_in_poll: 0,
            burst_tries: 0,
            burst_last: None,
            sample_timeout: source.sample_timeout,
            backoff: Backoff::new(backoff_initial, cap, Duration::from_secs(300)),
            state: WorkerState::Loading,
            in_flight: None,
            last_sample_call: None,
            started: now,
            undelivered: 0,
        }
    }

    /// Where the worker is.
    pub fn state(&self) -> WorkerState {
        self.state
    }

    /// The reading schedule.
    pub fn schedule(&self) -> Schedule {
        self.schedule
    }

    /// Starts the schedule at `phase` (or the next phase that applies).
    fn enter(&mut self, phase: Phase, immediately: bool) -> Action {
        let phase = match phase {
            Phase::Burst if !self.startup_burst => Phase::Steady,
            other => other,
        };
        let phase = match phase {
            Phase::Settle if self.poll_interval <= SETTLE_POLL => Phase::Steady,
            other => other,
        };
        self.schedule = Schedule::of(
            phase,
            self.poll_interval,
            self.reading_interval,
            self.min_poll,
        );
        self.readings.clear();
        self.calls_in_poll = 0;
        self.burst_tries = 0;
        self.burst_last = None;
        Action::StartTimer {
            period: self.schedule.period(),
            immediately,
        }
    }

    /// The first actions: load the library (under the call deadline, like
    /// every plugin call: loading runs the library's initialisers).
    pub fn start(&mut self, now: Instant) -> Vec<Action> {
        if self.state != WorkerState::Loading || self.in_flight.is_some() {
            return Vec::new();
        }
        self.in_flight = Some(InFlight {
            call: Call::Load,
            since: now,
        });
        vec![Action::CallLoad]
    }

    /// When `init` is due, if it is waited for and nothing is in flight.
    pub fn next_init(&self) -> Option<Instant> {
        match (self.state, self.in_flight) {
            (WorkerState::InitWait { at }, None) => Some(at),
            _ => None,
        }
    }

    /// When the call in flight becomes overdue.
    pub fn call_deadline(&self) -> Option<Instant> {
        self.in_flight.map(|c| c.since + self.sample_timeout)
    }

    /// Takes one input at `now`; returns the actions to carry out, in order.
    pub fn handle(&mut self, input: Input, now: Instant) -> Vec<Action> {
        if self.state == WorkerState::Stopped {
            return Vec::new();
        }
        match input {
            Input::Loaded(plugin) if self.state == WorkerState::Loading => {
                self.in_flight = None;
                self.state = WorkerState::InitWait { at: now };
                vec![Action::Emit(Event::Loaded { plugin })]
            }
            Input::LoadFailed(message) if self.state == WorkerState::Loading => {
                tracing::error!(source = %self.label, "{message}");
                self.stop(
                    Call::Load,
                    &PluginError::configuration(message),
                    Reaction::Stop,
                )
            }
            Input::InitDue => self.init_due(now),
            Input::InitDone(result) => self.init_done(result, now),
            Input::Tick => self.tick(now),
            Input::SampleDone { result, window } => self.sample_done(result, window, now),
            Input::Sent { sample, delivered } => self.sent(&sample, delivered, now),
            Input::Overdue => self.overdue(now),
            Input::Loaded(_) | Input::LoadFailed(_) => Vec::new(),
        }
    }

    fn init_due(&mut self, now: Instant) -> Vec<Action> {
        match self.state {
            WorkerState::InitWait { at } if now >= at && self.in_flight.is_none() => {
                self.state = WorkerState::Initialising;
                self.in_flight = Some(InFlight {
                    call: Call::Init,
                    since: now,
                });
                vec![Action::CallInit]
            }
            _ => Vec::new(),
        }
    }

    fn init_done(
        &mut self,
        result: Result<Capabilities, PluginError>,
        now: Instant,
    ) -> Vec<Action> {
        if self.state != WorkerState::Initialising {
            return Vec::new();
        }
        self.in_flight = None;
        match result {
            Ok(caps) => {
                let capabilities = CapabilitiesRecord::from(&caps);
                if !capabilities.supports_poll(self.poll_interval) {
                    let message = format!(
                        "{}: poll-interval: {} is outside what this plugin supports \
                         ({} to {}, log2 seconds); the host accepts {} to {}",
                        self.origin,
                        self.poll_interval,
                        capabilities.min_poll,
                        capabilities.max_poll,
                        crate::config::POLL_MIN,
                        crate::config::POLL_MAX,
                    );
                    tracing::error!(source = %self.label, "{message}");
                    let mut actions = vec![Action::DropSource];
                    actions.extend(self.stop(
                        Call::Init,
                        &PluginError::configuration(message),
                        Reaction::Stop,
                    ));
                    return actions;
                }
                tracing::info!(
                    source = %self.label,
                    "ready: {} ({})",
                    capabilities.description,
                    capabilities.method
                );
                self.state = WorkerState::Ready;
                self.min_poll = capabilities.min_poll;
                let timer = self.enter(Phase::Burst, true);
                vec![Action::Emit(Event::Ready { capabilities }), timer]
            }
            Err(e) => match init_reaction(e.kind) {
                Reaction::Stop => {
                    tracing::error!(source = %self.label, "init failed, source stopped: {e}");
                    self.stop(Call::Init, &e, Reaction::Stop)
                }
                Reaction::Reinit | Reaction::Skip => {
                    let wait = self.backoff.failure(Duration::ZERO);
                    tracing::warn!(
                        source = %self.label,
                        "init failed: {e}; retrying in {} s",
                        wait.as_secs_f64()
                    );
                    self.state = WorkerState::InitWait { at: now + wait };
                    vec![Action::Emit(error_event(
                        Call::Init,
                        &e,
                        Reaction::Reinit,
                        Some(wait),
                    ))]
                }
            },
        }
    }

    fn tick(&mut self, now: Instant) -> Vec<Action> {
        if self.state != WorkerState::Ready || self.in_flight.is_some() {
            // Not polling, or the plugin is still busy: the timer does not
            // wait for it.
            return Vec::new();
        }
        self.in_flight = Some(InFlight {
            call: Call::Sample,
            since: now,
        });
        self.last_sample_call = Some(now);
        self.calls_in_poll += 1;
        vec![Action::CallSample]
    }

    fn sample_done(
        &mut self,
        result: Result<Sample, PluginError>,
        window: CallWindow,
        now: Instant,
    ) -> Vec<Action> {
        if self.state != WorkerState::Ready {
            return Vec::new();
        }
        self.in_flight = None;
        let mut actions = self.reading_done(result, window, now);
        if self.state == WorkerState::Ready && self.calls_in_poll >= self.schedule.per_datagram {
            actions.extend(self.end_poll());
        }
        actions
    }

    /// The poll interval's readings are in: send their combination, and
    /// move the schedule on.
    fn end_poll(&mut self) -> Vec<Action> {
        let mut actions: Vec<Action> = combine(&self.readings)
            .map(Action::Send)
            .into_iter()
            .collect();
        self.readings.clear();
        self.calls_in_poll = 0;
        match self.schedule.phase {
            // The burst counts what the daemon took (`sent`); it gives up
            // when nobody listens.
            Phase::Burst => {
                self.burst_tries += 1;
                if self.burst_tries >= BURST_MAX_TRIES {
                    actions.push(self.enter(Phase::Settle, false));
                }
            }
            Phase::Settle => actions.extend(self.count_down(Phase::Steady)),
            Phase::Steady => {}
        }
        actions
    }

    /// One more datagram of a counted phase; at its last, the timer action
    /// that starts `next`.
    fn count_down(&mut self, next: Phase) -> Option<Action> {
        let left = self.schedule.left.get_or_insert(0);
        *left = left.saturating_sub(1);
        (*left == 0).then(|| self.enter(next, false))
    }

    /// One reading's result: kept for the poll's datagram, or reported.
    fn reading_done(
        &mut self,
        result: Result<Sample, PluginError>,
        window: CallWindow,
        now: Instant,
    ) -> Vec<Action> {
        match result {
            Ok(sample) => match check_sample(&sample, window) {
                Ok(()) => {
                    self.readings.push(sample);
                    Vec::new()
                }
                Err(reason) => {
                    tracing::warn!(source = %self.label, "sample rejected: {reason}");
                    vec![Action::Emit(Event::Rejected {
                        sample: SampleRecord::from(&sample),
                        reason,
                    })]
                }
            },
            Err(e) => match reaction(e.kind) {
                Reaction::Skip => {
                    if e.kind == ErrorKind::PANICKED {
                        tracing::warn!(source = %self.label, "{e}");
                    } else {
                        tracing::debug!(source = %self.label, "{e}");
                    }
                    vec![Action::Emit(error_event(
                        Call::Sample,
                        &e,
                        Reaction::Skip,
                        None,
                    ))]
                }
                Reaction::Reinit => {
                    let wait = self.backoff.failure(Duration::ZERO);
                    tracing::warn!(
                        source = %self.label,
                        "source unavailable: {e}; closed it, init again in {} s",
                        wait.as_secs_f64()
                    );
                    self.state = WorkerState::InitWait { at: now + wait };
                    self.readings.clear();
                    self.calls_in_poll = 0;
                    vec![
                        Action::DropSource,
                        Action::Emit(error_event(Call::Sample, &e, Reaction::Reinit, Some(wait))),
                    ]
                }
                Reaction::Stop => {
                    tracing::error!(source = %self.label, "source stopped: {e}");
                    self.stop(Call::Sample, &e, Reaction::Stop)
                }
            },
        }
    }

    fn sent(&mut self, sample: &Sample, delivered: bool, now: Instant) -> Vec<Action> {
        if delivered {
            self.backoff.reset();
            self.undelivered = 0;
        } else {
            self.undelivered += 1;
            if now.duration_since(self.started) > DELIVERY_GRACE
                && self.undelivered.is_power_of_two()
            {
                tracing::warn!(
                    source = %self.label,
                    "the daemon is not listening ({} sample(s) not delivered)",
                    self.undelivered
                );
            }
        }
        let since = self.last_sample_call.unwrap_or(now);
        let latency_ns = u64::try_from(now.duration_since(since).as_nanos()).unwrap_or(u64::MAX);
        let mut actions = vec![Action::Emit(Event::Sample {
            sample: SampleRecord::from(sample),
            delivered,
            latency_ns,
        })];
        if delivered && self.state == WorkerState::Ready && self.schedule.phase == Phase::Burst {
            let stepped = self.burst_last.is_some_and(|last| is_jump(&last, sample));
            self.burst_last = Some(*sample);
            if stepped {
                tracing::debug!(source = %self.label, "the daemon stepped the clock; burst goes on");
                self.schedule.left = Some(BURST_AFTER_STEP);
            } else {
                actions.extend(self.count_down(Phase::Settle));
            }
        }
        actions
    }

    fn overdue(&mut self, now: Instant) -> Vec<Action> {
        match self.in_flight {
            Some(InFlight { call, since }) if now >= since + self.sample_timeout => {
                let seconds = now.duration_since(since).as_secs_f64();
                tracing::error!(
                    source = %self.label,
                    "plugin {}() has not returned after {seconds:.1} s; restarting the worker",
                    call.name()
                );
                self.state = WorkerState::Stopped;
                vec![
                    Action::Emit(Event::Hung { call, seconds }),
                    Action::Exit(WorkerExit::Hung),
                ]
            }
            _ => Vec::new(),
        }
    }

    fn stop(&mut self, call: Call, e: &PluginError, reaction: Reaction) -> Vec<Action> {
        self.state = WorkerState::Stopped;
        self.in_flight = None;
        vec![
            Action::Emit(error_event(call, e, reaction, None)),
            Action::Exit(WorkerExit::Stopped),
        ]
    }
}

fn error_event(call: Call, e: &PluginError, reaction: Reaction, retry: Option<Duration>) -> Event {
    Event::Error {
        call,
        error: ErrorRecord::from(e),
        reaction,
        retry_in_s: retry.map(|d| d.as_secs_f64()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{SourceConfig, poll_duration};
    use ntpd_plugin_api::{ReadMethod, TimeScale};
    use std::path::PathBuf;

    const S: fn(u64) -> Duration = Duration::from_secs;

    fn source(poll: i8) -> SourceConfig {
        source_with(poll, poll, false)
    }

    /// A source polled every 2^`poll` s, read every 2^`reading` s, with or
    /// without the start-up burst.
    pub(super) fn source_with(poll: i8, reading: i8, burst: bool) -> SourceConfig {
        SourceConfig {
            file: PathBuf::from("/etc/ntpd-rs/ntp.toml"),
            position: 1,
            name: "phc".into(),
            path: PathBuf::from("/p.so"),
            poll_interval: poll,
            reading_interval: reading,
            startup_burst: burst,
            precision: None,
            accuracy: None,
            socket: None,
            sample_timeout: S(10),
            allow_insecure_plugin: false,
            config_json: "{}".into(),
        }
    }

    fn machine(poll: i8) -> (WorkerMachine, Instant) {
        let now = Instant::now();
        let mut m = WorkerMachine::for_source(&source(poll), S(1), S(64), now);
        assert_eq!(m.start(now), [Action::CallLoad]);
        assert_eq!(
            m.call_deadline(),
            Some(now + S(10)),
            "loading has a deadline"
        );
        assert!(m.start(now).is_empty(), "started once");
        (m, now)
    }

    fn caps() -> Capabilities {
        Capabilities::new(ReadMethod::PRECISE, TimeScale::UTC, 5, "d")
    }

    /// A sample call's result, with a call window around its system time.
    fn sample_done(result: Result<Sample, PluginError>) -> Input {
        let t = result.as_ref().map_or(0, |s| s.system_time_ns);
        Input::SampleDone {
            result,
            window: CallWindow {
                before_ns: t - 10,
                after_ns: t + 10,
            },
        }
    }

    /// A machine that is polling, at the time it became ready.
    fn ready(poll: i8) -> (WorkerMachine, Instant) {
        let (mut m, t) = machine(poll);
        m.handle(Input::Loaded(PluginIdentity::default()), t);
        assert_eq!(m.next_init(), Some(t));
        assert_eq!(m.handle(Input::InitDue, t), [Action::CallInit]);
        let a = m.handle(Input::InitDone(Ok(caps())), t);
        assert!(matches!(a[0], Action::Emit(Event::Ready { .. })), "{a:?}");
        assert_eq!(
            a[1],
            Action::StartTimer {
                period: poll_duration(poll),
                immediately: true
            }
        );
        assert_eq!(m.state(), WorkerState::Ready);
        (m, t)
    }

    fn kinds(actions: &[Action]) -> Vec<&'static str> {
        actions
            .iter()
            .map(|a| match a {
                Action::CallLoad => "call-load",
                Action::CallInit => "call-init",
                Action::CallSample => "call-sample",
                Action::DropSource => "drop",
                Action::Send(_) => "send",
                Action::Emit(Event::Loaded { .. }) => "loaded",
                Action::Emit(Event::Ready { .. }) => "ready",
                Action::Emit(Event::Sample { .. }) => "sample",
                Action::Emit(Event::Error { reaction, .. }) => match reaction {
                    Reaction::Skip => "error-skip",
                    Reaction::Reinit => "error-reinit",
                    Reaction::Stop => "error-stop",
                },
                Action::Emit(Event::Hung { .. }) => "hung",
                Action::Emit(Event::Rejected { .. }) => "rejected",
                Action::Emit(Event::Log { .. }) => "log",
                Action::StartTimer { .. } => "start-timer",
                Action::Exit(WorkerExit::Stopped) => "exit-stopped",
                Action::Exit(WorkerExit::Hung) => "exit-hung",
                Action::Exit(WorkerExit::Failed) => "exit-failed",
            })
            .collect()
    }

    #[test]
    fn reactions_follow_the_contract() {
        assert_eq!(reaction(ErrorKind::TRANSIENT), Reaction::Skip);
        assert_eq!(reaction(ErrorKind::PANICKED), Reaction::Skip);
        assert_eq!(reaction(ErrorKind(99)), Reaction::Skip);
        assert_eq!(reaction(ErrorKind::UNAVAILABLE), Reaction::Reinit);
        assert_eq!(reaction(ErrorKind::CONFIGURATION), Reaction::Stop);
        assert_eq!(reaction(ErrorKind::FATAL), Reaction::Stop);
        assert_eq!(init_reaction(ErrorKind::TRANSIENT), Reaction::Reinit);
        assert_eq!(init_reaction(ErrorKind(99)), Reaction::Reinit);
        assert_eq!(init_reaction(ErrorKind::PANICKED), Reaction::Reinit);
        assert_eq!(init_reaction(ErrorKind::UNAVAILABLE), Reaction::Reinit);
        assert_eq!(init_reaction(ErrorKind::FATAL), Reaction::Stop);
    }

    #[test]
    fn reinit_waits_at_most_one_poll_interval() {
        assert_eq!(reinit_backoff_max(S(1), S(64), S(1)), S(1));
        assert_eq!(
            reinit_backoff_max(S(1), S(64), Duration::from_millis(500)),
            S(1)
        );
        assert_eq!(reinit_backoff_max(S(1), S(64), S(16)), S(16));
        assert_eq!(reinit_backoff_max(S(1), S(32), S(64)), S(32));
    }

    #[tokio::test(start_paused = true)]
    async fn load_failure_stops_the_source() {
        let (mut m, t) = machine(0);
        let a = m.handle(Input::LoadFailed("/p.so: not an ELF file".into()), t);
        assert_eq!(kinds(&a), ["error-stop", "exit-stopped"]);
        let Action::Emit(Event::Error { call, error, .. }) = &a[0] else {
            panic!("{a:?}")
        };
        assert_eq!((*call, error.kind), (Call::Load, ErrorKind::CONFIGURATION));
        assert_eq!(m.state(), WorkerState::Stopped);
        // Nothing moves a stopped worker.
        assert!(m.handle(Input::Tick, t).is_empty());
        assert!(m.handle(Input::InitDue, t).is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn ticks_sample_one_call_at_a_time() {
        let (mut m, t0) = ready(0);
        assert_eq!(m.handle(Input::Tick, t0), [Action::CallSample]);
        // The plugin is busy: later ticks are skipped, not queued.
        tokio::time::advance(S(1)).await;
        assert!(m.handle(Input::Tick, Instant::now()).is_empty());
        assert_eq!(m.call_deadline(), Some(t0 + S(10)));
        tokio::time::advance(Duration::from_millis(500)).await;
        let s = Sample::new(1, 42, 3);
        assert_eq!(
            m.handle(sample_done(Ok(s)), Instant::now()),
            [Action::Send(s)]
        );
        assert_eq!(m.call_deadline(), None);
        let a = m.handle(
            Input::Sent {
                sample: s,
                delivered: true,
            },
            Instant::now(),
        );
        let [
            Action::Emit(Event::Sample {
                sample,
                delivered,
                latency_ns,
            }),
        ] = a.as_slice()
        else {
            panic!("{a:?}")
        };
        assert_eq!((sample.offset_ns, *delivered), (42, true));
        assert_eq!(*latency_ns, 1_500_000_000);
        // A second Loaded is not a transition.
        assert!(
            m.handle(Input::Loaded(PluginIdentity::default()), Instant::now())
                .is_empty()
        );
        assert_eq!(m.handle(Input::Tick, Instant::now()), [Action::CallSample]);
    }

    #[tokio::test(start_paused = true)]
    async fn skipped_kinds_are_reported_and_polling_goes_on() {
        for kind in [ErrorKind::TRANSIENT, ErrorKind::PANICKED, ErrorKind(42)] {
            let (mut m, t) = ready(0);
            m.handle(Input::Tick, t);
            let a = m.handle(sample_done(Err(PluginError::new(kind, "x"))), t);
            assert_eq!(kinds(&a), ["error-skip"], "{kind}");
            assert_eq!(m.state(), WorkerState::Ready);
            assert_eq!(m.handle(Input::Tick, t), [Action::CallSample]);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn stop_kinds_end_the_worker() {
        for kind in [ErrorKind::CONFIGURATION, ErrorKind::FATAL] {
            let (mut m, t) = ready(0);
            m.handle(Input::Tick, t);
            let a = m.handle(sample_done(Err(PluginError::new(kind, "x"))), t);
            assert_eq!(kinds(&a), ["error-stop", "exit-stopped"], "{kind}");
            assert_eq!(m.state(), WorkerState::Stopped);
        }
        let (mut m, t) = machine(0);
        m.handle(Input::Loaded(PluginIdentity::default()), t);
        m.handle(Input::InitDue, t);
        let a = m.handle(Input::InitDone(Err(PluginError::fatal("no"))), t);
        assert_eq!(kinds(&a), ["error-stop", "exit-stopped"]);
    }

    #[tokio::test(start_paused = true)]
    async fn unavailable_drops_the_source_and_reinits_with_backoff_capped_at_the_poll() {
        // poll-interval 2: 4 s; the backoff doubles 1, 2, 4 and stays at 4.
        let (mut m, t) = ready(2);
        m.handle(Input::Tick, t);
        let a = m.handle(
            sample_done(Err(PluginError::unavailable("/dev/ptp0: gone"))),
            t,
        );
        assert_eq!(kinds(&a), ["drop", "error-reinit"]);
        let mut waits = Vec::new();
        let mut at = m.next_init().expect("init scheduled");
        waits.push(at.duration_since(t).as_secs());
        for _ in 0..4 {
            tokio::time::advance(at.duration_since(Instant::now())).await;
            let now = Instant::now();
            assert_eq!(m.handle(Input::InitDue, now), [Action::CallInit]);
            assert_eq!(m.next_init(), None, "nothing while init runs");
            let a = m.handle(
                Input::InitDone(Err(PluginError::unavailable("still gone"))),
                now,
            );
            assert_eq!(kinds(&a), ["error-reinit"]);
            let Action::Emit(Event::Error { retry_in_s, .. }) = &a[0] else {
                panic!()
            };
            at = m.next_init().unwrap();
            assert_eq!(Some(at.duration_since(now).as_secs_f64()), *retry_in_s);
            waits.push(at.duration_since(now).as_secs());
        }
        assert_eq!(waits, [1, 2, 4, 4, 4]);
        // Too early: nothing; on time: init, and success resumes polling.
        assert!(m.handle(Input::InitDue, Instant::now()).is_empty());
        tokio::time::advance(at.duration_since(Instant::now())).await;
        m.handle(Input::InitDue, Instant::now());
        let a = m.handle(Input::InitDone(Ok(caps())), Instant::now());
        assert_eq!(kinds(&a), ["ready", "start-timer"]);
        // A delivered sample resets the backoff.
        let now = Instant::now();
        m.handle(Input::Tick, now);
        let s = Sample::new(0, 0, 1);
        m.handle(sample_done(Ok(s)), now);
        m.handle(
            Input::Sent {
                sample: s,
                delivered: true,
            },
            now,
        );
        m.handle(Input::Tick, now);
        m.handle(sample_done(Err(PluginError::unavailable("x"))), now);
        assert_eq!(m.next_init(), Some(now + S(1)));
    }

    #[tokio::test(start_paused = true)]
    async fn every_init_error_kind_is_retried_unless_it_stops() {
        for kind in [
            ErrorKind::TRANSIENT,
            ErrorKind::UNAVAILABLE,
            ErrorKind::PANICKED,
            ErrorKind(1000),
        ] {
            let (mut m, t) = machine(0);
            m.handle(Input::Loaded(PluginIdentity::default()), t);
            m.handle(Input::InitDue, t);
            let a = m.handle(Input::InitDone(Err(PluginError::new(kind, "x"))), t);
            assert_eq!(kinds(&a), ["error-reinit"], "{kind}");
            assert_eq!(m.next_init(), Some(t + S(1)));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_past_the_timeout_is_a_hang() {
        let (mut m, t) = ready(0);
        m.handle(Input::Tick, t);
        tokio::time::advance(Duration::from_millis(9_999)).await;
        assert!(m.handle(Input::Overdue, Instant::now()).is_empty(), "early");
        tokio::time::advance(Duration::from_millis(1)).await;
        let a = m.handle(Input::Overdue, Instant::now());
        assert_eq!(kinds(&a), ["hung", "exit-hung"]);
        let Action::Emit(Event::Hung { call, seconds }) = &a[0] else {
            panic!()
        };
        assert_eq!((*call, *seconds), (Call::Sample, 10.0));
        // A hanging init is a hang too.
        let (mut m, t) = machine(0);
        m.handle(Input::Loaded(PluginIdentity::default()), t);
        m.handle(Input::InitDue, t);
        assert_eq!(m.call_deadline(), Some(t + S(10)));
        let a = m.handle(Input::Overdue, t + S(10));
        assert_eq!(kinds(&a), ["hung", "exit-hung"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_poll_interval_the_plugin_does_not_support_is_a_configuration_stop() {
        let (mut m, t) = machine(6);
        m.handle(Input::Loaded(PluginIdentity::default()), t);
        m.handle(Input::InitDue, t);
        let mut narrow = caps();
        narrow.max_poll_log2 = 4;
        let a = m.handle(Input::InitDone(Ok(narrow)), t);
        assert_eq!(kinds(&a), ["drop", "error-stop", "exit-stopped"]);
        let Action::Emit(Event::Error { error, .. }) = &a[1] else {
            panic!()
        };
        assert_eq!(error.kind, ErrorKind::CONFIGURATION);
        assert_eq!(
            error.message,
            "/etc/ntpd-rs/ntp.toml: [[source]] #1: poll-interval: 6 is outside what this \
             plugin supports (-1 to 4, log2 seconds); the host accepts -1 to 6"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn undelivered_samples_are_counted_and_still_reported() {
        let (mut m, t) = ready(0);
        for i in 0..3 {
            tokio::time::advance(S(4)).await;
            let now = Instant::now();
            m.handle(Input::Tick, now);
            let s = Sample::new(i, i, 1);
            m.handle(sample_done(Ok(s)), now);
            let a = m.handle(
                Input::Sent {
                    sample: s,
                    delivered: false,
                },
                now,
            );
            assert!(matches!(
                a[..],
                [Action::Emit(Event::Sample {
                    delivered: false,
                    ..
                })]
            ));
        }
        assert_eq!(m.undelivered, 3);
        assert!(Instant::now().duration_since(t) > DELIVERY_GRACE);
        // One delivery clears the count.
        let now = Instant::now();
        m.handle(Input::Tick, now);
        let s = Sample::new(0, 0, 1);
        m.handle(sample_done(Ok(s)), now);
        m.handle(
            Input::Sent {
                sample: s,
                delivered: true,
            },
            now,
        );
        assert_eq!(m.undelivered, 0);
    }

    #[test]
    fn samples_that_break_the_contract_are_found() {
        let w = CallWindow {
            before_ns: 1_700_000_000_000_000_000,
            after_ns: 1_700_000_000_000_100_000,
        };
        let ok = Sample::new(w.before_ns + 50_000, 1_000, 5);
        assert_eq!(check_sample(&ok, w), Ok(()));
        let mut s = ok;
        s.error_ns = 0;
        assert!(
            check_sample(&s, w)
                .unwrap_err()
                .contains("error bound is 0")
        );
        for offset in [i64::MAX, i64::MIN, MAX_OFFSET_NS + 1, -MAX_OFFSET_NS - 1] {
            let mut s = ok;
            s.offset_ns = offset;
            assert!(
                check_sample(&s, w).unwrap_err().contains("beyond"),
                "{offset}"
            );
        }
        let mut s = ok;
        s.offset_ns = MAX_OFFSET_NS;
        assert_eq!(check_sample(&s, w), Ok(()), "68 years is still a time");
        s.offset_ns = 37_000_000_000;
        assert_eq!(check_sample(&s, w), Ok(()), "TAI-UTC is");
        for t in [
            0,
            w.before_ns - WINDOW_SLACK_NS - 1,
            w.after_ns + WINDOW_SLACK_NS + 1,
        ] {
            let mut s = ok;
            s.system_time_ns = t;
            assert!(
                check_sample(&s, w)
                    .unwrap_err()
                    .contains("not during the call"),
                "{t}"
            );
        }
        let mut s = ok;
        s.system_time_ns = w.after_ns + WINDOW_SLACK_NS;
        assert_eq!(check_sample(&s, w), Ok(()), "within the slack");
    }

    #[tokio::test(start_paused = true)]
    async fn a_rejected_sample_is_reported_not_sent_and_polling_goes_on() {
        let (mut m, t) = ready(0);
        m.handle(Input::Tick, t);
        let mut bad = Sample::new(1_000, 5, 1);
        bad.error_ns = 0;
        let a = m.handle(sample_done(Ok(bad)), t);
        let [Action::Emit(Event::Rejected { sample, reason })] = a.as_slice() else {
            panic!("{a:?}")
        };
        assert_eq!(sample.offset_ns, 5);
        assert!(reason.contains("error bound is 0"), "{reason}");
        assert_eq!(m.state(), WorkerState::Ready);
        assert_eq!(m.handle(Input::Tick, t), [Action::CallSample]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_hanging_load_is_a_hang() {
        let (mut m, t) = machine(0);
        let a = m.handle(Input::Overdue, t + S(10));
        assert_eq!(kinds(&a), ["hung", "exit-hung"]);
        let Action::Emit(Event::Hung { call, .. }) = &a[0] else {
            panic!()
        };
        assert_eq!(*call, Call::Load);
    }

    #[tokio::test(start_paused = true)]
    async fn results_that_come_when_not_asked_for_are_ignored() {
        let (mut m, t) = machine(0);
        assert!(m.handle(Input::InitDone(Ok(caps())), t).is_empty());
        assert!(
            m.handle(sample_done(Ok(Sample::new(0, 0, 1))), t)
                .is_empty()
        );
        assert!(m.handle(Input::Overdue, t).is_empty());
        assert!(m.handle(Input::Tick, t).is_empty(), "not ready yet");
    }
}

#[cfg(test)]
mod schedule_tests {
    use super::tests::source_with as source;
    use super::*;
    use crate::config::SourceConfig;
    use ntpd_plugin_api::{ReadMethod, TimeScale};

    const MS: fn(u64) -> Duration = Duration::from_millis;
    /// The burst's interval, 62.5 ms.
    const BURST: Duration = Duration::from_micros(62_500);

    /// A machine whose plugin may be read every 2^`min_poll` s, just ready;
    /// the timer action it started with.
    fn ready(src: &SourceConfig, min_poll: i8) -> (WorkerMachine, Action) {
        let now = Instant::now();
        let mut m =
            WorkerMachine::for_source(src, Duration::from_secs(1), Duration::from_secs(64), now);
        m.start(now);
        m.handle(Input::Loaded(PluginIdentity::default()), now);
        m.handle(Input::InitDue, now);
        let mut caps = Capabilities::new(ReadMethod::PRECISE, TimeScale::UTC, 5, "d");
        caps.min_poll_log2 = min_poll;
        let mut a = m.handle(Input::InitDone(Ok(caps)), now);
        assert_eq!(a.len(), 2, "{a:?}");
        (m, a.pop().unwrap())
    }

    fn timer(period: Duration, immediately: bool) -> Action {
        Action::StartTimer {
            period,
            immediately,
        }
    }

    /// One tick and its reading (offset `offset`, taken now): the actions
    /// after the reading.
    fn read(m: &mut WorkerMachine, offset: i64) -> Vec<Action> {
        let now = Instant::now();
        assert_eq!(m.handle(Input::Tick, now), [Action::CallSample]);
        let t = 1_800_000_000_000_000_000
            + i64::try_from(now.duration_since(m.started).as_nanos()).unwrap();
        let mut s = Sample::new(t, offset, 4);
        s.readings = 1;
        m.handle(
            Input::SampleDone {
                result: Ok(s),
                window: CallWindow {
                    before_ns: t - 1,
                    after_ns: t + 1,
                },
            },
            now,
        )
    }

    /// Reports `sample` sent; the kinds of the actions that follow.
    fn deliver(m: &mut WorkerMachine, sample: Sample, delivered: bool) -> Vec<&'static str> {
        m.handle(Input::Sent { sample, delivered }, Instant::now())
            .iter()
            .map(|a| match a {
                Action::Emit(Event::Sample { .. }) => "sample",
                Action::StartTimer { .. } => "timer",
                _ => "other",
            })
            .collect()
    }

    fn fail(m: &mut WorkerMachine) -> Vec<Action> {
        let now = Instant::now();
        assert_eq!(m.handle(Input::Tick, now), [Action::CallSample]);
        m.handle(
            Input::SampleDone {
                result: Err(PluginError::transient("busy")),
                window: CallWindow {
                    before_ns: 0,
                    after_ns: 0,
                },
            },
            now,
        )
    }

    fn sends(actions: &[Action]) -> Vec<Sample> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Send(s) => Some(*s),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn schedules_follow_the_keys_and_the_plugins_floor() {
        // Poll 0, readings every 0.25 s: four per datagram.
        let s = Schedule::of(Phase::Steady, 0, -2, -4);
        assert_eq!((s.reading, s.per_datagram, s.left), (-2, 4, None));
        assert_eq!(s.period(), MS(250));
        // A plugin that may be read only every 0.5 s gets two.
        assert_eq!(Schedule::of(Phase::Steady, 0, -2, -1).per_datagram, 2);
        // A reading interval at or above the poll: one reading per poll.
        let s = Schedule::of(Phase::Steady, 2, 3, -1);
        assert_eq!((s.reading, s.per_datagram), (2, 1));
        // Poll 4 (16 s) at 0.25 s: 64 readings; while settling, 1 s polls.
        assert_eq!(Schedule::of(Phase::Steady, 4, -2, -4).per_datagram, 64);
        let s = Schedule::of(Phase::Settle, 4, -2, -4);
        assert_eq!((s.per_datagram, s.left), (4, Some(SETTLE_POLLS)));
        // The burst reads every 62.5 ms, one reading per datagram, but
        // never faster than the plugin allows nor slower than the poll.
        let s = Schedule::of(Phase::Burst, 0, -2, -4);
        assert_eq!(
            (s.period(), s.per_datagram, s.left),
            (BURST, 1, Some(BURST_READINGS))
        );
        assert_eq!(Schedule::of(Phase::Burst, 0, -2, -1).period(), MS(500));
        assert_eq!(Schedule::of(Phase::Burst, -1, -2, 0).reading, -1);
    }

    #[tokio::test(start_paused = true)]
    async fn burst_then_settle_then_the_configured_poll() {
        let (mut m, t) = ready(&source(4, -2, true), -4);
        assert_eq!(t, timer(BURST, true));
        assert_eq!(m.schedule().phase, Phase::Burst);
        // The burst: every reading goes out at once; those the daemon did
        // not take (it starts after the workers) do not count.
        for i in 0..3 {
            let sent = sends(&read(&mut m, 200_000_000 + i));
            assert_eq!(sent.len(), 1);
            assert_eq!(deliver(&mut m, sent[0], false), ["sample"]);
            tokio::time::advance(BURST).await;
        }
        for i in 0..BURST_READINGS {
            let a = read(&mut m, 200_000_000 + i64::from(i));
            let sent = sends(&a);
            assert_eq!((a.len(), sent.len()), (1, 1), "reading {i}: {a:?}");
            let a = m.handle(
                Input::Sent {
                    sample: sent[0],
                    delivered: true,
                },
                Instant::now(),
            );
            if i + 1 == BURST_READINGS {
                assert_eq!(a.last(), Some(&timer(MS(250), false)));
            } else {
                assert_eq!(a.len(), 1, "{a:?}");
            }
            tokio::time::advance(BURST).await;
        }
        // Settling: one datagram per second from four readings.
        assert_eq!(m.schedule().phase, Phase::Settle);
        for poll in 0..SETTLE_POLLS {
            for i in 0..4 {
                let a = read(&mut m, 100 + i);
                let sent = sends(&a);
                if i < 3 {
                    assert!(a.is_empty(), "{a:?}");
                } else {
                    assert_eq!(sent.len(), 1);
                    assert_eq!(sent[0].readings, 4);
                    assert_eq!(sent[0].offset_ns, 103, "projected to the last reading");
                    if poll + 1 == SETTLE_POLLS {
                        assert_eq!(a.last(), Some(&timer(MS(250), false)));
                    }
                }
                tokio::time::advance(MS(250)).await;
            }
        }
        // Steady: 64 readings per 16 s datagram.
        assert_eq!(m.schedule().phase, Phase::Steady);
        for i in 0..64 {
            let a = read(&mut m, 7);
            assert_eq!(sends(&a).len(), usize::from(i == 63), "reading {i}");
            tokio::time::advance(MS(250)).await;
        }
        assert_eq!(m.schedule().left, None);
    }

    #[tokio::test(start_paused = true)]
    async fn no_burst_and_short_polls_go_straight_to_the_poll() {
        let (m, t) = ready(&source(0, -2, false), -4);
        assert_eq!(t, timer(MS(250), true));
        assert_eq!(m.schedule().phase, Phase::Steady);
        // With a burst, a poll of 1 s or less needs no settling.
        let (mut m, _) = ready(&source(0, -2, true), -4);
        for _ in 0..BURST_READINGS {
            let sent = sends(&read(&mut m, 1));
            deliver(&mut m, sent[0], true);
        }
        assert_eq!(m.schedule().phase, Phase::Steady);
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_nobody_takes_ends_after_a_minute() {
        let (mut m, _) = ready(&source(0, -2, true), -4);
        for i in 0..BURST_MAX_TRIES {
            let a = read(&mut m, 1);
            let sent = sends(&a);
            assert_eq!(sent.len(), 1);
            if i + 1 == BURST_MAX_TRIES {
                assert_eq!(a.last(), Some(&timer(MS(250), false)), "{a:?}");
            }
            deliver(&mut m, sent[0], false);
            tokio::time::advance(BURST).await;
        }
        assert_eq!(m.schedule().phase, Phase::Steady);
    }

    #[tokio::test(start_paused = true)]
    async fn a_step_seen_in_the_burst_makes_it_go_on() {
        let (mut m, _) = ready(&source(0, -2, true), -4);
        let burst = |m: &mut WorkerMachine, offset: i64| {
            let sent = sends(&read(m, offset));
            assert_eq!(sent.len(), 1);
            deliver(m, sent[0], true)
        };
        // Eight readings 200 ms off: the daemon steps after them.
        for i in 0..8 {
            assert_eq!(burst(&mut m, 200_000_000 + i), ["sample"]);
            tokio::time::advance(BURST).await;
        }
        // The next reading is 200 ms nearer: the burst starts counting again
        // (without it, two more readings would have ended it).
        assert_eq!(burst(&mut m, 1_000), ["sample"]);
        assert_eq!(m.schedule().left, Some(BURST_AFTER_STEP));
        for i in 1..=BURST_AFTER_STEP {
            tokio::time::advance(BURST).await;
            assert_eq!(m.schedule().phase, Phase::Burst, "reading {i}");
            let kinds = burst(&mut m, 1_000 + i64::from(i));
            if i == BURST_AFTER_STEP {
                assert_eq!(kinds, ["sample", "timer"]);
            } else {
                assert_eq!(kinds, ["sample"], "reading {i}");
            }
        }
        assert_eq!(m.schedule().phase, Phase::Steady);
        // Drift and slewing are no step: a burst without a step is not
        // extended.
        let (mut m, _) = ready(&source(0, -2, true), -4);
        for i in 0..BURST_READINGS {
            burst(&mut m, 200_000_000 + 1_000 * i64::from(i));
            tokio::time::advance(BURST).await;
        }
        assert_eq!(m.schedule().phase, Phase::Steady);
    }

    #[tokio::test(start_paused = true)]
    async fn failed_readings_end_the_poll_on_time_with_what_came_in() {
        let (mut m, _) = ready(&source(0, -2, false), -4);
        assert!(read(&mut m, 10).is_empty());
        tokio::time::advance(MS(250)).await;
        assert_eq!(fail(&mut m).len(), 1, "the error is reported");
        tokio::time::advance(MS(250)).await;
        assert!(read(&mut m, 30).is_empty());
        let a = fail(&mut m);
        let sent = sends(&a);
        assert_eq!(sent.len(), 1, "{a:?}");
        assert_eq!((sent[0].readings, sent[0].offset_ns), (2, 30));
        // A poll of failures only sends nothing.
        for _ in 0..4 {
            assert!(sends(&fail(&mut m)).is_empty());
        }
        // Readings of an unavailable source are dropped with it.
        read(&mut m, 1);
        let now = Instant::now();
        m.handle(Input::Tick, now);
        m.handle(
            Input::SampleDone {
                result: Err(PluginError::unavailable("gone")),
                window: CallWindow {
                    before_ns: 0,
                    after_ns: 0,
                },
            },
            now,
        );
        assert!(m.readings.is_empty());
        assert_eq!(m.calls_in_poll, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_plugin_skips_ticks_without_counting_them() {
        let (mut m, _) = ready(&source(0, -2, false), -4);
        assert_eq!(m.handle(Input::Tick, Instant::now()), [Action::CallSample]);
        assert!(m.handle(Input::Tick, Instant::now()).is_empty());
        assert_eq!(m.calls_in_poll, 1);
    }
}
