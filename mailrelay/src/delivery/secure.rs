//! Which MX hosts a message may go to and with what TLS, from the operator's `require_tls_to`,
//! the domain's MTA-STS policy (RFC 8461 4 and 5), what DNSSEC says about its MX hosts (DANE,
//! RFC 7672), the message's `REQUIRETLS` (RFC 8689 4.2.1) and its `TLS-Required: No` header
//! (RFC 8689 4.2.2). A pure decision: no I/O.
//!
//! DANE comes first, host by host: a host with secure, usable TLSA records is only ever used
//! with them (a failing DANE check is never overridden by MTA-STS, RFC 8461 2, nor by
//! `TLS-Required: No`, which waives policies but not DANE authentication); a host whose TLSA
//! lookup failed is not used now; every other host goes by the other policies.

use crate::dane::{Findings, HostDane};
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

/// One host to try and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub exchanger: Exchanger,
    /// [`TlsPolicy::Dane`] for a DANE host; the MTA-STS [`Report`] does not apply to it.
    pub tls: TlsPolicy,
}

/// The decision for one domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Try these hosts in order.
    Send { targets: Vec<Target>, report: Report },
    /// No host may be used; `permanent` bounces, else the message waits. `dane`: because
    /// DANE lookups failed (not an MTA-STS or REQUIRETLS refusal).
    Refuse { permanent: bool, diagnostic: String, dane: bool },
}

/// Decides for the MX hosts of `domain`, given the MTA-STS policy found for it (`None`: none,
/// or MTA-STS is off) and the DANE findings (default: DANE off or not applicable).
pub fn plan(domain: &str, exchangers: Vec<Exchanger>, policy: Option<&Policy>, dane: &Findings, asks: Asks) -> Plan {
    let operator_tls = if asks.operator_requires_tls { TlsPolicy::Required } else { TlsPolicy::Opportunistic };
    let policy = policy.filter(|policy| policy.mode != Mode::None);
    // RFC 8689 4.2.1: under REQUIRETLS the MX hosts must be DNSSEC-validated or listed in an
    // MTA-STS policy, and the certificate must verify (PKIX or DANE).
    let waived = asks.policy_waived && !asks.requiretls;
    let enforce = policy.filter(|policy| !waived && (asks.requiretls || policy.mode == Mode::Enforce));
    let mut targets = Vec::with_capacity(exchangers.len());
    let mut lookup_failure = None;
    for exchanger in exchangers {
        let tls = match dane.host(&exchanger.host) {
            HostDane::Records(records) => TlsPolicy::Dane(records.clone()),
            HostDane::Failed(reason) => {
                lookup_failure.get_or_insert_with(|| reason.clone());
                continue;
            }
            HostDane::NotApplicable | HostDane::Unusable if asks.requiretls => {
                let listed = enforce.is_some_and(|policy| policy.allows(&exchanger.host));
                if !dane.mx_secure && !listed {
                    continue;
                }
                TlsPolicy::Required
            }
            finding @ (HostDane::NotApplicable | HostDane::Unusable) => match enforce {
                Some(policy) if !policy.allows(&exchanger.host) => continue,
                Some(_) => TlsPolicy::Required,
                // Secure TLSA records, none usable: TLS is still required, unauthenticated
                // (RFC 7672 2.2), unless the operator asks for more.
                None if *finding == HostDane::Unusable && operator_tls == TlsPolicy::Opportunistic => {
                    TlsPolicy::Encrypted
                }
                None => operator_tls.clone(),
            },
        };
        targets.push(Target { exchanger, tls });
    }
    if targets.is_empty() {
        if let Some(reason) = lookup_failure {
            return Plan::Refuse {
                permanent: false,
                diagnostic: format!("451 4.7.5 DANE: {reason}; not sending to {domain} without it"),
                dane: true,
            };
        }
        if asks.requiretls {
            let diagnostic = match enforce {
                None => format!(
                    "550 5.7.10 REQUIRETLS: {domain} has neither DNSSEC-validated MX records nor an MTA-STS policy to validate its MX hosts"
                ),
                Some(_) => format!("550 5.7.10 REQUIRETLS: no MX host of {domain} is listed in its MTA-STS policy"),
            };
            return Plan::Refuse { permanent: true, diagnostic, dane: false };
        }
        return Plan::Refuse {
            permanent: false,
            diagnostic: format!("451 4.7.5 MTA-STS: no MX host of {domain} matches its enforced policy"),
            dane: false,
        };
    }
    let report = match policy {
        _ if asks.requiretls || waived => Report::Nothing,
        Some(policy) if policy.mode == Mode::Enforce => Report::Enforced,
        Some(policy) => Report::Testing(policy.clone()),
        None => Report::Nothing,
    };
    Plan::Send { targets, report }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dane::{Tlsa, TlsaSet};
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

    fn records() -> TlsaSet {
        TlsaSet::usable([Tlsa { usage: 3, selector: 1, matching: 1, data: vec![7; 32] }]).unwrap()
    }

    /// DNSSEC-secure MX records, with these findings for the hosts.
    fn secure(hosts: &[(&str, HostDane)]) -> Findings {
        Findings {
            mx_secure: true,
            hosts: hosts.iter().map(|(host, dane)| ((*host).to_owned(), dane.clone())).collect(),
        }
    }

    fn hosts_and_tls(plan: &Plan) -> Vec<(&str, &TlsPolicy)> {
        let Plan::Send { targets, .. } = plan else { panic!("{plan:?}") };
        targets.iter().map(|target| (target.exchanger.host.as_str(), &target.tls)).collect()
    }

    const PLAIN: Asks = Asks { operator_requires_tls: false, requiretls: false, policy_waived: false };
    const NO_DANE: &Findings = &Findings { mx_secure: false, hosts: Vec::new() };

    #[test]
    fn enforce_keeps_only_listed_hosts_and_requires_verified_tls() {
        let planned = plan("example.vn", both(), Some(&policy("enforce")), NO_DANE, PLAIN);
        assert_eq!(hosts_and_tls(&planned), [("mx1.example.vn", &TlsPolicy::Required)]);
        assert!(matches!(planned, Plan::Send { report: Report::Enforced, .. }));
        let only_evil = vec![both()[1].clone()];
        let refused = plan("example.vn", only_evil, Some(&policy("enforce")), NO_DANE, PLAIN);
        assert!(
            matches!(refused, Plan::Refuse { permanent: false, ref diagnostic, .. } if diagnostic.starts_with("451 4.7.5"))
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
            let planned = plan("example.vn", both(), policy.as_ref(), NO_DANE, asks);
            let opportunistic = &TlsPolicy::Opportunistic;
            assert_eq!(
                hosts_and_tls(&planned),
                [("mx1.example.vn", opportunistic), ("evil.attacker.example", opportunistic)],
                "{policy:?} {asks:?}"
            );
        }
        let waived_but_operator = Asks { policy_waived: true, operator_requires_tls: true, ..PLAIN };
        let planned = plan("example.vn", both(), Some(&policy("enforce")), NO_DANE, waived_but_operator);
        assert!(
            hosts_and_tls(&planned).iter().all(|(_, tls)| **tls == TlsPolicy::Required),
            "TLS-Required: No does not lift the operator's require_tls_to"
        );
    }

    #[test]
    fn requiretls_needs_a_policy_listing_the_host_and_ignores_the_waiver() {
        let asks = Asks { requiretls: true, policy_waived: true, ..PLAIN };
        for policy in [None, Some(policy("none"))] {
            let refused = plan("example.vn", both(), policy.as_ref(), NO_DANE, asks);
            assert!(
                matches!(refused, Plan::Refuse { permanent: true, ref diagnostic, .. } if diagnostic.contains("5.7.10"))
            );
        }
        for mode in ["enforce", "testing"] {
            let planned = plan("example.vn", both(), Some(&policy(mode)), NO_DANE, asks);
            assert_eq!(hosts_and_tls(&planned), [("mx1.example.vn", &TlsPolicy::Required)], "{mode}");
        }
    }

    #[test]
    fn a_dane_host_goes_only_with_its_records_whatever_the_other_policies_say() {
        let dane = secure(&[("evil.attacker.example", HostDane::Records(records()))]);
        let waived = Asks { policy_waived: true, operator_requires_tls: true, ..PLAIN };
        for (policy, asks) in [(None, PLAIN), (Some(policy("testing")), PLAIN), (Some(policy("enforce")), waived)] {
            let planned = plan("example.vn", both(), policy.as_ref(), &dane, asks);
            let tls = hosts_and_tls(&planned);
            assert_eq!(tls[1], ("evil.attacker.example", &TlsPolicy::Dane(records())), "{policy:?} {asks:?}");
            assert_ne!(tls[0].1, &TlsPolicy::Dane(records()));
        }
        // RFC 8461 2: DANE wins over MTA-STS; a host the enforced policy does not list but
        // DNSSEC authenticates stays, with DANE.
        let planned = plan("example.vn", both(), Some(&policy("enforce")), &dane, PLAIN);
        assert_eq!(
            hosts_and_tls(&planned),
            [("mx1.example.vn", &TlsPolicy::Required), ("evil.attacker.example", &TlsPolicy::Dane(records()))]
        );
    }

    #[test]
    fn unusable_tlsa_still_requires_tls_and_absent_tlsa_leaves_the_host_to_the_other_policies() {
        for (finding, alone) in
            [(HostDane::Unusable, TlsPolicy::Encrypted), (HostDane::NotApplicable, TlsPolicy::Opportunistic)]
        {
            let dane = secure(&[("mx1.example.vn", finding.clone()), ("evil.attacker.example", finding.clone())]);
            let planned = plan("example.vn", both(), None, &dane, PLAIN);
            assert!(hosts_and_tls(&planned).iter().all(|(_, tls)| **tls == alone), "{finding:?}");
            let planned = plan("example.vn", both(), Some(&policy("enforce")), &dane, PLAIN);
            assert_eq!(hosts_and_tls(&planned), [("mx1.example.vn", &TlsPolicy::Required)], "{finding:?}");
        }
    }

    #[test]
    fn a_failed_tlsa_lookup_takes_the_host_out_and_defers_when_none_is_left() {
        let failed = HostDane::Failed("TLSA of mx1.example.vn: SERVFAIL".into());
        let dane = secure(&[("mx1.example.vn", failed.clone())]);
        // The other host is still tried, by the other policies.
        let planned = plan("example.vn", both(), None, &dane, PLAIN);
        assert_eq!(hosts_and_tls(&planned), [("evil.attacker.example", &TlsPolicy::Opportunistic)]);
        // With every host failed, or the only one allowed by enforce: deferred, never clear.
        let dane = secure(&[("mx1.example.vn", failed.clone()), ("evil.attacker.example", failed)]);
        for (policy, asks) in [
            (None, PLAIN),
            (Some(policy("enforce")), PLAIN),
            (None, Asks { policy_waived: true, ..PLAIN }),
            (None, Asks { requiretls: true, ..PLAIN }),
        ] {
            let refused = plan("example.vn", both(), policy.as_ref(), &dane, asks);
            assert!(
                matches!(&refused, Plan::Refuse { permanent: false, diagnostic, .. } if diagnostic.starts_with("451 4.7.5 DANE")),
                "{refused:?}"
            );
        }
    }

    #[test]
    fn requiretls_is_satisfied_by_dane_or_by_dnssec_validated_mx_records() {
        let asks = Asks { requiretls: true, ..PLAIN };
        let dane = secure(&[("mx1.example.vn", HostDane::Records(records()))]);
        let planned = plan("example.vn", both(), None, &dane, asks);
        // RFC 8689 4.2.1: DNSSEC validated the MX names; the other host's certificate must
        // still verify (PKIX).
        assert_eq!(
            hosts_and_tls(&planned),
            [("mx1.example.vn", &TlsPolicy::Dane(records())), ("evil.attacker.example", &TlsPolicy::Required)]
        );
        // Insecure MX records with a DANE-looking finding cannot occur (no TLSA is asked for);
        // insecure MX without MTA-STS is refused as before.
        let refused = plan("example.vn", both(), None, NO_DANE, asks);
        assert!(matches!(refused, Plan::Refuse { permanent: true, .. }));
    }
}
