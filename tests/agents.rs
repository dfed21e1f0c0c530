//! Agents on real labs (root): the CPS sensors and controller of city over
//! mutual-TLS QUIC, supervision across SIGKILL without nonce reuse, the key
//! log decrypting a capture, events, logs and metrics; rogue clients
//! inside the IoT LAN that must be refused or have every bad input rejected
//! with its reason while honest sensors keep delivering; and readings as
//! plain UDP datagrams, with the replay window on and, as a negative
//! control, off.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use testbed::agent::identity::{self, Identity};
use testbed::agent::transport::{self, AGENT_PORT};
use testbed::cps::reading::{Ack, Reading, SensorKind};
use testbed::cps::seal::{self, Frame, SessionKeys};
use testbed::cps::{self as cps};
use testbed::events::{Reason, Record};

/// One row of results.csv.
#[derive(Debug)]
struct Row {
    time: String,
    sensor: String,
    latency_ms: Option<f64>,
    encrypted: bool,
    outcome: String,
    reason: String,
    counter: Option<u64>,
}

fn results(out: &Path) -> Vec<Row> {
    let text = std::fs::read_to_string(out.join("results.csv")).unwrap_or_default();
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f.len() == 10).then(|| Row {
                time: f[0].to_string(),
                sensor: f[1].to_string(),
                latency_ms: f[4].parse().ok(),
                encrypted: f[6] == "true",
                outcome: f[7].to_string(),
                reason: f[8].to_string(),
                counter: f[9].parse().ok(),
            })
        })
        .collect()
}

fn events(out: &Path) -> Vec<Record> {
    std::fs::read_to_string(out.join("events.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("every stored line is a Record"))
        .collect()
}

/// Poll `f` every 200 ms until it returns Some, or panic with `what`.
fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The running agent of `node` as its supervisor recorded it.
fn agent_pid(lab: &str, node: &str) -> Option<u32> {
    let record = testbed::lab::supervisor::read(lab)?;
    let c = record
        .children
        .iter()
        .find(|c| c.name == node && c.role.is_some())?;
    (c.pid != 0).then_some(c.pid)
}

fn status_field(pid: u32, field: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .map(|l| l[field.len()..].trim().to_string())
        .unwrap_or_default()
}

fn http_get(addr: &str, path: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).expect("connect to the metrics endpoint");
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    body
}

/// The value of the first sample whose line starts with `series`.
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn city_sensors_deliver_survive_sigkill_without_nonce_reuse_and_keylog_decrypts_quic() {
    if !root_or_skip("city_sensors_deliver") {
        return;
    }
    let topo = copy_topology("topologies/city.toml", "ag");
    let lab = topo.lab.clone();
    let out = topo.dir.path().join("out");
    let keylog = topo.dir.path().join("keys.log");
    let (_guard, printed) = LabGuard::up_with(
        &topo,
        &[
            "--out",
            out.to_str().unwrap(),
            "--keylog",
            keylog.to_str().unwrap(),
            "--metrics",
            "127.0.0.1:0",
        ],
    );
    let metrics_addr = metrics_address(&printed);

    // Every agent runs as nobody without capabilities; keys are 0600.
    let sensors = [
        "s-temp",
        "s-motion",
        "s-humidity",
        "s-door",
        "s-smoke",
        "s-energy",
    ];
    for node in sensors.iter().chain(&["controller"]) {
        let pid = agent_pid(&lab, node).expect("agent running");
        assert_eq!(
            status_field(pid, "Uid:").split_whitespace().next(),
            Some("65534"),
            "{node}"
        );
        assert_eq!(status_field(pid, "CapEff:"), "0000000000000000", "{node}");
        let key = identity::key_path(&lab, node);
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&key).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600, "{}", key.display());
    }

    // Readings from all six sensors arrive.
    wait_for(
        "readings from all six sensors",
        Duration::from_secs(40),
        || {
            let rows = results(&out);
            sensors
                .iter()
                .all(|s| {
                    rows.iter()
                        .any(|r| r.sensor == *s && r.outcome == "delivered")
                })
                .then_some(())
        },
    );

    // Capture the controller's side while s-temp is killed and comes back, so
    // the capture holds a whole handshake for the key log to open.
    let pcap = topo.dir.path().join("iot.pcapng");
    let mut capture = testbed()
        .args([
            "capture",
            &lab,
            "controller",
            "-w",
            pcap.to_str().unwrap(),
            "--duration",
            "12s",
        ])
        .spawn()
        .expect("start capture");
    std::thread::sleep(Duration::from_secs(1));
    // s-temp sends datagrams, s-door streams: kill both.
    let victims = ["s-temp", "s-door"];
    let delivered = |rows: &[Row], sensor: &str| -> Vec<u64> {
        rows.iter()
            .filter(|r| r.sensor == sensor && r.outcome == "delivered")
            .filter_map(|r| r.counter)
            .collect()
    };
    let before_kill: Vec<BTreeSet<u64>> = {
        let rows = results(&out);
        victims
            .iter()
            .map(|v| delivered(&rows, v).into_iter().collect())
            .collect()
    };
    for v in victims {
        let pid = agent_pid(&lab, v).expect("victim runs");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .expect("kill the agent");
    }
    for v in victims {
        let exited = wait_for("the exit event", Duration::from_secs(10), || {
            events(&out)
                .into_iter()
                .find(|e| e.node == v && e.event.kind() == "agent-exited")
        });
        let text = serde_json::to_string(&exited).unwrap();
        assert!(
            text.contains("SIGKILL") || text.contains("signal: 9"),
            "{text}"
        );
        assert!(text.contains("\"restarts\":1"), "{text}");
        wait_for("ready again", Duration::from_secs(30), || {
            let ready = events(&out)
                .iter()
                .filter(|e| e.node == v && e.event.kind() == "agent-ready")
                .count();
            (ready >= 2).then_some(())
        });
    }
    // No nonce reuse: every counter the controller accepted from a victim is
    // unique, the restarted agent continues above all earlier ones, and none
    // of its inputs was refused as a replay.
    for (v, before) in victims.iter().zip(&before_kill) {
        let after: Vec<u64> = wait_for(
            "readings after the restart",
            Duration::from_secs(30),
            || {
                let new: Vec<u64> = delivered(&results(&out), v)
                    .into_iter()
                    .filter(|c| !before.contains(c))
                    .collect();
                (new.len() >= 3).then_some(new)
            },
        );
        let rows = results(&out);
        let counters = delivered(&rows, v);
        let unique: BTreeSet<u64> = counters.iter().copied().collect();
        assert_eq!(
            unique.len(),
            counters.len(),
            "{v}: a counter was accepted twice: {counters:?}"
        );
        let last_before = *before.iter().max().expect("readings before the kill");
        assert!(
            after.iter().all(|c| *c > last_before),
            "{v}: after restart {after:?}, before {last_before}"
        );
        assert!(
            !rows
                .iter()
                .any(|r| r.sensor == *v && r.reason == "replayed"),
            "{v}: an honest reading was refused as a replay"
        );
    }
    let rows = results(&out);
    let log = ok(&["logs", &lab, "s-temp"]);
    assert_eq!(log.matches("nonce counter resumes").count(), 2, "{log}");

    // Latencies reflect the profile in force on the sensor's side of the
    // LAN (cps_qos: uniform delay, one impaired egress on the way).
    let shown: serde_json::Value = serde_json::from_str(&ok(&[
        "link",
        "show",
        &lab,
        "s-temp",
        "controller",
        "--json",
    ]))
    .unwrap();
    let text = shown.to_string();
    let delay_ms = millis(&text, "s-temp", "delay");
    let jitter_ms = millis(&text, "s-temp", "jitter");
    let datagram_latencies: Vec<f64> = rows
        .iter()
        .filter(|r| r.outcome == "delivered" && r.sensor != "s-door")
        .filter_map(|r| r.latency_ms)
        .collect();
    assert!(
        datagram_latencies.len() >= 20,
        "{} readings",
        datagram_latencies.len()
    );
    let mean = datagram_latencies.iter().sum::<f64>() / datagram_latencies.len() as f64;
    let min = datagram_latencies.iter().copied().fold(f64::MAX, f64::min);
    assert!(
        (mean - delay_ms).abs() < 0.25 * delay_ms,
        "mean latency {mean:.1} ms, profile delay {delay_ms} ms"
    );
    assert!(
        min >= delay_ms - jitter_ms - 5.0,
        "min latency {min:.1} ms below {delay_ms} - {jitter_ms}"
    );

    // The key log opens the captured QUIC (the capture holds the restarted
    // sensors' handshakes): tshark shows decrypted frames, among them the
    // door sensor's STREAM frames and the temperature sensor's DATAGRAMs.
    assert!(capture.wait().expect("capture").success());
    let tshark = std::process::Command::new("tshark")
        .args(["-r", pcap.to_str().unwrap(), "-o"])
        .arg(format!("tls.keylog_file:{}", keylog.display()))
        .args(["-Y", "quic", "-T", "fields", "-e", "quic.frame_type"])
        .output()
        .expect("run tshark");
    let frames = String::from_utf8_lossy(&tshark.stdout);
    let types: BTreeSet<u64> = frames
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter_map(|t| t.parse().ok())
        .collect();
    assert!(
        types.iter().any(|t| (0x08..=0x0f).contains(t)),
        "no decrypted STREAM frame; frame types {types:?}"
    );
    assert!(
        types.iter().any(|t| *t == 0x30 || *t == 0x31),
        "no decrypted DATAGRAM frame: {types:?}"
    );

    // Status shows the agents, the restarts included.
    let status: serde_json::Value = serde_json::from_str(&ok(&["status", &lab, "--json"])).unwrap();
    let agents = status["agents"].as_array().expect("agents in status");
    assert_eq!(agents.len(), 7);
    for v in victims {
        let a = agents.iter().find(|a| a["node"] == v).unwrap();
        assert_eq!(a["restarts"], 1, "{a}");
        assert_eq!(a["ready"], true, "{a}");
    }

    // Events, logs and metrics as a user reads them.
    let exits = ok(&[
        "events",
        &lab,
        "--node",
        "s-temp",
        "--kind",
        "agent-exited",
        "--json",
    ]);
    assert_eq!(exits.lines().count(), 1, "{exits}");
    assert!(ok(&["logs", &lab, "controller"]).contains("agent running"));
    assert!(
        std::fs::read_to_string(out.join("controller.log"))
            .unwrap()
            .contains("delivered s-temp")
    );
    let m = http_get(&metrics_addr, "/metrics");
    let received = sample(
        &m,
        &format!("testbed_messages_received_total{{lab=\"{lab}\",node=\"controller\""),
    )
    .expect("controller's received counter");
    assert!(received > 10.0, "{received}");
    let restarts = sample(
        &m,
        &format!("testbed_agent_restarts_total{{lab=\"{lab}\",node=\"s-temp\""),
    );
    assert_eq!(restarts, Some(1.0));
    assert!(m.contains("testbed_latency_seconds_bucket"), "{m}");
    assert!(m.contains("testbed_quic_rtt_seconds_bucket"));

    // `down` leaves no agent behind.
    ok(&["down", &lab]);
    let left = std::process::Command::new("pgrep")
        .args(["-f", &format!("testbed-agent {lab} ")])
        .output()
        .unwrap();
    assert!(
        left.stdout.is_empty(),
        "agents left: {}",
        String::from_utf8_lossy(&left.stdout)
    );
}

/// `field` ("delay", "jitter") of the egress of `node` in `link show --json`,
/// in milliseconds.
fn millis(json: &str, node: &str, field: &str) -> f64 {
    let v: serde_json::Value = serde_json::from_str(json).unwrap();
    let mut found = None;
    visit(&v, &mut |o| {
        if o.get("from").and_then(|f| f.as_str()) == Some(node)
            && let Some(d) = o.get(field)
        {
            found = Some(d.clone());
        }
    });
    let d = found.unwrap_or_else(|| panic!("no {field} for {node} in {json}"));
    match d {
        serde_json::Value::Number(n) => n.as_f64().unwrap() / 1e6,
        serde_json::Value::String(s) => humantime::parse_duration(&s).unwrap().as_secs_f64() * 1e3,
        other => panic!("{field}: {other}"),
    }
}

fn visit(v: &serde_json::Value, f: &mut impl FnMut(&serde_json::Map<String, serde_json::Value>)) {
    match v {
        serde_json::Value::Object(o) => {
            f(o);
            o.values().for_each(|x| visit(x, f));
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| visit(x, f)),
        _ => {}
    }
}

const IOT: &str = r#"
[lab]
name = "LAB"
seed = 7

[[node]]
name = "controller"
kind = "controller"
role = "cps-controller"
options = { max_rate = 50 }

[[node]]
name = "s1"
kind = "sensor"
role = "cps-sensor"
options = { sensor = "temperature", interval = "100ms" }

[[node]]
name = "s2"
kind = "sensor"
role = "cps-sensor"
options = { sensor = "smoke", interval = "100ms" }

[[node]]
name = "mallory"
kind = "attacker"

[[segment]]
name = "iot"
members = ["controller", "s1", "s2", "mallory"]
"#;

/// `node`'s address in the lab's hosts file.
fn host_addr(lab: &str, node: &str) -> std::net::IpAddr {
    let hosts = std::fs::read_to_string(testbed::lab::state::hosts_path(lab)).unwrap();
    hosts
        .lines()
        .find(|l| l.ends_with(&format!("\t{node}")))
        .and_then(|l| l.split('\t').next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("{node} in the hosts file"))
}

/// The metrics address `up --metrics` printed.
fn metrics_address(printed: &str) -> String {
    printed
        .lines()
        .find_map(|l| l.strip_prefix("metrics: http://"))
        .and_then(|l| l.strip_suffix("/metrics"))
        .expect("up prints the metrics address")
        .to_string()
}

/// Run `f` on a thread inside `node`'s namespace with a tokio runtime.
fn inside<T: Send + 'static>(
    lab: &str,
    node: &str,
    f: impl FnOnce() -> std::pin::Pin<Box<dyn std::future::Future<Output = T>>> + Send + 'static,
) -> T {
    let netns = testbed::plan::node_netns(lab, node);
    std::thread::spawn(move || {
        let ns = testbed::netlink::netns::open(&netns).expect("open namespace");
        nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f())
    })
    .join()
    .expect("rogue thread")
}

/// A client endpoint with a fresh port, trusting `ca` and presenting `me`
/// (or nothing).
fn client(
    ca: &rustls::pki_types::CertificateDer<'static>,
    me: Option<&Identity>,
) -> quinn::Endpoint {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone()).unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots);
    let mut tls = match me {
        Some(id) => builder
            .with_client_auth_cert(vec![id.cert.clone()], id.private_key())
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    tls.alpn_protocols = vec![transport::ALPN.to_vec()];
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let config = quinn::ClientConfig::new(Arc::new(quic));
    transport::endpoint(
        transport::bind("0.0.0.0:0".parse().unwrap(), None).unwrap(),
        None,
        config,
    )
    .expect("endpoint")
}

async fn dial(
    ep: &quinn::Endpoint,
    controller: std::net::IpAddr,
) -> Result<quinn::Connection, String> {
    let connecting = ep
        .connect((controller, AGENT_PORT).into(), "controller")
        .map_err(|e| e.to_string())?;
    let conn = tokio::time::timeout(Duration::from_secs(5), connecting)
        .await
        .map_err(|_| "timeout".to_string())?
        .map_err(|e| e.to_string())?;
    // A server that refuses the client's certificate says so after the
    // client's handshake finished: give it a moment.
    match tokio::time::timeout(Duration::from_millis(500), conn.closed()).await {
        Ok(reason) => Err(reason.to_string()),
        Err(_) => Ok(conn),
    }
}

/// A certificate for `name` from a CA that is not the lab's.
fn foreign_identity(dir: &Path, name: &str, lab_ca: &Path) -> Identity {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec![name.to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let (c, k) = (dir.join("rogue.pem"), dir.join("rogue.key"));
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    Identity::from_files(name, &c, &k, lab_ca).unwrap()
}

fn sealed(keys: &SessionKeys, sensor_id: u32, counter: u64, age: Duration) -> Vec<u8> {
    let now = testbed::events::unix_us() - age.as_micros() as u64;
    seal::seal_reading(
        keys,
        &Reading {
            sensor_id,
            kind: SensorKind::Temperature,
            counter,
            timestamp_us: now,
            value: 21.5,
        },
    )
}

fn rejected(metrics: &str, lab: &str, reason: &str) -> f64 {
    sample(
        metrics,
        &format!(
            "testbed_messages_rejected_total{{lab=\"{lab}\",node=\"controller\",role=\"cps-controller\",reason=\"{reason}\"}}"
        ),
    )
    .unwrap_or(0.0)
}

#[test]
fn rogue_clients_are_refused_and_every_bad_input_is_rejected_with_its_reason() {
    if !root_or_skip("rogue_clients") {
        return;
    }
    let topo = write_topology(IOT, "rg");
    let lab = topo.lab.clone();
    let out = topo.dir.path().join("out");
    let (_guard, printed) = LabGuard::up_with(
        &topo,
        &["--out", out.to_str().unwrap(), "--metrics", "127.0.0.1:0"],
    );
    let metrics_addr = metrics_address(&printed);
    let controller = host_addr(&lab, "controller");
    let lab_ca = identity::ca_path(&lab);
    let ca = Identity::load(&lab, "mallory").unwrap().ca;
    let rss_before: u64 = status_field(agent_pid(&lab, "controller").unwrap(), "VmRSS:")
        .trim_end_matches(" kB")
        .parse()
        .unwrap();

    // 1. A certificate from another CA, and no certificate: both refused.
    let foreign = foreign_identity(topo.dir.path(), "mallory", &lab_ca);
    let (ca2, ca3) = (ca.clone(), ca.clone());
    let refused = inside(&lab, "mallory", move || {
        Box::pin(async move {
            let a = dial(&client(&ca2, Some(&foreign)), controller).await;
            let b = dial(&client(&ca3, None), controller).await;
            (a.err(), b.err())
        })
    });
    assert!(
        refused.0.is_some(),
        "a certificate from another CA was accepted"
    );
    assert!(
        refused.1.is_some(),
        "a client without a certificate was accepted"
    );
    let refusals = wait_for("two peer-refused events", Duration::from_secs(10), || {
        let r: Vec<String> = events(&out)
            .iter()
            .filter(|e| e.node == "controller" && e.event.kind() == "peer-refused")
            .map(|e| serde_json::to_string(e).unwrap())
            .collect();
        (r.len() >= 2).then_some(r)
    });
    assert!(
        refusals
            .iter()
            .any(|r| r.contains("UnknownIssuer") || r.contains("unknown")),
        "{refusals:?}"
    );
    assert!(
        refusals
            .iter()
            .any(|r| r.contains("NoCertificatesPresented") || r.contains("no certificate")),
        "{refusals:?}"
    );

    // 2. An insider with a valid certificate of this lab sends every kind of
    //    bad input; the controller refuses each with its reason.
    let lab2 = lab.clone();
    let flood_end = inside(&lab, "mallory", move || {
        Box::pin(async move {
            let me = Identity::load(&lab2, "mallory").unwrap();
            let ep = client(&me.ca, Some(&me));
            let conn = dial(&ep, controller)
                .await
                .expect("a valid certificate gets in");
            let ctrl_cert = testbed::agent::peer_cert(&conn).unwrap();
            let keys = cps::session_keys(&me, &ctrl_cert, true, "mallory").unwrap();
            let id = cps::sensor_id("mallory");
            let pause = || tokio::time::sleep(Duration::from_millis(30));
            // A good reading, then the same bytes again: a replay.
            let good = sealed(&keys, id, 1, Duration::ZERO);
            conn.send_datagram(good.clone().into()).unwrap();
            pause().await;
            conn.send_datagram(good.clone().into()).unwrap();
            pause().await;
            // Bit flips in the ciphertext: undecryptable.
            for i in 0..3 {
                let mut bad = sealed(&keys, id, 10 + i, Duration::ZERO);
                let at = seal::HEADER_LEN + 3 + i as usize;
                bad[at] ^= 0x40;
                conn.send_datagram(bad.into()).unwrap();
                pause().await;
            }
            // Garbage: malformed.
            conn.send_datagram(vec![0x42; 40].into()).unwrap();
            pause().await;
            // Oversize, as a datagram and as a stream.
            conn.send_datagram(vec![0u8; 600].into()).unwrap();
            let mut s = conn.open_uni().await.unwrap();
            let _ = s.write_all(&vec![7u8; 4096]).await;
            let _ = s.finish();
            pause().await;
            // Old: stale.
            conn.send_datagram(sealed(&keys, id, 20, Duration::from_secs(60)).into())
                .unwrap();
            pause().await;
            // Someone else's sensor id: unauthorized.
            conn.send_datagram(sealed(&keys, cps::sensor_id("s1"), 21, Duration::ZERO).into())
                .unwrap();
            pause().await;
            // More connections than one sensor may hold: over-limit.
            let mut extra = Vec::new();
            for _ in 0..3 {
                extra.push(dial(&ep, controller).await);
            }
            // A flood of valid readings, far over the 50/s limit: over-rate.
            for c in 0..3000u64 {
                let _ = conn.send_datagram(sealed(&keys, id, 100 + c, Duration::ZERO).into());
                if c % 100 == 0 {
                    tokio::task::yield_now().await;
                }
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
            drop(extra);
            std::time::SystemTime::now()
        })
    });

    // Each reason was counted (metrics see every refusal).
    let m = wait_for("rejections in the metrics", Duration::from_secs(10), || {
        let m = http_get(&metrics_addr, "/metrics");
        Reason::ALL
            .iter()
            .all(|r| rejected(&m, &lab, r.as_str()) > 0.0)
            .then_some(m)
    });
    assert_eq!(rejected(&m, &lab, "replayed"), 1.0);
    assert_eq!(rejected(&m, &lab, "undecryptable"), 3.0);
    assert!(rejected(&m, &lab, "oversize") >= 2.0);
    assert!(rejected(&m, &lab, "over-rate") > 1000.0);
    // ... and reported as typed events and controller log lines.
    let evs = events(&out);
    let reasons: BTreeMap<String, usize> = evs
        .iter()
        .filter(|e| e.node == "controller" && e.event.kind() == "input-rejected")
        .map(|e| {
            serde_json::to_value(&e.event).unwrap()["reason"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .fold(BTreeMap::new(), |mut m, r| {
            *m.entry(r).or_default() += 1;
            m
        });
    for r in Reason::ALL {
        assert!(
            reasons.contains_key(r.as_str()),
            "no input-rejected event for {r}: {reasons:?}"
        );
    }
    assert!(
        evs.iter()
            .any(|e| e.event.kind() == "rejections-suppressed")
    );
    let log = std::fs::read_to_string(out.join("controller.log")).unwrap();
    assert!(log.contains("rejected mallory: replayed"), "{log}");

    // Honest sensors keep delivering after the flood, and the controller's
    // memory stayed bounded.
    let since = humantime::format_rfc3339_micros(flood_end).to_string();
    wait_for(
        "honest readings after the flood",
        Duration::from_secs(10),
        || {
            let rows = results(&out);
            ["s1", "s2"]
                .iter()
                .all(|s| {
                    rows.iter()
                        .filter(|r| r.sensor == *s && r.outcome == "delivered" && r.time > since)
                        .count()
                        >= 5
                })
                .then_some(())
        },
    );
    let pid = agent_pid(&lab, "controller").unwrap();
    let rss: u64 = status_field(pid, "VmRSS:")
        .trim_end_matches(" kB")
        .parse()
        .unwrap();
    assert!(rss < 64 * 1024, "controller RSS {rss} kB");
    assert!(
        rss < rss_before + 16 * 1024,
        "controller grew from {rss_before} to {rss} kB"
    );
    let record = testbed::lab::supervisor::read(&lab).unwrap();
    let c = record
        .children
        .iter()
        .find(|c| c.name == "controller")
        .unwrap();
    assert_eq!(c.restarts, 0, "the controller died: {:?}", c.last_exit);

    // A second `up` into the same output folder starts a fresh event log and
    // results, keeping the previous run's as `.1`.
    ok(&["down", &lab]);
    let (_again, _) = LabGuard::up_with(&topo, &["--out", out.to_str().unwrap()]);
    assert_eq!(events(&out).first().map(|e| e.seq), Some(1));
    for old in [
        "events.jsonl.1",
        "results.csv.1",
        "controller.log.1",
        "logs.1",
    ] {
        assert!(out.join(old).exists(), "{old} kept");
    }
}

/// A controller, a sensor over plain UDP, one over QUIC datagrams, and
/// mallory (a node of the lab with a certificate but no agent: an insider
/// whose key the test holds). `SWITCH` is the controller's replay window.
const UDP_LAB: &str = r#"
[lab]
name = "LAB"
seed = 9

[[node]]
name = "controller"
kind = "controller"
role = "cps-controller"
options = { max_rate = 50, replay_window = "SWITCH" }

[[node]]
name = "s-udp"
kind = "sensor"
role = "cps-sensor"
options = { sensor = "temperature", interval = "200ms", transport = "udp" }

[[node]]
name = "s-quic"
kind = "sensor"
role = "cps-sensor"
options = { sensor = "door", interval = "200ms" }

[[node]]
name = "mallory"
kind = "attacker"

[[segment]]
name = "iot"
members = ["controller", "s-udp", "s-quic", "mallory"]
"#;

/// The value of `family{lab="LAB",node="NODE",...}`, if exported.
fn node_sample(metrics: &str, family: &str, lab: &str, node: &str) -> Option<f64> {
    sample(metrics, &format!("{family}{{lab=\"{lab}\",node=\"{node}\""))
}

/// Readings over plain UDP on a lab whose controller's replay window is
/// `switch`: the UDP sensor delivers and times its ACKs; from mallory, a
/// frame with an id no certificate has is unauthorized, one with s-udp's id
/// and random ciphertext undecryptable, and a sealed reading sent twice is
/// accepted once and replayed once, or (window off) accepted twice with one
/// defence miss.
fn readings_over_udp(switch: &str, tag: &str) {
    let off = switch == "off";
    let topo = write_topology(&UDP_LAB.replace("SWITCH", switch), tag);
    let lab = topo.lab.clone();
    let out = topo.dir.path().join("out");
    let (_guard, printed) = LabGuard::up_with(
        &topo,
        &["--out", out.to_str().unwrap(), "--metrics", "127.0.0.1:0"],
    );
    let metrics_addr = metrics_address(&printed);
    let controller = host_addr(&lab, "controller");

    // 1. Both sensors deliver; the UDP sensor's ACKs come back and are timed.
    wait_for(
        "readings from both sensors",
        Duration::from_secs(20),
        || {
            let rows = results(&out);
            let n = |s: &str| {
                rows.iter()
                    .filter(|r| r.sensor == s && r.outcome == "delivered")
                    .count()
            };
            (n("s-udp") >= 5 && n("s-quic") >= 1).then_some(())
        },
    );
    let m = wait_for(
        "the UDP sensor's round trips",
        Duration::from_secs(10),
        || {
            let m = http_get(&metrics_addr, "/metrics");
            (node_sample(&m, "testbed_latency_seconds_count", &lab, "s-udp")? >= 3.0).then_some(m)
        },
    );
    assert!(node_sample(&m, "testbed_messages_received_total", &lab, "s-udp").unwrap() >= 3.0);
    for node in ["controller", "s-udp", "s-quic"] {
        let rss = node_sample(&m, "testbed_agent_resident_bytes", &lab, node);
        assert!(rss.is_some_and(|b| b > 1e6), "{node}: {rss:?}");
    }
    let rows = results(&out);
    let udp_rows: Vec<&Row> = rows.iter().filter(|r| r.sensor == "s-udp").collect();
    assert!(
        udp_rows
            .iter()
            .all(|r| r.outcome == "delivered" && r.encrypted && r.reason.is_empty()),
        "{udp_rows:?}"
    );

    // 2. Mallory's datagrams to the controller's UDP port.
    let me = Identity::load(&lab, "mallory").unwrap();
    let controller_cert = identity::load_cert(&lab, "controller").unwrap();
    let keys = cps::session_keys(&me, &controller_cert, true, "mallory").unwrap();
    let (mallory_addr, acks) = inside(&lab, "mallory", move || {
        Box::pin(async move {
            let socket = tokio::net::UdpSocket::bind("0.0.0.0:0").await.unwrap();
            let to = std::net::SocketAddr::new(controller, cps::CPS_UDP_PORT);
            let pause = || tokio::time::sleep(Duration::from_millis(50));
            // An id no certificate of the lab has: unauthorized.
            let stranger = SessionKeys::from_bytes([7; 32], [8; 32]);
            let ghost = sealed(&stranger, cps::sensor_id("ghost"), 1, Duration::ZERO);
            socket.send_to(&ghost, to).await.unwrap();
            pause().await;
            // s-udp's id over random ciphertext: undecryptable.
            let mut forged = sealed(&stranger, cps::sensor_id("s-udp"), 1 << 40, Duration::ZERO);
            for b in &mut forged[seal::HEADER_LEN..] {
                *b = rand::random();
            }
            socket.send_to(&forged, to).await.unwrap();
            pause().await;
            // A sealed reading of mallory's, twice.
            let reading = sealed(&keys, cps::sensor_id("mallory"), 1, Duration::ZERO);
            for _ in 0..2 {
                socket.send_to(&reading, to).await.unwrap();
                pause().await;
            }
            // The sealed ACKs that came back.
            let mut acks = Vec::new();
            let mut buf = [0u8; 512];
            while let Ok(Ok((n, from))) =
                tokio::time::timeout(Duration::from_secs(1), socket.recv_from(&mut buf)).await
            {
                assert_eq!(from, to);
                let frame = Frame::parse(&buf[..n]).unwrap();
                let ack = Ack::decode(&seal::open(&keys, &frame).unwrap()).unwrap();
                acks.push(ack.counter);
            }
            let port = socket.local_addr().unwrap().port();
            (port, acks)
        })
    });
    let accepted = if off { 2 } else { 1 };
    assert_eq!(acks, vec![1; accepted], "ACKs for mallory's reading");

    let m = wait_for("mallory's refusals", Duration::from_secs(10), || {
        let m = http_get(&metrics_addr, "/metrics");
        (rejected(&m, &lab, "unauthorized") >= 1.0 && rejected(&m, &lab, "undecryptable") >= 1.0)
            .then_some(m)
    });
    assert_eq!(rejected(&m, &lab, "unauthorized"), 1.0);
    assert_eq!(rejected(&m, &lab, "undecryptable"), 1.0);
    assert_eq!(rejected(&m, &lab, "replayed"), if off { 0.0 } else { 1.0 });
    let misses = sample(
        &m,
        &format!(
            "testbed_defence_misses_total{{lab=\"{lab}\",node=\"controller\",role=\"cps-controller\",defence=\"replay_window\"}}"
        ),
    );
    let role_misses = sample(
        &m,
        &format!(
            "testbed_role_defence_misses_total{{lab=\"{lab}\",role=\"cps-controller\",defence=\"replay_window\"}}"
        ),
    );
    if off {
        assert_eq!(misses, Some(1.0), "{m}");
        assert_eq!(role_misses, Some(1.0), "{m}");
    } else {
        assert!(!m.contains("testbed_defence_misses_total{"), "{m}");
    }

    let rows = wait_for("mallory's rows", Duration::from_secs(5), || {
        let rows = results(&out);
        let n = rows
            .iter()
            .filter(|r| r.sensor == "mallory" || r.reason == "undecryptable")
            .count();
        (n >= 2 && rows.iter().any(|r| r.reason == "unauthorized")).then_some(rows)
    });
    let ghost = rows.iter().find(|r| r.reason == "unauthorized").unwrap();
    assert_eq!(ghost.outcome, "rejected");
    assert!(
        ghost.sensor.ends_with(&format!(":{mallory_addr}")),
        "an unknown sender is named by its address: {ghost:?}"
    );
    let forged = rows.iter().find(|r| r.reason == "undecryptable").unwrap();
    assert_eq!(
        (forged.sensor.as_str(), forged.counter),
        ("s-udp", Some(1 << 40))
    );
    let mallory: Vec<(&str, &str)> = rows
        .iter()
        .filter(|r| r.sensor == "mallory" && r.counter == Some(1))
        .map(|r| (r.outcome.as_str(), r.reason.as_str()))
        .collect();
    let expected = if off {
        vec![("delivered", ""), ("delivered", "miss:replay_window")]
    } else {
        vec![("delivered", ""), ("rejected", "replayed")]
    };
    assert_eq!(mallory, expected);

    // The controller announced a switched-off defence, and only then.
    let notices: Vec<String> = events(&out)
        .into_iter()
        .filter(|e| e.node == "controller" && e.event.kind() == "notice")
        .map(|e| serde_json::to_string(&e.event).unwrap())
        .collect();
    assert_eq!(
        notices
            .iter()
            .any(|n| n.contains("defence replay_window is OFF")),
        off,
        "{notices:?}"
    );

    // The honest sensors were never disturbed.
    let rows = results(&out);
    for s in ["s-udp", "s-quic"] {
        assert!(
            rows.iter()
                .filter(|r| r.sensor == s)
                .all(|r| r.outcome == "delivered" || r.reason == "undecryptable"),
            "{s}"
        );
    }
}

#[test]
fn udp_readings_are_delivered_and_replays_refused() {
    if !root_or_skip("udp_readings") {
        return;
    }
    readings_over_udp("on", "ud");
}

#[test]
fn udp_replays_are_accepted_and_counted_with_the_replay_window_off() {
    if !root_or_skip("udp_replay_window_off") {
        return;
    }
    readings_over_udp("off", "uo");
}
