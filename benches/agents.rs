//! Benchmark of the agent plane (root only; `scripts/bench-agents` runs it).
//!
//! 1. Fleet: 1,000 vehicles on one LAN, each running `heartbeat` to a hub
//!    (mutual-TLS QUIC), against the same topology without roles (the
//!    network alone, the baseline) in the same run. Figures (issue 4's
//!    targets in brackets): agents started, connected and ready after the
//!    network is up (first `agent-started` to last `agent-ready` in
//!    events.jsonl) [<= 10 s]; `up` wall time with and without agents; agent
//!    RSS, median over the 1,000 [<= 6 MiB], with its anonymous part; the
//!    orchestrator's peak RSS (`up`, from wait4's rusage) and the
//!    supervisor's RSS [<= 100 MiB].
//! 2. Controller: a `cps-controller` and four load nodes; this process enters
//!    a load node's namespace and floods the controller with valid sealed
//!    readings from the four nodes' identities (rate limit raised out of the
//!    way, every other check on). Figures: readings accepted per second and
//!    per second of the controller's CPU time (it is single-threaded, so one
//!    core) [>= 20,000/s].
//!
//! Progress goes to stderr, a markdown fragment for docs/perf.md to stdout.
//! Usage: `cargo bench --bench agents -- [--runs N]`.

use std::os::fd::AsFd;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use testbed::agent::identity::Identity;
use testbed::agent::transport::{self, AGENT_PORT, Limits};
use testbed::cps::reading::{Reading, SensorKind};
use testbed::cps::seal;
use testbed::events::Record;

fn fleet(roles: bool) -> String {
    let (hub, cars) = if roles {
        (
            "role = \"heartbeat\"\n",
            "role = \"heartbeat\"\noptions = { to = \"hub\", interval = \"1s\" }\n",
        )
    } else {
        ("", "")
    };
    format!(
        r#"
[lab]
name = "benchfleet"
seed = 1
pool = "10.100.0.0/16"

[[node]]
name = "hub"
kind = "server"
{hub}
[[group]]
name = "cars"
template = "v{{:04}}"
count = 1000
kind = "vehicle"
{cars}
[[segment]]
name = "fleet"
members = ["hub", "cars"]
"#
    )
}

const CONTROLLER: &str = r#"
[lab]
name = "benchcps"
seed = 2

[[node]]
name = "controller"
kind = "controller"
role = "cps-controller"
options = { max_rate = 1000000, max_age = "10s" }

[[group]]
name = "load"
template = "l{}"
count = 4
kind = "sensor"

[[segment]]
name = "iot"
members = ["controller", "load"]
"#;

fn testbed() -> Command {
    Command::new(env!("CARGO_BIN_EXE_testbed"))
}

fn down(lab: &str) {
    let _ = testbed()
        .args(["down", lab])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// `up` of `topology`; returns wall time and the peak RSS (KiB) of `up`.
fn up(topology: &str, dir: &std::path::Path, extra: &[&str]) -> (f64, u64) {
    let path = dir.join("topology.toml");
    std::fs::write(&path, topology).unwrap();
    let out = dir.join("out");
    let t = Instant::now();
    // Reaped by `wait_rusage` (wait4), which also gives its peak RSS.
    #[allow(clippy::zombie_processes)]
    let child = testbed()
        .args(["up", path.to_str().unwrap(), "--out", out.to_str().unwrap()])
        .args(extra)
        .stdout(Stdio::null())
        .spawn()
        .expect("start up");
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let (status, rss) = wait_rusage(pid);
    assert!(status == 0, "up failed ({status})");
    (t.elapsed().as_secs_f64(), rss)
}

/// Wait for `pid`; its exit status and peak RSS in KiB.
fn wait_rusage(pid: nix::unistd::Pid) -> (i32, u64) {
    let mut status = 0;
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `status` and `usage` are valid for writes for the call; `pid`
    // is our own child, not yet waited for.
    let r = unsafe { libc::wait4(pid.as_raw(), &mut status, 0, &mut usage) };
    assert!(
        r == pid.as_raw(),
        "wait4: {}",
        std::io::Error::last_os_error()
    );
    let code = std::process::ExitStatus::from_raw(status)
        .code()
        .unwrap_or(-1);
    (code, usage.ru_maxrss as u64)
}

fn status_kib(pid: u32, field: &str) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

struct FleetRun {
    net_up_s: f64,
    agents_up_s: f64,
    ready_s: f64,
    rss_mib: f64,
    anon_mib: f64,
    up_peak_mib: f64,
    supervisor_mib: f64,
}

fn fleet_run() -> FleetRun {
    let lab = "benchfleet";
    down(lab);
    let dir = tempfile::tempdir().unwrap();
    let (net_up_s, _) = up(&fleet(false), dir.path(), &[]);
    down(lab);
    let (agents_up_s, up_peak) = up(&fleet(true), dir.path(), &[]);
    let events: Vec<Record> = std::fs::read_to_string(dir.path().join("out/events.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let first = events
        .iter()
        .filter(|e| e.event.kind() == "agent-started")
        .map(|e| e.ts_us)
        .min()
        .unwrap();
    let ready: Vec<u64> = events
        .iter()
        .filter(|e| e.event.kind() == "agent-ready")
        .map(|e| e.ts_us)
        .collect();
    assert_eq!(ready.len(), 1001, "every agent ready");
    let last = *ready.iter().max().unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let record = testbed::lab::supervisor::read(lab).expect("supervisor record");
    let (mut rss, mut anon) = (Vec::new(), Vec::new());
    for c in record.children.iter().filter(|c| c.role.is_some()) {
        if let (Some(r), Some(a)) = (status_kib(c.pid, "VmRSS:"), status_kib(c.pid, "RssAnon:")) {
            rss.push(r as f64 / 1024.0);
            anon.push(a as f64 / 1024.0);
        }
    }
    assert!(rss.len() >= 1000, "{} agents measured", rss.len());
    let supervisor_mib = status_kib(record.pid, "VmRSS:").unwrap_or(0) as f64 / 1024.0;
    down(lab);
    FleetRun {
        net_up_s,
        agents_up_s,
        ready_s: (last - first) as f64 / 1e6,
        rss_mib: median(&mut rss),
        anon_mib: median(&mut anon),
        up_peak_mib: up_peak as f64 / 1024.0,
        supervisor_mib,
    }
}

fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let f: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    // utime and stime are fields 14 and 15 (1-based): 11 and 12 after ")".
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    ticks as f64 / 100.0
}

/// Flood for `secs` seconds from the four load identities; returns (accepted
/// per second, accepted per CPU-second of the controller).
fn controller_run(secs: u64) -> (f64, f64) {
    let lab = "benchcps";
    down(lab);
    let dir = tempfile::tempdir().unwrap();
    up(CONTROLLER, dir.path(), &[]);
    let record = testbed::lab::supervisor::read(lab).unwrap();
    let pid = record
        .children
        .iter()
        .find(|c| c.name == "controller")
        .unwrap()
        .pid;
    let hosts = std::fs::read_to_string(testbed::lab::state::hosts_path(lab)).unwrap();
    let addr: std::net::IpAddr = hosts
        .lines()
        .find(|l| l.ends_with("\tcontroller"))
        .and_then(|l| l.split('\t').next())
        .unwrap()
        .parse()
        .unwrap();
    let csv = dir.path().join("out/results.csv");
    let netns = testbed::plan::node_netns(lab, "l1");
    let load = std::thread::spawn(move || {
        let ns = testbed::netlink::netns::open(&netns).unwrap();
        nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async move {
                let mut conns = Vec::new();
                for i in 1..=4 {
                    let name = format!("l{i}");
                    let me = Identity::load(lab, &name).unwrap();
                    let config = transport::client_config(&me, Limits::default(), None).unwrap();
                    let ep = transport::endpoint(
                        transport::bind("0.0.0.0:0".parse().unwrap(), None).unwrap(),
                        None,
                        config,
                    )
                    .unwrap();
                    let conn = ep
                        .connect((addr, AGENT_PORT).into(), "controller")
                        .unwrap()
                        .await
                        .unwrap();
                    let cert = testbed::agent::peer_cert(&conn).unwrap();
                    let keys = testbed::cps::session_keys(&me, &cert, true, &name).unwrap();
                    conns.push((ep, conn, keys, testbed::cps::sensor_id(&name)));
                }
                let end = Instant::now() + Duration::from_secs(secs + 2);
                let mut counter = 0u64;
                while Instant::now() < end {
                    for (_, conn, keys, id) in &conns {
                        let r = Reading {
                            sensor_id: *id,
                            kind: SensorKind::Energy,
                            counter,
                            timestamp_us: testbed::events::unix_us(),
                            value: 1.5,
                        };
                        let _ = conn.send_datagram(seal::seal_reading(keys, &r).into());
                    }
                    counter += 1;
                    if counter.is_multiple_of(16) {
                        tokio::task::yield_now().await;
                    }
                }
            });
    });
    // Count delivered rows of results.csv over a window inside the flood.
    std::thread::sleep(Duration::from_secs(1));
    let rows = |p: &std::path::Path| {
        std::fs::read_to_string(p)
            .map(|t| t.lines().filter(|l| l.contains(",delivered,")).count())
            .unwrap_or(0)
    };
    let (r0, c0, t0) = (rows(&csv), cpu_seconds(pid), Instant::now());
    std::thread::sleep(Duration::from_secs(secs));
    let (r1, c1, t1) = (rows(&csv), cpu_seconds(pid), Instant::now());
    load.join().unwrap();
    down(lab);
    let n = (r1 - r0) as f64;
    (n / (t1 - t0).as_secs_f64(), n / (c1 - c0).max(0.01))
}

fn main() {
    let mut runs = 3;
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--runs") {
        runs = args.get(i + 1).and_then(|n| n.parse().ok()).unwrap_or(3);
    }
    if !nix::unistd::geteuid().is_root() {
        eprintln!("bench agents: needs root (real namespaces); skipped");
        return;
    }
    let mut fl = Vec::new();
    for i in 0..runs {
        eprintln!("fleet run {}/{runs} ...", i + 1);
        fl.push(fleet_run());
    }
    let mut ctl = Vec::new();
    for i in 0..runs {
        eprintln!("controller run {}/{runs} ...", i + 1);
        ctl.push(controller_run(5));
    }
    let m = |f: fn(&FleetRun) -> f64| median(&mut fl.iter().map(f).collect::<Vec<_>>());
    println!("| figure | median of {runs} | target |");
    println!("|---|---|---|");
    println!(
        "| `up` of 1,000 vehicles + hub, network only (baseline) | {:.2} s | |",
        m(|r| r.net_up_s)
    );
    println!(
        "| `up` of the same with 1,001 heartbeat agents | {:.2} s | |",
        m(|r| r.agents_up_s)
    );
    println!(
        "| agents started, connected (mutual-TLS QUIC) and ready after the network is up | {:.2} s | <= 10 s |",
        m(|r| r.ready_s)
    );
    println!(
        "| agent RSS, median over 1,001 | {:.2} MiB (anonymous {:.2} MiB) | <= 6 MiB |",
        m(|r| r.rss_mib),
        m(|r| r.anon_mib)
    );
    println!(
        "| orchestrator (`up`) peak RSS | {:.1} MiB | <= 100 MiB |",
        m(|r| r.up_peak_mib)
    );
    println!(
        "| supervisor RSS with 1,001 agents | {:.1} MiB | |",
        m(|r| r.supervisor_mib)
    );
    let rate = median(&mut ctl.iter().map(|c| c.0).collect::<Vec<_>>());
    let per_cpu = median(&mut ctl.iter().map(|c| c.1).collect::<Vec<_>>());
    println!(
        "| controller: sealed readings accepted per second (4 senders, all checks) | {rate:.0} /s | >= 20,000 /s |"
    );
    println!(
        "| controller: accepted per second of its CPU time (one thread) | {per_cpu:.0} /CPU-s | |"
    );
}
