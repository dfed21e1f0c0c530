//! One function per subcommand: call the library, print the result.

use std::fs::File;
use std::io::{self, IsTerminal, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};

use super::{AttackAction, AttackArgs, Command, DirArg, LinkCommand};
use testbed::capture::{self, Limits, Target};
use testbed::lab::{self, UpOptions, UpOutcome, state};
use testbed::plan::{self, Plan};
use testbed::topology::{self, NodeKind, Topology};

pub fn run(command: Command) -> Result<ExitCode> {
    match command {
        Command::Check { file, json } => check(&file, json),
        Command::Up {
            file,
            dry_run,
            json,
            out,
            keylog,
            metrics,
        } => up(&file, dry_run, json, out, keylog, metrics),
        Command::Events {
            lab,
            follow,
            node,
            kind,
            json,
        } => events(&lab, follow, node.as_deref(), kind.as_deref(), json),
        Command::Logs { lab, node, follow } => logs(&lab, &node, follow),
        Command::Status { lab, json } => status(lab.as_deref(), json),
        Command::Exec { lab, node, command } => exec(&lab, &node, &command),
        Command::Shell { lab, node } => shell(&lab, &node),
        Command::Capture {
            lab,
            targets,
            write,
            count,
            duration,
        } => capture_cmd(&lab, &targets, &write, Limits { count, duration }),
        Command::Link(cmd) => link(cmd),
        Command::Attack(args) => attack(args),
        Command::Run {
            scenario,
            report_dir,
            lab,
            seed,
            name,
            json,
        } => run_scenario(
            &scenario,
            &report_dir,
            lab.as_deref(),
            seed,
            name.as_deref(),
            json,
        ),
        Command::Down { lab } => down(&lab),
        Command::Clean { lab, all } => clean(lab.as_deref(), all),
        Command::Supervise { lab } => {
            lab::supervise(&lab)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Engine { lab } => {
            testbed::engine::run(&lab)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn load(file: &Path) -> Result<Topology> {
    Ok(topology::load(file)?)
}

fn check(file: &Path, json: bool) -> Result<ExitCode> {
    let topo = load(file)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&topo)?);
        return Ok(ExitCode::SUCCESS);
    }
    let kinds: Vec<String> = NodeKind::ALL
        .iter()
        .filter_map(|k| {
            let n = topo.nodes.iter().filter(|node| node.kind == *k).count();
            (n > 0).then(|| format!("{n} {}", k.as_str()))
        })
        .collect();
    println!("{}: valid", file.display());
    println!(
        "  lab       {} (seed {}, backend {}, pool {})",
        topo.lab.name, topo.lab.seed, topo.lab.backend, topo.lab.pool4
    );
    println!("  nodes     {} ({})", topo.nodes.len(), kinds.join(", "));
    for s in &topo.segments {
        println!(
            "  segment   {:<12} {:<18} {} members, profile {}",
            s.name,
            s.subnet.to_string(),
            s.members.len(),
            s.profile.as_deref().unwrap_or("none")
        );
    }
    for l in &topo.links {
        println!(
            "  link      {:<12} {:<18} {} -- {}",
            l.name,
            l.subnet.to_string(),
            topo.nodes[l.a.node].name,
            topo.nodes[l.b.node].name
        );
    }
    let profiles: Vec<&str> = topo.profiles.keys().map(String::as_str).collect();
    println!(
        "  profiles  {}",
        if profiles.is_empty() {
            "none".to_string()
        } else {
            profiles.join(", ")
        }
    );
    Ok(ExitCode::SUCCESS)
}

fn up(
    file: &Path,
    dry_run: bool,
    json: bool,
    out: Option<PathBuf>,
    keylog: Option<PathBuf>,
    metrics: Option<SocketAddr>,
) -> Result<ExitCode> {
    let topo = load(file)?;
    let mut plan = plan::build(&topo);
    if dry_run {
        if plan.backend == topology::Backend::Userspace {
            plan.route_through_engine();
        }
        if json {
            println!("{}", serde_json::to_string_pretty(&plan)?);
        } else {
            print!("{plan}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let cwd = std::env::current_dir()?;
    let out = cwd.join(out.unwrap_or_else(|| Path::new("testbed-out").join(&plan.lab)));
    let options = UpOptions {
        out: out.clone(),
        keylog: keylog.map(|k| cwd.join(k)),
        metrics: metrics
            .map(|a| TcpListener::bind(a).with_context(|| format!("--metrics {a}")))
            .transpose()?,
    };
    let start = Instant::now();
    let bar = progress_bar();
    let report = |what: &str, done: usize, total: usize| {
        if let Some(bar) = &bar {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
            bar.set_message(what.to_string());
        }
    };
    let outcome = lab::up(&plan, &options, &report);
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    match outcome? {
        UpOutcome::AlreadyUp => println!(
            "lab {} is already up with this topology; nothing to do",
            plan.lab
        ),
        UpOutcome::Created => println!(
            "lab {} is up: {} nodes, {} bridges, {} links in {:.2}s; backend {}, impairments: {}",
            plan.lab,
            plan.nodes.len(),
            plan.infra.bridges.len(),
            plan.links.len(),
            start.elapsed().as_secs_f64(),
            plan.backend,
            state::Impairments::of(&plan.lab).map_or("unknown", |i| i.describe())
        ),
    }
    let agents = plan.nodes.iter().filter(|n| n.role.is_some()).count();
    if agents > 0 {
        println!("{agents} agents ready; outputs in {}", out.display());
        if let Some(l) = &options.metrics {
            println!("metrics: http://{}/metrics", l.local_addr()?);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The output folder of a lab that runs agents.
fn out_dir(lab: &str) -> Result<PathBuf> {
    testbed::lab::supervisor::out_dir(lab)
        .with_context(|| format!("lab {lab} is not up, or runs no agents (see `testbed status`)"))
}

fn events(
    lab: &str,
    follow: bool,
    node: Option<&str>,
    kind: Option<&str>,
    json: bool,
) -> Result<ExitCode> {
    let path = testbed::events::log_path(&out_dir(lab)?);
    let show = |line: &str| -> Result<()> {
        let record: testbed::events::Record = serde_json::from_str(line)
            .with_context(|| format!("{}: not an event: {line}", path.display()))?;
        if node.is_some_and(|n| n != record.node) || kind.is_some_and(|k| k != record.event.kind())
        {
            return Ok(());
        }
        let mut stdout = io::stdout().lock();
        if json {
            writeln!(stdout, "{line}")?;
        } else {
            let mut fields = serde_json::to_value(&record.event)?;
            if let Some(map) = fields.as_object_mut() {
                map.remove("kind");
            }
            let time = std::time::UNIX_EPOCH + std::time::Duration::from_micros(record.ts_us);
            writeln!(
                stdout,
                "{} {:>6} {:<12} {:<22} {}",
                humantime::format_rfc3339_millis(time),
                record.seq,
                record.node,
                record.event.kind(),
                fields
            )?;
        }
        Ok(())
    };
    tail_lines(&path, follow, lab, show)?;
    Ok(ExitCode::SUCCESS)
}

fn logs(lab: &str, node: &str, follow: bool) -> Result<ExitCode> {
    let path = testbed::lab::supervisor::agent_log(&out_dir(lab)?, node);
    if !path.exists() {
        bail!(
            "{}: no such log; is {node} a node with a role in lab {lab}?",
            path.display()
        );
    }
    tail_lines(&path, follow, lab, |line| {
        writeln!(io::stdout().lock(), "{line}")?;
        Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Every complete line of `path`; with `follow`, then new ones as they are
/// written, until the lab is gone.
fn tail_lines(
    path: &Path,
    follow: bool,
    lab: &str,
    mut each: impl FnMut(&str) -> Result<()>,
) -> Result<()> {
    use std::io::{BufRead, BufReader};
    let file = File::open(path).with_context(|| format!("{}", path.display()))?;
    let mut reader = BufReader::new(file);
    let mut line = String::new();
    loop {
        let n = reader.read_line(&mut line)?;
        if n > 0 && line.ends_with('\n') {
            each(line.trim_end())?;
            line.clear();
            continue;
        }
        if !follow {
            return Ok(());
        }
        if !state::lab_dir(lab).exists() {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

fn progress_bar() -> Option<ProgressBar> {
    if !io::stderr().is_terminal() {
        return None;
    }
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg:>10} [{bar:30}] {pos}/{len}")
            .ok()?
            .progress_chars("=> "),
    );
    Some(bar)
}

fn status(lab: Option<&str>, json: bool) -> Result<ExitCode> {
    let Some(lab) = lab else {
        let labs = state::list_labs()?;
        let rows: Vec<(String, String)> = labs
            .iter()
            .map(|l| {
                let st = match lab::status(l) {
                    Ok(s) => format!("{} ({} nodes)", s.state, s.nodes.len()),
                    Err(testbed::lab::LabError::Incomplete(_)) => {
                        "incomplete (run `testbed clean`)".to_string()
                    }
                    Err(e) => format!("error: {e}"),
                };
                (l.clone(), st)
            })
            .collect();
        if json {
            let v: Vec<_> = rows
                .iter()
                .map(|(l, s)| serde_json::json!({"lab": l, "state": s}))
                .collect();
            println!("{}", serde_json::to_string_pretty(&v)?);
        } else if rows.is_empty() {
            println!("no labs");
        } else {
            for (l, s) in rows {
                println!("{l:<16} {s}");
            }
        }
        return Ok(ExitCode::SUCCESS);
    };
    let st = lab::status(lab)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&st)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "lab {}: {} (backend {}; impairments: {})",
        st.lab, st.state, st.backend, st.impairments
    );
    if let Some(e) = &st.engine {
        let pid = |p: Option<u32>| p.map_or("not running".to_string(), |p| format!("pid {p}"));
        println!(
            "engine: {} links, {}, supervisor {}; restarts {}{}",
            e.links,
            pid(e.pid),
            pid(e.supervisor_pid.filter(|_| e.supervisor_alive)),
            e.restarts,
            e.last_exit
                .as_deref()
                .map_or(String::new(), |x| format!(" (last exit: {x})"))
        );
    }
    if !st.agents.is_empty() {
        let ready = st.agents.iter().filter(|a| a.ready).count();
        let restarts: u32 = st.agents.iter().map(|a| a.restarts).sum();
        println!(
            "agents: {} ({ready} ready, {restarts} restarts); outputs in {}",
            st.agents.len(),
            st.out.as_deref().unwrap_or("?")
        );
        for a in st.agents.iter().filter(|a| a.restarts > 0 || !a.ready) {
            println!(
                "  {} ({}): {}, {} restarts{}",
                a.node,
                a.role,
                if a.ready { "ready" } else { "not ready" },
                a.restarts,
                a.last_exit
                    .as_deref()
                    .map_or(String::new(), |x| format!(", last exit: {x}"))
            );
        }
    }
    println!("\nSEGMENT          SUBNET             MEMBERS  BRIDGES");
    for s in &st.segments {
        println!(
            "{:<16} {:<18} {:<8} {}",
            s.name,
            s.subnet,
            s.members,
            s.bridges.join(",")
        );
    }
    if !st.links.is_empty() {
        println!("\nLINK             ENDS");
        for l in &st.links {
            println!("{:<16} {} -- {}", l.name, l.a, l.b);
        }
    }
    println!("\nNODE             KIND        NETNS                    INTERFACES");
    for n in &st.nodes {
        let ifaces: Vec<String> = n
            .interfaces
            .iter()
            .map(|i| format!("{}={} ({})", i.name, i.address, i.network))
            .collect();
        let mark = if n.present { "" } else { " MISSING" };
        println!(
            "{:<16} {:<11} {:<24} {}{mark}",
            n.name,
            n.kind,
            n.netns,
            ifaces.join(" ")
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn running_plan(lab: &str) -> Result<Plan> {
    state::read_plan(lab)?
        .with_context(|| format!("no lab named {lab} is up (see `testbed status`)"))
}

fn exec(lab: &str, node: &str, command: &[String]) -> Result<ExitCode> {
    let plan = running_plan(lab)?;
    lab::enter_node(&plan, node)?;
    let err = std::process::Command::new(&command[0])
        .args(&command[1..])
        .env("TESTBED_LAB", lab)
        .env("TESTBED_NODE", node)
        .exec();
    bail!("cannot run {}: {err}", command[0])
}

fn shell(lab: &str, node: &str) -> Result<ExitCode> {
    let plan = running_plan(lab)?;
    lab::enter_node(&plan, node)?;
    let sh = std::env::var("SHELL").unwrap_or_else(|_| "/bin/bash".to_string());
    eprintln!("entering {node} of lab {lab}; `exit` leaves");
    let err = std::process::Command::new(&sh)
        .env("TESTBED_LAB", lab)
        .env("TESTBED_NODE", node)
        .env("PS1", format!("[{lab}:{node}] \\w\\$ "))
        .exec();
    bail!("cannot run {sh}: {err}")
}

fn capture_cmd(lab: &str, specs: &[String], write: &Path, limits: Limits) -> Result<ExitCode> {
    let plan = running_plan(lab)?;
    let mut targets = Vec::new();
    for spec in specs {
        let (node, iface) = match spec.split_once(':') {
            Some((n, i)) => (n, Some(i)),
            None => (spec.as_str(), None),
        };
        let np = plan
            .node(node)
            .with_context(|| format!("lab {lab} has no node {node}"))?;
        let mut matched = false;
        for i in np
            .ifaces
            .iter()
            .filter(|i| iface.is_none_or(|want| want == i.name))
        {
            matched = true;
            targets.push(Target {
                netns: np.netns.clone(),
                ifname: i.name.clone(),
                label: format!("{}:{}", np.name, i.name),
            });
        }
        if !matched {
            let names: Vec<&str> = np.ifaces.iter().map(|i| i.name.as_str()).collect();
            bail!(
                "node {node} has no interface {}; it has {}",
                iface.unwrap_or("?"),
                names.join(", ")
            );
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop))?;
    }
    let stats = if write == Path::new("-") {
        capture::capture(&targets, io::stdout().lock(), &limits, &stop)?
    } else {
        let file =
            File::create(write).with_context(|| format!("cannot create {}", write.display()))?;
        let mut out = io::BufWriter::new(file);
        let stats = capture::capture(&targets, &mut out, &limits, &stop)?;
        out.flush()?;
        stats
    };
    eprintln!(
        "{} packets captured from {} interfaces ({} dropped by the kernel)",
        stats.packets,
        targets.len(),
        stats.dropped_by_kernel
    );
    Ok(ExitCode::SUCCESS)
}

fn link(cmd: LinkCommand) -> Result<ExitCode> {
    use testbed::emulation::{parse_duration, parse_percent, parse_rate};
    use testbed::lab::links::{self, Change, Dir};
    match cmd {
        LinkCommand::Show { lab, nodes, json } => {
            let between = (nodes.len() == 2).then(|| (nodes[0].as_str(), nodes[1].as_str()));
            let rows = links::show(&lab, between)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else if rows.is_empty() {
                println!("lab {lab}: no impaired links");
            } else {
                println!(
                    "FROM             IFACE  NETWORK          STATE VIA    DELAY    JITTER   LOSS%  DUP%   CORR%  REORD% RATE         LIMIT  SENT       DROPPED  DUPED    REORD    CORR     QLEN"
                );
                let pct = |p: Option<f64>| p.map_or("-".to_string(), |v| format!("{v:.2}"));
                let count = |c: Option<u64>| c.map_or("-".to_string(), |v| v.to_string());
                for r in rows {
                    println!(
                        "{:<16} {:<6} {:<16} {:<5} {:<6} {:<8} {:<8} {:<6} {:<6} {:<6} {:<6} {:<12} {:<6} {:<10} {:<8} {:<8} {:<8} {:<8} {}",
                        r.from,
                        r.iface,
                        r.network,
                        if r.up { "up" } else { "down" },
                        r.via,
                        r.delay.as_deref().unwrap_or("-"),
                        r.jitter.as_deref().unwrap_or("-"),
                        pct(r.loss_percent),
                        pct(r.duplicate_percent),
                        pct(r.corrupt_percent),
                        pct(r.reorder_percent),
                        r.rate.as_deref().unwrap_or("-"),
                        r.limit.map_or("-".to_string(), |l| l.to_string()),
                        r.sent_packets,
                        r.dropped,
                        count(r.duplicated),
                        count(r.reordered),
                        count(r.corrupted),
                        r.queue_len
                    );
                }
            }
        }
        LinkCommand::Set {
            lab,
            a,
            b,
            dir,
            delay,
            jitter,
            loss,
            duplicate,
            corrupt,
            reorder,
            rate,
            limit,
        } => {
            let unit = |what: &str, v: &str, e: testbed::emulation::UnitError| {
                anyhow::anyhow!("--{what} {v}: {}", e.message())
            };
            let dur = |what: &str, v: Option<String>| {
                v.map(|v| parse_duration(&v).map_err(|e| unit(what, &v, e)))
                    .transpose()
            };
            let pct = |what: &str, v: Option<String>| {
                v.map(|v| parse_percent(&v).map_err(|e| unit(what, &v, e)))
                    .transpose()
            };
            let change = Change {
                delay_ns: dur("delay", delay)?,
                jitter_ns: dur("jitter", jitter)?,
                loss: pct("loss", loss)?,
                duplicate: pct("duplicate", duplicate)?,
                corrupt: pct("corrupt", corrupt)?,
                reorder: pct("reorder", reorder)?,
                rate_bps: rate
                    .map(|v| parse_rate(&v).map_err(|e| unit("rate", &v, e)))
                    .transpose()?,
                limit,
            };
            if change == Change::default() {
                bail!(
                    "nothing to change: give at least one of --delay --jitter --loss --duplicate --corrupt --reorder --rate --limit"
                );
            }
            let dir = match dir {
                DirArg::AToB => Dir::AToB,
                DirArg::BToA => Dir::BToA,
                DirArg::Both => Dir::Both,
            };
            links::set(&lab, &a, &b, dir, &change)?;
            println!("link {a} -- {b} of lab {lab} changed");
        }
        LinkCommand::Down { lab, a, b } => {
            links::set_carrier(&lab, &a, &b, false)?;
            println!("link {a} -- {b} of lab {lab} is down");
        }
        LinkCommand::Up { lab, a, b } => {
            links::set_carrier(&lab, &a, &b, true)?;
            println!("link {a} -- {b} of lab {lab} is up");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn down(lab: &str) -> Result<ExitCode> {
    let start = Instant::now();
    let removed = lab::down(lab)?;
    println!(
        "lab {lab} is down: {} namespaces, {} processes removed in {:.2}s",
        removed.namespaces,
        removed.processes,
        start.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}

fn clean(lab: Option<&str>, all: bool) -> Result<ExitCode> {
    if all {
        let done = lab::clean_all()?;
        if done.is_empty() {
            println!("nothing to clean");
        }
        for (lab, r) in done {
            println!(
                "{lab}: removed {} namespaces, {} processes",
                r.namespaces, r.processes
            );
        }
    } else if let Some(lab) = lab {
        let r = lab::clean(lab)?;
        println!(
            "{lab}: removed {} namespaces, {} processes",
            r.namespaces, r.processes
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn attack(args: AttackArgs) -> Result<ExitCode> {
    use testbed::attack::{AttackSpec, library};
    use testbed::lab::attacks;
    let need_lab = || {
        args.lab
            .clone()
            .context("name the lab: testbed attack LAB start|list|stop")
    };
    match args.action {
        AttackAction::ListKinds => print!("{}", library::describe_kinds()),
        AttackAction::Start {
            kind,
            on,
            filter,
            after,
            duration,
            count,
            params,
            seed,
            capture,
        } => {
            let lab = need_lab()?;
            let params = params
                .iter()
                .map(|p| {
                    p.split_once('=')
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .with_context(|| format!("--param {p}: expected NAME=VALUE"))
                })
                .collect::<Result<_>>()?;
            let spec = AttackSpec {
                kind,
                on,
                filter,
                after,
                duration,
                count,
                params,
                seed,
            };
            let started = attacks::start(&lab, &spec, capture.as_deref())?;
            println!("{}", started.id);
            eprintln!("attack {} on {}", started.id, started.lanes.join(", "));
        }
        AttackAction::List { json } => {
            let list = attacks::list(&need_lab()?)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                println!(
                    "ID   KIND       ON                 STATE    MATCHED    ACTED      INJECTED   FILTER"
                );
                for a in list {
                    let state = if a.stopped {
                        "stopped"
                    } else if a.active {
                        "active"
                    } else {
                        "done"
                    };
                    println!(
                        "{:<4} {:<10} {:<18} {:<8} {:<10} {:<10} {:<10} {}",
                        a.id,
                        a.spec.kind,
                        a.spec.on,
                        state,
                        a.counters.matched,
                        a.counters.acted,
                        a.counters.injected,
                        if a.spec.filter.is_empty() {
                            "any"
                        } else {
                            &a.spec.filter
                        }
                    );
                }
            }
        }
        AttackAction::Stop { id } => attacks::stop(&need_lab()?, id)?,
    }
    Ok(ExitCode::SUCCESS)
}

fn run_scenario(
    file: &Path,
    report_dir: &Path,
    lab: Option<&str>,
    seed: Option<u64>,
    name: Option<&str>,
    json: bool,
) -> Result<ExitCode> {
    use testbed::scenario::{self, RunOptions};
    let mut scenario = scenario::load(file, seed)?;
    if let Some(name) = name {
        scenario
            .rename_lab(name)
            .map_err(|e| anyhow::anyhow!("--name {name}: {e}"))?;
    }
    let reproduce = format!(
        "sudo testbed run {} --seed {}{}",
        file.display(),
        scenario.seed,
        lab.map_or(String::new(), |l| format!(" --lab {l}"))
    );
    eprintln!(
        "scenario {}: lab {}, seed {}, {} timeline entries, {} assertions, {}",
        scenario.name,
        lab.unwrap_or(&scenario.topology.lab.name),
        scenario.seed,
        scenario.timeline.len(),
        scenario.assertions.len(),
        humantime::format_duration(scenario.duration)
    );
    let options = RunOptions {
        report_dir: report_dir.to_path_buf(),
        existing_lab: lab.map(str::to_string),
        reproduce,
        verbose: true,
    };
    let report = scenario::run(&scenario, &options);
    report
        .write(report_dir)
        .with_context(|| format!("writing reports to {}", report_dir.display()))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    eprint!("{}", report.verdict_table(io::stderr().is_terminal()));
    eprintln!(
        "reports: {}/report.html, junit.xml, report.json ({:.1}s)",
        report_dir.display(),
        report.wall_s
    );
    Ok(if report.verdict == testbed::report::Verdict::Pass {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
