//! `ntpd-host probe` through the built binary: JSON and text output, plugin
//! faults, config arguments, and one-line failures with their exit status.

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

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use ntpd_host::error::exit;
use ntpd_plugin_api::{ABI_VERSION, SDK_VERSION};

use common::{find_libc, host_bin, plugin_path, scratch, sim_copy};

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
    assert_eq!(objects[0]["sdk-version"], SDK_VERSION);
    assert!(objects[0]["load-time-us"].as_u64().is_some());
    assert_eq!(objects[1]["method"], "extended");
    assert_eq!(objects[1]["precision-ns"], 10);
    for (i, s) in objects[2..7].iter().enumerate() {
        assert_eq!(s["n"], i as u64 + 1);
        let offset = s["offset-ns"].as_i64().unwrap();
        assert!((offset - 500_000_000).abs() < 100, "{s}");
    }
    assert_eq!(objects[2]["reference-error-ns"], 0);
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
    let dir = scratch();
    let file = dir.path().join("sim.json");
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

    let missing = dir.path().join("nope.json");
    let out = probe(&[
        path.to_str().unwrap(),
        "--config",
        &format!("@{}", missing.display()),
    ]);
    assert_fails_in_one_line(&out, &["nope.json"]);
    assert_eq!(out.status.code(), Some(2), "a bad argument");
}

#[test]
fn cli_config_must_be_a_json_object() {
    let path = plugin_path("ntpd_sim");
    for config in ["[1, 2]", "\"offset\"", "42"] {
        let out = probe(&[path.to_str().unwrap(), "--config", config, "--count", "1"]);
        assert_fails_in_one_line(&out, &["JSON object"]);
        assert!(out.stdout.is_empty(), "{config}");
        assert_eq!(out.status.code(), Some(2), "{config}");
    }
    let out = probe(&[path.to_str().unwrap(), "--config", "{offset: 1}"]);
    assert_fails_in_one_line(&out, &["not valid JSON"]);
}

#[test]
fn cli_load_failures_are_one_line_on_stderr_and_exit_non_zero() {
    let dir = scratch();
    let dir = dir.path();
    let text = dir.join("text.so");
    std::fs::write(&text, "not a library\n").unwrap();
    let writable = sim_copy(dir, "writable.so");
    std::fs::set_permissions(&writable, std::fs::Permissions::from_mode(0o666)).unwrap();
    let missing = dir.join("missing.so");
    let libc = find_libc();
    let incompatible = plugin_path("ntpd_incompatible");
    let future = plugin_path("ntpd_future");
    let sim = plugin_path("ntpd_sim");
    let plugin = i32::from(exit::PLUGIN);

    let cases: Vec<(&Path, Vec<&str>, Vec<&str>, i32)> = vec![
        (&missing, vec![], vec!["no such file"], plugin),
        (&text, vec![], vec!["not an ELF"], plugin),
        (&libc, vec![], vec!["not an ntpd-host plugin"], plugin),
        (&incompatible, vec![], vec!["layout", ABI_VERSION], plugin),
        (&future, vec![], vec!["ABI 2.0.0", ABI_VERSION], plugin),
        (
            &writable,
            vec![],
            vec!["0666", "--allow-insecure-plugin"],
            plugin,
        ),
        (
            &sim,
            vec!["--config", r#"{"ofset": 1}"#],
            vec!["init failed", "invalid plugin config: ofset: unknown field"],
            plugin,
        ),
        (
            &sim,
            vec!["--config", r#"{"unavailable-at": 1}"#],
            vec!["no sample succeeded"],
            i32::from(exit::NO_SAMPLE),
        ),
    ];
    for (path, extra, needles, code) in cases {
        let path_text = path.display().to_string();
        let mut args = vec![path_text.as_str(), "--count", "2", "--interval", "0"];
        args.extend(extra);
        let out = probe(&args);
        let mut needles = needles;
        needles.push(&path_text);
        let line = assert_fails_in_one_line(&out, &needles);
        assert!(line.starts_with("ntpd-host: "), "{line}");
        assert_eq!(out.status.code(), Some(code), "{line}");
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
