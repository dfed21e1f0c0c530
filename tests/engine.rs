//! The userspace engine in real labs (root only), through the CLI a user runs:
//! every impairment measured on the wire, runtime changes, carrier cuts, an
//! engine killed and restarted, and reproducibility from the lab seed.
//!
//! Each test brings up its own small lab with `backend = "userspace"` (so the
//! engine is used even where the kernel has netem) and tears it down in a
//! guard. Statistical checks use 99.9 % binomial intervals (3.29 sigma), so a
//! correct engine fails one about once in a thousand runs per check, and a
//! wrong one (off by a few percent) fails almost always.
//!
//! UDP flows carry a 32-bit sequence number and run between nodes with
//! static neighbour entries, so no ARP frame shares the link with them: the
//! engine sees exactly the frames the test sends.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::net::UdpSocket;
use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant, SystemTime};

use common::*;
use testbed::netlink::netns;

/// 99.9 % two-sided normal quantile.
const Z: f64 = 3.29;

/// A lab of `pairs` point-to-point links `aK -- bK`, each with the profile
/// named in `links[K]` (as `profile_ab`, or as `profile` when the text says
/// so), plus the given `[profile.*]` tables.
fn pairs_lab(tag: &str, seed: u64, profiles: &str, links: &[&str]) -> (TopoCopy, LabGuard) {
    let mut text = format!("[lab]\nname = \"x\"\nseed = {seed}\nbackend = \"userspace\"\n\n");
    text.push_str(profiles);
    for (k, link) in links.iter().enumerate() {
        text.push_str(&format!(
            "\n[[node]]\nname = \"a{k}\"\nkind = \"host\"\n\n[[node]]\nname = \"b{k}\"\nkind = \"host\"\n\n[[link]]\na = \"a{k}\"\nb = \"b{k}\"\n{link}\n"
        ));
    }
    let topo = write_topology(&text, tag);
    let lab = LabGuard::up(&topo);
    (topo, lab)
}

/// Node name -> (netns, first address, MAC of eth0).
fn nodes(lab: &str) -> BTreeMap<String, (String, String, String)> {
    let status: serde_json::Value = serde_json::from_str(&ok(&["status", lab, "--json"])).unwrap();
    status["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            let netns = n["netns"].as_str().unwrap().to_string();
            let addr = n["interfaces"][0]["address"].as_str().unwrap();
            let addr = addr.split('/').next().unwrap().to_string();
            let out = Command::new("ip")
                .args(["-n", &netns, "-j", "link", "show", "eth0"])
                .output()
                .unwrap();
            let link: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            let mac = link[0]["address"].as_str().unwrap().to_string();
            (n["name"].as_str().unwrap().to_string(), (netns, addr, mac))
        })
        .collect()
}

/// Permanent neighbour entries on both ends, so no ARP crosses the link.
fn static_neighbours(lab: &str, a: &str, b: &str) {
    let n = nodes(lab);
    for (from, to) in [(a, b), (b, a)] {
        let (ns, _, _) = &n[from];
        let (_, addr, mac) = &n[to];
        let out = Command::new("ip")
            .args([
                "-n",
                ns,
                "neigh",
                "replace",
                addr,
                "lladdr",
                mac,
                "dev",
                "eth0",
                "nud",
                "permanent",
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    }
}

/// Sends `count` UDP datagrams (64 bytes, sequence number first) from `a` to
/// `b`, one every `gap`, and returns the sequence numbers `b` received, in
/// arrival order (duplicates included).
fn udp_flow(lab: &str, a: &str, b: &str, count: u32, gap: Duration) -> Vec<u32> {
    static_neighbours(lab, a, b);
    let n = nodes(lab);
    let (ns_a, _, _) = n[a].clone();
    let (ns_b, addr_b, _) = n[b].clone();
    let rx = netns::run_in(&ns_b, || UdpSocket::bind("0.0.0.0:9999")).unwrap();
    let tx = netns::run_in(&ns_a, || UdpSocket::bind("0.0.0.0:0")).unwrap();
    rx.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let receiver = std::thread::spawn(move || {
        let mut got = Vec::new();
        let mut buf = [0u8; 2048];
        let mut idle_since = Instant::now();
        // Until 2 s without a datagram after the first (or 5 s before it).
        loop {
            match rx.recv(&mut buf) {
                Ok(len) if len >= 4 => {
                    got.push(u32::from_be_bytes(buf[..4].try_into().unwrap()));
                    idle_since = Instant::now();
                }
                _ => {
                    let limit = if got.is_empty() { 5 } else { 2 };
                    if idle_since.elapsed() > Duration::from_secs(limit) {
                        return got;
                    }
                }
            }
        }
    });
    let dest = format!("{addr_b}:9999");
    let start = Instant::now();
    let mut payload = [0u8; 64];
    for seq in 0..count {
        payload[..4].copy_from_slice(&seq.to_be_bytes());
        tx.send_to(&payload, &dest).unwrap();
        // Paced on absolute times, so slow iterations do not stretch the flow.
        let next = start + gap * (seq + 1);
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            sleep(wait);
        }
    }
    receiver.join().unwrap()
}

/// Asserts `observed` successes of `n` trials are inside the 99.9 % interval
/// around probability `p`.
fn assert_binomial(what: &str, observed: usize, n: usize, p: f64) {
    let mean = n as f64 * p;
    let sigma = (n as f64 * p * (1.0 - p)).sqrt();
    let (lo, hi) = (mean - Z * sigma, mean + Z * sigma);
    assert!(
        (lo..=hi).contains(&(observed as f64)),
        "{what}: {observed} of {n}, expected {mean:.0} (99.9 % interval {lo:.0}..{hi:.0})"
    );
}

/// Round-trip times (ms) of `count` pings from `a` to `b`, `interval` apart.
fn ping_rtts(lab: &str, a: &str, b: &str, count: u32, interval: &str) -> Vec<f64> {
    let out = run(&[
        "exec",
        lab,
        a,
        "--",
        "ping",
        "-n",
        "-c",
        &count.to_string(),
        "-i",
        interval,
        "-W",
        "2",
        b,
    ]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split("time=").nth(1))
        .filter_map(|t| t.split_whitespace().next()?.parse().ok())
        .collect()
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s[s.len() / 2]
}

/// The standard deviation of a normal sample, estimated from its
/// interquartile range (IQR / 1.349): a few RTTs stretched by a busy host do
/// not move it, as they would move the plain standard deviation.
fn robust_stddev(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let q = |p: f64| s[((s.len() - 1) as f64 * p).round() as usize];
    (q(0.75) - q(0.25)) / 1.349
}

fn link_show(lab: &str, a: &str, b: &str) -> serde_json::Value {
    serde_json::from_str(&ok(&["link", "show", lab, a, b, "--json"])).unwrap()
}

#[test]
fn delay_20ms_each_way_gives_40ms_rtt_and_jitter_its_spread() {
    if !root_or_skip("delay_20ms_each_way_gives_40ms_rtt_and_jitter_its_spread") {
        return;
    }
    let profiles = r#"
[profile.d20]
delay = "20ms"

[profile.j5]
delay = "20ms"
jitter = "5ms"
distribution = "normal"
"#;
    let (_t, lab) = pairs_lab("d", 1, profiles, &["profile = \"d20\"", "profile = \"j5\""]);
    let rtts = ping_rtts(&lab.lab, "a0", "b0", 500, "0.01");
    assert!(rtts.len() >= 495, "{} of 500 replies", rtts.len());
    let m = median(&rtts);
    assert!(
        (38.0..=42.0).contains(&m),
        "median RTT {m:.2} ms, want 40 +- 2"
    );

    // Two independent normal delays of sigma 5 ms: the RTT's sigma is 5 * sqrt 2.
    let rtts = ping_rtts(&lab.lab, "a1", "b1", 500, "0.01");
    assert!(rtts.len() >= 495, "{} of 500 replies", rtts.len());
    let want = 5.0 * 2f64.sqrt();
    let sd = robust_stddev(&rtts);
    assert!(
        (0.75 * want..=1.25 * want).contains(&sd),
        "RTT spread (IQR / 1.349) {sd:.2} ms, want {want:.2} +- 25 %"
    );
    let m = median(&rtts);
    assert!(
        (37.0..=43.0).contains(&m),
        "median RTT {m:.2} ms with jitter"
    );
}

/// Lengths of the runs of missing sequence numbers in `0..count`.
fn loss_bursts(received: &[u32], count: u32) -> Vec<u64> {
    let got: HashSet<u32> = received.iter().copied().collect();
    loss_runs((0..count).map(|seq| got.contains(&seq)))
}

#[test]
fn random_loss_is_binomial_and_gilbert_elliott_loses_in_bursts() {
    if !root_or_skip("random_loss_is_binomial_and_gilbert_elliott_loses_in_bursts") {
        return;
    }
    // Same long-run loss (10 %): GE spends 10 % of packets in a bad state that
    // loses everything, leaving it after 4.4 packets on average.
    let profiles = r#"
[profile.random]
loss = "10%"

[profile.ge]
loss = { model = "gilbert-elliott", p = "2.5%", r = "22.5%" }
"#;
    let (_t, lab) = pairs_lab(
        "g",
        2,
        profiles,
        &["profile_ab = \"random\"", "profile_ab = \"ge\""],
    );
    let n = 3000;
    let gap = Duration::from_micros(300);
    let random = udp_flow(&lab.lab, "a0", "b0", n, gap);
    let lost = n as usize - random.iter().collect::<HashSet<_>>().len();
    assert_binomial("random loss", lost, n as usize, 0.10);

    let ge = udp_flow(&lab.lab, "a1", "b1", n, gap);
    let mean = |b: &[u64]| b.iter().sum::<u64>() as f64 / b.len().max(1) as f64;
    let (rb, gb) = (loss_bursts(&random, n), loss_bursts(&ge, n));
    let (rm, gm) = (mean(&rb), mean(&gb));
    assert!(
        gm > 2.0 * rm && gm > 2.5,
        "mean loss burst: gilbert-elliott {gm:.2} packets, random {rm:.2}"
    );
    let ge_lost = n as usize - ge.iter().collect::<HashSet<_>>().len();
    assert!(
        (150..=600).contains(&ge_lost),
        "gilbert-elliott lost {ge_lost} of {n} (long-run 10 %)"
    );
    // The engine's own counters agree with what the receiver saw.
    let show = link_show(&lab.lab, "a0", "b0");
    assert_eq!(show[0]["via"], "engine");
    assert_eq!(show[0]["dropped"], lost as u64, "{show}");
}

#[test]
fn rate_10mbit_holds_within_5_percent() {
    if !root_or_skip("rate_10mbit_holds_within_5_percent") {
        return;
    }
    let profiles = "[profile.r10]\nrate = \"10mbit\"\n";
    let (_t, lab) = pairs_lab("r", 3, profiles, &["profile = \"r10\""]);
    let n = nodes(&lab.lab);
    let goodput = iperf3_tcp(&lab.lab, "b0", "a0", &n["b0"].1, &["-t", "6", "-O", "2"]);
    // The rate counts whole frames: a full-sized TCP segment is 1514 bytes on
    // the wire for 1448 bytes of payload (20 IP + 32 TCP with timestamps + 14 Ethernet).
    let wire = goodput * 1514.0 / 1448.0;
    assert!(
        (9.5e6..=10.5e6).contains(&wire),
        "10 mbit link carries {:.2} Mbit/s on the wire ({:.2} Mbit/s TCP goodput)",
        wire / 1e6,
        goodput / 1e6
    );
}

/// Index of each arrival that overtook an earlier sequence number which
/// arrived later (a frame sent ahead of its predecessors).
fn early_arrivals(received: &[u32]) -> usize {
    let mut suffix_min = vec![u32::MAX; received.len() + 1];
    for i in (0..received.len()).rev() {
        suffix_min[i] = suffix_min[i + 1].min(received[i]);
    }
    (0..received.len())
        .filter(|&i| suffix_min[i + 1] < received[i])
        .count()
}

#[test]
fn duplication_reordering_and_corruption_at_their_frequencies() {
    if !root_or_skip("duplication_reordering_and_corruption_at_their_frequencies") {
        return;
    }
    let profiles = r#"
[profile.dup]
duplicate = "10%"

[profile.reorder]
delay = "10ms"
reorder = "25%"

[profile.corrupt]
corrupt = "10%"
"#;
    let (_t, lab) = pairs_lab(
        "o",
        4,
        profiles,
        &[
            "profile_ab = \"dup\"",
            "profile_ab = \"reorder\"",
            "profile_ab = \"corrupt\"",
        ],
    );
    let n = 2000;
    let gap = Duration::from_micros(500);

    let dup = udp_flow(&lab.lab, "a0", "b0", n, gap);
    let unique = dup.iter().collect::<HashSet<_>>().len();
    assert_eq!(unique, n as usize, "duplication must not lose frames");
    assert_binomial("duplicates", dup.len() - unique, n as usize, 0.10);
    let show = link_show(&lab.lab, "a0", "b0");
    assert_eq!(show[0]["duplicated"], (dup.len() - unique) as u64, "{show}");

    // netem's reorder: with probability 25 % a frame skips the 10 ms delay and
    // so arrives ahead of the frames sent in the 10 ms before it.
    let reordered = udp_flow(&lab.lab, "a1", "b1", n, gap);
    assert_eq!(reordered.len(), n as usize);
    assert_binomial("early frames", early_arrivals(&reordered), n as usize, 0.25);

    // A corrupted frame has one bit flipped anywhere in its 106 bytes; the
    // receiver's IP/UDP checksums catch it unless the bit is in the source
    // MAC address (6 bytes), which nobody checks.
    let corrupt = udp_flow(&lab.lab, "a2", "b2", n, gap);
    let show = link_show(&lab.lab, "a2", "b2");
    let corrupted = show[0]["corrupted"].as_u64().unwrap() as usize;
    assert_binomial("corrupted", corrupted, n as usize, 0.10);
    let lost = n as usize - corrupt.len();
    assert!(
        lost <= corrupted && lost as f64 >= 0.85 * corrupted as f64,
        "{lost} datagrams lost for {corrupted} corrupted frames"
    );
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

#[test]
fn link_set_mid_flow_takes_effect_within_a_second() {
    if !root_or_skip("link_set_mid_flow_takes_effect_within_a_second") {
        return;
    }
    let profiles = "[profile.d20]\ndelay = \"20ms\"\n";
    let (_t, lab) = pairs_lab("s", 5, profiles, &["profile = \"d20\""]);
    static_neighbours(&lab.lab, "a0", "b0");
    let ping = testbed()
        .args([
            "exec", &lab.lab, "a0", "--", "ping", "-n", "-D", "-i", "0.05", "-c", "80", "b0",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    sleep(Duration::from_millis(1500));
    let before = unix_now();
    ok(&["link", "set", &lab.lab, "a0", "b0", "--delay", "80ms"]);
    let changed = unix_now();
    let out = ping.wait_with_output().unwrap();
    // "[1795440236.123456] 64 bytes from ...: icmp_seq=3 ttl=64 time=40.3 ms"
    let replies: Vec<(f64, f64)> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let at: f64 = l.strip_prefix('[')?.split(']').next()?.parse().ok()?;
            let rtt: f64 = l
                .split("time=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()?;
            Some((at - rtt / 1000.0, rtt))
        })
        .collect();
    assert!(replies.len() >= 75, "{} replies of 80", replies.len());
    for &(sent, rtt) in &replies {
        if sent < before - 0.1 {
            // 40 ms then; well below the 160 ms to come (a busy host may
            // stretch a few).
            assert!(rtt < 100.0, "sent before the change: RTT {rtt} ms");
        }
        if sent > changed + 1.0 {
            assert!(
                (155.0..400.0).contains(&rtt),
                "sent {:.2} s after the change: RTT {rtt} ms, want about 160",
                sent - changed
            );
        }
    }
    assert!(replies.iter().any(|&(sent, _)| sent > changed + 1.0));
    let show = link_show(&lab.lab, "a0", "b0");
    assert_eq!(show[0]["delay"], "80ms", "{show}");
    assert_eq!(show[1]["delay"], "80ms", "{show}");
}

#[test]
fn link_down_stops_traffic_and_the_engine_survives_a_kill() {
    if !root_or_skip("link_down_stops_traffic_and_the_engine_survives_a_kill") {
        return;
    }
    let profiles = "[profile.d5]\ndelay = \"5ms\"\n";
    let (_t, lab) = pairs_lab("k", 6, profiles, &["profile = \"d5\""]);
    let pings = |count: u32| ping_rtts(&lab.lab, "a0", "b0", count, "0.05");
    assert_eq!(pings(3).len(), 3);

    ok(&["link", "down", &lab.lab, "a0", "b0"]);
    assert!(pings(3).is_empty(), "traffic crosses a link that is down");
    ok(&["link", "up", &lab.lab, "a0", "b0"]);
    assert_eq!(pings(3).len(), 3, "traffic does not resume after link up");

    // A runtime change survives the engine being killed: the supervisor
    // restarts it with the parameters in engine.json.
    ok(&["link", "set", &lab.lab, "a0", "b0", "--delay", "30ms"]);
    let status = || -> serde_json::Value {
        serde_json::from_str(&ok(&["status", &lab.lab, "--json"])).unwrap()
    };
    let engine = status()["engine"].clone();
    let pid = engine["pid"].as_u64().expect("engine pid") as i32;
    assert_eq!(engine["restarts"], 0);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let e = status()["engine"].clone();
        if e["restarts"] == 1 && e["pid"].as_u64().is_some_and(|p| p as i32 != pid) {
            assert!(e["last_exit"].as_str().unwrap().contains("SIGKILL"), "{e}");
            break;
        }
        assert!(Instant::now() < deadline, "engine not restarted: {e}");
        sleep(Duration::from_millis(50));
    }
    let mut rtts = Vec::new();
    for _ in 0..50 {
        rtts = pings(3);
        if rtts.len() == 3 {
            break;
        }
        sleep(Duration::from_millis(100));
    }
    assert_eq!(rtts.len(), 3, "no traffic after the engine restart");
    assert!(
        rtts.iter().all(|&r| (59.0..150.0).contains(&r)),
        "RTTs {rtts:?} after restart, want about 60 ms (30 ms set before the kill)"
    );
    // The engine runs unprivileged.
    let uid = std::fs::read_to_string(format!(
        "/proc/{}/status",
        status()["engine"]["pid"].as_u64().unwrap()
    ))
    .unwrap();
    let caps = uid.lines().find(|l| l.starts_with("CapEff:")).unwrap();
    assert!(caps.ends_with("0000000000000000"), "{caps}");
    assert!(
        !uid.lines().any(|l| l.starts_with("Uid:\t0")),
        "the engine runs as root"
    );
}

/// Sequence numbers received when `count` datagrams cross a lossy,
/// duplicating, corrupting link of a fresh lab with `seed`.
fn decisions(seed: u64) -> Vec<u32> {
    let profiles = r#"
[profile.mix]
loss = "20%"
duplicate = "10%"
corrupt = "10%"
"#;
    let (_t, lab) = pairs_lab("p", seed, profiles, &["profile_ab = \"mix\""]);
    udp_flow(&lab.lab, "a0", "b0", 400, Duration::from_millis(1))
}

#[test]
fn the_same_seed_and_packets_give_the_same_decisions() {
    if !root_or_skip("the_same_seed_and_packets_give_the_same_decisions") {
        return;
    }
    let first = decisions(42);
    let again = decisions(42);
    let other = decisions(43);
    assert!(first.len() > 250, "{} received", first.len());
    assert_eq!(first, again, "same seed, same frames: different decisions");
    assert_ne!(first, other, "a different seed made the same decisions");
}

#[test]
fn engine_is_gone_after_down() {
    if !root_or_skip("engine_is_gone_after_down") {
        return;
    }
    let profiles = "[profile.d1]\ndelay = \"1ms\"\n";
    let (_t, lab) = pairs_lab("e", 7, profiles, &["profile = \"d1\""]);
    let status: serde_json::Value =
        serde_json::from_str(&ok(&["status", &lab.lab, "--json"])).unwrap();
    let pids = [
        status["engine"]["pid"].as_u64().unwrap(),
        status["engine"]["supervisor_pid"].as_u64().unwrap(),
    ];
    let name = lab.lab.clone();
    drop(lab);
    for pid in pids {
        // Gone, or dead and waiting for init to reap it (state Z).
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat.rsplit(')').next().unwrap_or("").trim_start();
        assert!(
            stat.is_empty() || state.starts_with('Z'),
            "process {pid} of lab {name} survived down: {stat}"
        );
    }
    assert_gone(&name);
}
