//! The service manager's readiness protocol (`sd_notify`), spoken by the
//! host alone.
//!
//! systemd hands a `Type=notify` service a datagram socket in
//! `NOTIFY_SOCKET` and, by default, listens only to the unit's main PID. The
//! host is that PID; the embedded ntpd-rs daemon would send its own
//! `READY=1` from a child PID, which systemd drops, and the unit would hang
//! in `activating`. So:
//!
//! - the host takes `NOTIFY_SOCKET` for itself ([`SystemNotifier`]) and no
//!   child inherits it (`Command::env_remove` with [`NOTIFY_ENV`]);
//! - the daemon child gets a private socket of the host's instead
//!   ([`ChildReadiness`], in the 0750 runtime directory): its `READY=1`
//!   tells the host the daemon is up;
//! - the host then says `READY=1` itself, with a `STATUS=` line, and
//!   `STOPPING=1` when it shuts down.
//!
//! Outside systemd (no `NOTIFY_SOCKET`) all of it is a no-op, apart from the
//! child's private socket, which the host still reads to log readiness.

use std::io;
use std::os::linux::net::SocketAddrExt as _;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::{Path, PathBuf};

/// The environment variable of the readiness protocol.
pub const NOTIFY_ENV: &str = "NOTIFY_SOCKET";

/// File name, in the runtime directory, of the socket the daemon child
/// reports readiness to.
pub const CHILD_NOTIFY_SOCKET: &str = "daemon-notify.sock";

/// Where the host's own notifications go: the service manager's socket,
/// read once at start.
#[derive(Clone, Debug, Default)]
pub struct SystemNotifier {
    target: Option<String>,
}

impl SystemNotifier {
    /// The notifier of this process: `NOTIFY_SOCKET` if set (a path, or an
    /// abstract name starting with `@`), else none.
    #[must_use]
    pub fn from_env() -> SystemNotifier {
        SystemNotifier {
            target: std::env::var(NOTIFY_ENV).ok().filter(|s| !s.is_empty()),
        }
    }

    /// Whether a service manager listens.
    #[must_use]
    pub fn is_active(&self) -> bool {
        self.target.is_some()
    }

    /// Sends `lines` (`KEY=VALUE`, one per line) in one datagram. Errors
    /// are logged, never fatal: a service manager that went away must not
    /// stop the clock's daemon.
    pub fn send(&self, lines: &[String]) {
        let Some(target) = &self.target else {
            return;
        };
        if let Err(e) = send_to(target, &lines.join("\n")) {
            tracing::warn!("{NOTIFY_ENV}={target}: cannot notify the service manager: {e}");
        }
    }

    /// `READY=1` with a status line.
    pub fn ready(&self, status: &str) {
        self.send(&["READY=1".to_owned(), status_line(status)]);
    }

    /// A new status line.
    pub fn status(&self, status: &str) {
        self.send(&[status_line(status)]);
    }

    /// `STOPPING=1` with a status line.
    pub fn stopping(&self, status: &str) {
        self.send(&["STOPPING=1".to_owned(), status_line(status)]);
    }
}

/// `STATUS=text`, the text on one line (the protocol is line based).
fn status_line(text: &str) -> String {
    format!("STATUS={}", text.replace(['\n', '\r'], " "))
}

fn send_to(target: &str, message: &str) -> io::Result<()> {
    let addr = match target.strip_prefix('@') {
        Some(name) => SocketAddr::from_abstract_name(name.as_bytes())?,
        None => SocketAddr::from_pathname(target)?,
    };
    let sock = UnixDatagram::unbound()?;
    sock.connect_addr(&addr)?;
    let sent = sock.send(message.as_bytes())?;
    if sent == message.len() {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::WriteZero,
            "the notification was cut short",
        ))
    }
}

/// What a child said on its readiness socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChildNotice {
    /// `READY=1`.
    Ready,
    /// `STOPPING=1`.
    Stopping,
}

/// The notices in one datagram of the readiness protocol; other lines
/// (`STATUS=`, `MAINPID=`, unknown keys) are ignored.
#[must_use]
pub fn parse_notices(datagram: &[u8]) -> Vec<ChildNotice> {
    String::from_utf8_lossy(datagram)
        .lines()
        .filter_map(|line| match line.trim() {
            "READY=1" => Some(ChildNotice::Ready),
            "STOPPING=1" => Some(ChildNotice::Stopping),
            _ => None,
        })
        .collect()
}

/// The host's private readiness socket for the daemon child. Only the
/// host's user can reach it (it lies in the runtime directory, mode 0750,
/// and is itself 0600).
#[derive(Debug)]
pub struct ChildReadiness {
    socket: tokio::net::UnixDatagram,
    path: PathBuf,
}

impl ChildReadiness {
    /// Binds the socket at `path` (an old one there is removed first).
    pub fn bind(path: &Path) -> io::Result<ChildReadiness> {
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let socket = tokio::net::UnixDatagram::bind(path)?;
        rustix::fs::chmod(path, rustix::fs::Mode::from_raw_mode(0o600))?;
        Ok(ChildReadiness {
            socket,
            path: path.to_owned(),
        })
    }

    /// The socket's path (the child's `NOTIFY_SOCKET`).
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Waits for the next notice of the child.
    pub async fn next(&self) -> io::Result<ChildNotice> {
        let mut buf = [0u8; 4096];
        loop {
            let n = self.socket.recv(&mut buf).await?;
            if let Some(&notice) = parse_notices(&buf[..n]).first() {
                return Ok(notice);
            }
        }
    }
}

impl Drop for ChildReadiness {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notices_are_read_line_by_line() {
        assert_eq!(
            parse_notices(b"STATUS=starting\nREADY=1\n"),
            vec![ChildNotice::Ready]
        );
        assert_eq!(parse_notices(b"STOPPING=1"), vec![ChildNotice::Stopping]);
        assert!(parse_notices(b"READY=0\nMAINPID=7\nWATCHDOG=1").is_empty());
    }

    #[test]
    fn status_stays_on_one_line() {
        assert_eq!(status_line("a\nb\rc"), "STATUS=a b c");
    }

    #[tokio::test]
    async fn the_service_manager_gets_one_datagram_per_call() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let manager = UnixDatagram::bind(&path).unwrap();
        let notifier = SystemNotifier {
            target: Some(path.to_str().unwrap().to_owned()),
        };
        notifier.ready("2 plugin sources");
        let mut buf = [0u8; 256];
        let n = manager.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=2 plugin sources");
        notifier.stopping("bye");
        let n = manager.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STOPPING=1\nSTATUS=bye");
    }

    #[tokio::test]
    async fn an_abstract_socket_is_reached_by_its_at_name() {
        let name = format!("ntpd-host-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let manager = UnixDatagram::bind_addr(&addr).unwrap();
        SystemNotifier {
            target: Some(format!("@{name}")),
        }
        .status("x");
        let mut buf = [0u8; 64];
        let n = manager.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STATUS=x");
    }

    #[tokio::test]
    async fn the_childs_ready_is_heard_and_its_socket_is_private() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let readiness = ChildReadiness::bind(&dir.path().join(CHILD_NOTIFY_SOCKET)).unwrap();
        let mode = std::fs::metadata(readiness.path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let child = UnixDatagram::unbound().unwrap();
        child.send_to(b"STATUS=loading", readiness.path()).unwrap();
        child.send_to(b"READY=1", readiness.path()).unwrap();
        assert_eq!(readiness.next().await.unwrap(), ChildNotice::Ready);
        let path = readiness.path().to_owned();
        drop(readiness);
        assert!(!path.exists());
    }

    #[test]
    fn without_a_manager_nothing_is_sent() {
        let n = SystemNotifier::default();
        assert!(!n.is_active());
        n.ready("x");
    }
}
