//! What a zone answers to one question, as NSD answers it (read from NSD's `query.c`):
//!
//! - a positive answer carries the apex NS set in the authority section (optional: dropped
//!   when a UDP answer would not fit) and the addresses of NS, MX and SRV targets found in
//!   the zone in the additional section (wildcards expanded; names below a cut only for NS);
//!   an RRset appears once per answer, in its most important section;
//! - CNAMEs are followed inside the zone's data, wildcard synthesis included, and on into the
//!   other zones of the view (as NSD follows them into every zone it serves), at most
//!   [`CNAME_CHAIN_LIMIT`] of them (NSD's `MAX_CNAME_CHAIN`); a loop stops at the first CNAME
//!   seen twice, a target outside every zone ends the chain; a chain into a delegation ends in
//!   the referral, authoritative;
//! - ANY is answered with one RRset, RFC 8482 §4.1 as NSD does it: the first of A, AAAA, SOA,
//!   MX, PTR in zone order, else the last other type;
//! - NXDOMAIN and NODATA carry the SOA with the negative TTL (RFC 2308), the rcode of the
//!   last name of a chain (RFC 6604); DS at a cut is answered from the parent side.

use std::sync::Arc;

use hickory_proto::rr::{Name, RData, Record, RecordType};

use crate::index::deepest_zone;
use crate::zone::{Node, Resolution, ResponseCodeValue, Zone};

/// CNAMEs followed at most in one answer (NSD's default `MAX_CNAME_CHAIN`).
pub const CNAME_CHAIN_LIMIT: usize = 18;

/// Answers `qname`/`qtype` (lowercase) from the zones of a view, as NSD answers from every
/// zone it serves: the deepest zone holding `qname` answers, and a CNAME chain goes on in the
/// deepest zone holding each target (another zone of the view included; NSD's default
/// `confine-to-zone: no`), each step from that zone's data (its wildcards, cuts, additional
/// records); the authority section is the last zone's. A chain stops at a target no zone
/// of the view holds. `None` when no zone holds `qname`.
pub fn resolve(zones: &[Arc<Zone>], qname: &Name, qtype: RecordType) -> Option<Resolution> {
    let zone_of = |name: &Name| deepest_zone(zones, name).map(|position| &*zones[position]);
    let first = &zones[answering_zone(zones, qname, qtype)?];
    Some(first.resolve_with(qname, qtype, zone_of))
}

/// The position of the zone that answers `qname`/`qtype`: the deepest holding `qname`, but
/// for DS at a zone's apex its parent zone when the view has it (RFC 4035 §3.1.4.1: DS lives
/// on the parent side, and NSD answers it from there).
pub fn answering_zone(zones: &[Arc<Zone>], qname: &Name, qtype: RecordType) -> Option<usize> {
    let deepest = deepest_zone(zones, qname)?;
    if qtype != RecordType::DS || zones[deepest].apex != *qname {
        return Some(deepest);
    }
    let parent = zones
        .iter()
        .enumerate()
        .filter(|(_, zone)| zone.apex != *qname && zone.apex.zone_of(qname))
        .max_by_key(|(_, zone)| zone.apex.num_labels())
        .map(|(position, _)| position);
    Some(parent.unwrap_or(deepest))
}

/// The types a CNAME chain from `name` (in `zones`) meets, `name`'s own included: each gets its
/// own precomputed answer.
pub fn chain_types(zones: &[Arc<Zone>], name: &Name) -> Vec<RecordType> {
    let mut types = Vec::new();
    let mut current = name.clone();
    for _ in 0..=CNAME_CHAIN_LIMIT {
        let Some(position) = deepest_zone(zones, &current) else { break };
        let Some(node) = zones[position].node_or_wildcard(&current) else { break };
        types.extend(node.rrsets.keys().copied());
        let Some(cname) = node.rrsets.get(&RecordType::CNAME) else { break };
        let RData::CNAME(target) = &cname[0].data else { break };
        current = target.0.to_lowercase();
    }
    types.sort();
    types.dedup();
    types
}

impl Zone {
    /// Answers `qname`/`qtype` from this zone alone; `qname` is lowercase and lies within the
    /// apex. A CNAME chain stops where it leaves the zone ([`resolve`] follows it into the
    /// view's other zones).
    pub fn resolve(&self, qname: &Name, qtype: RecordType) -> Resolution {
        self.resolve_with(qname, qtype, |name: &Name| self.apex.zone_of(name).then_some(self))
    }

    /// The answer, with `zone_of` naming the zone each name of a CNAME chain is answered from.
    fn resolve_with<'a>(
        &'a self,
        qname: &Name,
        qtype: RecordType,
        zone_of: impl Fn(&Name) -> Option<&'a Zone>,
    ) -> Resolution {
        let mut resolution = Resolution { authoritative: true, ..Resolution::default() };
        let mut current = qname.clone();
        let mut zone = self;
        let mut followed = 0;
        loop {
            if let Some(cut) = zone.cut_above(&current) {
                if current == *cut && qtype == RecordType::DS {
                    // DS belongs to the parent side of a cut: this zone's data decides.
                    match zone.nodes.get(cut).and_then(|node| node.rrsets.get(&RecordType::DS)) {
                        Some(ds) => zone.add_answer(&mut resolution, ds, &current),
                        None => resolution.authorities.push(zone.negative_soa()),
                    }
                    return resolution;
                }
                resolution.authoritative = !resolution.answers.is_empty();
                zone.referral(cut, &mut resolution);
                return resolution;
            }
            let Some(node) = zone.node_or_wildcard(&current) else {
                resolution.rcode = ResponseCodeValue::NameError;
                resolution.authorities.push(zone.negative_soa());
                return resolution;
            };
            if qtype == RecordType::ANY {
                match any_choice(node) {
                    Some(records) => zone.add_answer(&mut resolution, records, &current),
                    None => resolution.authorities.push(zone.negative_soa()),
                }
                return resolution;
            }
            if let Some(records) = node.rrsets.get(&qtype) {
                zone.add_answer(&mut resolution, records, &current);
                if qtype != RecordType::DS && qtype != RecordType::DNSKEY {
                    zone.add_apex_ns(&mut resolution);
                }
                return resolution;
            }
            let Some(cname) = node.rrsets.get(&RecordType::CNAME) else {
                resolution.authorities.push(zone.negative_soa());
                return resolution;
            };
            if resolution
                .answers
                .iter()
                .any(|record| record.name == current && record.record_type() == RecordType::CNAME)
            {
                return resolution;
            }
            zone.add_answer(&mut resolution, cname, &current);
            followed += 1;
            let RData::CNAME(target) = &cname[0].data else { return resolution };
            let target = target.0.to_lowercase();
            if followed >= CNAME_CHAIN_LIMIT {
                return resolution;
            }
            let Some(next) = zone_of(&target) else { return resolution };
            zone = next;
            current = target;
        }
    }

    /// The node for `name`: its own, or the wildcard that synthesizes it (RFC 4592: the
    /// wildcard child of the closest encloser).
    pub fn node_or_wildcard(&self, name: &Name) -> Option<&Node> {
        if let Some(node) = self.nodes.get(name) {
            return Some(node);
        }
        if !self.has_wildcards {
            return None;
        }
        let mut encloser = name.base_name();
        while !self.nodes.contains_key(&encloser) {
            if encloser.num_labels() <= self.apex.num_labels() {
                break;
            }
            encloser = encloser.base_name();
        }
        let wildcard = encloser.prepend_label("*").ok()?;
        self.nodes.get(&wildcard)
    }

    /// Adds an RRset to the answer under `owner` (the query name for a wildcard) with the
    /// additional records its targets call for.
    fn add_answer(&self, resolution: &mut Resolution, records: &[Record], owner: &Name) {
        resolution.answers.extend(records.iter().map(|record| {
            let mut record = record.clone();
            record.name = owner.clone();
            record
        }));
        self.add_additionals(resolution, records);
    }

    /// The apex NS set in the authority section of a positive answer, unless the answer
    /// already holds it, and its targets' addresses.
    fn add_apex_ns(&self, resolution: &mut Resolution) {
        let Some(ns) = self.nodes.get(&self.apex).and_then(|node| node.rrsets.get(&RecordType::NS)) else { return };
        if resolution.answers.iter().any(|record| record.name == self.apex && record.record_type() == RecordType::NS) {
            return;
        }
        resolution.authorities.extend(ns.iter().cloned());
        resolution.authority_optional = true;
        self.add_additionals(resolution, ns);
    }

    fn referral(&self, cut: &Name, resolution: &mut Resolution) {
        let Some(ns) = self.nodes.get(cut).and_then(|node| node.rrsets.get(&RecordType::NS)) else { return };
        resolution.authorities.extend(ns.iter().cloned());
        self.add_additionals(resolution, ns);
    }

    /// A and AAAA of the targets of NS, MX and SRV records, as NSD's `add_additional_rrsets`.
    fn add_additionals(&self, resolution: &mut Resolution, records: &[Record]) {
        for record in records {
            let (target, allow_glue) = match &record.data {
                RData::NS(ns) => (&ns.0, true),
                RData::MX(mx) => (&mx.exchange, false),
                RData::SRV(srv) => (&srv.target, false),
                _ => continue,
            };
            let target = target.to_lowercase();
            if !self.apex.zone_of(&target) || (!allow_glue && self.cut_above(&target).is_some()) {
                continue;
            }
            let Some(node) = self.node_or_wildcard(&target) else { continue };
            for record_type in [RecordType::A, RecordType::AAAA] {
                let Some(addresses) = node.rrsets.get(&record_type) else { continue };
                let present = |section: &[Record]| {
                    section.iter().any(|known| known.name == target && known.record_type() == record_type)
                };
                if present(&resolution.answers) || present(&resolution.additionals) {
                    continue;
                }
                resolution.additionals.extend(addresses.iter().map(|address| {
                    let mut address = address.clone();
                    address.name = target.clone();
                    address
                }));
            }
        }
    }
}

/// NSD's choice of the one RRset that answers ANY.
fn any_choice(node: &Node) -> Option<&[Record]> {
    let preferred = [RecordType::A, RecordType::AAAA, RecordType::SOA, RecordType::MX, RecordType::PTR];
    let non_preferred = [RecordType::DNSKEY, RecordType::RRSIG, RecordType::NSEC];
    let mut normal = None;
    let mut other = None;
    for record_type in &node.order {
        let records = node.rrsets.get(record_type)?;
        if preferred.contains(record_type) {
            return Some(records);
        }
        if non_preferred.contains(record_type) {
            other = Some(&records[..]);
        } else {
            normal = Some(&records[..]);
        }
    }
    normal.or(other)
}
