//! The userspace relay on real veth pairs (root only).
//!
//! Every test builds its own namespaces `tbrl-<pid>-<tag>-{x,y,i}`: nodes X
//! and Y, and an infra namespace I holding the inner ends of two veth pairs
//! (`X.eth0 <-> I.xa`, `I.yb <-> Y.eth0`). A [`Relay`] between `I.xa` and
//! `I.yb` is the only path from X to Y. Guards stop the relay and delete the
//! namespaces even when a test panics.
//!
//! Offloads: the veths keep their default offloads (checksum offload and
//! TSO on); the relay carries partial checksums and TCP super-frames through
//! with `PACKET_VNET_HDR`. `measure_latency_and_rate` sends UDP and TCP, and
//! `corruption_of_tcp_super_frames_is_caught_by_checksums` checks that a
//! corrupted super-frame is segmented and checksummed first.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use testbed::emulation::pipeline::{Direction, DirectionParams, LossModel};
use testbed::emulation::relay::{PacketSocket, Relay, RelayHandle};
use testbed::netlink::netns;

const X_IP: &str = "10.77.0.1";
const Y_IP: &str = "10.77.0.2";

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

macro_rules! require_root {
    () => {
        if !is_root() {
            eprintln!("skipping: relay tests need root (namespaces, AF_PACKET)");
            return;
        }
    };
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

fn ip(args: &[&str]) {
    run("ip", args);
}

/// Namespaces X, Y and I wired as in the module docs; deleted on drop.
struct Lab {
    x: String,
    y: String,
    i: String,
}

impl Lab {
    fn new(tag: &str) -> Lab {
        let base = format!("tbrl-{}-{tag}", std::process::id());
        let lab = Lab {
            x: format!("{base}-x"),
            y: format!("{base}-y"),
            i: format!("{base}-i"),
        };
        for ns in [&lab.x, &lab.y, &lab.i] {
            ip(&["netns", "add", ns]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        ip(&[
            "-n", &lab.i, "link", "add", "xa", "type", "veth", "peer", "name", "eth0", "netns",
            &lab.x,
        ]);
        ip(&[
            "-n", &lab.i, "link", "add", "yb", "type", "veth", "peer", "name", "eth0", "netns",
            &lab.y,
        ]);
        ip(&[
            "-n",
            &lab.x,
            "addr",
            "add",
            &format!("{X_IP}/24"),
            "dev",
            "eth0",
        ]);
        ip(&[
            "-n",
            &lab.y,
            "addr",
            "add",
            &format!("{Y_IP}/24"),
            "dev",
            "eth0",
        ]);
        for (ns, dev) in [
            (&lab.x, "eth0"),
            (&lab.y, "eth0"),
            (&lab.i, "xa"),
            (&lab.i, "yb"),
        ] {
            ip(&["-n", ns, "link", "set", dev, "up"]);
        }
        lab
    }

    /// A relay between `I.xa` (A, X's side) and `I.yb` (B), on its own thread.
    fn relay(&self, ab: DirectionParams, ba: DirectionParams) -> RunningRelay {
        let a = PacketSocket::open(&self.i, "xa").expect("socket on xa");
        let b = PacketSocket::open(&self.i, "yb").expect("socket on yb");
        let mut relay = Relay::new();
        let handle = relay.add_link(a, b, ab, ba).expect("relay");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = thread::spawn(move || {
            relay
                .run(&flag, Duration::from_micros(200))
                .expect("relay loop")
        });
        RunningRelay {
            handle,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in [&self.x, &self.y, &self.i] {
            let _ = netns::delete(ns);
        }
    }
}

struct RunningRelay {
    handle: RelayHandle,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for RunningRelay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn params(delay_ms: u64, loss: f64, seed: u64) -> DirectionParams {
    DirectionParams {
        delay_ns: delay_ms * 1_000_000,
        loss: LossModel::Random {
            percent: loss,
            correlation: 0.0,
        },
        seed,
        ..DirectionParams::default()
    }
}

/// Runs ping in `ns` and returns (per-reply RTTs in ms, loss percent).
fn ping(ns: &str, dst: &str, args: &[&str]) -> (Vec<f64>, f64) {
    let mut full = vec!["netns", "exec", ns, "ping", "-n", "-W", "1"];
    full.extend_from_slice(args);
    full.push(dst);
    let out = Command::new("ip").args(&full).output().expect("run ping");
    let text = String::from_utf8_lossy(&out.stdout);
    let rtts = text
        .lines()
        .filter_map(|l| l.split("time=").nth(1))
        .filter_map(|t| t.split_whitespace().next()?.parse().ok())
        .collect();
    let loss = text
        .lines()
        .find(|l| l.contains("packet loss"))
        .and_then(|l| {
            l.split(',')
                .find(|p| p.contains("packet loss"))?
                .trim()
                .split('%')
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no ping summary in {text}"));
    (rtts, loss)
}

fn percentile(v: &[f64], p: f64) -> f64 {
    assert!(!v.is_empty(), "no samples");
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let idx = ((s.len() - 1) as f64 * p).round() as usize;
    s[idx]
}

#[test]
fn zero_impairment_ping_works() {
    require_root!();
    let lab = Lab::new("zero");
    let relay = lab.relay(params(0, 0.0, 1), params(0, 0.0, 2));
    let (rtts, loss) = ping(&lab.x, Y_IP, &["-c", "5", "-i", "0.05"]);
    assert_eq!(loss, 0.0, "rtts {rtts:?}");
    let p50 = percentile(&rtts, 0.5);
    assert!(p50 < 5.0, "median RTT {p50} ms through a clean relay");
    let ab = relay.handle.stats(Direction::AToB);
    assert!(ab.io.rx_frames >= 5 && ab.io.tx_frames >= 5, "{ab:?}");
    assert_eq!(ab.io.tx_errors, 0, "{ab:?}");
}

#[test]
fn delay_20ms_each_way() {
    require_root!();
    let lab = Lab::new("delay");
    let _relay = lab.relay(params(20, 0.0, 1), params(20, 0.0, 2));
    let (rtts, loss) = ping(&lab.x, Y_IP, &["-c", "50", "-i", "0.02"]);
    assert_eq!(loss, 0.0);
    let p50 = percentile(&rtts, 0.5);
    println!(
        "delay 20+20 ms: RTT min {:.3} p50 {p50:.3} max {:.3} ms",
        percentile(&rtts, 0.0),
        percentile(&rtts, 1.0)
    );
    assert!((37.0..=43.0).contains(&p50), "median RTT {p50} ms");
}

#[test]
fn loss_20_percent_one_way() {
    require_root!();
    let lab = Lab::new("loss");
    let relay = lab.relay(params(0, 0.0, 11), params(0, 0.0, 12));
    // Resolve ARP on a clean path first, then drop 20 % of X -> Y.
    let (_, warm) = ping(&lab.x, Y_IP, &["-c", "2", "-i", "0.05"]);
    assert_eq!(warm, 0.0);
    relay
        .handle
        .set_params(Direction::AToB, params(0, 20.0, 11))
        .unwrap();
    thread::sleep(Duration::from_millis(50));
    let (_, loss) = ping(&lab.x, Y_IP, &["-c", "500", "-i", "0.005", "-q"]);
    let ab = relay.handle.stats(Direction::AToB);
    let ba = relay.handle.stats(Direction::BToA);
    println!("loss 20% one way: ping loss {loss}%, A->B {ab:?}, B->A {ba:?}");
    // n = 500, p = 0.2: sigma = 1.8 %; the band is about 4.5 sigma wide.
    assert!((12.0..=28.0).contains(&loss), "loss {loss}%");
    assert!(ab.pipeline.dropped_loss > 0);
    assert_eq!(ba.pipeline.dropped_loss, 0);
}

#[test]
fn runtime_delay_change() {
    require_root!();
    let lab = Lab::new("change");
    let relay = lab.relay(params(0, 0.0, 1), params(0, 0.0, 2));
    let (before, loss) = ping(&lab.x, Y_IP, &["-c", "10", "-i", "0.02"]);
    assert_eq!(loss, 0.0);
    relay
        .handle
        .set_params(Direction::AToB, params(30, 0.0, 1))
        .unwrap();
    thread::sleep(Duration::from_millis(50));
    let (after, loss) = ping(&lab.x, Y_IP, &["-c", "10", "-i", "0.02"]);
    assert_eq!(loss, 0.0);
    let (b, a) = (percentile(&before, 0.5), percentile(&after, 0.5));
    println!("runtime change 0 -> 30 ms: median RTT {b:.3} -> {a:.3} ms");
    assert!(b < 5.0, "before {b}");
    assert!((29.0..=34.0).contains(&a), "after {a}");
    // Invalid parameters are refused by the handle and change nothing.
    let bad = DirectionParams {
        duplicate: 150.0,
        ..DirectionParams::default()
    };
    assert!(relay.handle.set_params(Direction::AToB, bad).is_err());
}

/// Latency against a direct veth, small-packet rate, and TCP through the
/// relay. Prints numbers; asserts only that traffic flows at all.
#[test]
fn measure_latency_and_rate() {
    require_root!();
    let lab = Lab::new("meas");
    // A direct veth X.d0 <-> Y.d1 as the baseline.
    ip(&[
        "-n", &lab.x, "link", "add", "d0", "type", "veth", "peer", "name", "d1", "netns", &lab.y,
    ]);
    ip(&["-n", &lab.x, "addr", "add", "10.78.0.1/24", "dev", "d0"]);
    ip(&["-n", &lab.y, "addr", "add", "10.78.0.2/24", "dev", "d1"]);
    ip(&["-n", &lab.x, "link", "set", "d0", "up"]);
    ip(&["-n", &lab.y, "link", "set", "d1", "up"]);
    let relay = lab.relay(params(0, 0.0, 1), params(0, 0.0, 2));

    let (direct, _) = ping(&lab.x, "10.78.0.2", &["-c", "500", "-i", "0.002"]);
    let (relayed, loss) = ping(&lab.x, Y_IP, &["-c", "500", "-i", "0.002"]);
    assert!(loss < 5.0, "loss {loss}% through the relay");
    println!(
        "RTT direct veth: p50 {:.3} p99 {:.3} ms ({} replies)",
        percentile(&direct, 0.5),
        percentile(&direct, 0.99),
        direct.len()
    );
    println!(
        "RTT via relay:   p50 {:.3} p99 {:.3} ms ({} replies)",
        percentile(&relayed, 0.5),
        percentile(&relayed, 0.99),
        relayed.len()
    );

    // Flood ping: 20000 echo requests as fast as replies come back.
    let t = Instant::now();
    let (_, floss) = ping(&lab.x, Y_IP, &["-f", "-c", "20000", "-q"]);
    let secs = t.elapsed().as_secs_f64();
    println!(
        "ping -f -c 20000 via relay: {secs:.2} s, loss {floss}%, {:.0} round trips/s",
        20000.0 / secs
    );

    // UDP with the veths' default offloads (partial checksums).
    let before = relay.handle.stats(Direction::AToB);
    let (sent, got, secs) = udp_flood(&lab, 9002, Duration::from_secs(1));
    let ab = relay.handle.stats(Direction::AToB);
    println!(
        "UDP 64 B X->Y, {secs:.2} s: sent {sent} ({:.0} pps), \
         received {got} ({:.0} pps), relay A->B rx {} tx {} tx_errors {}",
        sent as f64 / secs,
        got as f64 / secs,
        ab.io.rx_frames - before.io.rx_frames,
        ab.io.tx_frames - before.io.tx_frames,
        ab.io.tx_errors
    );
    assert!(got > 0, "no UDP datagram crossed the relay");

    // TCP X -> Y: 4 MiB in TSO super-frames.
    let (sent_tcp, got_tcp, secs) = tcp_transfer(&lab, 9001, 64);
    let ab = relay.handle.stats(Direction::AToB);
    println!(
        "TCP X->Y via relay: wrote {sent_tcp} B, received {got_tcp} B in {secs:.2} s \
         ({:.1} Mbit/s) in {} frames; relay A->B rx_truncated {} tx_errors {} last errno {}",
        got_tcp as f64 * 8.0 / secs / 1e6,
        ab.io.rx_frames,
        ab.io.rx_truncated,
        ab.io.tx_errors,
        ab.io.last_tx_errno
    );
    assert_eq!(got_tcp, sent_tcp, "TCP through the relay lost data");
    assert!(sent_tcp > 0);
    assert_eq!(ab.io.tx_errors, 0);
}

#[test]
fn corruption_of_tcp_super_frames_is_caught_by_checksums() {
    require_root!();
    let lab = Lab::new("gso");
    let mut corrupt = params(0, 0.0, 5);
    corrupt.corrupt = 2.0;
    let relay = lab.relay(corrupt, params(0, 0.0, 6));
    // 8 MiB of a known pattern: every byte must arrive intact, although about
    // 2 % of the frames (super-frames cut into segments first) had a bit
    // flipped on the way: the receiver's checksums must catch every one.
    let (sent, got, _) = tcp_transfer(&lab, 9003, 128);
    assert_eq!(
        got, sent,
        "TCP through a corrupting relay lost or altered data"
    );
    let ab = relay.handle.stats(Direction::AToB);
    assert!(ab.pipeline.corrupted > 0, "{ab:?}");
    assert_eq!(ab.pipeline.dropped_malformed, 0, "{ab:?}");
    assert!(
        ab.io.rx_frames < 8 * 1024 * 1024 / 1448,
        "no super-frames seen: {} frames for 8 MiB",
        ab.io.rx_frames
    );
}

/// Sends `chunks` x 64 KiB of a byte pattern from X to Y over TCP; returns
/// (bytes written, bytes received intact, seconds). Received bytes that differ
/// from the pattern fail the test.
fn tcp_transfer(lab: &Lab, port: u16, chunks: usize) -> (usize, usize, f64) {
    let pattern = |i: usize| (i % 251) as u8;
    let listener = netns::run_in(&lab.y, move || TcpListener::bind((Y_IP, port))).unwrap();
    let server = thread::spawn(move || {
        let Ok((mut s, _)) = listener.accept() else {
            return 0usize;
        };
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = vec![0u8; 65536];
        let mut total = 0;
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 {
                break;
            }
            for (k, b) in buf[..n].iter().enumerate() {
                assert_eq!(*b, pattern(total + k), "byte {} altered", total + k);
            }
            total += n;
        }
        total
    });
    let addr: SocketAddr = format!("{Y_IP}:{port}").parse().unwrap();
    let t = Instant::now();
    let client = netns::run_in(&lab.x, move || {
        TcpStream::connect_timeout(&addr, Duration::from_secs(2))
    });
    let mut sent = 0usize;
    let mut c = client.expect("TCP connect via relay");
    c.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    for j in 0..chunks {
        let chunk: Vec<u8> = (j * 65536..(j + 1) * 65536).map(pattern).collect();
        match c.write_all(&chunk) {
            Ok(()) => sent += chunk.len(),
            Err(_) => break,
        }
    }
    drop(c);
    let got = server.join().expect("receiver saw altered bytes");
    (sent, got, t.elapsed().as_secs_f64())
}

/// Floods UDP 64-byte datagrams from X to Y:`port` for `dur`; returns (sent,
/// received, seconds).
fn udp_flood(lab: &Lab, port: u16, dur: Duration) -> (u64, u64, f64) {
    let rx = netns::run_in(&lab.y, move || UdpSocket::bind((Y_IP, port))).unwrap();
    let tx = netns::run_in(&lab.x, || UdpSocket::bind((X_IP, 0))).unwrap();
    rx.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let received = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&received);
    let reader = thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while rx.recv(&mut buf).is_ok() {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    });
    let dst: SocketAddr = format!("{Y_IP}:{port}").parse().unwrap();
    let payload = [0x5au8; 64];
    let t = Instant::now();
    let mut sent = 0u64;
    while t.elapsed() < dur {
        for _ in 0..64 {
            if tx.send_to(&payload, dst).is_ok() {
                sent += 1;
            }
        }
    }
    let secs = t.elapsed().as_secs_f64();
    reader.join().unwrap();
    (sent, received.load(Ordering::Relaxed), secs)
}
