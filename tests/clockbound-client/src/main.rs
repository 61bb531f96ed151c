//! `cb-client`: reads a ClockBound shared-memory segment with AWS's
//! `clock-bound-client` crate, the reader applications use, so ntpd-host's
//! tests check the writer against it rather than against our own reader.
//!
//! ```text
//! cb-client now SEGMENT [VMCLOCK]
//!     one reading as a line of JSON
//! cb-client watch SEGMENT MILLIS INTERVAL_MS [VMCLOCK]
//!     a reading every INTERVAL_MS for MILLIS, one line each:
//!     `<ms since start> <status> <half width ns>` or `<ms> error <kind>`
//! cb-client truth SEGMENT MILLIS INTERVAL_US TRUTH_FILE
//!     a reading every INTERVAL_US for MILLIS, each checked against the
//!     ground truth read from TRUTH_FILE right after it (the test clock's
//!     `true_offset_ns`: reference minus CLOCK_REALTIME, ns): the true time
//!     is inside [earliest, latest] when |truth| <= (latest - earliest) / 2,
//!     the interval being centred on the client's CLOCK_REALTIME reading;
//!     prints a JSON summary
//! cb-client stress SEGMENT MILLIS BASE_NS
//!     reads as fast as it can for MILLIS and checks every reading against
//!     the stress writer's records (record n: bound BASE_NS + n, no drift,
//!     status synchronized for even n, free-running for odd n); prints a
//!     JSON summary
//! ```
//!
//! VMCLOCK is the vmclock device the client compares disruption markers
//! with (default: the client's own default, /dev/vmclock0). Exit status 0
//! when the reading(s) succeeded, 1 on a client error, 2 on bad usage.

use std::collections::BTreeSet;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clock_bound_client::{ClockBoundClient, ClockBoundError, ClockStatus};

const USAGE: &str = "usage: cb-client now SEGMENT [VMCLOCK] | watch SEGMENT MILLIS INTERVAL_MS [VMCLOCK] | truth SEGMENT MILLIS INTERVAL_US TRUTH_FILE | stress SEGMENT MILLIS BASE_NS";

fn realtime_ns() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0)
}

fn status_name(s: ClockStatus) -> &'static str {
    match s {
        ClockStatus::Unknown => "unknown",
        ClockStatus::Synchronized => "synchronized",
        ClockStatus::FreeRunning => "free-running",
        ClockStatus::Disrupted => "disrupted",
    }
}

fn error_text(e: &ClockBoundError) -> String {
    format!("{:?} errno={} {}", e.kind, e.errno.0, e.detail)
        .trim_end()
        .replace('"', "'")
}

fn connect(segment: &str, vmclock: Option<&str>) -> Result<ClockBoundClient, ClockBoundError> {
    match vmclock {
        Some(v) => ClockBoundClient::new_with_paths(segment, v),
        None => ClockBoundClient::new_with_path(segment),
    }
}

/// A `timespec`-like value (the client returns `nix`'s `TimeSpec`) in
/// nanoseconds, without naming the type.
macro_rules! nanos {
    ($t:expr) => {
        i128::from($t.tv_sec()) * 1_000_000_000 + i128::from($t.tv_nsec())
    };
}

/// One reading: (earliest ns, latest ns, status).
fn read(client: &mut ClockBoundClient) -> Result<(i128, i128, ClockStatus), ClockBoundError> {
    let r = client.now()?;
    Ok((nanos!(r.earliest), nanos!(r.latest), r.clock_status))
}

fn cmd_now(segment: &str, vmclock: Option<&str>) -> ExitCode {
    let mut client = match connect(segment, vmclock) {
        Ok(c) => c,
        Err(e) => {
            println!(
                "{{\"ok\":false,\"stage\":\"open\",\"error\":\"{}\"}}",
                error_text(&e)
            );
            return ExitCode::from(1);
        }
    };
    let before = realtime_ns();
    let result = read(&mut client);
    let after = realtime_ns();
    match result {
        Ok((earliest, latest, status)) => {
            println!(
                "{{\"ok\":true,\"earliest_ns\":{earliest},\"latest_ns\":{latest},\"status\":\"{}\",\"real_before_ns\":{before},\"real_after_ns\":{after}}}",
                status_name(status)
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!(
                "{{\"ok\":false,\"stage\":\"now\",\"error\":\"{}\"}}",
                error_text(&e)
            );
            ExitCode::from(1)
        }
    }
}

fn cmd_watch(segment: &str, millis: u64, interval_ms: u64, vmclock: Option<&str>) -> ExitCode {
    let start = Instant::now();
    let mut client = match connect(segment, vmclock) {
        Ok(c) => c,
        Err(e) => {
            println!("0 error {}", error_text(&e));
            return ExitCode::from(1);
        }
    };
    let mut failed = false;
    while start.elapsed() < Duration::from_millis(millis) {
        let t = start.elapsed().as_millis();
        match read(&mut client) {
            Ok((earliest, latest, status)) => {
                println!("{t} {} {}", status_name(status), (latest - earliest) / 2)
            }
            Err(e) => {
                failed = true;
                println!("{t} error {}", error_text(&e));
            }
        }
        std::thread::sleep(Duration::from_millis(interval_ms));
    }
    if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// The value at quantile `q` of sorted `v` (nearest rank).
fn quantile(v: &[i128], q: f64) -> i128 {
    if v.is_empty() {
        return -1;
    }
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

fn read_truth(path: &str) -> Option<i128> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn cmd_truth(segment: &str, millis: u64, interval_us: u64, truth_file: &str) -> ExitCode {
    let mut client = match connect(segment, None) {
        Ok(c) => c,
        Err(e) => {
            println!(
                "{{\"ok\":false,\"stage\":\"open\",\"error\":\"{}\"}}",
                error_text(&e)
            );
            return ExitCode::from(1);
        }
    };
    // Per status: readings; for the readings that claim a bound
    // (synchronized, free-running): inside/outside and the half widths.
    let mut by_status = [0u64; 4];
    let (mut errors, mut no_truth) = (0u64, 0u64);
    let (mut inside, mut outside, mut inside_any, mut outside_any) = (0u64, 0u64, 0u64, 0u64);
    let mut widths: Vec<i128> = Vec::new();
    let mut worst_margin: Option<i128> = None;
    let mut max_truth: i128 = 0;
    let mut first_outside: Option<String> = None;
    let start = Instant::now();
    let end = start + Duration::from_millis(millis);
    let mut next = start;
    while Instant::now() < end {
        let reading = read(&mut client);
        let truth = read_truth(truth_file);
        match (reading, truth) {
            (Err(e), _) => {
                errors += 1;
                first_outside.get_or_insert_with(|| format!("client error: {}", error_text(&e)));
            }
            (Ok(_), None) => no_truth += 1,
            (Ok((earliest, latest, status)), Some(truth)) => {
                let idx = match status {
                    ClockStatus::Unknown => 0,
                    ClockStatus::Synchronized => 1,
                    ClockStatus::FreeRunning => 2,
                    ClockStatus::Disrupted => 3,
                };
                by_status[idx] += 1;
                let half = (latest - earliest) / 2;
                let ok = truth.abs() <= half;
                if ok {
                    inside_any += 1
                } else {
                    outside_any += 1
                }
                if matches!(status, ClockStatus::Synchronized | ClockStatus::FreeRunning) {
                    widths.push(latest - earliest);
                    max_truth = max_truth.max(truth.abs());
                    let margin = half - truth.abs();
                    worst_margin = Some(worst_margin.map_or(margin, |m| m.min(margin)));
                    if ok {
                        inside += 1;
                    } else {
                        outside += 1;
                        first_outside.get_or_insert_with(|| {
                            format!(
                                "at {} ms: {} half width {half} ns, true offset {truth} ns",
                                start.elapsed().as_millis(),
                                status_name(status)
                            )
                        });
                    }
                }
            }
        }
        next += Duration::from_micros(interval_us);
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    widths.sort_unstable();
    println!(
        "{{\"ok\":true,\"reads\":{},\"unknown\":{},\"synchronized\":{},\"free_running\":{},\"disrupted\":{},\"errors\":{errors},\"no_truth\":{no_truth},\"inside\":{inside},\"outside\":{outside},\"inside_any_status\":{inside_any},\"outside_any_status\":{outside_any},\"width_median_ns\":{},\"width_p99_ns\":{},\"width_max_ns\":{},\"max_abs_true_offset_ns\":{max_truth},\"worst_margin_ns\":{},\"first_problem\":\"{}\"}}",
        by_status.iter().sum::<u64>() + errors + no_truth,
        by_status[0],
        by_status[1],
        by_status[2],
        by_status[3],
        quantile(&widths, 0.5),
        quantile(&widths, 0.99),
        widths.last().copied().unwrap_or(-1),
        worst_margin.map_or_else(|| "null".to_owned(), |m| m.to_string()),
        first_outside.unwrap_or_default()
    );
    ExitCode::SUCCESS
}

fn cmd_stress(segment: &str, millis: u64, base_ns: i128) -> ExitCode {
    let mut client = match connect(segment, None) {
        Ok(c) => c,
        Err(e) => {
            println!(
                "{{\"ok\":false,\"stage\":\"open\",\"error\":\"{}\"}}",
                error_text(&e)
            );
            return ExitCode::from(1);
        }
    };
    let (mut reads, mut torn, mut errors) = (0u64, 0u64, 0u64);
    let mut seen = BTreeSet::new();
    let mut first_problem: Option<String> = None;
    let mut last_n: i128 = -1;
    let mut backwards = 0u64;
    let end = Instant::now() + Duration::from_millis(millis);
    while Instant::now() < end {
        reads += 1;
        match read(&mut client) {
            Ok((earliest, latest, status)) => {
                let width = latest - earliest;
                let n = width / 2 - base_ns;
                let expect = if n % 2 == 0 {
                    ClockStatus::Synchronized
                } else {
                    ClockStatus::FreeRunning
                };
                if width % 2 != 0 || n < 0 || status != expect {
                    torn += 1;
                    first_problem.get_or_insert_with(|| {
                        format!("width {width} n {n} status {}", status_name(status))
                    });
                } else {
                    if n < last_n {
                        backwards += 1;
                    }
                    last_n = n;
                    seen.insert(n);
                }
            }
            Err(e) => {
                errors += 1;
                first_problem.get_or_insert_with(|| error_text(&e));
            }
        }
    }
    println!(
        "{{\"ok\":true,\"reads\":{reads},\"torn\":{torn},\"errors\":{errors},\"backwards\":{backwards},\"distinct\":{},\"max_n\":{},\"first_problem\":\"{}\"}}",
        seen.len(),
        seen.iter().next_back().copied().unwrap_or(-1),
        first_problem.unwrap_or_default()
    );
    ExitCode::SUCCESS
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let num = |s: &String| s.parse::<u64>().ok();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["now", segment] => cmd_now(segment, None),
        ["now", segment, vmclock] => cmd_now(segment, Some(vmclock)),
        ["watch", segment, _, _] | ["watch", segment, _, _, _] => {
            match (num(&args[2]), num(&args[3])) {
                (Some(ms), Some(iv)) => cmd_watch(segment, ms, iv, args.get(4).map(String::as_str)),
                _ => usage(),
            }
        }
        ["truth", segment, _, _, truth_file] => match (num(&args[2]), num(&args[3])) {
            (Some(ms), Some(iv)) => cmd_truth(segment, ms, iv, truth_file),
            _ => usage(),
        },
        ["stress", segment, _, _] => match (num(&args[2]), num(&args[3])) {
            (Some(ms), Some(base)) => cmd_stress(segment, ms, i128::from(base)),
            _ => usage(),
        },
        _ => usage(),
    }
}

fn usage() -> ExitCode {
    eprintln!("{USAGE}");
    ExitCode::from(2)
}
