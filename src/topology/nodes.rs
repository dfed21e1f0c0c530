//! Nodes: explicit `[[node]]` entries and expanded `[[group]]`s, with names
//! checked for uniqueness and group positions placed by a seeded RNG.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::ops::Range;

use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{Rng, SeedableRng};
use toml::Spanned;

use super::error::{Checked, Issue, Source};
use super::names::{Template, check_name};
use super::raw::{RawGroup, RawNode, RawPlacement, Str};
use super::{Node, NodeKind, Position};

/// Most nodes one lab may have, groups expanded.
pub const MAX_NODES: usize = 10_000;
/// Most nodes one group may expand to.
pub const MAX_GROUP_COUNT: i64 = 5_000;

/// A node with what validation still needs from the file.
#[derive(Debug)]
pub(crate) struct NodeDraft {
    pub node: Node,
    /// Where messages about this node point: its name, or its group's name.
    pub span: Range<usize>,
    /// Static addresses from `addresses = { SEGMENT_OR_LINK = "ADDR" }`.
    pub addresses: Vec<StaticAddr>,
    /// Where messages about the role's options point (the options table, or
    /// the role when it has none).
    pub role_span: Option<Range<usize>>,
}

/// One static IPv4 address of a node, by segment or link name.
#[derive(Debug)]
pub(crate) struct StaticAddr {
    pub on: Str,
    pub addr: Ipv4Addr,
    pub span: Range<usize>,
}

/// What a name given in `members` stands for.
#[derive(Debug, Clone)]
pub(crate) enum Named {
    Node(usize),
    /// A group: the indices of its nodes.
    Group(Range<usize>),
}

/// All nodes of the lab and the names that refer to them.
#[derive(Debug, Default)]
pub(crate) struct Nodes {
    pub drafts: Vec<NodeDraft>,
    pub names: HashMap<String, Named>,
    /// Where each node or group name was first defined, for messages.
    defined_at: HashMap<String, usize>,
}

/// A `[[node]]` or `[[group]]` entry, so both can be taken in file order.
enum Entry<'a> {
    Node(&'a Spanned<RawNode>),
    Group(&'a Spanned<RawGroup>),
}

impl Entry<'_> {
    fn start(&self) -> usize {
        match self {
            Entry::Node(n) => n.span().start,
            Entry::Group(g) => g.span().start,
        }
    }
}

impl Nodes {
    /// Builds every node in file order: `[[node]]` and `[[group]]` entries
    /// interleaved as they appear, each group expanded where it stands.
    pub fn build(
        src: &Source,
        seed: u64,
        nodes: &[Spanned<RawNode>],
        groups: &[Spanned<RawGroup>],
    ) -> Checked<Nodes> {
        let mut entries: Vec<Entry> = nodes.iter().map(Entry::Node).collect();
        entries.extend(groups.iter().map(Entry::Group));
        entries.sort_by_key(Entry::start);
        let mut all = Nodes::default();
        for entry in entries {
            match entry {
                Entry::Node(n) => all.add_node(src, n.get_ref())?,
                Entry::Group(g) => all.add_group(src, seed, g.get_ref())?,
            }
        }
        all.check_peers()?;
        Ok(all)
    }

    /// Every node a role connects to exists and runs an agent to answer.
    fn check_peers(&self) -> Checked<()> {
        for d in &self.drafts {
            let (Some(role), Some(span)) = (&d.node.role, &d.role_span) else {
                continue;
            };
            let Ok(parsed) = crate::agent::Role::parse(role, &d.node.options) else {
                continue;
            };
            for peer in parsed.peers() {
                let problem = match self.names.get(peer) {
                    None => "is not a node of this lab",
                    Some(Named::Group(_)) => "is a group; name one node",
                    Some(Named::Node(i)) if self.drafts[*i].node.role.is_none() => {
                        "has no role, so no agent answers there"
                    }
                    Some(Named::Node(_)) => continue,
                };
                return Err(Issue::new(
                    span.clone(),
                    format!("role {role} connects to \"{peer}\", which {problem}"),
                ));
            }
        }
        Ok(())
    }

    /// Records a new node or group name, or says where it was defined before.
    fn define(
        &mut self,
        src: &Source,
        name: &str,
        span: Range<usize>,
        named: Named,
    ) -> Checked<()> {
        if let Some(first) = self.defined_at.get(name) {
            let what = match named {
                Named::Node(_) => "node",
                Named::Group(_) => "group",
            };
            let line = src.line(*first);
            return Err(Issue::new(
                span,
                format!(
                    "duplicate {what} name \"{name}\", already defined at line {line}; node and group names must be unique"
                ),
            ));
        }
        self.defined_at.insert(name.to_string(), span.start);
        self.names.insert(name.to_string(), named);
        Ok(())
    }

    fn add_node(&mut self, src: &Source, raw: &RawNode) -> Checked<()> {
        let name = &raw.name;
        check_name(name.get_ref(), "node").map_err(|m| Issue::new(name.span(), m))?;
        self.check_capacity(name.span(), 1)?;
        self.define(
            src,
            name.get_ref(),
            name.span(),
            Named::Node(self.drafts.len()),
        )?;
        let kind = kind(&raw.kind)?;
        let options = options(raw.options.as_ref())?;
        let role = role(raw.role.as_ref(), raw.options.as_ref(), &options)?;
        let node = Node {
            name: name.get_ref().clone(),
            kind,
            position: raw
                .position
                .as_ref()
                .map(|p| point(p, "position"))
                .transpose()?,
            group: None,
            role,
            options,
        };
        let addresses = static_addresses(raw)?;
        self.drafts.push(NodeDraft {
            node,
            span: name.span(),
            addresses,
            role_span: role_span(raw.role.as_ref(), raw.options.as_ref()),
        });
        Ok(())
    }

    fn add_group(&mut self, src: &Source, seed: u64, raw: &RawGroup) -> Checked<()> {
        let name = &raw.name;
        check_name(name.get_ref(), "group").map_err(|m| Issue::new(name.span(), m))?;
        let template = Template::parse(raw.template.get_ref())
            .map_err(|m| Issue::new(raw.template.span(), m))?;
        let (start, count) = range(raw)?;
        self.check_capacity(raw.count.span(), count)?;
        let first = self.drafts.len();
        self.define(
            src,
            name.get_ref(),
            name.span(),
            Named::Group(first..first + count),
        )?;
        let kind = kind(&raw.kind)?;
        let options = options(raw.options.as_ref())?;
        let role = role(raw.role.as_ref(), raw.options.as_ref(), &options)?;
        let mut positions = placement(raw, seed, count)?.into_iter();
        for index in start..start + count as u64 {
            let node_name = template.render(index);
            let at = raw.template.span();
            check_name(&node_name, "node").map_err(|m| {
                Issue::new(
                    at.clone(),
                    format!("template makes node name \"{node_name}\": {m}"),
                )
            })?;
            self.define(src, &node_name, at, Named::Node(self.drafts.len()))?;
            self.drafts.push(NodeDraft {
                node: Node {
                    name: node_name,
                    kind,
                    position: positions.next(),
                    group: Some(name.get_ref().clone()),
                    role: role.clone(),
                    options: options.clone(),
                },
                span: name.span(),
                addresses: Vec::new(),
                role_span: role_span(raw.role.as_ref(), raw.options.as_ref()),
            });
        }
        Ok(())
    }

    fn check_capacity(&self, span: Range<usize>, adding: usize) -> Checked<()> {
        let total = self.drafts.len() + adding;
        if total > MAX_NODES {
            return Err(Issue::new(
                span,
                format!("this makes {total} nodes; a lab holds at most {MAX_NODES}"),
            ));
        }
        Ok(())
    }
}

/// A group's first index and node count.
fn range(raw: &RawGroup) -> Checked<(u64, usize)> {
    let count = *raw.count.get_ref();
    if !(1..=MAX_GROUP_COUNT).contains(&count) {
        return Err(Issue::new(
            raw.count.span(),
            format!("group count {count} is out of range; expected 1 to {MAX_GROUP_COUNT}"),
        ));
    }
    let start = raw.start.as_ref().map_or(1, |s| *s.get_ref());
    let start = u64::try_from(start).map_err(|_| {
        let span = raw.start.as_ref().map_or(raw.count.span(), Spanned::span);
        Issue::new(
            span,
            format!("group start {start} is negative; expected 0 or more"),
        )
    })?;
    // 1..=MAX_GROUP_COUNT fits usize and u64 on every target we build for.
    let count = count as usize;
    if start.checked_add(count as u64).is_none() {
        let span = raw.start.as_ref().map_or(raw.count.span(), Spanned::span);
        return Err(Issue::new(
            span,
            format!("group start {start} is too large"),
        ));
    }
    Ok((start, count))
}

fn kind(raw: &Str) -> Checked<NodeKind> {
    let text = raw.get_ref();
    NodeKind::ALL
        .into_iter()
        .find(|k| k.as_str() == text)
        .ok_or_else(|| {
            let all: Vec<&str> = NodeKind::ALL.iter().map(|k| k.as_str()).collect();
            Issue::new(
                raw.span(),
                format!(
                    "unknown node kind \"{text}\"; expected one of {}",
                    all.join(", ")
                ),
            )
        })
}

/// `[x, y]` in metres, both finite.
fn point(raw: &Spanned<Vec<f64>>, what: &str) -> Checked<Position> {
    match raw.get_ref().as_slice() {
        [x, y] if x.is_finite() && y.is_finite() => Ok(Position { x: *x, y: *y }),
        [_, _] => Err(Issue::new(
            raw.span(),
            format!("{what} must be finite numbers"),
        )),
        other => Err(Issue::new(
            raw.span(),
            format!(
                "{what} has {} numbers; expected two, [x, y] in metres",
                other.len()
            ),
        )),
    }
}

fn static_addresses(raw: &RawNode) -> Checked<Vec<StaticAddr>> {
    let Some(map) = &raw.addresses else {
        return Ok(Vec::new());
    };
    map.iter()
        .map(|(on, addr)| {
            let parsed = addr.get_ref().parse::<Ipv4Addr>().map_err(|_| {
                Issue::new(
                    addr.span(),
                    format!(
                        "invalid IPv4 address \"{}\"; expected e.g. \"10.100.0.5\"",
                        addr.get_ref()
                    ),
                )
            })?;
            Ok(StaticAddr {
                on: on.clone(),
                addr: parsed,
                span: addr.span(),
            })
        })
        .collect()
}

fn role_span(role: Option<&Str>, options: Option<&Spanned<toml::Table>>) -> Option<Range<usize>> {
    options.map(|o| o.span()).or_else(|| role.map(|r| r.span()))
}

/// A role the agents know, with options it accepts: an unknown role is an
/// error at the role, bad options at the options table.
fn role(
    raw: Option<&Str>,
    raw_options: Option<&Spanned<toml::Table>>,
    options: &serde_json::Value,
) -> Checked<Option<String>> {
    let Some(raw) = raw else {
        if let Some(o) = raw_options {
            return Err(Issue::new(
                o.span(),
                "options given, but no role to take them",
            ));
        }
        return Ok(None);
    };
    match crate::agent::Role::parse(raw.get_ref(), options) {
        Ok(_) => Ok(Some(raw.get_ref().clone())),
        Err(e @ crate::agent::RoleError::Unknown(_)) => Err(Issue::new(raw.span(), e.to_string())),
        Err(e) => Err(Issue::new(
            raw_options.map_or(raw.span(), |o| o.span()),
            e.to_string(),
        )),
    }
}

/// Role options as JSON; `null` when absent.
fn options(raw: Option<&Spanned<toml::Table>>) -> Checked<serde_json::Value> {
    let Some(table) = raw else {
        return Ok(serde_json::Value::Null);
    };
    let value = toml::Value::Table(table.get_ref().clone());
    to_json(&value).ok_or_else(|| {
        Issue::new(
            table.span(),
            "options hold a float that is not finite (nan or inf); JSON cannot carry it",
        )
    })
}

/// TOML to JSON; datetimes become strings. `None` for non-finite floats.
fn to_json(value: &toml::Value) -> Option<serde_json::Value> {
    use serde_json::Value as J;
    Some(match value {
        toml::Value::String(s) => J::String(s.clone()),
        toml::Value::Integer(n) => J::from(*n),
        toml::Value::Float(f) => J::Number(serde_json::Number::from_f64(*f)?),
        toml::Value::Boolean(b) => J::Bool(*b),
        toml::Value::Datetime(d) => J::String(d.to_string()),
        toml::Value::Array(a) => J::Array(a.iter().map(to_json).collect::<Option<_>>()?),
        toml::Value::Table(t) => J::Object(
            t.iter()
                .map(|(k, v)| Some((k.clone(), to_json(v)?)))
                .collect::<Option<_>>()?,
        ),
    })
}

/// Positions of a group's nodes, or nothing without a placement.
///
/// The RNG is ChaCha8 seeded from the lab seed and the group name, so the
/// same file always yields the same positions. `road`: uniform along the
/// segment from `from` to `to`, sorted by distance from `from`. `area`:
/// uniform in the rectangle `min`..`max`.
fn placement(raw: &RawGroup, seed: u64, count: usize) -> Checked<Vec<Position>> {
    let Some(placement) = &raw.placement else {
        return Ok(Vec::new());
    };
    let mut rng = group_rng(seed, raw.name.get_ref());
    match placement.get_ref() {
        RawPlacement::Road { from, to } => {
            let (from, to) = (point(from, "road.from")?, point(to, "road.to")?);
            let mut ts: Vec<f64> = (0..count).map(|_| unit(&mut rng)).collect();
            ts.sort_by(f64::total_cmp);
            Ok(ts.into_iter().map(|t| lerp(from, to, t, t)).collect())
        }
        RawPlacement::Area { min, max } => {
            let (lo, hi) = (point(min, "area.min")?, point(max, "area.max")?);
            if lo.x > hi.x || lo.y > hi.y {
                return Err(Issue::new(
                    max.span(),
                    "area.max must be at least area.min in both x and y",
                ));
            }
            Ok((0..count)
                .map(|_| {
                    let (tx, ty) = (unit(&mut rng), unit(&mut rng));
                    lerp(lo, hi, tx, ty)
                })
                .collect())
        }
    }
}

fn lerp(a: Position, b: Position, tx: f64, ty: f64) -> Position {
    Position {
        x: a.x + (b.x - a.x) * tx,
        y: a.y + (b.y - a.y) * ty,
    }
}

/// Uniform in `[0, 1)` from the top 53 bits of one draw.
fn unit(rng: &mut ChaCha8Rng) -> f64 {
    (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
}

/// ChaCha8 seeded with: lab seed (8 bytes LE), FNV-1a 64 of the group name
/// (8 bytes LE), then the first 16 bytes of the name, zero-padded.
fn group_rng(seed: u64, group: &str) -> ChaCha8Rng {
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    bytes[8..16].copy_from_slice(&fnv1a(group.as_bytes()).to_le_bytes());
    for (dst, src) in bytes[16..].iter_mut().zip(group.bytes()) {
        *dst = src;
    }
    ChaCha8Rng::from_seed(bytes)
}

fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |hash, b| {
        (hash ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}
