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
//! | `min-poll`, `max-poll` | log2 seconds | -1, 6 | the poll range reported in capabilities |
//!
//! Hostile-plugin injections, for the host's containment tests (each acts
//! at sample N, or from sample N on where it says so):
//!
//! | key | what the plugin does |
//! |---|---|
//! | `print-at` | prints a partial line, a forged event line and a 10 kB line on stdout and stderr, then samples normally |
//! | `huge-message-at` | fails with a 100 MB transient error message |
//! | `bad-utf8-at` | fails with a message that is not UTF-8 |
//! | `offset-max-at`, `offset-min-at` | reports an offset of `i64::MAX` / `i64::MIN` ns |
//! | `zero-bound-at` | reports an error bound of 0 ns |
//! | `epoch-at` | reports a system time of 1970-01-01 |
//! | `leak-mb` | from sample 1 on, leaks this many MiB per sample (touched, so it counts) |
//! | `spawn-at` | tries to start a process (`/bin/true`) and reports what it got, as a transient error |
//! | `set-clock-at` | tries to set the system clock (to its own current time, so a success changes it by microseconds at most) with `clock_settime` and `adjtimex(ADJ_FREQUENCY)` (the current frequency), and reports what it got, as a transient error. Test equipment: use it only where the clock may be touched, a test guest |
//!
//! Samples are numbered from 1 for each source object, so a re-initialised
//! source starts counting again.

#![deny(unsafe_code)]
// Tests compute statistics and compare exact values.
#![cfg_attr(
    test,
    allow(
        clippy::cast_precision_loss,
        clippy::cast_possible_wrap,
        clippy::float_cmp
    )
)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ntpd_plugin_api::{
    Capabilities, ErrorKind, Info, InitContext, Leap, Plugin, PluginError, ReadMethod, Sample,
    Source, TimeScale, export_plugin, realtime_now_ns,
};
use rand::{Rng, SeedableRng, rngs::StdRng};
use rand_distr::StandardNormal;
use serde::Deserialize;

/// An error kind given by name (`"transient"`, `"unknown(7)"`) or by number
/// (`7`).
#[derive(Deserialize, Clone, Copy, Debug)]
#[serde(untagged)]
enum KindSpec {
    Number(u32),
    Name(ErrorKind),
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
    timescale: TimeScale,
    #[serde(default = "default_method")]
    method: ReadMethod,
    #[serde(default = "default_leap")]
    leap: Leap,
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
    #[serde(default = "default_min_poll")]
    min_poll: i8,
    #[serde(default = "default_max_poll")]
    max_poll: i8,
    print_at: Option<u64>,
    huge_message_at: Option<u64>,
    bad_utf8_at: Option<u64>,
    offset_max_at: Option<u64>,
    offset_min_at: Option<u64>,
    zero_bound_at: Option<u64>,
    epoch_at: Option<u64>,
    #[serde(default)]
    leak_mb: u64,
    spawn_at: Option<u64>,
    set_clock_at: Option<u64>,
}

fn default_seed() -> u64 {
    1
}
fn default_timescale() -> TimeScale {
    TimeScale::UTC
}
fn default_method() -> ReadMethod {
    ReadMethod::EXTENDED
}
fn default_leap() -> Leap {
    Leap::NONE
}
fn default_hang_seconds() -> f64 {
    3600.0
}
fn default_min_poll() -> i8 {
    -1
}
fn default_max_poll() -> i8 {
    6
}

/// `init` calls made in this process, for `init-failures`.
static INIT_CALLS: AtomicU64 = AtomicU64::new(0);

/// The plugin type handed to `export_plugin!`.
pub struct SimPlugin;

/// One simulated clock.
pub struct SimSource {
    config: Config,
    error_kind: ErrorKind,
    /// Offset at init, ns.
    offset_ns: i64,
    /// System time at init, ns.
    start_ns: i64,
    rng: StdRng,
    /// Samples taken so far.
    count: u64,
    /// What `leak-mb` has leaked.
    leaked: Vec<Vec<u8>>,
}

/// Seconds as whole nanoseconds (the config's values are small).
#[allow(clippy::cast_possible_truncation)]
fn seconds_to_ns(seconds: f64) -> i64 {
    (seconds * 1e9).round() as i64
}

/// Checks one configured number.
fn check(key: &str, ok: bool, what: &str) -> Result<(), PluginError> {
    if ok {
        Ok(())
    } else {
        Err(PluginError::configuration(format!(
            "invalid plugin config: {key}: must be {what}"
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
        let error_kind = match config.error_kind {
            None => ErrorKind::TRANSIENT,
            Some(KindSpec::Number(n)) => ErrorKind(n),
            Some(KindSpec::Name(kind)) => kind,
        };
        check(
            "offset",
            config.offset.is_finite() && config.offset.abs() <= 1e6,
            "a number of seconds within +-1000000",
        )?;
        check(
            "frequency",
            config.frequency.is_finite() && config.frequency.abs() <= 1e6,
            "a number of ppm within +-1000000",
        )?;
        check(
            "noise",
            config.noise.is_finite() && (0.0..=1e9).contains(&config.noise),
            ">= 0 (ns, standard deviation)",
        )?;
        check(
            "hang-seconds",
            (0.0..=1e6).contains(&config.hang_seconds),
            "between 0 and 1000000",
        )?;
        check("error-every", config.error_every != Some(0), "at least 1")?;
        check(
            "max-poll",
            config.min_poll <= config.max_poll,
            "at least min-poll",
        )?;

        let call = INIT_CALLS.fetch_add(1, Ordering::SeqCst) + 1;
        if call <= config.init_failures {
            return Err(PluginError::unavailable(format!(
                "simulated clock not present (init failure {call} of {})",
                config.init_failures
            )));
        }

        Ok(SimSource {
            error_kind,
            offset_ns: seconds_to_ns(config.offset),
            start_ns: realtime_now_ns(),
            rng: StdRng::seed_from_u64(config.seed),
            count: 0,
            leaked: Vec::new(),
            config,
        })
    }
}

impl Source for SimSource {
    fn capabilities(&self) -> Result<Capabilities, PluginError> {
        let precision_ns = ns_bound(self.config.noise);
        let mut caps = Capabilities::new(
            self.config.method,
            self.config.timescale,
            precision_ns,
            format!(
                "simulated clock: offset {} s, frequency {} ppm, noise {} ns",
                self.config.offset, self.config.frequency, self.config.noise
            ),
        );
        caps.min_poll_log2 = self.config.min_poll;
        caps.max_poll_log2 = self.config.max_poll;
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
        if let Some(err) = hostile::act(c, n, &mut self.leaked) {
            return Err(err);
        }

        let now = realtime_now_ns();
        // Elapsed time since init: far below 2^52 ns.
        #[allow(clippy::cast_precision_loss)]
        let elapsed_s = (now - self.start_ns) as f64 * 1e-9;
        let drift_ns = seconds_to_ns(c.frequency * 1e-6 * elapsed_s);
        let noise_ns = if c.noise > 0.0 {
            let z: f64 = self.rng.sample(StandardNormal);
            seconds_to_ns(z * c.noise * 1e-9)
        } else {
            0
        };
        let mut sample = Sample::new(
            now,
            self.offset_ns + drift_ns + noise_ns,
            ns_bound(3.0 * c.noise),
        );
        sample.leap = c.leap;
        hostile::bend(c, n, &mut sample);
        Ok(sample)
    }
}

/// The hostile-plugin injections.
mod hostile {
    use std::io::Write;

    use ntpd_plugin_api::{PluginError, Sample};

    use super::Config;

    /// What happens at sample `n` before the sample is taken; an error ends
    /// the sample.
    pub(super) fn act(c: &Config, n: u64, leaked: &mut Vec<Vec<u8>>) -> Option<PluginError> {
        if c.leak_mb > 0 {
            // Touched pages, so they count against the memory limit.
            let mb = usize::try_from(c.leak_mb).unwrap_or(usize::MAX);
            leaked.push(vec![0x5a; mb << 20]);
        }
        if c.print_at == Some(n) {
            print_noise();
        }
        if c.huge_message_at == Some(n) {
            return Some(PluginError::transient("x".repeat(100 << 20)));
        }
        if c.bad_utf8_at == Some(n) {
            return Some(bad_utf8_error());
        }
        if c.spawn_at == Some(n) {
            let got = match std::process::Command::new("/bin/true").status() {
                Ok(status) => format!("spawn: ran, {status}"),
                Err(e) => format!("spawn: {e}"),
            };
            return Some(PluginError::transient(got));
        }
        if c.set_clock_at == Some(n) {
            return Some(PluginError::transient(crate::clock::try_to_set()));
        }
        None
    }

    /// What happens to a sample taken at `n`.
    pub(super) fn bend(c: &Config, n: u64, sample: &mut Sample) {
        if c.offset_max_at == Some(n) {
            sample.offset_ns = i64::MAX;
        }
        if c.offset_min_at == Some(n) {
            sample.offset_ns = i64::MIN;
        }
        if c.zero_bound_at == Some(n) {
            sample.error_ns = 0;
        }
        if c.epoch_at == Some(n) {
            sample.system_time_ns = 0;
        }
    }

    /// A partial line, a forged event and a long line, on both streams.
    fn print_noise() {
        let forged = r#"{"event":"sample","sample":{"system-time-ns":1,"offset-ns":999999999,"error-ns":1,"reference-error-ns":0,"leap":"none","readings":1,"flags":0},"delivered":true,"latency-ns":1}"#;
        let long = "y".repeat(10_000);
        let mut out = std::io::stdout().lock();
        let _ = write!(out, "partial stdout ");
        let _ = writeln!(out, "{forged}");
        let _ = writeln!(out, "{long}");
        let _ = out.flush();
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "partial stderr ");
        let _ = writeln!(err, "{forged}");
        let _ = err.flush();
    }

    /// An error whose message bytes are not UTF-8 (see
    /// [`crate::clock::not_utf8`]).
    fn bad_utf8_error() -> PluginError {
        PluginError {
            kind: ntpd_plugin_api::ErrorKind::TRANSIENT,
            message: crate::clock::not_utf8(b"bad \xff\xfe bytes"),
        }
    }
}

/// A non-negative number of ns rounded up, at least 1 (noise is checked
/// to be within 0..=1e9 at init).
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
fn ns_bound(ns: f64) -> u64 {
    ns.ceil().max(1.0) as u64
}

export_plugin!(SimPlugin);

/// The few calls a well-behaved plugin never makes, for the injections
/// above: the only `unsafe` in this crate.
#[allow(unsafe_code)]
mod clock {
    use ntpd_plugin_api::abi_stable::std_types::{RString, RVec};

    /// Tries to set the system clock to what it reads now, and the kernel
    /// frequency to what it is now; returns what each attempt got.
    pub(crate) fn try_to_set() -> String {
        use rustix::time::{ClockId, clock_gettime, clock_settime};
        let settime = match clock_settime(ClockId::Realtime, clock_gettime(ClockId::Realtime)) {
            Ok(()) => "clock_settime: succeeded".to_owned(),
            Err(e) => format!("clock_settime: {}", errno_name(e.raw_os_error())),
        };
        // SAFETY: `timex` is plain integers, for which all-zero is valid.
        let mut tx: libc::timex = unsafe { std::mem::zeroed() };
        // SAFETY: a valid, exclusive pointer to a timex; modes 0 only reads.
        let read = unsafe { libc::adjtimex(&raw mut tx) };
        let adjtimex = if read < 0 {
            format!("adjtimex(read): {}", errno_name(last_errno()))
        } else {
            tx.modes = libc::ADJ_FREQUENCY;
            // SAFETY: as above; ADJ_FREQUENCY sets the frequency it just read.
            match unsafe { libc::adjtimex(&raw mut tx) } {
                r if r >= 0 => "adjtimex(ADJ_FREQUENCY): succeeded".to_owned(),
                _ => format!("adjtimex(ADJ_FREQUENCY): {}", errno_name(last_errno())),
            }
        };
        format!("set-clock-at: {settime}; {adjtimex}")
    }

    fn last_errno() -> i32 {
        std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
    }

    fn errno_name(errno: i32) -> String {
        match errno {
            libc::EPERM => "EPERM".to_owned(),
            libc::EACCES => "EACCES".to_owned(),
            libc::EINVAL => "EINVAL".to_owned(),
            other => format!("errno {other}"),
        }
    }

    /// An `RString` holding `bytes` that are not UTF-8: what a buggy or
    /// hostile plugin can send.
    pub(crate) fn not_utf8(bytes: &[u8]) -> RString {
        let vec = RVec::from(bytes.to_vec());
        // SAFETY: deliberately breaks RString's UTF-8 invariant, inside this
        // test fixture only; the receiving host must read it as bytes.
        unsafe { RString::from_utf8_unchecked(vec) }
    }
}

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
            (r#"{"error-kind": "sleepy"}"#, "error-kind"),
            (r#"{"min-poll": 3, "max-poll": 2}"#, "max-poll"),
            (r#"{"leak-mb": "lots"}"#, "leak-mb"),
        ] {
            let err = init(json).err().expect(json);
            assert_eq!(err.kind, ErrorKind::CONFIGURATION, "{json}");
            assert!(err.message.contains(needle), "{json}: {}", err.message);
        }
    }

    #[test]
    fn leap_and_capabilities_follow_config() {
        let mut s = init(
            r#"{"leap": "insert", "timescale": "tai", "method": "precise", "min-poll": 0, "max-poll": 2}"#,
        )
        .unwrap();
        assert_eq!(s.sample().unwrap().leap, Leap::INSERT);
        let caps = s.capabilities().unwrap();
        assert_eq!(caps.method, ReadMethod::PRECISE);
        assert_eq!(caps.timescale, TimeScale::TAI);
        assert_eq!((caps.min_poll_log2, caps.max_poll_log2), (0, 2));
        let s = init(r#"{"error-kind": "unknown(9)"}"#).unwrap();
        assert_eq!(s.error_kind, ErrorKind(9));
    }

    #[test]
    fn hostile_injections_act_at_their_sample() {
        let mut s = init(
            r#"{"offset-max-at": 1, "offset-min-at": 2, "zero-bound-at": 3, "epoch-at": 4, "huge-message-at": 5, "bad-utf8-at": 6}"#,
        )
        .unwrap();
        assert_eq!(s.sample().unwrap().offset_ns, i64::MAX);
        assert_eq!(s.sample().unwrap().offset_ns, i64::MIN);
        assert_eq!(s.sample().unwrap().error_ns, 0);
        assert_eq!(s.sample().unwrap().system_time_ns, 0);
        assert_eq!(s.sample().unwrap_err().message.len(), 100 << 20);
        let e = s.sample().unwrap_err();
        assert!(std::str::from_utf8(&e.message.into_bytes()).is_err());
        assert!(s.sample().is_ok());
    }
}
