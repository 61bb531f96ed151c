//! The status document: the host's own state, served on
//! `<runtime-dir>/status.sock` (one JSON document per connection), and the
//! joined view `ntpd-host status` makes of it and the daemon's observation
//! socket (ntpd-rs's JSON, passed through as it is).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::decide::bound::{DaemonEstimate, DaemonView as DaemonState};
use crate::decide::source::SourceStatus;

/// Name of the host's status socket in the runtime directory.
pub const STATUS_SOCKET: &str = "status.sock";

/// The host's own state. Fields missing from a running host's document
/// (an older version still running after an upgrade) take their defaults.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", default)]
pub struct HostStatus {
    /// ntpd-host version.
    pub version: String,
    /// `run` or `bridge`.
    pub mode: String,
    /// The user's config file.
    pub config_file: PathBuf,
    /// The daemon's process id (`run` only).
    pub daemon_pid: Option<u32>,
    /// How often the daemon was restarted after a crash (`run` only).
    pub daemon_restarts: u64,
    /// How the daemon last ended, when it was restarted.
    pub daemon_last_end: Option<String>,
    /// The daemon's observation socket (`run` only).
    pub observation_path: Option<PathBuf>,
    /// Every plugin source.
    pub sources: Vec<SourceStatus>,
    /// The ClockBound segment, when it is enabled.
    pub clockbound: Option<ClockBoundStatus>,
}

/// The ClockBound segment's state: the last record written and its parts.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", default)]
pub struct ClockBoundStatus {
    /// The segment file.
    pub path: PathBuf,
    /// The plugin source the bound is built on.
    pub source: String,
    /// The status last written (`unknown`, `synchronized`, `free-running`,
    /// `disrupted`).
    pub status: String,
    /// The bound written, ns.
    pub bound_ns: Option<i64>,
    /// Its parts: the offset term (daemon estimate and sigmas, or the
    /// sample's offset)...
    pub offset_ns: Option<u64>,
    /// ... the sample's own error bound ...
    pub sample_ns: Option<u64>,
    /// ... the reference's error (platform bound or `accuracy`) ...
    pub reference_ns: Option<u64>,
    /// ... and the drift since the sample.
    pub drift_ns: Option<u64>,
    /// The max drift written, ppb.
    pub max_drift_ppb: u32,
    /// `CLOCK_REALTIME` when the record was written, ns since 1970.
    pub written_at_ns: Option<i64>,
    /// Seconds from the write to void-after.
    pub void_after_s: Option<f64>,
    /// Records written.
    pub writes: u64,
    /// The disruption marker written, when the platform has one.
    pub disruption_marker: Option<u64>,
    /// Whether readers are told to check the marker.
    pub disruption_support: bool,
    /// Why the segment is not written, when it is not.
    pub error: Option<String>,
}

/// The daemon's state for the source on `socket`, from its observation:
/// synchronised when its stratum is below 16 and its leap indicator is
/// known; the source's offset and uncertainty (seconds there) in ns.
pub fn daemon_state(observation: &Value, socket: &Path) -> DaemonState {
    let system = observation.get("system");
    let stratum = system
        .and_then(|s| s.get("stratum"))
        .and_then(Value::as_u64);
    let leap = system
        .and_then(|s| s.get("leap_indicator"))
        .and_then(Value::as_str);
    let synchronized =
        stratum.is_some_and(|s| s < 16) && matches!(leap, Some("NoWarning" | "Leap61" | "Leap59"));
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // checked finite, saturating
    let ns = |v: f64| (v * 1e9).round() as i64;
    let source = daemon_source(Some(observation), socket).and_then(|src| {
        let offset = src.get("offset").and_then(Value::as_f64)?;
        let uncertainty = src.get("uncertainty").and_then(Value::as_f64)?;
        (offset.is_finite() && uncertainty.is_finite() && uncertainty >= 0.0).then(|| {
            DaemonEstimate {
                offset_ns: ns(offset),
                uncertainty_ns: ns(uncertainty).unsigned_abs(),
            }
        })
    });
    DaemonState {
        synchronized,
        source,
    }
}

/// The daemon's entry for a sock source on `socket`, if any.
fn daemon_source<'a>(daemon: Option<&'a Value>, socket: &Path) -> Option<&'a Value> {
    daemon?
        .get("sources")?
        .as_array()?
        .iter()
        .find(|s| s.get("address").and_then(Value::as_str) == Some(&socket.display().to_string()))
}

/// One source in the joined view: the host's status, the age of its last
/// sample and the daemon's view of it.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct JoinedSource<'a> {
    /// The host's status of the source.
    #[serde(flatten)]
    pub status: &'a SourceStatus,
    /// Seconds since the last sample's system time.
    pub last_sample_age_s: Option<f64>,
    /// The daemon's entry for the source's socket (ntpd-rs's JSON).
    pub daemon: Option<&'a Value>,
}

/// The daemon's part of the joined view (ntpd-rs's JSON).
#[derive(Clone, Debug, Serialize)]
pub struct DaemonView<'a> {
    /// ntpd-rs's system state.
    pub system: Option<&'a Value>,
    /// ntpd-rs's program information.
    pub program: Option<&'a Value>,
    /// ntpd-rs's sources.
    pub sources: Option<&'a Value>,
}

/// The joined view (`status --json`).
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct JoinedView<'a> {
    /// ntpd-host version.
    pub version: &'a str,
    /// `run` or `bridge`.
    pub mode: &'a str,
    /// The user's config file.
    pub config_file: &'a Path,
    /// The daemon's process id.
    pub daemon_pid: Option<u32>,
    /// Daemon restarts after crashes.
    pub daemon_restarts: u64,
    /// How the daemon last ended, when it was restarted.
    pub daemon_last_end: Option<&'a str>,
    /// The daemon's view, when it could be read.
    pub daemon: Option<DaemonView<'a>>,
    /// Every plugin source.
    pub sources: Vec<JoinedSource<'a>>,
    /// The ClockBound segment.
    pub clockbound: Option<&'a ClockBoundStatus>,
}

/// Seconds from `then_ns` to `now_ns` (both ns since 1970).
#[allow(clippy::cast_precision_loss)] // an age, not an absolute time
fn age_s(now_ns: i64, then_ns: i64) -> f64 {
    now_ns.saturating_sub(then_ns) as f64 * 1e-9
}

/// Joins the host's status with the daemon's observation, at `now_ns`.
pub fn join<'a>(host: &'a HostStatus, daemon: Option<&'a Value>, now_ns: i64) -> JoinedView<'a> {
    JoinedView {
        version: &host.version,
        mode: &host.mode,
        config_file: &host.config_file,
        daemon_pid: host.daemon_pid,
        daemon_restarts: host.daemon_restarts,
        daemon_last_end: host.daemon_last_end.as_deref(),
        daemon: daemon.map(|d| DaemonView {
            system: d.get("system"),
            program: d.get("program"),
            sources: d.get("sources"),
        }),
        sources: host
            .sources
            .iter()
            .map(|s| JoinedSource {
                status: s,
                last_sample_age_s: s.last_sample_time_ns.map(|t| age_s(now_ns, t)),
                daemon: daemon_source(daemon, &s.socket),
            })
            .collect(),
        clockbound: host.clockbound.as_ref(),
    }
}

/// A JSON number of seconds as nanoseconds, or "-".
fn secs_as_ns(v: Option<&Value>) -> String {
    v.and_then(Value::as_f64)
        .map_or_else(|| "-".into(), |s| format!("{:+.0} ns", s * 1e9))
}

/// "-" or the value with a unit.
fn or_dash<T: std::fmt::Display>(v: Option<T>, unit: &str) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v}{unit}"))
}

/// The joined view as text; `daemon_error` says why the daemon's view is
/// missing, when it should be there.
pub fn render(view: &JoinedView<'_>, daemon_error: Option<&str>) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = writeln!(
        out,
        "ntpd-host {} ({}), config {}",
        view.version,
        view.mode,
        view.config_file.display()
    );
    let restarts = match (view.daemon_restarts, view.daemon_last_end) {
        (0, _) => String::new(),
        (n, Some(end)) => format!(", restarted {n} time(s), last it {end}"),
        (n, None) => format!(", restarted {n} time(s)"),
    };
    let _ = match (&view.daemon, daemon_error) {
        (Some(d), _) => writeln!(
            out,
            "daemon       pid {}{restarts}, stratum {}, offset {}, uncertainty {}",
            or_dash(view.daemon_pid, ""),
            d.system
                .and_then(|s| s.get("stratum"))
                .cloned()
                .unwrap_or(Value::Null),
            secs_as_ns(d.system.and_then(|s| s.get("offset"))),
            secs_as_ns(d.system.and_then(|s| s.get("uncertainty"))),
        ),
        (None, Some(e)) => writeln!(out, "daemon       not reachable{restarts}: {e}"),
        (None, None) => writeln!(out, "daemon       none (bridge mode)"),
    };
    for joined in &view.sources {
        let s = joined.status;
        let plugin = s.plugin.as_ref().map_or_else(
            || "-".to_owned(),
            |p| {
                format!(
                    "{} {} ({}, SDK {})",
                    p.name, p.version, p.vendor, p.sdk_version
                )
            },
        );
        let errors = if s.errors.is_empty() {
            "none".to_owned()
        } else {
            s.errors
                .iter()
                .map(|(k, v)| format!("{v} {k}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let _ = writeln!(out);
        let _ = writeln!(out, "source #{} {}: {}", s.position, s.name, s.state.name());
        let _ = writeln!(out, "  plugin     {plugin}  [{}]", s.path.display());
        let _ = writeln!(
            out,
            "  reference  {} via {} method, time scale {}, precision {}, poll 2^{} s",
            s.device
                .as_deref()
                .or(s.description.as_deref())
                .unwrap_or("-"),
            or_dash(s.method, ""),
            or_dash(s.timescale, ""),
            or_dash(s.precision_ns, " ns"),
            s.poll_interval,
        );
        let _ = writeln!(
            out,
            "  last       offset {}, error bound {}, {}",
            s.last_offset_ns
                .map_or_else(|| "-".into(), |v| format!("{v:+} ns")),
            or_dash(s.last_error_ns, " ns"),
            joined
                .last_sample_age_s
                .map_or_else(|| "-".into(), |a| format!("{a:.1} s ago")),
        );
        let _ = writeln!(
            out,
            "  counts     {} samples ({} delivered), errors: {errors}, restarts {}, hangs {}",
            s.samples, s.delivered, s.restarts, s.hangs
        );
        if let Some(d) = joined.daemon {
            let _ = writeln!(
                out,
                "  daemon     offset {}, uncertainty {}",
                secs_as_ns(d.get("offset")),
                secs_as_ns(d.get("uncertainty")),
            );
        }
        if let Some(e) = &s.last_error {
            let _ = writeln!(out, "  last error {e}");
        }
    }
    if let Some(cb) = view.clockbound {
        let _ = writeln!(out);
        let _ = writeln!(out, "{}", render_clockbound(cb));
    }
    out
}

/// The ClockBound lines of `status`.
fn render_clockbound(cb: &ClockBoundStatus) -> String {
    let mut out = format!("clockbound   {} (source {})", cb.path.display(), cb.source);
    if let Some(e) = &cb.error {
        out.push_str(&format!(": not written: {e}"));
        return out;
    }
    out.push_str(&format!(": {}", cb.status));
    match (
        cb.bound_ns,
        cb.offset_ns,
        cb.sample_ns,
        cb.reference_ns,
        cb.drift_ns,
    ) {
        (Some(b), Some(o), Some(s), Some(r), Some(d)) => out.push_str(&format!(
            ", bound ±{b} ns = offset {o} + sample {s} + reference {r} + drift {d} ns"
        )),
        _ => out.push_str(", no bound yet (no sample)"),
    }
    out.push_str(&format!(
        "\n  growth     {} ppb, void {} after the write, {} record(s) written",
        cb.max_drift_ppb,
        cb.void_after_s
            .map_or_else(|| "-".into(), |v| format!("{v:.1} s")),
        cb.writes
    ));
    if let Some(m) = cb.disruption_marker {
        out.push_str(&format!(
            "\n  disruption marker {m}{}",
            if cb.disruption_support {
                " (clients check it)"
            } else {
                " (clients not told to check it)"
            }
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::source::SourceState;
    use ntpd_plugin_api::ReadMethod;
    use serde_json::json;

    fn host() -> HostStatus {
        HostStatus {
            version: "0.1.0".into(),
            mode: "run".into(),
            config_file: "/etc/ntpd-rs/ntp.toml".into(),
            daemon_pid: Some(42),
            daemon_restarts: 2,
            daemon_last_end: Some("was killed by signal 9".into()),
            observation_path: None,
            sources: vec![SourceStatus {
                name: "ptp#1".into(),
                position: 1,
                socket: "/run/ntpd-host/source-1.sock".into(),
                state: SourceState::Running,
                device: Some("/dev/ptp0".into()),
                method: Some(ReadMethod::EXTENDED),
                last_offset_ns: Some(-120),
                last_sample_time_ns: Some(1_000_000_000),
                samples: 7,
                ..SourceStatus::default()
            }],
            clockbound: None,
        }
    }

    #[test]
    fn joins_daemon_source_by_socket_path() {
        let daemon = json!({
            "system": {"stratum": 1, "offset": 1e-7},
            "sources": [
                {"address": "192.0.2.1:123", "offset": 0.5},
                {"address": "/run/ntpd-host/source-1.sock", "offset": -1.2e-7, "uncertainty": 3e-8},
            ]
        });
        let host = host();
        let view = join(&host, Some(&daemon), 3_000_000_000);
        let v = serde_json::to_value(&view).unwrap();
        assert_eq!(v["sources"][0]["daemon"]["offset"], json!(-1.2e-7));
        assert_eq!(v["sources"][0]["last-sample-age-s"], json!(2.0));
        assert_eq!(v["sources"][0]["state"], json!("running"));
        assert_eq!(v["sources"][0]["samples"], json!(7));
        assert_eq!(v["daemon"]["system"]["stratum"], json!(1));
        assert_eq!(v["daemon-pid"], json!(42));
        let text = render(&view, None);
        assert!(text.contains("source #1 ptp#1: running"), "{text}");
        assert!(text.contains("/dev/ptp0 via extended"), "{text}");
        assert!(text.contains("offset -120 ns"), "{text}");
        assert!(
            text.contains("daemon     offset -120 ns, uncertainty +30 ns"),
            "{text}"
        );
        assert!(text.contains("stratum 1, offset +100 ns"), "{text}");
        assert!(
            text.contains("pid 42, restarted 2 time(s), last it was killed by signal 9"),
            "{text}"
        );
        assert_eq!(v["daemon-restarts"], json!(2));
    }

    #[test]
    fn an_older_hosts_document_still_reads() {
        // What a host from before a field was added serves: `status` of the
        // new version (after an upgrade, before the restart) still reads it.
        let mut v = serde_json::to_value(host()).unwrap();
        v.as_object_mut().unwrap().remove("clockbound");
        v["sources"][0].as_object_mut().unwrap().remove("disrupted");
        v["sources"][0].as_object_mut().unwrap().remove("vmclock");
        let back: HostStatus = serde_json::from_value(v).unwrap();
        assert_eq!(back, host());
    }

    #[test]
    fn daemon_state_of_the_source() {
        let socket = Path::new("/run/ntpd-host/source-1.sock");
        let obs = json!({
            "system": {"stratum": 2, "leap_indicator": "NoWarning"},
            "sources": [
                {"address": "192.0.2.1:123", "offset": 0.5, "uncertainty": 0.1},
                {"address": "/run/ntpd-host/source-1.sock", "offset": -1.2e-7, "uncertainty": 3e-8},
            ]
        });
        let d = daemon_state(&obs, socket);
        assert!(d.synchronized);
        assert_eq!(
            d.source,
            Some(DaemonEstimate {
                offset_ns: -120,
                uncertainty_ns: 30
            })
        );
        let mut unsynced = obs.clone();
        unsynced["system"]["leap_indicator"] = json!("Unknown");
        assert!(!daemon_state(&unsynced, socket).synchronized);
        let mut stratum16 = obs.clone();
        stratum16["system"]["stratum"] = json!(16);
        assert!(!daemon_state(&stratum16, socket).synchronized);
        assert_eq!(daemon_state(&obs, Path::new("/other.sock")).source, None);
        assert_eq!(daemon_state(&json!({}), socket).source, None);
    }

    #[test]
    fn clockbound_is_rendered_with_its_parts() {
        let mut host = host();
        host.clockbound = Some(ClockBoundStatus {
            path: "/var/run/clockbound/shm0".into(),
            source: "ptp#1".into(),
            status: "synchronized".into(),
            bound_ns: Some(95),
            offset_ns: Some(30),
            sample_ns: Some(10),
            reference_ns: Some(50),
            drift_ns: Some(5),
            max_drift_ppb: 1_004,
            void_after_s: Some(15.5),
            writes: 3,
            disruption_marker: Some(7),
            ..ClockBoundStatus::default()
        });
        let view = join(&host, None, 0);
        let text = render(&view, None);
        assert!(
            text.contains("clockbound   /var/run/clockbound/shm0 (source ptp#1): synchronized, bound ±95 ns = offset 30 + sample 10 + reference 50 + drift 5 ns"),
            "{text}"
        );
        assert!(
            text.contains("1004 ppb, void 15.5 s after the write, 3 record(s)"),
            "{text}"
        );
        assert!(
            text.contains("disruption marker 7 (clients not told to check it)"),
            "{text}"
        );
        let v = serde_json::to_value(&view).unwrap();
        assert_eq!(v["clockbound"]["bound-ns"], json!(95));
        host.clockbound.as_mut().unwrap().error = Some("read-only file system".into());
        let text = render(&join(&host, None, 0), None);
        assert!(
            text.contains("(source ptp#1): not written: read-only file system"),
            "{text}"
        );
    }

    #[test]
    fn unreachable_daemon_is_said() {
        let host = host();
        let view = join(&host, None, 0);
        assert!(serde_json::to_value(&view).unwrap()["sources"][0]["daemon"].is_null());
        let text = render(&view, Some("connection refused"));
        assert!(
            text.contains("daemon       not reachable, restarted 2 time(s), last it was killed by signal 9: connection refused"),
            "{text}"
        );
        assert!(render(&view, None).contains("daemon       none (bridge mode)"));
    }
}
