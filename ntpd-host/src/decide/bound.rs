//! The error bound published for applications (ClockBound), decided
//! without I/O: how wide `CLOCK_REALTIME`'s error may be, from what the
//! host knows, and the status that goes with it.
//!
//! The bound at a sample is `max(|θ| + k·σ, |o|) + e + r`: the daemon's
//! estimate θ of reference minus system clock and its uncertainty σ (k
//! sigmas), or the raw sample offset o if that is larger; the sample's own
//! error bound e; the reference's own error r (a platform bound, or the
//! source's configured `accuracy`). It grows by the drift bound for the age
//! of those inputs.

use crate::protocol::clockbound::{ClockStatus, ErrorBound, MAX_DRIFT_PPB_LIMIT, Timespec};

/// The daemon's view of the selected source, from ntpd-rs's observation
/// socket (`sources[i].offset` and `.uncertainty`, in seconds there).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DaemonEstimate {
    /// The daemon's current estimate of reference minus system clock, ns.
    pub offset_ns: i64,
    /// Its standard uncertainty (one sigma), ns.
    pub uncertainty_ns: u64,
}

/// What the bound is built from. All values in nanoseconds or ppb.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BoundInputs {
    /// The daemon's estimate for the source, when known.
    pub daemon: Option<DaemonEstimate>,
    /// How many sigmas of the daemon's uncertainty to count (3 covers a
    /// normal error 99.7% of the time; the daemon's model is not a hard
    /// bound).
    pub sigmas: u32,
    /// The latest sample's offset (reference minus system), when one exists.
    pub sample_offset_ns: Option<i64>,
    /// The latest sample's own error bound (half the read bracket).
    pub sample_error_ns: u64,
    /// The reference's error against true time: the platform's bound (ENA
    /// `phc_error_bound`, vmclock max error) or the source's configured
    /// `accuracy`.
    pub reference_error_ns: u64,
    /// The drift bound between updates, ppb.
    pub max_drift_ppb: u32,
    /// Time from the newest input (sample or daemon estimate) to `as_of`.
    pub age_ns: u64,
}

/// The bound and its parts (all nanoseconds), for the segment and for
/// `status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bound {
    /// How far the system clock may be from the reference:
    /// `max(|daemon offset| + sigmas × uncertainty, |sample offset|)`.
    pub offset_ns: u64,
    /// The latest sample's read error.
    pub sample_ns: u64,
    /// The reference's own error.
    pub reference_ns: u64,
    /// Drift between the inputs and `as_of`: `max_drift × age`, rounded up.
    pub drift_ns: u64,
    /// The sum, saturated to what the segment holds.
    pub total_ns: i64,
}

/// The error bound of `CLOCK_REALTIME` at `as_of`:
///
/// `max(|θ| + k·σ, |o|) + e_sample + e_reference + ⌈ρ·Δ⌉`
///
/// with θ, σ the daemon's offset estimate and uncertainty, k the sigma
/// count, o the latest measured offset, ρ the drift bound and Δ the age of
/// the inputs. The true offset lies within `|o| + e_sample` of zero
/// whatever the daemon believes (a hard bound given the sample's bracket),
/// and within `|θ| + k·σ + e_sample` by the daemon's model; the larger is
/// kept. Without any offset information the offset term is 0: the caller
/// must then not claim a synchronised status.
pub fn bound(inputs: &BoundInputs) -> Bound {
    let daemon = inputs.daemon.map_or(0u64, |d| {
        d.offset_ns
            .unsigned_abs()
            .saturating_add(d.uncertainty_ns.saturating_mul(u64::from(inputs.sigmas)))
    });
    let sample = inputs.sample_offset_ns.map_or(0, i64::unsigned_abs);
    let offset_ns = daemon.max(sample);
    let drift_ns = drift_ns(inputs.max_drift_ppb, inputs.age_ns);
    let total = offset_ns
        .saturating_add(inputs.sample_error_ns)
        .saturating_add(inputs.reference_error_ns)
        .saturating_add(drift_ns);
    Bound {
        offset_ns,
        sample_ns: inputs.sample_error_ns,
        reference_ns: inputs.reference_error_ns,
        drift_ns,
        total_ns: i64::try_from(total).unwrap_or(i64::MAX),
    }
}

/// `ppb × ns / 1e9`, rounded up.
pub fn drift_ns(ppb: u32, ns: u64) -> u64 {
    let v = (u128::from(ppb) * u128::from(ns)).div_ceil(1_000_000_000);
    u64::try_from(v).unwrap_or(u64::MAX)
}

/// How ntpd-rs slews: it corrects an offset over at least
/// `slew-minimum-duration` at no more than `slew-maximum-frequency-offset`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slew {
    /// `slew-minimum-duration`, ns (ntpd-rs default 8 s).
    pub min_duration_ns: u64,
    /// `slew-maximum-frequency-offset`, ppb (ntpd-rs default 200 ppm).
    pub max_ppb: u32,
}

/// The max drift to publish: the oscillator's drift bound plus the fastest
/// the daemon may be slewing the clock while correcting an offset of up to
/// `offset_ns` (a slew in the wrong direction moves the clock away from
/// true time at that rate). Clamped below what readers accept.
pub fn published_drift_ppb(oscillator_ppb: u32, offset_ns: u64, slew: Option<Slew>) -> u32 {
    let steering = slew.map_or(0u64, |s| {
        let rate = if s.min_duration_ns == 0 {
            u64::from(s.max_ppb)
        } else {
            let r = (u128::from(offset_ns) * 1_000_000_000).div_ceil(u128::from(s.min_duration_ns));
            u64::try_from(r).unwrap_or(u64::MAX)
        };
        rate.min(u64::from(s.max_ppb))
    });
    let total = u64::from(oscillator_ppb).saturating_add(steering);
    u32::try_from(total)
        .unwrap_or(u32::MAX)
        .min(MAX_DRIFT_PPB_LIMIT - 1)
}

/// What decides the status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatusInputs {
    /// The source has produced a sample the bound is built on.
    pub have_sample: bool,
    /// The daemon is synchronised and uses the plugin source (ntpd-rs's
    /// observation: leap indicator not unknown, the source in use).
    pub daemon_synchronized: bool,
    /// A disruption (vmclock marker change) was seen and no sample has
    /// arrived since.
    pub disrupted: bool,
    /// The reference says it must not be trusted.
    pub reference_unreliable: bool,
    /// The reference runs free (its error is still bounded).
    pub reference_free_running: bool,
    /// The offset term is below the daemon's step threshold: larger, the
    /// daemon may step the clock, which no drift bound covers.
    pub offset_within_step_threshold: bool,
    /// The drift seen between the last two samples is within the
    /// configured drift bound: the daemon holds the clock's frequency (not
    /// so while it is still learning it).
    pub drift_within_bound: bool,
}

/// The status to publish.
pub fn clock_status(s: &StatusInputs) -> ClockStatus {
    if s.disrupted {
        ClockStatus::Disrupted
    } else if !s.have_sample
        || !s.daemon_synchronized
        || s.reference_unreliable
        || !s.offset_within_step_threshold
        || !s.drift_within_bound
    {
        ClockStatus::Unknown
    } else if s.reference_free_running {
        ClockStatus::FreeRunning
    } else {
        ClockStatus::Synchronized
    }
}

/// How many sigmas of the daemon's uncertainty the bound counts.
pub const SIGMAS: u32 = 3;

/// A record stays valid for this many poll intervals after its sample...
pub const VOID_AFTER_POLLS: u32 = 8;

/// ... and at least this long, ns: a few missed samples do not void it.
pub const MIN_VOID_AFTER_NS: u64 = 16_000_000_000;

/// The latest sample of the bound's source, as the host's status holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SampleView {
    /// Reference minus system clock, ns.
    pub offset_ns: i64,
    /// The sample's own error bound, ns.
    pub error_ns: u64,
    /// The platform's bound on the reference's error, when it publishes one.
    pub reference_error_ns: Option<u64>,
    /// `CLOCK_REALTIME` at the sample, ns since 1970.
    pub system_time_ns: i64,
}

/// The daemon as its observation socket shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DaemonView {
    /// Stratum below 16 and a known leap indicator.
    pub synchronized: bool,
    /// Its estimate for the bound's source (by socket address), if it lists
    /// the source.
    pub source: Option<DaemonEstimate>,
}

/// Everything one publication is decided from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Publish {
    /// `CLOCK_MONOTONIC_COARSE` now, already made conservative (a tick
    /// early).
    pub mono_now: Timespec,
    /// `CLOCK_REALTIME` now, ns since 1970.
    pub realtime_now_ns: i64,
    /// The latest sample, if any.
    pub sample: Option<SampleView>,
    /// The sample before it, if any.
    pub previous: Option<SampleView>,
    /// The source's configured `accuracy`, ns (the reference's error when the
    /// platform gives none).
    pub accuracy_ns: u64,
    /// The daemon's state, when its observation socket could be read.
    pub daemon: Option<DaemonView>,
    /// The source reported a disruption and no sample came since.
    pub disrupted: bool,
    /// The vmclock disruption marker, and whether readers can check it.
    pub marker: Option<(u64, bool)>,
    /// The oscillator drift bound, ppb.
    pub max_drift_ppb: u32,
    /// How the daemon slews.
    pub slew: Slew,
    /// The daemon's step threshold, ns.
    pub step_threshold_ns: u64,
    /// The source's poll interval, log2 s.
    pub poll_interval: i8,
}

/// A publication: the record for the segment and the bound's parts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Publication {
    /// The record to write.
    pub record: ErrorBound,
    /// The bound at `as_of` and its parts (none without a sample).
    pub bound: Option<Bound>,
}

/// The drift of the system clock against the reference between two
/// samples, ppb, as `(at least, at most)`: the offset change over the time
/// between them, less or plus what the samples' and the reference's errors
/// allow. It includes the daemon's steering, which is what moves the
/// clock. `None` when `cur` is not later than `prev`.
pub fn observed_drift_ppb(
    prev: &SampleView,
    cur: &SampleView,
    reference_ns: u64,
) -> Option<(u64, u64)> {
    let dt = u128::try_from(cur.system_time_ns.checked_sub(prev.system_time_ns)?)
        .ok()
        .filter(|&dt| dt > 0)?;
    let change = u128::from(cur.offset_ns.abs_diff(prev.offset_ns));
    let slack = u128::from(cur.error_ns)
        .saturating_add(u128::from(prev.error_ns))
        .saturating_add(2 * u128::from(reference_ns));
    let rate = |ns: u128, up: bool| {
        let r = ns.saturating_mul(1_000_000_000);
        let r = if up { r.div_ceil(dt) } else { r / dt };
        u64::try_from(r).unwrap_or(u64::MAX)
    };
    Some((
        rate(change.saturating_sub(slack), false),
        rate(change.saturating_add(slack), true),
    ))
}

/// How long after its sample a record stays valid, ns.
pub fn void_after_ns(poll_interval: i8) -> u64 {
    let poll_ns = if poll_interval >= 0 {
        1_000_000_000u64 << poll_interval.min(17)
    } else {
        1_000_000_000u64 >> poll_interval.unsigned_abs().min(29)
    };
    (poll_ns * u64::from(VOID_AFTER_POLLS)).max(MIN_VOID_AFTER_NS)
}

/// Decides the record to publish. Without a sample there is nothing to
/// bound: the record says unknown. Otherwise the bound at `as_of` is the
/// one of [`bound`] aged by the time since the sample; it is void a fixed
/// time after the sample (renewing the record without a new sample never
/// extends it); the status is that of [`clock_status`].
///
/// The drift published is the configured oscillator bound, plus the drift
/// the last two samples prove beyond their errors (while the daemon is
/// still learning the frequency that is large; once it holds the clock,
/// zero), plus the fastest slew the daemon may apply to the offset it has
/// left.
pub fn publish(p: &Publish) -> Publication {
    let Some(sample) = p.sample else {
        return Publication {
            record: ErrorBound::unknown(p.mono_now),
            bound: None,
        };
    };
    let age_ns =
        u64::try_from(p.realtime_now_ns.saturating_sub(sample.system_time_ns)).unwrap_or(0);
    let daemon_estimate = p.daemon.and_then(|d| d.source);
    let reference_error_ns = sample.reference_error_ns.unwrap_or(p.accuracy_ns);
    let (seen_min, _seen_max) = p
        .previous
        .and_then(|prev| observed_drift_ppb(&prev, &sample, reference_error_ns))
        .unwrap_or((0, 0));
    // What the samples prove beyond noise is added; the configured bound
    // covers the rest (and any change of rate after the last sample).
    let drift_ppb =
        u32::try_from(u64::from(p.max_drift_ppb).saturating_add(seen_min)).unwrap_or(u32::MAX);
    let b = bound(&BoundInputs {
        daemon: daemon_estimate,
        sigmas: SIGMAS,
        sample_offset_ns: Some(sample.offset_ns),
        sample_error_ns: sample.error_ns,
        reference_error_ns,
        max_drift_ppb: drift_ppb,
        age_ns,
    });
    let status = clock_status(&StatusInputs {
        have_sample: true,
        daemon_synchronized: p.daemon.is_some_and(|d| d.synchronized) && daemon_estimate.is_some(),
        disrupted: p.disrupted,
        reference_unreliable: false,
        reference_free_running: false,
        offset_within_step_threshold: b.offset_ns < p.step_threshold_ns,
        drift_within_bound: seen_min <= u64::from(p.max_drift_ppb),
    });
    let sample_mono = p.mono_now.add_nanos(-i128::from(age_ns));
    let (marker, support) = p.marker.unwrap_or((0, false));
    Publication {
        record: ErrorBound {
            as_of: p.mono_now,
            void_after: sample_mono.add_nanos(i128::from(void_after_ns(p.poll_interval))),
            bound_ns: b.total_ns,
            disruption_marker: marker,
            max_drift_ppb: published_drift_ppb(drift_ppb, b.offset_ns, Some(p.slew)),
            status,
            disruption_support: support,
        },
        bound: Some(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs() -> BoundInputs {
        BoundInputs {
            daemon: Some(DaemonEstimate {
                offset_ns: -40,
                uncertainty_ns: 10,
            }),
            sigmas: 3,
            sample_offset_ns: Some(25),
            sample_error_ns: 15,
            reference_error_ns: 100,
            max_drift_ppb: 1_000,
            age_ns: 500_000_000,
        }
    }

    #[test]
    fn bound_adds_its_parts() {
        let b = bound(&inputs());
        // |-40| + 3*10 = 70 > |25|.
        assert_eq!(b.offset_ns, 70);
        assert_eq!(b.sample_ns, 15);
        assert_eq!(b.reference_ns, 100);
        // 1000 ppb over 0.5 s = 500 ns.
        assert_eq!(b.drift_ns, 500);
        assert_eq!(b.total_ns, 70 + 15 + 100 + 500);
    }

    #[test]
    fn bound_keeps_the_larger_offset_view() {
        // The latest sample shows more than the daemon's model allows.
        let b = bound(&BoundInputs {
            sample_offset_ns: Some(-900),
            ..inputs()
        });
        assert_eq!(b.offset_ns, 900);
        // No daemon estimate: the sample alone.
        let b = bound(&BoundInputs {
            daemon: None,
            ..inputs()
        });
        assert_eq!(b.offset_ns, 25);
        // Neither: zero offset term (the status must then be unknown).
        let b = bound(&BoundInputs {
            daemon: None,
            sample_offset_ns: None,
            ..inputs()
        });
        assert_eq!(b.offset_ns, 0);
        assert_eq!(b.total_ns, 15 + 100 + 500);
        // Sigmas count: 0 sigmas is the bare estimate.
        let b = bound(&BoundInputs {
            sigmas: 0,
            sample_offset_ns: None,
            ..inputs()
        });
        assert_eq!(b.offset_ns, 40);
    }

    #[test]
    fn every_input_raises_the_bound() {
        let base = bound(&inputs()).total_ns;
        let more = [
            BoundInputs {
                sample_error_ns: 16,
                ..inputs()
            },
            BoundInputs {
                reference_error_ns: 101,
                ..inputs()
            },
            BoundInputs {
                age_ns: 501_000_000,
                ..inputs()
            },
            BoundInputs {
                max_drift_ppb: 1_002,
                ..inputs()
            },
            BoundInputs {
                daemon: Some(DaemonEstimate {
                    offset_ns: -41,
                    uncertainty_ns: 10,
                }),
                ..inputs()
            },
            BoundInputs {
                daemon: Some(DaemonEstimate {
                    offset_ns: -40,
                    uncertainty_ns: 11,
                }),
                ..inputs()
            },
        ];
        for (i, m) in more.iter().enumerate() {
            assert!(
                bound(m).total_ns > base,
                "input {i} did not raise the bound"
            );
        }
    }

    #[test]
    fn bound_saturates_instead_of_overflowing() {
        let b = bound(&BoundInputs {
            daemon: Some(DaemonEstimate {
                offset_ns: i64::MIN,
                uncertainty_ns: u64::MAX,
            }),
            sample_error_ns: u64::MAX,
            age_ns: u64::MAX,
            max_drift_ppb: u32::MAX,
            ..inputs()
        });
        assert_eq!(b.total_ns, i64::MAX);
        assert_eq!(b.offset_ns, u64::MAX);
    }

    #[test]
    fn drift_rounds_up() {
        assert_eq!(drift_ns(1_000, 1_000_000_000), 1_000);
        assert_eq!(drift_ns(1, 1), 1, "a fraction of a ns counts as 1");
        assert_eq!(drift_ns(0, u64::MAX), 0);
        assert_eq!(drift_ns(1_000, 0), 0);
    }

    #[test]
    fn published_drift_adds_the_slew_allowance() {
        let slew = Slew {
            min_duration_ns: 8_000_000_000,
            max_ppb: 200_000,
        };
        // No slew model: the oscillator bound alone.
        assert_eq!(published_drift_ppb(1_000, 80, None), 1_000);
        // 80 ns over at least 8 s: 10 ppb.
        assert_eq!(published_drift_ppb(1_000, 80, Some(slew)), 1_010);
        // Rounded up.
        assert_eq!(published_drift_ppb(0, 1, Some(slew)), 1);
        // 5 ms over 8 s would be 625 ppm; ntpd-rs caps the slew at 200 ppm.
        assert_eq!(published_drift_ppb(1_000, 5_000_000, Some(slew)), 201_000);
        // Clamped below what readers reject.
        assert_eq!(
            published_drift_ppb(u32::MAX, 0, None),
            MAX_DRIFT_PPB_LIMIT - 1
        );
        let zero = Slew {
            min_duration_ns: 0,
            max_ppb: 7,
        };
        assert_eq!(published_drift_ppb(0, 1, Some(zero)), 7);
    }

    #[test]
    fn status_decision() {
        let ok = StatusInputs {
            have_sample: true,
            daemon_synchronized: true,
            disrupted: false,
            reference_unreliable: false,
            reference_free_running: false,
            offset_within_step_threshold: true,
            drift_within_bound: true,
        };
        assert_eq!(clock_status(&ok), ClockStatus::Synchronized);
        assert_eq!(
            clock_status(&StatusInputs {
                reference_free_running: true,
                ..ok
            }),
            ClockStatus::FreeRunning
        );
        for not_ok in [
            StatusInputs {
                have_sample: false,
                ..ok
            },
            StatusInputs {
                daemon_synchronized: false,
                ..ok
            },
            StatusInputs {
                reference_unreliable: true,
                ..ok
            },
            StatusInputs {
                offset_within_step_threshold: false,
                ..ok
            },
            StatusInputs {
                drift_within_bound: false,
                ..ok
            },
        ] {
            assert_eq!(clock_status(&not_ok), ClockStatus::Unknown, "{not_ok:?}");
        }
        // Disruption wins over everything.
        assert_eq!(
            clock_status(&StatusInputs {
                disrupted: true,
                have_sample: false,
                ..ok
            }),
            ClockStatus::Disrupted
        );
    }

    fn publish_inputs() -> Publish {
        Publish {
            mono_now: Timespec { sec: 100, nsec: 0 },
            realtime_now_ns: 1_700_000_000_500_000_000,
            sample: Some(SampleView {
                offset_ns: -30,
                error_ns: 10,
                reference_error_ns: None,
                system_time_ns: 1_700_000_000_000_000_000,
            }),
            previous: None,
            accuracy_ns: 50,
            daemon: Some(DaemonView {
                synchronized: true,
                source: Some(DaemonEstimate {
                    offset_ns: 5,
                    uncertainty_ns: 4,
                }),
            }),
            disrupted: false,
            marker: None,
            max_drift_ppb: 1_000,
            slew: Slew {
                min_duration_ns: 8_000_000_000,
                max_ppb: 200_000,
            },
            step_threshold_ns: 10_000_000,
            poll_interval: 0,
        }
    }

    #[test]
    fn a_record_from_a_locked_source() {
        let p = publish(&publish_inputs());
        let b = p.bound.unwrap();
        // max(5 + 3*4, 30) = 30; + 10 + accuracy 50 + 0.5 s at 1 ppm.
        assert_eq!(b.offset_ns, 30);
        assert_eq!(b.reference_ns, 50);
        assert_eq!(b.drift_ns, 500);
        assert_eq!(p.record.bound_ns, 30 + 10 + 50 + 500);
        assert_eq!(p.record.status, ClockStatus::Synchronized);
        assert_eq!(p.record.as_of, Timespec { sec: 100, nsec: 0 });
        // Void 16 s after the sample, which was 0.5 s before as-of.
        assert_eq!(
            p.record.void_after,
            Timespec {
                sec: 115,
                nsec: 500_000_000
            }
        );
        // 1 ppm plus slewing 30 ns over 8 s (4 ppb, rounded up).
        assert_eq!(p.record.max_drift_ppb, 1_004);
        assert!(!p.record.disruption_support);
        assert!(p.record.validate().is_ok());
    }

    #[test]
    fn the_platform_bound_replaces_the_configured_accuracy() {
        let mut i = publish_inputs();
        i.sample.as_mut().unwrap().reference_error_ns = Some(7);
        assert_eq!(publish(&i).bound.unwrap().reference_ns, 7);
    }

    #[test]
    fn status_follows_the_daemon_and_the_source() {
        let mut i = publish_inputs();
        i.sample = None;
        let p = publish(&i);
        assert_eq!(p.record.status, ClockStatus::Unknown);
        assert_eq!(p.record.void_after, p.record.as_of, "void at once");
        assert!(p.bound.is_none());

        for daemon in [
            None,
            Some(DaemonView {
                synchronized: false,
                source: Some(DaemonEstimate {
                    offset_ns: 0,
                    uncertainty_ns: 1,
                }),
            }),
            Some(DaemonView {
                synchronized: true,
                source: None,
            }),
        ] {
            let p = publish(&Publish {
                daemon,
                ..publish_inputs()
            });
            assert_eq!(p.record.status, ClockStatus::Unknown, "{daemon:?}");
            assert!(p.record.bound_ns > 0, "the bound is still written");
        }

        let p = publish(&Publish {
            disrupted: true,
            ..publish_inputs()
        });
        assert_eq!(p.record.status, ClockStatus::Disrupted);

        // An offset the daemon would step rather than slew.
        let mut i = publish_inputs();
        i.sample.as_mut().unwrap().offset_ns = 20_000_000;
        assert_eq!(publish(&i).record.status, ClockStatus::Unknown);
    }

    #[test]
    fn renewing_without_a_sample_never_extends_validity() {
        let first = publish(&publish_inputs());
        let later = publish(&Publish {
            mono_now: Timespec { sec: 110, nsec: 0 },
            realtime_now_ns: 1_700_000_010_500_000_000,
            ..publish_inputs()
        });
        assert_eq!(first.record.void_after, later.record.void_after);
        // 10.5 s of drift at 1 ppm.
        assert_eq!(later.bound.unwrap().drift_ns, 10_500);
        assert!(later.record.bound_ns > first.record.bound_ns);
    }

    #[test]
    fn observed_drift_brackets_the_offset_change() {
        let prev = SampleView {
            offset_ns: 100,
            error_ns: 5,
            reference_error_ns: None,
            system_time_ns: 0,
        };
        let cur = SampleView {
            offset_ns: 1_100,
            error_ns: 5,
            reference_error_ns: None,
            system_time_ns: 2_000_000_000,
        };
        // 1000 ns over 2 s = 500 ppb, +-(5 + 5 + 2*20) ns over 2 s.
        assert_eq!(observed_drift_ppb(&prev, &cur, 20), Some((475, 525)));
        // Less change than the errors allow: at least 0.
        let still = SampleView {
            offset_ns: 120,
            ..cur
        };
        assert_eq!(observed_drift_ppb(&prev, &still, 20), Some((0, 35)));
        // Not later: nothing to say.
        assert_eq!(observed_drift_ppb(&cur, &prev, 0), None);
        assert_eq!(observed_drift_ppb(&cur, &cur, 0), None);
    }

    #[test]
    fn drift_seen_is_published_and_too_much_of_it_is_unknown() {
        let steady = publish(&Publish {
            previous: Some(SampleView {
                offset_ns: -20,
                error_ns: 10,
                reference_error_ns: None,
                system_time_ns: 1_699_999_999_000_000_000,
            }),
            ..publish_inputs()
        });
        // |-30 - -20| = 10 ns over 1 s is within the errors (10 + 10 +
        // 2*50 ns): nothing proven, the configured bound and the slew.
        assert_eq!(steady.record.max_drift_ppb, 1_000 + 4);
        assert_eq!(steady.record.status, ClockStatus::Synchronized);

        // The daemon is still learning the frequency: 20 ppm seen.
        let learning = publish(&Publish {
            previous: Some(SampleView {
                offset_ns: 19_970,
                error_ns: 10,
                reference_error_ns: None,
                system_time_ns: 1_699_999_999_000_000_000,
            }),
            ..publish_inputs()
        });
        assert_eq!(learning.record.status, ClockStatus::Unknown);
        // 20000 ns less 120 ns of errors over 1 s proven, on top of 1 ppm.
        assert!(
            learning.record.max_drift_ppb >= 1_000 + 19_880,
            "{:?}",
            learning.record
        );
    }

    #[test]
    fn the_marker_is_passed_on() {
        let p = publish(&Publish {
            marker: Some((42, true)),
            ..publish_inputs()
        });
        assert_eq!(p.record.disruption_marker, 42);
        assert!(p.record.disruption_support);
    }

    #[test]
    fn void_after_scales_with_the_poll_interval() {
        assert_eq!(void_after_ns(0), MIN_VOID_AFTER_NS);
        assert_eq!(void_after_ns(-4), MIN_VOID_AFTER_NS);
        assert_eq!(void_after_ns(4), 128_000_000_000);
        assert_eq!(void_after_ns(17), (1u64 << 17) * 8 * 1_000_000_000);
    }
}
