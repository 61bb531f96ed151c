//! Soak: 16 sim plugin sources at poll-interval -1 under `ntpd-host bridge`
//! (the workers without the daemon: nothing touches the clock) for a long
//! time, with the resident memory and open file descriptors of the
//! supervisor and of each worker at the start and at the end. Not a test: a
//! benchmark with recorded numbers (docs/benchmarks.md).
//!
//! ```sh
//! SOAK_SECONDS=1800 cargo bench -p ntpd-host --bench soak
//! ```
//!
//! Environment: `SOAK_SECONDS` (default 1800), `SOAK_SOURCES` (default 16),
//! `SOAK_WARMUP` seconds before the first reading (default 30).

// Statistics over small counts and sizes.
#![allow(clippy::cast_precision_loss)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::bridge::{Bridge, Receiver, children_of, sim_source, tempdir};

/// VmRSS (KiB) and the number of open descriptors of `pid`.
fn usage(pid: i32) -> Option<(u64, usize)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count();
    Some((rss, fds))
}

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Reads every process: the supervisor and its workers (by pid).
fn snapshot(bridge: &Bridge) -> BTreeMap<i32, (u64, usize)> {
    let mut out = BTreeMap::new();
    for pid in std::iter::once(bridge.pid()).chain(children_of(bridge.pid())) {
        if let Some(u) = usage(pid) {
            out.insert(pid, u);
        }
    }
    out
}

fn main() {
    let seconds = env("SOAK_SECONDS", 1800);
    let sources = usize::try_from(env("SOAK_SOURCES", 16)).unwrap_or(16);
    let warmup = env("SOAK_WARMUP", 30);
    let dir = tempdir();
    let mut config = String::new();
    let mut receivers = Vec::new();
    for i in 0..sources {
        let socket = dir.path().join(format!("s{i}.sock"));
        receivers.push(Receiver::bind(&socket));
        config.push_str(&sim_source(
            &socket,
            -1,
            &format!("name = \"sim{i}\""),
            &format!("noise = 100\nseed = {i}"),
        ));
    }
    let bridge = Bridge::start(dir.path(), &config);
    println!(
        "soak: {sources} sim sources at poll-interval -1, {seconds} s after {warmup} s of warm-up"
    );
    let drain_for = |d: Duration| {
        let until = Instant::now() + d;
        let mut n = 0;
        while Instant::now() < until {
            std::thread::sleep(Duration::from_millis(500));
            n += receivers.iter().map(|r| r.drain().len()).sum::<usize>();
        }
        n
    };
    drain_for(Duration::from_secs(warmup));
    let start = snapshot(&bridge);
    let t0 = Instant::now();
    let mut datagrams = 0;
    while t0.elapsed() < Duration::from_secs(seconds) {
        datagrams += drain_for(Duration::from_secs(60).min(Duration::from_secs(seconds)));
        let now = snapshot(&bridge);
        let workers = now.len().saturating_sub(1);
        println!(
            "  t={:>5} s: {workers} workers, supervisor RSS {} KiB, {} datagrams so far",
            t0.elapsed().as_secs(),
            now.get(&bridge.pid()).map_or(0, |u| u.0),
            datagrams
        );
    }
    let end = snapshot(&bridge);
    let status = bridge.status();
    println!();
    println!("| process | RSS start (KiB) | RSS end (KiB) | fds start | fds end |");
    println!("|---|---|---|---|---|");
    for (pid, (rss0, fd0)) in &start {
        let who = if *pid == bridge.pid() {
            "supervisor".to_owned()
        } else {
            format!("worker {pid}")
        };
        let (rss1, fd1) = end.get(pid).copied().unwrap_or((0, 0));
        println!("| {who} | {rss0} | {rss1} | {fd0} | {fd1} |");
    }
    let workers_end: Vec<&(u64, usize)> = end
        .iter()
        .filter(|(p, _)| **p != bridge.pid())
        .map(|(_, u)| u)
        .collect();
    let mean = |f: &dyn Fn(&(u64, usize)) -> f64, v: &[&(u64, usize)]| {
        v.iter().map(|u| f(u)).sum::<f64>() / v.len().max(1) as f64
    };
    println!();
    println!(
        "workers at the end: mean RSS {:.0} KiB, mean fds {:.1}; restarts {}; samples {}; \
         datagrams received {datagrams} in {} s",
        mean(&|u| u.0 as f64, &workers_end),
        mean(&|u| u.1 as f64, &workers_end),
        status["sources"].as_array().map_or(0, |s| s
            .iter()
            .filter_map(|x| x["restarts"].as_u64())
            .sum::<u64>()),
        status["sources"].as_array().map_or(0, |s| s
            .iter()
            .filter_map(|x| x["samples"].as_u64())
            .sum::<u64>()),
        t0.elapsed().as_secs()
    );
    let same_pids = start.keys().eq(end.keys());
    println!("same processes at start and end: {same_pids}");
}
