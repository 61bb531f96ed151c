//! The ClockBound publisher: after every event of the bound's source it
//! reads the daemon's observation socket (and the platform's vmclock
//! marker, when the plugin reads one), has [`publish`] decide the record
//! and writes it to the segment. It never stops the host: a segment that
//! cannot be written is an error in the status and the log.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use crate::config::{HostConfig, Steering};
use crate::daemon::status as status_io;
use crate::daemon::supervisor::Supervisor;
use crate::decide::bound::{DaemonView, Publication, Publish, SampleView, Slew, publish};
use crate::decide::source::SourceStatus;
use crate::protocol::clockbound::{
    self, DEFAULT_DIR_MODE, DEFAULT_FILE_MODE, ErrorBound, SegmentFile, VMCLOCK_MARKER_END,
};
use crate::protocol::status::{ClockBoundStatus, daemon_state};

/// The vmclock device ClockBound clients compare markers with.
pub const CLIENT_VMCLOCK: &str = "/dev/vmclock0";

/// What the publisher needs from the config.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The segment file.
    pub path: PathBuf,
    /// The bound's source: its index among the plugin sources ...
    pub index: usize,
    /// ... its name ...
    pub name: String,
    /// ... its socket (the daemon lists it by this address) ...
    pub socket: PathBuf,
    /// ... its configured accuracy, ns ...
    pub accuracy_ns: u64,
    /// ... and its poll interval.
    pub poll_interval: i8,
    /// The daemon's observation socket.
    pub observation_path: PathBuf,
    /// The oscillator drift bound, ppb.
    pub max_drift_ppb: u32,
    /// How the daemon steers.
    pub steering: Steering,
}

impl Settings {
    /// The settings when the config enables the segment.
    pub fn of(
        cfg: &HostConfig,
        sockets: &[PathBuf],
        observation_path: &Path,
        steering: Steering,
    ) -> Option<Self> {
        let path = cfg.host.clockbound.clone()?;
        let (index, source) = cfg.clockbound_source()?;
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // 0..=1 s
        let accuracy_ns = source.accuracy.map_or(0, |a| (a * 1e9).ceil() as u64);
        Some(Self {
            path,
            index,
            name: source.name.clone(),
            socket: sockets.get(index)?.clone(),
            accuracy_ns,
            poll_interval: source.poll_interval,
            observation_path: observation_path.to_owned(),
            max_drift_ppb: cfg.host.clockbound_max_drift_ppb,
            steering,
        })
    }

    fn slew(&self) -> Slew {
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // ntpd-rs-checked ranges
        Slew {
            min_duration_ns: (self.steering.slew_minimum_duration.max(0.0) * 1e9) as u64,
            max_ppb: (self.steering.slew_maximum_frequency_offset.max(0.0) * 1e9).ceil() as u32,
        }
    }

    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    fn step_threshold_ns(&self) -> u64 {
        (self.steering.step_threshold.max(0.0) * 1e9) as u64
    }
}

/// The publisher's state as `status` shows it.
pub type Shared = Arc<Mutex<Option<ClockBoundStatus>>>;

fn set(shared: &Shared, f: impl FnOnce(&mut ClockBoundStatus)) {
    let mut guard = shared.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(s) = guard.as_mut() {
        f(s);
    }
}

/// The disruption marker on `path`, and whether clients can check it
/// themselves (it is the device they open, and they may read it).
fn read_marker(path: &Path) -> Option<(u64, bool)> {
    let mut file = File::open(path).ok()?;
    let mut page = [0u8; VMCLOCK_MARKER_END];
    file.read_exact(&mut page).ok()?;
    let marker = clockbound::vmclock_marker(&page)?;
    let readable_by_all = file
        .metadata()
        .is_ok_and(|m| m.permissions().mode() & 0o004 != 0);
    Some((marker, path == Path::new(CLIENT_VMCLOCK) && readable_by_all))
}

/// The latest sample in a source's status.
fn sample_view(s: &SourceStatus) -> Option<SampleView> {
    Some(SampleView {
        offset_ns: s.last_offset_ns?,
        error_ns: s.last_error_ns?,
        reference_error_ns: s.last_reference_error_ns,
        system_time_ns: s.last_sample_time_ns?,
    })
}

/// Opens (or reuses) the segment and marks it unknown; on failure says why
/// in the log and the status.
async fn open(settings: &Settings, shared: &Shared) -> Option<SegmentFile> {
    *shared.lock().unwrap_or_else(PoisonError::into_inner) = Some(ClockBoundStatus {
        path: settings.path.clone(),
        source: settings.name.clone(),
        status: "unknown".into(),
        ..ClockBoundStatus::default()
    });
    let path = settings.path.clone();
    let opened = tokio::task::spawn_blocking(move || {
        clockbound::open_segment(&path, DEFAULT_FILE_MODE, DEFAULT_DIR_MODE)
    })
    .await
    .map_err(|e| e.to_string())
    .and_then(|r| r.map_err(|e| e.to_string()));
    let file = match opened {
        Ok(file) => file,
        Err(e) => {
            tracing::error!("{e}; applications get no error bound (time keeping goes on)");
            set(shared, |s| s.error = Some(e));
            return None;
        }
    };
    tracing::info!(
        "ClockBound segment {} {} (bound from source {})",
        file.path.display(),
        if file.reused { "reused" } else { "created" },
        settings.name
    );
    file.segment
        .write(&ErrorBound::unknown(clockbound::conservative_as_of(
            clockbound::monotonic_coarse_now(),
            clockbound::monotonic_coarse_resolution(),
        )));
    Some(file)
}

/// What `status` shows of a publication.
fn show(shared: &Shared, inputs: &Publish, p: &Publication) {
    set(shared, |s| {
        s.status = p.record.status.name().to_owned();
        s.bound_ns = p.bound.map(|b| b.total_ns);
        s.offset_ns = p.bound.map(|b| b.offset_ns);
        s.sample_ns = p.bound.map(|b| b.sample_ns);
        s.reference_ns = p.bound.map(|b| b.reference_ns);
        s.drift_ns = p.bound.map(|b| b.drift_ns);
        s.max_drift_ppb = p.record.max_drift_ppb;
        s.written_at_ns = Some(inputs.realtime_now_ns);
        #[allow(clippy::cast_precision_loss)] // seconds for display
        {
            s.void_after_s =
                Some((p.record.void_after.as_nanos() - p.record.as_of.as_nanos()) as f64 * 1e-9);
        }
        s.writes += 1;
        s.disruption_marker = inputs.marker.map(|(m, _)| m);
        s.disruption_support = p.record.disruption_support;
    });
}

/// Publishes until the supervisor stops.
pub async fn run(settings: Settings, sup: Arc<Supervisor>, shared: Shared) {
    let Some(file) = open(&settings, &shared).await else {
        return;
    };
    let resolution = clockbound::monotonic_coarse_resolution();
    let slew = settings.slew();
    let step_threshold_ns = settings.step_threshold_ns();
    let mut changes = sup.changes();
    let mut last = None;
    // The last two distinct samples: (previous, latest).
    let mut samples: (Option<SampleView>, Option<SampleView>) = (None, None);
    while changes.changed().await.is_ok() {
        let Some(source) = sup.source(settings.index) else {
            return;
        };
        // Only what changes the record: a new sample or a disruption.
        let key = (source.samples, source.disrupted);
        if last == Some(key) {
            continue;
        }
        last = Some(key);
        let latest = sample_view(&source);
        if latest != samples.1 {
            samples = (samples.1, latest);
        }
        let observation = settings.observation_path.clone();
        let socket = settings.socket.clone();
        let vmclock = source.vmclock.clone();
        let (daemon, marker): (Option<DaemonView>, _) = tokio::task::spawn_blocking(move || {
            (
                status_io::read_daemon(&observation)
                    .ok()
                    .map(|v| daemon_state(&v, &socket)),
                vmclock.as_deref().and_then(read_marker),
            )
        })
        .await
        .unwrap_or((None, None));
        let inputs = Publish {
            mono_now: clockbound::conservative_as_of(
                clockbound::monotonic_coarse_now(),
                resolution,
            ),
            realtime_now_ns: ntpd_plugin_api::realtime_now_ns(),
            sample: samples.1,
            previous: samples.0,
            accuracy_ns: settings.accuracy_ns,
            daemon,
            disrupted: source.disrupted,
            marker,
            max_drift_ppb: settings.max_drift_ppb,
            slew,
            step_threshold_ns,
            poll_interval: settings.poll_interval,
        };
        let p = publish(&inputs);
        file.segment.write(&p.record);
        show(&shared, &inputs, &p);
    }
}
