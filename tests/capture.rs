//! Real captures on a veth pair between two throwaway namespaces (root only),
//! checked with tshark.
//!
//! Every test creates its own pair of namespaces named
//! `tbcap-<pid>-<tag>-{a,b}` and deletes them in a `Drop` guard, so tests can
//! run in parallel and leave nothing behind even when they fail.

use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime};

use testbed::capture::{CaptureError, Limits, Stats, Target, capture};

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn run(cmd: &str, args: &[&str]) -> Output {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Two namespaces joined by a veth pair (`eth0` on both sides), deleted on drop.
struct VethPair {
    a: String,
    b: String,
    peer_ip: String,
}

impl VethPair {
    fn new(tag: &str, subnet: u8) -> Self {
        let prefix = format!("tbcap-{}-{tag}", std::process::id());
        let pair = VethPair {
            a: format!("{prefix}-a"),
            b: format!("{prefix}-b"),
            peer_ip: format!("10.250.{subnet}.2"),
        };
        // The guard exists before anything is created, so a failure half-way
        // still deletes whatever was made.
        run("ip", &["netns", "add", &pair.a]);
        run("ip", &["netns", "add", &pair.b]);
        // Created directly inside the namespaces: the host's interfaces are never touched.
        run(
            "ip",
            &[
                "link", "add", "eth0", "netns", &pair.a, "type", "veth", "peer", "name", "eth0",
                "netns", &pair.b,
            ],
        );
        for (ns, host) in [(&pair.a, 1), (&pair.b, 2)] {
            let addr = format!("10.250.{subnet}.{host}/24");
            run("ip", &["-n", ns, "addr", "add", &addr, "dev", "eth0"]);
            run("ip", &["-n", ns, "link", "set", "eth0", "up"]);
            run("ip", &["-n", ns, "link", "set", "lo", "up"]);
        }
        pair
    }

    fn targets(&self) -> Vec<Target> {
        vec![
            Target {
                netns: self.a.clone(),
                ifname: "eth0".into(),
                label: "a:eth0".into(),
            },
            Target {
                netns: self.b.clone(),
                ifname: "eth0".into(),
                label: "b:eth0".into(),
            },
        ]
    }

    /// `ping -c COUNT -i 0.2` from a to b; panics if it fails.
    fn ping(&self, count: u32) {
        run(
            "ip",
            &[
                "netns",
                "exec",
                &self.a,
                "ping",
                "-c",
                &count.to_string(),
                "-i",
                "0.2",
                "-W",
                "2",
                &self.peer_ip,
            ],
        );
    }
}

impl Drop for VethPair {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

/// Root and tshark present: run. Not root: skip. Root without tshark: fail.
fn preflight() -> bool {
    if !is_root() {
        eprintln!("skipped: not root");
        return false;
    }
    for tool in ["tshark", "capinfos"] {
        let found = Command::new(tool).arg("-h").output().is_ok();
        assert!(
            found,
            "{tool} is required (apt-get install -y tshark) when running as root"
        );
    }
    true
}

type CaptureThread = JoinHandle<Result<Stats, CaptureError>>;

fn start_capture<W: std::io::Write + Send + 'static>(
    targets: Vec<Target>,
    out: W,
    limits: Limits,
    stop: Arc<AtomicBool>,
) -> CaptureThread {
    thread::spawn(move || capture(&targets, out, &limits, &stop))
}

/// Wait until the pcapng headers are in `path`: they are written only after
/// every socket is bound, so from then on no frame is missed.
fn wait_live(path: &Path, handle: &CaptureThread) {
    let t0 = Instant::now();
    while std::fs::metadata(path).map(|m| m.len()).unwrap_or(0) == 0 {
        assert!(!handle.is_finished(), "capture ended before going live");
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "capture never went live"
        );
        thread::sleep(Duration::from_millis(10));
    }
}

fn wait_finished(handle: &CaptureThread, within: Duration) -> bool {
    let t0 = Instant::now();
    while !handle.is_finished() {
        if t0.elapsed() > within {
            return false;
        }
        thread::sleep(Duration::from_millis(10));
    }
    true
}

/// `tshark -r FILE [-Y FILTER] -T fields -e F...`, one Vec per frame.
fn tshark_fields(path: &Path, filter: Option<&str>, fields: &[&str]) -> Vec<Vec<String>> {
    let mut args = vec!["-r", path.to_str().unwrap()];
    if let Some(f) = filter {
        args.extend(["-Y", f]);
    }
    args.extend(["-T", "fields", "-E", "separator=|"]);
    for f in fields {
        args.extend(["-e", f]);
    }
    let out = run("tshark", &args);
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| l.split('|').map(str::to_owned).collect())
        .collect()
}

/// A tshark integer field, printed in decimal or (for bitmasks) as `0x...`.
fn parse_uint(s: &str) -> u32 {
    match s.strip_prefix("0x") {
        Some(hex) => u32::from_str_radix(hex, 16),
        None => s.parse(),
    }
    .unwrap_or_else(|e| panic!("not an integer {s:?}: {e}"))
}

#[test]
fn ping_is_seen_on_both_ends() {
    if !preflight() {
        return;
    }
    let pair = VethPair::new("ping", 1);
    let file = tempfile::NamedTempFile::new().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let limits = Limits {
        count: None,
        duration: Some(Duration::from_secs(5)),
    };
    let handle = start_capture(pair.targets(), file.reopen().unwrap(), limits, stop.clone());
    wait_live(file.path(), &handle);

    pair.ping(5);
    thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let stopped_at = Instant::now();
    let stats = handle.join().unwrap().expect("capture failed");
    let stop_latency = stopped_at.elapsed();
    eprintln!("stats: {stats:?}, stopped after {stop_latency:?}");
    assert!(stop_latency < Duration::from_millis(500), "stop not prompt");
    assert_eq!(stats.per_target.len(), 2);
    assert_eq!(stats.packets, stats.per_target.iter().sum::<u64>());
    assert!(stats.per_target.iter().all(|&n| n >= 10), "{stats:?}");
    assert_eq!(stats.dropped_by_kernel, 0);

    let path = file.path();
    let all = tshark_fields(path, None, &["frame.interface_name"]);
    assert_eq!(all.len() as u64, stats.packets, "frames in file == stats");
    for row in &all {
        assert!(
            row[0] == "a:eth0" || row[0] == "b:eth0",
            "unexpected interface name {:?}",
            row[0]
        );
    }

    // Per interface: 5 echo requests (type 8) and 5 replies (type 0), with
    // directions: a sends requests and receives replies; b the opposite.
    let icmp = tshark_fields(
        path,
        Some("icmp"),
        &[
            "frame.interface_name",
            "icmp.type",
            "frame.packet_flags_direction",
        ],
    );
    eprintln!("icmp frames: {icmp:?}");
    const INBOUND: u32 = 1;
    const OUTBOUND: u32 = 2;
    for (iface, request_dir, reply_dir) in
        [("a:eth0", OUTBOUND, INBOUND), ("b:eth0", INBOUND, OUTBOUND)]
    {
        for (ty, dir) in [("8", request_dir), ("0", reply_dir)] {
            let n = icmp
                .iter()
                .filter(|r| r[0] == iface && r[1] == ty)
                .inspect(|r| {
                    assert_eq!(
                        parse_uint(&r[2]),
                        dir,
                        "direction of icmp type {ty} on {iface}: {r:?}"
                    )
                })
                .count();
            assert_eq!(n, 5, "icmp type {ty} on {iface}");
        }
    }

    // Nanosecond timestamps: 9 decimals, not all multiples of 1 µs, and recent.
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let times = tshark_fields(path, None, &["frame.time_epoch"]);
    let mut sub_micro = 0;
    for row in &times {
        let (secs, frac) = row[0].split_once('.').expect("decimal point");
        assert_eq!(frac.len(), 9, "time {:?} not in ns", row[0]);
        if !frac.ends_with("000") {
            sub_micro += 1;
        }
        let t: f64 = row[0].parse().unwrap();
        assert!((now - t).abs() < 60.0, "timestamp {secs} far from now");
    }
    assert!(sub_micro > 0, "all timestamps are whole microseconds");

    let info = run("capinfos", &[path.to_str().unwrap()]);
    let info = String::from_utf8_lossy(&info.stdout);
    eprintln!("{info}");
    assert!(info.contains("pcapng"), "not pcapng: {info}");
    assert!(info.contains("nanoseconds"), "no ns resolution: {info}");
    assert!(info.contains("a:eth0") && info.contains("b:eth0"), "{info}");
}

#[test]
fn count_limit_stops_after_exactly_n() {
    if !preflight() {
        return;
    }
    let pair = VethPair::new("count", 2);
    let file = tempfile::NamedTempFile::new().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let limits = Limits {
        count: Some(3),
        duration: Some(Duration::from_secs(10)),
    };
    let handle = start_capture(pair.targets(), file.reopen().unwrap(), limits, stop.clone());
    wait_live(file.path(), &handle);

    pair.ping(5);
    // 5 pings make 20 frames over both ends: the count is hit on its own.
    let finished = wait_finished(&handle, Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    let stats = handle.join().unwrap().expect("capture failed");
    eprintln!("stats: {stats:?}");
    assert!(finished, "count limit did not end the capture");
    assert_eq!(stats.packets, 3);
    assert_eq!(stats.per_target.iter().sum::<u64>(), 3);

    let frames = tshark_fields(file.path(), None, &["frame.number"]);
    assert_eq!(frames.len(), 3, "frames in file");
}

#[test]
fn closed_pipe_ends_capture_cleanly() {
    if !preflight() {
        return;
    }
    let pair = VethPair::new("pipe", 3);
    let (rx, tx) = nix::unistd::pipe().unwrap();
    let (mut rx, tx) = (File::from(rx), File::from(tx));
    let stop = Arc::new(AtomicBool::new(false));
    let limits = Limits {
        count: None,
        duration: Some(Duration::from_secs(10)),
    };
    let handle = start_capture(pair.targets(), tx, limits, stop.clone());

    // Read the headers (proof that the capture is live), then hang up.
    let mut head = [0u8; 4];
    rx.read_exact(&mut head).unwrap();
    assert_eq!(head, [0x0A, 0x0D, 0x0D, 0x0A], "pcapng magic");
    drop(rx);

    pair.ping(3);
    let finished = wait_finished(&handle, Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    let result = handle.join().unwrap();
    eprintln!("result: {result:?}");
    assert!(finished, "closed pipe did not end the capture");
    result.expect("broken pipe must end the capture with Ok");
}

#[test]
fn missing_interface_names_the_target() {
    if !preflight() {
        return;
    }
    let pair = VethPair::new("noif", 4);
    let targets = vec![Target {
        netns: pair.a.clone(),
        ifname: "nope0".into(),
        label: "a:nope0".into(),
    }];
    let stop = AtomicBool::new(false);
    let err = capture(&targets, Vec::new(), &Limits::default(), &stop).unwrap_err();
    assert!(
        matches!(err, CaptureError::Interface { .. }),
        "unexpected error {err:?}"
    );
    assert!(err.to_string().contains("a:nope0"), "{err}");

    let targets = vec![Target {
        netns: format!("{}-missing", pair.a),
        ifname: "eth0".into(),
        label: "x:eth0".into(),
    }];
    let err = capture(&targets, Vec::new(), &Limits::default(), &stop).unwrap_err();
    assert!(
        matches!(err, CaptureError::Namespace { .. }),
        "unexpected error {err:?}"
    );
    assert!(err.to_string().contains("x:eth0"), "{err}");
}

#[test]
fn interface_removed_mid_capture_is_not_fatal() {
    if !preflight() {
        return;
    }
    let pair = VethPair::new("gone", 5);
    let file = tempfile::NamedTempFile::new().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let limits = Limits {
        count: None,
        duration: Some(Duration::from_secs(10)),
    };
    let handle = start_capture(pair.targets(), file.reopen().unwrap(), limits, stop.clone());
    wait_live(file.path(), &handle);
    pair.ping(1);
    // Deleting one veth end removes both: as when a lab is torn down under a capture.
    run("ip", &["-n", &pair.a, "link", "del", "eth0"]);
    thread::sleep(Duration::from_millis(300));
    assert!(!handle.is_finished(), "capture ended on its own");
    stop.store(true, Ordering::Relaxed);
    let stats = handle.join().unwrap().expect("capture failed");
    eprintln!("stats: {stats:?}");
    assert!(stats.per_target.iter().all(|&n| n >= 2), "{stats:?}");
}
