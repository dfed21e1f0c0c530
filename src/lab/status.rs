//! What a lab looks like now: its plan joined with what exists in the kernel.

use serde::Serialize;

use super::{LabError, state, supervisor};
use crate::netlink::netns;
use crate::plan::Plan;
use crate::topology::Backend;

#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub lab: String,
    /// `up`: every namespace exists; `degraded`: some are missing;
    /// `incomplete`: an `up` did not finish (run `clean`).
    pub state: &'static str,
    pub backend: Backend,
    /// How the profiles were applied, as `up` decided (e.g. `kernel (netem)`).
    pub impairments: String,
    pub infra_netns: String,
    /// The userspace engine, when the lab has one.
    pub engine: Option<EngineStatus>,
    /// Agents of the nodes with a role, as the supervisor last recorded them.
    pub agents: Vec<AgentStatus>,
    /// The lab's output folder (events, agent logs, results), if it has one.
    pub out: Option<String>,
    pub nodes: Vec<NodeStatus>,
    pub segments: Vec<SegmentStatus>,
    pub links: Vec<LinkStatus>,
}

/// The lab's userspace engine as its supervisor last recorded it.
#[derive(Debug, Clone, Serialize)]
pub struct EngineStatus {
    /// Links it carries.
    pub links: usize,
    /// Its supervisor's pid and whether that process is alive.
    pub supervisor_pid: Option<u32>,
    pub supervisor_alive: bool,
    /// The running engine's pid (`None` while it is being restarted).
    pub pid: Option<u32>,
    pub restarts: u32,
    pub last_exit: Option<String>,
}

/// One node's agent.
#[derive(Debug, Clone, Serialize)]
pub struct AgentStatus {
    pub node: String,
    pub role: String,
    /// The running agent's pid (`None` while it is being restarted).
    pub pid: Option<u32>,
    pub ready: bool,
    pub restarts: u32,
    pub last_exit: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct NodeStatus {
    pub name: String,
    pub kind: String,
    pub netns: String,
    pub present: bool,
    pub interfaces: Vec<IfaceStatus>,
    pub routes: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct IfaceStatus {
    pub name: String,
    pub network: String,
    pub address: String,
    pub address6: Option<String>,
    pub profile: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SegmentStatus {
    pub name: String,
    pub bridges: Vec<String>,
    pub members: usize,
    pub subnet: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct LinkStatus {
    pub name: String,
    pub a: String,
    pub b: String,
}

/// The status of one lab.
pub fn status(lab: &str) -> Result<Status, LabError> {
    let plan = state::read_plan(lab)?.ok_or_else(|| {
        if state::journal_path(lab).exists() {
            LabError::Incomplete(lab.to_string())
        } else {
            LabError::NoSuchLab(lab.to_string())
        }
    })?;
    Ok(from_plan(&plan))
}

fn from_plan(plan: &Plan) -> Status {
    let nodes: Vec<NodeStatus> = plan
        .nodes
        .iter()
        .map(|n| NodeStatus {
            name: n.name.clone(),
            kind: n.kind.as_str().to_string(),
            netns: n.netns.clone(),
            present: netns::exists(&n.netns),
            interfaces: n
                .ifaces
                .iter()
                .map(|i| IfaceStatus {
                    name: i.name.clone(),
                    network: i.network.clone(),
                    address: i.addr.to_string(),
                    address6: i.addr6.map(|a| a.to_string()),
                    profile: i.profile_out.clone(),
                })
                .collect(),
            routes: n
                .routes
                .iter()
                .map(|r| format!("{} via {}", r.dest, r.via))
                .collect(),
        })
        .collect();
    let mut segments: Vec<SegmentStatus> = Vec::new();
    for b in &plan.infra.bridges {
        match segments.iter_mut().find(|s| s.name == b.segment) {
            Some(s) => s.bridges.push(b.name.clone()),
            None => segments.push(SegmentStatus {
                name: b.segment.clone(),
                bridges: vec![b.name.clone()],
                members: 0,
                subnet: String::new(),
            }),
        }
    }
    for n in &plan.nodes {
        for i in &n.ifaces {
            if let Some(s) = segments.iter_mut().find(|s| s.name == i.network) {
                s.members += 1;
                if s.subnet.is_empty() {
                    s.subnet = i.addr.trunc().to_string();
                }
            }
        }
    }
    let links = plan
        .links
        .iter()
        .map(|l| LinkStatus {
            name: l.name.clone(),
            a: plan.nodes[l.a.0].name.clone(),
            b: plan.nodes[l.b.0].name.clone(),
        })
        .collect();
    let all_present = netns::exists(&plan.infra.netns) && nodes.iter().all(|n| n.present);
    Status {
        lab: plan.lab.clone(),
        state: if all_present { "up" } else { "degraded" },
        backend: plan.backend,
        impairments: state::Impairments::of(&plan.lab)
            .map_or("unknown", |i| i.describe())
            .to_string(),
        infra_netns: plan.infra.netns.clone(),
        engine: engine_status(plan),
        agents: agent_status(&plan.lab),
        out: supervisor::out_dir(&plan.lab).map(|p| p.display().to_string()),
        nodes,
        segments,
        links,
    }
}

fn agent_status(lab: &str) -> Vec<AgentStatus> {
    let Some(record) = supervisor::read(lab) else {
        return Vec::new();
    };
    record
        .children
        .into_iter()
        .filter_map(|c| {
            Some(AgentStatus {
                role: c.role?,
                node: c.name,
                pid: (c.pid != 0).then_some(c.pid),
                ready: c.ready,
                restarts: c.restarts,
                last_exit: c.last_exit,
            })
        })
        .collect()
}

fn engine_status(plan: &Plan) -> Option<EngineStatus> {
    if plan.relays.is_empty() {
        return None;
    }
    let alive = |pid: u32| std::path::Path::new(&format!("/proc/{pid}")).exists();
    let record = supervisor::read(&plan.lab);
    let child = record.as_ref().and_then(|r| r.engine());
    Some(EngineStatus {
        links: plan.relays.len(),
        supervisor_pid: record.as_ref().map(|r| r.pid),
        supervisor_alive: record.as_ref().is_some_and(|r| alive(r.pid)),
        pid: child.map(|c| c.pid).filter(|&p| p != 0 && alive(p)),
        restarts: child.map_or(0, |c| c.restarts),
        last_exit: child.and_then(|c| c.last_exit.clone()),
    })
}
