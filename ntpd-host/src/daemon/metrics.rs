//! `ntpd-host metrics`: a separate long-running process, like ntpd-rs's
//! `ntp-metrics-exporter`, that answers `GET /metrics` with the host's
//! status document and the embedded daemon's observation, read afresh on
//! each scrape and encoded by [`crate::protocol::metrics`].
//!
//! The HTTP side is a minimal HTTP/1.1 responder, as ntpd-rs's exporter
//! has: one request per connection, `GET`/`HEAD` of `/metrics` only, the
//! headers read up to a size and time limit, `Connection: close`. A full
//! HTTP stack (hyper and its tower of crates) would serve nothing more
//! here; the exposition itself is prometheus-client's.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::config::DEFAULT_METRICS_LISTEN;
use crate::daemon::status as status_io;
use crate::error::HostError;
use crate::protocol::metrics::{CONTENT_TYPE, exposition};
use crate::protocol::status::STATUS_SOCKET;

/// The largest request head read, bytes.
const MAX_REQUEST: usize = 8 << 10;

/// How long a client has to send its request and take the answer.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections served at once; more wait to be accepted.
const MAX_CONNECTIONS: usize = 64;

/// What `ntpd-host metrics` needs.
#[derive(Clone, Debug)]
pub struct MetricsArgs {
    /// The host's runtime directory (its status socket is in it).
    pub runtime_dir: PathBuf,
    /// Where to listen.
    pub listen: SocketAddr,
}

/// The listen address: `--listen`, else the config's `metrics-listen`,
/// else [`DEFAULT_METRICS_LISTEN`].
pub fn listen_address(cli: Option<SocketAddr>, config: Option<SocketAddr>) -> SocketAddr {
    cli.or(config).unwrap_or_else(|| {
        DEFAULT_METRICS_LISTEN
            .parse()
            .expect("the default is an address")
    })
}

/// One scrape: reads the host's status socket and, when the host runs the
/// daemon, its observation socket; never fails (an unreachable host is
/// `ntpd_host_up 0`).
pub fn scrape(runtime_dir: &Path) -> String {
    let path = runtime_dir.join(STATUS_SOCKET);
    let host = match status_io::read_host(&path) {
        Ok(h) => Some(h),
        Err(e) => {
            tracing::debug!("{}: {e}", path.display());
            None
        }
    };
    let daemon = host
        .as_ref()
        .and_then(|h| h.observation_path.as_deref())
        .and_then(|p| match status_io::read_daemon(p) {
            Ok(v) => Some(v),
            Err(e) => {
                tracing::debug!("{}: {e}", p.display());
                None
            }
        });
    exposition(host.as_ref(), daemon.as_ref())
}

/// What a request asks for.
#[derive(Debug, PartialEq, Eq)]
enum Request {
    /// `GET /metrics` (`head`: `HEAD`, no body).
    Metrics { head: bool },
    /// Another path.
    NotFound,
    /// Another method.
    MethodNotAllowed,
    /// Not an HTTP request line.
    Bad,
}

/// Parses the request line of `head`.
fn parse_request(head: &[u8]) -> Request {
    let line = head
        .split(|&b| b == b'\r' || b == b'\n')
        .next()
        .unwrap_or(b"");
    let Ok(line) = std::str::from_utf8(line) else {
        return Request::Bad;
    };
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Request::Bad;
    };
    if !version.starts_with("HTTP/1.") {
        return Request::Bad;
    }
    let path = target.split('?').next().unwrap_or(target);
    match (method, path) {
        ("GET" | "HEAD", "/metrics") => Request::Metrics {
            head: method == "HEAD",
        },
        ("GET" | "HEAD", _) => Request::NotFound,
        _ => Request::MethodNotAllowed,
    }
}

/// An HTTP/1.1 response with `body`.
fn response(status: &str, content_type: &str, body: &str, head: bool) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n",
        body.len()
    );
    if status.starts_with("405") {
        out.push_str("allow: GET, HEAD\r\n");
    }
    out.push_str("\r\n");
    if !head {
        out.push_str(body);
    }
    out.into_bytes()
}

/// Reads the request head (up to the blank line) from `stream`.
async fn read_head(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.windows(4).any(|w| w == b"\r\n\r\n") || buf.windows(2).any(|w| w == b"\n\n") {
            return Ok(buf);
        }
        if buf.len() > MAX_REQUEST {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "request head too long",
            ));
        }
    }
}

async fn serve_one(mut stream: TcpStream, runtime_dir: Arc<PathBuf>) -> std::io::Result<()> {
    let head = read_head(&mut stream).await?;
    let answer = match parse_request(&head) {
        Request::Metrics { head } => {
            let body = tokio::task::spawn_blocking(move || scrape(&runtime_dir))
                .await
                .map_err(std::io::Error::other)?;
            response("200 OK", CONTENT_TYPE, &body, head)
        }
        Request::NotFound => response(
            "404 Not Found",
            "text/plain; charset=utf-8",
            "not found: the metrics are at /metrics\n",
            false,
        ),
        Request::MethodNotAllowed => response(
            "405 Method Not Allowed",
            "text/plain; charset=utf-8",
            "only GET and HEAD\n",
            false,
        ),
        Request::Bad => response(
            "400 Bad Request",
            "text/plain; charset=utf-8",
            "bad request\n",
            false,
        ),
    };
    stream.write_all(&answer).await?;
    stream.shutdown().await
}

/// `ntpd-host metrics`: serves until the process is ended.
pub async fn run(args: MetricsArgs) -> Result<(), HostError> {
    if !args.listen.ip().is_loopback() {
        tracing::warn!(
            "serving metrics on {}, not a loopback address: anyone who can reach it sees the \
             sources' names, devices and offsets",
            args.listen
        );
    }
    let listener = TcpListener::bind(args.listen)
        .await
        .map_err(|e| HostError::Start {
            what: "the metrics listener",
            source: std::io::Error::new(e.kind(), format!("{}: {e}", args.listen)),
        })?;
    tracing::info!(
        "serving metrics of {} on http://{}/metrics",
        args.runtime_dir.join(STATUS_SOCKET).display(),
        listener.local_addr().unwrap_or(args.listen)
    );
    let runtime_dir = Arc::new(args.runtime_dir);
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let permit = Arc::clone(&permits)
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors and the like: wait, then go on.
                tracing::warn!("metrics: cannot accept a connection: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let dir = Arc::clone(&runtime_dir);
        tokio::spawn(async move {
            match tokio::time::timeout(CLIENT_TIMEOUT, serve_one(stream, dir)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::debug!("metrics: connection: {e}"),
                Err(_) => tracing::debug!("metrics: connection timed out"),
            }
            drop(permit);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_told_apart() {
        assert_eq!(
            parse_request(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Request::Metrics { head: false }
        );
        assert_eq!(
            parse_request(b"HEAD /metrics?x=1 HTTP/1.0\r\n\r\n"),
            Request::Metrics { head: true }
        );
        assert_eq!(parse_request(b"GET / HTTP/1.1\r\n\r\n"), Request::NotFound);
        assert_eq!(
            parse_request(b"POST /metrics HTTP/1.1\r\n\r\n"),
            Request::MethodNotAllowed
        );
        assert_eq!(parse_request(b"GET /metrics\r\n\r\n"), Request::Bad);
        assert_eq!(parse_request(b"\xff\xfe\r\n\r\n"), Request::Bad);
    }

    #[test]
    fn listen_address_precedence() {
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let b: SocketAddr = "[::1]:2".parse().unwrap();
        assert_eq!(listen_address(Some(a), Some(b)), a);
        assert_eq!(listen_address(None, Some(b)), b);
        assert_eq!(
            listen_address(None, None),
            DEFAULT_METRICS_LISTEN.parse().unwrap()
        );
    }

    #[test]
    fn an_unreachable_host_is_up_0_not_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let text = scrape(dir.path());
        assert!(text.contains("ntpd_host_up 0\n"), "{text}");
        assert!(!text.contains("ntpd_host_source"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[tokio::test]
    async fn serves_over_tcp() {
        let dir = tempfile::tempdir().unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let server = tokio::spawn(run(MetricsArgs {
            runtime_dir: dir.path().to_owned(),
            listen: addr,
        }));
        let mut answer = String::new();
        for _ in 0..50 {
            if let Ok(mut s) = TcpStream::connect(addr).await {
                s.write_all(b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n")
                    .await
                    .unwrap();
                s.read_to_string(&mut answer).await.unwrap();
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        server.abort();
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        assert!(
            answer.contains(&format!("content-type: {CONTENT_TYPE}\r\n")),
            "{answer}"
        );
        assert!(answer.contains("\r\n\r\n# HELP ntpd_host_up "), "{answer}");
    }
}
