//! Entering a node: what `exec` and `shell` do before running the command.
//!
//! Like `ip netns exec`, the process gets a private mount namespace in which
//! `/sys` shows the node's interfaces, and the lab's hosts file is bound over
//! `/etc/hosts` so node names resolve. The host's mounts are not changed.

use std::path::Path;

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, unshare};

use super::{LabError, state};
use crate::netlink::netns;
use crate::plan::Plan;

/// Move the calling process into `node` of `plan`'s lab.
///
/// Must be called while the process has a single thread: a private mount
/// namespace cannot be made by a thread that shares its filesystem context.
pub fn enter_node(plan: &Plan, node: &str) -> Result<(), LabError> {
    let target = plan.node(node).ok_or_else(|| LabError::NoSuchNode {
        lab: plan.lab.clone(),
        node: node.to_string(),
        known: known_nodes(plan),
    })?;
    let ns = netns::open(&target.netns).map_err(|e| LabError::Netns {
        name: target.netns.clone(),
        source: e,
    })?;
    let mnt = |what: &str, e: nix::Error| LabError::Netns {
        name: target.netns.clone(),
        source: std::io::Error::other(format!("{what}: {e}")),
    };
    unshare(CloneFlags::CLONE_NEWNS).map_err(|e| mnt("private mount namespace", e))?;
    // Keep receiving the host's mounts, but let none of ours escape.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_SLAVE | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| mnt("mount --make-rslave /", e))?;
    netns::enter(&ns).map_err(|e| LabError::Netns {
        name: target.netns.clone(),
        source: e,
    })?;
    // A sysfs mounted from inside the namespace lists the node's interfaces.
    if umount2("/sys", MntFlags::MNT_DETACH).is_ok() {
        mount(
            Some("sysfs"),
            "/sys",
            Some("sysfs"),
            MsFlags::empty(),
            None::<&str>,
        )
        .map_err(|e| mnt("mount sysfs", e))?;
    }
    let hosts = state::hosts_path(&plan.lab);
    if hosts.exists() && Path::new("/etc/hosts").exists() {
        mount(
            Some(&hosts),
            "/etc/hosts",
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| mnt("bind hosts file", e))?;
    }
    Ok(())
}

/// A short list of node names for error hints.
pub(super) fn known_nodes(plan: &Plan) -> String {
    let mut names: Vec<&str> = plan.nodes.iter().take(8).map(|n| n.name.as_str()).collect();
    if plan.nodes.len() > 8 {
        names.push("...");
    }
    names.join(", ")
}
