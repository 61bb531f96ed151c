//! No way in for other users or for vendor plugins, through the real binary
//! and real plugins (`ntpd-host bridge`: the workers without the daemon, so
//! nothing here can touch this machine's clock; the clock-setting attempt
//! itself is tested only in the qemu guest):
//!
//! - workers run as an unprivileged user with no capabilities, no new
//!   privileges and the seccomp filter (as root);
//! - a plugin's prints never reach the event channel;
//! - hostile plugins (contract-breaking samples, huge and non-UTF-8
//!   strings, process spawning, memory leaks) are contained and counted, the
//!   other sources unaffected;
//! - the runtime directory and the status socket are for the workers' group
//!   only (as root, with real unprivileged users through setpriv);
//! - SIGTERM at any moment of start-up leaves no process and no socket.

// Statistics and fixtures in test code convert between counts, ns and
// seconds of known, small size.
#![allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]

mod common;

use std::os::unix::fs::MetadataExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::bridge::{Bridge, Receiver, alive, children_of, sim_source, tempdir, terminate};

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// The `Name:\tvalue` fields of /proc/PID/status.
fn proc_status(pid: i32) -> std::collections::HashMap<String, String> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_owned(), v.trim().to_owned()))
        .collect()
}

#[test]
fn workers_run_unprivileged_without_capabilities_and_confined() {
    if !is_root() {
        eprintln!("skipped: the privilege switch happens only when the host runs as root");
        return;
    }
    let dir = tempdir();
    let socket = dir.path().join("s.sock");
    let rx = Receiver::bind(&socket);
    let bridge = Bridge::start(dir.path(), &sim_source(&socket, -1, "", "offset = 0.001"));
    rx.take(2, Duration::from_secs(15));
    let workers = children_of(bridge.pid());
    assert_eq!(workers.len(), 1);
    let st = proc_status(workers[0]);
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    let (uid, gid) = (nobody.uid.as_raw(), nobody.gid.as_raw());
    assert_eq!(st["Uid"], format!("{uid}\t{uid}\t{uid}\t{uid}"), "{st:?}");
    assert_eq!(st["Gid"], format!("{gid}\t{gid}\t{gid}\t{gid}"), "{st:?}");
    assert_eq!(st["Groups"], "", "no supplementary groups: {st:?}");
    for set in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(st[set], "0000000000000000", "{set}: {st:?}");
    }
    assert_eq!(st["NoNewPrivs"], "1");
    assert_eq!(st["Seccomp"], "2", "filter mode");
    // And the supervisor keeps its own identity.
    assert_eq!(proc_status(bridge.pid())["Uid"], "0\t0\t0\t0");
}

#[test]
fn a_plugins_prints_never_reach_the_event_channel_and_are_logged_labelled() {
    let dir = tempdir();
    let socket = dir.path().join("s.sock");
    let rx = Receiver::bind(&socket);
    let log = dir.path().join("host.log");
    let bridge = Bridge::start_with(
        dir.path(),
        &sim_source(
            &socket,
            -1,
            "name = \"noisy\"",
            "offset = 0.002\nprint-at = 2",
        ),
        "info",
        Stdio::from(std::fs::File::create(&log).unwrap()),
    );
    // Every datagram carries the configured offset: the forged event (offset
    // 999999999 ns) was never taken for a sample.
    for (_, d) in rx.take(6, Duration::from_secs(15)) {
        assert!((d.offset - 0.002).abs() < 1e-9, "{d:?}");
    }
    let st = bridge.wait_for(0, Duration::from_secs(5), "samples", |s| {
        s["samples"].as_u64() >= Some(6)
    });
    assert_eq!(st["last-offset-ns"], 2_000_000);
    assert_eq!(st["samples"], st["delivered"], "{st}");
    assert!(st["last-error"].is_null(), "{st}");
    assert!(bridge.stop().success());
    let text = std::fs::read_to_string(&log).unwrap();
    let printed: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("plugin output"))
        .collect();
    assert!(
        printed.iter().any(|l| l.contains("source=noisy")
            && l.contains("stream=\"stdout\"")
            && l.contains("partial stdout {\"event\":\"sample\"")),
        "{text}"
    );
    assert!(
        printed
            .iter()
            .any(|l| l.contains("stream=\"stderr\"") && l.contains("partial stderr")),
        "{text}"
    );
    assert!(
        printed.iter().any(|l| l.contains("(10000 bytes, cut)")),
        "{text}"
    );
    assert!(!text.contains("unreadable worker event"), "{text}");
}

#[test]
fn contract_breaking_samples_are_counted_not_sent_and_others_go_on() {
    let dir = tempdir();
    let bad = dir.path().join("bad.sock");
    let good = dir.path().join("good.sock");
    let rx_bad = Receiver::bind(&bad);
    let rx_good = Receiver::bind(&good);
    let config = format!(
        "{}{}",
        sim_source(
            &bad,
            -1,
            "name = \"bad\"",
            "offset = 0.003\noffset-max-at = 2\noffset-min-at = 3\nzero-bound-at = 4\nepoch-at = 5"
        ),
        sim_source(&good, -1, "name = \"good\"", "offset = 0.004")
    );
    let bridge = Bridge::start(dir.path(), &config);
    let st = bridge.wait_for(0, Duration::from_secs(20), "rejections", |s| {
        s["rejected"].as_u64() >= Some(4) && s["samples"].as_u64() >= Some(3)
    });
    assert_eq!(st["rejected"], 4, "{st}");
    assert_eq!(st["state"], "running");
    assert_eq!(st["restarts"], 0);
    assert!(
        st["last-error"]
            .as_str()
            .unwrap()
            .starts_with("sample rejected: its system time 0 ns was not during the call"),
        "{st}"
    );
    // Only the good samples of the bad source were sent.
    let sent = rx_bad.drain();
    assert!(sent.len() >= 2, "{sent:?}");
    for d in &sent {
        assert!((d.offset - 0.003).abs() < 1e-9, "{d:?}");
    }
    for (_, d) in rx_good.take(3, Duration::from_secs(5)) {
        assert!((d.offset - 0.004).abs() < 1e-9, "{d:?}");
    }
    assert_eq!(bridge.status()["sources"][1]["rejected"], 0);
    assert!(bridge.stop().success());
}

#[test]
fn huge_and_non_utf8_messages_are_cut_and_read_as_bytes() {
    let dir = tempdir();
    let socket = dir.path().join("s.sock");
    let rx = Receiver::bind(&socket);
    let bridge = Bridge::start(
        dir.path(),
        &sim_source(&socket, -1, "", "huge-message-at = 2\nbad-utf8-at = 4"),
    );
    let st = bridge.wait_for(0, Duration::from_secs(20), "two errors", |s| {
        s["errors"]["transient"].as_u64() >= Some(2)
    });
    let last = st["last-error"].as_str().unwrap();
    assert!(
        last.starts_with("sample: transient: bad \u{fffd}\u{fffd} bytes"),
        "{last}"
    );
    assert_eq!(st["restarts"], 0, "{st}");
    // The 100 MB message was cut to 1 KiB on its way (seen as the last
    // error before the second one replaced it: the status stayed small).
    let out = Command::new(common::host_bin())
        .args(["status", "--json", "--runtime-dir"])
        .arg(&bridge.runtime)
        .output()
        .unwrap();
    assert!(out.stdout.len() < 64 * 1024, "{}", out.stdout.len());
    rx.take(2, Duration::from_secs(5));
    assert!(bridge.stop().success());
}

#[test]
fn a_plugin_cannot_start_a_process() {
    let dir = tempdir();
    let socket = dir.path().join("s.sock");
    let _rx = Receiver::bind(&socket);
    let bridge = Bridge::start(dir.path(), &sim_source(&socket, -1, "", "spawn-at = 2"));
    let st = bridge.wait_for(0, Duration::from_secs(20), "the spawn attempt", |s| {
        s["errors"]["transient"].as_u64() >= Some(1)
    });
    let last = st["last-error"].as_str().unwrap();
    assert!(
        last.contains("spawn: Operation not permitted"),
        "the seccomp filter refuses new processes: {last}"
    );
    assert_eq!(
        children_of(bridge.pid()).len(),
        1,
        "no process besides the worker"
    );
    let worker = children_of(bridge.pid())[0];
    assert!(children_of(worker).is_empty());
    assert!(bridge.stop().success());
}

#[test]
fn a_leaking_plugin_is_restarted_at_the_memory_limit_and_others_go_on() {
    let dir = tempdir();
    let leak = dir.path().join("leak.sock");
    let steady = dir.path().join("steady.sock");
    let _rx_leak = Receiver::bind(&leak);
    let rx_steady = Receiver::bind(&steady);
    let config = format!(
        "[ntpd-host]\nworker-memory-limit = 32\n\n{}{}",
        sim_source(&leak, -1, "name = \"leaky\"", "leak-mb = 8"),
        sim_source(&steady, -1, "name = \"steady\"", "offset = 0.005")
    );
    let config = if is_root() {
        config.replacen(
            "[ntpd-host]\n",
            &format!(
                "[ntpd-host]\nworker-user = \"{}\"\n",
                common::bridge::WORKER_USER
            ),
            1,
        )
    } else {
        config
    };
    // Bridge::start adds its own [ntpd-host] table when root: write this
    // config as the whole file instead.
    let cfg = dir.path().join("ntp.toml");
    std::fs::write(&cfg, &config).unwrap();
    let runtime = dir.path().join("run");
    let child = Command::new(common::host_bin())
        .args(["bridge", "-c"])
        .arg(&cfg)
        .arg("--runtime-dir")
        .arg(&runtime)
        .args(["-l", "warn"])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let bridge = Bridge { child, runtime };
    let st = bridge.wait_for(0, Duration::from_secs(30), "a restart", |s| {
        s["restarts"].as_u64() >= Some(1)
    });
    assert!(
        st["last-error"].as_str().unwrap().contains("signal 6"),
        "an allocation past the limit aborts the worker: {st}"
    );
    assert!(
        st["samples"].as_u64().unwrap() <= 4,
        "32 MiB hold at most 3 leaks of 8: {st}"
    );
    let steady_st = &bridge.status()["sources"][1];
    assert_eq!(steady_st["restarts"], 0);
    for (_, d) in rx_steady.take(2, Duration::from_secs(5)) {
        assert!((d.offset - 0.005).abs() < 1e-9);
    }
    assert!(bridge.stop().success());
}

#[test]
fn the_runtime_directory_and_status_are_for_the_workers_group_only() {
    if !is_root() {
        eprintln!("skipped: needs root to run commands as other users");
        return;
    }
    let dir = tempdir();
    let socket = dir.path().join("s.sock");
    let rx = Receiver::bind(&socket);
    let bridge = Bridge::start(dir.path(), &sim_source(&socket, -1, "", ""));
    rx.take(1, Duration::from_secs(15));
    bridge.wait_for(0, Duration::from_secs(5), "running", |s| {
        s["state"] == "running"
    });
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    let group = nobody.gid.as_raw();
    let meta = std::fs::metadata(&bridge.runtime).unwrap();
    assert_eq!(
        (meta.mode() & 0o7777, meta.gid(), meta.uid()),
        (0o750, group, 0)
    );
    let status_sock = bridge.runtime.join("status.sock");
    let meta = std::fs::metadata(&status_sock).unwrap();
    assert_eq!((meta.mode() & 0o7777, meta.gid()), (0o660, group));
    // Another user, in no group of the host: refused.
    let status_as = |uid: u32, gid: u32| {
        Command::new("setpriv")
            .arg(format!("--reuid={uid}"))
            .arg(format!("--regid={gid}"))
            .arg("--clear-groups")
            .arg(common::host_bin())
            .args(["status", "--json", "--runtime-dir"])
            .arg(&bridge.runtime)
            .output()
            .expect("setpriv (util-linux)")
    };
    let out = status_as(54321, 54321);
    assert_eq!(
        out.status.code(),
        Some(i32::from(ntpd_host::error::exit::UNAVAILABLE)),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("Permission denied"));
    // A user in the workers' group reads it.
    let out = status_as(54321, group);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["sources"][0]["state"], "running");
    assert!(bridge.stop().success());
}

#[test]
fn sigterm_at_any_moment_of_start_up_leaves_no_process_and_no_socket() {
    for delay_ms in [0, 5, 20, 60, 150, 400, 1000] {
        let dir = tempdir();
        let socket = dir.path().join("s.sock");
        let _rx = Receiver::bind(&socket);
        let bridge = Bridge::start(
            dir.path(),
            &format!(
                "{}{}",
                sim_source(&socket, -1, "", "init-failures = 1"),
                sim_source(&dir.path().join("t.sock"), -1, "", "")
            ),
        );
        let pid = bridge.pid();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let children = children_of(pid);
        terminate(pid);
        let until = Instant::now() + Duration::from_secs(10);
        let mut bridge = bridge;
        let status = loop {
            if let Some(s) = bridge.child.try_wait().unwrap() {
                break s;
            }
            assert!(
                Instant::now() < until,
                "{delay_ms} ms: no exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        // Exit 0 once the handler is up; killed by the signal before that
        // (nothing was started yet then).
        assert!(
            status.success() || status.code().is_none(),
            "{delay_ms} ms: {status:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
        assert!(
            children.iter().all(|c| !alive(*c)),
            "{delay_ms} ms: a child outlived the host"
        );
        assert!(
            !bridge.runtime.join("status.sock").exists(),
            "{delay_ms} ms: status socket left behind"
        );
    }
}
