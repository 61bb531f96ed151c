//! `ntpd-host validate` and `status` through the real binary. `validate`
//! runs ntpd-rs's own config validation (`ntp-ctl validate`), which only
//! parses: nothing here starts the daemon.

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

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use std::os::unix::fs::PermissionsExt;

use ntpd_host::error::exit;
use tempfile::TempDir;

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

/// Writes `text` to `<dir>/<tag>.toml`, with the example plugin paths
/// pointing at the workspace's built sim plugin (validate checks the file
/// exists).
fn config_file(dir: &TempDir, tag: &str, text: &str) -> PathBuf {
    let so = common::plugin_path("ntpd_sim").display().to_string();
    let text = text
        .replace("/usr/lib/ntpd-rs/libntpd_ptp.so", &so)
        .replace("/usr/lib/ntpd-rs/libntpd_sim.so", &so);
    let path = dir.path().join(format!("{tag}.toml"));
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

fn tempdir() -> TempDir {
    tempfile::Builder::new()
        .prefix("validate-")
        .tempdir()
        .unwrap()
}

/// Asserts failure with `code` and exactly one stderr line containing every
/// needle.
fn assert_one_line_error(out: &Output, code: u8, needles: &[&str]) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(i32::from(code)), "stderr: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    for n in needles {
        assert!(err.contains(n), "missing {n:?} in: {err}");
    }
}

#[test]
fn every_example_config_validates() {
    let dir = tempdir();
    for name in ["ntp-ptp", "ntp-ptp-and-ntp", "ntp-sim", "bridge"] {
        let text = std::fs::read_to_string(examples_dir().join(format!("{name}.toml"))).unwrap();
        let path = config_file(&dir, name, &text);
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
    let dir = tempdir();
    let path = config_file(
        &dir,
        "poll7",
        &text.replace("poll-interval = 0 ", "poll-interval = 7 "),
    );
    assert_one_line_error(
        &validate(&path),
        exit::CONFIG,
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
    let dir = tempdir();
    let cases: &[(&str, String, u8, &[&str])] = &[
        (
            "unknown",
            format!("[[source]]\nmode = \"plugin\"\npath = \"{so}\"\ndevcie = 1\n"),
            exit::CONFIG,
            &["[[source]] #1: devcie: unknown field `devcie`, expected one of `mode`, `path`"],
        ),
        (
            "relative",
            "[[source]]\nmode = \"plugin\"\npath = \"libntpd_ptp.so\"\n".to_owned(),
            exit::CONFIG,
            &["[[source]] #1: path:", "relative"],
        ),
        (
            "missing",
            "[[source]]\nmode = \"plugin\"\npath = \"/nonexistent/libx.so\"\n".to_owned(),
            exit::PLUGIN,
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
            exit::PLUGIN,
            &["[[source]] #1: path:", "not an ELF"],
        ),
    ];
    for (tag, text, code, needles) in cases {
        let path = config_file(&dir, tag, text);
        let out = validate(&path);
        assert_one_line_error(&out, *code, needles);
        assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("{tag}.toml")));
    }
}

#[test]
fn ntpd_rs_rejections_are_reported_against_the_users_file() {
    let text = std::fs::read_to_string(examples_dir().join("ntp-ptp.toml")).unwrap();
    let dir = tempdir();
    let path = config_file(
        &dir,
        "rejected",
        &text.replace(
            "[synchronization]\n",
            "[synchronization]\nno-such-setting = 1\n",
        ),
    );
    assert_one_line_error(
        &validate(&path),
        exit::CONFIG,
        &[
            "rejected.toml: ntpd-rs rejects this config",
            "no-such-setting",
        ],
    );
}

#[test]
fn a_config_ntpd_rs_parses_but_its_own_checks_reject_fails() {
    // ntpd-rs loads this config (every key is valid) but its check refuses
    // it: a server forced into the draft NTPv5. validate must trust
    // ntpd-rs's exit status, not look for a parse error.
    let text = std::fs::read_to_string(examples_dir().join("ntp-ptp-and-ntp.toml")).unwrap();
    assert!(text.contains("mode = \"server\""), "{text}");
    let dir = tempdir();
    let path = config_file(
        &dir,
        "ntpv5",
        &text.replacen(
            "mode = \"server\"\n",
            "mode = \"server\"\nntp-version = 5\n",
            1,
        ),
    );
    assert_one_line_error(
        &validate(&path),
        exit::CONFIG,
        &["ntpv5.toml: ntpd-rs rejects this config", "NTPv5"],
    );
}

#[test]
fn a_lone_phc_without_minimum_agreeing_sources_is_refused_by_ntpd_rs() {
    let text = std::fs::read_to_string(examples_dir().join("ntp-ptp.toml")).unwrap();
    let dir = tempdir();
    let path = config_file(
        &dir,
        "lonely",
        &text.replace(
            "minimum-agreeing-sources = 1",
            "minimum-agreeing-sources = 3",
        ),
    );
    assert_one_line_error(
        &validate(&path),
        exit::CONFIG,
        &[
            "lonely.toml: ntpd-rs rejects this config",
            "Fewer sources configured than are required to agree",
        ],
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
        exit::UNAVAILABLE,
        &["/nonexistent/ntpd-host/status.sock", "is ntpd-host running"],
    );
}

#[test]
fn validate_as_root_cannot_be_made_to_write_through_a_planted_path() {
    // The attack that worked on the old validate: an unprivileged user
    // plants /tmp/ntpd-host-validate-<pid>/ntp.toml symlinks to a file only
    // root may write, for the next few hundred pids; root's validate then
    // wrote its derived config through one of them.
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: the attack needs a root validate and another user");
        return;
    }
    let victim_dir = tempdir();
    let victim = victim_dir.path().join("secret");
    std::fs::write(&victim, "root's own content\n").unwrap();
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).unwrap();
    let last: u32 = std::fs::read_to_string("/proc/sys/kernel/ns_last_pid")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let tmp = std::env::temp_dir();
    let (first, count) = (last + 1, 400);
    // As nobody (a real unprivileged user), like the attacker.
    let plant = format!(
        "i={first}; while [ $i -lt {end} ]; do d={tmp}/ntpd-host-validate-$i; \
         mkdir -p $d 2>/dev/null && ln -sf {victim} $d/ntp.toml; i=$((i + 1)); done",
        end = first + count,
        tmp = tmp.display(),
        victim = victim.display()
    );
    let planted = Command::new("setpriv")
        .args([
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
            "sh",
            "-c",
            &plant,
        ])
        .status()
        .expect("setpriv (util-linux)");
    assert!(planted.success());
    // The victim is reachable through the planted links (the directory
    // holding it is 0700 root, but root follows links anywhere).
    let dir = tempdir();
    let text = std::fs::read_to_string(examples_dir().join("ntp-ptp.toml")).unwrap();
    let path = config_file(&dir, "attacked", &text);
    for _ in 0..3 {
        let out = validate(&path);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(
        std::fs::read_to_string(&victim).unwrap(),
        "root's own content\n",
        "validate wrote through a planted path"
    );
    for i in first..first + count {
        let _ = std::fs::remove_dir_all(tmp.join(format!("ntpd-host-validate-{i}")));
    }
}
