//! # ntpd-plugin-api: time-source plugins for ntpd-host
//!
//! `ntpd-host` runs the ntpd-rs NTP daemon with extra time sources loaded
//! from shared libraries (`.so`). This crate is the contract between the host
//! and such a plugin, and the SDK a vendor writes one with.
//!
//! A plugin is a `cdylib` that exports one root module ([`PluginModule`]):
//!
//! - `info()`: name, vendor, version, description ([`PluginInfo`]);
//! - `init(request)`: takes the source's `[source.config]` table as JSON and
//!   returns a time source object or a [`PluginError`].
//!
//! The source object ([`TimeSource`]) offers `capabilities()` (reading
//! method, time scale, precision, poll range, description) and `sample()`,
//! which measures the reference against the system clock *inside the plugin,
//! at the moment of reading* and returns a [`Sample`].
//!
//! ## A complete minimal plugin
//!
//! `Cargo.toml`:
//!
//! ```toml
//! [package]
//! name = "my-clock"
//! version = "0.1.0"
//! edition = "2024"
//!
//! [lib]
//! crate-type = ["cdylib"]
//!
//! [dependencies]
//! ntpd-plugin-api = "1"
//! abi_stable = "=0.11.3"   # the export attribute names this crate directly
//! serde = { version = "1", features = ["derive"] }
//! ```
//!
//! `src/lib.rs`:
//!
//! ```no_run
//! use ntpd_plugin_api::{
//!     Capabilities, Info, InitContext, Plugin, PluginError, ReadMethod, Sample, Source,
//!     TimeScale, export_plugin, realtime_now_ns,
//! };
//!
//! #[derive(serde::Deserialize)]
//! #[serde(deny_unknown_fields, rename_all = "kebab-case")]
//! struct Config {
//!     /// Fixed offset of our "reference" in nanoseconds.
//!     offset_ns: i64,
//! }
//!
//! struct MyClock;
//!
//! struct MySource {
//!     offset_ns: i64,
//! }
//!
//! impl Plugin for MyClock {
//!     type Source = MySource;
//!
//!     fn info() -> Info {
//!         Info {
//!             name: "my-clock",
//!             vendor: "Example Ltd",
//!             version: env!("CARGO_PKG_VERSION"),
//!             description: "a reference that is always offset_ns ahead",
//!         }
//!     }
//!
//!     fn init(ctx: InitContext<'_>) -> Result<MySource, PluginError> {
//!         let config: Config = ctx.config()?; // a bad key is a configuration error
//!         Ok(MySource { offset_ns: config.offset_ns })
//!     }
//! }
//!
//! impl Source for MySource {
//!     fn capabilities(&self) -> Result<Capabilities, PluginError> {
//!         Ok(Capabilities::new(ReadMethod::OTHER, TimeScale::UTC, 1, "constant offset"))
//!     }
//!
//!     fn sample(&mut self) -> Result<Sample, PluginError> {
//!         // Read the system clock and the reference as close together as you can.
//!         let now = realtime_now_ns();
//!         Ok(Sample::new(now, self.offset_ns, 1))
//!     }
//! }
//!
//! export_plugin!(MyClock);
//! # fn main() {}
//! ```
//!
//! Build it with `cargo build --release`, then try it with
//! `ntpd-host probe target/release/libmy_clock.so --config '{"offset-ns": 1500}'`.
//! `docs/plugin-guide.md` in the ntpd-host repository walks through every
//! field, the conventions and the testing workflow.
//!
//! ## Conventions
//!
//! - **Sign**: [`Sample::offset_ns`] is *reference minus system*. A positive
//!   offset means the system clock is behind the reference and must be moved
//!   forward. (This is chrony's SOCK convention, which ntpd-rs shares.)
//! - **Time scale**: offsets are always against UTC. A reference that runs on
//!   TAI (most ptp4l-disciplined NIC clocks) subtracts TAI-UTC (37 s since
//!   2017) before reporting, and says [`TimeScale::TAI`] in its capabilities.
//! - **Units**: integer nanoseconds everywhere. An `f64` of seconds since 1970
//!   has a 238 ns step; do not compute offsets that way.
//! - **Errors**: choose the [`ErrorKind`] by what the host should do next
//!   (skip, re-init later, or stop). Messages are one line and name the
//!   device or key involved.
//! - **Threads**: the host calls a source from one thread at a time, possibly
//!   not the thread that created it ([`Source`] is `Send`). Calls may block
//!   (a slow device read); the host's timer does not wait on them.
//! - **Panics** are caught by the SDK in every entry point and reported as
//!   [`ErrorKind::PANICKED`]; the host goes on. Do not rely on this: a
//!   panic is a bug.
//!
//! ## Versioning
//!
//! Two versions, kept apart:
//!
//! - the **ABI version**, [`ABI_VERSION`] (`1.0.0`), is what a host checks
//!   when it loads a plugin. It changes only with the binary layout of the
//!   types in this crate, and then only its major number: any layout change
//!   (a field, a method, a root-module entry added, removed, reordered or
//!   retyped) is ABI 2.0.0. Its minor and patch stay 0 for the life of a
//!   major, because abi_stable refuses a plugin whose minor is older than the
//!   host's;
//! - the **SDK version**, this crate's own semver ([`SDK_VERSION`]), changes
//!   freely: documentation, helpers, new constants, new named values of the
//!   open enumerations, new `flags` bits, new `extensions` keys. A plugin
//!   built with any SDK of ABI 1 loads in any host of ABI 1, older or newer.
//!   The SDK version a plugin was built with is recorded in
//!   [`PluginInfo::sdk_version`] for display only.
//!
//! When the host loads a plugin, abi_stable checks, in order:
//!
//! 1. that both sides use a compatible abi_stable (this crate pins 0.11.3);
//! 2. the ABI version: the major numbers must be equal;
//! 3. the full layout of every type reachable from [`PluginModule`].
//!
//! New behaviour within ABI 1 arrives as new values of the open
//! enumerations, new bits in the `flags` words, or new keys in the
//! `extensions` JSON, all of which an older host or plugin ignores safely.
//! A host that refuses a plugin says so in one line naming both ABI versions.
//!
//! A host built against this crate never unloads a plugin library, and a
//! plugin has its own copy of the Rust standard library and of any runtime
//! it uses: pass no pointers, threads or async handles across the boundary
//! other than the types here.

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

mod abi;
pub mod sdk;

pub use abi::{
    Capabilities, ErrorKind, InitRequest, Leap, PluginError, PluginInfo, PluginModule,
    PluginModuleRef, ReadMethod, Sample, SourceBox, TimeScale, TimeSource, TimeSource_TO,
    UnknownName,
};
pub use sdk::{Info, InitContext, Plugin, Source, boxed_source, parse_config, realtime_now_ns};

/// Re-exported so hosts and plugins use exactly the pinned version.
pub use abi_stable;

/// The ABI version a plugin declares and a host checks at load (see
/// "Versioning"): only its major number ever changes, with the layout.
pub const ABI_VERSION: &str = "1.0.0";

/// The major number of [`ABI_VERSION`].
pub const ABI_MAJOR: u32 = 1;

/// The version of this SDK crate, as a plugin records it in
/// [`PluginInfo::sdk_version`]. Informational: it does not decide
/// compatibility.
pub const SDK_VERSION: &str = env!("CARGO_PKG_VERSION");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn abi_version_is_major_only() {
        let parts: Vec<u32> = ABI_VERSION
            .split('.')
            .map(|p| p.parse().expect("numeric"))
            .collect();
        assert_eq!(parts, [ABI_MAJOR, 0, 0]);
    }
}
