//! `[mail]`: the gov.vn relay's listeners, local domains, users, outbound policy and queue.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;
use toml::Spanned;

use crate::limits::HourlyLimits;
use crate::names::DomainName;
use crate::server::Server;
use crate::validate::Context;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMail {
    enabled: Option<bool>,
    hostname: Option<Spanned<String>>,
    mx_listen: Option<Spanned<String>>,
    submission_listen: Option<Spanned<String>>,
    submissions_listen: Option<Spanned<String>>,
    relay_from: Option<Vec<Spanned<String>>>,
    max_message_size: Option<Spanned<u64>>,
    max_recipients: Option<Spanned<u32>>,
    max_connections_per_client: Option<Spanned<u32>>,
    max_message_memory: Option<Spanned<u64>>,
    max_messages_per_hour_per_user: Option<u32>,
    max_recipients_per_hour_per_user: Option<u32>,
    max_messages_per_hour_per_client: Option<u32>,
    max_recipients_per_hour_per_client: Option<u32>,
    audit_retention_days: Option<Spanned<u32>>,
    check_senders: Option<bool>,
    dmarc_enforcement: Option<Spanned<String>>,
    #[serde(default)]
    domain: Vec<RawDomain>,
    #[serde(default)]
    user: Vec<RawUser>,
    outbound: Option<RawOutbound>,
    queue: Option<RawQueue>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDomain {
    name: Spanned<String>,
    deliver_to: Option<Spanned<String>>,
    verify_recipients: Option<Spanned<String>>,
    recipients: Option<Spanned<Vec<Spanned<String>>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUser {
    login: Spanned<String>,
    password: Spanned<String>,
    #[serde(default)]
    may_send_as: Vec<Spanned<String>>,
    max_messages_per_hour: Option<u32>,
    max_recipients_per_hour: Option<u32>,
    #[serde(default)]
    suspended: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOutbound {
    smarthost: Option<Spanned<String>>,
    #[serde(default)]
    require_tls_to: Vec<Spanned<String>>,
    ca_file: Option<Spanned<String>>,
    mta_sts: Option<bool>,
    dane: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawQueue {
    retry_after: Option<Spanned<String>>,
    max_retry_interval: Option<Spanned<String>>,
    give_up_after: Option<Spanned<String>>,
}

/// The mail relay's settings.
#[derive(Debug, Clone)]
pub struct Mail {
    pub enabled: bool,
    /// The name the relay greets with and puts in `Received:`; defaults to `server.hostname`.
    pub hostname: DomainName,
    /// Port 25 in production: MX and relay, STARTTLS offered. `None`: not listening.
    pub mx_listen: Option<SocketAddr>,
    /// Port 587: submission, AUTH only after STARTTLS.
    pub submission_listen: Option<SocketAddr>,
    /// Port 465: submission over implicit TLS.
    pub submissions_listen: Option<SocketAddr>,
    /// Networks that may relay without AUTH. Empty by default.
    pub relay_from: Vec<IpNet>,
    pub max_message_size: u64,
    pub max_recipients: u32,
    /// Sessions at once from one client (IPv4 address or IPv6 /64); `relay_from` is exempt.
    pub max_connections_per_client: u32,
    /// Message data all sessions together may hold in memory while receiving, in bytes.
    pub max_message_memory: u64,
    /// Per client address without AUTH, outside `relay_from`.
    pub client_limits: HourlyLimits,
    /// Days the audit files in `state_dir/mail/audit` are kept (one file a UTC day).
    pub audit_retention_days: u32,
    /// SPF, DKIM, ARC and DMARC checks of mail from outside (port 25, no AUTH, outside
    /// `relay_from`), with an `Authentication-Results:` header. On by default.
    pub check_senders: bool,
    /// What a failed DMARC check of a foreign `From:` domain leads to.
    pub dmarc_enforcement: DmarcEnforcement,
    pub domains: Vec<MailDomain>,
    pub users: Vec<MailUser>,
    pub outbound: Outbound,
    pub queue: QueuePolicy,
}

/// `mail.dmarc_enforcement`: how far the sender domain's published DMARC policy is followed
/// for mail from outside whose `From:` is not a local domain. A `From:` of a local domain
/// that fails DMARC is always refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DmarcEnforcement {
    /// `p=reject` refuses the message (550 5.7.1), `p=quarantine` marks it
    /// (`X-Spam-Flag: YES`) for the mailbox server to file as junk. The default.
    Follow,
    /// Both `p=reject` and `p=quarantine` only mark the message.
    Quarantine,
    /// Nothing is refused or marked; the results are only recorded.
    Report,
}

/// A domain the relay accepts mail for from anyone, and where that mail goes.
#[derive(Debug, Clone)]
pub struct MailDomain {
    pub name: DomainName,
    /// The internal mailbox server for this domain.
    pub deliver_to: SocketAddr,
    /// How a recipient in this domain is known to exist before `RCPT` gets its `250`.
    pub recipients: RecipientCheck,
}

/// How the relay learns whether a local recipient exists (against backscatter).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecipientCheck {
    /// Ask `deliver_to` with `MAIL FROM:<>` / `RCPT TO:` (no `DATA`), caching the answer.
    Probe,
    /// Only these local parts (lowercase); `postmaster` is always accepted.
    List(Vec<String>),
}

/// A person or system that may authenticate and send.
#[derive(Clone)]
pub struct MailUser {
    /// The AUTH login, an address such as `vanthu@ninhthuan.gov.vn` (lowercase).
    pub login: String,
    /// argon2id PHC string, never the password.
    pub password_hash: String,
    /// Envelope senders and `From:` addresses this user may use (lowercase).
    pub may_send_as: Vec<String>,
    /// This user's hourly limits (`[mail]` defaults unless overridden in `[[mail.user]]`).
    pub limits: HourlyLimits,
    /// AUTH and new transactions are refused; mail already queued is still delivered.
    pub suspended: bool,
}

/// The hash stays out of debug output (and so out of any log line).
impl std::fmt::Debug for MailUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MailUser")
            .field("login", &self.login)
            .field("password_hash", &"<redacted>")
            .field("may_send_as", &self.may_send_as)
            .field("limits", &self.limits)
            .field("suspended", &self.suspended)
            .finish()
    }
}

/// Where foreign mail goes and how.
#[derive(Debug, Clone)]
pub struct Outbound {
    /// One next hop for all foreign mail, instead of MX lookups.
    pub smarthost: Option<SocketAddr>,
    /// These domains and their subdomains are never sent to in clear text, and only to a host
    /// whose certificate verifies.
    pub require_tls_to: Vec<DomainName>,
    /// PEM file of extra trust anchors (the government network's own CA) for `require_tls_to`,
    /// added to the system's roots.
    pub ca_file: Option<std::path::PathBuf>,
    /// Look up the recipient domain's MTA-STS policy (RFC 8461) and, in `enforce` mode, send
    /// only to its listed MX hosts over TLS whose certificate verifies.
    pub mta_sts: bool,
    /// DANE (RFC 7672): MX hosts with TLSA records that the resolvers' AD bit vouches for
    /// are only used over TLS that those records authenticate.
    pub dane: bool,
}

/// Retry schedule: from `retry_after`, doubling up to `max_retry_interval`, bounce after `give_up_after`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuePolicy {
    pub retry_after: Duration,
    pub max_retry_interval: Duration,
    pub give_up_after: Duration,
}

pub(crate) fn validate(raw: RawMail, server: &Server, context: &mut Context<'_>) -> Mail {
    let hostname = raw
        .hostname
        .as_ref()
        .and_then(|value| context.domain(value, "mail.hostname"))
        .unwrap_or_else(|| server.hostname.clone());
    let mx_listen = listener(context, raw.mx_listen.as_ref(), "mail.mx_listen", 2525);
    let submission_listen = listener(context, raw.submission_listen.as_ref(), "mail.submission_listen", 2587);
    let submissions_listen = listener(context, raw.submissions_listen.as_ref(), "mail.submissions_listen", 2465);
    let relay_from = raw
        .relay_from
        .iter()
        .flatten()
        .enumerate()
        .filter_map(|(index, value)| context.network(value, &format!("mail.relay_from[{index}]")))
        .collect();

    let max_message_size = match &raw.max_message_size {
        Some(value) if *value.get_ref() < 1024 => {
            context.error(
                value.span(),
                "mail.max_message_size",
                "too small (expected bytes, at least 1024; e.g. 26214400 for 25 MiB)",
            );
            25 * 1024 * 1024
        }
        Some(value) => *value.get_ref(),
        None => 25 * 1024 * 1024,
    };
    let max_recipients = match &raw.max_recipients {
        Some(value) if *value.get_ref() == 0 => {
            context.error(value.span(), "mail.max_recipients", "must be at least 1 (RFC 5321 requires accepting 100)");
            100
        }
        Some(value) => *value.get_ref(),
        None => 100,
    };

    let max_connections_per_client = match &raw.max_connections_per_client {
        Some(value) if *value.get_ref() == 0 => {
            context.error(value.span(), "mail.max_connections_per_client", "must be at least 1 (default 50)");
            50
        }
        Some(value) => *value.get_ref(),
        None => 50,
    };
    let default_memory = (512 * 1024 * 1024).max(max_message_size);
    let max_message_memory = match &raw.max_message_memory {
        Some(value) if *value.get_ref() < max_message_size => {
            context.error(
                value.span(),
                "mail.max_message_memory",
                format!("smaller than max_message_size (expected bytes, at least {max_message_size})"),
            );
            default_memory
        }
        Some(value) => *value.get_ref(),
        None => default_memory,
    };

    let audit_retention_days = match &raw.audit_retention_days {
        Some(value) if *value.get_ref() == 0 => {
            context.error(value.span(), "mail.audit_retention_days", "must be at least 1 (days; default 180)");
            180
        }
        Some(value) => *value.get_ref(),
        None => 180,
    };

    let dmarc_enforcement = match raw.dmarc_enforcement.as_ref().map(|value| (value.get_ref().as_str(), value.span())) {
        None | Some(("follow", _)) => DmarcEnforcement::Follow,
        Some(("quarantine", _)) => DmarcEnforcement::Quarantine,
        Some(("report", _)) => DmarcEnforcement::Report,
        Some((_, span)) => {
            context.error(span, "mail.dmarc_enforcement", "expected \"follow\", \"quarantine\" or \"report\"");
            DmarcEnforcement::Follow
        }
    };

    let mut domains = Vec::new();
    let mut seen_domains = HashSet::new();
    for (index, raw_domain) in raw.domain.iter().enumerate() {
        let path = format!("mail.domain[{index}]");
        let Some(name) = context.domain(&raw_domain.name, &format!("{path}.name")) else {
            continue;
        };
        if !seen_domains.insert(name.clone()) {
            context.error(
                raw_domain.name.span(),
                format!("{path}.name"),
                format!("mail domain `{name}` is listed twice"),
            );
        }
        let Some(deliver_to) = &raw_domain.deliver_to else {
            context.error(
                raw_domain.name.span(),
                format!("{path}.deliver_to"),
                format!("mail domain `{name}` has no route (expected deliver_to = \"IP:PORT\" of its mailbox server)"),
            );
            continue;
        };
        let recipients = recipient_check(context, raw_domain, &name, &path);
        if let Some(deliver_to) = context.socket_addr_or_ip(deliver_to, &format!("{path}.deliver_to"), 25) {
            domains.push(MailDomain { name, deliver_to, recipients });
        }
    }

    let user_limits = HourlyLimits::resolve(
        raw.max_messages_per_hour_per_user,
        raw.max_recipients_per_hour_per_user,
        HourlyLimits::USER_DEFAULT,
    );
    let client_limits = HourlyLimits::resolve(
        raw.max_messages_per_hour_per_client,
        raw.max_recipients_per_hour_per_client,
        HourlyLimits::CLIENT_DEFAULT,
    );
    let mut users = Vec::new();
    let mut seen_logins = HashSet::new();
    for (index, raw_user) in raw.user.iter().enumerate() {
        let path = format!("mail.user[{index}]");
        let login = raw_user.login.get_ref().trim().to_ascii_lowercase();
        if !is_address(&login) {
            context.error(
                raw_user.login.span(),
                format!("{path}.login"),
                format!("`{login}` is not an address (expected local@domain)"),
            );
        } else if !seen_logins.insert(login.clone()) {
            context.error(raw_user.login.span(), format!("{path}.login"), format!("login `{login}` is defined twice"));
        }
        let password = raw_user.password.get_ref();
        if !is_argon2id_phc(password) {
            context.error(
                raw_user.password.span(),
                format!("{path}.password"),
                "not an argon2id hash (expected a `$argon2id$...` string from `lienthong hash-password`; never a plain password)",
            );
        }
        let mut may_send_as = Vec::new();
        for (sender_index, sender) in raw_user.may_send_as.iter().enumerate() {
            let address = sender.get_ref().trim().to_ascii_lowercase();
            if is_address(&address) || address.starts_with('@') && DomainName::parse(&address[1..]).is_ok() {
                may_send_as.push(address);
            } else {
                context.error(
                    sender.span(),
                    format!("{path}.may_send_as[{sender_index}]"),
                    format!("`{address}` is not an address (expected local@domain, or @domain for the whole domain)"),
                );
            }
        }
        if raw_user.may_send_as.is_empty() {
            may_send_as.push(login.clone());
        }
        let limits =
            HourlyLimits::resolve(raw_user.max_messages_per_hour, raw_user.max_recipients_per_hour, user_limits);
        let suspended = raw_user.suspended;
        users.push(MailUser { login, password_hash: password.clone(), may_send_as, limits, suspended });
    }

    let raw_outbound = raw.outbound.unwrap_or_default();
    let smarthost = raw_outbound
        .smarthost
        .as_ref()
        .filter(|value| !value.get_ref().is_empty())
        .and_then(|value| context.socket_addr_or_ip(value, "mail.outbound.smarthost", 25));
    let require_tls_to = raw_outbound
        .require_tls_to
        .iter()
        .enumerate()
        .filter_map(|(index, value)| context.domain(value, &format!("mail.outbound.require_tls_to[{index}]")))
        .collect();
    let ca_file = raw_outbound
        .ca_file
        .as_ref()
        .filter(|value| !value.get_ref().is_empty())
        .and_then(|value| context.existing_file(value, "mail.outbound.ca_file"));

    let raw_queue = raw.queue.unwrap_or_default();
    let retry_after =
        duration(context, raw_queue.retry_after.as_ref(), "mail.queue.retry_after", Duration::from_secs(300));
    let max_retry_interval = duration(
        context,
        raw_queue.max_retry_interval.as_ref(),
        "mail.queue.max_retry_interval",
        Duration::from_secs(4 * 3600),
    );
    let give_up_after =
        duration(context, raw_queue.give_up_after.as_ref(), "mail.queue.give_up_after", Duration::from_secs(5 * 86400));

    Mail {
        enabled: raw.enabled.unwrap_or(true),
        hostname,
        mx_listen,
        submission_listen,
        submissions_listen,
        relay_from,
        max_message_size,
        max_recipients,
        max_connections_per_client,
        max_message_memory,
        client_limits,
        audit_retention_days,
        check_senders: raw.check_senders.unwrap_or(true),
        dmarc_enforcement,
        domains,
        users,
        outbound: Outbound {
            smarthost,
            require_tls_to,
            ca_file,
            mta_sts: raw_outbound.mta_sts.unwrap_or(true),
            dane: raw_outbound.dane.unwrap_or(true),
        },
        queue: QueuePolicy { retry_after, max_retry_interval, give_up_after },
    }
}

/// `verify_recipients = "probe"` (the default) or `"list"` with `recipients = [...]`.
fn recipient_check(context: &mut Context<'_>, raw: &RawDomain, domain: &DomainName, path: &str) -> RecipientCheck {
    let mode = raw.verify_recipients.as_ref();
    match (mode.map(|mode| mode.get_ref().as_str()), &raw.recipients) {
        (None | Some("probe"), None) => RecipientCheck::Probe,
        (Some("list"), Some(list)) => {
            let mut parts = Vec::new();
            for (index, entry) in list.get_ref().iter().enumerate() {
                let text = entry.get_ref().trim().to_lowercase();
                let local = match text.rsplit_once('@') {
                    Some((local, entry_domain)) if entry_domain == domain.as_str() => local.to_owned(),
                    Some(_) => String::new(),
                    None => text,
                };
                let valid = !local.is_empty()
                    && local.len() <= 64
                    && !local.contains(|c: char| c.is_whitespace() || c.is_control() || c == '@' || c == '"');
                if valid {
                    parts.push(local);
                } else {
                    context.error(
                        entry.span(),
                        format!("{path}.recipients[{index}]"),
                        format!("`{}` is not a mailbox of {domain} (expected a local part such as \"vanthu\", or vanthu@{domain})", entry.get_ref()),
                    );
                }
            }
            RecipientCheck::List(parts)
        }
        (Some("list"), None) => {
            let span = mode.map(Spanned::span).unwrap_or_default();
            context.error(
                span,
                format!("{path}.recipients"),
                "verify_recipients = \"list\" needs recipients = [\"local part\", ...]",
            );
            RecipientCheck::Probe
        }
        (None | Some("probe"), Some(list)) => {
            context.error(
                list.span(),
                format!("{path}.recipients"),
                "a recipient list is only used with verify_recipients = \"list\"",
            );
            RecipientCheck::Probe
        }
        (Some(other), _) => {
            let span = mode.map(Spanned::span).unwrap_or_default();
            context.error(
                span,
                format!("{path}.verify_recipients"),
                format!("`{other}` is not a recipient check (expected \"probe\" or \"list\")"),
            );
            RecipientCheck::Probe
        }
    }
}

/// A listener address; the empty string turns that listener off.
fn listener(
    context: &mut Context<'_>,
    value: Option<&Spanned<String>>,
    path: &str,
    default_port: u16,
) -> Option<SocketAddr> {
    match value {
        None => Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), default_port)),
        Some(value) if value.get_ref().is_empty() => None,
        Some(value) => context.socket_addr(value, path),
    }
}

/// Durations such as `30s`, `5m`, `4h`, `5d`.
fn duration(context: &mut Context<'_>, value: Option<&Spanned<String>>, path: &str, default: Duration) -> Duration {
    let Some(value) = value else { return default };
    match parse_duration(value.get_ref()) {
        Some(parsed) if !parsed.is_zero() => parsed,
        _ => {
            context.error(
                value.span(),
                path,
                format!("`{}` is not a duration (expected e.g. 30s, 5m, 4h or 5d)", value.get_ref()),
            );
            default
        }
    }
}

pub(crate) fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().ok()?;
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return None,
    };
    number.checked_mul(seconds).map(Duration::from_secs)
}

fn is_address(text: &str) -> bool {
    match text.rsplit_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && local.len() <= 64
                && !local.contains(|c: char| c.is_whitespace() || c == '@' || c == '"' || c.is_control())
                && DomainName::parse(domain).is_ok()
        }
        None => false,
    }
}

/// Shape check only; the mail service verifies the hash itself.
fn is_argon2id_phc(text: &str) -> bool {
    let parts: Vec<&str> = text.split('$').collect();
    parts.len() == 6
        && parts[0].is_empty()
        && parts[1] == "argon2id"
        && parts[2].starts_with("v=")
        && parts[3].contains("m=")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5m"), Some(Duration::from_secs(300)));
        assert_eq!(parse_duration("5d"), Some(Duration::from_secs(432_000)));
        assert_eq!(parse_duration("5"), None);
        assert_eq!(parse_duration("m"), None);
        assert_eq!(parse_duration("5w"), None);
    }
}
