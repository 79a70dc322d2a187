//! The hot path: every answer for an existing name precomputed, found with one hash lookup on
//! the lowercase wire name. A name that does not exist costs one lookup per label to find its
//! closest encloser, then a precomputed NXDOMAIN. No query walks a zone.
//!
//! Anything unusual (wildcards, names below a delegation, ANY, DS) goes to the general path,
//! [`crate::zone::Zone::resolve`], which is also what filled this index, so both agree.

use std::sync::Arc;

use hickory_proto::rr::{Name, RData, RecordType};
use hickory_proto::serialize::binary::{BinEncodable, BinEncoder, NameEncoding};
use rustc_hash::FxHashMap;

use crate::wire::{self, FLAG_AA, Prepared, RCODE_NXDOMAIN};
use crate::zone::{ResponseCodeValue, Zone};

/// A private-use type nothing is stored under: its answer is the answer for every type the
/// node does not have.
const ABSENT_TYPE: RecordType = RecordType::Unknown(65_280);

/// Query types always answered by the general path.
pub fn needs_general_path(qtype: u16) -> bool {
    matches!(qtype, 0 | 41 | 43 | 250 | 251 | 252 | 255) || (249..=255).contains(&qtype)
}

/// Precomputed answers for one name.
#[derive(Debug)]
pub struct Entry {
    /// Index of the zone (in the view) this name belongs to.
    pub zone: usize,
    /// True when a name below this one may not simply be NXDOMAIN (a delegation or a wildcard
    /// is involved): such queries take the general path.
    pub general_below: bool,
    pub answers: Vec<(u16, Prepared)>,
    pub default: Prepared,
}

/// The NXDOMAIN template of one zone.
#[derive(Debug)]
pub struct NameError {
    pub apex_length: usize,
    /// The SOA after its owner name, uncompressed (position independent).
    pub soa_tail: Box<[u8]>,
}

/// All precomputed answers of one view.
#[derive(Debug, Default)]
pub struct Index {
    pub entries: FxHashMap<Box<[u8]>, Entry>,
    pub name_errors: Vec<NameError>,
}

/// What the index says about a query name.
pub enum Lookup<'a> {
    Exact(&'a Entry),
    NameError(&'a NameError),
    General,
}

impl Index {
    /// Builds the index for `zones` (deeper zones win for names they contain).
    pub fn build(zones: &[Arc<Zone>]) -> Index {
        let mut index = Index::default();
        for (position, zone) in zones.iter().enumerate() {
            index.name_errors.push(name_error_template(zone));
            for (name, node) in &zone.nodes {
                if deepest_zone(zones, name) != Some(position) {
                    continue;
                }
                let below_cut = zone.cut_above(name).is_some();
                let general_below = below_cut || zone.has_wildcards;
                let mut types: Vec<RecordType> = node.rrsets.keys().copied().collect();
                let mut current = node;
                for _ in 0..8 {
                    let Some(cname) = current.rrsets.get(&RecordType::CNAME) else { break };
                    let RData::CNAME(target) = &cname[0].data else { break };
                    let Some(next) = zone.nodes.get(&target.0.to_lowercase()) else { break };
                    types.extend(next.rrsets.keys().copied());
                    current = next;
                }
                types.sort();
                types.dedup();
                let prepare = |qtype: RecordType| {
                    let resolution = zone.resolve(name, qtype);
                    let mut flags = if resolution.authoritative { FLAG_AA } else { 0 };
                    if resolution.rcode == ResponseCodeValue::NameError {
                        flags |= RCODE_NXDOMAIN;
                    }
                    wire::prepare(
                        name,
                        qtype,
                        flags,
                        &resolution.answers,
                        &resolution.authorities,
                        &resolution.additionals,
                    )
                };
                let Some(default) = prepare(ABSENT_TYPE) else { continue };
                let answers = types
                    .into_iter()
                    .filter(|qtype| !needs_general_path(u16::from(*qtype)))
                    .filter_map(|qtype| Some((u16::from(qtype), prepare(qtype)?)))
                    .collect();
                index.entries.insert(wire_name(name), Entry { zone: position, general_below, answers, default });
            }
        }
        index
    }

    /// Finds what to answer for the lowercase wire name `lower`.
    pub fn lookup(&self, lower: &[u8]) -> Lookup<'_> {
        if let Some(entry) = self.entries.get(lower) {
            return Lookup::Exact(entry);
        }
        let mut position = 0;
        while position < lower.len() && lower[position] != 0 {
            position += 1 + usize::from(lower[position]);
            if let Some(entry) = self.entries.get(&lower[position..]) {
                if entry.general_below {
                    return Lookup::General;
                }
                return match self.name_errors.get(entry.zone) {
                    Some(template) => Lookup::NameError(template),
                    None => Lookup::General,
                };
            }
        }
        Lookup::General
    }
}

impl Entry {
    pub fn prepared(&self, qtype: u16) -> &Prepared {
        self.answers
            .iter()
            .find(|(answer_type, _)| *answer_type == qtype)
            .map_or(&self.default, |(_, prepared)| prepared)
    }
}

/// The deepest zone containing `name`.
pub fn deepest_zone(zones: &[Arc<Zone>], name: &Name) -> Option<usize> {
    zones
        .iter()
        .enumerate()
        .filter(|(_, zone)| zone.apex.zone_of(name))
        .max_by_key(|(_, zone)| zone.apex.num_labels())
        .map(|(position, _)| position)
}

/// Lowercase wire form of a name.
pub fn wire_name(name: &Name) -> Box<[u8]> {
    let mut bytes = Vec::with_capacity(wire::wire_length(name));
    for label in name.iter() {
        bytes.push(label.len() as u8);
        bytes.extend(label.iter().map(u8::to_ascii_lowercase));
    }
    bytes.push(0);
    bytes.into()
}

fn name_error_template(zone: &Zone) -> NameError {
    let mut bytes = Vec::new();
    let mut encoder = BinEncoder::new(&mut bytes);
    encoder.set_name_encoding(NameEncoding::Uncompressed);
    let soa = zone.negative_soa();
    // Encoding an SOA we built ourselves cannot fail; an empty tail would only mean the
    // general path answers this zone's NXDOMAINs.
    let _ = soa.emit(&mut encoder);
    let apex_length = wire::wire_length(&zone.apex);
    NameError { apex_length, soa_tail: bytes.get(apex_length..).unwrap_or_default().into() }
}
