//! One authoritative zone as served, and the answer semantics of RFC 1034 §4.3.2 with the
//! refinements operators expect: NXDOMAIN vs NODATA with the SOA (RFC 2308), CNAME chains
//! inside the zone (RFC 6604 rcode of the last name), wildcards (RFC 4592) and referrals with
//! glue for delegated children.
//!
//! This is the slow, general path. The hot path ([`crate::index`]) serves the same answers
//! precomputed; both come from [`Zone::resolve`], so they cannot disagree.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use rustc_hash::FxHashMap;

/// How many CNAMEs are followed inside a zone before giving up (loops are cut there too).
const CNAME_CHAIN_LIMIT: usize = 8;

/// A name in the zone: its record sets by type (empty for an empty non-terminal).
#[derive(Debug, Default, Clone)]
pub struct Node {
    pub rrsets: BTreeMap<RecordType, Vec<Record>>,
}

/// A zone ready to answer from.
#[derive(Debug, Clone)]
pub struct Zone {
    /// Lowercase, fully qualified.
    pub apex: Name,
    pub soa: Record,
    /// Every owner name (lowercase) and every empty non-terminal between it and the apex.
    pub nodes: FxHashMap<Name, Node>,
    /// Delegation points: names below the apex with an NS set.
    pub cuts: Vec<Name>,
    pub has_wildcards: bool,
    pub secondaries: Vec<SocketAddr>,
}

/// What the zone says about one question.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Resolution {
    pub rcode: ResponseCodeValue,
    pub authoritative: bool,
    pub answers: Vec<Record>,
    pub authorities: Vec<Record>,
    pub additionals: Vec<Record>,
}

/// `ResponseCode` without the need for an `Option` in `Default`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ResponseCodeValue {
    #[default]
    NoError,
    NameError,
}

impl ResponseCodeValue {
    pub fn code(self) -> ResponseCode {
        match self {
            Self::NoError => ResponseCode::NoError,
            Self::NameError => ResponseCode::NXDomain,
        }
    }
}

impl Zone {
    /// Builds a zone from its records (already checked to lie within `apex`; exactly one SOA
    /// at the apex is among them).
    pub fn new(apex: Name, records: Vec<Record>, secondaries: Vec<SocketAddr>) -> Zone {
        let apex = apex.to_lowercase();
        let mut nodes: FxHashMap<Name, Node> = FxHashMap::default();
        let mut soa = None;
        for record in records {
            let owner = record.name.to_lowercase();
            if record.record_type() == RecordType::SOA {
                soa = Some(record.clone());
            }
            let mut parent = owner.clone();
            while parent.num_labels() > apex.num_labels() {
                parent = parent.base_name();
                nodes.entry(parent.clone()).or_default();
            }
            let rrset = nodes.entry(owner).or_default().rrsets.entry(record.record_type()).or_default();
            if !rrset.iter().any(|existing| existing.data == record.data) {
                rrset.push(record);
            }
        }
        let soa = soa.expect("every zone is built with an SOA");
        let has_wildcards = nodes.keys().any(Name::is_wildcard);
        let mut cuts: Vec<Name> = nodes
            .iter()
            .filter(|(name, node)| **name != apex && node.rrsets.contains_key(&RecordType::NS))
            .map(|(name, _)| name.clone())
            .collect();
        cuts.sort();
        Zone { apex, soa, nodes, cuts, has_wildcards, secondaries }
    }

    pub fn serial(&self) -> u32 {
        match &self.soa.data {
            RData::SOA(soa) => soa.serial,
            _ => 0,
        }
    }

    /// The SOA as it goes into a negative answer: TTL = min(TTL, MINIMUM) (RFC 2308 §5).
    pub fn negative_soa(&self) -> Record {
        let mut soa = self.soa.clone();
        if let RData::SOA(data) = &self.soa.data {
            soa.ttl = soa.ttl.min(data.minimum);
        }
        soa
    }

    /// The delegation point at or above `name` (and below the apex), if any.
    pub fn cut_above(&self, name: &Name) -> Option<&Name> {
        if self.cuts.is_empty() {
            return None;
        }
        let mut candidate = name.clone();
        let mut found = None;
        while candidate.num_labels() > self.apex.num_labels() {
            if self.cuts.binary_search(&candidate).is_ok() {
                found = self.cuts.iter().find(|cut| **cut == candidate);
            }
            candidate = candidate.base_name();
        }
        found
    }

    /// Answers `qname`/`qtype`; `qname` is lowercase and lies within the apex.
    pub fn resolve(&self, qname: &Name, qtype: RecordType) -> Resolution {
        let mut resolution = Resolution { authoritative: true, ..Resolution::default() };
        let mut current = qname.clone();
        for _ in 0..CNAME_CHAIN_LIMIT {
            if let Some(cut) = self.cut_above(&current) {
                if current == *cut && qtype == RecordType::DS && resolution.answers.is_empty() {
                    // DS lives on the parent side of a cut; we keep none, so: no data.
                    resolution.authorities.push(self.negative_soa());
                    return resolution;
                }
                if resolution.answers.is_empty() {
                    self.referral(cut, &mut resolution);
                }
                return resolution;
            }
            let (node, owner) = match self.nodes.get(&current) {
                Some(node) => (node, current.clone()),
                None => match self.wildcard_for(&current) {
                    Some(node) => (node, current.clone()),
                    None => {
                        resolution.rcode = ResponseCodeValue::NameError;
                        resolution.authorities.push(self.negative_soa());
                        return resolution;
                    }
                },
            };
            let synthesize = |records: &[Record]| -> Vec<Record> {
                records
                    .iter()
                    .map(|record| {
                        let mut record = record.clone();
                        record.name = owner.clone();
                        record
                    })
                    .collect()
            };
            if qtype == RecordType::ANY {
                if node.rrsets.is_empty() {
                    resolution.authorities.push(self.negative_soa());
                }
                for records in node.rrsets.values() {
                    resolution.answers.extend(synthesize(records));
                }
                return resolution;
            }
            if let Some(records) = node.rrsets.get(&qtype) {
                resolution.answers.extend(synthesize(records));
                return resolution;
            }
            if let Some(cname) = node.rrsets.get(&RecordType::CNAME) {
                resolution.answers.extend(synthesize(cname));
                let RData::CNAME(target) = &cname[0].data else { return resolution };
                let target = target.0.to_lowercase();
                if !self.apex.zone_of(&target) || resolution.answers.iter().any(|record| record.name == target) {
                    return resolution;
                }
                current = target;
                continue;
            }
            resolution.authorities.push(self.negative_soa());
            return resolution;
        }
        resolution
    }

    /// The `*` node that synthesizes answers for a name that does not exist (RFC 4592: the
    /// wildcard child of the closest encloser).
    fn wildcard_for(&self, name: &Name) -> Option<&Node> {
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

    fn referral(&self, cut: &Name, resolution: &mut Resolution) {
        resolution.authoritative = false;
        let Some(ns) = self.nodes.get(cut).and_then(|node| node.rrsets.get(&RecordType::NS)) else { return };
        resolution.authorities.extend(ns.iter().cloned());
        for record in ns {
            let RData::NS(target) = &record.data else { continue };
            let target = target.0.to_lowercase();
            if !self.apex.zone_of(&target) {
                continue;
            }
            if let Some(node) = self.nodes.get(&target) {
                for record_type in [RecordType::A, RecordType::AAAA] {
                    if let Some(glue) = node.rrsets.get(&record_type) {
                        resolution.additionals.extend(glue.iter().cloned());
                    }
                }
            }
        }
    }

    /// How many records the zone holds.
    pub fn record_count(&self) -> usize {
        self.nodes.values().flat_map(|node| node.rrsets.values()).map(Vec::len).sum()
    }

    /// Every record, SOA first (the AXFR and `dns records` order).
    pub fn all_records(&self) -> Vec<Record> {
        let mut names: Vec<&Name> = self.nodes.keys().collect();
        names.sort();
        let mut records = vec![self.soa.clone()];
        for name in names {
            for records_of_type in self.nodes[name].rrsets.values() {
                records
                    .extend(records_of_type.iter().filter(|record| record.record_type() != RecordType::SOA).cloned());
            }
        }
        records
    }
}
