//! The agent process: privileged preparation, then a single-threaded tokio
//! runtime running the role next to the event and metrics reporters.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::identity::{self, Identity};
use super::roles::{Prepared, Role};
use super::transport::{self, AGENT_PORT, KeyLogFile, Limits};
use super::{AgentConfig, AgentError, config_path};
use crate::events::{self, Event, Reason, Upstream};
use crate::lab::state;
use crate::metrics::NodeMetrics;
use crate::netlink::netns;

/// UDP receive buffer of an agent that serves (bytes).
const SERVER_RECEIVE_BUFFER: usize = 4 << 20;
/// Agents' scheduling priority (nice); the engine runs at -10.
const AGENT_NICE: i32 = 5;
/// Events queued for the supervisor beyond this are dropped (and counted in
/// the log): an agent never blocks on its reporting.
const UPSTREAM_QUEUE: usize = 1024;
/// Rejection events per reason and second; the rest are summarised.
const REJECT_EVENTS_PER_SECOND: u32 = 10;

/// `testbed-agent LAB NODE`: everything privileged first, then the role.
pub fn run(lab: &str, node: &str) -> Result<(), AgentError> {
    // Below the engine and the supervisor: while a thousand agents start at
    // once, the supervisor keeps starting the rest (each new process runs
    // at the supervisor's priority until it gets here).
    if let Err(e) = crate::privilege::set_nice(AGENT_NICE) {
        warn!("cannot lower the agent's priority: {e}");
    }
    let path = config_path(lab, node);
    let bytes = std::fs::read(&path).map_err(|source| AgentError::Config {
        path: path.clone(),
        source,
    })?;
    let config: AgentConfig =
        serde_json::from_slice(&bytes).map_err(|source| AgentError::ConfigJson {
            path: path.clone(),
            source,
        })?;
    let role = Role::parse(&config.role, &config.options)?;
    let netns_err = |source| AgentError::Netns {
        netns: config.netns.clone(),
        source,
    };
    // Still one thread here: the whole process moves into the namespace.
    let ns = netns::open(&config.netns).map_err(netns_err)?;
    nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
        .map_err(|e| netns_err(e.into()))?;
    let identity = Identity::load(lab, node)?;
    let keylog = match &config.keylog {
        Some(p) => Some(KeyLogFile::shared(append(p)?)),
        None => None,
    };
    let hosts = read_hosts(lab)?;
    let prepared = role.prepare(&config)?;
    let socket = transport::bind(
        SocketAddr::from((Ipv4Addr::UNSPECIFIED, AGENT_PORT)),
        prepared.serves().then_some(SERVER_RECEIVE_BUFFER),
    )?;
    let events = std::os::unix::net::UnixStream::connect(events::socket_path(lab))
        .map_err(AgentError::Events)?;
    let parent = nix::unistd::getppid();
    crate::privilege::drop_to_nobody().map_err(AgentError::Privileges)?;
    // Changing credentials cleared any parent-death signal: set it now, and
    // leave if the supervisor is already gone.
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
        .map_err(AgentError::Privileges)?;
    if nix::unistd::getppid() != parent {
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| AgentError::Io {
            what: "starting the runtime".into(),
            source,
        })?;
    runtime.block_on(main(
        config, identity, keylog, hosts, prepared, socket, events,
    ))
}

fn append(path: &std::path::Path) -> Result<std::fs::File, AgentError> {
    std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .map_err(|source| AgentError::Io {
            what: format!("opening {}", path.display()),
            source,
        })
}

/// Node names to their first address, from the lab's hosts file.
fn read_hosts(lab: &str) -> Result<HashMap<String, IpAddr>, AgentError> {
    let path = state::hosts_path(lab);
    let text = std::fs::read_to_string(&path).map_err(|source| AgentError::Io {
        what: format!("reading {}", path.display()),
        source,
    })?;
    let mut hosts = HashMap::new();
    for line in text.lines() {
        let mut f = line.split_whitespace();
        if let (Some(addr), Some(name)) = (f.next(), f.next())
            && let Ok(addr) = addr.parse::<IpAddr>()
        {
            hosts.entry(name.to_string()).or_insert(addr);
        }
    }
    Ok(hosts)
}

async fn main(
    config: AgentConfig,
    identity: Identity,
    keylog: Option<Arc<dyn rustls::KeyLog>>,
    hosts: HashMap<String, IpAddr>,
    prepared: Prepared,
    socket: std::net::UdpSocket,
    events: std::os::unix::net::UnixStream,
) -> Result<(), AgentError> {
    let limits = prepared.limits();
    let server = if prepared.serves() {
        Some(transport::server_config(&identity, limits, keylog.clone())?)
    } else {
        None
    };
    let client = transport::client_config(&identity, limits, keylog)?;
    let endpoint = transport::endpoint(socket, server, client)?;
    let (tx, rx) = mpsc::channel(UPSTREAM_QUEUE);
    let ctx = Context {
        inner: Arc::new(Inner {
            config,
            identity,
            hosts,
            endpoint,
            upstream: tx,
            metrics: Mutex::new(NodeMetrics::default()),
            connections: Mutex::new(Vec::new()),
            closed_lost: AtomicU64::new(0),
            reject_budget: Mutex::new(HashMap::new()),
            limits,
        }),
    };
    events.set_nonblocking(true).map_err(AgentError::Events)?;
    let events = tokio::net::UnixStream::from_std(events).map_err(AgentError::Events)?;
    let (mut reader, writer) = events.into_split();
    tokio::spawn(forward(rx, writer));
    tokio::spawn(report(ctx.clone()));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|source| AgentError::Io {
            what: "SIGTERM handler".into(),
            source,
        })?;
    info!(node = ctx.node(), role = ctx.role(), "agent running");
    let mut byte = [0u8; 1];
    let result = tokio::select! {
        r = prepared.run(ctx.clone()) => r,
        _ = term.recv() => Ok(()),
        // The supervisor closed our socket: it is gone, so are we.
        _ = reader.read(&mut byte) => Ok(()),
    };
    ctx.inner.endpoint.close(0u32.into(), b"agent stopping");
    let _ = tokio::time::timeout(Duration::from_millis(300), ctx.inner.endpoint.wait_idle()).await;
    result
}

/// Write queued messages to the supervisor, one JSON line each.
async fn forward(mut rx: mpsc::Receiver<Upstream>, mut writer: tokio::net::unix::OwnedWriteHalf) {
    while let Some(msg) = rx.recv().await {
        let Ok(mut line) = serde_json::to_vec(&msg) else {
            continue;
        };
        line.push(b'\n');
        if writer.write_all(&line).await.is_err() {
            std::process::exit(0);
        }
    }
}

/// Once a second: sample QUIC RTT and losses and the resident memory, send
/// the metrics, and summarise rejections that exceeded the event budget.
async fn report(ctx: Context) {
    let page_size = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .and_then(|p| u64::try_from(p).ok())
        .unwrap_or(4096);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let mut lost_live = 0;
        let mut rtts = Vec::new();
        if let Ok(mut conns) = ctx.inner.connections.lock() {
            conns.retain(|c| {
                let lost = c.stats().path.lost_packets;
                if c.close_reason().is_some() {
                    ctx.inner.closed_lost.fetch_add(lost, Ordering::Relaxed);
                    false
                } else {
                    lost_live += lost;
                    rtts.push(c.rtt().as_secs_f64());
                    true
                }
            });
        }
        let suppressed: Vec<(Reason, u64)> = match ctx.inner.reject_budget.lock() {
            Ok(mut b) => b
                .drain()
                .filter(|(_, n)| *n > u64::from(REJECT_EVENTS_PER_SECOND))
                .map(|(r, n)| (r, n - u64::from(REJECT_EVENTS_PER_SECOND)))
                .collect(),
            Err(_) => Vec::new(),
        };
        for (reason, count) in suppressed {
            ctx.event(Event::RejectionsSuppressed { reason, count });
        }
        let snapshot = {
            let mut m = ctx.metrics();
            for r in rtts {
                m.quic_rtt.observe(r);
            }
            m.quic_lost_packets = ctx.inner.closed_lost.load(Ordering::Relaxed) + lost_live;
            m.resident_bytes = resident_pages().map_or(0, |p| p * page_size);
            m.clone()
        };
        ctx.send(Upstream::Metrics(snapshot));
    }
}

/// Resident pages of this process: the second field of `/proc/self/statm`.
fn resident_pages() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    statm.split_whitespace().nth(1)?.parse().ok()
}

struct Inner {
    config: AgentConfig,
    identity: Identity,
    hosts: HashMap<String, IpAddr>,
    endpoint: quinn::Endpoint,
    upstream: mpsc::Sender<Upstream>,
    metrics: Mutex<NodeMetrics>,
    connections: Mutex<Vec<quinn::Connection>>,
    closed_lost: AtomicU64,
    reject_budget: Mutex<HashMap<Reason, u64>>,
    limits: Limits,
}

/// What a role gets: its node, credentials, QUIC endpoint, and the way to
/// report. Cheap to clone.
#[derive(Clone)]
pub struct Context {
    inner: Arc<Inner>,
}

impl Context {
    pub fn node(&self) -> &str {
        &self.inner.config.node
    }

    pub fn role(&self) -> &str {
        &self.inner.config.role
    }

    pub fn config(&self) -> &AgentConfig {
        &self.inner.config
    }

    pub fn identity(&self) -> &Identity {
        &self.inner.identity
    }

    pub fn endpoint(&self) -> &quinn::Endpoint {
        &self.inner.endpoint
    }

    pub fn limits(&self) -> Limits {
        self.inner.limits
    }

    /// The address of a node of this lab, from the lab's hosts file.
    pub fn addr_of(&self, node: &str) -> Option<IpAddr> {
        self.inner.hosts.get(node).copied()
    }

    pub fn metrics(&self) -> MutexGuard<'_, NodeMetrics> {
        self.inner
            .metrics
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn send(&self, msg: Upstream) {
        if self.inner.upstream.try_send(msg).is_err() {
            warn!("event queue full; an event was dropped");
        }
    }

    pub fn event(&self, event: Event) {
        self.send(Upstream::Event(event));
    }

    /// Tell the supervisor the role is serving.
    pub fn ready(&self) {
        self.event(Event::AgentReady {
            role: self.role().to_string(),
        });
    }

    /// Count a refused input and report it (at most
    /// [`REJECT_EVENTS_PER_SECOND`] events per reason and second).
    pub fn reject(&self, peer: &str, reason: Reason, detail: impl Into<String>) {
        self.metrics().reject(reason);
        let n = {
            let mut b = self
                .inner
                .reject_budget
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let n = b.entry(reason).or_default();
            *n += 1;
            *n
        };
        if n <= u64::from(REJECT_EVENTS_PER_SECOND) {
            self.event(Event::InputRejected {
                peer: peer.to_string(),
                reason,
                detail: detail.into(),
            });
        }
    }

    /// Include a connection in the RTT and loss figures.
    pub fn track(&self, conn: &quinn::Connection) {
        if let Ok(mut c) = self.inner.connections.lock() {
            c.push(conn.clone());
        }
    }
}

/// Why connecting to a peer failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("no node {0} in this lab's hosts file")]
    Unknown(String),
    #[error("{0}")]
    Connect(#[from] quinn::ConnectError),
    #[error("{0}")]
    Connection(#[from] quinn::ConnectionError),
}

/// One attempt to reach `peer`'s agent (mutual TLS; the peer must present a
/// certificate naming it). Reports the connection and tracks it.
pub async fn connect(ctx: &Context, peer: &str) -> Result<quinn::Connection, ConnectError> {
    let addr = ctx
        .addr_of(peer)
        .ok_or_else(|| ConnectError::Unknown(peer.to_string()))?;
    let conn = ctx
        .endpoint()
        .connect(SocketAddr::new(addr, AGENT_PORT), peer)?
        .await?;
    ctx.track(&conn);
    ctx.event(Event::PeerConnected {
        peer: peer.to_string(),
        addr: conn.remote_address().to_string(),
    });
    Ok(conn)
}

/// Accept connections for as long as the endpoint lives, at most
/// `max_connections` at once (CWE-770; more are refused); each handshake runs
/// in its own task. A refused handshake (no certificate, or one from another
/// CA) becomes a `peer-refused` event; an accepted one is handed to `handler`
/// with the node name its certificate carries.
pub async fn serve<F, Fut>(ctx: Context, max_connections: usize, handler: F)
where
    F: Fn(Context, quinn::Connection, String) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    while let Some(incoming) = ctx.endpoint().accept().await {
        if ctx.endpoint().open_connections() >= max_connections {
            ctx.reject(
                &incoming.remote_address().to_string(),
                Reason::OverLimit,
                format!("more than {max_connections} connections"),
            );
            incoming.refuse();
            continue;
        }
        let ctx = ctx.clone();
        let handler = handler.clone();
        tokio::spawn(async move {
            let addr = incoming.remote_address().to_string();
            match incoming.await {
                Ok(conn) => {
                    let peer = peer_cert(&conn)
                        .and_then(|c| identity::node_name(&c))
                        .unwrap_or_else(|| "?".to_string());
                    ctx.track(&conn);
                    ctx.event(Event::PeerConnected {
                        peer: peer.clone(),
                        addr,
                    });
                    let watch = conn.clone();
                    handler(ctx.clone(), conn, peer.clone()).await;
                    ctx.event(Event::PeerLost {
                        peer,
                        reason: watch
                            .close_reason()
                            .map_or_else(|| "closed".to_string(), |r| r.to_string()),
                    });
                }
                Err(e) => ctx.event(Event::PeerRefused {
                    addr,
                    reason: e.to_string(),
                }),
            }
        });
    }
}

/// The peer's certificate (what the controller binds keys to).
pub fn peer_cert(conn: &quinn::Connection) -> Option<rustls::pki_types::CertificateDer<'static>> {
    conn.peer_identity()
        .and_then(|id| {
            id.downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
                .ok()
        })
        .and_then(|certs| certs.first().cloned())
}
