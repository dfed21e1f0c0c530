//! Where a lab's state lives: `/run/testbed/<lab>/` holds the journal, the
//! applied plan, the hosts file and the lock. `/run` is a tmpfs, so state and
//! namespaces vanish together on reboot.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

use crate::plan::Plan;

/// Root of all lab state; `TESTBED_STATE_DIR` overrides it (tests).
pub fn root() -> PathBuf {
    std::env::var_os("TESTBED_STATE_DIR")
        .map_or_else(|| PathBuf::from("/run/testbed"), PathBuf::from)
}

pub fn lab_dir(lab: &str) -> PathBuf {
    root().join(lab)
}

pub fn plan_path(lab: &str) -> PathBuf {
    lab_dir(lab).join("plan.json")
}

pub fn hosts_path(lab: &str) -> PathBuf {
    lab_dir(lab).join("hosts")
}

/// How the lab's impairments were applied: one [`Impairments`] token.
pub fn backend_path(lab: &str) -> PathBuf {
    lab_dir(lab).join("backend")
}

/// How a lab's impairments are applied, as `up` decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Impairments {
    /// No segment or link names a profile.
    Nothing,
    /// netem qdiscs on each impaired interface's egress.
    Kernel,
    /// The lab's userspace engine carries each impaired link.
    Userspace,
}

impl Impairments {
    pub fn token(self) -> &'static str {
        match self {
            Impairments::Nothing => "none",
            Impairments::Kernel => "kernel",
            Impairments::Userspace => "userspace",
        }
    }

    /// What a user reads in `up` and `status`.
    pub fn describe(self) -> &'static str {
        match self {
            Impairments::Nothing => "none (no profiles in use)",
            Impairments::Kernel => "kernel (netem)",
            Impairments::Userspace => "userspace engine",
        }
    }

    /// What `up` recorded for a lab, if it got that far.
    pub fn of(lab: &str) -> Option<Impairments> {
        match fs::read_to_string(backend_path(lab)).ok()?.trim() {
            "none" => Some(Impairments::Nothing),
            "kernel" => Some(Impairments::Kernel),
            "userspace" => Some(Impairments::Userspace),
            _ => None,
        }
    }
}

pub fn journal_path(lab: &str) -> PathBuf {
    lab_dir(lab).join("journal")
}

/// Names of labs with a state folder, sorted.
pub fn list_labs() -> io::Result<Vec<String>> {
    let mut labs = Vec::new();
    match fs::read_dir(root()) {
        Ok(dir) => {
            for entry in dir {
                let entry = entry?;
                if entry.file_type()?.is_dir() {
                    labs.push(entry.file_name().to_string_lossy().into_owned());
                }
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    labs.sort();
    Ok(labs)
}

/// The plan of a lab that came up completely, if any.
pub fn read_plan(lab: &str) -> io::Result<Option<Plan>> {
    match fs::read(plan_path(lab)) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(io::Error::other),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Write a file atomically (temp file, fsync, rename), readable by everyone.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    fs::rename(tmp, path)
}

/// An exclusive lock on one lab: held for the whole of `up`, `down` or `clean`.
/// The kernel drops it when the holder dies, even by SIGKILL.
pub struct LabLock {
    _lock: Flock<File>,
}

impl LabLock {
    /// Create the lab folder if needed and take its lock without waiting.
    /// `Ok(None)` if another live process holds it.
    pub fn try_acquire(lab: &str) -> io::Result<Option<LabLock>> {
        let dir = lab_dir(lab);
        fs::create_dir_all(&dir)?;
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .open(dir.join("lock"))?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => Ok(Some(LabLock { _lock: lock })),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
            Err((_, e)) => Err(e.into()),
        }
    }
}
