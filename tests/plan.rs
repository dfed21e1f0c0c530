//! The plan, built without root from the shipped and synthetic topologies:
//! naming and index invariants, bridge sharding, routes, addresses,
//! determinism, the dry-run text and sysctls.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use testbed::plan::{
    self, FIRST_IFINDEX, IFNAME_MAX, InfraPort, MAX_BRIDGE_PORTS, MEMBERS_PER_SHARD, NETNS_PREFIX,
    NodePlan, Plan, RelaySide,
};
use testbed::topology::{NodeKind, Topology, load, parse_str};

const SHIPPED: [&str; 3] = ["minimal.toml", "city.toml", "fleet-1000.toml"];

fn shipped(name: &str) -> Topology {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("topologies")
        .join(name);
    load(&path).unwrap_or_else(|e| panic!("{e}"))
}

fn parse(text: &str) -> Topology {
    parse_str(text, Path::new("test.toml")).unwrap_or_else(|e| panic!("{e}"))
}

fn node<'a>(plan: &'a Plan, name: &str) -> &'a NodePlan {
    plan.node(name)
        .unwrap_or_else(|| panic!("no node {name} in the plan"))
}

/// The address of `node`'s interface on `network`.
fn addr_on(plan: &Plan, node_name: &str, network: &str) -> IpAddr {
    node(plan, node_name)
        .ifaces
        .iter()
        .find(|i| i.network == network)
        .unwrap_or_else(|| panic!("{node_name} is not on {network}"))
        .addr
        .addr()
}

/// Subnets (IPv4, IPv6) of every segment and link, by name.
fn subnets(topo: &Topology) -> HashMap<String, (IpNet, Option<IpNet>)> {
    let segs = topo
        .segments
        .iter()
        .map(|s| (s.name.clone(), (s.subnet.into(), s.subnet6.map(Into::into))));
    let links = topo
        .links
        .iter()
        .map(|l| (l.name.clone(), (l.subnet.into(), l.subnet6.map(Into::into))));
    segs.chain(links).collect()
}

fn subnet_of(topo: &Topology, network: &str) -> IpNet {
    subnets(topo)[network].0
}

/// The bridge ports of the engine's uplinks.
fn uplinks(plan: &Plan) -> impl Iterator<Item = &InfraPort> {
    plan.relays.iter().filter_map(|r| match &r.b {
        RelaySide::Bridge { bridge, .. } => Some(bridge),
        RelaySide::Node(..) => None,
    })
}

/// Checks every structural invariant the plan documents; panics naming the
/// first one broken.
fn check_invariants(plan: &Plan) {
    // Namespaces: unique and prefixed.
    let mut seen = HashSet::new();
    for ns in plan.namespaces() {
        assert!(ns.starts_with(NETNS_PREFIX), "namespace {ns} lacks prefix");
        assert!(seen.insert(ns), "namespace {ns} twice");
    }
    assert_eq!(seen.len(), plan.nodes.len() + 1);

    // Infrastructure namespace: names and indexes of bridges, trunk ends, ports.
    let mut names = HashSet::new();
    let mut indexes = HashSet::new();
    let mut infra = |name: &str, index: u32| {
        assert!(name.len() <= IFNAME_MAX, "infra ifname {name} too long");
        assert!(!name.is_empty());
        assert!(names.insert(name.to_string()), "infra ifname {name} twice");
        assert!(
            index >= FIRST_IFINDEX,
            "infra ifindex {index} of {name} is below FIRST_IFINDEX"
        );
        assert!(
            indexes.insert(index),
            "infra ifindex {index} twice ({name})"
        );
    };
    for b in &plan.infra.bridges {
        infra(&b.name, b.index);
    }
    for t in &plan.infra.trunks {
        infra(&t.root.name, t.root.index);
        infra(&t.shard.name, t.shard.index);
    }
    for n in &plan.nodes {
        for i in &n.ifaces {
            if let Some(p) = &i.port {
                infra(&p.name, p.index);
            }
        }
    }
    for r in &plan.relays {
        if let RelaySide::Bridge {
            engine,
            engine_index,
            bridge,
        } = &r.b
        {
            infra(engine, *engine_index);
            infra(&bridge.name, bridge.index);
        }
    }

    // Node namespaces: lo is 1, interfaces 2.. in order, names unique.
    for n in &plan.nodes {
        let mut names = HashSet::from(["lo".to_string()]);
        for (j, i) in n.ifaces.iter().enumerate() {
            assert!(
                i.name.len() <= IFNAME_MAX,
                "{}/{} too long",
                n.netns,
                i.name
            );
            assert!(names.insert(i.name.clone()), "{}/{} twice", n.netns, i.name);
            assert_eq!(
                i.index,
                FIRST_IFINDEX + j as u32,
                "{}/{} index",
                n.netns,
                i.name
            );
        }
    }

    // Bridges: port count is members plus trunk ends, within the limit.
    let bridge_indexes: HashSet<u32> = plan.infra.bridges.iter().map(|b| b.index).collect();
    for b in &plan.infra.bridges {
        let members = plan
            .nodes
            .iter()
            .flat_map(|n| &n.ifaces)
            .filter_map(|i| i.port.as_ref())
            .filter(|p| p.bridge == Some(b.index))
            .count()
            + uplinks(plan).filter(|p| p.bridge == b.index).count();
        let trunks = plan
            .infra
            .trunks
            .iter()
            .flat_map(|t| [&t.root, &t.shard])
            .filter(|p| p.bridge == b.index)
            .count();
        assert_eq!(b.ports, members + trunks, "ports of bridge {}", b.name);
        assert!(
            b.ports <= MAX_BRIDGE_PORTS,
            "bridge {} has {}",
            b.name,
            b.ports
        );
        assert!(members <= MEMBERS_PER_SHARD, "bridge {}", b.name);
    }
    // Every port and trunk end names an existing bridge.
    for n in &plan.nodes {
        for i in &n.ifaces {
            if let Some(bridge) = i.port.as_ref().and_then(|p| p.bridge) {
                assert!(bridge_indexes.contains(&bridge), "{} dangles", i.name);
            }
        }
    }
    for t in &plan.infra.trunks {
        assert!(bridge_indexes.contains(&t.root.bridge));
        assert!(bridge_indexes.contains(&t.shard.bridge));
    }
}

/// Every route's gateway is an address on one of the node's own subnets, and
/// no route leads to a subnet the node is on.
fn check_gateways(topo: &Topology, plan: &Plan) {
    let nets = subnets(topo);
    for n in &plan.nodes {
        let own: Vec<IpNet> = n
            .ifaces
            .iter()
            .flat_map(|i| [Some(i.addr.trunc()), i.addr6.map(|a| a.trunc())])
            .flatten()
            .collect();
        for r in &n.routes {
            assert!(
                own.iter().any(|s| s.contains(&r.via)),
                "{}: gateway {} of {} is on none of its subnets",
                n.name,
                r.via,
                r.dest
            );
            assert!(
                !own.contains(&r.dest),
                "{}: route to own {}",
                n.name,
                r.dest
            );
            assert!(
                nets.values()
                    .any(|(v4, v6)| *v4 == r.dest || *v6 == Some(r.dest)),
                "{}: route to {} which is no network",
                n.name,
                r.dest
            );
        }
    }
}

fn check_addresses(topo: &Topology, plan: &Plan) {
    let nets = subnets(topo);
    for n in &plan.nodes {
        for i in &n.ifaces {
            let (v4, v6) = nets[&i.network];
            assert_eq!(i.addr.trunc(), v4, "{}/{} {}", n.name, i.name, i.addr);
            assert_ne!(i.addr.addr(), v4.network(), "{}/{}", n.name, i.name);
            assert_ne!(i.addr.addr(), v4.broadcast(), "{}/{}", n.name, i.name);
            match (i.addr6, v6) {
                (Some(a6), Some(v6)) => assert_eq!(a6.trunc(), v6, "{}/{}", n.name, i.name),
                (None, None) => {}
                (a6, v6) => panic!("{}/{}: address6 {a6:?} on subnet6 {v6:?}", n.name, i.name),
            }
        }
    }
}

#[test]
fn shipped_topologies_keep_the_plan_invariants() {
    for name in SHIPPED {
        let topo = shipped(name);
        let plan = plan::build(&topo);
        check_invariants(&plan);
        check_addresses(&topo, &plan);
        check_gateways(&topo, &plan);
        assert_eq!(plan.nodes.len(), topo.nodes.len(), "{name}");
        assert_eq!(plan.lab, topo.lab.name);
        assert_eq!(
            plan.namespaces().next(),
            Some(plan::infra_netns(&plan.lab).as_str())
        );
    }
}

#[test]
fn shipped_topologies_have_the_expected_shape() {
    let minimal = plan::build(&shipped("minimal.toml"));
    assert!(minimal.infra.bridges.is_empty());
    assert_eq!(minimal.links.len(), 1);
    assert_eq!(minimal.links[0].a, (0, 0));
    assert_eq!(minimal.links[0].b, (1, 0));
    assert!(minimal.nodes.iter().all(|n| n.routes.is_empty()));
    assert!(minimal.nodes.iter().all(|n| n.ifaces[0].port.is_none()));

    let city = plan::build(&shipped("city.toml"));
    assert_eq!(city.nodes.len(), 53);
    assert_eq!(city.infra.bridges.len(), 4);
    assert!(city.infra.trunks.is_empty());
    assert_eq!(node(&city, "r1").ifaces.len(), 4);
    assert_eq!(
        city.object_count(),
        1 + 4 + city.nodes.iter().map(|n| 1 + n.ifaces.len()).sum::<usize>()
    );
}

#[test]
fn fleet_lan_is_split_into_two_shards_with_one_trunk() {
    let topo = shipped("fleet-1000.toml");
    let fleet = topo.segments.iter().find(|s| s.name == "fleet").unwrap();
    assert_eq!(fleet.members.len(), 1001);
    let plan = plan::build(&topo);
    let shards: Vec<_> = plan
        .infra
        .bridges
        .iter()
        .filter(|b| b.segment == "fleet")
        .collect();
    assert_eq!(shards.len(), 2);
    assert_eq!((shards[0].shard, shards[1].shard), (0, 1));
    assert_eq!(shards[0].ports, MEMBERS_PER_SHARD + 1);
    assert_eq!(shards[1].ports, 1001 - MEMBERS_PER_SHARD + 1);
    assert_eq!(plan.infra.trunks.len(), 1);
    let t = &plan.infra.trunks[0];
    assert_eq!(t.root.bridge, shards[0].index);
    assert_eq!(t.shard.bridge, shards[1].index);
    // The backhaul is one bridge.
    assert_eq!(
        plan.infra
            .bridges
            .iter()
            .filter(|b| b.segment == "backhaul")
            .count(),
        1
    );
}

fn one_big_lan(groups: &[usize]) -> String {
    let mut text = String::from("[lab]\nname = \"big\"\n");
    let mut members = Vec::new();
    for (g, count) in groups.iter().enumerate() {
        text += &format!(
            "[[group]]\nname = \"g{g}\"\ntemplate = \"g{g}n{{}}\"\ncount = {count}\nkind = \"vehicle\"\n"
        );
        members.push(format!("\"g{g}\""));
    }
    text += &format!(
        "[[segment]]\nname = \"lan\"\nmembers = [{}]\n",
        members.join(", ")
    );
    text
}

fn check_sharded(members: usize, plan: &Plan) {
    let shards = members.div_ceil(MEMBERS_PER_SHARD);
    let bridges = &plan.infra.bridges;
    assert_eq!(bridges.len(), shards);
    assert_eq!(plan.infra.trunks.len(), shards - 1);
    let root = bridges[0].index;
    for (k, b) in bridges.iter().enumerate() {
        assert_eq!(b.shard, k);
        let on_it = plan
            .nodes
            .iter()
            .flat_map(|n| &n.ifaces)
            .filter(|i| i.port.as_ref().is_some_and(|p| p.bridge == Some(b.index)))
            .count();
        assert!(on_it <= MEMBERS_PER_SHARD, "shard {k} has {on_it}");
        assert!(on_it > 0, "shard {k} is empty");
    }
    // Every extra shard has exactly one trunk, to the root shard.
    for b in &bridges[1..] {
        let to_it: Vec<_> = plan
            .infra
            .trunks
            .iter()
            .filter(|t| t.shard.bridge == b.index)
            .collect();
        assert_eq!(to_it.len(), 1, "trunks to {}", b.name);
        assert_eq!(to_it[0].root.bridge, root, "trunk of {}", b.name);
    }
    assert_eq!(bridges[0].ports, MEMBERS_PER_SHARD + shards - 1);
    check_invariants(plan);
}

#[test]
fn three_thousand_members_are_sharded() {
    let topo = parse(&one_big_lan(&[3000]));
    let plan = plan::build(&topo);
    assert_eq!(3000usize.div_ceil(MEMBERS_PER_SHARD), 4);
    check_sharded(3000, &plan);
    check_addresses(&topo, &plan);
    assert_eq!(
        plan.infra.bridges[3].ports,
        3000 - 3 * MEMBERS_PER_SHARD + 1
    );
}

#[test]
fn the_largest_lab_stays_below_the_bridge_limit() {
    // Two groups of the maximum size fill a lab to MAX_NODES on one LAN.
    let topo = parse(&one_big_lan(&[5000, 5000]));
    assert_eq!(topo.nodes.len(), testbed::topology::MAX_NODES);
    let plan = plan::build(&topo);
    check_sharded(10_000, &plan);
}

#[test]
fn exactly_one_shard_worth_needs_no_trunk() {
    let plan = plan::build(&parse(&one_big_lan(&[MEMBERS_PER_SHARD])));
    assert_eq!(plan.infra.bridges.len(), 1);
    assert!(plan.infra.trunks.is_empty());
    assert_eq!(plan.infra.bridges[0].ports, MEMBERS_PER_SHARD);
    let plan = plan::build(&parse(&one_big_lan(&[MEMBERS_PER_SHARD + 1])));
    check_sharded(MEMBERS_PER_SHARD + 1, &plan);
}

#[test]
fn city_nodes_route_through_r1_to_every_other_segment() {
    let topo = shipped("city.toml");
    let plan = plan::build(&topo);
    let segments: Vec<&str> = topo.segments.iter().map(|s| s.name.as_str()).collect();
    for n in &plan.nodes {
        if n.kind == NodeKind::Router {
            assert!(n.routes.is_empty(), "{} is on every segment", n.name);
            continue;
        }
        assert_eq!(n.ifaces.len(), 1, "{}", n.name);
        let own = &n.ifaces[0].network;
        let gateway = addr_on(&plan, "r1", own);
        let mut expected: Vec<IpNet> = segments
            .iter()
            .filter(|s| *s != own)
            .map(|s| subnet_of(&topo, s))
            .collect();
        let mut got: Vec<IpNet> = n.routes.iter().map(|r| r.dest).collect();
        expected.sort();
        got.sort();
        assert_eq!(got, expected, "routes of {}", n.name);
        assert!(n.routes.iter().all(|r| r.via == gateway), "{}", n.name);
        assert!(!got.contains(&subnet_of(&topo, own)), "{}", n.name);
    }
}

#[test]
fn no_router_no_routes() {
    let topo = parse(
        r#"
[lab]
name = "flat"
[[node]]
name = "a"
kind = "host"
[[node]]
name = "b"
kind = "host"
[[node]]
name = "c"
kind = "server"
[[segment]]
name = "lan1"
members = ["a", "b"]
[[segment]]
name = "lan2"
members = ["b", "c"]
"#,
    );
    let plan = plan::build(&topo);
    // b is on both LANs but does not forward, so nobody routes through it.
    assert!(plan.nodes.iter().all(|n| n.routes.is_empty()));
    assert!(plan.nodes.iter().all(|n| n.sysctls.is_empty()));
}

const CHAIN: &str = r#"
[lab]
name = "chain"
[[node]]
name = "a"
kind = "host"
[[node]]
name = "r1"
kind = "router"
[[node]]
name = "r2"
kind = "router"
[[node]]
name = "b"
kind = "host"
[[segment]]
name = "lan1"
members = ["a", "r1"]
[[segment]]
name = "lan2"
members = ["r1", "r2"]
[[segment]]
name = "lan3"
members = ["r2", "b"]
"#;

#[test]
fn chain_routes_take_the_first_router_on_the_way() {
    let topo = parse(CHAIN);
    let plan = plan::build(&topo);
    check_gateways(&topo, &plan);
    let via = |n: &str, dest: &str| {
        let dest = subnet_of(&topo, dest);
        node(&plan, n)
            .routes
            .iter()
            .find(|r| r.dest == dest)
            .map(|r| r.via)
    };
    let (lan1, lan2, lan3) = ("lan1", "lan2", "lan3");
    assert_eq!(via("b", lan1), Some(addr_on(&plan, "r2", lan3)));
    assert_eq!(via("b", lan2), Some(addr_on(&plan, "r2", lan3)));
    assert_eq!(via("a", lan3), Some(addr_on(&plan, "r1", lan1)));
    assert_eq!(via("a", lan2), Some(addr_on(&plan, "r1", lan1)));
    assert_eq!(via("r1", lan3), Some(addr_on(&plan, "r2", lan2)));
    assert_eq!(via("r2", lan1), Some(addr_on(&plan, "r1", lan2)));
    // Exactly the networks a node is not on.
    assert_eq!(node(&plan, "a").routes.len(), 2);
    assert_eq!(node(&plan, "b").routes.len(), 2);
    assert_eq!(node(&plan, "r1").routes.len(), 1);
    assert_eq!(node(&plan, "r2").routes.len(), 1);
    assert_eq!(via("r1", lan1), None);
    assert_eq!(via("r1", lan2), None);
}

#[test]
fn chain_with_ipv6_routes_both_families() {
    let text = CHAIN.replace(
        "name = \"chain\"",
        "name = \"chain\"\npool6 = \"fd00:1::/48\"",
    );
    let topo = parse(&text);
    let plan = plan::build(&topo);
    check_addresses(&topo, &plan);
    check_gateways(&topo, &plan);
    let a = node(&plan, "a");
    assert_eq!(a.routes.len(), 4);
    let r1 = &node(&plan, "r1").ifaces[0];
    assert_eq!(r1.network, "lan1");
    let r1_v6 = r1.addr6.expect("ipv6 on").addr();
    let lan3_v6 = subnets(&topo)["lan3"].1.expect("subnet6");
    assert!(a.routes.iter().any(|r| r.dest == lan3_v6 && r.via == r1_v6));
    // Routers forward both families; hosts neither.
    let forwarding = |n: &str| node(&plan, n).sysctls.clone();
    assert_eq!(
        forwarding("r1"),
        vec![
            ("ipv4/ip_forward".to_string(), "1".to_string()),
            ("ipv6/conf/all/forwarding".to_string(), "1".to_string()),
        ]
    );
    assert!(forwarding("a").is_empty());
}

#[test]
fn point_to_point_links_route_through_a_router() {
    let topo = parse(
        r#"
[lab]
name = "p2p"
[[node]]
name = "h1"
kind = "host"
[[node]]
name = "r1"
kind = "router"
[[node]]
name = "h2"
kind = "host"
[[node]]
name = "h3"
kind = "host"
[[link]]
a = "h1"
b = "r1"
[[segment]]
name = "lan"
members = ["r1", "h2", "h3"]
"#,
    );
    let plan = plan::build(&topo);
    check_invariants(&plan);
    check_gateways(&topo, &plan);
    let link = &topo.links[0];
    assert_eq!(link.name, "h1--r1");
    let h1 = node(&plan, "h1");
    assert_eq!(h1.routes.len(), 1);
    assert_eq!(h1.routes[0].dest, subnet_of(&topo, "lan"));
    assert_eq!(h1.routes[0].via, addr_on(&plan, "r1", "h1--r1"));
    for h in ["h2", "h3"] {
        let n = node(&plan, h);
        assert_eq!(n.routes.len(), 1, "{h}");
        assert_eq!(n.routes[0].dest, subnet_of(&topo, "h1--r1"));
        assert_eq!(n.routes[0].via, addr_on(&plan, "r1", "lan"));
    }
    assert!(node(&plan, "r1").routes.is_empty());
    // The link's two ends point at each node's interface on it.
    let l = &plan.links[0];
    assert_eq!(plan.nodes[l.a.0].name, "h1");
    assert_eq!(plan.nodes[l.b.0].name, "r1");
    assert_eq!(plan.nodes[l.a.0].ifaces[l.a.1].network, "h1--r1");
    assert_eq!(plan.nodes[l.b.0].ifaces[l.b.1].network, "h1--r1");
    assert!(plan.nodes[l.b.0].ifaces[l.b.1].port.is_none());
}

#[test]
fn hosts_file_lists_every_node_and_address() {
    for name in SHIPPED {
        let plan = plan::build(&shipped(name));
        let hosts = plan.hosts_file();
        let lines: HashSet<&str> = hosts.lines().collect();
        assert!(lines.contains("127.0.0.1\tlocalhost"));
        let names: HashSet<&str> = hosts.lines().filter_map(|l| l.split('\t').nth(1)).collect();
        for n in &plan.nodes {
            assert!(
                names.contains(n.name.as_str()),
                "{name}: {} missing",
                n.name
            );
            for i in &n.ifaces {
                let line = format!("{}\t{}", i.addr.addr(), n.name);
                assert!(lines.contains(line.as_str()), "{name}: {line} missing");
            }
        }
        let ifaces: usize = plan.nodes.iter().map(|n| n.ifaces.len()).sum();
        assert_eq!(hosts.lines().count(), 2 + ifaces, "{name}");
    }
}

#[test]
fn the_plan_is_deterministic() {
    for name in SHIPPED {
        let a = plan::build(&shipped(name));
        let b = plan::build(&shipped(name));
        assert_eq!(a, b, "{name}");
        assert_eq!(a.fingerprint, b.fingerprint);
        assert_eq!(a.fingerprint.len(), 16);
        assert_eq!(a.to_string(), b.to_string());
    }
}

const PROFILED: &str = r#"
[lab]
name = "prof"
[profile.slow]
delay = "10ms"
loss = "1%"
[[node]]
name = "a"
kind = "host"
[[node]]
name = "b"
kind = "host"
[[link]]
a = "a"
b = "b"
profile = "slow"
"#;

#[test]
fn the_fingerprint_follows_content_not_path() {
    let base = parse(PROFILED);
    let fp = plan::build(&base).fingerprint;

    let changed = parse(&PROFILED.replace("\"10ms\"", "\"11ms\""));
    let changed = plan::build(&changed);
    assert_ne!(changed.fingerprint, fp);
    assert_eq!(changed.profiles["slow"].delay_ns, 11_000_000);

    let lossier = plan::build(&parse(&PROFILED.replace("\"1%\"", "\"2%\"")));
    assert_ne!(lossier.fingerprint, fp);

    // A change made to the model directly counts as well.
    let mut edited = base.clone();
    edited.profiles.get_mut("slow").unwrap().jitter_ns += 1;
    assert_ne!(plan::build(&edited).fingerprint, fp);

    let elsewhere = parse_str(PROFILED, Path::new("/somewhere/else.toml")).unwrap();
    assert_ne!(elsewhere.source, base.source);
    let elsewhere = plan::build(&elsewhere);
    assert_eq!(elsewhere.fingerprint, fp);
    assert_eq!(elsewhere, plan::build(&base));

    let city = shipped("city.toml");
    let mut moved = city.clone();
    moved.source = PathBuf::from("other/city.toml");
    assert_eq!(
        plan::build(&moved).fingerprint,
        plan::build(&city).fingerprint
    );
}

#[test]
fn dry_run_names_every_namespace_and_address() {
    for name in SHIPPED {
        let plan = plan::build(&shipped(name));
        let text = plan.to_string();
        let lines: Vec<&str> = text.lines().collect();
        for ns in plan.namespaces() {
            let head = format!("netns  {ns}  (");
            let n = lines.iter().filter(|l| l.starts_with(&head)).count();
            assert_eq!(n, 1, "{name}: {head}");
        }
        for n in &plan.nodes {
            for i in &n.ifaces {
                let line = format!("addr   {}/{} {}", n.netns, i.name, i.addr);
                let count = lines.iter().filter(|l| **l == line).count();
                assert_eq!(count, 1, "{name}: {line}");
            }
            for r in &n.routes {
                let line = format!("route  {}  {} via {}", n.netns, r.dest, r.via);
                assert!(lines.contains(&line.as_str()), "{name}: {line}");
            }
        }
        let addr_lines = lines.iter().filter(|l| l.starts_with("addr ")).count();
        let ifaces: usize = plan.nodes.iter().map(|n| n.ifaces.len()).sum();
        assert_eq!(addr_lines, ifaces, "{name}");
    }
}

#[test]
fn dry_run_of_city_reads_as_expected() {
    let plan = plan::build(&shipped("city.toml"));
    let text = plan.to_string();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "lab city (seed 42, backend auto)");
    for expected in [
        "netns  tb-city  (infrastructure)",
        "netns  tb-city.r1  (router)",
        "netns  tb-city.v001  (vehicle)",
        "netns  tb-city.mallory  (attacker)",
        "sysctl tb-city.r1  ipv4/ip_forward=1",
        "link   tb-city.r1/lo up, alias testbed:city",
        "addr   tb-city.r1/eth0 10.100.0.1/29",
        "addr   tb-city.r1/eth1 10.100.0.33/27",
        "addr   tb-city.r1/eth3 10.100.0.17/28",
        "link   tb-city.v001/eth0 addrgenmode none, up",
        "route  tb-city.v001  10.100.0.0/29 via 10.100.0.33",
        "route  tb-city.director  10.100.0.32/27 via 10.100.0.1",
        "impair tb-city.v001/eth0 egress profile dsrc (kernel netem if the kernel has it, else the userspace engine)",
        "impair tb-city.s-temp/eth0 egress profile cps_qos (kernel netem if the kernel has it, else the userspace engine)",
    ] {
        assert!(lines.contains(&expected), "missing line: {expected}");
    }
    // Bridges and ports, with the bridge each port is on.
    assert!(lines.iter().any(|l| l.starts_with("bridge tb-city/s0b0 #")
        && l.ends_with("segment backhaul shard 0 (3 ports)")));
    assert!(lines.iter().any(
        |l| l.starts_with("veth   tb-city.v001/eth0 #100 <-> tb-city/")
            && l.ends_with("(bridge s1b0)")
    ));
    // Non-routers get no sysctl line.
    assert!(!lines.iter().any(|l| l.starts_with("sysctl tb-city.v001 ")));
}

#[test]
fn only_routers_get_sysctls_without_ipv6() {
    for name in SHIPPED {
        let plan = plan::build(&shipped(name));
        for n in &plan.nodes {
            if n.kind == NodeKind::Router {
                assert_eq!(
                    n.sysctls,
                    vec![("ipv4/ip_forward".to_string(), "1".to_string())],
                    "{name}: {}",
                    n.name
                );
            } else {
                assert!(n.sysctls.is_empty(), "{name}: {}", n.name);
            }
        }
    }
}

#[test]
fn the_engine_carries_exactly_the_impaired_interfaces() {
    for name in SHIPPED {
        let before = plan::build(&shipped(name));
        let mut after = before.clone();
        after.route_through_engine();
        check_invariants(&after);
        let again = {
            let mut p = after.clone();
            p.route_through_engine();
            p
        };
        assert_eq!(
            again, after,
            "{name}: placing the engine twice changes nothing"
        );
        for (n, node) in after.nodes.iter().enumerate() {
            for (j, iface) in node.ifaces.iter().enumerate() {
                let relay = after.relay_of((n, j));
                let on_link = after.is_link(&iface.network);
                let link_impaired = on_link
                    && after.links.iter().any(|l| {
                        l.name == iface.network
                            && (after.iface(l.a).profile_out.is_some()
                                || after.iface(l.b).profile_out.is_some())
                    });
                let expected = if on_link {
                    link_impaired
                } else {
                    iface.profile_out.is_some()
                };
                assert_eq!(
                    relay.is_some() || after.relays.iter().any(|r| r.a == (n, j)),
                    expected,
                    "{name}: {}/{} relayed?",
                    node.name,
                    iface.name
                );
                // A relayed interface's veth ends on an engine port; the others
                // are exactly as before.
                if expected {
                    let port = iface.port.as_ref().expect("engine port");
                    assert_eq!(port.bridge, None);
                } else {
                    assert_eq!(iface, before.iface((n, j)));
                }
            }
        }
        for r in &after.relays {
            let (a, b) = after.relay_ports(r);
            assert!(
                !a.is_empty() && !b.is_empty() && a != b,
                "{name}: {}",
                r.name
            );
        }
    }
    let city = {
        let mut p = plan::build(&shipped("city.toml"));
        p.route_through_engine();
        p
    };
    // Every city segment has a profile: every member is relayed.
    let members: usize = city.nodes.iter().map(|n| n.ifaces.len()).sum();
    assert_eq!(city.relays.len(), members);
    let dry_run = city.to_string();
    assert!(
        dry_run.contains("relay  tb-city/n0i0 <-> tb-city/n0i0e"),
        "{dry_run}"
    );
}

#[test]
fn agents_peers_are_seeded_as_neighbours_with_the_planned_macs() {
    let plan = plan::build(&parse(
        r#"
[lab]
name = "x"

[[node]]
name = "hub"
kind = "server"
role = "heartbeat"

[[group]]
name = "cars"
template = "c{}"
count = 3
kind = "vehicle"
role = "heartbeat"
options = { to = "hub" }

[[node]]
name = "quiet"
kind = "host"

[[segment]]
name = "lan"
members = ["hub", "cars", "quiet"]
"#,
    ));
    let seeds = plan.neighbour_seeds();
    let hub = plan.nodes.iter().position(|n| n.name == "hub").unwrap();
    let hub_ip = addr_on(&plan, "hub", "lan");
    // Each car knows the hub; the hub knows each car; nobody else is seeded.
    assert_eq!(seeds[hub].len(), 3);
    for (i, n) in plan.nodes.iter().enumerate() {
        match n.name.as_str() {
            "hub" => {}
            "quiet" => assert!(seeds[i].is_empty()),
            _ => {
                assert_eq!(seeds[i].len(), 1, "{}", n.name);
                assert_eq!(IpAddr::V4(seeds[i][0].addr), hub_ip);
                assert_eq!(seeds[i][0].mac, plan::iface_mac(hub, 0));
                assert_eq!(seeds[i][0].ifindex, n.ifaces[0].index);
                assert!(seeds[hub].iter().any(|s| s.mac == plan::iface_mac(i, 0)));
            }
        }
    }
    // Interface MACs are unique, unicast and locally administered.
    let fleet = plan::build(&shipped("fleet-1000.toml"));
    let mut seen = HashSet::new();
    for (n, node) in fleet.nodes.iter().enumerate() {
        for j in 0..node.ifaces.len() {
            let mac = plan::iface_mac(n, j);
            assert_eq!(mac[0] & 0x03, 0x02);
            assert!(seen.insert(mac), "{mac:?} twice");
        }
    }
}
