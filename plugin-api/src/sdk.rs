//! The vendor SDK: write a plugin in ordinary, safe Rust.
//!
//! Implement [`Plugin`] and [`Source`], then call
//! [`export_plugin!`](crate::export_plugin) once. The SDK builds the root
//! module, parses nothing for you that you did not ask for, and catches a
//! panic in every entry point, turning it into an [`ErrorKind::PANICKED`]
//! error: a panic that crossed the boundary would end the host process.

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};

use abi_stable::{
    prefix_type::PrefixTypeTrait,
    sabi_trait::TD_Opaque,
    std_types::{RResult, RString},
};
use serde::de::DeserializeOwned;

use crate::abi::{
    Capabilities, ErrorKind, InitRequest, PluginError, PluginInfo, PluginModule, PluginModuleRef,
    Sample, SourceBox, TimeSource, TimeSource_TO,
};

/// Static facts about a plugin, for [`Plugin::info`].
#[derive(Clone, Debug)]
pub struct Info {
    /// Short machine-friendly name, e.g. `ptp`.
    pub name: &'static str,
    /// Who ships it.
    pub vendor: &'static str,
    /// The plugin's version; `env!("CARGO_PKG_VERSION")` is the usual choice.
    pub version: &'static str,
    /// One line saying what it is.
    pub description: &'static str,
}

/// What `init` receives: the plugin's configuration and facts about the host.
#[derive(Clone, Copy, Debug)]
pub struct InitContext<'a> {
    config_json: &'a str,
    host_version: &'a str,
}

impl<'a> InitContext<'a> {
    /// A context as the host would pass it; useful in a plugin's own tests.
    pub fn new(config_json: &'a str, host_version: &'a str) -> Self {
        Self {
            config_json,
            host_version,
        }
    }

    /// The `[source.config]` table as JSON text (`{}` when absent).
    pub fn config_json(&self) -> &'a str {
        self.config_json
    }

    /// The host's version string.
    pub fn host_version(&self) -> &'a str {
        self.host_version
    }

    /// Deserializes the configuration into `T`.
    ///
    /// A failure is a [`ErrorKind::CONFIGURATION`] error of one line that
    /// names the key by its path, then serde's message: `invalid plugin
    /// config: readings: invalid value: integer `30`, expected ...`, or
    /// `invalid plugin config: devcie: unknown field `devcie`, expected one of
    /// ...`. Use `#[serde(deny_unknown_fields, rename_all = "kebab-case")]` on
    /// `T` so typos are caught and keys follow ntpd-rs conventions; a
    /// `Deserialize` impl of a field's own type can check its range and
    /// word the message (`serde::de::Error::custom`).
    pub fn config<T: DeserializeOwned>(&self) -> Result<T, PluginError> {
        parse_config(self.config_json).map_err(PluginError::configuration)
    }
}

/// Parses a plugin configuration (JSON text; empty means `{}`) into `T`.
/// The error is one line: `invalid plugin config: <key path>: <message>`
/// (without the key path for a problem with the whole document).
pub fn parse_config<T: DeserializeOwned>(config_json: &str) -> Result<T, String> {
    let text = if config_json.trim().is_empty() {
        "{}"
    } else {
        config_json
    };
    let mut de = serde_json::Deserializer::from_str(text);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        // A key may hold any character (a line break, a quote): escaped.
        let path = e.path().to_string().escape_debug().to_string();
        let message = one_line(&strip_position(&e.inner().to_string()));
        if path == "." || path.is_empty() {
            format!("invalid plugin config: {message}")
        } else {
            format!("invalid plugin config: {path}: {message}")
        }
    })?;
    de.end().map_err(|e| {
        format!(
            "invalid plugin config: {}",
            one_line(&strip_position(&e.to_string()))
        )
    })?;
    Ok(value)
}

/// serde_json appends " at line L column C" to its messages; the position is
/// noise in a one-line config error about a key.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(at) if message[at..].contains(" column ") => message[..at].to_owned(),
        _ => message.to_owned(),
    }
}

/// Collapses white space (and line breaks) to single spaces.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A plugin: its identity and how it creates sources.
pub trait Plugin {
    /// The source type `init` creates.
    type Source: Source;

    /// Who the plugin is.
    fn info() -> Info;

    /// Creates a source from its configuration. Detect capabilities here,
    /// once; report a missing device as [`ErrorKind::UNAVAILABLE`] so the
    /// host retries later.
    fn init(ctx: InitContext<'_>) -> Result<Self::Source, PluginError>;
}

/// A time source created by [`Plugin::init`].
///
/// Dropping it must release whatever it holds (close the device).
pub trait Source: Send + 'static {
    /// What this source does. Decided at init; cheap to call.
    fn capabilities(&self) -> Result<Capabilities, PluginError>;

    /// Takes one measurement now.
    fn sample(&mut self) -> Result<Sample, PluginError>;
}

/// Runs `f`, turning a panic into an [`ErrorKind::PANICKED`] error that
/// names the entry point.
fn guard<T>(entry: &str, f: impl FnOnce() -> Result<T, PluginError>) -> RResult<T, PluginError> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(result) => result.into(),
        Err(payload) => RResult::RErr(PluginError::new(
            ErrorKind::PANICKED,
            format!("plugin panicked in {entry}: {}", panic_message(&*payload)),
        )),
    }
}

/// The text of a panic payload, when it has one.
fn panic_message(payload: &(dyn Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "(non-string panic payload)"
    }
}

/// Adapts a [`Source`] to the ABI trait, catching panics.
struct Guarded<S>(S);

impl<S: Source> TimeSource for Guarded<S> {
    fn capabilities(&self) -> RResult<Capabilities, PluginError> {
        guard("capabilities()", || self.0.capabilities())
    }

    fn sample(&mut self) -> RResult<Sample, PluginError> {
        guard("sample()", || self.0.sample())
    }
}

extern "C" fn info_entry<P: Plugin>() -> PluginInfo {
    // `info` cannot report an error; a panicking one is reported in the
    // description instead of crossing the boundary.
    match catch_unwind(P::info) {
        Ok(info) => PluginInfo {
            name: info.name.into(),
            vendor: info.vendor.into(),
            version: info.version.into(),
            description: info.description.into(),
            sdk_version: crate::SDK_VERSION.into(),
        },
        Err(payload) => PluginInfo {
            name: "unknown".into(),
            vendor: "unknown".into(),
            version: "0.0.0".into(),
            description: format!("plugin panicked in info(): {}", panic_message(&*payload)).into(),
            sdk_version: crate::SDK_VERSION.into(),
        },
    }
}

extern "C" fn init_entry<P: Plugin>(request: InitRequest<'_>) -> RResult<SourceBox, PluginError> {
    let ctx = InitContext::new(request.config_json.as_str(), request.host_version.as_str());
    guard("init()", || {
        P::init(ctx).map(|source| TimeSource_TO::from_value(Guarded(source), TD_Opaque))
    })
}

/// Builds the root module for `P`. Called by
/// [`export_plugin!`](crate::export_plugin); not for direct use.
#[doc(hidden)]
pub fn root_module<P: Plugin>() -> PluginModuleRef {
    PluginModule {
        info: info_entry::<P>,
        init: init_entry::<P>,
    }
    .leak_into_prefix()
}

/// Builds a [`SourceBox`] from a [`Source`] in the same process, with the
/// same panic guard a loaded plugin gets. For a plugin's own tests and for
/// hosts that link a source statically.
pub fn boxed_source<S: Source>(source: S) -> SourceBox {
    TimeSource_TO::from_value(Guarded(source), TD_Opaque)
}

/// Exports `$plugin` (a type implementing [`Plugin`](crate::Plugin)) as this
/// library's ntpd-host plugin. Use it once, in a `cdylib` crate.
///
/// The crate must also depend on `abi_stable` directly, pinned to the same
/// version as `ntpd-plugin-api` (`abi_stable = "=0.11.3"`): the attribute
/// that exports the module names that crate by its absolute path.
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        #[doc(hidden)]
        #[allow(missing_docs)]
        pub mod __ntpd_plugin_export {
            #[allow(unused_imports)]
            use super::*;

            /// The library's root module, found by the host through abi_stable.
            #[::abi_stable::export_root_module]
            pub fn ntpd_plugin_root_module() -> $crate::PluginModuleRef {
                $crate::sdk::root_module::<$plugin>()
            }
        }
    };
}

impl PluginError {
    /// An error of `kind` with a one-line message.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: RString::from(message.into()),
        }
    }

    /// A [`ErrorKind::TRANSIENT`] error.
    pub fn transient(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::TRANSIENT, message)
    }

    /// An [`ErrorKind::UNAVAILABLE`] error.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::UNAVAILABLE, message)
    }

    /// A [`ErrorKind::CONFIGURATION`] error.
    pub fn configuration(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::CONFIGURATION, message)
    }

    /// A [`ErrorKind::FATAL`] error.
    pub fn fatal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::FATAL, message)
    }

    /// An [`ErrorKind::DISRUPTED`] error.
    pub fn disrupted(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::DISRUPTED, message)
    }
}

impl std::fmt::Display for PluginError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} error: {}", self.kind, self.message)
    }
}

impl std::fmt::Debug for PluginError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PluginError({}, {:?})", self.kind, self.message.as_str())
    }
}

impl std::error::Error for PluginError {}

impl Capabilities {
    /// Capabilities with the given essentials, the widest poll range the host
    /// allows (-1 to 6), no flags and no extensions.
    pub fn new(
        method: crate::ReadMethod,
        timescale: crate::TimeScale,
        precision_ns: u64,
        description: impl Into<String>,
    ) -> Self {
        Self {
            method,
            timescale,
            precision_ns,
            min_poll_log2: -1,
            max_poll_log2: 6,
            description: RString::from(description.into()),
            flags: 0,
            extensions: RString::new(),
        }
    }
}

impl Sample {
    /// A sample from one reading, with no leap second pending.
    pub fn new(system_time_ns: i64, offset_ns: i64, error_ns: u64) -> Self {
        Self {
            system_time_ns,
            offset_ns,
            error_ns,
            reference_error_ns: 0,
            leap: crate::Leap::NONE,
            readings: 1,
            flags: 0,
        }
    }
}

/// The system clock (CLOCK_REALTIME) now, in nanoseconds since 1970.
pub fn realtime_now_ns() -> i64 {
    match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_nanos()).unwrap_or(i64::MAX),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Leap, ReadMethod, TimeScale};

    struct Panicky;

    impl Source for Panicky {
        fn capabilities(&self) -> Result<Capabilities, PluginError> {
            panic!("caps boom");
        }
        fn sample(&mut self) -> Result<Sample, PluginError> {
            panic!("sample boom {}", 42);
        }
    }

    struct Fine(i64);

    impl Source for Fine {
        fn capabilities(&self) -> Result<Capabilities, PluginError> {
            Ok(Capabilities::new(
                ReadMethod::PRECISE,
                TimeScale::TAI,
                5,
                "fine",
            ))
        }
        fn sample(&mut self) -> Result<Sample, PluginError> {
            self.0 += 1;
            if self.0 == 2 {
                return Err(PluginError::transient("second fails"));
            }
            Ok(Sample::new(realtime_now_ns(), self.0, 1))
        }
    }

    #[test]
    fn panics_become_panicked_errors_naming_the_entry_point() {
        let mut s = boxed_source(Panicky);
        let e = s.sample().into_result().unwrap_err();
        assert_eq!(e.kind, ErrorKind::PANICKED);
        assert!(
            e.message.contains("sample()") && e.message.contains("sample boom 42"),
            "{e}"
        );
        let e = s.capabilities().into_result().unwrap_err();
        assert!(
            e.message.contains("capabilities()") && e.message.contains("caps boom"),
            "{e}"
        );
        // The source is still usable after a caught panic.
        assert_eq!(
            s.sample().into_result().unwrap_err().kind,
            ErrorKind::PANICKED
        );
    }

    #[test]
    fn results_and_errors_cross_unchanged() {
        let mut s = boxed_source(Fine(0));
        assert_eq!(s.sample().into_result().unwrap().offset_ns, 1);
        assert_eq!(
            s.sample().into_result().unwrap_err(),
            PluginError::transient("second fails")
        );
        assert_eq!(s.sample().into_result().unwrap().offset_ns, 3);
        let caps = s.capabilities().into_result().unwrap();
        assert_eq!(
            (caps.method, caps.timescale, caps.precision_ns),
            (ReadMethod::PRECISE, TimeScale::TAI, 5)
        );
        assert_eq!((caps.min_poll_log2, caps.max_poll_log2), (-1, 6));
    }

    #[test]
    fn open_enums_tolerate_unknown_values() {
        assert_eq!(ErrorKind(99).to_string(), "unknown(99)");
        assert_eq!(ErrorKind(99).known_name(), None);
        assert_eq!(
            ErrorKind::from_name("unavailable"),
            Some(ErrorKind::UNAVAILABLE)
        );
        assert_eq!(
            ReadMethod::from_name("standard"),
            Some(ReadMethod::STANDARD)
        );
        assert_eq!(Leap::from_name("bogus"), None);
        for k in ErrorKind::KNOWN {
            assert_eq!(ErrorKind::from_name(&k.to_string()), Some(*k));
        }
        // Numbering is part of the wire contract.
        assert_eq!(
            (
                Leap::NONE.0,
                Leap::INSERT.0,
                Leap::DELETE.0,
                Leap::UNKNOWN.0
            ),
            (0, 1, 2, 3)
        );
        assert_eq!(
            (
                ErrorKind::TRANSIENT.0,
                ErrorKind::PANICKED.0,
                ErrorKind::DISRUPTED.0
            ),
            (1, 5, 6)
        );
    }

    #[test]
    fn config_errors_are_configuration_errors_naming_the_key() {
        #[derive(serde::Deserialize, Debug)]
        #[serde(deny_unknown_fields, rename_all = "kebab-case")]
        #[allow(dead_code)]
        struct C {
            poll_me: u32,
        }
        let e = InitContext::new(r#"{"pol-me": 1}"#, "h")
            .config::<C>()
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::CONFIGURATION);
        assert!(e.message.contains("pol-me"), "{e}");
        let ok: C = InitContext::new(r#"{"poll-me": 3}"#, "h").config().unwrap();
        assert_eq!(ok.poll_me, 3);
        // An empty config is an empty object.
        let e = InitContext::new("", "h").config::<C>().unwrap_err();
        assert!(e.message.contains("poll-me"), "{e}");
        // A bad value names its key by path, on one line, without serde_json's
        // position.
        let e = InitContext::new("{\n \"poll-me\": \"x\"}", "h")
            .config::<C>()
            .unwrap_err();
        assert_eq!(
            e.message.as_str(),
            "invalid plugin config: poll-me: invalid type: string \"x\", expected u32"
        );
        let e = InitContext::new("{\"poll-me\": 1} x", "h")
            .config::<C>()
            .unwrap_err();
        assert_eq!(
            e.message.as_str(),
            "invalid plugin config: trailing characters"
        );
    }

    #[test]
    fn open_enums_round_trip_through_serde_and_names() {
        for k in ErrorKind::KNOWN.iter().copied().chain([ErrorKind(42)]) {
            let json = serde_json::to_string(&k).unwrap();
            assert_eq!(serde_json::from_str::<ErrorKind>(&json).unwrap(), k);
            assert_eq!(k.to_string().parse::<ErrorKind>().unwrap(), k);
        }
        assert_eq!(
            serde_json::to_string(&ReadMethod::EXTENDED).unwrap(),
            "\"extended\""
        );
        assert_eq!(serde_json::to_string(&Leap(7)).unwrap(), "\"unknown(7)\"");
        let e = "sideways".parse::<TimeScale>().unwrap_err().to_string();
        assert_eq!(e, "not a TimeScale name; valid: utc, tai, or unknown(N)");
    }
}
