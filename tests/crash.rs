//! Crash safety: SIGKILL `testbed up` at several points of a 200-node lab
//! (with a few links carried by the userspace engine and two agents), then
//! `clean --all` must leave nothing of the lab (no namespace, no supervisor,
//! engine or agent process), and must not touch a namespace or veth the test made itself with
//! look-alike names.

mod common;

use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::Instant;

use common::*;

fn topology_200() -> String {
    r#"
[lab]
name = "x"
backend = "userspace"

[[node]]
name = "r1"
kind = "router"
role = "heartbeat"
options = { to = "srv" }

[[node]]
name = "srv"
kind = "server"
role = "heartbeat"

[[group]]
name = "cars"
template = "v{:03}"
count = 198
kind = "vehicle"

[[segment]]
name = "back"
members = ["r1", "srv"]
profile = "lan"

[[segment]]
name = "cell"
members = ["r1", "cars"]

[[link]]
a = "srv"
b = "r1"
profile = "lan"
"#
    .to_string()
}

/// Live (not zombie) `testbed supervise|engine LAB` and `testbed-agent LAB
/// NODE` processes.
fn lab_processes(lab: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let dir = entry.path();
        let Ok(cmdline) = std::fs::read(dir.join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let ours = (args.iter().any(|a| a == "supervise" || a == "engine")
            && args.last().is_some_and(|a| a == lab))
            || (args.first().is_some_and(|a| a.ends_with("testbed-agent"))
                && args.get(1).is_some_and(|a| a == lab));
        let stat = std::fs::read_to_string(dir.join("stat")).unwrap_or_default();
        let zombie = stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z');
        if ours && !zombie {
            found.push(args.join(" "));
        }
    }
    found
}

fn ip(args: &[&str]) {
    let st = Command::new("ip").args(args).status().expect("ip");
    assert!(st.success(), "ip {args:?}");
}

#[test]
fn sigkill_during_up_then_clean_all_leaves_nothing() {
    if !root_or_skip("sigkill_during_up_then_clean_all_leaves_nothing") {
        return;
    }
    let topo = write_topology(&topology_200(), "k");
    let lab = topo.lab.clone();
    let host_before = host_links();

    // Look-alikes made by the test: names like the lab's, a veth named like a
    // bridge port inside one. Not in any journal, not tagged: must survive.
    let look1 = ForeignNetns::new(&format!("tb-{lab}.zz"));
    let look2 = ForeignNetns::new(&format!("tb-{lab}x"));
    ip(&[
        "-n", &look1.0, "link", "add", "n0i0", "type", "veth", "peer", "name", "eth0",
    ]);

    // How long does a full up take here? Kill at fractions of it.
    let t = Instant::now();
    let guard = LabGuard::up(&topo);
    let full = t.elapsed();
    // A complete lab runs its supervisor and engine; `clean --all` (what a
    // user runs when the orchestrator is gone) ends them with the lab.
    assert_eq!(
        lab_processes(&lab).len(),
        4,
        "supervisor, engine and two agents run"
    );
    let out = run(&["clean", "--all"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(lab_processes(&lab).is_empty());
    drop(guard);
    assert_gone_except(&lab, &[&look1.0]);

    let mut partial_seen = 0;
    for frac in [0.05, 0.2, 0.4, 0.6, 0.8, 0.97] {
        let out = topo.dir.path().join("out");
        let mut child = testbed()
            .args([
                "up",
                topo.path.to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        sleep(full.mul_f64(frac));
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        let made = namespaces_with_prefix(&format!("tb-{lab}")).len();
        if made > 2 {
            partial_seen += 1;
        }
        let out = run(&["clean", "--all"]);
        assert!(
            out.status.success(),
            "clean --all failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_gone_except(&lab, &[&look1.0]);
        let left = lab_processes(&lab);
        assert!(left.is_empty(), "processes of lab {lab} left: {left:?}");
        // The look-alikes survive, with the test's veth inside.
        assert_eq!(namespaces_with_prefix(&format!("tb-{lab}")), {
            let mut v = vec![look1.0.clone(), look2.0.clone()];
            v.sort();
            v
        });
        let links = Command::new("ip")
            .args(["-n", &look1.0, "-o", "link"])
            .output()
            .unwrap();
        assert!(
            String::from_utf8_lossy(&links.stdout).contains("n0i0"),
            "look-alike veth removed"
        );
        assert_eq!(host_links(), host_before);
    }
    assert!(
        partial_seen >= 2,
        "only {partial_seen} kills landed mid-way; the test did not test much"
    );
}
