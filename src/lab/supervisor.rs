//! The lab's supervisor: a small root process in the lab's infrastructure
//! namespace that runs the engine and restarts it when it dies (backoff from
//! [`MIN_BACKOFF`] doubling to [`MAX_BACKOFF`], back to the minimum after a
//! run of [`STABLE_RUN`]). It records what it runs in `supervisor.json`.
//!
//! Living in the lab's namespace is what ends it: `down` and `clean` kill
//! every process in the lab's namespaces, so the supervisor and its children
//! go with the lab even when the `up` that started them was killed. On
//! SIGTERM it stops restarting, passes SIGTERM on, and exits.

use std::fs::{File, OpenOptions};
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::{LabError, state};
use crate::engine;
use crate::netlink::netns;
use crate::plan::Plan;

/// First wait before a restart.
pub const MIN_BACKOFF: Duration = Duration::from_millis(200);
/// Longest wait before a restart.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// A child that ran this long resets the backoff.
pub const STABLE_RUN: Duration = Duration::from_secs(10);
/// How long a child gets to exit after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// `supervisor.json`: what the supervisor runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Supervised {
    pub pid: u32,
    pub children: Vec<ChildState>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChildState {
    pub name: String,
    /// Pid of the running instance (0 while waiting to restart).
    pub pid: u32,
    /// Times it was restarted after dying.
    pub restarts: u32,
    /// Unix time (seconds) the running instance started.
    pub started: u64,
    /// How the last instance ended, if one did.
    pub last_exit: Option<String>,
}

pub fn state_path(lab: &str) -> PathBuf {
    state::lab_dir(lab).join("supervisor.json")
}

/// What the supervisor last recorded, if it runs.
pub fn read(lab: &str) -> Option<Supervised> {
    let bytes = std::fs::read(state_path(lab)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Start the supervisor of `plan`'s lab inside its infrastructure namespace,
/// detached (own session, no terminal), logging to `supervisor.log`.
pub fn start(plan: &Plan) -> Result<(), LabError> {
    let lab = &plan.lab;
    let infra = netns::open(&plan.infra.netns).map_err(|source| LabError::Netns {
        name: plan.infra.netns.clone(),
        source,
    })?;
    let log = append(&state::lab_dir(lab).join("supervisor.log"))?;
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.args(["-v", "supervise", lab])
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // SAFETY: the closure runs in the child between fork and exec and only
    // makes two system calls (setns, setsid); it allocates nothing and takes
    // no lock.
    unsafe {
        cmd.pre_exec(move || {
            nix::sched::setns(infra.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)?;
            nix::unistd::setsid()?;
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    info!(lab, pid = child.id(), "supervisor started");
    Ok(())
}

fn append(path: &std::path::Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
}

/// The supervisor process: runs the engine until SIGTERM or SIGINT.
pub fn run(lab: &str) -> Result<(), LabError> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, Arc::clone(&stop))?;
    }
    let exe = std::env::current_exe()?;
    let spawn = || -> std::io::Result<Child> {
        let log = append(&engine::log_path(lab))?;
        Command::new(&exe)
            .args(["-v", "engine", lab])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
    };
    let mut record = Supervised {
        pid: std::process::id(),
        children: vec![ChildState {
            name: "engine".to_string(),
            pid: 0,
            restarts: 0,
            started: 0,
            last_exit: None,
        }],
    };
    let mut backoff = MIN_BACKOFF;
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        let mut child = match spawn() {
            Ok(c) => c,
            Err(e) => {
                warn!(lab, "cannot start the engine: {e}");
                record.children[0].last_exit = Some(format!("could not start: {e}"));
                save(lab, &record);
                sleep_unless(&stop, backoff);
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        let entry = &mut record.children[0];
        entry.pid = child.id();
        entry.started = unix_now();
        save(lab, &record);
        // How the engine ended; `None` when asked to stop.
        let exit = loop {
            if stop.load(Ordering::Relaxed) {
                terminate(&mut child);
                break None;
            }
            match child.try_wait() {
                Ok(Some(status)) => break Some(status.to_string()),
                Ok(None) => std::thread::sleep(Duration::from_millis(50)),
                Err(e) => {
                    // Cannot watch it: end it and start a fresh one rather
                    // than leave an engine nobody supervises.
                    warn!(lab, "waiting for the engine: {e}");
                    terminate(&mut child);
                    break Some(format!("unwatchable ({e}), stopped"));
                }
            }
        };
        let Some(exit) = exit else { break };
        warn!(lab, exit, "engine exited; restarting");
        let entry = &mut record.children[0];
        entry.pid = 0;
        entry.restarts += 1;
        entry.last_exit = Some(exit);
        save(lab, &record);
        backoff = if started.elapsed() >= STABLE_RUN {
            MIN_BACKOFF
        } else {
            backoff
        };
        sleep_unless(&stop, backoff);
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
    info!(lab, "supervisor stopping");
    Ok(())
}

/// SIGTERM, then SIGKILL after [`STOP_GRACE`].
fn terminate(child: &mut Child) {
    use nix::sys::signal::{Signal, kill};
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = kill(pid, Signal::SIGTERM);
    let deadline = Instant::now() + STOP_GRACE;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn sleep_unless(stop: &AtomicBool, total: Duration) {
    let deadline = Instant::now() + total;
    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn save(lab: &str, record: &Supervised) {
    let result = serde_json::to_vec_pretty(record)
        .map_err(std::io::Error::other)
        .and_then(|bytes| state::write_atomic(&state_path(lab), &bytes));
    if let Err(e) = result {
        warn!(lab, "cannot record supervisor state: {e}");
    }
}

/// Wait until the lab's engine answers on its control socket. On timeout,
/// the error carries the end of the engine's log.
pub fn wait_engine(lab: &str, timeout: Duration) -> Result<(), LabError> {
    let deadline = Instant::now() + timeout;
    loop {
        match engine::control::show(lab) {
            Ok(_) => return Ok(()),
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => {
                let log = std::fs::read_to_string(engine::log_path(lab)).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(5).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                return Err(LabError::EngineNotReady {
                    lab: lab.to_string(),
                    cause: e.to_string(),
                    log: tail.join(" | "),
                });
            }
        }
    }
}
