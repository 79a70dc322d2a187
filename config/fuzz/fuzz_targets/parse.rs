//! Any text given as a config file yields a config or positioned errors, never a panic.
//! Run: `cd config && RUSTC_BOOTSTRAP=1 cargo fuzz run parse -- -max_total_time=60`
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = lienthong_config::parse(text, "fuzz.toml", std::path::Path::new("/nonexistent"));
    }
});
