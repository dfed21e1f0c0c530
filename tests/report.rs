//! The report writer: junit.xml's shape as CI systems read it, report.html's
//! escaping and plots (and, with Chromium, that it renders), report.json's
//! round trip, and the terminal verdict table. No lab is needed.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use quick_xml::XmlVersion;
use quick_xml::events::{BytesStart, Event};
use quick_xml::reader::Reader;
use testbed::report::{
    AssertionResult, AttackSummary, Environment, RunReport, Series, TimelineEntry, Verdict,
};

fn assertion(
    name: &str,
    check: &str,
    passed: bool,
    observed: Option<f64>,
    expected: &str,
    message: &str,
) -> AssertionResult {
    AssertionResult {
        name: name.into(),
        check: check.into(),
        passed,
        observed,
        expected: expected.into(),
        message: message.into(),
    }
}

fn at(at_s: f64, action: &str, outcome: &str) -> TimelineEntry {
    TimelineEntry {
        at_s,
        action: action.into(),
        outcome: outcome.into(),
    }
}

/// A failed run: three assertions held, two failed, and teardown failed.
fn sample() -> RunReport {
    let assertions = vec![
        assertion(
            "replay-rejected",
            "events input-rejected{node=controller, reason=replayed} >= 10",
            true,
            Some(143.0),
            ">= 10",
            "143 replayed readings rejected",
        ),
        assertion(
            "no-unsafe-actuation",
            "metric testbed_actuator_commands_rejected{node=plc} == 0",
            true,
            Some(0.0),
            "== 0",
            "",
        ),
        assertion(
            "controller-alive",
            "agent controller alive",
            true,
            None,
            "alive",
            "up for the whole run, 0 restarts",
        ),
        assertion(
            "latency-bounded",
            "p99 latency sensor-1 -> controller <= 50 ms",
            false,
            Some(72.5),
            "<= 50",
            "p99 latency 72.5 ms is above 50 ms",
        ),
        assertion(
            "no-stale",
            "events input-rejected{node=controller, reason=stale} == 0",
            false,
            Some(3.0),
            "== 0",
            "3 stale readings rejected",
        ),
    ];
    let error = Some("teardown: namespace tb-cps.plc still busy after 5 s".to_string());
    let verdict = Verdict::of(&assertions, error.as_deref());
    let accepted = (0..=30)
        .map(|t| {
            let t = f64::from(t);
            let dip = if (5.0..20.0).contains(&t) { 35.0 } else { 0.0 };
            (t, 100.0 - dip + 4.0 * (t * 0.7).sin())
        })
        .collect();
    let rejected = (0..=30)
        .map(|t| {
            let t = f64::from(t);
            (t, if (5.0..20.0).contains(&t) { 9.5 } else { 0.0 })
        })
        .collect();
    RunReport {
        scenario: "cps-replay".into(),
        description:
            "Replay recorded sensor readings at the controller; every replay must be rejected."
                .into(),
        file: "scenarios/cps-replay.toml".into(),
        topology: "topologies/cps.toml".into(),
        lab: "cps".into(),
        seed: 7,
        started: "2025-05-01T12:00:00Z".into(),
        duration_s: 30.0,
        wall_s: 41.25,
        environment: Environment {
            testbed_version: "0.1.0".into(),
            git_commit: Some("e09a2e1c0ffee".into()),
            kernel: "6.1.0-31-amd64".into(),
            backend: "userspace".into(),
            hostname: "ci-runner-3".into(),
        },
        verdict,
        error,
        assertions,
        timeline: vec![
            at(0.0, "up lab cps", "ok"),
            at(5.0, "start replay on sensor-1:controller", "ok"),
            at(20.0, "stop attack 1", "ok"),
            at(25.0, "kill agent plc", "no such node: plc"),
        ],
        attacks: vec![
            AttackSummary {
                id: 1,
                kind: "replay".into(),
                on: "sensor-1:controller".into(),
                filter: "udp dst port 4433".into(),
                started_s: 5.0,
                stopped_s: Some(20.0),
                matched: 312,
                acted: 156,
                capture: Some("attack-1-replay.pcapng".into()),
            },
            AttackSummary {
                id: 2,
                kind: "drop".into(),
                on: "gateway".into(),
                filter: "tcp".into(),
                started_s: 10.0,
                stopped_s: None,
                matched: 0,
                acted: 0,
                capture: None,
            },
        ],
        series: vec![
            Series {
                name: "accepted readings".into(),
                unit: "readings/s".into(),
                points: accepted,
            },
            Series {
                name: "rejected (replayed)".into(),
                unit: "events/s".into(),
                points: rejected,
            },
            Series {
                name: "queue depth".into(),
                unit: "packets".into(),
                points: vec![],
            },
            Series {
                name: "restarts".into(),
                unit: "".into(),
                points: vec![(12.0, 1.0)],
            },
            Series {
                name: "link rate".into(),
                unit: "Mbit/s".into(),
                points: vec![(0.0, 100.0), (30.0, 100.0)],
            },
        ],
        reproduce: "sudo testbed run scenarios/cps-replay.toml --seed 7".into(),
    }
}

/// A run whose assertions all held.
fn passing() -> RunReport {
    let mut r = sample();
    r.assertions.retain(|a| a.passed);
    r.error = None;
    r.verdict = Verdict::of(&r.assertions, None);
    assert_eq!(r.verdict, Verdict::Pass);
    r
}

/// Markup, ampersands and quotes in every string field, each marked with
/// its own number so a field left unescaped is found.
fn hostile() -> (RunReport, Vec<String>) {
    let mut n = 0;
    let mut bad = |kept: &str| {
        n += 1;
        format!("{kept}<script>alert(\"x{n}\")</script> & 'q{n}' <b onclick=\"y\">")
    };
    let mut r = sample();
    r.scenario = bad("cps");
    r.description = bad("d");
    r.file = bad("f");
    r.topology = bad("t");
    r.lab = bad("l");
    r.started = bad("s");
    r.error = Some(bad("e"));
    r.reproduce = bad("r");
    let e = &mut r.environment;
    e.testbed_version = bad("v");
    e.git_commit = Some(bad("g"));
    e.kernel = bad("k");
    e.backend = bad("b");
    e.hostname = bad("h");
    for a in &mut r.assertions {
        a.name = bad("n");
        a.check = bad("c");
        a.expected = bad("x");
        a.message = bad("m");
    }
    for t in &mut r.timeline {
        t.action = bad("a");
        t.outcome = bad("o");
    }
    for a in &mut r.attacks {
        a.kind = bad("k");
        a.on = bad("on");
        a.filter = bad("fi");
        a.capture = Some(bad("cap"));
    }
    for s in &mut r.series {
        s.name = bad("sn");
        s.unit = bad("su");
    }
    (r, (1..=n).map(|i| format!("x{i}")).collect())
}

// ---- junit.xml ----------------------------------------------------------

/// A parsed XML element: enough of a DOM to check the JUnit shape.
#[derive(Debug, Default)]
struct El {
    name: String,
    attrs: BTreeMap<String, String>,
    children: Vec<El>,
    text: String,
}

impl El {
    fn all(&self, name: &str) -> Vec<&El> {
        self.children.iter().filter(|c| c.name == name).collect()
    }
    fn one(&self, name: &str) -> &El {
        let found = self.all(name);
        assert_eq!(found.len(), 1, "one <{name}> in <{}>", self.name);
        found[0]
    }
    fn attr(&self, name: &str) -> &str {
        self.attrs
            .get(name)
            .unwrap_or_else(|| panic!("<{}> has no attribute {name}", self.name))
    }
    fn count(&self, name: &str) -> usize {
        self.attr(name).parse().expect("a count")
    }
}

fn element(e: &BytesStart) -> El {
    let mut el = El {
        name: String::from_utf8(e.name().as_ref().to_vec()).unwrap(),
        ..El::default()
    };
    for a in e.attributes() {
        let a = a.expect("well-formed attribute");
        let key = String::from_utf8(a.key.as_ref().to_vec()).unwrap();
        let value = a.normalized_value(XmlVersion::Explicit1_0).unwrap();
        assert!(
            el.attrs.insert(key.clone(), value.into_owned()).is_none(),
            "duplicate attribute {key}"
        );
    }
    el
}

/// Parses a whole document, failing on anything malformed.
fn parse_xml(xml: &str) -> El {
    let mut reader = Reader::from_str(xml);
    reader.config_mut().check_end_names = true;
    let mut stack = vec![El::default()];
    loop {
        match reader.read_event().expect("well-formed XML") {
            Event::Start(e) => stack.push(element(&e)),
            Event::Empty(e) => stack.last_mut().unwrap().children.push(element(&e)),
            Event::End(_) => {
                let done = stack.pop().unwrap();
                stack.last_mut().expect("balanced tags").children.push(done);
            }
            Event::Text(t) => stack
                .last_mut()
                .unwrap()
                .text
                .push_str(&t.xml_content(XmlVersion::Explicit1_0).unwrap()),
            Event::CData(t) => stack
                .last_mut()
                .unwrap()
                .text
                .push_str(&String::from_utf8_lossy(&t)),
            Event::GeneralRef(r) => {
                let c = match r.resolve_char_ref().unwrap() {
                    Some(c) => c.to_string(),
                    None => {
                        let name = r.decode().unwrap();
                        quick_xml::escape::resolve_predefined_entity(&name)
                            .unwrap_or_else(|| panic!("unknown entity &{name};"))
                            .to_string()
                    }
                };
                stack.last_mut().unwrap().text.push_str(&c);
            }
            Event::Eof => break,
            _ => {}
        }
    }
    assert_eq!(stack.len(), 1, "unclosed elements");
    let mut doc = stack.pop().unwrap();
    assert_eq!(doc.children.len(), 1, "one root element");
    doc.children.pop().unwrap()
}

#[test]
fn junit_has_the_shape_ci_systems_read() {
    let r = sample();
    let xml = r.junit();
    assert!(xml.starts_with("<?xml"), "{xml}");
    let root = parse_xml(&xml);
    assert_eq!(root.name, "testsuites");
    // Five assertions, two failed, plus the failed testcase "run".
    assert_eq!(root.count("tests"), 6, "{xml}");
    assert_eq!(root.count("failures"), 3, "{xml}");

    let suite = root.one("testsuite");
    assert_eq!(suite.attr("name"), "cps-replay");
    assert_eq!(suite.count("tests"), 6);
    assert_eq!(suite.count("failures"), 3);
    assert_eq!(suite.count("errors"), 0);

    let props: BTreeMap<&str, &str> = suite
        .one("properties")
        .all("property")
        .into_iter()
        .map(|p| (p.attr("name"), p.attr("value")))
        .collect();
    for (key, value) in [
        ("seed", "7"),
        ("lab", "cps"),
        ("topology", "topologies/cps.toml"),
        ("testbed_version", "0.1.0"),
        ("git_commit", "e09a2e1c0ffee"),
        ("kernel", "6.1.0-31-amd64"),
        ("backend", "userspace"),
    ] {
        assert_eq!(props.get(key), Some(&value), "property {key}");
    }

    let cases = suite.all("testcase");
    assert_eq!(cases.len(), suite.count("tests"));
    let names: Vec<&str> = cases.iter().map(|c| c.attr("name")).collect();
    let mut expected: Vec<&str> = r.assertions.iter().map(|a| a.name.as_str()).collect();
    expected.push("run");
    assert_eq!(names, expected);

    let mut failures = 0;
    for case in &cases {
        assert_eq!(case.attr("classname"), "cps-replay");
        let failed = case.all("failure");
        let assertion = r.assertions.iter().find(|a| a.name == case.attr("name"));
        let should_fail = assertion.is_none_or(|a| !a.passed);
        assert_eq!(failed.len(), usize::from(should_fail), "{case:?}");
        assert!(case.all("error").is_empty() && case.all("skipped").is_empty());
        if let Some(f) = failed.first() {
            failures += 1;
            assert!(!f.attr("message").is_empty());
            match assertion {
                Some(a) => {
                    assert_eq!(f.attr("type"), "assertion");
                    assert_eq!(f.attr("message"), a.message);
                    assert!(f.text.contains(&a.check), "{}", f.text);
                    assert!(f.text.contains(&format!("expected: {}", a.expected)));
                    let observed = a.observed.unwrap().to_string();
                    assert!(f.text.contains(&format!("observed: {observed}")));
                }
                None => {
                    assert_eq!(f.attr("type"), "run");
                    assert!(f.attr("message").contains("still busy"));
                }
            }
        }
    }
    assert_eq!(failures, root.count("failures"));
}

#[test]
fn junit_of_a_passing_run_has_no_failures() {
    let root = parse_xml(&passing().junit());
    assert_eq!(root.count("tests"), 3);
    assert_eq!(root.count("failures"), 0);
    let suite = root.one("testsuite");
    for case in suite.all("testcase") {
        assert!(case.all("failure").is_empty());
    }
    assert!(
        suite
            .all("testcase")
            .iter()
            .all(|c| c.attr("name") != "run")
    );
}

#[test]
fn junit_escapes_what_it_is_given() {
    let (r, _) = hostile();
    let root = parse_xml(&r.junit());
    let suite = root.one("testsuite");
    assert_eq!(suite.attr("name"), r.scenario);
    let cases = suite.all("testcase");
    assert_eq!(cases[0].attr("name"), r.assertions[0].name);
    assert_eq!(cases[0].attr("classname"), r.scenario);
    let f = cases[3].one("failure");
    assert_eq!(f.attr("message"), r.assertions[3].message);
    assert!(f.text.contains(&r.assertions[3].check));
}

// ---- report.html --------------------------------------------------------

#[test]
fn html_is_a_self_contained_page() {
    let html = sample().html();
    assert!(html.starts_with("<!doctype html>\n"));
    assert!(html.contains("<meta charset=\"utf-8\">"));
    assert!(html.contains("<style>"));
    let lower = html.to_lowercase();
    for external in [
        "<script", "<link", "<img", "<iframe", "src=", "@import", "url(", "http:", "https:",
    ] {
        assert!(!lower.contains(external), "found {external}");
    }
    for section in ["Assertions", "Timeline", "Attacks", "Reproduce"] {
        assert!(html.contains(&format!("<h2>{section}</h2>")), "{section}");
    }
    assert!(html.contains(r#"<div class="verdict" id="verdict">FAIL</div>"#));
    assert!(html.contains("sudo testbed run scenarios/cps-replay.toml --seed 7"));
    assert!(html.contains("e09a2e1c0ffee"));
    assert!(html.contains("6.1.0-31-amd64"));
    assert!(html.contains("p99 latency 72.5 ms is above 50 ms"));
    assert!(html.contains("no such node: plc"));
    assert!(html.contains(r#"<a href="attack-1-replay.pcapng">"#));
    assert!(passing().html().contains(r#"id="verdict">PASS<"#));
}

#[test]
fn html_escapes_every_string() {
    let (r, markers) = hostile();
    let html = r.html();
    assert!(!html.to_lowercase().contains("<script"), "raw <script");
    assert!(!html.contains("<b "), "raw <b>");
    assert!(!html.contains("'q"), "raw single quote");
    for m in &markers {
        let escaped = format!("&lt;script&gt;alert(&quot;{m}&quot;)&lt;/script&gt; &amp; &#39;q");
        assert!(html.contains(&escaped), "{m} missing or unescaped");
    }
    // A capture name with markup is shown, not linked.
    assert!(!html.contains("<a href"));
}

#[test]
fn html_plots_one_svg_per_series_without_nan() {
    for r in [sample(), passing(), hostile().0] {
        let html = r.html();
        assert_eq!(html.matches("<svg").count(), r.series.len());
        assert_eq!(html.matches("</svg>").count(), r.series.len());
        assert!(!html.contains("NaN"));
        assert!(!html.contains("inf"));
    }
    // The empty series says so; the single point is drawn as a dot.
    let html = sample().html();
    assert!(html.contains(">no data</text>"));
    // Timeline markers: four actions on each of five plots.
    assert_eq!(html.matches(r#"class="mark""#).count(), 4 * 5);

    let mut r = sample();
    r.series.clear();
    assert!(!r.html().contains("<svg"));
}

#[test]
fn html_survives_non_finite_numbers() {
    let mut r = sample();
    r.duration_s = f64::NAN;
    r.wall_s = f64::INFINITY;
    r.timeline[1].at_s = f64::NEG_INFINITY;
    r.assertions[0].observed = Some(f64::NAN);
    r.series[0].points.push((f64::NAN, 3.0));
    r.series[0].points.push((4.0, f64::INFINITY));
    r.series[1].points = vec![(0.0, f64::MAX), (1.0, f64::MIN)];
    let html = r.html();
    assert!(!html.contains("NaN"));
    assert!(!html.contains("inf"));
    assert_eq!(html.matches("<svg").count(), r.series.len());
}

// ---- report.json and write() --------------------------------------------

#[test]
fn write_creates_three_files_and_json_round_trips() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("out/cps-replay");
    let mut r = sample();
    // Values serde_json reads back one bit off without float_roundtrip.
    r.series[2].points = vec![
        (1.0 / 3.0, 0.1 + 0.2),
        (2.0, -5.295_047_603_542_921e182),
        (3.0, 2.637_969_004_273_378e-260),
        (4.0, 123.456_789_012_345_67),
    ];
    r.write(&dir).unwrap();

    let mut names: Vec<String> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["junit.xml", "report.html", "report.json"]);

    let json = fs::read_to_string(dir.join("report.json")).unwrap();
    let back: RunReport = serde_json::from_str(&json).unwrap();
    assert_eq!(back, r);
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(value["verdict"], "fail");
    assert_eq!(value["seed"], 7);
    assert_eq!(
        fs::read_to_string(dir.join("junit.xml")).unwrap(),
        r.junit()
    );
    assert_eq!(
        fs::read_to_string(dir.join("report.html")).unwrap(),
        r.html()
    );

    // Writing again replaces the files whole.
    let p = passing();
    p.write(&dir).unwrap();
    let back: RunReport =
        serde_json::from_slice(&fs::read(dir.join("report.json")).unwrap()).unwrap();
    assert_eq!(back, p);
    assert_eq!(fs::read_dir(&dir).unwrap().count(), 3, "no temporary files");
}

#[test]
fn write_reports_the_path_it_could_not_write() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("not-a-dir");
    fs::write(&file, "x").unwrap();
    let err = sample().write(&file.join("sub")).unwrap_err();
    assert!(err.to_string().contains("not-a-dir"), "{err}");
}

// ---- terminal table -----------------------------------------------------

#[test]
fn verdict_table_rows_and_summary() {
    let table = sample().verdict_table(false);
    assert!(!table.contains('\x1b'));
    let lines: Vec<&str> = table.lines().collect();
    // Header, five assertions, the run error, the summary.
    assert_eq!(lines.len(), 8, "{table}");
    let starts = |line: &str, result: &str, name: &str| {
        let mut words = line.split_whitespace();
        words.next() == Some(result) && words.next() == Some(name)
    };
    assert!(starts(lines[1], "PASS", "replay-rejected"), "{table}");
    assert!(lines[1].contains(">= 10") && lines[1].contains("143"));
    assert!(starts(lines[4], "FAIL", "latency-bounded"), "{table}");
    assert!(lines[4].contains("72.5") && lines[4].contains("is above 50 ms"));
    assert!(starts(lines[6], "FAIL", "run"), "{table}");
    assert_eq!(
        lines[7],
        "FAIL: the run did not complete: teardown: namespace tb-cps.plc still busy after 5 s; \
         2 of 5 assertions failed: latency-bounded, no-stale"
    );
    // Columns line up: every row has its expected value at the same offset.
    let col = lines[0].find("EXPECTED").unwrap();
    assert_eq!(lines[1].find(">= 10"), Some(col));
    assert_eq!(lines[4].find("<= 50"), Some(col));

    let mut r = sample();
    r.error = None;
    assert_eq!(
        r.verdict_table(false).lines().last(),
        Some("FAIL: 2 of 5 assertions failed: latency-bounded, no-stale")
    );
    assert_eq!(
        passing().verdict_table(false).lines().last(),
        Some("PASS: 3/3 assertions held")
    );
}

#[test]
fn verdict_table_colours() {
    let table = sample().verdict_table(true);
    assert!(table.contains("\x1b[32mPASS"));
    assert!(table.contains("\x1b[31mFAIL"));
    assert!(table.lines().last().unwrap().starts_with("\x1b[1;31mFAIL:"));
    let table = passing().verdict_table(true);
    assert!(table.lines().last().unwrap().starts_with("\x1b[1;32mPASS:"));
    assert!(!table.contains("\x1b[31m"));
}

// ---- rendering in a real browser ----------------------------------------

/// Runs `cmd` to completion within `limit`, killing it past that.
fn run_with_limit(cmd: &mut Command, limit: Duration) -> std::process::ExitStatus {
    let mut child = cmd.spawn().expect("start chromium");
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn chromium(profile: &Path) -> Command {
    let mut cmd = Command::new("chromium");
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--hide-scrollbars",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .stdin(Stdio::null());
    cmd
}

#[test]
fn chromium_renders_the_report() {
    let available = Command::new("chromium")
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .is_ok_and(|o| o.status.success());
    if !available {
        if std::env::var("TESTBED_SKIP_CHROMIUM").as_deref() == Ok("1") {
            eprintln!("skipped: chromium is not installed and TESTBED_SKIP_CHROMIUM=1");
            return;
        }
        panic!(
            "chromium is not on PATH: install it (sudo apt-get install chromium, \
             or sudo scripts/install-deps), or set TESTBED_SKIP_CHROMIUM=1 to skip this test"
        );
    }

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("report");
    let r = sample();
    r.write(&dir).unwrap();
    let page = format!("file://{}", dir.join("report.html").display());
    let limit = Duration::from_secs(120);

    let png = dir.join("report.png");
    let status = run_with_limit(
        chromium(&tmp.path().join("profile-shot"))
            .arg(format!("--screenshot={}", png.display()))
            .arg("--window-size=1200,2000")
            .arg(&page)
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
        limit,
    );
    assert!(status.success(), "chromium --screenshot: {status}");
    let bytes = fs::read(&png).expect("chromium wrote the screenshot");
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    assert!(bytes.len() > 20_000, "screenshot of {} bytes", bytes.len());

    let dom_file = tmp.path().join("dom.html");
    let status = run_with_limit(
        chromium(&tmp.path().join("profile-dom"))
            .arg("--dump-dom")
            .arg(&page)
            .stdout(fs::File::create(&dom_file).unwrap())
            .stderr(Stdio::null()),
        limit,
    );
    assert!(status.success(), "chromium --dump-dom: {status}");
    let dom = fs::read_to_string(&dom_file).unwrap();
    assert!(
        dom.contains(r#"id="verdict">FAIL</div>"#),
        "the rendered page shows no verdict:\n{dom}"
    );
    assert!(dom.contains("cps-replay"));
    assert_eq!(dom.matches("<svg").count(), r.series.len());
}
