//! Which web pages may open the signaling WebSocket. Browsers send `Origin` on every
//! WebSocket handshake and let any page open one to any host, so without this check a hostile
//! page could make its visitors' browsers guess PINs (and trip the PIN guard for their office's
//! NAT address). Only the conference's own page may: its `Origin` must be the address the
//! request was sent to (`Host`), and that name must be the conference's (its hostname, the
//! server's hostname and addresses, loopback names when listening there), which also defeats a
//! page that rebinds its own name to this server.
//!
//! A handshake without `Origin` is not from a browser (browsers always send it): such a client
//! can write any `Origin` it likes, so refusing it would protect nothing, and the PIN guard
//! limits it like anyone else. It is allowed.

use std::net::{IpAddr, SocketAddr};

/// The names the conference page is served under, and its scheme.
#[derive(Debug, Clone)]
pub(crate) struct AllowedOrigins {
    scheme: &'static str,
    names: Vec<String>,
}

/// Why a handshake was refused (a fixed text: never the request's own bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OriginRefusal {
    /// `Origin` is not `scheme://host[:port]` of this server's scheme (`null` included).
    Malformed,
    /// `Origin` differs from the `Host` the request was sent to: another site's page.
    CrossOrigin,
    /// `Origin` equals `Host`, but the name is not the conference's (DNS rebinding).
    UnknownName,
}

impl OriginRefusal {
    pub fn message(self) -> &'static str {
        match self {
            OriginRefusal::Malformed => "refused: unusable Origin",
            OriginRefusal::CrossOrigin => {
                "refused: only the conference page itself may connect (Origin differs from Host)"
            }
            OriginRefusal::UnknownName => "refused: this server is not reached by that name",
        }
    }
}

impl AllowedOrigins {
    /// `hostnames` are the conference's and the server's names; `addresses` the server's.
    pub fn new(tls: bool, listen: SocketAddr, hostnames: &[&str], addresses: &[IpAddr]) -> Self {
        let mut names: Vec<String> = hostnames.iter().map(|name| name.to_ascii_lowercase()).collect();
        names.extend(addresses.iter().map(|address| address_name(*address)));
        if !listen.ip().is_unspecified() {
            names.push(address_name(listen.ip()));
        }
        if listen.ip().is_loopback() || listen.ip().is_unspecified() {
            names.extend(["localhost", "127.0.0.1", "[::1]"].map(str::to_owned));
        }
        names.sort();
        names.dedup();
        AllowedOrigins { scheme: if tls { "https" } else { "http" }, names }
    }

    /// Decides on a handshake from its `Origin` and `Host` headers (as text, if readable).
    pub fn check(&self, origin: Option<&str>, host: Option<&str>) -> Result<(), OriginRefusal> {
        let Some(origin) = origin else { return Ok(()) };
        let origin = origin.trim().to_ascii_lowercase();
        let Some(authority) = origin.strip_prefix(self.scheme).and_then(|rest| rest.strip_prefix("://")) else {
            return Err(OriginRefusal::Malformed);
        };
        if authority.is_empty() || authority.contains(['/', '@', '?', '#']) {
            return Err(OriginRefusal::Malformed);
        }
        let host = host.map(|host| host.trim().to_ascii_lowercase()).unwrap_or_default();
        if self.without_default_port(authority) != self.without_default_port(&host) {
            return Err(OriginRefusal::CrossOrigin);
        }
        if self.names.iter().any(|name| name == name_of(authority)) { Ok(()) } else { Err(OriginRefusal::UnknownName) }
    }

    fn without_default_port<'a>(&self, authority: &'a str) -> &'a str {
        let default = if self.scheme == "https" { ":443" } else { ":80" };
        authority.strip_suffix(default).unwrap_or(authority)
    }
}

fn address_name(address: IpAddr) -> String {
    match address.to_canonical() {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    }
}

/// The host part of `host[:port]` or `[v6][:port]`.
fn name_of(authority: &str) -> &str {
    if authority.starts_with('[') {
        return authority.find(']').map_or(authority, |end| &authority[..=end]);
    }
    authority.rsplit_once(':').map_or(authority, |(name, _)| name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(tls: bool, listen: &str) -> AllowedOrigins {
        AllowedOrigins::new(
            tls,
            listen.parse().unwrap(),
            &["hub.ninhthuan.gov.vn", "Hop.NinhThuan.gov.vn"],
            &["10.20.0.5".parse().unwrap(), "2001:db8::5".parse().unwrap()],
        )
    }

    #[test]
    fn the_page_itself_may_connect_under_each_of_its_names() {
        let origins = allowed(true, "0.0.0.0:443");
        for (origin, host) in [
            ("https://hub.ninhthuan.gov.vn", "hub.ninhthuan.gov.vn"),
            ("https://hop.ninhthuan.gov.vn", "hop.ninhthuan.gov.vn:443"),
            ("https://10.20.0.5:8443", "10.20.0.5:8443"),
            ("https://[2001:db8::5]", "[2001:db8::5]"),
            ("https://localhost", "localhost"),
        ] {
            assert_eq!(origins.check(Some(origin), Some(host)), Ok(()), "{origin} {host}");
        }
        assert_eq!(origins.check(None, Some("anything")), Ok(()));
    }

    #[test]
    fn other_pages_and_rebound_names_are_refused() {
        let origins = allowed(true, "10.20.0.5:443");
        let cases = [
            ("https://evil.example", "hub.ninhthuan.gov.vn", OriginRefusal::CrossOrigin),
            ("https://evil.example", "evil.example", OriginRefusal::UnknownName),
            (
                "https://hub.ninhthuan.gov.vn.evil.example",
                "hub.ninhthuan.gov.vn.evil.example",
                OriginRefusal::UnknownName,
            ),
            ("http://hub.ninhthuan.gov.vn", "hub.ninhthuan.gov.vn", OriginRefusal::Malformed),
            ("null", "hub.ninhthuan.gov.vn", OriginRefusal::Malformed),
            ("https://hub.ninhthuan.gov.vn/x", "hub.ninhthuan.gov.vn", OriginRefusal::Malformed),
            ("https://hub.ninhthuan.gov.vn:8443", "hub.ninhthuan.gov.vn", OriginRefusal::CrossOrigin),
            ("https://localhost", "localhost", OriginRefusal::UnknownName),
        ];
        for (origin, host, refusal) in cases {
            assert_eq!(origins.check(Some(origin), Some(host)), Err(refusal), "{origin} {host}");
        }
        assert_eq!(origins.check(Some("https://hub.ninhthuan.gov.vn"), None), Err(OriginRefusal::CrossOrigin));
    }
}
