//! Arbitrary bytes as a server certificate checked against TLSA records of every selector
//! and matching type: the DER walk that finds the SPKI must never panic or read out of bounds.

#![no_main]

use libfuzzer_sys::fuzz_target;
use lienthong_mailrelay::dane::Tlsa;

fuzz_target!(|data: &[u8]| {
    for selector in 0..=1 {
        for (matching, length) in [(0, data.len().clamp(1, 64)), (1, 32), (2, 64)] {
            let record = Tlsa { usage: 3, selector, matching, data: data.iter().copied().take(length).collect() };
            let _ = record.matches(data);
        }
    }
});
