//! The hot path: every answer for an existing name precomputed, found with one hash lookup on
//! the lowercase wire name. The answers of all names are kept in one arena, each name's key,
//! flags and answer bodies side by side, behind a table of 8-byte slots: a lookup touches the
//! slot and then one run of adjacent bytes, instead of a bucket, the key, the list of types
//! and each body in separate allocations (under load, each of those was a cache miss: the
//! kernel's UDP path between two answers evicts them). A name that does not exist costs one
//! lookup per label to find its closest encloser, then a precomputed NXDOMAIN. No query walks
//! a zone.
//!
//! Anything unusual (wildcards, names below a delegation, ANY, DS) goes to the general path,
//! [`crate::zone::Zone::resolve`], which is also what filled this index, so both agree.

use std::sync::Arc;

use std::hash::Hasher;

use hickory_proto::rr::{Name, RData, Record, RecordType};
use rustc_hash::{FxHashMap, FxHasher};

use crate::compress::{Body, Encoder};
use crate::resolve;
use crate::wire::{self, FLAG_AA, Prepared, PreparedRef, RCODE_NXDOMAIN};
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
    table: Table,
    pub name_errors: Vec<NameError>,
}

/// What the index says about a query name.
pub enum Lookup<'a> {
    Exact(Found<'a>),
    NameError(&'a NameError),
    General,
}

/// The [`Entry`] of one name, as stored in the arena: from its zone number on (the key is
/// before it).
///
/// Layout: zone (u32), general_below (u8), number of typed answers (u16), then that many
/// answers and the default one, each a 15-byte header (type, flags, optional, the three
/// counts, all little-endian; body length u32) followed by its body.
#[derive(Debug, Clone, Copy)]
pub struct Found<'a> {
    record: &'a [u8],
}

const ANSWER_HEADER: usize = 15;

impl<'a> Found<'a> {
    fn zone(&self) -> usize {
        u32::from_le_bytes([self.record[0], self.record[1], self.record[2], self.record[3]]) as usize
    }

    fn general_below(&self) -> bool {
        self.record[4] != 0
    }

    /// The answer for `qtype` (the name's default answer for a type it has none for).
    pub fn prepared(&self, qtype: u16) -> PreparedRef<'a> {
        let record = self.record;
        let typed = usize::from(u16::from_le_bytes([record[5], record[6]]));
        let mut position = 7;
        for number in 0..=typed {
            let header = &record[position..position + ANSWER_HEADER];
            let field = |at: usize| u16::from_le_bytes([header[at], header[at + 1]]);
            let length = u32::from_le_bytes([header[11], header[12], header[13], header[14]]) as usize;
            let body_start = position + ANSWER_HEADER;
            if number == typed || field(0) == qtype {
                return PreparedRef {
                    flags: field(2),
                    optional: header[4] != 0,
                    answers: field(5),
                    authorities: field(7),
                    additionals: field(9),
                    body: &record[body_start..body_start + length],
                };
            }
            position = body_start + length;
        }
        unreachable!("the default answer ends every record")
    }
}

/// Open addressing over the arena: each slot holds the top 24 bits of the key's hash and its
/// record's offset plus one (40 bits; 0: empty); at most half the slots are used.
#[derive(Debug, Default)]
struct Table {
    slots: Box<[u64]>,
    arena: Vec<u8>,
}

const TAG: u64 = 0xFFFF_FF00_0000_0000;

fn hash(key: &[u8]) -> u64 {
    let mut hasher = FxHasher::default();
    hasher.write(key);
    hasher.finish()
}

impl Table {
    fn build(entries: &FxHashMap<Box<[u8]>, Entry>) -> Table {
        let capacity = (entries.len() * 2).next_power_of_two().max(16);
        let mut table = Table { slots: vec![0; capacity].into_boxed_slice(), arena: Vec::new() };
        // A stable order (the map's is not): the same zones give the same arena.
        let mut keys: Vec<&Box<[u8]>> = entries.keys().collect();
        keys.sort();
        for key in keys {
            let entry = &entries[key];
            let offset = table.arena.len();
            let slot_value = offset as u64 + 1;
            assert!(slot_value < 1 << 40, "an index of more than a terabyte");
            let arena = &mut table.arena;
            arena.push(key.len() as u8);
            arena.extend_from_slice(key);
            arena.extend_from_slice(&(entry.zone as u32).to_le_bytes());
            arena.push(u8::from(entry.general_below));
            arena.extend_from_slice(&(entry.answers.len() as u16).to_le_bytes());
            let answers = entry.answers.iter().map(|(qtype, prepared)| (*qtype, prepared));
            for (qtype, prepared) in answers.chain([(0, &entry.default)]) {
                arena.extend_from_slice(&qtype.to_le_bytes());
                arena.extend_from_slice(&prepared.flags.to_le_bytes());
                arena.push(u8::from(prepared.optional));
                arena.extend_from_slice(&prepared.answers.to_le_bytes());
                arena.extend_from_slice(&prepared.authorities.to_le_bytes());
                arena.extend_from_slice(&prepared.additionals.to_le_bytes());
                arena.extend_from_slice(&(prepared.body.len() as u32).to_le_bytes());
                arena.extend_from_slice(&prepared.body);
            }
            let hashed = hash(key);
            let mask = table.slots.len() - 1;
            let mut slot = hashed as usize & mask;
            while table.slots[slot] != 0 {
                slot = (slot + 1) & mask;
            }
            table.slots[slot] = (hashed & TAG) | slot_value;
        }
        table.arena.shrink_to_fit();
        table
    }

    /// Prefetch, stage 1: the slot `key` starts probing at.
    fn prefetch_slot(&self, key: &[u8]) {
        if let Some(slot) = self.slots.get(hash(key) as usize & self.slots.len().wrapping_sub(1)) {
            prefetch(std::ptr::from_ref(slot).cast());
        }
    }

    /// Prefetch, stage 2 (once the slot is in cache): the start of the record it points at.
    fn prefetch_record(&self, key: &[u8]) {
        let hashed = hash(key);
        let Some(&value) = self.slots.get(hashed as usize & self.slots.len().wrapping_sub(1)) else { return };
        if value != 0
            && (value ^ hashed) & TAG == 0
            && let Some(byte) = self.arena.get((value & !TAG) as usize - 1)
        {
            prefetch(std::ptr::from_ref(byte));
            // The answers usually follow within the next line.
            if let Some(next) = self.arena.get((value & !TAG) as usize + 63) {
                prefetch(std::ptr::from_ref(next));
            }
        }
    }

    fn get(&self, key: &[u8]) -> Option<Found<'_>> {
        if self.slots.is_empty() {
            return None;
        }
        let hashed = hash(key);
        let mask = self.slots.len() - 1;
        let mut slot = hashed as usize & mask;
        loop {
            let value = self.slots[slot];
            if value == 0 {
                return None;
            }
            if (value ^ hashed) & TAG == 0 {
                let offset = (value & !TAG) as usize - 1;
                let stored = usize::from(self.arena[offset]);
                let start = offset + 1;
                if stored == key.len() && self.arena[start..start + stored] == *key {
                    return Some(Found { record: &self.arena[start + stored..] });
                }
            }
            slot = (slot + 1) & mask;
        }
    }
}

impl Index {
    /// Builds the index for `zones` (deeper zones win for names they contain).
    pub fn build(zones: &[Arc<Zone>]) -> Index {
        let mut index = Index::default();
        let mut entries = FxHashMap::default();
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
                entries.insert(wire_name(name), Entry { zone: position, general_below, answers, default });
            }
        }
        index.table = Table::build(&entries);
        index
    }

    /// Finds what to answer for the lowercase wire name `lower`.
    pub fn lookup(&self, lower: &[u8]) -> Lookup<'_> {
        if let Some(entry) = self.table.get(lower) {
            return Lookup::Exact(entry);
        }
        let mut position = 0;
        while position < lower.len() && lower[position] != 0 {
            position += 1 + usize::from(lower[position]);
            if let Some(entry) = self.table.get(&lower[position..]) {
                if entry.general_below() {
                    return Lookup::General;
                }
                return match self.name_errors.get(entry.zone()) {
                    Some(template) if !template.compresses_into(&lower[position..]) => Lookup::NameError(template),
                    _ => Lookup::General,
                };
            }
        }
        Lookup::General
    }
}

impl Index {
    /// Starts loading what [`Index::lookup`] of `lower` will read: a worker calls this for
    /// every query of a batch (stage 1, then stage 2) before answering the first, so the
    /// cache misses of the batch overlap instead of following one another.
    pub fn prefetch(&self, lower: &[u8], stage: u8) {
        match stage {
            1 => self.table.prefetch_slot(lower),
            _ => self.table.prefetch_record(lower),
        }
    }
}

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
use crate::batch::prefetch;

#[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
fn prefetch(_address: *const u8) {}

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
