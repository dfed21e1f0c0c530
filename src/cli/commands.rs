//! One function per subcommand: call the library, print the result.

use std::fs::File;
use std::io::{self, IsTerminal, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};

use super::Command;
use testbed::capture::{self, Limits, Target};
use testbed::lab::{self, UpOutcome, state};
use testbed::plan::{self, Plan};
use testbed::topology::{self, NodeKind, Topology};

pub fn run(command: Command) -> Result<ExitCode> {
    match command {
        Command::Check { file, json } => check(&file, json),
        Command::Up {
            file,
            dry_run,
            json,
        } => up(&file, dry_run, json),
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
        Command::Down { lab } => down(&lab),
        Command::Clean { lab, all } => clean(lab.as_deref(), all),
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

fn up(file: &Path, dry_run: bool, json: bool) -> Result<ExitCode> {
    let topo = load(file)?;
    let plan = plan::build(&topo);
    if dry_run {
        if json {
            println!("{}", serde_json::to_string_pretty(&plan)?);
        } else {
            print!("{plan}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let start = Instant::now();
    let bar = progress_bar();
    let report = |what: &str, done: usize, total: usize| {
        if let Some(bar) = &bar {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
            bar.set_message(what.to_string());
        }
    };
    let outcome = lab::up(&plan, &report);
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
            std::fs::read_to_string(state::backend_path(&plan.lab))
                .unwrap_or_default()
                .trim()
        ),
    }
    Ok(ExitCode::SUCCESS)
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
