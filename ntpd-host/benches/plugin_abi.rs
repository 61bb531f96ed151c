//! Benchmark: what the plugin ABI costs.
//!
//! Run with `cargo bench -p ntpd-host --bench plugin_abi`. It builds the
//! release plugin libraries itself (through `tests/common`), then reports:
//!
//! - plugin load time: the release `libntpd_sim.so` copied to several new
//!   paths and each loaded once with `ntpd_host::loader::load` (file checks,
//!   `dlopen`, abi_stable's version and layout check, `info()`); libraries
//!   are never unloaded, so every load is of a new file;
//! - the cost of one `sample()` and one `capabilities()` call through the
//!   ABI, as the median over several rounds of many calls, next to the same
//!   calls on an in-process source (same trait object, no library boundary)
//!   and the bare clock read every sample makes;
//! - the size of the release plugin libraries, unstripped and stripped.
//!
//! Numbers go to stdout as a table; `docs/benchmarks.md` records them.

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

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ntpd_host::loader::{self, LoadOptions};
use ntpd_plugin_api::{
    Capabilities, PluginError, ReadMethod, Sample, Source, TimeScale, boxed_source, realtime_now_ns,
};

/// Copies loaded for the load-time measurement.
const LOAD_COPIES: usize = 25;
/// Timed rounds per call measurement; the median is reported.
const ROUNDS: usize = 15;
/// Calls per round.
const CALLS: u32 = 200_000;

/// An in-process source doing the least a real one does: read the clock.
struct Baseline;

impl Source for Baseline {
    fn capabilities(&self) -> Result<Capabilities, PluginError> {
        Ok(Capabilities::new(
            ReadMethod::OTHER,
            TimeScale::UTC,
            1,
            "in-process baseline",
        ))
    }

    fn sample(&mut self) -> Result<Sample, PluginError> {
        Ok(Sample::new(realtime_now_ns(), 0, 1))
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Median and spread (min..max over rounds) of ns per call of `f`.
fn per_call(mut f: impl FnMut()) -> (f64, f64, f64) {
    for _ in 0..CALLS / 10 {
        f(); // warm up
    }
    let rounds: Vec<f64> = (0..ROUNDS)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..CALLS {
                f();
            }
            t.elapsed().as_nanos() as f64 / f64::from(CALLS)
        })
        .collect();
    let min = rounds.iter().copied().fold(f64::INFINITY, f64::min);
    let max = rounds.iter().copied().fold(0.0, f64::max);
    (median(rounds), min, max)
}

fn report_call(what: &str, (median, min, max): (f64, f64, f64)) {
    println!("  {what:<52} {median:>8.1} ns/call  (rounds {min:.1} .. {max:.1})");
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn bench_load(sim: &Path) {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("plugin_abi")
        .join(std::process::id().to_string());
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("bench scratch dir");
    let copies: Vec<PathBuf> = (0..LOAD_COPIES)
        .map(|i| {
            let to = dir.join(format!("sim-{i}.so"));
            std::fs::copy(sim, &to).expect("copy plugin");
            to
        })
        .collect();
    let times: Vec<Duration> = copies
        .iter()
        .map(|path| {
            let t = Instant::now();
            let loaded = loader::load(path, LoadOptions::default()).expect("load copy");
            let elapsed = t.elapsed();
            black_box(loaded);
            elapsed
        })
        .collect();
    let first = times[0];
    let rest: Vec<f64> = times[1..].iter().map(|d| us(*d)).collect();
    let min = rest.iter().copied().fold(f64::INFINITY, f64::min);
    let max = rest.iter().copied().fold(0.0, f64::max);
    println!("plugin load (check file, dlopen, version + layout check, info())");
    println!(
        "  first load in this process                           {:>8.0} us",
        us(first)
    );
    println!(
        "  next {} loads, each a new copy: median               {:>8.0} us  (min {min:.0}, max {max:.0})",
        rest.len(),
        median(rest.clone())
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn bench_calls(sim: &Path) {
    let plugin = loader::load(sim, LoadOptions::default()).expect("load sim");

    println!("calls through the ABI ({ROUNDS} rounds of {CALLS} calls, median)");
    let mut plain = plugin.init("{}").expect("init");
    report_call(
        "sim sample(), no noise",
        per_call(|| {
            black_box(plain.sample().expect("sample"));
        }),
    );
    let mut noisy = plugin.init(r#"{"noise": 100}"#).expect("init");
    report_call(
        "sim sample(), Gaussian noise",
        per_call(|| {
            black_box(noisy.sample().expect("sample"));
        }),
    );
    report_call(
        "sim capabilities() (formats two strings)",
        per_call(|| {
            black_box(plain.capabilities().expect("capabilities"));
        }),
    );
    report_call(
        "sim init(\"{}\") + drop of the source",
        per_call(|| {
            black_box(plugin.init("{}").expect("init"));
        }),
    );

    println!("for comparison, in this process (no library boundary)");
    let mut local = boxed_source(Baseline);
    report_call(
        "baseline sample() via the same trait object",
        per_call(|| {
            black_box(local.sample().into_result().expect("sample"));
        }),
    );
    report_call(
        "baseline capabilities() via the same trait object",
        per_call(|| {
            black_box(local.capabilities().into_result().expect("caps"));
        }),
    );
    report_call(
        "realtime_now_ns() alone (the clock read)",
        per_call(|| {
            black_box(realtime_now_ns());
        }),
    );
}

fn size_line(path: &Path) {
    let unstripped = std::fs::metadata(path).expect("stat").len();
    let stripped_path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "stripped-{}-{}",
        std::process::id(),
        path.file_name().unwrap().to_string_lossy()
    ));
    let stripped = std::process::Command::new("strip")
        .arg("-o")
        .arg(&stripped_path)
        .arg(path)
        .status()
        .ok()
        .filter(std::process::ExitStatus::success)
        .and_then(|_| std::fs::metadata(&stripped_path).ok())
        .map(|m| m.len());
    let _ = std::fs::remove_file(&stripped_path);
    let kib = |b: u64| b as f64 / 1024.0;
    match stripped {
        Some(s) => println!(
            "  {:<20} {:>9} bytes ({:>7.0} KiB) unstripped, {:>9} bytes ({:>6.0} KiB) stripped",
            path.file_name().unwrap().to_string_lossy(),
            unstripped,
            kib(unstripped),
            s,
            kib(s)
        ),
        None => println!(
            "  {:<20} {:>9} bytes unstripped (strip not available)",
            path.file_name().unwrap().to_string_lossy(),
            unstripped
        ),
    }
}

fn main() {
    // `cargo bench` passes `--bench`; this harness takes no options.
    let sim = common::plugin_path("ntpd_sim");
    println!("plugin library: {}", sim.display());
    println!();
    bench_load(&sim);
    println!();
    bench_calls(&sim);
    println!();
    println!("plugin library sizes (release profile)");
    size_line(&sim);
    size_line(&common::plugin_path("ntpd_ptp"));
}
