//! Answers that do not fit in a UDP message, cut as NSD cuts them (its `encode_answer` and
//! `packet_encode_rrset`): whole RRsets only (with their RRSIGs, for a DO query), required ones first, TC only when a required
//! RRset is left out. This is the rare path; it re-encodes RRset by RRset.

use hickory_proto::dnssec::rdata::DNSSECRData;
use hickory_proto::rr::{Name, RData, Record, RecordType};

use crate::compress::{Body, Encoder};
use crate::wire::{FLAG_TC, Query, dnssec_ok, push_header, push_opt, response_flags};

/// The sections of an answer, for [`write_limited`].
pub struct Sections<'a> {
    pub answers: &'a [Record],
    pub authorities: &'a [Record],
    /// The authority records after the leading NSEC3 proofs (and their RRSIGs) are optional:
    /// a positive answer's apex NS set.
    pub authority_optional: bool,
    pub additionals: &'a [Record],
}

/// Writes an answer that did not fit, as NSD does: RRsets are added in order; an answer or
/// required authority RRset that does not fit in `limit` sets TC and ends the answer (the
/// RRsets before it stay); optional ones (a positive answer's NS, additional records) are
/// left out once the answer would pass `optional_limit`, without TC. Returns true when TC
/// was set. `qname` is the lowercase question name.
#[allow(clippy::too_many_arguments)]
pub fn write_limited(
    out: &mut Vec<u8>,
    query: &Query<'_>,
    qname: &Name,
    flags: u16,
    sections: &Sections<'_>,
    limit: usize,
    optional_limit: usize,
) -> bool {
    let edns_length = if query.edns.is_some() { 11 } else { 0 };
    let question = crate::index::wire_name(qname);
    let encode = |records: &[&Record]| -> Option<Body> {
        let mut encoder = Encoder::for_question(&question);
        for record in records {
            encoder.record(record)?;
        }
        Some(encoder.finish())
    };
    let mut chosen: Vec<&Record> = Vec::new();
    let mut counts = [0u16; 3];
    let mut truncated = false;
    // NSEC3 proofs ahead of an optional apex NS set are required all the same.
    let required = if sections.authority_optional {
        sections.authorities.iter().take_while(|record| is_nsec3_or_its_signature(record)).count()
    } else {
        sections.authorities.len()
    };
    let (required, optional) = sections.authorities.split_at(required);
    let groups: [(&[Record], usize, bool); 4] =
        [(sections.answers, 0, false), (required, 1, false), (optional, 1, true), (sections.additionals, 2, true)];
    'sections: for (records, section, optional) in groups {
        for rrset in rrsets(records) {
            let mut trial = chosen.clone();
            trial.extend(rrset);
            let length = encode(&trial).map_or(usize::MAX, |body| 12 + query.question.len() + body.len()) + edns_length;
            if optional && length > optional_limit.min(limit) {
                break 'sections;
            }
            if length > limit {
                truncated = true;
                break 'sections;
            }
            chosen = trial;
            counts[section] += u16::try_from(rrset.len()).unwrap_or(u16::MAX);
        }
    }
    out.clear();
    let Some(body) = encode(&chosen) else { return truncated };
    let tc = if truncated { FLAG_TC } else { 0 };
    let header_flags = response_flags(query.flags, flags | tc);
    push_header(out, query.id, header_flags, [1, counts[0], counts[1], counts[2] + u16::from(edns_length > 0)]);
    out.extend_from_slice(query.question);
    let sections_start = out.len();
    body.write(out, query.name_length, sections_start);
    if query.edns.is_some() {
        push_opt(out, 0, dnssec_ok(query));
    }
    truncated
}

fn is_nsec3_or_its_signature(record: &Record) -> bool {
    match &record.data {
        RData::DNSSEC(DNSSECRData::NSEC3(_)) => true,
        RData::DNSSEC(DNSSECRData::RRSIG(signature)) => signature.input().type_covered == RecordType::NSEC3,
        _ => false,
    }
}

/// The units an answer is cut in, as NSD's `packet_encode_rrset`: consecutive records of one
/// owner and type, with the RRSIGs over them that follow (an RRset goes with its signatures
/// or not at all).
fn rrsets(records: &[Record]) -> impl Iterator<Item = &[Record]> {
    let mut rest = records;
    std::iter::from_fn(move || {
        let first = rest.first()?;
        let same_set = |record: &Record| record.name == first.name && record.record_type() == first.record_type();
        let mut end = rest.iter().take_while(|record| same_set(record)).count();
        if first.record_type() != RecordType::RRSIG {
            end += rest[end..]
                .iter()
                .take_while(|record| {
                    record.name == first.name
                        && matches!(&record.data, RData::DNSSEC(DNSSECRData::RRSIG(signature))
                            if signature.input().type_covered == first.record_type())
                })
                .count();
        }
        let (unit, remaining) = rest.split_at(end);
        rest = remaining;
        Some(unit)
    })
}
