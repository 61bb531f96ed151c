//! The status socket: the running host serves its [`HostStatus`] on
//! `<runtime-dir>/status.sock`, one JSON document per connection; `ntpd-host
//! status` reads it, and the daemon's observation socket (ntpd-rs's format:
//! a big-endian u64 length, then JSON).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::daemon::supervisor::remove_socket;
use crate::protocol::status::HostStatus;

/// The largest observation message read, bytes.
const MAX_OBSERVATION: u64 = 16 << 20;

/// Binds the status socket at `path` (replacing a stale one).
pub fn bind(path: &Path) -> std::io::Result<tokio::net::UnixListener> {
    remove_socket(path);
    tokio::net::UnixListener::bind(path)
}

/// Serves `status()` on `listener` until the task is dropped.
pub async fn serve<F>(listener: tokio::net::UnixListener, status: F) -> std::io::Result<()>
where
    F: Fn() -> HostStatus + Send + 'static,
{
    use tokio::io::AsyncWriteExt;
    loop {
        let (mut stream, _) = listener.accept().await?;
        let body = serde_json::to_vec(&status()).expect("status serializes");
        tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(2), stream.write_all(&body)).await;
        });
    }
}

fn connect(path: &Path) -> std::io::Result<UnixStream> {
    let stream = UnixStream::connect(path)?;
    stream.set_read_timeout(Some(Duration::from_secs(3)))?;
    stream.set_write_timeout(Some(Duration::from_secs(3)))?;
    Ok(stream)
}

/// Reads the host's status from its status socket.
pub fn read_host(path: &Path) -> std::io::Result<HostStatus> {
    let mut body = Vec::new();
    connect(path)?.read_to_end(&mut body)?;
    serde_json::from_slice(&body).map_err(std::io::Error::other)
}

/// Reads the daemon's observation socket.
pub fn read_daemon(path: &Path) -> std::io::Result<Value> {
    let mut stream = connect(path)?;
    let _ = stream.flush();
    let mut len = [0u8; 8];
    stream.read_exact(&mut len)?;
    let len = u64::from_be_bytes(len);
    if len > MAX_OBSERVATION {
        return Err(std::io::Error::other("observation message too large"));
    }
    let mut body = vec![0u8; usize::try_from(len).expect("bounded above")];
    stream.read_exact(&mut body)?;
    serde_json::from_slice(&body).map_err(std::io::Error::other)
}
