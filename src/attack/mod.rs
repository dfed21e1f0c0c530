//! The raw-packet attacker: a bump in the wire inside the userspace engine.
//!
//! - [`matcher`]: the match language that picks frames;
//! - [`packet`]: frame parsing and building (etherparse);
//! - [`primitives`]: drop, delay, duplicate, modify, replay, inject, as data;
//! - [`library`]: named attacks built from primitives, and the extension point;
//! - [`stage`]: the pipeline stage the engine runs on every relayed direction.
//!
//! An [`AttackSpec`] is what a user asks for (`testbed attack LAB start`, or a
//! scenario's timeline). [`AttackSpec::arm`] checks it completely (kind,
//! parameters, filter with line:col errors, nodes) before anything starts.

pub mod library;
pub mod matcher;
pub mod packet;
pub mod primitives;
pub mod stage;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use self::matcher::{MatchError, Matcher};
use self::primitives::Program;
use crate::emulation::pipeline::Direction;
use crate::plan::Plan;

#[derive(Debug, thiserror::Error)]
pub enum AttackError {
    #[error("unknown attack `{kind}`; known: {known}")]
    UnknownKind { kind: String, known: String },
    #[error("{kind}: {param}: {message}")]
    Param {
        kind: &'static str,
        param: String,
        message: String,
    },
    #[error("--match {0}")]
    Filter(#[from] MatchError),
    #[error("{0}")]
    Target(String),
}

/// A node's address and MAC on one network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Host {
    pub ip: IpAddr,
    pub mac: [u8; 6],
}

/// Where the lab's nodes are: node → network → address. What the filter's
/// `node NAME` and crafted frames resolve against.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Directory {
    nodes: BTreeMap<String, BTreeMap<String, Host>>,
}

impl Directory {
    /// Every node interface of a plan.
    pub fn from_plan(plan: &Plan) -> Directory {
        let mut d = Directory::default();
        for (n, node) in plan.nodes.iter().enumerate() {
            for (j, iface) in node.ifaces.iter().enumerate() {
                let mac = crate::plan::iface_mac(n, j);
                d.insert(&node.name, &iface.network, iface.addr.addr(), mac);
                if let Some(a6) = iface.addr6 {
                    d.nodes
                        .entry(node.name.clone())
                        .or_default()
                        .entry(format!("{}/6", iface.network))
                        .or_insert(Host { ip: a6.addr(), mac });
                }
            }
        }
        d
    }

    pub fn insert(&mut self, node: &str, network: &str, ip: IpAddr, mac: [u8; 6]) {
        self.nodes
            .entry(node.to_string())
            .or_default()
            .insert(network.to_string(), Host { ip, mac });
    }

    /// Every address of `node`.
    pub fn addresses(&self, node: &str) -> Option<Vec<IpAddr>> {
        self.nodes
            .get(node)
            .map(|nets| nets.values().map(|h| h.ip).collect())
    }

    /// `node`'s interface on `network` (IPv4 first).
    pub fn on(&self, node: &str, network: &str) -> Option<&Host> {
        self.nodes.get(node)?.get(network)
    }

    /// Only the nodes `keep` names (what a request to the engine carries).
    pub fn subset<'a>(&self, keep: impl IntoIterator<Item = &'a str>) -> Directory {
        Directory {
            nodes: keep
                .into_iter()
                .filter_map(|n| Some((n.to_string(), self.nodes.get(n)?.clone())))
                .collect(),
        }
    }
}

/// One attack as a user asks for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttackSpec {
    /// A kind from [`library::KINDS`].
    pub kind: String,
    /// Where: a segment (frames its members send), `SEGMENT:NODE` (both
    /// directions of one member's port) or a link (both directions).
    pub on: String,
    /// The match language; empty matches every frame.
    #[serde(default)]
    pub filter: String,
    /// Starts this long after it is installed.
    #[serde(default)]
    pub after: Duration,
    /// Stops by itself after running this long.
    #[serde(default)]
    pub duration: Option<Duration>,
    /// Frames it acts on at most (injections: frames it sends).
    #[serde(default)]
    pub count: Option<u64>,
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    #[serde(default)]
    pub seed: u64,
}

/// A checked spec: the compiled filter and the program.
#[derive(Debug)]
pub struct Checked {
    pub matcher: Matcher,
    pub program: Program,
    /// The nodes the filter and parameters named.
    pub nodes: Vec<String>,
}

impl AttackSpec {
    /// The network part of `on` (a segment or link name).
    pub fn network(&self) -> &str {
        self.on.split_once(':').map_or(self.on.as_str(), |(n, _)| n)
    }

    /// Checks everything and builds the filter and program.
    pub fn arm(&self, directory: &Directory) -> Result<Checked, AttackError> {
        let kind = library::kind(&self.kind)?;
        let named = std::cell::RefCell::new(Vec::new());
        let resolve = |name: &str| {
            named.borrow_mut().push(name.to_string());
            directory.addresses(name)
        };
        let matcher = Matcher::parse(&self.filter, &resolve)?;
        let args = library::Args::new(
            kind,
            &self.params,
            directory,
            self.network(),
            self.count,
            self.seed,
        )?;
        let program = (kind.build)(&args)?;
        let mut nodes = named.into_inner();
        nodes.extend(
            ["from", "to"]
                .iter()
                .filter_map(|p| self.params.get(*p).cloned()),
        );
        nodes.sort();
        nodes.dedup();
        Ok(Checked {
            matcher,
            program,
            nodes,
        })
    }

    /// The relayed directions this attack runs on, given the engine's relay
    /// names (`NETWORK:NODE` for a segment member, the link's name for a
    /// link): indices into `relays` with a direction. (Crafted frames enter
    /// on one direction only; the engine picks it.)
    pub fn lanes(&self, relays: &[String]) -> Result<Vec<(usize, Direction)>, AttackError> {
        let both = [Direction::AToB, Direction::BToA];
        let lanes: Vec<(usize, Direction)> =
            if let Some(i) = relays.iter().position(|r| *r == self.on) {
                both.iter().map(|&d| (i, d)).collect()
            } else {
                // A segment: the direction node → bridge of every member, so each
                // frame crosses the attacker once.
                let prefix = format!("{}:", self.on);
                relays
                    .iter()
                    .enumerate()
                    .filter(|(_, r)| r.starts_with(&prefix))
                    .map(|(i, _)| (i, Direction::AToB))
                    .collect()
            };
        if lanes.is_empty() {
            return Err(AttackError::Target(format!(
                "`{}` is not in the engine's path: name a segment, SEGMENT:NODE or link that is impaired or marked `in_path = true` in the topology (in the path now: {})",
                self.on,
                if relays.is_empty() {
                    "nothing".to_string()
                } else {
                    relays.join(", ")
                }
            )));
        }
        Ok(lanes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(on: &str) -> AttackSpec {
        AttackSpec {
            kind: "drop".into(),
            on: on.into(),
            filter: String::new(),
            after: Duration::ZERO,
            duration: None,
            count: None,
            params: BTreeMap::new(),
            seed: 0,
        }
    }

    #[test]
    fn targets_resolve_to_directions() {
        let relays: Vec<String> = ["lan:a", "lan:b", "wan", "lan2:c"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            spec("lan").lanes(&relays).unwrap(),
            [(0, Direction::AToB), (1, Direction::AToB)]
        );
        assert_eq!(
            spec("lan:b").lanes(&relays).unwrap(),
            [(1, Direction::AToB), (1, Direction::BToA)]
        );
        assert_eq!(spec("wan").lanes(&relays).unwrap().len(), 2);
        let e = spec("la").lanes(&relays).unwrap_err().to_string();
        assert!(e.contains("`la` is not in the engine's path"), "{e}");
    }

    #[test]
    fn arm_reports_filter_errors_and_collects_named_nodes() {
        let mut dir = Directory::default();
        dir.insert("s1", "lan", "10.0.0.1".parse().unwrap(), [2; 6]);
        let mut s = spec("lan");
        s.filter = "udp and src node s1".into();
        assert_eq!(s.arm(&dir).unwrap().nodes, ["s1"]);
        s.filter = "udp and src node s2".into();
        let e = s.arm(&dir).unwrap_err().to_string();
        assert!(e.starts_with("--match 1:"), "{e}");
    }
}
