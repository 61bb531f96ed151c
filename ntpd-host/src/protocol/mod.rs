//! What crosses a process boundary, and in which shape:
//!
//! - [`worker`]: supervisor and worker (spec, events, exit codes);
//! - [`sock`]: a worker and the ntpd-rs daemon (the SOCK datagram);
//! - [`status`]: the host and `ntpd-host status` (the status document);
//! - [`metrics`]: the status document and the daemon's observation as
//!   OpenMetrics text, what `ntpd-host metrics` serves;
//! - [`clockbound`]: the host and applications (the ClockBound
//!   shared-memory segment);
//! - [`records`]: the one JSON shape of a plugin's identity, capabilities,
//!   samples and errors, shared by all of the above and by `probe --json`.

pub mod clockbound;
pub mod metrics;
pub mod records;
pub mod sock;
pub mod status;
pub mod worker;
