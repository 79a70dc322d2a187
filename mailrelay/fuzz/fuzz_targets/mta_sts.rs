//! Arbitrary bytes as an MTA-STS policy file, a `_mta-sts` TXT record and an HTTPS response:
//! the parsers must never panic, and an accepted policy must keep its bounds.

#![no_main]

use libfuzzer_sys::fuzz_target;
use lienthong_mailrelay::mta_sts::fetch::parse_response;
use lienthong_mailrelay::mta_sts::policy::{MAX_AGE_LIMIT, Mode, parse_policy, parse_record};

fuzz_target!(|data: &[u8]| {
    if let Ok(policy) = parse_policy(data) {
        assert!(policy.max_age <= MAX_AGE_LIMIT);
        assert!(policy.mode == Mode::None || !policy.mx.is_empty());
    }
    let _ = parse_record([data]);
    if let Ok(body) = parse_response(data) {
        assert!(body.len() <= lienthong_mailrelay::mta_sts::fetch::MAX_BODY);
    }
});
