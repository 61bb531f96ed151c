//! `ntpd-host probe`: load a plugin, show what it is, take samples.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use ntpd_plugin_api::{Capabilities, PluginError, PluginInfo, Sample};
use serde_json::json;

use crate::plugin::{self, LoadOptions};

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
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
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
    pub errors: BTreeMap<String, u64>,
}

/// Summarises samples and error counts. Differences are taken from the first
/// offset so that large offsets (37 s is 3.7e10 ns) keep full precision.
pub fn summarize(samples: &[Sample], errors: &BTreeMap<String, u64>) -> Summary {
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
        samples: n as u64,
        offset_mean_ns: mean_rel.map(|m| base as f64 + m),
        offset_sd_ns: sd,
        offset_min_ns: samples.iter().map(|s| s.offset_ns).min(),
        offset_max_ns: samples.iter().map(|s| s.offset_ns).max(),
        error_mean_ns: (n > 0)
            .then(|| samples.iter().map(|s| s.error_ns as f64).sum::<f64>() / n as f64),
        errors: errors.clone(),
    }
}

/// JSON form of the plugin's identity.
pub fn info_json(info: &PluginInfo, path: &std::path::Path) -> serde_json::Value {
    json!({
        "type": "info",
        "path": path,
        "name": info.name.as_str(),
        "vendor": info.vendor.as_str(),
        "version": info.version.as_str(),
        "description": info.description.as_str(),
        "api-version": info.api_version.as_str(),
    })
}

/// JSON form of capabilities.
pub fn capabilities_json(caps: &Capabilities) -> serde_json::Value {
    let extensions: serde_json::Value = if caps.extensions.is_empty() {
        json!({})
    } else {
        serde_json::from_str(caps.extensions.as_str())
            .unwrap_or_else(|_| json!({ "unparsed": caps.extensions.as_str() }))
    };
    json!({
        "type": "capabilities",
        "method": caps.method.to_string(),
        "timescale": caps.timescale.to_string(),
        "precision-ns": caps.precision_ns,
        "min-poll": caps.min_poll_log2,
        "max-poll": caps.max_poll_log2,
        "description": caps.description.as_str(),
        "flags": caps.flags,
        "extensions": extensions,
    })
}

/// JSON form of one sample.
pub fn sample_json(n: u32, s: &Sample) -> serde_json::Value {
    json!({
        "type": "sample",
        "n": n,
        "system-time-ns": s.system_time_ns,
        "offset-ns": s.offset_ns,
        "error-ns": s.error_ns,
        "leap": s.leap.to_string(),
        "readings": s.readings,
    })
}

/// JSON form of one failed sample.
pub fn error_json(n: u32, e: &PluginError) -> serde_json::Value {
    json!({
        "type": "error",
        "n": n,
        "kind": e.kind.to_string(),
        "message": e.message.as_str(),
    })
}

fn fmt_opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

/// Runs a probe, writing to `out`. Returns an error line for stderr when the
/// plugin cannot be loaded or initialised, or when no sample succeeded.
pub fn run(args: &ProbeArgs, out: &mut dyn Write) -> Result<(), String> {
    let load_started = Instant::now();
    let plugin = plugin::load(
        &args.plugin,
        LoadOptions {
            allow_insecure: args.allow_insecure,
        },
    )
    .map_err(|e| e.to_string())?;
    let load_time = load_started.elapsed();
    let info = plugin.info().clone();
    let mut source = plugin.init(&args.config_json).map_err(|e| e.to_string())?;
    let caps = source
        .capabilities()
        .map_err(|e| format!("{}: capabilities() failed: {e}", args.plugin.display()))?;

    let w = |out: &mut dyn Write, line: String| {
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    };
    if args.json {
        let mut info_line = info_json(&info, &args.plugin);
        info_line["load-time-us"] = json!(load_time.as_micros() as u64);
        w(out, info_line.to_string());
        w(out, capabilities_json(&caps).to_string());
    } else {
        w(
            out,
            format!(
                "plugin       {} {} by {} (plugin API {}), loaded in {:.1} ms",
                info.name,
                info.version,
                info.vendor,
                info.api_version,
                load_time.as_secs_f64() * 1e3
            ),
        );
        w(out, format!("             {}", info.description));
        w(
            out,
            format!(
                "method       {}, time scale {}, precision {} ns, poll {}..{} (log2 s)",
                caps.method,
                caps.timescale,
                caps.precision_ns,
                caps.min_poll_log2,
                caps.max_poll_log2
            ),
        );
        w(out, format!("source       {}", caps.description));
    }

    let mut samples = Vec::new();
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    let mut next = Instant::now();
    for n in 1..=args.count {
        match source.sample() {
            Ok(s) => {
                if args.json {
                    w(out, sample_json(n, &s).to_string());
                } else {
                    w(
                        out,
                        format!(
                            "sample {n:<5} offset {:+} ns, error bound {} ns, leap {}, {} reading(s)",
                            s.offset_ns, s.error_ns, s.leap, s.readings
                        ),
                    );
                }
                samples.push(s);
            }
            Err(e) => {
                *errors.entry(e.kind.to_string()).or_default() += 1;
                if args.json {
                    w(out, error_json(n, &e).to_string());
                } else {
                    w(out, format!("sample {n:<5} {e}"));
                }
            }
        }
        if n < args.count {
            next += args.interval;
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
        }
    }

    let summary = summarize(&samples, &errors);
    if args.json {
        let mut v = serde_json::to_value(&summary).expect("summary serializes");
        v["type"] = json!("summary");
        w(out, v.to_string());
    } else {
        let errs = if errors.is_empty() {
            "none".to_owned()
        } else {
            errors
                .iter()
                .map(|(k, v)| format!("{v} {k}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        w(
            out,
            format!(
                "summary      {} of {} samples; offset mean {} ns, sd {} ns, min {} ns, max {} ns; \
                 mean error bound {} ns; errors: {errs}",
                summary.samples,
                args.count,
                fmt_opt(summary.offset_mean_ns.map(|v| format!("{v:+.1}"))),
                fmt_opt(summary.offset_sd_ns.map(|v| format!("{v:.1}"))),
                fmt_opt(summary.offset_min_ns),
                fmt_opt(summary.offset_max_ns),
                fmt_opt(summary.error_mean_ns.map(|v| format!("{v:.1}"))),
            ),
        );
    }
    if samples.is_empty() && args.count > 0 {
        return Err(format!(
            "{}: no sample succeeded ({} attempts)",
            args.plugin.display(),
            args.count
        ));
    }
    Ok(())
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
        let sum = summarize(&s, &BTreeMap::new());
        assert_eq!(sum.samples, 3);
        assert_eq!(sum.offset_mean_ns, Some(37_000_000_020.0));
        assert!((sum.offset_sd_ns.unwrap() - 10.0).abs() < 1e-9);
        assert_eq!(sum.offset_min_ns, Some(37_000_000_010));
        assert_eq!(sum.offset_max_ns, Some(37_000_000_030));
        assert_eq!(sum.error_mean_ns, Some(6.0));
    }

    #[test]
    fn empty_summary_has_no_statistics() {
        let mut errors = BTreeMap::new();
        errors.insert("transient".to_owned(), 2);
        let sum = summarize(&[], &errors);
        assert_eq!(sum.samples, 0);
        assert_eq!(sum.offset_mean_ns, None);
        assert_eq!(sum.errors["transient"], 2);
    }
}
