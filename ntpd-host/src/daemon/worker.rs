//! The worker process: one per plugin source.
//!
//! The supervisor re-executes this binary as `ntpd-host worker NAME`, so a
//! crashing or hanging vendor plugin takes down only its own worker. Inside,
//! [`drive`] runs the [`WorkerMachine`]: it owns the poll timer and the
//! call deadline, never waits on the plugin, and carries out the machine's
//! actions. A dedicated OS thread ([`ThreadPort`]) makes every plugin call
//! (load, init, sample, drop), one at a time.
//!
//! The plugin thread, the daemon socket and the event channel sit behind
//! small traits so the loop is tested with tokio's paused clock and a
//! scripted plugin.

use std::collections::VecDeque;
use std::fs::File;
use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError, mpsc};

use ntpd_plugin_api::{Capabilities, PluginError, Sample};
use tokio::sync::mpsc as tmpsc;
use tokio::time::{Instant, MissedTickBehavior};

use crate::daemon::privileges;
use crate::decide::worker::{Action, CallWindow, Input, WorkerMachine};
use crate::loader::{self, LoadError, LoadOptions, PluginLibrary, SourceHandle};
use crate::protocol::records::PluginIdentity;
use crate::protocol::sock;
use crate::protocol::worker::{self as proto, Event, LogLevel, WorkerExit, WorkerSpec};

/// A request to the plugin thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// Load the library.
    Load,
    /// Call `init` (dropping any previous source first).
    Init,
    /// Call `sample`.
    Sample,
    /// Drop the source (closing its device).
    Drop,
}

/// An answer from the plugin thread.
#[derive(Debug)]
pub enum Reply {
    /// The library loaded, or why not (one line).
    Loaded(Result<PluginIdentity, String>),
    /// `init` (and `capabilities`) returned.
    Init(Result<Capabilities, PluginError>),
    /// `sample` returned, called within this window.
    Sample(Result<Sample, PluginError>, CallWindow),
}

/// Where plugin calls are made.
pub trait PluginPort {
    /// Queues a call.
    fn send(&mut self, command: Command);
    /// The next answer; `None` when the plugin side is gone.
    fn recv(&mut self) -> impl Future<Output = Option<Reply>>;
}

/// Where the datagrams go.
pub trait DatagramSink {
    /// Sends one datagram; whether the daemon's socket took it.
    fn send(&mut self, datagram: &[u8; sock::DATAGRAM_LEN]) -> bool;
}

/// Where events go.
pub trait EventSink {
    /// Reports one event; `false` when the supervisor is gone.
    fn emit(&mut self, event: &Event) -> bool;
}

/// Runs the worker's machine until it exits; returns the exit status.
pub async fn drive<P: PluginPort, D: DatagramSink, E: EventSink>(
    machine: &mut WorkerMachine,
    port: &mut P,
    sink: &mut D,
    events: &mut E,
) -> WorkerExit {
    let mut pending: VecDeque<Action> = machine.start(Instant::now()).into();
    let mut ticker = tokio::time::interval(machine.schedule().period());
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
    loop {
        while let Some(action) = pending.pop_front() {
            match action {
                Action::CallLoad => port.send(Command::Load),
                Action::CallInit => port.send(Command::Init),
                Action::CallSample => port.send(Command::Sample),
                Action::DropSource => port.send(Command::Drop),
                Action::Send(sample) => {
                    let delivered = sink.send(&sock::encode(&sample));
                    let more = machine.handle(Input::Sent { sample, delivered }, Instant::now());
                    pending.extend(more);
                }
                Action::Emit(event) => {
                    if !events.emit(&event) {
                        // The supervisor is gone: nobody wants our samples.
                        return WorkerExit::Failed;
                    }
                }
                Action::StartTimer {
                    period,
                    immediately,
                } => {
                    let first = if immediately {
                        Instant::now()
                    } else {
                        Instant::now() + period
                    };
                    ticker = tokio::time::interval_at(first, period);
                    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
                }
                Action::Exit(exit) => return exit,
            }
        }
        let next_init = machine.next_init();
        let deadline = machine.call_deadline();
        let input = tokio::select! {
            _ = ticker.tick() => Input::Tick,
            () = sleep_until(next_init), if next_init.is_some() => Input::InitDue,
            () = sleep_until(deadline), if deadline.is_some() => Input::Overdue,
            reply = port.recv() => match reply {
                Some(Reply::Loaded(Ok(plugin))) => Input::Loaded(plugin),
                Some(Reply::Loaded(Err(message))) => Input::LoadFailed(message),
                Some(Reply::Init(result)) => Input::InitDone(result),
                Some(Reply::Sample(result, window)) => Input::SampleDone { result, window },
                None => {
                    tracing::error!("the plugin thread ended");
                    return WorkerExit::Failed;
                }
            },
        };
        pending.extend(machine.handle(input, Instant::now()));
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The real plugin side: a dedicated OS thread that owns the library and
/// the source object and makes every call into them.
pub struct ThreadPort {
    commands: mpsc::Sender<Command>,
    replies: tmpsc::UnboundedReceiver<Reply>,
}

impl ThreadPort {
    /// Starts the plugin thread for the library `opened` from `path` (opened
    /// and checked earlier, perhaps with privileges this process no longer
    /// has), initialised with `config_json`.
    pub fn start(
        opened: Result<File, LoadError>,
        path: PathBuf,
        config_json: String,
    ) -> std::io::Result<Self> {
        let (commands, command_rx) = mpsc::channel();
        let (reply_tx, replies) = tmpsc::unbounded_channel();
        std::thread::Builder::new()
            .name("plugin".into())
            .spawn(move || plugin_thread(opened, &path, &config_json, &command_rx, &reply_tx))?;
        Ok(Self { commands, replies })
    }
}

impl PluginPort for ThreadPort {
    fn send(&mut self, command: Command) {
        // A gone thread shows as a closed reply channel in recv().
        let _ = self.commands.send(command);
    }

    fn recv(&mut self) -> impl Future<Output = Option<Reply>> {
        self.replies.recv()
    }
}

fn plugin_thread(
    mut opened: Result<File, LoadError>,
    path: &std::path::Path,
    config_json: &str,
    commands: &mpsc::Receiver<Command>,
    replies: &tmpsc::UnboundedSender<Reply>,
) {
    let mut library: Option<PluginLibrary> = None;
    let mut source: Option<SourceHandle> = None;
    for command in commands {
        let reply = match command {
            Command::Load => {
                let taken = std::mem::replace(
                    &mut opened,
                    Err(LoadError::Abi {
                        path: path.to_owned(),
                        detail: "loaded already".to_owned(),
                    }),
                );
                Reply::Loaded(
                    match taken.and_then(|file| loader::load_opened(file, path)) {
                        Ok(lib) => {
                            let identity = PluginIdentity::from(lib.info());
                            library = Some(lib);
                            Ok(identity)
                        }
                        Err(e) => Err(e.to_string()),
                    },
                )
            }
            Command::Init => {
                // Close the old device before opening it again: a stale fd
                // keeps a returning PHC from getting its old name back.
                source = None;
                Reply::Init(match library.as_ref().map(|lib| lib.init(config_json)) {
                    Some(Ok(s)) => {
                        let caps = s.capabilities();
                        source = caps.is_ok().then_some(s);
                        caps
                    }
                    Some(Err(LoadError::Init { error, .. })) => Err(error),
                    Some(Err(other)) => Err(PluginError::fatal(other.to_string())),
                    None => Err(PluginError::fatal("the plugin library is not loaded")),
                })
            }
            Command::Sample => {
                let before_ns = ntpd_plugin_api::realtime_now_ns();
                let result = match source.as_mut() {
                    Some(s) => s.sample(),
                    None => Err(PluginError::unavailable("source is not initialised")),
                };
                let after_ns = ntpd_plugin_api::realtime_now_ns();
                Reply::Sample(
                    result,
                    CallWindow {
                        before_ns,
                        after_ns,
                    },
                )
            }
            Command::Drop => {
                source = None;
                continue;
            }
        };
        if replies.send(reply).is_err() {
            return;
        }
    }
}

/// The real datagram sink: an unbound datagram socket sending to the
/// daemon's socket path.
pub struct SocketSink {
    socket: UnixDatagram,
    to: PathBuf,
}

impl SocketSink {
    /// A sink sending to `to`.
    pub fn new(to: PathBuf) -> std::io::Result<Self> {
        let socket = UnixDatagram::unbound()?;
        socket.set_nonblocking(true)?;
        Ok(Self { socket, to })
    }
}

impl DatagramSink for SocketSink {
    fn send(&mut self, datagram: &[u8; sock::DATAGRAM_LEN]) -> bool {
        self.socket.send_to(datagram, &self.to).is_ok()
    }
}

/// The event channel to the supervisor: the pipe the worker finds as its
/// standard input. Shared by the loop and the log writer; each event is
/// one write of one line.
#[derive(Clone, Debug)]
pub struct EventChannel(Arc<Mutex<File>>);

impl EventChannel {
    /// Takes the event channel from fd 0 and puts /dev/null there, so the
    /// plugin's code finds nothing of it on the standard streams.
    pub fn from_stdin() -> std::io::Result<Self> {
        let events = rustix::io::fcntl_dupfd_cloexec(rustix::stdio::stdin(), 3)?;
        let null = File::open("/dev/null")?;
        rustix::stdio::dup2_stdin(&null)?;
        Ok(Self(Arc::new(Mutex::new(File::from(events)))))
    }

    /// Sends one event; `false` when the supervisor is gone.
    pub fn send(&self, event: &Event) -> bool {
        let mut line = proto::encode(event);
        line.push('\n');
        let mut file = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        file.write_all(line.as_bytes()).is_ok()
    }
}

impl EventSink for EventChannel {
    fn emit(&mut self, event: &Event) -> bool {
        self.send(event)
    }
}

/// One log record of the worker, sent as an [`Event::Log`] when dropped.
pub struct LogWriter {
    channel: EventChannel,
    level: LogLevel,
    text: Vec<u8>,
}

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.text.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LogWriter {
    fn drop(&mut self) {
        let message = proto::bounded_text(String::from_utf8_lossy(&self.text).trim_end());
        if !message.is_empty() {
            self.channel.send(&Event::Log {
                level: self.level,
                message,
            });
        }
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for EventChannel {
    type Writer = LogWriter;

    fn make_writer(&'a self) -> LogWriter {
        LogWriter {
            channel: self.clone(),
            level: LogLevel::Info,
            text: Vec::new(),
        }
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> LogWriter {
        let level = match *meta.level() {
            tracing::Level::ERROR => LogLevel::Error,
            tracing::Level::WARN => LogLevel::Warn,
            tracing::Level::INFO => LogLevel::Info,
            _ => LogLevel::Debug,
        };
        LogWriter {
            channel: self.clone(),
            level,
            text: Vec::new(),
        }
    }
}

/// Runs a worker for `spec` until its source stops; returns the exit
/// status. Before any plugin code runs: the library file is opened and
/// checked, the memory limit set, privileges given up and the seccomp
/// filter installed.
pub fn run(spec: &WorkerSpec, events: &EventChannel) -> WorkerExit {
    let name = &spec.source.name;
    let options = LoadOptions {
        allow_insecure: spec.source.allow_insecure_plugin,
    };
    // Opened with the host's identity: the path may be readable only by it.
    let mut opened = loader::open_checked(&spec.source.path, options);
    let confined = privileges::limit_memory(spec.memory_limit)
        .and_then(|()| spec.identity.as_ref().map_or(Ok(()), privileges::enter))
        .and_then(|()| privileges::confine());
    if let Err(problem) = confined {
        // The library is never mapped: the worker stops like a failed load.
        opened = Err(LoadError::Abi {
            path: spec.source.path.clone(),
            detail: format!("the worker could not give up its privileges: {problem}"),
        });
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(source = %name, "cannot start the worker runtime: {e}");
            return WorkerExit::Failed;
        }
    };
    let mut sink = match SocketSink::new(spec.socket.clone()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(source = %name, "cannot create a datagram socket: {e}");
            return WorkerExit::Failed;
        }
    };
    let mut port = match ThreadPort::start(
        opened,
        spec.source.path.clone(),
        spec.source.config_json.clone(),
    ) {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(source = %name, "cannot start the plugin thread: {e}");
            return WorkerExit::Failed;
        }
    };
    let mut events = events.clone();
    runtime.block_on(async {
        let mut machine = WorkerMachine::new(spec, Instant::now());
        drive(&mut machine, &mut port, &mut sink, &mut events).await
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SourceConfig;
    use crate::protocol::worker::{Call, Reaction};
    use ntpd_plugin_api::{ReadMethod, TimeScale};
    use std::cell::RefCell;
    use std::rc::Rc;
    use std::time::Duration;

    /// What the scripted plugin does on each call.
    #[derive(Clone)]
    enum Step {
        /// Answer after this long.
        After(Duration, fn() -> Reply),
        /// Never answer.
        Hang,
    }

    /// A plugin port whose answers come from a script, after scripted
    /// delays (on tokio's clock) counted from the call.
    struct ScriptPort {
        script: VecDeque<Step>,
        /// Calls made and not answered yet: when, and how they end.
        pending: VecDeque<(Instant, Step)>,
        calls: Rc<RefCell<Vec<(Command, Instant)>>>,
    }

    impl PluginPort for ScriptPort {
        fn send(&mut self, command: Command) {
            self.calls.borrow_mut().push((command, Instant::now()));
            if command != Command::Drop {
                let step = self.script.pop_front().unwrap_or(Step::Hang);
                self.pending.push_back((Instant::now(), step));
            }
        }

        // Cancel-safe like a channel: the answer is taken only when it is
        // delivered.
        async fn recv(&mut self) -> Option<Reply> {
            match self.pending.front().cloned() {
                None | Some((_, Step::Hang)) => std::future::pending().await,
                Some((at, Step::After(d, reply))) => {
                    tokio::time::sleep_until(at + d).await;
                    self.pending.pop_front();
                    Some(reply())
                }
            }
        }
    }

    #[derive(Default)]
    struct Collect {
        datagrams: Vec<(Instant, sock::Datagram)>,
        events: Vec<Event>,
        accept: bool,
    }

    struct Shared(Rc<RefCell<Collect>>);

    impl DatagramSink for Shared {
        fn send(&mut self, datagram: &[u8; sock::DATAGRAM_LEN]) -> bool {
            let mut c = self.0.borrow_mut();
            c.datagrams
                .push((Instant::now(), sock::decode(datagram).unwrap()));
            c.accept
        }
    }

    impl EventSink for Shared {
        fn emit(&mut self, event: &Event) -> bool {
            self.0.borrow_mut().events.push(event.clone());
            true
        }
    }

    fn spec(poll: i8) -> SourceConfig {
        SourceConfig {
            file: "/etc/ntpd-rs/ntp.toml".into(),
            position: 1,
            name: "t".into(),
            path: "/p.so".into(),
            poll_interval: poll,
            reading_interval: poll,
            startup_burst: false,
            precision: None,
            accuracy: None,
            socket: None,
            sample_timeout: Duration::from_secs(10),
            allow_insecure_plugin: false,
            config_json: "{}".into(),
        }
    }

    fn loaded() -> Reply {
        Reply::Loaded(Ok(PluginIdentity::default()))
    }
    fn ready() -> Reply {
        Reply::Init(Ok(Capabilities::new(
            ReadMethod::PRECISE,
            TimeScale::UTC,
            1,
            "x",
        )))
    }
    const WINDOW: CallWindow = CallWindow {
        before_ns: 0,
        after_ns: 10,
    };
    fn sample() -> Reply {
        Reply::Sample(Ok(Sample::new(5, 1_000, 1)), WINDOW)
    }
    fn gone() -> Reply {
        Reply::Sample(Err(PluginError::unavailable("gone")), WINDOW)
    }
    fn fatal() -> Reply {
        Reply::Sample(Err(PluginError::fatal("broken")), WINDOW)
    }

    type Run = (
        WorkerExit,
        Rc<RefCell<Collect>>,
        Rc<RefCell<Vec<(Command, Instant)>>>,
    );

    /// Runs the loop over `script` for at most `limit`.
    async fn run_script(poll: i8, script: Vec<Step>, limit: Duration) -> Option<Run> {
        let source = spec(poll);
        let mut machine = WorkerMachine::for_source(
            &source,
            Duration::from_secs(1),
            Duration::from_secs(64),
            Instant::now(),
        );
        let calls = Rc::new(RefCell::new(Vec::new()));
        let mut port = ScriptPort {
            script: script.into(),
            pending: VecDeque::new(),
            calls: calls.clone(),
        };
        let collect = Rc::new(RefCell::new(Collect {
            accept: true,
            ..Collect::default()
        }));
        let mut sink = Shared(collect.clone());
        let mut events = Shared(collect.clone());
        let exit = tokio::time::timeout(
            limit,
            drive(&mut machine, &mut port, &mut sink, &mut events),
        )
        .await
        .ok()?;
        Some((exit, collect, calls))
    }

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[tokio::test(start_paused = true)]
    async fn samples_go_out_at_the_poll_interval_right_after_each_call() {
        let t0 = Instant::now();
        let mut script = vec![Step::After(MS(5), loaded), Step::After(MS(5), ready)];
        script.extend((0..5).map(|_| Step::After(MS(20), sample as fn() -> Reply)));
        script.push(Step::After(MS(20), fatal));
        let (exit, collect, _) = run_script(0, script, Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(exit, WorkerExit::Stopped);
        let c = collect.borrow();
        let times: Vec<u128> = c
            .datagrams
            .iter()
            .map(|(t, _)| t.duration_since(t0).as_millis())
            .collect();
        // Ready at 10 ms, a tick at once, then every second; each datagram
        // leaves when its 20 ms call returns.
        assert_eq!(times, [30, 1030, 2030, 3030, 4030]);
        assert!(
            c.datagrams
                .iter()
                .all(|(_, d)| (d.offset - 1e-6).abs() < 1e-15)
        );
        let samples = c
            .events
            .iter()
            .filter(|e| {
                matches!(
                    e,
                    Event::Sample {
                        delivered: true,
                        latency_ns: 20_000_000,
                        ..
                    }
                )
            })
            .count();
        assert_eq!(samples, 5);
    }

    #[tokio::test(start_paused = true)]
    async fn a_hung_sample_call_exits_hung_at_the_deadline() {
        let t0 = Instant::now();
        let script = vec![
            Step::After(MS(0), loaded),
            Step::After(MS(0), ready),
            Step::After(MS(10), sample),
            Step::Hang,
        ];
        let (exit, collect, calls) = run_script(0, script, Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(exit, WorkerExit::Hung);
        let c = collect.borrow();
        let Some(Event::Hung { call, seconds }) = c.events.last() else {
            panic!("{:?}", c.events)
        };
        assert_eq!((*call, *seconds), (Call::Sample, 10.0));
        // The hanging call started at 1 s; the worker gave up at 11 s.
        let last_call = calls.borrow().last().unwrap().1;
        assert_eq!(last_call.duration_since(t0), Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn an_unavailable_source_is_dropped_and_initialised_again() {
        let t0 = Instant::now();
        let script = vec![
            Step::After(MS(0), loaded),
            Step::After(MS(0), ready),
            Step::After(MS(0), gone),
            Step::After(MS(0), || {
                Reply::Init(Err(PluginError::unavailable("still gone")))
            }),
            Step::After(MS(0), ready),
            Step::After(MS(0), fatal),
        ];
        let (exit, collect, calls) = run_script(2, script, Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(exit, WorkerExit::Stopped);
        let calls: Vec<(Command, u128)> = calls
            .borrow()
            .iter()
            .map(|(c, t)| (*c, t.duration_since(t0).as_millis()))
            .collect();
        assert_eq!(
            calls,
            [
                (Command::Load, 0),
                (Command::Init, 0),
                (Command::Sample, 0),
                (Command::Drop, 0),
                (Command::Init, 1000),
                (Command::Init, 3000),
                (Command::Sample, 3000),
            ]
        );
        let reactions: Vec<Reaction> = collect
            .borrow()
            .events
            .iter()
            .filter_map(|e| match e {
                Event::Error { reaction, .. } => Some(*reaction),
                _ => None,
            })
            .collect();
        assert_eq!(
            reactions,
            [Reaction::Reinit, Reaction::Reinit, Reaction::Stop]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_load_failure_stops_at_once() {
        let script = vec![Step::After(MS(1), || {
            Reply::Loaded(Err("/p.so: not a plugin".into()))
        })];
        let (exit, collect, calls) = run_script(0, script, Duration::from_secs(5)).await.unwrap();
        assert_eq!(exit, WorkerExit::Stopped);
        assert_eq!(calls.borrow().len(), 1);
        assert!(matches!(
            collect.borrow().events[..],
            [Event::Error {
                call: Call::Load,
                reaction: Reaction::Stop,
                ..
            }]
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_call_skips_ticks_instead_of_queueing_them() {
        let t0 = Instant::now();
        let script = vec![
            Step::After(MS(0), loaded),
            Step::After(MS(0), ready),
            Step::After(MS(3500), sample),
            Step::After(MS(0), sample),
            Step::After(MS(0), fatal),
        ];
        let (_, collect, calls) = run_script(0, script, Duration::from_secs(60))
            .await
            .unwrap();
        let sample_calls: Vec<u128> = calls
            .borrow()
            .iter()
            .filter(|(c, _)| *c == Command::Sample)
            .map(|(_, t)| t.duration_since(t0).as_millis())
            .collect();
        // The 3.5 s call swallows the ticks at 1, 2 and 3 s; the next call
        // comes at the next tick (4 s), not at once.
        assert_eq!(sample_calls, [0, 4000, 5000]);
        assert_eq!(collect.borrow().datagrams.len(), 2);
    }
}
