//! The supervisor's decisions, without I/O: when a worker that ended is
//! restarted and after how long, when a silent worker is killed, and what
//! happens when a supervising task itself fails.

use std::time::Duration;

use crate::config::SourceConfig;
use crate::decide::backoff::Backoff;
use crate::protocol::worker::WorkerExit;

/// The supervisor's restart backoff: first wait, longest wait, and how long
/// a worker must run to be forgiven its past failures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RestartTimes {
    /// The first wait.
    pub initial: Duration,
    /// The longest wait.
    pub max: Duration,
    /// Running this long resets the backoff.
    pub healthy_after: Duration,
}

impl Default for RestartTimes {
    /// 1 s doubling to 64 s, reset after 5 minutes of healthy running.
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(64),
            healthy_after: Duration::from_secs(300),
        }
    }
}

/// How a child process (a worker, the daemon) ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProcessEnd {
    /// It exited with this status.
    Exited(i32),
    /// A signal ended it.
    Signalled(i32),
    /// It could not be waited for (the message says why).
    Lost(String),
}

impl ProcessEnd {
    /// How `status` ended.
    pub fn of(status: std::process::ExitStatus) -> Self {
        use std::os::unix::process::ExitStatusExt as _;
        match (status.code(), status.signal()) {
            (Some(code), _) => ProcessEnd::Exited(code),
            (None, Some(sig)) => ProcessEnd::Signalled(sig),
            (None, None) => ProcessEnd::Lost("no exit status".into()),
        }
    }

    /// The worker's own exit status, if it is one of the protocol's.
    pub fn worker_exit(&self) -> Option<WorkerExit> {
        match self {
            ProcessEnd::Exited(code) => WorkerExit::from_code(*code),
            ProcessEnd::Signalled(_) | ProcessEnd::Lost(_) => None,
        }
    }
}

impl std::fmt::Display for ProcessEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProcessEnd::Exited(code) => write!(f, "exited with status {code}"),
            ProcessEnd::Signalled(sig) => write!(f, "was killed by signal {sig}"),
            ProcessEnd::Lost(why) => write!(f, "could not be waited for: {why}"),
        }
    }
}

/// Why a worker ended, as far as the supervisor is concerned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EndCause {
    /// The source stopped for good (a configuration or fatal error).
    Stopped,
    /// A plugin call hung and the worker gave up on it.
    Hung,
    /// The worker sent nothing for too long and the supervisor killed it.
    Silent,
    /// Anything else: a crash, a signal, an unexpected status.
    Crashed(ProcessEnd),
}

impl EndCause {
    /// Classifies an end; `killed_for_silence` when the supervisor killed it.
    pub fn of(end: ProcessEnd, killed_for_silence: bool) -> Self {
        if killed_for_silence {
            return EndCause::Silent;
        }
        match end.worker_exit() {
            Some(WorkerExit::Stopped) => EndCause::Stopped,
            Some(WorkerExit::Hung) => EndCause::Hung,
            Some(WorkerExit::Failed) | None => EndCause::Crashed(end),
        }
    }
}

/// What to do after a worker ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Start it again after this long.
    RestartAfter(Duration),
    /// Leave the source stopped.
    GiveUp,
}

/// The restart policy of one source.
#[derive(Clone, Debug)]
pub struct RestartPolicy {
    backoff: Backoff,
}

impl RestartPolicy {
    /// A policy with these times.
    pub fn new(times: RestartTimes) -> Self {
        Self {
            backoff: Backoff::new(times.initial, times.max, times.healthy_after),
        }
    }

    /// The decision after a worker that ran for `ran_for` ended with `cause`.
    pub fn on_end(&mut self, cause: &EndCause, ran_for: Duration) -> Verdict {
        match cause {
            EndCause::Stopped => Verdict::GiveUp,
            EndCause::Hung | EndCause::Silent | EndCause::Crashed(_) => {
                Verdict::RestartAfter(self.backoff.failure(ran_for))
            }
        }
    }
}

/// How long a worker may send nothing at all before it is killed: longer
/// than its own deadline on a plugin call plus two poll intervals, so it is
/// only reached when the worker is wedged beyond what it can notice itself.
pub fn silence_limit(source: &SourceConfig) -> Duration {
    source.sample_timeout + source.poll_duration() * 2 + Duration::from_secs(10)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn ends_are_classified_by_the_protocol_exit_codes() {
        assert_eq!(
            EndCause::of(ProcessEnd::Exited(3), false),
            EndCause::Stopped
        );
        assert_eq!(EndCause::of(ProcessEnd::Exited(4), false), EndCause::Hung);
        assert_eq!(
            EndCause::of(ProcessEnd::Exited(1), false),
            EndCause::Crashed(ProcessEnd::Exited(1))
        );
        assert_eq!(
            EndCause::of(ProcessEnd::Exited(0), false),
            EndCause::Crashed(ProcessEnd::Exited(0))
        );
        assert_eq!(
            EndCause::of(ProcessEnd::Signalled(11), false),
            EndCause::Crashed(ProcessEnd::Signalled(11))
        );
        // A worker killed for silence dies of a signal; the cause is silence.
        assert_eq!(
            EndCause::of(ProcessEnd::Signalled(9), true),
            EndCause::Silent
        );
        assert_eq!(
            ProcessEnd::Signalled(9).to_string(),
            "was killed by signal 9"
        );
    }

    #[test]
    fn restarts_back_off_to_the_cap_and_stopped_sources_stay_stopped() {
        let mut p = RestartPolicy::new(RestartTimes::default());
        let crash = EndCause::Crashed(ProcessEnd::Signalled(6));
        let waits: Vec<Verdict> = (0..8).map(|_| p.on_end(&crash, S(1))).collect();
        let want: Vec<Verdict> = [1, 2, 4, 8, 16, 32, 64, 64]
            .into_iter()
            .map(|s| Verdict::RestartAfter(S(s)))
            .collect();
        assert_eq!(waits, want);
        assert_eq!(p.on_end(&EndCause::Stopped, S(1)), Verdict::GiveUp);
        // Hangs and silence count as failures too.
        let mut p = RestartPolicy::new(RestartTimes::default());
        assert_eq!(p.on_end(&EndCause::Hung, S(0)), Verdict::RestartAfter(S(1)));
        assert_eq!(
            p.on_end(&EndCause::Silent, S(0)),
            Verdict::RestartAfter(S(2))
        );
    }

    #[test]
    fn a_healthy_run_resets_the_backoff() {
        let mut p = RestartPolicy::new(RestartTimes::default());
        let crash = EndCause::Crashed(ProcessEnd::Exited(1));
        for _ in 0..4 {
            p.on_end(&crash, S(10));
        }
        assert_eq!(p.on_end(&crash, S(299)), Verdict::RestartAfter(S(16)));
        assert_eq!(p.on_end(&crash, S(300)), Verdict::RestartAfter(S(1)));
        assert_eq!(p.on_end(&crash, S(0)), Verdict::RestartAfter(S(2)));
    }
}
