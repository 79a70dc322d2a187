//! Where foreign mail goes: MX lookups (RFC 5321 5.1) behind a small trait, so tests can use a
//! fixed map instead of DNS.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;

/// One host to try, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exchanger {
    /// The host name (for TLS SNI and logs).
    pub host: String,
    pub address: SocketAddr,
}

/// A failed lookup; `permanent` when the domain does not exist or refuses mail (null MX).
#[derive(Debug, Clone)]
pub struct LookupFailure {
    pub permanent: bool,
    pub message: String,
}

pub type LookupResult<'a> = Pin<Box<dyn Future<Output = Result<Vec<Exchanger>, LookupFailure>> + Send + 'a>>;

/// Finds the hosts that accept mail for a domain, most preferred first.
pub trait MailExchangerLookup: Send + Sync {
    fn mail_exchangers<'a>(&'a self, domain: &'a str) -> LookupResult<'a>;
}

/// MX lookups through hickory-resolver: the configured forwarders, else /etc/resolv.conf.
pub struct DnsLookup {
    resolver: TokioResolver,
}

impl DnsLookup {
    pub fn new(forwarders: &[SocketAddr]) -> Result<Self, String> {
        let builder = if forwarders.is_empty() {
            TokioResolver::builder_tokio().map_err(|error| format!("reading the system DNS configuration: {error}"))?
        } else {
            let servers = forwarders
                .iter()
                .map(|forwarder| {
                    let mut server = NameServerConfig::udp_and_tcp(forwarder.ip());
                    for connection in &mut server.connections {
                        connection.port = forwarder.port();
                    }
                    server
                })
                .collect();
            TokioResolver::builder_with_config(
                ResolverConfig::from_name_servers(servers),
                TokioRuntimeProvider::default(),
            )
        };
        let resolver = builder.build().map_err(|error| format!("building the DNS resolver: {error}"))?;
        Ok(Self { resolver })
    }

    async fn lookup(&self, domain: &str) -> Result<Vec<Exchanger>, LookupFailure> {
        let fqdn = format!("{domain}.");
        let mut hosts: Vec<(u16, String)> = match self.resolver.mx_lookup(fqdn.as_str()).await {
            Ok(lookup) => lookup
                .answers()
                .iter()
                .filter_map(|record| match &record.data {
                    RData::MX(mx) => Some((mx.preference, mx.exchange.to_ascii())),
                    _ => None,
                })
                .collect(),
            Err(error) if error.is_nx_domain() => {
                return Err(LookupFailure { permanent: true, message: format!("domain {domain} does not exist") });
            }
            Err(error) if error.is_no_records_found() => Vec::new(),
            Err(error) => {
                return Err(LookupFailure { permanent: false, message: format!("MX lookup for {domain}: {error}") });
            }
        };
        // RFC 7505: a single MX "." means the domain accepts no mail.
        if hosts.len() == 1 && (hosts[0].1 == "." || hosts[0].1.is_empty()) {
            return Err(LookupFailure { permanent: true, message: format!("{domain} accepts no mail (null MX)") });
        }
        if hosts.is_empty() {
            // RFC 5321 5.1: no MX means the domain itself, by its A/AAAA records.
            hosts.push((0, fqdn.clone()));
        }
        // Equal preferences are shuffled to spread load (RFC 5321 5.1), then sorted stably.
        use rand::seq::SliceRandom;
        hosts.shuffle(&mut rand::rng());
        hosts.sort_by_key(|(preference, _)| *preference);
        let mut exchangers = Vec::new();
        let mut last_error = None;
        for (_, host) in hosts {
            match self.resolver.lookup_ip(host.as_str()).await {
                Ok(addresses) => exchangers.extend(addresses.iter().map(|ip: IpAddr| Exchanger {
                    host: host.trim_end_matches('.').to_owned(),
                    address: SocketAddr::new(ip, 25),
                })),
                Err(error) => last_error = Some(format!("address lookup for {host}: {error}")),
            }
        }
        if exchangers.is_empty() {
            let message = last_error.unwrap_or_else(|| format!("no addresses for the mail hosts of {domain}"));
            return Err(LookupFailure { permanent: false, message });
        }
        Ok(exchangers)
    }
}

impl MailExchangerLookup for DnsLookup {
    fn mail_exchangers<'a>(&'a self, domain: &'a str) -> LookupResult<'a> {
        Box::pin(self.lookup(domain))
    }
}

/// Used when no resolver could be set up (no forwarders and no readable /etc/resolv.conf):
/// foreign mail waits in the queue with this reason instead of the relay refusing to start.
pub struct UnavailableLookup {
    pub reason: String,
}

impl MailExchangerLookup for UnavailableLookup {
    fn mail_exchangers<'a>(&'a self, _domain: &'a str) -> LookupResult<'a> {
        Box::pin(async move { Err(LookupFailure { permanent: false, message: self.reason.clone() }) })
    }
}

/// A fixed map from domain to hosts, for tests and for isolated networks.
#[derive(Debug, Default, Clone)]
pub struct StaticLookup {
    pub routes: std::collections::HashMap<String, Vec<SocketAddr>>,
}

impl MailExchangerLookup for StaticLookup {
    fn mail_exchangers<'a>(&'a self, domain: &'a str) -> LookupResult<'a> {
        Box::pin(async move {
            match self.routes.get(domain) {
                Some(addresses) => Ok(addresses
                    .iter()
                    .map(|address| Exchanger { host: domain.to_owned(), address: *address })
                    .collect()),
                None => Err(LookupFailure { permanent: true, message: format!("domain {domain} does not exist") }),
            }
        })
    }
}
