//! Records derived from the rest of the config, so the operator never writes them by hand:
//! the appliance's addresses, the mail domains' MX, SPF, DMARC and submission SRV records,
//! and records other services publish (the mail relay's DKIM keys).
//!
//! The SPF policy is `v=spf1 a:<mail hostname> -all`: the relay sends from the addresses
//! `server.addresses` lists, which is exactly what the mail hostname's derived A/AAAA records
//! hold, and nothing else may send for the domain. DMARC is `p=quarantine` with relaxed
//! alignment: mail failing both SPF and DKIM lands in spam rather than vanishing, which suits
//! a province that is still moving every sender onto the relay; tighten it with your own
//! `_dmarc` record once reports are clean.

use std::net::IpAddr;

use hickory_proto::rr::rdata::{A, AAAA, MX, SRV, TXT};
use hickory_proto::rr::{Name, RData, Record};
use lienthong_config::Config;

/// TTL of every derived record.
pub const DERIVED_TTL: u32 = 3600;

/// Every derived record, absolute and lowercase, with `addresses` as the appliance's
/// addresses (they differ per view). Which zone each belongs to is decided later.
pub fn records(config: &Config, addresses: &[IpAddr]) -> Vec<Record> {
    let mut records = Vec::new();
    let mut hosts = vec![config.server.hostname.as_str().to_owned()];
    if config.mail.enabled {
        hosts.push(config.mail.hostname.as_str().to_owned());
    }
    if config.conference.enabled {
        hosts.push(config.conference.hostname.as_str().to_owned());
    }
    hosts.sort();
    hosts.dedup();
    for host in &hosts {
        let Some(owner) = name(host) else { continue };
        for address in addresses {
            let data = match address {
                IpAddr::V4(v4) => RData::A(A(*v4)),
                IpAddr::V6(v6) => RData::AAAA(AAAA(*v6)),
            };
            records.push(Record::from_rdata(owner.clone(), DERIVED_TTL, data));
        }
    }
    if config.mail.enabled
        && let Some(mail_host) = name(config.mail.hostname.as_str())
    {
        for domain in &config.mail.domains {
            let Some(owner) = name(domain.name.as_str()) else { continue };
            records.push(Record::from_rdata(owner.clone(), DERIVED_TTL, RData::MX(MX::new(10, mail_host.clone()))));
            let spf = format!("v=spf1 a:{} -all", config.mail.hostname);
            records.push(Record::from_rdata(owner.clone(), DERIVED_TTL, RData::TXT(TXT::new(vec![spf]))));
            if let Some(dmarc) = name(&format!("_dmarc.{}", domain.name)) {
                let policy = "v=DMARC1; p=quarantine; adkim=r; aspf=r".to_owned();
                records.push(Record::from_rdata(dmarc, DERIVED_TTL, RData::TXT(TXT::new(vec![policy]))));
            }
            let services = [
                ("_submission._tcp", config.mail.submission_listen),
                ("_submissions._tcp", config.mail.submissions_listen),
            ];
            for (service, listen) in services {
                let (Some(listen), Some(owner)) = (listen, name(&format!("{service}.{}", domain.name))) else {
                    continue;
                };
                let data = RData::SRV(SRV::new(0, 1, listen.port(), mail_host.clone()));
                records.push(Record::from_rdata(owner, DERIVED_TTL, data));
            }
        }
    }
    records
}

fn name(text: &str) -> Option<Name> {
    Name::from_ascii(format!("{text}.")).ok().map(|name| name.to_lowercase())
}
