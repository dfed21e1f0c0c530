//! Address allocation: subnets for every segment and link, then one host
//! address per attachment.
//!
//! Order: static subnets are checked against each other; then every segment
//! without a subnet (file order) gets the smallest aligned prefix holding its
//! members plus network and broadcast, at least a /29; then every link without
//! a subnet gets a /30. Allocation is first-fit, ascending in the pool,
//! skipping anything already taken. Host addresses: static ones first, then
//! ascending from the first host address (routers first on segments, a then
//! b on links), skipping the static ones. With an IPv6 pool every network gets
//! a /64 and each attachment the same host offset as its IPv4 address.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::ops::Range;

use ipnet::{Ipv4Net, Ipv6Net};

use super::Attachment;
use super::error::{Checked, Issue};
use super::nodes::NodeDraft;
use super::wiring::{Fixed, Net};

/// Smallest automatic segment subnet.
const MIN_SEGMENT_PREFIX: u8 = 29;
/// Automatic link subnet.
const LINK_PREFIX: u8 = 30;
/// Automatic IPv6 subnet of every network.
const PREFIX6: u8 = 64;

/// The addresses of one network, in the same order as `Net::members`.
#[derive(Debug)]
pub(crate) struct Addressed {
    pub subnet: Ipv4Net,
    pub subnet6: Option<Ipv6Net>,
    pub members: Vec<Attachment>,
}

/// Allocates subnets and host addresses for every network.
pub(crate) fn assign(
    pool: Ipv4Net,
    pool6: Option<Ipv6Net>,
    nets: &[Net],
    nodes: &[NodeDraft],
    link_count: usize,
) -> Checked<Vec<Addressed>> {
    let subnets = subnets4(pool, nets, link_count)?;
    let subnets6 = match pool6 {
        Some(pool6) => subnets6(pool6, nets)?.into_iter().map(Some).collect(),
        None => vec![None; nets.len()],
    };
    let statics = statics(nets, nodes)?;
    nets.iter()
        .zip(subnets)
        .zip(subnets6)
        .enumerate()
        .map(|(i, ((net, subnet), subnet6))| {
            let members = hosts(net, subnet, subnet6, &statics[i], nodes)?;
            Ok(Addressed {
                subnet,
                subnet6,
                members,
            })
        })
        .collect()
}

/// Inclusive address ranges already taken, keyed by first address.
#[derive(Debug, Default)]
struct Taken {
    ranges: BTreeMap<u128, u128>,
}

impl Taken {
    /// The end of a taken range overlapping `[lo, hi]`, if any. Ranges are
    /// disjoint, so only the last one starting at or before `hi` can overlap.
    fn overlap(&self, lo: u128, hi: u128) -> Option<u128> {
        let (_, end) = self.ranges.range(..=hi).next_back()?;
        (*end >= lo).then_some(*end)
    }

    fn insert(&mut self, lo: u128, hi: u128) {
        self.ranges.insert(lo, hi);
    }

    /// First free block of `size` addresses, aligned to `size`, inside
    /// `[pool_lo, pool_hi]`.
    fn first_fit(&self, pool_lo: u128, pool_hi: u128, size: u128) -> Option<u128> {
        let mut candidate = pool_lo.checked_next_multiple_of(size)?;
        loop {
            let last = candidate.checked_add(size - 1)?;
            if last > pool_hi {
                return None;
            }
            match self.overlap(candidate, last) {
                Some(end) => candidate = end.checked_add(1)?.checked_next_multiple_of(size)?,
                None => return Some(candidate),
            }
        }
    }
}

/// A subnet as an inclusive range of addresses.
fn range4(net: Ipv4Net) -> (u128, u128) {
    (
        u32::from(net.network()).into(),
        u32::from(net.broadcast()).into(),
    )
}

fn range6(net: Ipv6Net) -> (u128, u128) {
    (u128::from(net.network()), u128::from(net.broadcast()))
}

/// Checks static subnets for overlap, then allocates the others.
fn subnets4(pool: Ipv4Net, nets: &[Net], link_count: usize) -> Checked<Vec<Ipv4Net>> {
    let fixed: Vec<Option<&Fixed<Ipv4Net>>> = nets.iter().map(|n| n.subnet.as_ref()).collect();
    let mut taken = check_overlaps(nets, &fixed, |n| range4(*n))?;
    let segments = nets.len() - link_count;
    let (pool_lo, pool_hi) = range4(pool);
    let mut out = Vec::with_capacity(nets.len());
    for (i, net) in nets.iter().enumerate() {
        if let Some(f) = &net.subnet {
            out.push(f.net);
            continue;
        }
        let prefix = if i < segments {
            segment_prefix(net.members.len())
        } else {
            LINK_PREFIX
        };
        let size = 1u128 << (32 - u32::from(prefix));
        let start = taken
            .first_fit(pool_lo, pool_hi, size)
            .ok_or_else(|| exhausted(&pool.to_string(), net, prefix))?;
        taken.insert(start, start + size - 1);
        out.push(to_net4(start, prefix).ok_or_else(|| exhausted(&pool.to_string(), net, prefix))?);
    }
    Ok(out)
}

/// Static IPv6 subnets checked, then a /64 for every other network.
fn subnets6(pool: Ipv6Net, nets: &[Net]) -> Checked<Vec<Ipv6Net>> {
    let fixed: Vec<Option<&Fixed<Ipv6Net>>> = nets.iter().map(|n| n.subnet6.as_ref()).collect();
    let mut taken = check_overlaps(nets, &fixed, |n| range6(*n))?;
    let (pool_lo, pool_hi) = range6(pool);
    let size = 1u128 << (128 - u32::from(PREFIX6));
    let mut out = Vec::with_capacity(nets.len());
    for net in nets {
        if let Some(f) = &net.subnet6 {
            out.push(f.net);
            continue;
        }
        let start = taken
            .first_fit(pool_lo, pool_hi, size)
            .ok_or_else(|| exhausted(&pool.to_string(), net, PREFIX6))?;
        taken.insert(start, start + size - 1);
        let subnet = Ipv6Net::new(Ipv6Addr::from(start), PREFIX6)
            .map_err(|_| exhausted(&pool.to_string(), net, PREFIX6))?;
        out.push(subnet);
    }
    Ok(out)
}

/// Errors at the first static subnet that overlaps an earlier one; returns
/// the static subnets as taken ranges.
fn check_overlaps<T: std::fmt::Display>(
    nets: &[Net],
    fixed: &[Option<&Fixed<T>>],
    range: impl Fn(&T) -> (u128, u128),
) -> Checked<Taken> {
    let mut taken = Taken::default();
    let mut owners: HashMap<u128, usize> = HashMap::new();
    for (i, f) in fixed.iter().enumerate() {
        let Some(f) = f else { continue };
        let (lo, hi) = range(&f.net);
        // An earlier range overlapping [lo, hi] either starts inside it or
        // is the last one starting before it.
        let clash = taken
            .ranges
            .range(..=hi)
            .next_back()
            .filter(|(_, end)| **end >= lo)
            .map(|(start, _)| *start);
        if let Some(start) = clash {
            let j = owners.get(&start).copied().unwrap_or(i);
            let earlier = fixed[j].map(|e| e.net.to_string()).unwrap_or_default();
            return Err(Issue::new(
                f.span.clone(),
                format!(
                    "subnet {} of {} overlaps subnet {earlier} of {}",
                    f.net, nets[i].label, nets[j].label
                ),
            ));
        }
        taken.insert(lo, hi);
        owners.insert(lo, i);
    }
    Ok(taken)
}

/// Smallest prefix holding `members` hosts plus network and broadcast, at
/// most a /29.
fn segment_prefix(members: usize) -> u8 {
    let smallest = 1u64 << (32 - u32::from(MIN_SEGMENT_PREFIX));
    let size = (members as u64 + 2).next_power_of_two().max(smallest);
    // size <= 2^32 for any member count below 2^32 - 2; clamp anyway.
    (32 - size.trailing_zeros().min(32)) as u8
}

fn to_net4(start: u128, prefix: u8) -> Option<Ipv4Net> {
    let addr = Ipv4Addr::from(u32::try_from(start).ok()?);
    Ipv4Net::new(addr, prefix).ok()
}

fn exhausted(pool: &str, net: &Net, prefix: u8) -> Issue {
    Issue::new(
        net.name_span.clone(),
        format!(
            "address pool {pool} exhausted: {} needs a /{prefix}; use a larger pool or give it a subnet",
            net.label
        ),
    )
}

/// One network's static addresses: node index -> (address, its span).
type Statics = HashMap<usize, (Ipv4Addr, Range<usize>)>;

/// Static addresses per network: node index -> (address, span). Checks that
/// each names a segment or link the node is on.
fn statics(nets: &[Net], nodes: &[NodeDraft]) -> Checked<Vec<Statics>> {
    let by_name: HashMap<&str, usize> = nets
        .iter()
        .enumerate()
        .map(|(i, n)| (n.name.as_str(), i))
        .collect();
    let mut out = vec![HashMap::new(); nets.len()];
    for (index, draft) in nodes.iter().enumerate() {
        for addr in &draft.addresses {
            let on = addr.on.get_ref();
            let node = &draft.node.name;
            let Some(&i) = by_name.get(on.as_str()) else {
                return Err(Issue::new(
                    addr.on.span(),
                    format!(
                        "node \"{node}\" has a static address for \"{on}\", but there is no segment or link of that name"
                    ),
                ));
            };
            if !nets[i].members.contains(&index) {
                return Err(Issue::new(
                    addr.on.span(),
                    format!(
                        "node \"{node}\" has a static address for {}, but is not attached to it",
                        nets[i].label
                    ),
                ));
            }
            out[i].insert(index, (addr.addr, addr.span.clone()));
        }
    }
    Ok(out)
}

/// Host addresses of one network's members, in member order.
fn hosts(
    net: &Net,
    subnet: Ipv4Net,
    subnet6: Option<Ipv6Net>,
    statics: &Statics,
    nodes: &[NodeDraft],
) -> Checked<Vec<Attachment>> {
    let mut addr_of: HashMap<usize, Ipv4Addr> = HashMap::new();
    let mut used: HashMap<Ipv4Addr, usize> = HashMap::new();
    // Static addresses in member order, so the first error is the earliest.
    for &m in &net.members {
        let Some((addr, span)) = statics.get(&m) else {
            continue;
        };
        check_static(net, subnet, *addr, span, m, &used, nodes)?;
        used.insert(*addr, m);
        addr_of.insert(m, *addr);
    }
    let mut next = u32::from(subnet.network()).saturating_add(1);
    let broadcast = u32::from(subnet.broadcast());
    let taken: HashSet<Ipv4Addr> = used.keys().copied().collect();
    for &m in &net.order {
        if addr_of.contains_key(&m) {
            continue;
        }
        while taken.contains(&Ipv4Addr::from(next)) {
            next = next.saturating_add(1);
        }
        if next >= broadcast {
            return Err(Issue::new(
                net.name_span.clone(),
                format!(
                    "subnet {subnet} of {} has no host address left for node \"{}\"",
                    net.label, nodes[m].node.name
                ),
            ));
        }
        addr_of.insert(m, Ipv4Addr::from(next));
        next = next.saturating_add(1);
    }
    Ok(net
        .members
        .iter()
        .map(|m| {
            let addr = addr_of.get(m).copied().unwrap_or(Ipv4Addr::UNSPECIFIED);
            Attachment {
                node: *m,
                addr,
                addr6: subnet6.map(|s6| v6_host(s6, subnet, addr)),
            }
        })
        .collect())
}

fn check_static(
    net: &Net,
    subnet: Ipv4Net,
    addr: Ipv4Addr,
    span: &Range<usize>,
    node: usize,
    used: &HashMap<Ipv4Addr, usize>,
    nodes: &[NodeDraft],
) -> Checked<()> {
    let name = &nodes[node].node.name;
    let problem = if !subnet.contains(&addr) {
        Some(format!("is outside subnet {subnet} of {}", net.label))
    } else if addr == subnet.network() {
        Some(format!(
            "is the network address of subnet {subnet} of {}",
            net.label
        ))
    } else if addr == subnet.broadcast() {
        Some(format!(
            "is the broadcast address of subnet {subnet} of {}",
            net.label
        ))
    } else {
        used.get(&addr).map(|other| {
            format!(
                "on {} is already taken by node \"{}\"",
                net.label, nodes[*other].node.name
            )
        })
    };
    match problem {
        Some(p) => Err(Issue::new(
            span.clone(),
            format!(
                "static address {addr} of node \"{name}\" {p}; expected a unique host address from {} to {}",
                first_host(subnet),
                last_host(subnet)
            ),
        )),
        None => Ok(()),
    }
}

fn first_host(subnet: Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(subnet.network()).saturating_add(1))
}

fn last_host(subnet: Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(subnet.broadcast()).saturating_sub(1))
}

/// The IPv6 address with the same host offset as `addr` has in `subnet`.
fn v6_host(subnet6: Ipv6Net, subnet: Ipv4Net, addr: Ipv4Addr) -> Ipv6Addr {
    let offset = u32::from(addr).wrapping_sub(u32::from(subnet.network()));
    Ipv6Addr::from(u128::from(subnet6.network()) | u128::from(offset))
}

#[cfg(test)]
mod tests {
    use super::super::wiring::host_count;
    use super::*;

    #[test]
    fn prefixes() {
        assert_eq!(segment_prefix(1), 29);
        assert_eq!(segment_prefix(6), 29);
        assert_eq!(segment_prefix(7), 28);
        assert_eq!(segment_prefix(22), 27);
        assert_eq!(segment_prefix(1001), 22);
        assert_eq!(host_count("10.0.0.0/30".parse().unwrap()), 2);
    }

    #[test]
    fn first_fit_skips_taken() {
        let mut t = Taken::default();
        t.insert(8, 15);
        t.insert(16, 19);
        assert_eq!(t.first_fit(0, 255, 8), Some(0));
        t.insert(0, 7);
        assert_eq!(t.first_fit(0, 255, 8), Some(24));
        assert_eq!(t.first_fit(0, 255, 4), Some(20));
        assert_eq!(t.first_fit(0, 31, 16), None);
    }
}
