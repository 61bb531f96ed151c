//! Loading plugin libraries for real: the simulated plugin, the incompatible
//! fixtures, libraries that are not plugins, unsafe files, and the `probe`
//! command through the built binary. No root needed.

mod common;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ntpd_host::plugin::{self, LoadError, LoadOptions, Plugin, Reaction, insecure_reason};
use ntpd_plugin_api::{API_VERSION, ErrorKind, Leap, ReadMethod, TimeScale};

use common::{host_bin, plugin_path};

/// A fresh, empty directory for one test, on the target directory's file
/// system (so libraries copied there can be mapped executable). Removed when
/// dropped; a loaded library stays mapped after its file is gone.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join("plugin_loading")
            .join(format!("{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create scratch dir");
        Self(dir)
    }
}

impl std::ops::Deref for Scratch {
    type Target = Path;

    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Copies the simulated plugin to `dir/name` (a new file, so the dynamic
/// loader sees a different library) with mode 0755.
fn sim_copy(dir: &Path, name: &str) -> PathBuf {
    let to = dir.join(name);
    std::fs::copy(plugin_path("ntpd_sim"), &to).expect("copy sim plugin");
    std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    to
}

fn load(path: &Path) -> Result<Plugin, LoadError> {
    plugin::load(path, LoadOptions::default())
}

/// Asserts that `error` renders as one line that names `path`, and returns
/// that line.
fn one_line_naming(error: &LoadError, path: &Path) -> String {
    let line = error.to_string();
    assert!(!line.contains('\n'), "not one line: {line}");
    assert!(
        line.contains(&path.display().to_string()),
        "does not name {}: {line}",
        path.display()
    );
    assert!(line.len() < 600, "too long ({} bytes): {line}", line.len());
    line
}

/// The C library this test process runs with: from /proc/self/maps, else
/// from a list of the usual places.
fn find_libc() -> PathBuf {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    let mapped = maps
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| {
            Path::new(p)
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libc.so") || n.starts_with("libc-"))
        });
    if let Some(path) = mapped {
        return PathBuf::from(path);
    }
    [
        "/lib/x86_64-linux-gnu/libc.so.6",
        "/lib/aarch64-linux-gnu/libc.so.6",
        "/lib64/libc.so.6",
        "/usr/lib64/libc.so.6",
        "/usr/lib/libc.so.6",
        "/lib/libc.so.6",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
    .expect("no libc.so.6 found")
}

// ---------------------------------------------------------------- loading

#[test]
fn sim_plugin_loads_and_samples_carry_the_configured_offset_and_noise() {
    let path = plugin_path("ntpd_sim");
    let plugin = load(&path).expect("sim plugin loads");
    assert_eq!(plugin.path(), path);
    let info = plugin.info();
    assert_eq!(info.name.as_str(), "sim");
    assert_eq!(info.api_version.as_str(), API_VERSION);

    let config =
        r#"{"offset": 0.25, "noise": 100, "seed": 7, "timescale": "tai", "leap": "insert"}"#;
    let mut source = plugin.init(config).expect("init");
    let caps = source.capabilities().expect("capabilities");
    assert_eq!(caps.method, ReadMethod::EXTENDED);
    assert_eq!(caps.timescale, TimeScale::TAI);
    assert_eq!(caps.precision_ns, 100);
    let ext: serde_json::Value = serde_json::from_str(caps.extensions.as_str()).unwrap();
    assert_eq!(ext["device"], "sim");

    let before = ntpd_plugin_api::realtime_now_ns();
    let samples: Vec<_> = (0..400).map(|_| source.sample().expect("sample")).collect();
    let after = ntpd_plugin_api::realtime_now_ns();

    let want = 250_000_000_i64;
    let offsets: Vec<i64> = samples.iter().map(|s| s.offset_ns).collect();
    let n = offsets.len() as f64;
    let mean = offsets.iter().map(|o| (o - want) as f64).sum::<f64>() / n;
    let sd = (offsets
        .iter()
        .map(|o| ((o - want) as f64 - mean).powi(2))
        .sum::<f64>()
        / (n - 1.0))
        .sqrt();
    // The standard error of the mean is 100 / sqrt(400) = 5 ns.
    assert!(mean.abs() < 25.0, "mean offset {mean} ns off 0.25 s");
    assert!(
        (70.0..130.0).contains(&sd),
        "noise sd {sd} ns, configured 100"
    );
    assert!(
        offsets.iter().all(|o| (o - want).abs() < 600),
        "beyond 6 sd"
    );
    for s in &samples {
        assert!(
            (before..=after).contains(&s.system_time_ns),
            "system time {s:?}"
        );
        assert_eq!(s.error_ns, 300, "error bound is 3 sd");
        assert_eq!(s.leap, Leap::INSERT);
        assert_eq!(s.readings, 1);
    }

    // Seeded: the same seed through a second source gives the same noise.
    let mut again = plugin.init(config).expect("init again");
    let repeat: Vec<i64> = (0..20).map(|_| again.sample().unwrap().offset_ns).collect();
    assert_eq!(repeat, offsets[..20]);
}

#[test]
fn init_rejecting_its_config_is_a_one_line_configuration_error() {
    let path = plugin_path("ntpd_sim");
    let plugin = load(&path).unwrap();
    let Err(error) = plugin.init(r#"{"ofset": 1}"#) else {
        panic!("a misspelt key must be refused");
    };
    let LoadError::Init { error: inner, .. } = &error else {
        panic!("expected an init error, got {error}");
    };
    assert_eq!(inner.kind, ErrorKind::CONFIGURATION);
    let line = one_line_naming(&error, &path);
    assert!(line.contains("ofset"), "{line}");
}

#[test]
fn two_copies_of_a_plugin_are_two_independent_libraries() {
    let dir = Scratch::new("two-copies");
    let a_path = sim_copy(&dir, "a.so");
    let b_path = sim_copy(&dir, "b.so");
    let a = load(&a_path).expect("load a");
    let b = load(&b_path).expect("load b");
    assert_eq!(a.path(), a_path);
    assert_eq!(b.path(), b_path);

    // Each copy has its own static `init` counter: with `init-failures: 1`
    // the first init of *each library* fails. Had the loader handed back the
    // first library's module for the second file (abi_stable's
    // load_from_file caches one module per type), b's first init would find
    // the counter already at 1 and succeed.
    let a_config = r#"{"init-failures": 1, "offset": 1.0}"#;
    let b_config = r#"{"init-failures": 1, "offset": -2.0, "leap": "delete"}"#;
    let first_a = a.init(a_config).err().expect("a: first init fails");
    assert!(first_a.to_string().contains("init failure 1"), "{first_a}");
    let first_b = b.init(b_config).err().expect("b: first init fails too");
    assert!(first_b.to_string().contains("init failure 1"), "{first_b}");
    let LoadError::Init { error, .. } = &first_b else {
        panic!("{first_b}");
    };
    assert_eq!(error.kind, ErrorKind::UNAVAILABLE);

    let mut sa = a.init(a_config).expect("a: second init");
    let mut sb = b.init(b_config).expect("b: second init");
    for _ in 0..5 {
        let (x, y) = (sa.sample().unwrap(), sb.sample().unwrap());
        assert_eq!(x.offset_ns, 1_000_000_000);
        assert_eq!(x.leap, Leap::NONE);
        assert_eq!(y.offset_ns, -2_000_000_000);
        assert_eq!(y.leap, Leap::DELETE);
    }
}

// ------------------------------------------------------- refused libraries

#[test]
fn incompatible_layout_is_refused_in_one_line_naming_both_versions() {
    let path = plugin_path("ntpd_incompatible");
    let error = load(&path).expect_err("a different layout must be refused");
    assert!(matches!(error, LoadError::Layout { .. }), "{error:?}");
    let line = one_line_naming(&error, &path);
    assert!(line.contains("layout"), "{line}");
    // Same version on both sides: the plugin's and the host's are named.
    assert_eq!(line.matches(API_VERSION).count(), 2, "{line}");
    assert!(
        !line.contains("Error:"),
        "raw abi_stable report leaked: {line}"
    );
}

#[test]
fn future_major_version_is_refused_naming_both_versions() {
    let path = plugin_path("ntpd_future");
    let error = load(&path).expect_err("a 2.0.0 plugin must be refused");
    assert!(matches!(error, LoadError::Version { .. }), "{error:?}");
    let line = one_line_naming(&error, &path);
    assert!(line.contains("2.0.0"), "{line}");
    assert!(line.contains(API_VERSION), "{line}");
}

#[test]
fn libc_is_not_a_plugin() {
    let path = find_libc();
    let error = load(&path).expect_err("libc is not a plugin");
    assert!(matches!(error, LoadError::NotPlugin { .. }), "{error:?}");
    let line = one_line_naming(&error, &path);
    assert!(line.contains("not an ntpd-host plugin"), "{line}");
}

#[test]
fn non_elf_truncated_elf_missing_file_and_directory_are_refused() {
    let dir = Scratch::new("not-elf");
    let text = dir.join("plugin.so");
    std::fs::write(&text, "#!/bin/sh\necho not a library\n").unwrap();
    std::fs::set_permissions(&text, std::fs::Permissions::from_mode(0o755)).unwrap();
    let error = load(&text).expect_err("a text file");
    assert!(matches!(error, LoadError::NotElf { .. }), "{error:?}");
    assert!(one_line_naming(&error, &text).contains("not an ELF"));

    let truncated = dir.join("truncated.so");
    let mut f = std::fs::File::create(&truncated).unwrap();
    f.write_all(b"\x7fELF\x02\x01\x01\0").unwrap();
    f.write_all(&[0u8; 24]).unwrap();
    drop(f);
    std::fs::set_permissions(&truncated, std::fs::Permissions::from_mode(0o755)).unwrap();
    let error = load(&truncated).expect_err("a truncated ELF");
    assert!(matches!(error, LoadError::Open { .. }), "{error:?}");
    one_line_naming(&error, &truncated);

    let missing = dir.join("missing.so");
    let error = load(&missing).expect_err("a missing file");
    assert!(matches!(error, LoadError::NotFound { .. }), "{error:?}");
    assert!(one_line_naming(&error, &missing).contains("no such file"));

    let error = load(&dir).expect_err("a directory");
    assert!(matches!(error, LoadError::NotRegular { .. }), "{error:?}");
    one_line_naming(&error, &dir);
}

// ------------------------------------------------------ faults at runtime

#[test]
fn a_panicking_plugin_yields_a_panicked_error_and_sampling_goes_on() {
    let plugin = load(&plugin_path("ntpd_sim")).unwrap();
    let mut source = plugin.init(r#"{"panic-at": 2, "offset": 0.001}"#).unwrap();
    assert_eq!(source.sample().unwrap().offset_ns, 1_000_000);
    let error = source.sample().expect_err("sample 2 panics");
    assert_eq!(error.kind, ErrorKind::PANICKED);
    assert!(error.message.contains("sample()"), "{error}");
    assert!(error.message.contains("panic-at"), "{error}");
    assert_eq!(plugin::reaction(error.kind), Reaction::Skip);
    for _ in 0..3 {
        assert_eq!(source.sample().unwrap().offset_ns, 1_000_000);
    }
    // The library still works for new sources.
    let mut fresh = plugin.init("{}").unwrap();
    assert!(fresh.sample().is_ok());
}

#[test]
fn unknown_error_kinds_are_tolerated_and_skipped() {
    let plugin = load(&plugin_path("ntpd_sim")).unwrap();
    let mut source = plugin
        .init(r#"{"error-every": 2, "error-kind": 42}"#)
        .unwrap();
    let mut errors = 0;
    for n in 1..=6 {
        match source.sample() {
            Ok(_) => assert_eq!(n % 2, 1, "sample {n} should fail"),
            Err(e) => {
                assert_eq!(n % 2, 0, "sample {n} should succeed");
                assert_eq!(e.kind, ErrorKind(42));
                assert_eq!(e.kind.known_name(), None);
                assert_eq!(e.kind.to_string(), "unknown(42)");
                assert_eq!(plugin::reaction(e.kind), Reaction::Skip);
                errors += 1;
            }
        }
    }
    assert_eq!(errors, 3);
}

// ----------------------------------------------------------- file safety

#[test]
fn group_or_world_writable_plugin_is_refused_unless_allowed() {
    let dir = Scratch::new("insecure");
    let path = sim_copy(&dir, "writable.so");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
    let error = load(&path).expect_err("mode 0666 must be refused");
    assert!(matches!(error, LoadError::Insecure { .. }), "{error:?}");
    let line = one_line_naming(&error, &path);
    assert!(line.contains("0666"), "{line}");
    assert!(line.contains("chmod go-w"), "{line}");
    assert!(line.contains("--allow-insecure-plugin"), "{line}");

    let plugin = plugin::load(
        &path,
        LoadOptions {
            allow_insecure: true,
        },
    )
    .expect("allow_insecure overrides the check");
    assert!(plugin.init("{}").unwrap().sample().is_ok());

    // Group-writable only, on a second copy.
    let group = sim_copy(&dir, "group.so");
    std::fs::set_permissions(&group, std::fs::Permissions::from_mode(0o775)).unwrap();
    let line = load(&group).expect_err("mode 0775").to_string();
    assert!(line.contains("its group"), "{line}");
}

#[test]
fn owner_rules() {
    let me = 1000;
    assert_eq!(insecure_reason(0, 0o100755, me), None, "root-owned");
    assert_eq!(insecure_reason(me, 0o100700, me), None, "own file");
    let other = insecure_reason(1001, 0o100755, me).expect("someone else's file");
    assert!(other.contains("uid 1001"), "{other}");
    assert!(other.contains("uid 1000"), "{other}");
    assert!(other.contains("root"), "{other}");
    assert!(insecure_reason(0, 0o100757, me).unwrap().contains("others"));
    assert!(insecure_reason(me, 0o100620, me).unwrap().contains("group"));
    // Root loading a file owned by an ordinary user is refused too.
    assert!(insecure_reason(1000, 0o100755, 0).is_some());

    // Through the real loader when we may chown (running as root).
    if rustix::process::geteuid().is_root() {
        let dir = Scratch::new("owner");
        let path = sim_copy(&dir, "foreign.so");
        std::os::unix::fs::chown(&path, Some(54321), None).expect("chown");
        let error = load(&path).expect_err("a file owned by uid 54321");
        assert!(matches!(error, LoadError::Insecure { .. }), "{error:?}");
        assert!(one_line_naming(&error, &path).contains("uid 54321"));
    }
}

// ------------------------------------------------------ the CLI, for real

fn probe(args: &[&str]) -> Output {
    Command::new(host_bin())
        .arg("probe")
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("run ntpd-host")
}

fn stdout_lines(out: &Output) -> Vec<String> {
    String::from_utf8(out.stdout.clone())
        .expect("utf-8")
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Asserts a failed run: non-zero exit, exactly one line on stderr that
/// contains every `needle`.
fn assert_fails_in_one_line(out: &Output, needles: &[&str]) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "should fail; stderr: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "stderr: {stderr:?}");
    assert!(stderr.ends_with('\n'), "{stderr:?}");
    for needle in needles {
        assert!(stderr.contains(needle), "{needle:?} not in {stderr:?}");
    }
    stderr
}

#[test]
fn cli_json_prints_info_capabilities_each_sample_and_summary() {
    let path = plugin_path("ntpd_sim");
    let out = probe(&[
        path.to_str().unwrap(),
        "--count",
        "5",
        "--json",
        "--interval",
        "0",
        "--config",
        r#"{"offset": 0.5, "noise": 10}"#,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = stdout_lines(&out);
    assert_eq!(lines.len(), 8, "{lines:#?}");
    let objects: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let types: Vec<&str> = objects
        .iter()
        .map(|o| o["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "info",
            "capabilities",
            "sample",
            "sample",
            "sample",
            "sample",
            "sample",
            "summary"
        ]
    );
    assert_eq!(objects[0]["name"], "sim");
    assert_eq!(objects[0]["api-version"], API_VERSION);
    assert_eq!(objects[1]["method"], "extended");
    assert_eq!(objects[1]["precision-ns"], 10);
    for (i, s) in objects[2..7].iter().enumerate() {
        assert_eq!(s["n"], i as u64 + 1);
        let offset = s["offset-ns"].as_i64().unwrap();
        assert!((offset - 500_000_000).abs() < 100, "{s}");
    }
    let summary = &objects[7];
    assert_eq!(summary["samples"], 5);
    assert!((summary["offset-mean-ns"].as_f64().unwrap() - 5e8).abs() < 100.0);
    assert_eq!(summary["errors"], serde_json::json!({}));
}

#[test]
fn cli_reports_panics_and_unknown_kinds_and_carries_on() {
    let path = plugin_path("ntpd_sim");
    let out = probe(&[
        path.to_str().unwrap(),
        "--count",
        "6",
        "--json",
        "--interval",
        "0",
        "--config",
        r#"{"panic-at": 2, "error-every": 3, "error-kind": 42}"#,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let objects: Vec<serde_json::Value> = stdout_lines(&out)
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(objects.len(), 2 + 6 + 1);
    let kinds: Vec<String> = objects[2..8]
        .iter()
        .map(|o| match o["type"].as_str().unwrap() {
            "sample" => "ok".to_owned(),
            "error" => o["kind"].as_str().unwrap().to_owned(),
            other => panic!("unexpected {other}"),
        })
        .collect();
    assert_eq!(
        kinds,
        ["ok", "panicked", "unknown(42)", "ok", "ok", "unknown(42)"]
    );
    let summary = &objects[8];
    assert_eq!(summary["samples"], 3);
    assert_eq!(summary["errors"]["panicked"], 1);
    assert_eq!(summary["errors"]["unknown(42)"], 2);
}

#[test]
fn cli_human_output_ends_with_a_summary() {
    let path = plugin_path("ntpd_sim");
    let out = probe(&[path.to_str().unwrap(), "--count", "3", "--interval", "0"]);
    assert!(out.status.success());
    let lines = stdout_lines(&out);
    assert!(
        lines[0].starts_with("plugin") && lines[0].contains("sim"),
        "{lines:#?}"
    );
    assert_eq!(lines.iter().filter(|l| l.starts_with("sample")).count(), 3);
    let last = lines.last().unwrap();
    assert!(
        last.starts_with("summary") && last.contains("3 of 3 samples"),
        "{last}"
    );
}

#[test]
fn cli_config_from_a_file() {
    let dir = Scratch::new("config-file");
    let file = dir.join("sim.json");
    std::fs::write(
        &file,
        "{\n  \"offset\": -0.125,\n  \"leap\": \"insert\"\n}\n",
    )
    .unwrap();
    let path = plugin_path("ntpd_sim");
    let arg = format!("@{}", file.display());
    let out = probe(&[
        path.to_str().unwrap(),
        "--count",
        "2",
        "--json",
        "--interval",
        "0",
        "--config",
        &arg,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let samples: Vec<serde_json::Value> = stdout_lines(&out)
        .iter()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|o| o["type"] == "sample")
        .collect();
    assert_eq!(samples.len(), 2);
    for s in samples {
        assert_eq!(s["offset-ns"], -125_000_000);
        assert_eq!(s["leap"], "insert");
    }

    let missing = dir.join("nope.json");
    let out = probe(&[
        path.to_str().unwrap(),
        "--config",
        &format!("@{}", missing.display()),
    ]);
    assert_fails_in_one_line(&out, &["nope.json"]);
}

#[test]
fn cli_config_must_be_a_json_object() {
    let path = plugin_path("ntpd_sim");
    for config in ["[1, 2]", "\"offset\"", "42"] {
        let out = probe(&[path.to_str().unwrap(), "--config", config, "--count", "1"]);
        assert_fails_in_one_line(&out, &["JSON object"]);
        assert!(out.stdout.is_empty(), "{config}");
    }
    let out = probe(&[path.to_str().unwrap(), "--config", "{offset: 1}"]);
    assert_fails_in_one_line(&out, &["not valid JSON"]);
}

#[test]
fn cli_load_failures_are_one_line_on_stderr_and_exit_non_zero() {
    let dir = Scratch::new("cli-failures");
    let text = dir.join("text.so");
    std::fs::write(&text, "not a library\n").unwrap();
    let writable = sim_copy(&dir, "writable.so");
    std::fs::set_permissions(&writable, std::fs::Permissions::from_mode(0o666)).unwrap();
    let missing = dir.join("missing.so");
    let libc = find_libc();
    let incompatible = plugin_path("ntpd_incompatible");
    let future = plugin_path("ntpd_future");
    let sim = plugin_path("ntpd_sim");

    let cases: Vec<(&Path, Vec<&str>, Vec<&str>)> = vec![
        (&missing, vec![], vec!["no such file"]),
        (&text, vec![], vec!["not an ELF"]),
        (&libc, vec![], vec!["not an ntpd-host plugin"]),
        (&incompatible, vec![], vec!["layout", API_VERSION]),
        (&future, vec![], vec!["2.0.0", API_VERSION]),
        (&writable, vec![], vec!["0666", "--allow-insecure-plugin"]),
        (
            &sim,
            vec!["--config", r#"{"ofset": 1}"#],
            vec!["init failed", "ofset"],
        ),
        (
            &sim,
            vec!["--config", r#"{"unavailable-at": 1}"#],
            vec!["no sample succeeded"],
        ),
    ];
    for (path, extra, needles) in cases {
        let path_text = path.display().to_string();
        let mut args = vec![path_text.as_str(), "--count", "2", "--interval", "0"];
        args.extend(extra);
        let out = probe(&args);
        let mut needles = needles;
        needles.push(&path_text);
        let line = assert_fails_in_one_line(&out, &needles);
        assert!(line.starts_with("ntpd-host: "), "{line}");
    }

    // --allow-insecure-plugin loads the writable copy after all.
    let out = probe(&[
        writable.to_str().unwrap(),
        "--allow-insecure-plugin",
        "--count",
        "1",
        "--interval",
        "0",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
