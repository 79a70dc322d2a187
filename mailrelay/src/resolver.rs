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

/// A failed lookup; `permanent` when the domain does not exist, refuses mail (null MX) or
/// points back at this relay.
#[derive(Debug, Clone)]
pub struct LookupFailure {
    pub permanent: bool,
    /// The enhanced status code for the bounce or the deferral (RFC 3463), e.g. `5.4.6`.
    pub status: &'static str,
    pub message: String,
}

impl LookupFailure {
    fn permanent(status: &'static str, message: String) -> Self {
        Self { permanent: true, status, message }
    }

    fn temporary(message: String) -> Self {
        Self { permanent: false, status: "4.4.3", message }
    }
}

/// What counts as this relay when an MX answer points at it: its own names and addresses,
/// any address of a local interface, and loopback.
#[derive(Debug, Clone, Default)]
pub struct Myself {
    pub hostnames: Vec<String>,
    pub addresses: Vec<IpAddr>,
}

impl Myself {
    pub fn is_me(&self, host: &str, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        let host = host.trim_end_matches('.');
        ip.is_loopback()
            || ip.is_unspecified()
            || self.addresses.contains(&ip)
            || self.hostnames.iter().any(|name| name.eq_ignore_ascii_case(host))
            // Only an address of this host can be bound.
            || std::net::UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok()
    }
}

/// MX hosts in preference order with their addresses, minus this relay (RFC 5321 5.1, as
/// Postfix does): an MX host that is this relay, and every host not more preferred than it,
/// is dropped; when that leaves nothing, the mail would loop and bounces (`5.4.6`).
pub fn exclude_myself(
    domain: &str,
    hosts: Vec<(u16, String, Vec<IpAddr>)>,
    is_me: impl Fn(&str, IpAddr) -> bool,
) -> Result<Vec<Exchanger>, LookupFailure> {
    let mine = hosts.iter().find_map(|(preference, host, addresses)| {
        let name = host.trim_end_matches('.');
        addresses.iter().find(|&&ip| is_me(name, ip)).map(|ip| (*preference, host.clone(), *ip))
    });
    let kept: Vec<Exchanger> = hosts
        .into_iter()
        .filter(|(preference, _, _)| mine.as_ref().is_none_or(|(limit, _, _)| preference < limit))
        .flat_map(|(_, host, addresses)| {
            let host = host.trim_end_matches('.').to_owned();
            addresses.into_iter().map(move |ip| Exchanger { host: host.clone(), address: SocketAddr::new(ip, 25) })
        })
        .collect();
    match mine {
        Some((_, host, ip)) if kept.is_empty() => Err(LookupFailure::permanent(
            "5.4.6",
            format!(
                "mail for {domain} loops back to myself: its MX host {} is [{ip}], this relay or a loopback address",
                host.trim_end_matches('.')
            ),
        )),
        _ => Ok(kept),
    }
}

pub type LookupResult<'a> = Pin<Box<dyn Future<Output = Result<Vec<Exchanger>, LookupFailure>> + Send + 'a>>;

/// A resolver configuration asking `forwarders` (UDP, and TCP for truncated answers) on
/// their ports: the MX lookups' and the sender checks' (mail-auth uses the same
/// hickory-resolver).
pub(crate) fn forwarder_config(forwarders: &[SocketAddr]) -> ResolverConfig {
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
    ResolverConfig::from_name_servers(servers)
}

/// Finds the hosts that accept mail for a domain, most preferred first.
pub trait MailExchangerLookup: Send + Sync {
    fn mail_exchangers<'a>(&'a self, domain: &'a str) -> LookupResult<'a>;

    /// Whether the hosts come from DNS answers, so that DANE (RFC 7672) may ask the same
    /// resolvers whether DNSSEC vouches for them. False for fixed maps.
    fn answers_from_dns(&self) -> bool {
        false
    }
}

/// MX lookups through hickory-resolver: the configured forwarders, else /etc/resolv.conf.
pub struct DnsLookup {
    resolver: TokioResolver,
    myself: Myself,
}

impl DnsLookup {
    /// `myself` are the names and addresses MX answers must not lead back to.
    pub fn new(forwarders: &[SocketAddr], myself: Myself) -> Result<Self, String> {
        let builder = if forwarders.is_empty() {
            TokioResolver::builder_tokio().map_err(|error| format!("reading the system DNS configuration: {error}"))?
        } else {
            TokioResolver::builder_with_config(forwarder_config(forwarders), TokioRuntimeProvider::default())
        };
        let resolver = builder.build().map_err(|error| format!("building the DNS resolver: {error}"))?;
        Ok(Self { resolver, myself })
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
                return Err(LookupFailure::permanent("5.1.2", format!("domain {domain} does not exist")));
            }
            Err(error) if error.is_no_records_found() => Vec::new(),
            Err(error) => {
                return Err(LookupFailure::temporary(format!("MX lookup for {domain}: {error}")));
            }
        };
        // RFC 7505: a single MX "." means the domain accepts no mail.
        if hosts.len() == 1 && (hosts[0].1 == "." || hosts[0].1.is_empty()) {
            return Err(LookupFailure::permanent("5.1.10", format!("{domain} accepts no mail (null MX)")));
        }
        if hosts.is_empty() {
            // RFC 5321 5.1: no MX means the domain itself, by its A/AAAA records.
            hosts.push((0, fqdn.clone()));
        }
        // Equal preferences are shuffled to spread load (RFC 5321 5.1), then sorted stably.
        use rand::seq::SliceRandom;
        hosts.shuffle(&mut rand::rng());
        hosts.sort_by_key(|(preference, _)| *preference);
        let mut resolved = Vec::new();
        let mut last_error = None;
        for (preference, host) in hosts {
            match self.resolver.lookup_ip(host.as_str()).await {
                Ok(addresses) => resolved.push((preference, host, addresses.iter().collect())),
                Err(error) => last_error = Some(format!("address lookup for {host}: {error}")),
            }
        }
        let exchangers = exclude_myself(domain, resolved, |host, ip| self.myself.is_me(host, ip))?;
        if exchangers.is_empty() {
            let message = last_error.unwrap_or_else(|| format!("no addresses for the mail hosts of {domain}"));
            return Err(LookupFailure::temporary(message));
        }
        Ok(exchangers)
    }
}

impl MailExchangerLookup for DnsLookup {
    fn mail_exchangers<'a>(&'a self, domain: &'a str) -> LookupResult<'a> {
        Box::pin(self.lookup(domain))
    }

    fn answers_from_dns(&self) -> bool {
        true
    }
}

/// Used when no resolver could be set up (no forwarders and no readable /etc/resolv.conf):
/// foreign mail waits in the queue with this reason instead of the relay refusing to start.
pub struct UnavailableLookup {
    pub reason: String,
}

impl MailExchangerLookup for UnavailableLookup {
    fn mail_exchangers<'a>(&'a self, _domain: &'a str) -> LookupResult<'a> {
        Box::pin(async move { Err(LookupFailure::temporary(self.reason.clone())) })
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
                None => Err(LookupFailure::permanent("5.1.2", format!("domain {domain} does not exist"))),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn this_relay_and_less_preferred_hosts_are_dropped() {
        let me = |host: &str, address: IpAddr| host == "mail.ninhthuan.gov.vn" || address == ip("10.20.0.5");
        let hosts = vec![
            (10, "mx1.example.org.".to_owned(), vec![ip("192.0.2.1")]),
            (20, "mail.ninhthuan.gov.vn.".to_owned(), vec![ip("192.0.2.9")]),
            (30, "backup.example.org.".to_owned(), vec![ip("192.0.2.3")]),
        ];
        let kept = exclude_myself("example.org", hosts, me).unwrap();
        assert_eq!(kept, vec![Exchanger { host: "mx1.example.org".into(), address: "192.0.2.1:25".parse().unwrap() }]);
        let hosts = vec![
            (10, "hub.example.org".to_owned(), vec![ip("10.20.0.5")]),
            (20, "backup.example.org".to_owned(), vec![ip("192.0.2.3")]),
        ];
        let failure = exclude_myself("example.org", hosts, me).unwrap_err();
        assert!(failure.permanent && failure.status == "5.4.6", "{failure:?}");
        assert!(failure.message.contains("loops back to myself") && failure.message.contains("[10.20.0.5]"));
    }

    #[test]
    fn loopback_and_local_addresses_are_myself() {
        let myself = Myself { hostnames: vec!["mail.ninhthuan.gov.vn".into()], addresses: vec![ip("198.51.100.7")] };
        for address in ["127.0.0.1", "127.3.2.1", "::1", "::ffff:127.0.0.1", "0.0.0.0", "198.51.100.7"] {
            assert!(myself.is_me("mx.example.org", ip(address)), "{address}");
        }
        assert!(myself.is_me("MAIL.ninhthuan.gov.vn.", ip("192.0.2.1")));
        // TEST-NET-1 is never a local interface.
        assert!(!myself.is_me("mx.example.org", ip("192.0.2.1")));
    }
}
