//! Loading plugin libraries for real: the simulated plugin, a plugin built
//! with an older SDK release, the incompatible fixtures, libraries that are
//! not plugins, and unsafe files. No root needed.

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

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use ntpd_host::loader::{self, LoadError, LoadOptions, PluginLibrary};
use ntpd_plugin_api::{ABI_VERSION, ErrorKind, Leap, ReadMethod, SDK_VERSION, TimeScale};

use common::{find_libc, plugin_path, scratch, sim_copy};

fn load(path: &Path) -> Result<PluginLibrary, LoadError> {
    loader::load(path, LoadOptions::default())
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

// ---------------------------------------------------------------- loading

#[test]
fn sim_plugin_loads_and_samples_carry_the_configured_offset_and_noise() {
    let path = plugin_path("ntpd_sim");
    let plugin = load(&path).expect("sim plugin loads");
    assert_eq!(plugin.path(), path);
    let info = plugin.info();
    assert_eq!(info.name.as_str(), "sim");
    assert_eq!(info.sdk_version.as_str(), SDK_VERSION);

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
    let dir = scratch();
    let a_path = sim_copy(dir.path(), "a.so");
    let b_path = sim_copy(dir.path(), "b.so");
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

#[test]
fn a_plugin_built_with_an_older_sdk_release_loads_and_samples() {
    let path = plugin_path("ntpd_old_sdk");
    let plugin = load(&path).expect("an older SDK release of the same ABI loads");
    let info = plugin.info();
    assert_eq!(info.name.as_str(), "old-sdk");
    assert_eq!(info.sdk_version.as_str(), "1.0.0");
    assert_ne!(SDK_VERSION, "1.0.0", "the host's SDK is a newer release");
    let mut source = plugin.init("{}").expect("init");
    assert_eq!(
        source.capabilities().expect("capabilities").method,
        ReadMethod::OTHER
    );
    let sample = source.sample().expect("sample");
    assert_eq!((sample.offset_ns, sample.error_ns), (4242, 1));
}

// ------------------------------------------------------- refused libraries

#[test]
fn incompatible_layout_is_refused_in_one_line_naming_both_versions() {
    let path = plugin_path("ntpd_incompatible");
    let error = load(&path).expect_err("a different layout must be refused");
    assert!(matches!(error, LoadError::Layout { .. }), "{error:?}");
    let line = one_line_naming(&error, &path);
    assert!(line.contains("layout"), "{line}");
    // Same ABI version on both sides: the plugin's and the host's are named.
    assert_eq!(line.matches(ABI_VERSION).count(), 2, "{line}");
    assert!(
        !line.contains("Error:"),
        "raw abi_stable report leaked: {line}"
    );
}

#[test]
fn future_major_version_is_refused_naming_both_versions() {
    let path = plugin_path("ntpd_future");
    let error = load(&path).expect_err("an ABI 2.0.0 plugin must be refused");
    assert!(matches!(error, LoadError::Version { .. }), "{error:?}");
    let line = one_line_naming(&error, &path);
    assert!(line.contains("ABI 2.0.0"), "{line}");
    assert!(line.contains(&format!("ABI {ABI_VERSION}")), "{line}");
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
    let dir = scratch();
    let dir = dir.path();
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

    let error = load(dir).expect_err("a directory");
    assert!(matches!(error, LoadError::NotRegular { .. }), "{error:?}");
    one_line_naming(&error, dir);
}

// ------------------------------------------------------ faults at runtime

#[test]
fn panics_and_unknown_error_kinds_cross_the_boundary_as_errors() {
    let plugin = load(&plugin_path("ntpd_sim")).unwrap();
    let mut source = plugin
        .init(r#"{"panic-at": 2, "error-every": 3, "error-kind": 42, "offset": 0.001}"#)
        .unwrap();
    let mut got = Vec::new();
    for _ in 0..6 {
        got.push(match source.sample() {
            Ok(s) => {
                assert_eq!(s.offset_ns, 1_000_000);
                "ok".to_owned()
            }
            Err(e) => {
                if e.kind == ErrorKind::PANICKED {
                    assert!(e.message.contains("sample()"), "{e}");
                    assert!(e.message.contains("panic-at"), "{e}");
                }
                e.kind.to_string()
            }
        });
    }
    assert_eq!(
        got,
        ["ok", "panicked", "unknown(42)", "ok", "ok", "unknown(42)"]
    );
    assert_eq!(ErrorKind(42).known_name(), None);
    // The library still works for new sources.
    let mut fresh = plugin.init("{}").unwrap();
    assert_eq!(fresh.sample().unwrap().offset_ns, 0);
}

// ----------------------------------------------------------- file safety

#[test]
fn group_or_world_writable_plugin_is_refused_unless_allowed() {
    let dir = scratch();
    let path = sim_copy(dir.path(), "writable.so");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
    let error = load(&path).expect_err("mode 0666 must be refused");
    assert!(matches!(error, LoadError::Insecure { .. }), "{error:?}");
    let line = one_line_naming(&error, &path);
    assert!(line.contains("0666"), "{line}");
    assert!(line.contains("chmod go-w"), "{line}");
    assert!(line.contains("--allow-insecure-plugin"), "{line}");

    let plugin = loader::load(
        &path,
        LoadOptions {
            allow_insecure: true,
        },
    )
    .expect("allow_insecure overrides the check");
    assert!(plugin.init("{}").unwrap().sample().is_ok());

    // Group-writable only, on a second copy.
    let group = sim_copy(dir.path(), "group.so");
    std::fs::set_permissions(&group, std::fs::Permissions::from_mode(0o775)).unwrap();
    let line = load(&group).expect_err("mode 0775").to_string();
    assert!(line.contains("its group"), "{line}");
}

#[test]
fn a_library_owned_by_another_user_is_refused() {
    // The rules themselves are unit-tested (loader::insecure_reason); here
    // the real loader meets a real file, when we may chown (as root).
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: needs root to chown");
        return;
    }
    let dir = scratch();
    let path = sim_copy(dir.path(), "foreign.so");
    std::os::unix::fs::chown(&path, Some(54321), None).expect("chown");
    let error = load(&path).expect_err("a file owned by uid 54321");
    assert!(matches!(error, LoadError::Insecure { .. }), "{error:?}");
    let line = one_line_naming(&error, &path);
    assert!(
        line.contains("uid 54321") && line.contains("chown it to root"),
        "{line}"
    );
}
