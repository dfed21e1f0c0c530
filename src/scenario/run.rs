//! Playing a scenario: bring the lab up (or use a running one), play the
//! timeline on the wall clock while scraping metrics once a second, collect
//! events, agents and attack counters, tear down, evaluate the assertions.
//!
//! A run always ends in a [`RunReport`]: a failure to come up or tear down
//! is the report's `error` (and its verdict FAIL), never a half-written
//! report. The lab a run brought up is torn down even if the run panics
//! (a drop guard).

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::assertions::Observed;
use super::prom::{self, Sample};
use super::{Action, Scenario};
use crate::agent::AgentConfig;
use crate::events::{self, Record};
use crate::lab::{self, LabError, UpOptions, attacks, links, state, supervisor};
use crate::report::{AttackSummary, Environment, RunReport, Series, TimelineEntry, Verdict};

/// How to run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Reports, captures and the lab's outputs (`lab/`) go here.
    pub report_dir: PathBuf,
    /// Run on this lab, already up (started with `--metrics`), and leave it up.
    pub existing_lab: Option<String>,
    /// The command line that reproduces the run (for the report).
    pub reproduce: String,
    /// Print each timeline action as it happens.
    pub verbose: bool,
}

/// Tears the lab down when dropped (if this run brought it up).
struct Teardown(Option<String>);

impl Teardown {
    fn now(&mut self) -> Result<(), LabError> {
        match self.0.take() {
            Some(lab) => lab::down(&lab).map(drop),
            None => Ok(()),
        }
    }
}

impl Drop for Teardown {
    fn drop(&mut self) {
        if let Err(e) = self.now() {
            tracing::error!("tearing the scenario's lab down: {e}");
        }
    }
}

/// Runs `scenario`; see the module docs.
pub fn run(scenario: &Scenario, options: &RunOptions) -> RunReport {
    let wall = Instant::now();
    let plan = crate::plan::build(&scenario.topology);
    let lab = options
        .existing_lab
        .clone()
        .unwrap_or_else(|| plan.lab.clone());
    let mut report = RunReport {
        scenario: scenario.name.clone(),
        description: scenario.description.clone(),
        file: scenario.file.display().to_string(),
        topology: scenario.topology_file.display().to_string(),
        lab: lab.clone(),
        seed: scenario.seed,
        started: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        duration_s: scenario.duration.as_secs_f64(),
        wall_s: 0.0,
        environment: environment(&lab),
        verdict: Verdict::Fail,
        error: None,
        assertions: Vec::new(),
        timeline: Vec::new(),
        attacks: Vec::new(),
        series: Vec::new(),
        reproduce: options.reproduce.clone(),
    };
    let observed = match play(scenario, options, &lab, &plan, &mut report) {
        Ok(o) => Some(o),
        Err(e) => {
            report.error = Some(e);
            None
        }
    };
    if let Some(o) = &observed {
        report.assertions = scenario.assertions.iter().map(|a| a.evaluate(o)).collect();
        report.series = series(&o.samples);
    }
    report.environment = environment(&lab);
    report.verdict = Verdict::of(&report.assertions, report.error.as_deref());
    report.wall_s = wall.elapsed().as_secs_f64();
    report
}

fn play(
    scenario: &Scenario,
    options: &RunOptions,
    lab: &str,
    plan: &crate::plan::Plan,
    report: &mut RunReport,
) -> Result<Observed, String> {
    std::fs::create_dir_all(&options.report_dir)
        .map_err(|e| format!("{}: {e}", options.report_dir.display()))?;
    let mut teardown = Teardown(None);
    let (metrics, out) = match &options.existing_lab {
        Some(lab) => {
            let config = supervisor::Config::read(lab)
                .ok_or_else(|| format!("lab {lab} has no supervisor (is it up, with agents?)"))?;
            let addr = config
                .metrics
                .as_deref()
                .and_then(|a| a.parse::<SocketAddr>().ok())
                .ok_or_else(|| format!("lab {lab} serves no metrics; bring it up with --metrics 127.0.0.1:0 or let `run` bring it up"))?;
            (addr, config.out)
        }
        None => {
            let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
            let addr = listener.local_addr().map_err(|e| e.to_string())?;
            let out =
                std::path::absolute(options.report_dir.join("lab")).map_err(|e| e.to_string())?;
            let up = UpOptions {
                out: out.clone(),
                keylog: None,
                metrics: Some(listener),
            };
            teardown.0 = Some(lab.to_string());
            match lab::up(plan, &up, &|_, _, _| {}) {
                Ok(lab::UpOutcome::Created) => {}
                Ok(lab::UpOutcome::AlreadyUp) => {
                    teardown.0 = None;
                    return Err(format!(
                        "lab {lab} is already up; run on it with --lab {lab} (it must serve metrics), or take it down"
                    ));
                }
                Err(e) => {
                    // `up` rolled back what it made.
                    teardown.0 = None;
                    return Err(format!("bringing lab {lab} up: {e}"));
                }
            }
            (addr, out)
        }
    };
    let start = Instant::now();
    let start_us = events::unix_us();
    let samples = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (samples, stop) = (Arc::clone(&samples), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut next = Duration::ZERO;
            while !stop.load(Ordering::Relaxed) {
                if start.elapsed() >= next {
                    take_sample(metrics, start, &samples);
                    next += Duration::from_secs(1);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let mut ids: BTreeMap<String, u64> = BTreeMap::new();
    let mut summaries: Vec<AttackSummary> = Vec::new();
    for entry in &scenario.timeline {
        sleep_until(start + entry.at);
        let at_s = start.elapsed().as_secs_f64();
        let outcome = act(lab, &entry.action, options, &mut ids, &mut summaries, at_s);
        if options.verbose {
            eprintln!(
                "{at_s:>7.2}s  {}  {}",
                entry.action.describe(),
                outcome.as_ref().err().map_or("ok", String::as_str)
            );
        }
        report.timeline.push(TimelineEntry {
            at_s,
            action: entry.action.describe(),
            outcome: outcome.err().unwrap_or_else(|| "ok".to_string()),
        });
    }
    sleep_until(start + scenario.duration);
    let elapsed = start.elapsed();
    stop.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    take_sample(metrics, start, &samples);
    let mut observed = Observed {
        samples: std::mem::take(&mut *samples.lock().unwrap_or_else(PoisonError::into_inner)),
        events: read_events(&out),
        start_us,
        alive: alive(lab),
        attacks: BTreeMap::new(),
        elapsed,
    };
    if !ids.is_empty() {
        let list = attacks::list(lab).map_err(|e| format!("reading attack counters: {e}"))?;
        for (name, id) in &ids {
            if let Some(a) = list.iter().find(|a| a.id == *id) {
                observed.attacks.insert(name.clone(), a.counters);
                if let Some(s) = summaries.iter_mut().find(|s| s.id == *id) {
                    s.matched = a.counters.matched;
                    s.acted = a.counters.acted;
                }
                if !a.stopped {
                    let _ = attacks::stop(lab, *id);
                }
            }
        }
    }
    report.attacks = summaries;
    teardown
        .now()
        .map_err(|e| format!("tearing lab {lab} down: {e}"))?;
    Ok(observed)
}

fn sleep_until(t: Instant) {
    let now = Instant::now();
    if t > now {
        std::thread::sleep(t - now);
    }
}

fn take_sample(addr: SocketAddr, start: Instant, samples: &Mutex<Vec<Sample>>) {
    match prom::scrape(addr) {
        Ok(metrics) => samples
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Sample {
                at: start.elapsed(),
                metrics,
            }),
        Err(e) => tracing::warn!("scraping metrics: {e}"),
    }
}

/// Performs one timeline action; `Err` is the outcome to report.
fn act(
    lab: &str,
    action: &Action,
    options: &RunOptions,
    ids: &mut BTreeMap<String, u64>,
    summaries: &mut Vec<AttackSummary>,
    at_s: f64,
) -> Result<(), String> {
    let e = |e: LabError| e.to_string();
    match action {
        Action::AttackStart {
            name,
            spec,
            capture,
        } => {
            let file = capture.then(|| format!("attack-{name}.pcapng"));
            let path = file.as_ref().map(|f| options.report_dir.join(f));
            let started = attacks::start(lab, spec, path.as_deref()).map_err(e)?;
            ids.insert(name.clone(), started.id);
            summaries.push(AttackSummary {
                id: started.id,
                kind: spec.kind.clone(),
                on: spec.on.clone(),
                filter: spec.filter.clone(),
                started_s: at_s,
                stopped_s: None,
                matched: 0,
                acted: 0,
                capture: file,
            });
            Ok(())
        }
        Action::AttackStop { name } => {
            let id = *ids
                .get(name)
                .ok_or_else(|| format!("attack {name} did not start"))?;
            attacks::stop(lab, id).map_err(e)?;
            if let Some(s) = summaries.iter_mut().find(|s| s.id == id) {
                s.stopped_s = Some(at_s);
            }
            Ok(())
        }
        Action::LinkSet { a, b, dir, change } => links::set(lab, a, b, *dir, change).map_err(e),
        Action::LinkDown { a, b } => links::set_carrier(lab, a, b, false).map_err(e),
        Action::LinkUp { a, b } => links::set_carrier(lab, a, b, true).map_err(e),
        Action::Kill { node } => signal_agent(lab, node, Signal::SIGKILL),
        Action::Restart { node } => signal_agent(lab, node, Signal::SIGTERM),
        Action::Defence {
            node,
            option,
            value,
        } => {
            let path = crate::agent::config_path(lab, node);
            let text = std::fs::read(&path).map_err(|err| format!("{}: {err}", path.display()))?;
            let mut config: AgentConfig = serde_json::from_slice(&text)
                .map_err(|err| format!("{}: {err}", path.display()))?;
            if !config.options.is_object() {
                config.options = serde_json::Value::Object(Default::default());
            }
            config.options[option.as_str()] = value.clone();
            let bytes = serde_json::to_vec_pretty(&config).map_err(|err| err.to_string())?;
            state::write_atomic(&path, &bytes)
                .map_err(|err| format!("{}: {err}", path.display()))?;
            signal_agent(lab, node, Signal::SIGTERM)
        }
    }
}

fn signal_agent(lab: &str, node: &str, signal: Signal) -> Result<(), String> {
    let sup = supervisor::read(lab).ok_or_else(|| format!("lab {lab} has no supervisor"))?;
    let child = sup
        .children
        .iter()
        .find(|c| c.name == node && c.role.is_some())
        .ok_or_else(|| format!("{node} runs no agent"))?;
    if child.pid == 0 {
        return Err(format!(
            "{node}'s agent is not running (waiting to restart)"
        ));
    }
    kill(Pid::from_raw(child.pid as i32), signal)
        .map_err(|err| format!("{signal} to {node}: {err}"))
}

/// Each agent: running (its pid exists) and ready.
fn alive(lab: &str) -> BTreeMap<String, bool> {
    supervisor::read(lab)
        .map(|s| {
            s.children
                .iter()
                .filter(|c| c.role.is_some())
                .map(|c| {
                    let running = c.pid != 0 && kill(Pid::from_raw(c.pid as i32), None).is_ok();
                    (c.name.clone(), running && c.ready)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Most events read back for assertions.
const MAX_EVENTS: usize = 1_000_000;

fn read_events(out: &Path) -> Vec<Record> {
    let Ok(text) = std::fs::read_to_string(events::log_path(out)) else {
        return Vec::new();
    };
    text.lines()
        .take(MAX_EVENTS)
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn environment(lab: &str) -> Environment {
    let uname = nix::sys::utsname::uname().ok();
    Environment {
        testbed_version: env!("CARGO_PKG_VERSION").to_string(),
        git_commit: option_env!("TESTBED_GIT_COMMIT").map(str::to_string),
        kernel: uname
            .as_ref()
            .map(|u| u.release().to_string_lossy().into_owned())
            .unwrap_or_default(),
        backend: state::Impairments::of(lab)
            .map_or_else(|| "unknown".to_string(), |i| i.token().to_string()),
        hostname: uname
            .as_ref()
            .map(|u| u.nodename().to_string_lossy().into_owned())
            .unwrap_or_default(),
    }
}

/// The plotted time series: rates per second between consecutive scrapes.
fn series(samples: &[Sample]) -> Vec<Series> {
    let none = BTreeMap::new();
    let rate = |name: &str, labels: &BTreeMap<String, String>| -> Vec<(f64, f64)> {
        samples
            .windows(2)
            .filter_map(|w| {
                let dt = (w[1].at.saturating_sub(w[0].at)).as_secs_f64();
                let (a, b) = (
                    w[0].metrics.sum(name, labels)?,
                    w[1].metrics.sum(name, labels)?,
                );
                (dt > 0.0).then(|| (w[1].at.as_secs_f64(), (b - a).max(0.0) / dt))
            })
            .collect()
    };
    let mut out = vec![
        Series {
            name: "messages accepted per second (all agents)".into(),
            unit: "msg/s".into(),
            points: rate("testbed_messages_received_total", &none),
        },
        Series {
            name: "inputs rejected per second (all agents)".into(),
            unit: "inputs/s".into(),
            points: rate("testbed_messages_rejected_total", &none),
        },
    ];
    let level = |name: &str, scale: f64| -> Vec<(f64, f64)> {
        samples
            .iter()
            .filter_map(|s| Some((s.at.as_secs_f64(), s.metrics.sum(name, &none)? * scale)))
            .collect()
    };
    let misses = level("testbed_defence_misses_total", 1.0);
    if misses.iter().any(|(_, v)| *v > 0.0) {
        out.push(Series {
            name: "defence misses (inputs accepted that a switched-off defence would refuse)"
                .into(),
            unit: "inputs".into(),
            points: misses,
        });
    }
    out
}
