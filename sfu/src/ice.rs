//! The ICE servers a participant is given in `welcome`: the embedded TURN server on the
//! page's own port (TLS, and plain TCP), and on the dedicated TURN port when there is one,
//! with a credential minted for this participant.
//!
//! The browser prefers host UDP, then ICE-TCP, then relayed candidates by itself (ICE
//! type preferences: host 126, relay 0-2), so offering TURN costs a direct participant
//! nothing but two small allocations.

use std::net::Ipv6Addr;

use crate::protocol::{IceServer, ParticipantId};
use crate::relay::TurnHandle;

/// The host the browser reached the page by (its `Host` header), validated: a DNS name
/// or an IP literal, and an optional port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PageHost {
    name: String,
    port: Option<u16>,
}

impl PageHost {
    pub fn parse(text: &str) -> Option<Self> {
        let (name, port) = if let Some(rest) = text.strip_prefix('[') {
            let (inside, after) = rest.split_once(']')?;
            inside.parse::<Ipv6Addr>().ok()?;
            let port = if after.is_empty() { None } else { Some(after.strip_prefix(':')?) };
            (format!("[{inside}]"), port)
        } else {
            let (name, port) = match text.rsplit_once(':') {
                Some((name, port)) => (name, Some(port)),
                None => (text, None),
            };
            let valid = !name.is_empty()
                && name.len() <= 253
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-');
            if !valid {
                return None;
            }
            (name.to_ascii_lowercase(), port)
        };
        let port = match port {
            None => None,
            Some(port) => Some(port.parse::<u16>().ok().filter(|port| *port != 0)?),
        };
        Some(PageHost { name, port })
    }
}

/// Which TURN paths exist and how to name them to a browser.
#[derive(Clone)]
pub(crate) struct IcePlan {
    pub turn: TurnHandle,
    /// TURN is served on the page's listener (`conference.turn`).
    pub on_page_port: bool,
    pub page_tls: bool,
    /// The port the browser used when its `Host` names none: the scheme's default (443 or
    /// 80), which is what it connected to even when a firewall forwards it to `listen`.
    pub page_port: u16,
    pub dedicated_port: Option<u16>,
    /// `conference.hostname`, when the browser sent no usable `Host`.
    pub hostname: String,
}

impl IcePlan {
    pub fn servers(&self, participant: ParticipantId, host: Option<&PageHost>) -> Vec<IceServer> {
        let name = host.map(|host| host.name.as_str()).unwrap_or(&self.hostname);
        let page_port = host.and_then(|host| host.port).unwrap_or(self.page_port);
        let mut urls = Vec::new();
        if self.on_page_port {
            if self.page_tls {
                urls.push(format!("turns:{name}:{page_port}?transport=tcp"));
            }
            urls.push(format!("turn:{name}:{page_port}?transport=tcp"));
        }
        if let Some(port) = self.dedicated_port {
            urls.push(format!("turn:{name}:{port}?transport=udp"));
            urls.push(format!("turn:{name}:{port}?transport=tcp"));
        }
        if urls.is_empty() {
            return Vec::new();
        }
        let credential = self.turn.mint(&format!("p{participant}"));
        vec![IceServer { urls, username: credential.username, credential: credential.password }]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_parse_and_hostile_ones_do_not() {
        let host = PageHost::parse("Hop.NinhThuan.gov.vn").unwrap();
        assert_eq!((host.name.as_str(), host.port), ("hop.ninhthuan.gov.vn", None));
        let host = PageHost::parse("10.20.0.5:8443").unwrap();
        assert_eq!((host.name.as_str(), host.port), ("10.20.0.5", Some(8443)));
        let host = PageHost::parse("[fd00::5]:443").unwrap();
        assert_eq!((host.name.as_str(), host.port), ("[fd00::5]", Some(443)));
        for bad in ["", "a b", "x:0", "x:99999", "x:", "[zz]", "h?transport=udp", "a@b", "a:1:2", "é.vn", "x\r\n"] {
            assert_eq!(PageHost::parse(bad), None, "{bad:?}");
        }
    }
}
