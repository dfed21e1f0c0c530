//! The attacker's match language and frame helpers on arbitrary input:
//! parsing never panics and errors point inside the text; matching never
//! panics on any bytes or on valid frames cut anywhere; a payload rewrite
//! followed by `fix_checksums` yields a frame whose UDP checksum verifies;
//! `payload_range` finds exactly the payload a frame was built with.

use std::net::{IpAddr, SocketAddr};

use etherparse::{NetSlice, PacketBuilder, SlicedPacket, TransportSlice};
use proptest::prelude::*;
use testbed::attack::matcher::Matcher;
use testbed::attack::packet::{arp_reply, build_udp, fix_checksums, payload_range};

fn resolve(name: &str) -> Option<Vec<IpAddr>> {
    (name == "s-temp").then(|| vec!["10.0.1.5".parse().unwrap(), "fd00::5".parse().unwrap()])
}

/// Words and symbols of the language, to build near-valid filters from.
const TOKENS: &[&str] = &[
    "udp",
    "tcp",
    "icmp",
    "icmp6",
    "ip",
    "ip6",
    "arp",
    "eth",
    "any",
    "and",
    "or",
    "not",
    "&&",
    "||",
    "!",
    "(",
    ")",
    "[",
    "]",
    "src",
    "dst",
    "host",
    "net",
    "node",
    "port",
    "len",
    "payload",
    "contains",
    "ether",
    "proto",
    "==",
    "!=",
    "<",
    "<=",
    ">",
    ">=",
    "=",
    "&",
    "|",
    "53",
    "4433",
    "1000-2000",
    "65536",
    "0",
    "0:2",
    ":",
    "10.0.1.5",
    "fd00::5",
    "10.0.0.0/16",
    "s-temp",
    "s-tmp",
    "0x5442",
    "0x01",
    "0xdeadbeef",
    "0x",
    "0x1",
    "02:7c:00:00:01:00",
    "0x0806",
    "\n",
    " ",
    "é",
];

fn token_text() -> impl Strategy<Value = String> {
    proptest::collection::vec(proptest::sample::select(TOKENS), 0..24).prop_map(|words| {
        words
            .iter()
            .enumerate()
            .map(|(i, w)| {
                if i % 3 == 2 {
                    w.to_string()
                } else {
                    format!("{w} ")
                }
            })
            .collect()
    })
}

/// One of a few valid frames: UDP over IPv4 or IPv6, TCP, ICMP, ARP.
fn frame() -> impl Strategy<Value = Vec<u8>> {
    (0u8..5, proptest::collection::vec(any::<u8>(), 0..64)).prop_map(|(kind, payload)| {
        let (a, b) = ([2, 0x7c, 0, 0, 1, 0], [2, 0x7c, 0, 0, 2, 0]);
        let mut f = Vec::new();
        match kind {
            0 => f = udp(&payload, false),
            1 => f = udp(&payload, true),
            2 => PacketBuilder::ethernet2(a, b)
                .ipv4([10, 0, 1, 5], [10, 0, 2, 7], 64)
                .tcp(40000, 80, 1, 1000)
                .write(&mut f, &payload)
                .unwrap(),
            3 => PacketBuilder::ethernet2(a, b)
                .ipv4([10, 0, 1, 5], [10, 0, 2, 7], 64)
                .icmpv4_echo_request(1, 2)
                .write(&mut f, &payload)
                .unwrap(),
            _ => f = arp_reply(a, [10, 0, 1, 5].into(), b, [10, 0, 2, 7].into()),
        }
        f
    })
}

fn udp(payload: &[u8], v6: bool) -> Vec<u8> {
    let (src, dst): (SocketAddr, SocketAddr) = if v6 {
        (
            "[fd00::5]:4000".parse().unwrap(),
            "[fd00::9]:4433".parse().unwrap(),
        )
    } else {
        (
            "10.0.1.5:4000".parse().unwrap(),
            "10.0.2.7:4433".parse().unwrap(),
        )
    };
    build_udp([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2], src, dst, payload).unwrap()
}

/// Whether the UDP checksum of a frame is what etherparse computes for it.
fn udp_checksum_ok(frame: &[u8]) -> bool {
    let p = SlicedPacket::from_ethernet(frame).unwrap();
    let Some(TransportSlice::Udp(u)) = &p.transport else {
        return false;
    };
    let header = u.to_header();
    let want = match &p.net {
        Some(NetSlice::Ipv4(ip)) => {
            header.calc_checksum_ipv4(&ip.header().to_header(), u.payload())
        }
        Some(NetSlice::Ipv6(ip)) => {
            header.calc_checksum_ipv6(&ip.header().to_header(), u.payload())
        }
        _ => return false,
    };
    want.is_ok_and(|want| want == u.checksum())
}

fn check_error(text: &str) {
    if let Err(e) = Matcher::parse(text, &resolve) {
        let lines = text.split('\n').count();
        assert!(
            e.line >= 1 && e.line <= lines,
            "line {} outside {text:?}",
            e.line
        );
        let width = text
            .split('\n')
            .nth(e.line - 1)
            .map_or(0, |l| l.chars().count());
        assert!(
            e.col >= 1 && e.col <= width + 1,
            "col {} outside {text:?}",
            e.col
        );
        assert!(
            !e.to_string().contains('\n'),
            "multi-line error for {text:?}"
        );
    }
}

proptest! {
    #[test]
    fn parse_never_panics_on_any_text(text in any::<String>()) {
        check_error(&text);
    }

    #[test]
    fn parse_never_panics_on_language_tokens(text in token_text()) {
        check_error(&text);
        if let Ok(m) = Matcher::parse(&text, &resolve) {
            prop_assert_eq!(m.source(), text.as_str());
            let _ = m.matches(&udp(b"TB\x00\x01", false));
        }
    }

    #[test]
    fn matches_never_panics_on_any_bytes(
        text in token_text(),
        bytes in proptest::collection::vec(any::<u8>(), 0..200),
    ) {
        for filter in [text.as_str(), "udp port 4433 and payload[0:2] == 0x5442", "arp or ip6 or payload contains 0x00"] {
            if let Ok(m) = Matcher::parse(filter, &resolve) {
                let _ = m.matches(&bytes);
            }
        }
        let _ = payload_range(&bytes);
        let mut copy = bytes.clone();
        let _ = fix_checksums(&mut copy);
    }

    #[test]
    fn matches_never_panics_on_truncated_frames(frame in frame(), cut in any::<prop::sample::Index>()) {
        let m = Matcher::parse(
            "(udp dst port 4433 and src node s-temp) or tcp port 80 or icmp or arp and not len < 42 or payload[1:2] == 0x0000 or payload contains 0x00",
            &resolve,
        ).unwrap();
        let n = cut.index(frame.len() + 1);
        let _ = m.matches(&frame[..n]);
        let _ = payload_range(&frame[..n]);
        let mut copy = frame[..n].to_vec();
        let _ = fix_checksums(&mut copy);
    }

    #[test]
    fn fix_checksums_after_a_payload_change(
        v6 in any::<bool>(),
        payload in proptest::collection::vec(any::<u8>(), 1..1500),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
    ) {
        let mut frame = udp(&payload, v6);
        prop_assert!(udp_checksum_ok(&frame));
        let range = payload_range(&frame).unwrap();
        for (at, byte) in &edits {
            frame[range.start + at.index(range.len())] = *byte;
        }
        prop_assert!(fix_checksums(&mut frame));
        prop_assert!(udp_checksum_ok(&frame));
    }

    #[test]
    fn payload_range_of_a_built_frame(
        v6 in any::<bool>(),
        payload in proptest::collection::vec(any::<u8>(), 0..1500),
    ) {
        let frame = udp(&payload, v6);
        let range = payload_range(&frame).unwrap();
        prop_assert_eq!(range.end, frame.len());
        prop_assert_eq!(&frame[range], &payload[..]);
    }
}

/// The fuzz seeds (first byte: length of the filter, then the filter, then
/// a frame) are filters that parse and match their frame, so the fuzzer
/// starts from inputs that reach the matching code.
#[test]
fn fuzz_seeds_parse_and_match() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/attack_match");
    let seeds = [
        "udp_port_node",
        "payload_bytes",
        "ip6_not_port",
        "icmp_contains",
        "arp_ether",
        "net_host",
    ];
    for name in seeds {
        let data = std::fs::read(dir.join(name)).unwrap();
        let (&len, rest) = data.split_first().unwrap();
        let (text, frame) = rest.split_at(usize::from(len));
        let text = std::str::from_utf8(text).unwrap();
        let m = Matcher::parse(text, &resolve).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(m.matches(frame), "{name}: {text} does not match its frame");
        let mut copy = frame.to_vec();
        fix_checksums(&mut copy);
        assert_eq!(
            copy, frame,
            "{name}: the seed frame's checksums are already right"
        );
    }
}
