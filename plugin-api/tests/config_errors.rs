//! `parse_config` refusals stay one line whatever the keys hold (found by
//! the PTP plugin's config fuzzing, ptp-plugin/tests/fuzz_config.rs).

use ntpd_plugin_api::parse_config;

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // only the refusals matter here
struct Config {
    device: Option<String>,
}

/// An unknown key is named as written, and a JSON key may hold a line
/// break: the refusal was two lines.
#[test]
fn a_key_with_a_line_break_is_named_on_one_line() {
    let e = parse_config::<Config>(r#"{"a\nb": null}"#).unwrap_err();
    assert!(!e.contains(['\n', '\r']), "{e:?}");
    assert!(
        e.starts_with(r"invalid plugin config: a\nb: unknown field `a b`"),
        "{e:?}"
    );
    let e = parse_config::<Config>(r#"{"device": 1}"#).unwrap_err();
    assert!(
        e.starts_with("invalid plugin config: device: invalid type"),
        "{e}"
    );
}
