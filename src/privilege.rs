//! Giving up root: the engine and every agent open what they need as root
//! (sockets, namespaces, key files), then become `nobody` with no
//! supplementary groups and no capabilities (a root process that changes all
//! its uids to non-zero loses its capabilities), and can never regain them
//! (`no_new_privs`).

use nix::unistd::{Gid, Uid, User, setgroups, setresgid, setresuid};

/// Become `nobody` (uid/gid 65534 if the user database has no entry).
pub fn drop_to_nobody() -> nix::Result<()> {
    let (uid, gid) = User::from_name("nobody")
        .ok()
        .flatten()
        .map_or((Uid::from_raw(65534), Gid::from_raw(65534)), |u| {
            (u.uid, u.gid)
        });
    setgroups(&[])?;
    setresgid(gid, gid, gid)?;
    setresuid(uid, uid, uid)?;
    nix::sys::prctl::set_no_new_privs()
}

/// Set this process's scheduling priority (nice value; lower runs first;
/// below 0 needs root).
pub fn set_nice(nice: i32) -> std::io::Result<()> {
    // SAFETY: plain system call on this process; no pointers involved.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
