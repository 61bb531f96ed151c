//! `ntpd-host metrics` through the real binary: a running bridge with the
//! simulated plugin, scraped over HTTP on loopback; the host going away is
//! `ntpd_host_up 0`, not a failed scrape; the listen address comes from
//! `--listen` or the config's `metrics-listen`. (The check against a real
//! Prometheus server is `tests/prometheus/run`.)

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::bridge::{Bridge, Receiver, sim_source, tempdir, terminate};

/// A running `ntpd-host metrics`, ended on drop, and the address it logged.
struct Metrics {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Metrics {
    fn drop(&mut self) {
        terminate(i32::try_from(self.child.id()).unwrap());
        let _ = self.child.wait();
    }
}

/// Starts `ntpd-host metrics ARGS` and waits for its "serving" log line.
fn start_metrics(args: &[&str]) -> Metrics {
    let mut child = Command::new(common::host_bin())
        .arg("metrics")
        .args(args)
        .args(["-l", "info"])
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let until = Instant::now() + Duration::from_secs(10);
    let mut seen = Vec::new();
    while let Ok(line) = rx.recv_timeout(until.saturating_duration_since(Instant::now())) {
        if let Some(rest) = line.split("http://").nth(1) {
            let addr = rest.split('/').next().unwrap().parse().unwrap();
            return Metrics { child, addr };
        }
        seen.push(line);
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("metrics did not say where it listens: {seen:#?}");
}

/// `GET /metrics`: the status line, the headers and the body.
fn get(addr: SocketAddr) -> (String, String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let (status, headers) = head.split_once("\r\n").unwrap();
    (status.to_owned(), headers.to_owned(), body.to_owned())
}

/// The value of the sample `key` (name and labels) in `body`.
fn sample(body: &str, key: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn a_running_bridge_is_scraped_and_its_end_is_up_0() {
    let dir = tempdir();
    let socket = dir.path().join("s.sock");
    let _rx = Receiver::bind(&socket);
    let bridge = Bridge::start(
        dir.path(),
        &sim_source(&socket, -1, "name = \"phc\"", "offset = 0.002"),
    );
    let runtime = bridge.runtime.to_str().unwrap().to_owned();
    let metrics = start_metrics(&["--runtime-dir", &runtime, "--listen", "127.0.0.1:0"]);
    assert!(metrics.addr.ip().is_loopback());

    let until = Instant::now() + Duration::from_secs(30);
    let body = loop {
        let (status, headers, body) = get(metrics.addr);
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert!(
            headers.contains(
                "content-type: application/openmetrics-text; version=1.0.0; charset=utf-8"
            ),
            "{headers}"
        );
        if sample(&body, r#"ntpd_host_source_delivered_total{source="phc"}"#)
            .is_some_and(|n| n >= 2.0)
        {
            break body;
        }
        assert!(Instant::now() < until, "no delivered samples:\n{body}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(sample(&body, "ntpd_host_up"), Some(1.0), "{body}");
    assert!(
        sample(&body, r#"ntpd_host_source_samples_total{source="phc"}"#).unwrap() >= 2.0,
        "{body}"
    );
    assert_eq!(
        sample(
            &body,
            r#"ntpd_host_source_state{source="phc",state="running"}"#
        ),
        Some(1.0),
        "{body}"
    );
    let offset = sample(&body, r#"ntpd_host_source_offset_seconds{source="phc"}"#).unwrap();
    assert!((offset - 0.002).abs() < 1e-4, "{body}");
    assert!(
        sample(
            &body,
            r#"ntpd_host_source_read_delay_seconds{source="phc"}"#
        )
        .unwrap()
            > 0.0,
        "{body}"
    );
    assert_eq!(
        sample(&body, r#"ntpd_host_info{version="0.1.0",mode="bridge"}"#),
        Some(1.0),
        "{body}"
    );
    assert!(!body.contains("ntpd_host_daemon_up"), "bridge: no daemon");
    assert!(body.ends_with("# EOF\n"));

    // The host ends: the scrape still succeeds, and says so.
    drop(bridge);
    let (status, _, body) = get(metrics.addr);
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert_eq!(sample(&body, "ntpd_host_up"), Some(0.0), "{body}");
    assert!(!body.contains("ntpd_host_source_"), "{body}");
}

fn write_config(dir: &Path, host_keys: &str) -> String {
    let cfg = dir.join("ntp.toml");
    std::fs::write(&cfg, format!("[ntpd-host]\n{host_keys}\n")).unwrap();
    cfg.to_str().unwrap().to_owned()
}

#[test]
fn the_listen_address_comes_from_the_config_unless_given() {
    let dir = tempdir();
    let cfg = write_config(dir.path(), "metrics-listen = \"127.0.0.1:0\"");
    let runtime = dir.path().join("run");
    let runtime = runtime.to_str().unwrap();
    let m = start_metrics(&["-c", &cfg, "--runtime-dir", runtime]);
    assert!(
        m.addr.ip().is_loopback() && m.addr.port() != 0,
        "{}",
        m.addr
    );
    // No host: up 0, answered.
    let (status, _, body) = get(m.addr);
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert_eq!(sample(&body, "ntpd_host_up"), Some(0.0), "{body}");
    drop(m);

    // --listen wins, and then the config is not read at all.
    let m = start_metrics(&[
        "-c",
        "/nonexistent/ntp.toml",
        "--runtime-dir",
        runtime,
        "--listen",
        "[::1]:0",
    ]);
    assert!(m.addr.is_ipv6(), "{}", m.addr);
}

#[test]
fn a_bad_metrics_listen_is_one_line_naming_the_key() {
    let dir = tempdir();
    let cfg = write_config(dir.path(), "metrics-listen = \"localhost:9976\"");
    let out = Command::new(common::host_bin())
        .args(["metrics", "-c", &cfg])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("metrics-listen: \"localhost:9976\" is not an address: must be \"IP:PORT\""),
        "{err}"
    );
}
