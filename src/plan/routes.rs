//! Static routes: every node reaches every network it can reach through routers.
//!
//! Networks (segments and links) and routers form a graph; a breadth-first walk
//! from a node's own networks finds, for each farther network, the first router
//! on the way, which becomes the gateway. Nodes with the same attachments share
//! one walk, so a thousand vehicles on one cell cost one.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;

use ipnet::IpNet;

use super::RoutePlan;
use crate::topology::{Attachment, Topology};

/// A network: its subnets and who is on it.
struct Net<'a> {
    subnet: IpNet,
    subnet6: Option<IpNet>,
    members: Vec<&'a Attachment>,
}

/// The gateway addresses on a node's own network toward some farther network.
#[derive(Clone, Copy)]
struct Hop {
    via: IpAddr,
    via6: Option<IpAddr>,
}

/// Routes for every node, indexed like `topo.nodes`.
pub(super) fn compute(topo: &Topology) -> Vec<Vec<RoutePlan>> {
    let nets = networks(topo);
    let mut nets_of: Vec<Vec<usize>> = vec![Vec::new(); topo.nodes.len()];
    for (i, net) in nets.iter().enumerate() {
        for m in &net.members {
            nets_of[m.node].push(i);
        }
    }
    let is_router: Vec<bool> = topo.nodes.iter().map(|n| n.kind.forwards()).collect();
    let mut cache: HashMap<Vec<usize>, Vec<RoutePlan>> = HashMap::new();
    nets_of
        .iter()
        .map(|own| {
            cache
                .entry(own.clone())
                .or_insert_with(|| walk(own, &nets, &nets_of, &is_router))
                .clone()
        })
        .collect()
}

fn networks(topo: &Topology) -> Vec<Net<'_>> {
    let segs = topo.segments.iter().map(|s| Net {
        subnet: s.subnet.into(),
        subnet6: s.subnet6.map(Into::into),
        members: s.members.iter().collect(),
    });
    let links = topo.links.iter().map(|l| Net {
        subnet: l.subnet.into(),
        subnet6: l.subnet6.map(Into::into),
        members: vec![&l.a, &l.b],
    });
    segs.chain(links).collect()
}

fn walk(own: &[usize], nets: &[Net], nets_of: &[Vec<usize>], is_router: &[bool]) -> Vec<RoutePlan> {
    // None: directly attached; Some(hop): reached through that first router.
    let mut reached: HashMap<usize, Option<Hop>> = own.iter().map(|&n| (n, None)).collect();
    let mut queue: VecDeque<usize> = own.iter().copied().collect();
    while let Some(x) = queue.pop_front() {
        let hop_x = reached[&x];
        for router in nets[x].members.iter().filter(|m| is_router[m.node]) {
            let hop = hop_x.unwrap_or(Hop {
                via: router.addr.into(),
                via6: router.addr6.map(Into::into),
            });
            for &y in &nets_of[router.node] {
                if let std::collections::hash_map::Entry::Vacant(e) = reached.entry(y) {
                    e.insert(Some(hop));
                    queue.push_back(y);
                }
            }
        }
    }
    let mut order: Vec<(usize, Hop)> = reached
        .into_iter()
        .filter_map(|(n, h)| h.map(|h| (n, h)))
        .collect();
    order.sort_by_key(|(n, _)| *n);
    let mut routes = Vec::new();
    for (n, hop) in order {
        routes.push(RoutePlan {
            dest: nets[n].subnet,
            via: hop.via,
        });
        if let (Some(dest), Some(via)) = (nets[n].subnet6, hop.via6) {
            routes.push(RoutePlan { dest, via });
        }
    }
    routes
}
