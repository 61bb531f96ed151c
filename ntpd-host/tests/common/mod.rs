//! Helpers shared by the ntpd-host integration tests (and the `plugin_abi`
//! benchmark): paths of the workspace's plugin libraries and of the host
//! binary.
//!
//! `cargo test` builds only the package under test, never the workspace's
//! `cdylib`-only plugin packages, so [`plugin_path`] builds them on first use,
//! once per test process, with the same cargo, target directory and profile
//! as the running test binary.

#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The packages every test run needs: the simulated plugin and the two
/// incompatible fixtures.
const REQUIRED: &[&str] = &[
    "ntpd-sim-plugin",
    "ntpd-incompatible-plugin",
    "ntpd-future-plugin",
];

/// The PTP plugin package, built as well when the workspace has it.
const PTP_PACKAGE: &str = "ptp-plugin";

/// The library name (`lib<name>.so`) of the PTP plugin.
const PTP_LIB: &str = "ntpd_ptp";

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

/// Whether the workspace has the PTP plugin package (it is written in
/// parallel with these tests).
fn workspace_has_ptp() -> bool {
    let root = workspace_root();
    let members = std::fs::read_to_string(root.join("Cargo.toml")).unwrap_or_default();
    let manifest = std::fs::read_to_string(root.join("ptp-plugin/Cargo.toml")).unwrap_or_default();
    members.contains("\"ptp-plugin\"") && manifest.contains(&format!("name = \"{PTP_PACKAGE}\""))
}

/// Runs `cargo build -p <packages>` into the test binary's target directory
/// and profile. Returns cargo's stderr as the error.
fn cargo_build(dirs: &BuildDirs, packages: &[&str]) -> Result<(), String> {
    let mut cmd = Command::new(env!("CARGO"));
    cmd.current_dir(workspace_root())
        .arg("build")
        .arg("--quiet")
        .arg("--target-dir")
        .arg(&dirs.target_dir)
        .arg("--profile")
        .arg(&dirs.profile);
    if let Some(triple) = &dirs.triple {
        cmd.arg("--target").arg(triple);
    }
    for package in packages {
        cmd.arg("-p").arg(package);
    }
    let output = cmd
        .output()
        .map_err(|e| format!("cannot run {}: {e}", env!("CARGO")))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`cargo build -p {}` failed ({}):\n{}",
            packages.join(" -p "),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

/// The outcome of the one build per process: `Err` for the PTP plugin when
/// only it failed to build (the required plugins still built).
struct Built {
    dirs: BuildDirs,
    ptp: Result<(), String>,
}

/// Builds the plugin libraries once per process.
fn built() -> &'static Built {
    static BUILT: OnceLock<Built> = OnceLock::new();
    BUILT.get_or_init(|| {
        let dirs = build_dirs();
        let ptp = if workspace_has_ptp() {
            let mut all = REQUIRED.to_vec();
            all.push(PTP_PACKAGE);
            match cargo_build(&dirs, &all) {
                Ok(()) => Ok(()),
                // The PTP plugin may be mid-edit: do not let it fail the
                // tests that need only the required plugins.
                Err(all_failed) => {
                    if let Err(e) = cargo_build(&dirs, REQUIRED) {
                        panic!("{e}");
                    }
                    Err(all_failed)
                }
            }
        } else {
            if let Err(e) = cargo_build(&dirs, REQUIRED) {
                panic!("{e}");
            }
            Err(format!("the workspace has no {PTP_PACKAGE} package"))
        };
        Built { dirs, ptp }
    })
}

/// The path of the workspace plugin library `lib<lib>.so` (e.g. `"ntpd_sim"`,
/// `"ntpd_incompatible"`, `"ntpd_future"`, `"ntpd_ptp"`), built for this test
/// binary's profile and with group and world write permission removed (the
/// loader refuses such files).
///
/// # Panics
///
/// When the build fails or the library does not exist after it.
pub fn plugin_path(lib: &str) -> PathBuf {
    let built = built();
    if lib == PTP_LIB
        && let Err(e) = &built.ptp
    {
        panic!("{e}");
    }
    let path = built.dirs.out_dir.join(format!("lib{lib}.so"));
    let meta = std::fs::metadata(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (after building the plugins)", path.display()));
    let mode = meta.permissions().mode();
    if mode & 0o022 != 0 {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode & !0o022))
            .unwrap_or_else(|e| panic!("chmod go-w {}: {e}", path.display()));
    }
    path
}

/// Whether the PTP plugin library could be built in this workspace (see
/// [`plugin_path`]).
pub fn has_ptp_plugin() -> bool {
    built().ptp.is_ok()
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
