//! The two texts MTA-STS publishes (RFC 8461 3.1 and 3.2), parsed strictly, and the MX
//! pattern match of 4.1. No I/O: the text comes in, a value or a reason goes out.

use serde::{Deserialize, Serialize};

/// The longest `max_age` a policy may have (RFC 8461 3.2: about one year).
pub const MAX_AGE_LIMIT: u64 = 31_557_600;
/// More `mx` lines than any real domain needs; more is treated as a broken policy.
const MAX_PATTERNS: usize = 64;

/// What a policy asks of senders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Only listed MX hosts, only over TLS whose certificate verifies; otherwise defer.
    Enforce,
    /// Deliver as without a policy; report what would have failed.
    Testing,
    /// The domain withdrew its policy.
    None,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Enforce => "enforce",
            Self::Testing => "testing",
            Self::None => "none",
        }
    }
}

/// One `mx:` value: a host name, or `*.` and a domain (matching exactly one more label).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct MxPattern {
    wildcard: bool,
    /// Lower case, no trailing dot; the part after `*.` for a wildcard.
    name: String,
}

impl MxPattern {
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim_end_matches('.');
        let (wildcard, name) = match text.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        is_host_name(name).then(|| Self { wildcard, name: name.to_ascii_lowercase() })
    }

    /// RFC 8461 4.1: case-insensitive; `*.example.com` matches `mx.example.com`, neither
    /// `example.com` nor `a.b.example.com`.
    pub fn matches(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.');
        if !self.wildcard {
            return host.eq_ignore_ascii_case(&self.name);
        }
        match host.split_once('.') {
            Some((label, rest)) => !label.is_empty() && label != "*" && rest.eq_ignore_ascii_case(&self.name),
            None => false,
        }
    }
}

impl TryFrom<String> for MxPattern {
    type Error = &'static str;
    fn try_from(text: String) -> Result<Self, Self::Error> {
        Self::parse(&text).ok_or("not an MX pattern")
    }
}

impl From<MxPattern> for String {
    fn from(pattern: MxPattern) -> Self {
        if pattern.wildcard { format!("*.{}", pattern.name) } else { pattern.name }
    }
}

/// A parsed policy file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    pub mode: Mode,
    pub max_age: u64,
    pub mx: Vec<MxPattern>,
}

impl Policy {
    /// Whether `host` (an MX host name) is one the policy allows.
    pub fn allows(&self, host: &str) -> bool {
        self.mx.iter().any(|pattern| pattern.matches(host))
    }
}

/// Why a policy file or TXT record was not usable; the text never quotes the hostile input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// A line is not `key: value`, or holds bytes outside printable ASCII.
    #[error("malformed line {0}")]
    Line(usize),
    /// `version` is missing, repeated or not `STSv1`.
    #[error("version is not STSv1")]
    Version,
    /// `mode` is missing, repeated or unknown.
    #[error("mode is missing or not enforce, testing or none")]
    Mode,
    /// `max_age` is missing, repeated, not a number of at most 10 digits, or above a year.
    #[error("max_age is missing, not a number or above {MAX_AGE_LIMIT}")]
    MaxAge,
    /// An `mx` value is not a host name or `*.` pattern, or there are too many.
    #[error("an mx value is not a host name pattern, or there are more than {MAX_PATTERNS}")]
    Mx,
    /// `enforce` or `testing` without any `mx` line.
    #[error("no mx line")]
    NoMx,
}

/// Parses a policy file (RFC 8461 3.2): `key: value` lines ending in CRLF or LF, in any
/// order; unknown keys are ignored, the known ones may appear once (`mx` once per pattern).
pub fn parse_policy(text: &[u8]) -> Result<Policy, PolicyError> {
    let mut version = None;
    let mut mode = None;
    let mut max_age = None;
    let mut mx = Vec::new();
    let text = text.strip_suffix(b"\n").unwrap_or(text);
    for (index, line) in text.split(|&byte| byte == b'\n').enumerate() {
        let number = index + 1;
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().any(|&byte| !(0x20..=0x7E).contains(&byte) && byte != b'\t') {
            return Err(PolicyError::Line(number));
        }
        let line = std::str::from_utf8(line).map_err(|_| PolicyError::Line(number))?;
        if line.trim().is_empty() {
            continue;
        }
        let (key, value) = line.split_once(':').ok_or(PolicyError::Line(number))?;
        let valid_key = !key.is_empty()
            && key.len() <= 32
            && key.bytes().all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'-' | b'.'));
        if !valid_key {
            return Err(PolicyError::Line(number));
        }
        let value = value.trim_matches([' ', '\t']);
        match key {
            "version" => set_once(&mut version, value == "STSv1", PolicyError::Version)?,
            "mode" => {
                let parsed = match value {
                    "enforce" => Some(Mode::Enforce),
                    "testing" => Some(Mode::Testing),
                    "none" => Some(Mode::None),
                    _ => None,
                };
                set_once(&mut mode, parsed.ok_or(PolicyError::Mode)?, PolicyError::Mode)?;
            }
            "max_age" => {
                let seconds = (!value.is_empty() && value.len() <= 10 && value.bytes().all(|b| b.is_ascii_digit()))
                    .then(|| value.parse::<u64>().ok())
                    .flatten()
                    .filter(|&seconds| seconds <= MAX_AGE_LIMIT)
                    .ok_or(PolicyError::MaxAge)?;
                set_once(&mut max_age, seconds, PolicyError::MaxAge)?;
            }
            "mx" => {
                if mx.len() >= MAX_PATTERNS {
                    return Err(PolicyError::Mx);
                }
                mx.push(MxPattern::parse(value).ok_or(PolicyError::Mx)?);
            }
            _ => {}
        }
    }
    if version != Some(true) {
        return Err(PolicyError::Version);
    }
    let mode = mode.ok_or(PolicyError::Mode)?;
    let max_age = max_age.ok_or(PolicyError::MaxAge)?;
    if mode != Mode::None && mx.is_empty() {
        return Err(PolicyError::NoMx);
    }
    Ok(Policy { mode, max_age, mx })
}

/// The `id` of a domain's `_mta-sts` TXT record set (RFC 8461 3.1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyId(String);

impl PolicyId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What the TXT records at `_mta-sts.DOMAIN` say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// Exactly one `v=STSv1` record, with a valid id.
    Id(PolicyId),
    /// None, several, or a broken one: the domain has no (usable) policy announcement.
    Absent,
}

/// Reads the TXT strings of `_mta-sts.DOMAIN` (each record's strings already joined): records
/// not starting with `v=STSv1` are ignored; more than one that does means no policy.
pub fn parse_record<'a>(records: impl IntoIterator<Item = &'a [u8]>) -> Record {
    let mut found = None;
    for record in records {
        if !record.starts_with(b"v=STSv1") {
            continue;
        }
        if found.is_some() {
            return Record::Absent;
        }
        found = Some(parse_one_record(record));
    }
    match found {
        Some(Some(id)) => Record::Id(id),
        _ => Record::Absent,
    }
}

/// `v=STSv1; id=1*32(ALPHA/DIGIT); *(other fields)`, fields separated by `;` and spaces.
fn parse_one_record(record: &[u8]) -> Option<PolicyId> {
    let text = std::str::from_utf8(record).ok()?;
    let mut fields = text.split(';').map(|field| field.trim_matches([' ', '\t']));
    if fields.next()? != "v=STSv1" {
        return None;
    }
    let mut id = None;
    for field in fields.filter(|field| !field.is_empty()) {
        let (key, value) = field.split_once('=')?;
        if key == "id" {
            let valid = !value.is_empty() && value.len() <= 32 && value.bytes().all(|b| b.is_ascii_alphanumeric());
            if id.is_some() || !valid {
                return None;
            }
            id = Some(PolicyId(value.to_owned()));
        }
    }
    id
}

/// Text from DNS or HTTP made safe for a log line: printable ASCII, at most `limit` chars.
pub fn sanitize(bytes: &[u8], limit: usize) -> String {
    bytes.iter().take(limit).map(|&byte| if (0x20..=0x7E).contains(&byte) { byte as char } else { '?' }).collect()
}

fn set_once<T>(slot: &mut Option<T>, value: T, error: PolicyError) -> Result<(), PolicyError> {
    if slot.is_some() {
        return Err(error);
    }
    *slot = Some(value);
    Ok(())
}

/// LDH labels of 1 to 63 characters, at most 253 in all, at least two labels.
fn is_host_name(name: &str) -> bool {
    name.len() <= 253
        && name.contains('.')
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'-')
        })
}

#[cfg(test)]
mod tests;
