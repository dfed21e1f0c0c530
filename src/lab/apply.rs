//! `up`: apply a plan over netlink, journaling first, rolling back on failure.
//!
//! Phases: (1) namespaces are created by a small pool of worker threads, each
//! leaving behind an open namespace fd and a netlink socket bound inside it;
//! (2) the infrastructure socket creates every bridge and veth pair in large
//! batches, placing each peer straight into its node namespace, up and enslaved;
//! (3) each node's socket receives its addresses and routes as one batch.

use std::fs::{self, File};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use tracing::{debug, info};

use super::journal::{Entry, Journal};
use super::state::Impairments;
use super::supervisor::AgentChild;
use super::{LabError, state, supervisor, teardown};
use crate::agent::identity::{self, Subject};
use crate::agent::{self, AgentConfig};
use crate::emulation::kernel;
use crate::emulation::pipeline::{Direction, DirectionParams, direction_seed};
use crate::engine;
use crate::netlink::{Netlink, netns, ops};
use crate::plan::{IfacePlan, NeighbourSeed, NodePlan, Plan, RelaySide, iface_mac, owner_tag};
use crate::topology::Backend;

/// How long `up` waits for the engine to answer on its control socket.
const ENGINE_READY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);
/// How long `up` waits for agents: this, plus [`AGENT_READY_EACH`] per agent.
const AGENTS_READY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);
const AGENT_READY_EACH: std::time::Duration = std::time::Duration::from_millis(40);

/// What `up` does beyond the topology: where outputs go, and the optional
/// key log and metrics endpoint for the lab's agents.
#[derive(Debug)]
pub struct UpOptions {
    /// The lab's output folder (events, agent logs, application results);
    /// made if missing, left in place by `down`.
    pub out: PathBuf,
    /// Append every agent's TLS secrets here (NSS key log format).
    pub keylog: Option<PathBuf>,
    /// Serve Prometheus metrics on this listener (made in the caller's
    /// namespace, so it is reachable from the host).
    pub metrics: Option<std::net::TcpListener>,
}

/// Progress callback: (what, done, total).
pub type Progress<'a> = &'a (dyn Fn(&str, usize, usize) + Sync);

/// What `up` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpOutcome {
    Created,
    /// The lab was already up with the same topology; nothing changed.
    AlreadyUp,
}

/// A namespace made by phase 1, with what later phases need inside it.
struct Made {
    ns: File,
    nl: Netlink,
}

/// Bring a lab up. Validates that nothing of it exists, journals, creates, and
/// on any failure removes everything it created before returning the error.
pub fn up(plan: &Plan, options: &UpOptions, progress: Progress) -> Result<UpOutcome, LabError> {
    require_root()?;
    let lab = &plan.lab;
    // Before the lock, which makes the state folder: a refusal leaves nothing.
    let applied = choose_backend(plan)?;
    let _lock = state::LabLock::try_acquire(lab)?.ok_or_else(|| LabError::Busy(lab.clone()))?;
    if let Some(running) = state::read_plan(lab)? {
        if running.fingerprint == plan.fingerprint {
            let missing = running.namespaces().filter(|n| !netns::exists(n)).count();
            if missing > 0 {
                return Err(LabError::Degraded {
                    lab: lab.clone(),
                    missing,
                });
            }
            return Ok(UpOutcome::AlreadyUp);
        }
        return Err(LabError::Changed(lab.clone()));
    }
    if state::journal_path(lab).exists() {
        info!(lab, "removing leftovers of an interrupted run first");
        teardown::remove_locked(lab)?;
        fs::create_dir_all(state::lab_dir(lab))?;
    }
    if let Some(taken) = plan.namespaces().find(|n| netns::exists(n)) {
        return Err(LabError::NameTaken(taken.to_string()));
    }
    let mut plan = plan.clone();
    if applied == Impairments::Userspace {
        plan.route_through_engine();
    } else {
        plan.route_in_path_through_engine();
    }
    let result = create(&plan, applied, options, progress);
    if let Err(err) = result {
        let rollback = teardown::remove_locked(lab).err();
        return Err(LabError::RolledBack {
            cause: Box::new(err),
            rollback: rollback.map(Box::new),
        });
    }
    Ok(UpOutcome::Created)
}

fn require_root() -> Result<(), LabError> {
    if nix::unistd::geteuid().is_root() {
        Ok(())
    } else {
        Err(LabError::NotRoot)
    }
}

fn create(
    plan: &Plan,
    applied: Impairments,
    options: &UpOptions,
    progress: Progress,
) -> Result<(), LabError> {
    let lab = &plan.lab;
    let t0 = std::time::Instant::now();
    let mut journal = Journal::open(&state::journal_path(lab))?;
    let mut intents = vec![Entry::Begin {
        lab: lab.clone(),
        fingerprint: plan.fingerprint.clone(),
        pid: std::process::id(),
    }];
    intents.extend(plan.namespaces().map(|n| Entry::Netns {
        name: n.to_string(),
    }));
    journal.append(&intents)?;
    raise_fd_limit(2 * plan.links.len() + 64);
    raise_neighbour_limits(plan);
    netns::prepare_run_dir()?;
    let tag = owner_tag(lab);

    // The infrastructure namespace, its bridges and trunks.
    let infra_sysctls = [
        ("ipv6/conf/all/disable_ipv6".to_string(), "1".to_string()),
        (
            "ipv6/conf/default/disable_ipv6".to_string(),
            "1".to_string(),
        ),
    ];
    let infra_name = plan.infra.netns.clone();
    let tag2 = tag.clone();
    let Made { nl: mut infra, .. } =
        std::thread::spawn(move || make_netns(&infra_name, &infra_sysctls, &tag2))
            .join()
            .map_err(|_| std::io::Error::other("namespace worker panicked"))??;
    for b in &plan.infra.bridges {
        let what = format!("bridge {} in {}", b.name, plan.infra.netns);
        infra.queue(ops::bridge(&b.name, b.index), ops::CREATE, &what);
        infra.queue(ops::pin_mtu(b.index, 1500), 0, &what);
        infra.queue(ops::set_up(b.index, Some(&tag)), 0, what);
    }
    let trunk_alias = format!("{tag}:trunk");
    let what = |name: &str| format!("trunk {name} in {}", plan.infra.netns);
    for t in &plan.infra.trunks {
        let root = ops::End {
            name: &t.root.name,
            index: t.root.index,
            netns: None,
            master: Some(t.root.bridge),
            mac: None,
        };
        let shard = ops::End {
            name: &t.shard.name,
            index: t.shard.index,
            netns: None,
            master: None,
            mac: None,
        };
        infra.queue(
            ops::veth(&root, &shard),
            ops::CREATE,
            format!("trunk {} in {}", t.root.name, plan.infra.netns),
        );
        infra.queue(
            ops::enslave_up(t.shard.index, t.shard.bridge),
            0,
            what(&t.shard.name),
        );
        infra.queue(
            ops::set_up(t.root.index, Some(&trunk_alias)),
            0,
            what(&t.root.name),
        );
        infra.queue(
            ops::set_up(t.shard.index, Some(&trunk_alias)),
            0,
            what(&t.shard.name),
        );
    }
    for r in &plan.relays {
        let RelaySide::Bridge {
            engine,
            engine_index,
            bridge,
        } = &r.b
        else {
            continue;
        };
        let near = ops::End {
            name: engine,
            index: *engine_index,
            netns: None,
            master: None,
            mac: None,
        };
        let far = ops::End {
            name: &bridge.name,
            index: bridge.index,
            netns: None,
            master: None,
            mac: None,
        };
        let what = format!("engine uplink {engine} in {}", plan.infra.netns);
        let alias = format!("{tag}:{}", r.name);
        infra.queue(ops::veth(&near, &far), ops::CREATE, &what);
        infra.queue(ops::enslave_up(bridge.index, bridge.bridge), 0, &what);
        infra.queue(ops::set_up(*engine_index, Some(&alias)), 0, &what);
        infra.queue(ops::set_up(bridge.index, Some(&alias)), 0, what);
    }
    infra.flush()?;
    let kernel = applied == Impairments::Kernel;
    state::write_atomic(&state::backend_path(lab), applied.token().as_bytes())?;

    // Every node, end to end, on a pool of workers.
    let seeds = plan.neighbour_seeds();
    let mut linked = make_nodes(plan, &seeds, &tag, kernel, &mut infra, progress)?;
    debug!(lab, elapsed = ?t0.elapsed(), "nodes done");
    let created: Vec<Entry> = plan
        .namespaces()
        .filter_map(|name| {
            netns::inode(name).map(|inode| Entry::Created {
                name: name.to_string(),
                inode,
            })
        })
        .collect();
    journal.append(&created)?;

    // Point-to-point links, once both ends exist; then the routes they enable.
    // Each is made from end a's own socket: kernels before 6.x check a requested
    // ifindex in the sender's namespace too, where it would clash with the
    // infrastructure namespace's bridges.
    for link in plan.links.iter().filter(|l| plan.iface(l.a).port.is_none()) {
        let ia = &plan.nodes[link.a.0].ifaces[link.a.1];
        let ib = &plan.nodes[link.b.0].ifaces[link.b.1];
        let b_ns = linked[link.b.0].as_ref().map(|m| m.ns.as_raw_fd());
        let a = ops::End {
            name: &ia.name,
            index: ia.index,
            netns: None,
            master: None,
            mac: Some(iface_mac(link.a.0, link.a.1)),
        };
        let b = ops::End {
            name: &ib.name,
            index: ib.index,
            netns: b_ns,
            master: None,
            mac: Some(iface_mac(link.b.0, link.b.1)),
        };
        let Some(made_a) = linked[link.a.0].as_mut() else {
            unreachable!("both ends of a link are returned by make_nodes");
        };
        made_a.nl.execute(
            ops::veth(&a, &b),
            ops::CREATE,
            format!("link {}", link.name),
        )?;
    }
    for (n, (node, made)) in plan.nodes.iter().zip(linked.iter_mut()).enumerate() {
        if let Some(made) = made {
            for (j, iface) in node.ifaces.iter().enumerate() {
                if iface.port.is_none() {
                    let netem = netem_params(plan, kernel, (n, j));
                    configure_iface(&mut made.nl, node, iface, &tag, netem);
                }
            }
            queue_routes(&mut made.nl, node, &seeds[n]);
            made.nl.flush()?;
        }
    }
    debug!(lab, elapsed = ?t0.elapsed(), "links done");
    state::write_atomic(&state::hosts_path(lab), plan.hosts_file().as_bytes())?;
    let (agents, serving) = agent_order(plan);
    if !plan.relays.is_empty() || !agents.is_empty() {
        if !plan.relays.is_empty() {
            let config = engine::Config::for_plan(plan);
            state::write_atomic(&engine::config_path(lab), &config.to_json()?)?;
        }
        if !agents.is_empty() {
            prepare_agents(plan, options)?;
            debug!(lab, elapsed = ?t0.elapsed(), "agents prepared");
        }
        let metrics = options
            .metrics
            .as_ref()
            .map(|l| l.try_clone())
            .transpose()?;
        let config = supervisor::Config {
            engine: !plan.relays.is_empty(),
            out: options.out.clone(),
            metrics: metrics
                .as_ref()
                .and_then(|l| l.local_addr().ok())
                .map(|a| a.to_string()),
            agents,
            serving,
        };
        supervisor::start(plan, &config, metrics)?;
        if config.engine {
            supervisor::wait_engine(lab, ENGINE_READY_TIMEOUT)?;
            debug!(lab, elapsed = ?t0.elapsed(), "engine ready");
        }
        if !config.agents.is_empty() {
            let n = config.agents.len();
            let timeout = AGENTS_READY_TIMEOUT + AGENT_READY_EACH * n as u32;
            supervisor::wait_agents(lab, &options.out, n, timeout)?;
            debug!(lab, elapsed = ?t0.elapsed(), agents = n, "agents ready");
        }
    }

    let json = serde_json::to_vec_pretty(plan).map_err(std::io::Error::other)?;
    state::write_atomic(&state::plan_path(lab), &json)?;
    journal.append(&[Entry::Complete])?;
    Ok(())
}

/// What a previous `up` of the lab wrote to the output folder becomes
/// `NAME.1` (one generation), so each run's events, results and logs start
/// empty; nothing else in the folder is touched.
fn rotate_outputs(out: &std::path::Path) -> Result<(), LabError> {
    for name in ["events.jsonl", "results.csv", "controller.log", "logs"] {
        let path = out.join(name);
        if path.exists() {
            let old = out.join(format!("{name}.1"));
            if old.is_dir() {
                fs::remove_dir_all(&old)?;
            }
            fs::rename(&path, &old)?;
        }
    }
    Ok(())
}

/// The agents to start, those that others connect to first, and how many
/// those are: a client that starts before its server loses its first
/// handshake packets and waits out QUIC's retransmission timers.
fn agent_order(plan: &Plan) -> (Vec<AgentChild>, usize) {
    let served: std::collections::HashSet<usize> =
        plan.agent_peers().into_iter().map(|(_, p)| p).collect();
    let (first, rest): (Vec<_>, Vec<_>) = plan
        .nodes
        .iter()
        .enumerate()
        .filter_map(|(i, n)| {
            n.role.as_ref().map(|role| {
                let child = AgentChild {
                    node: n.name.clone(),
                    role: role.clone(),
                };
                (served.contains(&i), child)
            })
        })
        .partition(|(serving, _)| *serving);
    let serving = first.len();
    let order = first.into_iter().chain(rest).map(|(_, c)| c).collect();
    (order, serving)
}

/// The lab's PKI (a CA and a certificate for every node), the output folder,
/// the key log, and one config per agent (`agents/`, 0700).
fn prepare_agents(plan: &Plan, options: &UpOptions) -> Result<(), LabError> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let lab = &plan.lab;
    let subjects: Vec<Subject> = plan
        .nodes
        .iter()
        .map(|n| Subject {
            name: &n.name,
            addrs: n
                .ifaces
                .iter()
                .flat_map(|i| [Some(i.addr.addr()), i.addr6.map(|a| a.addr())])
                .flatten()
                .collect(),
        })
        .collect();
    let t = std::time::Instant::now();
    identity::issue(lab, &subjects).map_err(|e| LabError::Agents(e.to_string()))?;
    debug!(lab, elapsed = ?t.elapsed(), certificates = subjects.len(), "lab PKI issued");
    rotate_outputs(&options.out)?;
    fs::create_dir_all(options.out.join("logs"))?;
    if let Some(k) = &options.keylog {
        fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(k)?;
    }
    let dir = state::lab_dir(lab).join("agents");
    fs::DirBuilder::new()
        .mode(0o700)
        .recursive(true)
        .create(&dir)?;
    for node in &plan.nodes {
        let Some(role) = &node.role else { continue };
        let config = AgentConfig {
            lab: lab.clone(),
            node: node.name.clone(),
            role: role.clone(),
            options: node.options.clone(),
            netns: node.netns.clone(),
            out: options.out.clone(),
            keylog: options.keylog.clone(),
            seed: direction_seed(plan.seed, &node.name, Direction::AToB),
        };
        // Read once by the agent, made again by every `up`: no need to sync.
        let json = serde_json::to_vec_pretty(&config).map_err(std::io::Error::other)?;
        fs::write(agent::config_path(lab, &node.name), json)?;
    }
    Ok(())
}

/// Create every node. Worker threads make namespaces (the part the kernel can
/// run in parallel) and hand them over a channel; this thread batches the
/// veth pairs and addresses of whatever is ready (the part serialised by the
/// kernel's rtnl lock), so the two overlap. Nodes with point-to-point links are
/// returned (namespace fd and socket) so their links can be made once both
/// ends exist.
fn make_nodes(
    plan: &Plan,
    seeds: &[Vec<NeighbourSeed>],
    tag: &str,
    kernel: bool,
    infra: &mut Netlink,
    progress: Progress,
) -> Result<Vec<Option<Made>>, LabError> {
    let total = plan.nodes.len();
    let workers = std::env::var("TESTBED_NS_WORKERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1usize)
        .clamp(1, 8);
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let (tx, rx) = std::sync::mpsc::channel::<(usize, Result<Made, LabError>)>();
    std::thread::scope(|scope| {
        for _ in 0..workers {
            let tx = tx.clone();
            let (next, stop) = (&next, &stop);
            scope.spawn(move || {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= total || stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let node = &plan.nodes[i];
                    if tx
                        .send((i, make_netns(&node.netns, &node.sysctls, tag)))
                        .is_err()
                    {
                        break;
                    }
                }
            });
        }
        drop(tx);
        let result = wire_nodes(plan, seeds, tag, kernel, infra, &rx, progress);
        if result.is_err() {
            stop.store(true, Ordering::Relaxed);
            // Drain so no worker blocks; what they made is journaled and removed by rollback.
            for _ in rx.iter() {}
        }
        result
    })
}

/// Consume namespaces as they are made and wire them up in batches.
fn wire_nodes(
    plan: &Plan,
    seeds: &[Vec<NeighbourSeed>],
    tag: &str,
    kernel: bool,
    infra: &mut Netlink,
    rx: &std::sync::mpsc::Receiver<(usize, Result<Made, LabError>)>,
    progress: Progress,
) -> Result<Vec<Option<Made>>, LabError> {
    let total = plan.nodes.len();
    let mut linked: Vec<Option<Made>> = (0..total).map(|_| None).collect();
    let mut done = 0;
    while done < total {
        let first = rx
            .recv()
            .map_err(|_| std::io::Error::other("namespace workers stopped early"))?;
        let mut batch = vec![first];
        while batch.len() < 128 {
            match rx.try_recv() {
                Ok(item) => batch.push(item),
                Err(_) => break,
            }
        }
        let mut ready = Vec::with_capacity(batch.len());
        for (i, made) in batch {
            ready.push((i, made?));
        }
        for (i, made) in &ready {
            let node = &plan.nodes[*i];
            for (j, iface) in node.ifaces.iter().enumerate() {
                let Some(port) = &iface.port else { continue };
                let near = ops::End {
                    name: &port.name,
                    index: port.index,
                    netns: None,
                    master: port.bridge,
                    mac: None,
                };
                let far = ops::End {
                    name: &iface.name,
                    index: iface.index,
                    netns: Some(made.ns.as_raw_fd()),
                    master: None,
                    mac: Some(iface_mac(*i, j)),
                };
                let what = format!("veth {}/{} <-> {}", node.netns, iface.name, port.name);
                infra.queue(ops::veth(&near, &far), ops::CREATE, &what);
                infra.queue(
                    ops::set_up(port.index, Some(&iface_tag(tag, node, iface))),
                    0,
                    what,
                );
            }
        }
        infra.flush()?;
        for (i, mut made) in ready {
            let node = &plan.nodes[i];
            for (j, iface) in node.ifaces.iter().enumerate() {
                if iface.port.is_some() {
                    let netem = netem_params(plan, kernel, (i, j));
                    configure_iface(&mut made.nl, node, iface, tag, netem);
                }
            }
            if node.ifaces.iter().any(|i| i.port.is_none()) {
                // Routes may lead through a link not made yet; they follow the links.
                made.nl.flush()?;
                linked[i] = Some(made);
            } else {
                queue_routes(&mut made.nl, node, &seeds[i]);
                made.nl.flush()?;
            }
            done += 1;
        }
        progress("nodes", done, total);
    }
    Ok(linked)
}

/// Resolve the lab's backend. `auto` uses netem when the kernel has it (an
/// ENOENT for kind `netem` is the signal) and the userspace engine otherwise;
/// `kernel` insists on netem.
fn choose_backend(plan: &Plan) -> Result<Impairments, LabError> {
    let impaired = plan
        .nodes
        .iter()
        .flat_map(|n| &n.ifaces)
        .any(|i| i.profile_out.is_some());
    if !impaired {
        return Ok(Impairments::Nothing);
    }
    let has_netem = match plan.backend {
        Backend::Userspace => false,
        Backend::Auto | Backend::Kernel => probe_netem()?,
    };
    match (plan.backend, has_netem) {
        (_, true) => Ok(Impairments::Kernel),
        (Backend::Kernel, false) => Err(LabError::NoNetem),
        _ => Ok(Impairments::Userspace),
    }
}

/// Whether this kernel has sch_netem: try it on the loopback of a throwaway
/// namespace (gone when the probing thread ends).
fn probe_netem() -> Result<bool, LabError> {
    let probe = || -> Result<bool, LabError> {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|e| LabError::Io(e.into()))?;
        let mut nl = Netlink::open()?;
        let probe = kernel::root_netem(1, &DirectionParams::default());
        match nl.execute(probe, ops::CREATE, "probe for sch_netem") {
            Ok(()) => Ok(true),
            Err(e) if e.errno() == Some(libc::ENOENT) => Ok(false),
            Err(e) => Err(e.into()),
        }
    };
    std::thread::spawn(probe)
        .join()
        .map_err(|_| std::io::Error::other("netem probe panicked"))?
}

/// The kernel backend's parameters for frames `node` sends on `iface`.
fn netem_params(plan: &Plan, kernel: bool, end: (usize, usize)) -> Option<DirectionParams> {
    kernel.then(|| plan.egress_params(end)).flatten()
}

/// The ownership tag of one node interface (and of its bridge port).
fn iface_tag(tag: &str, node: &NodePlan, iface: &IfacePlan) -> String {
    format!("{tag}:{}:{}", node.name, iface.name)
}

/// Queue: no IPv6 autoconfiguration, the egress netem (kernel backend), link
/// up with its tag, addresses.
fn configure_iface(
    nl: &mut Netlink,
    node: &NodePlan,
    iface: &IfacePlan,
    tag: &str,
    netem: Option<DirectionParams>,
) {
    if let Some(params) = netem {
        nl.queue(
            kernel::root_netem(iface.index, &params),
            ops::CREATE,
            format!("netem on {}/{}", node.netns, iface.name),
        );
    }
    nl.queue(
        ops::no_ipv6_autoconf(iface.index),
        0,
        format!("addrgenmode of {}/{}", node.netns, iface.name),
    );
    nl.queue(
        ops::set_up(iface.index, Some(&iface_tag(tag, node, iface))),
        0,
        format!("link {}/{} up", node.netns, iface.name),
    );
    for addr in iface.addresses() {
        nl.queue(
            ops::address(iface.index, addr.addr(), addr.prefix_len()),
            ops::CREATE,
            format!("address {addr} on {}/{}", node.netns, iface.name),
        );
    }
}

/// The node's routes, and the neighbour entries seeded for its agents' peers.
fn queue_routes(nl: &mut Netlink, node: &NodePlan, seeds: &[NeighbourSeed]) {
    for r in &node.routes {
        nl.queue(
            ops::route(r.dest, r.via),
            ops::CREATE,
            format!("route {} via {} in {}", r.dest, r.via, node.netns),
        );
    }
    for s in seeds {
        nl.queue(
            ops::stale_neighbour(s.ifindex, s.addr, s.mac),
            ops::CREATE,
            format!("neighbour {} in {}", s.addr, node.netns),
        );
    }
}

/// Create a namespace on the calling thread (leaving the thread in it), set
/// its sysctls, tag and raise its loopback, and open a socket inside it.
fn make_netns(name: &str, sysctls: &[(String, String)], tag: &str) -> Result<Made, LabError> {
    netns::create_on_this_thread(name).map_err(|e| LabError::Netns {
        name: name.to_string(),
        source: e,
    })?;
    for (key, value) in sysctls {
        let path = format!("/proc/sys/net/{key}");
        fs::write(&path, value).map_err(|e| LabError::Sysctl {
            netns: name.to_string(),
            key: key.clone(),
            source: e,
        })?;
    }
    let ns = File::open("/proc/thread-self/ns/net")?;
    let mut nl = Netlink::open()?;
    nl.execute(ops::set_up(1, Some(tag)), 0, format!("loopback of {name}"))?;
    Ok(Made { ns, nl })
}

/// Make room for one namespace fd and one netlink socket per node.
/// The kernel's neighbour (ARP/NDP) tables are shared by every namespace and
/// capped by the host's `gc_thresh3` (1024 by default): a LAN of a thousand
/// nodes talking to one hub needs two entries per member, and past the cap
/// new neighbours fail ("neighbor table overflow"). Like Mininet's
/// `fixLimits`, raise (never lower) the caps to four entries per interface
/// plus headroom, and say so.
fn raise_neighbour_limits(plan: &Plan) {
    let ifaces: usize = plan.nodes.iter().map(|n| n.ifaces.len()).sum();
    let need = (4 * ifaces + 1024).min(1 << 20);
    for family in ["ipv4", "ipv6"] {
        for (knob, want) in [("gc_thresh3", need), ("gc_thresh2", need / 2)] {
            let path = format!("/proc/sys/net/{family}/neigh/default/{knob}");
            let Some(current) = fs::read_to_string(&path)
                .ok()
                .and_then(|t| t.trim().parse::<usize>().ok())
            else {
                continue;
            };
            if current < want {
                match fs::write(&path, want.to_string()) {
                    Ok(()) => info!(
                        lab = plan.lab,
                        "raised net.{family}.neigh.default.{knob} from {current} to {want} for {ifaces} interfaces"
                    ),
                    Err(e) => tracing::warn!("cannot raise {path} to {want}: {e}"),
                }
            }
        }
    }
}

/// Raise the soft limit on open files to `need` plus headroom (up to the
/// hard limit): a process holding one descriptor per node of a large lab.
pub(super) fn raise_fd_limit(need: usize) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let want = (need as u64 + 1024).min(hard);
        if soft < want {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, want, hard);
        }
    }
}
