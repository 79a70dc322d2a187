//! The sans-IO answering core: one packet and the client's address in, one action out.
//! No sockets, no clock, no locks: drivers call [`handle`] with the current catalog.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use hickory_proto::rr::rdata::TXT;
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};

use crate::catalog::{self, Catalog};
use crate::index::{Lookup, needs_general_path};
use crate::wire::{
    self, EDE_NOT_AUTHORITATIVE, EDE_NOT_SUPPORTED, EDE_PROHIBITED, FLAG_AA, FLAG_AD, FLAG_QR, FLAG_RA, Malformed,
    Query, RCODE_BADVERS, RCODE_FORMERR, RCODE_NOTAUTH, RCODE_NOTIMP, RCODE_NXDOMAIN, RCODE_REFUSED, RCODE_SERVFAIL,
    Sections, Written,
};

const CLASS_IN: u16 = 1;
const CLASS_CHAOS: u16 = 3;
const CLASS_ANY: u16 = 255;
/// NSD's minimal response size for IPv6 (`IPV6_MINIMAL_RESPONSE_SIZE`).
const IPV6_MINIMAL_RESPONSE: usize = 1220;
use crate::zone::{ResponseCodeValue, Zone};

/// How the query arrived: UDP answers are limited in size, TCP ones are not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// What the driver must do after [`handle`].
#[derive(Debug)]
pub enum Action {
    /// Send `out`.
    Reply,
    /// Send nothing.
    Drop,
    /// Resolve through these upstreams, then answer with [`crate::forward::write_forwarded`].
    Forward(ForwardRequest),
    /// Stream the zone (TCP only, client allowed): AXFR, or IXFR from the client's serial
    /// (incremental when the zone's history reaches back to it, else the full zone).
    Transfer(Arc<Zone>, Option<u32>),
}

/// A query to resolve upstream, owning what the answer needs.
#[derive(Debug, Clone)]
pub struct ForwardRequest {
    pub packet: Vec<u8>,
    pub name: Name,
    pub qtype: RecordType,
    pub upstreams: Arc<[SocketAddr]>,
    pub transport: Transport,
    /// Validate the answer (DNSSEC) before it is cached and sent.
    pub validator: Option<Arc<crate::dnssec::validate::Validator>>,
}

/// The result of [`handle`], with what metrics need.
#[derive(Debug)]
pub struct Outcome {
    pub action: Action,
    pub qtype: u16,
    /// The rcode sent (meaningful for `Reply`).
    pub rcode: u16,
    pub truncated: bool,
}

impl Outcome {
    fn reply(qtype: u16, rcode: u16, truncated: bool) -> Outcome {
        Outcome { action: Action::Reply, qtype, rcode, truncated }
    }
}

/// Answers one packet from `client`. Writes the answer (if any) into `out`. Every case
/// answers as NSD 4 does (read from its `query.c`), so secondaries and resolvers see the same
/// server whichever of the two they ask.
pub fn handle(catalog: &Catalog, packet: &[u8], client: IpAddr, transport: Transport, out: &mut Vec<u8>) -> Outcome {
    let query = match Query::parse(packet) {
        Ok(query) => query,
        Err(Malformed::Drop) => return Outcome { action: Action::Drop, qtype: 0, rcode: 0, truncated: false },
        Err(Malformed::FormatError { id, flags, .. }) => {
            wire::write_header_error(out, id, flags, RCODE_FORMERR);
            return Outcome::reply(0, RCODE_FORMERR, false);
        }
        Err(Malformed::OtherOpcode { id, flags, question_end }) => {
            let rcode = if (flags >> 11) & 0xF == 4 {
                notify_rcode(catalog, packet, client, question_end)
            } else {
                RCODE_NOTIMP
            };
            wire::write_header_error(out, id, flags, rcode);
            return Outcome::reply(0, rcode, false);
        }
    };
    let qtype = query.qtype;
    let question = Some(query.question);
    if let Some(edns) = query.edns
        && edns.version > 0
    {
        // BADVERS before the flags are prepared: every query flag but AD stays; NSD does not
        // read the flags of an OPT of unknown version, so DO is not copied.
        let flags = FLAG_QR | (query.flags & !(FLAG_AD | 0xF));
        let edns = Some(wire::Edns { dnssec_ok: false, ..edns });
        wire::write_refusal(out, query.id, flags, question, RCODE_BADVERS, edns, None);
        return Outcome::reply(qtype, RCODE_BADVERS, false);
    }
    let refuse = |out: &mut Vec<u8>, question: Option<&[u8]>, extended_error: u16| {
        let flags = wire::response_flags(query.flags, RCODE_REFUSED);
        wire::write_refusal(out, query.id, flags, question, RCODE_REFUSED, query.edns, Some(extended_error));
        Outcome::reply(qtype, RCODE_REFUSED, false)
    };
    match query.qclass {
        CLASS_IN | CLASS_ANY => {}
        CLASS_CHAOS => return chaos(catalog, &query, out),
        _ => return refuse(out, None, EDE_NOT_SUPPORTED),
    }
    let error = |out: &mut Vec<u8>, rcode: u16| {
        wire::write_error(out, query.id, query.flags, question, rcode, query.edns);
        Outcome::reply(qtype, rcode, false)
    };
    let limit = match transport {
        Transport::Udp => query.udp_limit(),
        Transport::Tcp => usize::from(u16::MAX),
    };
    // NSD leaves out optional sections once a UDP answer passes its minimal size, which is
    // smaller for IPv6.
    let optional_limit = match (transport, client) {
        (Transport::Udp, IpAddr::V6(_)) => limit.min(IPV6_MINIMAL_RESPONSE),
        _ => limit,
    };
    let view = catalog.view_for(client);
    let recursion = if catalog.policy.recursion_available(client) { FLAG_RA } else { 0 };
    if qtype == u16::from(RecordType::AXFR) || qtype == u16::from(RecordType::IXFR) {
        let Some(name) = query.name() else { return error(out, RCODE_FORMERR) };
        let Some(zone) = view.zones.iter().find(|zone| zone.apex == name) else { return error(out, RCODE_NOTAUTH) };
        if !catalog::may_transfer(zone, client) {
            return error(out, RCODE_REFUSED);
        }
        let ixfr = qtype == u16::from(RecordType::IXFR);
        if transport == Transport::Udp {
            if !ixfr {
                return error(out, RCODE_REFUSED);
            }
            // RFC 1995 §2: over UDP, an IXFR that needs more than one message gets the
            // current SOA alone, and the client comes back over TCP.
            let soa = [zone.soa.clone()];
            let Some(prepared) = wire::prepare(&name, FLAG_AA, &soa, &[], &[]) else {
                return error(out, RCODE_SERVFAIL);
            };
            let _ = wire::write_answer(out, &query, &prepared, 0, limit, limit);
            return Outcome::reply(qtype, 0, false);
        }
        let client_serial = if ixfr { query.ixfr_serial } else { None };
        if ixfr && client_serial.is_none() {
            return error(out, RCODE_FORMERR);
        }
        return Outcome { action: Action::Transfer(zone.clone(), client_serial), qtype, rcode: 0, truncated: false };
    }
    // DO queries for names in a signed zone: the same answers with their RRSIGs and NSEC3
    // proofs, through the same size limits (and, in the driver, the same rate limiter).
    if query.qclass == CLASS_IN
        && let Some(outcome) =
            crate::dnssec::answer(&view.zones, &view.signed, &query, recursion, limit, optional_limit, out)
    {
        return outcome;
    }
    if !needs_general_path(qtype) && query.qclass == CLASS_IN {
        let written = match view.index.lookup(query.lower_name()) {
            Lookup::Exact(entry) => {
                let prepared = entry.prepared(qtype);
                let written = wire::write_prepared(out, &query, prepared, recursion, limit, optional_limit);
                (written, prepared.flags & 0xF)
            }
            Lookup::NameError(template) => {
                let written = wire::write_name_error(out, &query, &template.soa, recursion, limit);
                (written, RCODE_NXDOMAIN)
            }
            Lookup::General => (Written::TooLarge, 0),
        };
        if let (Written::Whole, rcode) = written {
            return Outcome::reply(qtype, rcode, false);
        }
    }
    let Some(name) = query.name() else { return error(out, RCODE_FORMERR) };
    let record_type = RecordType::from(qtype);
    match crate::resolve::resolve(&view.zones, &name, record_type) {
        Some(mut resolution) => {
            if query.qclass == CLASS_ANY {
                // NSD for class ANY: not authoritative, no SOA in negative answers, no apex
                // NS, no additional records.
                if resolution.authority_optional {
                    resolution.authorities.clear();
                    resolution.authority_optional = false;
                }
                resolution.authorities.retain(|record| record.record_type() != RecordType::SOA);
                resolution.additionals.clear();
                resolution.authoritative = false;
            }
            let mut flags = if resolution.authoritative { FLAG_AA } else { 0 };
            if resolution.rcode == ResponseCodeValue::NameError {
                flags |= RCODE_NXDOMAIN;
            }
            let prepared =
                wire::prepare(&name, flags, &resolution.answers, &resolution.authorities, &resolution.additionals);
            let Some(mut prepared) = prepared else { return error(out, RCODE_SERVFAIL) };
            prepared.optional |= resolution.authority_optional;
            if wire::write_answer(out, &query, &prepared, recursion, limit, optional_limit) == Written::Whole {
                return Outcome::reply(qtype, flags & 0xF, false);
            }
            let sections = Sections {
                answers: &resolution.answers,
                authorities: &resolution.authorities,
                authority_optional: resolution.authority_optional,
                additionals: &resolution.additionals,
            };
            let truncated =
                wire::write_limited(out, &query, &name, flags | recursion, &sections, limit, optional_limit);
            Outcome::reply(qtype, flags & 0xF, truncated)
        }
        None => match catalog.policy.upstreams(client, &name) {
            Some(upstreams) => Outcome {
                action: Action::Forward(ForwardRequest {
                    packet: packet.to_vec(),
                    name,
                    qtype: record_type,
                    upstreams,
                    transport,
                    validator: catalog.policy.validator.clone(),
                }),
                qtype,
                rcode: 0,
                truncated: false,
            },
            None => refuse(out, question, EDE_NOT_AUTHORITATIVE),
        },
    }
}

/// Starts loading the index data [`handle`] will read for `packet` (see
/// [`crate::index::Index::prefetch`]); changes nothing.
pub fn prefetch(catalog: &Catalog, packet: &[u8], client: IpAddr, stage: u8) {
    let mut lower = [0u8; 255];
    if let Some(length) = wire::question_name(packet, &mut lower) {
        catalog.view_for(client).index.prefetch(&lower[..length], stage);
    }
}

/// NSD's answer to a NOTIFY it did not ask for: NXDOMAIN for a zone it does not serve,
/// REFUSED for one it does (no NOTIFY is accepted: this server is only ever a primary).
fn notify_rcode(catalog: &Catalog, packet: &[u8], client: IpAddr, question_end: Option<usize>) -> u16 {
    let name = question_end
        .and_then(|end| packet.get(12..end.saturating_sub(4)))
        .and_then(|wire| Name::from_labels(wire::labels(&wire::lowercase(wire))).ok())
        .map(|mut name| {
            name.set_fqdn(true);
            name
        });
    let served = name.is_some_and(|name| catalog.view_for(client).zones.iter().any(|zone| zone.apex == name));
    if served { RCODE_REFUSED } else { RCODE_NXDOMAIN }
}

/// The CHAOS class: `id.server` and `hostname.bind` TXT (or ANY) name this server, as NSD
/// does by default; the version is never told (NSD's `hide-version: yes`, which an
/// information-security audit asks for); anything else is refused.
fn chaos(catalog: &Catalog, query: &Query<'_>, out: &mut Vec<u8>) -> Outcome {
    let qtype = query.qtype;
    let flags = wire::response_flags(query.flags, 0);
    let refuse = |out: &mut Vec<u8>, extended_error: u16| {
        let flags = flags | RCODE_REFUSED;
        wire::write_refusal(
            out,
            query.id,
            flags,
            Some(query.question),
            RCODE_REFUSED,
            query.edns,
            Some(extended_error),
        );
        Outcome::reply(qtype, RCODE_REFUSED, false)
    };
    if qtype != u16::from(RecordType::TXT) && qtype != u16::from(RecordType::ANY) {
        return refuse(out, EDE_NOT_SUPPORTED);
    }
    let Some(name) = query.name() else { return refuse(out, EDE_NOT_SUPPORTED) };
    let name_text = name.to_ascii();
    match name_text.as_str() {
        "id.server." | "hostname.bind." => {
            let mut record =
                Record::from_rdata(name.clone(), 0, RData::TXT(TXT::new(vec![catalog.policy.identity.clone()])));
            record.dns_class = DNSClass::CH;
            match wire::prepare(&name, 0, &[record], &[], &[]) {
                Some(prepared) => {
                    let limit = usize::from(u16::MAX);
                    let _ = wire::write_answer(out, query, &prepared, 0, limit, limit);
                    Outcome::reply(qtype, 0, false)
                }
                None => refuse(out, EDE_NOT_SUPPORTED),
            }
        }
        "version.server." | "version.bind." => refuse(out, EDE_PROHIBITED),
        _ => refuse(out, EDE_NOT_SUPPORTED),
    }
}
