//! ntpd-host: the ntpd-rs NTP daemon with plugin time sources.
//!
//! The binary's pieces, as a library so they can be tested. The layout is
//! ntpd-rs's: decisions apart from I/O.
//!
//! - [`config`]: the ntpd-rs config with plugin sources, and the derived
//!   config ntpd-rs runs on (pure);
//! - [`decide`]: state machines and policies (pure): what a worker does on
//!   each plugin result, when the supervisor restarts a worker, what state
//!   a source is in;
//! - [`protocol`]: what crosses process boundaries (worker spec, events
//!   and exit codes; the SOCK datagram; the status document);
//! - [`daemon`]: the I/O: worker processes, the supervisor, the embedded
//!   ntpd-rs, the status socket, and the commands that wire them together;
//! - [`shm`]: the one `unsafe` module, mapping the ClockBound segment;
//! - [`loader`]: loading plugin libraries safely;
//! - [`probe`]: the `probe` command;
//! - [`cli`]: the command line; [`error`]: errors and exit statuses.

#![deny(unsafe_code)]
// Tests compare floats they built from exact values, and build fixtures
// from small literals.
#![cfg_attr(
    test,
    allow(
        clippy::float_cmp,
        clippy::cast_possible_truncation,
        clippy::cast_possible_wrap,
        clippy::cast_sign_loss
    )
)]

pub mod cli;
pub mod config;
pub mod daemon;
pub mod decide;
pub mod error;
pub mod loader;
pub mod probe;
pub mod protocol;
#[allow(unsafe_code)]
pub mod shm;
