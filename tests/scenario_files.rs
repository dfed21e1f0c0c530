//! Scenario files: every shipped scenario loads, and invalid ones are
//! refused with FILE:LINE:COL and what was expected. No root needed.

use std::path::{Path, PathBuf};

use testbed::scenario::{self, ScenarioError};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn every_shipped_scenario_loads() {
    let mut n = 0;
    for entry in std::fs::read_dir(root().join("scenarios")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let s = scenario::load(&path, None).unwrap_or_else(|e| panic!("{e}"));
            assert!(!s.assertions.is_empty(), "{}", path.display());
            n += 1;
        }
    }
    assert!(n >= 11, "{n} scenarios");
}

#[test]
fn extends_keeps_the_base_and_applies_its_options() {
    let base = scenario::load(&root().join("scenarios/cps-replay.toml"), Some(9)).unwrap();
    let neg = scenario::load(&root().join("scenarios/cps-replay-no-window.toml"), Some(9)).unwrap();
    assert_eq!(neg.name, "cps-replay-no-window");
    assert_eq!(neg.timeline, base.timeline);
    assert_eq!(neg.assertions, base.assertions);
    assert_eq!(neg.seed, 9);
    let ctrl = neg
        .topology
        .nodes
        .iter()
        .find(|n| n.name == "controller")
        .unwrap();
    assert_eq!(ctrl.options["replay_window"], "off");
    assert_eq!(
        ctrl.options["max_age"], "3s",
        "the topology's own options stay"
    );
}

/// Writes `text` as a scenario beside the shipped ones' topology and loads it.
fn load_text(text: &str) -> Result<scenario::Scenario, ScenarioError> {
    let dir = tempfile::tempdir().unwrap();
    let topo = root().join("topologies/cps-lab.toml");
    let text = text.replace("TOPOLOGY", topo.to_str().unwrap());
    let path = dir.path().join("s.toml");
    std::fs::write(&path, text).unwrap();
    scenario::load(&path, None)
}

fn error_at(text: &str) -> (usize, usize, String) {
    match load_text(text).unwrap_err() {
        ScenarioError::Invalid {
            line, col, message, ..
        } => (line, col, message),
        other => panic!("expected a positioned error, got {other}"),
    }
}

const HEAD: &str = "[scenario]\nname = \"t\"\ntopology = \"TOPOLOGY\"\nduration = \"10s\"\n";
const ASSERT: &str = "[[assert]]\nname = \"a\"\nalive = [\"controller\"]\n";

fn with(body: &str) -> String {
    format!("{HEAD}{body}{ASSERT}")
}

#[test]
fn invalid_scenarios_name_line_and_column() {
    let cases: &[(&str, usize, usize, &str)] = &[
        (
            "[[timeline]]\nat = \"1s\"\naction = \"atack-start\"\n",
            7,
            10,
            "unknown action `atack-start`",
        ),
        (
            "[[timeline]]\nat = \"1s\"\naction = \"attack-start\"\nname = \"x\"\nkind = \"replay\"\non = \"iot-lan\"\nmatch = \"udp port http\"\n",
            11,
            19,
            "match: ",
        ),
        (
            "[[timeline]]\nat = \"1s\"\naction = \"attack-start\"\nname = \"x\"\nkind = \"replay\"\non = \"nowhere\"\n",
            10,
            6,
            "no segment or link named `nowhere`",
        ),
        (
            "[[timeline]]\nat = \"1s\"\naction = \"attack-start\"\nname = \"x\"\nkind = \"replay\"\non = \"iot-lan\"\nparams = { aftr = \"1s\" }\n",
            11,
            10,
            "replay: aftr: unknown parameter",
        ),
        (
            "[[timeline]]\nat = \"20s\"\naction = \"kill\"\nnode = \"controller\"\n",
            6,
            6,
            "after the end of the scenario",
        ),
        (
            "[[timeline]]\nat = \"1s\"\naction = \"kill\"\nnode = \"mallory\"\n",
            8,
            8,
            "runs no agent",
        ),
        (
            "[[timeline]]\nat = \"1s\"\naction = \"attack-stop\"\nattack = \"ghost\"\n",
            8,
            10,
            "no attack named `ghost`",
        ),
        (
            "[options.controller]\nreplay_window = \"maybe\"\n",
            5,
            10,
            "replay_window",
        ),
    ];
    for (body, line, col, needle) in cases {
        let (l, c, m) = error_at(&with(body));
        assert!(m.contains(needle), "{body}: {m}");
        assert_eq!((l, c), (*line, *col), "{body}: {m}");
    }
}

#[test]
fn assertions_are_checked() {
    let cases: &[(&str, &str)] = &[
        (
            "[[assert]]\nname = \"b\"\nmetric = \"testbed_x\"\n",
            "needs `min`, `max` or both",
        ),
        (
            "[[assert]]\nname = \"b\"\nevents = \"agent-dead\"\nmax = 0\n",
            "unknown event kind",
        ),
        (
            "[[assert]]\nname = \"b\"\nlatency = \"nobody\"\nmax = 1\n",
            "no node `nobody`",
        ),
        (
            "[[assert]]\nname = \"b\"\nattack = \"none\"\nmin = 1\n",
            "no attack named `none`",
        ),
        (
            "[[assert]]\nname = \"a\"\nalive = [\"controller\"]\n",
            "a second assertion named `a`",
        ),
        (
            "[[assert]]\nname = \"b\"\nmetric = \"x\"\nmax = 1\n",
            "start with testbed_",
        ),
    ];
    for (body, needle) in cases {
        let text = format!("{HEAD}{ASSERT}{body}");
        let err = load_text(&text).unwrap_err().to_string();
        assert!(err.contains(needle), "{body}: {err}");
        assert!(err.contains("s.toml:"), "{err}");
    }
    let none = load_text(HEAD).unwrap_err().to_string();
    assert!(none.contains("at least one [[assert]]"), "{none}");
}

#[test]
fn extends_cannot_loop_or_add_a_timeline() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.toml");
    let b = dir.path().join("b.toml");
    std::fs::write(&a, "[scenario]\nname = \"a\"\nextends = \"b.toml\"\n").unwrap();
    std::fs::write(&b, "[scenario]\nname = \"b\"\nextends = \"a.toml\"\n").unwrap();
    let e = scenario::load(&a, None).unwrap_err().to_string();
    assert!(e.contains("extend one another"), "{e}");
    let c = dir.path().join("c.toml");
    let base = root().join("scenarios/cps-replay.toml");
    std::fs::write(
        &c,
        format!(
            "[scenario]\nname = \"c\"\nextends = \"{}\"\nduration = \"5s\"\n",
            base.display()
        ),
    )
    .unwrap();
    let e = scenario::load(&c, None).unwrap_err().to_string();
    assert!(e.contains("takes only name"), "{e}");
    assert!(Path::new(&c).exists());
}
