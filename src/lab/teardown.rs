//! `down` and `clean`: remove exactly what testbed created, keep going past
//! errors, and report them all.
//!
//! A namespace is removed only when it is provably the lab's: the journal names
//! it and either its nsfs inode matches the one journaled at creation, or (for a
//! run killed before it journaled the inode) its loopback carries the lab's
//! ownership tag, or it is still the bare namespace `up` had just made (only a
//! loopback, no tag). Look-alike names that are not in a journal are never touched.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::time::{Duration, Instant};

use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::link::LinkAttribute;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tracing::{info, warn};

use super::journal::{self, Entry};
use super::{LabError, state};
use crate::netlink::{Netlink, netns, ops};
use crate::plan::{NETNS_PREFIX, owner_tag};

/// What a teardown removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Removed {
    pub namespaces: usize,
    pub processes: usize,
}

/// Tear a lab down. Refuses while another testbed command holds the lab.
pub fn down(lab: &str) -> Result<Removed, LabError> {
    require_root()?;
    if !state::lab_dir(lab).exists() {
        return Err(LabError::NoSuchLab(lab.to_string()));
    }
    let _lock = state::LabLock::try_acquire(lab)?.ok_or_else(|| LabError::Busy(lab.to_string()))?;
    remove_locked(lab)
}

/// Remove every lab's leftovers: every journaled lab not held by a live
/// process, then any `tb-` namespace whose loopback carries a testbed tag (a
/// lab whose state folder was lost). Returns what was removed per lab.
pub fn clean_all() -> Result<Vec<(String, Removed)>, LabError> {
    require_root()?;
    let mut done = Vec::new();
    let mut errors = Vec::new();
    for lab in state::list_labs()? {
        match state::LabLock::try_acquire(&lab)? {
            None => errors.push(format!(
                "lab {lab}: busy (another testbed command is working on it)"
            )),
            Some(_lock) => match remove_locked(&lab) {
                Ok(r) => done.push((lab, r)),
                Err(LabError::Teardown(list)) => errors.extend(list),
                Err(e) => errors.push(format!("lab {lab}: {e}")),
            },
        }
    }
    match remove_tagged_orphans() {
        Ok(r) if r.namespaces > 0 => done.push(("(untracked)".to_string(), r)),
        Ok(_) => {}
        Err(LabError::Teardown(list)) => errors.extend(list),
        Err(e) => errors.push(e.to_string()),
    }
    if errors.is_empty() {
        Ok(done)
    } else {
        Err(LabError::Teardown(errors))
    }
}

/// Clean one lab by name (the journaled objects only).
pub fn clean(lab: &str) -> Result<Removed, LabError> {
    require_root()?;
    let _lock = state::LabLock::try_acquire(lab)?.ok_or_else(|| LabError::Busy(lab.to_string()))?;
    remove_locked(lab)
}

fn require_root() -> Result<(), LabError> {
    if nix::unistd::geteuid().is_root() {
        Ok(())
    } else {
        Err(LabError::NotRoot)
    }
}

/// Remove a lab whose lock the caller holds. The state folder goes last, and
/// only if everything else went: a failed teardown can be retried by `clean`.
pub(super) fn remove_locked(lab: &str) -> Result<Removed, LabError> {
    let entries = journal::read(&state::journal_path(lab))?;
    let mut intents: Vec<String> = Vec::new();
    let mut inodes: HashMap<String, u64> = HashMap::new();
    for e in entries {
        match e {
            Entry::Netns { name } => intents.push(name),
            Entry::Created { name, inode } => {
                inodes.insert(name, inode);
            }
            Entry::Begin { .. } | Entry::Complete => {}
        }
    }
    let tag = owner_tag(lab);
    let mut errors = Vec::new();
    let mut owned = Vec::new();
    for name in intents.iter().rev() {
        let Some(current) = netns::inode(name) else {
            // Journaled, never bound: the run died between the two steps.
            if netns::is_placeholder(name)
                && let Err(e) = netns::delete(name)
            {
                errors.push(format!("placeholder {name}: {e}"));
            }
            continue;
        };
        let ours = match inodes.get(name) {
            Some(&recorded) => recorded == current,
            None => match probe(name) {
                Ok(p) => {
                    p.alias.as_deref() == Some(tag.as_str()) || (p.alias.is_none() && p.links == 1)
                }
                Err(e) => {
                    errors.push(format!("namespace {name}: cannot inspect: {e}"));
                    false
                }
            },
        };
        if ours {
            owned.push(name.clone());
        } else {
            warn!(netns = %name, "journaled name now belongs to something else; left alone");
        }
    }
    let removed = remove_namespaces(&owned, &mut errors);
    if errors.is_empty()
        && let Err(e) = fs::remove_dir_all(state::lab_dir(lab))
    {
        errors.push(format!(
            "state folder {}: {e}",
            state::lab_dir(lab).display()
        ));
    }
    info!(
        lab,
        namespaces = removed.namespaces,
        processes = removed.processes,
        "removed"
    );
    if errors.is_empty() {
        Ok(removed)
    } else {
        Err(LabError::Teardown(errors))
    }
}

/// `tb-` namespaces not in any journal whose loopback carries a testbed tag.
fn remove_tagged_orphans() -> Result<Removed, LabError> {
    let mut errors = Vec::new();
    let mut owned = Vec::new();
    let dir = match fs::read_dir(netns::NETNS_RUN_DIR) {
        Ok(d) => d,
        Err(_) => return Ok(Removed::default()),
    };
    for entry in dir.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with(NETNS_PREFIX) || netns::inode(&name).is_none() {
            continue;
        }
        if let Ok(p) = probe(&name)
            && p.alias
                .as_deref()
                .is_some_and(|a| a.starts_with("testbed:"))
        {
            owned.push(name);
        }
    }
    let removed = remove_namespaces(&owned, &mut errors);
    if errors.is_empty() {
        Ok(removed)
    } else {
        Err(LabError::Teardown(errors))
    }
}

/// Kill the processes inside the namespaces, then remove the namespaces.
fn remove_namespaces(names: &[String], errors: &mut Vec<String>) -> Removed {
    let inodes: HashSet<u64> = names.iter().filter_map(|n| netns::inode(n)).collect();
    let processes = kill_processes_in(&inodes, errors);
    let mut namespaces = 0;
    for name in names {
        match netns::delete(name) {
            Ok(()) => namespaces += 1,
            Err(e) => errors.push(format!("namespace {name}: {e}")),
        }
    }
    Removed {
        namespaces,
        processes,
    }
}

/// What the loopback of a namespace says about its owner.
struct Probe {
    alias: Option<String>,
    links: usize,
}

fn probe(name: &str) -> std::io::Result<Probe> {
    netns::run_in(name, || {
        let mut nl = Netlink::open()?;
        let links = nl.dump(ops::get_links()).map_err(std::io::Error::other)?;
        let mut alias = None;
        for msg in &links {
            if let RouteNetlinkMessage::NewLink(l) = msg
                && l.header.index == 1
            {
                alias = l.attributes.iter().find_map(|a| match a {
                    LinkAttribute::IfAlias(s) if !s.is_empty() => Some(s.clone()),
                    _ => None,
                });
            }
        }
        Ok(Probe {
            alias,
            links: links.len(),
        })
    })
}

/// Pids whose network namespace is one of `inodes`.
pub fn pids_in(inodes: &HashSet<u64>) -> Vec<Pid> {
    let me = std::process::id();
    let Ok(proc_dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    proc_dir
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != me)
        .filter(|pid| {
            fs::read_link(format!("/proc/{pid}/ns/net"))
                .ok()
                .and_then(|l| {
                    l.to_str()?
                        .strip_prefix("net:[")?
                        .strip_suffix(']')?
                        .parse::<u64>()
                        .ok()
                })
                .is_some_and(|ino| inodes.contains(&ino))
        })
        .map(|pid| Pid::from_raw(pid as i32))
        .collect()
}

/// SIGTERM, a short grace, then SIGKILL. Returns how many were found.
fn kill_processes_in(inodes: &HashSet<u64>, errors: &mut Vec<String>) -> usize {
    if inodes.is_empty() {
        return 0;
    }
    let found = pids_in(inodes);
    for &pid in &found {
        let _ = kill(pid, Signal::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_millis(1500);
    let mut left = found.clone();
    while !left.is_empty() {
        std::thread::sleep(Duration::from_millis(20));
        left = pids_in(inodes);
        if Instant::now() > deadline {
            for &pid in &left {
                let _ = kill(pid, Signal::SIGKILL);
            }
            std::thread::sleep(Duration::from_millis(100));
            left = pids_in(inodes);
            for pid in &left {
                errors.push(format!("process {pid} survived SIGKILL"));
            }
            break;
        }
    }
    found.len()
}
