//! Topology parsing and validation: the shipped files, every invalid file in
//! `tests/invalid/`, addressing, placement, profiles and unit parsing.

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use proptest::prelude::*;
use testbed::emulation::{
    Distribution, LossSpec, Profile, builtin_profile, format_duration, format_rate, parse_duration,
    parse_percent, parse_rate,
};
use testbed::topology::{NodeKind, Topology, TopologyError, load, parse_str};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn shipped(name: &str) -> Topology {
    let path = root().join("topologies").join(name);
    match load(&path) {
        Ok(t) => t,
        Err(e) => panic!("{e}"),
    }
}

fn parse(text: &str) -> Result<Topology, TopologyError> {
    parse_str(text, Path::new("test.toml"))
}

fn parse_ok(text: &str) -> Topology {
    parse(text).unwrap_or_else(|e| panic!("{e}"))
}

/// `# expect: LINE:COL: substring` from the first line of a file.
fn expectation(text: &str) -> Option<(usize, usize, String)> {
    let rest = text.lines().next()?.strip_prefix("# expect: ")?;
    let mut parts = rest.splitn(3, ':');
    let line = parts.next()?.trim().parse().ok()?;
    let col = parts.next()?.trim().parse().ok()?;
    Some((line, col, parts.next()?.trim().to_string()))
}

/// What is wrong with one invalid file's outcome, if anything.
fn check_invalid(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let Some((line, col, needle)) = expectation(&text) else {
        return Some("first line is not `# expect: LINE:COL: substring`".into());
    };
    let err = match load(path) {
        Ok(_) => return Some("loaded without error".into()),
        Err(e) => e,
    };
    let shown = err.to_string();
    let prefix = format!("{}:", path.display());
    let ok = err.line() == Some(line)
        && err.col() == Some(col)
        && err.message().contains(&needle)
        && shown.starts_with(&prefix)
        && !shown.contains('\n');
    (!ok).then(|| format!("expected {line}:{col}: ...{needle}..., got: {shown}"))
}

#[test]
fn every_invalid_file_fails_where_it_says() {
    let dir = root().join("tests/invalid");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("tests/invalid exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    assert!(files.len() >= 20, "only {} invalid files", files.len());
    let failures: Vec<String> = files
        .iter()
        .filter_map(|f| check_invalid(f).map(|why| format!("{}: {why}", f.display())))
        .collect();
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn io_error_names_the_file() {
    let path = root().join("topologies/does-not-exist.toml");
    let err = load(&path).expect_err("missing file");
    assert!(matches!(err, TopologyError::Io { .. }));
    assert!(err.to_string().starts_with(&path.display().to_string()));
    assert_eq!(err.line(), None);
}

#[test]
fn error_position_is_one_based_and_counts_characters() {
    // Top-level keys come before [lab]; the multi-byte role shifts bytes, not columns.
    let text = "\nnode = [{ role = \"éé\", name = \"h1\", kind = \"bus\" }]\n[lab]\nname = \"x\"\n";
    let err = parse(text).unwrap_err();
    assert_eq!((err.line(), err.col()), (Some(2), Some(44)), "{err}");
    assert!(
        err.to_string()
            .starts_with("test.toml:2:44: unknown node kind"),
        "{err}"
    );
}

#[test]
fn minimal_has_two_hosts_on_one_link() {
    let t = shipped("minimal.toml");
    assert_eq!(t.lab.name, "minimal");
    assert_eq!(t.nodes.len(), 2);
    assert_eq!(t.links.len(), 1);
    let link = &t.links[0];
    assert_eq!(link.name, "h1--h2");
    assert_eq!(link.subnet.prefix_len(), 30);
    assert_eq!(link.a.addr, Ipv4Addr::new(10, 100, 0, 1));
    assert_eq!(link.b.addr, Ipv4Addr::new(10, 100, 0, 2));
    assert_eq!(
        (link.profile_ab.as_deref(), link.profile_ba.as_deref()),
        (None, None)
    );
    assert!(t.profiles.is_empty());
}

fn count(t: &Topology, kind: NodeKind) -> usize {
    t.nodes.iter().filter(|n| n.kind == kind).count()
}

#[test]
fn city_has_what_the_file_describes() {
    let t = shipped("city.toml");
    assert_eq!(t.lab.name, "city");
    assert_eq!(t.lab.seed, 42);
    // r1 + director + images + rsu1 + rsu2 + 40 vehicles + 6 sensors + controller + mallory
    assert_eq!(t.nodes.len(), 53);
    assert_eq!(count(&t, NodeKind::Vehicle), 40);
    assert_eq!(count(&t, NodeKind::Sensor), 6);
    assert_eq!(count(&t, NodeKind::Rsu), 2);
    assert_eq!(count(&t, NodeKind::Server), 2);
    assert_eq!(count(&t, NodeKind::Router), 1);
    assert_eq!(count(&t, NodeKind::Controller), 1);
    assert_eq!(count(&t, NodeKind::Attacker), 1);
    let names: Vec<&str> = t.segments.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["backhaul", "cell1", "cell2", "iot"]);
    for i in 1..=40 {
        assert!(t.node_index(&format!("v{i:03}")).is_some(), "v{i:03}");
    }
    let controller = &t.nodes[t.node_index("controller").unwrap()];
    assert_eq!(controller.role.as_deref(), Some("cps-controller"));
    let door = &t.nodes[t.node_index("s-door").unwrap()];
    assert_eq!(door.options["transport"], "stream");
    let smoke = &t.nodes[t.node_index("s-smoke").unwrap()];
    assert_eq!(smoke.options["sensor"], "smoke");
    assert_eq!(smoke.role.as_deref(), Some("cps-sensor"));
    // Every node has a position; vehicles lie on their cell's road, in order.
    assert!(t.nodes.iter().all(|n| n.position.is_some()));
    let xs = |group: &str| -> Vec<f64> {
        t.nodes
            .iter()
            .filter(|n| n.group.as_deref() == Some(group))
            .filter_map(|n| n.position.map(|p| p.x))
            .collect()
    };
    let cell1 = xs("cell1-cars");
    assert_eq!(cell1.len(), 20);
    assert!(cell1.windows(2).all(|w| w[0] <= w[1]));
    assert!(cell1.iter().all(|x| (0.0..=1000.0).contains(x)));
    assert!(
        xs("cell2-cars")
            .iter()
            .all(|x| (1000.0..=2000.0).contains(x))
    );
}

#[test]
fn city_cells_hold_rsu_router_and_their_cars() {
    let t = shipped("city.toml");
    for (cell, rsu, first) in [("cell1", "rsu1", 1), ("cell2", "rsu2", 21)] {
        let seg = t.segments.iter().find(|s| s.name == cell).unwrap();
        let names: Vec<&str> = seg
            .members
            .iter()
            .map(|m| t.nodes[m.node].name.as_str())
            .collect();
        assert_eq!(names.len(), 22);
        assert_eq!(&names[..2], [rsu, "r1"]);
        assert_eq!(names[2], format!("v{first:03}"));
        assert_eq!(seg.profile.as_deref(), Some("dsrc"));
    }
    let iot = t.segments.iter().find(|s| s.name == "iot").unwrap();
    assert_eq!(iot.members.len(), 9);
    assert_eq!(iot.profile.as_deref(), Some("cps_qos"));
}

#[test]
fn fleet_has_a_thousand_vehicles() {
    let t = shipped("fleet-1000.toml");
    assert_eq!(t.lab.name, "fleet");
    assert_eq!(count(&t, NodeKind::Vehicle), 1000);
    assert_eq!(t.nodes.len(), 1003);
    let fleet = t.segments.iter().find(|s| s.name == "fleet").unwrap();
    assert_eq!(fleet.members.len(), 1001);
    assert_eq!(fleet.subnet.prefix_len(), 22);
    assert!(t.node_index("v0001").is_some() && t.node_index("v1000").is_some());
    assert!(
        t.nodes
            .iter()
            .filter_map(|n| n.position)
            .all(|p| (0.0..=10000.0).contains(&p.x))
    );
}

/// Checks the addressing invariants the model promises.
fn assert_addressing(t: &Topology) {
    let nets = t
        .segments
        .iter()
        .map(|s| (s.subnet, s.members.clone()))
        .chain(
            t.links
                .iter()
                .map(|l| (l.subnet, vec![l.a.clone(), l.b.clone()])),
        );
    let mut subnets = Vec::new();
    for (subnet, members) in nets {
        let mut seen = HashSet::new();
        for m in &members {
            assert!(subnet.contains(&m.addr), "{} outside {subnet}", m.addr);
            assert_ne!(m.addr, subnet.network());
            assert_ne!(m.addr, subnet.broadcast());
            assert!(seen.insert(m.addr), "{} twice in {subnet}", m.addr);
        }
        subnets.push(subnet);
    }
    for (i, a) in subnets.iter().enumerate() {
        for b in &subnets[..i] {
            assert!(!a.contains(b) && !b.contains(a), "{a} overlaps {b}");
        }
    }
}

#[test]
fn shipped_addresses_are_unique_and_inside_their_subnets() {
    for name in ["minimal.toml", "city.toml", "fleet-1000.toml"] {
        assert_addressing(&shipped(name));
    }
}

#[test]
fn routers_get_the_lowest_addresses() {
    let t = shipped("city.toml");
    let r1 = t.node_index("r1").unwrap();
    for seg in &t.segments {
        let lowest = seg.members.iter().min_by_key(|m| m.addr).unwrap();
        assert_eq!(lowest.node, r1, "segment {}", seg.name);
        assert_eq!(u32::from(lowest.addr), u32::from(seg.subnet.network()) + 1);
    }
}

#[test]
fn city_subnets_are_allocated_in_file_order() {
    let t = shipped("city.toml");
    let subnets: Vec<String> = t.segments.iter().map(|s| s.subnet.to_string()).collect();
    // backhaul: 3 members -> /29; cells: 22 -> /27; iot: 9 -> /28. First fit.
    assert_eq!(
        subnets,
        [
            "10.100.0.0/29",
            "10.100.0.32/27",
            "10.100.0.64/27",
            "10.100.0.16/28"
        ]
    );
}

#[test]
fn positions_follow_the_seed() {
    let text = std::fs::read_to_string(root().join("topologies/city.toml")).unwrap();
    let positions = |t: &Topology| t.nodes.iter().map(|n| n.position).collect::<Vec<_>>();
    let a = parse_ok(&text);
    let b = parse_ok(&text);
    assert_eq!(positions(&a), positions(&b));
    let other = parse_ok(&text.replace("seed = 42", "seed = 43"));
    assert_ne!(positions(&a), positions(&other));
}

#[test]
fn profiles_are_resolved() {
    let t = shipped("city.toml");
    let keys: Vec<&str> = t.profiles.keys().map(String::as_str).collect();
    assert_eq!(keys, ["cps_qos", "dsrc", "lan"]);
    let cps = &t.profiles["cps_qos"];
    assert_eq!(cps.delay_ns, 300_000_000);
    assert_eq!(cps.jitter_ns, 200_000_000);
    assert_eq!(cps.distribution, Distribution::Uniform);
    assert_eq!(cps.loss, 10.0);
    assert_eq!(t.profiles["dsrc"].rate_bps, Some(6_000_000));
}

const TWO_HOSTS: &str = r#"
[lab]
name = "t"
[[node]]
name = "h1"
kind = "host"
[[node]]
name = "h2"
kind = "host"
"#;

#[test]
fn file_profiles_shadow_builtins_and_links_take_directions() {
    let t = parse_ok(&format!(
        r#"{TWO_HOSTS}
[profile.4g]
delay = "1.5s"
jitter = "250us"
distribution = "pareto"
loss = 0.5
rate = "1kbps"
corrupt = "0.1%"
duplicate = "1%"
reorder = "2%"
limit = 50
[[link]]
a = "h1"
b = "h2"
profile = "4g"
profile_ba = "5g"
"#
    ));
    let p = &t.profiles["4g"];
    assert_eq!(p.delay_ns, 1_500_000_000);
    assert_eq!(p.jitter_ns, 250_000);
    assert_eq!(p.distribution, Distribution::Pareto);
    assert_eq!(
        (p.loss, p.corrupt, p.duplicate, p.reorder),
        (0.5, 0.1, 1.0, 2.0)
    );
    assert_eq!(p.rate_bps, Some(8_000));
    assert_eq!(p.limit, Some(50));
    assert_eq!(t.profiles["5g"], builtin_profile("5g").unwrap());
    assert_eq!(t.links[0].profile_ab.as_deref(), Some("4g"));
    assert_eq!(t.links[0].profile_ba.as_deref(), Some("5g"));
}

/// The profile `p` of a two-host file whose link uses it.
fn one_profile(body: &str) -> Profile {
    let t = parse_ok(&format!(
        "{TWO_HOSTS}\n[profile.p]\n{body}\n[[link]]\na = \"h1\"\nb = \"h2\"\nprofile = \"p\"\n"
    ));
    t.profiles["p"].clone()
}

#[test]
fn correlations_gap_and_overhead_parse() {
    let p = one_profile(
        r#"
delay = "20ms"
jitter = "5ms"
delay_correlation = "25%"
loss = "10%"
loss_correlation = "25.5%"
duplicate = "1%"
duplicate_correlation = 10
corrupt = "0.1%"
corrupt_correlation = 0.5
reorder = "5%"
reorder_correlation = "50%"
reorder_gap = 5
rate = "10mbit"
rate_overhead = 14
"#,
    );
    assert_eq!(p.delay_correlation, 25.0);
    assert_eq!(p.loss, 10.0);
    assert_eq!(p.loss_correlation, 25.5);
    assert_eq!(p.loss_model, LossSpec::Random);
    assert_eq!(p.duplicate_correlation, 10.0);
    assert_eq!(p.corrupt_correlation, 0.5);
    assert_eq!(p.reorder_correlation, 50.0);
    assert_eq!(p.reorder_gap, Some(5));
    assert_eq!(p.rate_overhead, 14);
    let negative = one_profile("rate = \"1mbit\"\nrate_overhead = -4\n");
    assert_eq!(negative.rate_overhead, -4);
    let gap_max = one_profile("delay = \"1ms\"\nreorder = \"1%\"\nreorder_gap = 1000000\n");
    assert_eq!(gap_max.reorder_gap, Some(1_000_000));
}

#[test]
fn new_fields_default_to_a_clean_wire() {
    let p = one_profile("delay = \"1ms\"\nloss = \"1%\"\n");
    assert_eq!(
        p,
        Profile {
            delay_ns: 1_000_000,
            loss: 1.0,
            ..Profile::default()
        }
    );
    assert_eq!(p.loss_model, LossSpec::Random);
    assert_eq!((p.reorder_gap, p.rate_overhead), (None, 0));
}

#[test]
fn gilbert_elliott_loss_table_parses() {
    let full = one_profile(
        r#"loss = { model = "gilbert-elliott", p = "1%", r = "30%", bad_loss = "90%", good_loss = "0.5%" }"#,
    );
    assert_eq!(
        full.loss_model,
        LossSpec::GilbertElliott {
            p: 1.0,
            r: 30.0,
            bad_loss: 90.0,
            good_loss: 0.5
        }
    );
    assert_eq!((full.loss, full.loss_correlation), (0.0, 0.0));
    // tc's defaults: r = 100 - p, bad_loss = 100, good_loss = 0.
    let defaults = one_profile(r#"loss = { model = "gilbert-elliott", p = 2 }"#);
    assert_eq!(
        defaults.loss_model,
        LossSpec::GilbertElliott {
            p: 2.0,
            r: 98.0,
            bad_loss: 100.0,
            good_loss: 0.0
        }
    );
    assert_eq!(defaults.loss_model, LossSpec::gilbert_elliott(2.0));
    // As a sub-table too.
    let t = parse_ok(&format!(
        "{TWO_HOSTS}\n[profile.p.loss]\nmodel = \"gilbert-elliott\"\np = \"5%\"\nr = \"50%\"\n[[link]]\na = \"h1\"\nb = \"h2\"\nprofile = \"p\"\n"
    ));
    assert_eq!(
        t.profiles["p"].loss_model,
        LossSpec::GilbertElliott {
            p: 5.0,
            r: 50.0,
            bad_loss: 100.0,
            good_loss: 0.0
        }
    );
}

#[test]
fn loss_errors_point_inside_the_table() {
    let err = parse(&format!(
        "{TWO_HOSTS}\n[profile.p]\nloss = {{ model = \"gilbert-elliott\", p = \"1%\", bad_loss = true }}\n"
    ))
    .unwrap_err();
    assert!(err.message().contains("loss bad_loss"), "{err}");
    assert_eq!(err.col(), Some(58), "{err}");
    let err = parse(&format!(
        "{TWO_HOSTS}\n[profile.p]\nloss = {{ p = \"1%\" }}\n"
    ))
    .unwrap_err();
    assert!(err.message().contains("needs a model"), "{err}");
    let err = parse(&format!("{TWO_HOSTS}\n[profile.p]\nloss = [1]\n")).unwrap_err();
    assert!(err.message().contains("expected a percentage"), "{err}");
}

#[test]
fn static_addresses_are_kept_and_skipped() {
    let t = parse_ok(
        r#"
[lab]
name = "t"
[[node]]
name = "h1"
kind = "host"
addresses = { lan = "10.1.0.1" }
[[node]]
name = "h2"
kind = "host"
[[node]]
name = "gw"
kind = "router"
[[segment]]
name = "lan"
members = ["h1", "h2", "gw"]
subnet = "10.1.0.0/24"
"#,
    );
    let addrs: Vec<String> = t.segments[0]
        .members
        .iter()
        .map(|m| m.addr.to_string())
        .collect();
    // h1 is static at .1; the router comes next, then h2.
    assert_eq!(addrs, ["10.1.0.1", "10.1.0.3", "10.1.0.2"]);
}

#[test]
fn ipv6_follows_the_ipv4_host_offsets() {
    let t = parse_ok(
        &format!(
            r#"{TWO_HOSTS}
[[segment]]
name = "lan"
members = ["h1", "h2"]
[[link]]
a = "h1"
b = "h2"
subnet6 = "fd00:9::/64"
"#
        )
        .replace("name = \"t\"", "name = \"t\"\npool6 = \"fd00:100::/48\""),
    );
    let seg = &t.segments[0];
    assert_eq!(
        seg.subnet6.map(|s| s.to_string()).as_deref(),
        Some("fd00:100::/64")
    );
    assert_eq!(
        seg.members[1].addr6.map(|a| a.to_string()).as_deref(),
        Some("fd00:100::2")
    );
    let link = &t.links[0];
    assert_eq!(
        link.subnet6.map(|s| s.to_string()).as_deref(),
        Some("fd00:9::/64")
    );
    assert_eq!(
        link.b.addr6.map(|a| a.to_string()).as_deref(),
        Some("fd00:9::2")
    );
    assert!(
        shipped("city.toml")
            .segments
            .iter()
            .all(|s| s.subnet6.is_none())
    );
}

#[test]
fn nodes_and_groups_keep_file_order() {
    let t = parse_ok(
        r#"
[lab]
name = "t"
[[group]]
name = "g"
template = "g{}"
count = 2
kind = "sensor"
[[node]]
name = "n"
kind = "host"
[[segment]]
name = "lan"
members = ["n", "g"]
"#,
    );
    let names: Vec<&str> = t.nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["g1", "g2", "n"]);
    assert_eq!(t.nodes[0].group.as_deref(), Some("g"));
    assert_eq!(t.nodes[2].options, serde_json::Value::Null);
}

#[test]
fn area_placement_stays_in_the_rectangle() {
    let t = parse_ok(
        r#"
[lab]
name = "t"
[[group]]
name = "g"
template = "g{:02}"
start = 0
count = 50
kind = "sensor"
placement = { area = { min = [10, 20], max = [30, 40] } }
[[segment]]
name = "lan"
members = ["g"]
"#,
    );
    assert_eq!(t.nodes[0].name, "g00");
    for p in t.nodes.iter().filter_map(|n| n.position) {
        assert!(
            (10.0..=30.0).contains(&p.x) && (20.0..=40.0).contains(&p.y),
            "{p:?}"
        );
    }
}

#[test]
fn durations_parse() {
    assert_eq!(parse_duration("20ms"), Ok(20_000_000));
    assert_eq!(parse_duration("1.5s"), Ok(1_500_000_000));
    assert_eq!(parse_duration("250us"), Ok(250_000));
    assert_eq!(parse_duration("7ns"), Ok(7));
    assert_eq!(parse_duration("0"), Ok(0));
    assert_eq!(parse_duration("0ms"), Ok(0));
    assert_eq!(parse_duration("0.5ms"), Ok(500_000));
    for bad in [
        "",
        "ms",
        "-5ms",
        "20",
        "20 min",
        "1.5ns",
        "1e3ms",
        "1..5s",
        "99999999999999s",
    ] {
        assert!(parse_duration(bad).is_err(), "{bad:?}");
    }
    assert_eq!(format_duration(1_500_000_000), "1.5s");
    assert_eq!(format_duration(20_000_000), "20ms");
    assert_eq!(format_duration(0), "0");
}

#[test]
fn percents_and_rates_parse() {
    assert_eq!(parse_percent("10%"), Ok(10.0));
    assert_eq!(parse_percent("0.5%"), Ok(0.5));
    assert_eq!(parse_percent("0%"), Ok(0.0));
    assert_eq!(parse_percent("100%"), Ok(100.0));
    for bad in ["", "10", "100.1%", "-1%", "%", "ten%"] {
        assert!(parse_percent(bad).is_err(), "{bad:?}");
    }
    assert_eq!(parse_rate("10mbit"), Ok(10_000_000));
    assert_eq!(parse_rate("1.5gbit"), Ok(1_500_000_000));
    assert_eq!(parse_rate("10Mbit"), Ok(10_000_000));
    assert_eq!(parse_rate("1mbps"), Ok(8_000_000));
    assert_eq!(parse_rate("100bit"), Ok(100));
    for bad in ["", "0mbit", "10mb", "10", "-1kbit", "0.5bit"] {
        assert!(parse_rate(bad).is_err(), "{bad:?}");
    }
    assert_eq!(format_rate(20_000_000), "20mbit");
}

proptest! {
    #[test]
    fn durations_roundtrip(ns in any::<u64>()) {
        prop_assert_eq!(parse_duration(&format_duration(ns)), Ok(ns));
    }

    #[test]
    fn rates_roundtrip(bps in 1..u64::MAX) {
        prop_assert_eq!(parse_rate(&format_rate(bps)), Ok(bps));
    }

    #[test]
    fn unit_parsers_never_panic(s in "\\PC{0,24}") {
        let _ = parse_duration(&s);
        let _ = parse_percent(&s);
        let _ = parse_rate(&s);
    }

    #[test]
    fn numbered_units_never_panic(n in "[0-9.]{0,40}", unit in "(ns|us|ms|s|%|bit|gbps|tbit|x)?") {
        let s = format!("{n}{unit}");
        let _ = parse_duration(&s);
        let _ = parse_percent(&s);
        let _ = parse_rate(&s);
    }

    #[test]
    fn parser_never_panics_and_errors_are_one_line(s in "\\PC{0,200}") {
        if let Err(e) = parse(&s) {
            prop_assert!(!e.to_string().contains('\n'));
        }
    }

    #[test]
    fn mutated_city_never_panics(cut in 0usize..4000, insert in "[\\[\\]=\"a-z0-9 ,.{}\n-]{0,8}") {
        let text = std::fs::read_to_string(root().join("topologies/city.toml")).unwrap();
        let mut at = cut.min(text.len());
        while !text.is_char_boundary(at) { at -= 1; }
        let mutated = format!("{}{insert}{}", &text[..at], &text[at..]);
        if let Err(e) = parse(&mutated) {
            prop_assert!(!e.to_string().contains('\n'));
            prop_assert!(e.line().is_some());
        }
    }
}

#[test]
fn the_documented_example_parses() {
    let doc = std::fs::read_to_string(root().join("docs/topology.md")).unwrap();
    let start = doc.find("```toml\n").expect("a toml example") + "```toml\n".len();
    let end = start + doc[start..].find("```").expect("closed example");
    let t = parse_ok(&doc[start..end]);
    assert_eq!(t.nodes.len(), 23);
    let director = t.node_index("director").unwrap();
    let backhaul = &t.segments[0];
    let m = backhaul
        .members
        .iter()
        .find(|m| m.node == director)
        .unwrap();
    assert_eq!(m.addr, Ipv4Addr::new(10, 100, 0, 5));
    assert!(m.addr6.is_some());
    assert_eq!(t.links[0].profile_ba.as_deref(), Some("lossy"));
    let lossy = &t.profiles["lossy"];
    assert_eq!(
        (lossy.delay_correlation, lossy.loss_correlation),
        (25.0, 25.0)
    );
    assert_eq!((lossy.reorder_gap, lossy.rate_overhead), (Some(5), 14));
    assert_addressing(&t);
}

#[test]
fn the_documented_gilbert_elliott_example_parses() {
    let doc = std::fs::read_to_string(root().join("docs/topology.md")).unwrap();
    let block = doc
        .split("```toml\n")
        .skip(1)
        .map(|b| &b[..b.find("```").expect("closed example")])
        .find(|b| b.contains("gilbert-elliott"))
        .expect("an example with a Gilbert-Elliott loss table");
    let t = parse_ok(block);
    let p = &t.profiles["fading"];
    assert_eq!(
        p.loss_model,
        LossSpec::GilbertElliott {
            p: 1.0,
            r: 30.0,
            bad_loss: 100.0,
            good_loss: 0.0
        }
    );
    assert_eq!((p.reorder_gap, p.rate_overhead), (Some(5), 14));
}
