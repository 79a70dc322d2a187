//! Answer sections encoded with NSD's name compression (its `packet.c`): owner names and the
//! names in NS, CNAME, PTR, MX and SOA data point to the longest suffix written before them;
//! names in other data (SRV and RRSIG targets, RFC 2782 and RFC 4034 §3.1.7) are written
//! whole and, unlike hickory-proto's encoder, never become pointer targets themselves. Suffixes
//! match ignoring letter case, as NSD's domain tree does.
//!
//! An encoded [`Body`] keeps its pointers as fix-ups relative to the question, so one body can
//! follow any question that ends in the same names (the NXDOMAIN templates of
//! [`crate::index`] and [`crate::dnssec::answer`]): writing it patches a few bytes, no name
//! is compressed per query.

use hickory_proto::rr::{Name, RData, Record};
use hickory_proto::serialize::binary::{BinEncodable, BinEncoder, NameEncoding};

/// NSD's largest offset a compression pointer may name (14 bits).
const MAX_POINTER_OFFSET: usize = 0x3FFF;
/// Header and QTYPE/QCLASS: what lies before a body besides the question name.
const FIXED_BEFORE_BODY: usize = 12 + 4;

/// Where a compression pointer points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    /// The suffix of the question name this many wire bytes long (its root byte included).
    Question(usize),
    /// This offset into the body.
    Body(usize),
}

/// Encoded sections whose pointers are resolved when the question's name length is known.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Body {
    bytes: Vec<u8>,
    /// Positions in `bytes` of two-byte pointers, and what each points to.
    fixups: Vec<(usize, Target)>,
}

impl Body {
    /// The encoded sections, after a question whose name is `name_length` wire bytes.
    pub fn resolve(&self, name_length: usize) -> Vec<u8> {
        let mut bytes = self.bytes.clone();
        self.patch(&mut bytes, name_length, 0);
        bytes
    }

    /// Appends the sections to `out`, where the sections after a question whose name is
    /// `name_length` wire bytes begin at `sections_start` (0 when `out` holds only them, the
    /// message length so far when it holds the header and question).
    pub fn write(&self, out: &mut Vec<u8>, name_length: usize, sections_start: usize) {
        let start = out.len();
        out.extend_from_slice(&self.bytes);
        self.patch(&mut out[start..], name_length, start - sections_start);
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Resolves the pointers of the body copied to `bytes`, which starts `base` bytes after
    /// the question.
    fn patch(&self, bytes: &mut [u8], name_length: usize, base: usize) {
        for (position, target) in &self.fixups {
            let offset = match target {
                Target::Question(suffix) => 12 + name_length - suffix,
                Target::Body(offset) => FIXED_BEFORE_BODY + name_length + base + offset,
            };
            let pointer = (0xC000 | offset as u16).to_be_bytes();
            bytes[*position..*position + 2].copy_from_slice(&pointer);
        }
    }
}

/// Encodes records one after another into a [`Body`].
pub struct Encoder {
    body: Body,
    /// Lowercase wire forms of the names written so far, end to end.
    names: Vec<u8>,
    /// Suffixes of those names that can be pointed to: their range in `names`, and where they
    /// were written. A linear search: answers hold a few dozen names, and this is build-time
    /// work (one allocation per encoder, none per name).
    table: Vec<(usize, usize, Target)>,
    /// The longest question name the body may follow (bounds body offsets kept as targets).
    longest_question: usize,
}

impl Encoder {
    /// An encoder for sections after a question named `question` (lowercase wire form):
    /// every suffix of `question` down to `known_from` (a suffix of it: the names the zone
    /// has, NSD's closest encloser and its ancestors) can be pointed to. `longest_question`
    /// is the longest question name the body will follow.
    pub fn new(question: &[u8], known_from: usize, longest_question: usize) -> Encoder {
        let mut table = Vec::with_capacity(32);
        let mut position = known_from;
        while position < question.len() && question[position] != 0 {
            table.push((position, question.len(), Target::Question(question.len() - position)));
            position += 1 + usize::from(question[position]);
        }
        Encoder { body: Body::default(), names: question.to_vec(), table, longest_question }
    }

    /// An encoder for sections after exactly this question (lowercase wire form).
    pub fn for_question(question: &[u8]) -> Encoder {
        Encoder::new(question, 0, question.len())
    }

    /// Appends one record; `None` when hickory-proto cannot encode its data.
    pub fn record(&mut self, record: &Record) -> Option<()> {
        self.name(&record.name);
        let bytes = &mut self.body.bytes;
        bytes.extend_from_slice(&u16::from(record.record_type()).to_be_bytes());
        bytes.extend_from_slice(&u16::from(record.dns_class).to_be_bytes());
        bytes.extend_from_slice(&record.ttl.to_be_bytes());
        let length_at = bytes.len();
        bytes.extend_from_slice(&[0, 0]);
        match &record.data {
            RData::NS(name) => self.name(&name.0),
            RData::CNAME(name) => self.name(&name.0),
            RData::PTR(name) => self.name(&name.0),
            RData::MX(mx) => {
                self.body.bytes.extend_from_slice(&mx.preference.to_be_bytes());
                self.name(&mx.exchange);
            }
            RData::SOA(soa) => {
                self.name(&soa.mname);
                self.name(&soa.rname);
                for number in [soa.serial, soa.refresh as u32, soa.retry as u32, soa.expire as u32, soa.minimum] {
                    self.body.bytes.extend_from_slice(&number.to_be_bytes());
                }
            }
            data => {
                let mut scratch = Vec::new();
                let mut encoder = BinEncoder::new(&mut scratch);
                encoder.set_name_encoding(NameEncoding::Uncompressed);
                data.emit(&mut encoder).ok()?;
                self.body.bytes.extend_from_slice(&scratch);
            }
        }
        let length = u16::try_from(self.body.bytes.len() - length_at - 2).ok()?;
        self.body.bytes[length_at..length_at + 2].copy_from_slice(&length.to_be_bytes());
        Some(())
    }

    pub fn finish(self) -> Body {
        self.body
    }

    /// Writes a name: its labels up to the longest suffix already written, then a pointer.
    fn name(&mut self, name: &Name) {
        let stored = self.names.len();
        for label in name.iter() {
            self.names.push(label.len() as u8);
            self.names.extend(label.iter().map(u8::to_ascii_lowercase));
        }
        self.names.push(0);
        let end = self.names.len();
        let mut position = stored;
        for label in name.iter() {
            let suffix = &self.names[position..end];
            let found = self.table.iter().find(|(start, stop, _)| &self.names[*start..*stop] == suffix);
            if let Some((_, _, target)) = found {
                let at = self.body.bytes.len();
                self.body.bytes.extend_from_slice(&[0xC0, 0]);
                self.body.fixups.push((at, *target));
                return;
            }
            let offset = self.body.bytes.len();
            if FIXED_BEFORE_BODY + self.longest_question + offset <= MAX_POINTER_OFFSET {
                self.table.push((position, end, Target::Body(offset)));
            }
            self.body.bytes.push(label.len() as u8);
            self.body.bytes.extend_from_slice(label);
            position += 1 + label.len();
        }
        self.body.bytes.push(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::rdata::{A, MX, NS, SOA, SRV};

    fn name(text: &str) -> Name {
        Name::from_ascii(text).unwrap()
    }

    #[test]
    fn srv_targets_are_written_whole_and_never_pointed_to() {
        let question = b"\x04_sip\x04_tcp\x09ninhthuan\x03gov\x02vn\x00";
        let mut encoder = Encoder::for_question(question);
        let owner = name("_sip._tcp.ninhthuan.gov.vn.");
        let target = name("hub.ninhthuan.gov.vn.");
        encoder.record(&Record::from_rdata(owner, 60, RData::SRV(SRV::new(0, 1, 5060, target.clone())))).unwrap();
        encoder.record(&Record::from_rdata(name("ninhthuan.gov.vn."), 60, RData::NS(NS(target)))).unwrap();
        let body = encoder.finish().resolve(question.len());
        // The NS data is `hub` and a pointer to the question's `ninhthuan.gov.vn` (offset 22),
        // as NSD writes it, not a pointer to the SRV target.
        assert_eq!(&body[body.len() - 6..], b"\x03hub\xc0\x16");
        assert!(body.windows(22).any(|window| window == b"\x03hub\x09ninhthuan\x03gov\x02vn\x00"));
    }

    #[test]
    fn a_template_body_follows_any_question_in_the_zone() {
        let apex = b"\x09ninhthuan\x03gov\x02vn\x00";
        let mut encoder = Encoder::new(apex, 0, 255);
        let soa = SOA::new(name("hub.ninhthuan.gov.vn."), name("hostmaster.hub.ninhthuan.gov.vn."), 1, 2, 3, 4, 5);
        encoder.record(&Record::from_rdata(name("ninhthuan.gov.vn."), 300, RData::SOA(soa))).unwrap();
        let body = encoder.finish();
        let question = b"\x04nope\x09ninhthuan\x03gov\x02vn\x00";
        let bytes = body.resolve(question.len());
        // Owner: pointer to the apex in the question (offset 12 + 5).
        assert_eq!(&bytes[..2], b"\xc0\x11");
        // mname `hub` then the apex; rname `hostmaster` then a pointer to the mname.
        let rdata = &bytes[12..];
        assert_eq!(&rdata[..6], b"\x03hub\xc0\x11");
        let mname_at = 12 + question.len() + 4 + 12;
        assert_eq!(&rdata[6..19], [b"\x0ahostmaster".as_slice(), &[0xC0, mname_at as u8]].concat());
    }

    #[test]
    fn names_match_whatever_their_case() {
        let question = b"\x03www\x09ninhthuan\x03gov\x02vn\x00";
        let mut encoder = Encoder::for_question(question);
        let record = Record::from_rdata(
            name("WWW.NinhThuan.gov.vn."),
            60,
            RData::MX(MX::new(10, name("Mail.NINHTHUAN.gov.vn."))),
        );
        encoder.record(&record).unwrap();
        encoder.record(&Record::from_rdata(name("mail.ninhthuan.gov.vn."), 60, RData::A(A::new(10, 0, 0, 1)))).unwrap();
        let body = encoder.finish().resolve(question.len());
        assert_eq!(&body[..2], b"\xc0\x0c");
        // The A record's owner points to the MX exchange.
        let exchange = 12 + question.len() + 4 + 12 + 2;
        assert_eq!(&body[body.len() - 16..body.len() - 14], &[0xC0, exchange as u8]);
    }
}
