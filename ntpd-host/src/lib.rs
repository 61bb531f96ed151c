//! ntpd-host: the ntpd-rs NTP daemon with plugin time sources.
//!
//! The binary's pieces, as a library so they can be tested:
//! - [`plugin`]: loading plugin libraries safely;
//! - [`probe`]: the `probe` command;
//! - [`config`]: reading the ntpd-rs config and translating plugin sources
//!   into `sock` sources (pure);
//! - [`sock`]: the sock wire format (pure);
//! - [`backoff`]: restart and re-init backoff (pure);
//! - [`worker`]: the per-source worker process;
//! - [`supervisor`]: starting, following and restarting workers;
//! - [`status`]: the status socket and the `status` view;
//! - [`host`]: `run`, `bridge`, `validate` and `status`, wired together.

#![forbid(unsafe_code)]

pub mod backoff;
pub mod config;
pub mod host;
pub mod plugin;
pub mod probe;
pub mod sock;
pub mod status;
pub mod supervisor;
pub mod worker;
