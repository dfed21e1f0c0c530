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
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

/// Flags for requests that create an object and must not adopt an existing one.
pub const CREATE: u16 = NLM_F_CREATE | NLM_F_EXCL;
/// Flags for requests that create or overwrite (`ip route replace`).
pub const REPLACE: u16 = NLM_F_CREATE | netlink_packet_core::NLM_F_REPLACE;

/// One end of a link being created.
#[derive(Debug, Clone, PartialEq)]
pub struct End<'a> {
    pub name: &'a str,
    /// Requested ifindex in its namespace; 0 lets the kernel choose.
    pub index: u32,
    /// Namespace to create this end in; `None` is the socket's own.
    pub netns: Option<RawFd>,
    /// Bridge (ifindex in this end's namespace) to enslave it to. Honoured for
    /// the local end only; a peer is enslaved later with [`enslave_up`].
    pub master: Option<u32>,
    /// MAC address to give it; `None` lets the kernel pick a random one.
    pub mac: Option<[u8; 6]>,
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
    if let Some(fd) = end.netns {
        msg.attributes.push(LinkAttribute::NetNsFd(fd));
    }
    if let Some(master) = end.master {
        msg.attributes.push(LinkAttribute::Controller(master));
    }
    if let Some(mac) = end.mac {
        msg.attributes.push(LinkAttribute::Address(mac.to_vec()));
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
pub fn bridge(name: &str, index: u32) -> RouteNetlinkMessage {
    let mut msg = LinkMessage::default();
    msg.header.index = index;
    up_flags(&mut msg.header);
    msg.attributes.push(LinkAttribute::IfName(name.to_string()));
    let i = index.to_be_bytes();
    msg.attributes.push(LinkAttribute::Address(vec![
        0x02, 0x7b, i[0], i[1], i[2], i[3],
    ]));
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

/// Bring an existing link up and set its alias. The kernel ignores an alias
/// in a create request, so ownership tags are always set this way.
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

/// Set a link administratively up or down.
pub fn set_admin(index: u32, up: bool) -> RouteNetlinkMessage {
    let mut msg = LinkMessage::default();
    msg.header.index = index;
    msg.header.change_mask = LinkFlags::Up;
    if up {
        msg.header.flags = LinkFlags::Up;
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

/// A neighbour (ARP) entry in state STALE: the kernel uses the MAC at once
/// and confirms it with a unicast probe, where an unknown neighbour costs a
/// broadcast that a bridge floods to every port. Still a dynamic entry: an
/// ARP reply can replace it (as a spoofer's does).
pub fn stale_neighbour(
    ifindex: u32,
    addr: std::net::Ipv4Addr,
    mac: [u8; 6],
) -> RouteNetlinkMessage {
    let mut msg = NeighbourMessage::default();
    msg.header.family = AddressFamily::Inet;
    msg.header.ifindex = ifindex;
    msg.header.state = NeighbourState::Stale;
    msg.header.kind = RouteType::Unicast;
    msg.attributes
        .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(
            addr,
        )));
    msg.attributes
        .push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
    RouteNetlinkMessage::NewNeighbour(msg)
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use netlink_packet_core::{
        NLM_F_ACK, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
    };
    use netlink_packet_route::link::{LinkHeader, LinkLayerType};

    use super::*;

    const NLMSG_HDRLEN: usize = 16;
    const RTM_NEWLINK: u16 = 16;
    const RTM_SETLINK: u16 = 19;
    const RTM_NEWADDR: u16 = 20;
    const RTM_NEWROUTE: u16 = 24;
    const IFF_UP: u32 = 1;
    const IFLA_IFNAME: u16 = 3;

    /// The bytes `Netlink::queue` would send for `msg`.
    fn bytes(msg: RouteNetlinkMessage, flags: u16) -> Vec<u8> {
        let mut header = NetlinkHeader::default();
        header.flags = flags | NLM_F_REQUEST | NLM_F_ACK;
        header.sequence_number = 7;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(msg));
        packet.finalize();
        let mut buf = vec![0; packet.buffer_len()];
        packet.serialize(&mut buf);
        buf
    }

    /// Serialize, check the netlink header, parse back.
    fn round_trip(msg: RouteNetlinkMessage, flags: u16, kind: u16) -> RouteNetlinkMessage {
        let original = msg.clone();
        let buf = bytes(msg, flags);
        assert_eq!(buf.len() % 4, 0, "netlink messages are 4-byte aligned");
        let parsed = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&buf)
            .unwrap_or_else(|e| panic!("does not parse back: {e}"));
        assert_eq!(parsed.header.length as usize, buf.len());
        assert_eq!(parsed.header.message_type, kind);
        assert_eq!(parsed.header.flags, flags | NLM_F_REQUEST | NLM_F_ACK);
        assert_eq!(parsed.header.sequence_number, 7);
        match parsed.payload {
            NetlinkPayload::InnerMessage(m) => {
                assert_eq!(m, original, "the message changed on the way");
                m
            }
            other => panic!("not an inner message: {other:?}"),
        }
    }

    fn new_link(msg: RouteNetlinkMessage) -> LinkMessage {
        match round_trip(msg, CREATE, RTM_NEWLINK) {
            RouteNetlinkMessage::NewLink(l) => l,
            other => panic!("not NewLink: {other:?}"),
        }
    }

    fn set_link(msg: RouteNetlinkMessage) -> LinkMessage {
        match round_trip(msg, 0, RTM_SETLINK) {
            RouteNetlinkMessage::SetLink(l) => l,
            other => panic!("not SetLink: {other:?}"),
        }
    }

    fn new_address(msg: RouteNetlinkMessage) -> AddressMessage {
        match round_trip(msg, CREATE, RTM_NEWADDR) {
            RouteNetlinkMessage::NewAddress(a) => a,
            other => panic!("not NewAddress: {other:?}"),
        }
    }

    fn new_route(msg: RouteNetlinkMessage) -> RouteMessage {
        match round_trip(msg, CREATE, RTM_NEWROUTE) {
            RouteNetlinkMessage::NewRoute(r) => r,
            other => panic!("not NewRoute: {other:?}"),
        }
    }

    fn up_header(index: u32) -> LinkHeader {
        LinkHeader {
            interface_family: AddressFamily::Unspec,
            index,
            link_layer_type: LinkLayerType::Netrom,
            flags: LinkFlags::Up,
            change_mask: LinkFlags::Up,
        }
    }

    fn plain_header(index: u32) -> LinkHeader {
        LinkHeader {
            index,
            ..LinkHeader::default()
        }
    }

    fn port_pair() -> (End<'static>, End<'static>) {
        let near = End {
            name: "n12i0",
            index: 40,
            netns: None,
            master: Some(3),
            mac: None,
        };
        let far = End {
            name: "eth0",
            index: 2,
            netns: Some(9),
            master: None,
            mac: None,
        };
        (near, far)
    }

    #[test]
    fn veth_to_another_namespace() {
        let (near, far) = port_pair();
        let msg = new_link(veth(&near, &far));
        assert_eq!(msg.header, up_header(40));
        let [
            LinkAttribute::IfName(name),
            LinkAttribute::Controller(3),
            LinkAttribute::LinkInfo(info),
        ] = msg.attributes.as_slice()
        else {
            panic!("unexpected local attributes: {:?}", msg.attributes);
        };
        assert_eq!(name, "n12i0");
        // The kernel ignores IFLA_IFALIAS on create; tags are set with set_up.
        assert!(
            !msg.attributes
                .iter()
                .any(|a| matches!(a, LinkAttribute::IfAlias(_)))
        );
        let [
            LinkInfo::Kind(InfoKind::Veth),
            LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer))),
        ] = info.as_slice()
        else {
            panic!("unexpected link info: {info:?}");
        };
        // The peer stays down: no IFF_UP, no change mask.
        assert_eq!(peer.header, plain_header(2));
        assert!(!peer.header.flags.contains(LinkFlags::Up));
        assert_eq!(
            peer.attributes,
            vec![
                LinkAttribute::IfName("eth0".into()),
                LinkAttribute::NetNsFd(9),
            ]
        );
        // Only the local end names a bridge; only the peer moves.
        assert!(
            !peer
                .attributes
                .iter()
                .any(|a| matches!(a, LinkAttribute::Controller(_)))
        );
        assert!(
            !msg.attributes
                .iter()
                .any(|a| matches!(a, LinkAttribute::NetNsFd(_)))
        );
    }

    #[test]
    fn veth_between_two_node_namespaces() {
        let a = End {
            name: "eth1",
            index: 3,
            netns: Some(11),
            master: None,
            mac: None,
        };
        let b = End {
            name: "eth0",
            index: 2,
            netns: Some(12),
            master: None,
            mac: None,
        };
        let msg = new_link(veth(&a, &b));
        assert_eq!(msg.header, up_header(3));
        assert_eq!(
            msg.attributes[..2],
            [
                LinkAttribute::IfName("eth1".into()),
                LinkAttribute::NetNsFd(11),
            ]
        );
        let Some(LinkAttribute::LinkInfo(info)) = msg.attributes.get(2) else {
            panic!("no link info: {:?}", msg.attributes);
        };
        assert_eq!(msg.attributes.len(), 3);
        let Some(LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer)))) = info.get(1) else {
            panic!("no peer: {info:?}");
        };
        assert_eq!(peer.header.index, 2);
        assert_eq!(
            peer.attributes,
            vec![
                LinkAttribute::IfName("eth0".into()),
                LinkAttribute::NetNsFd(12),
            ]
        );
    }

    #[test]
    fn veth_raw_bytes() {
        let (near, far) = port_pair();
        let buf = bytes(veth(&near, &far), CREATE);
        let u16_at = |o: usize| u16::from_ne_bytes([buf[o], buf[o + 1]]);
        let u32_at = |o: usize| u32::from_ne_bytes(buf[o..o + 4].try_into().unwrap());
        // struct nlmsghdr
        assert_eq!(u32_at(0) as usize, buf.len());
        assert_eq!(u16_at(4), RTM_NEWLINK);
        assert_eq!(
            u16_at(6),
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL
        );
        assert_eq!(u32_at(8), 7);
        assert_eq!(u32_at(12), 0);
        // struct ifinfomsg
        let h = NLMSG_HDRLEN;
        assert_eq!(buf[h], 0, "AF_UNSPEC");
        assert_eq!(u32_at(h + 4), 40, "ifi_index");
        assert_eq!(u32_at(h + 8), IFF_UP, "ifi_flags");
        assert_eq!(u32_at(h + 12), IFF_UP, "ifi_change");
        // First attribute: IFLA_IFNAME "n12i0\0", padded to 4 bytes.
        let a = h + 16;
        assert_eq!(u16_at(a), 4 + 6);
        assert_eq!(u16_at(a + 2), IFLA_IFNAME);
        assert_eq!(&buf[a + 4..a + 10], b"n12i0\0");
        assert_eq!(&buf[a + 10..a + 12], &[0, 0]);
    }

    #[test]
    fn bridge_message() {
        let msg = new_link(bridge("s0b1", 0x0102_0304));
        assert_eq!(msg.header, up_header(0x0102_0304));
        assert_eq!(
            msg.attributes,
            vec![
                LinkAttribute::IfName("s0b1".into()),
                LinkAttribute::Address(vec![0x02, 0x7b, 1, 2, 3, 4]),
                LinkAttribute::LinkInfo(vec![
                    LinkInfo::Kind(InfoKind::Bridge),
                    LinkInfo::Data(InfoData::Bridge(vec![
                        InfoBridge::ForwardDelay(0),
                        InfoBridge::MulticastSnooping(false),
                    ])),
                ]),
            ]
        );
        // Locally administered (bit 1), unicast (bit 0 clear).
        let mac = bridge("b", 7);
        let RouteNetlinkMessage::NewLink(l) = mac else {
            unreachable!()
        };
        let Some(LinkAttribute::Address(mac)) = l.attributes.get(1) else {
            panic!("no mac")
        };
        assert_eq!(mac[0] & 0b11, 0b10);
        assert_eq!(mac, &[0x02, 0x7b, 0, 0, 0, 7]);
        // Different bridges, different MACs.
        let RouteNetlinkMessage::NewLink(other) = bridge("b", 8) else {
            unreachable!()
        };
        assert_ne!(other.attributes[1], l.attributes[1]);
    }

    #[test]
    fn address_ipv4_has_local_and_broadcast() {
        let msg = new_address(address(5, Ipv4Addr::new(10, 100, 0, 33).into(), 27));
        assert_eq!(msg.header.family, AddressFamily::Inet);
        assert_eq!(msg.header.prefix_len, 27);
        assert_eq!(msg.header.index, 5);
        assert_eq!(msg.header.flags, AddressHeaderFlags::empty());
        let a: IpAddr = Ipv4Addr::new(10, 100, 0, 33).into();
        assert_eq!(
            msg.attributes,
            vec![
                AddressAttribute::Local(a),
                AddressAttribute::Address(a),
                AddressAttribute::Broadcast(Ipv4Addr::new(10, 100, 0, 63)),
            ]
        );
        let msg = new_address(address(2, Ipv4Addr::new(192, 0, 2, 1).into(), 30));
        assert_eq!(
            msg.attributes.last(),
            Some(&AddressAttribute::Broadcast(Ipv4Addr::new(192, 0, 2, 3)))
        );
    }

    #[test]
    fn address_ipv4_point_to_point_has_no_broadcast() {
        for prefix in [31, 32] {
            let a: IpAddr = Ipv4Addr::new(10, 0, 0, 1).into();
            let msg = new_address(address(2, a, prefix));
            assert_eq!(msg.header.prefix_len, prefix);
            assert_eq!(
                msg.attributes,
                vec![AddressAttribute::Local(a), AddressAttribute::Address(a)],
                "/{prefix}"
            );
        }
    }

    #[test]
    fn address_ipv6_skips_dad() {
        let a: IpAddr = "fd00:100::3".parse::<Ipv6Addr>().unwrap().into();
        let msg = new_address(address(4, a, 64));
        assert_eq!(msg.header.family, AddressFamily::Inet6);
        assert_eq!(msg.header.prefix_len, 64);
        assert_eq!(msg.header.index, 4);
        assert_eq!(msg.header.flags, AddressHeaderFlags::Nodad);
        assert_eq!(msg.attributes, vec![AddressAttribute::Address(a)]);
    }

    #[test]
    fn route_ipv4() {
        let dest: IpNet = "10.100.0.0/29".parse().unwrap();
        let via: IpAddr = Ipv4Addr::new(10, 100, 0, 33).into();
        let msg = new_route(route(dest, via));
        assert_eq!(msg.header.address_family, AddressFamily::Inet);
        assert_eq!(msg.header.destination_prefix_length, 29);
        assert_eq!(msg.header.source_prefix_length, 0);
        assert_eq!(msg.header.table, RouteHeader::RT_TABLE_MAIN);
        assert_eq!(msg.header.protocol, RouteProtocol::Static);
        assert_eq!(msg.header.scope, RouteScope::Universe);
        assert_eq!(msg.header.kind, RouteType::Unicast);
        assert_eq!(
            msg.attributes,
            vec![
                RouteAttribute::Destination(RouteAddress::Inet(Ipv4Addr::new(10, 100, 0, 0))),
                RouteAttribute::Gateway(RouteAddress::Inet(Ipv4Addr::new(10, 100, 0, 33))),
            ]
        );
    }

    #[test]
    fn route_ipv6_and_host_bits() {
        // Host bits in the destination are cleared.
        let dest: IpNet = "fd00:1:0:2::5/64".parse().unwrap();
        let via: IpAddr = "fd00:1::1".parse().unwrap();
        let msg = new_route(route(dest, via));
        assert_eq!(msg.header.address_family, AddressFamily::Inet6);
        assert_eq!(msg.header.destination_prefix_length, 64);
        assert_eq!(msg.header.table, RouteHeader::RT_TABLE_MAIN);
        assert_eq!(msg.header.protocol, RouteProtocol::Static);
        assert_eq!(
            msg.attributes,
            vec![
                RouteAttribute::Destination(RouteAddress::Inet6("fd00:1:0:2::".parse().unwrap())),
                RouteAttribute::Gateway(RouteAddress::Inet6("fd00:1::1".parse().unwrap())),
            ]
        );
    }

    #[test]
    fn ipv6_autoconf_off() {
        let msg = set_link(no_ipv6_autoconf(6));
        assert_eq!(msg.header, plain_header(6));
        assert_eq!(
            msg.attributes,
            vec![LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet6(
                vec![AfSpecInet6::AddrGenMode(In6AddrGenMode::None),]
            )])]
        );
    }

    #[test]
    fn pin_mtu_sets_only_the_mtu() {
        let msg = set_link(pin_mtu(3, 1500));
        assert_eq!(msg.header, plain_header(3));
        assert_eq!(msg.attributes, vec![LinkAttribute::Mtu(1500)]);
    }

    #[test]
    fn enslave_up_names_the_bridge() {
        let msg = set_link(enslave_up(41, 3));
        assert_eq!(msg.header, up_header(41));
        assert_eq!(msg.attributes, vec![LinkAttribute::Controller(3)]);
    }

    #[test]
    fn set_up_with_and_without_alias() {
        let msg = set_link(set_up(1, Some("testbed:city")));
        assert_eq!(msg.header, up_header(1));
        assert_eq!(
            msg.attributes,
            vec![LinkAttribute::IfAlias("testbed:city".into())]
        );
        let msg = set_link(set_up(2, None));
        assert_eq!(msg.header, up_header(2));
        assert!(msg.attributes.is_empty());
    }

    #[test]
    fn get_links_is_an_empty_request() {
        let RouteNetlinkMessage::GetLink(l) = get_links() else {
            panic!("not GetLink");
        };
        assert_eq!(l, LinkMessage::default());
        let buf = bytes(get_links(), 0);
        assert_eq!(buf.len(), NLMSG_HDRLEN + 16);
    }

    #[test]
    fn create_refuses_to_adopt() {
        assert_eq!(CREATE, NLM_F_CREATE | NLM_F_EXCL);
    }
}
