//! Answers to queries with the DO bit for names in signed zones: the unsigned answer of
//! [`Zone::resolve`] plus the RRSIGs of its sets and the NSEC3 proofs of RFC 5155 §7.2
//! (NXDOMAIN: closest encloser, next closer, wildcard; NODATA; wildcard answers and wildcard
//! NODATA; delegations with DS or the NSEC3 proving there is none).
//!
//! Answers for existing names are precomputed per view ([`SignedIndex`]); other names (NXDOMAIN,
//! wildcards) hash a few names and look records up in the precomputed chain. Nothing is
//! signed per query.

use std::sync::Arc;

use hickory_proto::rr::{Name, RData, Record, RecordType};
use rustc_hash::FxHashMap;

use super::nsec3;
use super::sign::Signatures;
use crate::engine::{Action, Outcome};
use crate::index::{NameError, deepest_zone, needs_general_path, wire_name};
use crate::wire::{self, FLAG_AA, Prepared, Query, RCODE_NXDOMAIN, Sections, Written};
use crate::zone::{Resolution, ResponseCodeValue, Zone};

/// A private-use type nothing is stored under (as in [`crate::index`]): the answer for every
/// type a name does not have.
const ABSENT_TYPE: RecordType = RecordType::Unknown(65_280);

/// Precomputed DO answers for every existing name of the view's signed zones.
#[derive(Debug, Default)]
pub struct SignedIndex {
    entries: FxHashMap<Box<[u8]>, Entry>,
    /// Per signed zone (by position in the view): the parts of its NXDOMAIN answers.
    denials: FxHashMap<usize, Denial>,
    /// True when the view has at least one signed zone.
    signed: bool,
}

#[derive(Debug)]
struct Entry {
    answers: Vec<(u16, Prepared)>,
    default: Prepared,
    /// For a name below which a missing name is plainly NXDOMAIN (no cut, no `*` child): its
    /// zone, and the chain positions of its own NSEC3 and of the one covering its `*` child.
    closest_encloser: Option<(usize, usize, usize)>,
}

/// The precomputed parts of a signed zone's NXDOMAIN answers, so they can be put together in
/// any order: each NSEC3 with its RRSIGs, then the SOA and its RRSIGs. Each record is kept as
/// the labels of its owner before the apex and what follows the owner; the apex itself
/// becomes a compression pointer into the echoed question.
#[derive(Debug)]
struct Denial {
    /// The SOA and its RRSIGs, compressed as NSD compresses them.
    soa: NameError,
    soa_records: u16,
    nsec3: Vec<(Vec<Split>, u16)>,
    apex_length: usize,
    /// Another zone of the view lies inside this one (its names are not ours to deny).
    has_deeper_zones: bool,
}

impl SignedIndex {
    /// Builds the DO answers of `zones` (a view's zones; deeper zones win their names).
    pub fn build(zones: &[Arc<Zone>]) -> SignedIndex {
        let mut index =
            SignedIndex { signed: zones.iter().any(|zone| zone.dnssec.is_some()), ..SignedIndex::default() };
        if !index.signed {
            return index;
        }
        for (position, zone) in zones.iter().enumerate() {
            for name in zone.nodes.keys() {
                // A name of an unsigned zone gets a DO answer only when its CNAME chain leads
                // into a signed zone of the view, whose sets then carry their signatures.
                if deepest_zone(zones, name) != Some(position)
                    || (zone.dnssec.is_none() && !chain_reaches_signed_zone(zones, name))
                {
                    continue;
                }
                let types = crate::resolve::chain_types(zones, name);
                let Some(default) = prepare(zones, name, ABSENT_TYPE) else { continue };
                let answers = types
                    .into_iter()
                    .filter(|qtype| !needs_general_path(u16::from(*qtype)))
                    .filter_map(|qtype| Some((u16::from(qtype), prepare(zones, name, qtype)?)))
                    .collect();
                let closest_encloser =
                    plain_closest_encloser(zone, name).map(|(own, wildcard)| (position, own, wildcard));
                index.entries.insert(wire_name(name), Entry { answers, default, closest_encloser });
            }
            if zone.dnssec.is_none() {
                continue;
            }
            let has_deeper_zones = zones.iter().any(|other| other.apex != zone.apex && zone.apex.zone_of(&other.apex));
            if let Some(denial) = Denial::build(zone, has_deeper_zones) {
                index.denials.insert(position, denial);
            }
        }
        index
    }

    /// The NXDOMAIN answer for a missing `lower` (wire form) whose closest encloser is a
    /// plain name of a signed zone: the encloser's NSEC3, the NSEC3 covering the next closer
    /// name (the only hash computed per query), the one covering the wildcard, then the SOA.
    fn name_error(&self, zones: &[Arc<Zone>], lower: &[u8]) -> Option<Prepared> {
        let mut position = 0;
        while position < lower.len() && lower[position] != 0 {
            let parent = position + 1 + usize::from(lower[position]);
            let Some(entry) = self.entries.get(lower.get(parent..)?) else {
                position = parent;
                continue;
            };
            // `lower[parent..]` is the closest encloser; `lower[position..]` the next closer.
            let (zone_position, own, wildcard) = entry.closest_encloser?;
            let denial = self.denials.get(&zone_position)?;
            if denial.has_deeper_zones || denial.soa.compresses_into(&lower[parent..]) {
                // The name may lie in a deeper zone of the view, or NSD would compress the
                // SOA into the closest encloser: the general path answers.
                return None;
            }
            let signatures = zones.get(zone_position)?.dnssec.as_deref()?;
            let cover = nsec3::covering(&signatures.chain, &nsec3::hash_wire(&lower[position..]))?;
            let mut parts = [own, cover, wildcard];
            parts.sort_unstable();
            let pointer = (0xC000 | (12 + lower.len() - denial.apex_length) as u16).to_be_bytes();
            let mut body = Vec::with_capacity(1024);
            // An NSEC3's owner is its hash label and a pointer to the apex in the question;
            // its RRSIGs' owner, a pointer to that (as NSD compresses them).
            let sections_start = 12 + lower.len() + 4;
            let mut put = |records: &[Split]| {
                let owner = (0xC000 | (sections_start + body.len()) as u16).to_be_bytes();
                for (index, (prefix, rest)) in records.iter().enumerate() {
                    if index == 0 {
                        body.extend_from_slice(prefix);
                        body.extend_from_slice(&pointer);
                    } else {
                        body.extend_from_slice(&owner);
                    }
                    body.extend_from_slice(rest);
                }
            };
            let mut authorities = denial.soa_records;
            for (index, part) in parts.iter().enumerate() {
                if index > 0 && parts[index - 1] == *part {
                    continue;
                }
                let (records, count) = denial.nsec3.get(*part)?;
                put(records);
                authorities += count;
            }
            // NSD puts the SOA after the proofs.
            denial.soa.soa.write(&mut body, lower.len(), 0);
            return Some(Prepared {
                flags: FLAG_AA | RCODE_NXDOMAIN,
                optional: false,
                answers: 0,
                authorities,
                additionals: 0,
                body: body.into(),
            });
        }
        None
    }
}

impl Denial {
    fn build(zone: &Zone, has_deeper_zones: bool) -> Option<Denial> {
        let signatures = zone.dnssec.as_deref()?;
        let mut soa_records = vec![zone.negative_soa()];
        soa_records.extend(negative_soa_rrsigs(zone, signatures));
        let apex = wire_name(&zone.apex);
        let soa = NameError::new(zone, &soa_records);
        if soa.soa.is_empty() {
            return None;
        }
        let mut nsec3 = Vec::with_capacity(signatures.chain.len());
        for (_, entry) in &signatures.chain {
            let mut records = vec![entry.record.clone()];
            records.extend(entry.rrsigs.iter().cloned());
            nsec3.push((split(&records, &apex)?, u16::try_from(records.len()).ok()?));
        }
        let soa_records = u16::try_from(soa_records.len()).ok()?;
        Some(Denial { soa, soa_records, nsec3, apex_length: apex.len(), has_deeper_zones })
    }
}

/// A record in wire form split around its owner's apex: (labels before it, what follows).
type Split = (Box<[u8]>, Box<[u8]>);

/// Records (owners within the zone whose lowercase wire apex is `apex`) split for
/// [`SignedIndex::name_error`]; the rest of each record is uncompressed.
fn split(records: &[Record], apex: &[u8]) -> Option<Vec<Split>> {
    use hickory_proto::serialize::binary::{BinEncodable, BinEncoder, NameEncoding};
    let mut parts = Vec::with_capacity(records.len());
    for record in records {
        let mut bytes = Vec::new();
        let mut encoder = BinEncoder::new(&mut bytes);
        encoder.set_name_encoding(NameEncoding::Uncompressed);
        record.emit(&mut encoder).ok()?;
        let owner = wire_name(&record.name);
        let prefix = owner.len().checked_sub(apex.len())?;
        if !owner.ends_with(apex) || !bytes.get(..owner.len())?.eq_ignore_ascii_case(&owner) {
            return None;
        }
        parts.push((bytes[..prefix].into(), bytes[owner.len()..].into()));
    }
    Some(parts)
}

/// True when the CNAME chain from `name` (in an unsigned zone) goes on into a signed zone.
fn chain_reaches_signed_zone(zones: &[Arc<Zone>], name: &Name) -> bool {
    let mut current = name.clone();
    for _ in 0..=crate::resolve::CNAME_CHAIN_LIMIT {
        let Some(zone) = deepest_zone(zones, &current).map(|position| &zones[position]) else { return false };
        if zone.dnssec.is_some() {
            return true;
        }
        let Some(cname) = zone.node_or_wildcard(&current).and_then(|node| node.rrsets.get(&RecordType::CNAME)) else {
            return false;
        };
        let RData::CNAME(target) = &cname[0].data else { return false };
        current = target.0.to_lowercase();
    }
    false
}

/// For an existing name below which a missing name is simply NXDOMAIN (not a delegation or
/// below one, no `*` child): the chain positions of its NSEC3 and of the one covering `*.name`.
fn plain_closest_encloser(zone: &Zone, name: &Name) -> Option<(usize, usize)> {
    let signatures = zone.dnssec.as_deref()?;
    if zone.cut_above(name).is_some() {
        return None;
    }
    let wildcard = name.prepend_label("*").ok()?;
    if zone.nodes.contains_key(&wildcard) {
        return None;
    }
    let own = nsec3::matching(&signatures.chain, &nsec3::hash(name, &[], 0))?;
    let cover = nsec3::covering(&signatures.chain, &nsec3::hash(&wildcard, &[], 0))?;
    Some((own, cover))
}

/// The answer to a DO query whose name lies in a signed zone of the view (`zones`, `index`);
/// `None` for every other query (the ordinary path answers it). An answer over `limit` (or
/// with optional sections over `optional_limit`) is cut as NSD cuts it
/// ([`wire::write_limited`]). The OPT of the answer carries DO (RFC 3225), as every answer
/// to a DO query does.
#[allow(clippy::too_many_arguments)]
pub fn answer(
    zones: &[Arc<Zone>],
    index: &SignedIndex,
    query: &Query<'_>,
    extra_flags: u16,
    limit: usize,
    optional_limit: usize,
    out: &mut Vec<u8>,
) -> Option<Outcome> {
    if !index.signed || !query.edns.is_some_and(|edns| edns.dnssec_ok) {
        return None;
    }
    let qtype = query.qtype;
    let general;
    let prepared = match index.entries.get(query.lower_name()) {
        Some(entry) if !needs_general_path(qtype) => {
            entry.answers.iter().find(|(answer_type, _)| *answer_type == qtype).map_or(&entry.default, |(_, p)| p)
        }
        None if let Some(denial) = index.name_error(zones, query.lower_name()) => {
            general = denial;
            &general
        }
        _ => {
            let name = query.name()?;
            let zone = &zones[crate::resolve::answering_zone(zones, &name, RecordType::from(qtype))?];
            if zone.dnssec.is_none() && !chain_reaches_signed_zone(zones, &name) {
                return None;
            }
            general = prepare(zones, &name, RecordType::from(qtype))?;
            &general
        }
    };
    let rcode = prepared.flags & 0xF;
    if wire::write_answer(out, query, prepared, extra_flags, limit, optional_limit) == Written::Whole {
        return Some(Outcome { action: Action::Reply, qtype, rcode, truncated: false });
    }
    // Too large: rebuilt RRset by RRset from the signed resolution (the rare path).
    let name = query.name()?;
    let resolution = resolve(zones, &name, RecordType::from(qtype))?;
    let sections = Sections {
        answers: &resolution.answers,
        authorities: &resolution.authorities,
        authority_optional: resolution.authority_optional,
        additionals: &resolution.additionals,
    };
    let flags = (prepared.flags & (FLAG_AA | 0xF)) | extra_flags;
    let truncated = wire::write_limited(out, query, &name, flags, &sections, limit, optional_limit);
    Some(Outcome { action: Action::Reply, qtype, rcode, truncated })
}

/// The signed resolution of `qname`/`qtype` (lowercase) from the view's `zones`: each RRset
/// of the answer carries the signatures of the zone it comes from (a CNAME chain may cross
/// into another zone of the view, [`crate::resolve::resolve`]); the authority section's
/// signatures and NSEC3 proofs are the last zone's. Zones that are not signed add nothing.
pub fn resolve(zones: &[Arc<Zone>], qname: &Name, qtype: RecordType) -> Option<Resolution> {
    let mut resolution = crate::resolve::resolve(zones, qname, qtype)?;
    let zone_of = |name: &Name| deepest_zone(zones, name).map(|position| &*zones[position]);
    let mut proofs: Vec<(&Signatures, usize)> = Vec::new();
    let answers = std::mem::take(&mut resolution.answers);
    let mut start = 0;
    while start < answers.len() {
        let (owner, record_type) = (answers[start].name.to_lowercase(), answers[start].record_type());
        let mut end = start;
        while end < answers.len() && answers[end].record_type() == record_type && answers[end].name == owner {
            end += 1;
        }
        resolution.answers.extend(answers[start..end].iter().cloned());
        let Some(zone) = crate::resolve::answering_zone(zones, &owner, record_type).map(|at| &*zones[at]) else {
            break;
        };
        if let Some(signatures) = zone.dnssec.as_deref() {
            if zone.nodes.contains_key(&owner) {
                resolution.answers.extend(rrsigs(signatures, &owner, record_type, None));
            } else if let Some((encloser, next_closer)) = closest_encloser(zone, &owner)
                && let Ok(source) = encloser.prepend_label("*")
            {
                // A wildcard expansion: the wildcard's signature (its label count tells the
                // validator), and proof that the next closer name does not exist.
                resolution.answers.extend(rrsigs(signatures, &source, record_type, Some(&answers[start].name)));
                let cover = nsec3::covering(&signatures.chain, &nsec3::hash(&next_closer, &[], 0));
                proofs.extend(cover.map(|position| (signatures, position)));
            }
        }
        start = end;
    }
    let additionals = std::mem::take(&mut resolution.additionals);
    for rrset in
        additionals.chunk_by(|first, second| first.name == second.name && first.record_type() == second.record_type())
    {
        resolution.additionals.extend(rrset.iter().cloned());
        let owner = rrset[0].name.to_lowercase();
        if let Some(signatures) = zone_of(&owner).and_then(|zone| zone.dnssec.as_deref()) {
            resolution.additionals.extend(rrsigs(signatures, &owner, rrset[0].record_type(), None));
        }
    }
    // The authority section is the zone's where the chain ended: its last name's, or, when
    // that lies outside the view (or CNAME itself was asked), the last CNAME owner's.
    let mut last = if qtype == RecordType::CNAME { qname.clone() } else { final_name(qname, &resolution.answers) };
    if deepest_zone(zones, &last).is_none()
        && let Some(record) = resolution.answers.iter().rev().find(|record| record.record_type() == RecordType::CNAME)
    {
        last = record.name.to_lowercase();
    }
    let Some(zone) = crate::resolve::answering_zone(zones, &last, qtype).map(|at| &*zones[at]) else {
        return Some(with_proofs(resolution, proofs));
    };
    let Some(signatures) = zone.dnssec.as_deref() else { return Some(with_proofs(resolution, proofs)) };
    let negative = resolution.authorities.iter().any(|record| record.record_type() == RecordType::SOA);
    // As NSD: the optional sets carry their signatures too (the apex NS of a positive answer,
    // the additional addresses; glue below a cut has none).
    if resolution.authority_optional {
        resolution.authorities.extend(rrsigs(signatures, &zone.apex, RecordType::NS, None));
    }
    let mut prove = |position: Option<usize>| proofs.extend(position.map(|position| (signatures, position)));
    let referral = resolution.authorities.first().filter(|record| record.record_type() == RecordType::NS);
    if !resolution.authoritative || (referral.is_some() && !resolution.authority_optional) {
        let cut = referral.map(|record| record.name.to_lowercase());
        if let Some(cut) = cut {
            match zone.nodes.get(&cut).and_then(|node| node.rrsets.get(&RecordType::DS)) {
                Some(ds) => {
                    resolution.authorities.extend(ds.iter().cloned());
                    resolution.authorities.extend(rrsigs(signatures, &cut, RecordType::DS, None));
                }
                None => prove(nsec3::matching(&signatures.chain, &nsec3::hash(&cut, &[], 0))),
            }
        }
    } else if negative {
        resolution.authorities.extend(negative_soa_rrsigs(zone, signatures));
        let hash = |name: &Name| nsec3::hash(name, &[], 0);
        if zone.nodes.contains_key(&last) {
            prove(nsec3::matching(&signatures.chain, &hash(&last)));
        } else if let Some((encloser, next_closer)) = closest_encloser(zone, &last) {
            prove(nsec3::matching(&signatures.chain, &hash(&encloser)));
            prove(nsec3::covering(&signatures.chain, &hash(&next_closer)));
            if let Ok(wildcard) = encloser.prepend_label("*") {
                let wildcard_hash = hash(&wildcard);
                if resolution.rcode == ResponseCodeValue::NameError {
                    prove(nsec3::covering(&signatures.chain, &wildcard_hash));
                } else {
                    prove(nsec3::matching(&signatures.chain, &wildcard_hash));
                }
            }
        }
    }
    Some(with_proofs(resolution, proofs))
}

/// Adds the NSEC3 records at `proofs` (chain positions, each once, in chain order per zone)
/// with their RRSIGs to the authority section, before a negative answer's SOA and a positive
/// answer's apex NS, as NSD puts them (which decides what a truncated answer keeps).
fn with_proofs(mut resolution: Resolution, mut proofs: Vec<(&Signatures, usize)>) -> Resolution {
    proofs.sort_unstable_by_key(|(signatures, position)| (std::ptr::from_ref(*signatures) as usize, *position));
    proofs.dedup_by_key(|(signatures, position)| (std::ptr::from_ref(*signatures) as usize, *position));
    // The optional apex NS of a positive (wildcard) answer goes after the required proof too.
    let after = match resolution.authorities.iter().position(|record| record.record_type() == RecordType::SOA) {
        _ if resolution.authority_optional => Some(0),
        soa => soa,
    };
    let after = after.map(|at| resolution.authorities.split_off(at)).unwrap_or_default();
    for (signatures, position) in proofs {
        let entry = &signatures.chain[position].1;
        resolution.authorities.push(entry.record.clone());
        resolution.authorities.extend(entry.rrsigs.iter().cloned());
    }
    resolution.authorities.extend(after);
    resolution
}

/// Encodes the signed answer of `qname`/`qtype`.
fn prepare(zones: &[Arc<Zone>], qname: &Name, qtype: RecordType) -> Option<Prepared> {
    let resolution = resolve(zones, qname, qtype)?;
    let mut flags = if resolution.authoritative { FLAG_AA } else { 0 };
    if resolution.rcode == ResponseCodeValue::NameError {
        flags |= RCODE_NXDOMAIN;
    }
    let mut prepared =
        wire::prepare(qname, flags, &resolution.answers, &resolution.authorities, &resolution.additionals)?;
    prepared.optional |= resolution.authority_optional;
    Some(prepared)
}

/// The SOA's RRSIGs for a negative answer: with the SOA's negative TTL (RFC 2308 §3), as NSD
/// sends them, so they expire from caches with the SOA they cover.
fn negative_soa_rrsigs(zone: &Zone, signatures: &Signatures) -> Vec<Record> {
    let ttl = zone.negative_soa().ttl;
    let mut found = rrsigs(signatures, &zone.apex, RecordType::SOA, None);
    for record in &mut found {
        record.ttl = ttl;
    }
    found
}

/// The RRSIGs of `owner`'s `record_type` set, renamed to `shown` for a wildcard expansion.
fn rrsigs(signatures: &Signatures, owner: &Name, record_type: RecordType, shown: Option<&Name>) -> Vec<Record> {
    let Some(found) = signatures.rrsigs.get(&(owner.clone(), record_type)) else { return Vec::new() };
    match shown {
        None => found.clone(),
        Some(name) => found
            .iter()
            .map(|record| {
                let mut record = record.clone();
                record.name = name.clone();
                record
            })
            .collect(),
    }
}

/// The closest existing ancestor of a name that does not exist, and the next closer name
/// (the ancestor's child on the way to `name`). RFC 5155 §7.2.1.
fn closest_encloser(zone: &Zone, name: &Name) -> Option<(Name, Name)> {
    let mut candidate = name.clone();
    let mut next_closer = None;
    while !zone.nodes.contains_key(&candidate) {
        if candidate.num_labels() <= zone.apex.num_labels() {
            return None;
        }
        next_closer = Some(candidate.clone());
        candidate = candidate.base_name();
    }
    Some((candidate, next_closer?))
}

/// The name a CNAME chain in `answers` ends at (the query name when there is none).
fn final_name(qname: &Name, answers: &[Record]) -> Name {
    let mut last = qname.clone();
    for record in answers {
        if let RData::CNAME(target) = &record.data
            && record.name == last
        {
            last = target.0.to_lowercase();
        }
    }
    last
}
