//! Cases the input fuzzing (tests/fuzz_inputs.rs) found, each as it was
//! shrunk, kept here so they are checked on every run whatever the random
//! seed.

use std::path::Path;

use ntpd_host::config;

/// A key of a plugin source is as written, and a quoted TOML key may hold a
/// line break: the refusal naming it was two lines.
#[test]
fn a_source_key_with_a_line_break_is_named_on_one_line() {
    let text = "[[source]]\nmode = \"plugin\"\npath = \"/a.so\"\n\"a\\nb\" = 1\n";
    let e = config::parse(Path::new("/etc/ntpd-rs/ntp.toml"), text).unwrap_err();
    let line = e.to_string();
    assert!(!line.contains(['\n', '\r']), "{line:?}");
    assert!(
        line.starts_with("/etc/ntpd-rs/ntp.toml: [[source]] #1: a\\nb: unknown field"),
        "{line:?}"
    );
    // The same in the host's own table.
    let text = "[ntpd-host]\n\"a\\nb\" = 1\n";
    let line = config::parse(Path::new("/etc/ntpd-rs/ntp.toml"), text)
        .unwrap_err()
        .to_string();
    assert!(!line.contains(['\n', '\r']), "{line:?}");
    assert!(
        line.starts_with("/etc/ntpd-rs/ntp.toml: [ntpd-host]: a\\nb: unknown field"),
        "{line:?}"
    );
}

/// The config file's name goes into a comment of the derived config: a
/// line break in it (any byte but NUL is allowed in a path) made the
/// derived file TOML that ntpd-rs cannot parse.
#[test]
fn a_config_file_name_with_a_line_break_derives_to_valid_toml() {
    for name in ["/tmp/a\nb.toml", "/tmp/a\rb\u{1}.toml"] {
        let text = "[[source]]\nmode = \"plugin\"\npath = \"/a.so\"\n";
        let cfg = config::parse(Path::new(name), text).unwrap();
        let d = config::derive(&cfg, Path::new("/run/ntpd-host"), &[None]);
        let t: toml::Table = d.text.parse().unwrap_or_else(|e| panic!("{e}\n{}", d.text));
        assert_eq!(t["source"][0]["mode"].as_str(), Some("sock"));
    }
}

/// Whether `seconds` is within half a nanosecond of `ns`, in exact
/// arithmetic (the f64 is m * 2^-k; compared in i128).
fn exact_to_the_ns(seconds: f64, ns: i64) -> bool {
    if ns == 0 || seconds == 0.0 {
        return ns == 0 && seconds == 0.0;
    }
    if (seconds < 0.0) != (ns < 0) {
        return false;
    }
    let bits = seconds.abs().to_bits();
    let k = 1075 - i32::try_from((bits >> 52) & 0x7ff).unwrap();
    let mantissa = i128::from((bits & ((1 << 52) - 1)) | (1 << 52));
    let target = i128::from(ns.unsigned_abs()) << k;
    2 * (mantissa * 1_000_000_000 - target).abs() < 1i128 << k
}

/// `sock::offset_seconds` documented "exact to the nanosecond below 2^53
/// ns" but multiplied by 1e-9 (not exact in f64) and was more than 0.5 ns
/// off from 2^22 s (48.5 days) on; dividing by 1e9 rounds once and is
/// exact to the ns below 2^23 s (97 days), as now documented.
#[test]
fn offsets_reach_ntpd_rs_exact_to_the_ns_below_2_pow_23_seconds() {
    use ntpd_host::protocol::sock;
    for ns in [
        4_194_305_425_330_914,
        4_194_366_780_521_137,
        8_388_607_999_999_999,
        -8_388_607_999_999_999,
        1,
        -37_000_000_250,
    ] {
        let d = sock::decode(&sock::encode(&ntpd_plugin_api::Sample::new(0, ns, 1))).unwrap();
        assert!(exact_to_the_ns(d.offset, ns), "{ns} ns -> {} s", d.offset);
    }
}
