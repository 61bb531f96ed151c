//! The embedded ntpd-rs: its own validation (`ntp-ctl validate`) and its
//! daemon (`ntp-daemon`), both run as children of this binary's own image
//! with argv[0] naming the role.

use std::os::unix::process::CommandExt as _;
use std::path::Path;

use crate::daemon::notify::NOTIFY_ENV;
use crate::daemon::supervisor::SELF_EXE;
use crate::protocol::worker::PARENT_ENV;

/// argv[0] that makes this binary the ntpd-rs daemon.
pub const DAEMON_ARG0: &str = "ntp-daemon";
/// argv[0] that makes this binary ntpd-rs's control tool.
pub const CTL_ARG0: &str = "ntp-ctl";

/// What ntpd-rs's validation said.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Validation {
    /// Whether ntpd-rs accepts the config (its exit status).
    pub accepted: bool,
    /// Its messages, on one line, terminal escapes removed.
    pub message: String,
}

/// Removes terminal escape sequences (`ESC [ ... letter`).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// A log line of ntpd-rs (`TIMESTAMP LEVEL target: message`) as its level
/// and message; `None` for a line of another shape.
fn log_line(line: &str) -> Option<(&str, &str)> {
    let mut words = line.splitn(3, char::is_whitespace);
    let stamp = words.next()?;
    if !(stamp.ends_with('Z') && stamp.contains('T')) {
        return None;
    }
    let rest = line[stamp.len()..].trim_start();
    let level = rest.split_whitespace().next()?;
    let after = rest[level.len()..].trim_start();
    let message = after.split_once(": ").map_or(after, |(_, m)| m);
    Some((level, message))
}

/// ntpd-rs's output for a user, on one line: its warnings and errors joined
/// with "; ". Left out: informational log lines (they name the temporary
/// file), the success line, and the TOML parser's source excerpt and
/// position (they point into the derived file, not the user's).
pub fn one_line(output: &str) -> String {
    let clean = strip_ansi(output);
    let mut parts = Vec::new();
    for line in clean.lines().map(str::trim) {
        let text = match log_line(line) {
            Some(("INFO" | "DEBUG" | "TRACE", _)) => continue,
            Some((_, message)) => message,
            None => line,
        };
        let excerpt = text.starts_with('|')
            || text
                .split_once(" |")
                .is_some_and(|(n, _)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        if text.is_empty() || text == "Config looks good" || excerpt {
            continue;
        }
        let text = match text.find("TOML parse error at line") {
            Some(at) => text[..at].trim_end_matches([' ', ':']),
            None => text,
        };
        if !text.is_empty() {
            parts.push(text);
        }
    }
    parts.join("; ")
}

/// Runs `ntp-ctl validate -c derived`; ntpd-rs's exit status decides.
pub fn validate(derived: &Path) -> std::io::Result<Validation> {
    let out = std::process::Command::new(SELF_EXE)
        .arg0(CTL_ARG0)
        .arg("validate")
        .arg("-c")
        .arg(derived)
        .env("NO_COLOR", "1")
        .env_remove(NOTIFY_ENV)
        .output()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(Validation {
        accepted: out.status.success(),
        message: one_line(&text),
    })
}

/// The daemon command: `ntp-daemon -c derived [-l level]`, its readiness
/// reported to the host's private socket `notify` (never to the service
/// manager's: see [`crate::daemon::notify`]).
pub fn daemon_command(
    derived: &Path,
    log_level: Option<&str>,
    notify: &Path,
) -> tokio::process::Command {
    let mut cmd = std::process::Command::new(SELF_EXE);
    cmd.arg0(DAEMON_ARG0)
        .arg("-c")
        .arg(derived)
        .env(PARENT_ENV, std::process::id().to_string())
        .env(NOTIFY_ENV, notify);
    if let Some(level) = log_level {
        cmd.arg("-l").arg(level);
    }
    let mut cmd = tokio::process::Command::from(cmd);
    cmd.kill_on_drop(true);
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_becomes_one_clean_line() {
        let warn = "\u{1b}[2m2026-12-02T05:00:00.1Z\u{1b}[0m \u{1b}[33m WARN\u{1b}[0m ntpd::daemon::config: Forcing a source into NTPv5.\n";
        let info = "2026-12-02T05:00:00.1Z  INFO ntpd::daemon::config: using config file path=\"/tmp/x\"\n";
        assert_eq!(
            one_line(&format!("{info}{warn}")),
            "Forcing a source into NTPv5."
        );
        let parse = "Error: Could not load configuration: config toml parsing error: TOML parse error at line 5, column 1\n  |\n5 | [[source]]\n  | ^^^^^^^^^^\nunknown field `bogus`, expected one of `a`\n\n";
        assert_eq!(
            one_line(&format!("{info}{parse}")),
            "Error: Could not load configuration: config toml parsing error; unknown field `bogus`, expected one of `a`"
        );
        assert_eq!(one_line("Config looks good\n"), "");
    }
}
