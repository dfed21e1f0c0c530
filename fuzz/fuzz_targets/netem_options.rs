//! Any bytes given to the netem (and tbf) options decoders yield options or
//! one error, never a panic; and whatever decodes re-encodes to options that
//! decode to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use testbed::emulation::{netem, tbf};

fuzz_target!(|data: &[u8]| {
    match netem::decode_options(data) {
        Ok(options) => {
            let again = netem::decode_options(&netem::encode_options(&options));
            assert_eq!(
                again.as_ref(),
                Ok(&options),
                "re-encoded netem options differ"
            );
        }
        Err(e) => {
            let msg = e.to_string();
            assert!(!msg.contains('\n'), "multi-line error: {msg}");
        }
    }
    if let Ok(options) = tbf::decode_options(data) {
        // A decoded bucket with nonzero fields encodes and reads back exactly.
        if options.check().is_ok() {
            let bytes = tbf::encode_options(&options).expect("checked options encode");
            assert_eq!(tbf::decode_options(&bytes), Ok(options));
        }
    }
});
