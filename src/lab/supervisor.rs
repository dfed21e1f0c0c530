//! The lab's supervisor: a small root process in the lab's infrastructure
//! namespace that runs the lab's userspace engine and the agents of every
//! node with a role, restarts each when it dies (backoff from [`MIN_BACKOFF`]
//! doubling to [`MAX_BACKOFF`], back to the minimum after a run of
//! [`STABLE_RUN`]), and records what it runs in `supervisor.json`.
//!
//! It is also where agents report: it listens on `events.sock` (0600; agents
//! connect before they drop root), names each connection's node from the
//! peer's pid, appends events to `events.jsonl` in the lab's output folder and
//! keeps every node's metrics for the Prometheus endpoint (a listener `up`
//! made in the host's namespace and passed down as a file descriptor).
//!
//! Living in the lab's namespace is what ends it: `down` and `clean` kill
//! every process in the lab's namespaces, so the supervisor and its children
//! go with the lab even when the `up` that started them was killed. On
//! SIGTERM it stops restarting, passes SIGTERM on, and exits. Agents also
//! die with it (parent-death signal, and the end of their event socket).

use std::cell::RefCell;
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::{AsFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::sync::watch;
use tracing::{info, warn};

use super::{LabError, state};
use crate::engine;
use crate::events::{self, Event, Record, Upstream};
use crate::metrics::{Board, NodeEntry};
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
/// The supervisor's scheduling priority (nice): a new agent runs at it until
/// it lowers its own, so starting a thousand is not slowed by the ones
/// already started.
const SUPERVISOR_NICE: i32 = -5;
/// How long the agents others connect to get to become ready before the
/// rest start anyway.
const SERVING_WAIT: Duration = Duration::from_secs(5);
/// The agents' binary, installed next to `testbed`.
pub const AGENT_BINARY: &str = "testbed-agent";
/// The file descriptor the metrics listener is passed on.
const METRICS_FD: RawFd = 3;

/// What the supervisor runs (`supervise.json`, written by `up`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Config {
    /// Run the userspace engine.
    pub engine: bool,
    /// Nodes whose agents to run, with their roles; the first `serving` are
    /// the ones other agents connect to.
    pub agents: Vec<AgentChild>,
    /// The first this many agents are started, and waited for (up to
    /// [`SERVING_WAIT`]), before the others.
    #[serde(default)]
    pub serving: usize,
    /// The lab's output folder: `events.jsonl`, `logs/<node>.log`, results.
    pub out: PathBuf,
    /// Serve metrics on the listener passed as fd 3.
    pub metrics: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentChild {
    pub node: String,
    pub role: String,
}

/// `supervisor.json`: what the supervisor runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Supervised {
    pub pid: u32,
    pub children: Vec<ChildState>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChildState {
    /// `engine`, or the node whose agent this is.
    pub name: String,
    /// The agent's role; `None` for the engine.
    #[serde(default)]
    pub role: Option<String>,
    /// Pid of the running instance (0 while waiting to restart).
    pub pid: u32,
    /// Times it was restarted after dying.
    pub restarts: u32,
    /// Unix time (seconds) the running instance started.
    pub started: u64,
    /// How the last instance ended, if one did.
    pub last_exit: Option<String>,
    /// The running agent said it is ready (always false for the engine).
    #[serde(default)]
    pub ready: bool,
}

impl Supervised {
    pub fn engine(&self) -> Option<&ChildState> {
        self.children.iter().find(|c| c.role.is_none())
    }
}

pub fn config_path(lab: &str) -> PathBuf {
    state::lab_dir(lab).join("supervise.json")
}

impl Config {
    /// The lab's `supervise.json`, if it has a supervisor.
    pub fn read(lab: &str) -> Option<Config> {
        let bytes = std::fs::read(config_path(lab)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }
}

/// The lab's output folder, if it has a supervisor.
pub fn out_dir(lab: &str) -> Option<PathBuf> {
    Config::read(lab).map(|c| c.out)
}

/// Where a node's agent writes its standard output and error.
pub fn agent_log(out: &Path, node: &str) -> PathBuf {
    out.join("logs").join(format!("{node}.log"))
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
/// detached (own session, no terminal), logging to `supervisor.log`. `config`
/// is written first; `metrics` (a listener made in the caller's namespace)
/// is handed over as fd 3.
pub fn start(
    plan: &Plan,
    config: &Config,
    metrics: Option<std::net::TcpListener>,
) -> Result<(), LabError> {
    let lab = &plan.lab;
    let json = serde_json::to_vec_pretty(config).map_err(std::io::Error::other)?;
    state::write_atomic(&config_path(lab), &json)?;
    let infra = netns::open(&plan.infra.netns).map_err(|source| LabError::Netns {
        name: plan.infra.netns.clone(),
        source,
    })?;
    let log = append(&state::lab_dir(lab).join("supervisor.log"), 0o600)?;
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.args(["-v", "supervise", lab])
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    let metrics = metrics.map(OwnedFd::from);
    let metrics_fd = metrics.as_ref().map(std::os::fd::AsRawFd::as_raw_fd);
    // SAFETY: the closure runs in the child between fork and exec and only
    // makes system calls (dup2, setns, setsid); it allocates nothing and takes
    // no lock. dup2 onto fd 3 clears close-on-exec on the copy.
    unsafe {
        cmd.pre_exec(move || {
            if let Some(fd) = metrics_fd
                && libc::dup2(fd, METRICS_FD) < 0
            {
                return Err(std::io::Error::last_os_error());
            }
            nix::sched::setns(infra.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)?;
            nix::unistd::setsid()?;
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    drop(metrics);
    info!(lab, pid = child.id(), "supervisor started");
    Ok(())
}

fn append(path: &Path, mode: u32) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(mode)
        .open(path)
}

/// What a child task needs to know, shared on the supervisor's one thread.
struct Shared {
    lab: String,
    record: Supervised,
    /// Running pid -> index into `record.children`.
    pids: HashMap<u32, usize>,
    dirty: bool,
    events: EventLog,
    board: Arc<Mutex<Board>>,
}

impl Shared {
    fn event(&mut self, node: &str, event: Event) {
        self.events.push(node, event);
    }

    fn board(&self) -> std::sync::MutexGuard<'_, Board> {
        self.board
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// `events.jsonl`, appended one flushed line per event.
struct EventLog {
    file: Option<File>,
    seq: u64,
}

impl EventLog {
    fn open(path: &Path) -> EventLog {
        let seq = std::fs::read_to_string(path).map_or(0, |t| t.lines().count() as u64);
        let file = append(path, 0o644)
            .map_err(|e| warn!("cannot write {}: {e}", path.display()))
            .ok();
        EventLog { file, seq }
    }

    fn push(&mut self, node: &str, event: Event) {
        self.seq += 1;
        let record = Record {
            ts_us: events::unix_us(),
            seq: self.seq,
            node: node.to_string(),
            event,
        };
        if let (Some(f), Ok(mut line)) = (&mut self.file, serde_json::to_vec(&record)) {
            line.push(b'\n');
            if let Err(e) = f.write_all(&line) {
                warn!("cannot write an event: {e}");
            }
        }
    }
}

/// The supervisor process: runs the engine and the agents until SIGTERM or
/// SIGINT.
pub fn run(lab: &str) -> Result<(), LabError> {
    let bytes = std::fs::read(config_path(lab))?;
    let config: Config = serde_json::from_slice(&bytes).map_err(std::io::Error::other)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, supervise(lab, config))
}

async fn supervise(lab: &str, config: Config) -> Result<(), LabError> {
    std::fs::create_dir_all(config.out.join("logs"))?;
    // One event connection per agent, a log file per child while it starts.
    super::apply::raise_fd_limit(2 * config.agents.len());
    // Ahead of the agents it starts (they run at nice 5), behind the engine.
    if let Err(e) = crate::privilege::set_nice(SUPERVISOR_NICE) {
        warn!(lab, "cannot raise the supervisor's priority: {e}");
    }
    let mut children = Vec::new();
    if config.engine {
        children.push(ChildState::new("engine", None));
    }
    for a in &config.agents {
        children.push(ChildState::new(&a.node, Some(a.role.clone())));
    }
    let board = Board {
        lab: lab.to_string(),
        nodes: config
            .agents
            .iter()
            .map(|a| {
                let entry = NodeEntry {
                    role: a.role.clone(),
                    ..NodeEntry::default()
                };
                (a.node.clone(), entry)
            })
            .collect(),
    };
    let shared = Rc::new(RefCell::new(Shared {
        lab: lab.to_string(),
        record: Supervised {
            pid: std::process::id(),
            children,
        },
        pids: HashMap::new(),
        dirty: true,
        events: EventLog::open(&events::log_path(&config.out)),
        board: Arc::new(Mutex::new(board)),
    }));
    if config.metrics.is_some() {
        // SAFETY: `up` passed the listener on fd 3 (see `start`), and nothing
        // else in this process owns that descriptor.
        let listener = unsafe { std::net::TcpListener::from_raw_fd(METRICS_FD) };
        let board = Arc::clone(&shared.borrow().board);
        tokio::task::spawn_local(async move {
            if let Err(e) = crate::metrics::serve(listener, board).await {
                warn!("metrics endpoint stopped: {e}");
            }
        });
    }
    let socket = events::socket_path(lab);
    let _ = std::fs::remove_file(&socket);
    let listener = tokio::net::UnixListener::bind(&socket)?;
    std::fs::set_permissions(&socket, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    tokio::task::spawn_local(listen(listener, Rc::clone(&shared)));
    tokio::task::spawn_local(save_when_dirty(Rc::clone(&shared)));

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let (stop_tx, stop) = watch::channel(false);
    let exe = std::env::current_exe()?;
    let count = shared.borrow().record.children.len();
    let mut tasks = Vec::with_capacity(count);
    let engine = usize::from(config.engine);
    for i in 0..count {
        if i == engine + config.serving && config.serving > 0 {
            wait_ready(&shared, engine..i, SERVING_WAIT).await;
        }
        tasks.push(tokio::task::spawn_local(keep(
            i,
            exe.clone(),
            config.out.clone(),
            Rc::clone(&shared),
            stop.clone(),
        )));
        // One start at a time, with the agents' event connections served in
        // between: their readiness is recorded as it happens.
        tokio::task::yield_now().await;
    }
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    info!(lab, "supervisor stopping");
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = t.await;
    }
    let s = shared.borrow();
    save(lab, &s.record);
    Ok(())
}

/// Wait until children `range` are all ready, or `timeout`.
async fn wait_ready(shared: &RefCell<Shared>, range: std::ops::Range<usize>, timeout: Duration) {
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        if shared.borrow().record.children[range.clone()]
            .iter()
            .all(|c| c.ready)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

impl ChildState {
    fn new(name: &str, role: Option<String>) -> ChildState {
        ChildState {
            name: name.to_string(),
            role,
            pid: 0,
            restarts: 0,
            started: 0,
            last_exit: None,
            ready: false,
        }
    }
}

/// Run child `i` until asked to stop, restarting it with backoff.
async fn keep(
    i: usize,
    exe: PathBuf,
    out: PathBuf,
    shared: Rc<RefCell<Shared>>,
    mut stop: watch::Receiver<bool>,
) {
    let (lab, name, role) = {
        let s = shared.borrow();
        let c = &s.record.children[i];
        (s.lab.clone(), c.name.clone(), c.role.clone())
    };
    let mut backoff = MIN_BACKOFF;
    while !*stop.borrow() {
        let started = Instant::now();
        let spawned = spawn(&exe, &lab, &name, role.is_some(), &out);
        let mut child = match spawned {
            Ok(c) => c,
            Err(e) => {
                warn!(lab, name, "cannot start: {e}");
                {
                    let mut s = shared.borrow_mut();
                    s.record.children[i].last_exit = Some(format!("could not start: {e}"));
                    s.dirty = true;
                }
                wait_unless(&mut stop, backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        let pid = child.id().unwrap_or(0);
        {
            let mut s = shared.borrow_mut();
            s.pids.insert(pid, i);
            let c = &mut s.record.children[i];
            c.pid = pid;
            c.started = events::unix_us() / 1_000_000;
            c.ready = false;
            s.dirty = true;
            if let Some(role) = &role {
                s.board().nodes.entry(name.clone()).or_default().up = true;
                s.event(
                    &name,
                    Event::AgentStarted {
                        role: role.clone(),
                        pid,
                    },
                );
            }
        }
        // How the child ended; `None` when asked to stop.
        let exit = tokio::select! {
            status = child.wait() => Some(match status {
                Ok(s) => s.to_string(),
                Err(e) => format!("unwatchable ({e})"),
            }),
            _ = stop.changed() => None,
        };
        if exit.is_none() {
            terminate(&mut child, pid).await;
        }
        if !record_exit(&shared, i, pid, &name, role.as_deref(), exit) {
            break;
        }
        if started.elapsed() >= STABLE_RUN {
            backoff = MIN_BACKOFF;
        }
        wait_unless(&mut stop, backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Record how child `i` (pid `pid`) ended; `exit` is `None` when it was
/// stopped. Returns whether to restart it.
fn record_exit(
    shared: &RefCell<Shared>,
    i: usize,
    pid: u32,
    name: &str,
    role: Option<&str>,
    exit: Option<String>,
) -> bool {
    let mut s = shared.borrow_mut();
    s.pids.remove(&pid);
    let c = &mut s.record.children[i];
    c.pid = 0;
    c.ready = false;
    s.dirty = true;
    if role.is_some() {
        s.board().nodes.entry(name.to_string()).or_default().up = false;
    }
    let Some(exit) = exit else { return false };
    warn!(lab = s.lab, name, exit, "exited; restarting");
    let c = &mut s.record.children[i];
    c.restarts += 1;
    c.last_exit = Some(exit.clone());
    let restarts = c.restarts;
    if let Some(role) = role {
        s.board()
            .nodes
            .entry(name.to_string())
            .or_default()
            .restarts = restarts;
        s.event(
            name,
            Event::AgentExited {
                role: role.to_string(),
                status: exit,
                restarts,
            },
        );
    }
    true
}

/// The engine (`testbed -v engine LAB`, log in the state folder) or a node's
/// agent (`testbed-agent LAB NODE`, next to `testbed`; log in the output
/// folder).
fn spawn(
    exe: &Path,
    lab: &str,
    name: &str,
    agent: bool,
    out: &Path,
) -> std::io::Result<tokio::process::Child> {
    let (mut cmd, log) = if agent {
        let mut cmd = Command::new(exe.with_file_name(AGENT_BINARY));
        cmd.args([lab, name]);
        (cmd, append(&agent_log(out, name), 0o644)?)
    } else {
        let mut cmd = Command::new(exe);
        cmd.args(["-v", "engine", lab]);
        (cmd, append(&engine::log_path(lab), 0o600)?)
    };
    cmd.stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    tokio::process::Command::from(cmd).spawn()
}

/// SIGTERM, then SIGKILL after [`STOP_GRACE`].
async fn terminate(child: &mut tokio::process::Child, pid: u32) {
    use nix::sys::signal::{Signal, kill};
    if let Ok(pid) = i32::try_from(pid) {
        let _ = kill(nix::unistd::Pid::from_raw(pid), Signal::SIGTERM);
    }
    if tokio::time::timeout(STOP_GRACE, child.wait())
        .await
        .is_err()
    {
        let _ = child.kill().await;
    }
}

async fn wait_unless(stop: &mut watch::Receiver<bool>, total: Duration) {
    if *stop.borrow() {
        return;
    }
    let _ = tokio::time::timeout(total, stop.changed()).await;
}

/// Accept agents' connections; each is attributed to the child whose pid
/// made it, and refused if no child did.
async fn listen(listener: tokio::net::UnixListener, shared: Rc<RefCell<Shared>>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of descriptors, most likely: back off instead of spinning.
                warn!("accepting an agent's event connection: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let pid = stream
            .peer_cred()
            .ok()
            .and_then(|c| c.pid())
            .and_then(|p| u32::try_from(p).ok());
        let node = pid.and_then(|p| {
            let s = shared.borrow();
            let i = *s.pids.get(&p)?;
            let c = &s.record.children[i];
            c.role.as_ref().map(|_| (i, c.name.clone()))
        });
        match node {
            Some((i, node)) => {
                tokio::task::spawn_local(read_agent(stream, i, node, Rc::clone(&shared)));
            }
            None => warn!(
                ?pid,
                "event connection from a process that is not an agent; closed"
            ),
        }
    }
}

/// Read one agent's messages until it disconnects or sends a line longer than
/// [`events::MAX_LINE`] or one that does not parse.
async fn read_agent(
    stream: tokio::net::UnixStream,
    i: usize,
    node: String,
    shared: Rc<RefCell<Shared>>,
) {
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    loop {
        line.clear();
        let limit = (events::MAX_LINE + 1) as u64;
        match (&mut reader).take(limit).read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => return,
            Ok(n) if n > events::MAX_LINE => {
                warn!(
                    node,
                    "event line over {} bytes; connection closed",
                    events::MAX_LINE
                );
                return;
            }
            Ok(_) => {}
        }
        let msg: Upstream = match serde_json::from_slice(&line) {
            Ok(m) => m,
            Err(e) => {
                warn!(node, "unreadable event ({e}); connection closed");
                return;
            }
        };
        let mut s = shared.borrow_mut();
        match msg {
            Upstream::Event(event) => {
                if let Event::AgentReady { .. } = event {
                    s.record.children[i].ready = true;
                    s.dirty = true;
                }
                s.event(&node, event);
            }
            Upstream::Metrics(m) if m.well_formed() => {
                s.board().nodes.entry(node.clone()).or_default().metrics = m;
            }
            Upstream::Metrics(_) => warn!(node, "malformed metrics ignored"),
        }
    }
}

/// Write `supervisor.json` at most every 100 ms, when something changed.
async fn save_when_dirty(shared: Rc<RefCell<Shared>>) {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tick.tick().await;
        let mut s = shared.borrow_mut();
        if s.dirty {
            s.dirty = false;
            save(&s.lab, &s.record);
        }
    }
}

fn save(lab: &str, record: &Supervised) {
    let result = serde_json::to_vec(record)
        .map_err(std::io::Error::other)
        .and_then(|bytes| state::write_atomic(&state_path(lab), &bytes));
    if let Err(e) = result {
        warn!(lab, "cannot record supervisor state: {e}");
    }
}

/// Wait until every agent of the lab said it is ready. Fails early when an
/// agent keeps dying before it gets there, with the end of its log.
pub fn wait_agents(lab: &str, out: &Path, count: usize, timeout: Duration) -> Result<(), LabError> {
    let deadline = Instant::now() + timeout;
    loop {
        let record = read(lab);
        let agents = || {
            record
                .iter()
                .flat_map(|r| r.children.iter())
                .filter(|c| c.role.is_some())
        };
        let ready = agents().filter(|c| c.ready).count();
        if ready >= count {
            return Ok(());
        }
        let failing = agents().find(|c| !c.ready && c.restarts >= 3);
        if failing.is_some() || Instant::now() >= deadline {
            let (node, cause) = match failing {
                Some(c) => (
                    c.name.clone(),
                    format!(
                        "its agent exited {} times ({})",
                        c.restarts,
                        c.last_exit.as_deref().unwrap_or("?")
                    ),
                ),
                None => {
                    let c = agents().find(|c| !c.ready);
                    (
                        c.map_or_else(|| "?".to_string(), |c| c.name.clone()),
                        format!("{ready} of {count} agents ready after {timeout:?}"),
                    )
                }
            };
            let log = tail(&agent_log(out, &node), 5);
            return Err(LabError::AgentsNotReady {
                lab: lab.to_string(),
                node,
                cause,
                log,
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The last `n` lines of a log, joined with ` | `.
fn tail(path: &Path, n: usize) -> String {
    let log = std::fs::read_to_string(path).unwrap_or_default();
    let mut lines: Vec<&str> = log.lines().rev().take(n).collect();
    lines.reverse();
    lines.join(" | ")
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
                return Err(LabError::EngineNotReady {
                    lab: lab.to_string(),
                    cause: e.to_string(),
                    log: tail(&engine::log_path(lab), 5),
                });
            }
        }
    }
}
