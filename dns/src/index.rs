//! The hot path: every answer for an existing name precomputed, found with one hash lookup on
//! the lowercase wire name. A name that does not exist costs one lookup per label to find its
//! closest encloser, then a precomputed NXDOMAIN. No query walks a zone.
//!
//! Anything unusual (wildcards, names below a delegation, ANY, DS) goes to the general path,
//! [`crate::zone::Zone::resolve`], which is also what filled this index, so both agree.

use std::sync::Arc;

use hickory_proto::rr::{Name, RData, Record, RecordType};
use rustc_hash::FxHashMap;

use crate::compress::{Body, Encoder};
use crate::resolve;
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
    /// The SOA record, compressed against the apex and its ancestors at the end of any
    /// question in the zone (NSD's compression table when the closest encloser is the apex).
    pub soa: Body,
    apex_length: usize,
    /// The SOA's names strictly below the apex (lowercase wire form): a question whose closest
    /// encloser is one of them or their ancestor gets pointers NSD would write into it.
    names_below_apex: Vec<Box<[u8]>>,
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
            for name in zone.nodes.keys() {
                if deepest_zone(zones, name) != Some(position) {
                    continue;
                }
                let below_cut = zone.cut_above(name).is_some();
                let general_below = below_cut || zone.has_wildcards;
                // Every type a CNAME chain from here can end in gets its own answer (a
                // wildcard synthesizing the target, or another zone of the view, included);
                // other types share `default`.
                let types = resolve::chain_types(zones, name);
                let prepare = |qtype: RecordType| {
                    let resolution = resolve::resolve(zones, name, qtype)?;
                    let mut flags = if resolution.authoritative { FLAG_AA } else { 0 };
                    if resolution.rcode == ResponseCodeValue::NameError {
                        flags |= RCODE_NXDOMAIN;
                    }
                    let mut prepared = wire::prepare(
                        name,
                        flags,
                        &resolution.answers,
                        &resolution.authorities,
                        &resolution.additionals,
                    )?;
                    prepared.optional |= resolution.authority_optional;
                    Some(prepared)
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
                    Some(template) if !template.compresses_into(&lower[position..]) => Lookup::NameError(template),
                    _ => Lookup::General,
                };
            }
        }
        Lookup::General
    }
}

impl NameError {
    /// The template of `zone`'s NXDOMAIN authority records: `records` start with its negative
    /// SOA (its RRSIGs may follow). Records that cannot be encoded leave the body empty (the
    /// general path answers then).
    pub fn new(zone: &Zone, records: &[Record]) -> NameError {
        let apex = wire_name(&zone.apex);
        let mut encoder = Encoder::new(&apex, 0, 255);
        let encoded = records.iter().try_for_each(|record| encoder.record(record));
        let soa = encoded.map(|()| encoder.finish()).unwrap_or_default();
        let mut names_below_apex = Vec::new();
        if let Some(RData::SOA(data)) = records.first().map(|record| &record.data) {
            for name in [&data.mname, &data.rname] {
                let name = name.to_lowercase();
                if zone.apex.zone_of(&name) && name != zone.apex {
                    names_below_apex.push(wire_name(&name));
                }
            }
        }
        NameError { soa, apex_length: apex.len(), names_below_apex }
    }

    /// True when an SOA name would be compressed into the closest encloser `encloser` (or an
    /// ancestor of it below the apex), which the template does not know: the general path
    /// answers then.
    pub fn compresses_into(&self, encloser: &[u8]) -> bool {
        let mut position = 0;
        while encloser.len() - position > self.apex_length {
            let suffix = &encloser[position..];
            if self.names_below_apex.iter().any(|name| name.ends_with(suffix)) {
                return true;
            }
            position += 1 + usize::from(encloser[position]);
        }
        false
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
    NameError::new(zone, &[zone.negative_soa()])
}
