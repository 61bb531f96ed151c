//! `ntpd-host validate` and `status` through the real binary. `validate`
//! runs ntpd-rs's own config validation (`ntp-ctl validate`), which only
//! parses: nothing here starts the daemon.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

/// Writes `text` to a fresh file, with the example plugin paths pointing at
/// the workspace's built sim plugin (validate checks the file exists).
fn config_file(tag: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("nh-validate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let so = common::plugin_path("ntpd_sim").display().to_string();
    let text = text
        .replace("/usr/lib/ntpd-rs/libntpd_ptp.so", &so)
        .replace("/usr/lib/ntpd-rs/libntpd_sim.so", &so);
    let path = dir.join(format!("{tag}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

fn validate(path: &Path) -> Output {
    Command::new(common::host_bin())
        .args(["validate", "-c"])
        .arg(path)
        .output()
        .unwrap()
}

/// Asserts failure with exactly one stderr line containing every needle.
fn assert_one_line_error(out: &Output, needles: &[&str]) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "expected failure; stderr: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    for n in needles {
        assert!(err.contains(n), "missing {n:?} in: {err}");
    }
}

#[test]
fn every_example_config_validates() {
    for name in ["ntp-ptp", "ntp-ptp-and-ntp", "ntp-sim", "bridge"] {
        let text = std::fs::read_to_string(examples_dir().join(format!("{name}.toml"))).unwrap();
        let path = config_file(name, &text);
        let out = if name == "bridge" {
            Command::new(common::host_bin())
                .args(["validate", "--bridge", "-c"])
                .arg(&path)
                .output()
                .unwrap()
        } else {
            validate(&path)
        };
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{name}: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains(": ok: "), "{name}: {stdout}");
    }
}

#[test]
fn poll_interval_out_of_range_is_one_line_naming_the_key_and_range() {
    let text = std::fs::read_to_string(examples_dir().join("ntp-ptp.toml")).unwrap();
    let path = config_file(
        "poll7",
        &text.replace("poll-interval = 0 ", "poll-interval = 7 "),
    );
    assert_one_line_error(
        &validate(&path),
        &[
            "poll7.toml",
            "[[source]] #1",
            "poll-interval",
            "from -1 (0.5 s) to 6 (64 s)",
        ],
    );
}

#[test]
fn host_key_errors_name_file_source_and_key() {
    let so = common::plugin_path("ntpd_sim").display().to_string();
    let cases: &[(&str, String, &[&str])] = &[
        (
            "unknown",
            format!("[[source]]\nmode = \"plugin\"\npath = \"{so}\"\ndevcie = 1\n"),
            &["[[source]] #1: devcie: unknown key"],
        ),
        (
            "relative",
            "[[source]]\nmode = \"plugin\"\npath = \"libntpd_ptp.so\"\n".to_owned(),
            &["[[source]] #1: path:", "relative"],
        ),
        (
            "missing",
            "[[source]]\nmode = \"plugin\"\npath = \"/nonexistent/libx.so\"\n".to_owned(),
            &["[[source]] #1: path: /nonexistent/libx.so: no such file"],
        ),
        (
            "notelf",
            format!(
                "[[source]]\nmode = \"plugin\"\npath = \"{}\"\n",
                examples_dir()
                    .join("ntp-sim.toml")
                    .canonicalize()
                    .unwrap()
                    .display()
            ),
            &["[[source]] #1: path:", "not an ELF"],
        ),
    ];
    for (tag, text, needles) in cases {
        let path = config_file(tag, text);
        let out = validate(&path);
        assert_one_line_error(&out, needles);
        assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("{tag}.toml")));
    }
}

#[test]
fn ntpd_rs_rejections_are_reported_against_the_users_file() {
    let text = std::fs::read_to_string(examples_dir().join("ntp-ptp.toml")).unwrap();
    let path = config_file(
        "rejected",
        &text.replace(
            "[synchronization]\n",
            "[synchronization]\nno-such-setting = 1\n",
        ),
    );
    assert_one_line_error(
        &validate(&path),
        &[
            "rejected.toml: ntpd-rs rejects this config",
            "no-such-setting",
        ],
    );
}

#[test]
fn a_lone_phc_without_minimum_agreeing_sources_is_explained() {
    let text = std::fs::read_to_string(examples_dir().join("ntp-ptp.toml")).unwrap();
    let path = config_file(
        "lonely",
        &text.replace(
            "minimum-agreeing-sources = 1",
            "minimum-agreeing-sources = 3",
        ),
    );
    assert_one_line_error(
        &validate(&path),
        &["lonely.toml", "set minimum-agreeing-sources = 1"],
    );
}

#[test]
fn status_without_a_running_host_is_one_line() {
    let out = Command::new(common::host_bin())
        .args(["status", "--runtime-dir", "/nonexistent/ntpd-host"])
        .output()
        .unwrap();
    assert_one_line_error(
        &out,
        &["/nonexistent/ntpd-host/status.sock", "is ntpd-host running"],
    );
}
