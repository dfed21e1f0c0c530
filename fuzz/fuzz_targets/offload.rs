//! Offload headers and frames from the network never panic the engine; and
//! a well-formed TCP super-frame built from the input segments into frames
//! whose checksums hold and whose payloads reassemble to the original.
#![no_main]

use libfuzzer_sys::fuzz_target;
use testbed::emulation::pipeline::Offload;
use testbed::emulation::pipeline::offload::{
    VNET_HDR_LEN, l4_checksum_ok, segment, tcp_super_frame,
};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        // Raw: a header and a frame exactly as read from a packet socket.
        let Some((hdr, frame)) = rest.split_first_chunk::<VNET_HDR_LEN>() else {
            return;
        };
        let mut o = Offload::decode(hdr);
        let _ = o.wire_len(frame);
        if let Ok(segments) = segment(frame, &o) {
            assert!(!segments.is_empty());
        }
        let mut copy = frame.to_vec();
        let _ = o.finalize_checksum(&mut copy);
        return;
    }
    // Structured: a valid super-frame carrying the rest of the input.
    let Some((params, payload)) = rest.split_first_chunk::<7>() else {
        return;
    };
    let mss = u16::from_le_bytes([params[0], params[1]]).max(1);
    let seq = u32::from_le_bytes([params[2], params[3], params[4], params[5]]);
    let (frame, o) = tcp_super_frame(mode & 2 == 0, seq, params[6], mss, payload);
    let segments = segment(&frame, &o).expect("a valid super-frame segments");
    let l4 = if mode & 2 == 0 { 34 } else { 54 };
    let mut reassembled = Vec::new();
    for s in &segments {
        assert_eq!(l4_checksum_ok(s), Some(true));
        reassembled.extend_from_slice(&s[l4 + 20..]);
    }
    assert_eq!(reassembled, payload);
});
