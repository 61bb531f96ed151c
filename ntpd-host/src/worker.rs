//! The plugin worker: one process per plugin source.
//!
//! The supervisor re-executes this binary as `ntpd-host worker NAME`, so a
//! crashing or hanging vendor plugin takes down only its own worker. Inside,
//! two tasks share the work:
//!
//! - an async task owns the poll timer (a tokio interval at the source's
//!   poll interval) and never waits on the plugin;
//! - a dedicated OS thread makes every plugin call (load, init, sample,
//!   drop), one at a time.
//!
//! Each sample is sent to the daemon's socket in the sock wire format, and
//! every event goes to the supervisor as one JSON line on stdout.

use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ntpd_plugin_api::{Capabilities, ErrorKind, PluginError, Sample};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc as tmpsc;

use crate::backoff::Backoff;
use crate::config::PluginSource;
use crate::plugin::{self, LoadOptions, Reaction};
use crate::sock;

/// Environment variable carrying the worker's [`WorkerSpec`] as JSON.
pub const SPEC_ENV: &str = "NTPD_HOST_WORKER_SPEC";

/// Exit status: the source is stopped for good (configuration or fatal
/// error); the supervisor must not restart it.
pub const EXIT_STOP: i32 = 3;
/// Exit status: a plugin call hung past the deadline; restart with backoff.
pub const EXIT_HUNG: i32 = 4;

/// What a worker needs to know.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct WorkerSpec {
    /// The source.
    pub source: PluginSource,
    /// Where to send datagrams.
    pub socket: PathBuf,
    /// Re-init backoff: first wait, seconds (default 1).
    pub backoff_initial: f64,
    /// Re-init backoff: longest wait, seconds (default 64).
    pub backoff_max: f64,
}

/// One line from a worker to the supervisor.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(
    tag = "event",
    rename_all = "kebab-case",
    rename_all_fields = "kebab-case"
)]
pub enum Event {
    /// The library is loaded.
    Loaded {
        /// Plugin name.
        name: String,
        /// Plugin vendor.
        vendor: String,
        /// Plugin version.
        version: String,
        /// API version the plugin was built against.
        api_version: String,
    },
    /// `init` succeeded; the source is polling.
    Ready {
        /// Reading method.
        method: String,
        /// Reference time scale.
        timescale: String,
        /// Plugin's precision estimate, ns.
        precision_ns: u64,
        /// Plugin's description.
        description: String,
        /// Capabilities extensions (JSON object text, may be empty).
        extensions: String,
    },
    /// A sample was taken (and sent, if `delivered`).
    Sample {
        /// Offset, reference minus system, ns.
        offset_ns: i64,
        /// Error bound, ns.
        error_ns: u64,
        /// System time of the measurement, ns since 1970.
        system_time_ns: i64,
        /// Leap indicator name.
        leap: String,
        /// Raw readings combined.
        readings: u32,
        /// Whether the daemon's socket accepted the datagram.
        delivered: bool,
        /// Time from the timer tick to the datagram sent, ns.
        latency_ns: u64,
    },
    /// A plugin call failed.
    Error {
        /// Error kind number.
        kind: u32,
        /// Error kind name (`unknown(N)` for kinds this host does not know).
        kind_name: String,
        /// The plugin's message.
        message: String,
        /// What the worker does about it: skip, reinit or stop.
        reaction: String,
        /// Which call failed: load, init or sample.
        call: String,
        /// Seconds until the next init attempt, for reinit.
        retry_in: Option<f64>,
    },
    /// A plugin call did not return within the deadline; the worker exits.
    Hung {
        /// Which call hung.
        call: String,
        /// How long it had been running, seconds.
        seconds: f64,
    },
}

enum Command {
    Init,
    Sample,
    Drop,
}

enum Reply {
    Init(Result<Capabilities, PluginError>),
    Sample(Result<Sample, PluginError>),
}

fn emit(event: &Event) {
    let mut out = std::io::stdout().lock();
    let line = serde_json::to_string(event).expect("events serialize");
    if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
        // The supervisor is gone: nobody wants our samples.
        std::process::exit(1);
    }
}

fn error_event(
    e: &PluginError,
    reaction: Reaction,
    call: &str,
    retry_in: Option<Duration>,
) -> Event {
    Event::Error {
        kind: e.kind.0,
        kind_name: e.kind.to_string(),
        message: e.message.to_string(),
        reaction: format!("{reaction:?}").to_lowercase(),
        call: call.to_owned(),
        retry_in: retry_in.map(|d| d.as_secs_f64()),
    }
}

/// The plugin thread: owns the library and the source object and makes
/// every call into them.
fn plugin_thread(
    loaded: plugin::Plugin,
    config_json: String,
    commands: mpsc::Receiver<Command>,
    replies: tmpsc::UnboundedSender<Reply>,
) {
    let mut source = None;
    for command in commands {
        let reply = match command {
            Command::Init => {
                // Close the old device before opening it again: a stale fd
                // keeps a returning PHC from getting its old name back.
                source = None;
                match loaded.init(&config_json) {
                    Ok(s) => {
                        let caps = s.capabilities();
                        source = caps.is_ok().then_some(s);
                        Reply::Init(caps)
                    }
                    Err(plugin::LoadError::Init { error, .. }) => Reply::Init(Err(error)),
                    Err(other) => Reply::Init(Err(PluginError::fatal(other.to_string()))),
                }
            }
            Command::Sample => match source.as_mut() {
                Some(s) => Reply::Sample(s.sample()),
                None => Reply::Sample(Err(PluginError::unavailable("source is not initialised"))),
            },
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

/// The longest wait between `init` attempts of an unavailable source: the
/// backoff doubles up to the poll interval (at least `initial`, at most
/// `max`), so a device that comes back is sampled again within two poll
/// intervals. A failing `init` of a missing device is cheap (an `open`).
pub fn reinit_backoff_max(initial: Duration, max: Duration, poll: Duration) -> Duration {
    poll.max(initial).min(max)
}

/// Runs a worker until its source stops; returns the process exit status.
pub fn run(spec: WorkerSpec) -> i32 {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("{}: cannot start the worker runtime: {e}", spec.source.name);
            return 1;
        }
    };
    runtime.block_on(run_async(spec))
}

async fn run_async(spec: WorkerSpec) -> i32 {
    let src = &spec.source;
    let loaded = match plugin::load(
        &src.path,
        LoadOptions {
            allow_insecure: src.allow_insecure_plugin,
        },
    ) {
        Ok(p) => p,
        Err(e) => {
            let err = PluginError::configuration(e.to_string());
            emit(&error_event(&err, Reaction::Stop, "load", None));
            tracing::error!("{}: {e}", src.name);
            return EXIT_STOP;
        }
    };
    let info = loaded.info();
    emit(&Event::Loaded {
        name: info.name.to_string(),
        vendor: info.vendor.to_string(),
        version: info.version.to_string(),
        api_version: info.api_version.to_string(),
    });

    let socket = match UnixDatagram::unbound() {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("{}: cannot create a datagram socket: {e}", src.name);
            return 1;
        }
    };
    let _ = socket.set_nonblocking(true);

    let (cmd_tx, cmd_rx) = mpsc::channel();
    let (reply_tx, mut replies) = tmpsc::unbounded_channel();
    let config_json = src.config_json.clone();
    if let Err(e) = std::thread::Builder::new()
        .name("plugin".into())
        .spawn(move || plugin_thread(loaded, config_json, cmd_rx, reply_tx))
    {
        tracing::error!("{}: cannot start the plugin thread: {e}", src.name);
        return 1;
    }

    let initial = Duration::from_secs_f64(spec.backoff_initial);
    let mut backoff = Backoff::new(
        initial,
        reinit_backoff_max(
            initial,
            Duration::from_secs_f64(spec.backoff_max),
            src.poll_duration(),
        ),
        Duration::from_secs(300),
    );
    let mut ready = false;
    let mut next_init: Option<tokio::time::Instant> = Some(tokio::time::Instant::now());
    // The call in flight: what, and when it started (and its tick).
    let mut in_flight: Option<(&'static str, Instant)> = None;
    let mut interval = tokio::time::interval(src.poll_duration());
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut delivery_failures: u64 = 0;
    let worker_started = Instant::now();

    loop {
        let deadline =
            in_flight.map(|(_, t0)| tokio::time::Instant::from_std(t0 + src.sample_timeout));
        tokio::select! {
            _ = interval.tick() => {
                if in_flight.is_some() {
                    // The plugin is still busy; the timer does not wait.
                    continue;
                }
                if ready {
                    in_flight = Some(("sample", Instant::now()));
                    let _ = cmd_tx.send(Command::Sample);
                }
            }
            _ = async { tokio::time::sleep_until(next_init.expect("guarded")).await }, if next_init.is_some() && in_flight.is_none() => {
                next_init = None;
                in_flight = Some(("init", Instant::now()));
                let _ = cmd_tx.send(Command::Init);
            }
            _ = async { tokio::time::sleep_until(deadline.expect("guarded")).await }, if deadline.is_some() => {
                let (call, t0) = in_flight.expect("deadline implies a call");
                emit(&Event::Hung { call: call.to_owned(), seconds: t0.elapsed().as_secs_f64() });
                tracing::error!(
                    "{}: plugin {call}() has not returned after {:.1} s; restarting the worker",
                    src.name, t0.elapsed().as_secs_f64()
                );
                return EXIT_HUNG;
            }
            reply = replies.recv() => {
                let Some(reply) = reply else {
                    tracing::error!("{}: the plugin thread ended", src.name);
                    return 1;
                };
                let (_, started) = in_flight.take().unwrap_or(("", Instant::now()));
                match reply {
                    Reply::Init(Ok(caps)) => {
                        ready = true;
                        emit(&Event::Ready {
                            method: caps.method.to_string(),
                            timescale: caps.timescale.to_string(),
                            precision_ns: caps.precision_ns,
                            description: caps.description.to_string(),
                            extensions: caps.extensions.to_string(),
                        });
                        tracing::info!("{}: ready: {} ({})", src.name, caps.description, caps.method);
                        interval.reset_immediately();
                    }
                    Reply::Init(Err(e)) => {
                        let reaction = match plugin::reaction(e.kind) {
                            Reaction::Stop => Reaction::Stop,
                            _ => Reaction::Reinit,
                        };
                        if reaction == Reaction::Stop {
                            emit(&error_event(&e, reaction, "init", None));
                            tracing::error!("{}: init failed, source stopped: {e}", src.name);
                            return EXIT_STOP;
                        }
                        let wait = backoff.failure(Duration::ZERO);
                        emit(&error_event(&e, reaction, "init", Some(wait)));
                        tracing::warn!("{}: init failed: {e}; retrying in {} s", src.name, wait.as_secs_f64());
                        next_init = Some(tokio::time::Instant::now() + wait);
                    }
                    Reply::Sample(Ok(sample)) => {
                        let datagram = sock::encode(&sample);
                        let delivered = socket.send_to(&datagram, &spec.socket).is_ok();
                        let latency_ns = started.elapsed().as_nanos() as u64;
                        if delivered {
                            backoff.reset();
                            delivery_failures = 0;
                        } else {
                            delivery_failures += 1;
                            // The daemon starts after the workers: stay quiet at first.
                            if worker_started.elapsed() > Duration::from_secs(10)
                                && delivery_failures.is_power_of_two()
                            {
                                tracing::warn!(
                                    "{}: the daemon is not listening on {} ({} sample(s) not delivered)",
                                    src.name, spec.socket.display(), delivery_failures
                                );
                            }
                        }
                        emit(&Event::Sample {
                            offset_ns: sample.offset_ns,
                            error_ns: sample.error_ns,
                            system_time_ns: sample.system_time_ns,
                            leap: sample.leap.to_string(),
                            readings: sample.readings,
                            delivered,
                            latency_ns,
                        });
                    }
                    Reply::Sample(Err(e)) => match plugin::reaction(e.kind) {
                        Reaction::Skip => {
                            emit(&error_event(&e, Reaction::Skip, "sample", None));
                            if e.kind == ErrorKind::PANICKED {
                                tracing::warn!("{}: {e}", src.name);
                            } else {
                                tracing::debug!("{}: {e}", src.name);
                            }
                        }
                        Reaction::Reinit => {
                            ready = false;
                            let _ = cmd_tx.send(Command::Drop);
                            let wait = backoff.failure(Duration::ZERO);
                            emit(&error_event(&e, Reaction::Reinit, "sample", Some(wait)));
                            tracing::warn!(
                                "{}: source unavailable: {e}; closed it, init again in {} s",
                                src.name, wait.as_secs_f64()
                            );
                            next_init = Some(tokio::time::Instant::now() + wait);
                        }
                        Reaction::Stop => {
                            emit(&error_event(&e, Reaction::Stop, "sample", None));
                            tracing::error!("{}: source stopped: {e}", src.name);
                            return EXIT_STOP;
                        }
                    },
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reinit_waits_at_most_one_poll_interval() {
        let s = Duration::from_secs;
        assert_eq!(reinit_backoff_max(s(1), s(64), s(1)), s(1));
        assert_eq!(
            reinit_backoff_max(s(1), s(64), Duration::from_millis(500)),
            s(1)
        );
        assert_eq!(reinit_backoff_max(s(1), s(64), s(16)), s(16));
        assert_eq!(reinit_backoff_max(s(1), s(32), s(64)), s(32));
        let mut b = Backoff::new(s(1), reinit_backoff_max(s(1), s(64), s(4)), s(300));
        let waits: Vec<u64> = (0..5)
            .map(|_| b.failure(Duration::ZERO).as_secs())
            .collect();
        assert_eq!(waits, [1, 2, 4, 4, 4]);
    }
}
