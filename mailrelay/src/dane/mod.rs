//! DANE for outbound delivery (RFC 7672): which MX hosts of a domain have TLSA records that
//! DNSSEC vouches for, and the certificate check that uses them ([`verifier`]).
//!
//! Per delivery to a domain whose MX hosts came from DNS, as Postfix does with
//! `smtp_tls_security_level = dane`:
//! 1. the domain's MX RRset is asked for again with AD set ([`dns`]); when the resolver does
//!    not vouch for it, DANE does not apply to the domain (RFC 7672 2.2.1);
//! 2. per MX host (at most [`MAX_HOSTS`]), its address RRset must be secure too (2.2.2),
//!    then `_25._tcp.HOST` TLSA is asked for (2.2.3): secure usable records make the host a
//!    DANE host; only unusable records require TLS without authentication; an
//!    authenticated denial or an insecure answer leave it to the other policies; any other failure (SERVFAIL, which a validating resolver
//!    also answers for bogus data, a timeout) makes the host unusable for now.
//!
//! What to do with these findings is decided in `delivery::secure`, without I/O.
//! DNS data is only logged through [`crate::mta_sts::policy::sanitize`].

mod der;
pub mod dns;
pub mod tlsa;
pub mod verifier;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use hickory_resolver::proto::rr::{RData, RecordType};

use crate::resolver::Exchanger;
pub use tlsa::{Tlsa, TlsaSet, Usage};

/// MX host names looked up per domain; further hosts are not tried when DANE applies.
pub const MAX_HOSTS: usize = 8;

/// What DNSSEC says about one MX host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostDane {
    /// DANE does not apply: an insecure MX, address or TLSA answer, or secure proof that the
    /// host has no TLSA records.
    NotApplicable,
    /// Secure TLSA records, none usable for SMTP (RFC 7672 3.1.3): TLS is still required,
    /// without authentication (RFC 7672 2.2).
    Unusable,
    /// Secure, usable TLSA records: the host must be authenticated with them.
    Records(TlsaSet),
    /// The lookup failed without an authenticated denial: this host is not used now.
    Failed(String),
}

impl HostDane {
    /// The `result` label of `lienthong_mail_dane_total` for this finding.
    pub fn metric(&self) -> &'static str {
        match self {
            Self::NotApplicable => "not_applicable",
            Self::Unusable => "unusable",
            Self::Records(_) => "tlsa",
            Self::Failed(_) => "lookup_failed",
        }
    }
}

/// What DNSSEC says about a domain's MX hosts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Findings {
    /// The resolver vouched for the MX RRset (or for its absence).
    pub mx_secure: bool,
    /// Host name (lower case, no final dot) -> finding; hosts not listed: not applicable.
    pub hosts: Vec<(String, HostDane)>,
}

impl Findings {
    pub fn host(&self, host: &str) -> &HostDane {
        let host = host.trim_end_matches('.');
        self.hosts
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(host))
            .map_or(&HostDane::NotApplicable, |(_, finding)| finding)
    }
}

/// The resolvers whose AD bit DANE trusts: this appliance's own DNS forwarder when it
/// validates (`own_validating`: its listen addresses and `recursion_from`, given when
/// `[dns]` is enabled with `validate = true` and forwarders) and loopback may use it (a
/// loopback or wildcard listen address, loopback in `recursion_from`); else `forwarders`
/// (empty: the system configuration's, see [`DaneLookup::new`]).
pub fn resolvers(
    own_validating: Option<(&[SocketAddr], &[ipnet::IpNet])>,
    forwarders: &[SocketAddr],
) -> Vec<SocketAddr> {
    let Some((listen, recursion_from)) = own_validating else { return forwarders.to_vec() };
    let own: Vec<SocketAddr> = listen
        .iter()
        .filter_map(|listen| {
            let loopback: IpAddr = match listen.ip() {
                ip if ip.is_loopback() => ip,
                IpAddr::V4(ip) if ip.is_unspecified() => Ipv4Addr::LOCALHOST.into(),
                IpAddr::V6(ip) if ip.is_unspecified() => Ipv6Addr::LOCALHOST.into(),
                _ => return None,
            };
            recursion_from
                .iter()
                .any(|network| network.contains(&loopback))
                .then(|| SocketAddr::new(loopback, listen.port()))
        })
        .collect();
    if own.is_empty() { forwarders.to_vec() } else { own }
}

/// Asks the configured resolvers about MX hosts.
pub struct DaneLookup {
    servers: Vec<SocketAddr>,
}

impl DaneLookup {
    /// Asks `forwarders` (see [`resolvers`]), else the name servers of the system
    /// configuration.
    pub fn new(forwarders: &[SocketAddr]) -> Self {
        let servers = if forwarders.is_empty() {
            match hickory_resolver::system_conf::read_system_conf() {
                Ok((config, _)) => config.name_servers().iter().map(|server| SocketAddr::new(server.ip, 53)).collect(),
                Err(error) => {
                    tracing::warn!(%error, "no DNS resolver for DANE lookups: DANE does not apply");
                    Vec::new()
                }
            }
        } else {
            forwarders.to_vec()
        };
        Self { servers }
    }

    /// The findings for `domain`'s hosts `exchangers` (in preference order).
    pub async fn findings(&self, domain: &str, exchangers: &[Exchanger]) -> Findings {
        if self.servers.is_empty() {
            return Findings::default();
        }
        let mut names: Vec<String> = Vec::new();
        for exchanger in exchangers {
            let name = exchanger.host.trim_end_matches('.').to_ascii_lowercase();
            if !names.contains(&name) && names.len() < MAX_HOSTS {
                names.push(name);
            }
        }
        match dns::ask(&self.servers, domain, RecordType::MX).await {
            Ok(answer) if answer.authenticated => {}
            Ok(_) => return Findings::default(),
            Err(reason) => {
                // The MX answer used for delivery may be secure: without knowing, no host may
                // be used (else blocking this query would turn DANE off).
                let failed = HostDane::Failed(format!("MX security of {domain}: {reason}"));
                return Findings {
                    mx_secure: false,
                    hosts: names.into_iter().map(|name| (name, failed.clone())).collect(),
                };
            }
        }
        let mut hosts = Vec::with_capacity(names.len());
        for name in names {
            let ipv6 = exchangers
                .iter()
                .find(|exchanger| exchanger.host.trim_end_matches('.').eq_ignore_ascii_case(&name))
                .is_some_and(|exchanger| exchanger.address.is_ipv6());
            let finding = self.host(&name, ipv6).await;
            hosts.push((name, finding));
        }
        // Hosts beyond the limit are left out, so they are not tried unauthenticated.
        for exchanger in exchangers {
            let name = exchanger.host.trim_end_matches('.').to_ascii_lowercase();
            if !hosts.iter().any(|(known, _)| *known == name) {
                hosts.push((name, HostDane::Failed(format!("more than {MAX_HOSTS} MX hosts"))));
            }
        }
        Findings { mx_secure: true, hosts }
    }

    async fn host(&self, host: &str, ipv6: bool) -> HostDane {
        let address_type = if ipv6 { RecordType::AAAA } else { RecordType::A };
        match dns::ask(&self.servers, host, address_type).await {
            Ok(answer) if answer.authenticated => {}
            Ok(_) => return HostDane::NotApplicable,
            Err(reason) => return HostDane::Failed(format!("address of {host}: {reason}")),
        }
        let name = format!("_25._tcp.{host}");
        let answer = match dns::ask(&self.servers, &name, RecordType::TLSA).await {
            Ok(answer) => answer,
            Err(reason) => return HostDane::Failed(format!("TLSA of {host}: {reason}")),
        };
        if !answer.authenticated {
            return HostDane::NotApplicable;
        }
        let records: Vec<Tlsa> = answer
            .records
            .iter()
            .filter_map(|record| match &record.data {
                RData::TLSA(tlsa) => Some(Tlsa {
                    usage: tlsa.cert_usage.into(),
                    selector: tlsa.selector.into(),
                    matching: tlsa.matching.into(),
                    data: tlsa.cert_data.clone(),
                }),
                _ => None,
            })
            .collect();
        if records.is_empty() {
            // NXDOMAIN or NODATA, authenticated (RFC 7672 2.2.3: not a DANE host).
            return HostDane::NotApplicable;
        }
        match TlsaSet::usable(records) {
            Some(set) => HostDane::Records(set),
            None => HostDane::Unusable,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addresses(list: &[&str]) -> Vec<SocketAddr> {
        list.iter().map(|address| address.parse().unwrap()).collect()
    }

    #[test]
    fn the_appliances_own_validating_forwarder_is_asked_over_loopback_when_it_may_be() {
        let forwarders = addresses(&["192.0.2.53:53"]);
        let loopback: Vec<ipnet::IpNet> = vec!["127.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()];
        let listen = addresses(&["0.0.0.0:53", "[::]:5353", "10.20.0.5:53"]);
        assert_eq!(resolvers(Some((&listen, &loopback)), &forwarders), addresses(&["127.0.0.1:53", "[::1]:5353"]));
        // Only a specific address (its queries would not come from loopback), or loopback
        // not allowed to recurse: the forwarders, as for the MX lookups.
        let specific = addresses(&["10.20.0.5:53"]);
        assert_eq!(resolvers(Some((&specific, &loopback)), &forwarders), forwarders);
        let office: Vec<ipnet::IpNet> = vec!["10.20.0.0/16".parse().unwrap()];
        assert_eq!(resolvers(Some((&listen, &office)), &forwarders), forwarders);
        assert_eq!(resolvers(None, &forwarders), forwarders);
    }
}
