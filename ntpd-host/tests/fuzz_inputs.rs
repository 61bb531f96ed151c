//! Property tests ("fuzzing") over every input the host parses: the config
//! file (arbitrary text, documents built from a TOML strategy, mutations of
//! the shipped examples), the SOCK datagram and the worker event lines.
//!
//! Each property runs `PROPTEST_CASES` cases (proptest's default, 256, when
//! the variable is unset), so `cargo test` stays quick; a long run sets it
//! higher (docs/benchmarks.md, "Input fuzzing", has the command and counts).
//! `PROPTEST_RNG_SEED` replays a run; a failing case is shrunk and printed.
//!
//! What must hold everywhere: no panic; a rejected config is one line that
//! starts with the file name and, for a `[[source]]` key, names the entry
//! and the key; an accepted config derives to TOML that parses again with
//! every ntpd-rs source unchanged; a datagram or event survives its own
//! round trip and garbage is refused.

// Statistics and fixtures convert between counts, ns and seconds of known
// size, and compare floats built from exact values.
#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss,
    clippy::cast_precision_loss,
    clippy::float_cmp
)]

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use ntpd_host::config::{self, ConfigError, HostConfig, HostSettings, MAX_SOCKET_PATH, Section};
use ntpd_plugin_api::Sample;
use proptest::prelude::*;
use proptest::sample::select;
use toml::value::Datetime;
use toml::{Table, Value};

/// The config file every message must start with.
const FILE: &str = "/etc/ntpd-rs/ntp.toml";

/// The runtime directory handed to `derive`.
const RUNTIME: &str = "/run/ntpd-host";

/// The shipped example configs, the seeds of the mutation property.
const EXAMPLES: &[&str] = &[
    include_str!("../../examples/ntp-sim.toml"),
    include_str!("../../examples/ntp-ptp.toml"),
    include_str!("../../examples/ntp-ptp-and-ntp.toml"),
    include_str!("../../examples/bridge.toml"),
];

/// The host's own table.
const HOST_TABLE: &str = "ntpd-host";

/// The keys of the host's own table, in declaration order (see `expect`).
const HOST_KEYS: &[&str] = &[
    "worker-user",
    "worker-groups",
    "worker-memory-limit",
    "clockbound",
    "clockbound-max-drift",
    "clockbound-source",
];

/// The keys of a plugin source.
const PLUGIN_KEYS: &[&str] = &[
    "mode",
    "path",
    "name",
    "poll-interval",
    "precision",
    "accuracy",
    "socket",
    "sample-timeout",
    "allow-insecure-plugin",
    "config",
];

/// Characters that end a line somewhere: in a terminal, a log viewer, a
/// journal or a JSON-lines reader.
const LINE_BREAKS: &[char] = &[
    '\n', '\r', '\u{0b}', '\u{0c}', '\u{85}', '\u{2028}', '\u{2029}',
];

fn is_one_line(text: &str) -> bool {
    !text.contains(LINE_BREAKS)
}

// ---------------------------------------------------------------------------
// Strategies: TOML values, keys and documents.
// ---------------------------------------------------------------------------

/// Strings that sit on a rule's edge: relative and absolute paths, the
/// longest socket path and one byte more, blank names, line breaks, NUL.
fn interesting_string() -> impl Strategy<Value = String> {
    let long_ok = format!("/{}", "s".repeat(MAX_SOCKET_PATH - 1));
    let too_long = format!("/{}", "s".repeat(MAX_SOCKET_PATH));
    prop_oneof![
        select(vec![
            "/usr/lib/ntpd-rs/libntpd_sim.so",
            "/dev/ptp0",
            "lib.so",
            "./lib.so",
            "",
            " ",
            "\t",
            "a\nb",
            "a\rb",
            "\r\n",
            "\u{2028}",
            "\0",
            "/",
            "//",
            "plugin",
            "server",
            "sock",
            "root",
            "nobody",
            "ntpd-host",
            "-x",
            "a b",
            "0123456789012345678901234567890123",
            "é",
            "\u{feff}",
            "\"",
            "'''",
        ])
        .prop_map(str::to_owned),
        select(vec![long_ok, too_long]),
    ]
}

/// Floats on the edges of the host's ranges, and the non-finite ones.
fn interesting_float() -> impl Strategy<Value = f64> {
    select(vec![
        0.0,
        -0.0,
        1e-9,
        1e-12,
        0.1,
        0.099_999_999_999_999_99,
        0.5,
        1.0,
        1.000_000_000_000_000_2,
        3600.0,
        3_600.000_000_000_000_5,
        -1.0,
        1e300,
        f64::MIN_POSITIVE,
        5e-324,
        f64::NAN,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::MAX,
    ])
}

fn interesting_integer() -> impl Strategy<Value = i64> {
    prop_oneof![
        -10i64..=10,
        select(vec![i64::MIN, i64::MAX, 127, 128, -128, -129, 3600, 3601]),
    ]
}

fn datetime() -> impl Strategy<Value = Datetime> {
    select(vec![
        "1979-05-27T07:32:00Z",
        "1979-05-27T00:32:00.999999-07:00",
        "1979-05-27T07:32:00",
        "1979-05-27",
        "07:32:00",
        "00:00:00.5",
        "1970-01-01T00:00:00Z",
        "9999-12-31T23:59:59Z",
    ])
    .prop_map(|s| s.parse().expect("a valid TOML datetime"))
}

/// Keys: mostly plausible, sometimes anything at all.
fn toml_key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => select(PLUGIN_KEYS).prop_map(str::to_owned),
        1 => select(HOST_KEYS).prop_map(str::to_owned),
        3 => "[a-z][a-z0-9_-]{0,12}",
        1 => any::<String>(),
        1 => select(vec![
            "", " ", ".", "a.b", "\"", "a\nb", "a\rb", "\u{2028}", "\0", "source",
            "observability", "[x]", "#", "device", "observation-path", HOST_TABLE,
        ])
        .prop_map(str::to_owned),
    ]
}

fn toml_scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<String>().prop_map(Value::String),
        interesting_string().prop_map(Value::String),
        any::<i64>().prop_map(Value::Integer),
        interesting_integer().prop_map(Value::Integer),
        any::<f64>().prop_map(Value::Float),
        interesting_float().prop_map(Value::Float),
        any::<bool>().prop_map(Value::Boolean),
        datetime().prop_map(Value::Datetime),
    ]
}

/// Any TOML value: scalars, arrays (mixed or not) and tables, nested.
fn toml_value() -> impl Strategy<Value = Value> {
    toml_scalar().prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(toml_key(), inner, 0..4)
                .prop_map(|m| Value::Table(m.into_iter().collect())),
        ]
    })
}

fn toml_table() -> impl Strategy<Value = Table> {
    prop::collection::btree_map(toml_key(), toml_value(), 0..5)
        .prop_map(|m| m.into_iter().collect())
}

/// A value the host accepts for a plugin key.
fn valid_value(key: &str) -> BoxedStrategy<Value> {
    match key {
        "mode" => Just(Value::String("plugin".into())).boxed(),
        "path" => "/[a-z0-9_./-]{0,40}".prop_map(Value::String).boxed(),
        "name" => prop_oneof![
            "[a-zA-Z0-9 _#.-]{0,10}[a-z]",
            select(vec!["phc", "a"]).prop_map(str::to_owned),
        ]
        .prop_map(Value::String)
        .boxed(),
        "poll-interval" => (-1i64..=6).prop_map(Value::Integer).boxed(),
        "precision" => prop_oneof![
            (1e-12f64..=1.0).prop_map(Value::Float),
            Just(Value::Integer(1)),
            Just(Value::Float(1e-9)),
        ]
        .boxed(),
        "accuracy" => prop_oneof![
            (0f64..=1.0).prop_map(Value::Float),
            (0i64..=1).prop_map(Value::Integer),
        ]
        .boxed(),
        "socket" => "/[a-z0-9_./-]{0,100}".prop_map(Value::String).boxed(),
        "sample-timeout" => prop_oneof![
            (0.1f64..=3600.0).prop_map(Value::Float),
            (1i64..=3600).prop_map(Value::Integer),
        ]
        .boxed(),
        "allow-insecure-plugin" => any::<bool>().prop_map(Value::Boolean).boxed(),
        "config" => toml_table().prop_map(Value::Table).boxed(),
        other => unreachable!("not a plugin key: {other}"),
    }
}

/// A value for a plugin key: valid, on an edge, of the wrong type, or
/// anything.
fn fuzzy_value(key: &str) -> BoxedStrategy<Value> {
    prop_oneof![
        3 => valid_value(key),
        2 => toml_scalar(),
        1 => toml_value(),
    ]
    .boxed()
}

/// A `[[source]] mode = "plugin"` entry; `clean` ones use valid values only
/// (so that whole documents are often accepted).
fn plugin_entry(clean: bool) -> BoxedStrategy<Table> {
    let key_value = select(&PLUGIN_KEYS[1..]).prop_flat_map(move |k| {
        let value = if clean {
            valid_value(k)
        } else {
            fuzzy_value(k)
        };
        (Just(k.to_owned()), value)
    });
    let unknown = if clean {
        Just(None).boxed()
    } else {
        prop::option::weighted(0.15, (toml_key(), toml_value())).boxed()
    };
    (
        prop::option::weighted(if clean { 0.97 } else { 0.85 }, valid_value("path")),
        prop::collection::vec(key_value, 0..6),
        unknown,
    )
        .prop_map(|(path, pairs, unknown)| {
            let mut t = Table::new();
            t.insert("mode".into(), Value::String("plugin".into()));
            if let Some(p) = path {
                t.insert("path".into(), p);
            }
            for (k, v) in pairs.into_iter().chain(unknown) {
                t.insert(k, v);
            }
            t
        })
        .boxed()
}

/// An ntpd-rs source (or something that is not one, which is ntpd-rs's
/// business): any mode but "plugin", any keys.
fn other_entry() -> impl Strategy<Value = Table> {
    let mode = prop_oneof![
        select(vec![
            "server", "pool", "nts", "sock", "pps", "Plugin", "plugin "
        ])
        .prop_map(|m| Some(Value::String(m.into()))),
        toml_scalar().prop_map(Some),
        Just(None),
    ];
    (mode, toml_table()).prop_map(|(mode, mut t)| {
        if let Some(m) = mode {
            t.insert("mode".into(), m);
        }
        t
    })
}

/// A value the host accepts for a key of `[ntpd-host]`.
fn valid_host_value(key: &str) -> BoxedStrategy<Value> {
    let name = "[a-z_][a-z0-9_.-]{0,31}".prop_filter("not root", |n| n != "root");
    match key {
        "worker-user" => name.prop_map(Value::String).boxed(),
        "worker-groups" => prop::collection::vec(name.prop_map(Value::String), 0..4)
            .prop_map(Value::Array)
            .boxed(),
        "worker-memory-limit" => (16i64..=65_536).prop_map(Value::Integer).boxed(),
        "clockbound" => prop_oneof![
            any::<bool>().prop_map(Value::Boolean),
            "/[a-z/]{0,20}[a-z]".prop_map(Value::String),
        ]
        .boxed(),
        "clockbound-max-drift" => prop_oneof![
            (1e-12f64..=500e-6).prop_map(Value::Float),
            Just(Value::Float(500e-6)),
        ]
        .boxed(),
        "clockbound-source" => select(vec!["phc", "a", "ntpd_sim#1", "x"])
            .prop_map(|n| Value::String(n.into()))
            .boxed(),
        other => unreachable!("not a host key: {other}"),
    }
}

/// The `[ntpd-host]` table; `clean` ones have valid values only.
fn host_table(clean: bool) -> impl Strategy<Value = Table> {
    let pair = select(HOST_KEYS).prop_flat_map(move |k| {
        let value = if clean {
            valid_host_value(k)
        } else {
            prop_oneof![
                3 => valid_host_value(k),
                1 => prop::collection::vec(toml_scalar(), 0..3).prop_map(Value::Array),
                2 => toml_scalar(),
            ]
            .boxed()
        };
        (Just(k.to_owned()), value)
    });
    let unknown = if clean {
        Just(None).boxed()
    } else {
        prop::option::weighted(0.15, (toml_key(), toml_value())).boxed()
    };
    (prop::collection::vec(pair, 0..4), unknown)
        .prop_map(|(pairs, unknown)| pairs.into_iter().chain(unknown).collect())
}

/// A `[[source]]` item: mostly entries, rarely something that is no table.
fn source_item(clean: bool) -> impl Strategy<Value = Value> {
    let odd = if clean { 0 } else { 1 };
    prop_oneof![
        6 => plugin_entry(clean).prop_map(Value::Table),
        4 => other_entry().prop_map(Value::Table),
        odd => toml_scalar(),
    ]
}

/// A whole config document.
fn document(clean: bool) -> impl Strategy<Value = Table> {
    let sources = prop_oneof![
        10 => prop::collection::vec(source_item(clean), 0..5).prop_map(|v| Some(Value::Array(v))),
        1 => Just(None),
        if clean { 0 } else { 1 } => toml_value().prop_map(Some),
    ];
    let observability = prop_oneof![
        Just(None),
        "/[a-z/]{1,20}".prop_map(|p| {
            let mut t = Table::new();
            t.insert("observation-path".into(), Value::String(p));
            Some(Value::Table(t))
        }),
        toml_value().prop_map(Some),
    ];
    let host = prop_oneof![
        2 => Just(None),
        2 => host_table(clean).prop_map(|t| Some(Value::Table(t))),
        if clean { 0 } else { 1 } => toml_value().prop_map(Some),
    ];
    (sources, observability, host, toml_table()).prop_map(
        |(sources, observability, host, mut doc)| {
            for (key, value) in [
                ("source", sources),
                ("observability", observability),
                (HOST_TABLE, host),
            ] {
                if let Some(v) = value {
                    doc.insert(key.into(), v);
                }
            }
            doc
        },
    )
}

/// Text that looks like a config often enough to reach deep into the TOML
/// parser and the host's checks.
fn toml_soup() -> impl Strategy<Value = String> {
    let fragments = select(vec![
        "[[source]]\n",
        "[source.config]\n",
        "[source]\n",
        "[observability]\n",
        "mode = \"plugin\"\n",
        "mode = \"server\"\n",
        "path = \"/a.so\"\n",
        "path = ",
        "name = ",
        "poll-interval = ",
        "precision = ",
        "accuracy = ",
        "socket = ",
        "sample-timeout = ",
        "allow-insecure-plugin = ",
        "config = ",
        "source = ",
        "observation-path = ",
        "a.b.c = 1\n",
        "\"",
        "'",
        "'''",
        "\"\"\"",
        "=",
        "\n",
        "\r\n",
        "\r",
        " ",
        "\t",
        "#",
        "[",
        "]",
        "[[",
        "]]",
        "{",
        "}",
        ",",
        ".",
        "-1",
        "7",
        "0.5",
        "1e400",
        "nan",
        "-inf",
        "0x7f",
        "1_000",
        "true",
        "1979-05-27T07:32:00Z",
        "\\",
        "\\u0000",
        "\\n",
        "\u{feff}",
        "\0",
        "é",
        "\u{2028}",
    ]);
    prop::collection::vec(fragments, 0..48).prop_map(|v| v.concat())
}

/// One edit of a config file's bytes.
#[derive(Clone, Debug)]
enum Mutation {
    FlipBit(usize, u8),
    SetByte(usize, u8),
    Truncate(usize),
    DuplicateLine(usize),
    DeleteLine(usize),
    SwapLines(usize, usize),
    Insert(usize, &'static str),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let at = any::<usize>();
    prop_oneof![
        (at, 0u8..8).prop_map(|(i, b)| Mutation::FlipBit(i, b)),
        (at, any::<u8>()).prop_map(|(i, b)| Mutation::SetByte(i, b)),
        at.prop_map(Mutation::Truncate),
        at.prop_map(Mutation::DuplicateLine),
        at.prop_map(Mutation::DeleteLine),
        (at, at).prop_map(|(i, j)| Mutation::SwapLines(i, j)),
        (
            at,
            select(vec![
                "\n",
                "[[source]]\n",
                "[source.config]\n",
                "mode = \"plugin\"\n",
                "poll-interval = 7\n",
                "precision = 0\n",
                "\"",
                "=",
                "#",
                "\0",
            ])
        )
            .prop_map(|(i, s)| Mutation::Insert(i, s)),
    ]
}

fn apply(mut bytes: Vec<u8>, m: &Mutation) -> Vec<u8> {
    let lines = |b: &[u8]| -> Vec<Vec<u8>> {
        b.split_inclusive(|&c| c == b'\n')
            .map(<[u8]>::to_vec)
            .collect()
    };
    match *m {
        Mutation::FlipBit(i, bit) if !bytes.is_empty() => {
            let i = i % bytes.len();
            bytes[i] ^= 1 << bit;
        }
        Mutation::SetByte(i, b) if !bytes.is_empty() => {
            let i = i % bytes.len();
            bytes[i] = b;
        }
        Mutation::Truncate(i) => bytes.truncate(i % (bytes.len() + 1)),
        Mutation::DuplicateLine(i) | Mutation::DeleteLine(i) => {
            let mut ls = lines(&bytes);
            if !ls.is_empty() {
                let i = i % ls.len();
                if matches!(m, Mutation::DuplicateLine(_)) {
                    ls.insert(i, ls[i].clone());
                } else {
                    ls.remove(i);
                }
            }
            bytes = ls.concat();
        }
        Mutation::SwapLines(i, j) => {
            let mut ls = lines(&bytes);
            if !ls.is_empty() {
                let n = ls.len();
                ls.swap(i % n, j % n);
            }
            bytes = ls.concat();
        }
        Mutation::Insert(i, s) => {
            let i = i % (bytes.len() + 1);
            bytes.splice(i..i, s.bytes());
        }
        Mutation::FlipBit(..) | Mutation::SetByte(..) => {}
    }
    bytes
}

// ---------------------------------------------------------------------------
// The model: what `config::parse` must decide for a TOML document.
// ---------------------------------------------------------------------------

/// What `parse` must do with a document that is valid TOML.
#[derive(Debug, PartialEq)]
enum Expect {
    /// Accept it, with this many plugin and other `[[source]]` entries.
    Ok { plugins: usize, others: usize },
    /// Refuse it, about this section and one of these keys (none if
    /// empty).
    Err {
        section: Option<Section>,
        keys: Vec<String>,
    },
}

fn seconds(v: &Value) -> Option<f64> {
    match v {
        Value::Float(f) => Some(*f),
        Value::Integer(i) => Some(*i as f64),
        _ => None,
    }
}

fn absolute(v: &Value) -> Option<&str> {
    v.as_str().filter(|s| s.starts_with('/'))
}

/// A value as the host's key types see it: read through the toml crate's
/// deserializer, a datetime arrives as its text (so `name = 1979-05-27` is
/// the name "1979-05-27", and a datetime where a number belongs is refused
/// as "a string").
fn as_seen(value: &Value) -> Value {
    match value {
        Value::Datetime(d) => Value::String(d.to_string()),
        other => other.clone(),
    }
}

/// Whether the host accepts `value` for the plugin key `key`: the rules of
/// docs/configuration.md, restated.
fn key_is_valid(key: &str, value: &Value) -> bool {
    let value = &as_seen(value);
    match key {
        "mode" => value.as_str() == Some("plugin"),
        "path" => absolute(value).is_some(),
        "name" => value.as_str().is_some_and(|s| {
            !s.trim().is_empty()
                && s.chars().count() <= 64
                && !s
                    .chars()
                    .any(|c| c.is_control() || matches!(c, '\u{2028}' | '\u{2029}'))
        }),
        "poll-interval" => value.as_integer().is_some_and(|i| (-1..=6).contains(&i)),
        "precision" => seconds(value).is_some_and(|p| p.is_finite() && p > 0.0 && p <= 1.0),
        "accuracy" => seconds(value).is_some_and(|a| a.is_finite() && (0.0..=1.0).contains(&a)),
        "socket" => absolute(value).is_some_and(|s| s.len() <= MAX_SOCKET_PATH),
        "sample-timeout" => {
            seconds(value).is_some_and(|s| s.is_finite() && (0.1..=3600.0).contains(&s))
        }
        "allow-insecure-plugin" => value.is_bool(),
        "config" => value.is_table(),
        _ => false,
    }
}

fn is_plugin(item: &Value) -> bool {
    item.get("mode").and_then(Value::as_str) == Some("plugin")
}

fn expect(doc: &Table) -> Expect {
    let no_sources = Vec::new();
    let items = match doc.get("source") {
        None => &no_sources,
        Some(Value::Array(items)) => items,
        Some(_) => {
            return Expect::Err {
                section: None,
                keys: vec!["source".into()],
            };
        }
    };
    let (mut plugins, mut others) = (0, 0);
    let mut names = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let section = Some(Section::Source(i + 1));
        let Value::Table(t) = item else {
            return Expect::Err {
                section,
                keys: vec![],
            };
        };
        if !is_plugin(item) {
            others += 1;
            continue;
        }
        let bad: Vec<String> = t
            .iter()
            .filter(|(k, v)| !key_is_valid(k, v))
            .map(|(k, _)| k.clone())
            .collect();
        if !bad.is_empty() {
            return Expect::Err { section, keys: bad };
        }
        if !t.contains_key("path") {
            return Expect::Err {
                section,
                keys: vec!["path".into()],
            };
        }
        plugins += 1;
        names.push(plugin_name(t, i + 1));
    }
    match doc.get(HOST_TABLE) {
        None => {}
        Some(Value::Table(t)) => {
            let bad: Vec<String> = t
                .iter()
                .filter(|(k, v)| !host_key_is_valid(k, v))
                .map(|(k, _)| k.clone())
                .collect();
            if !bad.is_empty() {
                return Expect::Err {
                    section: Some(Section::Host),
                    keys: bad,
                };
            }
        }
        Some(_) => {
            return Expect::Err {
                section: Some(Section::Host),
                keys: vec![],
            };
        }
    }
    if let Some(key) = clockbound_refusal(doc.get(HOST_TABLE), &names) {
        return Expect::Err {
            section: Some(Section::Host),
            keys: vec![key.into()],
        };
    }
    Expect::Ok { plugins, others }
}

/// In [`Expect::Err`]: the refusal may name any key, or none.
const ANY_KEY: &str = "(any)";

/// The name of a plugin entry (valid), as the host gives it.
fn plugin_name(t: &Table, position: usize) -> String {
    t.get("name").map_or_else(
        || {
            let path = as_seen(&t["path"]);
            let stem = Path::new(path.as_str().unwrap())
                .file_stem()
                .map_or_else(|| "plugin".into(), |s| s.to_string_lossy().into_owned());
            format!("{}#{position}", stem.trim_start_matches("lib"))
        },
        |n| as_seen(n).as_str().unwrap().to_owned(),
    )
}

/// The ClockBound settings name a plugin source that exists: the key of
/// the refusal `check_clockbound` must give, if any.
fn clockbound_refusal(host: Option<&Value>, names: &[String]) -> Option<&'static str> {
    let get = |k: &str| match host? {
        Value::Array(fields) => HOST_KEYS
            .iter()
            .position(|h| *h == k)
            .and_then(|i| fields.get(i)),
        table => table.get(k),
    };
    let enabled = get("clockbound").is_some_and(|v| as_seen(v) != Value::Boolean(false));
    match get("clockbound-source").map(as_seen) {
        Some(Value::String(name)) if !names.contains(&name) => Some("clockbound-source"),
        _ if enabled && names.is_empty() => Some("clockbound"),
        _ => None,
    }
}

/// A user or group name as the host accepts it (as the system tools do).
fn is_name(v: &Value) -> bool {
    as_seen(v).as_str().is_some_and(|s| {
        !s.is_empty()
            && s.len() <= 32
            && !s.starts_with('-')
            && s != "root"
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
    })
}

/// Whether the host accepts `value` for the `[ntpd-host]` key `key`.
fn host_key_is_valid(key: &str, value: &Value) -> bool {
    match key {
        "worker-user" => is_name(value),
        "worker-groups" => value.as_array().is_some_and(|a| a.iter().all(is_name)),
        "worker-memory-limit" => value
            .as_integer()
            .is_some_and(|n| (16..=65_536).contains(&n)),
        "clockbound" => match as_seen(value) {
            Value::Boolean(_) => true,
            Value::String(s) => s.starts_with('/') && !s.ends_with('/') && !s.contains('\0'),
            _ => false,
        },
        "clockbound-max-drift" => seconds(value).is_some_and(|f| f > 0.0 && f <= 500e-6),
        "clockbound-source" => as_seen(value).is_str(),
        _ => false,
    }
}

// ---------------------------------------------------------------------------
// The checks.
// ---------------------------------------------------------------------------

/// A refusal is one line: the file, then the entry and key when there are
/// some, then a message.
fn check_error(e: &ConfigError) {
    let line = e.to_string();
    assert!(is_one_line(&line), "not one line: {line:?}");
    assert!(line.starts_with(&format!("{FILE}: ")), "{line:?}");
    assert!(!e.message.trim().is_empty(), "no message: {line:?}");
    if let Some(section) = &e.section {
        assert!(line.starts_with(&format!("{FILE}: {section}")), "{line:?}");
    }
    if let Some(key) = &e.key {
        assert!(line.contains(&format!(": {key}: ")), "{line:?}");
    }
}

/// NaN-aware, sign-of-zero-aware equality of TOML values.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Float(x), Value::Float(y)) => {
            (x.is_nan() && y.is_nan()) || x.to_bits() == y.to_bits()
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b))
        }
        (Value::Table(x), Value::Table(y)) => same_table(x, y),
        _ => a == b,
    }
}

fn same_table(x: &Table, y: &Table) -> bool {
    x.len() == y.len()
        && x.iter()
            .zip(y)
            .all(|((ka, a), (kb, b))| ka == kb && same(a, b))
}

/// The plugin sources as parsed match the entries as written.
fn check_plugins(cfg: &HostConfig) {
    let Some(Value::Array(items)) = cfg.table.get("source") else {
        assert!(cfg.plugins.is_empty());
        return;
    };
    let entries = items.iter().enumerate().filter(|(_, v)| is_plugin(v));
    for ((i, item), p) in entries.zip(&cfg.plugins) {
        assert_eq!(p.position, i + 1);
        assert_eq!(p.file, Path::new(FILE));
        assert_eq!(
            Some(p.path.to_str().unwrap()),
            as_seen(&item["path"]).as_str()
        );
        if let Some(name) = item.get("name") {
            assert_eq!(Some(p.name.as_str()), as_seen(name).as_str());
        } else {
            assert!(p.name.ends_with(&format!("#{}", i + 1)), "{}", p.name);
        }
        let poll = item.get("poll-interval").and_then(Value::as_integer);
        assert_eq!(i64::from(p.poll_interval), poll.unwrap_or(0));
        assert_eq!(p.precision, item.get("precision").and_then(seconds));
        assert_eq!(p.accuracy, item.get("accuracy").and_then(seconds));
        let timeout = item.get("sample-timeout").and_then(seconds);
        assert_eq!(
            p.sample_timeout,
            timeout.map_or(config::SAMPLE_TIMEOUT_DEFAULT, Duration::from_secs_f64)
        );
        let json: serde_json::Value = serde_json::from_str(&p.config_json).unwrap();
        let keys: BTreeSet<&String> = json.as_object().expect("an object").keys().collect();
        let want: BTreeSet<&String> = item
            .get("config")
            .and_then(Value::as_table)
            .map(|t| t.keys().collect())
            .unwrap_or_default();
        assert_eq!(keys, want, "config keys reach the plugin");
    }
}

/// The host's settings as parsed match the table as written.
fn check_host(cfg: &HostConfig) {
    let want = HostSettings::default();
    let t = cfg.table.get(HOST_TABLE);
    // By name, or by position in the array form (see `expect`).
    let get = |k: &str| match t? {
        Value::Array(fields) => HOST_KEYS
            .iter()
            .position(|h| *h == k)
            .and_then(|i| fields.get(i))
            .map(as_seen),
        table => table.get(k).map(as_seen),
    };
    assert_eq!(
        cfg.host.worker_user,
        get("worker-user").map_or(want.worker_user, |v| v.as_str().unwrap().to_owned())
    );
    let groups: Vec<String> = get("worker-groups")
        .map(|v| {
            v.as_array()
                .unwrap()
                .iter()
                .map(|g| as_seen(g).as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(cfg.host.worker_groups, groups);
    assert_eq!(
        cfg.host.worker_memory_limit,
        get("worker-memory-limit")
            .map_or(want.worker_memory_limit, |v| v.as_integer().unwrap() as u64)
    );
    let segment = match get("clockbound") {
        None | Some(Value::Boolean(false)) => None,
        Some(Value::Boolean(true)) => Some("/var/run/clockbound/shm0".to_owned()),
        Some(v) => Some(v.as_str().unwrap().to_owned()),
    };
    assert_eq!(cfg.host.clockbound, segment.map(Into::into));
    assert_eq!(
        cfg.host.clockbound_source,
        get("clockbound-source").map(|v| v.as_str().unwrap().to_owned())
    );
    assert_eq!(
        cfg.host.clockbound_max_drift_ppb,
        get("clockbound-max-drift").map_or(want.clockbound_max_drift_ppb, |v| {
            (seconds(&v).unwrap() * 1e9).ceil() as u32
        })
    );
}

/// The derived `[synchronization]` table `derived` without the algorithm
/// settings the host added (those the user's `written` table lacks), each
/// checked to have the host's value.
fn without_derived(written: &Value, derived: &Value) -> Value {
    let mut derived = derived.clone();
    let user_algorithm = written.get("algorithm");
    if let Some(Value::Table(algorithm)) = derived.get_mut("algorithm") {
        for (key, value) in config::DERIVED_ALGORITHM {
            if user_algorithm
                .and_then(Value::as_table)
                .is_none_or(|a| !a.contains_key(*key))
            {
                assert_eq!(algorithm.remove(*key), Some(Value::Float(*value)), "{key}");
            }
        }
    }
    if user_algorithm.is_none()
        && let Value::Table(sync) = &mut derived
    {
        sync.remove("algorithm");
    }
    derived
}

/// `derive` turns an accepted config into TOML that parses again, with
/// each plugin entry replaced by its sock source and everything else as
/// written.
fn check_derived(cfg: &HostConfig, estimates: &[Option<f64>]) {
    let d = config::derive(cfg, Path::new(RUNTIME), estimates);
    let out: Table = d
        .text
        .parse()
        .unwrap_or_else(|e| panic!("derived config does not parse: {e}\n{}", d.text));
    assert_eq!(d.sockets.len(), cfg.plugins.len());
    assert_eq!(d.precisions.len(), cfg.plugins.len());
    assert!(
        !out.contains_key(HOST_TABLE),
        "ntpd-rs never sees [ntpd-host]"
    );
    for (key, value) in &cfg.table {
        if key == "synchronization" && !cfg.plugins.is_empty() {
            assert!(
                same(value, &without_derived(value, &out[key])),
                "{key} changed"
            );
        } else if !["source", "observability", HOST_TABLE].contains(&key.as_str()) {
            assert!(same(value, &out[key]), "{key} changed");
        }
    }
    // Tables where tables belong (else ntpd-rs's own check refuses it).
    let tables = cfg.table.get("synchronization").is_none_or(|s| {
        s.as_table()
            .is_some_and(|t| t.get("algorithm").is_none_or(Value::is_table))
    });
    if !cfg.plugins.is_empty() && tables {
        // Every derived algorithm setting is there: the user's, or the host's.
        let algorithm = &out["synchronization"]["algorithm"];
        for (key, _) in config::DERIVED_ALGORITHM {
            assert!(algorithm.get(key).is_some(), "{key} not derived");
        }
    }
    if let Some(Value::Array(items)) = cfg.table.get("source") {
        let derived = out["source"].as_array().expect("still an array");
        assert_eq!(derived.len(), items.len());
        let mut sockets = d.sockets.iter();
        for (item, new) in items.iter().zip(derived) {
            if is_plugin(item) {
                let sock = sockets.next().expect("a socket per plugin");
                assert_eq!(new["mode"].as_str(), Some("sock"));
                assert_eq!(new["path"].as_str(), sock.to_str());
                assert!(new["precision"].as_float().is_some_and(|p| p > 0.0));
            } else {
                assert!(same(item, new), "ntpd-rs source changed:\n{item}\n{new}");
            }
        }
    }
    match cfg.table.get("observability") {
        Some(Value::Table(t)) if t.get("observation-path").is_some_and(Value::is_str) => {
            assert!(same_table(t, out["observability"].as_table().unwrap()));
        }
        Some(Value::Table(_)) | None => assert_eq!(
            out["observability"]["observation-path"].as_str(),
            Some(Path::new(RUNTIME).join("observe").to_str().unwrap())
        ),
        Some(other) => assert!(same(other, &out["observability"])),
    }
}

/// Everything that must hold for any text given as the config file.
fn check_config_text(text: &str, estimates: &[Option<f64>]) -> Result<(), TestCaseError> {
    let result = config::parse(Path::new(FILE), text);
    let Ok(doc) = text.parse::<Table>() else {
        let e = result.expect_err("text that is not TOML is refused");
        check_error(&e);
        prop_assert!(e.message.starts_with("invalid TOML"), "{e}");
        prop_assert_eq!((&e.section, e.key.as_deref()), (&None, None));
        return Ok(());
    };
    match (result, expect(&doc)) {
        (Ok(cfg), Expect::Ok { plugins, others }) => {
            prop_assert_eq!((cfg.plugins.len(), cfg.other_entries), (plugins, others));
            check_plugins(&cfg);
            check_host(&cfg);
            check_derived(&cfg, estimates);
        }
        (Err(e), Expect::Err { section, keys }) => {
            check_error(&e);
            prop_assert_eq!(&e.section, &section, "{}", e);
            match &e.key {
                _ if keys == [ANY_KEY] => {}
                // Keys are named escaped (a quoted key may hold anything).
                Some(k) => prop_assert!(
                    keys.iter()
                        .any(|want| want.escape_debug().to_string() == *k),
                    "{e}: expected one of {keys:?}"
                ),
                // A key "." is a path of "." (the whole table): not named
                // as the key, but in serde's message.
                None => prop_assert!(
                    keys.is_empty() || keys.iter().any(|k| k == "."),
                    "{e}: expected one of {keys:?}"
                ),
            }
        }
        (got, want) => prop_assert!(false, "parse gave {got:?}, the rules say {want:?}"),
    }
    Ok(())
}

/// Precision estimates as workers report them (ns from a u64, or none).
fn estimates() -> impl Strategy<Value = Vec<Option<f64>>> {
    prop::collection::vec(
        prop::option::of(prop_oneof![Just(0.0), 0.0f64..1.0, 1.0f64..1e9]),
        0..6,
    )
}

proptest! {
    #[test]
    fn config_arbitrary_text(text in any::<String>(), est in estimates()) {
        check_config_text(&text, &est)?;
    }

    #[test]
    fn config_toml_soup(text in toml_soup(), est in estimates()) {
        check_config_text(&text, &est)?;
    }

    #[test]
    fn config_generated_documents(
        doc in prop_oneof![document(true), document(false)],
        est in estimates(),
    ) {
        let text = toml::to_string(&doc).expect("the toml crate writes any table");
        check_config_text(&text, &est)?;
    }

    #[test]
    fn config_mutated_examples(
        example in select(EXAMPLES),
        mutations in prop::collection::vec(mutation(), 1..8),
        est in estimates(),
    ) {
        let bytes = mutations.iter().fold(example.as_bytes().to_vec(), apply);
        check_config_text(&String::from_utf8_lossy(&bytes), &est)?;
    }
}

proptest! {
    /// Any file name (a path is any bytes but NUL): messages start with it,
    /// and the derived config, whose header comment names it, parses.
    #[test]
    fn config_any_file_name(name in any::<String>(), plugin in any::<bool>()) {
        let file = format!("/{}", name.replace('\0', ""));
        let text = if plugin {
            "[[source]]\nmode = \"plugin\"\npath = \"/a.so\"\n"
        } else {
            "[[source]]\nmode = \"plugin\"\n"
        };
        match config::parse(Path::new(&file), text) {
            Ok(cfg) => {
                let d = config::derive(&cfg, Path::new(RUNTIME), &[None]);
                let t: Table = d.text.parse().map_err(|e| TestCaseError::fail(format!("{e}")))?;
                prop_assert_eq!(t["source"][0]["mode"].as_str(), Some("sock"));
            }
            Err(e) => {
                let line = e.to_string();
                let prefix = format!("{file}: [[source]] #1: path: ");
                prop_assert!(line.starts_with(&prefix), "{line:?}");
                prop_assert!(is_one_line(&line[file.len()..]), "{line:?}");
            }
        }
    }
}

#[test]
fn every_example_passes_the_checks_unmutated() {
    for text in EXAMPLES {
        let doc: Table = text.parse().unwrap();
        assert!(matches!(expect(&doc), Expect::Ok { plugins: 1.., .. }));
        check_config_text(text, &[]).unwrap();
    }
}

#[test]
fn the_model_agrees_with_the_unit_tests_on_known_refusals() {
    // A few refusals whose wording the unit tests pin: the model must name
    // the same entry and key, or it would accept a broken parser.
    for (text, entry, key) in [
        (
            "[[source]]\nmode = \"plugin\"\npath = \"/a.so\"\npoll-interval = 7\n",
            1,
            "poll-interval",
        ),
        (
            "[[source]]\nmode = \"server\"\n[[source]]\nmode = \"plugin\"\n",
            2,
            "path",
        ),
        (
            "[[source]]\nmode = \"plugin\"\npath = \"/a.so\"\ndevice = 1\n",
            1,
            "device",
        ),
    ] {
        let doc: Table = text.parse().unwrap();
        assert_eq!(
            expect(&doc),
            Expect::Err {
                section: Some(Section::Source(entry)),
                keys: vec![key.into()]
            }
        );
        check_config_text(text, &[]).unwrap();
    }
}

// ---------------------------------------------------------------------------
// The SOCK datagram.
// ---------------------------------------------------------------------------

mod sock_datagram {
    use super::*;
    use ntpd_host::protocol::sock::{self, DATAGRAM_LEN, DecodeError, MAGIC};
    use ntpd_plugin_api::Leap;

    /// ntpd-rs 1.9.0's own decision on a received datagram (its
    /// `deserialize_sample`): it receives into a 40-byte buffer, so `len` is
    /// at most 40, then checks size, magic and pulse in that order.
    /// Returns the offset and leap code it would use.
    fn ntpd_rs_accepts(buf: &[u8; DATAGRAM_LEN], len: usize) -> Result<(f64, i32), &'static str> {
        let i32_at = |at: usize| i32::from_le_bytes(buf[at..at + 4].try_into().unwrap());
        if len != DATAGRAM_LEN {
            return Err("size");
        }
        if i32_at(36) != MAGIC {
            return Err("magic");
        }
        if i32_at(24) != 0 {
            return Err("pulse");
        }
        Ok((
            f64::from_le_bytes(buf[16..24].try_into().unwrap()),
            i32_at(28),
        ))
    }

    /// What a datagram of `bytes` looks like to ntpd-rs after `recv` into
    /// its 40-byte buffer (the kernel cuts a longer datagram).
    fn as_received(bytes: &[u8]) -> ([u8; DATAGRAM_LEN], usize) {
        let mut buf = [0u8; DATAGRAM_LEN];
        let n = bytes.len().min(DATAGRAM_LEN);
        buf[..n].copy_from_slice(&bytes[..n]);
        (buf, n)
    }

    /// Offsets below this many ns (2^23 s, 97 days) reach ntpd-rs exact to
    /// the nanosecond: f64 seconds there have an ulp of at most 2^-30 s, so
    /// the correctly rounded value is within 0.47 ns.
    pub(super) const EXACT_NS: i64 = (1 << 23) * 1_000_000_000;

    /// Whether `seconds` is within half a nanosecond of `ns` (exact
    /// arithmetic: the f64 is m * 2^-k, compared in i128).
    pub(super) fn exact_to_the_ns(seconds: f64, ns: i64) -> bool {
        if ns == 0 || seconds == 0.0 {
            return ns == 0 && seconds == 0.0;
        }
        if (seconds < 0.0) != (ns < 0) || !seconds.is_finite() {
            return false;
        }
        let bits = seconds.abs().to_bits();
        let exponent = ((bits >> 52) & 0x7ff) as i32;
        let mantissa = i128::from((bits & ((1 << 52) - 1)) | (1 << 52));
        let k = 1075 - exponent; // |seconds| = mantissa * 2^-k
        assert!((1..=120).contains(&k), "{seconds}");
        let scaled = mantissa * 1_000_000_000;
        let target = i128::from(ns.unsigned_abs()) << k;
        2 * (scaled - target).abs() < 1i128 << k
    }

    fn leap() -> impl Strategy<Value = Leap> {
        prop_oneof![select(Leap::KNOWN), any::<u32>().prop_map(Leap)]
    }

    fn sample() -> impl Strategy<Value = Sample> {
        let offset = prop_oneof![
            any::<i64>(),
            -EXACT_NS..EXACT_NS,
            EXACT_NS / 2..EXACT_NS,
            -1_000_000_000i64..1_000_000_000,
            select(vec![i64::MIN, i64::MAX, 0, -1, 1]),
        ];
        (any::<i64>(), offset, any::<u64>(), leap(), any::<u32>()).prop_map(
            |(system_time_ns, offset_ns, error_ns, leap, readings)| {
                let mut s = Sample::new(system_time_ns, offset_ns, error_ns);
                s.leap = leap;
                s.readings = readings;
                s
            },
        )
    }

    /// Garbage datagrams: any length, and 40-byte ones close to valid.
    fn bytes() -> impl Strategy<Value = Vec<u8>> {
        let near_valid = (
            sample(),
            prop::collection::vec((0usize..40, any::<u8>()), 0..3),
        )
            .prop_map(|(s, edits)| {
                let mut b = sock::encode(&s).to_vec();
                for (i, v) in edits {
                    b[i] = v;
                }
                b
            });
        prop_oneof![
            prop::collection::vec(any::<u8>(), 0..128),
            prop::collection::vec(any::<u8>(), 38..43),
            near_valid,
        ]
    }

    proptest! {
        #[test]
        fn sock_encode_round_trips(s in sample()) {
            let bytes = sock::encode(&s);
            let d = sock::decode(&bytes).expect("an encoded sample decodes");
            prop_assert_eq!(d.leap, sock::leap_code(s.leap));
            prop_assert!((0..=3).contains(&d.leap));
            let known = [Leap::NONE, Leap::INSERT, Leap::DELETE];
            prop_assert_eq!(d.leap == 3, !known.contains(&s.leap));
            prop_assert_eq!(d.pulse, 0);
            prop_assert!(d.offset.is_finite());
            prop_assert!((0..1_000_000).contains(&d.tv_usec));
            prop_assert_eq!(
                i128::from(d.tv_sec) * 1_000_000 + i128::from(d.tv_usec),
                i128::from(s.system_time_ns).div_euclid(1000)
            );
            if s.offset_ns.unsigned_abs() < EXACT_NS.unsigned_abs() {
                prop_assert!(exact_to_the_ns(d.offset, s.offset_ns), "{} s", d.offset);
            } else {
                // Beyond: f64 precision (i64 to f64, then seconds).
                let back = d.offset * 1e9;
                let ns = s.offset_ns as f64;
                prop_assert!((back - ns).abs() <= ns.abs() * 4.0 * f64::EPSILON, "{}", d.offset);
            }
            // ntpd-rs reads the same offset and leap code.
            let (buf, n) = as_received(&bytes);
            prop_assert_eq!(ntpd_rs_accepts(&buf, n), Ok((d.offset, d.leap)));
        }

        #[test]
        fn sock_decode_rejects_what_ntpd_rs_rejects(bytes in bytes()) {
            let ours = sock::decode(&bytes);
            let (buf, n) = as_received(&bytes);
            let theirs = ntpd_rs_accepts(&buf, n);
            match &ours {
                Ok(d) => {
                    prop_assert_eq!(theirs, Ok((d.offset, d.leap)));
                    prop_assert_eq!(d.tv_sec, i64::from_le_bytes(bytes[0..8].try_into().unwrap()));
                    prop_assert_eq!(d.tv_usec, i64::from_le_bytes(bytes[8..16].try_into().unwrap()));
                }
                // Longer datagrams: the only difference. ntpd-rs reads the
                // first 40 bytes of what the kernel cut; decode refuses them.
                Err(DecodeError::Size(n)) if *n > DATAGRAM_LEN => {}
                Err(e) => {
                    let line = e.to_string();
                    prop_assert!(is_one_line(&line));
                    let want = match e {
                        DecodeError::Size(_) => "size",
                        DecodeError::Magic(_) => "magic",
                        DecodeError::Pulse(_) => "pulse",
                    };
                    prop_assert_eq!(theirs, Err(want));
                }
            }
        }
    }

    /// The one difference above, with a real socket: the kernel hands
    /// ntpd-rs's 40-byte `recv` the first 40 bytes of a longer datagram.
    #[test]
    fn a_longer_datagram_reaches_ntpd_rs_cut_to_40_bytes() {
        let (a, b) = std::os::unix::net::UnixDatagram::pair().unwrap();
        let mut long = sock::encode(&Sample::new(0, 1_000_000_000, 1)).to_vec();
        long.extend_from_slice(&[0xff; 8]);
        a.send(&long).unwrap();
        let mut buf = [0u8; DATAGRAM_LEN];
        let n = b.recv(&mut buf).unwrap();
        assert_eq!(n, DATAGRAM_LEN);
        assert_eq!(ntpd_rs_accepts(&buf, n), Ok((1.0, 0)));
        assert_eq!(sock::decode(&long), Err(DecodeError::Size(48)));
    }
}

// ---------------------------------------------------------------------------
// Worker events.
// ---------------------------------------------------------------------------

mod worker_events {
    use super::*;
    use ntpd_host::daemon::supervisor::{BoundedLine, read_bounded_line};
    use ntpd_host::loader::{MAX_EXTENSIONS, MAX_PLUGIN_TEXT, plugin_text};
    use ntpd_host::protocol::records::{
        CapabilitiesRecord, ErrorRecord, PluginIdentity, SampleRecord,
    };
    use ntpd_host::protocol::worker::{
        self as proto, Call, Event, LogLevel, MAX_LINE, MAX_TEXT, Reaction,
    };
    use ntpd_plugin_api::Capabilities;
    use ntpd_plugin_api::abi_stable::std_types::RString;
    use ntpd_plugin_api::{ErrorKind, Leap, ReadMethod, TimeScale};
    use serde_json::{Map, Value as Json};
    use tokio::io::AsyncBufReadExt as _;

    /// Messages with every kind of line break, NUL and non-ASCII.
    fn text() -> impl Strategy<Value = String> {
        let nasty = select(vec![
            "\n",
            "\r",
            "\r\n",
            "\u{2028}",
            "\u{2029}",
            "\u{85}",
            "\0",
            "\"",
            "\\",
            "{",
            "}",
            "é",
            "\u{feff}",
            "\u{1b}[31m",
        ]);
        prop_oneof![
            any::<String>(),
            prop::collection::vec(prop_oneof![nasty, select(vec!["a", " ", "x y"])], 0..12)
                .prop_map(|v| v.concat()),
        ]
    }

    /// Floats as events carry them: finite (JSON has no NaN).
    fn finite() -> impl Strategy<Value = f64> {
        prop_oneof![
            any::<f64>().prop_filter("finite", |f| f.is_finite()),
            0f64..4000.0,
            select(vec![0.0, -0.0, 10.5, f64::MAX, f64::MIN_POSITIVE, 5e-324]),
        ]
    }

    fn json() -> impl Strategy<Value = Json> {
        let leaf = prop_oneof![
            Just(Json::Null),
            any::<bool>().prop_map(Json::from),
            any::<i64>().prop_map(Json::from),
            any::<u64>().prop_map(Json::from),
            finite().prop_map(Json::from),
            text().prop_map(Json::from),
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Json::Array),
                prop::collection::btree_map(text(), inner, 0..4)
                    .prop_map(|m| Json::Object(m.into_iter().collect())),
            ]
        })
    }

    fn identity() -> impl Strategy<Value = PluginIdentity> {
        (text(), text(), text(), text(), text()).prop_map(
            |(name, vendor, version, description, sdk_version)| PluginIdentity {
                name,
                vendor,
                version,
                description,
                sdk_version,
            },
        )
    }

    fn capabilities() -> impl Strategy<Value = CapabilitiesRecord> {
        (
            open_enum(),
            open_enum(),
            any::<u64>(),
            any::<i8>(),
            any::<i8>(),
            text(),
            any::<u64>(),
            prop::collection::btree_map(text(), json(), 0..4),
        )
            .prop_map(
                |(m, t, precision_ns, min_poll, max_poll, description, flags, ext)| {
                    CapabilitiesRecord {
                        method: ReadMethod(m),
                        timescale: TimeScale(t),
                        precision_ns,
                        min_poll,
                        max_poll,
                        description,
                        flags,
                        extensions: ext.into_iter().collect::<Map<_, _>>(),
                    }
                },
            )
    }

    fn sample_record() -> impl Strategy<Value = SampleRecord> {
        (
            any::<i64>(),
            any::<i64>(),
            any::<u64>(),
            any::<u64>(),
            open_enum(),
            any::<u32>(),
            any::<u64>(),
        )
            .prop_map(|(t, o, e, r, leap, readings, flags)| SampleRecord {
                system_time_ns: t,
                offset_ns: o,
                error_ns: e,
                reference_error_ns: r,
                leap: Leap(leap),
                readings,
                flags,
            })
    }

    /// An open enumeration's value: mostly the known ones, any `u32` too.
    fn open_enum() -> impl Strategy<Value = u32> {
        prop_oneof![3 => 0u32..8, 1 => any::<u32>()]
    }

    fn call() -> impl Strategy<Value = Call> {
        select(vec![Call::Load, Call::Init, Call::Sample])
    }

    pub(super) fn event() -> impl Strategy<Value = Event> {
        prop_oneof![
            identity().prop_map(|plugin| Event::Loaded { plugin }),
            capabilities().prop_map(|capabilities| Event::Ready { capabilities }),
            (sample_record(), any::<bool>(), any::<u64>()).prop_map(
                |(sample, delivered, latency_ns)| Event::Sample {
                    sample,
                    delivered,
                    latency_ns,
                }
            ),
            (
                call(),
                open_enum(),
                text(),
                select(vec![Reaction::Skip, Reaction::Reinit, Reaction::Stop]),
                prop::option::of(finite()),
            )
                .prop_map(|(call, kind, message, reaction, retry_in_s)| Event::Error {
                    call,
                    error: ErrorRecord {
                        kind: ErrorKind(kind),
                        message,
                    },
                    reaction,
                    retry_in_s,
                }),
            (call(), finite()).prop_map(|(call, seconds)| Event::Hung { call, seconds }),
            (sample_record(), text())
                .prop_map(|(sample, reason)| Event::Rejected { sample, reason }),
            (
                select(vec![
                    LogLevel::Debug,
                    LogLevel::Info,
                    LogLevel::Warn,
                    LogLevel::Error
                ]),
                text(),
            )
                .prop_map(|(level, message)| Event::Log { level, message }),
        ]
    }

    /// Equal, except that floats may differ in the last bits: serde_json
    /// parses floats without its `float_roundtrip` feature, which is not
    /// always correctly rounded (2.278965369172072e265 comes back as
    /// 2.2789653691720718e265, 1.3292000461571678e244 as
    /// 1.3292000461571681e244; -6.589063932032e-310, a subnormal, as
    /// -6.58906393203202e-310).
    fn close(a: &Json, b: &Json) -> bool {
        match (a, b) {
            (Json::Number(x), Json::Number(y)) if x.is_f64() || y.is_f64() => {
                let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
                x == y
                    || (x - y).abs() <= x.abs().max(y.abs()) * 1e-15
                    || x.abs().max(y.abs()) < f64::MIN_POSITIVE
            }
            (Json::Array(x), Json::Array(y)) => {
                x.len() == y.len() && x.iter().zip(y).all(|(a, b)| close(a, b))
            }
            (Json::Object(x), Json::Object(y)) => {
                x.len() == y.len()
                    && x.iter()
                        .zip(y)
                        .all(|((ka, a), (kb, b))| ka == kb && close(a, b))
            }
            _ => a == b,
        }
    }

    fn same_event(a: &Event, b: &Event) -> bool {
        close(
            &serde_json::to_value(a).unwrap(),
            &serde_json::to_value(b).unwrap(),
        )
    }

    /// The supervisor's reader: tokio's line splitter, over `bytes`.
    fn read_lines(bytes: Vec<u8>) -> Vec<String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async move {
            let mut lines = tokio::io::BufReader::new(&bytes[..]).lines();
            let mut out = Vec::new();
            while let Some(line) = lines.next_line().await.unwrap() {
                out.push(line);
            }
            out
        })
    }

    /// A line that is no event is refused, with a message (on one line:
    /// see `events_refusals_are_one_line`).
    fn check_refusal(line: &str) -> Result<(), TestCaseError> {
        match proto::decode(line) {
            Ok(e) => prop_assert!(false, "accepted {line:?} as {e:?}"),
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
        Ok(())
    }

    /// Garbage lines: anything, and JSON that is nearly an event.
    fn garbage() -> impl Strategy<Value = String> {
        let tag = select(vec![
            "loaded", "ready", "sample", "error", "hung", "Hung", "nope", "", "a\nb",
        ]);
        prop_oneof![
            any::<String>(),
            json().prop_map(|j| j.to_string()),
            (tag, prop::collection::btree_map(text(), json(), 0..4)).prop_map(|(tag, m)| {
                let mut m: Map<String, Json> = m.into_iter().collect();
                m.insert("event".into(), Json::from(tag));
                Json::Object(m).to_string()
            }),
        ]
    }

    proptest! {
        #[test]
        fn events_round_trip_on_one_line(events in prop::collection::vec(event(), 1..6)) {
            let mut stream = Vec::new();
            for e in &events {
                let line = proto::encode(e);
                prop_assert!(!line.contains(['\n', '\r', '\0']), "{line:?}");
                let back = proto::decode(&line).expect("decodes");
                prop_assert!(same_event(&back, e), "{back:?}\n{e:?}");
                stream.extend_from_slice(line.as_bytes());
                stream.push(b'\n');
            }
            // Through the supervisor's line reader: one line per event.
            let lines = read_lines(stream);
            prop_assert_eq!(lines.len(), events.len());
            for (line, e) in lines.iter().zip(&events) {
                prop_assert!(same_event(&proto::decode(line).unwrap(), e));
            }
        }

        #[test]
        fn events_garbage_is_refused(line in garbage()) {
            // Any line: no panic; a refusal is one line; what is accepted is
            // an event that encodes again.
            match proto::decode(&line) {
                Ok(e) => prop_assert!(same_event(&proto::decode(&proto::encode(&e)).unwrap(), &e)),
                Err(_) => check_refusal(&line)?,
            }
        }

        #[test]
        fn events_truncated_are_refused(e in event(), cut in any::<prop::sample::Index>()) {
            let line = proto::encode(&e);
            let mut at = cut.index(line.len());
            while !line.is_char_boundary(at) {
                at -= 1;
            }
            check_refusal(&line[..at])?;
        }

        #[test]
        fn events_with_extra_or_missing_fields(
            e in event(),
            which in any::<prop::sample::Index>(),
            extra in prop_oneof![
                select(vec!["plugin", "sample", "call", "seconds", "retry-in-s", "x"])
                    .prop_map(str::to_owned),
                text(),
            ],
            value in json(),
        ) {
            let Json::Object(mut top) = serde_json::to_value(&e).unwrap() else {
                panic!("an event is an object");
            };
            let keys: Vec<String> = top.keys().cloned().collect();
            // A top-level field removed: only `retry-in-s` may go.
            let gone = which.get(&keys).clone();
            let mut fewer = top.clone();
            fewer.remove(&gone);
            let fewer = Json::Object(fewer).to_string();
            if gone == "retry-in-s" {
                prop_assert!(proto::decode(&fewer).is_ok());
            } else {
                check_refusal(&fewer)?;
            }
            // A top-level field added: refused (no unknown fields).
            if !top.contains_key(&extra) {
                top.insert(extra, value);
                check_refusal(&Json::Object(top).to_string())?;
            }
        }
    }

    proptest! {
        /// The refusal of a line says what is wrong on one line, even where
        /// serde_json echoes names as written (`{"event":"a\nb"}` gives
        /// "unknown variant `a<LF>b`, ..."): the supervisor logs it with the
        /// line as "unreadable worker event".
        #[test]
        fn events_refusals_are_one_line(line in garbage()) {
            if let Err(e) = proto::decode(&line) {
                prop_assert!(is_one_line(&e.to_string()), "{:?}", e.to_string());
            }
        }
    }

    /// Floats the long runs found coming back from serde_json changed (its
    /// parser without `float_roundtrip`): a few ulps, more for a subnormal.
    #[test]
    fn event_floats_come_back_close() {
        for seconds in [
            2.278_965_369_172_072e265,
            1.329_200_046_157_167_8e244,
            -6.589_063_932_032e-310,
        ] {
            let e = Event::Hung {
                call: Call::Load,
                seconds,
            };
            let back = proto::decode(&proto::encode(&e)).unwrap();
            assert!(same_event(&back, &e), "{back:?}");
        }
    }

    /// What `read_bounded_line` must return for `stream`: the pieces between
    /// newlines (the last one only if not empty), each decoded lossily, cut
    /// to `limit` bytes and reported as too long beyond.
    fn expected_lines(stream: &[u8], limit: usize) -> Vec<BoundedLine> {
        let mut pieces: Vec<&[u8]> = stream.split(|b| *b == b'\n').collect();
        if pieces.last().is_some_and(|p| p.is_empty()) {
            pieces.pop();
        }
        pieces
            .into_iter()
            .map(|p| {
                let head = String::from_utf8_lossy(&p[..p.len().min(limit)]).into_owned();
                if p.len() > limit {
                    BoundedLine::TooLong(head, p.len())
                } else {
                    BoundedLine::Line(head)
                }
            })
            .collect()
    }

    /// An event channel's bytes: events, garbage, line breaks, long runs.
    fn channel_bytes(limit: usize) -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            event().prop_map(|e| proto::encode(&e).into_bytes()),
            prop::collection::vec(any::<u8>(), 0..64),
            Just(b"\n".to_vec()),
            Just(b"\r\n".to_vec()),
            (limit - 2..limit + 3).prop_map(|n| vec![b'x'; n]),
            (1usize..4 * limit).prop_map(|n| "é".repeat(n / 2).into_bytes()),
        ];
        prop::collection::vec(piece, 0..12).prop_map(|v| v.concat())
    }

    /// A plugin's worst strings for the event size: characters JSON writes
    /// as two bytes, control characters, multi-byte characters; runs of
    /// one (to reach the cut quickly) and mixes.
    fn worst_text() -> impl Strategy<Value = String> {
        let chars = vec!['"', '\\', '\u{1}', 'é', '\u{10FFFF}', 'a', '\u{2028}'];
        let run =
            (select(chars.clone()), 0..2 * MAX_TEXT).prop_map(|(c, n)| c.to_string().repeat(n));
        let mix = prop::collection::vec(select(chars), 0..32).prop_map(String::from_iter);
        (mix.clone(), run, mix).prop_map(|(a, b, c)| a + &b + &c)
    }

    /// Extensions text: worst strings, and JSON whose numbers serde_json
    /// writes longer than they came (1e15 becomes 1000000000000000.0).
    fn worst_extensions() -> impl Strategy<Value = String> {
        prop_oneof![
            worst_text(),
            (0usize..2 * MAX_EXTENSIONS).prop_map(|n| {
                let mut t = String::from("{\"a\":[");
                t.push_str(&"-1e15,".repeat(n / 6));
                t.push_str("0]}");
                t
            }),
        ]
    }

    proptest! {
        /// The supervisor's reader returns every line, cut to the limit
        /// and reported as too long beyond it, over any chunking of the
        /// stream; and the text it logs of a line is bounded and has no
        /// control characters.
        #[test]
        fn channel_lines_are_read_bounded(
            limit in 8usize..256,
            capacity in 1usize..64,
            stream in (8usize..256).prop_flat_map(channel_bytes),
        ) {
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let got = rt.block_on(async {
                let mut reader = tokio::io::BufReader::with_capacity(capacity, &stream[..]);
                let mut lines = Vec::new();
                while let Some(line) = read_bounded_line(&mut reader, limit).await.unwrap() {
                    lines.push(line);
                }
                lines
            });
            let want = expected_lines(&stream, limit);
            prop_assert_eq!(got.len(), want.len());
            for (g, w) in got.iter().zip(&want) {
                let (BoundedLine::Line(text) | BoundedLine::TooLong(text, _)) = g;
                match (g, w) {
                    (BoundedLine::Line(a), BoundedLine::Line(b)) => prop_assert_eq!(a, b),
                    (BoundedLine::TooLong(a, n), BoundedLine::TooLong(b, m)) => {
                        prop_assert_eq!((a, n), (b, m));
                    }
                    _ => prop_assert!(false, "{:?} vs {:?}", g, w),
                }
                let logged = proto::bounded_text(text);
                prop_assert!(logged.len() <= MAX_TEXT + " [cut]".len());
                prop_assert!(!logged.chars().any(char::is_control), "{logged:?}");
            }
        }

        /// Every event a worker can send fits the supervisor's line limit:
        /// the plugin's strings are cut by the loader (`plugin_text`) before
        /// they go into events, whatever they hold.
        #[test]
        fn events_from_sanitized_plugin_strings_fit_max_line(
            strings in prop::collection::vec(worst_text(), 7),
            extensions in worst_extensions(),
            sample in sample_record(),
        ) {
            let cut = |s: &String| plugin_text(RString::from(s.as_str()), MAX_PLUGIN_TEXT);
            let mut caps = Capabilities::new(
                ReadMethod::PRECISE,
                TimeScale::TAI,
                u64::MAX,
                cut(&strings[0]).as_str(),
            );
            caps.extensions = plugin_text(RString::from(extensions.as_str()), MAX_EXTENSIONS).into();
            let events = [
                Event::Loaded {
                    plugin: PluginIdentity {
                        name: cut(&strings[1]),
                        vendor: cut(&strings[2]),
                        version: cut(&strings[3]),
                        description: cut(&strings[4]),
                        sdk_version: cut(&strings[5]),
                    },
                },
                Event::Ready { capabilities: CapabilitiesRecord::from(&caps) },
                Event::Error {
                    call: Call::Sample,
                    error: ErrorRecord { kind: ErrorKind(u32::MAX), message: cut(&strings[6]) },
                    reaction: Reaction::Reinit,
                    retry_in_s: Some(f64::MAX),
                },
                Event::Log { level: LogLevel::Error, message: proto::bounded_text(&strings[6]) },
                Event::Sample { sample, delivered: true, latency_ns: u64::MAX },
            ];
            for e in &events {
                let line = proto::encode(e);
                prop_assert!(line.len() <= MAX_LINE, "{} bytes", line.len());
                prop_assert!(same_event(&proto::decode(&line).unwrap(), e));
            }
        }
    }

    /// 6 MiB messages and 4 MiB garbage: still one line, no panic.
    #[test]
    fn huge_events_and_huge_garbage() {
        let big = "x\n\u{2028}\0".repeat(1 << 20);
        let e = Event::Error {
            call: Call::Sample,
            error: ErrorRecord {
                kind: ErrorKind::TRANSIENT,
                message: big.clone(),
            },
            reaction: Reaction::Skip,
            retry_in_s: None,
        };
        let line = proto::encode(&e);
        assert!(!line.contains('\n'));
        assert_eq!(proto::decode(&line).unwrap(), e);
        for garbage in [
            "{".repeat(1 << 20),
            "[".repeat(1 << 20),
            format!("{{\"event\":\"{}", "a".repeat(4 << 20)),
            format!(
                "{{\"event\":\"hung\",\"call\":\"init\",\"seconds\":1{}}}",
                "0".repeat(1 << 20)
            ),
            big,
        ] {
            let err = proto::decode(&garbage).expect_err("garbage");
            assert!(err.to_string().len() < 200, "{}", err.to_string().len());
        }
    }
}
