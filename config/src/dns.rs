//! `[dns]`: authoritative zones, views, forwarding and who may recurse.

use std::collections::HashSet;
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
    tcp_idle_seconds: Option<Spanned<i64>>,
    cache_entries: Option<Spanned<i64>>,
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
    /// Open TCP connections at most; further connections wait for a free slot.
    pub tcp_max_connections: usize,
    /// A TCP connection with no complete query for this long is closed.
    pub tcp_idle_timeout: Duration,
    /// Entries in the forwarder's shared answer cache (positive and negative).
    pub cache_entries: usize,
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
}

pub(crate) fn validate(raw: RawDns, _server: &Server, context: &mut Context<'_>) -> Dns {
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
        views.push(View { name, clients });
    }

    let mut zones = Vec::new();
    let mut zone_names: HashSet<(DomainName, Vec<String>)> = HashSet::new();
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
        if raw_zone.file.is_none() && raw_zone.records.is_empty() {
            // A zone with neither is still served: it holds the SOA, NS and derived records.
        }
        zones.push(Zone { name, file, records, secondaries, views: zone_views });
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
    let tcp_idle_seconds = bounded(context, raw.tcp_idle_seconds.as_ref(), "dns.tcp_idle_seconds", 1, 3600, 10);
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
        tcp_max_connections: tcp_max_connections as usize,
        tcp_idle_timeout: Duration::from_secs(tcp_idle_seconds as u64),
        cache_entries: cache_entries as usize,
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
