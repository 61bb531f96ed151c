//! `ntpd-host probe`: load a plugin, show what it is, take samples.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use ntpd_plugin_api::{ErrorKind, Sample};
use serde::Serialize;

use crate::error::HostError;
use crate::loader::{self, LoadError, LoadOptions};
use crate::protocol::records::{CapabilitiesRecord, ErrorRecord, PluginIdentity, SampleRecord};

/// Settings of one probe run.
#[derive(Clone, Debug)]
pub struct ProbeArgs {
    /// Plugin library path.
    pub plugin: PathBuf,
    /// The plugin's configuration as JSON text.
    pub config_json: String,
    /// Number of samples.
    pub count: u32,
    /// Time between samples.
    pub interval: Duration,
    /// One JSON object per line instead of text.
    pub json: bool,
    /// Load even if the file's ownership or mode is unsafe.
    pub allow_insecure: bool,
}

/// Statistics over a probe run.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Summary {
    /// Samples that succeeded.
    pub samples: u64,
    /// Mean offset, ns.
    pub offset_mean_ns: Option<f64>,
    /// Sample standard deviation of the offset, ns.
    pub offset_sd_ns: Option<f64>,
    /// Smallest offset, ns.
    pub offset_min_ns: Option<i64>,
    /// Largest offset, ns.
    pub offset_max_ns: Option<i64>,
    /// Mean error bound, ns.
    pub error_mean_ns: Option<f64>,
    /// Failed samples by error kind.
    pub errors: BTreeMap<ErrorKind, u64>,
}

/// Summarises samples and error counts. Differences are taken from the first
/// offset so that large offsets (37 s is 3.7e10 ns) keep full precision.
// Statistics for display: differences from the first offset keep their
// precision; counts are far below 2^52.
#[allow(clippy::cast_precision_loss)]
pub fn summarize(samples: &[Sample], errors: BTreeMap<ErrorKind, u64>) -> Summary {
    let n = samples.len();
    let base = samples.first().map_or(0, |s| s.offset_ns);
    let rel: Vec<f64> = samples
        .iter()
        .map(|s| (s.offset_ns - base) as f64)
        .collect();
    let mean_rel = (n > 0).then(|| rel.iter().sum::<f64>() / n as f64);
    let sd = mean_rel.map(|m| {
        if n < 2 {
            0.0
        } else {
            (rel.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt()
        }
    });
    Summary {
        samples: u64::try_from(n).unwrap_or(u64::MAX),
        offset_mean_ns: mean_rel.map(|m| base as f64 + m),
        offset_sd_ns: sd,
        offset_min_ns: samples.iter().map(|s| s.offset_ns).min(),
        offset_max_ns: samples.iter().map(|s| s.offset_ns).max(),
        error_mean_ns: (n > 0)
            .then(|| samples.iter().map(|s| s.error_ns as f64).sum::<f64>() / n as f64),
        errors,
    }
}

/// One line of `probe --json`: the shared records, tagged by `type`.
#[derive(Debug, Serialize)]
#[serde(
    tag = "type",
    rename_all = "kebab-case",
    rename_all_fields = "kebab-case"
)]
pub enum ProbeLine<'a> {
    /// The plugin's identity, where it was loaded from and how long that took.
    Info {
        /// The plugin's identity.
        #[serde(flatten)]
        plugin: &'a PluginIdentity,
        /// The library path.
        path: &'a std::path::Path,
        /// How long loading took, microseconds.
        load_time_us: u64,
    },
    /// The source's capabilities.
    Capabilities(&'a CapabilitiesRecord),
    /// One sample.
    Sample {
        /// 1-based sample number.
        n: u32,
        /// The sample.
        #[serde(flatten)]
        sample: SampleRecord,
    },
    /// One failed sample.
    Error {
        /// 1-based sample number.
        n: u32,
        /// The error.
        #[serde(flatten)]
        error: ErrorRecord,
    },
    /// The summary.
    Summary(&'a Summary),
}

impl ProbeLine<'_> {
    /// The line's JSON text.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("probe lines serialize")
    }
}

fn fmt_opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

/// One sample's line.
fn sample_line(json: bool, n: u32, s: &Sample) -> String {
    if json {
        return ProbeLine::Sample {
            n,
            sample: SampleRecord::from(s),
        }
        .to_json();
    }
    format!(
        "sample {n:<5} offset {:+} ns, error bound {} ns{}, leap {}, {} reading(s)",
        s.offset_ns,
        s.error_ns,
        if s.reference_error_ns > 0 {
            format!(", platform bound {} ns", s.reference_error_ns)
        } else {
            String::new()
        },
        s.leap,
        s.readings
    )
}

/// Runs a probe, writing to `out`. Returns an error line for stderr when the
/// plugin cannot be loaded or initialised, or when no sample succeeded.
pub fn run(args: &ProbeArgs, out: &mut dyn Write) -> Result<(), HostError> {
    let load_started = Instant::now();
    let plugin = loader::load(
        &args.plugin,
        LoadOptions {
            allow_insecure: args.allow_insecure,
        },
    )?;
    let load_time = load_started.elapsed();
    let identity = PluginIdentity::from(plugin.info());
    let mut source = plugin.init(&args.config_json)?;
    let caps = source.capabilities().map_err(|mut error| {
        error.message = format!("capabilities(): {}", error.message).into();
        LoadError::Init {
            path: args.plugin.clone(),
            error,
        }
    })?;
    let caps = CapabilitiesRecord::from(&caps);
    let mut w = |line: String| {
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    };
    if args.json {
        w(ProbeLine::Info {
            plugin: &identity,
            path: &args.plugin,
            load_time_us: u64::try_from(load_time.as_micros()).unwrap_or(u64::MAX),
        }
        .to_json());
        w(ProbeLine::Capabilities(&caps).to_json());
    } else {
        w(format!(
            "plugin       {} {} by {} (SDK {}), loaded in {:.1} ms",
            identity.name,
            identity.version,
            identity.vendor,
            identity.sdk_version,
            load_time.as_secs_f64() * 1e3
        ));
        w(format!("             {}", identity.description));
        w(format!(
            "method       {}, time scale {}, precision {} ns, poll {}..{} (log2 s)",
            caps.method, caps.timescale, caps.precision_ns, caps.min_poll, caps.max_poll
        ));
        w(format!("source       {}", caps.description));
        if let Some(platform) = caps.extensions.get("platform") {
            w(format!(
                "platform     {platform} (the reference's own error bound, per sample)"
            ));
        }
    }

    let mut samples = Vec::new();
    let mut errors: BTreeMap<ErrorKind, u64> = BTreeMap::new();
    let mut next = Instant::now();
    for n in 1..=args.count {
        match source.sample() {
            Ok(s) => {
                w(sample_line(args.json, n, &s));
                samples.push(s);
            }
            Err(e) => {
                *errors.entry(e.kind).or_default() += 1;
                w(if args.json {
                    ProbeLine::Error {
                        n,
                        error: ErrorRecord::from(&e),
                    }
                    .to_json()
                } else {
                    format!("sample {n:<5} {e}")
                });
            }
        }
        if n < args.count {
            next += args.interval;
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
        }
    }

    let summary = summarize(&samples, errors);
    w(if args.json {
        ProbeLine::Summary(&summary).to_json()
    } else {
        summary_text(&summary, args.count)
    });
    if samples.is_empty() && args.count > 0 {
        return Err(HostError::NoSample {
            path: args.plugin.clone(),
            attempts: args.count,
        });
    }
    Ok(())
}

/// The summary line of the text output.
fn summary_text(summary: &Summary, count: u32) -> String {
    let errs = if summary.errors.is_empty() {
        "none".to_owned()
    } else {
        summary
            .errors
            .iter()
            .map(|(k, v)| format!("{v} {k}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "summary      {} of {count} samples; offset mean {} ns, sd {} ns, min {} ns, max {} ns; \
         mean error bound {} ns; errors: {errs}",
        summary.samples,
        fmt_opt(summary.offset_mean_ns.map(|v| format!("{v:+.1}"))),
        fmt_opt(summary.offset_sd_ns.map(|v| format!("{v:.1}"))),
        fmt_opt(summary.offset_min_ns),
        fmt_opt(summary.offset_max_ns),
        fmt_opt(summary.error_mean_ns.map(|v| format!("{v:.1}"))),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(offset_ns: i64, error_ns: u64) -> Sample {
        Sample::new(0, offset_ns, error_ns)
    }

    #[test]
    fn summary_statistics() {
        let s = [
            sample(37_000_000_010, 4),
            sample(37_000_000_020, 6),
            sample(37_000_000_030, 8),
        ];
        let sum = summarize(&s, BTreeMap::new());
        assert_eq!(sum.samples, 3);
        assert_eq!(sum.offset_mean_ns, Some(37_000_000_020.0));
        assert!((sum.offset_sd_ns.unwrap() - 10.0).abs() < 1e-9);
        assert_eq!(sum.offset_min_ns, Some(37_000_000_010));
        assert_eq!(sum.offset_max_ns, Some(37_000_000_030));
        assert_eq!(sum.error_mean_ns, Some(6.0));
    }

    #[test]
    fn empty_summary_has_no_statistics() {
        let errors = BTreeMap::from([(ErrorKind::TRANSIENT, 2)]);
        let sum = summarize(&[], errors);
        assert_eq!(sum.samples, 0);
        assert_eq!(sum.offset_mean_ns, None);
        assert_eq!(sum.errors[&ErrorKind::TRANSIENT], 2);
        assert!(summary_text(&sum, 2).ends_with("errors: 2 transient"));
        let v = serde_json::to_value(ProbeLine::Summary(&sum)).unwrap();
        assert_eq!(v["type"], "summary");
        assert_eq!(v["errors"]["transient"], 2);
    }
}
