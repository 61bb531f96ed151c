//! The `ntpd-host` command line.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use ntpd_host::probe::{self, ProbeArgs};

/// ntpd-rs with plugin time sources (PTP hardware clocks and more).
#[derive(Parser, Debug)]
#[command(name = "ntpd-host", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Load a plugin, print its info and capabilities, take samples.
    Probe {
        /// Path of the plugin library (.so).
        plugin: PathBuf,
        /// The plugin's configuration: JSON text, or @FILE to read it from a file.
        #[arg(long, value_name = "JSON|@FILE")]
        config: Option<String>,
        /// Number of samples to take.
        #[arg(long, default_value_t = 5)]
        count: u32,
        /// Seconds between samples.
        #[arg(long, default_value_t = 1.0, value_name = "SECONDS")]
        interval: f64,
        /// Print one JSON object per line (info, capabilities, samples, summary).
        #[arg(long)]
        json: bool,
        /// Load the plugin even if someone other than root or you could modify it.
        #[arg(long)]
        allow_insecure_plugin: bool,
    },
}

/// Reads `--config`: JSON text or `@FILE`; checks it is a JSON object.
fn config_arg(arg: Option<String>) -> Result<String, String> {
    let Some(arg) = arg else {
        return Ok("{}".to_owned());
    };
    let (text, origin) = match arg.strip_prefix('@') {
        Some(file) => (
            std::fs::read_to_string(file).map_err(|e| format!("--config @{file}: {e}"))?,
            file.to_owned(),
        ),
        None => (arg, "--config".to_owned()),
    };
    match serde_json::from_str::<serde_json::Value>(&text) {
        Ok(serde_json::Value::Object(_)) => Ok(text),
        Ok(_) => Err(format!(
            "{origin}: the plugin config must be a JSON object, like {{\"device\": \"/dev/ptp0\"}}"
        )),
        Err(e) => Err(format!("{origin}: not valid JSON: {e}")),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Probe {
            plugin,
            config,
            count,
            interval,
            json,
            allow_insecure_plugin,
        } => (|| {
            if !(interval.is_finite() && (0.0..=86_400.0).contains(&interval)) {
                return Err("--interval: must be between 0 and 86400 seconds".to_owned());
            }
            let args = ProbeArgs {
                plugin,
                config_json: config_arg(config)?,
                count,
                interval: Duration::from_secs_f64(interval),
                json,
                allow_insecure: allow_insecure_plugin,
            };
            probe::run(&args, &mut std::io::stdout().lock())
        })(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(line) => {
            eprintln!("ntpd-host: {line}");
            ExitCode::FAILURE
        }
    }
}
