//! Attacks on a running lab: start, stop and list them through the lab's
//! userspace engine (its control socket), for `testbed attack` and scenario
//! runs.

use std::fs::OpenOptions;
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use super::{LabError, state};
use crate::attack::{AttackSpec, Directory};
use crate::engine::control::{self, AttackReport, Request, Response};

/// An attack the engine started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Started {
    pub id: u64,
    /// The directions it runs on (`RELAY a->b`).
    pub lanes: Vec<String>,
}

fn engine_error(lab: &str, message: impl Into<String>) -> LabError {
    LabError::Engine {
        lab: lab.to_string(),
        message: message.into(),
    }
}

fn ask(lab: &str, request: &Request, capture: Option<&Path>) -> Result<Response, LabError> {
    if !nix::unistd::Uid::effective().is_root() {
        return Err(LabError::NotRoot);
    }
    if state::read_plan(lab)?.is_none() {
        return Err(LabError::NoSuchLab(lab.to_string()));
    }
    let file = capture
        .map(|p| {
            OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(p)
                .map_err(|e| engine_error(lab, format!("cannot write {}: {e}", p.display())))
        })
        .transpose()?;
    let response = control::request_with_fd(lab, request, file.as_ref().map(|f| f.as_fd()))
        .map_err(|e| {
            engine_error(
                lab,
                format!("no answer on its control socket ({e}); attacks need the userspace engine, which runs when the lab has an impaired or `in_path` network"),
            )
        })?;
    match response {
        Response::Error(message) => Err(engine_error(lab, message)),
        r => Ok(r),
    }
}

/// Checks `spec` against the lab (kind, parameters, filter, nodes, target)
/// and starts it; with `capture`, the frames it received and sent go to
/// that pcapng file (created 0600).
pub fn start(lab: &str, spec: &AttackSpec, capture: Option<&Path>) -> Result<Started, LabError> {
    let plan = state::read_plan(lab)?.ok_or_else(|| LabError::NoSuchLab(lab.to_string()))?;
    let directory = Directory::from_plan(&plan);
    let checked = spec
        .arm(&directory)
        .map_err(|e| engine_error(lab, e.to_string()))?;
    let request = Request::AttackStart {
        spec: Box::new(spec.clone()),
        directory: directory.subset(checked.nodes.iter().map(String::as_str)),
        capture: capture.is_some(),
    };
    match ask(lab, &request, capture)? {
        Response::Started { id, lanes } => Ok(Started { id, lanes }),
        other => Err(engine_error(lab, format!("unexpected answer {other:?}"))),
    }
}

/// Stops attack `id` (within the engine's poll interval, 20 ms).
pub fn stop(lab: &str, id: u64) -> Result<(), LabError> {
    ask(lab, &Request::AttackStop { id }, None).map(drop)
}

/// Every attack the lab's engine started, with counters.
pub fn list(lab: &str) -> Result<Vec<AttackReport>, LabError> {
    match ask(lab, &Request::AttackList, None)? {
        Response::Attacks(list) => Ok(list),
        other => Err(engine_error(lab, format!("unexpected answer {other:?}"))),
    }
}
