//! Agents: one process per node that has a role (`testbed-agent LAB NODE`,
//! started by the lab's supervisor). As root it enters the node's network
//! namespace, reads its credentials and opens the files its role needs,
//! connects to the supervisor's event socket, and then becomes `nobody` with no
//! capabilities. Only then does the async runtime start (a single thread: the
//! namespace is per thread, and one thread keeps an agent small).

pub mod heartbeat;
pub mod identity;
mod roles;
mod runtime;
pub mod transport;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use roles::{ROLES, Role, RoleError, duration_option};
pub use runtime::{ConnectError, Context, connect, peer_cert, run, serve};

use crate::lab::state;

/// What the supervisor tells an agent (`agents/<node>.json`, written by `up`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentConfig {
    pub lab: String,
    pub node: String,
    pub role: String,
    pub options: serde_json::Value,
    /// The node's network namespace.
    pub netns: String,
    /// The lab's output folder (logs, events, results).
    pub out: PathBuf,
    /// Where to append TLS secrets (NSS key log format), if asked.
    pub keylog: Option<PathBuf>,
    /// Seed for the role's random choices (lab seed mixed with the node).
    pub seed: u64,
}

pub fn config_path(lab: &str, node: &str) -> PathBuf {
    state::lab_dir(lab)
        .join("agents")
        .join(format!("{node}.json"))
}

/// Private, persistent state of a node's agent (e.g. a sensor's nonce
/// counter): root-owned 0600, opened before the agent drops privileges.
pub fn state_file(lab: &str, node: &str, what: &str) -> PathBuf {
    state::lab_dir(lab)
        .join("agents")
        .join(format!("{node}.{what}"))
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("agent config {path}: {source}")]
    Config {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("agent config {path}: {source}")]
    ConfigJson {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("entering namespace {netns}: {source}")]
    Netns {
        netns: String,
        #[source]
        source: std::io::Error,
    },
    #[error("connecting to the supervisor's event socket: {0}")]
    Events(#[source] std::io::Error),
    #[error("dropping privileges: {0}")]
    Privileges(#[source] nix::Error),
    #[error(transparent)]
    Identity(#[from] identity::IdentityError),
    #[error(transparent)]
    Transport(#[from] transport::TransportError),
    #[error(transparent)]
    Role(#[from] RoleError),
    #[error("no node {0} in this lab's hosts file")]
    UnknownPeer(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}
