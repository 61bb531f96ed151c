//! `libntpd_sim.so`: a simulated PTP hardware clock for ntpd-host.
//!
//! Written only against the public `ntpd-plugin-api` SDK, the way a
//! third-party vendor would write a plugin. Tests and demos use it: it
//! reports a reference clock with a configured offset, frequency error and
//! noise, and injects faults on request.
//!
//! Configuration (`[source.config]`, every key optional):
//!
//! | key | type | default | meaning |
//! |---|---|---|---|
//! | `offset` | seconds (float) | 0 | reference minus system clock at init |
//! | `frequency` | ppm (float) | 0 | how fast the reference gains on the system clock |
//! | `noise` | ns (float) | 0 | standard deviation of Gaussian noise on each offset |
//! | `seed` | integer | 1 | noise generator seed (same seed, same noise) |
//! | `timescale` | `utc` / `tai` | `utc` | time scale reported in capabilities |
//! | `method` | `precise` / `extended` / `standard` / `other` | `extended` | method reported in capabilities |
//! | `leap` | `none` / `insert` / `delete` / `unknown` | `none` | leap indicator on every sample |
//! | `error-every` | integer N | off | every Nth sample fails |
//! | `error-kind` | error kind name or number | `transient` | kind of those failures (numbers allow kinds unknown to the host) |
//! | `panic-at` | integer N | off | sample N panics |
//! | `hang-at` | integer N | off | sample N sleeps `hang-seconds` before answering |
//! | `hang-seconds` | seconds (float) | 3600 | length of that hang |
//! | `abort-at` | integer N | off | sample N aborts the whole process |
//! | `unavailable-at` | integer N | off | samples from N on fail as `unavailable` (device gone) |
//! | `init-failures` | integer N | 0 | the first N `init` calls in this process fail as `unavailable` |
//!
//! Samples are numbered from 1 for each source object, so a re-initialised
//! source starts counting again.

#![forbid(unsafe_code)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ntpd_plugin_api::{
    Capabilities, ErrorKind, Info, InitContext, Leap, Plugin, PluginError, ReadMethod, Sample,
    Source, TimeScale, export_plugin, realtime_now_ns,
};
use rand::{Rng, SeedableRng, rngs::StdRng};
use rand_distr::StandardNormal;
use serde::Deserialize;

/// An error kind given by name (`"transient"`) or by number (`7`).
#[derive(Deserialize, Clone, Debug)]
#[serde(untagged)]
enum KindSpec {
    Number(u32),
    Name(String),
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct Config {
    #[serde(default)]
    offset: f64,
    #[serde(default)]
    frequency: f64,
    #[serde(default)]
    noise: f64,
    #[serde(default = "default_seed")]
    seed: u64,
    #[serde(default = "default_timescale")]
    timescale: String,
    #[serde(default = "default_method")]
    method: String,
    #[serde(default = "default_leap")]
    leap: String,
    error_every: Option<u64>,
    error_kind: Option<KindSpec>,
    panic_at: Option<u64>,
    hang_at: Option<u64>,
    #[serde(default = "default_hang_seconds")]
    hang_seconds: f64,
    abort_at: Option<u64>,
    unavailable_at: Option<u64>,
    #[serde(default)]
    init_failures: u64,
}

fn default_seed() -> u64 {
    1
}
fn default_timescale() -> String {
    "utc".into()
}
fn default_method() -> String {
    "extended".into()
}
fn default_leap() -> String {
    "none".into()
}
fn default_hang_seconds() -> f64 {
    3600.0
}

/// `init` calls made in this process, for `init-failures`.
static INIT_CALLS: AtomicU64 = AtomicU64::new(0);

/// The plugin type handed to `export_plugin!`.
pub struct SimPlugin;

/// One simulated clock.
pub struct SimSource {
    config: Config,
    method: ReadMethod,
    timescale: TimeScale,
    leap: Leap,
    error_kind: ErrorKind,
    /// Offset at init, ns.
    offset_ns: i64,
    /// System time at init, ns.
    start_ns: i64,
    rng: StdRng,
    /// Samples taken so far.
    count: u64,
}

fn parse_named<T>(
    key: &str,
    value: &str,
    parse: fn(&str) -> Option<T>,
    valid: &[&str],
) -> Result<T, PluginError> {
    parse(value).ok_or_else(|| {
        PluginError::configuration(format!(
            "invalid plugin config: `{key}` = {value:?}; valid values: {}",
            valid.join(", ")
        ))
    })
}

fn names<T: Copy + std::fmt::Display>(known: &[T]) -> Vec<String> {
    known.iter().map(|k| k.to_string()).collect()
}

fn finite(key: &str, value: f64) -> Result<f64, PluginError> {
    if value.is_finite() {
        Ok(value)
    } else {
        Err(PluginError::configuration(format!(
            "invalid plugin config: `{key}` must be a finite number"
        )))
    }
}

impl Plugin for SimPlugin {
    type Source = SimSource;

    fn info() -> Info {
        Info {
            name: "sim",
            vendor: "ntpd-host project",
            version: env!("CARGO_PKG_VERSION"),
            description: "simulated PTP hardware clock with fault injection, for tests and demos",
        }
    }

    fn init(ctx: InitContext<'_>) -> Result<SimSource, PluginError> {
        let config: Config = ctx.config()?;
        let method_names = names(ReadMethod::KNOWN);
        let method_names: Vec<&str> = method_names.iter().map(String::as_str).collect();
        let method = parse_named(
            "method",
            &config.method,
            ReadMethod::from_name,
            &method_names,
        )?;
        let timescale = parse_named(
            "timescale",
            &config.timescale,
            TimeScale::from_name,
            &["utc", "tai"],
        )?;
        let leap = parse_named(
            "leap",
            &config.leap,
            Leap::from_name,
            &["none", "insert", "delete", "unknown"],
        )?;
        let error_kind = match &config.error_kind {
            None => ErrorKind::TRANSIENT,
            Some(KindSpec::Number(n)) => ErrorKind(*n),
            Some(KindSpec::Name(name)) => parse_named(
                "error-kind",
                name,
                ErrorKind::from_name,
                &[
                    "transient",
                    "unavailable",
                    "configuration",
                    "fatal",
                    "panicked",
                ],
            )?,
        };
        let offset = finite("offset", config.offset)?;
        finite("frequency", config.frequency)?;
        let noise = finite("noise", config.noise)?;
        if noise < 0.0 {
            return Err(PluginError::configuration(
                "invalid plugin config: `noise` must be >= 0 (ns, standard deviation)",
            ));
        }
        if !(0.0..=1e6).contains(&finite("hang-seconds", config.hang_seconds)?) {
            return Err(PluginError::configuration(
                "invalid plugin config: `hang-seconds` must be between 0 and 1000000",
            ));
        }
        if config.error_every == Some(0) {
            return Err(PluginError::configuration(
                "invalid plugin config: `error-every` must be at least 1",
            ));
        }

        let call = INIT_CALLS.fetch_add(1, Ordering::SeqCst) + 1;
        if call <= config.init_failures {
            return Err(PluginError::unavailable(format!(
                "simulated clock not present (init failure {call} of {})",
                config.init_failures
            )));
        }

        Ok(SimSource {
            method,
            timescale,
            leap,
            error_kind,
            offset_ns: (offset * 1e9).round() as i64,
            start_ns: realtime_now_ns(),
            rng: StdRng::seed_from_u64(config.seed),
            count: 0,
            config,
        })
    }
}

impl Source for SimSource {
    fn capabilities(&self) -> Result<Capabilities, PluginError> {
        let precision_ns = (self.config.noise.ceil() as u64).max(1);
        let mut caps = Capabilities::new(
            self.method,
            self.timescale,
            precision_ns,
            format!(
                "simulated clock: offset {} s, frequency {} ppm, noise {} ns",
                self.config.offset, self.config.frequency, self.config.noise
            ),
        );
        caps.extensions = serde_json::json!({ "device": "sim", "clock-name": "ntpd_sim" })
            .to_string()
            .into();
        Ok(caps)
    }

    fn sample(&mut self) -> Result<Sample, PluginError> {
        self.count += 1;
        let n = self.count;
        let c = &self.config;
        if c.abort_at == Some(n) {
            eprintln!("ntpd_sim: aborting the process at sample {n} (abort-at)");
            std::process::abort();
        }
        if c.panic_at == Some(n) {
            panic!("simulated panic at sample {n} (panic-at)");
        }
        if c.hang_at == Some(n) {
            std::thread::sleep(Duration::from_secs_f64(c.hang_seconds));
        }
        if c.unavailable_at.is_some_and(|at| n >= at) {
            return Err(PluginError::unavailable(format!(
                "simulated clock disappeared at sample {n} (unavailable-at)"
            )));
        }
        if c.error_every.is_some_and(|every| n.is_multiple_of(every)) {
            return Err(PluginError::new(
                self.error_kind,
                format!("simulated error at sample {n} (error-every)"),
            ));
        }

        let now = realtime_now_ns();
        let elapsed_ns = (now - self.start_ns) as f64;
        let drift_ns = (c.frequency * 1e-6 * elapsed_ns).round() as i64;
        let noise_ns = if c.noise > 0.0 {
            let z: f64 = self.rng.sample(StandardNormal);
            (z * c.noise).round() as i64
        } else {
            0
        };
        let mut sample = Sample::new(
            now,
            self.offset_ns + drift_ns + noise_ns,
            (3.0 * c.noise).ceil().max(1.0) as u64,
        );
        sample.leap = self.leap;
        Ok(sample)
    }
}

export_plugin!(SimPlugin);

#[cfg(test)]
mod tests {
    use super::*;

    fn init(json: &str) -> Result<SimSource, PluginError> {
        SimPlugin::init(InitContext::new(json, "test"))
    }

    #[test]
    fn offset_and_noise_are_as_configured() {
        let mut source = init(r#"{"offset": 0.25, "noise": 100, "seed": 7}"#).unwrap();
        let offsets: Vec<i64> = (0..200)
            .map(|_| source.sample().unwrap().offset_ns)
            .collect();
        let mean = offsets.iter().sum::<i64>() as f64 / offsets.len() as f64;
        assert!((mean - 250_000_000.0).abs() < 30.0, "mean {mean}");
        assert!(offsets.iter().all(|o| (o - 250_000_000).abs() < 600));
        assert!(
            offsets.iter().any(|o| *o != 250_000_000),
            "noise is applied"
        );
    }

    #[test]
    fn same_seed_same_noise() {
        let a: Vec<i64> = {
            let mut s = init(r#"{"noise": 50, "seed": 3}"#).unwrap();
            (0..10).map(|_| s.sample().unwrap().offset_ns).collect()
        };
        let b: Vec<i64> = {
            let mut s = init(r#"{"noise": 50, "seed": 3}"#).unwrap();
            (0..10).map(|_| s.sample().unwrap().offset_ns).collect()
        };
        assert_eq!(a, b);
    }

    #[test]
    fn error_every_uses_the_configured_kind() {
        let mut s = init(r#"{"error-every": 3, "error-kind": 42}"#).unwrap();
        assert!(s.sample().is_ok());
        assert!(s.sample().is_ok());
        assert_eq!(s.sample().unwrap_err().kind, ErrorKind(42));
        assert!(s.sample().is_ok());
    }

    #[test]
    fn bad_keys_and_values_are_configuration_errors() {
        for (json, needle) in [
            (r#"{"ofset": 1}"#, "ofset"),
            (r#"{"timescale": "gps"}"#, "timescale"),
            (r#"{"method": "fast"}"#, "method"),
            (r#"{"noise": -1}"#, "noise"),
            (r#"{"error-every": 0}"#, "error-every"),
        ] {
            let err = init(json).err().expect(json);
            assert_eq!(err.kind, ErrorKind::CONFIGURATION, "{json}");
            assert!(err.message.contains(needle), "{json}: {}", err.message);
        }
    }

    #[test]
    fn leap_and_capabilities_follow_config() {
        let mut s = init(r#"{"leap": "insert", "timescale": "tai", "method": "precise"}"#).unwrap();
        assert_eq!(s.sample().unwrap().leap, Leap::INSERT);
        let caps = s.capabilities().unwrap();
        assert_eq!(caps.method, ReadMethod::PRECISE);
        assert_eq!(caps.timescale, TimeScale::TAI);
    }
}
