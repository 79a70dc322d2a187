//! TLSA records (RFC 6698) as SMTP uses them (RFC 7672 3.1): which are usable, and whether
//! one matches a certificate.

use std::sync::Arc;

use aws_lc_rs::digest;

/// Most usable records kept for one host: an RRset is a handful (current and next key).
pub const MAX_RECORDS: usize = 32;
/// Longest association data kept: a full certificate (matching type 0).
pub const MAX_DATA: usize = 16 * 1024;

/// One TLSA record as published: `usage selector matching data`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Tlsa {
    pub usage: u8,
    pub selector: u8,
    pub matching: u8,
    pub data: Vec<u8>,
}

/// The certificate usages SMTP may use (RFC 7672 3.1.1, 3.1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Usage {
    /// 2: the record names a trust anchor the server's chain must lead to, and the
    /// certificate must carry the MX host name.
    DaneTa,
    /// 3: the record names the server's own certificate or key; names and dates are not
    /// checked.
    DaneEe,
}

impl Usage {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::DaneTa => "DANE-TA",
            Self::DaneEe => "DANE-EE",
        }
    }
}

impl Tlsa {
    /// `Some` when this record can authenticate an SMTP server: usage DANE-TA(2) or
    /// DANE-EE(3), selector 0 (certificate) or 1 (SPKI), matching 0 (exact), 1 (SHA-256) or
    /// 2 (SHA-512) with data of the right length. PKIX-TA(0) and PKIX-EE(1) are unusable for
    /// SMTP (RFC 7672 3.1.3), so are unknown values and malformed data (RFC 7671 4.1).
    pub fn usage(&self) -> Option<Usage> {
        let usage = match self.usage {
            2 => Usage::DaneTa,
            3 => Usage::DaneEe,
            _ => return None,
        };
        let length_fits = match self.matching {
            0 => !self.data.is_empty() && self.data.len() <= MAX_DATA,
            1 => self.data.len() == 32,
            2 => self.data.len() == 64,
            _ => false,
        };
        (self.selector <= 1 && length_fits).then_some(usage)
    }

    /// Whether this record's data matches `certificate` (DER), by its selector and matching
    /// type. A certificate whose SPKI cannot be found matches no selector-1 record.
    pub fn matches(&self, certificate: &[u8]) -> bool {
        let selected = match self.selector {
            0 => certificate,
            1 => match super::der::subject_public_key_info(certificate) {
                Some(spki) => spki,
                None => return false,
            },
            _ => return false,
        };
        match self.matching {
            0 => selected == self.data.as_slice(),
            1 => digest::digest(&digest::SHA256, selected).as_ref() == self.data.as_slice(),
            2 => digest::digest(&digest::SHA512, selected).as_ref() == self.data.as_slice(),
            _ => false,
        }
    }
}

/// The usable TLSA records of one MX host: never empty.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TlsaSet(Arc<[Tlsa]>);

impl TlsaSet {
    /// The usable records among `records` (at most [`MAX_RECORDS`]), `None` when none is.
    pub fn usable(records: impl IntoIterator<Item = Tlsa>) -> Option<Self> {
        let kept: Vec<Tlsa> = records.into_iter().filter(|record| record.usage().is_some()).take(MAX_RECORDS).collect();
        (!kept.is_empty()).then(|| Self(kept.into()))
    }

    /// The records of `usage`.
    pub fn with_usage(&self, usage: Usage) -> impl Iterator<Item = &Tlsa> {
        self.0.iter().filter(move |record| record.usage() == Some(usage))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Never true ([`TlsaSet::usable`] keeps no empty set); for clippy's `len_without_is_empty`.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests;
