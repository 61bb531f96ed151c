//! The ClockBound segment written by [`ntpd_host::protocol::clockbound`] and read by
//! AWS's real `clock-bound-client` 2.0.3, through the `cb-client` test
//! program in `tests/clockbound-client` (built on first use). The segment
//! is a file in a temporary directory: nothing here touches the system
//! clock or `/var/run`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use ntpd_host::protocol::clockbound::{
    ClockStatus, DEFAULT_DIR_MODE, DEFAULT_FILE_MODE, ErrorBound, SegmentFile, Timespec,
    conservative_as_of, monotonic_coarse_now, monotonic_coarse_resolution, open_segment,
};
use serde_json::Value;

const NS: i128 = 1_000_000_000;

/// Builds `cb-client` once per test process and returns its path.
fn client_binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let manifest =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/clockbound-client/Cargo.toml");
        let target = Path::new(env!("CARGO_TARGET_TMPDIR")).join("clockbound-client");
        let out = Command::new(env!("CARGO"))
            .args(["build", "--quiet", "--locked", "--manifest-path"])
            .arg(&manifest)
            .arg("--target-dir")
            .arg(&target)
            .output()
            .expect("run cargo");
        assert!(
            out.status.success(),
            "building {}: {}",
            manifest.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        target.join("debug/cb-client")
    })
}

/// One `cb-client now` reading.
fn client_now(segment: &Path, vmclock: Option<&Path>) -> Value {
    let mut cmd = Command::new(client_binary());
    cmd.arg("now").arg(segment);
    if let Some(v) = vmclock {
        cmd.arg(v);
    }
    let out = cmd.output().expect("run cb-client");
    let line = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(line.trim())
        .unwrap_or_else(|e| panic!("cb-client printed {line:?} ({e}); stderr {:?}", out.stderr))
}

fn int(v: &Value, key: &str) -> i128 {
    v[key]
        .as_i64()
        .map(i128::from)
        .or_else(|| v[key].as_u64().map(i128::from))
        .unwrap_or_else(|| panic!("{key} missing in {v}"))
}

/// A fresh segment in `dir`. Builds `cb-client` first, so that a test's
/// timing (records are dated by the coarse monotonic clock) does not
/// include the build.
fn new_segment(dir: &Path) -> (SegmentFile, PathBuf) {
    client_binary();
    let path = dir.join("clockbound/shm0");
    let f = open_segment(&path, DEFAULT_FILE_MODE, DEFAULT_DIR_MODE).unwrap();
    (f, path)
}

/// `as_of` for a bound computed now, `back_ns` in the past.
fn as_of_ago(back_ns: i128) -> Timespec {
    conservative_as_of(monotonic_coarse_now(), monotonic_coarse_resolution()).add_nanos(-back_ns)
}

fn record(
    as_of: Timespec,
    void_in_ns: i128,
    bound_ns: i64,
    drift: u32,
    status: ClockStatus,
) -> ErrorBound {
    ErrorBound {
        as_of,
        void_after: as_of.add_nanos(void_in_ns),
        bound_ns,
        disruption_marker: 0,
        max_drift_ppb: drift,
        status,
        disruption_support: false,
    }
}

#[test]
fn client_reads_the_bound_and_status() {
    let dir = tempfile::tempdir().unwrap();
    let (f, path) = new_segment(dir.path());
    f.segment.write(&record(
        as_of_ago(0),
        100 * NS,
        5_000,
        0,
        ClockStatus::Synchronized,
    ));
    let r = client_now(&path, None);
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["status"], "synchronized", "{r}");
    let (earliest, latest) = (int(&r, "earliest_ns"), int(&r, "latest_ns"));
    assert_eq!(latest - earliest, 10_000, "no drift: exactly 2 x 5000 ns");
    let mid = (earliest + latest) / 2;
    assert!(
        int(&r, "real_before_ns") <= mid && mid <= int(&r, "real_after_ns"),
        "the interval is centred on the client's CLOCK_REALTIME reading: {r}"
    );
}

#[test]
fn client_refuses_a_segment_before_the_first_write() {
    let dir = tempfile::tempdir().unwrap();
    let (_f, path) = new_segment(dir.path());
    let r = client_now(&path, None);
    assert_eq!(r["ok"], false, "{r}");
    assert_eq!(r["stage"], "open");
    assert!(
        r["error"]
            .as_str()
            .unwrap()
            .contains("SegmentNotInitialized"),
        "{r}"
    );
}

#[test]
fn client_grows_the_bound_with_drift_since_as_of() {
    let dir = tempfile::tempdir().unwrap();
    let (f, path) = new_segment(dir.path());
    let start = Instant::now();
    // Computed 10 s ago, 1 ppm.
    f.segment.write(&record(
        as_of_ago(10 * NS),
        100 * NS,
        5_000,
        1_000,
        ClockStatus::Synchronized,
    ));
    let r = client_now(&path, None);
    let waited = i128::try_from(start.elapsed().as_nanos()).unwrap();
    assert_eq!(r["ok"], true, "{r}");
    let half = (int(&r, "latest_ns") - int(&r, "earliest_ns")) / 2;
    // 5000 + 1 ppm x (10 s + the time this test took).
    assert!(
        (15_000..=15_000 + waited / 1_000 + 1).contains(&half),
        "half width {half} ns"
    );
    // Past the readers' 5 s grace, the written status gives way.
    assert_eq!(r["status"], "free-running", "{r}");
}

#[test]
fn client_reports_unknown_after_void_after() {
    let dir = tempfile::tempdir().unwrap();
    let (f, path) = new_segment(dir.path());
    f.segment.write(&record(
        as_of_ago(20 * NS),
        19 * NS,
        5_000,
        1_000,
        ClockStatus::Synchronized,
    ));
    let r = client_now(&path, None);
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["status"], "unknown", "{r}");
}

#[test]
fn client_sees_the_segment_go_void_as_time_passes() {
    // Computed 4 s ago, void 2 s from now: synchronized for about 1 s more
    // (the readers' 5 s grace), then free-running, then unknown.
    let dir = tempfile::tempdir().unwrap();
    let (f, path) = new_segment(dir.path());
    let as_of = as_of_ago(4 * NS);
    f.segment.write(&record(
        as_of,
        6 * NS,
        1_000,
        1_000,
        ClockStatus::Synchronized,
    ));
    let out = Command::new(client_binary())
        .arg("watch")
        .arg(&path)
        .args(["3000", "50"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let lines: Vec<(u64, String, i128)> = text
        .lines()
        .map(|l| {
            let mut it = l.split_whitespace();
            (
                it.next().unwrap().parse().unwrap(),
                it.next().unwrap().to_owned(),
                it.next().unwrap().parse().unwrap(),
            )
        })
        .collect();
    let order = |s: &str| match s {
        "synchronized" => 0,
        "free-running" => 1,
        "unknown" => 2,
        other => panic!("unexpected status {other}"),
    };
    for w in lines.windows(2) {
        assert!(order(&w[0].1) <= order(&w[1].1), "status went back: {text}");
        assert!(w[0].2 <= w[1].2, "bound shrank: {text}");
    }
    for s in ["synchronized", "free-running", "unknown"] {
        assert!(lines.iter().any(|l| l.1 == s), "never {s}: {text}");
    }
    // The bound keeps growing by 1 ppm: over ~3 s, ~3000 ns.
    let grew = lines.last().unwrap().2 - lines[0].2;
    assert!((2_000..=4_000).contains(&grew), "grew {grew} ns: {text}");
}

#[test]
fn unknown_and_disrupted_statuses_pass_through() {
    let dir = tempfile::tempdir().unwrap();
    let (f, path) = new_segment(dir.path());
    for (status, name) in [
        (ClockStatus::Unknown, "unknown"),
        (ClockStatus::Disrupted, "disrupted"),
        (ClockStatus::FreeRunning, "free-running"),
        (ClockStatus::Synchronized, "synchronized"),
    ] {
        f.segment
            .write(&record(as_of_ago(0), 100 * NS, 1, 0, status));
        let r = client_now(&path, None);
        assert_eq!(r["status"], name, "{r}");
    }
}

/// A vmclock page file as `/dev/vmclock0` reads: 104 bytes (the layout
/// before `vm_generation_counter`), status synchronized.
fn fake_vmclock(path: &Path, marker: u64) {
    let mut p = vec![0u8; 104];
    p[0..4].copy_from_slice(&0x4b4c_4356u32.to_le_bytes());
    p[4..8].copy_from_slice(&104u32.to_le_bytes());
    p[8..10].copy_from_slice(&1u16.to_le_bytes());
    p[10] = 1; // x86 TSC
    p[12..16].copy_from_slice(&2u32.to_le_bytes());
    p[16..24].copy_from_slice(&marker.to_le_bytes());
    p[34] = 2; // synchronized
    std::fs::write(path, p).unwrap();
}

#[test]
fn disruption_support_compares_markers_with_vmclock() {
    let dir = tempfile::tempdir().unwrap();
    let (f, path) = new_segment(dir.path());
    let vmclock = dir.path().join("vmclock0");
    fake_vmclock(&vmclock, 7);
    let with_marker = |marker| ErrorBound {
        disruption_marker: marker,
        disruption_support: true,
        ..record(as_of_ago(0), 100 * NS, 1_000, 0, ClockStatus::Synchronized)
    };
    f.segment.write(&with_marker(7));
    let r = client_now(&path, Some(&vmclock));
    assert_eq!(r["status"], "synchronized", "markers agree: {r}");
    f.segment.write(&with_marker(6));
    let r = client_now(&path, Some(&vmclock));
    assert_eq!(r["status"], "unknown", "stale marker: {r}");
    // With the flag set and no vmclock device, the client cannot open.
    let r = client_now(&path, Some(&dir.path().join("vmclock9")));
    assert_eq!(r["ok"], false, "{r}");
    assert_eq!(r["stage"], "open", "{r}");
}

#[test]
fn a_restarted_writer_keeps_serving_a_running_client() {
    let dir = tempfile::tempdir().unwrap();
    let (f, path) = new_segment(dir.path());
    f.segment.write(&record(
        as_of_ago(0),
        100 * NS,
        1_000,
        0,
        ClockStatus::Synchronized,
    ));
    let mut child = Command::new(client_binary())
        .arg("watch")
        .arg(&path)
        .args(["2000", "50"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    // Wait until the client has read the first record.
    let first = lines.next().unwrap().unwrap();
    assert!(first.ends_with(" synchronized 1000"), "{first}");
    drop(f);
    let f = open_segment(&path, DEFAULT_FILE_MODE, DEFAULT_DIR_MODE).unwrap();
    assert!(f.reused);
    f.segment.write(&record(
        as_of_ago(0),
        100 * NS,
        2_000,
        0,
        ClockStatus::Synchronized,
    ));
    let rest: Vec<String> = lines.map(Result::unwrap).collect();
    assert!(child.wait().unwrap().success(), "{rest:?}");
    assert!(
        rest.last().unwrap().ends_with(" synchronized 2000"),
        "the client's old mapping sees the new record: {rest:?}"
    );
}

/// Stress record n: bound `BASE + n`, no drift, status by parity.
const STRESS_BASE: i64 = 1_000_000;

fn stress_record(n: i64) -> ErrorBound {
    record(
        as_of_ago(0),
        100 * NS,
        STRESS_BASE + n,
        0,
        if n % 2 == 0 {
            ClockStatus::Synchronized
        } else {
            ClockStatus::FreeRunning
        },
    )
}

#[test]
fn client_never_sees_a_torn_record_while_the_writer_writes() {
    let dir = tempfile::tempdir().unwrap();
    let (f, path) = new_segment(dir.path());
    f.segment.write(&stress_record(0));
    let child = Command::new(client_binary())
        .arg("stress")
        .arg(&path)
        .args(["3000", &STRESS_BASE.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let (mut n, mut child) = (0i64, child);
    // Write continuously, pausing a few microseconds so the 16-bit
    // generation does not wrap while a reader is preempted mid-copy (the
    // protocol's own limit; production writes about once a second).
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "cb-client did not finish");
        n += 1;
        f.segment.write(&stress_record(n));
        std::thread::sleep(Duration::from_micros(5));
    }
    let out = child.wait_with_output().unwrap();
    let line = String::from_utf8_lossy(&out.stdout);
    let r: Value = serde_json::from_str(line.trim()).unwrap();
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["torn"], 0, "{r}");
    assert_eq!(r["errors"], 0, "{r}");
    assert_eq!(r["backwards"], 0, "{r}");
    let distinct = int(&r, "distinct");
    assert!(
        distinct >= 100 && int(&r, "reads") > distinct,
        "the client must have followed many updates: {r} ({n} written)"
    );
    eprintln!("stress: {n} records written; client {r}");
}

/// `cb-client truth`, the guest's containment check, counts a reading
/// inside exactly when |truth| is within the half width.
#[test]
fn truth_mode_counts_containment_against_the_ground_truth() {
    let dir = tempfile::tempdir().unwrap();
    let (f, path) = new_segment(dir.path());
    f.segment.write(&record(
        as_of_ago(0),
        100 * NS,
        5_000,
        0,
        ClockStatus::Synchronized,
    ));
    let truth = dir.path().join("true_offset_ns");
    let run = |value: i64| -> Value {
        std::fs::write(&truth, format!("{value}\n")).unwrap();
        let out = Command::new(client_binary())
            .arg("truth")
            .arg(&path)
            .args(["200", "10000"])
            .arg(&truth)
            .output()
            .expect("run cb-client");
        serde_json::from_slice(&out.stdout).expect("a JSON summary")
    };
    let inside = run(-5_000);
    assert!(int(&inside, "reads") >= 5, "{inside}");
    assert_eq!(int(&inside, "outside"), 0, "{inside}");
    assert_eq!(
        int(&inside, "inside"),
        int(&inside, "synchronized"),
        "{inside}"
    );
    assert_eq!(int(&inside, "width_median_ns"), 10_000, "{inside}");
    assert_eq!(int(&inside, "worst_margin_ns"), 0, "{inside}");
    let outside = run(5_001);
    assert_eq!(int(&outside, "inside"), 0, "{outside}");
    assert!(int(&outside, "outside") >= 5, "{outside}");
    assert!(
        outside["first_problem"]
            .as_str()
            .unwrap()
            .contains("half width 5000 ns, true offset 5001 ns"),
        "{outside}"
    );
    // Unknown readings claim nothing: counted apart.
    f.segment.write(&ErrorBound::unknown(as_of_ago(0)));
    let unknown = run(1_000_000);
    assert_eq!(int(&unknown, "outside"), 0, "{unknown}");
    assert_eq!(
        int(&unknown, "unknown"),
        int(&unknown, "reads"),
        "{unknown}"
    );
    assert!(int(&unknown, "outside_any_status") > 0, "{unknown}");
}
