//! What `lienthong check` says about the conference's ports: which ones the firewall must
//! let through, and which settings browsers would silently refuse.
//!
//! The browser rules are Chromium's (libwebrtc): `VerifyCandidate` in
//! `p2p/base/ice_transport_internal.cc` refuses a remote ICE candidate whose port is below
//! 1024 unless it is 80 or 443, and refuses 80 and 443 too when the address is private
//! (`IPIsPrivate` in `rtc_base/ip_address.cc`: loopback, link-local, 10/8, 172.16/12,
//! 192.168/16, 100.64/10, fd00::/8). `TurnPort::AllowedTurnPort` in `p2p/base/turn_port.cc`
//! lets a TURN server use 53, 80, 443 or any port from 1024, whatever its address. So on a
//! private address media cannot use 443, and TURN on 443 can.

use std::net::{IpAddr, SocketAddr};

use lienthong_config::Config;

/// The ports the conference service needs, and the warnings about them.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PortReport {
    /// One line per port: protocol, address, and what uses it.
    pub needs: Vec<String>,
    pub warnings: Vec<String>,
}

/// Explains the conference's ports for `config` (empty when conferences are off).
pub fn port_report(config: &Config) -> PortReport {
    let mut report = PortReport::default();
    let conference = &config.conference;
    if !conference.enabled {
        return report;
    }
    let page_use = match (conference.turn, conference.tls) {
        (true, true) => "page, signaling, TURN over TLS and TCP",
        (true, false) => "page, signaling, TURN over TCP",
        (false, _) => "page, signaling",
    };
    report.needs.push(format!("TCP {}  {page_use}", conference.listen));
    for address in &config.server.addresses {
        let media = SocketAddr::new(*address, conference.media_port);
        report.needs.push(format!("UDP {media}  media (relayed media reaches it from this host too)"));
        if conference.ice_tcp {
            report.needs.push(format!("TCP {media}  ICE-TCP media, for networks that block UDP"));
        }
        if let Some(port) = conference.turn_port {
            report.needs.push(format!("UDP+TCP {}  TURN", SocketAddr::new(*address, port)));
        }
        if let Some(reason) = refused_media_port(*address, conference.media_port) {
            report.warnings.push(format!(
                "conference.media_port: browsers refuse media candidates {media} ({reason}), so nobody would get \
                 media directly; use a port from 1024 such as 10000 and let TURN on conference.listen carry sites \
                 that can only reach 443"
            ));
        }
    }
    let turn_ports = conference.turn.then_some(conference.listen.port()).into_iter().chain(conference.turn_port);
    for port in turn_ports {
        if port < 1024 && ![53, 80, 443].contains(&port) {
            report.warnings.push(format!(
                "TURN on port {port}: browsers use TURN servers only on 53, 80, 443 or a port from 1024"
            ));
        }
    }
    report
}

/// Why Chromium refuses a server candidate on `address:port`, if it does.
fn refused_media_port(address: IpAddr, port: u16) -> Option<&'static str> {
    match port {
        80 | 443 if is_private(address) => Some("ports 80 and 443 are refused on private addresses"),
        80 | 443 => None,
        0..1024 => Some("ports below 1024 are refused, but for 80 and 443 on public addresses"),
        _ => None,
    }
}

/// libwebrtc's `IPIsPrivate`.
fn is_private(address: IpAddr) -> bool {
    match address {
        IpAddr::V4(ip) => {
            let [a, b, ..] = ip.octets();
            ip.is_loopback() || ip.is_link_local() || ip.is_private() || (a == 100 && (64..128).contains(&b))
        }
        IpAddr::V6(ip) => {
            let first = ip.segments()[0];
            ip.is_loopback() || first & 0xFFC0 == 0xFE80 || first & 0xFF00 == 0xFD00
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chromium_port_rules() {
        for (address, port, refused) in [
            ("10.20.0.5", 443, true),
            ("192.168.1.2", 80, true),
            ("100.64.0.1", 443, true),
            ("127.0.0.1", 443, true),
            ("fd00::5", 443, true),
            ("fe80::1", 80, true),
            ("203.0.113.5", 443, false),
            ("203.0.113.5", 22, true),
            ("10.20.0.5", 10000, false),
            ("2001:db8::5", 443, false),
        ] {
            let address: IpAddr = address.parse().unwrap();
            assert_eq!(refused_media_port(address, port).is_some(), refused, "{address}:{port}");
        }
    }
}
