//! `[server]` (facts about the appliance, stated once) and `[admin]`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

use crate::names::DomainName;
use crate::tls;
use crate::validate::Context;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawServer {
    hostname: Option<Spanned<String>>,
    addresses: Option<Vec<Spanned<String>>>,
    state_dir: Option<Spanned<String>>,
    tls_cert: Option<Spanned<String>>,
    tls_key: Option<Spanned<String>>,
}

/// The appliance itself: its name, the addresses other hosts reach it at, where it keeps
/// state and which certificate its TLS listeners present.
#[derive(Debug, Clone)]
pub struct Server {
    pub hostname: DomainName,
    /// Addresses other hosts reach this appliance at. Used for DNS A/AAAA records and
    /// WebRTC host candidates. Never empty.
    pub addresses: Vec<IpAddr>,
    /// Where each of `addresses` was written, `FILE:LINE:COL: server.addresses[N]`.
    pub address_origins: Vec<String>,
    pub state_dir: PathBuf,
    /// The operator's certificate; `None` means a self-signed one is generated in
    /// `state_dir` on first start.
    pub tls: Option<TlsFiles>,
}

/// Certificate chain and private key, both PEM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAdmin {
    listen: Option<Spanned<String>>,
}

/// The operator's HTTP endpoint: `/metrics`, `/healthz`, reload and queue commands.
#[derive(Debug, Clone)]
pub struct Admin {
    /// Always a loopback address: the admin endpoint has no authentication of its own.
    pub listen: SocketAddr,
}

pub(crate) fn validate(raw: RawServer, context: &mut Context<'_>) -> Server {
    let hostname = raw
        .hostname
        .as_ref()
        .and_then(|value| context.domain(value, "server.hostname"))
        .unwrap_or_else(|| DomainName::parse("localhost").expect("valid literal"));

    let mut addresses = Vec::new();
    let mut address_origins = Vec::new();
    for (index, value) in raw.addresses.iter().flatten().enumerate() {
        if let Some(ip) = context.ip(value, &format!("server.addresses[{index}]")) {
            if ip.is_unspecified() {
                context.error(
                    value.span(),
                    format!("server.addresses[{index}]"),
                    "0.0.0.0 and :: cannot be reached by other hosts (expected the appliance's real address)",
                );
            } else if !addresses.contains(&ip) {
                addresses.push(ip);
                address_origins.push(format!("{}: server.addresses[{index}]", context.location(value.span())));
            }
        }
    }
    if addresses.is_empty() {
        addresses.push(IpAddr::V4(Ipv4Addr::LOCALHOST));
        address_origins.push(format!("{}:1:1: server.addresses", context.diagnostics.file()));
    }

    let state_dir = match &raw.state_dir {
        Some(value) if value.get_ref().is_empty() => {
            context.error(value.span(), "server.state_dir", "empty path (expected a directory)");
            PathBuf::new()
        }
        Some(value) => context.path(value),
        None => context.base_dir.join("lienthong-state"),
    };

    let tls = match (&raw.tls_cert, &raw.tls_key) {
        (None, None) => None,
        (Some(cert), None) => {
            context.error(
                cert.span(),
                "server.tls_cert",
                "tls_cert is set but tls_key is not (expected both or neither)",
            );
            None
        }
        (None, Some(key)) => {
            context.error(
                key.span(),
                "server.tls_key",
                "tls_key is set but tls_cert is not (expected both or neither)",
            );
            None
        }
        (Some(cert), Some(key)) => {
            let cert_path = context.existing_file(cert, "server.tls_cert");
            let key_path = context.existing_file(key, "server.tls_key");
            match (cert_path, key_path) {
                (Some(cert_path), Some(key_path)) => {
                    let files = TlsFiles { cert: cert_path, key: key_path };
                    match tls::load_tls_material(&files) {
                        Ok(_) => Some(files),
                        Err(message) => {
                            context.error(cert.span(), "server.tls_cert", message);
                            None
                        }
                    }
                }
                _ => None,
            }
        }
    };

    Server { hostname, addresses, address_origins, state_dir, tls }
}

pub(crate) fn validate_admin(raw: RawAdmin, context: &mut Context<'_>) -> Admin {
    let default = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9090);
    let listen = match &raw.listen {
        None => default,
        Some(value) => match context.socket_addr(value, "admin.listen") {
            Some(address) if !address.ip().is_loopback() => {
                context.error(
                    value.span(),
                    "admin.listen",
                    format!(
                        "{address} is not a loopback address; the admin endpoint has no login and must stay on \
                         the appliance (expected 127.0.0.1:PORT or [::1]:PORT; reach it remotely through SSH)"
                    ),
                );
                default
            }
            Some(address) => address,
            None => default,
        },
    };
    Admin { listen }
}
