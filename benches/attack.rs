//! Benchmark of the attacker (root for parts 2 and 3; `scripts/bench-attack`
//! runs it).
//!
//! 1. Per frame, in-process: the time from push to release through one
//!    direction's pipeline for frames the attacker only forwards (an attack
//!    installed whose filter does not match them, the usual case on a busy
//!    link), against the engine alone (no attack stage), interleaved in the
//!    same run. Figure: p99 added [<= 100 us].
//! 2. On a live lab, through the real engine: ping round trips across an
//!    `in_path` LAN with a non-matching attack running on it, against no
//!    attack, in alternating rounds of the same run (each crossing passes the
//!    attacker twice).
//! 3. A 60 s scenario on 200 nodes (a controller, 198 UDP sensors, an
//!    attacker replaying one sensor's readings): `testbed run` wall time,
//!    teardown included [<= 75 s], against `up` + `down` of the same lab.
//!
//! Progress goes to stderr, a markdown fragment for docs/perf.md to stdout.
//! Usage: `cargo bench --bench attack -- [--runs N] [--quick]`.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use testbed::attack::matcher::Matcher;
use testbed::attack::primitives::{Primitive, Program};
use testbed::attack::stage::{Armed, AttackStage};
use testbed::attack::{Directory, packet};
use testbed::emulation::pipeline::{DirectionParams, Pipeline};

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    let i = ((v.len() as f64 - 1.0) * p / 100.0).round() as usize;
    v[i.min(v.len() - 1)]
}

fn median(v: &mut [f64]) -> f64 {
    percentile(v, 50.0)
}

/// A QUIC-sized UDP frame from 10.0.0.2:50000 to 10.0.0.1:4433.
fn frame() -> Vec<u8> {
    packet::build_udp(
        [2, 0, 0, 0, 0, 2],
        [2, 0, 0, 0, 0, 1],
        "10.0.0.2:50000".parse().unwrap(),
        "10.0.0.1:4433".parse().unwrap(),
        &[0x42; 1200],
    )
    .unwrap()
}

/// Nanoseconds from push to release, per frame, through `p` (no delay
/// configured, so every frame leaves at once).
fn per_frame(p: &mut Pipeline, frames: usize) -> Vec<f64> {
    let f = frame();
    let mut out = Vec::with_capacity(frames);
    let clock = Instant::now();
    for _ in 0..frames {
        let mut buf = p.take_buffer();
        buf.extend_from_slice(&f);
        let t = Instant::now();
        let now = clock.elapsed().as_nanos() as u64;
        p.push(now, buf);
        let released: Vec<Vec<u8>> = p.pop_due(now).map(|r| r.frame.data).collect();
        out.push(t.elapsed().as_nanos() as f64);
        for b in released {
            p.recycle(b);
        }
    }
    out
}

fn in_process(runs: usize) -> (f64, f64, f64, f64) {
    let mut dir = Directory::default();
    dir.insert(
        "s-temp",
        "lan",
        "10.0.0.9".parse().unwrap(),
        [2, 0, 0, 0, 0, 9],
    );
    let matcher = Matcher::parse("udp dst port 4434 and src node s-temp", &|n| {
        dir.addresses(n)
    })
    .expect("filter");
    let (mut base50, mut base99, mut atk50, mut atk99) = (vec![], vec![], vec![], vec![]);
    for _ in 0..runs {
        let mut alone = Pipeline::new(DirectionParams::default()).unwrap();
        let mut attacked = Pipeline::new(DirectionParams::default()).unwrap();
        let mut stage = AttackStage::new();
        stage.start(
            0,
            Armed {
                id: 1,
                matcher: matcher.clone(),
                program: Arc::new(Program {
                    steps: vec![Primitive::Drop { probability: 1.0 }],
                    inject: None,
                }),
                after: Duration::ZERO,
                duration: None,
                budget: None,
                seed: 1,
                capture: None,
            },
        );
        attacked.insert_stage(0, Box::new(stage));
        // Warm up, then interleave blocks so both see the same machine.
        per_frame(&mut alone, 10_000);
        per_frame(&mut attacked, 10_000);
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for _ in 0..20 {
            a.extend(per_frame(&mut alone, 10_000));
            b.extend(per_frame(&mut attacked, 10_000));
        }
        base50.push(percentile(&mut a, 50.0));
        base99.push(percentile(&mut a, 99.0));
        atk50.push(percentile(&mut b, 50.0));
        atk99.push(percentile(&mut b, 99.0));
    }
    (
        median(&mut base50),
        median(&mut base99),
        median(&mut atk50),
        median(&mut atk99),
    )
}

fn testbed(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_testbed"))
        .args(args)
        .output()
        .expect("run testbed")
}

fn ok(args: &[&str]) -> String {
    let out = testbed(args);
    assert!(
        out.status.success(),
        "testbed {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

const LAN: &str = r#"
[lab]
name = "benchatk"

[[node]]
name = "a"
kind = "host"

[[node]]
name = "b"
kind = "host"

[[segment]]
name = "lan"
members = ["a", "b"]
in_path = true
"#;

/// RTTs in µs of `count` pings from a to b.
fn pings(count: u32) -> Vec<f64> {
    let out = ok(&[
        "exec",
        "benchatk",
        "a",
        "--",
        "ping",
        "-c",
        &count.to_string(),
        "-i",
        "0.002",
        "-n",
        "b",
    ]);
    out.lines()
        .filter_map(|l| {
            l.split("time=")
                .nth(1)?
                .split(' ')
                .next()?
                .parse::<f64>()
                .ok()
        })
        .map(|ms| ms * 1e3)
        .collect()
}

fn live(dir: &Path, runs: usize) -> (f64, f64, f64, f64) {
    let topo = dir.join("lan.toml");
    std::fs::write(&topo, LAN).unwrap();
    let _ = testbed(&["down", "benchatk"]);
    ok(&[
        "up",
        topo.to_str().unwrap(),
        "--out",
        dir.join("out").to_str().unwrap(),
    ]);
    pings(200);
    let (mut base, mut atk) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        for _ in 0..5 {
            base.extend(pings(400));
            let id = ok(&[
                "attack",
                "benchatk",
                "start",
                "drop",
                "--on",
                "lan",
                "--match",
                "udp dst port 4434 and src host 10.9.9.9",
            ]);
            atk.extend(pings(400));
            ok(&["attack", "benchatk", "stop", id.trim()]);
        }
    }
    ok(&["down", "benchatk"]);
    (
        percentile(&mut base.clone(), 50.0),
        percentile(&mut base, 99.0),
        percentile(&mut atk.clone(), 50.0),
        percentile(&mut atk, 99.0),
    )
}

fn fleet_topology() -> String {
    r#"
[lab]
name = "benchscn"
seed = 5

[[node]]
name = "controller"
kind = "controller"
role = "cps-controller"
options = { max_sensors = 512, max_connections = 512 }

[[group]]
name = "sensors"
template = "s{:03}"
count = 198
kind = "sensor"
role = "cps-sensor"
options = { sensor = "temperature", interval = "1s", transport = "udp" }

[[node]]
name = "mallory"
kind = "attacker"

[[segment]]
name = "lan"
members = ["controller", "sensors", "mallory"]
in_path = true
"#
    .to_string()
}

const SCENARIO: &str = r#"
[scenario]
name = "bench-200"
description = "200 nodes for 60 s with a replay attack (benchmark)."
topology = "fleet.toml"
duration = "60s"

[[timeline]]
at = "10s"
action = "attack-start"
name = "replay"
kind = "replay"
on = "lan"
match = "udp dst port 4434 and src node s001"
count = 30
params = { after = "1s" }

[[assert]]
name = "replays refused"
metric = "testbed_messages_rejected_total"
labels = { node = "controller", reason = "replayed" }
min = 25

[[assert]]
name = "readings accepted"
metric = "testbed_messages_received_total"
labels = { node = "controller" }
per_second = true
min = 150
"#;

fn scenario(dir: &Path, runs: usize) -> (f64, f64, bool) {
    std::fs::write(dir.join("fleet.toml"), fleet_topology()).unwrap();
    std::fs::write(dir.join("bench-200.toml"), SCENARIO).unwrap();
    let (mut walls, mut updowns) = (Vec::new(), Vec::new());
    let mut passed = true;
    for r in 0..runs {
        let _ = testbed(&["down", "benchscn"]);
        let t = Instant::now();
        let report = dir.join(format!("report{r}"));
        let out = testbed(&[
            "run",
            dir.join("bench-200.toml").to_str().unwrap(),
            "--report-dir",
            report.to_str().unwrap(),
        ]);
        let wall = t.elapsed().as_secs_f64();
        passed &= out.status.success();
        eprintln!(
            "  scenario run {r}: {wall:.1} s, {}",
            if out.status.success() { "PASS" } else { "FAIL" }
        );
        if !out.status.success() {
            eprintln!("{}", String::from_utf8_lossy(&out.stderr));
        }
        walls.push(wall);
        let t = Instant::now();
        ok(&[
            "up",
            dir.join("fleet.toml").to_str().unwrap(),
            "--out",
            dir.join("o").to_str().unwrap(),
        ]);
        ok(&["down", "benchscn"]);
        updowns.push(t.elapsed().as_secs_f64());
    }
    (median(&mut walls), median(&mut updowns), passed)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let runs = args
        .iter()
        .position(|a| a == "--runs")
        .and_then(|i| args.get(i + 1)?.parse().ok())
        .unwrap_or(3);
    let quick = args.iter().any(|a| a == "--quick");
    eprintln!("1/3 per-frame cost in the pipeline ({runs} runs)");
    let (b50, b99, a50, a99) = in_process(runs);
    println!(
        "| attacker, frames it only forwards (in-process, 200k frames x {runs} runs) | engine alone | with attacker | added |"
    );
    println!("|---|---|---|---|");
    println!(
        "| p50 push-to-release | {:.2} us | {:.2} us | {:+.2} us |",
        b50 / 1e3,
        a50 / 1e3,
        (a50 - b50) / 1e3
    );
    println!(
        "| p99 push-to-release | {:.2} us | {:.2} us | {:+.2} us [<= 100 us] |",
        b99 / 1e3,
        a99 / 1e3,
        (a99 - b99) / 1e3
    );
    println!();
    if !nix::unistd::geteuid().is_root() {
        eprintln!("parts 2 and 3 need root; skipped");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    eprintln!("2/3 ping through the engine, with and without an attack");
    let (lb50, lb99, la50, la99) = live(dir.path(), runs);
    println!(
        "| ping RTT across an in_path LAN (2,000 per case per run, alternating) | engine alone | with attacker | added |"
    );
    println!("|---|---|---|---|");
    println!(
        "| p50 | {lb50:.0} us | {la50:.0} us | {:+.0} us |",
        la50 - lb50
    );
    println!(
        "| p99 | {lb99:.0} us | {la99:.0} us | {:+.0} us |",
        la99 - lb99
    );
    println!();
    if quick {
        return;
    }
    eprintln!("3/3 a 60 s scenario on 200 nodes");
    let (wall, updown, passed) = scenario(dir.path(), runs.min(3));
    println!("| 60 s scenario, 200 nodes (controller, 198 UDP sensors, replay attack) | wall |");
    println!("|---|---|");
    println!(
        "| `testbed run`, teardown included (median) | {wall:.1} s [<= 75 s]; verdict {} |",
        if passed { "PASS" } else { "FAIL" }
    );
    println!("| baseline: `up` + `down` of the same lab | {updown:.1} s |");
}
