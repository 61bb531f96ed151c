//! The plugin workers' seccomp filter: the system calls a time source never
//! needs fail with EPERM, whatever the plugin's code tries.
//!
//! Refused:
//! - setting any clock: `clock_settime`, `settimeofday`, and
//!   `clock_adjtime` on any clock but `CLOCK_REALTIME` (a PHC's fd-based
//!   clock id included). `clock_adjtime(CLOCK_REALTIME)` and `adjtimex`
//!   stay, because reading the kernel's TAI offset uses them with no mode
//!   bits; with modes they fail anyway, the worker having no CAP_SYS_TIME;
//! - new processes and programs: `fork`, `vfork`, `clone` without
//!   `CLONE_THREAD` (threads stay allowed), `execve`, `execveat`; `clone3`
//!   answers ENOSYS, so the C library falls back to `clone`, which is
//!   checked;
//! - reaching into other processes: `ptrace`, `process_vm_readv`,
//!   `process_vm_writev`;
//! - the rest of what only a system manager does: kernel modules, kexec,
//!   reboot, swap, mounts, namespaces, BPF, perf events, keyrings,
//!   userfaultfd, file handles, I/O ports, accounting.
//!
//! Everything else is allowed: a deny list keeps vendor plugins working
//! (they may use threads, files, sockets, their own runtimes).
//!
//! The filter is built by `seccompiler` (rust-vmm's BPF compiler) and
//! applies to the calling thread and the threads it starts later.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

/// `CLONE_THREAD` (a thread, not a process).
const CLONE_THREAD: u64 = 0x0001_0000;

/// The syscalls refused outright.
fn refused() -> Vec<i64> {
    let mut list = vec![
        libc::SYS_clock_settime,
        libc::SYS_settimeofday,
        libc::SYS_execve,
        libc::SYS_execveat,
        libc::SYS_ptrace,
        libc::SYS_process_vm_readv,
        libc::SYS_process_vm_writev,
        libc::SYS_kexec_load,
        libc::SYS_kexec_file_load,
        libc::SYS_init_module,
        libc::SYS_finit_module,
        libc::SYS_delete_module,
        libc::SYS_reboot,
        libc::SYS_swapon,
        libc::SYS_swapoff,
        libc::SYS_mount,
        libc::SYS_umount2,
        libc::SYS_pivot_root,
        libc::SYS_chroot,
        libc::SYS_unshare,
        libc::SYS_setns,
        libc::SYS_bpf,
        libc::SYS_perf_event_open,
        libc::SYS_keyctl,
        libc::SYS_add_key,
        libc::SYS_request_key,
        libc::SYS_userfaultfd,
        libc::SYS_open_by_handle_at,
        libc::SYS_acct,
    ];
    #[cfg(target_arch = "x86_64")]
    list.extend([
        libc::SYS_fork,
        libc::SYS_vfork,
        libc::SYS_iopl,
        libc::SYS_ioperm,
    ]);
    list
}

fn filter(
    rules: BTreeMap<i64, Vec<SeccompRule>>,
    action: SeccompAction,
) -> Result<BpfProgram, String> {
    let arch = TargetArch::try_from(std::env::consts::ARCH)
        .map_err(|e| format!("no seccomp filter for this architecture: {e}"))?;
    let filter = SeccompFilter::new(rules, SeccompAction::Allow, action, arch)
        .map_err(|e| format!("cannot build the seccomp filter: {e}"))?;
    BpfProgram::try_from(filter).map_err(|e| format!("cannot compile the seccomp filter: {e}"))
}

fn condition(
    arg: u8,
    len: SeccompCmpArgLen,
    op: SeccompCmpOp,
    value: u64,
) -> Result<SeccompRule, String> {
    SeccompCondition::new(arg, len, op, value)
        .and_then(|c| SeccompRule::new(vec![c]))
        .map_err(|e| format!("cannot build a seccomp rule: {e}"))
}

/// The two filters: EPERM for what is refused, ENOSYS for `clone3`.
pub fn programs() -> Result<[BpfProgram; 2], String> {
    let mut eperm: BTreeMap<i64, Vec<SeccompRule>> =
        refused().into_iter().map(|nr| (nr, Vec::new())).collect();
    // clock_adjtime(clockid, ...) on anything but CLOCK_REALTIME (0).
    eperm.insert(
        libc::SYS_clock_adjtime,
        vec![condition(0, SeccompCmpArgLen::Dword, SeccompCmpOp::Ne, 0)?],
    );
    // clone(flags, ...) without CLONE_THREAD: a new process.
    eperm.insert(
        libc::SYS_clone,
        vec![condition(
            0,
            SeccompCmpArgLen::Qword,
            SeccompCmpOp::MaskedEq(CLONE_THREAD),
            0,
        )?],
    );
    let eperm = filter(
        eperm,
        SeccompAction::Errno(u32::try_from(libc::EPERM).expect("small")),
    )?;
    let enosys = filter(
        BTreeMap::from([(libc::SYS_clone3, Vec::new())]),
        SeccompAction::Errno(u32::try_from(libc::ENOSYS).expect("small")),
    )?;
    Ok([eperm, enosys])
}

/// Installs the filters on this thread (and the threads it starts later).
/// Needs no-new-privileges (or CAP_SYS_ADMIN) first.
pub fn install() -> Result<(), String> {
    for program in programs()? {
        seccompiler::apply_filter(&program)
            .map_err(|e| format!("cannot install the seccomp filter: {e}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filters_compile_for_this_machine() {
        let [eperm, enosys] = programs().unwrap();
        // Each refused call (and the two conditional ones) is in the
        // program: one jump per syscall at least.
        assert!(eperm.len() > refused().len() + 2, "{}", eperm.len());
        assert!(!enosys.is_empty());
    }
}
