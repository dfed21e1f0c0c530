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
use crate::emulation::netem::{self, NetemOptions};
use crate::emulation::pipeline::{DirectionParams, LossModel, Rate};
use crate::emulation::{format_duration, format_rate, kernel};
use crate::engine::{self, control, control::DirectionReport};
use crate::netlink::{Netlink, netns, ops};
use crate::plan::{NodePlan, Plan};

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

/// One direction of a link as the backend has it now.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Egress {
    pub from: String,
    pub iface: String,
    pub network: String,
    /// Administrative state of the interface (`link down` clears it).
    pub up: bool,
    /// What applies the impairment: `netem`, `engine`, or `none`.
    pub via: &'static str,
    /// The impairment in force, in human units (`None`: nothing configured).
    pub delay: Option<String>,
    pub jitter: Option<String>,
    pub loss_percent: Option<f64>,
    pub duplicate_percent: Option<f64>,
    pub corrupt_percent: Option<f64>,
    pub reorder_percent: Option<f64>,
    pub rate: Option<String>,
    pub limit: Option<u32>,
    /// Frames passed on (netem: packets sent by the qdisc).
    pub sent_packets: u64,
    /// Frames dropped (loss and full queue).
    pub dropped: u64,
    /// Counts netem does not keep (`None` on the kernel backend).
    pub duplicated: Option<u64>,
    pub reordered: Option<u64>,
    pub corrupted: Option<u64>,
    pub queue_len: u64,
}

impl Egress {
    fn from_netem(o: &NetemOptions) -> Egress {
        let pct = |p: u32| Some(netem::prob_to_percent(p));
        Egress {
            via: "netem",
            delay: Some(format_duration(o.latency_ns.max(0) as u64)),
            jitter: Some(format_duration(o.jitter_ns.max(0) as u64)),
            loss_percent: pct(o.loss),
            duplicate_percent: pct(o.duplicate),
            corrupt_percent: pct(o.corrupt),
            reorder_percent: pct(o.reorder),
            rate: (o.rate_bytes_per_sec > 0).then(|| format_rate(o.rate_bytes_per_sec * 8)),
            limit: Some(o.limit),
            ..Egress::default()
        }
    }

    fn from_engine(r: &DirectionReport) -> Egress {
        let (p, c) = (&r.params, &r.stats.pipeline);
        let loss = match p.loss {
            LossModel::Random { percent, .. } => Some(percent),
            other => other.mean_loss_percent(),
        };
        Egress {
            via: "engine",
            delay: Some(format_duration(p.delay_ns)),
            jitter: Some(format_duration(p.jitter_ns)),
            loss_percent: loss,
            duplicate_percent: Some(p.duplicate),
            corrupt_percent: Some(p.corrupt),
            reorder_percent: Some(p.reorder),
            rate: p.rate.map(|r| format_rate(r.bps)),
            limit: Some(p.limit),
            sent_packets: c.passed,
            dropped: c.dropped_loss + c.dropped_queue,
            duplicated: Some(c.duplicated),
            reordered: Some(c.reordered),
            corrupted: Some(c.corrupted),
            queue_len: c.queue_len,
            ..Egress::default()
        }
    }
}

/// An interface by position: (node index, interface index) in the plan.
type End = (usize, usize);

/// The two sender-side ends of the link joining `a` and `b`.
fn ends(plan: &Plan, a: &str, b: &str) -> Result<[End; 2], LabError> {
    let node = |n: &str| {
        plan.nodes
            .iter()
            .position(|node| node.name == n)
            .ok_or_else(|| LabError::NoSuchNode {
                lab: plan.lab.clone(),
                node: n.to_string(),
                known: super::enter::known_nodes(plan),
            })
    };
    let (na, nb) = (node(a)?, node(b)?);
    let shared = |p2p: bool| {
        plan.nodes[na]
            .ifaces
            .iter()
            .enumerate()
            .find_map(|(ja, ia)| {
                let jb = plan.nodes[nb]
                    .ifaces
                    .iter()
                    .position(|ib| ib.network == ia.network)?;
                (plan.is_link(&ia.network) == p2p).then_some([(na, ja), (nb, jb)])
            })
    };
    shared(true)
        .or_else(|| shared(false))
        .ok_or_else(|| LabError::NotLinked {
            lab: plan.lab.clone(),
            a: a.to_string(),
            b: b.to_string(),
        })
}

fn selected(plan: &Plan, a: &str, b: &str, dir: Dir) -> Result<Vec<End>, LabError> {
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
) -> Result<(Option<NetemOptions>, u64, u64, u64), LabError> {
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
                TcAttribute::Stats(s) => {
                    Some((u64::from(s.packets), u64::from(s.drops), u64::from(s.qlen)))
                }
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

/// Whether the lab's impairments are the engine's.
fn uses_engine(lab: &str) -> bool {
    state::Impairments::of(lab) == Some(state::Impairments::Userspace)
}

fn engine_error(lab: &str, e: impl std::fmt::Display) -> LabError {
    LabError::Engine {
        lab: lab.to_string(),
        message: e.to_string(),
    }
}

/// Every impaired direction of the lab, or the two directions between `a` and `b`.
pub fn show(lab: &str, between: Option<(&str, &str)>) -> Result<Vec<Egress>, LabError> {
    let plan = running(lab)?;
    let chosen: Vec<End> = match between {
        Some((a, b)) => selected(&plan, a, b, Dir::Both)?,
        None => plan
            .nodes
            .iter()
            .enumerate()
            .flat_map(|(n, node)| {
                node.ifaces
                    .iter()
                    .enumerate()
                    .filter(|(_, i)| i.profile_out.is_some())
                    .map(move |(j, _)| (n, j))
            })
            .collect(),
    };
    let report = if uses_engine(lab) {
        Some(control::show(lab).map_err(|e| engine_error(lab, format!("not answering: {e}")))?)
    } else {
        None
    };
    chosen
        .into_iter()
        .map(|end| {
            let (node, iface) = (&plan.nodes[end.0], plan.iface(end));
            let index = iface.index;
            // The engine reports its own parameters and counters: netem's
            // qdisc is read only when the kernel backend applies them.
            let engine = report.is_some();
            let (qdisc, up) = in_node(node, move |nl| {
                let qdisc = if engine {
                    None
                } else {
                    Some(root_qdisc(nl, index)?)
                };
                Ok((qdisc, link_is_up(nl, index)?))
            })?;
            let mut row = match &report {
                Some(report) => plan
                    .relay_of(end)
                    .and_then(|(relay, dir)| {
                        let link = report.links.iter().find(|l| l.name == relay.name)?;
                        Some(Egress::from_engine(link.direction(dir)))
                    })
                    .unwrap_or_default(),
                None => {
                    let (netem, sent_packets, dropped, queue_len) = qdisc.unwrap_or_default();
                    Egress {
                        sent_packets,
                        dropped,
                        queue_len,
                        ..netem.as_ref().map(Egress::from_netem).unwrap_or_default()
                    }
                }
            };
            if row.via.is_empty() {
                row.via = "none";
            }
            row.from = node.name.clone();
            row.iface = iface.name.clone();
            row.network = iface.network.clone();
            row.up = up;
            Ok(row)
        })
        .collect()
}

/// Change the impairments of one or both directions in place, keeping the
/// frames already queued: netem is changed, not replaced; the engine applies
/// new parameters to frames arriving from then on. With the engine the change
/// is also written to `engine.json`, so it survives an engine restart.
pub fn set(lab: &str, a: &str, b: &str, dir: Dir, change: &Change) -> Result<(), LabError> {
    let plan = running(lab)?;
    let chosen = selected(&plan, a, b, dir)?;
    if uses_engine(lab) {
        return set_engine(&plan, &chosen, change);
    }
    for end in chosen {
        let (node, iface) = (&plan.nodes[end.0], plan.iface(end));
        let (index, change) = (iface.index, change.clone());
        let what = format!("netem on {}/{}", node.netns, iface.name);
        let not_relayed = not_relayed(&plan, end);
        in_node(node, move |nl| {
            let (current, ..) = root_qdisc(nl, index)?;
            let exists = current.is_some();
            let mut o = current.unwrap_or_default();
            apply_netem(&mut o, &change);
            let flags = if exists { 0 } else { ops::CREATE };
            nl.execute(kernel::root_netem_options(index, &o), flags, what)
                .map_err(|e| {
                    // No netem here and no engine for this lab (no profiles at `up`).
                    if e.errno() == Some(libc::ENOENT) {
                        not_relayed
                    } else {
                        e.into()
                    }
                })
        })?;
    }
    Ok(())
}

fn not_relayed(plan: &Plan, end: End) -> LabError {
    let iface = plan.iface(end);
    LabError::NotRelayed {
        lab: plan.lab.clone(),
        from: plan.nodes[end.0].name.clone(),
        to: iface.network.clone(),
    }
}

/// `set` on the engine: validate every change, record them in
/// `engine.json`, then hand them to the running engine.
fn set_engine(plan: &Plan, chosen: &[End], change: &Change) -> Result<(), LabError> {
    let lab = &plan.lab;
    let _lock = state::LabLock::try_acquire(lab)?.ok_or_else(|| LabError::Busy(lab.clone()))?;
    let mut config = engine::Config::read(lab).map_err(|e| engine_error(lab, e))?;
    let mut requests = Vec::new();
    for &end in chosen {
        let (relay, direction) = plan.relay_of(end).ok_or_else(|| not_relayed(plan, end))?;
        let link = config
            .links
            .iter_mut()
            .find(|l| l.name == relay.name)
            .ok_or_else(|| engine_error(lab, format!("engine.json has no link {}", relay.name)))?;
        let params = link.params_mut(direction);
        apply_params(params, change);
        params.validate().map_err(|e| engine_error(lab, e))?;
        requests.push(control::Request::Set {
            link: relay.name.clone(),
            direction,
            params: Box::new(params.clone()),
        });
    }
    let json = config.to_json()?;
    state::write_atomic(&engine::config_path(lab), &json)?;
    for request in &requests {
        match control::request(lab, request).map_err(|e| engine_error(lab, e))? {
            control::Response::Done => {}
            other => return Err(engine_error(lab, format!("{other:?}"))),
        }
    }
    Ok(())
}

fn apply_netem(o: &mut NetemOptions, c: &Change) {
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

/// The same change on the engine's parameters (same meaning as [`apply_netem`]).
fn apply_params(p: &mut DirectionParams, c: &Change) {
    if let Some(d) = c.delay_ns {
        p.delay_ns = d;
    }
    if let Some(j) = c.jitter_ns {
        p.jitter_ns = j;
    }
    if let Some(percent) = c.loss {
        p.loss = LossModel::Random {
            percent,
            correlation: 0.0,
        };
    }
    if let Some(v) = c.duplicate {
        p.duplicate = v;
    }
    if let Some(v) = c.corrupt {
        p.corrupt = v;
    }
    if let Some(v) = c.reorder {
        p.reorder = v;
        p.reorder_gap = if v > 0.0 { p.reorder_gap.max(1) } else { 0 };
    }
    if let Some(r) = c.rate_bps {
        p.rate = (r > 0).then(|| Rate::bps(r));
    }
    if let Some(l) = c.limit {
        p.limit = l;
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
    let cut = if plan.is_link(&plan.iface(ea).network) {
        vec![ea, eb]
    } else {
        vec![ea]
    };
    for end in cut {
        let (node, iface) = (&plan.nodes[end.0], plan.iface(end));
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
