//! Which MX hosts a message may go to and with what TLS, from the operator's `require_tls_to`,
//! the domain's MTA-STS policy (RFC 8461 4 and 5), the message's `REQUIRETLS` (RFC 8689 4.2.1)
//! and its `TLS-Required: No` header (RFC 8689 4.2.2). A pure decision: no I/O.

use crate::mta_sts::{Mode, Policy};
use crate::outbound::TlsPolicy;
use crate::resolver::Exchanger;

/// What the message and the operator ask for on the way to one domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Asks {
    /// The domain is in `require_tls_to`.
    pub operator_requires_tls: bool,
    /// Accepted with `REQUIRETLS` and a non-null sender (RFC 8689 4.2.1 exempts bounces).
    pub requiretls: bool,
    /// `TLS-Required: No` (ignored under `REQUIRETLS`, RFC 8689 4.1).
    pub policy_waived: bool,
}

/// What an MTA-STS policy does to this delivery, for logs and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    /// No policy applies (none, `none`, waived, or `REQUIRETLS` decided).
    Nothing,
    /// A `testing` policy: its failures are logged and counted, delivery goes on.
    Testing(Policy),
    /// An `enforce` policy chose the hosts and requires TLS: a TLS failure is its failure.
    Enforced,
}

/// The decision for one domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Try these hosts in order with `tls`.
    Send { hosts: Vec<Exchanger>, tls: TlsPolicy, report: Report },
    /// No host may be used; `permanent` bounces, else the message waits.
    Refuse { permanent: bool, diagnostic: String },
}

/// Decides for the MX hosts of `domain`, given the policy found for it (`None`: none, or
/// MTA-STS is off).
pub fn plan(domain: &str, exchangers: Vec<Exchanger>, policy: Option<&Policy>, asks: Asks) -> Plan {
    let operator_tls = if asks.operator_requires_tls { TlsPolicy::Required } else { TlsPolicy::Opportunistic };
    if asks.requiretls {
        // RFC 8689 4.2.1: without DNSSEC the MX name must be validated by MTA-STS, and the
        // certificate must verify for it.
        let Some(policy) = policy.filter(|policy| policy.mode != Mode::None) else {
            return Plan::Refuse {
                permanent: true,
                diagnostic: format!("550 5.7.10 REQUIRETLS: {domain} has no MTA-STS policy to validate its MX hosts"),
            };
        };
        let hosts = matching(exchangers, policy);
        if hosts.is_empty() {
            return Plan::Refuse {
                permanent: true,
                diagnostic: format!("550 5.7.10 REQUIRETLS: no MX host of {domain} is listed in its MTA-STS policy"),
            };
        }
        return Plan::Send { hosts, tls: TlsPolicy::Required, report: Report::Nothing };
    }
    let policy = policy.filter(|_| !asks.policy_waived);
    match policy.map(|policy| (policy, policy.mode)) {
        Some((policy, Mode::Enforce)) => {
            let hosts = matching(exchangers, policy);
            if hosts.is_empty() {
                return Plan::Refuse {
                    permanent: false,
                    diagnostic: format!("451 4.7.5 MTA-STS: no MX host of {domain} matches its enforced policy"),
                };
            }
            Plan::Send { hosts, tls: TlsPolicy::Required, report: Report::Enforced }
        }
        Some((policy, Mode::Testing)) => {
            Plan::Send { hosts: exchangers, tls: operator_tls, report: Report::Testing(policy.clone()) }
        }
        Some((_, Mode::None)) | None => Plan::Send { hosts: exchangers, tls: operator_tls, report: Report::Nothing },
    }
}

fn matching(exchangers: Vec<Exchanger>, policy: &Policy) -> Vec<Exchanger> {
    exchangers.into_iter().filter(|exchanger| policy.allows(&exchanger.host)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mta_sts::policy::parse_policy;

    fn both() -> Vec<Exchanger> {
        ["mx1.example.vn", "evil.attacker.example"]
            .iter()
            .map(|host| Exchanger { host: (*host).to_owned(), address: "192.0.2.1:25".parse().unwrap() })
            .collect()
    }

    fn policy(mode: &str) -> Policy {
        parse_policy(format!("version: STSv1\nmode: {mode}\nmx: *.example.vn\nmax_age: 600\n").as_bytes()).unwrap()
    }

    const PLAIN: Asks = Asks { operator_requires_tls: false, requiretls: false, policy_waived: false };

    #[test]
    fn enforce_keeps_only_listed_hosts_and_requires_verified_tls() {
        let Plan::Send { hosts, tls, report } = plan("example.vn", both(), Some(&policy("enforce")), PLAIN) else {
            panic!()
        };
        assert_eq!(hosts.iter().map(|host| host.host.as_str()).collect::<Vec<_>>(), ["mx1.example.vn"]);
        assert_eq!((tls, report), (TlsPolicy::Required, Report::Enforced));
        let only_evil = vec![both()[1].clone()];
        let refused = plan("example.vn", only_evil, Some(&policy("enforce")), PLAIN);
        assert!(
            matches!(refused, Plan::Refuse { permanent: false, ref diagnostic } if diagnostic.starts_with("451 4.7.5"))
        );
    }

    #[test]
    fn testing_none_and_a_waiver_deliver_as_before() {
        for (policy, asks) in [
            (Some(policy("testing")), PLAIN),
            (Some(policy("none")), PLAIN),
            (None, PLAIN),
            (Some(policy("enforce")), Asks { policy_waived: true, ..PLAIN }),
        ] {
            let Plan::Send { hosts: kept, tls, .. } = plan("example.vn", both(), policy.as_ref(), asks) else {
                panic!("{policy:?}")
            };
            assert_eq!((kept, tls), (both(), TlsPolicy::Opportunistic), "{policy:?} {asks:?}");
        }
        let waived_but_operator = Asks { policy_waived: true, operator_requires_tls: true, ..PLAIN };
        let Plan::Send { tls, .. } = plan("example.vn", both(), Some(&policy("enforce")), waived_but_operator) else {
            panic!()
        };
        assert_eq!(tls, TlsPolicy::Required, "TLS-Required: No does not lift the operator's require_tls_to");
    }

    #[test]
    fn requiretls_needs_a_policy_listing_the_host_and_ignores_the_waiver() {
        let asks = Asks { requiretls: true, policy_waived: true, ..PLAIN };
        for policy in [None, Some(policy("none"))] {
            let refused = plan("example.vn", both(), policy.as_ref(), asks);
            assert!(
                matches!(refused, Plan::Refuse { permanent: true, ref diagnostic } if diagnostic.contains("5.7.10"))
            );
        }
        for mode in ["enforce", "testing"] {
            let Plan::Send { hosts, tls, .. } = plan("example.vn", both(), Some(&policy(mode)), asks) else { panic!() };
            assert_eq!((hosts.len(), tls), (1, TlsPolicy::Required), "{mode}");
        }
    }
}
