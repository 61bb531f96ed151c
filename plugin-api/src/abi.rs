//! The v1 binary contract: every type that crosses the host/plugin boundary.
//!
//! Everything here is `#[repr(C)]` (or `#[repr(transparent)]`) and derives
//! [`StableAbi`], so the host checks the whole layout when it loads a plugin.
//! The layout of ABI v1 is frozen: any change to a type in this module is a
//! new ABI major version, [`ABI_VERSION`](crate::ABI_VERSION) (see the crate
//! documentation, "Versioning"). Room to grow without a layout change is
//! built in:
//!
//! - the enumerations are *open*: a `u32` newtype whose unknown values a
//!   host must tolerate, so a newer plugin can report a kind an older host
//!   does not know;
//! - [`Capabilities`], [`Sample`] and [`InitRequest`] carry a `flags` word
//!   (no bits defined in v1; senders set 0, receivers ignore unknown bits);
//! - [`Capabilities`] and [`InitRequest`] carry an `extensions` string: a JSON
//!   object (or empty) for optional, named additions.

// The derives and `#[sabi_trait]` expand to `unsafe impl` blocks and to
// helper items; rustc 1.95 also warns `non_local_definitions` on them.
#![allow(unsafe_code, non_local_definitions, unused_qualifications)]

use std::fmt;

use abi_stable::{
    StableAbi, declare_root_module_statics,
    library::RootModule,
    sabi_trait,
    sabi_types::VersionStrings,
    std_types::{RBox, RResult, RStr, RString},
};

/// Defines an open enumeration: a transparent `u32` with named constants.
macro_rules! open_enum {
    (
        $(#[$meta:meta])*
        $name:ident {
            $( $(#[$cmeta:meta])* $konst:ident = $value:literal => $text:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[repr(transparent)]
        #[derive(StableAbi, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub u32);

        impl $name {
            $( $(#[$cmeta])* pub const $konst: Self = Self($value); )+

            /// The lower-case name of a known value, `None` for a value this
            /// version does not know.
            pub const fn known_name(self) -> Option<&'static str> {
                match self.0 {
                    $( $value => Some($text), )+
                    _ => None,
                }
            }

            /// Parses a lower-case name as written in configs and output.
            pub fn from_name(name: &str) -> Option<Self> {
                match name {
                    $( $text => Some(Self::$konst), )+
                    _ => None,
                }
            }

            /// Every value this version knows, in declaration order.
            pub const KNOWN: &'static [Self] = &[$(Self::$konst),+];
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self.known_name() {
                    Some(name) => f.write_str(name),
                    None => write!(f, "unknown({})", self.0),
                }
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(self, f)
            }
        }

        impl std::str::FromStr for $name {
            type Err = UnknownName;

            /// Parses a name as [`Display`](fmt::Display) writes it: a known
            /// name, or `unknown(N)` for any number.
            fn from_str(text: &str) -> Result<Self, UnknownName> {
                Self::from_name(text)
                    .or_else(|| {
                        text.strip_prefix("unknown(")
                            .and_then(|rest| rest.strip_suffix(')'))
                            .and_then(|n| n.parse().ok())
                            .map(Self)
                    })
                    .ok_or_else(|| UnknownName {
                        what: stringify!($name),
                        valid: Self::KNOWN.iter().map(|k| k.to_string()).collect(),
                    })
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

/// A name that is not one of an open enumeration's (see the `FromStr` impls).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownName {
    what: &'static str,
    valid: Vec<String>,
}

impl fmt::Display for UnknownName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "not a {} name; valid: {}, or unknown(N)",
            self.what,
            self.valid.join(", ")
        )
    }
}

impl std::error::Error for UnknownName {}

open_enum! {
    /// How the plugin reads its reference clock.
    ReadMethod {
        /// Anything else (a plugin that is not a PHC, or a method without a name here).
        OTHER = 0 => "other",
        /// A hardware cross-timestamp (`PTP_SYS_OFFSET_PRECISE`): reference and
        /// system time captured at the same instant.
        PRECISE = 1 => "precise",
        /// Readings bracketed by system timestamps taken by the driver
        /// (`PTP_SYS_OFFSET_EXTENDED`).
        EXTENDED = 2 => "extended",
        /// Readings bracketed by system timestamps taken by the kernel around
        /// the driver call (`PTP_SYS_OFFSET`).
        STANDARD = 3 => "standard",
    }
}

open_enum! {
    /// The time scale the reference clock itself runs on.
    ///
    /// Informational: samples are always reported against UTC (see
    /// [`Sample::offset_ns`]); a plugin whose reference runs TAI converts
    /// before it reports.
    TimeScale {
        /// Coordinated Universal Time, as CLOCK_REALTIME.
        UTC = 0 => "utc",
        /// International Atomic Time (UTC + 37 s since 2017).
        TAI = 1 => "tai",
    }
}

open_enum! {
    /// Leap-second announcement, numbered as in the ntpd-rs/chrony SOCK
    /// protocol.
    Leap {
        /// No leap second pending.
        NONE = 0 => "none",
        /// A leap second will be inserted at the end of the current UTC day.
        INSERT = 1 => "insert",
        /// A leap second will be deleted at the end of the current UTC day.
        DELETE = 2 => "delete",
        /// The reference does not know (not synchronised).
        UNKNOWN = 3 => "unknown",
    }
}

open_enum! {
    /// What kind of failure a [`PluginError`] is, which decides what the host
    /// does next.
    ///
    /// A host treats a value it does not know like [`ErrorKind::TRANSIENT`]:
    /// it skips that sample and counts the error under its number.
    ErrorKind {
        /// This sample failed; the next may work (EINTR, EBUSY, a bad batch).
        /// The host skips the sample.
        TRANSIENT = 1 => "transient",
        /// The reference is gone (device removed, ENODEV). The host drops the
        /// source object and calls `init` again later, with backoff.
        UNAVAILABLE = 2 => "unavailable",
        /// The configuration cannot work (bad key, no permission). The host
        /// stops this source and says why; restarting would not help.
        CONFIGURATION = 3 => "configuration",
        /// Any other unrecoverable failure. The host stops this source.
        FATAL = 4 => "fatal",
        /// The plugin panicked; the SDK caught it at the boundary. The host
        /// counts it and goes on sampling.
        PANICKED = 5 => "panicked",
        /// The reference's time was disrupted (a live migration of the
        /// virtual machine, the platform's disruption marker changed): the
        /// samples before this one no longer hold. The host skips this
        /// sample, counts it, and marks the error bounds it publishes as
        /// disrupted until fresh samples arrive. (SDK 1.1; a host of an
        /// older SDK treats it as transient.)
        DISRUPTED = 6 => "disrupted",
    }
}

/// Who the plugin is. Returned by [`PluginModule::info`]; static for the life
/// of the library.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq, Eq)]
pub struct PluginInfo {
    /// Short machine-friendly name, e.g. `ptp`.
    pub name: RString,
    /// Who ships it, e.g. `ntpd-host project` or a company name.
    pub vendor: RString,
    /// The plugin's own version (semver recommended).
    pub version: RString,
    /// One line saying what it is.
    pub description: RString,
    /// The version of the `ntpd-plugin-api` SDK crate the plugin was built
    /// with (the SDK fills this in). Informational: compatibility is decided
    /// by the ABI version ([`ABI_VERSION`](crate::ABI_VERSION)), not by this.
    pub sdk_version: RString,
}

/// What the host passes to [`PluginModule::init`].
#[repr(C)]
#[derive(StableAbi, Clone, Copy, Debug)]
pub struct InitRequest<'a> {
    /// The plugin's `[source.config]` table as a JSON object (`{}` when the
    /// table is absent).
    pub config_json: RStr<'a>,
    /// The host's own version, for log messages and workarounds.
    pub host_version: RStr<'a>,
    /// No bits are defined in v1; a host sends 0 and a plugin ignores
    /// unknown bits.
    pub flags: u64,
    /// A JSON object with optional named additions, or empty. None are
    /// defined in v1.
    pub extensions: RStr<'a>,
}

/// What a source can do, reported by [`TimeSource::capabilities`]. A source
/// decides this once, at `init`; it does not change between samples.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq, Eq)]
pub struct Capabilities {
    /// The reading method the source uses.
    pub method: ReadMethod,
    /// The time scale the reference runs on (samples are still UTC-based).
    pub timescale: TimeScale,
    /// The source's own estimate of its precision (one standard deviation of
    /// a sample's offset), in nanoseconds. The host uses it as the default
    /// `precision` of the source.
    pub precision_ns: u64,
    /// The shortest poll interval the source supports, log2 seconds.
    pub min_poll_log2: i8,
    /// The longest poll interval the source supports, log2 seconds.
    pub max_poll_log2: i8,
    /// Human-readable description: device, driver, method details.
    pub description: RString,
    /// No bits are defined in v1; a plugin sends 0 and a host ignores
    /// unknown bits.
    pub flags: u64,
    /// A JSON object with optional named additions (for example
    /// `{"device": "/dev/ptp0", "clock-name": "ptp_kvm"}`), or empty.
    pub extensions: RString,
}

/// One measurement of the reference against the system clock.
///
/// Measured inside the plugin at the moment of reading, so the time it takes
/// to reach the daemon cannot bias it.
#[repr(C)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sample {
    /// The system time (CLOCK_REALTIME) at which the offset holds, in
    /// nanoseconds since 1970-01-01 UTC.
    pub system_time_ns: i64,
    /// Reference minus system clock, in nanoseconds, with the reference
    /// expressed in UTC. Positive means the system clock is behind.
    pub offset_ns: i64,
    /// A bound on the error of `offset_ns` added by the measurement itself,
    /// in nanoseconds (for bracketed reads, half the bracket width; never
    /// less than the clock resolution).
    pub error_ns: u64,
    /// A bound on the reference clock's own error against true time, in
    /// nanoseconds, when the platform publishes one (for example AWS ENA's
    /// `phc_error_bound`, or a vmclock device's maximum error); 0 when it is
    /// not known. Not part of `error_ns`: the host adds the two where it
    /// needs a total bound.
    pub reference_error_ns: u64,
    /// Leap-second announcement from the reference.
    pub leap: Leap,
    /// How many raw readings were combined into this sample (at least 1).
    pub readings: u32,
    /// No bits are defined in v1; a plugin sends 0 and a host ignores
    /// unknown bits.
    pub flags: u64,
}

/// An error returned by a plugin entry point.
#[repr(C)]
#[derive(StableAbi, Clone, PartialEq, Eq)]
pub struct PluginError {
    /// What kind of failure this is; decides the host's reaction.
    pub kind: ErrorKind,
    /// One line for a human; names the device or key involved.
    pub message: RString,
}

/// The plugin's time source object, created by `init` and owned by the host.
///
/// The host calls it from one thread at a time. Dropping it (the host does so
/// before re-initialising) must release the device.
#[sabi_trait]
pub trait TimeSource: Send {
    /// What this source does; see [`Capabilities`].
    fn capabilities(&self) -> RResult<Capabilities, PluginError>;

    /// Takes one measurement now.
    #[sabi(last_prefix_field)]
    fn sample(&mut self) -> RResult<Sample, PluginError>;
}

/// An owned, type-erased [`TimeSource`] as it crosses the boundary.
pub type SourceBox = TimeSource_TO<'static, RBox<()>>;

/// The root module every plugin library exports (through
/// [`export_plugin!`](crate::export_plugin)).
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = PluginModuleRef)))]
#[sabi(missing_field(panic))]
pub struct PluginModule {
    /// Who the plugin is.
    pub info: extern "C" fn() -> PluginInfo,
    /// Creates a source from its configuration.
    #[sabi(last_prefix_field)]
    pub init: extern "C" fn(request: InitRequest<'_>) -> RResult<SourceBox, PluginError>,
}

impl RootModule for PluginModuleRef {
    declare_root_module_statics! {PluginModuleRef}
    const BASE_NAME: &'static str = "ntpd_plugin";
    const NAME: &'static str = "ntpd_plugin";
    // The ABI version, not the crate's: SDK releases never change it.
    const VERSION_STRINGS: VersionStrings = VersionStrings::new(crate::ABI_VERSION);
}
