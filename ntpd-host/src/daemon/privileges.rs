//! What a plugin worker may do: it gives up the host's identity and every
//! capability before a plugin is loaded, and a seccomp filter refuses the
//! calls a time source never needs, clock setting first among them.
//!
//! The order in a worker (see `daemon::worker::run`): open and check the
//! plugin file (as the host), limit its memory, switch to the
//! [`WorkerIdentity`] ([`enter`]), then [`confine`]; only then is the
//! library mapped and its code run. Everything here runs while the worker
//! is still single-threaded: on Linux, ids and capabilities are per
//! thread, and threads started later inherit them.

use rustix::process::{Gid, Resource, Rlimit, Uid};
use rustix::thread::{CapabilitySet, CapabilitySets};

use crate::config::HostSettings;
use crate::error::HostError;
use crate::protocol::worker::WorkerIdentity;

/// Whether this process runs as root (and so must drop privileges before
/// it runs plugin code).
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// The identity workers switch to, from `[ntpd-host]`: `None` when the
/// host is not root (its workers then run as the host's own, unprivileged,
/// user). One line naming the key when the user or a group does not exist.
pub fn resolve(
    settings: &HostSettings,
    file: &std::path::Path,
) -> Result<Option<WorkerIdentity>, HostError> {
    if !is_root() {
        return Ok(None);
    }
    let err = |key: &str, message: String| {
        HostError::Config(crate::config::ConfigError {
            file: file.to_owned(),
            section: Some(crate::config::Section::Host),
            key: Some(key.to_owned()),
            message,
        })
    };
    let user = match nix::unistd::User::from_name(&settings.worker_user) {
        Ok(Some(user)) => user,
        Ok(None) => {
            return Err(err(
                "worker-user",
                format!(
                    "no user {:?} on this system: create it (the package does; by hand: \
                     useradd --system --no-create-home --shell /usr/sbin/nologin {}) or name \
                     another unprivileged user",
                    settings.worker_user, settings.worker_user
                ),
            ));
        }
        Err(e) => {
            return Err(err(
                "worker-user",
                format!("cannot look up {:?}: {e}", settings.worker_user),
            ));
        }
    };
    if user.uid.is_root() || user.gid.as_raw() == 0 {
        return Err(err(
            "worker-user",
            format!(
                "{:?} has uid or gid 0: workers must not run with root's privileges",
                settings.worker_user
            ),
        ));
    }
    let mut groups = Vec::new();
    for name in &settings.worker_groups {
        match nix::unistd::Group::from_name(name) {
            Ok(Some(g)) if g.gid.as_raw() != 0 => groups.push(g.gid.as_raw()),
            Ok(Some(_)) => {
                return Err(err(
                    "worker-groups",
                    format!("{name:?} has gid 0: workers keep no privileged group"),
                ));
            }
            Ok(None) => {
                return Err(err(
                    "worker-groups",
                    format!("no group {name:?} on this system"),
                ));
            }
            Err(e) => {
                return Err(err(
                    "worker-groups",
                    format!("cannot look up {name:?}: {e}"),
                ));
            }
        }
    }
    Ok(Some(WorkerIdentity {
        user: settings.worker_user.clone(),
        uid: user.uid.as_raw(),
        gid: user.gid.as_raw(),
        groups,
    }))
}

/// Limits the worker's data (heap and anonymous mappings) to `bytes`: a
/// plugin that allocates past it fails its allocation, which ends the
/// worker, and the supervisor restarts it.
pub fn limit_memory(bytes: u64) -> Result<(), String> {
    rustix::process::setrlimit(
        Resource::Data,
        Rlimit {
            current: Some(bytes),
            maximum: Some(bytes),
        },
    )
    .map_err(|e| format!("cannot set the worker's memory limit: {e}"))
}

/// Switches this (single-threaded) process to `identity` for good: drops
/// every capability from the bounding set, sets the supplementary groups,
/// the group and the user (real, effective and saved), and clears the
/// permitted, effective, inheritable and ambient sets.
pub fn enter(identity: &WorkerIdentity) -> Result<(), String> {
    // The bounding set first: dropping from it needs CAP_SETPCAP, which
    // goes with the user switch.
    drop_bounding_except(CapabilitySet::empty())?;
    let groups: Vec<Gid> = identity.groups.iter().map(|g| Gid::from_raw(*g)).collect();
    rustix::thread::set_thread_groups(&groups)
        .map_err(|e| format!("cannot set the supplementary groups: {e}"))?;
    let gid = Gid::from_raw(identity.gid);
    rustix::thread::set_thread_res_gid(gid, gid, gid)
        .map_err(|e| format!("cannot switch to group {}: {e}", identity.gid))?;
    let uid = Uid::from_raw(identity.uid);
    rustix::thread::set_thread_res_uid(uid, uid, uid)
        .map_err(|e| format!("cannot switch to user {}: {e}", identity.user))?;
    rustix::thread::set_capabilities(
        None,
        CapabilitySets {
            effective: CapabilitySet::empty(),
            permitted: CapabilitySet::empty(),
            inheritable: CapabilitySet::empty(),
        },
    )
    .map_err(|e| format!("cannot clear the capability sets: {e}"))?;
    rustix::thread::clear_ambient_capability_set()
        .map_err(|e| format!("cannot clear the ambient capabilities: {e}"))?;
    // A plugin must not be able to get back what was dropped.
    if rustix::process::getuid().is_root() || rustix::process::geteuid().is_root() {
        return Err("still root after the switch".to_owned());
    }
    Ok(())
}

/// Sets no-new-privileges and installs the seccomp filter
/// ([`crate::daemon::seccomp`]) on this (single-threaded) process.
pub fn confine() -> Result<(), String> {
    rustix::thread::set_no_new_privs(true)
        .map_err(|e| format!("cannot set no-new-privileges: {e}"))?;
    crate::daemon::seccomp::install()
}

/// The capabilities the embedded ntpd-rs daemon keeps: steering the clock,
/// binding NTP's port 123 when the config makes it a server, and creating
/// the sample sockets in the sources directory, which belongs to the
/// worker user so that no status reader can enter it (see
/// [`crate::daemon::rundir`]).
pub const DAEMON_CAPABILITIES: CapabilitySet = CapabilitySet::SYS_TIME
    .union(CapabilitySet::NET_BIND_SERVICE)
    .union(CapabilitySet::DAC_OVERRIDE);

/// Narrows the daemon child (this process, before ntpd-rs starts) to
/// [`DAEMON_CAPABILITIES`]: every other capability leaves the bounding,
/// permitted, effective and inheritable sets, and no-new-privileges is set.
/// The host itself keeps what supervising workers needs (switching their
/// user, signalling them); the daemon needs none of it. Without
/// `CAP_SETPCAP` (a host that is not root) the bounding set is left as it
/// is: there is nothing in it this process could use.
pub fn confine_daemon() -> Result<(), String> {
    let now = rustix::thread::capabilities(None)
        .map_err(|e| format!("cannot read the capability sets: {e}"))?;
    let keep = now.permitted & DAEMON_CAPABILITIES;
    if now.permitted.contains(CapabilitySet::SETPCAP) {
        drop_bounding_except(keep)?;
    }
    rustix::thread::set_capabilities(
        None,
        CapabilitySets {
            effective: keep,
            permitted: keep,
            inheritable: CapabilitySet::empty(),
        },
    )
    .map_err(|e| format!("cannot narrow the capability sets: {e}"))?;
    rustix::thread::clear_ambient_capability_set()
        .map_err(|e| format!("cannot clear the ambient capabilities: {e}"))?;
    rustix::thread::set_no_new_privs(true).map_err(|e| format!("cannot set no-new-privileges: {e}"))
}

/// Removes every capability but `keep` from this thread's bounding set
/// (needs `CAP_SETPCAP`).
fn drop_bounding_except(keep: CapabilitySet) -> Result<(), String> {
    for bit in 0..64 {
        let Some(cap) = CapabilitySet::from_bits(1 << bit) else {
            continue;
        };
        if keep.contains(cap) {
            continue;
        }
        match rustix::thread::remove_capability_from_bounding_set(cap) {
            // EINVAL: a capability this kernel does not know.
            Ok(()) | Err(rustix::io::Errno::INVAL) => {}
            Err(e) => {
                return Err(format!(
                    "cannot drop capability {bit} from the bounding set: {e}"
                ));
            }
        }
    }
    Ok(())
}
