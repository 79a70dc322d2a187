//! The sans-IO answering core: one packet and the client's address in, one action out.
//! No sockets, no clock, no locks: drivers call [`handle`] with the current catalog.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use hickory_proto::rr::{Name, RecordType};

use crate::catalog::{self, Catalog};
use crate::index::{Lookup, needs_general_path};
use crate::wire::{
    self, FLAG_AA, FLAG_RA, Malformed, Query, RCODE_BADVERS, RCODE_FORMERR, RCODE_NOTAUTH, RCODE_NOTIMP,
    RCODE_NXDOMAIN, RCODE_REFUSED, RCODE_SERVFAIL,
};
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
    /// Stream the zone (AXFR; TCP only, client allowed).
    Transfer(Arc<Zone>),
}

/// A query to resolve upstream, owning what the answer needs.
#[derive(Debug, Clone)]
pub struct ForwardRequest {
    pub packet: Vec<u8>,
    pub name: Name,
    pub qtype: RecordType,
    pub upstreams: Arc<[SocketAddr]>,
    pub transport: Transport,
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

/// Answers one packet from `client`. Writes the answer (if any) into `out`.
pub fn handle(catalog: &Catalog, packet: &[u8], client: IpAddr, transport: Transport, out: &mut Vec<u8>) -> Outcome {
    let query = match Query::parse(packet) {
        Ok(query) => query,
        Err(Malformed::Drop) => return Outcome { action: Action::Drop, qtype: 0, rcode: 0, truncated: false },
        Err(Malformed::FormatError { id, flags, question_end }) => {
            wire::write_error(out, packet, id, flags, question_end, RCODE_FORMERR, false);
            return Outcome::reply(0, RCODE_FORMERR, false);
        }
        Err(Malformed::OtherOpcode { id, flags, question_end }) => {
            // NOTIFY is for secondaries; this server is only ever a primary.
            let rcode = if (flags >> 11) & 0xF == 4 { RCODE_REFUSED } else { RCODE_NOTIMP };
            wire::write_error(out, packet, id, flags, question_end, rcode, false);
            return Outcome::reply(0, rcode, false);
        }
    };
    let qtype = query.qtype;
    let error = |out: &mut Vec<u8>, rcode: u16| {
        let question_end = Some(12 + query.question.len());
        wire::write_error(out, packet, query.id, query.flags, question_end, rcode, query.edns.is_some());
        Outcome::reply(qtype, rcode, false)
    };
    if let Some(edns) = query.edns
        && edns.version > 0
    {
        return error(out, RCODE_BADVERS);
    }
    if query.qclass != 1 {
        return error(out, RCODE_REFUSED);
    }
    let limit = match transport {
        Transport::Udp => query.udp_limit(),
        Transport::Tcp => usize::from(u16::MAX),
    };
    let view = catalog.view_for(client);
    let recursion = if catalog.policy.recursion_available(client) { FLAG_RA } else { 0 };
    if qtype == u16::from(RecordType::AXFR) || qtype == u16::from(RecordType::IXFR) {
        let Some(name) = query.name() else { return error(out, RCODE_FORMERR) };
        let Some(zone) = view.zones.iter().find(|zone| zone.apex == name) else { return error(out, RCODE_NOTAUTH) };
        if transport == Transport::Udp || !catalog::may_transfer(zone, client) {
            return error(out, RCODE_REFUSED);
        }
        return Outcome { action: Action::Transfer(zone.clone()), qtype, rcode: 0, truncated: false };
    }
    if !needs_general_path(qtype) {
        match view.index.lookup(query.lower_name()) {
            Lookup::Exact(entry) => {
                let prepared = entry.prepared(qtype);
                let truncated = wire::write_answer(out, &query, prepared, recursion, limit);
                return Outcome::reply(qtype, prepared.flags & 0xF, truncated);
            }
            Lookup::NameError(template) => {
                let truncated =
                    wire::write_name_error(out, &query, template.apex_length, &template.soa_tail, recursion, limit);
                return Outcome::reply(qtype, RCODE_NXDOMAIN, truncated);
            }
            Lookup::General => {}
        }
    }
    let Some(name) = query.name() else { return error(out, RCODE_FORMERR) };
    let record_type = RecordType::from(qtype);
    match view.zone_for(&name) {
        Some(zone) => {
            let resolution = zone.resolve(&name, record_type);
            let mut flags = if resolution.authoritative { FLAG_AA } else { 0 };
            if resolution.rcode == ResponseCodeValue::NameError {
                flags |= RCODE_NXDOMAIN;
            }
            let prepared = wire::prepare(
                &name,
                record_type,
                flags,
                &resolution.answers,
                &resolution.authorities,
                &resolution.additionals,
            );
            match prepared {
                Some(prepared) => {
                    let truncated = wire::write_answer(out, &query, &prepared, recursion, limit);
                    Outcome::reply(qtype, flags & 0xF, truncated)
                }
                None => error(out, RCODE_SERVFAIL),
            }
        }
        None => match catalog.policy.upstreams(client, &name) {
            Some(upstreams) => Outcome {
                action: Action::Forward(ForwardRequest {
                    packet: packet.to_vec(),
                    name,
                    qtype: record_type,
                    upstreams,
                    transport,
                }),
                qtype,
                rcode: 0,
                truncated: false,
            },
            None => error(out, RCODE_REFUSED),
        },
    }
}
