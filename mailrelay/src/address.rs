//! Envelope addresses: parsed once at the edge, compared in canonical form afterwards.

use std::fmt;

/// A mailbox from `MAIL FROM` or `RCPT TO`, after smtp-proto removed quotes and source routes.
///
/// The domain is canonical (lowercase ASCII or UTF-8 as sent, no trailing dot); the local part
/// keeps its case because only the destination may interpret it (RFC 5321 2.4).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Address {
    local: String,
    domain: String,
}

/// Why an address was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressProblem {
    /// No `@`, empty parts, or characters no mailbox may hold.
    Malformed,
    /// `%`, `!` or `@` in the local part: sender-specified routing (the classic relay tricks).
    Routing,
}

impl Address {
    /// Parses the text smtp-proto returns for a path. The empty path `<>` is not an address.
    pub fn parse(text: &str) -> Result<Self, AddressProblem> {
        let (local, domain) = text.rsplit_once('@').ok_or(AddressProblem::Malformed)?;
        let domain = domain.strip_suffix('.').unwrap_or(domain);
        if local.is_empty() || local.len() > 64 || domain.is_empty() || domain.len() > 253 {
            return Err(AddressProblem::Malformed);
        }
        if local.chars().any(|c| c.is_control()) || !is_domain(domain) {
            return Err(AddressProblem::Malformed);
        }
        let address = Self { local: local.to_owned(), domain: domain.to_lowercase() };
        if local.contains(['%', '!', '@']) {
            return Err(AddressProblem::Routing);
        }
        Ok(address)
    }

    pub fn local(&self) -> &str {
        &self.local
    }

    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// `local@domain` with the local part lowercased: the form `may_send_as` is written in.
    pub fn canonical(&self) -> String {
        format!("{}@{}", self.local.to_lowercase(), self.domain)
    }

    /// True when the domain equals `suffix` or is a subdomain of it.
    pub fn domain_is_within(&self, suffix: &str) -> bool {
        self.domain == suffix || self.domain.strip_suffix(suffix).is_some_and(|head| head.ends_with('.'))
    }

    /// Whether this address needs SMTPUTF8 to be sent.
    pub fn is_ascii(&self) -> bool {
        self.local.is_ascii() && self.domain.is_ascii()
    }
}

impl fmt::Display for Address {
    /// The path form for `RCPT TO:<...>`: the local part quoted when it is not a dot-atom.
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        if is_dot_atom(&self.local) {
            write!(formatter, "{}@{}", self.local, self.domain)
        } else {
            let escaped = self.local.replace('\\', "\\\\").replace('"', "\\\"");
            write!(formatter, "\"{escaped}\"@{}", self.domain)
        }
    }
}

/// Does `address` (canonical, lowercase) match one of the user's `may_send_as` entries?
/// An entry `@domain` covers every address in that domain.
pub fn may_send_as(allowed: &[String], address: &str) -> bool {
    let address = address.to_lowercase();
    allowed.iter().any(|entry| match entry.strip_prefix('@') {
        Some(domain) => address.rsplit_once('@').is_some_and(|(_, own)| own == domain),
        None => *entry == address,
    })
}

fn is_domain(domain: &str) -> bool {
    if let Some(literal) = domain.strip_prefix('[').and_then(|rest| rest.strip_suffix(']')) {
        let literal = literal.strip_prefix("IPv6:").unwrap_or(literal);
        return literal.parse::<std::net::IpAddr>().is_ok();
    }
    domain.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label.chars().all(|c| c.is_alphanumeric() || c == '-' || c == '_')
    })
}

fn is_dot_atom(local: &str) -> bool {
    local.split('.').all(|atom| {
        !atom.is_empty()
            && atom.chars().all(|c| c.is_alphanumeric() || !c.is_ascii() || "!#$%&'*+-/=?^_`{|}~".contains(c))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_domain_and_trailing_dot() {
        let address = Address::parse("VanThu@NinhThuan.Gov.VN.").unwrap();
        assert_eq!(address.domain(), "ninhthuan.gov.vn");
        assert_eq!(address.local(), "VanThu");
        assert_eq!(address.canonical(), "vanthu@ninhthuan.gov.vn");
    }

    #[test]
    fn routing_tricks_are_refused() {
        assert_eq!(Address::parse("user%evil.com@ninhthuan.gov.vn"), Err(AddressProblem::Routing));
        assert_eq!(Address::parse("evil.com!user@ninhthuan.gov.vn"), Err(AddressProblem::Routing));
        assert_eq!(Address::parse("user@evil.com@ninhthuan.gov.vn"), Err(AddressProblem::Routing));
        assert_eq!(Address::parse("user@evil..com"), Err(AddressProblem::Malformed));
        assert_eq!(Address::parse("user"), Err(AddressProblem::Malformed));
    }

    #[test]
    fn quoted_local_parts_are_requoted() {
        let address = Address::parse("van thu@ninhthuan.gov.vn").unwrap();
        assert_eq!(address.to_string(), "\"van thu\"@ninhthuan.gov.vn");
        let address = Address::parse("nguyễn.văn.a@ninhthuan.gov.vn").unwrap();
        assert_eq!(address.to_string(), "nguyễn.văn.a@ninhthuan.gov.vn");
        assert!(!address.is_ascii());
    }

    #[test]
    fn subdomains_and_send_as() {
        let address = Address::parse("a@so.ninhthuan.gov.vn").unwrap();
        assert!(address.domain_is_within("gov.vn"));
        assert!(!address.domain_is_within("n.gov.vn"));
        let allowed = vec!["vanthu@ninhthuan.gov.vn".to_owned(), "@so.ninhthuan.gov.vn".to_owned()];
        assert!(may_send_as(&allowed, "VanThu@ninhthuan.gov.vn"));
        assert!(may_send_as(&allowed, "x@so.ninhthuan.gov.vn"));
        assert!(!may_send_as(&allowed, "x@ninhthuan.gov.vn"));
    }
}
