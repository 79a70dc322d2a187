//! The hot path's view of DNS messages: a query parsed in place (no allocation), and answers
//! written as header + the query's own question bytes + a prepared body.
//!
//! Bodies are encoded once by hickory-proto against a question holding the lowercase name;
//! because the echoed question has the same labels (only letter case may differ), every
//! compression pointer into it stays valid, and the answer's owner names show the case the
//! client asked with.

use hickory_proto::rr::{Name, Record, RecordType};

use crate::compress::{Body, Encoder};
pub use crate::truncate::{Sections, write_limited};

/// Largest UDP answer we send, whatever the client offers (the DNS flag day 2020 value).
pub const MAX_UDP_PAYLOAD: u16 = 1232;

pub const FLAG_QR: u16 = 0x8000;
pub const FLAG_AA: u16 = 0x0400;
pub const FLAG_TC: u16 = 0x0200;
pub const FLAG_RD: u16 = 0x0100;
pub const FLAG_RA: u16 = 0x0080;
pub const FLAG_AD: u16 = 0x0020;
pub const FLAG_CD: u16 = 0x0010;

pub const RCODE_FORMERR: u16 = 1;
pub const RCODE_SERVFAIL: u16 = 2;
pub const RCODE_NXDOMAIN: u16 = 3;
pub const RCODE_NOTIMP: u16 = 4;
pub const RCODE_REFUSED: u16 = 5;
pub const RCODE_NOTAUTH: u16 = 9;
/// BADVERS is 16: 0 in the header, 1 in the OPT's extended rcode.
pub const RCODE_BADVERS: u16 = 16;

/// An answer body ready to follow an echoed question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepared {
    /// AA flag and rcode bits for the header.
    pub flags: u16,
    /// True when the body has optional sections (a positive answer's apex NS, additional
    /// records): a UDP answer that does not fit is then rebuilt without them rather than
    /// truncated ([`write_limited`]).
    pub optional: bool,
    pub answers: u16,
    pub authorities: u16,
    pub additionals: u16,
    pub body: Box<[u8]>,
}

/// A [`Prepared`] answer borrowed from wherever it is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PreparedRef<'a> {
    pub flags: u16,
    pub optional: bool,
    pub answers: u16,
    pub authorities: u16,
    pub additionals: u16,
    pub body: &'a [u8],
}

impl Prepared {
    pub fn borrowed(&self) -> PreparedRef<'_> {
        PreparedRef {
            flags: self.flags,
            optional: self.optional,
            answers: self.answers,
            authorities: self.authorities,
            additionals: self.additionals,
            body: &self.body,
        }
    }
}

/// The EDNS0 part of a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Edns {
    pub payload: u16,
    pub version: u8,
    pub dnssec_ok: bool,
}

/// A query, borrowed from the packet.
#[derive(Debug, Clone)]
pub struct Query<'a> {
    pub id: u16,
    pub flags: u16,
    /// QNAME, QTYPE and QCLASS as received.
    pub question: &'a [u8],
    /// Wire length of QNAME.
    pub name_length: usize,
    pub qtype: u16,
    pub qclass: u16,
    pub edns: Option<Edns>,
    /// For IXFR: the serial of the client's SOA in the authority section.
    pub ixfr_serial: Option<u32>,
    /// Lowercase QNAME in wire form (first `name_length` bytes).
    pub lower: [u8; 255],
}

/// Why a packet could not be read as a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformed {
    /// Not worth an answer (shorter than a header, or itself a response).
    Drop,
    /// Answer FORMERR with this id and flags (and the question, when it was readable).
    FormatError { id: u16, flags: u16, question_end: Option<usize> },
    /// A well-formed message with an opcode other than QUERY.
    OtherOpcode { id: u16, flags: u16, question_end: Option<usize> },
}

impl<'a> Query<'a> {
    /// Reads a standard query. Anything unusual is reported, never panics.
    pub fn parse(packet: &'a [u8]) -> Result<Query<'a>, Malformed> {
        if packet.len() < 12 {
            return Err(Malformed::Drop);
        }
        let id = u16::from_be_bytes([packet[0], packet[1]]);
        let flags = u16::from_be_bytes([packet[2], packet[3]]);
        if flags & FLAG_QR != 0 {
            return Err(Malformed::Drop);
        }
        let count = |at: usize| u16::from_be_bytes([packet[at], packet[at + 1]]);
        let (questions, answers, authorities, additionals) = (count(4), count(6), count(8), count(10));
        let mut lower = [0u8; 255];
        let parsed_question = if questions == 1 { read_question(packet, &mut lower) } else { None };
        let question_end = parsed_question.map(|(end, _)| end);
        let opcode = (flags >> 11) & 0xF;
        if opcode != 0 {
            return Err(Malformed::OtherOpcode { id, flags, question_end });
        }
        // NSD clears every flag when the question count is not one, and keeps RD otherwise.
        let format_flags = if questions == 1 { flags } else { 0 };
        let format_error = Malformed::FormatError { id, flags: format_flags, question_end };
        let Some((end, name_length)) = parsed_question else { return Err(format_error) };
        let qtype = u16::from_be_bytes([packet[end - 4], packet[end - 3]]);
        // Only IXFR may carry authority records: the client's SOA (RFC 1995), at most 64 as
        // NSD allows.
        let is_ixfr = qtype == u16::from(RecordType::IXFR);
        if answers != 0 || (authorities != 0 && !is_ixfr) || authorities > 64 {
            return Err(format_error);
        }
        let mut position = end;
        let mut ixfr_serial = None;
        for _ in 0..authorities {
            let (record_type, _, _, rdata_start, rdata_end) = read_record(packet, position).ok_or(format_error)?;
            if record_type == u16::from(RecordType::SOA) && ixfr_serial.is_none() {
                ixfr_serial = soa_serial(packet, rdata_start, rdata_end);
            }
            position = rdata_end;
        }
        let mut edns = None;
        for _ in 0..additionals {
            let (record_type, class, ttl, rdata_start, rdata_end) =
                read_record(packet, position).ok_or(format_error)?;
            if record_type == u16::from(RecordType::OPT) {
                if edns.is_some() || packet[position] != 0 {
                    return Err(format_error);
                }
                edns = Some(Edns { payload: class, version: (ttl >> 16) as u8, dnssec_ok: ttl & 0x8000 != 0 });
            }
            let _ = rdata_start;
            position = rdata_end;
        }
        let question = &packet[12..end];
        let qclass = u16::from_be_bytes([packet[end - 2], packet[end - 1]]);
        Ok(Query { id, flags, question, name_length, qtype, qclass, edns, ixfr_serial, lower })
    }

    /// The lowercase QNAME in wire form.
    pub fn lower_name(&self) -> &[u8] {
        &self.lower[..self.name_length]
    }

    /// The lowercase QNAME as a hickory name.
    pub fn name(&self) -> Option<Name> {
        Name::from_labels(labels(self.lower_name())).ok().map(|mut name| {
            name.set_fqdn(true);
            name
        })
    }

    /// The largest answer this query may get over UDP.
    pub fn udp_limit(&self) -> usize {
        match self.edns {
            None => 512,
            Some(edns) => usize::from(edns.payload.clamp(512, MAX_UDP_PAYLOAD)),
        }
    }
}

/// The labels of a wire-form name.
pub fn labels(wire: &[u8]) -> Vec<&[u8]> {
    let mut labels = Vec::new();
    let mut position = 0;
    while position < wire.len() && wire[position] != 0 {
        let length = usize::from(wire[position]);
        labels.push(&wire[position + 1..position + 1 + length]);
        position += 1 + length;
    }
    labels
}

/// A wire-form name with ASCII letters lowercased (label lengths untouched).
pub fn lowercase(wire: &[u8]) -> Vec<u8> {
    let mut lower = wire.to_vec();
    let mut position = 0;
    while position < lower.len() && lower[position] != 0 {
        let length = usize::from(lower[position]);
        let end = (position + 1 + length).min(lower.len());
        lower[position + 1..end].make_ascii_lowercase();
        position = end;
    }
    lower
}

/// Reads QNAME/QTYPE/QCLASS at offset 12 into `lower`; returns (end, name length).
/// Compression pointers are not accepted in a question (no client sends them).
/// The lowercase QNAME of `packet` (wire form) into `lower`, as [`Query::lower_name`] gives
/// it; its length, or `None` when the packet has no readable question.
pub fn question_name(packet: &[u8], lower: &mut [u8; 255]) -> Option<usize> {
    if packet.len() < 12 {
        return None;
    }
    read_question(packet, lower).map(|(_, length)| length)
}

fn read_question(packet: &[u8], lower: &mut [u8; 255]) -> Option<(usize, usize)> {
    let mut position = 12;
    let mut length = 0;
    loop {
        let label = usize::from(*packet.get(position)?);
        if label & 0xC0 != 0 {
            return None;
        }
        if length + label + 1 > 255 {
            return None;
        }
        let bytes = packet.get(position..position + label + 1)?;
        for (index, byte) in bytes.iter().enumerate() {
            lower[length + index] = if index == 0 { *byte } else { byte.to_ascii_lowercase() };
        }
        length += label + 1;
        position += label + 1;
        if label == 0 {
            break;
        }
    }
    let end = position + 4;
    if end > packet.len() {
        return None;
    }
    Some((end, length))
}

/// The serial of an SOA whose RDATA is `packet[start..end]` (two names, then five numbers).
fn soa_serial(packet: &[u8], start: usize, end: usize) -> Option<u32> {
    let mut position = start;
    for _ in 0..2 {
        loop {
            let label = usize::from(*packet.get(position)?);
            if label & 0xC0 == 0xC0 {
                position += 2;
                break;
            }
            position += label + 1;
            if label == 0 {
                break;
            }
        }
    }
    let serial = packet.get(position..position + 4)?;
    (position + 20 <= end).then(|| u32::from_be_bytes([serial[0], serial[1], serial[2], serial[3]]))
}

/// Skips one resource record at `position`: (type, class, ttl, rdata start, rdata end).
fn read_record(packet: &[u8], mut position: usize) -> Option<(u16, u16, u32, usize, usize)> {
    loop {
        let label = usize::from(*packet.get(position)?);
        if label & 0xC0 == 0xC0 {
            position += 2;
            break;
        }
        if label & 0xC0 != 0 {
            return None;
        }
        position += label + 1;
        if label == 0 {
            break;
        }
    }
    let fixed = packet.get(position..position + 10)?;
    let record_type = u16::from_be_bytes([fixed[0], fixed[1]]);
    let class = u16::from_be_bytes([fixed[2], fixed[3]]);
    let ttl = u32::from_be_bytes([fixed[4], fixed[5], fixed[6], fixed[7]]);
    let length = usize::from(u16::from_be_bytes([fixed[8], fixed[9]]));
    let start = position + 10;
    let end = start + length;
    if end > packet.len() {
        return None;
    }
    Some((record_type, class, ttl, start, end))
}

/// Encodes sections after a question of `qname` (lowercase), compressed as NSD compresses ([`crate::compress`]). `None` when a record cannot
/// be encoded or the sections pass 64 KiB.
pub fn prepare(
    qname: &Name,
    flags: u16,
    answers: &[Record],
    authorities: &[Record],
    additionals: &[Record],
) -> Option<Prepared> {
    let question = crate::index::wire_name(qname);
    let mut encoder = Encoder::for_question(&question);
    for record in answers.iter().chain(authorities).chain(additionals) {
        encoder.record(record)?;
    }
    let body = encoder.finish();
    if 12 + question.len() + 4 + body.len() > usize::from(u16::MAX) {
        return None;
    }
    Some(Prepared {
        flags,
        optional: !additionals.is_empty(),
        answers: u16::try_from(answers.len()).ok()?,
        authorities: u16::try_from(authorities.len()).ok()?,
        additionals: u16::try_from(additionals.len()).ok()?,
        body: body.resolve(question.len()).into(),
    })
}

/// Wire length of a name (labels, length bytes and the root).
pub fn wire_length(name: &Name) -> usize {
    name.iter().map(|label| label.len() + 1).sum::<usize>() + 1
}

/// The OPT record we answer with: our payload size, version 0, the query's DO bit copied
/// (RFC 3225), no options.
pub(crate) fn push_opt(out: &mut Vec<u8>, extended_rcode: u8, dnssec_ok: bool) {
    push_opt_with(out, extended_rcode, dnssec_ok, None);
}

/// OPT with an Extended DNS Error (RFC 8914) info code, as NSD adds to its refusals.
fn push_opt_with(out: &mut Vec<u8>, extended_rcode: u8, dnssec_ok: bool, extended_error: Option<u16>) {
    out.extend_from_slice(&[0, 0, 41]);
    out.extend_from_slice(&MAX_UDP_PAYLOAD.to_be_bytes());
    out.extend_from_slice(&[extended_rcode, 0, if dnssec_ok { 0x80 } else { 0 }, 0]);
    match extended_error {
        None => out.extend_from_slice(&[0, 0]),
        Some(code) => {
            out.extend_from_slice(&6u16.to_be_bytes());
            out.extend_from_slice(&EDE_OPTION.to_be_bytes());
            out.extend_from_slice(&2u16.to_be_bytes());
            out.extend_from_slice(&code.to_be_bytes());
        }
    }
}

/// The EDNS option code of Extended DNS Errors.
const EDE_OPTION: u16 = 15;
/// Extended DNS Error info codes NSD sends.
pub const EDE_PROHIBITED: u16 = 18;
pub const EDE_NOT_AUTHORITATIVE: u16 = 20;
pub const EDE_NOT_SUPPORTED: u16 = 21;

pub(crate) fn dnssec_ok(query: &Query<'_>) -> bool {
    query.edns.is_some_and(|edns| edns.dnssec_ok)
}

pub(crate) fn push_header(out: &mut Vec<u8>, id: u16, flags: u16, counts: [u16; 4]) {
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&flags.to_be_bytes());
    for count in counts {
        out.extend_from_slice(&count.to_be_bytes());
    }
}

/// Response flags from query flags: QR, the query's opcode and RD copied. CD is not: an
/// authoritative answer clears it, as NSD does; the forwarder copies it itself.
pub fn response_flags(query_flags: u16, extra: u16) -> u16 {
    FLAG_QR | (query_flags & (0x7800 | FLAG_RD)) | extra
}

/// Whether an answer went out as prepared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    Whole,
    /// Over the size limit: the caller rebuilds it with [`write_limited`].
    TooLarge,
}

/// Writes a full answer into `out` if it fits in `limit` (and, when it has optional
/// sections, in `optional_limit`).
pub fn write_answer(
    out: &mut Vec<u8>,
    query: &Query<'_>,
    prepared: &Prepared,
    extra_flags: u16,
    limit: usize,
    optional_limit: usize,
) -> Written {
    write_prepared(out, query, prepared.borrowed(), extra_flags, limit, optional_limit)
}

/// [`write_answer`] from a [`PreparedRef`] (the hot path's answers live in one arena).
pub fn write_prepared(
    out: &mut Vec<u8>,
    query: &Query<'_>,
    prepared: PreparedRef<'_>,
    extra_flags: u16,
    limit: usize,
    optional_limit: usize,
) -> Written {
    out.clear();
    let edns = query.edns.is_some();
    let total = 12 + query.question.len() + prepared.body.len() + if edns { 11 } else { 0 };
    if total > limit || (prepared.optional && total > optional_limit) {
        return Written::TooLarge;
    }
    let flags = response_flags(query.flags, prepared.flags | extra_flags);
    let additionals = prepared.additionals + u16::from(edns);
    push_header(out, query.id, flags, [1, prepared.answers, prepared.authorities, additionals]);
    out.extend_from_slice(query.question);
    out.extend_from_slice(prepared.body);
    if edns {
        push_opt(out, 0, dnssec_ok(query));
    }
    Written::Whole
}

/// NXDOMAIN with the zone's SOA: `soa` is the SOA record encoded to follow any question in
/// the zone ([`Body`]).
pub fn write_name_error(out: &mut Vec<u8>, query: &Query<'_>, soa: &Body, extra_flags: u16, limit: usize) -> Written {
    out.clear();
    let edns = query.edns.is_some();
    let total = 12 + query.question.len() + soa.len() + if edns { 11 } else { 0 };
    if total > limit {
        return Written::TooLarge;
    }
    let flags = response_flags(query.flags, FLAG_AA | RCODE_NXDOMAIN | extra_flags);
    push_header(out, query.id, flags, [1, 0, 1, u16::from(edns)]);
    out.extend_from_slice(query.question);
    let sections_start = out.len();
    soa.write(out, query.name_length, sections_start);
    if edns {
        push_opt(out, 0, dnssec_ok(query));
    }
    Written::Whole
}

/// An answer with only a header, the question (when given) and OPT (when `edns` is given:
/// the query's DO bit): REFUSED, NOTAUTH, SERVFAIL, BADVERS. Flags as NSD sets them after
/// reading a query: QR, the opcode and RD.
pub fn write_error(
    out: &mut Vec<u8>,
    id: u16,
    query_flags: u16,
    question: Option<&[u8]>,
    rcode: u16,
    edns: Option<Edns>,
) {
    write_refusal(out, id, response_flags(query_flags, rcode & 0xF), question, rcode, edns, None);
}

/// [`write_error`] with the header flags given whole and an optional Extended DNS Error.
pub fn write_refusal(
    out: &mut Vec<u8>,
    id: u16,
    flags: u16,
    question: Option<&[u8]>,
    rcode: u16,
    edns: Option<Edns>,
    extended_error: Option<u16>,
) {
    out.clear();
    push_header(out, id, flags, [u16::from(question.is_some()), 0, 0, u16::from(edns.is_some())]);
    if let Some(question) = question {
        out.extend_from_slice(question);
    }
    if let Some(edns) = edns {
        push_opt_with(out, (rcode >> 4) as u8, edns.dnssec_ok, extended_error);
    }
}

/// A header-only error for a message that was not read as a query, as NSD's `query_error`:
/// FORMERR keeps only RD and the opcode of the query's flags; other rcodes (NOTIMP for an
/// unknown opcode) keep every flag but AD. No question, no OPT.
pub fn write_header_error(out: &mut Vec<u8>, id: u16, query_flags: u16, rcode: u16) {
    out.clear();
    let kept = if rcode == RCODE_FORMERR { query_flags & (0x7800 | FLAG_RD) } else { query_flags & !(FLAG_AD | 0xF) };
    push_header(out, id, FLAG_QR | kept | (rcode & 0xF), [0, 0, 0, 0]);
}

/// Turns an answer in `out` into an empty TC=1 answer (header and question only): the
/// rate limiter's "slip", which sends a real client to TCP.
pub fn slip(out: &mut Vec<u8>) {
    if out.len() < 12 {
        return;
    }
    let mut end = 12;
    if out[4..6] == [0, 1] {
        while end < out.len() && out[end] != 0 && out[end] & 0xC0 == 0 {
            end += 1 + usize::from(out[end]);
        }
        end = (end + 5).min(out.len());
    }
    out.truncate(end);
    out[2] |= (FLAG_TC >> 8) as u8;
    out[6..12].fill(0);
}

/// The rcode of an answer in wire form (0 for anything shorter than a header).
pub fn rcode_of(answer: &[u8]) -> u16 {
    answer.get(3).map_or(0, |byte| u16::from(byte & 0x0F))
}
