//! Sender authentication of mail from outside: SPF (RFC 7208), DKIM (RFC 6376), ARC (RFC
//! 8617) and DMARC (RFC 7489), checked with mail-auth at the end of `DATA` for every message
//! on port 25 from a client that did not log in and is outside `relay_from`, and written down
//! in one `Authentication-Results:` header (RFC 8601).
//!
//! What a result leads to is [`decide`], a pure function:
//! - a `From:` of a local domain that does not pass DMARC is refused (`550 5.7.1`): only this
//!   relay sends that mail, signed, so from outside it is spoofed;
//! - for other domains the domain's published policy decides, as far as
//!   `mail.dmarc_enforcement` allows: `p=reject` refuses, `p=quarantine` marks the message
//!   with `X-Spam-Flag: YES` for the mailbox server to file as junk;
//! - an SPF `fail` of a domain without a DMARC record is refused as Postfix's policyd-spf does;
//! - a DNS failure the verdict depends on answers `451 4.4.3` (the sender retries), never an
//!   accept by default: a timed-out lookup of a `p=reject` domain must not let its spoofs in.
//!
//! Lookups go to `dns.forwarders` (else the system resolver), each bounded by
//! [`LOOKUP_TIMEOUT`], the whole check by [`CHECK_TIMEOUT`].

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use lienthong_config::DmarcEnforcement;
use mail_auth::common::headers::HeaderWriter as _;
use mail_auth::dmarc::Policy;
use mail_auth::dmarc::verify::DmarcParameters;
use mail_auth::hickory_resolver::config::ResolverOpts;
use mail_auth::spf::verify::SpfParameters;
use mail_auth::{
    AuthenticatedMessage, AuthenticationResults, DkimResult, DmarcResult, MessageAuthenticator, SpfResult,
};

/// One DNS query's wait, per attempt.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(4);
/// The whole check (all lookups of SPF's includes, every DKIM key, DMARC); beyond it the
/// client is told to retry.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(25);

/// The outcome of a DMARC check, as [`decide`] needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dmarc {
    Pass,
    Fail,
    /// A lookup the result depends on failed.
    TempError,
    /// No usable DMARC record (none published, or a broken one).
    None,
}

/// The published policy, `p=` (or `sp=` for a subdomain), `t=y` already applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Published {
    None,
    Quarantine,
    Reject,
}

/// What [`decide`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Results {
    pub dmarc: Dmarc,
    pub policy: Published,
    /// SPF of the envelope sender (or of the HELO name for a null sender) failed (`-all`).
    pub spf_fail: bool,
    /// A `From:` address is in a local domain.
    pub from_local: bool,
}

/// What happens to the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    /// Accepted with `X-Spam-Flag: YES`.
    Quarantine,
    /// `550` with this enhanced code and text.
    Refuse {
        enhanced: &'static str,
        text: String,
    },
    /// `451 4.4.3`: a lookup failed; the sender retries.
    Retry {
        text: String,
    },
}

/// Decides a message's fate from its results (see the module documentation).
pub fn decide(results: &Results, enforcement: DmarcEnforcement, from_domain: &str) -> Verdict {
    let from_domain = reply_safe(from_domain);
    let retry = || Verdict::Retry {
        text: format!("Cannot check the sender's authentication for {from_domain} now (DNS); try again later"),
    };
    if results.from_local {
        return match results.dmarc {
            Dmarc::Pass => Verdict::Accept,
            Dmarc::TempError => retry(),
            Dmarc::Fail | Dmarc::None => Verdict::Refuse {
                enhanced: "5.7.1",
                text: format!("Mail from {from_domain} must come through this relay: DMARC check failed"),
            },
        };
    }
    let refuse_or_mark = |refuse: Verdict| match enforcement {
        DmarcEnforcement::Follow => refuse,
        DmarcEnforcement::Quarantine => Verdict::Quarantine,
        DmarcEnforcement::Report => Verdict::Accept,
    };
    match (results.dmarc, results.policy) {
        (Dmarc::Pass, _) => Verdict::Accept,
        (Dmarc::TempError, _) => retry(),
        (Dmarc::Fail, Published::Reject) => refuse_or_mark(Verdict::Refuse {
            enhanced: "5.7.1",
            text: format!("Rejected by the DMARC policy of {from_domain}"),
        }),
        (Dmarc::Fail, Published::Quarantine) if enforcement != DmarcEnforcement::Report => Verdict::Quarantine,
        (Dmarc::Fail, _) => Verdict::Accept,
        (Dmarc::None, _) if results.spf_fail => refuse_or_mark(Verdict::Refuse {
            enhanced: "5.7.23",
            text: "SPF check failed: this host may not send for the sender's domain".to_owned(),
        }),
        (Dmarc::None, _) => Verdict::Accept,
    }
}

/// The envelope and session facts the checks need.
pub struct Context<'a> {
    pub peer: IpAddr,
    pub helo: &'a str,
    /// The envelope sender, empty for a null sender.
    pub sender: &'a str,
}

/// What the checks found, for the message and the audit line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    /// The `Authentication-Results:` field, with its CRLF.
    pub header: String,
    pub verdict: Verdict,
    pub spf: &'static str,
    pub dkim: &'static str,
    pub arc: &'static str,
    pub dmarc: &'static str,
    /// The `From:` domain DMARC was checked for (empty when there is none to check).
    pub from_domain: String,
}

/// The resolver and settings of the checks.
pub struct SenderChecks {
    authenticator: MessageAuthenticator,
    enforcement: DmarcEnforcement,
}

impl SenderChecks {
    /// Checks through `forwarders`, else the system resolver configuration.
    pub fn new(forwarders: &[SocketAddr], enforcement: DmarcEnforcement) -> Result<Self, String> {
        let (config, mut options) = if forwarders.is_empty() {
            mail_auth::hickory_resolver::system_conf::read_system_conf()
                .map_err(|error| format!("reading the system DNS configuration: {error}"))?
        } else {
            (crate::resolver::forwarder_config(forwarders), ResolverOpts::default())
        };
        options.timeout = LOOKUP_TIMEOUT;
        options.attempts = 2;
        let authenticator = MessageAuthenticator::new(config, options)
            .map_err(|error| format!("building the DNS resolver for sender checks: {error}"))?;
        Ok(Self { authenticator, enforcement })
    }

    /// Checks one message. `is_local` tells whether a domain is one of the relay's own.
    pub async fn check(
        &self,
        content: &[u8],
        context: &Context<'_>,
        hostname: &str,
        is_local: impl Fn(&str) -> bool + Sync,
    ) -> Checked {
        let checked = tokio::time::timeout(CHECK_TIMEOUT, self.run(content, context, hostname, &is_local)).await;
        checked.unwrap_or_else(|_| {
            let header =
                format!("Authentication-Results: {hostname};\r\n\tdmarc=temperror reason=\"checks timed out\"\r\n");
            Checked {
                header,
                verdict: Verdict::Retry { text: "Sender authentication checks timed out; try again later".to_owned() },
                spf: "temperror",
                dkim: "temperror",
                arc: "temperror",
                dmarc: "temperror",
                from_domain: String::new(),
            }
        })
    }

    async fn run(
        &self,
        content: &[u8],
        context: &Context<'_>,
        hostname: &str,
        is_local: &(dyn Fn(&str) -> bool + Sync),
    ) -> Checked {
        let from_local = crate::message::originators(content).is_ok_and(|originators| {
            originators.from.iter().any(|address| address.rsplit_once('@').is_some_and(|(_, domain)| is_local(domain)))
        });
        let helo = if context.helo.is_empty() { "unknown" } else { context.helo };
        let sender_domain = context.sender.rsplit_once('@').map_or(helo, |(_, domain)| domain);
        let spf = self
            .authenticator
            .verify_spf(SpfParameters::verify_mail_from(context.peer, helo, hostname, context.sender))
            .await;
        let Some(message) = AuthenticatedMessage::parse(content) else {
            // Not even a header section mail-auth can read: nothing to align; DMARC cannot pass.
            let results = Results {
                dmarc: Dmarc::None,
                policy: Published::None,
                spf_fail: spf.result() == SpfResult::Fail,
                from_local,
            };
            let header = AuthenticationResults::new(hostname)
                .with_spf_mailfrom_result(&spf, context.peer, context.sender, helo)
                .to_header();
            return Checked {
                header,
                verdict: decide(&results, self.enforcement, ""),
                spf: spf_name(spf.result()),
                dkim: "none",
                arc: "none",
                dmarc: "none",
                from_domain: String::new(),
            };
        };
        let dkim = self.authenticator.verify_dkim(&message).await;
        let arc = self.authenticator.verify_arc(&message).await;
        let dmarc = self.authenticator.verify_dmarc(DmarcParameters::new(&message, &dkim, sender_domain, &spf)).await;
        let from_header = message.from.first().map(String::as_str).unwrap_or_default();
        let header = AuthenticationResults::new(hostname)
            .with_dkim_results(&dkim, from_header)
            .with_spf_mailfrom_result(&spf, context.peer, context.sender, helo)
            .with_arc_result(&arc, context.peer)
            .with_dmarc_result(&dmarc)
            .to_header();
        // RFC 8601 2.7.1: a message without signatures is `dkim=none`, not silence.
        let header = if dkim.is_empty() {
            let prefix = format!("Authentication-Results: {hostname}");
            header.replacen(&prefix, &format!("{prefix};\r\n\tdkim=none"), 1)
        } else {
            header
        };
        let outcome = match dmarc.result() {
            DmarcResult::Pass => Dmarc::Pass,
            DmarcResult::Fail(_) => Dmarc::Fail,
            DmarcResult::TempError(_) => Dmarc::TempError,
            DmarcResult::PermError(_) | DmarcResult::None => Dmarc::None,
        };
        let policy = match dmarc.policy() {
            Policy::Reject => Published::Reject,
            Policy::Quarantine => Published::Quarantine,
            Policy::None | Policy::Unspecified => Published::None,
        };
        let results = Results { dmarc: outcome, policy, spf_fail: spf.result() == SpfResult::Fail, from_local };
        Checked {
            header,
            verdict: decide(&results, self.enforcement, dmarc.domain()),
            spf: spf_name(spf.result()),
            dkim: dkim_name(&dkim),
            arc: dkim_result_name(arc.result()),
            dmarc: match outcome {
                Dmarc::Pass => "pass",
                Dmarc::Fail => "fail",
                Dmarc::TempError => "temperror",
                Dmarc::None => "none",
            },
            from_domain: safe_domain(dmarc.domain()),
        }
    }
}

fn spf_name(result: SpfResult) -> &'static str {
    match result {
        SpfResult::Pass => "pass",
        SpfResult::Fail => "fail",
        SpfResult::SoftFail => "softfail",
        SpfResult::Neutral => "neutral",
        SpfResult::TempError => "temperror",
        SpfResult::PermError => "permerror",
        SpfResult::None => "none",
    }
}

fn dkim_result_name(result: &DkimResult) -> &'static str {
    match result {
        DkimResult::Pass => "pass",
        DkimResult::Neutral(_) => "neutral",
        DkimResult::Fail(_) => "fail",
        DkimResult::PermError(_) => "permerror",
        DkimResult::TempError(_) => "temperror",
        DkimResult::None => "none",
    }
}

/// The best DKIM result among the signatures: one passing signature is a pass.
fn dkim_name(outputs: &[mail_auth::DkimOutput<'_>]) -> &'static str {
    let rank =
        |name: &str| ["pass", "temperror", "fail", "permerror", "neutral", "none"].iter().position(|n| *n == name);
    outputs.iter().map(|output| dkim_result_name(output.result())).min_by_key(|name| rank(name)).unwrap_or("none")
}

/// A domain name as it may appear in a reply line: see [`safe_domain`]; an empty one is
/// named in words.
fn reply_safe(domain: &str) -> String {
    let safe = safe_domain(domain);
    if safe.is_empty() { "the sender's domain".to_owned() } else { safe }
}

/// A domain from a hostile `From:` as it may go into a reply, a log line or the audit file:
/// letters, digits, dots, hyphens and underscores, anything else `?`, at most 253 characters.
fn safe_domain(domain: &str) -> String {
    domain
        .chars()
        .take(253)
        .map(
            |character| {
                if character.is_ascii_alphanumeric() || matches!(character, '.' | '-' | '_') { character } else { '?' }
            },
        )
        .collect()
}

/// Removes every `Authentication-Results:` field whose authserv-id is `hostname` (RFC 8601
/// section 5: a forged one claiming this relay), and returns the message without them (the
/// message itself, not a copy, when there is none).
pub fn strip_forged_results<'a>(content: &'a [u8], hostname: &str) -> Cow<'a, [u8]> {
    let headers = crate::message::header_section(content);
    let fields = crate::message::header_fields(headers);
    if !fields.iter().any(|field| claims(field, hostname)) {
        return Cow::Borrowed(content);
    }
    let mut kept = Vec::with_capacity(content.len());
    for field in fields.iter().filter(|field| !claims(field, hostname)) {
        kept.extend_from_slice(field);
    }
    // What follows the last field: the empty line and the body.
    let fields_end = fields.last().map_or(0, |last| last.as_ptr() as usize + last.len() - headers.as_ptr() as usize);
    kept.extend_from_slice(&content[fields_end..]);
    Cow::Owned(kept)
}

/// Whether a header field (with its continuation lines) is an `Authentication-Results:`
/// naming `hostname` as its authserv-id.
fn claims(field: &[u8], hostname: &str) -> bool {
    let Some(colon) = field.iter().position(|byte| *byte == b':') else { return false };
    if !field[..colon].trim_ascii().eq_ignore_ascii_case(b"Authentication-Results") {
        return false;
    }
    // The authserv-id is the first token after folding white space and comments.
    let mut value = &field[colon + 1..];
    loop {
        value = value.trim_ascii_start();
        if value.first() != Some(&b'(') {
            break;
        }
        // A comment, nested ones and quoted pairs included (RFC 5322 3.2.2).
        let mut depth = 0usize;
        let mut escaped = false;
        let mut end = None;
        for (index, byte) in value.iter().enumerate() {
            match (escaped, byte) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'(') => depth += 1,
                (false, b')') => {
                    depth -= 1;
                    if depth == 0 {
                        end = Some(index);
                        break;
                    }
                }
                _ => {}
            }
        }
        match end {
            Some(end) => value = &value[end + 1..],
            // An unterminated comment: no readable id, and a reader of the field sees none.
            None => return false,
        }
    }
    let id = match value.strip_prefix(b"\"") {
        // A quoted-string id (RFC 8601's authserv-id is a `value`).
        Some(quoted) => &quoted[..quoted.iter().position(|byte| *byte == b'"').unwrap_or(quoted.len())],
        None => {
            let end = value
                .iter()
                .position(|byte| matches!(byte, b';' | b' ' | b'\t' | b'\r' | b'\n' | b'('))
                .unwrap_or(value.len());
            &value[..end]
        }
    };
    let id = id.strip_suffix(b".").unwrap_or(id);
    !id.is_empty() && id.eq_ignore_ascii_case(hostname.trim_end_matches('.').as_bytes())
}

#[cfg(test)]
mod tests;
