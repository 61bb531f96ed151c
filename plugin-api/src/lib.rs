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
//! The contract's version is this crate's version, [`API_VERSION`]. When the
//! host loads a plugin, abi_stable checks, in order:
//!
//! 1. that both sides use a compatible abi_stable (this crate pins 0.11.3);
//! 2. the version: the major versions must be equal, and the host's minor
//!    version must not be newer than the plugin's (a 1.2 host refuses a
//!    plugin built against 1.1, and loads one built against 1.3);
//! 3. the full layout of every type reachable from [`PluginModule`].
//!
//! The v1 layout is frozen for the life of the 1.x series: fields and
//! methods are never added, removed or reordered within it. New behaviour
//! arrives as new values of the open enumerations, new bits in the `flags`
//! words, or new keys in the `extensions` JSON, all of which a v1 host or
//! plugin ignores safely. Any layout change is 2.0.0, and a host says so in
//! one line when it refuses a plugin: it names both versions.
//!
//! A host built against this crate never unloads a plugin library, and a
//! plugin has its own copy of the Rust standard library and of any runtime
//! it uses: pass no pointers, threads or async handles across the boundary
//! other than the types here.

#![deny(unsafe_code)]

mod abi;
pub mod sdk;

pub use abi::{
    Capabilities, ErrorKind, InitRequest, Leap, PluginError, PluginInfo, PluginModule,
    PluginModuleRef, ReadMethod, Sample, SourceBox, TimeScale, TimeSource, TimeSource_TO,
};
pub use sdk::{Info, InitContext, Plugin, Source, boxed_source, realtime_now_ns};

/// Re-exported so hosts and plugins use exactly the pinned version.
pub use abi_stable;

/// The version of this contract, as a plugin records it in
/// [`PluginInfo::api_version`].
pub const API_VERSION: &str = env!("CARGO_PKG_VERSION");
