//! Helpers shared by the ntpd-host integration tests (and the `plugin_abi`
//! benchmark): paths of the workspace's plugin libraries and of the host
//! binary.
//!
//! `cargo test` builds only the package under test, never the workspace's
//! `cdylib`-only plugin packages, so [`plugin_path`] builds them on first use,
//! once per test process, with the same cargo, target directory and profile
//! as the running test binary. A plugin that does not build fails the tests
//! that need it.

#![allow(dead_code)]

pub mod bridge;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The workspace's plugin packages the tests load: the simulated plugin, the
/// PTP plugin and the two incompatible fixtures.
const PACKAGES: &[&str] = &[
    "ntpd-sim-plugin",
    "ptp-plugin",
    "ntpd-incompatible-plugin",
    "ntpd-future-plugin",
];

/// The fixture built with the SDK as released at 1.0.0: a workspace of its
/// own (it depends on a frozen copy of the SDK, whose package name is the
/// workspace SDK's), built with `--manifest-path`.
const OLD_SDK_MANIFEST: &str = "plugin-api/fixtures/old-sdk-plugin/Cargo.toml";

/// Where the running test (or bench) binary was built.
#[derive(Debug)]
struct BuildDirs {
    /// The cargo target directory (holds `CACHEDIR.TAG`).
    target_dir: PathBuf,
    /// The directory the libraries land in, e.g. `target/debug`.
    out_dir: PathBuf,
    /// `--profile` argument: `dev` for `debug`, else the directory name.
    profile: String,
    /// `--target` triple, when the binary was cross-built into
    /// `target/<triple>/<profile>`.
    triple: Option<String>,
}

/// Derives the target directory and profile from `current_exe()`, which is
/// `<target>/[<triple>/]<profile>/deps/<test>-<hash>`.
fn build_dirs() -> BuildDirs {
    let exe = std::env::current_exe().expect("current_exe");
    let deps = exe.parent().expect("test binary has a directory");
    let out_dir = if deps.file_name().is_some_and(|n| n == "deps") {
        deps.parent().expect("deps has a parent").to_owned()
    } else {
        deps.to_owned()
    };
    let profile_dir = out_dir
        .file_name()
        .and_then(|n| n.to_str())
        .expect("profile directory name")
        .to_owned();
    let above = out_dir.parent().expect("profile dir has a parent");
    let (target_dir, triple) = if above.join("CACHEDIR.TAG").exists() {
        (above.to_owned(), None)
    } else {
        let root = above.parent().expect("triple dir has a parent").to_owned();
        let triple = above
            .file_name()
            .and_then(|n| n.to_str())
            .map(str::to_owned);
        (root, triple)
    };
    let profile = match profile_dir.as_str() {
        "debug" => "dev".to_owned(),
        other => other.to_owned(),
    };
    BuildDirs {
        target_dir,
        out_dir,
        profile,
        triple,
    }
}

/// The workspace root (the parent of this package's directory).
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("ntpd-host sits inside the workspace")
        .to_owned()
}

/// Runs `cargo build` with `selection` (`-p PKG ...` or `--manifest-path
/// M`) into the test binary's target directory and profile.
fn cargo_build(dirs: &BuildDirs, selection: &[&str]) {
    let mut cmd = Command::new(env!("CARGO"));
    cmd.current_dir(workspace_root())
        .arg("build")
        .arg("--quiet")
        .arg("--target-dir")
        .arg(&dirs.target_dir)
        .arg("--profile")
        .arg(&dirs.profile)
        .args(selection);
    if let Some(triple) = &dirs.triple {
        cmd.arg("--target").arg(triple);
    }
    let output = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", env!("CARGO")));
    assert!(
        output.status.success(),
        "`cargo build {}` failed ({}):\n{}",
        selection.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Builds the plugin libraries once per process.
fn built() -> &'static BuildDirs {
    static BUILT: OnceLock<BuildDirs> = OnceLock::new();
    BUILT.get_or_init(|| {
        let dirs = build_dirs();
        let selection: Vec<&str> = PACKAGES.iter().flat_map(|p| ["-p", *p]).collect();
        cargo_build(&dirs, &selection);
        cargo_build(&dirs, &["--manifest-path", OLD_SDK_MANIFEST]);
        dirs
    })
}

/// The path of the plugin library `lib<lib>.so` (`"ntpd_sim"`, `"ntpd_ptp"`,
/// `"ntpd_incompatible"`, `"ntpd_future"`, `"ntpd_old_sdk"`), built for this
/// test binary's profile and with group and world write permission removed
/// (the loader refuses such files).
///
/// # Panics
///
/// When the build fails or the library does not exist after it.
pub fn plugin_path(lib: &str) -> PathBuf {
    let path = built().out_dir.join(format!("lib{lib}.so"));
    let meta = std::fs::metadata(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (after building the plugins)", path.display()));
    let mode = meta.permissions().mode();
    if mode & 0o022 != 0 {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode & !0o022))
            .unwrap_or_else(|e| panic!("chmod go-w {}: {e}", path.display()));
    }
    path
}

/// A fresh private directory for one test on the target directory's file
/// system (so libraries copied there can be mapped executable; /tmp may be
/// `noexec`), removed when dropped.
pub fn scratch() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("test-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .expect("create a scratch directory")
}

/// The `ntpd-host` binary cargo built for this test.
pub fn host_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_ntpd-host"))
}

/// Processes whose parent is `pid` (from `/proc/*/stat`).
pub fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(p) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) {
            // After the parenthesised command: state, then the parent pid.
            let after = &stat[stat.rfind(')').unwrap() + 2..];
            if after.split(' ').nth(1).and_then(|v| v.parse::<u32>().ok()) == Some(pid) {
                out.push(p);
            }
        }
    }
    out
}

/// Copies the simulated plugin to `dir/name` (a new file, so the dynamic
/// loader sees a different library) with mode 0755.
pub fn sim_copy(dir: &Path, name: &str) -> PathBuf {
    let to = dir.join(name);
    std::fs::copy(plugin_path("ntpd_sim"), &to).expect("copy sim plugin");
    std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    to
}

/// The C library this test process runs with: from /proc/self/maps, else
/// from a list of the usual places.
pub fn find_libc() -> PathBuf {
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
