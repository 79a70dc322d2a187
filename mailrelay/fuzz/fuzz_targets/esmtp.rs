//! Arbitrary `MAIL`/`RCPT` lines into the ESMTP parameter parser: it must never panic, and
//! whatever it accepts must re-encode to xtext that holds no control character and decodes to
//! the same value.

#![no_main]

use libfuzzer_sys::fuzz_target;
use lienthong_mailrelay::esmtp::{EnvelopeId, OriginalRecipient, XText, mail_parameters, rcpt_parameters};

fuzz_target!(|data: &[u8]| {
    if let Ok(parameters) = mail_parameters(data)
        && let Some(id) = parameters.envelope_id
    {
        let wire = id.to_xtext();
        assert!(wire.as_str().bytes().all(|byte| (0x21..=0x7E).contains(&byte)));
        assert_eq!(XText::parse(wire.as_str()).as_ref().and_then(EnvelopeId::from_xtext), Some(id));
    }
    if let Ok(parameters) = rcpt_parameters(data)
        && let Some(original) = parameters.original
    {
        let wire = original.to_parameter();
        assert!(wire.bytes().all(|byte| (0x21..=0x7E).contains(&byte)));
        assert_eq!(OriginalRecipient::from_parameter(&wire), Ok(original));
    }
});
