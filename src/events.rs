//! The one event schema. Agents send [`Upstream`] messages (one JSON object
//! per line) to their lab's supervisor over `events.sock` in the lab's state
//! folder; the supervisor stamps each event with the time, a sequence number
//! and the sending node (known from the socket's peer credentials, so an
//! agent cannot speak for another node) and appends it as a [`Record`] to
//! `events.jsonl` in the lab's output folder. `docs/events.md` documents
//! every kind.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::lab::state;
use crate::metrics::NodeMetrics;

/// Longest line an agent may send (the supervisor drops the agent's
/// connection on a longer one).
pub const MAX_LINE: usize = 64 * 1024;

/// One stored event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Unix time in microseconds, stamped by the supervisor.
    pub ts_us: u64,
    /// 1, 2, 3, ... per lab, in file order.
    pub seq: u64,
    /// The node the event is about.
    pub node: String,
    #[serde(flatten)]
    pub event: Event,
}

/// Why an input was refused. The names are what reports and metrics use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reason {
    /// Does not parse as what was expected.
    Malformed,
    /// Authentication tag does not verify under the sender's key.
    Undecryptable,
    /// A counter already accepted, or below the replay window.
    Replayed,
    /// Older than the freshness limit, or from before the receiver started.
    Stale,
    /// Longer than the size limit.
    Oversize,
    /// Above the sender's rate limit.
    OverRate,
    /// A connection or stream cap was reached.
    OverLimit,
    /// The peer's certificate does not name a node allowed to send this.
    Unauthorized,
}

impl Reason {
    pub const ALL: [Reason; 8] = [
        Reason::Malformed,
        Reason::Undecryptable,
        Reason::Replayed,
        Reason::Stale,
        Reason::Oversize,
        Reason::OverRate,
        Reason::OverLimit,
        Reason::Unauthorized,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Malformed => "malformed",
            Reason::Undecryptable => "undecryptable",
            Reason::Replayed => "replayed",
            Reason::Stale => "stale",
            Reason::Oversize => "oversize",
            Reason::OverRate => "over-rate",
            Reason::OverLimit => "over-limit",
            Reason::Unauthorized => "unauthorized",
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What happened. Serialized with its kind as `"kind": "agent-ready"` etc.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Event {
    /// The supervisor started the node's agent (sent by the supervisor).
    AgentStarted { role: String, pid: u32 },
    /// The agent is serving its role (listening, and connected where it
    /// connects to a peer).
    AgentReady { role: String },
    /// The agent's process ended (sent by the supervisor); `status` is how.
    AgentExited {
        role: String,
        status: String,
        restarts: u32,
    },
    /// A QUIC connection with mutual TLS was established.
    PeerConnected { peer: String, addr: String },
    /// An established connection ended.
    PeerLost { peer: String, reason: String },
    /// A handshake was refused: no certificate, or not one from this lab's CA.
    PeerRefused { addr: String, reason: String },
    /// An application input was refused and counted.
    InputRejected {
        peer: String,
        reason: Reason,
        detail: String,
    },
    /// More rejections of one reason than the event rate limit lets through
    /// in one second; they were counted in the metrics all the same.
    RejectionsSuppressed { reason: Reason, count: u64 },
    /// A role-specific notice (e.g. a controller's sensors going quiet).
    Notice { message: String },
}

impl Event {
    /// Every kind tag, in declaration order.
    pub const KINDS: [&'static str; 9] = [
        "agent-started",
        "agent-ready",
        "agent-exited",
        "peer-connected",
        "peer-lost",
        "peer-refused",
        "input-rejected",
        "rejections-suppressed",
        "notice",
    ];

    /// The `kind` tag as it appears in `events.jsonl`.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::AgentStarted { .. } => "agent-started",
            Event::AgentReady { .. } => "agent-ready",
            Event::AgentExited { .. } => "agent-exited",
            Event::PeerConnected { .. } => "peer-connected",
            Event::PeerLost { .. } => "peer-lost",
            Event::PeerRefused { .. } => "peer-refused",
            Event::InputRejected { .. } => "input-rejected",
            Event::RejectionsSuppressed { .. } => "rejections-suppressed",
            Event::Notice { .. } => "notice",
        }
    }
}

/// What an agent sends to its supervisor, one JSON object per line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Upstream {
    Event(Event),
    /// The agent's cumulative counters and histograms since it started.
    Metrics(NodeMetrics),
}

/// The socket agents send to (0600, root: agents connect before they drop
/// their privileges).
pub fn socket_path(lab: &str) -> PathBuf {
    state::lab_dir(lab).join("events.sock")
}

/// `events.jsonl` of a lab whose output folder is `out`.
pub fn log_path(out: &std::path::Path) -> PathBuf {
    out.join("events.jsonl")
}

/// Now, as unix microseconds (every node shares the host's clock).
pub fn unix_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}
