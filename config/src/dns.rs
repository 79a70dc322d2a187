//! `[dns]`: authoritative zones, views, forwarding and who may recurse.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;
use toml::Spanned;

use crate::names::DomainName;
use crate::server::Server;
use crate::validate::Context;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDns {
    enabled: Option<bool>,
    listen: Option<Vec<Spanned<String>>>,
    forwarders: Option<Vec<Spanned<String>>>,
    recursion_from: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    zone: Vec<RawZone>,
    #[serde(default)]
    forward: Vec<RawForward>,
    #[serde(default)]
    view: Vec<RawView>,
    rate_limit: Option<Spanned<i64>>,
    rate_limit_exempt: Option<Vec<Spanned<String>>>,
    tcp_max_connections: Option<Spanned<i64>>,
    tcp_max_per_client: Option<Spanned<i64>>,
    addresses: Option<Vec<Spanned<String>>>,
    tcp_idle_seconds: Option<Spanned<i64>>,
    cache_entries: Option<Spanned<i64>>,
    validate: Option<bool>,
    #[serde(default)]
    trust_anchors: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawZone {
    name: Spanned<String>,
    file: Option<Spanned<String>>,
    #[serde(default)]
    records: Vec<Spanned<String>>,
    #[serde(default)]
    secondaries: Vec<Spanned<String>>,
    #[serde(default)]
    views: Vec<Spanned<String>>,
    dnssec: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawForward {
    zone: Spanned<String>,
    to: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawView {
    name: Spanned<String>,
    clients: Vec<Spanned<String>>,
    addresses: Option<Vec<Spanned<String>>>,
}

/// The DNS service's settings.
#[derive(Debug, Clone)]
pub struct Dns {
    pub enabled: bool,
    /// UDP and TCP listen addresses.
    pub listen: Vec<SocketAddr>,
    /// Upstream resolvers for names outside the local zones. Empty: no forwarding.
    pub forwarders: Vec<SocketAddr>,
    /// Clients that may use forwarding. Default: loopback only.
    pub recursion_from: Vec<IpNet>,
    pub zones: Vec<Zone>,
    pub forward: Vec<ForwardZone>,
    /// Client networks that see view-limited zones, in config order (first match wins).
    pub views: Vec<View>,
    /// UDP responses per second per client prefix (/24 for IPv4, /56 for IPv6); 0: no limit.
    pub rate_limit: u32,
    /// Clients never rate limited. Default: loopback.
    pub rate_limit_exempt: Vec<IpNet>,
    /// The appliance's addresses as published (derived A/AAAA records) to clients that match
    /// no view. Default: `server.addresses`.
    pub addresses: Vec<ApplianceAddress>,
    /// Open TCP connections at most; further connections wait for a free slot.
    pub tcp_max_connections: usize,
    /// Open TCP connections per client (IPv4 address or IPv6 /64) at most; a client over it
    /// has its new connection closed at once.
    pub tcp_max_per_client: usize,
    /// A TCP connection with no complete query for this long is closed.
    pub tcp_idle_timeout: Duration,
    /// Entries in the forwarder's shared answer cache (positive and negative).
    pub cache_entries: usize,
    /// Validate forwarded answers with DNSSEC (AD only for validated ones; bogus: SERVFAIL).
    pub validate: bool,
    /// Trust anchors besides the built-in root KSKs: DNSKEY records in zone-file syntax.
    pub trust_anchors: Vec<InlineRecord>,
}

/// One authoritative zone.
#[derive(Debug, Clone)]
pub struct Zone {
    pub name: DomainName,
    /// An RFC 1035 zone file, resolved against the config file's directory.
    pub file: Option<PathBuf>,
    /// Inline records in zone-file syntax, relative to the zone name.
    pub records: Vec<InlineRecord>,
    /// Hosts that may AXFR this zone (matched by address) and are sent NOTIFY (at this port;
    /// 53 unless the operator wrote `IP:PORT`).
    pub secondaries: Vec<SocketAddr>,
    /// Views that see this zone; empty means every client.
    pub views: Vec<String>,
    /// Sign every view's copy (ECDSA P-256, NSEC3), keys kept in `state_dir/dnssec/`.
    pub dnssec: bool,
}

/// A record line from the config, with where it stands so the DNS service can point at it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InlineRecord {
    pub text: String,
    /// `FILE:LINE:COL` of the string in the config file.
    pub location: String,
}

/// Conditional forwarding: names within `zone` go to `to`.
#[derive(Debug, Clone)]
pub struct ForwardZone {
    pub zone: DomainName,
    pub to: Vec<SocketAddr>,
}

/// A named set of client networks.
#[derive(Debug, Clone)]
pub struct View {
    pub name: String,
    pub clients: Vec<IpNet>,
    /// The appliance's addresses as this view's clients reach it (its derived A/AAAA
    /// records). Default: `server.addresses`.
    pub addresses: Vec<ApplianceAddress>,
}

/// One address of the appliance as published in DNS, with where the operator wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplianceAddress {
    pub address: IpAddr,
    /// `FILE:LINE:COL: key.path` of the value (for warnings about it).
    pub origin: String,
}

/// A list of appliance addresses at `path`, or `server.addresses` when absent.
fn appliance_addresses(
    context: &mut Context<'_>,
    values: Option<&Vec<Spanned<String>>>,
    path: &str,
    server: &Server,
) -> Vec<ApplianceAddress> {
    let Some(values) = values else {
        return server
            .addresses
            .iter()
            .zip(&server.address_origins)
            .map(|(address, origin)| ApplianceAddress { address: *address, origin: origin.clone() })
            .collect();
    };
    let mut addresses: Vec<ApplianceAddress> = Vec::new();
    for (index, value) in values.iter().enumerate() {
        let Some(address) = context.ip(value, &format!("{path}[{index}]")) else { continue };
        if address.is_unspecified() {
            context.error(
                value.span(),
                format!("{path}[{index}]"),
                "0.0.0.0 and :: cannot be reached (expected the appliance's address as these clients see it)",
            );
        } else if !addresses.iter().any(|known| known.address == address) {
            addresses.push(ApplianceAddress {
                address,
                origin: format!("{}: {path}[{index}]", context.location(value.span())),
            });
        }
    }
    // An empty list is allowed: these clients get no A/AAAA for the appliance's names.
    addresses
}

pub(crate) fn validate(raw: RawDns, server: &Server, context: &mut Context<'_>) -> Dns {
    let listen = match &raw.listen {
        None => vec![SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 1053)],
        Some(values) => values
            .iter()
            .enumerate()
            .filter_map(|(index, value)| context.socket_addr(value, &format!("dns.listen[{index}]")))
            .collect(),
    };
    let forwarders = raw
        .forwarders
        .iter()
        .flatten()
        .enumerate()
        .filter_map(|(index, value)| context.socket_addr_or_ip(value, &format!("dns.forwarders[{index}]"), 53))
        .collect();
    let recursion_from = match &raw.recursion_from {
        None => vec!["127.0.0.0/8".parse().expect("literal"), "::1/128".parse().expect("literal")],
        Some(values) => values
            .iter()
            .enumerate()
            .filter_map(|(index, value)| context.network(value, &format!("dns.recursion_from[{index}]")))
            .collect(),
    };

    let mut views = Vec::new();
    let mut view_names = HashSet::new();
    for (index, raw_view) in raw.view.iter().enumerate() {
        let path = format!("dns.view[{index}]");
        let name = raw_view.name.get_ref().clone();
        if name.is_empty() || !view_names.insert(name.clone()) {
            context.error(
                raw_view.name.span(),
                format!("{path}.name"),
                format!("view name `{name}` is empty or used twice"),
            );
        }
        let clients = raw_view
            .clients
            .iter()
            .enumerate()
            .filter_map(|(client, value)| context.network(value, &format!("{path}.clients[{client}]")))
            .collect();
        let addresses = appliance_addresses(context, raw_view.addresses.as_ref(), &format!("{path}.addresses"), server);
        views.push(View { name, clients, addresses });
    }

    let mut zones = Vec::new();
    let mut zone_names: HashSet<(DomainName, Vec<String>)> = HashSet::new();
    // Whether each zone name is signed: every view's copy of a name must agree (one DS).
    let mut signed_names: HashMap<DomainName, bool> = HashMap::new();
    for (index, raw_zone) in raw.zone.iter().enumerate() {
        let path = format!("dns.zone[{index}]");
        let Some(name) = context.domain(&raw_zone.name, &format!("{path}.name")) else {
            continue;
        };
        let file = raw_zone.file.as_ref().and_then(|file| context.existing_file(file, &format!("{path}.file")));
        let records = raw_zone
            .records
            .iter()
            .map(|record| {
                let (line, column) = crate::error::line_column(context.diagnostics.source(), record.span().start);
                InlineRecord {
                    text: record.get_ref().clone(),
                    location: format!("{}:{line}:{column}", context.diagnostics.file()),
                }
            })
            .collect();
        let secondaries = raw_zone
            .secondaries
            .iter()
            .enumerate()
            .filter_map(|(secondary, value)| {
                context.socket_addr_or_ip(value, &format!("{path}.secondaries[{secondary}]"), 53)
            })
            .collect();
        let mut zone_views = Vec::new();
        for (view_index, view) in raw_zone.views.iter().enumerate() {
            if view_names.contains(view.get_ref()) {
                zone_views.push(view.get_ref().clone());
            } else {
                context.error(
                    view.span(),
                    format!("{path}.views[{view_index}]"),
                    format!("no [[dns.view]] is named `{}`", view.get_ref()),
                );
            }
        }
        if !zone_names.insert((name.clone(), zone_views.clone())) {
            context.error(
                raw_zone.name.span(),
                format!("{path}.name"),
                format!("zone `{name}` is defined twice for the same views"),
            );
        }
        let dnssec = raw_zone.dnssec.unwrap_or(false);
        if *signed_names.entry(name.clone()).or_insert(dnssec) != dnssec {
            context.error(
                raw_zone.name.span(),
                format!("{path}.dnssec"),
                format!(
                    "zone `{name}` is signed in one [[dns.zone]] and not in another: every view's copy of a zone \
                     must set the same dnssec (the parent's DS covers them all)"
                ),
            );
        }
        if raw_zone.file.is_none() && raw_zone.records.is_empty() {
            // A zone with neither is still served: it holds the SOA, NS and derived records.
        }
        zones.push(Zone { name, file, records, secondaries, views: zone_views, dnssec });
    }

    let mut forward = Vec::new();
    for (index, raw_forward) in raw.forward.iter().enumerate() {
        let path = format!("dns.forward[{index}]");
        let Some(zone) = context.domain(&raw_forward.zone, &format!("{path}.zone")) else {
            continue;
        };
        let to: Vec<SocketAddr> = raw_forward
            .to
            .iter()
            .enumerate()
            .filter_map(|(to, value)| context.socket_addr_or_ip(value, &format!("{path}.to[{to}]"), 53))
            .collect();
        if raw_forward.to.is_empty() {
            context.error(
                raw_forward.zone.span(),
                format!("{path}.to"),
                "no servers to forward to (expected at least one address)",
            );
        }
        forward.push(ForwardZone { zone, to });
    }

    let rate_limit = bounded(context, raw.rate_limit.as_ref(), "dns.rate_limit", 0, 1_000_000, 200);
    let rate_limit_exempt = match &raw.rate_limit_exempt {
        None => vec!["127.0.0.0/8".parse().expect("literal"), "::1/128".parse().expect("literal")],
        Some(values) => values
            .iter()
            .enumerate()
            .filter_map(|(index, value)| context.network(value, &format!("dns.rate_limit_exempt[{index}]")))
            .collect(),
    };
    let tcp_max_connections =
        bounded(context, raw.tcp_max_connections.as_ref(), "dns.tcp_max_connections", 1, 100_000, 256);
    let tcp_max_per_client =
        bounded(context, raw.tcp_max_per_client.as_ref(), "dns.tcp_max_per_client", 1, 100_000, 16);
    let addresses = appliance_addresses(context, raw.addresses.as_ref(), "dns.addresses", server);
    let tcp_idle_seconds = bounded(context, raw.tcp_idle_seconds.as_ref(), "dns.tcp_idle_seconds", 1, 3600, 10);
    let trust_anchors = raw
        .trust_anchors
        .iter()
        .map(|anchor| {
            let (line, column) = crate::error::line_column(context.diagnostics.source(), anchor.span().start);
            InlineRecord {
                text: anchor.get_ref().clone(),
                location: format!("{}:{line}:{column}", context.diagnostics.file()),
            }
        })
        .collect();
    let cache_entries = bounded(context, raw.cache_entries.as_ref(), "dns.cache_entries", 0, 10_000_000, 10_000);

    Dns {
        enabled: raw.enabled.unwrap_or(true),
        listen,
        forwarders,
        recursion_from,
        zones,
        forward,
        views,
        rate_limit: rate_limit as u32,
        rate_limit_exempt,
        addresses,
        tcp_max_connections: tcp_max_connections as usize,
        tcp_max_per_client: tcp_max_per_client as usize,
        tcp_idle_timeout: Duration::from_secs(tcp_idle_seconds as u64),
        cache_entries: cache_entries as usize,
        validate: raw.validate.unwrap_or(false),
        trust_anchors,
    }
}

/// An integer setting within `minimum..=maximum`, or `default` when absent.
fn bounded(
    context: &mut Context<'_>,
    value: Option<&Spanned<i64>>,
    path: &str,
    minimum: i64,
    maximum: i64,
    default: i64,
) -> i64 {
    let Some(value) = value else { return default };
    let number = *value.get_ref();
    if (minimum..=maximum).contains(&number) {
        number
    } else {
        context.error(value.span(), path, format!("{number} is out of range (expected {minimum} to {maximum})"));
        default
    }
}
