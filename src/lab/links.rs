//! Runtime link control on a running lab: show the impairments in force
//! (read back from the kernel, not from the plan), change them, and cut or
//! restore a link's carrier.
//!
//! A "link" between nodes A and B is the network joining them: their
//! point-to-point link if they have one, else a segment both are on. Each
//! direction is the sender's egress interface on that network; on a segment
//! that interface carries everything the sender sends there, so a change
//! applies to all its traffic on the segment.

use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::tc::TcAttribute;
use serde::Serialize;

use super::{LabError, state};
use crate::emulation::kernel;
use crate::emulation::netem::{self, NetemOptions};
use crate::netlink::{Netlink, netns, ops};
use crate::plan::{IfacePlan, NodePlan, Plan};

/// Which directions of a link a change applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    AToB,
    BToA,
    Both,
}

/// A change to one direction's impairments; `None` keeps the current value.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Change {
    pub delay_ns: Option<u64>,
    pub jitter_ns: Option<u64>,
    pub loss: Option<f64>,
    pub duplicate: Option<f64>,
    pub corrupt: Option<f64>,
    pub reorder: Option<f64>,
    pub rate_bps: Option<u64>,
    pub limit: Option<u32>,
}

/// One direction as the kernel has it now.
#[derive(Debug, Clone, Serialize)]
pub struct Egress {
    pub from: String,
    pub iface: String,
    pub network: String,
    /// Administrative state of the interface (`link down` clears it).
    pub up: bool,
    /// The netem in force, if any, in human units.
    pub delay: Option<String>,
    pub jitter: Option<String>,
    pub loss_percent: Option<f64>,
    pub duplicate_percent: Option<f64>,
    pub corrupt_percent: Option<f64>,
    pub reorder_percent: Option<f64>,
    pub rate: Option<String>,
    pub limit: Option<u32>,
    /// Counters of the root qdisc.
    pub sent_packets: u64,
    pub dropped: u64,
    pub queue_len: u32,
}

/// The two sender-side ends of the link joining `a` and `b`.
fn ends<'p>(
    plan: &'p Plan,
    a: &str,
    b: &str,
) -> Result<[(&'p NodePlan, &'p IfacePlan); 2], LabError> {
    let node = |n: &str| {
        plan.node(n).ok_or_else(|| LabError::NoSuchNode {
            lab: plan.lab.clone(),
            node: n.to_string(),
            known: super::enter::known_nodes(plan),
        })
    };
    let (na, nb) = (node(a)?, node(b)?);
    let shared = |p2p: bool| {
        na.ifaces.iter().find_map(|ia| {
            let ib = nb.ifaces.iter().find(|ib| ib.network == ia.network)?;
            (ia.port.is_none() == p2p).then_some((ia, ib))
        })
    };
    let (ia, ib) = shared(true)
        .or_else(|| shared(false))
        .ok_or_else(|| LabError::NotLinked {
            lab: plan.lab.clone(),
            a: a.to_string(),
            b: b.to_string(),
        })?;
    Ok([(na, ia), (nb, ib)])
}

fn selected<'p>(
    plan: &'p Plan,
    a: &str,
    b: &str,
    dir: Dir,
) -> Result<Vec<(&'p NodePlan, &'p IfacePlan)>, LabError> {
    let [ea, eb] = ends(plan, a, b)?;
    Ok(match dir {
        Dir::AToB => vec![ea],
        Dir::BToA => vec![eb],
        Dir::Both => vec![ea, eb],
    })
}

fn running(lab: &str) -> Result<Plan, LabError> {
    state::read_plan(lab)?.ok_or_else(|| LabError::NoSuchLab(lab.to_string()))
}

/// Run netlink requests inside a node's namespace.
fn in_node<T: Send + 'static>(
    node: &NodePlan,
    f: impl FnOnce(&mut Netlink) -> Result<T, LabError> + Send + 'static,
) -> Result<T, LabError> {
    let name = node.netns.clone();

    netns::run_in(&name, move || {
        Ok(Netlink::open()
            .map_err(LabError::from)
            .and_then(|mut nl| f(&mut nl)))
    })
    .map_err(|e| LabError::Netns { name, source: e })?
}

/// The root qdisc of `index`, as (netem options if it is netem, counters).
fn root_qdisc(
    nl: &mut Netlink,
    index: u32,
) -> Result<(Option<NetemOptions>, u64, u64, u32), LabError> {
    for msg in nl.dump(kernel::dump_qdiscs())? {
        let RouteNetlinkMessage::NewQueueDiscipline(q) = msg else {
            continue;
        };
        if q.header.index != index as i32
            || q.header.parent != netlink_packet_route::tc::TcHandle::ROOT
        {
            continue;
        }
        let options = netem::from_qdisc_message(&q)
            .map_err(|e| LabError::Io(std::io::Error::other(e.to_string())))?;
        let (sent, dropped, qlen) = q
            .attributes
            .iter()
            .find_map(|a| match a {
                TcAttribute::Stats(s) => Some((u64::from(s.packets), u64::from(s.drops), s.qlen)),
                _ => None,
            })
            .unwrap_or_default();
        return Ok((options, sent, dropped, qlen));
    }
    Ok((None, 0, 0, 0))
}

fn link_is_up(nl: &mut Netlink, index: u32) -> Result<bool, LabError> {
    use netlink_packet_route::link::LinkFlags;
    Ok(nl.dump(ops::get_links())?.iter().any(|m| {
        matches!(m, RouteNetlinkMessage::NewLink(l) if l.header.index == index && l.header.flags.contains(LinkFlags::Up))
    }))
}

/// Every impaired direction of the lab, or the two directions between `a` and `b`.
pub fn show(lab: &str, between: Option<(&str, &str)>) -> Result<Vec<Egress>, LabError> {
    let plan = running(lab)?;
    let chosen: Vec<(&NodePlan, &IfacePlan)> = match between {
        Some((a, b)) => selected(&plan, a, b, Dir::Both)?,
        None => plan
            .nodes
            .iter()
            .flat_map(|n| {
                n.ifaces
                    .iter()
                    .filter(|i| i.profile_out.is_some())
                    .map(move |i| (n, i))
            })
            .collect(),
    };
    chosen
        .into_iter()
        .map(|(node, iface)| {
            let index = iface.index;
            let ((netem, sent, dropped, qlen), up) = in_node(node, move |nl| {
                Ok((root_qdisc(nl, index)?, link_is_up(nl, index)?))
            })?;
            let pct = |p: u32| netem::prob_to_percent(p);
            Ok(Egress {
                from: node.name.clone(),
                iface: iface.name.clone(),
                network: iface.network.clone(),
                up,
                delay: netem
                    .as_ref()
                    .map(|o| crate::emulation::format_duration(o.latency_ns.max(0) as u64)),
                jitter: netem
                    .as_ref()
                    .map(|o| crate::emulation::format_duration(o.jitter_ns.max(0) as u64)),
                loss_percent: netem.as_ref().map(|o| pct(o.loss)),
                duplicate_percent: netem.as_ref().map(|o| pct(o.duplicate)),
                corrupt_percent: netem.as_ref().map(|o| pct(o.corrupt)),
                reorder_percent: netem.as_ref().map(|o| pct(o.reorder)),
                rate: netem
                    .as_ref()
                    .filter(|o| o.rate_bytes_per_sec > 0)
                    .map(|o| crate::emulation::format_rate(o.rate_bytes_per_sec * 8)),
                limit: netem.as_ref().map(|o| o.limit),
                sent_packets: sent,
                dropped,
                queue_len: qlen,
            })
        })
        .collect()
}

/// Change the impairments of one or both directions in place: the qdisc is
/// changed, not replaced, so packets already queued are kept.
pub fn set(lab: &str, a: &str, b: &str, dir: Dir, change: &Change) -> Result<(), LabError> {
    let plan = running(lab)?;
    if state::Impairments::of(lab) == Some(state::Impairments::Recorded) {
        return Err(LabError::NotApplied(lab.to_string()));
    }
    for (node, iface) in selected(&plan, a, b, dir)? {
        let (index, change, lab) = (iface.index, change.clone(), lab.to_string());
        let what = format!("netem on {}/{}", node.netns, iface.name);
        in_node(node, move |nl| {
            let (current, ..) = root_qdisc(nl, index)?;
            let exists = current.is_some();
            let mut o = current.unwrap_or_default();
            apply(&mut o, &change);
            let flags = if exists { 0 } else { ops::CREATE };
            nl.execute(kernel::root_netem_options(index, &o), flags, what)
                .map_err(|e| {
                    if e.errno() == Some(libc::ENOENT) {
                        LabError::NotApplied(lab)
                    } else {
                        e.into()
                    }
                })
        })?;
    }
    Ok(())
}

fn apply(o: &mut NetemOptions, c: &Change) {
    let prob = netem::percent_to_prob;
    if let Some(d) = c.delay_ns {
        o.latency_ns = i64::try_from(d).unwrap_or(i64::MAX);
    }
    if let Some(j) = c.jitter_ns {
        o.jitter_ns = i64::try_from(j).unwrap_or(i64::MAX);
    }
    if let Some(p) = c.loss {
        o.loss = prob(p);
        o.loss_model = None;
    }
    if let Some(p) = c.duplicate {
        o.duplicate = prob(p);
    }
    if let Some(p) = c.corrupt {
        o.corrupt = prob(p);
    }
    if let Some(p) = c.reorder {
        o.reorder = prob(p);
        // netem reorders only with gap >= 1; tc makes `reorder P` gap 1.
        o.gap = if p > 0.0 { o.gap.max(1) } else { 0 };
    }
    if let Some(r) = c.rate_bps {
        o.rate_bytes_per_sec = r / 8;
    }
    if let Some(l) = c.limit {
        o.limit = l;
    }
}

/// Cut (`up = false`) or restore a link: the interfaces go administratively
/// down, so the carrier drops (the link is gone, as when a cable is pulled;
/// frames are not lost one by one). A point-to-point link is cut at both ends;
/// on a segment only `a`'s port, since `b`'s also serves the other members.
/// Restoring re-installs the node's routes, which the kernel removed with the
/// interface.
pub fn set_carrier(lab: &str, a: &str, b: &str, up: bool) -> Result<(), LabError> {
    let plan = running(lab)?;
    let [ea, eb] = ends(&plan, a, b)?;
    let cut = if ea.1.port.is_none() {
        vec![ea, eb]
    } else {
        vec![ea]
    };
    for (node, iface) in cut {
        let index = iface.index;
        let what = format!(
            "link {}/{} {}",
            node.netns,
            iface.name,
            if up { "up" } else { "down" }
        );
        let routes: Vec<_> = if up { node.routes.clone() } else { Vec::new() };
        let netns = node.netns.clone();
        in_node(node, move |nl| {
            nl.queue(ops::set_admin(index, up), 0, what);
            for r in &routes {
                nl.queue(
                    ops::route(r.dest, r.via),
                    ops::REPLACE,
                    format!("route {} via {} in {netns}", r.dest, r.via),
                );
            }
            Ok(nl.flush()?)
        })?;
    }
    Ok(())
}
