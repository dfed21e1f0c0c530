//! TOML parsing and validation: from text to a [`Topology`].
//!
//! The steps run in a fixed order and stop at the first error: TOML syntax
//! and field types, `[lab]`, profiles, nodes and groups, segments and links,
//! then addresses.

use std::path::Path;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::addressing::{self, Addressed};
use super::error::{Checked, Issue, Source, TopologyError};
use super::names::check_lab_name;
use super::nodes::Nodes;
use super::profiles::Profiles;
use super::raw::{RawFile, RawLab, Str};
use super::wiring::{Context, Wiring};
use super::{Backend, Lab, Link, Segment, Topology};

/// Default `[lab] engine_busy_poll`: none (the engine sleeps when idle; CPU
/// is worth more to a lab's agents than the tens of microseconds a wake-up
/// costs).
pub const DEFAULT_BUSY_POLL_NS: u64 = 0;
/// Largest `[lab] engine_busy_poll`: 10 ms.
pub const MAX_BUSY_POLL_NS: u64 = 10_000_000;

/// Default `[lab] seed`.
pub const DEFAULT_SEED: u64 = 1;
/// Default `[lab] pool`.
pub const DEFAULT_POOL: &str = "10.100.0.0/16";

/// Reads and validates a topology file.
///
/// Errors name the file and, for anything but I/O errors, the line and
/// column of the offending value. The first error found is returned.
pub fn load(path: &Path) -> Result<Topology, TopologyError> {
    let io = |source| TopologyError::Io {
        path: path.to_path_buf(),
        source,
    };
    let len = std::fs::metadata(path).map_err(io)?.len();
    if len > MAX_FILE_BYTES {
        return Err(io(std::io::Error::other(format!(
            "file is {len} bytes; a topology file may be at most {MAX_FILE_BYTES} bytes"
        ))));
    }
    let text = std::fs::read_to_string(path).map_err(io)?;
    parse_str(&text, path)
}

/// Largest topology file accepted (a thousand-node lab needs a few KiB).
pub const MAX_FILE_BYTES: u64 = 4 << 20;

/// Validates topology text; `path` is only used in messages and stored as
/// [`Topology::source`].
pub fn parse_str(text: &str, path: &Path) -> Result<Topology, TopologyError> {
    let src = Source { text, path };
    build(&src).map_err(|issue| src.error(issue))
}

fn build(src: &Source) -> Checked<Topology> {
    let raw: RawFile = toml::from_str(src.text).map_err(toml_issue)?;
    let Some(raw_lab) = &raw.lab else {
        return Err(Issue::new(
            0..0,
            "missing [lab] table; expected [lab] with at least name = \"...\"",
        ));
    };
    let lab = lab(raw_lab.get_ref())?;
    let mut profiles = Profiles::from_raw(&raw.profile)?;
    let nodes = Nodes::build(src, lab.seed, &raw.node, &raw.group)?;
    let mut cx = Context {
        src,
        nodes: &nodes,
        profiles: &mut profiles,
        ipv6: lab.pool6.is_some(),
    };
    let wiring = Wiring::build(&mut cx, &raw.segment, &raw.link)?;
    let addressed = addressing::assign(
        lab.pool4,
        lab.pool6,
        &wiring.nets,
        &nodes.drafts,
        wiring.links.len(),
    )?;
    Ok(assemble(src, lab, nodes, wiring, addressed, profiles))
}

/// A TOML syntax or type error, at the span toml reports (else the start).
fn toml_issue(e: toml::de::Error) -> Issue {
    Issue::new(e.span().unwrap_or(0..0), e.message().trim())
}

fn lab(raw: &RawLab) -> Checked<Lab> {
    check_lab_name(raw.name.get_ref()).map_err(|m| Issue::new(raw.name.span(), m))?;
    Ok(Lab {
        name: raw.name.get_ref().clone(),
        seed: raw.seed.as_ref().map_or(DEFAULT_SEED, |s| *s.get_ref()),
        backend: backend(raw.backend.as_ref())?,
        engine_busy_poll_ns: busy_poll(raw.engine_busy_poll.as_ref())?,
        pool4: pool4(raw.pool.as_ref())?,
        pool6: raw.pool6.as_ref().map(pool6).transpose()?,
    })
}

fn backend(raw: Option<&Str>) -> Checked<Backend> {
    match raw.map(|b| b.get_ref().as_str()) {
        None | Some("auto") => Ok(Backend::Auto),
        Some("kernel") => Ok(Backend::Kernel),
        Some("userspace") => Ok(Backend::Userspace),
        Some(other) => Err(Issue::new(
            raw.map_or(0..0, |b| b.span()),
            format!("unknown backend \"{other}\"; expected one of auto, kernel, userspace"),
        )),
    }
}

fn busy_poll(raw: Option<&Str>) -> Checked<u64> {
    let Some(raw) = raw else {
        return Ok(DEFAULT_BUSY_POLL_NS);
    };
    let ns = crate::emulation::parse_duration(raw.get_ref())
        .map_err(|e| Issue::new(raw.span(), format!("engine_busy_poll: {}", e.message())))?;
    if ns > MAX_BUSY_POLL_NS {
        return Err(Issue::new(
            raw.span(),
            format!(
                "engine_busy_poll: {} is more than the largest allowed, 10ms",
                raw.get_ref()
            ),
        ));
    }
    Ok(ns)
}

fn pool4(raw: Option<&Str>) -> Checked<Ipv4Net> {
    let Some(raw) = raw else {
        return DEFAULT_POOL
            .parse()
            .map_err(|_| Issue::new(0..0, "internal error: bad default pool"));
    };
    match pool(raw, "pool", 30)? {
        IpNet::V4(net) => Ok(net),
        IpNet::V6(_) => Err(bad_pool(raw, "pool")),
    }
}

fn pool6(raw: &Str) -> Checked<Ipv6Net> {
    match pool(raw, "pool6", 64)? {
        IpNet::V6(net) => Ok(net),
        IpNet::V4(_) => Err(bad_pool(raw, "pool6")),
    }
}

/// An address pool: a network without host bits, at least as large as a
/// `/max_prefix`. `field` is `pool` (IPv4) or `pool6`.
fn pool(raw: &Str, field: &str, max_prefix: u8) -> Checked<IpNet> {
    let net: IpNet = raw.get_ref().parse().map_err(|_| bad_pool(raw, field))?;
    if net.trunc() != net {
        return Err(Issue::new(
            raw.span(),
            format!(
                "{field} {net} has host bits set; did you mean {}?",
                net.trunc()
            ),
        ));
    }
    if net.prefix_len() > max_prefix {
        return Err(Issue::new(
            raw.span(),
            format!("{field} {net} is too small; expected a /{max_prefix} or larger"),
        ));
    }
    Ok(net)
}

fn bad_pool(raw: &Str, field: &str) -> Issue {
    let (family, example) = match field {
        "pool6" => ("IPv6", "fd00:100::/48"),
        _ => ("IPv4", "10.100.0.0/16"),
    };
    Issue::new(
        raw.span(),
        format!(
            "invalid {family} {field} \"{}\"; expected e.g. \"{example}\"",
            raw.get_ref()
        ),
    )
}

/// Puts the checked parts together into the model.
fn assemble(
    src: &Source,
    lab: Lab,
    nodes: Nodes,
    wiring: Wiring,
    addressed: Vec<Addressed>,
    profiles: Profiles,
) -> Topology {
    let mut addressed = addressed.into_iter();
    let segment_count = wiring.segments.len();
    let segments = wiring
        .segments
        .into_iter()
        .zip(&wiring.nets)
        .zip(addressed.by_ref())
        .map(|((info, net), a)| Segment {
            name: net.name.clone(),
            kind: info.kind,
            profile: info.profile,
            subnet: a.subnet,
            subnet6: a.subnet6,
            members: a.members,
            in_path: info.in_path,
        })
        .collect();
    let link_nets = wiring.nets.iter().skip(segment_count);
    let links = wiring
        .links
        .into_iter()
        .zip(link_nets)
        .zip(addressed)
        .filter_map(|((info, net), a)| {
            let mut ends = a.members.into_iter();
            Some(Link {
                name: net.name.clone(),
                a: ends.next()?,
                b: ends.next()?,
                profile_ab: info.profile_ab,
                profile_ba: info.profile_ba,
                subnet: a.subnet,
                subnet6: a.subnet6,
                in_path: info.in_path,
            })
        })
        .collect();
    Topology {
        source: src.path.to_path_buf(),
        lab,
        nodes: nodes.drafts.into_iter().map(|d| d.node).collect(),
        segments,
        links,
        profiles: profiles.into_used(),
    }
}
