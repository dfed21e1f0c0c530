//! Readings and acks from the network never panic the decoder, and whatever
//! decodes re-encodes to exactly the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use testbed::cps::reading::{Ack, Reading};

fuzz_target!(|data: &[u8]| {
    if let Ok(reading) = Reading::decode(data) {
        assert_eq!(reading.encode()[..], *data);
        let _ = reading.describe();
    }
    if let Ok(ack) = Ack::decode(data) {
        assert_eq!(ack.encode()[..], *data);
    }
});
