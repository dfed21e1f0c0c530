//! Any bytes given to the topology parser yield a topology or one error with
//! a position inside the text; never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let path = std::path::Path::new("fuzz.toml");
    match testbed::topology::parse_str(text, path) {
        Ok(topo) => {
            // A valid topology always plans.
            let _ = testbed::plan::build(&topo);
        }
        Err(e) => {
            let msg = e.to_string();
            assert!(!msg.contains('\n'), "multi-line error: {msg}");
            if let Some(line) = e.line() {
                assert!(line >= 1 && line <= text.lines().count().max(1) + 1, "line {line} outside the text");
            }
        }
    }
});
