//! A running `ntpd-host bridge` (the workers without the embedded daemon:
//! nothing here can touch the machine's clock) and a receiver that decodes
//! datagrams exactly as ntpd-rs's sock source does, for the end-to-end
//! tests.

// Pids and times of test processes are small.
#![allow(clippy::cast_possible_wrap, clippy::cast_sign_loss)]

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ntpd_host::protocol::sock::{self, Datagram};
use serde_json::Value;
use tempfile::TempDir;

/// A running `ntpd-host bridge`, stopped (SIGTERM) on drop.
pub struct Bridge {
    /// The bridge process.
    pub child: Child,
    /// Its runtime directory.
    pub runtime: PathBuf,
}

impl Bridge {
    pub fn start(dir: &Path, config: &str) -> Self {
        Self::start_with(dir, config, "warn", Stdio::inherit())
    }

    /// Starts a bridge at log `level`, its stderr (the host's log) to
    /// `stderr`.
    pub fn start_with(dir: &Path, config: &str, level: &str, stderr: Stdio) -> Self {
        Self::start_env(dir, config, level, stderr, &[])
    }

    /// As [`Bridge::start_with`], with extra environment variables.
    pub fn start_env(
        dir: &Path,
        config: &str,
        level: &str,
        stderr: Stdio,
        env: &[(&str, &Path)],
    ) -> Self {
        let cfg = dir.join("ntp.toml");
        std::fs::write(&cfg, format!("{}{config}", host_table())).unwrap();
        let runtime = dir.join("run");
        let child = Command::new(super::host_bin())
            .args(["bridge", "-c"])
            .arg(&cfg)
            .arg("--runtime-dir")
            .arg(&runtime)
            .args(["-l", level])
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap();
        Self { child, runtime }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// `ntpd-host status --json` for this bridge.
    pub fn status(&self) -> Value {
        let out = Command::new(super::host_bin())
            .args(["status", "--json", "--runtime-dir"])
            .arg(&self.runtime)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "status failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Polls status until `pred` holds for source `i`, or panics after `limit`.
    pub fn wait_for(
        &self,
        i: usize,
        limit: Duration,
        what: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let until = Instant::now() + limit;
        loop {
            if let Ok(s) = std::panic::catch_unwind(|| self.status()) {
                if pred(&s["sources"][i]) {
                    return s["sources"][i].clone();
                }
                if Instant::now() > until {
                    panic!(
                        "timed out waiting for {what}; last status: {:#}",
                        s["sources"][i]
                    );
                }
            } else if Instant::now() > until {
                panic!("timed out waiting for {what}: no status");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGTERM, then wait for the exit status.
    pub fn stop(mut self) -> std::process::ExitStatus {
        terminate(self.pid());
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < until, "bridge did not exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            terminate(self.pid());
            let _ = self.child.wait();
        }
    }
}

pub fn terminate(pid: i32) {
    let pid = rustix::process::Pid::from_raw(pid).unwrap();
    let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
}

/// Processes whose parent is `pid`.
pub fn children_of(pid: i32) -> Vec<i32> {
    super::children_of(pid as u32)
        .into_iter()
        .map(|p| p as i32)
        .collect()
}

pub fn alive(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map_or(true, |s| s[s.rfind(')').unwrap() + 2..].starts_with('Z'))
}

/// A receiver on `path`, decoding like ntpd-rs.
pub struct Receiver(pub UnixDatagram);

impl Receiver {
    pub fn bind(path: &Path) -> Self {
        let s = UnixDatagram::bind(path).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        // Writable by the workers' user, like a daemon's sock source must be.
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666)).unwrap();
        Self(s)
    }

    /// The next valid datagram within `limit`, with its arrival time.
    pub fn next(&self, limit: Duration) -> Option<(Instant, Datagram)> {
        let until = Instant::now() + limit;
        let mut buf = [0u8; 128];
        while Instant::now() < until {
            if let Ok(n) = self.0.recv(&mut buf) {
                let d = sock::decode(&buf[..n]).expect("datagram decodes as ntpd-rs would");
                return Some((Instant::now(), d));
            }
        }
        None
    }

    /// Every datagram queued now, without waiting.
    pub fn drain(&self) -> Vec<Datagram> {
        self.0.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 128];
        let mut out = Vec::new();
        while let Ok(n) = self.0.recv(&mut buf) {
            out.push(sock::decode(&buf[..n]).expect("datagram decodes as ntpd-rs would"));
        }
        self.0.set_nonblocking(false).unwrap();
        out
    }

    /// Collects `n` datagrams, panicking if they do not come within `limit`.
    /// (So a call is itself the assertion that they came.)
    pub fn take(&self, n: usize, limit: Duration) -> Vec<(Instant, Datagram)> {
        let until = Instant::now() + limit;
        let mut out = Vec::new();
        while out.len() < n {
            let left = until.saturating_duration_since(Instant::now());
            match self.next(left) {
                Some(d) => out.push(d),
                None => panic!("only {} of {n} datagrams within {limit:?}", out.len()),
            }
        }
        out
    }
}

pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A private directory for one test. When the tests run as root the
/// workers run as `nobody` (see [`WORKER_USER`]), which must reach the
/// sockets in it: then it is 0755.
pub fn tempdir() -> TempDir {
    let dir = tempfile::Builder::new()
        .prefix("host-workers-")
        .tempdir()
        .unwrap();
    if rustix::process::geteuid().is_root() {
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    dir
}

/// The user the workers run as when the tests run as root (the default
/// worker user is created by the package, which a test machine lacks).
pub const WORKER_USER: &str = "nobody";

/// The `[ntpd-host]` table for a test config.
pub fn host_table() -> String {
    if rustix::process::geteuid().is_root() {
        format!("[ntpd-host]\nworker-user = \"{WORKER_USER}\"\n\n")
    } else {
        String::new()
    }
}

pub fn sim_source(socket: &Path, poll: i8, extra: &str, config: &str) -> String {
    format!(
        "[[source]]\nmode = \"plugin\"\npath = \"{}\"\npoll-interval = {poll}\nsocket = \"{}\"\n{extra}\n[source.config]\n{config}\n\n",
        super::plugin_path("ntpd_sim").display(),
        socket.display()
    )
}
