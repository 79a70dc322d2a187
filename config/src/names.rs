//! Parsed names: built once at the edge, trusted everywhere after.

use std::fmt;

/// A DNS domain name in canonical form: lowercase ASCII, no trailing dot.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DomainName(String);

impl DomainName {
    /// Parses `text` as a host or domain name (letters, digits, `-`, `_`, dots).
    /// A single trailing dot is accepted and dropped.
    pub fn parse(text: &str) -> Result<Self, String> {
        let trimmed = text.strip_suffix('.').unwrap_or(text);
        if trimmed.is_empty() {
            return Err("empty name (expected a domain name such as ninhthuan.gov.vn)".into());
        }
        if trimmed.len() > 253 {
            return Err("name longer than 253 characters".into());
        }
        for label in trimmed.split('.') {
            if label.is_empty() {
                return Err(format!("`{text}` has an empty label (expected labels separated by single dots)"));
            }
            if label.len() > 63 {
                return Err(format!("label `{label}` is longer than 63 characters"));
            }
            if let Some(bad) = label.chars().find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_')) {
                return Err(format!(
                    "`{text}` contains `{bad}` (expected ASCII letters, digits, `-` or `_`; write IDN names in their xn-- form)"
                ));
            }
            if label.starts_with('-') || label.ends_with('-') {
                return Err(format!("label `{label}` starts or ends with `-`"));
            }
        }
        Ok(Self(trimmed.to_ascii_lowercase()))
    }

    /// The name as text, lowercase, without a trailing dot.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True when `self` equals `parent` or lies below it (`a.b.gov.vn` is within `gov.vn`).
    pub fn is_within(&self, parent: &DomainName) -> bool {
        self.0 == parent.0
            || (self.0.len() > parent.0.len()
                && self.0.ends_with(parent.0.as_str())
                && self.0.as_bytes()[self.0.len() - parent.0.len() - 1] == b'.')
    }
}

impl fmt::Display for DomainName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonicalises_case_and_trailing_dot() {
        assert_eq!(DomainName::parse("Hub.NinhThuan.gov.vn.").unwrap().as_str(), "hub.ninhthuan.gov.vn");
    }

    #[test]
    fn rejects_bad_names() {
        for bad in ["", ".", "a..b", "-a.vn", "a b.vn", "hà.vn", &"x".repeat(64)] {
            assert!(DomainName::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn within_respects_label_boundaries() {
        let gov = DomainName::parse("gov.vn").unwrap();
        assert!(DomainName::parse("ninhthuan.gov.vn").unwrap().is_within(&gov));
        assert!(gov.is_within(&gov));
        assert!(!DomainName::parse("notgov.vn").unwrap().is_within(&gov));
    }
}
