//! ntpd-host: the ntpd-rs NTP daemon with plugin time sources.
//!
//! The binary's pieces, as a library so they can be tested: loading plugins
//! ([`plugin`]) and the `probe` command ([`probe`]).

#![forbid(unsafe_code)]

pub mod plugin;
pub mod probe;
