//! Builders for the rtnetlink requests the lab needs: veth pairs, bridges, link
//! state, addresses and routes. Pure functions, so the exact messages are unit
//! tested without root.

use std::net::IpAddr;
use std::os::fd::RawFd;

use ipnet::IpNet;
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::address::{AddressAttribute, AddressHeaderFlags, AddressMessage};
use netlink_packet_route::link::{
    AfSpecInet6, AfSpecUnspec, In6AddrGenMode, InfoBridge, InfoData, InfoKind, InfoVeth,
    LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

/// Flags for requests that create an object and must not adopt an existing one.
pub const CREATE: u16 = NLM_F_CREATE | NLM_F_EXCL;

/// One end of a link being created.
#[derive(Debug, Clone, PartialEq)]
pub struct End<'a> {
    pub name: &'a str,
    /// Requested ifindex in its namespace; 0 lets the kernel choose.
    pub index: u32,
    /// Ownership tag stored as the interface alias.
    pub alias: &'a str,
    /// Namespace to create this end in; `None` is the socket's own.
    pub netns: Option<RawFd>,
    /// Bridge (ifindex in this end's namespace) to enslave it to. Honoured for
    /// the local end only; a peer is enslaved later with [`enslave_up`].
    pub master: Option<u32>,
}

fn up_flags(header: &mut netlink_packet_route::link::LinkHeader) {
    header.flags = LinkFlags::Up;
    header.change_mask = LinkFlags::Up;
}

fn end_message(end: &End, up: bool) -> LinkMessage {
    let mut msg = LinkMessage::default();
    msg.header.index = end.index;
    if up {
        up_flags(&mut msg.header);
    }
    msg.attributes
        .push(LinkAttribute::IfName(end.name.to_string()));
    msg.attributes
        .push(LinkAttribute::IfAlias(end.alias.to_string()));
    if let Some(fd) = end.netns {
        msg.attributes.push(LinkAttribute::NetNsFd(fd));
    }
    if let Some(master) = end.master {
        msg.attributes.push(LinkAttribute::Controller(master));
    }
    msg
}

/// A veth pair, each end optionally in another namespace and bridge. The local
/// end comes up at once; the peer stays down (the kernel refuses to open a veth
/// end before its pair is registered) and is raised with [`set_up`].
pub fn veth(local: &End, peer: &End) -> RouteNetlinkMessage {
    let mut msg = end_message(local, true);
    msg.attributes.push(LinkAttribute::LinkInfo(vec![
        LinkInfo::Kind(InfoKind::Veth),
        LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(end_message(peer, false)))),
    ]));
    RouteNetlinkMessage::NewLink(msg)
}

/// A bridge, up, without STP (ports forward at once) and without multicast
/// snooping (every member hears every multicast, as on a hub-like radio cell).
///
/// It gets a fixed, locally administered MAC derived from `index`: a bridge
/// without one re-derives its id from all ports on every port added, which
/// makes a thousand ports quadratic. Follow it with [`pin_mtu`].
pub fn bridge(name: &str, index: u32, alias: &str) -> RouteNetlinkMessage {
    let mut msg = LinkMessage::default();
    msg.header.index = index;
    up_flags(&mut msg.header);
    msg.attributes.push(LinkAttribute::IfName(name.to_string()));
    let i = index.to_be_bytes();
    msg.attributes.push(LinkAttribute::Address(vec![
        0x02, 0x7b, i[0], i[1], i[2], i[3],
    ]));
    msg.attributes
        .push(LinkAttribute::IfAlias(alias.to_string()));
    msg.attributes.push(LinkAttribute::LinkInfo(vec![
        LinkInfo::Kind(InfoKind::Bridge),
        LinkInfo::Data(InfoData::Bridge(vec![
            InfoBridge::ForwardDelay(0),
            InfoBridge::MulticastSnooping(false),
        ])),
    ]));
    RouteNetlinkMessage::NewLink(msg)
}

/// Set a link's MTU explicitly. On a bridge this marks the MTU as chosen by
/// the user, so adding a port no longer rescans every port for the minimum.
pub fn pin_mtu(index: u32, mtu: u32) -> RouteNetlinkMessage {
    let mut msg = LinkMessage::default();
    msg.header.index = index;
    msg.attributes.push(LinkAttribute::Mtu(mtu));
    RouteNetlinkMessage::SetLink(msg)
}

/// Bring an existing link up and set its alias.
pub fn set_up(index: u32, alias: Option<&str>) -> RouteNetlinkMessage {
    let mut msg = LinkMessage::default();
    msg.header.index = index;
    up_flags(&mut msg.header);
    if let Some(alias) = alias {
        msg.attributes
            .push(LinkAttribute::IfAlias(alias.to_string()));
    }
    RouteNetlinkMessage::SetLink(msg)
}

/// Stop the kernel from generating IPv6 link-local addresses on a link (no
/// SLAAC, no DAD, no MLD chatter when a thousand ports come up). Static IPv6
/// addresses still work. Send it before the link goes up.
pub fn no_ipv6_autoconf(index: u32) -> RouteNetlinkMessage {
    let mut msg = LinkMessage::default();
    msg.header.index = index;
    msg.attributes
        .push(LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet6(
            vec![AfSpecInet6::AddrGenMode(In6AddrGenMode::None)],
        )]));
    RouteNetlinkMessage::SetLink(msg)
}

/// Enslave an existing link to a bridge and bring it up.
pub fn enslave_up(index: u32, master: u32) -> RouteNetlinkMessage {
    let mut msg = LinkMessage::default();
    msg.header.index = index;
    up_flags(&mut msg.header);
    msg.attributes.push(LinkAttribute::Controller(master));
    RouteNetlinkMessage::SetLink(msg)
}

/// Ask for one link by index (answered by a dump-style single message).
pub fn get_links() -> RouteNetlinkMessage {
    RouteNetlinkMessage::GetLink(LinkMessage::default())
}

/// An address on a link. IPv6 addresses skip duplicate address detection: the
/// plan guarantees uniqueness, and DAD would delay them by a second.
pub fn address(index: u32, addr: IpAddr, prefix_len: u8) -> RouteNetlinkMessage {
    let mut msg = AddressMessage::default();
    msg.header.index = index;
    msg.header.prefix_len = prefix_len;
    match addr {
        IpAddr::V4(v4) => {
            msg.header.family = AddressFamily::Inet;
            msg.attributes.push(AddressAttribute::Local(addr));
            msg.attributes.push(AddressAttribute::Address(addr));
            if let Ok(net) = ipnet::Ipv4Net::new(v4, prefix_len)
                && prefix_len < 31
            {
                msg.attributes
                    .push(AddressAttribute::Broadcast(net.broadcast()));
            }
        }
        IpAddr::V6(_) => {
            msg.header.family = AddressFamily::Inet6;
            msg.header.flags = AddressHeaderFlags::Nodad;
            msg.attributes.push(AddressAttribute::Address(addr));
        }
    }
    RouteNetlinkMessage::NewAddress(msg)
}

fn route_address(addr: IpAddr) -> RouteAddress {
    match addr {
        IpAddr::V4(a) => RouteAddress::Inet(a),
        IpAddr::V6(a) => RouteAddress::Inet6(a),
    }
}

/// A unicast route in the main table to `dest` via `gateway`.
pub fn route(dest: IpNet, gateway: IpAddr) -> RouteNetlinkMessage {
    let mut msg = RouteMessage::default();
    msg.header.address_family = match dest {
        IpNet::V4(_) => AddressFamily::Inet,
        IpNet::V6(_) => AddressFamily::Inet6,
    };
    msg.header.destination_prefix_length = dest.prefix_len();
    msg.header.table = RouteHeader::RT_TABLE_MAIN;
    msg.header.protocol = RouteProtocol::Static;
    msg.header.scope = RouteScope::Universe;
    msg.header.kind = RouteType::Unicast;
    msg.attributes
        .push(RouteAttribute::Destination(route_address(dest.network())));
    msg.attributes
        .push(RouteAttribute::Gateway(route_address(gateway)));
    RouteNetlinkMessage::NewRoute(msg)
}
