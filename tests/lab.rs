//! The emulation core end to end, as root, in real namespaces: up, reach,
//! status, exec, iperf3, idempotent up, refusal, down leaving nothing.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::Duration;

use common::*;

/// Addresses of every node, from `status --json`.
fn addresses(lab: &str) -> (serde_json::Value, BTreeMap<String, Vec<String>>) {
    let status: serde_json::Value =
        serde_json::from_str(&ok(&["status", lab, "--json"])).expect("status --json parses");
    let mut map = BTreeMap::new();
    for n in status["nodes"].as_array().unwrap() {
        let addrs = n["interfaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| {
                i["address"]
                    .as_str()
                    .unwrap()
                    .split('/')
                    .next()
                    .unwrap()
                    .to_string()
            })
            .collect();
        map.insert(n["name"].as_str().unwrap().to_string(), addrs);
    }
    (status, map)
}

/// From `node`, ping each address once; return the ones that did not answer.
fn unreachable_from(lab: &str, node: &str, targets: &[String]) -> Vec<String> {
    let script = format!(
        "for a in {}; do ping -c1 -W1 -q $a >/dev/null 2>&1 || echo $a; done",
        targets.join(" ")
    );
    let out = ok(&["exec", lab, node, "--", "sh", "-c", &script]);
    out.split_whitespace().map(str::to_string).collect()
}

/// The city with every segment on the loss-free `lan` profile: its links are
/// still impaired (netem or the engine carries them all), but reachability
/// checks do not depend on luck.
fn clean_city(tag: &str) -> TopoCopy {
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("topologies/city.toml"))
            .expect("read city.toml");
    let text = text
        .replace("profile = \"dsrc\"", "profile = \"lan\"")
        .replace("profile = \"cps_qos\"", "profile = \"lan\"");
    write_topology(&text, tag)
}

#[test]
fn minimal_up_ping_status_down() {
    if !root_or_skip("minimal_up_ping_status_down") {
        return;
    }
    let host_before = host_links();
    let topo = copy_topology("topologies/minimal.toml", "m");
    let lab = LabGuard::up(&topo);
    let out = ok(&["exec", &lab.lab, "h1", "--", "ping", "-c3", "-i0.2", "h2"]);
    assert!(out.contains("3 received"), "{out}");
    let (status, addrs) = addresses(&lab.lab);
    assert_eq!(status["state"], "up");
    assert_eq!(addrs.len(), 2);
    assert_eq!(status["links"].as_array().unwrap().len(), 1);
    // Every interface testbed made carries its ownership tag (ifalias).
    for ns in [
        format!("tb-{}", lab.lab),
        format!("tb-{}.h1", lab.lab),
        format!("tb-{}.h2", lab.lab),
    ] {
        let out = Command::new("ip")
            .args(["-n", &ns, "-o", "link", "show"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        for line in text.lines() {
            assert!(
                line.contains(&format!("alias testbed:{}", lab.lab)),
                "untagged in {ns}: {line}"
            );
        }
    }
    // The host's own namespace is untouched.
    assert_eq!(host_links(), host_before);
    // A second up with the same file is a no-op.
    let again = ok(&["up", topo.path.to_str().unwrap()]);
    assert!(again.contains("already up"), "{again}");
    drop(lab);
    assert_gone(&topo.lab);
    assert_eq!(host_links(), host_before);
}

#[test]
fn changed_topology_is_refused_while_up() {
    if !root_or_skip("changed_topology_is_refused_while_up") {
        return;
    }
    let topo = copy_topology("topologies/minimal.toml", "c");
    let lab = LabGuard::up(&topo);
    let text = std::fs::read_to_string(&topo.path)
        .unwrap()
        .replace("[lab]", "[lab]\nseed = 99");
    std::fs::write(&topo.path, text).unwrap();
    let out = run(&["up", topo.path.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("different topology") && err.contains("testbed down"),
        "{err}"
    );
    // The running lab is intact.
    assert!(ok(&["exec", &lab.lab, "h1", "--", "ping", "-c1", "h2"]).contains("1 received"));
}

#[test]
fn city_every_node_reaches_every_other_and_iperf3_runs() {
    if !root_or_skip("city_every_node_reaches_every_other_and_iperf3_runs") {
        return;
    }
    let topo = clean_city("y");
    let lab = LabGuard::up(&topo);
    let (status, addrs) = addresses(&lab.lab);

    // status --json matches the topology as `check --json` sees it.
    let topo_json: serde_json::Value =
        serde_json::from_str(&ok(&["check", topo.path.to_str().unwrap(), "--json"])).unwrap();
    let nodes = status["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), topo_json["nodes"].as_array().unwrap().len());
    for (n, t) in nodes.iter().zip(topo_json["nodes"].as_array().unwrap()) {
        assert_eq!(n["name"], t["name"]);
        assert_eq!(n["kind"], t["kind"]);
        assert_eq!(n["present"], true);
    }
    let segs: Vec<&str> = status["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    let tsegs: Vec<&str> = topo_json["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(segs, tsegs);

    // Every LAN of the city has the router, so every node reaches every address.
    let all: Vec<String> = addrs.values().flatten().cloned().collect();
    for node in addrs.keys() {
        let missing = unreachable_from(&lab.lab, node, &all);
        assert!(missing.is_empty(), "{node} cannot reach {missing:?}");
    }

    // iperf3 TCP between two vehicles in different cells, across the router.
    let target = addrs["v021"][0].clone();
    let bps = iperf3_tcp(&lab.lab, "v021", "v001", &target, &["-t", "2"]);
    assert!(bps > 50e6, "iperf3 measured only {bps} bit/s");

    // A process left running in a node is stopped by `down`.
    let mut sleeper = testbed()
        .args(["exec", &lab.lab, "v002", "--", "sleep", "600"])
        .spawn()
        .unwrap();
    sleep(Duration::from_millis(300));
    let name = lab.lab.clone();
    drop(lab);
    let status = sleeper.wait().unwrap();
    assert!(!status.success(), "sleep in a node survived down");
    assert_gone(&name);
    let left = Command::new("pgrep")
        .args(["-f", "sleep 600"])
        .output()
        .unwrap();
    assert!(
        left.stdout.is_empty(),
        "processes left: {}",
        String::from_utf8_lossy(&left.stdout)
    );
}

#[test]
fn separate_lans_without_router_do_not_reach() {
    if !root_or_skip("separate_lans_without_router_do_not_reach") {
        return;
    }
    let topo = write_topology(
        r#"
[lab]
name = "x"
[[node]]
name = "a1"
kind = "host"
[[node]]
name = "a2"
kind = "host"
[[node]]
name = "b1"
kind = "host"
[[segment]]
name = "lan-a"
members = ["a1", "a2"]
[[segment]]
name = "lan-b"
members = ["b1"]
"#,
        "s",
    );
    let lab = LabGuard::up(&topo);
    let (_, addrs) = addresses(&lab.lab);
    assert!(unreachable_from(&lab.lab, "a1", &addrs["a2"]).is_empty());
    assert_eq!(unreachable_from(&lab.lab, "a1", &addrs["b1"]), addrs["b1"]);
}

#[test]
fn exact_name_collision_is_refused_and_creates_nothing() {
    if !root_or_skip("exact_name_collision_is_refused_and_creates_nothing") {
        return;
    }
    let topo = copy_topology("topologies/minimal.toml", "n");
    let foreign = ForeignNetns::new(&format!("tb-{}.h2", topo.lab));
    let out = run(&["up", topo.path.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("already exists"), "{err}");
    assert_eq!(
        namespaces_with_prefix(&format!("tb-{}", topo.lab)),
        vec![foreign.0.clone()]
    );
    // `clean --all` does not touch a namespace testbed did not make.
    ok(&["clean", "--all"]);
    assert_eq!(
        namespaces_with_prefix(&format!("tb-{}", topo.lab)),
        vec![foreign.0.clone()]
    );
}

#[test]
fn invalid_topologies_create_nothing() {
    if !root_or_skip("invalid_topologies_create_nothing") {
        return;
    }
    let before = namespaces_with_prefix("");
    let host_before = host_links();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/invalid");
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let out = run(&["up", path.to_str().unwrap()]);
        assert!(!out.status.success(), "{} was accepted", path.display());
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.lines().count(), 1, "not one line: {err}");
        assert!(
            err.contains(&format!("{}:", path.display())),
            "error does not name the file: {err}"
        );
        n += 1;
    }
    assert!(n >= 15);
    assert_eq!(namespaces_with_prefix(""), before);
    assert_eq!(host_links(), host_before);
}

#[test]
fn capture_writes_pcapng_that_tshark_reads() {
    if !root_or_skip("capture_writes_pcapng_that_tshark_reads") {
        return;
    }
    let topo = copy_topology("topologies/minimal.toml", "p");
    let lab = LabGuard::up(&topo);
    let file = topo.dir.path().join("out.pcapng");
    let mut cap = testbed()
        .args([
            "capture",
            &lab.lab,
            "h1",
            "h2",
            "-w",
            file.to_str().unwrap(),
            "--duration",
            "30s",
        ])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    sleep(Duration::from_millis(700));
    let out = ok(&["exec", &lab.lab, "h1", "--", "ping", "-c5", "-i0.2", "h2"]);
    assert!(out.contains("5 received"), "{out}");
    sleep(Duration::from_millis(300));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(cap.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let st = cap.wait().unwrap();
    assert!(st.success(), "capture exited with {st}");
    let tshark = Command::new("tshark")
        .args([
            "-r",
            file.to_str().unwrap(),
            "-Y",
            "icmp",
            "-T",
            "fields",
            "-e",
            "frame.interface_name",
            "-e",
            "icmp.type",
        ])
        .output()
        .expect("tshark installed");
    assert!(
        tshark.status.success(),
        "{}",
        String::from_utf8_lossy(&tshark.stderr)
    );
    let mut counts: BTreeMap<(String, String), usize> = BTreeMap::new();
    for line in String::from_utf8_lossy(&tshark.stdout).lines() {
        let mut f = line.split('\t');
        let key = (
            f.next().unwrap_or("").to_string(),
            f.next().unwrap_or("").to_string(),
        );
        *counts.entry(key).or_default() += 1;
    }
    for iface in ["h1:eth0", "h2:eth0"] {
        assert_eq!(
            counts.get(&(iface.to_string(), "8".to_string())),
            Some(&5),
            "{counts:?}"
        );
        assert_eq!(
            counts.get(&(iface.to_string(), "0".to_string())),
            Some(&5),
            "{counts:?}"
        );
    }
    assert_eq!(counts.len(), 4, "unexpected interfaces: {counts:?}");
}

#[test]
fn fleet_1000_up_and_down() {
    if !root_or_skip("fleet_1000_up_and_down") {
        return;
    }
    let topo = copy_topology("topologies/fleet-1000.toml", "f");
    let lab = LabGuard::up(&topo);
    let (status, addrs) = addresses(&lab.lab);
    assert_eq!(status["state"], "up");
    let vehicles = status["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["kind"] == "vehicle")
        .count();
    assert_eq!(vehicles, 1000);
    // Both ends of the sharded fleet LAN, and the backhaul beyond the router.
    let targets = vec![addrs["v1000"][0].clone(), addrs["director"][0].clone()];
    assert!(unreachable_from(&lab.lab, "v0001", &targets).is_empty());
    let name = lab.lab.clone();
    drop(lab);
    assert_gone(&name);
}

#[test]
fn ipv6_pool_gives_static_addresses_that_route() {
    if !root_or_skip("ipv6_pool_gives_static_addresses_that_route") {
        return;
    }
    let topo = write_topology(
        r#"
[lab]
name = "x"
pool6 = "fd00:77::/48"
[[node]]
name = "r1"
kind = "router"
[[node]]
name = "a"
kind = "host"
[[node]]
name = "b"
kind = "host"
[[segment]]
name = "left"
members = ["r1", "a"]
[[segment]]
name = "right"
members = ["r1", "b"]
"#,
        "6",
    );
    let lab = LabGuard::up(&topo);
    let status: serde_json::Value =
        serde_json::from_str(&ok(&["status", &lab.lab, "--json"])).unwrap();
    let b = status["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "b")
        .unwrap();
    let b6 = b["interfaces"][0]["address6"]
        .as_str()
        .expect("b has an IPv6 address");
    let b6 = b6.split('/').next().unwrap();
    let out = ok(&[
        "exec", &lab.lab, "a", "--", "ping", "-6", "-c2", "-i0.2", "-W2", b6,
    ]);
    assert!(out.contains("2 received"), "{out}");
    // One link-local address, the static one (fe80:: + the global interface id),
    // and nothing autoconfigured.
    let addrs = ok(&[
        "exec", &lab.lab, "a", "--", "ip", "-6", "-o", "addr", "show", "dev", "eth0",
    ]);
    assert_eq!(addrs.matches("fe80").count(), 1, "{addrs}");
    assert!(addrs.contains("fe80::2/64"), "{addrs}");
}

#[test]
fn namespace_removed_behind_our_back_is_reported_not_papered_over() {
    if !root_or_skip("namespace_removed_behind_our_back_is_reported_not_papered_over") {
        return;
    }
    let topo = copy_topology("topologies/minimal.toml", "d");
    let lab = LabGuard::up(&topo);
    let st = Command::new("ip")
        .args(["netns", "del", &format!("tb-{}.h2", lab.lab)])
        .status()
        .unwrap();
    assert!(st.success());
    let status: serde_json::Value =
        serde_json::from_str(&ok(&["status", &lab.lab, "--json"])).unwrap();
    assert_eq!(status["state"], "degraded");
    let out = run(&["up", topo.path.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("removed by something else"), "{err}");
    let name = lab.lab.clone();
    drop(lab);
    assert_gone(&name);
}

#[test]
fn backend_kernel_without_netem_is_refused_and_auto_uses_the_engine() {
    if !root_or_skip("backend_kernel_without_netem_is_refused_and_auto_uses_the_engine") {
        return;
    }
    if std::path::Path::new("/proc/config.gz").exists() {
        let cfg = Command::new("sh")
            .args([
                "-c",
                "zcat /proc/config.gz | grep -c '^CONFIG_NET_SCH_NETEM=' || true",
            ])
            .output()
            .unwrap();
        if String::from_utf8_lossy(&cfg.stdout).trim() != "0" {
            eprintln!("skipped: this kernel has netem (the VM test covers the kernel backend)");
            return;
        }
    }
    let text = r#"
[lab]
name = "x"
backend = "kernel"
[[node]]
name = "a"
kind = "host"
[[node]]
name = "b"
kind = "host"
[[link]]
a = "a"
b = "b"
profile = "4g"
"#;
    let topo = write_topology(text, "b");
    let out = run(&["up", topo.path.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no sch_netem"), "{err}");
    assert_gone(&topo.lab);

    let auto = write_topology(&text.replace("\"kernel\"", "\"auto\""), "b");
    let lab = LabGuard::up(&auto);
    let status: serde_json::Value =
        serde_json::from_str(&ok(&["status", &lab.lab, "--json"])).unwrap();
    let how = status["impairments"].as_str().unwrap();
    assert_eq!(how, "userspace engine", "{status}");
}

#[test]
fn link_down_cuts_and_link_up_restores_with_routes() {
    if !root_or_skip("link_down_cuts_and_link_up_restores_with_routes") {
        return;
    }
    let topo = clean_city("l");
    let lab = LabGuard::up(&topo);
    let reaches = |from: &str, to: &str| {
        run(&["exec", &lab.lab, from, "--", "ping", "-c1", "-W1", "-q", to])
            .status
            .success()
    };
    assert!(reaches("v001", "director"));
    ok(&["link", "down", &lab.lab, "v001", "r1"]);
    assert!(
        !reaches("v001", "director"),
        "v001 still reaches the backhaul with its link down"
    );
    // On a segment only v001's port is cut: its neighbours are unaffected.
    assert!(reaches("v002", "director"));
    let show: serde_json::Value =
        serde_json::from_str(&ok(&["link", "show", &lab.lab, "v001", "r1", "--json"])).unwrap();
    assert_eq!(show[0]["up"], false, "{show}");
    ok(&["link", "up", &lab.lab, "v001", "r1"]);
    // Routes through the interface come back with it (the kernel drops them on down).
    let mut back = false;
    for _ in 0..20 {
        if reaches("v001", "director") {
            back = true;
            break;
        }
        sleep(Duration::from_millis(100));
    }
    assert!(back, "v001 does not reach the director after link up");
    let err = run(&["link", "down", &lab.lab, "v001", "director"]);
    assert!(String::from_utf8_lossy(&err.stderr).contains("no link between"));
}
