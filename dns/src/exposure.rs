//! Which clients are outside private networks, and which published addresses are private:
//! for `lienthong check`'s warning about private addresses leaking out of split horizon.

use std::net::IpAddr;

use hickory_proto::rr::{RData, Record};
use ipnet::IpNet;
use lienthong_config::Config;

/// Networks that are not the public internet: RFC 1918, RFC 6598 shared space, loopback,
/// link-local, ULA.
const NON_PUBLIC: [&str; 9] = [
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "fc00::/7",
    "fe80::/10",
    "::1/128",
];

/// True when clients outside private networks may see what `audience` sees: a view (by
/// position) whose clients include a public network, or the clients in no view (unless the
/// views claim every address).
pub fn is_public(config: &Config, audience: Option<usize>) -> bool {
    let private: Vec<IpNet> = NON_PUBLIC.iter().filter_map(|network| network.parse().ok()).collect();
    match audience {
        Some(view) => config.dns.views[view]
            .clients
            .iter()
            .any(|network| !private.iter().any(|private| private.contains(network))),
        None => {
            let every = |v4: bool| {
                config
                    .dns
                    .views
                    .iter()
                    .flat_map(|view| &view.clients)
                    .any(|network| network.prefix_len() == 0 && matches!(network, IpNet::V4(_)) == v4)
            };
            !(every(true) && every(false))
        }
    }
}

/// The address of an A/AAAA record when it is private (RFC 1918 or ULA).
pub fn private_address(record: &Record) -> Option<IpAddr> {
    let address = match &record.data {
        RData::A(a) => IpAddr::V4(a.0),
        RData::AAAA(aaaa) => IpAddr::V6(aaaa.0),
        _ => return None,
    };
    let private = match address {
        IpAddr::V4(v4) => v4.is_private(),
        IpAddr::V6(v6) => v6.is_unique_local(),
    };
    private.then_some(address)
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use hickory_proto::rr::Name;
    use hickory_proto::rr::rdata::A;

    use super::*;

    #[test]
    fn rfc1918_and_ula_are_private_and_public_addresses_are_not() {
        let record = |address: [u8; 4]| Record::from_rdata(Name::root(), 60, RData::A(A(Ipv4Addr::from(address))));
        assert!(private_address(&record([10, 20, 0, 5])).is_some());
        assert!(private_address(&record([172, 16, 0, 1])).is_some());
        assert!(private_address(&record([192, 168, 1, 1])).is_some());
        assert!(private_address(&record([203, 0, 113, 5])).is_none());
        let ula =
            Record::from_rdata(Name::root(), 60, RData::AAAA("fd00::5".parse::<std::net::Ipv6Addr>().unwrap().into()));
        assert!(private_address(&ula).is_some());
    }
}
