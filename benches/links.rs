//! Benchmark of the userspace engine against a direct veth, in one lab, in
//! the same run (root only; `scripts/bench-links` runs it).
//!
//! The lab (`backend = "userspace"`) has point-to-point links `aK -- bK`:
//! 0 through the engine with no impairment, 1 a direct veth (the baseline),
//! 2 through the engine with 20 ms one way, 3 and 4 through the engine at
//! 100 Mbit/s and 1 Gbit/s. Figures (issue 3's targets in brackets):
//!
//! - latency the engine adds at zero delay (ping RTT through link 0 minus
//!   link 1; an RTT crosses the engine twice) [p50 <= 30 us, p99 <= 150 us];
//! - delay accuracy: one-way delay of UDP at 10,000 packets/s over link 2
//!   minus 20 ms (same-process monotonic clock at both ends) [p99 <= 0.5 ms];
//! - TCP throughput (iperf3) through link 0 and link 1 [>= 5 Gbit/s], and
//!   links 3 and 4 against their rate [within 1 %];
//! - small-frame forwarding: a UDP flood over link 0 and link 1, frames the
//!   engine forwarded per second and per second of its CPU time [>= 200,000].
//!
//! Progress goes to stderr, a markdown fragment for docs/perf.md to stdout.
//! Usage: `cargo bench --bench links -- [--runs N]`.

use std::collections::BTreeMap;
use std::net::UdpSocket;
use std::process::{Command, Output, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use testbed::netlink::netns;

const LAB: &str = "benchlinks";

const TOPOLOGY: &str = r#"
[lab]
name = "benchlinks"
seed = 9
backend = "userspace"
engine_busy_poll = "BUSY_POLL"

[profile.zero]
limit = 1000

[profile.d20]
delay = "20ms"
limit = 10000

[profile.r100]
rate = "100mbit"

[profile.r1g]
rate = "1gbit"
"#;

/// `engine_busy_poll` of most measurements (the default: never spin, so the
/// engine's CPU time is work only) and of the latency measurement that keeps
/// the engine awake between pings.
const BUSY_DEFAULT: &str = "0us";
const BUSY_LATENCY: &str = "2ms";

/// Profile line of link K (`None`: no profile, a direct veth).
const LINKS: [Option<&str>; 5] = [
    Some("profile = \"zero\""),
    None,
    Some("profile_ab = \"d20\""),
    Some("profile = \"r100\""),
    Some("profile = \"r1g\""),
];

fn testbed(args: &[&str]) -> Output {
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

struct Lab {
    _dir: tempfile::TempDir,
    nodes: BTreeMap<String, (String, String)>,
}

impl Lab {
    /// The lab with `[lab] engine_busy_poll = busy_poll`.
    fn up(busy_poll: &str) -> Lab {
        let mut text = TOPOLOGY.replace("BUSY_POLL", busy_poll);
        for (k, link) in LINKS.iter().enumerate() {
            text.push_str(&format!(
                "\n[[node]]\nname = \"a{k}\"\nkind = \"host\"\n[[node]]\nname = \"b{k}\"\nkind = \"host\"\n[[link]]\na = \"a{k}\"\nb = \"b{k}\"\n{}\n",
                link.unwrap_or("")
            ));
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bench.toml");
        std::fs::write(&path, text).unwrap();
        let _ = testbed(&["down", LAB]);
        ok(&["up", path.to_str().unwrap()]);
        let status: serde_json::Value =
            serde_json::from_str(&ok(&["status", LAB, "--json"])).unwrap();
        let nodes = status["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| {
                let addr = n["interfaces"][0]["address"].as_str().unwrap();
                (
                    n["name"].as_str().unwrap().to_string(),
                    (
                        n["netns"].as_str().unwrap().to_string(),
                        addr.split('/').next().unwrap().to_string(),
                    ),
                )
            })
            .collect();
        Lab { _dir: dir, nodes }
    }

    fn ns(&self, node: &str) -> &str {
        &self.nodes[node].0
    }

    fn addr(&self, node: &str) -> &str {
        &self.nodes[node].1
    }

    fn exec(&self, node: &str, cmd: &[&str]) -> Output {
        let mut args = vec!["exec", LAB, node, "--"];
        args.extend_from_slice(cmd);
        testbed(&args)
    }

    fn engine_pid(&self) -> u32 {
        let status: serde_json::Value =
            serde_json::from_str(&ok(&["status", LAB, "--json"])).unwrap();
        status["engine"]["pid"].as_u64().expect("engine pid") as u32
    }

    /// Frames the engine passed a-to-b on link K.
    fn passed(&self, k: usize) -> u64 {
        let show: serde_json::Value = serde_json::from_str(&ok(&[
            "link",
            "show",
            LAB,
            &format!("a{k}"),
            &format!("b{k}"),
            "--json",
        ]))
        .unwrap();
        show[0]["sent_packets"].as_u64().unwrap_or(0)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = testbed(&["down", LAB]);
    }
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i]
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    percentile(&mut s, 0.5)
}

/// RTTs in microseconds of `count` pings from aK to bK.
fn ping(lab: &Lab, k: usize, count: u32) -> Vec<f64> {
    let (a, b) = (format!("a{k}"), format!("b{k}"));
    let out = lab.exec(
        &a,
        &[
            "ping",
            "-n",
            "-c",
            &count.to_string(),
            "-i",
            "0.001",
            lab.addr(&b),
        ],
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split("time=").nth(1))
        .filter_map(|t| t.split_whitespace().next()?.parse::<f64>().ok())
        .map(|ms| ms * 1000.0)
        .collect()
}

/// Nanoseconds since the Unix epoch (CLOCK_REALTIME, the clock of kernel
/// receive timestamps).
fn realtime_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// One-way delays (microseconds) of UDP sent at `pps` for `secs` from aK to
/// bK: the send time is taken just before `send`, the arrival time is the
/// kernel's receive timestamp (`SO_TIMESTAMPNS`), so the receiving thread's
/// scheduling does not count.
fn one_way(lab: &Lab, k: usize, pps: u32, secs: u32) -> Vec<f64> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg, setsockopt, sockopt};
    use std::os::fd::AsRawFd;
    let (a, b) = (format!("a{k}"), format!("b{k}"));
    let rx = netns::run_in(lab.ns(&b), || UdpSocket::bind("0.0.0.0:9998")).unwrap();
    let tx = netns::run_in(lab.ns(&a), || UdpSocket::bind("0.0.0.0:0")).unwrap();
    rx.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    setsockopt(&rx, sockopt::ReceiveTimestampns, &true).unwrap();
    let receiver = std::thread::spawn(move || {
        let mut delays = Vec::new();
        let mut buf = [0u8; 64];
        let mut cmsg = nix::cmsg_space!(nix::sys::time::TimeSpec);
        loop {
            let mut iov = [std::io::IoSliceMut::new(&mut buf)];
            let Ok(msg) =
                recvmsg::<()>(rx.as_raw_fd(), &mut iov, Some(&mut cmsg), MsgFlags::empty())
            else {
                break;
            };
            let at = msg.cmsgs().ok().and_then(|mut c| {
                c.find_map(|m| match m {
                    ControlMessageOwned::ScmTimestampns(t) => {
                        Some(t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
                    }
                    _ => None,
                })
            });
            if let (Some(at), true) = (at, msg.bytes >= 8) {
                let sent = u64::from_be_bytes(buf[..8].try_into().unwrap());
                delays.push(at.saturating_sub(sent) as f64 / 1000.0);
            }
        }
        delays
    });
    let dest = format!("{}:9998", lab.addr(&b));
    let gap = Duration::from_secs(1) / pps;
    let _ = nix::sys::prctl::set_timerslack(1);
    let start = Instant::now();
    let mut payload = [0u8; 32];
    for i in 0..pps * secs {
        if let Some(wait) = (start + gap * i).checked_duration_since(Instant::now()) {
            sleep(wait);
        }
        payload[..8].copy_from_slice(&realtime_ns().to_be_bytes());
        let _ = tx.send_to(&payload, &dest);
    }
    receiver.join().unwrap()
}

/// iperf3 TCP receiver throughput in bit/s from aK to bK.
fn iperf(lab: &Lab, k: usize, secs: u32) -> f64 {
    let (a, b) = (format!("a{k}"), format!("b{k}"));
    let mut server = Command::new(env!("CARGO_BIN_EXE_testbed"))
        .args(["exec", LAB, &b, "--", "iperf3", "-s", "-1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut bps = 0.0;
    for _ in 0..50 {
        sleep(Duration::from_millis(100));
        let out = lab.exec(
            &a,
            &[
                "iperf3",
                "-c",
                lab.addr(&b),
                "-t",
                &secs.to_string(),
                "-O",
                "1",
                "-J",
            ],
        );
        if out.status.success() {
            let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            bps = json["end"]["sum_received"]["bits_per_second"]
                .as_f64()
                .unwrap_or(0.0);
            break;
        }
    }
    let _ = server.wait();
    bps
}

/// Utime + stime of a process, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // After the command name: state is field 0, utime 11, stime 12.
    (ticks(11) + ticks(12)) / 100.0
}

/// Floods small UDP datagrams from aK to bK for `secs`; returns datagrams
/// received per second by bK.
fn flood(lab: &Lab, k: usize, secs: f64) -> f64 {
    let (a, b) = (format!("a{k}"), format!("b{k}"));
    let rx = netns::run_in(lab.ns(&b), || UdpSocket::bind("0.0.0.0:9997")).unwrap();
    let tx = netns::run_in(lab.ns(&a), || UdpSocket::bind("0.0.0.0:0")).unwrap();
    rx.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    // Ends 300 ms after the last datagram.
    let receiver = std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        let mut n = 0u64;
        let mut first = None;
        let mut last = Instant::now();
        while rx.recv(&mut buf).is_ok() {
            first.get_or_insert_with(Instant::now);
            last = Instant::now();
            n += 1;
        }
        let span = first.map_or(0.0, |f| (last - f).as_secs_f64());
        if span > 0.0 { n as f64 / span } else { 0.0 }
    });
    let dest = format!("{}:9997", lab.addr(&b));
    let payload = [0u8; 18]; // 64-byte Ethernet frames
    let end = Instant::now() + Duration::from_secs_f64(secs);
    while Instant::now() < end {
        for _ in 0..256 {
            let _ = tx.send_to(&payload, &dest);
        }
    }
    receiver.join().unwrap()
}

/// (steal, total) CPU ticks of the whole machine so far (`/proc/stat`): time
/// the hypervisor ran something else while this VM wanted its vCPUs.
fn cpu_ticks() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    (fields.get(7).copied().unwrap_or(0), fields.iter().sum())
}

fn main() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("bench links: needs root (namespaces); skipped");
        return;
    }
    let args: Vec<String> = std::env::args().collect();
    let runs: usize = args
        .iter()
        .position(|a| a == "--runs")
        .and_then(|i| args.get(i + 1)?.parse().ok())
        .unwrap_or(5);
    let ticks0 = cpu_ticks();
    let mut rows: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut push = |key: &'static str, v: f64| rows.entry(key).or_default().push(v);
    for run in 1..=runs {
        eprintln!("run {run}/{runs}");
        // Latency with the engine busy polling for 2 ms after each frame, so
        // it never sleeps between pings 1 ms apart.
        {
            let lab = Lab::up(BUSY_LATENCY);
            let _ = (ping(&lab, 0, 5), ping(&lab, 1, 5));
            let (mut e, mut d) = (ping(&lab, 0, 2000), ping(&lab, 1, 2000));
            let (e50, e99) = (percentile(&mut e, 0.5), percentile(&mut e, 0.99));
            let (d50, d99) = (percentile(&mut d, 0.5), percentile(&mut d, 0.99));
            push("busy_added_p50", e50 - d50);
            push("busy_added_p99", e99 - d99);
            let owd = one_way(&lab, 2, 10_000, 3);
            let mut err: Vec<f64> = owd.iter().map(|d| (d - 20_000.0).abs()).collect();
            push("busy_delay_err_p50", percentile(&mut err, 0.5));
            push("busy_delay_err_p99", percentile(&mut err, 0.99));
        }
        let lab = Lab::up(BUSY_DEFAULT);
        // Warm up neighbours and the engine.
        for k in 0..LINKS.len() {
            let _ = ping(&lab, k, 5);
        }
        let (mut e, mut d) = (ping(&lab, 0, 2000), ping(&lab, 1, 2000));
        let (e50, e99) = (percentile(&mut e, 0.5), percentile(&mut e, 0.99));
        let (d50, d99) = (percentile(&mut d, 0.5), percentile(&mut d, 0.99));
        push("rtt_engine_p50", e50);
        push("rtt_engine_p99", e99);
        push("rtt_direct_p50", d50);
        push("rtt_direct_p99", d99);
        push("added_p50", e50 - d50);
        push("added_p99", e99 - d99);

        let mut owd = one_way(&lab, 2, 10_000, 3);
        let mut err: Vec<f64> = owd.iter().map(|d| (d - 20_000.0).abs()).collect();
        push("delay_err_p50", percentile(&mut err, 0.5));
        push("delay_err_p99", percentile(&mut err, 0.99));
        push("delay_received", owd.len() as f64);
        push("delay_owd_p50", percentile(&mut owd, 0.5));
        let mut base = one_way(&lab, 1, 10_000, 3);
        push("direct_owd_p50", percentile(&mut base, 0.5));
        push("direct_owd_p99", percentile(&mut base, 0.99));

        push("tcp_engine", iperf(&lab, 0, 5));
        push("tcp_direct", iperf(&lab, 1, 5));
        push("tcp_r100", iperf(&lab, 3, 5));
        push("tcp_r1g", iperf(&lab, 4, 5));

        let pid = lab.engine_pid();
        let (cpu0, passed0, t0) = (cpu_seconds(pid), lab.passed(0), Instant::now());
        let received = flood(&lab, 0, 3.0);
        let (cpu1, passed1, wall) = (cpu_seconds(pid), lab.passed(0), t0.elapsed());
        let forwarded = (passed1 - passed0) as f64;
        push("flood_engine_rx", received);
        push("flood_engine_fwd", forwarded / wall.as_secs_f64());
        push("flood_engine_per_cpu", forwarded / (cpu1 - cpu0).max(0.01));
        push("flood_engine_cpu", (cpu1 - cpu0) / wall.as_secs_f64());
        push("flood_direct_rx", flood(&lab, 1, 3.0));
    }

    let ticks1 = cpu_ticks();
    let steal = (ticks1.0 - ticks0.0) as f64 / (ticks1.1 - ticks0.1).max(1) as f64;
    let m = |k: &str| median(&rows[k]);
    // TCP goodput to wire rate: 1514-byte frames carry 1448 bytes of payload.
    let wire = 1514.0 / 1448.0;
    let commit = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    println!(
        "Machine: kernel {}, {} CPUs; testbed at {commit}. Medians of {runs} run(s). \
         Host steal during the runs: {:.1} % of CPU time (the hypervisor running something else).\n",
        kernel.trim(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        steal * 100.0
    );
    println!("| figure | target | engine | direct veth (baseline) | ratio |");
    println!("|---|---|---|---|---|");
    println!(
        "| ping RTT p50 / p99 (2,000 at 1 ms) | – | {:.0} / {:.0} µs | {:.0} / {:.0} µs | {:.1}× / {:.1}× |",
        m("rtt_engine_p50"),
        m("rtt_engine_p99"),
        m("rtt_direct_p50"),
        m("rtt_direct_p99"),
        m("rtt_engine_p50") / m("rtt_direct_p50"),
        m("rtt_engine_p99") / m("rtt_direct_p99")
    );
    println!(
        "| latency added, p50 / p99 (RTT difference: two engine passes), `engine_busy_poll = \"{BUSY_DEFAULT}\"` (default) | ≤ 30 / ≤ 150 µs | {:.0} / {:.0} µs | – | – |",
        m("added_p50"),
        m("added_p99")
    );
    println!(
        "| latency added, p50 / p99, `engine_busy_poll = \"{BUSY_LATENCY}\"` | ≤ 30 / ≤ 150 µs | **{:.0} / {:.0} µs** | – | – |",
        m("busy_added_p50"),
        m("busy_added_p99")
    );
    println!(
        "| delay error at 10,000 pkt/s, 20 ms set: p50 / p99, `engine_busy_poll = \"{BUSY_DEFAULT}\"` | p99 ≤ 0.5 ms | {:.0} / {:.0} µs (median one-way {:.3} ms, {:.0} of 30,000 received) | one-way p50 / p99 {:.0} / {:.0} µs | – |",
        m("delay_err_p50"),
        m("delay_err_p99"),
        m("delay_owd_p50") / 1000.0,
        m("delay_received"),
        m("direct_owd_p50"),
        m("direct_owd_p99")
    );
    println!(
        "| the same, `engine_busy_poll = \"{BUSY_LATENCY}\"` | p99 ≤ 0.5 ms | **{:.0} / {:.0} µs** | – | – |",
        m("busy_delay_err_p50"),
        m("busy_delay_err_p99")
    );
    println!(
        "| TCP throughput, no impairment (iperf3, 5 s) | ≥ 5 Gbit/s | **{:.2} Gbit/s** | {:.2} Gbit/s | {:.2} |",
        m("tcp_engine") / 1e9,
        m("tcp_direct") / 1e9,
        m("tcp_engine") / m("tcp_direct")
    );
    for (key, rate, name) in [
        ("tcp_r100", 1e8, "100 Mbit/s"),
        ("tcp_r1g", 1e9, "1 Gbit/s"),
    ] {
        println!(
            "| rate {name}: wire rate / configured | within 1 % | **{:.4}** ({:.1} Mbit/s TCP goodput) | – | – |",
            m(key) * wire / rate,
            m(key) / 1e6
        );
    }
    println!(
        "| 64-byte UDP flood: forwarded pkt/s (engine CPU) | – | {:.0} ({:.0} % of a core) | {:.0} received | {:.2} |",
        m("flood_engine_fwd"),
        m("flood_engine_cpu") * 100.0,
        m("flood_direct_rx"),
        m("flood_engine_rx") / m("flood_direct_rx")
    );
    println!(
        "| frames forwarded per CPU-second of the engine | ≥ 200,000 | **{:.0}** | – | – |",
        m("flood_engine_per_cpu")
    );
    println!("\nPer run:\n");
    let keys: Vec<&str> = rows.keys().copied().collect();
    println!("| run | {} |", keys.join(" | "));
    println!("|---|{}|", "---|".repeat(keys.len()));
    let cell = |k: &&str, run: usize| format!("{:.0}", rows[*k][run]);
    for run in 0..runs {
        let vals: Vec<String> = keys.iter().map(|k| cell(k, run)).collect();
        println!("| {} | {} |", run + 1, vals.join(" | "));
    }
}
