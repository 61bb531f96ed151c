//! The metrics exposition `ntpd-host metrics` serves: the host's status
//! document and the daemon's observation, as OpenMetrics text.
//!
//! Our own families are named `ntpd_host_*`; per plugin source they carry
//! a `source` label with the source's name. The embedded daemon's families
//! keep the names, help texts, units and labels ntpd-rs 1.9's
//! `ntp-metrics-exporter` gives them (`ntp_*`), so dashboards made for
//! ntpd-rs work unchanged. ntpd-rs exposes no library function for them (its
//! `metrics` module is private; only `metrics_exporter_main`, a whole
//! process with its own config and listener, is public), so they are
//! rebuilt here from the same observation JSON its exporter reads, with the
//! same formulas. The encoding is prometheus-client's, not ours.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;

use std::fmt::Write as _;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelValue, LabelValueEncoder, text};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Metric, Registry, Unit};
use serde::Deserialize;
use serde_json::Value;

use crate::decide::source::{SourceState, SourceStatus};
use crate::protocol::status::{ClockBoundStatus, HostStatus};

/// The Content-Type of the exposition.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The ClockBound statuses the host writes, for the state-set gauge.
const CLOCKBOUND_STATUSES: [&str; 4] = ["unknown", "synchronized", "free-running", "disrupted"];

/// A label value, escaped as OpenMetrics requires (`\\`, `\"`, `\n`):
/// prometheus-client 0.24 writes label values as they are.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct LabelValue(String);

impl EncodeLabelValue for LabelValue {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
        for c in self.0.chars() {
            match c {
                '\\' => encoder.write_str("\\\\")?,
                '"' => encoder.write_str("\\\"")?,
                '\n' => encoder.write_str("\\n")?,
                c => encoder.write_char(c)?,
            }
        }
        Ok(())
    }
}

/// A label set: `(name, value)` pairs.
type Labels = Vec<(String, LabelValue)>;

type FloatGauge = Gauge<f64, AtomicU64>;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), LabelValue((*v).to_owned())))
        .collect()
}

/// An info family of several label sets (prometheus-client's [`Info`] holds
/// one, and a [`Family`] of them writes a stray comma).
#[derive(Debug)]
struct InfoSets {
    name: String,
    help: String,
    sets: Vec<Labels>,
}

impl Collector for InfoSets {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        if self.sets.is_empty() {
            return Ok(());
        }
        let mut metric =
            encoder.encode_descriptor(&self.name, &self.help, None, MetricType::Info)?;
        for set in &self.sets {
            metric.encode_info(set)?;
        }
        Ok(())
    }
}

/// Nanoseconds as seconds.
#[allow(clippy::cast_precision_loss)] // offsets and bounds, far below 2^53 ns
fn ns_s(ns: impl Into<i128>) -> f64 {
    ns.into() as f64 / 1e9
}

/// A registry filled one family at a time.
struct Builder {
    registry: Registry,
}

impl Builder {
    fn gauge(
        &mut self,
        name: &str,
        help: &str,
        unit: Option<Unit>,
        values: impl IntoIterator<Item = (Labels, f64)>,
    ) {
        let values: Vec<_> = values.into_iter().collect();
        if let [(l, v)] = values.as_slice()
            && l.is_empty()
        {
            let gauge = FloatGauge::default();
            gauge.set(*v);
            self.register(name, help, unit, gauge);
            return;
        }
        let family = Family::<Labels, FloatGauge>::default();
        for (l, v) in values {
            family.get_or_create(&l).set(v);
        }
        self.register(name, help, unit, family);
    }

    fn register(&mut self, name: &str, help: &str, unit: Option<Unit>, metric: impl Metric) {
        match unit {
            Some(unit) => self.registry.register_with_unit(name, help, unit, metric),
            None => self.registry.register(name, help, metric),
        }
    }

    fn int_gauge(
        &mut self,
        name: &str,
        help: &str,
        values: impl IntoIterator<Item = (Labels, i64)>,
    ) {
        let values: Vec<_> = values.into_iter().collect();
        if let [(l, v)] = values.as_slice()
            && l.is_empty()
        {
            let gauge = Gauge::<i64>::default();
            gauge.set(*v);
            self.registry.register(name, help, gauge);
            return;
        }
        let family = Family::<Labels, Gauge>::default();
        for (l, v) in values {
            family.get_or_create(&l).set(v);
        }
        self.registry.register(name, help, family);
    }

    /// A counter family; `name` without `_total` (the encoder adds it).
    fn counter(&mut self, name: &str, help: &str, values: impl IntoIterator<Item = (Labels, u64)>) {
        let values: Vec<_> = values.into_iter().collect();
        if let [(l, v)] = values.as_slice()
            && l.is_empty()
        {
            let counter = Counter::<u64>::default();
            counter.inc_by(*v);
            self.registry.register(name, help, counter);
            return;
        }
        let family = Family::<Labels, Counter>::default();
        for (l, v) in values {
            family.get_or_create(&l).inc_by(v);
        }
        self.registry.register(name, help, family);
    }

    /// An info family; `name` without `_info` (the encoder adds it).
    fn info(&mut self, name: &str, help: &str, sets: impl IntoIterator<Item = Labels>) {
        // The registry adds the full stop to help texts it registers.
        self.registry.register_collector(Box::new(InfoSets {
            name: name.to_owned(),
            help: format!("{help}."),
            sets: sets.into_iter().collect(),
        }));
    }

    /// One gauge per source, for the sources that have a value.
    fn per_source(
        &mut self,
        sources: &[SourceStatus],
        name: &str,
        help: &str,
        unit: Option<Unit>,
        value: impl Fn(&SourceStatus) -> Option<f64>,
    ) {
        let values = sources
            .iter()
            .filter_map(|s| value(s).map(|v| (labels(&[("source", &s.name)]), v)));
        self.gauge(name, help, unit, values);
    }

    /// One counter per source.
    fn per_source_counter(
        &mut self,
        sources: &[SourceStatus],
        name: &str,
        help: &str,
        value: impl Fn(&SourceStatus) -> u64,
    ) {
        let values = sources
            .iter()
            .map(|s| (labels(&[("source", &s.name)]), value(s)));
        self.counter(name, help, values);
    }
}

/// The exposition for one scrape: `host` is the host's status document
/// (`None` when its status socket did not answer), `daemon` the daemon's
/// observation when it could be read (only asked for when the document
/// names an observation socket).
pub fn exposition(host: Option<&HostStatus>, daemon: Option<&Value>) -> String {
    let mut b = Builder {
        registry: Registry::default(),
    };
    b.int_gauge(
        "ntpd_host_up",
        "Whether the host's status socket answered this scrape (1) or not (0)",
        [(Vec::new(), i64::from(host.is_some()))],
    );
    if let Some(host) = host {
        host_families(&mut b, host);
        source_families(&mut b, &host.sources);
        if let Some(cb) = &host.clockbound {
            clockbound_families(&mut b, cb);
        }
        if host.observation_path.is_some() {
            let observation = daemon.and_then(|d| Observation::deserialize(d).ok());
            b.int_gauge(
                "ntpd_host_daemon_up",
                "Whether the embedded daemon's observation socket answered this scrape (1) or not (0)",
                [(Vec::new(), i64::from(observation.is_some()))],
            );
            if let Some(o) = observation {
                daemon_families(&mut b, &o);
            }
        }
    }
    let mut out = String::new();
    text::encode(&mut out, &b.registry).expect("writing to a String cannot fail");
    out
}

fn host_families(b: &mut Builder, host: &HostStatus) {
    b.info(
        "ntpd_host",
        "The running host: its version and mode (run or bridge)",
        [labels(&[("version", &host.version), ("mode", &host.mode)])],
    );
    b.counter(
        "ntpd_host_daemon_restarts",
        "Restarts of the embedded daemon after it ended unexpectedly",
        [(Vec::new(), host.daemon_restarts)],
    );
}

fn source_families(b: &mut Builder, sources: &[SourceStatus]) {
    let text = |v: Option<String>| v.unwrap_or_default();
    b.info(
        "ntpd_host_source",
        "A plugin source: its reading method, time scale, plugin and device",
        sources.iter().map(|s| {
            let plugin = s.plugin.as_ref();
            labels(&[
                ("source", &s.name),
                ("method", &text(s.method.map(|m| m.to_string()))),
                ("timescale", &text(s.timescale.map(|t| t.to_string()))),
                ("plugin", &text(plugin.map(|p| p.name.clone()))),
                ("plugin_version", &text(plugin.map(|p| p.version.clone()))),
                ("device", &text(s.device.clone())),
            ])
        }),
    );
    b.int_gauge(
        "ntpd_host_source_state",
        "The source's state: 1 for the state it is in, 0 for the others",
        sources.iter().flat_map(|s| {
            SourceState::ALL.iter().map(move |st| {
                (
                    labels(&[("source", &s.name), ("state", st.name())]),
                    i64::from(*st == s.state),
                )
            })
        }),
    );
    b.per_source_counter(sources, "ntpd_host_source_samples", "Samples taken", |s| {
        s.samples
    });
    b.per_source_counter(
        sources,
        "ntpd_host_source_delivered",
        "Samples the daemon's socket accepted",
        |s| s.delivered,
    );
    b.counter(
        "ntpd_host_source_errors",
        "Failed plugin calls, by the plugin's error kind",
        sources.iter().flat_map(|s| {
            s.errors.iter().map(|(kind, n)| {
                (
                    labels(&[("source", &s.name), ("kind", &kind.to_string())]),
                    *n,
                )
            })
        }),
    );
    b.per_source_counter(
        sources,
        "ntpd_host_source_restarts",
        "Worker restarts (crash, hang or silence)",
        |s| s.restarts,
    );
    b.per_source_counter(
        sources,
        "ntpd_host_source_hangs",
        "Hung plugin calls detected",
        |s| s.hangs,
    );
    b.per_source_counter(
        sources,
        "ntpd_host_source_rejected",
        "Samples the host refused to pass on (they broke the plugin contract)",
        |s| s.rejected,
    );
    b.per_source_counter(
        sources,
        "ntpd_host_source_disruptions",
        "Disruptions of the reference's time seen (live migrations)",
        |s| s.disruptions,
    );
    source_gauges(b, sources);
}

fn source_gauges(b: &mut Builder, sources: &[SourceStatus]) {
    b.per_source(
        sources,
        "ntpd_host_source_offset",
        "The last sample's offset, reference minus system",
        Some(Unit::Seconds),
        |s| s.last_offset_ns.map(ns_s),
    );
    b.per_source(
        sources,
        "ntpd_host_source_error_bound",
        "The last sample's error bound",
        Some(Unit::Seconds),
        |s| s.last_error_ns.map(ns_s),
    );
    b.per_source(
        sources,
        "ntpd_host_source_reference_error_bound",
        "The reference's own error bound with the last sample, when the platform publishes one",
        Some(Unit::Seconds),
        |s| s.last_reference_error_ns.map(ns_s),
    );
    b.per_source(
        sources,
        "ntpd_host_source_read_delay",
        "How long the last sample took, from the start of the plugin call to the datagram sent",
        Some(Unit::Seconds),
        |s| s.last_read_delay_ns.map(ns_s),
    );
    b.per_source(
        sources,
        "ntpd_host_source_precision",
        "The plugin's precision estimate",
        Some(Unit::Seconds),
        |s| s.precision_ns.map(ns_s),
    );
    b.per_source(
        sources,
        "ntpd_host_source_last_sample_timestamp",
        "System time of the last sample, since 1970",
        Some(Unit::Seconds),
        |s| s.last_sample_time_ns.map(ns_s),
    );
    b.per_source(
        sources,
        "ntpd_host_source_poll_interval_log2",
        "The configured poll interval, log2 seconds",
        None,
        |s| Some(f64::from(s.poll_interval)),
    );
    b.per_source(
        sources,
        "ntpd_host_source_poll_interval",
        "The configured poll interval",
        Some(Unit::Seconds),
        |s| Some(2f64.powi(i32::from(s.poll_interval))),
    );
    b.int_gauge(
        "ntpd_host_source_disrupted",
        "Whether the reference's time was disrupted and no sample has come since (1) or not (0)",
        sources
            .iter()
            .map(|s| (labels(&[("source", &s.name)]), i64::from(s.disrupted))),
    );
}

fn clockbound_families(b: &mut Builder, cb: &ClockBoundStatus) {
    let source = || labels(&[("source", &cb.source)]);
    b.int_gauge(
        "ntpd_host_clockbound_written",
        "Whether the ClockBound segment is being written (1) or not, after an error (0)",
        [(source(), i64::from(cb.error.is_none()))],
    );
    b.int_gauge(
        "ntpd_host_clockbound_status",
        "The clock status last written to the ClockBound segment: 1 for it, 0 for the others",
        CLOCKBOUND_STATUSES.iter().map(|st| {
            (
                labels(&[("source", &cb.source), ("status", st)]),
                i64::from(*st == cb.status),
            )
        }),
    );
    b.gauge(
        "ntpd_host_clockbound_bound",
        "The error bound last written to the ClockBound segment",
        Some(Unit::Seconds),
        cb.bound_ns.map(|v| (source(), ns_s(v))),
    );
    b.gauge(
        "ntpd_host_clockbound_max_drift",
        "The drift bound written to the ClockBound segment, as a fraction",
        Some(Unit::Ratios),
        [(source(), f64::from(cb.max_drift_ppb) / 1e9)],
    );
    b.counter(
        "ntpd_host_clockbound_writes",
        "Records written to the ClockBound segment",
        [(source(), cb.writes)],
    );
}

/// An NTP timestamp as ntpd-rs serializes it (32.32 fixed point).
#[derive(Clone, Copy, Debug, Default, Deserialize)]
#[serde(default)]
struct NtpTimestamp {
    timestamp: u64,
}

impl NtpTimestamp {
    /// `self - earlier` in seconds, era-wrapping, the way ntpd-rs computes it.
    #[allow(clippy::cast_possible_wrap, clippy::cast_precision_loss)]
    fn seconds_since(self, earlier: NtpTimestamp) -> f64 {
        self.timestamp.wrapping_sub(earlier.timestamp) as i64 as f64 / f64::from(u32::MAX)
    }
}

/// The parts of ntpd-rs's observation its exporter uses (durations are
/// seconds in the JSON).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Observation {
    program: Program,
    system: System,
    sources: Vec<ObservedSource>,
    servers: Vec<ObservedServer>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Program {
    version: String,
    build_commit: String,
    build_commit_date: String,
    uptime_seconds: f64,
    now: NtpTimestamp,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct System {
    stratum: u8,
    accumulated_steps_threshold: Option<f64>,
    root_delay: f64,
    root_variance_base_time: NtpTimestamp,
    root_variance_base: f64,
    root_variance_linear: f64,
    root_variance_quadratic: f64,
    root_variance_cubic: f64,
    leap_indicator: String,
    accumulated_steps: f64,
}

impl System {
    /// ntpd-rs's root dispersion at `now`: the square root of the root
    /// variance polynomial in the time since its base.
    fn root_dispersion(&self, now: NtpTimestamp) -> f64 {
        let t = now.seconds_since(self.root_variance_base_time);
        (self.root_variance_base
            + t * self.root_variance_linear
            + t.powi(2) * self.root_variance_quadratic
            + t.powi(3) * self.root_variance_cubic)
            .sqrt()
    }

    /// The leap indicator as ntpd-rs's exporter writes it (the enum's
    /// declaration index).
    fn leap_indicator(&self) -> i64 {
        match self.leap_indicator.as_str() {
            "NoWarning" => 0,
            "Leap61" => 1,
            "Leap59" => 2,
            "Unsynchronized" => 4,
            _ => 3,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ObservedSource {
    offset: f64,
    uncertainty: f64,
    delay: f64,
    remote_delay: f64,
    remote_uncertainty: f64,
    unanswered_polls: u32,
    poll_interval: i8,
    nts_cookies: Option<u64>,
    name: String,
    address: String,
    id: Value,
}

impl ObservedSource {
    /// The source id as ntpd-rs prints it (a number in the JSON).
    fn id(&self) -> String {
        match &self.id {
            Value::String(s) => s.clone(),
            v => v.to_string(),
        }
    }

    fn labels(&self) -> Labels {
        labels(&[
            ("name", &self.name),
            ("address", &self.address),
            ("id", &self.id()),
        ])
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ObservedServer {
    address: String,
    stats: BTreeMap<String, u64>,
}

/// ntpd-rs's default minimum poll interval, log2 seconds (what its
/// exporter reports as the system's poll interval without sources).
const NTPD_DEFAULT_MIN_POLL: i8 = 4;

fn daemon_families(b: &mut Builder, o: &Observation) {
    let none = Vec::new;
    let sys = &o.system;
    b.gauge(
        "ntp_uptime",
        "Time that the ntp daemon is running",
        Some(Unit::Seconds),
        [(
            labels(&[
                ("version", &o.program.version),
                ("build_commit", &o.program.build_commit),
                ("build_commit_date", &o.program.build_commit_date),
            ]),
            o.program.uptime_seconds,
        )],
    );
    let min_poll = o
        .sources
        .iter()
        .map(|s| s.poll_interval)
        .min()
        .unwrap_or(NTPD_DEFAULT_MIN_POLL);
    b.gauge(
        "ntp_system_poll_interval",
        "[DEPRECATED] Time between polls of the system",
        Some(Unit::Seconds),
        [(none(), 2f64.powi(i32::from(min_poll)))],
    );
    b.gauge(
        "ntp_system_accumulated_steps",
        "Accumulated amount of seconds that the system needed to jump the time",
        Some(Unit::Seconds),
        [(none(), sys.accumulated_steps)],
    );
    b.gauge(
        "ntp_system_accumulated_steps_threshold",
        "Threshold for the accumulated step amount at which the NTP daemon will exit (or -1 if no threshold was set)",
        Some(Unit::Seconds),
        [(none(), sys.accumulated_steps_threshold.unwrap_or(-1.0))],
    );
    b.int_gauge(
        "ntp_system_leap_indicator",
        "Indicates that a leap second will take place",
        [(none(), sys.leap_indicator())],
    );
    b.gauge(
        "ntp_system_root_delay",
        "Distance to the closest root time source",
        Some(Unit::Seconds),
        [(none(), sys.root_delay)],
    );
    b.gauge(
        "ntp_system_root_dispersion",
        "Estimate of how precise our time is",
        Some(Unit::Seconds),
        [(none(), sys.root_dispersion(o.program.now))],
    );
    b.int_gauge(
        "ntp_system_stratum",
        "Stratum of our clock",
        [(none(), i64::from(sys.stratum))],
    );
    daemon_source_families(b, &o.sources);
    daemon_server_families(b, &o.servers);
}

/// A per-source family in seconds: name, help, the field.
type SourceSeconds = (&'static str, &'static str, fn(&ObservedSource) -> f64);

fn daemon_source_families(b: &mut Builder, sources: &[ObservedSource]) {
    b.gauge(
        "ntp_source_poll_interval",
        "Time between polls of the source",
        Some(Unit::Seconds),
        sources
            .iter()
            .map(|s| (s.labels(), 2f64.powi(i32::from(s.poll_interval)))),
    );
    b.int_gauge(
        "ntp_source_unanswered_polls",
        "Number of polls since the last successful poll with a maximum of eight",
        sources
            .iter()
            .map(|s| (s.labels(), i64::from(s.unanswered_polls))),
    );
    b.int_gauge(
        "ntp_source_nts_cookies_available",
        "Number of unused cookies available for nts-enabled ntp exchanges",
        sources.iter().filter_map(|s| {
            s.nts_cookies
                .map(|n| (s.labels(), i64::try_from(n).unwrap_or(i64::MAX)))
        }),
    );
    let seconds: [SourceSeconds; 5] = [
        (
            "ntp_source_offset",
            "Offset between the upstream source and system time",
            |s| s.offset,
        ),
        (
            "ntp_source_delay",
            "Current round-trip delay to the upstream source",
            |s| s.delay,
        ),
        (
            "ntp_source_uncertainty",
            "Estimated error of the source clock",
            |s| s.uncertainty,
        ),
        (
            "ntp_source_root_delay",
            "Root delay reported by the time source",
            |s| s.remote_delay,
        ),
        (
            "ntp_source_root_dispersion",
            "Uncertainty reported by the time source",
            |s| s.remote_uncertainty,
        ),
    ];
    for (name, help, value) in seconds {
        b.gauge(
            name,
            help,
            Some(Unit::Seconds),
            sources.iter().map(|s| (s.labels(), value(s))),
        );
    }
}

/// ntpd-rs's server counters: the observation's stats key, the family
/// name (without `_total`) and the help text.
const SERVER_COUNTERS: [(&str, &str, &str); 11] = [
    (
        "received_packets",
        "ntp_server_received_packets",
        "Number of incoming packets",
    ),
    (
        "accepted_packets",
        "ntp_server_accepted_packets",
        "Number of packets accepted",
    ),
    (
        "denied_packets",
        "ntp_server_denied_packets",
        "Number of denied packets",
    ),
    (
        "ignored_packets",
        "ntp_server_ignored_packets",
        "Number of packets ignored",
    ),
    (
        "rate_limited_packets",
        "ntp_server_rate_limited_packets",
        "Number of rate limited packets",
    ),
    (
        "response_send_errors",
        "ntp_server_response_send_errors",
        "Number of packets where there was an error responding",
    ),
    (
        "nts_received_packets",
        "ntp_server_nts_received_packets",
        "Number of incoming NTS packets",
    ),
    (
        "nts_accepted_packets",
        "ntp_server_nts_accepted_packets",
        "Number of NTS packets accepted",
    ),
    (
        "nts_denied_packets",
        "ntp_server_nts_denied_packets",
        "Number of denied NTS packets",
    ),
    (
        "nts_rate_limited_packets",
        "ntp_server_nts_rate_limited_packets",
        "Number of rate limited NTS packets",
    ),
    (
        "nts_nak_packets",
        "ntp_server_nts_nak_packets",
        "Number of NTS nak responses to packets",
    ),
];

fn daemon_server_families(b: &mut Builder, servers: &[ObservedServer]) {
    for (key, name, help) in SERVER_COUNTERS {
        b.counter(
            name,
            help,
            servers.iter().map(|s| {
                (
                    labels(&[("listen_address", &s.address)]),
                    s.stats.get(key).copied().unwrap_or(0),
                )
            }),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::records::PluginIdentity;
    use ntpd_plugin_api::{ErrorKind, ReadMethod, TimeScale};
    use serde_json::json;

    fn host() -> HostStatus {
        let mut errors = BTreeMap::new();
        errors.insert(ErrorKind::TRANSIENT, 3);
        errors.insert(ErrorKind::UNAVAILABLE, 1);
        HostStatus {
            version: "0.1.0".into(),
            mode: "run".into(),
            daemon_restarts: 2,
            observation_path: Some("/run/ntpd-host/observe.sock".into()),
            sources: vec![
                SourceStatus {
                    name: "phc".into(),
                    state: SourceState::Running,
                    poll_interval: -2,
                    plugin: Some(PluginIdentity {
                        name: "ntpd-ptp".into(),
                        version: "1.0.0".into(),
                        ..PluginIdentity::default()
                    }),
                    method: Some(ReadMethod::EXTENDED),
                    timescale: Some(TimeScale::TAI),
                    device: Some("/dev/ptp0".into()),
                    last_offset_ns: Some(-1_500),
                    last_error_ns: Some(250),
                    last_read_delay_ns: Some(40_000),
                    last_sample_time_ns: Some(1_700_000_000_000_000_000),
                    samples: 17,
                    delivered: 16,
                    errors,
                    restarts: 1,
                    ..SourceStatus::default()
                },
                SourceStatus {
                    name: "spare \"b\"".into(),
                    state: SourceState::RestartWait,
                    poll_interval: 0,
                    ..SourceStatus::default()
                },
            ],
            clockbound: Some(ClockBoundStatus {
                source: "phc".into(),
                status: "synchronized".into(),
                bound_ns: Some(2_000),
                max_drift_ppb: 1_000,
                writes: 9,
                ..ClockBoundStatus::default()
            }),
            ..HostStatus::default()
        }
    }

    fn observation() -> Value {
        json!({
            "program": {"version": "1.9.0", "build_commit": "abc", "build_commit_date": "2025-01-01",
                        "uptime_seconds": 12.5, "now": {"timestamp": 10u64 << 32}},
            "system": {"stratum": 2, "reference_id": 0, "accumulated_steps_threshold": null,
                       "precision": 3.8e-6, "root_delay": 0.001,
                       "root_variance_base_time": {"timestamp": 6u64 << 32},
                       "root_variance_base": 1e-8, "root_variance_linear": 0.0,
                       "root_variance_quadratic": 0.0, "root_variance_cubic": 0.0,
                       "leap_indicator": "NoWarning", "accumulated_steps": 0.25},
            "sources": [{"offset": -1.5e-6, "uncertainty": 3e-7, "delay": 0.0, "remote_delay": 0.0,
                         "remote_uncertainty": 0.0, "last_update": {"timestamp": 0},
                         "unanswered_polls": 0, "poll_interval": 4, "nts_cookies": 5,
                         "name": "/run/ntpd-host/source-1.sock", "address": "/run/ntpd-host/source-1.sock",
                         "id": 7}],
            "servers": [{"address": "0.0.0.0:123", "stats": {"received_packets": 5, "accepted_packets": 4}}]
        })
    }

    /// The samples of `text` as (name with labels, value).
    fn samples(text: &str) -> BTreeMap<String, f64> {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| {
                let (k, v) = l.rsplit_once(' ').unwrap();
                (k.to_owned(), v.parse().unwrap())
            })
            .collect()
    }

    fn families(text: &str) -> Vec<(String, String)> {
        text.lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .map(|l| {
                let (n, t) = l.split_once(' ').unwrap();
                (n.to_owned(), t.to_owned())
            })
            .collect()
    }

    #[test]
    fn per_source_series() {
        let host = host();
        let text = exposition(Some(&host), Some(&observation()));
        let s = samples(&text);
        let get = |k: &str| *s.get(k).unwrap_or_else(|| panic!("no {k} in\n{text}"));
        assert_eq!(get("ntpd_host_up"), 1.0);
        assert!(text.contains("\nntpd_host_up 1\n"), "an integer: {text}");
        assert_eq!(get("ntpd_host_daemon_up"), 1.0);
        assert_eq!(get(r#"ntpd_host_source_disrupted{source="phc"}"#), 0.0);
        assert_eq!(get("ntpd_host_daemon_restarts_total"), 2.0);
        assert_eq!(get(r#"ntpd_host_info{version="0.1.0",mode="run"}"#), 1.0);
        assert_eq!(get(r#"ntpd_host_source_samples_total{source="phc"}"#), 17.0);
        assert_eq!(
            get(r#"ntpd_host_source_delivered_total{source="phc"}"#),
            16.0
        );
        assert_eq!(get(r#"ntpd_host_source_restarts_total{source="phc"}"#), 1.0);
        assert_eq!(
            get(r#"ntpd_host_source_errors_total{source="phc",kind="transient"}"#),
            3.0
        );
        assert_eq!(
            get(r#"ntpd_host_source_errors_total{source="phc",kind="unavailable"}"#),
            1.0
        );
        assert_eq!(
            get(r#"ntpd_host_source_offset_seconds{source="phc"}"#),
            -1.5e-6
        );
        assert_eq!(
            get(r#"ntpd_host_source_error_bound_seconds{source="phc"}"#),
            2.5e-7
        );
        assert_eq!(
            get(r#"ntpd_host_source_read_delay_seconds{source="phc"}"#),
            4e-5
        );
        assert_eq!(
            get(r#"ntpd_host_source_poll_interval_log2{source="phc"}"#),
            -2.0
        );
        assert_eq!(
            get(r#"ntpd_host_source_poll_interval_seconds{source="phc"}"#),
            0.25
        );
        assert_eq!(
            get(r#"ntpd_host_source_last_sample_timestamp_seconds{source="phc"}"#),
            1.7e9
        );
        assert_eq!(
            get(
                r#"ntpd_host_source_info{source="phc",method="extended",timescale="tai",plugin="ntpd-ptp",plugin_version="1.0.0",device="/dev/ptp0"}"#
            ),
            1.0
        );
        assert_eq!(
            get(r#"ntpd_host_source_state{source="phc",state="running"}"#),
            1.0
        );
        assert_eq!(
            get(r#"ntpd_host_source_state{source="phc",state="stopped"}"#),
            0.0
        );
        // A name with a quote is escaped; a source without samples has
        // counters but no offset.
        assert_eq!(
            get(r#"ntpd_host_source_state{source="spare \"b\"",state="restart-wait"}"#),
            1.0
        );
        assert_eq!(
            get(r#"ntpd_host_source_samples_total{source="spare \"b\""}"#),
            0.0
        );
        assert!(!text.contains(r#"ntpd_host_source_offset_seconds{source="spare"#));
        assert!(text.contains("# UNIT ntpd_host_source_offset_seconds seconds\n"));
    }

    #[test]
    fn clockbound_series() {
        let host = host();
        let text = exposition(Some(&host), None);
        let s = samples(&text);
        let get = |k: &str| *s.get(k).unwrap_or_else(|| panic!("no {k} in\n{text}"));
        assert_eq!(
            get(r#"ntpd_host_clockbound_status{source="phc",status="synchronized"}"#),
            1.0
        );
        assert_eq!(
            get(r#"ntpd_host_clockbound_bound_seconds{source="phc"}"#),
            2e-6
        );
        assert_eq!(
            get(r#"ntpd_host_clockbound_writes_total{source="phc"}"#),
            9.0
        );
        assert_eq!(
            get(r#"ntpd_host_clockbound_max_drift_ratios{source="phc"}"#),
            1e-6
        );
        assert_eq!(get(r#"ntpd_host_clockbound_written{source="phc"}"#), 1.0);
        let mut failing = host.clone();
        let cb = failing.clockbound.as_mut().unwrap();
        cb.error = Some("read-only file system".into());
        cb.bound_ns = None;
        let text = exposition(Some(&failing), None);
        let s = samples(&text);
        assert_eq!(s[r#"ntpd_host_clockbound_written{source="phc"}"#], 0.0);
        assert!(
            !text.contains("ntpd_host_clockbound_bound_seconds{"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn daemon_series_keep_ntpd_rs_names() {
        let host = host();
        let text = exposition(Some(&host), Some(&observation()));
        let s = samples(&text);
        let get = |k: &str| *s.get(k).unwrap_or_else(|| panic!("no {k} in\n{text}"));
        assert_eq!(
            get(
                r#"ntp_uptime_seconds{version="1.9.0",build_commit="abc",build_commit_date="2025-01-01"}"#
            ),
            12.5
        );
        assert_eq!(get("ntp_system_stratum"), 2.0);
        assert_eq!(get("ntp_system_leap_indicator"), 0.0);
        assert_eq!(get("ntp_system_accumulated_steps_seconds"), 0.25);
        assert_eq!(get("ntp_system_accumulated_steps_threshold_seconds"), -1.0);
        assert_eq!(get("ntp_system_poll_interval_seconds"), 16.0);
        assert_eq!(get("ntp_system_root_delay_seconds"), 0.001);
        // sqrt(1e-8) with t = 4 s and no growth terms.
        assert!((get("ntp_system_root_dispersion_seconds") - 1e-4).abs() < 1e-12);
        let labels = r#"{name="/run/ntpd-host/source-1.sock",address="/run/ntpd-host/source-1.sock",id="7"}"#;
        assert_eq!(get(&format!("ntp_source_offset_seconds{labels}")), -1.5e-6);
        assert_eq!(
            get(&format!("ntp_source_uncertainty_seconds{labels}")),
            3e-7
        );
        assert_eq!(
            get(&format!("ntp_source_poll_interval_seconds{labels}")),
            16.0
        );
        assert_eq!(get(&format!("ntp_source_unanswered_polls{labels}")), 0.0);
        assert_eq!(
            get(&format!("ntp_source_nts_cookies_available{labels}")),
            5.0
        );
        assert_eq!(
            get(r#"ntp_server_received_packets_total{listen_address="0.0.0.0:123"}"#),
            5.0
        );
        assert_eq!(
            get(r#"ntp_server_nts_nak_packets_total{listen_address="0.0.0.0:123"}"#),
            0.0
        );
    }

    #[test]
    fn family_names_are_unique_and_in_two_namespaces() {
        let host = host();
        let text = exposition(Some(&host), Some(&observation()));
        let fams = families(&text);
        let mut names: Vec<_> = fams.iter().map(|(n, _)| n.as_str()).collect();
        names.sort_unstable();
        let before = names.len();
        names.dedup();
        assert_eq!(names.len(), before, "a family name repeats: {names:?}");
        // ntpd-rs 1.9's exporter's families, exactly.
        let ntpd: Vec<_> = names.iter().filter(|n| n.starts_with("ntp_")).collect();
        assert_eq!(ntpd.len(), 27, "{ntpd:?}");
        for n in &names {
            assert!(
                n.starts_with("ntpd_host_") || n.starts_with("ntp_") || *n == "ntpd_host",
                "{n}"
            );
        }
        // Every sample belongs to the family above it, with the suffix
        // its type requires.
        let mut current: Option<(String, String)> = None;
        for line in text.lines() {
            if let Some(l) = line.strip_prefix("# TYPE ") {
                let (n, t) = l.split_once(' ').unwrap();
                current = Some((n.to_owned(), t.to_owned()));
            } else if !line.starts_with('#') {
                let (n, t) = current.as_ref().unwrap();
                let name = line.split(['{', ' ']).next().unwrap();
                let want = match t.as_str() {
                    "counter" => format!("{n}_total"),
                    "info" => format!("{n}_info"),
                    _ => n.clone(),
                };
                assert_eq!(name, want, "{line}");
            }
        }
    }

    #[test]
    fn unreachable_host_and_daemon() {
        let text = exposition(None, None);
        assert_eq!(
            samples(&text).into_iter().collect::<Vec<_>>(),
            [("ntpd_host_up".to_owned(), 0.0)]
        );
        assert!(text.ends_with("# EOF\n"));
        // The host answers but the daemon does not.
        let host = host();
        let text = exposition(Some(&host), None);
        let s = samples(&text);
        assert_eq!(s["ntpd_host_daemon_up"], 0.0);
        assert!(!text.contains("ntp_system_stratum"));
        // Bridge mode: no daemon of ours, so no daemon gauge at all.
        let mut bridge = host.clone();
        bridge.observation_path = None;
        assert!(!exposition(Some(&bridge), None).contains("ntpd_host_daemon_up"));
        // An observation of another shape is the daemon being unreadable.
        let text = exposition(Some(&host), Some(&json!({"sources": "x"})));
        assert_eq!(samples(&text)["ntpd_host_daemon_up"], 0.0);
    }
}
