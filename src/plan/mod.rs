//! The plan: every namespace, bridge, interface, address, route and sysctl of a
//! lab, derived by a pure function from a [`Topology`]. Computing it needs no
//! root; `up --dry-run` prints it and `up` applies it.
//!
//! Invariants of a [`Plan`]: namespace names are unique and carry the lab prefix;
//! interface names are at most 15 bytes and unique within their namespace;
//! requested ifindexes are unique within their namespace; no bridge has more
//! than [`MAX_BRIDGE_PORTS`] ports.

mod relays;
mod routes;

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::emulation::Profile;
use crate::emulation::pipeline::{Direction, DirectionParams, direction_seed};
use crate::topology::{Attachment, Backend, NodeKind, Topology};

/// Every namespace a lab owns starts with this.
pub const NETNS_PREFIX: &str = "tb-";
/// Members per bridge shard. A Linux bridge takes at most 1023 ports; the root
/// shard also carries one trunk per extra shard, so leave room for them.
pub const MEMBERS_PER_SHARD: usize = 960;
/// Hard ceiling on ports of one bridge, kept below the kernel's 1023.
pub const MAX_BRIDGE_PORTS: usize = 1000;
/// First ifindex the plan requests in any namespace. A kernel with tunnel
/// modules loaded puts fallback devices (tunl0, gre0, sit0, ...) into every new
/// namespace at the lowest free indexes, so requested indexes start well above.
pub const FIRST_IFINDEX: u32 = 100;
/// Longest interface name the kernel accepts (IFNAMSIZ - 1).
pub const IFNAME_MAX: usize = 15;

/// Name of the lab's infrastructure namespace (bridges, later the engine).
pub fn infra_netns(lab: &str) -> String {
    format!("{NETNS_PREFIX}{lab}")
}

/// Name of a node's namespace. The dot cannot occur in lab names, so the names
/// of two labs never collide.
pub fn node_netns(lab: &str, node: &str) -> String {
    format!("{NETNS_PREFIX}{lab}.{node}")
}

/// The ifalias every object of a lab carries, proving testbed made it.
pub fn owner_tag(lab: &str) -> String {
    format!("testbed:{lab}")
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub lab: String,
    pub seed: u64,
    pub backend: Backend,
    /// `[lab] engine_busy_poll`, ns.
    pub engine_busy_poll_ns: u64,
    /// Fingerprint of the whole topology this plan came from (any change to the
    /// file's meaning changes it; its path does not).
    pub fingerprint: String,
    pub infra: Infra,
    pub nodes: Vec<NodePlan>,
    pub links: Vec<LinkPlan>,
    /// Profiles referenced by interfaces, by name.
    pub profiles: BTreeMap<String, Profile>,
    /// Links the userspace engine carries (empty unless the lab uses it; see
    /// [`Plan::route_through_engine`]).
    #[serde(default)]
    pub relays: Vec<RelayPlan>,
}

/// The per-lab infrastructure namespace and what lives in it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Infra {
    pub netns: String,
    pub bridges: Vec<BridgePlan>,
    /// veth pairs joining each extra shard to its segment's root shard.
    pub trunks: Vec<TrunkPlan>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BridgePlan {
    pub name: String,
    pub index: u32,
    pub segment: String,
    pub shard: usize,
    /// Ports it will carry (members plus trunks).
    pub ports: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrunkPlan {
    /// End on the root shard.
    pub root: InfraPort,
    /// End on the extra shard.
    pub shard: InfraPort,
}

/// A trunk end or other interface in the infrastructure namespace, enslaved
/// to a bridge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InfraPort {
    pub name: String,
    pub index: u32,
    pub bridge: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodePlan {
    pub name: String,
    pub kind: NodeKind,
    pub netns: String,
    /// `/proc/sys/net/...` relative paths and values, written in the node's namespace.
    pub sysctls: Vec<(String, String)>,
    pub ifaces: Vec<IfacePlan>,
    pub routes: Vec<RoutePlan>,
    /// The agent role the node runs, if any (validated with the topology).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// The role's options, as the topology gives them.
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub options: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IfacePlan {
    pub name: String,
    pub index: u32,
    /// The segment or link this interface is on.
    pub network: String,
    pub addr: IpNet,
    pub addr6: Option<IpNet>,
    /// With IPv6: a static link-local address `fe80::<interface id of addr6>/64`.
    /// Autoconfiguration is off, and a router cannot resolve neighbours for
    /// packets it forwards without a link-local source.
    pub link_local6: Option<IpNet>,
    /// Profile for frames this node sends on this interface.
    pub profile_out: Option<String>,
    /// The network is marked `in_path`: the engine carries this interface
    /// even without a profile.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub in_path: bool,
    /// The infrastructure end of this interface's veth: a bridge port for a
    /// segment member, an engine port for a relayed link end. `None` for a
    /// point-to-point link end joined directly to its peer (see [`LinkPlan`]).
    pub port: Option<NodePort>,
}

/// The infrastructure end of a node interface's veth pair.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodePort {
    pub name: String,
    pub index: u32,
    /// The bridge it is enslaved to; `None` when the userspace engine reads it.
    pub bridge: Option<u32>,
}

/// One link the userspace engine carries: frames read on port A go through
/// the A-to-B pipeline and leave on port B, and the other way round.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RelayPlan {
    /// Its name in `link show`: the link's name, or `<segment>:<node>`.
    pub name: String,
    /// Side A: (node index, interface index); that interface's port is port A.
    pub a: (usize, usize),
    pub b: RelaySide,
    /// The engine applies the profiles' impairments on this relay (false
    /// when netem does, and the engine only carries it for an attacker).
    #[serde(default = "yes")]
    pub impaired: bool,
}

fn yes() -> bool {
    true
}

/// What is on the B side of a relay.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RelaySide {
    /// The other end of a point-to-point link: that interface's port is port B.
    Node(usize, usize),
    /// The segment: port B is `engine`, whose veth peer `bridge` is the bridge port.
    Bridge {
        engine: String,
        engine_index: u32,
        bridge: InfraPort,
    },
}

/// A point-to-point veth between two node namespaces.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinkPlan {
    pub name: String,
    /// (node index, interface index within that node's `ifaces`).
    pub a: (usize, usize),
    pub b: (usize, usize),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoutePlan {
    pub dest: IpNet,
    pub via: IpAddr,
}

impl IfacePlan {
    /// Every address to configure on the interface, IPv4 first.
    pub fn addresses(&self) -> impl Iterator<Item = IpNet> + '_ {
        std::iter::once(self.addr)
            .chain(self.addr6)
            .chain(self.link_local6)
    }
}

/// `fe80::` plus the low 64 bits of a global IPv6 address, as a /64.
fn link_local_for(addr6: Option<IpNet>) -> Option<IpNet> {
    let IpNet::V6(a) = addr6? else { return None };
    let id = u128::from(a.addr()) & u128::from(u64::MAX);
    let ll = std::net::Ipv6Addr::from((0xfe80u128 << 112) | id);
    IpNet::new(ll.into(), 64).ok()
}

impl Plan {
    /// Every namespace of the lab: infrastructure first, then nodes in order.
    pub fn namespaces(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.infra.netns.as_str())
            .chain(self.nodes.iter().map(|n| n.netns.as_str()))
    }

    pub fn node(&self, name: &str) -> Option<&NodePlan> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// The name of the bridge with ifindex `index` (`?` if none).
    fn bridge_name(&self, index: u32) -> &str {
        self.infra
            .bridges
            .iter()
            .find(|b| b.index == index)
            .map_or("?", |b| b.name.as_str())
    }

    /// Whether `network` is a point-to-point link (else it is a segment).
    pub fn is_link(&self, network: &str) -> bool {
        self.links.iter().any(|l| l.name == network)
    }

    /// The impairment of frames sent on interface `end` (node index,
    /// interface index), seeded from the lab seed and the interface's name;
    /// `None` if it has no profile. Both backends use exactly this.
    pub fn egress_params(&self, end: (usize, usize)) -> Option<DirectionParams> {
        let (node, iface) = (&self.nodes[end.0], self.iface(end));
        let profile = self.profiles.get(iface.profile_out.as_ref()?)?;
        let key = format!("{}:{}", node.name, iface.name);
        let seed = direction_seed(self.seed, &key, Direction::AToB);
        Some(DirectionParams::from_profile(profile, seed))
    }

    /// The interface at (node index, interface index).
    pub fn iface(&self, (node, iface): (usize, usize)) -> &IfacePlan {
        &self.nodes[node].ifaces[iface]
    }

    /// Number of objects `up` creates (for progress reporting).
    pub fn object_count(&self) -> usize {
        1 + self.infra.bridges.len()
            + self.infra.trunks.len()
            + self.nodes.iter().map(|n| 1 + n.ifaces.len()).sum::<usize>()
    }

    /// `/etc/hosts` content for the lab: every node name with its addresses,
    /// first interface first.
    pub fn hosts_file(&self) -> String {
        let mut out = String::from("127.0.0.1\tlocalhost\n::1\tlocalhost\n");
        for node in &self.nodes {
            for iface in &node.ifaces {
                let _ = writeln!(out, "{}\t{}", iface.addr.addr(), node.name);
                if let Some(a6) = iface.addr6 {
                    let _ = writeln!(out, "{}\t{}", a6.addr(), node.name);
                }
            }
        }
        out
    }
}

/// The MAC of node `n`'s interface `j`: locally administered (0x02), prefix
/// 0x7c (bridges use 0x7b), then the node's index and the interface's. Fixed
/// so `up` can seed neighbour entries without asking the kernel.
pub fn iface_mac(n: usize, j: usize) -> [u8; 6] {
    let n = n.to_be_bytes();
    let l = n.len();
    [0x02, 0x7c, n[l - 3], n[l - 2], n[l - 1], j as u8]
}

/// A neighbour entry to seed in a node: on its interface `ifindex`, `addr`
/// is at `mac`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NeighbourSeed {
    pub ifindex: u32,
    pub addr: std::net::Ipv4Addr,
    pub mac: [u8; 6],
}

impl Plan {
    /// For every node, the neighbours to seed: each agent's peers (what its
    /// role connects to) and, on the peer, the agent, where the two share a
    /// network. Without them a thousand agents resolving one hub are a
    /// thousand broadcasts, each flooded to every port of the bridge.
    pub fn neighbour_seeds(&self) -> Vec<Vec<NeighbourSeed>> {
        let mut seeds = vec![Vec::new(); self.nodes.len()];
        for (x, p) in self.agent_peers() {
            let (node, peer) = (&self.nodes[x], &self.nodes[p]);
            let shared = node.ifaces.iter().enumerate().find_map(|(j, a)| {
                let k = peer.ifaces.iter().position(|b| b.network == a.network)?;
                Some((j, k))
            });
            let Some((j, k)) = shared else { continue };
            let (a, b) = (&node.ifaces[j], &peer.ifaces[k]);
            if let (IpNet::V4(aa), IpNet::V4(ba)) = (a.addr, b.addr) {
                seeds[x].push(NeighbourSeed {
                    ifindex: a.index,
                    addr: ba.addr(),
                    mac: iface_mac(p, k),
                });
                seeds[p].push(NeighbourSeed {
                    ifindex: b.index,
                    addr: aa.addr(),
                    mac: iface_mac(x, j),
                });
            }
        }
        seeds
    }

    /// (agent, peer) node indices: every node a role connects to, for each
    /// node with a role (roles are validated with the topology).
    pub fn agent_peers(&self) -> Vec<(usize, usize)> {
        let index: std::collections::HashMap<&str, usize> = self
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.name.as_str(), i))
            .collect();
        let mut pairs = Vec::new();
        for (x, node) in self.nodes.iter().enumerate() {
            let Some(role) = &node.role else { continue };
            let Ok(role) = crate::agent::Role::parse(role, &node.options) else {
                continue;
            };
            pairs.extend(
                role.peers()
                    .into_iter()
                    .filter_map(|p| Some((x, *index.get(p)?))),
            );
        }
        pairs
    }
}

/// Build the plan for a validated topology.
pub fn build(topo: &Topology) -> Plan {
    let lab = &topo.lab.name;
    let mut next_infra_index = FIRST_IFINDEX;
    let mut take_index = || {
        let i = next_infra_index;
        next_infra_index += 1;
        i
    };
    let mut nodes: Vec<NodePlan> = topo
        .nodes
        .iter()
        .map(|n| NodePlan {
            name: n.name.clone(),
            kind: n.kind,
            netns: node_netns(lab, &n.name),
            sysctls: sysctls(n.kind, topo.lab.pool6.is_some()),
            ifaces: Vec::new(),
            routes: Vec::new(),
            role: n.role.clone(),
            options: n.options.clone(),
        })
        .collect();

    let mut bridges = Vec::new();
    let mut trunks = Vec::new();
    for (s, seg) in topo.segments.iter().enumerate() {
        let shards = seg.members.len().div_ceil(MEMBERS_PER_SHARD).max(1);
        let first = bridges.len();
        for k in 0..shards {
            let members = seg
                .members
                .len()
                .saturating_sub(k * MEMBERS_PER_SHARD)
                .min(MEMBERS_PER_SHARD);
            let trunk_ports = if k == 0 { shards - 1 } else { 1 };
            bridges.push(BridgePlan {
                name: format!("s{s}b{k}"),
                index: take_index(),
                segment: seg.name.clone(),
                shard: k,
                ports: members + trunk_ports,
            });
        }
        for k in 1..shards {
            trunks.push(TrunkPlan {
                root: InfraPort {
                    name: format!("s{s}t{k}r"),
                    index: take_index(),
                    bridge: bridges[first].index,
                },
                shard: InfraPort {
                    name: format!("s{s}t{k}s"),
                    index: take_index(),
                    bridge: bridges[first + k].index,
                },
            });
        }
        for (m, member) in seg.members.iter().enumerate() {
            let bridge = bridges[first + m / MEMBERS_PER_SHARD].index;
            let node = &mut nodes[member.node];
            let j = node.ifaces.len();
            let port = NodePort {
                name: format!("n{}i{j}", member.node),
                index: take_index(),
                bridge: Some(bridge),
            };
            let net = (
                seg.name.as_str(),
                IpNet::from(seg.subnet),
                seg.subnet6.map(IpNet::from),
            );
            let mut plan = iface(j, net, member, &seg.profile, Some(port));
            plan.in_path = seg.in_path;
            node.ifaces.push(plan);
        }
    }

    let mut links = Vec::new();
    for link in &topo.links {
        let mut end = |att: &Attachment, profile: &Option<String>| {
            let node = &mut nodes[att.node];
            let j = node.ifaces.len();
            let net = (
                link.name.as_str(),
                IpNet::from(link.subnet),
                link.subnet6.map(IpNet::from),
            );
            let mut plan = iface(j, net, att, profile, None);
            plan.in_path = link.in_path;
            node.ifaces.push(plan);
            (att.node, j)
        };
        let a = end(&link.a, &link.profile_ab);
        let b = end(&link.b, &link.profile_ba);
        links.push(LinkPlan {
            name: link.name.clone(),
            a,
            b,
        });
    }

    for (i, routes) in routes::compute(topo).into_iter().enumerate() {
        nodes[i].routes = routes;
    }

    Plan {
        lab: lab.clone(),
        seed: topo.lab.seed,
        backend: topo.lab.backend,
        engine_busy_poll_ns: topo.lab.engine_busy_poll_ns,
        fingerprint: fingerprint(topo),
        infra: Infra {
            netns: infra_netns(lab),
            bridges,
            trunks,
        },
        nodes,
        links,
        profiles: topo.profiles.clone(),
        relays: Vec::new(),
    }
}

/// Interface `ethJ` of a node on network `(name, subnet, subnet6)`.
fn iface(
    j: usize,
    (network, subnet, subnet6): (&str, IpNet, Option<IpNet>),
    att: &Attachment,
    profile: &Option<String>,
    port: Option<NodePort>,
) -> IfacePlan {
    let with_prefix =
        |a: IpAddr, net: IpNet| IpNet::new(a, net.prefix_len()).expect("prefix of a valid net");
    let addr6 = att
        .addr6
        .zip(subnet6)
        .map(|(a, n)| with_prefix(a.into(), n));
    IfacePlan {
        name: format!("eth{j}"),
        index: FIRST_IFINDEX + j as u32,
        network: network.to_string(),
        addr: with_prefix(att.addr.into(), subnet),
        addr6,
        link_local6: link_local_for(addr6),
        profile_out: profile.clone(),
        in_path: false,
        port,
    }
}

/// Sysctls for a node namespace. Only forwarding: every other default is set
/// per interface over netlink, because each `/proc/sys` lookup in a new
/// namespace costs time proportional to the number of namespaces.
fn sysctls(kind: NodeKind, ipv6: bool) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if kind.forwards() {
        out.push(("ipv4/ip_forward".to_string(), "1".to_string()));
        if ipv6 {
            out.push(("ipv6/conf/all/forwarding".to_string(), "1".to_string()));
        }
    }
    out
}

/// FNV-1a over the topology's canonical JSON, minus the file path.
fn fingerprint(topo: &Topology) -> String {
    let mut t = topo.clone();
    t.source = Default::default();
    let json = serde_json::to_vec(&t).unwrap_or_default();
    let hash = json.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
    });
    format!("{hash:016x}")
}

/// The plan as ordered, human-readable steps (what `up --dry-run` prints).
impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let infra = &self.infra.netns;
        writeln!(
            f,
            "lab {} (seed {}, backend {})",
            self.lab, self.seed, self.backend
        )?;
        writeln!(f, "netns  {infra}  (infrastructure)")?;
        writeln!(f, "sysctl {infra}  ipv6/conf/all/disable_ipv6=1")?;
        writeln!(f, "sysctl {infra}  ipv6/conf/default/disable_ipv6=1")?;
        for b in &self.infra.bridges {
            writeln!(
                f,
                "bridge {infra}/{} #{}  segment {} shard {} ({} ports)",
                b.name, b.index, b.segment, b.shard, b.ports
            )?;
        }
        for t in &self.infra.trunks {
            writeln!(
                f,
                "veth   {infra}/{} <-> {infra}/{}  (trunk)",
                t.root.name, t.shard.name
            )?;
        }
        for n in &self.nodes {
            writeln!(f, "netns  {}  ({})", n.netns, n.kind.as_str())?;
            for (k, v) in &n.sysctls {
                writeln!(f, "sysctl {}  {k}={v}", n.netns)?;
            }
            writeln!(
                f,
                "link   {}/lo up, alias {}",
                n.netns,
                owner_tag(&self.lab)
            )?;
            for i in &n.ifaces {
                let Some(p) = &i.port else { continue };
                let to = match p.bridge {
                    Some(index) => format!("bridge {}", self.bridge_name(index)),
                    None => "engine".to_string(),
                };
                writeln!(
                    f,
                    "veth   {}/{} #{} <-> {infra}/{} ({to})",
                    n.netns, i.name, i.index, p.name
                )?;
            }
        }
        for r in &self.relays {
            let (a, b) = self.relay_ports(r);
            if let RelaySide::Bridge { engine, bridge, .. } = &r.b {
                writeln!(
                    f,
                    "veth   {infra}/{engine} <-> {infra}/{} (bridge {})",
                    bridge.name,
                    self.bridge_name(bridge.bridge)
                )?;
            }
            writeln!(
                f,
                "relay  {infra}/{a} <-> {infra}/{b}  ({}, userspace engine)",
                r.name
            )?;
        }
        for l in self.links.iter().filter(|l| self.iface(l.a).port.is_none()) {
            let (a, b) = (&self.nodes[l.a.0], &self.nodes[l.b.0]);
            writeln!(
                f,
                "veth   {}/{} <-> {}/{}  (link {})",
                a.netns, a.ifaces[l.a.1].name, b.netns, b.ifaces[l.b.1].name, l.name
            )?;
        }
        for n in &self.nodes {
            for i in &n.ifaces {
                writeln!(f, "link   {}/{} addrgenmode none, up", n.netns, i.name)?;
                for a in i.addresses() {
                    writeln!(f, "addr   {}/{} {a}", n.netns, i.name)?;
                }
            }
            for r in &n.routes {
                writeln!(f, "route  {}  {} via {}", n.netns, r.dest, r.via)?;
            }
        }
        for n in &self.nodes {
            for i in &n.ifaces {
                if let Some(p) = &i.profile_out {
                    let how = match (self.relays.is_empty(), self.backend) {
                        (false, _) => "userspace engine",
                        (true, Backend::Kernel) => "kernel netem",
                        (true, _) => "kernel netem if the kernel has it, else the userspace engine",
                    };
                    writeln!(
                        f,
                        "impair {}/{} egress profile {p} ({how})",
                        n.netns, i.name
                    )?;
                }
            }
        }
        Ok(())
    }
}
