//! Frame helpers for the attack stages: where a frame's payload is, checksums
//! after a rewrite, and the few frames an attacker makes (UDP datagrams, ARP
//! replies), plus the MAC and hex parsers for CLI and scenario input.
//!
//! Frames are whole Ethernet II frames (Ethernet header onwards, VLAN tags
//! allowed). Parsing and building go through `etherparse`: it slices a frame
//! in place without copying, lets this code read and build frames without
//! `unsafe` of its own, is actively maintained, and its `PacketBuilder`
//! writes frames with lengths and checksums already set.
//!
//! Everything here reads bytes that came from the network: no panics, and a
//! frame that does not parse is simply not matched, not rewritten, not
//! guessed at.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::ops::Range;

use etherparse::checksum::Sum16BitWords;
use etherparse::{
    ArpHardwareId, ArpOperation, EtherType, Ethernet2Header, LaxNetSlice, LaxSlicedPacket,
    LinkSlice, NetSlice, PacketBuilder, SlicedPacket, TransportSlice,
};

/// Largest byte string [`parse_hex`] accepts.
pub const MAX_HEX_BYTES: usize = 64 * 1024;

/// Largest UDP payload in one IPv4 packet (65535 - 20 - 8).
const MAX_UDP4_PAYLOAD: usize = 65_507;
/// Largest UDP payload in one IPv6 packet without a jumbogram (65535 - 8).
const MAX_UDP6_PAYLOAD: usize = 65_527;

/// Why a frame could not be built or a MAC or hex string could not be read.
/// `Display` is one line naming what was found and what is expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    #[error(
        "source {src} and destination {dst} are of different address families; expected both IPv4 or both IPv6"
    )]
    MixedFamilies { src: IpAddr, dst: IpAddr },
    #[error(
        "UDP payload of {len} bytes is too large; at most {max} bytes fit in one {family} packet"
    )]
    PayloadTooLarge {
        len: usize,
        max: usize,
        family: &'static str,
    },
    #[error(
        "invalid MAC address `{text}`; expected six two-digit hex bytes separated by `:`, e.g. 02:7c:00:00:01:00"
    )]
    BadMac { text: String },
    #[error("invalid hex byte string `{text}`: {reason}")]
    BadHex { text: String, reason: String },
    #[error("cannot build the frame: {0}")]
    Build(String),
}

/// The fields of an Ethernet/IPv4 ARP packet (hardware type 1, protocol
/// type 0x0800, address sizes 6 and 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArpFields {
    /// 1 request, 2 reply.
    pub op: u16,
    pub sender_mac: [u8; 6],
    pub sender_ip: Ipv4Addr,
    pub target_mac: [u8; 6],
    pub target_ip: Ipv4Addr,
}

/// What the matcher reads of one frame, parsed once per frame without
/// allocating. Every field is `None` (or `false`) when its layer is absent
/// or does not parse.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FrameView<'a> {
    /// Length of the whole frame in bytes.
    pub len: usize,
    /// Ethernet source and destination.
    pub macs: Option<([u8; 6], [u8; 6])>,
    /// EtherType after any VLAN tags.
    pub ether_type: Option<u16>,
    /// `Some(false)` for IPv4, `Some(true)` for IPv6.
    pub ipv6: Option<bool>,
    /// IP protocol of the IP payload (after IPv6 extension headers).
    pub ip_proto: Option<u8>,
    /// The net layer is an ARP packet (of any hardware or protocol type).
    pub arp: bool,
    /// Source and destination address: IP, or ARP sender and target
    /// protocol address (Ethernet/IPv4 ARP only).
    pub addrs: Option<(IpAddr, IpAddr)>,
    /// UDP or TCP source and destination port.
    pub ports: Option<(u16, u16)>,
    /// See [`payload_range`].
    pub payload: Option<&'a [u8]>,
}

impl<'a> FrameView<'a> {
    pub fn new(frame: &'a [u8]) -> FrameView<'a> {
        let mut v = FrameView {
            len: frame.len(),
            macs: None,
            ether_type: None,
            ipv6: None,
            ip_proto: None,
            arp: false,
            addrs: None,
            ports: None,
            payload: None,
        };
        let Ok(p) = LaxSlicedPacket::from_ethernet(frame) else {
            return v;
        };
        if let Some(LinkSlice::Ethernet2(e)) = &p.link {
            v.macs = Some((e.source(), e.destination()));
        }
        v.ether_type = p.ether_payload().map(|e| e.ether_type.0);
        match &p.net {
            Some(LaxNetSlice::Ipv4(ip)) => {
                let h = ip.header();
                v.ipv6 = Some(false);
                v.addrs = Some((h.source_addr().into(), h.destination_addr().into()));
            }
            Some(LaxNetSlice::Ipv6(ip)) => {
                let h = ip.header();
                v.ipv6 = Some(true);
                v.addrs = Some((h.source_addr().into(), h.destination_addr().into()));
            }
            Some(LaxNetSlice::Arp(arp)) => {
                v.arp = true;
                v.addrs =
                    arp_fields(arp).map(|a| (IpAddr::V4(a.sender_ip), IpAddr::V4(a.target_ip)));
            }
            None => {}
        }
        v.ip_proto = p.ip_payload().map(|ip| ip.ip_number.0);
        v.ports = match &p.transport {
            Some(TransportSlice::Udp(u)) => Some((u.source_port(), u.destination_port())),
            Some(TransportSlice::Tcp(t)) => Some((t.source_port(), t.destination_port())),
            _ => None,
        };
        v.payload = payload_of(&p);
        v
    }
}

/// The payload of a laxly sliced frame: after a UDP, TCP, ICMP or ICMPv6
/// header if one parsed; else the IP payload (after IPv4 options and IPv6
/// extension headers) if IP parsed; else the Ethernet payload (after VLAN
/// tags). Cut to the lengths in the headers where they fit the frame.
fn payload_of<'a>(p: &LaxSlicedPacket<'a>) -> Option<&'a [u8]> {
    match &p.transport {
        Some(TransportSlice::Udp(u)) => return Some(u.payload()),
        Some(TransportSlice::Tcp(t)) => return Some(t.payload()),
        Some(TransportSlice::Icmpv4(i)) => return Some(i.payload()),
        Some(TransportSlice::Icmpv6(i)) => return Some(i.payload()),
        Some(TransportSlice::Igmp(_)) | None => {}
    }
    if let Some(ip) = p.ip_payload() {
        return Some(ip.payload);
    }
    p.ether_payload().map(|e| e.payload)
}

/// Where `part`, a subslice of `frame`, lies within it.
fn range_in(frame: &[u8], part: &[u8]) -> Option<Range<usize>> {
    let start = part.as_ptr().addr().checked_sub(frame.as_ptr().addr())?;
    let end = start.checked_add(part.len())?;
    (end <= frame.len()).then_some(start..end)
}

/// Byte range of the payload within an Ethernet frame, the `payload` of the
/// match language: the UDP or TCP payload, the bytes after an ICMP or ICMPv6
/// header; with no such header (another protocol, an IP fragment, a
/// truncated transport header) the IP payload; with no IP the Ethernet
/// payload (an ARP packet, say). `None` for a frame shorter than an
/// Ethernet header.
pub fn payload_range(frame: &[u8]) -> Option<Range<usize>> {
    let p = LaxSlicedPacket::from_ethernet(frame).ok()?;
    range_in(frame, payload_of(&p)?)
}

/// Where the checksums of a frame are, found before it is changed.
struct ChecksumPlan {
    /// The IPv4 header, options included.
    ipv4_header: Option<Range<usize>>,
    transport: Option<TransportSum>,
}

struct TransportSum {
    /// The transport header and payload the checksum covers.
    range: Range<usize>,
    /// Offset of the checksum field from `range.start`.
    field: usize,
    /// Sum of the pseudo-header (0 for ICMPv4, which has none).
    pseudo: Sum16BitWords,
    /// UDP: a computed 0 is sent as 0xffff (0 means "no checksum").
    no_zero: bool,
    /// UDP over IPv4 with checksum 0: the sender disabled it; keep it so.
    keep_disabled: bool,
}

fn checksum_plan(frame: &[u8]) -> Option<ChecksumPlan> {
    let p = SlicedPacket::from_ethernet(frame).ok()?;
    let (ipv4_header, pseudo_addrs): (Option<Range<usize>>, Sum16BitWords) = match &p.net {
        Some(NetSlice::Ipv4(ip)) => {
            let h = ip.header();
            let sum = Sum16BitWords::new()
                .add_slice(&h.source())
                .add_slice(&h.destination());
            (Some(range_in(frame, h.slice())?), sum)
        }
        Some(NetSlice::Ipv6(ip)) => {
            let h = ip.header();
            let sum = Sum16BitWords::new()
                .add_slice(&h.source())
                .add_slice(&h.destination());
            (None, sum)
        }
        Some(NetSlice::Arp(_)) | None => return None,
    };
    let with_len = |proto: u8, len: usize| -> Option<Sum16BitWords> {
        let len = u32::try_from(len).ok()?;
        Some(
            pseudo_addrs
                .clone()
                .add_slice(&len.to_be_bytes())
                .add_2bytes([0, proto]),
        )
    };
    let transport = match &p.transport {
        Some(TransportSlice::Udp(u)) => Some(TransportSum {
            range: range_in(frame, u.slice())?,
            field: 6,
            pseudo: with_len(17, u.slice().len())?,
            no_zero: true,
            keep_disabled: ipv4_header.is_some() && u.checksum() == 0,
        }),
        Some(TransportSlice::Tcp(t)) => Some(TransportSum {
            range: range_in(frame, t.slice())?,
            field: 16,
            pseudo: with_len(6, t.slice().len())?,
            no_zero: false,
            keep_disabled: false,
        }),
        Some(TransportSlice::Icmpv4(i)) => Some(TransportSum {
            range: range_in(frame, i.slice())?,
            field: 2,
            pseudo: Sum16BitWords::new(),
            no_zero: false,
            keep_disabled: false,
        }),
        Some(TransportSlice::Icmpv6(i)) => Some(TransportSum {
            range: range_in(frame, i.slice())?,
            field: 2,
            pseudo: with_len(58, i.slice().len())?,
            no_zero: false,
            keep_disabled: false,
        }),
        Some(TransportSlice::Igmp(_)) | None => None,
    };
    Some(ChecksumPlan {
        ipv4_header,
        transport,
    })
}

/// Recomputes the IPv4 header checksum and the UDP, TCP, ICMP or ICMPv6
/// checksum (over IPv4 or IPv6) of a frame after bytes were changed. Frames
/// that are not IP, or whose headers or lengths do not fit the frame, are
/// left as they are; so is the transport checksum of an IP fragment and a
/// UDP-over-IPv4 checksum of 0 (disabled by its sender). Returns whether
/// any checksum was recomputed. Never panics.
pub fn fix_checksums(frame: &mut [u8]) -> bool {
    let Some(plan) = checksum_plan(frame) else {
        return false;
    };
    let mut fixed = false;
    if let Some(r) = plan.ipv4_header
        && let Some(header) = frame.get_mut(r)
        && header.len() >= 20
    {
        header[10..12].fill(0);
        // `Sum16BitWords` sums in native byte order: its result is stored
        // as native bytes (etherparse itself returns `.to_be()` of it).
        let sum = Sum16BitWords::new().add_slice(header).ones_complement();
        header[10..12].copy_from_slice(&sum.to_ne_bytes());
        fixed = true;
    }
    if let Some(t) = plan.transport
        && !t.keep_disabled
        && let Some(bytes) = frame.get_mut(t.range)
        && bytes.len() >= t.field + 2
    {
        bytes[t.field..t.field + 2].fill(0);
        let sum = t.pseudo.add_slice(bytes);
        let check = if t.no_zero {
            sum.to_ones_complement_with_no_zero()
        } else {
            sum.ones_complement()
        };
        bytes[t.field..t.field + 2].copy_from_slice(&check.to_ne_bytes());
        fixed = true;
    }
    fixed
}

/// A UDP frame: Ethernet II, then IPv4 or IPv6 per the addresses (TTL or
/// hop limit 64), then UDP with `payload`; lengths and checksums set.
/// Errors when the addresses are of different families or the payload does
/// not fit in one IP packet.
pub fn build_udp(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: SocketAddr,
    dst: SocketAddr,
    payload: &[u8],
) -> Result<Vec<u8>, PacketError> {
    let eth = PacketBuilder::ethernet2(src_mac, dst_mac);
    let too_large = |max, family| PacketError::PayloadTooLarge {
        len: payload.len(),
        max,
        family,
    };
    let builder = match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            if payload.len() > MAX_UDP4_PAYLOAD {
                return Err(too_large(MAX_UDP4_PAYLOAD, "IPv4"));
            }
            eth.ipv4(s.octets(), d.octets(), 64)
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            if payload.len() > MAX_UDP6_PAYLOAD {
                return Err(too_large(MAX_UDP6_PAYLOAD, "IPv6"));
            }
            eth.ipv6(s.octets(), d.octets(), 64)
        }
        (s, d) => return Err(PacketError::MixedFamilies { src: s, dst: d }),
    }
    .udp(src.port(), dst.port());
    let mut frame = Vec::with_capacity(builder.size(payload.len()));
    builder
        .write_to_vec(&mut frame, payload)
        .map_err(|e| PacketError::Build(e.to_string()))?;
    Ok(frame)
}

/// An ARP reply (op 2) telling `target` (`target_mac`, `target_ip`) that
/// `claimed_ip` is at `sender_mac`; Ethernet source `sender_mac`,
/// destination `target_mac`. 42 bytes: the wire pads it, not the frame.
pub fn arp_reply(
    sender_mac: [u8; 6],
    claimed_ip: Ipv4Addr,
    target_mac: [u8; 6],
    target_ip: Ipv4Addr,
) -> Vec<u8> {
    let eth = Ethernet2Header {
        source: sender_mac,
        destination: target_mac,
        ether_type: EtherType::ARP,
    };
    let arp = etherparse::ArpEthIpv4Packet {
        operation: ArpOperation::REPLY,
        sender_mac,
        sender_ipv4: claimed_ip.octets(),
        target_mac,
        target_ipv4: target_ip.octets(),
    };
    let mut frame = Vec::with_capacity(Ethernet2Header::LEN + etherparse::ArpEthIpv4Packet::LEN);
    frame.extend_from_slice(&eth.to_bytes());
    frame.extend_from_slice(&arp.to_bytes());
    frame
}

/// The fields of an Ethernet/IPv4 ARP packet; `None` for any other ARP.
fn arp_fields(arp: &etherparse::ArpPacketSlice) -> Option<ArpFields> {
    if arp.hw_addr_type() != ArpHardwareId::ETHERNET || arp.proto_addr_type() != EtherType::IPV4 {
        return None;
    }
    let mac = |b: &[u8]| <[u8; 6]>::try_from(b).ok();
    let ip = |b: &[u8]| <[u8; 4]>::try_from(b).ok().map(Ipv4Addr::from);
    Some(ArpFields {
        op: arp.operation().0,
        sender_mac: mac(arp.sender_hw_addr())?,
        sender_ip: ip(arp.sender_protocol_addr())?,
        target_mac: mac(arp.target_hw_addr())?,
        target_ip: ip(arp.target_protocol_addr())?,
    })
}

/// Parses an Ethernet frame (VLAN tags allowed) carrying an Ethernet/IPv4
/// ARP packet; `None` for anything else.
pub fn parse_arp(frame: &[u8]) -> Option<ArpFields> {
    match LaxSlicedPacket::from_ethernet(frame).ok()?.net? {
        LaxNetSlice::Arp(arp) => arp_fields(&arp),
        _ => None,
    }
}

/// At most this many characters of bad input are quoted in an error.
const QUOTE_CHARS: usize = 40;

/// `text` for an error message, cut to [`QUOTE_CHARS`] characters.
fn quote(text: &str) -> String {
    match text.char_indices().nth(QUOTE_CHARS) {
        Some((i, _)) => format!("{}...", &text[..i]),
        None => text.to_string(),
    }
}

/// Parses a MAC address written as six two-digit hex bytes separated by
/// `:` ("02:7c:00:00:01:00", either case).
pub fn parse_mac(text: &str) -> Result<[u8; 6], PacketError> {
    let bad = || PacketError::BadMac { text: quote(text) };
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for byte in &mut mac {
        let part = parts.next().ok_or_else(bad)?;
        if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        *byte = u8::from_str_radix(part, 16).map_err(|_| bad())?;
    }
    if parts.next().is_some() {
        return Err(bad());
    }
    Ok(mac)
}

/// Parses a hex byte string, "0xdeadbeef" or "deadbeef" (either case): an
/// even number of digits, at least one byte and at most [`MAX_HEX_BYTES`].
pub fn parse_hex(text: &str) -> Result<Vec<u8>, PacketError> {
    let bad = |reason: String| PacketError::BadHex {
        text: quote(text),
        reason,
    };
    let digits = text
        .strip_prefix("0x")
        .or_else(|| text.strip_prefix("0X"))
        .unwrap_or(text);
    if digits.is_empty() {
        return Err(bad(
            "no hex digits; expected at least one byte, e.g. 0xdeadbeef".into(),
        ));
    }
    if let Some((i, c)) = digits.char_indices().find(|(_, c)| !c.is_ascii_hexdigit()) {
        let at = text.len() - digits.len() + i;
        return Err(bad(format!(
            "`{c}` at byte {at} is not a hex digit (0-9, a-f)"
        )));
    }
    if !digits.len().is_multiple_of(2) {
        return Err(bad(format!(
            "odd number of hex digits ({}); expected two per byte, e.g. 0x0a",
            digits.len()
        )));
    }
    let len = digits.len() / 2;
    if len > MAX_HEX_BYTES {
        return Err(bad(format!(
            "{len} bytes is too long; at most {MAX_HEX_BYTES} bytes"
        )));
    }
    digits
        .as_bytes()
        .chunks_exact(2)
        .map(|pair| {
            let hi = hex_value(pair[0]);
            let lo = hex_value(pair[1]);
            hi.zip(lo).map(|(hi, lo)| hi << 4 | lo)
        })
        .collect::<Option<Vec<u8>>>()
        .ok_or_else(|| bad("not a hex digit".into()))
}

fn hex_value(b: u8) -> Option<u8> {
    char::from(b)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{Icmpv4Slice, Ipv4HeaderSlice, UdpHeaderSlice};

    const A: [u8; 6] = [2, 0x7c, 0, 0, 1, 0];
    const B: [u8; 6] = [2, 0x7c, 0, 0, 2, 0];

    fn udp4(payload: &[u8]) -> Vec<u8> {
        build_udp(
            A,
            B,
            "10.0.1.5:4000".parse().unwrap(),
            "10.0.2.7:4433".parse().unwrap(),
            payload,
        )
        .unwrap()
    }

    fn udp6(payload: &[u8]) -> Vec<u8> {
        build_udp(
            A,
            B,
            "[fd00::1]:4000".parse().unwrap(),
            "[fd00::2]:4433".parse().unwrap(),
            payload,
        )
        .unwrap()
    }

    fn tcp4(payload: &[u8]) -> Vec<u8> {
        let b = PacketBuilder::ethernet2(A, B)
            .ipv4([10, 0, 1, 5], [10, 0, 2, 7], 64)
            .tcp(40000, 80, 1000, 64240);
        let mut f = Vec::new();
        b.write(&mut f, payload).unwrap();
        f
    }

    fn udp_checksum_ok(frame: &[u8]) -> bool {
        let p = SlicedPacket::from_ethernet(frame).unwrap();
        let Some(TransportSlice::Udp(u)) = &p.transport else {
            panic!("not UDP");
        };
        let h = UdpHeaderSlice::from_slice(u.slice()).unwrap().to_header();
        let want = match &p.net {
            Some(NetSlice::Ipv4(ip)) => h
                .calc_checksum_ipv4(&ip.header().to_header(), u.payload())
                .unwrap(),
            Some(NetSlice::Ipv6(ip)) => h
                .calc_checksum_ipv6(&ip.header().to_header(), u.payload())
                .unwrap(),
            _ => panic!("not IP"),
        };
        want == u.checksum()
    }

    fn ipv4_header_ok(frame: &[u8]) -> bool {
        let h = Ipv4HeaderSlice::from_slice(&frame[14..]).unwrap();
        h.to_header().calc_header_checksum() == h.header_checksum()
    }

    #[test]
    fn udp_frames_carry_their_payload() {
        for frame in [udp4(b"hello"), udp6(b"hello")] {
            let r = payload_range(&frame).unwrap();
            assert_eq!(&frame[r], b"hello");
            assert!(udp_checksum_ok(&frame));
        }
        assert_eq!(udp4(b"x").len(), 14 + 20 + 8 + 1);
        assert_eq!(udp6(b"x").len(), 14 + 40 + 8 + 1);
    }

    #[test]
    fn payload_ignores_ethernet_padding() {
        let mut frame = udp4(b"ab");
        frame.resize(60, 0);
        let r = payload_range(&frame).unwrap();
        assert_eq!(&frame[r], b"ab");
    }

    #[test]
    fn payload_of_tcp_icmp_arp_and_short_frames() {
        let frame = tcp4(b"GET /");
        assert_eq!(&frame[payload_range(&frame).unwrap()], b"GET /");

        let mut icmp = Vec::new();
        PacketBuilder::ethernet2(A, B)
            .ipv4([10, 0, 1, 5], [10, 0, 2, 7], 64)
            .icmpv4_echo_request(7, 1)
            .write(&mut icmp, b"ping")
            .unwrap();
        assert_eq!(&icmp[payload_range(&icmp).unwrap()], b"ping");

        let arp = arp_reply(A, Ipv4Addr::new(10, 0, 0, 1), B, Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(payload_range(&arp), Some(14..42));

        assert_eq!(payload_range(&[0u8; 13]), None);
        assert_eq!(payload_range(&[]), None);
    }

    #[test]
    fn fix_checksums_after_a_payload_change() {
        for mut frame in [udp4(b"hello world"), udp6(b"hello world"), tcp4(b"abc")] {
            let r = payload_range(&frame).unwrap();
            frame[r.start] ^= 0xff;
            assert!(fix_checksums(&mut frame));
            assert_eq!(
                crate::emulation::pipeline::offload::l4_checksum_ok(&frame),
                Some(true)
            );
        }
        let mut frame = udp4(b"x");
        frame[14 + 8] = 3; // TTL
        assert!(!ipv4_header_ok(&frame));
        assert!(fix_checksums(&mut frame));
        assert!(ipv4_header_ok(&frame));
        assert!(udp_checksum_ok(&frame));
    }

    #[test]
    fn fix_checksums_of_icmp() {
        let mut icmp = Vec::new();
        PacketBuilder::ethernet2(A, B)
            .ipv4([10, 0, 1, 5], [10, 0, 2, 7], 64)
            .icmpv4_echo_request(7, 1)
            .write(&mut icmp, b"ping")
            .unwrap();
        let good = icmp.clone();
        let last = icmp.len() - 1;
        icmp[last] = b'!';
        assert!(fix_checksums(&mut icmp));
        icmp[last] = b'g';
        // Same bytes as the original, so the recomputed checksum must match.
        assert!(fix_checksums(&mut icmp));
        assert_eq!(icmp, good);
        let s = Icmpv4Slice::from_slice(&icmp[34..]).unwrap();
        assert_eq!(
            s.header().icmp_type.calc_checksum(s.payload()),
            s.checksum()
        );
    }

    #[test]
    fn fix_checksums_of_icmp6() {
        let (src, dst) = (
            [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5],
            [0xfd; 16],
        );
        let mut f = Vec::new();
        PacketBuilder::ethernet2(A, B)
            .ipv6(src, dst, 64)
            .icmpv6_echo_request(1, 1)
            .write(&mut f, b"ping6")
            .unwrap();
        let valid = |f: &[u8]| {
            etherparse::Icmpv6Slice::from_slice(&f[54..])
                .unwrap()
                .is_checksum_valid(src, dst)
        };
        assert!(valid(&f));
        let last = f.len() - 1;
        f[last] ^= 0x55;
        assert!(!valid(&f));
        assert!(fix_checksums(&mut f));
        assert!(valid(&f));
    }

    #[test]
    fn fix_checksums_keeps_a_disabled_udp4_checksum() {
        let mut frame = udp4(b"hi");
        frame[14 + 20 + 6..14 + 20 + 8].fill(0);
        assert!(fix_checksums(&mut frame), "the IPv4 header is still fixed");
        assert_eq!(&frame[14 + 20 + 6..14 + 20 + 8], &[0, 0]);
    }

    #[test]
    fn fix_checksums_leaves_truncated_and_non_ip_frames() {
        let frame = udp4(b"hello world");
        let mut cut = frame[..frame.len() - 3].to_vec();
        let before = cut.clone();
        assert!(!fix_checksums(&mut cut));
        assert_eq!(cut, before);
        let mut arp = arp_reply(A, Ipv4Addr::new(10, 0, 0, 1), B, Ipv4Addr::new(10, 0, 0, 2));
        assert!(!fix_checksums(&mut arp));
        assert!(!fix_checksums(&mut []));
    }

    #[test]
    fn build_udp_errors() {
        let v4: SocketAddr = "10.0.0.1:1".parse().unwrap();
        let v6: SocketAddr = "[fd00::1]:1".parse().unwrap();
        let e = build_udp(A, B, v4, v6, b"").unwrap_err();
        assert_eq!(
            e.to_string(),
            "source 10.0.0.1 and destination fd00::1 are of different address families; expected both IPv4 or both IPv6"
        );
        assert!(build_udp(A, B, v4, v4, &[0; MAX_UDP4_PAYLOAD]).is_ok());
        let e = build_udp(A, B, v4, v4, &[0; MAX_UDP4_PAYLOAD + 1]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "UDP payload of 65508 bytes is too large; at most 65507 bytes fit in one IPv4 packet"
        );
        assert!(build_udp(A, B, v6, v6, &[0; MAX_UDP6_PAYLOAD]).is_ok());
        assert!(build_udp(A, B, v6, v6, &[0; MAX_UDP6_PAYLOAD + 1]).is_err());
    }

    #[test]
    fn arp_reply_round_trips() {
        let claimed = Ipv4Addr::new(10, 0, 0, 1);
        let target = Ipv4Addr::new(10, 0, 0, 2);
        let frame = arp_reply(A, claimed, B, target);
        assert_eq!(frame.len(), 42);
        assert_eq!(&frame[0..6], &B);
        assert_eq!(&frame[6..12], &A);
        assert_eq!(
            parse_arp(&frame),
            Some(ArpFields {
                op: 2,
                sender_mac: A,
                sender_ip: claimed,
                target_mac: B,
                target_ip: target,
            })
        );
        assert_eq!(parse_arp(&frame[..41]), None);
        assert_eq!(parse_arp(&udp4(b"x")), None);
    }

    #[test]
    fn macs() {
        assert_eq!(parse_mac("02:7c:00:00:01:00"), Ok(A));
        assert_eq!(parse_mac("02:7C:00:00:01:0A").unwrap()[5], 0x0a);
        for bad in [
            "",
            "02:7c:00:00:01",
            "02:7c:00:00:01:00:00",
            "2:7c:00:00:01:00",
            "02-7c-00-00-01-00",
            "0g:7c:00:00:01:00",
            "+2:7c:00:00:01:00",
            "02:7c:00:00:01:é",
        ] {
            assert!(parse_mac(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse_mac("02:7c").unwrap_err().to_string(),
            "invalid MAC address `02:7c`; expected six two-digit hex bytes separated by `:`, e.g. 02:7c:00:00:01:00"
        );
    }

    #[test]
    fn hex() {
        assert_eq!(parse_hex("0xdeadBEEF"), Ok(vec![0xde, 0xad, 0xbe, 0xef]));
        assert_eq!(parse_hex("0a"), Ok(vec![0x0a]));
        let msg = |t: &str| parse_hex(t).unwrap_err().to_string();
        assert_eq!(
            msg("0xabc"),
            "invalid hex byte string `0xabc`: odd number of hex digits (3); expected two per byte, e.g. 0x0a"
        );
        assert_eq!(
            msg("0xzz"),
            "invalid hex byte string `0xzz`: `z` at byte 2 is not a hex digit (0-9, a-f)"
        );
        assert_eq!(
            msg("0x"),
            "invalid hex byte string `0x`: no hex digits; expected at least one byte, e.g. 0xdeadbeef"
        );
        assert!(msg("0xé1").contains("`é` at byte 2"));
        assert_eq!(
            parse_hex(&"ab".repeat(MAX_HEX_BYTES)).map(|v| v.len()),
            Ok(MAX_HEX_BYTES)
        );
        let long = msg(&"ab".repeat(MAX_HEX_BYTES + 1));
        assert!(
            long.ends_with("65537 bytes is too long; at most 65536 bytes"),
            "{long}"
        );
        assert!(long.len() < 200, "the input is quoted cut short: {long}");
    }
}
