//! `ntpd-host status`: the daemon's view of its sources joined with each
//! plugin worker's state.
//!
//! The running host serves its own state on `<runtime-dir>/status.sock`
//! (one JSON document per connection). The daemon's view comes from its
//! observation socket (ntpd-rs's format: a big-endian u64 length, then JSON).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::supervisor::SourceStatus;

/// Name of the host's status socket in the runtime directory.
pub const STATUS_SOCKET: &str = "status.sock";

/// The host's own state.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct HostStatus {
    /// ntpd-host version.
    pub version: String,
    /// `run` or `bridge`.
    pub mode: String,
    /// The user's config file.
    pub config_file: PathBuf,
    /// The daemon's process id (`run` only).
    pub daemon_pid: Option<u32>,
    /// The daemon's observation socket (`run` only).
    pub observation_path: Option<PathBuf>,
    /// Every plugin source.
    pub sources: Vec<SourceStatus>,
}

/// Serves `status()` on a unix stream socket at `path` until the task is
/// dropped.
pub async fn serve<F>(path: PathBuf, status: F) -> std::io::Result<()>
where
    F: Fn() -> HostStatus + Send + 'static,
{
    use tokio::io::AsyncWriteExt;
    crate::supervisor::remove_socket(&path);
    let listener = tokio::net::UnixListener::bind(&path)?;
    loop {
        let (mut stream, _) = listener.accept().await?;
        let body = serde_json::to_vec(&status()).expect("status serializes");
        tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(2), stream.write_all(&body)).await;
        });
    }
}

fn connect(path: &Path) -> std::io::Result<UnixStream> {
    let stream = UnixStream::connect(path)?;
    stream.set_read_timeout(Some(Duration::from_secs(3)))?;
    stream.set_write_timeout(Some(Duration::from_secs(3)))?;
    Ok(stream)
}

/// Reads the host's status from its status socket.
pub fn read_host(path: &Path) -> std::io::Result<HostStatus> {
    let mut body = Vec::new();
    connect(path)?.read_to_end(&mut body)?;
    serde_json::from_slice(&body).map_err(std::io::Error::other)
}

/// Reads the daemon's observation socket.
pub fn read_daemon(path: &Path) -> std::io::Result<Value> {
    let mut stream = connect(path)?;
    let _ = stream.flush();
    let mut len = [0u8; 8];
    stream.read_exact(&mut len)?;
    let len = u64::from_be_bytes(len);
    if len > 16 << 20 {
        return Err(std::io::Error::other("observation message too large"));
    }
    let mut body = vec![0u8; len as usize];
    stream.read_exact(&mut body)?;
    serde_json::from_slice(&body).map_err(std::io::Error::other)
}

/// The daemon's entry for a sock source on `socket`, if any.
fn daemon_source<'a>(daemon: Option<&'a Value>, socket: &Path) -> Option<&'a Value> {
    daemon?
        .get("sources")?
        .as_array()?
        .iter()
        .find(|s| s.get("address").and_then(Value::as_str) == Some(&socket.display().to_string()))
}

/// The joined view as JSON (for `--json`).
pub fn joined_json(host: &HostStatus, daemon: Option<&Value>, now_ns: i64) -> Value {
    let sources: Vec<Value> = host
        .sources
        .iter()
        .map(|s| {
            let mut v = serde_json::to_value(s).expect("status serializes");
            v["last-sample-age-s"] =
                json!(s.last_sample_time_ns.map(|t| (now_ns - t) as f64 * 1e-9));
            v["daemon"] = daemon_source(daemon, &s.socket)
                .cloned()
                .unwrap_or(Value::Null);
            v
        })
        .collect();
    json!({
        "version": host.version,
        "mode": host.mode,
        "config-file": host.config_file,
        "daemon-pid": host.daemon_pid,
        "daemon": daemon.map(|d| json!({
            "system": d.get("system"),
            "program": d.get("program"),
            "sources": d.get("sources"),
        })),
        "sources": sources,
    })
}

/// A JSON number of seconds as nanoseconds, or "-".
fn secs_as_ns(v: Option<&Value>) -> String {
    v.and_then(Value::as_f64)
        .map_or_else(|| "-".into(), |s| format!("{:+.0} ns", s * 1e9))
}

fn ns(v: Option<i64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:+} ns"))
}

/// The joined view as text.
pub fn render(
    host: &HostStatus,
    daemon: Option<&Value>,
    daemon_error: Option<&str>,
    now_ns: i64,
) -> String {
    let mut out = String::new();
    let line = |out: &mut String, s: String| {
        out.push_str(&s);
        out.push('\n');
    };
    line(
        &mut out,
        format!(
            "ntpd-host {} ({}), config {}",
            host.version,
            host.mode,
            host.config_file.display()
        ),
    );
    match (daemon, daemon_error) {
        (Some(d), _) => {
            let system = d.get("system");
            line(
                &mut out,
                format!(
                    "daemon       pid {}, stratum {}, offset {}, uncertainty {}",
                    host.daemon_pid.map_or("-".into(), |p| p.to_string()),
                    system
                        .and_then(|s| s.get("stratum"))
                        .cloned()
                        .unwrap_or(Value::Null),
                    secs_as_ns(system.and_then(|s| s.get("offset"))),
                    secs_as_ns(system.and_then(|s| s.get("uncertainty"))),
                ),
            );
        }
        (None, Some(e)) => line(&mut out, format!("daemon       not reachable: {e}")),
        (None, None) => line(&mut out, "daemon       none (bridge mode)".into()),
    }
    for s in &host.sources {
        line(&mut out, String::new());
        let plugin = s.plugin.as_ref().map_or("-".to_owned(), |p| {
            format!(
                "{} {} ({}, API {})",
                p.name, p.version, p.vendor, p.api_version
            )
        });
        line(
            &mut out,
            format!("source #{} {}: {}", s.position, s.name, s.state),
        );
        line(
            &mut out,
            format!("  plugin     {plugin}  [{}]", s.path.display()),
        );
        line(
            &mut out,
            format!(
                "  reference  {} via {} method, time scale {}, precision {}",
                s.device
                    .as_deref()
                    .or(s.description.as_deref())
                    .unwrap_or("-"),
                s.method.as_deref().unwrap_or("-"),
                s.timescale.as_deref().unwrap_or("-"),
                s.precision_ns.map_or("-".into(), |p| format!("{p} ns")),
            ),
        );
        let age = s.last_sample_time_ns.map_or("-".into(), |t| {
            format!("{:.1} s ago", (now_ns - t) as f64 * 1e-9)
        });
        line(
            &mut out,
            format!(
                "  last       offset {}, error bound {}, {age}",
                ns(s.last_offset_ns),
                s.last_error_ns.map_or("-".into(), |e| format!("{e} ns")),
            ),
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
        line(
            &mut out,
            format!(
                "  counts     {} samples ({} delivered), errors: {errors}, restarts {}, hangs {}",
                s.samples, s.delivered, s.restarts, s.hangs
            ),
        );
        if let Some(d) = daemon_source(daemon, &s.socket) {
            line(
                &mut out,
                format!(
                    "  daemon     offset {}, uncertainty {}",
                    secs_as_ns(d.get("offset")),
                    secs_as_ns(d.get("uncertainty")),
                ),
            );
        }
        if let Some(e) = &s.last_error {
            line(&mut out, format!("  last error {e}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> HostStatus {
        HostStatus {
            version: "0.1.0".into(),
            mode: "run".into(),
            config_file: "/etc/ntpd-rs/ntp.toml".into(),
            daemon_pid: Some(42),
            observation_path: None,
            sources: vec![SourceStatus {
                name: "ptp#1".into(),
                position: 1,
                socket: "/run/ntpd-host/source-1.sock".into(),
                state: "running".into(),
                device: Some("/dev/ptp0".into()),
                method: Some("extended".into()),
                last_offset_ns: Some(-120),
                last_sample_time_ns: Some(1_000_000_000),
                samples: 7,
                ..SourceStatus::default()
            }],
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
        let v = joined_json(&host(), Some(&daemon), 3_000_000_000);
        assert_eq!(v["sources"][0]["daemon"]["offset"], json!(-1.2e-7));
        assert_eq!(v["sources"][0]["last-sample-age-s"], json!(2.0));
        let text = render(&host(), Some(&daemon), None, 3_000_000_000);
        assert!(text.contains("source #1 ptp#1: running"), "{text}");
        assert!(text.contains("/dev/ptp0 via extended"), "{text}");
        assert!(text.contains("offset -120 ns"), "{text}");
        assert!(
            text.contains("daemon     offset -120 ns, uncertainty +30 ns"),
            "{text}"
        );
        assert!(text.contains("stratum 1, offset +100 ns"), "{text}");
    }

    #[test]
    fn unreachable_daemon_is_said() {
        let text = render(&host(), None, Some("connection refused"), 0);
        assert!(text.contains("daemon       not reachable: connection refused"));
    }
}
