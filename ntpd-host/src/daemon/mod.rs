//! The host's I/O, in the way ntpd-rs's `daemon` module holds it: the
//! processes and the loops that carry out [`crate::decide`]'s decisions.
//!
//! - [`host`]: the `run`, `bridge`, `validate` and `status` commands;
//! - [`supervisor`]: worker processes, their events and restarts;
//! - [`worker`]: inside a worker process: the timer, the plugin thread, the
//!   daemon socket;
//! - [`ntpd`]: the embedded ntpd-rs daemon and its validation;
//! - [`status`]: the status socket and the daemon's observation socket;
//! - [`notify`]: readiness for the service manager (`sd_notify`);
//! - [`metrics`]: the `metrics` command, an OpenMetrics endpoint over both.

pub mod clockbound;
pub mod host;
pub mod metrics;
pub mod notify;
pub mod ntpd;
pub mod privileges;
pub mod rundir;
pub mod seccomp;
pub mod status;
pub mod supervisor;
pub mod worker;
