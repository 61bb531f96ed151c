//! The supervisor's side of a worker's event channel (`ProcessChild`, as
//! `ProcessLauncher` starts it) fed with bad lines by a real child process.
//!
//! The launcher executes `/proc/self/exe worker NAME`: here that is this
//! test binary, which takes `worker` and NAME as test-name filters and so
//! runs [`zz_channel_child`] (and no other test: no other name here holds
//! "worker" or NAME). That test plays the worker: it reads the spec from the
//! environment as a real worker does and writes what the spec's
//! `config_json` asks for on the event channel, the pipe it finds as its
//! standard input. The test harness's own output goes to stdout, which the
//! supervisor logs as plugin output and never reads as events.
//!
//! Garbage that is not UTF-8 and a 64 MiB line (the supervisor reads lines
//! of at most `MAX_LINE` bytes) must neither end the channel nor be held
//! whole: the event after them still arrives.

use std::path::PathBuf;
use std::time::Duration;

use ntpd_host::config::SourceConfig;
use ntpd_host::daemon::supervisor::{Launcher as _, Line, ProcessLauncher, WorkerChild as _};
use ntpd_host::protocol::worker::{self as proto, Call, Event, MAX_LINE, SPEC_ENV, WorkerSpec};

/// The child test's name: the launcher passes it as the worker's name.
const CHILD: &str = "zz_channel_child";

/// The event every child sends after its bad lines.
fn marker() -> Event {
    Event::Hung {
        call: Call::Sample,
        seconds: 42.5,
    }
}

fn spec(what: &str) -> WorkerSpec {
    WorkerSpec {
        source: SourceConfig {
            file: PathBuf::from("/etc/ntpd-rs/ntp.toml"),
            position: 1,
            name: CHILD.to_owned(),
            path: PathBuf::from("/nonexistent/libplugin.so"),
            poll_interval: 0,
            reading_interval: 0,
            startup_burst: false,
            precision: None,
            accuracy: None,
            socket: None,
            sample_timeout: Duration::from_secs(10),
            allow_insecure_plugin: false,
            config_json: what.to_owned(),
        },
        socket: PathBuf::from("/nonexistent/source-1.sock"),
        backoff_initial: Duration::from_secs(1),
        backoff_max: Duration::from_secs(1),
        identity: None,
        memory_limit: 1 << 30,
    }
}

/// Plays the worker when started by the launcher (with a spec in the
/// environment); otherwise, as an ordinary test, does nothing.
#[test]
fn zz_channel_child() {
    let Ok(spec) = std::env::var(SPEC_ENV) else {
        return;
    };
    let spec: WorkerSpec = serde_json::from_str(&spec).expect("the launcher's spec");
    let bad: Vec<u8> = match spec.source.config_json.as_str() {
        "not-utf8" => b"\xff\xfe not UTF-8\n".to_vec(),
        "oversized" => {
            let mut line = vec![b'x'; 64 << 20];
            line.push(b'\n');
            line
        }
        _ => b"partial {\"event\":\"hung\", \r forged\n{\"event\":\"nope\"}\n".to_vec(),
    };
    let mut all = bad;
    all.extend_from_slice(proto::encode(&marker()).as_bytes());
    all.push(b'\n');
    // The event channel: the pipe on fd 0.
    let channel = rustix::stdio::stdin();
    let mut rest = &all[..];
    while !rest.is_empty() {
        let n = rustix::io::write(channel, rest).expect("the event channel is open");
        rest = &rest[n..];
    }
    // Stay alive: the channel is open as long as the worker runs.
    std::thread::sleep(Duration::from_secs(30));
}

/// Starts a child writing `what`, then reads its lines as the supervisor
/// does until the marker event: the garbage lines' lengths, or why not.
async fn read_until_marker(what: &str) -> Result<Vec<usize>, String> {
    let launcher = ProcessLauncher {
        log_filter: "off".to_owned(),
    };
    let mut child = launcher
        .launch(&spec(what))
        .expect("the test binary starts");
    let mut garbage = Vec::new();
    let result = loop {
        match tokio::time::timeout(Duration::from_secs(20), child.next_line()).await {
            Err(_) => break Err("no marker event within 20 s".to_owned()),
            Ok(None) => {
                break Err(format!(
                    "the channel read as closed while the worker runs, after {} garbage lines",
                    garbage.len()
                ));
            }
            Ok(Some(Line::Garbled(line))) => garbage.push(line.len()),
            Ok(Some(Line::Event(e))) => {
                assert_eq!(e, marker());
                break Ok(garbage);
            }
        }
    };
    child.kill();
    result
}

/// Garbage that is UTF-8 (partial lines, forged and unknown events) is
/// skipped, and the next event arrives.
#[tokio::test]
async fn garbage_lines_are_skipped_and_events_still_arrive() {
    let garbage = read_until_marker("garbage").await.unwrap();
    assert_eq!(garbage.len(), 2, "{garbage:?}");
}

#[tokio::test]
async fn a_line_that_is_not_utf8_does_not_end_the_channel() {
    let garbage = read_until_marker("not-utf8").await.unwrap();
    assert_eq!(garbage.len(), 1, "{garbage:?}");
}

#[tokio::test]
async fn an_oversized_line_is_not_held_whole() {
    let garbage = read_until_marker("oversized").await.unwrap();
    assert_eq!(garbage.len(), 1, "{garbage:?}");
    assert!(
        garbage[0] <= MAX_LINE,
        "the supervisor reported a line as {} bytes (limit {MAX_LINE})",
        garbage[0]
    );
}
