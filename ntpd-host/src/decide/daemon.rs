//! What the host does when the ntpd-rs daemon child ends, without I/O.
//!
//! ntpd-rs ends itself on purpose only with an exit status (its panic
//! threshold on a too-large step exits 70, a config it cannot load 78, a
//! clock it may not control 77): that is ntpd-rs's own policy, so the host
//! stops everything and exits with the same status, and the service
//! manager's restart policy decides what happens next. A daemon killed by a
//! signal crashed (or was killed by someone): it is restarted with backoff
//! while the plugin workers keep running.

use std::time::Duration;

use crate::decide::backoff::Backoff;
use crate::decide::supervisor::{ProcessEnd, RestartTimes};

/// What to do after the daemon ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DaemonVerdict {
    /// Start it again after this long.
    RestartAfter(Duration),
    /// Stop everything and exit with this status (ntpd-rs's own).
    Exit(i32),
}

/// The daemon's restart policy.
#[derive(Clone, Debug)]
pub struct DaemonPolicy {
    backoff: Backoff,
}

impl DaemonPolicy {
    /// A policy with these times (the workers' defaults: 1 s doubling to
    /// 64 s, reset after 5 minutes of running).
    pub fn new(times: RestartTimes) -> Self {
        Self {
            backoff: Backoff::new(times.initial, times.max, times.healthy_after),
        }
    }

    /// The decision after the daemon, having run for `ran_for`, ended so.
    pub fn on_end(&mut self, end: &ProcessEnd, ran_for: Duration) -> DaemonVerdict {
        match end {
            ProcessEnd::Exited(code) => DaemonVerdict::Exit(*code),
            ProcessEnd::Signalled(_) | ProcessEnd::Lost(_) => {
                DaemonVerdict::RestartAfter(self.backoff.failure(ran_for))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn a_deliberate_exit_is_passed_on_and_a_crash_is_restarted_with_backoff() {
        let mut p = DaemonPolicy::new(RestartTimes::default());
        assert_eq!(
            p.on_end(&ProcessEnd::Exited(70), S(3)),
            DaemonVerdict::Exit(70)
        );
        assert_eq!(
            p.on_end(&ProcessEnd::Exited(78), S(0)),
            DaemonVerdict::Exit(78)
        );
        let kill = ProcessEnd::Signalled(9);
        let waits: Vec<DaemonVerdict> = (0..4).map(|_| p.on_end(&kill, S(1))).collect();
        assert_eq!(
            waits,
            [1, 2, 4, 8].map(|s| DaemonVerdict::RestartAfter(S(s)))
        );
        // Five minutes of running forgive the past.
        assert_eq!(p.on_end(&kill, S(300)), DaemonVerdict::RestartAfter(S(1)));
        assert_eq!(
            p.on_end(&ProcessEnd::Lost("x".into()), S(0)),
            DaemonVerdict::RestartAfter(S(2))
        );
    }
}
