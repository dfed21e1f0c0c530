//! Named network namespaces, compatible with `ip netns` (`/run/netns/NAME`).
//!
//! Namespace switches are per thread, so every function that enters a namespace
//! does so on a short-lived thread of its own and never on the caller's thread:
//! file descriptors opened there (netlink, packet sockets) stay bound to that
//! namespace after the thread exits.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, setns, unshare};

/// Where `ip netns` keeps its bind mounts.
pub const NETNS_RUN_DIR: &str = "/run/netns";

/// Path of the bind mount for namespace `name`.
pub fn path(name: &str) -> PathBuf {
    Path::new(NETNS_RUN_DIR).join(name)
}

/// Whether a named namespace exists (its bind mount is in place).
pub fn exists(name: &str) -> bool {
    inode(name).is_some()
}

/// The nsfs inode of a named namespace, as `/proc/PID/ns/net` shows it (`net:[INODE]`).
/// `None` if the file is missing or is not a mounted namespace.
pub fn inode(name: &str) -> Option<u64> {
    let meta = fs::metadata(path(name)).ok()?;
    // An unmounted placeholder file lives on tmpfs; a mounted one on nsfs, whose
    // device differs from the directory's.
    let dir = fs::metadata(NETNS_RUN_DIR).ok()?;
    (meta.dev() != dir.dev()).then_some(meta.ino())
}

/// Whether `name` is a bare placeholder: a file in `/run/netns` with nothing
/// mounted on it (what a crash between creating the file and binding the
/// namespace leaves behind).
pub fn is_placeholder(name: &str) -> bool {
    let Ok(meta) = fs::symlink_metadata(path(name)) else {
        return false;
    };
    meta.file_type().is_file() && meta.len() == 0 && inode(name).is_none()
}

/// Open a named namespace for `setns`.
pub fn open(name: &str) -> io::Result<File> {
    File::open(path(name))
}

/// Make `/run/netns` a shared mount point, as `ip netns add` does, so that
/// namespace bind mounts made here are seen by every mount namespace.
pub fn prepare_run_dir() -> io::Result<()> {
    fs::create_dir_all(NETNS_RUN_DIR)?;
    let shared = MsFlags::MS_SHARED | MsFlags::MS_REC;
    if mount(
        None::<&str>,
        NETNS_RUN_DIR,
        None::<&str>,
        shared,
        None::<&str>,
    )
    .is_ok()
    {
        return Ok(());
    }
    mount(
        Some(NETNS_RUN_DIR),
        NETNS_RUN_DIR,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(io::Error::from)?;
    mount(
        None::<&str>,
        NETNS_RUN_DIR,
        None::<&str>,
        shared,
        None::<&str>,
    )
    .map_err(io::Error::from)
}

/// Create a new named namespace **on the calling thread** and leave the thread in it.
///
/// The caller must be a thread that owns no other namespace-bound work (a worker
/// created for this purpose). Fails with `AlreadyExists` if the name is taken.
pub fn create_on_this_thread(name: &str) -> io::Result<()> {
    let target = path(name);
    // create_new: never adopt a file (or namespace) that someone else made.
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&target)?;
    let bound = unshare(CloneFlags::CLONE_NEWNET)
        .map_err(io::Error::from)
        .and_then(|()| {
            mount(
                Some("/proc/thread-self/ns/net"),
                &target,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(io::Error::from)
        });
    if let Err(e) = bound {
        let _ = fs::remove_file(&target);
        return Err(e);
    }
    Ok(())
}

/// Remove a named namespace's bind mount. The kernel frees the namespace once no
/// process or socket holds it. A missing name is not an error.
pub fn delete(name: &str) -> io::Result<()> {
    let target = path(name);
    match umount2(&target, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
        Err(e) => return Err(e.into()),
    }
    match fs::remove_file(&target) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Move the calling thread into the namespace open at `ns`.
pub fn enter(ns: &File) -> io::Result<()> {
    setns(ns.as_fd(), CloneFlags::CLONE_NEWNET).map_err(io::Error::from)
}

/// Run `f` on a fresh thread inside namespace `name` and return its result.
/// Sockets `f` creates belong to that namespace for their whole life.
pub fn run_in<T, F>(name: &str, f: F) -> io::Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> io::Result<T> + Send + 'static,
{
    let ns = open(name)?;
    std::thread::spawn(move || {
        enter(&ns)?;
        f()
    })
    .join()
    .map_err(|_| io::Error::other("namespace worker thread panicked"))?
}
