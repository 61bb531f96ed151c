//! The host's plugin workers and supervision, end to end, without root.
//!
//! These tests run `ntpd-host bridge` (the workers without the embedded
//! daemon): they never start ntpd-rs, so they cannot touch this machine's
//! clock. A receiver in the test binds each source's socket and decodes the
//! datagrams exactly as ntpd-rs does (`ntpd_host::protocol::sock::decode`, the same
//! checks as ntpd-rs's sock source).

// Statistics and fixtures in test code convert between counts, ns and
// seconds of known, small size.
#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss,
    clippy::cast_precision_loss,
    clippy::float_cmp
)]

mod common;

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::bridge::{Bridge, Receiver, alive, children_of, sim_source, tempdir, unix_now};

#[test]
fn datagrams_carry_the_samples_at_the_poll_interval() {
    let dir = tempdir();
    let socket = dir.path().join("s.sock");
    let rx = Receiver::bind(&socket);
    let started = unix_now();
    let bridge = Bridge::start(
        dir.path(),
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
    let dir = tempdir();
    let offsets = [0.001, -0.002, 37.5];
    let mut config = String::new();
    let mut receivers = Vec::new();
    for (i, off) in offsets.iter().enumerate() {
        let socket = dir.path().join(format!("s{i}.sock"));
        receivers.push(Receiver::bind(&socket));
        config.push_str(&sim_source(&socket, -1, "", &format!("offset = {off}")));
    }
    let bridge = Bridge::start(dir.path(), &config);
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
    let dir = tempdir();
    let socket = dir.path().join("s.sock");
    let rx = Receiver::bind(&socket);
    let bridge = Bridge::start(dir.path(), &sim_source(&socket, -1, "", "panic-at = 2"));
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
    let dir = tempdir();
    let crash = dir.path().join("crash.sock");
    let steady = dir.path().join("steady.sock");
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
    let bridge = Bridge::start(dir.path(), &config);
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
    let (_, d) = rx_crash.take(1, Duration::from_secs(10))[0];
    assert!((d.offset - 0.5).abs() < 1e-8, "{d:?}");
    // ...and the steady one never stopped.
    let steady_st = bridge.status()["sources"][1].clone();
    assert_eq!(steady_st["restarts"], 0);
    assert_eq!(steady_st["state"], "running");
    for (_, d) in rx_steady.take(2, Duration::from_secs(5)) {
        assert!((d.offset - 0.1).abs() < 1e-8, "{d:?}");
    }
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
    let dir = tempdir();
    let socket = dir.path().join("s.sock");
    let rx = Receiver::bind(&socket);
    let bridge = Bridge::start(
        dir.path(),
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
    let dir = tempdir();
    let socket = dir.path().join("s.sock");
    let rx = Receiver::bind(&socket);
    let bridge = Bridge::start(
        dir.path(),
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
    let dir = tempdir();
    let socket = dir.path().join("s.sock");
    let rx = Receiver::bind(&socket);
    let bridge = Bridge::start(
        dir.path(),
        &sim_source(&socket, -1, "", "unavailable-at = 3"),
    );
    // Samples 1-2, then unavailable, re-init after 1 s, samples 1-2 again.
    rx.take(2, Duration::from_secs(15));
    let st = bridge.wait_for(0, Duration::from_secs(10), "re-init", |s| {
        s["errors"]["unavailable"].as_u64() >= Some(1)
    });
    assert_eq!(st["restarts"], 0, "re-init happens inside the worker");
    // Samples resume after the re-init (take panics if they do not).
    rx.take(2, Duration::from_secs(10));
    let st = bridge.status()["sources"][0].clone();
    assert_eq!(st["state"], "running");
    assert_eq!(st["restarts"], 0);
}

#[test]
fn init_failures_back_off_then_recover() {
    let dir = tempdir();
    let socket = dir.path().join("s.sock");
    let rx = Receiver::bind(&socket);
    let started = Instant::now();
    // poll-interval 2 (4 s) lets the re-init backoff double: 1 s, then 2 s.
    let bridge = Bridge::start(dir.path(), &sim_source(&socket, 2, "", "init-failures = 2"));
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
    let dir = tempdir();
    let bad = dir.path().join("bad.sock");
    let good = dir.path().join("good.sock");
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
    let bridge = Bridge::start(dir.path(), &config);
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
    for (_, d) in rx_good.take(3, Duration::from_secs(5)) {
        assert!((d.offset - 0.01).abs() < 1e-8, "{d:?}");
    }
    assert_eq!(
        children_of(bridge.pid()).len(),
        1,
        "only the good worker runs"
    );
    assert!(bridge.stop().success());
}

#[test]
fn bridge_requires_a_socket_per_source() {
    let dir = tempdir();
    let cfg = dir.path().join("ntp.toml");
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
        .arg(dir.path().join("run"))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(i32::from(ntpd_host::error::exit::CONFIG))
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("[[source]] #1: socket: missing"), "{err}");
}

#[test]
fn a_poll_interval_outside_the_plugins_range_stops_the_source_in_one_line() {
    let dir = tempdir();
    let narrow = dir.path().join("narrow.sock");
    let fine = dir.path().join("fine.sock");
    let _rx_narrow = Receiver::bind(&narrow);
    let rx_fine = Receiver::bind(&fine);
    let config = format!(
        "{}{}",
        sim_source(&narrow, 4, "", "min-poll = 0\nmax-poll = 2"),
        sim_source(&fine, -1, "", "min-poll = -1\nmax-poll = 0")
    );
    let bridge = Bridge::start(dir.path(), &config);
    let st = bridge.wait_for(0, Duration::from_secs(10), "stopped", |s| {
        s["state"] == "stopped"
    });
    let line = st["last-error"].as_str().unwrap();
    assert!(
        line.ends_with(
            "[[source]] #1: poll-interval: 4 is outside what this plugin supports \
             (0 to 2, log2 seconds); the host accepts -1 to 6"
        ),
        "{line}"
    );
    assert_eq!(st["errors"]["configuration"], 1);
    assert_eq!(st["samples"], 0);
    // A source within its plugin's range runs.
    rx_fine.take(2, Duration::from_secs(10));
    assert!(bridge.stop().success());
}

#[test]
fn the_service_manager_hears_ready_from_the_host_and_never_from_a_worker() {
    let dir = tempdir();
    let socket = dir.path().join("s.sock");
    let rx = Receiver::bind(&socket);
    let notify_path = dir.path().join("notify");
    let manager = UnixDatagram::bind(&notify_path).unwrap();
    manager
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let bridge = Bridge::start_env(
        dir.path(),
        &sim_source(&socket, -1, "", "offset = 0.001"),
        "warn",
        Stdio::inherit(),
        &[("NOTIFY_SOCKET", notify_path.as_path())],
    );
    let mut buf = [0u8; 512];
    let n = manager.recv(&mut buf).expect("a notification within 20 s");
    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(text.lines().any(|l| l == "READY=1"), "{text:?}");
    assert!(text.contains("STATUS=1 plugin source(s)"), "{text:?}");
    assert!(!rx.take(2, Duration::from_secs(10)).is_empty());
    // The worker does not inherit the service manager's socket.
    let workers = children_of(bridge.pid());
    assert!(!workers.is_empty(), "a worker runs");
    for w in workers {
        let environ = std::fs::read(format!("/proc/{w}/environ")).unwrap();
        assert!(
            !environ
                .split(|&b| b == 0)
                .any(|v| v.starts_with(b"NOTIFY_SOCKET=")),
            "worker {w} has NOTIFY_SOCKET"
        );
    }
    assert!(bridge.stop().success());
    let n = manager.recv(&mut buf).expect("STOPPING=1 on stop");
    assert!(
        String::from_utf8_lossy(&buf[..n]).starts_with("STOPPING=1"),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );
    // Nothing else arrived: one READY, one STOPPING.
    manager.set_nonblocking(true).unwrap();
    assert!(manager.recv(&mut buf).is_err());
}
