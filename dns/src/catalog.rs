//! From the config to the data the server answers from: every zone loaded (file, inline
//! records, published and derived records), its SOA serial settled, grouped into views, and
//! indexed. A catalog is immutable; a reload builds a new one and swaps it in whole.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use hickory_proto::rr::{Name, Record};
use ipnet::IpNet;
use lienthong_config::{ApplianceAddress, Config};

use crate::compile::{self, Origin};
use crate::derived;
use crate::dnssec;
use crate::index::Index;
use crate::serial::Serials;
use crate::zone::Zone;

/// The zones one group of clients sees.
#[derive(Debug)]
pub struct View {
    /// `None` for clients that match no configured view.
    pub name: Option<String>,
    pub zones: Vec<Arc<Zone>>,
    pub index: Index,
    /// Answers to DO queries for the signed zones.
    pub signed: dnssec::SignedIndex,
}

/// Everything the server answers from.
#[derive(Debug)]
pub struct Catalog {
    /// Configured views in order (first match wins), each with its client networks.
    pub views: Vec<(Vec<IpNet>, Arc<View>)>,
    pub default_view: Arc<View>,
    /// Every zone copy served, with who sees it (for NOTIFY, IXFR history and `dns records`).
    pub zones: Vec<ZoneCopy>,
    pub policy: Policy,
}

/// One copy of a zone as served to some clients: a zone configured for views, or the copy
/// for every client, built once per distinct set of appliance addresses its clients see.
#[derive(Debug, Clone)]
pub struct ZoneCopy {
    pub zone: Arc<Zone>,
    /// The views that see this copy, in config order.
    pub views: Vec<String>,
    /// True when clients that match no view see this copy.
    pub others: bool,
    /// Who sees this copy, for people.
    pub audience: String,
}

impl ZoneCopy {
    /// The serial memory key of this copy (stable across restarts and reloads).
    pub fn key(&self) -> String {
        copy_key(&self.zone.apex, &self.views, self.others)
    }
}

fn copy_key(apex: &Name, views: &[String], others: bool) -> String {
    if others { apex.to_string() } else { format!("{apex}@{}", views.join(",")) }
}

fn audience_text(config: &Config, views: &[String], others: bool) -> String {
    match (others, views.is_empty()) {
        (true, true) if config.dns.views.is_empty() => "every client".to_owned(),
        (true, true) => "clients in no view".to_owned(),
        (true, false) => format!("clients in no view and views {}", views.join(", ")),
        (false, _) => format!("views {}", views.join(", ")),
    }
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
    /// What `id.server` (CHAOS TXT) answers: the server's hostname.
    pub identity: String,
    /// DNSSEC validation of forwarded answers (`validate = true`).
    pub validator: Option<Arc<dnssec::validate::Validator>>,
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
            identity: config.server.hostname.as_str().to_owned(),
            validator: config
                .dns
                .validate
                .then(|| dnssec::validate::Validator::new(&config.dns.trust_anchors, config.dns.cache_entries).ok())
                .flatten()
                .map(Arc::new),
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
        Catalog::build_after(config, published, serials, now, None)
    }

    /// [`Catalog::build`] replacing `previous`: each zone copy that changed gets the
    /// difference added to its IXFR history.
    pub fn build_after(
        config: &Config,
        published: &[String],
        serials: &mut Serials,
        now: u64,
        previous: Option<&Catalog>,
    ) -> Result<Catalog, Vec<String>> {
        let published_records = compile::parse_published(published);
        let plans = plan(config);
        let mut errors = Vec::new();
        let mut failed = Vec::new();
        let mut zones = Vec::new();
        // One signer per signed zone name: every view's copy is signed with the same keys.
        let mut signers: HashMap<Name, Option<dnssec::Signer>> = HashMap::new();
        for plan in &plans {
            if failed.contains(&plan.position) {
                continue;
            }
            let zone_config = &config.dns.zones[plan.position];
            match load_copy(config, plan, &published_records) {
                Ok((records, _)) => {
                    let apex = absolute(zone_config.name.as_str());
                    let (views, others) = (plan.views(config), plan.audiences.contains(&None));
                    let key = copy_key(&apex, &views, others);
                    if zone_config.dnssec && !signers.contains_key(&apex) {
                        match dnssec::Signer::for_zone(config, plan.position, &records, now) {
                            Ok(signer) => {
                                signers.insert(apex.clone(), signer);
                            }
                            Err(error) => {
                                failed.push(plan.position);
                                errors.push(error);
                                continue;
                            }
                        }
                    }
                    let before = previous.and_then(|catalog| catalog.zones.iter().find(|copy| copy.key() == key));
                    let signer = if zone_config.dnssec { signers.get(&apex).and_then(Option::as_ref) } else { None };
                    let signing = signer.map(|signer| (signer, before.map(|copy| &*copy.zone)));
                    let compiled = compile::compile(apex, records, zone_config, &key, serials, now, signing);
                    let mut zone = match compiled {
                        Ok(zone) => zone,
                        Err(mut sign_errors) => {
                            failed.push(plan.position);
                            errors.append(&mut sign_errors);
                            continue;
                        }
                    };
                    if let Some(before) = before {
                        zone.history = crate::history::extend(&before.zone, &zone);
                    }
                    let audience = audience_text(config, &views, others);
                    zones.push(ZoneCopy { zone: Arc::new(zone), views, others, audience });
                }
                Err(mut zone_errors) => {
                    failed.push(plan.position);
                    errors.append(&mut zone_errors);
                }
            }
        }
        if let Err(mut anchor_errors) = dnssec::validate::Validator::new(&config.dns.trust_anchors, 0) {
            errors.append(&mut anchor_errors);
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let view_for = |audience: Option<usize>| -> Arc<View> {
            let chosen: Vec<Arc<Zone>> = plans
                .iter()
                .zip(&zones)
                .filter(|(plan, _)| plan.audiences.contains(&audience))
                .map(|(_, copy)| (copy.zone.apex.clone(), copy.zone.clone()))
                .collect::<BTreeMap<Name, Arc<Zone>>>()
                .into_values()
                .collect();
            let index = Index::build(&chosen);
            let signed = dnssec::SignedIndex::build(&chosen);
            let name = audience.map(|view| config.dns.views[view].name.clone());
            Arc::new(View { name, zones: chosen, index, signed })
        };
        let views = config
            .dns
            .views
            .iter()
            .enumerate()
            .map(|(position, view)| (view.clients.clone(), view_for(Some(position))))
            .collect();
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
    let mut failed = Vec::new();
    let mut errors = Vec::new();
    for plan in plan(config) {
        if failed.contains(&plan.position) {
            continue;
        }
        if let Err(mut found) = load_copy(config, &plan, &[]) {
            failed.push(plan.position);
            errors.append(&mut found);
        }
    }
    if let Err(mut anchor_errors) = dnssec::validate::Validator::new(&config.dns.trust_anchors, 0) {
        errors.append(&mut anchor_errors);
    }
    errors
}

/// Warnings about zones that load but publish what the operator likely did not mean: a
/// private (RFC 1918 / ULA) address in a copy that clients outside private networks see.
/// Each is `FILE:LINE:COL: key.path: warning: message`.
pub fn warnings(config: &Config) -> Vec<String> {
    let mut warnings = Vec::new();
    for plan in plan(config) {
        if !plan.audiences.iter().any(|audience| crate::exposure::is_public(config, *audience)) {
            continue;
        }
        let Ok((records, origins)) = load_copy(config, &plan, &[]) else { continue };
        let zone = &config.dns.zones[plan.position];
        let audience = audience_text(config, &plan.views(config), plan.audiences.contains(&None));
        for (record, origin) in records.iter().zip(origins) {
            let Some(address) = crate::exposure::private_address(record) else { continue };
            let location = match origin {
                Origin::File(line, column) => match &zone.file {
                    Some(file) => format!("{}:{line}:{column}: dns.zone[{}].file", file.display(), plan.position),
                    None => continue,
                },
                Origin::Inline(index) => {
                    format!("{}: dns.zone[{}].records[{index}]", zone.records[index].location, plan.position)
                }
                Origin::Derived => match plan.addresses.iter().find(|known| known.address == address) {
                    Some(known) => known.origin.clone(),
                    None => continue,
                },
                Origin::Published | Origin::Default => continue,
            };
            warnings.push(format!(
                "{location}: warning: zone `{}` (seen by {audience}) publishes the private address {address} \
                 for `{}` to clients outside private networks; give those clients the public address \
                 (`addresses` of their view, or dns.addresses) or keep the record in an inside-only view",
                zone.name, record.name
            ));
        }
    }
    warnings
}

/// One zone copy to build: a configured zone for some audiences (a view by position, or
/// `None` for clients in no view) that see the same appliance addresses.
#[derive(Debug)]
struct Plan<'a> {
    position: usize,
    audiences: Vec<Option<usize>>,
    addresses: &'a [ApplianceAddress],
}

impl Plan<'_> {
    fn views(&self, config: &Config) -> Vec<String> {
        self.audiences.iter().flatten().map(|view| config.dns.views[*view].name.clone()).collect()
    }
}

/// Which copies to build: every audience sees, for each zone name, its view's own copy or
/// else the copy for every client; copies that would be identical (same configured zone,
/// same addresses) are built once and shared.
fn plan(config: &Config) -> Vec<Plan<'_>> {
    let audiences: Vec<Option<usize>> = (0..config.dns.views.len()).map(Some).chain([None]).collect();
    let mut plans: Vec<Plan<'_>> = Vec::new();
    for audience in audiences {
        let addresses: &[ApplianceAddress] =
            audience.map_or(&config.dns.addresses, |view| &config.dns.views[view].addresses);
        let view_name = audience.map(|view| config.dns.views[view].name.as_str());
        let mut names: Vec<&str> = config.dns.zones.iter().map(|zone| zone.name.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        for name in names {
            let copies = || config.dns.zones.iter().enumerate().filter(|(_, zone)| zone.name.as_str() == name);
            let own =
                view_name.and_then(|view| copies().find(|(_, zone)| zone.views.iter().any(|listed| listed == view)));
            let Some((position, _)) = own.or_else(|| copies().find(|(_, zone)| zone.views.is_empty())) else {
                continue;
            };
            let same = |plan: &&mut Plan<'_>| {
                plan.position == position
                    && plan.addresses.iter().map(|known| known.address).eq(addresses.iter().map(|known| known.address))
            };
            match plans.iter_mut().find(|plan| same(plan)) {
                Some(plan) => plan.audiences.push(audience),
                None => plans.push(Plan { position, audiences: vec![audience], addresses }),
            }
        }
    }
    plans.sort_by_key(|plan| plan.position);
    plans
}

/// The records of one planned copy, with where each came from.
fn load_copy(
    config: &Config,
    plan: &Plan<'_>,
    published: &[Record],
) -> Result<(Vec<Record>, Vec<Origin>), Vec<String>> {
    let addresses: Vec<IpAddr> = plan.addresses.iter().map(|known| known.address).collect();
    let derived = derived::records(config, &addresses);
    compile::load_zone(config, plan.position, published, &derived)
}

/// A fully qualified lowercase name from a validated config name.
pub fn absolute(text: &str) -> Name {
    Name::from_ascii(format!("{text}.")).map(|name| name.to_lowercase()).unwrap_or_else(|_| Name::root())
}

/// Who may transfer a zone: its secondaries, by address.
pub fn may_transfer(zone: &Zone, client: std::net::IpAddr) -> bool {
    zone.secondaries.iter().any(|secondary: &SocketAddr| secondary.ip() == client)
}
