//! DKIM signing of the province's outgoing mail (RFC 6376), with two signatures per message,
//! Ed25519 and RSA-2048 (RFC 8463 §1: both, while verifiers catch up).
//!
//! Only mail the relay may vouch for is signed: from an authenticated user or a `relay_from`
//! client, with a `From:` in a local domain (the signing domain is that domain, so DMARC
//! aligns). Signing happens once, at intake, after the relay has added its own headers, so
//! the stored bytes are exactly what every delivery attempt sends.
//!
//! Keys live in `state_dir` ([`store`]); [`records`] turns them into the `_domainkey` TXT
//! records the binary hands to DNS. A rotation ([`Signer::rotate`]) signs new mail with new
//! keys at once and keeps the old selector published for [`in_flight_secs`].

mod store;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use mail_auth::common::crypto::{Ed25519Key, RsaKey, Sha256};
use mail_auth::common::headers::HeaderWriter as _;
use mail_auth::dkim::{Canonicalization, DkimSigner, Done};

pub use store::{Retiring, Selectors, selector_names};

use crate::Error;

/// The header fields signed (RFC 6376 §5.4.1), `From` twice so that a second `From:` added
/// on the way breaks the signature (oversigning, §8.15). Absent fields are signed as absent.
pub const SIGNED_HEADERS: &[&str] = &[
    "From",
    "From",
    "Sender",
    "Reply-To",
    "Subject",
    "Date",
    "Message-ID",
    "To",
    "Cc",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
    "In-Reply-To",
    "References",
    "List-Id",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
];

/// TTL of the published key records.
pub const RECORD_TTL: u32 = 3600;

/// How long a retired selector stays published: the queue's maximum lifetime (mail signed
/// just before the rotation may be delivered that late) plus a day for verifiers that check
/// after delivery (mailbox servers, forwarders).
pub fn in_flight_secs(give_up_after: std::time::Duration) -> u64 {
    give_up_after.as_secs().saturating_add(86_400)
}

/// What signing did to one message (for the log and the audit trail).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    pub domain: String,
    /// The selectors used, Ed25519 first.
    pub selectors: [String; 2],
}

/// Signs messages with the current keys of every local domain.
pub struct Signer {
    state_dir: PathBuf,
    in_flight_secs: std::sync::atomic::AtomicU64,
    domains: RwLock<Arc<HashMap<String, Arc<DomainSigner>>>>,
}

struct DomainSigner {
    selectors: [String; 2],
    ed25519: DkimSigner<Ed25519Key, Done>,
    rsa: DkimSigner<RsaKey<Sha256>, Done>,
}

impl Signer {
    /// Loads (generating on first start) the keys of every domain in `domains`.
    pub fn open(state_dir: &Path, domains: &[String], in_flight_secs: u64, now_unix: u64) -> Result<Self, Error> {
        let signer = Self {
            state_dir: state_dir.to_owned(),
            in_flight_secs: std::sync::atomic::AtomicU64::new(in_flight_secs),
            domains: RwLock::new(Arc::new(HashMap::new())),
        };
        signer.reload(domains, in_flight_secs, now_unix)?;
        Ok(signer)
    }

    /// Applies a new domain list: new domains get keys, removed ones stop signing, retired
    /// selectors past their time are deleted.
    pub fn reload(&self, domains: &[String], in_flight_secs: u64, now_unix: u64) -> Result<(), Error> {
        self.in_flight_secs.store(in_flight_secs, std::sync::atomic::Ordering::Relaxed);
        let mut loaded = HashMap::new();
        for domain in domains {
            let dir = store::domain_dir(&self.state_dir, domain);
            let mut selectors = store::ensure(&dir, now_unix)?;
            store::prune(&dir, &mut selectors, now_unix, in_flight_secs)?;
            loaded.insert(domain.clone(), Arc::new(load_signer(&dir, domain, &selectors.current)?));
        }
        *self.domains.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(loaded);
        Ok(())
    }

    /// New keys under a new selector for `domain`; mail accepted from now on uses them.
    pub fn rotate(&self, domain: &str, now_unix: u64) -> Result<Selectors, Error> {
        let current = self.domains.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        if !current.contains_key(domain) {
            return Err(Error::NotLocal(domain.to_owned()));
        }
        let dir = store::domain_dir(&self.state_dir, domain);
        let mut selectors = store::rotate(&dir, now_unix)?;
        store::prune(&dir, &mut selectors, now_unix, self.in_flight_secs.load(std::sync::atomic::Ordering::Relaxed))?;
        let signer = Arc::new(load_signer(&dir, domain, &selectors.current)?);
        let mut domains = self.domains.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut updated = (**domains).clone();
        updated.insert(domain.to_owned(), signer);
        *domains = Arc::new(updated);
        tracing::info!(domain, selector = %selectors.current, "DKIM keys rotated");
        Ok(selectors)
    }

    /// Prepends both signatures when the message may be signed (`trusted` sender, `From:` in
    /// a local domain); otherwise returns it unchanged.
    pub fn sign(&self, content: Vec<u8>, trusted: bool) -> (Vec<u8>, Option<Signed>) {
        if !trusted {
            return (content, None);
        }
        let Some(domain) = from_domain(&content) else { return (content, None) };
        let domains = self.domains.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        let Some(signer) = domains.get(&domain) else { return (content, None) };
        let signatures = signer.ed25519.sign(&content).and_then(|ed| Ok((ed, signer.rsa.sign(&content)?)));
        match signatures {
            Ok((ed, rsa)) => {
                let (ed, rsa) = (header(&ed), header(&rsa));
                // Below the relay's own `Received:` (trace fields stay on top, RFC 5321
                // §4.4); it is not signed, so the place changes nothing for verifiers.
                let at = own_trace_end(&content);
                let mut signed = Vec::with_capacity(ed.len() + rsa.len() + content.len());
                signed.extend_from_slice(&content[..at]);
                signed.extend_from_slice(ed.as_bytes());
                signed.extend_from_slice(rsa.as_bytes());
                signed.extend_from_slice(&content[at..]);
                metrics::counter!("lienthong_mail_dkim_signed_total").increment(1);
                (signed, Some(Signed { domain, selectors: signer.selectors.clone() }))
            }
            Err(error) => {
                // Unsigned mail still flows (it is what the relay sent before DKIM); the
                // failure is loud because DMARC receivers will quarantine it.
                metrics::counter!("lienthong_mail_dkim_failed_total").increment(1);
                tracing::error!(%error, domain, "DKIM signing failed; message sent unsigned");
                (content, None)
            }
        }
    }
}

/// The `_domainkey` TXT records of every domain's current and retiring selectors, as zone
/// lines for DNS. Reads `state_dir` only: a domain without keys yet has no records.
pub fn records(state_dir: &Path, domains: &[String], in_flight_secs: u64, now_unix: u64) -> Vec<String> {
    let mut lines = Vec::new();
    for domain in domains {
        let dir = store::domain_dir(state_dir, domain);
        let selectors = match store::read_selectors(&dir) {
            Ok(Some(selectors)) => selectors,
            Ok(None) => continue,
            Err(error) => {
                tracing::warn!(%error, domain, "DKIM keys unreadable; their records are not published");
                continue;
            }
        };
        let live = selectors
            .retiring
            .iter()
            .filter(|retiring| now_unix < retiring.retired_unix.saturating_add(in_flight_secs))
            .map(|retiring| retiring.selector.as_str());
        for base in std::iter::once(selectors.current.as_str()).chain(live) {
            match store::load(&dir, base) {
                Ok(keys) => {
                    let [ed, rsa] = selector_names(base);
                    lines.push(record_line(&ed, domain, &format!("v=DKIM1; k=ed25519; p={}", keys.ed25519_public)));
                    lines.push(record_line(&rsa, domain, &format!("v=DKIM1; k=rsa; p={}", keys.rsa_public)));
                }
                Err(error) => tracing::warn!(%error, domain, selector = base, "DKIM key unreadable; not published"),
            }
        }
    }
    lines
}

/// `YYYYMMDD` in UTC, for selector names.
pub(crate) fn date_stamp(unix: u64) -> String {
    let date = mail_parser::DateTime::from_timestamp(i64::try_from(unix).unwrap_or(i64::MAX));
    format!("{:04}{:02}{:02}", date.year, date.month, date.day)
}

fn load_signer(dir: &Path, domain: &str, base: &str) -> Result<DomainSigner, Error> {
    let keys = store::load(dir, base)?;
    let selectors = selector_names(base);
    let ed25519 = DkimSigner::from_key(keys.ed25519)
        .domain(domain)
        .selector(selectors[0].clone())
        .headers(SIGNED_HEADERS.iter().copied())
        .header_canonicalization(Canonicalization::Relaxed)
        .body_canonicalization(Canonicalization::Relaxed);
    let rsa = DkimSigner::from_key(keys.rsa)
        .domain(domain)
        .selector(selectors[1].clone())
        .headers(SIGNED_HEADERS.iter().copied())
        .header_canonicalization(Canonicalization::Relaxed)
        .body_canonicalization(Canonicalization::Relaxed);
    Ok(DomainSigner { selectors, ed25519, rsa })
}

/// The signature as a header field. mail-auth folds after a `b=` value that ends a line,
/// leaving whitespace between the value and its `;` that was not there when it hashed the
/// field with an empty `b=`; strict verifiers (dkimpy) then fail it (RFC 6376 §3.5: only the
/// value is removed). The fold is taken out again.
fn header(signature: &mail_auth::dkim::Signature) -> String {
    let text = signature.to_header();
    match text.strip_suffix("\r\n\t;\r\n") {
        Some(head) => format!("{head};\r\n"),
        None => text,
    }
}

/// Where the first header field ends when it is a `Received:` (the relay's own), else 0.
fn own_trace_end(content: &[u8]) -> usize {
    if !content.get(..9).is_some_and(|name| name.eq_ignore_ascii_case(b"Received:")) {
        return 0;
    }
    let mut position = 0;
    for line in content.split_inclusive(|&byte| byte == b'\n') {
        if position > 0 && !matches!(line.first(), Some(b' ' | b'\t')) {
            return position;
        }
        position += line.len();
    }
    0
}

/// The domain of the (first) `From:` mailbox, lowercase.
fn from_domain(content: &[u8]) -> Option<String> {
    let originators = crate::message::originators(content).ok()?;
    let address = originators.from.first()?;
    address.rsplit_once('@').map(|(_, domain)| domain.trim_end_matches('.').to_ascii_lowercase())
}

/// One zone line; the text is cut into 255-byte strings (RFC 1035 §3.3.14, RFC 6376 §3.6.2.2).
fn record_line(selector: &str, domain: &str, text: &str) -> String {
    let strings: Vec<String> =
        text.as_bytes().chunks(255).map(|chunk| format!("\"{}\"", String::from_utf8_lossy(chunk))).collect();
    format!("{selector}._domainkey.{domain}. {RECORD_TTL} IN TXT {}", strings.join(" "))
}

#[cfg(test)]
mod tests;
