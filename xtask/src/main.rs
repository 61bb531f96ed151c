//! Project chores, run as `cargo run -p xtask -- TASK`.
//!
//! - `gen`: writes the man pages (`docs/man/ntpd-host.8` and one
//!   `ntpd-host-SUB.8` per visible subcommand) and the shell completions
//!   (`docs/completions/`) from ntpd-host's clap definitions.
//! - `check`: generates them into a temporary directory and fails, in one
//!   line, when a committed file differs (the test `generated_files_are_current`
//!   does the same under `cargo test --workspace`).
//!
//! The output is deterministic: no date, and the version is the ntpd-host
//! crate's, compiled in.

#![forbid(unsafe_code)]

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Command, CommandFactory};
use clap_complete::Shell;
use ntpd_host::cli::Cli;

/// The command that regenerates the files, for messages.
const FIX: &str = "cargo run -p xtask -- gen";

/// The man page section of the daemon and its subcommands (system
/// administration).
const SECTION: &str = "8";

/// The hand-written pages in `docs/man/`, which `check` leaves alone.
const HAND_WRITTEN: &[&str] = &["ntpd-host.toml.5"];

/// One generated file: its path relative to `docs/` and its contents.
#[derive(Debug)]
struct Generated {
    path: PathBuf,
    contents: Vec<u8>,
}

/// ntpd-host's command line as users see it: the clap definitions without
/// the hidden subcommands (the internal `worker`), which the man pages and
/// completions must not offer. clap cannot remove a subcommand, so this
/// rebuilds the top-level command from the real one's parts.
fn public_command() -> Command {
    let full = Cli::command();
    let visible: Vec<Command> = full
        .get_subcommands()
        .filter(|sub| !sub.is_hide_set())
        .cloned()
        .collect();
    let mut cmd = Command::new(full.get_name().to_owned())
        .version(full.get_version().unwrap_or("unknown").to_owned())
        .about(full.get_about().cloned().unwrap_or_default())
        .args(full.get_arguments().cloned())
        .subcommands(visible);
    if let Some(long_about) = full.get_long_about() {
        cmd = cmd.long_about(long_about.clone());
    }
    cmd
}

/// The subcommands that get a page of their own: all of
/// [`public_command`]'s but clap's `help`.
fn documented_subcommands(cmd: &Command) -> Vec<&Command> {
    cmd.get_subcommands()
        .filter(|sub| sub.get_name() != "help")
        .collect()
}

/// Sections clap does not know, appended to the page of the command
/// itself: where it looks, how it exits, where to read on.
const MAIN_PAGE_EXTRA: &str = r#".SH FILES
.TP
\fI/etc/ntpd\-rs/ntp.toml\fR
The configuration: ntpd\-rs's own, with \fBmode = "plugin"\fR sources and an
\fB[ntpd\-host]\fR table (see \fBntpd\-host.toml\fR(5)).
.TP
\fI/run/ntpd\-host/\fR
The runtime directory: the derived \fIntp.toml\fR ntpd\-rs runs on,
\fIstatus.sock\fR, ntpd\-rs's \fIobserve\fR socket and \fIsources/\fR with
the sample sockets.
.TP
\fI/usr/lib/ntpd\-rs/libntpd_ptp.so\fR
The PTP hardware clock plugin.
.SH EXIT STATUS
Every failure prints one line on standard error and exits with:
.TP
\fB0\fR
success
.TP
\fB1\fR
\fBprobe\fR: no sample succeeded
.TP
\fB2\fR
bad command line, or a bad \fBprobe \-\-config\fR or \fB\-\-interval\fR
.TP
\fB65\fR
a plugin could not be loaded or initialised, or a plugin source's library is
refused (missing, not ELF, unsafe owner or mode)
.TP
\fB66\fR
the configuration file cannot be read
.TP
\fB69\fR
\fBstatus\fR: no running ntpd\-host to ask
.TP
\fB70\fR
internal error
.TP
\fB71\fR
a process, thread or runtime could not be started
.TP
\fB73\fR
the runtime directory, or a file in it, cannot be created
.TP
\fB78\fR
the configuration is invalid
.TP
other
\fBrun\fR: the embedded ntpd\-rs daemon exited on its own with this status,
passed through (77: no permission to steer the clock, 70: its panic
threshold or an internal error, 78: its configuration)
"#;

/// An EXAMPLES section for the subcommand `name`, if it has one.
fn subcommand_examples(name: &str) -> &'static str {
    match name {
        "run" => {
            r#".SH EXAMPLES
.TP
\fBntpd\-host run \-c /etc/ntpd\-rs/ntp.toml\fR
Runs ntpd\-rs with the plugin sources of that file, steering the system
clock; \fBntpd\-host\fR without a subcommand does the same.
"#
        }
        "bridge" => {
            r#".SH EXAMPLES
.TP
\fBntpd\-host bridge \-c /etc/ntpd\-host/bridge.toml\fR
Runs only the plugin workers; each plugin source's \fBsocket\fR is the
\fBpath\fR of a \fBmode = "sock"\fR source of a separately installed
ntpd\-rs.
"#
        }
        "validate" => {
            r#".SH EXAMPLES
.TP
\fBntpd\-host validate \-c /etc/ntpd\-rs/ntp.toml\fR
Checks the host keys and plugin files, then the derived config with
ntpd\-rs's own validation; exits 0 when all is well, otherwise prints one
line naming the file and what is wrong.
"#
        }
        "status" => {
            r#".SH EXAMPLES
.TP
\fBntpd\-host status\fR
The daemon's view and each plugin source's state, last sample, counts and
last error. Root and members of group \fBntpd\-host\fR may run it.
.TP
\fBntpd\-host status \-\-json\fR
The same as one JSON document.
"#
        }
        "probe" => {
            r#".SH EXAMPLES
.TP
\fBntpd\-host probe /usr/lib/ntpd\-rs/libntpd_ptp.so \-\-config '{"clock\-name": "ptp_kvm"}'\fR
Loads the PTP plugin for the KVM PHC, prints the method, device and read
delay, and takes 5 samples, one a second; no clock is changed.
.TP
\fBntpd\-host probe /usr/lib/ntpd\-rs/libntpd_ptp.so \-\-config @phc.json \-\-count 20 \-\-json\fR
Reads the plugin config from a file and prints one JSON object per line.
"#
        }
        _ => "",
    }
}

/// The SEE ALSO section of every page.
const SEE_ALSO: &str = r#".SH SEE ALSO
\fBntpd\-host\fR(8), \fBntpd\-host.toml\fR(5), \fBntp.toml\fR(5),
\fBntp\-daemon\fR(8), \fBntp\-ctl\fR(8), \fBptp4l\fR(8);
the admin guide, \fIdocs/admin\-guide.md\fR in the source.
"#;

/// A roff man page of `cmd`, titled `title`, with `extra` roff after
/// clap's sections.
fn man_page(cmd: Command, title: &str, version: &str, extra: &str) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    clap_mangen::Man::new(cmd.name(title.to_owned()))
        .title(title.to_owned())
        .section(SECTION)
        .date("")
        .source(format!("ntpd-host {version}"))
        .manual("System Administration")
        .render(&mut out)?;
    // clap_mangen writes an empty date as nothing at all, which shifts the
    // source and manual into the date's and source's places: write the
    // title line with an explicit empty date.
    let text = String::from_utf8(out).map_err(|e| io::Error::other(e.to_string()))?;
    let title_line =
        format!(".TH {title} {SECTION} \"\" \"ntpd-host {version}\" \"System Administration\"");
    let mut out = Vec::new();
    for line in text.lines() {
        let line = if line.starts_with(".TH ") {
            title_line.as_str()
        } else {
            line
        };
        out.extend_from_slice(line.as_bytes());
        out.push(b'\n');
    }
    out.extend_from_slice(extra.as_bytes());
    out.extend_from_slice(SEE_ALSO.as_bytes());
    Ok(out)
}

/// Every generated file, in a fixed order.
fn generate() -> io::Result<Vec<Generated>> {
    let mut cmd = public_command();
    cmd.build();
    let version = cmd.get_version().unwrap_or("unknown").to_owned();
    // The pages list the subcommands with their own pages; `help` has none.
    let mut man_cmd = public_command().disable_help_subcommand(true);
    man_cmd.build();
    let mut files = vec![Generated {
        path: PathBuf::from("man/ntpd-host.8"),
        contents: man_page(man_cmd, "ntpd-host", &version, MAIN_PAGE_EXTRA)?,
    }];
    for sub in documented_subcommands(&cmd) {
        let title = format!("ntpd-host-{}", sub.get_name());
        files.push(Generated {
            path: PathBuf::from(format!("man/{title}.{SECTION}")),
            contents: man_page(
                sub.clone().version(version.clone()),
                &title,
                &version,
                subcommand_examples(sub.get_name()),
            )?,
        });
    }
    for (shell, file) in [
        (Shell::Bash, "completions/ntpd-host.bash"),
        (Shell::Zsh, "completions/_ntpd-host"),
        (Shell::Fish, "completions/ntpd-host.fish"),
    ] {
        let mut contents = Vec::new();
        clap_complete::generate(shell, &mut cmd.clone(), "ntpd-host", &mut contents);
        files.push(Generated {
            path: PathBuf::from(file),
            contents,
        });
    }
    Ok(files)
}

/// Writes every generated file under `docs`.
fn write_all(docs: &Path, files: &[Generated]) -> io::Result<()> {
    for file in files {
        let path = docs.join(&file.path);
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir)?;
        }
        fs::write(&path, &file.contents)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    }
    Ok(())
}

/// Why the committed files are not what `gen` would write.
#[derive(Debug, PartialEq, Eq)]
enum Stale {
    /// A generated file is missing or differs.
    Differs(PathBuf),
    /// A page in `docs/man/` that nothing generates any more (a subcommand
    /// that was removed or hidden).
    Orphan(PathBuf),
}

impl fmt::Display for Stale {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stale::Differs(path) => write!(
                f,
                "docs/{} is stale or missing (the clap definitions in ntpd-host/src/cli.rs changed): run `{FIX}` and commit the result",
                path.display()
            ),
            Stale::Orphan(path) => write!(
                f,
                "docs/{} is no longer generated (its subcommand is gone or hidden): delete it, run `{FIX}` and commit the result",
                path.display()
            ),
        }
    }
}

/// Compares the files under `docs` with what `gen` writes.
fn check(docs: &Path) -> io::Result<Result<(), Stale>> {
    let files = generate()?;
    // Written out and read back, as `gen` would, so that the comparison
    // is of files, not of buffers.
    let scratch = tempfile::tempdir()?;
    write_all(scratch.path(), &files)?;
    for file in &files {
        let fresh = fs::read(scratch.path().join(&file.path))?;
        match fs::read(docs.join(&file.path)) {
            Ok(committed) if committed == fresh => {}
            Ok(_) => return Ok(Err(Stale::Differs(file.path.clone()))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Ok(Err(Stale::Differs(file.path.clone())));
            }
            Err(e) => return Err(e),
        }
    }
    let mut committed_pages: Vec<PathBuf> = fs::read_dir(docs.join("man"))?
        .map(|entry| entry.map(|e| PathBuf::from("man").join(e.file_name())))
        .collect::<io::Result<_>>()?;
    committed_pages.sort();
    for page in committed_pages {
        let name = page.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if !HAND_WRITTEN.contains(&name) && !files.iter().any(|f| f.path == page) {
            return Ok(Err(Stale::Orphan(page)));
        }
    }
    Ok(Ok(()))
}

/// The repository's `docs/` directory.
fn docs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs")
}

fn main() -> ExitCode {
    let task = std::env::args().nth(1);
    let result = match task.as_deref() {
        Some("gen") => generate().and_then(|files| {
            write_all(&docs_dir(), &files)?;
            for f in &files {
                println!("wrote docs/{}", f.path.display());
            }
            Ok(ExitCode::SUCCESS)
        }),
        Some("check") => check(&docs_dir()).map(|outcome| match outcome {
            Ok(()) => {
                println!("docs/man and docs/completions are current");
                ExitCode::SUCCESS
            }
            Err(stale) => {
                eprintln!("xtask: {stale}");
                ExitCode::FAILURE
            }
        }),
        _ => {
            eprintln!("usage: cargo run -p xtask -- gen|check");
            return ExitCode::from(2);
        }
    };
    result.unwrap_or_else(|e| {
        eprintln!("xtask: {e}");
        ExitCode::FAILURE
    })
}

#[cfg(test)]
mod tests;
