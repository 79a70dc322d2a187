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

/// A name in the zone: its record sets by type (empty for an empty non-terminal).
#[derive(Debug, Default, Clone)]
pub struct Node {
    pub rrsets: BTreeMap<RecordType, Vec<Record>>,
    /// The types in the order the zone data first gave them (NSD's order, which ANY uses).
    pub order: Vec<RecordType>,
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
    /// Differences from earlier serials, oldest first, for IXFR.
    pub history: Vec<std::sync::Arc<crate::history::Difference>>,
    /// Signatures and NSEC3 chain when the zone is signed ([`crate::dnssec::sign`]).
    pub dnssec: Option<std::sync::Arc<crate::dnssec::Signatures>>,
}

/// What the zone says about one question.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Resolution {
    pub rcode: ResponseCodeValue,
    pub authoritative: bool,
    pub answers: Vec<Record>,
    pub authorities: Vec<Record>,
    /// True when the authority section is only the optional apex NS set of a positive answer
    /// (dropped, like the additional section, when a UDP answer would not fit).
    pub authority_optional: bool,
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
            let node = nodes.entry(owner).or_default();
            if !node.order.contains(&record.record_type()) {
                node.order.push(record.record_type());
            }
            let rrset = node.rrsets.entry(record.record_type()).or_default();
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
        Zone { apex, soa, nodes, cuts, has_wildcards, secondaries, history: Vec::new(), dnssec: None }
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
        if let Some(signatures) = &self.dnssec {
            records.extend(signatures.records());
        }
        records
    }
}
