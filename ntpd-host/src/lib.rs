//! ntpd-host: the ntpd-rs NTP daemon with plugin time sources.
//!
//! The binary's pieces, as a library so they can be tested: loading plugins
//! ([`plugin`]), the `probe` command ([`probe`]), config translation
//! ([`config`]), the sock wire format ([`sock`]), backoff policy
//! ([`backoff`]).

#![forbid(unsafe_code)]

pub mod backoff;
pub mod config;
pub mod plugin;
pub mod probe;
pub mod sock;
