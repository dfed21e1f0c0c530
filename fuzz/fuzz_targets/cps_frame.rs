//! Frames from the network never panic parsing or opening; and a reading
//! sealed with the session keys opens to itself, while the same frame with
//! any one bit flipped is rejected.
#![no_main]

use libfuzzer_sys::fuzz_target;
use testbed::cps::reading::{Ack, Reading};
use testbed::cps::seal::{Frame, FrameKind, SessionKeys, open, seal_reading};

fuzz_target!(|data: &[u8]| {
    let keys = SessionKeys::from_bytes([0x5a; 32], [0xa5; 32]);
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        // Raw: bytes exactly as received.
        let Ok(frame) = Frame::parse(rest) else {
            return;
        };
        let _ = (frame.sender_id(), frame.counter());
        if let Ok(plain) = open(&keys, &frame) {
            match frame.kind {
                FrameKind::Reading => {
                    let _ = Reading::decode(&plain);
                }
                FrameKind::Ack => {
                    let _ = Ack::decode(&plain);
                }
            }
        }
        return;
    }
    // Structured: a reading built from the input, sealed, then tampered with.
    let Some((flip, fields)) = rest.split_first_chunk::<2>() else {
        return;
    };
    let Some(fields) = fields.first_chunk::<{ Reading::LEN }>() else {
        return;
    };
    let mut encoded = *fields;
    encoded[0] = 1;
    encoded[1] = 1 + encoded[1] % 6;
    let Ok(reading) = Reading::decode(&encoded) else {
        return; // a non-finite value
    };
    let mut sealed = seal_reading(&keys, &reading);
    let frame = Frame::parse(&sealed).expect("a sealed frame parses");
    let plain = open(&keys, &frame).expect("a sealed frame opens");
    assert_eq!(Reading::decode(&plain), Ok(reading));
    let bit = usize::from(u16::from_le_bytes(*flip)) % (sealed.len() * 8);
    sealed[bit / 8] ^= 1 << (bit % 8);
    if let Ok(frame) = Frame::parse(&sealed) {
        assert!(
            open(&keys, &frame).is_err(),
            "bit {bit} flipped and accepted"
        );
    }
});
