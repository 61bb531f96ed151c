//! What the host knows about one plugin source: its state and counters,
//! folded from worker events and the supervisor's verdicts. This is what
//! `ntpd-host status` shows.

use std::collections::BTreeMap;
use std::path::PathBuf;

use ntpd_plugin_api::{ErrorKind, ReadMethod, TimeScale};
use serde::{Deserialize, Serialize};

use crate::config::SourceConfig;
use crate::decide::supervisor::{EndCause, Verdict};
use crate::protocol::records::PluginIdentity;
use crate::protocol::worker::{Event, Reaction};

/// Where a source is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SourceState {
    /// Its worker is loading the plugin or calling `init` for the first time.
    #[default]
    Starting,
    /// Polling.
    Running,
    /// The source is unavailable; the worker calls `init` again later.
    ReinitWait,
    /// The worker ended; the supervisor starts it again after a backoff.
    RestartWait,
    /// Stopped for good (configuration or fatal error, or shutdown).
    Stopped,
}

impl SourceState {
    /// Every state, in the order a source goes through them.
    pub const ALL: [SourceState; 5] = [
        SourceState::Starting,
        SourceState::Running,
        SourceState::ReinitWait,
        SourceState::RestartWait,
        SourceState::Stopped,
    ];

    /// The name as `status` prints it.
    pub fn name(self) -> &'static str {
        match self {
            SourceState::Starting => "starting",
            SourceState::Running => "running",
            SourceState::ReinitWait => "reinit-wait",
            SourceState::RestartWait => "restart-wait",
            SourceState::Stopped => "stopped",
        }
    }
}

/// What the host knows about one plugin source.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", default)]
pub struct SourceStatus {
    /// Source label.
    pub name: String,
    /// Position among `[[source]]` entries.
    pub position: usize,
    /// Plugin library path.
    pub path: PathBuf,
    /// The daemon socket the samples go to.
    pub socket: PathBuf,
    /// Configured poll interval, log2 seconds.
    pub poll_interval: i8,
    /// Where the source is.
    pub state: SourceState,
    /// Worker process id, while one runs.
    pub pid: Option<u32>,
    /// Plugin identity, once loaded.
    pub plugin: Option<PluginIdentity>,
    /// Reading method, once initialised.
    pub method: Option<ReadMethod>,
    /// Reference time scale, once initialised.
    pub timescale: Option<TimeScale>,
    /// Plugin's precision estimate, ns.
    pub precision_ns: Option<u64>,
    /// Plugin's description of the source.
    pub description: Option<String>,
    /// Device, from the capabilities' extensions.
    pub device: Option<String>,
    /// Clock name, from the capabilities' extensions.
    pub clock_name: Option<String>,
    /// The platform's vmclock device the plugin reads, from the
    /// capabilities' extensions (`platform.vmclock`).
    pub vmclock: Option<PathBuf>,
    /// Last offset, ns (reference minus system).
    pub last_offset_ns: Option<i64>,
    /// Last error bound, ns.
    pub last_error_ns: Option<u64>,
    /// The reference's own error bound with the last sample, ns (when the
    /// platform publishes one).
    pub last_reference_error_ns: Option<u64>,
    /// The reference's time was disrupted (a live migration) and no sample
    /// has come since.
    pub disrupted: bool,
    /// Disruptions seen.
    pub disruptions: u64,
    /// How long the last sample took, from the start of the plugin call to
    /// the datagram sent, ns.
    pub last_read_delay_ns: Option<u64>,
    /// System time of the last sample, ns since 1970.
    pub last_sample_time_ns: Option<i64>,
    /// Samples taken.
    pub samples: u64,
    /// Samples the daemon's socket accepted.
    pub delivered: u64,
    /// Failed plugin calls by error kind.
    pub errors: BTreeMap<ErrorKind, u64>,
    /// Worker restarts (crash, hang or silence).
    pub restarts: u64,
    /// Hangs detected.
    pub hangs: u64,
    /// Samples the host refused to pass on (they broke the plugin
    /// contract).
    pub rejected: u64,
    /// The last error, one line.
    pub last_error: Option<String>,
}

impl SourceStatus {
    /// The initial status of a configured source whose samples go to
    /// `socket`.
    pub fn new(source: &SourceConfig, socket: PathBuf) -> Self {
        Self {
            name: source.name.clone(),
            position: source.position,
            path: source.path.clone(),
            socket,
            poll_interval: source.poll_interval,
            ..Self::default()
        }
    }

    /// A worker process started.
    pub fn on_spawned(&mut self, pid: Option<u32>) {
        self.pid = pid;
        if self.state != SourceState::ReinitWait {
            self.state = SourceState::Starting;
        }
    }

    /// Applies one worker event.
    pub fn on_event(&mut self, event: &Event) {
        match event {
            Event::Loaded { plugin } => self.plugin = Some(plugin.clone()),
            Event::Ready { capabilities } => {
                self.state = SourceState::Running;
                self.method = Some(capabilities.method);
                self.timescale = Some(capabilities.timescale);
                self.precision_ns = Some(capabilities.precision_ns);
                self.description = Some(capabilities.description.clone());
                self.device = capabilities.extension("device").map(str::to_owned);
                self.clock_name = capabilities.extension("clock-name").map(str::to_owned);
                self.vmclock = capabilities
                    .extensions
                    .get("platform")
                    .and_then(|p| p.get("vmclock"))
                    .and_then(serde_json::Value::as_str)
                    .map(PathBuf::from);
            }
            Event::Sample {
                sample,
                delivered,
                latency_ns,
            } => {
                self.last_read_delay_ns = Some(*latency_ns);
                self.samples += 1;
                self.delivered += u64::from(*delivered);
                self.last_offset_ns = Some(sample.offset_ns);
                self.last_error_ns = Some(sample.error_ns);
                self.last_reference_error_ns =
                    (sample.reference_error_ns > 0).then_some(sample.reference_error_ns);
                self.last_sample_time_ns = Some(sample.system_time_ns);
                self.disrupted = false;
            }
            Event::Error {
                call,
                error,
                reaction,
                ..
            } => {
                *self.errors.entry(error.kind).or_default() += 1;
                if error.kind == ErrorKind::DISRUPTED {
                    self.disrupted = true;
                    self.disruptions += 1;
                }
                self.last_error = Some(format!(
                    "{}: {}: {}",
                    call.name(),
                    error.kind,
                    error.message
                ));
                match reaction {
                    Reaction::Reinit => self.state = SourceState::ReinitWait,
                    Reaction::Stop => self.state = SourceState::Stopped,
                    Reaction::Skip => {}
                }
            }
            Event::Hung { call, seconds } => {
                self.hangs += 1;
                self.last_error = Some(format!("{}() hung for {seconds:.1} s", call.name()));
            }
            Event::Rejected { reason, .. } => {
                self.rejected += 1;
                self.last_error = Some(format!("sample rejected: {reason}"));
            }
            // The supervisor logs these; they change no state.
            Event::Log { .. } => {}
        }
    }

    /// The worker ended with `cause`, and the supervisor decided `verdict`.
    pub fn on_end(&mut self, cause: &EndCause, verdict: Verdict) {
        self.pid = None;
        match verdict {
            Verdict::GiveUp => self.state = SourceState::Stopped,
            Verdict::RestartAfter(_) => {
                self.restarts += 1;
                self.state = SourceState::RestartWait;
            }
        }
        match cause {
            // The worker said why (its error or hung event).
            EndCause::Stopped | EndCause::Hung => {}
            EndCause::Silent => {
                self.last_error = Some("worker went silent and was killed".to_owned());
            }
            EndCause::Crashed(end) => self.last_error = Some(format!("worker {end}")),
        }
    }

    /// The supervising task for this source failed (a bug in the host): it
    /// is restarted after `wait`.
    pub fn on_task_failure(&mut self, message: &str) {
        self.pid = None;
        self.restarts += 1;
        self.state = SourceState::RestartWait;
        self.last_error = Some(format!("internal error, supervision restarted: {message}"));
    }

    /// The host is shutting down, or cannot start a worker at all.
    pub fn on_stopped(&mut self, why: Option<String>) {
        self.pid = None;
        self.state = SourceState::Stopped;
        if why.is_some() {
            self.last_error = why;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::supervisor::ProcessEnd;
    use crate::protocol::records::{CapabilitiesRecord, ErrorRecord, SampleRecord};
    use crate::protocol::worker::Call;
    use ntpd_plugin_api::{Capabilities, Leap};
    use std::time::Duration;

    fn ready() -> Event {
        let mut caps = Capabilities::new(ReadMethod::EXTENDED, TimeScale::UTC, 300, "d");
        caps.extensions = r#"{"device":"/dev/ptp0","clock-name":"ptp_kvm"}"#.into();
        Event::Ready {
            capabilities: CapabilitiesRecord::from(&caps),
        }
    }

    fn error(kind: ErrorKind, reaction: Reaction) -> Event {
        Event::Error {
            call: Call::Sample,
            error: ErrorRecord {
                kind,
                message: "/dev/ptp0: gone".into(),
            },
            reaction,
            retry_in_s: Some(1.0),
        }
    }

    #[test]
    fn events_update_the_status() {
        let mut s = SourceStatus::default();
        s.on_spawned(Some(7));
        assert_eq!((s.state, s.pid), (SourceState::Starting, Some(7)));
        s.on_event(&ready());
        assert_eq!(s.state, SourceState::Running);
        assert_eq!(s.method, Some(ReadMethod::EXTENDED));
        assert_eq!(s.device.as_deref(), Some("/dev/ptp0"));
        assert_eq!(s.clock_name.as_deref(), Some("ptp_kvm"));
        s.on_event(&Event::Sample {
            sample: SampleRecord {
                system_time_ns: 5,
                offset_ns: 12,
                error_ns: 3,
                reference_error_ns: 0,
                leap: Leap::NONE,
                readings: 5,
                flags: 0,
            },
            delivered: false,
            latency_ns: 1,
        });
        assert_eq!((s.samples, s.delivered, s.last_offset_ns), (1, 0, Some(12)));
        assert_eq!(s.last_read_delay_ns, Some(1));
        s.on_event(&error(ErrorKind::TRANSIENT, Reaction::Skip));
        assert_eq!(s.state, SourceState::Running);
        s.on_event(&error(ErrorKind::UNAVAILABLE, Reaction::Reinit));
        assert_eq!(s.state, SourceState::ReinitWait);
        // A restarted worker of a source waiting for its device stays waiting.
        s.on_spawned(Some(8));
        assert_eq!(s.state, SourceState::ReinitWait);
        s.on_event(&error(ErrorKind(77), Reaction::Skip));
        assert_eq!(s.errors[&ErrorKind::UNAVAILABLE], 1);
        assert_eq!(s.errors[&ErrorKind(77)], 1);
        assert_eq!(
            s.last_error.as_deref(),
            Some("sample: unknown(77): /dev/ptp0: gone")
        );
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["state"], "reinit-wait");
        assert_eq!(v["errors"]["unavailable"], 1);
        assert_eq!(v["errors"]["unknown(77)"], 1);
        assert_eq!(v["method"], "extended");
        let back: SourceStatus = serde_json::from_value(v).unwrap();
        assert_eq!(back, s);
        s.on_event(&Event::Rejected {
            sample: SampleRecord::from(&ntpd_plugin_api::Sample::new(0, 1, 0)),
            reason: "its error bound is 0 ns".into(),
        });
        assert_eq!(s.rejected, 1);
        assert_eq!(
            s.last_error.as_deref(),
            Some("sample rejected: its error bound is 0 ns")
        );
        s.on_event(&error(ErrorKind::DISRUPTED, Reaction::Skip));
        assert!(s.disrupted);
        assert_eq!(s.disruptions, 1);
        // The next sample ends the disruption.
        s.on_event(&Event::Sample {
            sample: SampleRecord {
                reference_error_ns: 40,
                ..SampleRecord::from(&ntpd_plugin_api::Sample::new(9, 3, 2))
            },
            delivered: true,
            latency_ns: 1,
        });
        assert!(!s.disrupted);
        assert_eq!(s.last_reference_error_ns, Some(40));
        assert_eq!(s.state, SourceState::ReinitWait, "unchanged");
        s.on_event(&error(ErrorKind::FATAL, Reaction::Stop));
        assert_eq!(s.state, SourceState::Stopped);
    }

    #[test]
    fn ends_update_state_restarts_and_the_last_error() {
        let mut s = SourceStatus::default();
        s.on_spawned(Some(1));
        s.on_end(
            &EndCause::Crashed(ProcessEnd::Signalled(11)),
            Verdict::RestartAfter(Duration::from_secs(1)),
        );
        assert_eq!(
            (s.state, s.pid, s.restarts),
            (SourceState::RestartWait, None, 1)
        );
        assert_eq!(
            s.last_error.as_deref(),
            Some("worker was killed by signal 11")
        );
        s.on_end(
            &EndCause::Silent,
            Verdict::RestartAfter(Duration::from_secs(2)),
        );
        assert_eq!(
            s.last_error.as_deref(),
            Some("worker went silent and was killed")
        );
        s.on_event(&Event::Hung {
            call: Call::Sample,
            seconds: 10.0,
        });
        s.on_end(
            &EndCause::Hung,
            Verdict::RestartAfter(Duration::from_secs(4)),
        );
        assert_eq!((s.hangs, s.restarts), (1, 3));
        assert_eq!(s.last_error.as_deref(), Some("sample() hung for 10.0 s"));
        s.on_end(&EndCause::Stopped, Verdict::GiveUp);
        assert_eq!((s.state, s.restarts), (SourceState::Stopped, 3));
        s.on_task_failure("boom");
        assert_eq!((s.state, s.restarts), (SourceState::RestartWait, 4));
        assert!(s.last_error.as_deref().unwrap().contains("boom"));
    }
}
