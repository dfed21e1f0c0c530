//! Segments and links: members resolved to nodes, names checked, subnets
//! read. The result is a list of networks for addressing plus what each
//! segment or link keeps besides addresses.

use std::collections::{HashMap, HashSet};
use std::ops::Range;

use ipnet::{Ipv4Net, Ipv6Net};
use toml::Spanned;

use super::error::{Checked, Issue, Source};
use super::names::{check_name, did_you_mean};
use super::nodes::{Named, Nodes};
use super::profiles::Profiles;
use super::raw::{RawLink, RawSegment, Str};
use super::{NodeKind, SegmentKind};

/// A subnet written in the file, with its position.
#[derive(Debug, Clone)]
pub(crate) struct Fixed<T> {
    pub net: T,
    pub span: Range<usize>,
}

/// One IP network to address: a segment or a link.
#[derive(Debug)]
pub(crate) struct Net {
    /// `segment "x"` or `link "x"`, for messages.
    pub label: String,
    pub name: String,
    pub name_span: Range<usize>,
    /// Node indices in member order (`[a, b]` for links).
    pub members: Vec<usize>,
    /// Order in which members get automatic addresses.
    pub order: Vec<usize>,
    pub subnet: Option<Fixed<Ipv4Net>>,
    pub subnet6: Option<Fixed<Ipv6Net>>,
}

/// What a segment keeps besides its network.
#[derive(Debug)]
pub(crate) struct SegmentInfo {
    pub kind: SegmentKind,
    pub profile: Option<String>,
    pub in_path: bool,
}

/// What a link keeps besides its network.
#[derive(Debug)]
pub(crate) struct LinkInfo {
    pub profile_ab: Option<String>,
    pub profile_ba: Option<String>,
    pub in_path: bool,
}

/// Every network: segments first (file order), then links (file order).
#[derive(Debug, Default)]
pub(crate) struct Wiring {
    pub nets: Vec<Net>,
    pub segments: Vec<SegmentInfo>,
    pub links: Vec<LinkInfo>,
    /// Where each segment or link name was first defined.
    defined_at: HashMap<String, usize>,
}

/// What wiring needs to look at.
pub(crate) struct Context<'a> {
    pub src: &'a Source<'a>,
    pub nodes: &'a Nodes,
    pub profiles: &'a mut Profiles,
    /// Whether `[lab] pool6` is set (required for `subnet6`).
    pub ipv6: bool,
}

impl Wiring {
    /// Resolves all segments and links, then checks that every node is
    /// attached to at least one of them.
    pub fn build(
        cx: &mut Context,
        segments: &[Spanned<RawSegment>],
        links: &[Spanned<RawLink>],
    ) -> Checked<Wiring> {
        let mut wiring = Wiring::default();
        for segment in segments {
            wiring.add_segment(cx, segment.get_ref())?;
        }
        for link in links {
            wiring.add_link(cx, link.get_ref())?;
        }
        wiring.check_attached(cx.nodes)?;
        Ok(wiring)
    }

    /// Records a segment or link name; `hint` ends the message if taken.
    fn define(&mut self, src: &Source, name: &str, span: Range<usize>, hint: &str) -> Checked<()> {
        if let Some(first) = self.defined_at.get(name) {
            let line = src.line(*first);
            return Err(Issue::new(
                span,
                format!(
                    "duplicate segment or link name \"{name}\", already defined at line {line}; segment and link names must be unique{hint}"
                ),
            ));
        }
        self.defined_at.insert(name.to_string(), span.start);
        Ok(())
    }

    fn add_segment(&mut self, cx: &mut Context, raw: &RawSegment) -> Checked<()> {
        let name = &raw.name;
        check_name(name.get_ref(), "segment").map_err(|m| Issue::new(name.span(), m))?;
        self.define(cx.src, name.get_ref(), name.span(), "")?;
        let kind = segment_kind(raw.kind.as_ref())?;
        let label = format!("segment \"{}\"", name.get_ref());
        let members = members(cx.nodes, &label, &raw.members)?;
        let subnet = raw
            .subnet
            .as_ref()
            .map(|s| subnet4(s, &label, members.len()))
            .transpose()?;
        let subnet6 = raw
            .subnet6
            .as_ref()
            .map(|s| subnet6(s, cx.ipv6))
            .transpose()?;
        let profile = cx.profiles.resolve_opt(raw.profile.as_ref())?;
        let order = routers_first(cx.nodes, &members);
        self.nets.push(Net {
            label,
            name: name.get_ref().clone(),
            name_span: name.span(),
            members,
            order,
            subnet,
            subnet6,
        });
        self.segments.push(SegmentInfo {
            kind,
            profile,
            in_path: raw.in_path.unwrap_or(false),
        });
        Ok(())
    }

    fn add_link(&mut self, cx: &mut Context, raw: &RawLink) -> Checked<()> {
        let a = endpoint(cx.nodes, &raw.a, "a")?;
        let b = endpoint(cx.nodes, &raw.b, "b")?;
        let (name, name_span) = match &raw.name {
            Some(n) => {
                check_name(n.get_ref(), "link").map_err(|m| Issue::new(n.span(), m))?;
                (n.get_ref().clone(), n.span())
            }
            None => (
                format!("{}--{}", raw.a.get_ref(), raw.b.get_ref()),
                raw.a.span(),
            ),
        };
        if a == b {
            return Err(Issue::new(
                raw.b.span(),
                format!(
                    "link \"{name}\" connects node \"{}\" to itself; a and b must be different nodes",
                    raw.a.get_ref()
                ),
            ));
        }
        let hint = match raw.name {
            Some(_) => "",
            None => "; give this link its own name = \"...\"",
        };
        self.define(cx.src, &name, name_span.clone(), hint)?;
        let label = format!("link \"{name}\"");
        let subnet = raw
            .subnet
            .as_ref()
            .map(|s| subnet4(s, &label, 2))
            .transpose()?;
        let subnet6 = raw
            .subnet6
            .as_ref()
            .map(|s| subnet6(s, cx.ipv6))
            .transpose()?;
        let both = cx.profiles.resolve_opt(raw.profile.as_ref())?;
        let ab = cx.profiles.resolve_opt(raw.profile_ab.as_ref())?;
        let ba = cx.profiles.resolve_opt(raw.profile_ba.as_ref())?;
        self.nets.push(Net {
            label,
            name,
            name_span,
            members: vec![a, b],
            order: vec![a, b],
            subnet,
            subnet6,
        });
        self.links.push(LinkInfo {
            profile_ab: ab.or_else(|| both.clone()),
            profile_ba: ba.or(both),
            in_path: raw.in_path.unwrap_or(false),
        });
        Ok(())
    }

    fn check_attached(&self, nodes: &Nodes) -> Checked<()> {
        let mut attached = vec![false; nodes.drafts.len()];
        for net in &self.nets {
            for &m in &net.members {
                attached[m] = true;
            }
        }
        match nodes.drafts.iter().zip(&attached).find(|(_, a)| !**a) {
            Some((draft, _)) => Err(Issue::new(
                draft.span.clone(),
                format!(
                    "node \"{}\" is a member of no segment and no link; add it to a segment's members or connect it with a [[link]]",
                    draft.node.name
                ),
            )),
            None => Ok(()),
        }
    }
}

fn segment_kind(raw: Option<&Str>) -> Checked<SegmentKind> {
    match raw.map(|k| (k.get_ref().as_str(), k.span())) {
        None | Some(("lan", _)) => Ok(SegmentKind::Lan),
        Some(("radio", span)) => Err(Issue::new(
            span,
            "segment kind \"radio\" is not yet supported; expected lan",
        )),
        Some((other, span)) => Err(Issue::new(
            span,
            format!("unknown segment kind \"{other}\"; expected lan"),
        )),
    }
}

/// Member names to node indices, groups expanded, each node at most once.
fn members(nodes: &Nodes, label: &str, raw: &Spanned<Vec<Str>>) -> Checked<Vec<usize>> {
    if raw.get_ref().is_empty() {
        return Err(Issue::new(
            raw.span(),
            format!("{label} has no members; expected at least one node or group name"),
        ));
    }
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for name in raw.get_ref() {
        let indices = match member(nodes, name, label)? {
            Named::Node(i) => i..i + 1,
            Named::Group(range) => range,
        };
        for i in indices {
            if !seen.insert(i) {
                return Err(duplicate_member(nodes, label, name, i));
            }
            out.push(i);
        }
    }
    Ok(out)
}

fn duplicate_member(nodes: &Nodes, label: &str, member: &Str, node: usize) -> Issue {
    let name = &nodes.drafts[node].node.name;
    let via = match name == member.get_ref() {
        true => String::new(),
        false => format!(" (group \"{}\" contains it)", member.get_ref()),
    };
    Issue::new(
        member.span(),
        format!(
            "node \"{name}\" is listed twice in {label}{via}; a node may appear at most once per segment"
        ),
    )
}

/// A node or group name; `None` if there is no such name.
fn lookup(nodes: &Nodes, name: &Str) -> Option<Named> {
    nodes.names.get(name.get_ref()).cloned()
}

/// "; did you mean ...?" for a misspelt node or group name.
fn hint(nodes: &Nodes, name: &Str) -> String {
    did_you_mean(name.get_ref(), nodes.names.keys().map(String::as_str))
}

/// A member name: a node or a group.
fn member(nodes: &Nodes, name: &Str, label: &str) -> Checked<Named> {
    lookup(nodes, name).ok_or_else(|| {
        Issue::new(
            name.span(),
            format!(
                "unknown member \"{}\" of {label}; expected a node or group name{}",
                name.get_ref(),
                hint(nodes, name)
            ),
        )
    })
}

/// A link end: a single node.
fn endpoint(nodes: &Nodes, name: &Str, end: &str) -> Checked<usize> {
    match lookup(nodes, name) {
        Some(Named::Node(i)) => Ok(i),
        Some(Named::Group(_)) => Err(Issue::new(
            name.span(),
            format!(
                "link end {end} \"{}\" is a group; a link connects two single nodes",
                name.get_ref()
            ),
        )),
        None => Err(Issue::new(
            name.span(),
            format!(
                "unknown node \"{}\" at link end {end}; expected the name of a node{}",
                name.get_ref(),
                hint(nodes, name)
            ),
        )),
    }
}

/// Members with routers first (each part in member order).
fn routers_first(nodes: &Nodes, members: &[usize]) -> Vec<usize> {
    let is_router = |i: &usize| nodes.drafts[*i].node.kind == NodeKind::Router;
    let (mut order, rest): (Vec<usize>, Vec<usize>) = members.iter().partition(|i| is_router(i));
    order.extend(rest);
    order
}

/// A static IPv4 subnet: valid, no host bits, room for `hosts` addresses.
fn subnet4(raw: &Str, label: &str, hosts: usize) -> Checked<Fixed<Ipv4Net>> {
    let text = raw.get_ref();
    let net: Ipv4Net = text.parse().map_err(|_| {
        Issue::new(
            raw.span(),
            format!("invalid IPv4 subnet \"{text}\"; expected e.g. \"10.100.0.0/24\""),
        )
    })?;
    check_host_bits(raw, net.trunc() != net, &net.trunc().to_string())?;
    let room = host_count(net);
    if room < hosts as u64 {
        return Err(Issue::new(
            raw.span(),
            format!(
                "subnet {net} of {label} has room for {room} host addresses but {hosts} are needed; expected a /30 or larger for links and a subnet with at least members + 2 addresses for segments"
            ),
        ));
    }
    Ok(Fixed {
        net,
        span: raw.span(),
    })
}

/// Usable host addresses (network and broadcast excluded).
pub(crate) fn host_count(net: Ipv4Net) -> u64 {
    (1u64 << (32 - u32::from(net.prefix_len()))).saturating_sub(2)
}

/// A static IPv6 subnet: valid, no host bits, /64 or larger, pool6 set.
fn subnet6(raw: &Str, ipv6: bool) -> Checked<Fixed<Ipv6Net>> {
    let text = raw.get_ref();
    if !ipv6 {
        return Err(Issue::new(
            raw.span(),
            "subnet6 is set but [lab] has no pool6; IPv6 is off unless pool6 is given",
        ));
    }
    let net: Ipv6Net = text.parse().map_err(|_| {
        Issue::new(
            raw.span(),
            format!("invalid IPv6 subnet \"{text}\"; expected e.g. \"fd00:100:0:1::/64\""),
        )
    })?;
    check_host_bits(raw, net.trunc() != net, &net.trunc().to_string())?;
    if net.prefix_len() > 64 {
        return Err(Issue::new(
            raw.span(),
            format!("subnet6 {net} is smaller than a /64; expected a prefix length of 64 or less"),
        ));
    }
    Ok(Fixed {
        net,
        span: raw.span(),
    })
}

fn check_host_bits(raw: &Str, has_host_bits: bool, fixed: &str) -> Checked<()> {
    match has_host_bits {
        true => Err(Issue::new(
            raw.span(),
            format!(
                "subnet {} has host bits set; did you mean {fixed}?",
                raw.get_ref()
            ),
        )),
        false => Ok(()),
    }
}
