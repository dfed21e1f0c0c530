//! The userspace engine: one process per lab, in the lab's infrastructure
//! namespace, that carries every relayed link (see
//! [`Plan::route_through_engine`]) through an impairment pipeline per
//! direction.
//!
//! Its configuration is `engine.json` in the lab's state folder, written by
//! `up` and rewritten by `link set`, so a restarted engine comes back with the
//! parameters in force. It opens its packet sockets and its control socket as
//! root, then drops to the unprivileged `nobody` user with no capabilities:
//! open sockets keep working, nothing new can be opened. The lab's supervisor
//! ([`crate::lab::supervise`]) restarts it if it dies.

pub mod control;

use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use serde::{Deserialize, Serialize};
use tracing::info;

use crate::emulation::pipeline::{Direction, DirectionParams};
use crate::emulation::relay::{PacketSocket, Relay, RelayError};
use crate::lab::state;
use crate::plan::{Plan, RelaySide};

/// The engine's nice value: ahead of ordinary processes, well short of the
/// real-time classes (a busy-polling real-time thread could starve the host).
pub const ENGINE_NICE: libc::c_int = -10;

/// Largest `engine.json` the engine reads.
pub const MAX_CONFIG_BYTES: u64 = 16 << 20;

/// `engine.json`: every link the engine carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Config {
    /// How long the I/O loop keeps polling after activity before it sleeps.
    pub busy_poll_ns: u64,
    pub links: Vec<LinkConfig>,
}

/// One relayed link: ports A and B (interfaces of the infrastructure
/// namespace) and the parameters of each direction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinkConfig {
    pub name: String,
    pub a: String,
    pub b: String,
    pub ab: DirectionParams,
    pub ba: DirectionParams,
}

impl LinkConfig {
    pub fn params_mut(&mut self, direction: Direction) -> &mut DirectionParams {
        match direction {
            Direction::AToB => &mut self.ab,
            Direction::BToA => &mut self.ba,
        }
    }
}

/// Where the engine's configuration lives.
pub fn config_path(lab: &str) -> PathBuf {
    state::lab_dir(lab).join("engine.json")
}

/// The engine's log (stdout and stderr of every run).
pub fn log_path(lab: &str) -> PathBuf {
    state::lab_dir(lab).join("engine.log")
}

impl Config {
    /// The configuration `up` writes: each relay with its profiles, seeded as
    /// the kernel backend would seed the same egress. The B-to-A direction of
    /// a segment member (frames from the segment to the node) is not impaired:
    /// the senders' own relays impair them, as netem on their egress would.
    pub fn for_plan(plan: &Plan) -> Config {
        let links = plan
            .relays
            .iter()
            .map(|r| {
                let (a, b) = plan.relay_ports(r);
                let ba = match r.b {
                    RelaySide::Node(n, i) if r.impaired => plan.egress_params((n, i)),
                    _ => None,
                };
                let ab = if r.impaired {
                    plan.egress_params(r.a)
                } else {
                    None
                };
                LinkConfig {
                    name: r.name.clone(),
                    a: a.to_string(),
                    b: b.to_string(),
                    ab: ab.unwrap_or_default(),
                    ba: ba.unwrap_or_default(),
                }
            })
            .collect();
        Config {
            busy_poll_ns: plan.engine_busy_poll_ns,
            links,
        }
    }

    pub fn to_json(&self) -> io::Result<Vec<u8>> {
        serde_json::to_vec_pretty(self).map_err(io::Error::other)
    }

    /// Reads a lab's `engine.json`.
    pub fn read(lab: &str) -> Result<Config, EngineError> {
        use std::io::Read;
        let path = config_path(lab);
        let mut bytes = Vec::new();
        std::fs::File::open(&path)
            .and_then(|f| f.take(MAX_CONFIG_BYTES).read_to_end(&mut bytes))
            .map_err(|source| EngineError::Config {
                path: path.clone(),
                message: source.to_string(),
            })?;
        serde_json::from_slice(&bytes).map_err(|e| EngineError::Config {
            path,
            message: e.to_string(),
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("{}: {message}", path.display())]
    Config { path: PathBuf, message: String },
    #[error("link {link}: cannot open a packet socket on {iface}: {source}")]
    Socket {
        link: String,
        iface: String,
        #[source]
        source: io::Error,
    },
    #[error("link {link}: {source}")]
    Relay {
        link: String,
        #[source]
        source: RelayError,
    },
    #[error("dropping privileges: {0}")]
    Privileges(#[source] nix::Error),
    #[error("control socket: {0}")]
    Control(#[source] io::Error),
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// The engine process: must be started inside the lab's infrastructure
/// namespace, as root. Returns when SIGTERM or SIGINT arrives.
pub fn run(lab: &str) -> Result<(), EngineError> {
    let config = Config::read(lab)?;
    let busy_poll = std::time::Duration::from_nanos(config.busy_poll_ns);
    let mut relay = Relay::new();
    let mut handles = Vec::with_capacity(config.links.len());
    for link in config.links {
        let open = |iface: &str| {
            PacketSocket::open_here(iface).map_err(|source| EngineError::Socket {
                link: link.name.clone(),
                iface: iface.to_string(),
                source,
            })
        };
        let (a, b) = (open(&link.a)?, open(&link.b)?);
        let handle =
            relay
                .add_link(a, b, link.ab, link.ba)
                .map_err(|source| EngineError::Relay {
                    link: link.name.clone(),
                    source,
                })?;
        handles.push((link.name, handle));
    }
    let listener = control::bind(lab).map_err(EngineError::Control)?;
    // The data plane goes before the lab's own processes when the CPUs are
    // busy: late frames are wrong frames. Best effort (needs root, had here).
    if let Err(e) = crate::privilege::set_nice(ENGINE_NICE) {
        tracing::warn!("cannot raise the engine's priority: {e}");
    }
    crate::privilege::drop_to_nobody().map_err(EngineError::Privileges)?;
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, Arc::clone(&stop))?;
    }
    info!(lab, links = handles.len(), "engine running");
    let control = control::Control::new(handles, relay.clock());
    std::thread::spawn(move || control.serve(&listener));
    relay.run(&stop, busy_poll)?;
    info!(lab, "engine stopped");
    Ok(())
}
