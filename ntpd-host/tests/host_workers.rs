//! The host's plugin workers and supervision, end to end, without root.
//!
//! These tests run `ntpd-host bridge` (the workers without the embedded
//! daemon): they never start ntpd-rs, so they cannot touch this machine's
//! clock. A receiver in the test binds each source's socket and decodes the
//! datagrams exactly as ntpd-rs does (`ntpd_host::sock::decode`, the same
//! checks as ntpd-rs's sock source).

mod common;

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ntpd_host::sock::{self, Datagram};
use serde_json::Value;

/// A temporary directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("nh-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running `ntpd-host bridge`, stopped (SIGTERM) on drop.
struct Bridge {
    child: Child,
    runtime: PathBuf,
}

impl Bridge {
    fn start(dir: &Path, config: &str) -> Self {
        let cfg = dir.join("ntp.toml");
        std::fs::write(&cfg, config).unwrap();
        let runtime = dir.join("run");
        let child = Command::new(common::host_bin())
            .args(["bridge", "-c"])
            .arg(&cfg)
            .arg("--runtime-dir")
            .arg(&runtime)
            .args(["-l", "warn"])
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        Self { child, runtime }
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// `ntpd-host status --json` for this bridge.
    fn status(&self) -> Value {
        let out = Command::new(common::host_bin())
            .args(["status", "--json", "--runtime-dir"])
            .arg(&self.runtime)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "status failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Polls status until `pred` holds for source `i`, or panics after `limit`.
    fn wait_for(
        &self,
        i: usize,
        limit: Duration,
        what: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let until = Instant::now() + limit;
        loop {
            if let Ok(s) = std::panic::catch_unwind(|| self.status()) {
                if pred(&s["sources"][i]) {
                    return s["sources"][i].clone();
                }
                if Instant::now() > until {
                    panic!(
                        "timed out waiting for {what}; last status: {:#}",
                        s["sources"][i]
                    );
                }
            } else if Instant::now() > until {
                panic!("timed out waiting for {what}: no status");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGTERM, then wait for the exit status.
    fn stop(mut self) -> std::process::ExitStatus {
        terminate(self.pid());
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < until, "bridge did not exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            terminate(self.pid());
            let _ = self.child.wait();
        }
    }
}

fn terminate(pid: i32) {
    let pid = rustix::process::Pid::from_raw(pid).unwrap();
    let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
}

/// Processes whose parent is `pid`.
fn children_of(pid: i32) -> Vec<i32> {
    common::children_of(pid as u32)
        .into_iter()
        .map(|p| p as i32)
        .collect()
}

fn alive(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| s[s.rfind(')').unwrap() + 2..].starts_with('Z'))
            .unwrap_or(true)
}

/// A receiver on `path`, decoding like ntpd-rs.
struct Receiver(UnixDatagram);

impl Receiver {
    fn bind(path: &Path) -> Self {
        let s = UnixDatagram::bind(path).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        Self(s)
    }

    /// The next valid datagram within `limit`, with its arrival time.
    fn next(&self, limit: Duration) -> Option<(Instant, Datagram)> {
        let until = Instant::now() + limit;
        let mut buf = [0u8; 128];
        while Instant::now() < until {
            if let Ok(n) = self.0.recv(&mut buf) {
                let d = sock::decode(&buf[..n]).expect("datagram decodes as ntpd-rs would");
                return Some((Instant::now(), d));
            }
        }
        None
    }

    /// Collects `n` datagrams, panicking if they do not come within `limit`.
    fn take(&self, n: usize, limit: Duration) -> Vec<(Instant, Datagram)> {
        let until = Instant::now() + limit;
        let mut out = Vec::new();
        while out.len() < n {
            let left = until.saturating_duration_since(Instant::now());
            match self.next(left) {
                Some(d) => out.push(d),
                None => panic!("only {} of {n} datagrams within {limit:?}", out.len()),
            }
        }
        out
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn sim_source(socket: &Path, poll: i8, extra: &str, config: &str) -> String {
    format!(
        "[[source]]\nmode = \"plugin\"\npath = \"{}\"\npoll-interval = {poll}\nsocket = \"{}\"\n{extra}\n[source.config]\n{config}\n\n",
        common::plugin_path("ntpd_sim").display(),
        socket.display()
    )
}

#[test]
fn datagrams_carry_the_samples_at_the_poll_interval() {
    let dir = TempDir::new("dgram");
    let socket = dir.0.join("s.sock");
    let rx = Receiver::bind(&socket);
    let started = unix_now();
    let bridge = Bridge::start(
        &dir.0,
        &sim_source(
            &socket,
            -1,
            "",
            "offset = 0.25\nnoise = 100\nseed = 5\nleap = \"insert\"",
        ),
    );
    let got = rx.take(8, Duration::from_secs(15));
    for (_, d) in &got {
        assert_eq!(d.pulse, 0);
        assert_eq!(d.leap, 1, "leap insert is code 1");
        // 0.25 s within 6 sigma of the 100 ns noise.
        assert!((d.offset - 0.25).abs() < 600e-9, "offset {}", d.offset);
        let now = unix_now();
        assert!(
            (started - 1..=now + 1).contains(&d.tv_sec),
            "measurement time {} is within the test ({started}..{now})",
            d.tv_sec
        );
        assert!((0..1_000_000).contains(&d.tv_usec));
    }
    // poll-interval -1: one datagram every 0.5 s.
    let spacing = got.last().unwrap().0 - got[1].0;
    let mean = spacing.as_secs_f64() / (got.len() - 2) as f64;
    assert!((0.4..0.6).contains(&mean), "mean spacing {mean} s");

    let st = bridge.wait_for(0, Duration::from_secs(5), "samples", |s| {
        s["samples"].as_u64() >= Some(8)
    });
    assert_eq!(st["state"], "running");
    assert_eq!(st["plugin"]["name"], "sim");
    assert_eq!(st["method"], "extended");
    assert!(st["delivered"].as_u64().unwrap() >= 8);
    assert!(st["last-offset-ns"].as_i64().unwrap().abs_diff(250_000_000) < 600);

    let pid = bridge.pid();
    let workers = children_of(pid);
    assert_eq!(workers.len(), 1, "one worker per source");
    let runtime = bridge.runtime.clone();
    let status = bridge.stop();
    assert!(
        status.success(),
        "bridge exits cleanly on SIGTERM: {status:?}"
    );
    assert!(workers.iter().all(|w| !alive(*w)), "no worker left behind");
    assert!(
        !runtime.join("status.sock").exists(),
        "status socket removed"
    );
}

#[test]
fn several_sources_each_deliver_their_own_offset() {
    let dir = TempDir::new("multi");
    let offsets = [0.001, -0.002, 37.5];
    let mut config = String::new();
    let mut receivers = Vec::new();
    for (i, off) in offsets.iter().enumerate() {
        let socket = dir.0.join(format!("s{i}.sock"));
        receivers.push(Receiver::bind(&socket));
        config.push_str(&sim_source(&socket, -1, "", &format!("offset = {off}")));
    }
    let bridge = Bridge::start(&dir.0, &config);
    for (rx, off) in receivers.iter().zip(offsets) {
        for (_, d) in rx.take(3, Duration::from_secs(15)) {
            assert!((d.offset - off).abs() < 1e-8, "got {} want {off}", d.offset);
        }
    }
    assert_eq!(children_of(bridge.pid()).len(), 3);
    assert!(bridge.stop().success());
}

#[test]
fn a_panicking_plugin_is_counted_and_sampling_goes_on() {
    let dir = TempDir::new("panic");
    let socket = dir.0.join("s.sock");
    let rx = Receiver::bind(&socket);
    let bridge = Bridge::start(&dir.0, &sim_source(&socket, -1, "", "panic-at = 2"));
    rx.take(4, Duration::from_secs(15));
    let st = bridge.wait_for(0, Duration::from_secs(5), "panic counted", |s| {
        s["errors"]["panicked"].as_u64() == Some(1)
    });
    assert_eq!(st["restarts"], 0, "a caught panic needs no restart");
    assert!(
        st["last-error"]
            .as_str()
            .unwrap()
            .contains("simulated panic")
    );
}

#[test]
fn a_crashing_worker_is_restarted_and_others_keep_delivering() {
    let dir = TempDir::new("abort");
    let crash = dir.0.join("crash.sock");
    let steady = dir.0.join("steady.sock");
    let rx_crash = Receiver::bind(&crash);
    let rx_steady = Receiver::bind(&steady);
    let config = format!(
        "{}{}",
        sim_source(
            &crash,
            -1,
            "name = \"crashy\"",
            "abort-at = 3\noffset = 0.5"
        ),
        sim_source(&steady, -1, "name = \"steady\"", "offset = 0.1")
    );
    let bridge = Bridge::start(&dir.0, &config);
    // Two samples, the abort, a restart after 1 s, then samples again.
    let st = bridge.wait_for(0, Duration::from_secs(20), "a restart", |s| {
        s["restarts"].as_u64() >= Some(1)
    });
    assert!(
        st["last-error"].as_str().unwrap().contains("signal 6"),
        "{st}"
    );
    let mut crash_count = 0;
    while rx_crash.next(Duration::from_millis(10)).is_some() {
        crash_count += 1;
    }
    assert!(crash_count >= 2, "samples before the crash");
    // After the restart the crashy source delivers again...
    assert!(!rx_crash.take(1, Duration::from_secs(10)).is_empty());
    // ...and the steady one never stopped.
    let steady_st = bridge.status()["sources"][1].clone();
    assert_eq!(steady_st["restarts"], 0);
    assert_eq!(steady_st["state"], "running");
    assert!(!rx_steady.take(2, Duration::from_secs(5)).is_empty());
    let pid = bridge.pid();
    assert_eq!(
        children_of(pid).len(),
        2,
        "the crashed worker was replaced, not duplicated"
    );
    assert!(bridge.stop().success());
}

#[test]
fn a_hung_plugin_call_restarts_the_worker() {
    let dir = TempDir::new("hang");
    let socket = dir.0.join("s.sock");
    let rx = Receiver::bind(&socket);
    let bridge = Bridge::start(
        &dir.0,
        &sim_source(
            &socket,
            -1,
            "sample-timeout = 1",
            "hang-at = 2\nhang-seconds = 600",
        ),
    );
    let st = bridge.wait_for(0, Duration::from_secs(20), "a hang", |s| {
        s["hangs"].as_u64() >= Some(1) && s["restarts"].as_u64() >= Some(1)
    });
    assert!(st["last-error"].as_str().unwrap().contains("hung"), "{st}");
    // The restarted worker samples again (its sample 1 does not hang).
    let until = Instant::now() + Duration::from_secs(10);
    let mut after = 0;
    while Instant::now() < until && after < 2 {
        if rx.next(Duration::from_millis(500)).is_some() {
            after += 1;
        }
    }
    assert!(after >= 2, "samples resume after the restart");
    let pid = bridge.pid();
    let workers = children_of(pid);
    assert!(bridge.stop().success());
    assert!(
        workers.iter().all(|w| !alive(*w)),
        "the hung plugin's worker is gone too"
    );
}

#[test]
fn transient_errors_are_skipped_and_unknown_kinds_tolerated() {
    let dir = TempDir::new("transient");
    let socket = dir.0.join("s.sock");
    let rx = Receiver::bind(&socket);
    let bridge = Bridge::start(
        &dir.0,
        &sim_source(&socket, -1, "", "error-every = 2\nerror-kind = 42"),
    );
    rx.take(3, Duration::from_secs(15));
    let st = bridge.wait_for(0, Duration::from_secs(5), "errors", |s| {
        s["errors"]["unknown(42)"].as_u64() >= Some(2)
    });
    assert_eq!(st["state"], "running");
    assert_eq!(st["restarts"], 0);
}

#[test]
fn an_unavailable_source_is_closed_and_initialised_again() {
    let dir = TempDir::new("unavail");
    let socket = dir.0.join("s.sock");
    let rx = Receiver::bind(&socket);
    let bridge = Bridge::start(&dir.0, &sim_source(&socket, -1, "", "unavailable-at = 3"));
    // Samples 1-2, then unavailable, re-init after 1 s, samples 1-2 again.
    rx.take(2, Duration::from_secs(15));
    let st = bridge.wait_for(0, Duration::from_secs(10), "re-init", |s| {
        s["errors"]["unavailable"].as_u64() >= Some(1)
    });
    assert_eq!(st["restarts"], 0, "re-init happens inside the worker");
    assert!(
        !rx.take(2, Duration::from_secs(10)).is_empty(),
        "samples resume after re-init"
    );
}

#[test]
fn init_failures_back_off_then_recover() {
    let dir = TempDir::new("initfail");
    let socket = dir.0.join("s.sock");
    let rx = Receiver::bind(&socket);
    let started = Instant::now();
    // poll-interval 2 (4 s) lets the re-init backoff double: 1 s, then 2 s.
    let bridge = Bridge::start(&dir.0, &sim_source(&socket, 2, "", "init-failures = 2"));
    rx.take(1, Duration::from_secs(15));
    // Two failures: waits of 1 s and 2 s before the third init succeeds.
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "backoff was applied"
    );
    let st = bridge.wait_for(0, Duration::from_secs(5), "running", |s| {
        s["state"] == "running"
    });
    assert_eq!(st["errors"]["unavailable"], 2);
}

#[test]
fn a_configuration_error_stops_only_that_source() {
    let dir = TempDir::new("stop");
    let bad = dir.0.join("bad.sock");
    let good = dir.0.join("good.sock");
    let _rx_bad = Receiver::bind(&bad);
    let rx_good = Receiver::bind(&good);
    let config = format!(
        "{}{}",
        sim_source(
            &bad,
            -1,
            "",
            "error-every = 2\nerror-kind = \"configuration\""
        ),
        sim_source(&good, -1, "", "offset = 0.01")
    );
    let bridge = Bridge::start(&dir.0, &config);
    let st = bridge.wait_for(0, Duration::from_secs(10), "stopped", |s| {
        s["state"] == "stopped"
    });
    assert!(st["last-error"].as_str().unwrap().contains("configuration"));
    assert_eq!(st["restarts"], 0);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        bridge.status()["sources"][0]["state"],
        "stopped",
        "it stays stopped"
    );
    assert!(!rx_good.take(3, Duration::from_secs(5)).is_empty());
    assert_eq!(
        children_of(bridge.pid()).len(),
        1,
        "only the good worker runs"
    );
    assert!(bridge.stop().success());
}

#[test]
fn bridge_requires_a_socket_per_source() {
    let dir = TempDir::new("nosock");
    let cfg = dir.0.join("ntp.toml");
    std::fs::write(
        &cfg,
        format!(
            "[[source]]\nmode = \"plugin\"\npath = \"{}\"\n",
            common::plugin_path("ntpd_sim").display()
        ),
    )
    .unwrap();
    let out = Command::new(common::host_bin())
        .args(["bridge", "-c"])
        .arg(&cfg)
        .arg("--runtime-dir")
        .arg(dir.0.join("run"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("[[source]] #1: socket: missing"), "{err}");
}
