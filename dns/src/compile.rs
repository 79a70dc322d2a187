//! The zone compile pipeline, one zone copy at a time: the operator's records (file, then
//! inline), then published and derived records where the operator has no record of that name
//! and type, then the SOA and NS if the operator gave none, then the settled serial.
//!
//! [`compile`] is the one place a finished record set becomes a [`Zone`]: every step that
//! needs the complete data of a copy (the serial, and signing, which must see the derived
//! records too) belongs there, after [`load_zone`].

use std::collections::{HashMap, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};

use hickory_proto::rr::rdata::{NS, SOA};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use lienthong_config::Config;

use crate::catalog::absolute;
use crate::derived::DERIVED_TTL;
use crate::dnssec;
use crate::serial::Serials;
use crate::zone::Zone;
use crate::zonefile;

/// Where a record of a zone copy came from (for diagnostics about it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Line and column in the zone's file.
    File(usize, usize),
    /// Index into the zone's inline `records`.
    Inline(usize),
    /// Published by another service.
    Published,
    /// Derived from the config (the appliance's addresses, mail records).
    Derived,
    /// The SOA or NS made up when the operator gave none.
    Default,
}

/// Turns a copy's finished records into the zone served: the serial settled under `key`,
/// and, for a signed zone, signed with `signer`'s keys (the same for every copy of the zone).
/// The DNSKEY, CDS, CDNSKEY and NSEC3PARAM sets join the records before the serial is
/// settled, and the signing state (refresh period, signing keys) joins the content hash, so a
/// re-signing is a new serial; the assembled zone is signed last, derived records included.
/// `signing` is the signer with the copy this one replaces, whose signatures over unchanged
/// sets are kept while still current (so an IXFR carries only what changed).
pub fn compile(
    apex: Name,
    records: Vec<Record>,
    zone_config: &lienthong_config::Zone,
    key: &str,
    serials: &mut Serials,
    now: u64,
    signing: Option<(&dnssec::Signer, Option<&Zone>)>,
) -> Result<Zone, Vec<String>> {
    let signer = signing.map(|(signer, _)| signer);
    let records = dnssec::with_key_records(records, signer);
    let records = settle_serial(records, key, dnssec::state_hash(signer), serials, now);
    let zone = Zone::new(apex, records, zone_config.secondaries.clone());
    dnssec::sign(zone, signer, signing.and_then(|(_, previous)| previous), &where_is(zone_config))
}

/// Published lines that do not parse are logged and skipped: they are not the operator's.
pub fn parse_published(published: &[String]) -> Vec<Record> {
    let mut records = Vec::new();
    for line in published {
        match zonefile::parse(line, &Name::root(), &Name::root(), DERIVED_TTL) {
            Ok(mut parsed) => records.append(&mut parsed),
            Err(errors) => {
                for error in errors {
                    tracing::warn!(record = %line, column = error.column, "skipping a published DNS record: {}", error.message);
                }
            }
        }
    }
    records
}

/// Operator records (file, then inline), then published and derived ones where the operator
/// has no record of that name and type, then the SOA and NS if the operator gave none.
pub fn load_zone(
    config: &Config,
    position: usize,
    published: &[Record],
    derived: &[Record],
) -> Result<(Vec<Record>, Vec<Origin>), Vec<String>> {
    let zone_config = &config.dns.zones[position];
    let apex = absolute(zone_config.name.as_str());
    let path = format!("dns.zone[{position}]");
    let mut errors = Vec::new();
    let mut operator = Vec::new();
    let mut origins = Vec::new();
    if let Some(file) = &zone_config.file {
        let shown = file.display();
        match std::fs::read_to_string(file) {
            Err(error) => errors.push(format!("{shown}:1:1: {path}.file: cannot read the zone file: {error}")),
            Ok(text) => {
                match zonefile::parse_with_positions(&text, &apex, &apex, DERIVED_TTL) {
                    Ok((mut records, positions)) => {
                        operator.append(&mut records);
                        origins.extend(positions.into_iter().map(|(line, column)| Origin::File(line, column)));
                    }
                    Err(found) => errors.extend(found.into_iter().map(|error| {
                        format!("{shown}:{}:{}: {path}.file: {}", error.line, error.column, error.message)
                    })),
                }
            }
        }
    }
    for (index, inline) in zone_config.records.iter().enumerate() {
        match zonefile::parse(&inline.text, &apex, &apex, DERIVED_TTL) {
            Ok(mut records) => {
                origins.extend(std::iter::repeat_n(Origin::Inline(index), records.len()));
                operator.append(&mut records);
            }
            Err(found) => errors.extend(found.into_iter().map(|error| {
                format!(
                    "{}: {path}.records[{index}]: {} (at column {} of the record)",
                    inline.location, error.message, error.column
                )
            })),
        }
    }
    let mut owner_types: HashSet<(Name, RecordType)> = HashSet::new();
    let mut soa_count = 0;
    for record in &operator {
        owner_types.insert((record.name.clone(), record.record_type()));
        if record.record_type() == RecordType::SOA {
            soa_count += 1;
            if record.name != apex {
                errors.push(format!(
                    "{}: {path}: an SOA record for `{}` is not at the zone apex `{apex}`",
                    where_is(zone_config),
                    record.name
                ));
            }
        }
    }
    if soa_count > 1 {
        errors.push(format!(
            "{}: {path}: the zone has {soa_count} SOA records (expected at most one)",
            where_is(zone_config)
        ));
    }
    let cname_owners: HashSet<Name> = owner_types
        .iter()
        .filter(|(_, record_type)| *record_type == RecordType::CNAME)
        .map(|(name, _)| name.clone())
        .collect();
    let mut types_at: HashMap<&Name, usize> = HashMap::new();
    for (owner, _) in &owner_types {
        *types_at.entry(owner).or_default() += 1;
    }
    for name in &cname_owners {
        if types_at.get(name).copied().unwrap_or(0) > 1 || *name == apex {
            errors.push(format!(
                "{}: {path}: `{name}` has a CNAME and other records (a CNAME must stand alone)",
                where_is(zone_config)
            ));
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let mut records = operator;
    // Every copy of a zone (one per view) takes the records that fall in it.
    let in_this_zone = |record: &&Record| {
        apex.zone_of(&record.name) && deepest_local_zone(config, &record.name).as_ref() == Some(&apex)
    };
    // The operator's sets win over published ones, which win over derived ones.
    let mut taken = owner_types;
    for (source, origin) in [(published, Origin::Published), (derived, Origin::Derived)] {
        let mut added = HashSet::new();
        for record in source.iter().filter(in_this_zone) {
            let key = (record.name.clone(), record.record_type());
            if cname_owners.contains(&record.name) || taken.contains(&key) {
                continue;
            }
            added.insert(key);
            records.push(record.clone());
            origins.push(origin);
        }
        taken.extend(added);
    }
    let hostname = absolute(config.server.hostname.as_str());
    if soa_count == 0 {
        let mailbox = Name::from_ascii("hostmaster")
            .ok()
            .and_then(|label| label.append_domain(&apex).ok())
            .unwrap_or_else(Name::root);
        let soa = SOA::new(hostname.clone(), mailbox, 0, 3600, 600, 1_209_600, 300);
        records.push(Record::from_rdata(apex.clone(), DERIVED_TTL, RData::SOA(soa)));
        origins.push(Origin::Default);
    }
    if !records.iter().any(|record| record.name == apex && record.record_type() == RecordType::NS) {
        records.push(Record::from_rdata(apex.clone(), DERIVED_TTL, RData::NS(NS(hostname))));
        origins.push(Origin::Default);
    }
    for record in &mut records {
        record.dns_class = DNSClass::IN;
    }
    Ok((records, origins))
}

/// The name of the deepest configured zone that holds `name` (whichever views its copies
/// are for).
fn deepest_local_zone(config: &Config, name: &Name) -> Option<Name> {
    config
        .dns
        .zones
        .iter()
        .map(|zone| absolute(zone.name.as_str()))
        .filter(|zone| zone.zone_of(name))
        .max_by_key(Name::num_labels)
}

fn where_is(zone: &lienthong_config::Zone) -> String {
    match (&zone.file, zone.records.first()) {
        (Some(file), _) => format!("{}:1:1", file.display()),
        (None, Some(record)) => record.location.clone(),
        (None, None) => "<config>:1:1".to_owned(),
    }
}

/// Puts the settled serial into the SOA: same content, same serial; changed content, higher.
/// `extra` joins the content hash (the DNSSEC signing state; 0 when unsigned).
fn settle_serial(mut records: Vec<Record>, key: &str, extra: u64, serials: &mut Serials, now: u64) -> Vec<Record> {
    let mut lines: Vec<String> = records
        .iter()
        .map(|record| match &record.data {
            RData::SOA(soa) => {
                let mut soa = soa.clone();
                soa.serial = 0;
                Record::from_rdata(record.name.clone(), record.ttl, RData::SOA(soa)).to_string()
            }
            _ => record.to_string(),
        })
        .collect();
    lines.sort();
    lines.dedup();
    let mut hasher = DefaultHasher::new();
    lines.hash(&mut hasher);
    if extra != 0 {
        extra.hash(&mut hasher);
    }
    let hash = hasher.finish();
    for record in &mut records {
        if let RData::SOA(soa) = &mut record.data {
            soa.serial = serials.serial(key, hash, soa.serial, now);
        }
    }
    records
}
