//! Any filter text and any frame: parsing yields a matcher or one error
//! with a position inside the text, matching never panics, and neither do
//! `payload_range` and `fix_checksums`.
#![no_main]

use std::net::IpAddr;

use libfuzzer_sys::fuzz_target;
use testbed::attack::matcher::Matcher;
use testbed::attack::packet::{fix_checksums, payload_range};

fn resolve(name: &str) -> Option<Vec<IpAddr>> {
    (name == "s-temp").then(|| {
        vec![
            IpAddr::from([10, 0, 1, 5]),
            IpAddr::from([0xfd00, 0, 0, 0, 0, 0, 0, 5]),
        ]
    })
}

fuzz_target!(|data: &[u8]| {
    // The first byte is the length of the filter text; the rest is the frame.
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let (text, frame) = rest.split_at(usize::from(split).min(rest.len()));
    if let Ok(text) = std::str::from_utf8(text) {
        match Matcher::parse(text, &resolve) {
            Ok(m) => {
                assert_eq!(m.source(), text);
                let _ = m.matches(frame);
            }
            Err(e) => {
                assert!(!e.to_string().contains('\n'), "multi-line error: {e}");
                assert!(
                    e.line >= 1 && e.line <= text.split('\n').count(),
                    "line {} outside the text",
                    e.line
                );
            }
        }
    }
    if let Some(r) = payload_range(frame) {
        assert!(r.start <= r.end && r.end <= frame.len());
    }
    let mut copy = frame.to_vec();
    if fix_checksums(&mut copy) {
        assert_eq!(copy.len(), frame.len());
    }
});
