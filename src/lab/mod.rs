//! The live lab: apply a plan (journal first), tear it down, clean up after
//! crashes, and read its state.

mod apply;
pub mod attacks;
mod enter;
pub mod journal;
pub mod links;
pub mod state;
mod status;
pub mod supervisor;
mod teardown;

pub use apply::{Progress, UpOptions, UpOutcome, up};
pub use enter::enter_node;
pub use status::{IfaceStatus, LinkStatus, NodeStatus, SegmentStatus, Status, status};
pub use supervisor::run as supervise;
pub use teardown::{Removed, clean, clean_all, down, pids_in};

use crate::netlink::NetlinkError;

#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("this needs root (namespaces and netlink); run it with sudo")]
    NotRoot,
    #[error(
        "another testbed command is working on lab {0}; wait for it, or if it died, run `testbed clean {0}`"
    )]
    Busy(String),
    #[error(
        "lab {0} is up with a different topology; run `testbed down {0}` first, then `up` again"
    )]
    Changed(String),
    #[error(
        "lab {lab} is up but {missing} of its namespaces were removed by something else; run `testbed down {lab}`, then `up` again"
    )]
    Degraded { lab: String, missing: usize },
    #[error(
        "backend = \"kernel\" but this kernel has no sch_netem (netem); use backend = \"auto\", or a kernel with netem (see scripts/vm-test)"
    )]
    NoNetem,
    #[error(
        "lab {lab} has no link between {a} and {b} (no point-to-point link, no shared segment)"
    )]
    NotLinked { lab: String, a: String, b: String },
    #[error(
        "in lab {lab}, {from} -> {to} has no profile, so the userspace engine does not carry it and it cannot be changed at run time; give its segment or link a profile (e.g. profile = \"lan\") and bring the lab up again"
    )]
    NotRelayed {
        lab: String,
        from: String,
        to: String,
    },
    #[error("the userspace engine of lab {lab} did not start: {cause}; engine log: {log}")]
    EngineNotReady {
        lab: String,
        cause: String,
        log: String,
    },
    #[error("preparing agents: {0}")]
    Agents(String),
    #[error("agents of lab {lab} are not ready: {node}: {cause}; its log: {log}")]
    AgentsNotReady {
        lab: String,
        node: String,
        cause: String,
        log: String,
    },
    #[error("the userspace engine of lab {lab} refused: {message}")]
    Engine { lab: String, message: String },
    #[error("no lab named {0} (see `testbed status`)")]
    NoSuchLab(String),
    #[error("lab {lab} has no node {node}; nodes: {known}")]
    NoSuchNode {
        lab: String,
        node: String,
        known: String,
    },
    #[error("lab {0} did not finish coming up; run `sudo testbed clean {0}`")]
    Incomplete(String),
    #[error(
        "namespace {0} already exists and is not part of this lab; remove it or rename the lab"
    )]
    NameTaken(String),
    #[error("namespace {name}: {source}")]
    Netns {
        name: String,
        #[source]
        source: std::io::Error,
    },
    #[error("sysctl {key} in {netns}: {source}")]
    Sysctl {
        netns: String,
        key: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("{}", teardown_message(.0))]
    Teardown(Vec<String>),
    #[error("{cause}; {}", rollback.as_ref().map_or("everything it had created was removed".to_string(), |r| format!("rollback failed too: {r}")))]
    RolledBack {
        cause: Box<LabError>,
        rollback: Option<Box<LabError>>,
    },
}

fn teardown_message(errors: &[String]) -> String {
    format!(
        "teardown finished with {} error(s): {}",
        errors.len(),
        errors.join("; ")
    )
}
