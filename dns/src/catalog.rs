//! From the config to the data the server answers from: every zone loaded (file, inline
//! records, published and derived records), its SOA serial settled, grouped into views, and
//! indexed. A catalog is immutable; a reload builds a new one and swaps it in whole.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::SocketAddr;
use std::sync::Arc;

use hickory_proto::rr::rdata::{NS, SOA};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use ipnet::IpNet;
use lienthong_config::Config;

use crate::derived::{self, DERIVED_TTL};
use crate::index::Index;
use crate::serial::Serials;
use crate::zone::Zone;
use crate::zonefile;

/// The zones one group of clients sees.
#[derive(Debug)]
pub struct View {
    /// `None` for clients that match no configured view.
    pub name: Option<String>,
    pub zones: Vec<Arc<Zone>>,
    pub index: Index,
}

/// Everything the server answers from.
#[derive(Debug)]
pub struct Catalog {
    /// Configured views in order (first match wins), each with its client networks.
    pub views: Vec<(Vec<IpNet>, Arc<View>)>,
    pub default_view: Arc<View>,
    /// Every loaded zone with the views that see it (for AXFR, NOTIFY and `dns records`).
    pub zones: Vec<(Arc<Zone>, Vec<String>)>,
    pub policy: Policy,
}

/// Who may recurse and where foreign names go.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    pub recursion_from: Vec<IpNet>,
    pub forwarders: Arc<[SocketAddr]>,
    /// Conditional forwarding, longest zone first.
    pub forward_zones: Vec<(Name, Arc<[SocketAddr]>)>,
    /// UDP answers per second per client prefix; 0: unlimited.
    pub rate_limit: u32,
    pub rate_limit_exempt: Vec<IpNet>,
}

impl Policy {
    pub fn from_config(config: &Config) -> Policy {
        let mut forward_zones: Vec<(Name, Arc<[SocketAddr]>)> = config
            .dns
            .forward
            .iter()
            .map(|forward| (absolute(forward.zone.as_str()), forward.to.clone().into()))
            .collect();
        forward_zones.sort_by_key(|(zone, _)| std::cmp::Reverse(zone.num_labels()));
        Policy {
            recursion_from: config.dns.recursion_from.clone(),
            forwarders: config.dns.forwarders.clone().into(),
            forward_zones,
            rate_limit: config.dns.rate_limit,
            rate_limit_exempt: config.dns.rate_limit_exempt.clone(),
        }
    }

    /// True when `client` may have names outside the local zones resolved (the RA flag).
    pub fn recursion_available(&self, client: std::net::IpAddr) -> bool {
        (!self.forwarders.is_empty() || !self.forward_zones.is_empty())
            && self.recursion_from.iter().any(|network| network.contains(&client))
    }

    /// The servers a foreign `name` goes to for `client`, or `None` (answer REFUSED).
    pub fn upstreams(&self, client: std::net::IpAddr, name: &Name) -> Option<Arc<[SocketAddr]>> {
        if !self.recursion_from.iter().any(|network| network.contains(&client)) {
            return None;
        }
        let chosen =
            self.forward_zones.iter().find(|(zone, _)| zone.zone_of(name)).map_or(&self.forwarders, |(_, to)| to);
        if chosen.is_empty() { None } else { Some(chosen.clone()) }
    }
}

impl Catalog {
    /// Loads every zone of `config`. `now` (unix seconds) feeds new serials; `serials` is the
    /// serial memory (updated in place; the caller saves it).
    pub fn build(
        config: &Config,
        published: &[String],
        serials: &mut Serials,
        now: u64,
    ) -> Result<Catalog, Vec<String>> {
        let published_records = parse_published(published);
        let derived_records = derived::records(config);
        let mut errors = Vec::new();
        let mut zones = Vec::new();
        for (position, zone_config) in config.dns.zones.iter().enumerate() {
            match load_zone(config, position, &published_records, &derived_records) {
                Ok(records) => {
                    let apex = absolute(zone_config.name.as_str());
                    let key = if zone_config.views.is_empty() {
                        apex.to_string()
                    } else {
                        format!("{apex}@{}", zone_config.views.join(","))
                    };
                    let records = settle_serial(records, &key, serials, now);
                    let zone = Zone::new(apex, records, zone_config.secondaries.clone());
                    zones.push((Arc::new(zone), zone_config.views.clone()));
                }
                Err(mut zone_errors) => errors.append(&mut zone_errors),
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let view_for = |view: Option<&str>| -> Arc<View> {
            let mut chosen: BTreeMap<Name, Arc<Zone>> = BTreeMap::new();
            // Zones for every client first, then the view's own, which replace them.
            for (zone, views) in zones.iter().filter(|(_, views)| views.is_empty()) {
                let _ = views;
                chosen.insert(zone.apex.clone(), zone.clone());
            }
            if let Some(view) = view {
                for (zone, _) in zones.iter().filter(|(_, views)| views.iter().any(|name| name == view)) {
                    chosen.insert(zone.apex.clone(), zone.clone());
                }
            }
            let zones: Vec<Arc<Zone>> = chosen.into_values().collect();
            let index = Index::build(&zones);
            Arc::new(View { name: view.map(str::to_owned), zones, index })
        };
        let views = config.dns.views.iter().map(|view| (view.clients.clone(), view_for(Some(&view.name)))).collect();
        let default_view = view_for(None);
        Ok(Catalog { views, default_view, zones, policy: Policy::from_config(config) })
    }

    /// The view a client sees.
    pub fn view_for(&self, client: std::net::IpAddr) -> &Arc<View> {
        self.views
            .iter()
            .find(|(networks, _)| networks.iter().any(|network| network.contains(&client)))
            .map_or(&self.default_view, |(_, view)| view)
    }
}

impl View {
    /// The deepest zone of this view containing `name` (lowercase).
    pub fn zone_for(&self, name: &Name) -> Option<&Arc<Zone>> {
        crate::index::deepest_zone(&self.zones, name).map(|position| &self.zones[position])
    }
}

/// Checks every zone without building indexes: the `check` command.
pub fn check(config: &Config) -> Vec<String> {
    let derived_records = derived::records(config);
    (0..config.dns.zones.len())
        .filter_map(|position| load_zone(config, position, &[], &derived_records).err())
        .flatten()
        .collect()
}

/// A fully qualified lowercase name from a validated config name.
pub fn absolute(text: &str) -> Name {
    Name::from_ascii(format!("{text}.")).map(|name| name.to_lowercase()).unwrap_or_else(|_| Name::root())
}

/// Published lines that do not parse are logged and skipped: they are not the operator's.
fn parse_published(published: &[String]) -> Vec<Record> {
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
fn load_zone(
    config: &Config,
    position: usize,
    published: &[Record],
    derived: &[Record],
) -> Result<Vec<Record>, Vec<String>> {
    let zone_config = &config.dns.zones[position];
    let apex = absolute(zone_config.name.as_str());
    let path = format!("dns.zone[{position}]");
    let mut errors = Vec::new();
    let mut operator = Vec::new();
    if let Some(file) = &zone_config.file {
        let shown = file.display();
        match std::fs::read_to_string(file) {
            Err(error) => errors.push(format!("{shown}:1:1: {path}.file: cannot read the zone file: {error}")),
            Ok(text) => {
                match zonefile::parse(&text, &apex, &apex, DERIVED_TTL) {
                    Ok(mut records) => operator.append(&mut records),
                    Err(found) => errors.extend(found.into_iter().map(|error| {
                        format!("{shown}:{}:{}: {path}.file: {}", error.line, error.column, error.message)
                    })),
                }
            }
        }
    }
    for (index, inline) in zone_config.records.iter().enumerate() {
        match zonefile::parse(&inline.text, &apex, &apex, DERIVED_TTL) {
            Ok(mut records) => operator.append(&mut records),
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
    let in_this_zone =
        |record: &&Record| apex.zone_of(&record.name) && deepest_local_zone(config, &record.name) == Some(position);
    // The operator's sets win over published ones, which win over derived ones.
    let mut taken = owner_types;
    for source in [published, derived] {
        let mut added = HashSet::new();
        for record in source.iter().filter(in_this_zone) {
            let key = (record.name.clone(), record.record_type());
            if cname_owners.contains(&record.name) || taken.contains(&key) {
                continue;
            }
            added.insert(key);
            records.push(record.clone());
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
    }
    if !records.iter().any(|record| record.name == apex && record.record_type() == RecordType::NS) {
        records.push(Record::from_rdata(apex.clone(), DERIVED_TTL, RData::NS(NS(hostname))));
    }
    for record in &mut records {
        record.dns_class = DNSClass::IN;
    }
    Ok(records)
}

/// The config zone (by position) that holds `name`: the one with the longest name.
fn deepest_local_zone(config: &Config, name: &Name) -> Option<usize> {
    config
        .dns
        .zones
        .iter()
        .enumerate()
        .filter(|(_, zone)| absolute(zone.name.as_str()).zone_of(name))
        .max_by_key(|(_, zone)| zone.name.as_str().len())
        .map(|(position, _)| position)
}

fn where_is(zone: &lienthong_config::Zone) -> String {
    match (&zone.file, zone.records.first()) {
        (Some(file), _) => format!("{}:1:1", file.display()),
        (None, Some(record)) => record.location.clone(),
        (None, None) => "<config>:1:1".to_owned(),
    }
}

/// Puts the settled serial into the SOA: same content, same serial; changed content, higher.
fn settle_serial(mut records: Vec<Record>, key: &str, serials: &mut Serials, now: u64) -> Vec<Record> {
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
    let hash = hasher.finish();
    for record in &mut records {
        if let RData::SOA(soa) = &mut record.data {
            soa.serial = serials.serial(key, hash, soa.serial, now);
        }
    }
    records
}

/// Who may transfer a zone: its secondaries, by address.
pub fn may_transfer(zone: &Zone, client: std::net::IpAddr) -> bool {
    zone.secondaries.iter().any(|secondary: &SocketAddr| secondary.ip() == client)
}
