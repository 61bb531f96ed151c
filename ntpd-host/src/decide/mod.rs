//! The host's decisions, without I/O, in the way ntp-proto holds ntpd-rs's:
//! state machines and policies that take what happened and return what to
//! do. The loops in [`crate::daemon`] carry the actions out.
//!
//! - [`worker`]: a worker's reaction to every plugin result and error kind,
//!   its re-init backoff, its call deadline and its reading schedule
//!   (start-up burst, readings per poll);
//! - [`combine`]: the readings of one poll made into one sample;
//! - [`supervisor`]: when an ended worker is restarted, after how long, and
//!   when a silent one is killed;
//! - [`daemon`]: what happens when the ntpd-rs daemon child ends;
//! - [`source`]: a source's state and counters, as `status` shows them;
//! - [`bound`]: the error bound published for applications and its status;
//! - [`backoff`]: the doubling backoff both use.

pub mod backoff;
pub mod bound;
pub mod combine;
pub mod daemon;
pub mod source;
pub mod supervisor;
pub mod worker;
