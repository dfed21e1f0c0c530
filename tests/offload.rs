//! Offload handling on bytes from the network: property tests of the
//! virtio-net header codec, checksum completion and TCP segmentation. A
//! segment is checked the way a receiver checks it: its own checksums, its
//! lengths, and the payload reassembled in sequence order.

use proptest::prelude::*;
use testbed::emulation::pipeline::Offload;
use testbed::emulation::pipeline::offload::{
    VNET_HDR_LEN, l4_checksum_ok, segment, tcp_super_frame,
};

fn ipv4_header_ok(frame: &[u8]) -> bool {
    let ihl = usize::from(frame[14] & 0x0f) * 4;
    let mut sum = 0u32;
    for c in frame[14..14 + ihl].chunks(2) {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum == 0xffff
}

proptest! {
    #[test]
    fn header_encodes_and_decodes(bytes in any::<[u8; VNET_HDR_LEN]>()) {
        let o = Offload::decode(&bytes);
        prop_assert_eq!(o.encode(), bytes);
    }

    #[test]
    fn segments_reassemble_with_valid_checksums(
        v4 in any::<bool>(),
        seq in any::<u32>(),
        flags in any::<u8>(),
        mss in 1u16..2000,
        payload in proptest::collection::vec(any::<u8>(), 0..9000),
    ) {
        let (frame, offload) = tcp_super_frame(v4, seq, flags, mss, &payload);
        let segments = segment(&frame, &offload).unwrap();
        let mss = usize::from(mss);
        prop_assert_eq!(segments.len(), payload.len().div_ceil(mss).max(1));
        let l4 = if v4 { 34 } else { 54 };
        let mut reassembled = Vec::new();
        for (i, s) in segments.iter().enumerate() {
            prop_assert_eq!(l4_checksum_ok(s), Some(true), "segment {}", i);
            if v4 {
                prop_assert!(ipv4_header_ok(s), "IPv4 header checksum of segment {}", i);
                let total = usize::from(u16::from_be_bytes([s[16], s[17]]));
                prop_assert_eq!(total, s.len() - 14);
            } else {
                let plen = usize::from(u16::from_be_bytes([s[18], s[19]]));
                prop_assert_eq!(plen, s.len() - 54);
            }
            let seg_seq = u32::from_be_bytes(s[l4 + 4..l4 + 8].try_into().unwrap());
            prop_assert_eq!(seg_seq, seq.wrapping_add((i * mss) as u32));
            let f = s[l4 + 13];
            let last = i + 1 == segments.len();
            prop_assert_eq!(f & 0x09 != 0, last && flags & 0x09 != 0, "FIN/PSH on {}", i);
            prop_assert_eq!(f & 0x80 != 0, i == 0 && flags & 0x80 != 0, "CWR on {}", i);
            prop_assert!(s.len() - (l4 + 20) <= mss);
            reassembled.extend_from_slice(&s[l4 + 20..]);
        }
        prop_assert_eq!(reassembled, payload);
        // The bytes a super-frame puts on the wire: every segment in full.
        let wire: usize = segments.iter().map(Vec::len).sum();
        prop_assert_eq!(offload.wire_len(&frame), wire);
    }

    #[test]
    fn pending_checksums_complete_to_valid_ones(
        v4 in any::<bool>(),
        payload in proptest::collection::vec(any::<u8>(), 0..1500),
    ) {
        let (mut frame, mut offload) = tcp_super_frame(v4, 7, 0x18, 1448, &payload);
        offload.gso_type = 0;
        offload.gso_size = 0;
        offload.finalize_checksum(&mut frame).unwrap();
        prop_assert_eq!(l4_checksum_ok(&frame), Some(true));
        prop_assert_eq!(offload, Offload::default());
    }

    #[test]
    fn arbitrary_bytes_never_panic(
        hdr in any::<[u8; VNET_HDR_LEN]>(),
        frame in proptest::collection::vec(any::<u8>(), 0..2000),
    ) {
        let mut o = Offload::decode(&hdr);
        let _ = o.wire_len(&frame);
        if let Ok(segments) = segment(&frame, &o) {
            prop_assert!(!segments.is_empty());
        }
        let mut copy = frame.clone();
        let _ = o.finalize_checksum(&mut copy);
    }
}
