//! Helpers for tests that build real labs as root: unique lab names, a Drop
//! guard that always tears the lab down, and running the `testbed` binary.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

/// True when running as root; otherwise prints why the test is skipped.
pub fn root_or_skip(test: &str) -> bool {
    let root = nix::unistd::geteuid().is_root();
    if !root {
        eprintln!("skipped: {test} needs root (real namespaces)");
    }
    root
}

pub fn testbed() -> Command {
    Command::new(env!("CARGO_BIN_EXE_testbed"))
}

/// Run testbed with arguments; return the output (never panics on failure).
pub fn run(args: &[&str]) -> Output {
    testbed().args(args).output().expect("run testbed")
}

/// Run testbed and insist on success.
pub fn ok(args: &[&str]) -> String {
    let out = run(args);
    assert!(
        out.status.success(),
        "testbed {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A lab name no other test (or earlier run) uses: `t<pid mod 10^5><seq>`.
pub fn unique_lab(tag: &str) -> String {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    let name = format!("t{}{}{}", tag, std::process::id() % 100_000, n);
    assert!(name.len() <= 12, "lab name {name} too long");
    name
}

/// Copy a topology file with its lab renamed; keeps the temp dir alive.
pub struct TopoCopy {
    pub dir: tempfile::TempDir,
    pub path: PathBuf,
    pub lab: String,
}

pub fn copy_topology(src: &str, tag: &str) -> TopoCopy {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(src))
        .expect("read topology");
    write_topology(&text, tag)
}

/// Write topology text (with any `name = "..."` in its [lab] table replaced).
pub fn write_topology(text: &str, tag: &str) -> TopoCopy {
    let lab = unique_lab(tag);
    let mut out = String::new();
    let mut in_lab = false;
    let mut renamed = false;
    for line in text.lines() {
        let t = line.trim_start();
        if t.starts_with('[') {
            in_lab = t.starts_with("[lab]");
        }
        if in_lab && !renamed && t.starts_with("name") {
            out.push_str(&format!("name = \"{lab}\"\n"));
            renamed = true;
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    assert!(renamed, "topology has no [lab] name");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("topology.toml");
    std::fs::write(&path, out).expect("write topology");
    TopoCopy { dir, path, lab }
}

/// A lab that is torn down when the guard drops, even if the test panics.
pub struct LabGuard {
    pub lab: String,
}

impl LabGuard {
    /// `up`, with the lab's output folder in the topology's temp dir.
    pub fn up(topo: &TopoCopy) -> LabGuard {
        let out = topo.dir.path().join("out");
        LabGuard::up_with(topo, &["--out", out.to_str().unwrap()]).0
    }

    /// `up` with extra arguments (e.g. `--out DIR`); also returns its output.
    pub fn up_with(topo: &TopoCopy, extra: &[&str]) -> (LabGuard, String) {
        let guard = LabGuard {
            lab: topo.lab.clone(),
        };
        let mut args = vec!["up", topo.path.to_str().unwrap()];
        args.extend_from_slice(extra);
        let out = ok(&args);
        (guard, out)
    }
}

impl Drop for LabGuard {
    fn drop(&mut self) {
        let _ = run(&["down", &self.lab]);
        let _ = run(&["clean", &self.lab]);
    }
}

/// Namespaces (from /run/netns) whose names start with `prefix`.
pub fn namespaces_with_prefix(prefix: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir("/run/netns")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(prefix))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Everything of a lab that could be left: namespaces, state folder.
pub fn assert_gone(lab: &str) {
    assert_gone_except(lab, &[]);
}

/// Like [`assert_gone`], but namespaces in `foreign` (made by the test) may stay.
pub fn assert_gone_except(lab: &str, foreign: &[&str]) {
    let left = namespaces_with_prefix(&format!("tb-{lab}"));
    let left: Vec<_> = left
        .into_iter()
        .filter(|n| n == &format!("tb-{lab}") || n.starts_with(&format!("tb-{lab}.")))
        .filter(|n| !foreign.contains(&n.as_str()))
        .collect();
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
    assert!(
        !Path::new("/run/testbed").join(lab).exists(),
        "state folder of {lab} left behind"
    );
}

/// Interfaces of the host's own namespace (name list), to prove a lab never touches it.
pub fn host_links() -> Vec<String> {
    let out = Command::new("ip")
        .args(["-o", "link", "show"])
        .output()
        .expect("ip link");
    let mut v: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            l.split(':')
                .nth(1)
                .map(|s| s.trim().split('@').next().unwrap_or("").to_string())
        })
        .collect();
    v.sort();
    v
}

/// A namespace made by the test itself (not by testbed), removed on drop.
pub struct ForeignNetns(pub String);

impl ForeignNetns {
    pub fn new(name: &str) -> ForeignNetns {
        let st = Command::new("ip")
            .args(["netns", "add", name])
            .status()
            .expect("ip netns add");
        assert!(st.success(), "ip netns add {name}");
        ForeignNetns(name.to_string())
    }
}

impl Drop for ForeignNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// Lengths of the runs of `false` (lost frames) in `delivered`, in order.
pub fn loss_runs(delivered: impl IntoIterator<Item = bool>) -> Vec<u64> {
    let mut runs = Vec::new();
    let mut run = 0;
    for got in delivered {
        if got {
            if run > 0 {
                runs.push(run);
            }
            run = 0;
        } else {
            run += 1;
        }
    }
    if run > 0 {
        runs.push(run);
    }
    runs
}

/// TCP throughput in bit/s, as the receiver counted it, of
/// `iperf3 -c target EXTRA.. -J` run in node `client` against a one-shot
/// server in node `server` (retried until the server listens).
pub fn iperf3_tcp(lab: &str, server: &str, client: &str, target: &str, extra: &[&str]) -> f64 {
    let mut srv = testbed()
        .args(["exec", lab, server, "--", "iperf3", "-s", "-1"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut result = None;
    for _ in 0..50 {
        std::thread::sleep(std::time::Duration::from_millis(100));
        let mut args = vec!["exec", lab, client, "--", "iperf3", "-c", target, "-J"];
        args.extend_from_slice(extra);
        let out = run(&args);
        if out.status.success() {
            result = Some(out.stdout);
            break;
        }
    }
    let _ = srv.wait();
    let json: serde_json::Value =
        serde_json::from_slice(&result.expect("iperf3 client never connected")).unwrap();
    json["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .expect("iperf3 reports bits_per_second")
}
