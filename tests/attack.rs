//! The attacker on a live lab (root): `attack start/list/stop` change what
//! crosses an `in_path` LAN within a second; its capture holds the frames it
//! received and the ones it sent instead; bad requests are refused clearly
//! and start nothing.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const TOPO: &str = r#"
[lab]
name = "x"

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

/// Unix time in seconds, as ping -D prints it.
fn now_s() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

#[test]
fn live_attack_start_and_stop_take_effect_within_a_second() {
    if !root_or_skip("live_attack") {
        return;
    }
    let topo = write_topology(TOPO, "atk");
    let lab = LabGuard::up(&topo);
    // Replies (with their arrival times) to a ping every 20 ms for 9 s.
    let ping = Command::new(env!("CARGO_BIN_EXE_testbed"))
        .args([
            "exec", &lab.lab, "a", "--", "ping", "-D", "-i", "0.02", "-w", "9", "-W", "1", "b",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let t0 = Instant::now();
    let id = ok(&[
        "attack",
        &lab.lab,
        "start",
        "drop",
        "--on",
        "lan",
        "--match",
        "icmp and src node a",
    ]);
    let started = now_s();
    let start_took = t0.elapsed();
    let id = id.trim().to_string();
    std::thread::sleep(Duration::from_secs(3));
    let list = ok(&["attack", &lab.lab, "list", "--json"]);
    let listed: serde_json::Value = serde_json::from_str(&list).unwrap();
    assert_eq!(listed[0]["spec"]["kind"], "drop");
    assert_eq!(listed[0]["active"], true, "{list}");
    let dropped = listed[0]["counters"]["dropped"].as_u64().unwrap();
    assert!(
        dropped >= 50,
        "3 s of 50 pings/s dropped, counted {dropped}: {list}"
    );
    ok(&["attack", &lab.lab, "stop", &id]);
    let stopped = now_s();
    let out = ping.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let replies: Vec<f64> = text
        .lines()
        .filter(|l| l.contains("bytes from"))
        .filter_map(|l| l.strip_prefix('[')?.split(']').next()?.parse().ok())
        .collect();
    assert!(replies.len() > 100, "{text}");
    // Last reply before the outage, first after it.
    let last_before = replies
        .iter()
        .copied()
        .filter(|t| *t < stopped)
        .fold(0.0, f64::max);
    let first_after = replies
        .iter()
        .copied()
        .find(|t| *t > last_before + 0.5)
        .expect("replies resume after the stop");
    let cut = last_before - started;
    let resumed = first_after - stopped;
    eprintln!(
        "start command {start_took:?}; replies stopped {cut:.3} s after it returned, resumed {resumed:.3} s after stop"
    );
    assert!(
        cut < 1.0,
        "replies went on {cut:.3} s after the attack started"
    );
    assert!(
        resumed < 1.0,
        "replies resumed {resumed:.3} s after the stop"
    );
    assert!(
        replies
            .iter()
            .all(|t| *t <= started + 1.0 || *t >= stopped - 0.05),
        "a reply got through while the drop attack ran"
    );
    let list = ok(&["attack", &lab.lab, "list"]);
    assert!(list.contains("stopped"), "{list}");
}

#[test]
fn tamper_capture_shows_original_and_altered_frames() {
    if !root_or_skip("tamper_capture") {
        return;
    }
    let topo = write_topology(TOPO, "atc");
    let lab = LabGuard::up(&topo);
    let pcap = topo.dir.path().join("tamper.pcapng");
    ok(&[
        "attack",
        &lab.lab,
        "start",
        "tamper",
        "--on",
        "lan",
        "--match",
        "udp dst port 9999",
        "--count",
        "5",
        "--param",
        "offset=2",
        "--param",
        "xor=0xff",
        "--capture",
        pcap.to_str().unwrap(),
    ]);
    // Ten datagrams "hello-N" from a to b; the first five are altered.
    ok(&[
        "exec",
        &lab.lab,
        "a",
        "--",
        "bash",
        "-c",
        "for i in 0 1 2 3 4 5 6 7 8 9; do printf hello-$i > /dev/udp/b/9999; sleep 0.05; done",
    ]);
    std::thread::sleep(Duration::from_millis(300));
    let list: serde_json::Value =
        serde_json::from_str(&ok(&["attack", &lab.lab, "list", "--json"])).unwrap();
    assert_eq!(list[0]["counters"]["matched"], 10, "{list}");
    assert_eq!(list[0]["counters"]["modified"], 5, "{list}");
    assert_eq!(list[0]["active"], false, "its budget of 5 is spent: {list}");
    ok(&["attack", &lab.lab, "stop", "1"]);
    let out = Command::new("tshark")
        .args([
            "-r",
            pcap.to_str().unwrap(),
            "-T",
            "fields",
            "-e",
            "frame.interface_name",
            "-e",
            "udp.payload",
            "-e",
            "udp.checksum.status",
            "-o",
            "udp.check_checksum:TRUE",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let rows: Vec<Vec<&str>> = text.lines().map(|l| l.split('\t').collect()).collect();
    let received: Vec<&str> = rows
        .iter()
        .filter(|r| r[0].ends_with(":received"))
        .map(|r| r[1])
        .collect();
    let sent: Vec<&Vec<&str>> = rows.iter().filter(|r| r[0].ends_with(":sent")).collect();
    assert_eq!(received.len(), 5, "{text}");
    assert_eq!(sent.len(), 5, "{text}");
    for (orig, alt) in received.iter().zip(&sent) {
        let (o, a) = (hex(orig), hex(alt[1]));
        assert_eq!(o.len(), a.len());
        assert_eq!(o[2] ^ a[2], 0xff, "byte 2 flipped: {orig} -> {}", alt[1]);
        assert_eq!(o[..2], a[..2]);
        assert_eq!(o[3..], a[3..]);
        assert_eq!(
            alt[2], "1",
            "the altered frame's UDP checksum verifies (1 = good): {text}"
        );
    }
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn bad_attack_requests_are_refused_and_start_nothing() {
    if !root_or_skip("bad_attacks") {
        return;
    }
    let topo = write_topology(TOPO, "atb");
    let lab = LabGuard::up(&topo);
    let cases: &[(&[&str], &str)] = &[
        (
            &["start", "drop", "--on", "wan"],
            "`wan` is not in the engine's path",
        ),
        (
            &["start", "drop", "--on", "lan", "--match", "udp port x"],
            "--match 1:10",
        ),
        (&["start", "dorp", "--on", "lan"], "unknown attack `dorp`"),
        (
            &["start", "drop", "--on", "lan", "--param", "p=1"],
            "drop: p: unknown parameter",
        ),
        (
            &[
                "start", "inject", "--on", "lan", "--param", "from=a", "--param", "to=zz",
            ],
            "no node `zz`",
        ),
        (&["stop", "42"], "no attack 42"),
    ];
    for (args, needle) in cases {
        let mut full = vec!["attack", lab.lab.as_str()];
        full.extend_from_slice(args);
        let out = run(&full);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{full:?} succeeded");
        assert!(err.contains(needle), "{full:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    }
    let list: serde_json::Value =
        serde_json::from_str(&ok(&["attack", &lab.lab, "list", "--json"])).unwrap();
    assert_eq!(list.as_array().map(Vec::len), Some(0), "{list}");
    let kinds = ok(&["attack", "list-kinds"]);
    for k in [
        "sniff",
        "drop",
        "delay",
        "duplicate",
        "tamper",
        "replay",
        "inject",
        "flood",
    ] {
        assert!(kinds.contains(k), "{kinds}");
    }
}
