//! Placing the userspace engine: which interfaces it carries and the extra
//! veth ends it needs in the infrastructure namespace.
//!
//! An impaired segment member's veth no longer ends on the bridge: its
//! infrastructure end `n<N>i<J>` is read by the engine, which writes the
//! frames to `n<N>i<J>e`, whose veth peer `n<N>i<J>b` is the bridge port
//! (and the other way round). An impaired point-to-point link becomes two
//! veths, one per node, ending in the infrastructure namespace as `l<K>a` and
//! `l<K>b`, joined only by the engine. Unimpaired networks are left as they
//! are: they cost the engine nothing.

use super::{InfraPort, NodePort, Plan, RelayPlan, RelaySide};

impl Plan {
    /// Route every impaired interface, and every `in_path` one, through the
    /// userspace engine (what `up` does when the lab's impairments are not
    /// applied by netem). Calling it again changes nothing.
    pub fn route_through_engine(&mut self) {
        self.place_relays(true);
    }

    /// Route only `in_path` interfaces through the engine, which then only
    /// carries them (netem impairs them: the kernel backend).
    pub fn route_in_path_through_engine(&mut self) {
        self.place_relays(false);
    }

    /// Relays for in-path interfaces, and with `impairments` for impaired ones.
    fn place_relays(&mut self, impairments: bool) {
        if !self.relays.is_empty() {
            return;
        }
        let mut next = self.max_infra_index() + 1;
        let mut take = || {
            next += 1;
            next - 1
        };
        let mut relays = Vec::new();
        for (n, node) in self.nodes.iter_mut().enumerate() {
            for (j, iface) in node.ifaces.iter_mut().enumerate() {
                let Some(port) = iface.port.as_mut() else {
                    continue;
                };
                let carried = iface.in_path || (impairments && iface.profile_out.is_some());
                let Some(bridge) = port.bridge.filter(|_| carried) else {
                    continue;
                };
                port.bridge = None;
                relays.push(RelayPlan {
                    name: format!("{}:{}", iface.network, node.name),
                    a: (n, j),
                    b: RelaySide::Bridge {
                        engine: format!("{}e", port.name),
                        engine_index: take(),
                        bridge: InfraPort {
                            name: format!("{}b", port.name),
                            index: take(),
                            bridge,
                        },
                    },
                    impaired: impairments,
                });
            }
        }
        for (k, link) in self.links.iter().enumerate() {
            let impaired = [link.a, link.b]
                .iter()
                .any(|&end| self.iface(end).profile_out.is_some());
            if !(self.iface(link.a).in_path || (impairments && impaired)) {
                continue;
            }
            for (end, side) in [(link.a, 'a'), (link.b, 'b')] {
                self.nodes[end.0].ifaces[end.1].port = Some(NodePort {
                    name: format!("l{k}{side}"),
                    index: take(),
                    bridge: None,
                });
            }
            relays.push(RelayPlan {
                name: link.name.clone(),
                a: link.a,
                b: RelaySide::Node(link.b.0, link.b.1),
                impaired: impairments,
            });
        }
        self.relays = relays;
    }

    /// The two interfaces (in the infrastructure namespace) the engine reads
    /// and writes for `relay`: port A, port B.
    pub fn relay_ports<'p>(&'p self, relay: &'p RelayPlan) -> (&'p str, &'p str) {
        let port = |end| {
            self.iface(end)
                .port
                .as_ref()
                .map_or("", |p: &NodePort| p.name.as_str())
        };
        let b = match &relay.b {
            RelaySide::Node(n, i) => port((*n, *i)),
            RelaySide::Bridge { engine, .. } => engine.as_str(),
        };
        (port(relay.a), b)
    }

    /// The relay carrying frames that node `node` sends on interface `iface`,
    /// and which of its directions that is.
    pub fn relay_of(
        &self,
        end: (usize, usize),
    ) -> Option<(&RelayPlan, crate::emulation::pipeline::Direction)> {
        use crate::emulation::pipeline::Direction;
        self.relays.iter().find_map(|r| {
            if r.a == end {
                Some((r, Direction::AToB))
            } else if r.b == RelaySide::Node(end.0, end.1) {
                Some((r, Direction::BToA))
            } else {
                None
            }
        })
    }

    /// The highest ifindex requested in the infrastructure namespace before
    /// the engine is placed.
    fn max_infra_index(&self) -> u32 {
        let bridges = self.infra.bridges.iter().map(|b| b.index);
        let trunks = self
            .infra
            .trunks
            .iter()
            .flat_map(|t| [t.root.index, t.shard.index]);
        let ports = self
            .nodes
            .iter()
            .flat_map(|n| &n.ifaces)
            .filter_map(|i| i.port.as_ref().map(|p| p.index));
        bridges
            .chain(trunks)
            .chain(ports)
            .max()
            .unwrap_or(super::FIRST_IFINDEX - 1)
    }
}
