//! Validated topology types. Invariants hold for every value returned by
//! [`super::load`]: names are unique and valid, indices are in range, subnets
//! do not overlap, and every address lies inside its subnet.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

use ipnet::{Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};

use crate::emulation::Profile;

/// Longest node, segment, link or lab name accepted.
pub const MAX_NAME_LEN: usize = 32;

/// A whole lab, as described by one topology file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Topology {
    /// The file it was read from (for messages).
    pub source: PathBuf,
    pub lab: Lab,
    /// All nodes, groups expanded in file order. Indices into this vector are node ids.
    pub nodes: Vec<Node>,
    pub segments: Vec<Segment>,
    pub links: Vec<Link>,
    /// Every profile that a segment or link uses, built-in or from the file.
    pub profiles: BTreeMap<String, Profile>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lab {
    pub name: String,
    pub seed: u64,
    pub backend: Backend,
    /// How long the userspace engine keeps polling after a frame before it
    /// sleeps, ns (see `docs/topology.md`).
    pub engine_busy_poll_ns: u64,
    pub pool4: Ipv4Net,
    /// IPv6 is off unless a pool is given.
    pub pool6: Option<Ipv6Net>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Auto,
    Kernel,
    Userspace,
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Backend::Auto => "auto",
            Backend::Kernel => "kernel",
            Backend::Userspace => "userspace",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeKind {
    Vehicle,
    Sensor,
    Rsu,
    Server,
    Controller,
    Router,
    Attacker,
    Host,
}

impl NodeKind {
    pub const ALL: [NodeKind; 8] = [
        NodeKind::Vehicle,
        NodeKind::Sensor,
        NodeKind::Rsu,
        NodeKind::Server,
        NodeKind::Controller,
        NodeKind::Router,
        NodeKind::Attacker,
        NodeKind::Host,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            NodeKind::Vehicle => "vehicle",
            NodeKind::Sensor => "sensor",
            NodeKind::Rsu => "rsu",
            NodeKind::Server => "server",
            NodeKind::Controller => "controller",
            NodeKind::Router => "router",
            NodeKind::Attacker => "attacker",
            NodeKind::Host => "host",
        }
    }

    /// Routers forward IPv4/IPv6 between their interfaces.
    pub fn forwards(self) -> bool {
        self == NodeKind::Router
    }
}

/// Metres in a flat plane.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Position {
    pub x: f64,
    pub y: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    pub name: String,
    pub kind: NodeKind,
    pub position: Option<Position>,
    /// The group this node was expanded from, if any.
    pub group: Option<String>,
    /// Agent role (opaque to the emulation core).
    pub role: Option<String>,
    /// Role options, kept as given (opaque to the emulation core).
    pub options: serde_json::Value,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SegmentKind {
    Lan,
}

/// A broadcast domain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Segment {
    pub name: String,
    pub kind: SegmentKind,
    /// Profile applied to every member's port (name into `Topology::profiles`).
    pub profile: Option<String>,
    pub subnet: Ipv4Net,
    pub subnet6: Option<Ipv6Net>,
    /// In file order, no duplicates.
    pub members: Vec<Attachment>,
    /// Every member's port goes through the userspace engine, impaired or
    /// not, so an attacker can sit in the path.
    #[serde(default)]
    pub in_path: bool,
}

/// One node's attachment to a segment or one end of a link, with its addresses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attachment {
    /// Index into `Topology::nodes`.
    pub node: usize,
    pub addr: Ipv4Addr,
    pub addr6: Option<Ipv6Addr>,
}

/// A point-to-point link between two different nodes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Link {
    /// `"a--b"` unless the file names it.
    pub name: String,
    pub a: Attachment,
    pub b: Attachment,
    /// Profile for frames from a to b.
    pub profile_ab: Option<String>,
    /// Profile for frames from b to a.
    pub profile_ba: Option<String>,
    pub subnet: Ipv4Net,
    pub subnet6: Option<Ipv6Net>,
    /// The link goes through the userspace engine, impaired or not.
    #[serde(default)]
    pub in_path: bool,
}

impl Topology {
    pub fn node_index(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == name)
    }
}
