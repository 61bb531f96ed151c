//! Property tests ("fuzzing") over the PTP plugin's configuration: the
//! `[source.config]` table as the host hands it over, JSON text.
//!
//! `parse_config` (the SDK) and `Config::try_from` never panic; they accept
//! exactly what the documented rules accept (a model below restates them);
//! every refusal is one line starting with "invalid plugin config:" and,
//! when one key is at fault, naming it.
//!
//! Each property runs `PROPTEST_CASES` cases (256 when unset); the long run
//! is in docs/benchmarks.md, "Input fuzzing".

// Fixtures convert between known, small counts, ns and seconds.
#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_precision_loss,
    clippy::float_cmp
)]

use ntpd_ptp::config::{
    Config, ConfigToml, Locator, MAX_OFFSET_S, MAX_READINGS, TAI_OFFSET_RANGE, Timescale,
};
use ntpd_ptp::source::Method;
use proptest::prelude::*;
use proptest::sample::select;
use serde_json::{Map, Value};

/// The plugin's keys.
const KEYS: &[&str] = &[
    "device",
    "clock-name",
    "interface",
    "method",
    "readings",
    "timescale",
    "tai-offset",
    "offset",
];

const PREFIX: &str = "invalid plugin config: ";

const LINE_BREAKS: &[char] = &[
    '\n', '\r', '\u{0b}', '\u{0c}', '\u{85}', '\u{2028}', '\u{2029}',
];

/// The plugin's parse, as `init` does it.
fn parse(json: &str) -> Result<Config, String> {
    let raw: ConfigToml = ntpd_plugin_api::parse_config(json)?;
    Config::try_from(raw).map_err(|e| e.to_string())
}

// ---------------------------------------------------------------------------
// Strategies.
// ---------------------------------------------------------------------------

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        select(vec![
            "",
            " ",
            "/",
            ".",
            "..",
            "/dev/ptp0",
            "ptp0",
            "/dev/ptp_kvm",
            "ptp_kvm",
            "eth0",
            "enp1s0",
            "a/b",
            "a b",
            "a\nb",
            "a\rb",
            "\u{2028}",
            "\0",
            "auto",
            "precise",
            "extended",
            "standard",
            "fast",
            "utc",
            "tai",
            "gps",
            "UTC",
            "0123456789abcde",
            "0123456789abcdef",
            "37",
            "1ms",
        ])
        .prop_map(str::to_owned),
    ]
}

fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        (-3i64..40).prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        select(vec![
            0.0,
            -0.0,
            1.0,
            2.5,
            25.0,
            37.0,
            -1.5e-6,
            4e-10,
            86_400.0,
            86_400.000_000_000_01,
            -86_400.0,
            1e9,
            1e300,
            f64::MAX,
            5e-324,
        ])
        .prop_map(Value::from),
        any::<f64>()
            .prop_filter("JSON numbers are finite", |f| f.is_finite())
            .prop_map(Value::from),
        select(vec![
            u64::from(MAX_READINGS),
            u64::from(MAX_READINGS) + 1,
            u64::from(u32::MAX) + 1,
            (i64::MAX as u64) + 1,
            TAI_OFFSET_RANGE.start().unsigned_abs() - 1,
            TAI_OFFSET_RANGE.end().unsigned_abs() + 1,
        ])
        .prop_map(Value::from),
    ]
}

fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        number(),
        text().prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(text(), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A value for one of the plugin's keys: mostly of the right kind.
fn value_for(key: &str) -> BoxedStrategy<Value> {
    let right: BoxedStrategy<Value> = match key {
        "device" | "clock-name" | "interface" | "method" | "timescale" => {
            text().prop_map(Value::from).boxed()
        }
        "readings" => (0u64..30).prop_map(Value::from).boxed(),
        "tai-offset" => (0i64..110).prop_map(Value::from).boxed(),
        _ => (-100_000.0f64..100_000.0).prop_map(Value::from).boxed(),
    };
    prop_oneof![4 => right, 2 => number(), 1 => json()].boxed()
}

/// An object with the plugin's keys, sometimes others.
fn config_object() -> impl Strategy<Value = Map<String, Value>> {
    let pair = select(KEYS).prop_flat_map(|k| (Just(k.to_owned()), value_for(k)));
    let locator = prop_oneof![
        Just(("device", "/dev/ptp0")),
        Just(("clock-name", "ptp_kvm")),
        Just(("interface", "eth0")),
    ];
    (
        prop::option::weighted(0.7, locator),
        prop::collection::vec(pair, 0..5),
        prop::option::weighted(0.1, (text(), json())),
    )
        .prop_map(|(locator, pairs, unknown)| {
            let mut m = Map::new();
            if let Some((k, v)) = locator {
                m.insert(k.into(), Value::from(v));
            }
            for (k, v) in pairs.into_iter().chain(unknown) {
                m.insert(k, v);
            }
            m
        })
}

/// Text near JSON: fragments, truncations, duplicates, trailing garbage.
fn json_soup() -> impl Strategy<Value = String> {
    let fragments = select(vec![
        "{",
        "}",
        "[",
        "]",
        ",",
        ":",
        "\"",
        "\"device\"",
        "\"clock-name\"",
        "\"readings\"",
        "\"offset\"",
        "\"tai-offset\"",
        "\"timescale\"",
        "\"/dev/ptp0\"",
        "\"tai\"",
        "10",
        "-1",
        "1e400",
        "-0",
        "0.5",
        "null",
        "true",
        " ",
        "\n",
        "\\u0000",
        "\\ud800",
        "\u{feff}",
        "NaN",
        "x",
    ]);
    prop_oneof![
        any::<String>(),
        prop::collection::vec(fragments, 0..24).prop_map(|v| v.concat()),
        (config_object(), any::<prop::sample::Index>()).prop_map(|(m, cut)| {
            let t = Value::Object(m).to_string();
            let mut at = cut.index(t.len() + 1);
            while !t.is_char_boundary(at) {
                at -= 1;
            }
            t[..at].to_owned()
        }),
        (
            config_object(),
            select(vec![" x", "}", "{}", " ", "\n", ",{}"])
        )
            .prop_map(|(m, tail)| format!("{}{tail}", Value::Object(m))),
        (select(KEYS), value_for("device"), value_for("device")).prop_map(|(k, a, b)| {
            format!("{{\"{k}\": {a}, \"{k}\": {b}, \"device\": \"/dev/ptp1\"}}")
        }),
    ]
}

// ---------------------------------------------------------------------------
// The model: the documented rules, restated.
// ---------------------------------------------------------------------------

fn nonblank(v: &Value) -> Option<&str> {
    v.as_str().filter(|s| !s.trim().is_empty())
}

/// The `timescale` a value names: "utc" or "tai", or serde's other form of
/// a unit variant, `{"utc": null}` (a harmless leniency of the derive).
fn timescale(v: &Value) -> Option<&str> {
    let name = match v {
        Value::String(s) => s.as_str(),
        Value::Object(m) if m.len() == 1 && m.values().all(Value::is_null) => m.keys().next()?,
        _ => return None,
    };
    ["utc", "tai"].contains(&name).then_some(name)
}

fn key_is_valid(key: &str, v: &Value) -> bool {
    match key {
        "device" => nonblank(v).is_some_and(|s| s.starts_with('/')),
        "clock-name" => nonblank(v).is_some_and(|s| !s.contains(['\n', '/'])),
        "interface" => nonblank(v).is_some_and(|s| {
            s.len() <= 15 && !s.contains(['/', ' ', '\n']) && s != "." && s != ".."
        }),
        "method" => v
            .as_str()
            .is_some_and(|s| ["auto", "precise", "extended", "standard"].contains(&s)),
        "readings" => v
            .as_u64()
            .is_some_and(|n| (1..=u64::from(MAX_READINGS)).contains(&n)),
        "timescale" => timescale(v).is_some(),
        "tai-offset" => v.as_i64().is_some_and(|n| TAI_OFFSET_RANGE.contains(&n)),
        "offset" => v.as_f64().is_some_and(|s| s.abs() <= MAX_OFFSET_S),
        _ => false,
    }
}

/// What `parse` must give for an object: the config, or the keys one of
/// which the refusal names (empty: a refusal about several keys).
fn expect(m: &Map<String, Value>) -> Result<Config, Vec<String>> {
    // `null` is an absent key (every key is optional), but an unknown key
    // is refused whatever its value.
    let bad: Vec<String> = m
        .iter()
        .filter(|(k, v)| !KEYS.contains(&k.as_str()) || !(v.is_null() || key_is_valid(k, v)))
        .map(|(k, _)| k.clone())
        .collect();
    if !bad.is_empty() {
        return Err(bad);
    }
    let get = |k: &str| m.get(k).filter(|v| !v.is_null());
    let string = |k: &str| get(k).and_then(Value::as_str).map(str::to_owned);
    let locators: Vec<Locator> = [
        string("device").map(Locator::Device),
        string("clock-name").map(Locator::ClockName),
        string("interface").map(Locator::Interface),
    ]
    .into_iter()
    .flatten()
    .collect();
    let [locator] = <[Locator; 1]>::try_from(locators).map_err(|_| vec![])?;
    let tai_offset = get("tai-offset").and_then(Value::as_i64);
    let timescale = match (get("timescale").and_then(timescale), tai_offset) {
        (Some("tai"), offset) => Timescale::Tai(offset),
        (_, Some(_)) => return Err(vec![]),
        (_, None) => Timescale::Utc,
    };
    let method =
        string("method").and_then(|name| Method::ALL.into_iter().find(|m| m.name() == name));
    Ok(Config {
        locator,
        method,
        readings: get("readings").and_then(Value::as_u64).map(|n| n as u32),
        timescale,
        offset_ns: get("offset")
            .and_then(Value::as_f64)
            .map_or(0, |s| (s * 1e9).round() as i64),
    })
}

/// A refusal is one line, starts with the prefix, and names a key when
/// `keys` lists the ones at fault.
fn check_refusal(e: &str, keys: Option<&[String]>) -> Result<(), TestCaseError> {
    prop_assert!(!e.contains(LINE_BREAKS), "not one line: {e:?}");
    prop_assert!(e.starts_with(PREFIX), "{e:?}");
    prop_assert!(e.len() > PREFIX.len(), "{e:?}");
    if let Some(keys) = keys {
        // The key path leads (deeper for `timescale = {"utc": false}`:
        // "timescale.utc"); the SDK leaves out a path of "" or "." (the
        // whole document), and then serde's message names the key.
        let named = |k: &String| {
            let key = format!("{PREFIX}{}", k.escape_debug());
            e.starts_with(&format!("{key}: "))
                || e.starts_with(&format!("{key}."))
                || (["", "."].contains(&k.as_str())
                    && e.starts_with(&format!("{PREFIX}unknown field `{k}`")))
        };
        if keys.is_empty() {
            prop_assert!(
                !KEYS
                    .iter()
                    .any(|k| e.starts_with(&format!("{PREFIX}{k}: "))),
                "{e}"
            );
        } else {
            prop_assert!(keys.iter().any(named), "{e}: expected one of {keys:?}");
        }
    }
    Ok(())
}

proptest! {
    #[test]
    fn objects_are_decided_by_the_rules(m in config_object()) {
        let json = Value::Object(m.clone()).to_string();
        match (parse(&json), expect(&m)) {
            (Ok(got), Ok(want)) => prop_assert_eq!(got, want),
            (Err(e), Err(keys)) => check_refusal(&e, Some(&keys))?,
            (got, want) => prop_assert!(false, "{json}: parse gave {got:?}, the rules say {want:?}"),
        }
    }

    #[test]
    fn any_json_value_is_refused_or_accepted_in_one_line(v in json()) {
        let json = v.to_string();
        match (parse(&json), &v) {
            (Ok(_), Value::Object(m)) => prop_assert!(expect(m).is_ok()),
            (Ok(c), _) => prop_assert!(false, "{json} accepted as {c:?}"),
            (Err(e), Value::Object(m)) => {
                prop_assert!(expect(m).is_err(), "{json}: {e}");
                check_refusal(&e, None)?;
            }
            (Err(e), _) => check_refusal(&e, None)?,
        }
    }

    #[test]
    fn any_text_is_refused_or_accepted_in_one_line(text in json_soup()) {
        match parse(&text) {
            Ok(c) => {
                // Accepted text is one JSON object the rules accept.
                let v: Value = serde_json::from_str(if text.trim().is_empty() { "{}" } else { &text })
                    .expect("accepted text is JSON");
                let m = v.as_object().expect("an object");
                prop_assert_eq!(expect(m), Ok(c));
            }
            Err(e) => check_refusal(&e, None)?,
        }
    }
}

#[test]
fn the_model_agrees_with_the_unit_tests() {
    let m = |json: &str| -> Map<String, Value> { serde_json::from_str(json).unwrap() };
    assert_eq!(
        expect(&m(r#"{"device": "/dev/ptp0", "offset": 37.000000001}"#)),
        parse(r#"{"device": "/dev/ptp0", "offset": 37.000000001}"#).map_err(|_| vec![])
    );
    assert_eq!(
        expect(&m(r#"{"device": "/dev/ptp0", "readings": 26}"#)),
        Err(vec!["readings".to_owned()])
    );
    assert_eq!(
        expect(&m(r#"{"device": "/dev/ptp0", "tai-offset": 37}"#)),
        Err(vec![])
    );
    assert_eq!(expect(&m("{}")), Err(vec![]));
    // Found by the long run: the path names the key, and goes deeper.
    let json = r#"{"timescale": {"utc": false}}"#;
    assert_eq!(expect(&m(json)), Err(vec!["timescale".to_owned()]));
    let e = parse(json).unwrap_err();
    check_refusal(&e, Some(&["timescale".to_owned()])).unwrap();
    assert!(
        e.starts_with("invalid plugin config: timescale.utc: "),
        "{e}"
    );
}
