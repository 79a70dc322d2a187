//! lienthong's one config file.
//!
//! Parsing goes in two steps. First the TOML text is read into *raw* structs (serde,
//! `deny_unknown_fields`, spans kept with [`toml::Spanned`]); then each section is
//! *validated* into the typed structs the services take. Every problem found on the way
//! becomes a [`ConfigError`] with the file, line, column and key path. Only this crate knows
//! TOML: services never see a `toml` or `serde` type.

mod conference;
mod dns;
mod error;
mod limits;
mod mail;
mod names;
mod secret;
mod server;
pub mod state;
mod tls;
mod validate;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::de::DeserializeOwned;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

pub use conference::{Conference, Room, VideoCodec};
pub use dns::{ApplianceAddress, Dns, ForwardZone, InlineRecord, View, Zone};
pub use error::{ConfigError, ConfigErrors};
pub use limits::HourlyLimits;
pub use mail::{DmarcEnforcement, Mail, MailDomain, MailUser, Outbound, QueuePolicy, RecipientCheck};
pub use names::DomainName;
pub use secret::{REDACTED, is_secret_key};
pub use server::{Admin, Server, TlsFiles};
pub use tls::{TlsMaterial, load_tls_material};

use error::Diagnostics;
use validate::Context;

/// The complete, commented default config: what `lienthong run` uses without `--config`,
/// what `lienthong default-config` prints, and `config/lienthong.example.toml` byte for byte.
pub const DEFAULT_CONFIG: &str = include_str!("../lienthong.example.toml");

/// The name errors in the built-in default config are reported under.
pub const BUILT_IN: &str = "<built-in>";

/// A validated config: every value parsed, every cross-reference checked.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the config came from (`None` for the built-in default).
    pub path: Option<PathBuf>,
    pub server: Server,
    pub admin: Admin,
    pub dns: Dns,
    pub mail: Mail,
    pub conference: Conference,
}

/// Reads and validates the config file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let name = path.display().to_string();
    let source = std::fs::read_to_string(path).map_err(|error| {
        ConfigErrors(vec![ConfigError {
            file: name.clone(),
            line: 1,
            column: 1,
            path: String::new(),
            message: format!("cannot read the config file: {error}"),
        }])
    })?;
    let base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut config = parse(&source, &name, &base_dir)?;
    config.path = Some(path.to_path_buf());
    Ok(config)
}

/// Validates the built-in default config; relative paths in it are taken from `base_dir`.
pub fn built_in(base_dir: &Path) -> Result<Config, ConfigErrors> {
    parse(DEFAULT_CONFIG, BUILT_IN, base_dir)
}

/// Parses and validates config text. `file` names it in errors; relative paths in it
/// (state directory, certificates, zone files) are resolved against `base_dir`.
pub fn parse(source: &str, file: &str, base_dir: &Path) -> Result<Config, ConfigErrors> {
    let mut diagnostics = Diagnostics::new(file, source);
    let (root, syntax_errors) = DeTable::parse_recoverable(source);
    for error in &syntax_errors {
        diagnostics.error(error.span().unwrap_or(0..0), "", format!("TOML syntax: {}", error.message()));
    }
    if diagnostics.has_errors() {
        return Err(diagnostics.finish().expect_err("errors were recorded"));
    }
    let root = root.into_inner();

    let mut sections = Sections::default();
    for (key, value) in root {
        let span = key.span();
        match key.get_ref().as_ref() {
            "server" => sections.server = section(&mut diagnostics, "server", value),
            "admin" => sections.admin = section(&mut diagnostics, "admin", value),
            "dns" => sections.dns = section(&mut diagnostics, "dns", value),
            "mail" => sections.mail = section(&mut diagnostics, "mail", value),
            "conference" => sections.conference = section(&mut diagnostics, "conference", value),
            other => diagnostics.error(
                span,
                other,
                "unknown section (expected one of: server, admin, dns, mail, conference)",
            ),
        }
    }

    let mut context = Context { diagnostics, base_dir };
    let server = server::validate(sections.server.unwrap_or_default(), &mut context);
    let admin = server::validate_admin(sections.admin.unwrap_or_default(), &mut context);
    let dns = dns::validate(sections.dns.unwrap_or_default(), &server, &mut context);
    let mail = mail::validate(sections.mail.unwrap_or_default(), &server, &mut context);
    let conference = conference::validate(sections.conference.unwrap_or_default(), &server, &mut context);
    context.diagnostics.finish()?;
    Ok(Config { path: None, server, admin, dns, mail, conference })
}

impl Config {
    /// Convenience for services that keep the config behind an `Arc`.
    pub fn shared(self) -> Arc<Config> {
        Arc::new(self)
    }
}

#[derive(Default)]
struct Sections {
    server: Option<server::RawServer>,
    admin: Option<server::RawAdmin>,
    dns: Option<dns::RawDns>,
    mail: Option<mail::RawMail>,
    conference: Option<conference::RawConference>,
}

/// Deserializes one top-level section, reporting its first schema error with path and span.
fn section<T: DeserializeOwned>(
    diagnostics: &mut Diagnostics<'_>,
    name: &str,
    value: Spanned<DeValue<'_>>,
) -> Option<T> {
    let span = value.span();
    let DeValue::Table(table) = value.into_inner() else {
        diagnostics.error(span, name, "expected a table such as [".to_owned() + name + "]");
        return None;
    };
    let deserializer = toml::Deserializer::from(Spanned::new(span.clone(), table));
    match serde_path_to_error::deserialize::<_, T>(deserializer) {
        Ok(value) => Some(value),
        Err(error) => {
            // Spanned<T> shows up in serde's path under a private name; the operator never wrote it.
            let path = error.path().to_string().replace(".$__serde_spanned_private_value", "");
            let path = if path == "." { name.to_owned() } else { format!("{name}.{path}") };
            let inner = error.into_inner();
            let message = inner.message().to_owned();
            diagnostics.error(inner.span().unwrap_or(span), path, message);
            None
        }
    }
}

#[cfg(test)]
mod tests;
