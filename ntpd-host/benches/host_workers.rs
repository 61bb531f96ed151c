//! Benchmark of the host's plugin workers (not a test: it prints numbers).
//!
//! `cargo bench -p ntpd-host --bench host_workers` reports:
//! - CPU time per sample in one worker (sim plugin, poll-interval -1), from
//!   the kernel's per-thread run-time accounting (`/proc/PID/task/*/schedstat`,
//!   nanoseconds);
//! - latency from the timer tick to the datagram sent, as the worker measures
//!   it for each sample (its `latency-ns` event field);
//! - resident memory (VmRSS) of the supervisor and of one worker;
//! - the worker's CPU per second at the product's defaults (poll-interval 0,
//!   four readings a second combined into one datagram);
//! - CPU use of the whole host (supervisor + workers) with 16 sim sources at
//!   poll-interval -1.
//!
//! It runs `ntpd-host bridge` (no ntpd-rs daemon, no clock touched) with a
//! receiver bound on every socket, and the worker role directly for the
//! latency figures. `BENCH_SECONDS` sets each phase's length (default 30).

// Statistics and fixtures in test code convert between counts, ns and
// seconds of known, small size.
#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss,
    clippy::cast_precision_loss,
    clippy::float_cmp
)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixDatagram;

use ntpd_host::config::SourceConfig;
use ntpd_host::protocol::worker::{SPEC_ENV, WorkerSpec};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn seconds() -> u64 {
    std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30)
}

/// Total on-CPU time of every thread of `pid`, ns.
fn cpu_ns(pid: u32) -> u64 {
    let mut total = 0;
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            if let Ok(s) = std::fs::read_to_string(t.path().join("schedstat")) {
                total += s
                    .split_whitespace()
                    .next()
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0);
            }
        }
    }
    total
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

struct Bridge {
    child: Child,
    _receivers: Vec<UnixDatagram>,
    _dir: tempfile::TempDir,
}

impl Bridge {
    fn start(tag: &str, sources: usize) -> Self {
        Self::start_with(tag, sources, "poll-interval = -1\n", "")
    }

    /// `keys`: the `[[source]]` keys besides mode, path and socket;
    /// `plugin`: more lines for `[source.config]`.
    fn start_with(tag: &str, sources: usize, keys: &str, plugin: &str) -> Self {
        let _ = tag;
        let tmp = common::bridge::tempdir();
        let dir = tmp.path();
        let so = common::plugin_path("ntpd_sim");
        let mut config = common::bridge::host_table();
        let mut receivers = Vec::new();
        for i in 0..sources {
            let socket = dir.join(format!("s{i}.sock"));
            let rx = UnixDatagram::bind(&socket).unwrap();
            rx.set_nonblocking(true).unwrap();
            std::fs::set_permissions(&socket, std::os::unix::fs::PermissionsExt::from_mode(0o666))
                .unwrap();
            receivers.push(rx);
            config.push_str(&format!(
                "[[source]]\nmode = \"plugin\"\npath = \"{}\"\n{keys}socket = \"{}\"\n[source.config]\nnoise = 100\nseed = {i}\n{plugin}\n",
                so.display(),
                socket.display()
            ));
        }
        let cfg = dir.join("ntp.toml");
        std::fs::write(&cfg, config).unwrap();
        let child = Command::new(common::host_bin())
            .args(["bridge", "-l", "warn", "-c"])
            .arg(&cfg)
            .arg("--runtime-dir")
            .arg(dir.join("run"))
            .spawn()
            .unwrap();
        Self {
            child,
            _receivers: receivers,
            _dir: tmp,
        }
    }

    /// Drains every receiver for `secs`, returning the datagrams received.
    fn receive_for(&self, secs: u64) -> usize {
        let until = Instant::now() + Duration::from_secs(secs);
        let mut n = 0;
        while Instant::now() < until {
            std::thread::sleep(Duration::from_millis(100));
            n += self.drain();
        }
        n
    }

    fn drain(&self) -> usize {
        let mut n = 0;
        let mut buf = [0u8; 64];
        for rx in &self._receivers {
            while rx.recv(&mut buf).is_ok() {
                n += 1;
            }
        }
        n
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        if let Some(pid) = rustix::process::Pid::from_raw(self.child.id() as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let _ = self.child.wait();
    }
}

fn wait_workers(pid: u32, n: usize) -> Vec<u32> {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let w = common::children_of(pid);
        if w.len() == n || Instant::now() > until {
            return w;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn one_source(secs: u64) {
    let bridge = Bridge::start("one", 1);
    let sup = bridge.child.id();
    let workers = wait_workers(sup, 1);
    std::thread::sleep(Duration::from_secs(2)); // past start-up
    bridge.drain();
    let w = workers[0];
    let (w0, s0) = (cpu_ns(w), cpu_ns(sup));
    let delivered = bridge.receive_for(secs);
    let (w1, s1) = (cpu_ns(w), cpu_ns(sup));
    println!("one sim source, poll-interval -1, {secs} s, {delivered} datagrams received");
    println!(
        "  worker CPU per sample      {:>8.1} us",
        (w1 - w0) as f64 / delivered.max(1) as f64 / 1e3
    );
    println!(
        "  supervisor CPU per sample  {:>8.1} us",
        (s1 - s0) as f64 / delivered.max(1) as f64 / 1e3
    );
    println!("  supervisor RSS             {:>8} KiB", rss_kib(sup));
    println!("  worker RSS                 {:>8} KiB", rss_kib(w));
}

/// The worker at the product's defaults: poll-interval 0 and the default
/// reading-interval (4 readings a second, combined into one datagram), with
/// a sim plugin that, like the PTP plugin, may be read every 1/16 s.
fn default_readings(secs: u64) {
    let bridge = Bridge::start_with("readings", 1, "", "min-poll = -4\n");
    let sup = bridge.child.id();
    let workers = wait_workers(sup, 1);
    // Past the start-up burst and the settling polls (poll 0: none).
    std::thread::sleep(Duration::from_secs(3));
    bridge.drain();
    let w = workers[0];
    let (w0, s0) = (cpu_ns(w), cpu_ns(sup));
    let t0 = Instant::now();
    let delivered = bridge.receive_for(secs);
    let wall = t0.elapsed().as_secs_f64();
    let (w1, s1) = (cpu_ns(w), cpu_ns(sup));
    println!(
        "one sim source at the defaults (poll-interval 0, reading-interval -2), {secs} s, \
         {delivered} datagrams received"
    );
    println!(
        "  worker CPU                 {:>8.1} us per second ({:.3} % of one core)",
        (w1 - w0) as f64 / 1e3 / wall,
        (w1 - w0) as f64 / 1e9 / wall * 100.0
    );
    println!(
        "  worker CPU per reading     {:>8.1} us (4 readings per datagram)",
        (w1 - w0) as f64 / 1e3 / (delivered.max(1) * 4) as f64
    );
    println!(
        "  supervisor CPU per second  {:>8.1} us",
        (s1 - s0) as f64 / 1e3 / wall
    );
}

fn sixteen_sources(secs: u64) {
    let bridge = Bridge::start("sixteen", 16);
    let sup = bridge.child.id();
    let workers = wait_workers(sup, 16);
    std::thread::sleep(Duration::from_secs(2));
    bridge.drain();
    let total = |ws: &[u32]| cpu_ns(sup) + ws.iter().map(|w| cpu_ns(*w)).sum::<u64>();
    let c0 = total(&workers);
    let t0 = Instant::now();
    let delivered = bridge.receive_for(secs);
    let c1 = total(&workers);
    let wall = t0.elapsed().as_secs_f64();
    let rss: u64 = rss_kib(sup) + workers.iter().map(|w| rss_kib(*w)).sum::<u64>();
    println!("16 sim sources, poll-interval -1, {secs} s, {delivered} datagrams received");
    println!(
        "  CPU use (supervisor + 16 workers)  {:.2} % of one core",
        (c1 - c0) as f64 / 1e9 / wall * 100.0
    );
    println!("  RSS (supervisor + 16 workers)      {} KiB", rss);
}

/// Runs the worker role directly and reads its events for the latency.
fn latency(samples: usize) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let socket = dir.join("s.sock");
    let rx = UnixDatagram::bind(&socket).unwrap();
    rx.set_nonblocking(true).unwrap();
    let spec = WorkerSpec {
        source: SourceConfig {
            file: dir.join("ntp.toml"),
            position: 1,
            name: "bench".into(),
            path: common::plugin_path("ntpd_sim"),
            poll_interval: -1,
            reading_interval: -1,
            startup_burst: false,
            precision: None,
            accuracy: None,
            socket: Some(socket.clone()),
            sample_timeout: Duration::from_secs(10),
            allow_insecure_plugin: false,
            config_json: r#"{"noise": 100}"#.into(),
        },
        socket: socket.clone(),
        backoff_initial: Duration::from_secs(1),
        backoff_max: Duration::from_secs(64),
        identity: None,
        memory_limit: 256 << 20,
    };
    // The event channel is the worker's stdin (a pipe), as the supervisor
    // sets it up.
    let (events, events_write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).unwrap();
    let mut child = Command::new(common::host_bin())
        .args(["worker", "bench"])
        .env(SPEC_ENV, serde_json::to_string(&spec).unwrap())
        .env("NTPD_HOST_LOG", "warn")
        .stdin(Stdio::from(events_write))
        .spawn()
        .unwrap();
    let mut lat = Vec::new();
    let mut n = 0;
    let mut buf = [0u8; 64];
    for line in BufReader::new(std::fs::File::from(events)).lines() {
        while rx.recv(&mut buf).is_ok() {}
        let v: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
        assert_ne!(v["delivered"], false, "the receiver drains every datagram");
        if let Some(ns) = v.get("latency-ns").and_then(serde_json::Value::as_u64) {
            n += 1;
            if n == 1 {
                continue;
            }
            lat.push(ns);
            if lat.len() == samples {
                break;
            }
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    lat.sort_unstable();
    let pct = |p: f64| lat[((lat.len() - 1) as f64 * p) as usize] as f64 / 1e3;
    println!(
        "latency from timer tick to datagram sent, {} samples (first excluded: it includes init)",
        lat.len()
    );
    println!(
        "  median {:.1} us, p90 {:.1} us, max {:.1} us",
        pct(0.5),
        pct(0.9),
        pct(1.0)
    );
}

fn main() {
    // cargo bench passes --bench; ignore arguments.
    let secs = seconds();
    latency((secs * 2) as usize);
    one_source(secs);
    default_readings(secs);
    sixteen_sources(secs);
}
