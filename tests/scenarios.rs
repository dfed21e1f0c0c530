//! The CPS attack catalogue, end to end (root): every scenario passes, every
//! negative control fails on the assertion that proves its defence matters,
//! junit.xml has the shape CI systems read, report.html renders in headless
//! Chromium, and an attack's capture holds the original and altered frames.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use quick_xml::events::Event;
use testbed::report::{RunReport, Verdict};

fn scenario(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scenarios")
        .join(format!("{name}.toml"))
}

/// Runs a scenario under a unique lab name; returns its exit success and report.
fn run_scenario(name: &str, dir: &Path) -> (bool, RunReport) {
    let lab = unique_lab("sc");
    let report_dir = dir.join(name);
    let out = run(&[
        "run",
        scenario(name).to_str().unwrap(),
        "--report-dir",
        report_dir.to_str().unwrap(),
        "--name",
        &lab,
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{name}:\n{stderr}");
    let bytes = std::fs::read(report_dir.join("report.json"))
        .unwrap_or_else(|e| panic!("{name}: no report.json ({e}): {stderr}"));
    let report: RunReport = serde_json::from_slice(&bytes).unwrap();
    assert_gone(&lab);
    (out.status.success(), report)
}

fn failed(report: &RunReport) -> Vec<&str> {
    report
        .assertions
        .iter()
        .filter(|a| !a.passed)
        .map(|a| a.name.as_str())
        .collect()
}

/// junit.xml: `<testsuites tests failures>` / `<testsuite>` / one
/// `<testcase name classname>` per assertion, `<failure>` on the failing ones.
fn check_junit(path: &Path, report: &RunReport) {
    let text = std::fs::read_to_string(path).unwrap();
    let mut reader = quick_xml::Reader::from_str(&text);
    let (mut suites, mut cases, mut failures) = (0, Vec::new(), Vec::new());
    let mut current = String::new();
    loop {
        match reader.read_event().unwrap() {
            Event::Start(e) | Event::Empty(e) => {
                let attr = |name: &str| {
                    e.attributes()
                        .filter_map(Result::ok)
                        .find(|a| a.key.as_ref() == name.as_bytes())
                        .map(|a| String::from_utf8_lossy(&a.value).into_owned())
                };
                match e.name().as_ref() {
                    b"testsuites" => {
                        suites += 1;
                        assert_eq!(attr("tests"), Some(report.assertions.len().to_string()));
                        assert_eq!(
                            attr("failures"),
                            Some(failed(report).len().to_string()),
                            "{text}"
                        );
                    }
                    b"testcase" => {
                        current = attr("name").unwrap();
                        assert_eq!(attr("classname").as_deref(), Some(report.scenario.as_str()));
                        cases.push(current.clone());
                    }
                    b"failure" => {
                        assert!(attr("message").is_some());
                        failures.push(current.clone());
                    }
                    _ => {}
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    assert_eq!(suites, 1);
    let names: Vec<&str> = report.assertions.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(cases, names);
    assert_eq!(failures, failed(report));
}

const PAIRS: &[(&str, &str, &str)] = &[
    (
        "cps-replay",
        "cps-replay-no-window",
        "no replayed reading accepted",
    ),
    (
        "cps-tamper",
        "cps-tamper-no-auth",
        "no altered reading accepted",
    ),
    (
        "cps-flood",
        "cps-flood-no-limits",
        "flood refused by the size cap",
    ),
    (
        "cps-delay",
        "cps-delay-no-freshness",
        "no stale reading accepted",
    ),
    (
        "cps-quic",
        "cps-quic-no-quic",
        "no replayed or altered reading delivered",
    ),
];

#[test]
fn cps_catalogue_passes_and_every_negative_control_fails_on_its_assertion() {
    if !root_or_skip("cps_catalogue") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (ok, report) = run_scenario("cps-baseline", dir.path());
    assert!(
        ok && report.verdict == Verdict::Pass,
        "baseline: {:?}",
        failed(&report)
    );
    for (scenario, control, expected) in PAIRS {
        let (ok, report) = run_scenario(scenario, dir.path());
        assert!(ok, "{scenario} exited non-zero: {:?}", failed(&report));
        assert_eq!(
            report.verdict,
            Verdict::Pass,
            "{scenario}: {:?}",
            failed(&report)
        );
        assert!(
            report.timeline.iter().all(|t| t.outcome == "ok"),
            "{:?}",
            report.timeline
        );
        check_junit(&dir.path().join(scenario).join("junit.xml"), &report);

        let (ok, report) = run_scenario(control, dir.path());
        assert!(!ok, "{control} must fail (exit non-zero)");
        assert_eq!(report.verdict, Verdict::Fail);
        assert!(report.error.is_none(), "{control}: {:?}", report.error);
        assert!(
            failed(&report).contains(expected),
            "{control} must fail on `{expected}`, failed: {:?}",
            failed(&report)
        );
        check_junit(&dir.path().join(control).join("junit.xml"), &report);
    }
    // The tamper run's capture: each altered frame beside its original,
    // differing in exactly the flipped bit of the UDP payload (byte 38).
    let pcap = dir.path().join("cps-tamper").join("attack-tamper.pcapng");
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
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let rows: Vec<(&str, &str)> = text.lines().filter_map(|l| l.split_once('\t')).collect();
    let received: Vec<&str> = rows
        .iter()
        .filter(|r| r.0.ends_with(":received"))
        .map(|r| r.1)
        .collect();
    let sent: Vec<&str> = rows
        .iter()
        .filter(|r| r.0.ends_with(":sent"))
        .map(|r| r.1)
        .collect();
    assert_eq!(received.len(), 40, "{text}");
    assert_eq!(sent.len(), 40, "{text}");
    for (o, a) in received.iter().zip(&sent) {
        let diff: Vec<usize> = (0..o.len() / 2)
            .filter(|i| o[i * 2..i * 2 + 2] != a[i * 2..i * 2 + 2])
            .collect();
        assert_eq!(diff, [38], "original {o}\naltered  {a}");
    }
    // The html report of a run with attacks renders in headless Chromium.
    let html = dir.path().join("cps-replay").join("report.html");
    if std::env::var_os("TESTBED_SKIP_CHROMIUM").is_none() {
        let out = Command::new("chromium")
            .args(["--headless", "--no-sandbox", "--disable-gpu", "--dump-dom"])
            .arg(format!("file://{}", html.display()))
            .output()
            .expect("chromium (install it, or set TESTBED_SKIP_CHROMIUM=1)");
        assert!(out.status.success());
        let dom = String::from_utf8_lossy(&out.stdout);
        assert!(dom.contains("cps-replay") && dom.contains("<svg"), "{dom}");
    }
}

#[test]
fn run_with_a_bad_scenario_changes_nothing() {
    if !root_or_skip("bad_scenario") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    let topo = Path::new(env!("CARGO_MANIFEST_DIR")).join("topologies/cps-lab.toml");
    std::fs::write(
        &path,
        format!(
            "[scenario]\nname = \"bad\"\ntopology = \"{}\"\nduration = \"5s\"\n\n[[timeline]]\nat = \"1s\"\naction = \"attack-start\"\nname = \"r\"\nkind = \"replay\"\non = \"iot-lan\"\nmatch = \"udp prt 4434\"\n\n[[assert]]\nname = \"a\"\nalive = [\"controller\"]\n",
            topo.display()
        ),
    )
    .unwrap();
    let lab = unique_lab("bad");
    let out = run(&[
        "run",
        path.to_str().unwrap(),
        "--name",
        &lab,
        "--report-dir",
        dir.path().join("r").to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("bad.toml:12:14: match: "), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        !dir.path().join("r").exists(),
        "no report for a file that never ran"
    );
    assert_gone(&lab);
}

#[test]
fn city_attack_run_passes() {
    if !root_or_skip("city_attacks") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (ok, report) = run_scenario("city-attacks", dir.path());
    assert!(
        ok && report.verdict == Verdict::Pass,
        "{:?}",
        failed(&report)
    );
    assert_eq!(report.attacks.len(), 4);
}
