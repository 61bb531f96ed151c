//! The runtime directory and what the host puts in it, with their owners
//! and modes. With workers running as `W` (group `G`):
//!
//! | path | owner | mode | who gets in |
//! |---|---|---|---|
//! | `<runtime-dir>/` | host user : `G` | 0750 | root, the workers, members of `G` (the status readers) |
//! | `ntp.toml` (derived config) | host user | 0600 | root |
//! | `status.sock` | host user : `G` | 0660 | members of `G` |
//! | `observe` (ntpd-rs's observation socket) | ntpd-rs | ntpd-rs's `observation-permissions` | members of `G` (through the directory) |
//! | `sources/` | `W` : `G` | 2700 (setgid) | root and the workers only |
//! | `sources/source-N.sock` | host user : `G` (setgid) | 0770 (umask 007) | the workers |
//!
//! So another local user can neither read the status nor send a sample; a
//! status reader (in `G`) can read the status but not send a sample. When
//! the host does not run as root, `G` and `W` are the host's own.
//!
//! An existing runtime directory is used only if it is a real directory
//! (not a link) owned by the host's user and writable by nobody else;
//! anything else is refused in one line.

use std::fs::Permissions;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rustix::process::{Gid, Uid};

use crate::error::HostError;

/// The sample sockets' directory inside the runtime directory.
pub use crate::config::SOURCES_DIR;

/// The mode of the runtime directory.
pub const RUNTIME_MODE: u32 = 0o750;
/// The mode of the sources directory (setgid: sockets take its group).
pub const SOURCES_MODE: u32 = 0o2700;
/// The mode of the status socket.
pub const STATUS_MODE: u32 = 0o660;
/// The mode of the derived config.
pub const CONFIG_MODE: u32 = 0o600;
/// The umask the host (and so the daemon) runs with: sockets the daemon
/// creates in the sources directory come out 0770.
pub const UMASK: u32 = 0o007;

/// Who owns what in the runtime directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Owners {
    /// The host's own user.
    pub host: u32,
    /// The workers' user.
    pub worker: u32,
    /// The workers' (and status readers') group.
    pub group: u32,
}

impl Owners {
    /// The owners when workers run as `identity` (the host's own ids when
    /// `None`).
    pub fn for_workers(identity: Option<&crate::protocol::worker::WorkerIdentity>) -> Self {
        let host = rustix::process::geteuid().as_raw();
        match identity {
            Some(id) => Self {
                host,
                worker: id.uid,
                group: id.gid,
            },
            None => Self {
                host,
                worker: host,
                group: rustix::process::getegid().as_raw(),
            },
        }
    }
}

/// Why an existing directory is not used, if it should not be.
pub fn refusal(is_dir: bool, is_symlink: bool, owner: u32, mode: u32, me: u32) -> Option<String> {
    if is_symlink {
        return Some("is a symbolic link, not a directory".to_owned());
    }
    if !is_dir {
        return Some("exists and is not a directory".to_owned());
    }
    if owner != me {
        return Some(format!(
            "is owned by uid {owner}, not by the user ntpd-host runs as (uid {me})"
        ));
    }
    if mode & 0o022 != 0 {
        return Some(format!(
            "is writable by its group or others (mode {:04o})",
            mode & 0o7777
        ));
    }
    None
}

fn create_error(path: &Path, what: &'static str) -> impl FnOnce(std::io::Error) -> HostError {
    let path = path.to_owned();
    move |source| HostError::Create { path, what, source }
}

fn chown(path: &Path, uid: u32, gid: u32) -> Result<(), HostError> {
    rustix::fs::chown(path, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid))).map_err(|e| {
        HostError::Create {
            path: path.to_owned(),
            what: "cannot set the owner",
            source: e.into(),
        }
    })
}

/// Creates the runtime directory, or checks an existing one, and gives it
/// its owner and mode.
pub fn prepare(dir: &Path, owners: Owners) -> Result<(), HostError> {
    match std::fs::symlink_metadata(dir) {
        Ok(meta) => {
            if let Some(why) = refusal(
                meta.is_dir(),
                meta.file_type().is_symlink(),
                meta.uid(),
                meta.mode(),
                owners.host,
            ) {
                return Err(HostError::RuntimeDir {
                    path: dir.to_owned(),
                    why,
                });
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut builder = std::fs::DirBuilder::new();
            std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
            builder.recursive(true).create(dir).map_err(create_error(
                dir,
                "cannot create the runtime directory (choose another with --runtime-dir)",
            ))?;
        }
        Err(e) => {
            return Err(create_error(dir, "cannot inspect the runtime directory")(e));
        }
    }
    chown(dir, owners.host, owners.group)?;
    std::fs::set_permissions(dir, Permissions::from_mode(RUNTIME_MODE))
        .map_err(create_error(dir, "cannot set the mode"))
}

/// (Re)creates `<dir>/sources`, empty, for the sample sockets; returns it.
pub fn sources_dir(dir: &Path, owners: Owners) -> Result<PathBuf, HostError> {
    let sources = dir.join(SOURCES_DIR);
    match std::fs::symlink_metadata(&sources) {
        Ok(meta) if meta.is_dir() && !meta.file_type().is_symlink() => {
            std::fs::remove_dir_all(&sources).map_err(create_error(
                &sources,
                "cannot clear the old sources directory",
            ))?;
        }
        Ok(_) => std::fs::remove_file(&sources)
            .map_err(create_error(&sources, "cannot remove what is in the way"))?,
        Err(_) => {}
    }
    let mut builder = std::fs::DirBuilder::new();
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(&sources).map_err(create_error(
        &sources,
        "cannot create the sources directory",
    ))?;
    // The mode first, while the host still owns it (afterwards changing it
    // would need CAP_FOWNER); a directory keeps its setgid bit through the
    // chown.
    std::fs::set_permissions(&sources, Permissions::from_mode(SOURCES_MODE))
        .map_err(create_error(&sources, "cannot set the mode"))?;
    chown(&sources, owners.worker, owners.group)?;
    Ok(sources)
}

/// Writes `text` to `path` atomically (a private temporary file in the same
/// directory, then a rename), mode 0600.
pub fn write_private(path: &Path, text: &str) -> Result<(), HostError> {
    use std::io::Write;
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    let mut file = tempfile::Builder::new()
        .prefix(".ntp.toml.")
        .permissions(Permissions::from_mode(CONFIG_MODE))
        .tempfile_in(dir)
        .map_err(create_error(path, "cannot write"))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.as_file().sync_all())
        .map_err(create_error(path, "cannot write"))?;
    file.persist(path)
        .map_err(|e| create_error(path, "cannot write")(e.error))?;
    Ok(())
}

/// Gives the status socket its group and mode.
pub fn status_socket(path: &Path, owners: Owners) -> Result<(), HostError> {
    chown(path, owners.host, owners.group)?;
    std::fs::set_permissions(path, Permissions::from_mode(STATUS_MODE))
        .map_err(create_error(path, "cannot set the mode"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn existing_directories_are_checked() {
        assert_eq!(refusal(true, false, 0, 0o40750, 0), None);
        assert_eq!(refusal(true, false, 0, 0o40755, 0), None, "made 0750 after");
        assert!(
            refusal(true, true, 0, 0o40750, 0)
                .unwrap()
                .contains("symbolic link")
        );
        assert!(
            refusal(false, false, 0, 0o100600, 0)
                .unwrap()
                .contains("not a directory")
        );
        assert!(
            refusal(true, false, 1000, 0o40750, 0)
                .unwrap()
                .contains("uid 1000")
        );
        assert!(
            refusal(true, false, 0, 0o40770, 0)
                .unwrap()
                .contains("mode 0770")
        );
        assert!(
            refusal(true, false, 0, 0o41777, 0)
                .unwrap()
                .contains("mode 1777")
        );
    }

    #[test]
    fn a_fresh_runtime_directory_gets_its_modes() {
        let base = tempfile::tempdir().unwrap();
        let dir = base.path().join("run/ntpd-host");
        let owners = Owners::for_workers(None);
        prepare(&dir, owners).unwrap();
        let mode = std::fs::metadata(&dir).unwrap().mode() & 0o7777;
        assert_eq!(mode, RUNTIME_MODE);
        let sources = sources_dir(&dir, owners).unwrap();
        std::fs::write(sources.join("stale.sock"), "").unwrap();
        let sources = sources_dir(&dir, owners).unwrap();
        assert_eq!(std::fs::read_dir(&sources).unwrap().count(), 0, "emptied");
        assert_eq!(
            std::fs::metadata(&sources).unwrap().mode() & 0o7777,
            SOURCES_MODE
        );
        let cfg = dir.join("ntp.toml");
        write_private(&cfg, "x = 1\n").unwrap();
        write_private(&cfg, "x = 2\n").unwrap();
        assert_eq!(std::fs::read_to_string(&cfg).unwrap(), "x = 2\n");
        assert_eq!(
            std::fs::metadata(&cfg).unwrap().mode() & 0o7777,
            CONFIG_MODE
        );
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            2,
            "no temporary file left"
        );
        // A group-writable existing directory is refused, in one line.
        std::fs::set_permissions(&dir, Permissions::from_mode(0o770)).unwrap();
        let e = prepare(&dir, owners).unwrap_err().to_string();
        assert!(
            e.contains("writable by its group") && !e.contains('\n'),
            "{e}"
        );
        // A link in place of the directory is refused.
        let link = base.path().join("link");
        std::os::unix::fs::symlink(&dir, &link).unwrap();
        assert!(
            prepare(&link, owners)
                .unwrap_err()
                .to_string()
                .contains("symbolic link")
        );
    }
}
