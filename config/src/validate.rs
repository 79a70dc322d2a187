//! Shared helpers for turning raw, spanned values into typed ones.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use toml::Spanned;

use crate::error::Diagnostics;
use crate::names::DomainName;

/// What every section's validation gets: the error collector and the directory that
/// relative paths are resolved against.
pub(crate) struct Context<'a> {
    pub(crate) diagnostics: Diagnostics<'a>,
    pub(crate) base_dir: &'a Path,
}

impl Context<'_> {
    pub(crate) fn error(&mut self, span: std::ops::Range<usize>, path: impl Into<String>, message: impl Into<String>) {
        self.diagnostics.error(span, path, message);
    }

    /// `FILE:LINE:COL` of a value, for diagnostics that other crates print later.
    pub(crate) fn location(&self, span: std::ops::Range<usize>) -> String {
        let (line, column) = crate::error::line_column(self.diagnostics.source(), span.start);
        format!("{}:{line}:{column}", self.diagnostics.file())
    }

    /// A socket address such as `127.0.0.1:2525` or `[::1]:53`.
    pub(crate) fn socket_addr(&mut self, value: &Spanned<String>, path: &str) -> Option<SocketAddr> {
        match value.get_ref().parse::<SocketAddr>() {
            Ok(address) => Some(address),
            Err(_) => {
                self.error(
                    value.span(),
                    path,
                    format!(
                        "`{}` is not a socket address (expected IP:PORT such as 127.0.0.1:2525 or [::1]:53)",
                        value.get_ref()
                    ),
                );
                None
            }
        }
    }

    /// A socket address where the port may be left out (`10.20.0.20` means port `default_port`).
    pub(crate) fn socket_addr_or_ip(
        &mut self,
        value: &Spanned<String>,
        path: &str,
        default_port: u16,
    ) -> Option<SocketAddr> {
        if let Ok(ip) = value.get_ref().parse::<IpAddr>() {
            return Some(SocketAddr::new(ip, default_port));
        }
        self.socket_addr(value, path)
    }

    pub(crate) fn ip(&mut self, value: &Spanned<String>, path: &str) -> Option<IpAddr> {
        match value.get_ref().parse::<IpAddr>() {
            Ok(ip) => Some(ip),
            Err(_) => {
                self.error(
                    value.span(),
                    path,
                    format!("`{}` is not an IP address (expected e.g. 10.20.0.5 or 2001:db8::5)", value.get_ref()),
                );
                None
            }
        }
    }

    /// A network in CIDR form; a bare address means that one host.
    pub(crate) fn network(&mut self, value: &Spanned<String>, path: &str) -> Option<IpNet> {
        let text = value.get_ref();
        if let Ok(network) = text.parse::<IpNet>() {
            return Some(network.trunc());
        }
        if let Ok(ip) = text.parse::<IpAddr>() {
            return Some(IpNet::from(ip));
        }
        self.error(
            value.span(),
            path,
            format!("`{text}` is not a network (expected CIDR such as 10.20.0.0/16, or one address)"),
        );
        None
    }

    pub(crate) fn domain(&mut self, value: &Spanned<String>, path: &str) -> Option<DomainName> {
        match DomainName::parse(value.get_ref()) {
            Ok(name) => Some(name),
            Err(message) => {
                self.error(value.span(), path, message);
                None
            }
        }
    }

    /// A path; relative ones are taken from the config file's directory.
    pub(crate) fn path(&self, value: &Spanned<String>) -> PathBuf {
        let path = Path::new(value.get_ref());
        if path.is_absolute() { path.to_path_buf() } else { self.base_dir.join(path) }
    }

    /// A path that must name an existing, readable file.
    pub(crate) fn existing_file(&mut self, value: &Spanned<String>, path: &str) -> Option<PathBuf> {
        let resolved = self.path(value);
        match std::fs::metadata(&resolved) {
            Ok(metadata) if metadata.is_file() => Some(resolved),
            Ok(_) => {
                self.error(value.span(), path, format!("`{}` is not a regular file", resolved.display()));
                None
            }
            Err(error) => {
                self.error(value.span(), path, format!("cannot open `{}`: {error}", resolved.display()));
                None
            }
        }
    }
}
