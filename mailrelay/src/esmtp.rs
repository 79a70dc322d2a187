//! ESMTP parameters of `MAIL` and `RCPT` (RFC 5321 4.1.2; SIZE 1870, BODY 6152, SMTPUTF8 6531,
//! RET/ENVID/NOTIFY/ORCPT 3461, AUTH 4954), parsed from the raw command line and validated by
//! their RFCs before anything else sees them.
//!
//! The wire form and the decoded form of an xtext value are different types: [`XText`] is only
//! ever built by checking or by encoding, and the decoded values ([`EnvelopeId`],
//! [`OriginalRecipient`]) hold printable US-ASCII only (no CR, LF or other control character),
//! so a decoded value cannot be written where the encoded one belongs, and neither can carry a
//! line break into the next hop's commands, a DSN or a log line.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Longest ENVID, decoded (RFC 3461 4.4).
pub const MAX_ENVELOPE_ID: usize = 100;
/// Longest ORCPT value, encoded (RFC 3461 4.2: the parameter is limited to 500 characters).
pub const MAX_ORIGINAL_RECIPIENT: usize = 500;

/// Why a parameter was refused; [`ParameterError::reply`] gives the SMTP answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParameterError {
    /// A parameter's value does not follow its RFC (`501 5.5.4`).
    Syntax(&'static str),
    /// The same parameter twice (`501 5.5.4`).
    Duplicate(&'static str),
    /// A parameter of an extension this relay does not offer (`555 5.5.4`); the name is
    /// reduced to at most 32 letters, digits and hyphens.
    Unsupported(String),
    /// No `<path>`, text after it that is not `SP parameter`, or a control or non-ASCII
    /// character among the parameters (`501 5.5.4`).
    Malformed,
}

impl ParameterError {
    /// The reply code, enhanced status and text for this refusal.
    pub fn reply(&self) -> (u16, &'static str, String) {
        match self {
            Self::Syntax(name) => (501, "5.5.4", format!("Bad {name} parameter syntax")),
            Self::Duplicate(name) => (501, "5.5.4", format!("Duplicate {name} parameter")),
            Self::Unsupported(name) => (555, "5.5.4", format!("Unsupported parameter {name}")),
            Self::Malformed => (501, "5.5.4", "Bad parameter syntax".to_owned()),
        }
    }
}

/// Text that is printable US-ASCII only (0x20 to 0x7E), as RFC 3461 requires of the values
/// behind ENVID and ORCPT.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PrintableAscii(String);

impl PrintableAscii {
    pub fn new(text: &str) -> Option<Self> {
        text.bytes().all(|byte| (0x20..=0x7E).contains(&byte)).then(|| Self(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PrintableAscii {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.0)
    }
}

/// A value in xtext (RFC 3461 4): `xchar` ("!" to "~" except "+" and "=") and `"+" 2HEXDIG`,
/// hex digits normalised to upper case. The only form that may be written to the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XText(String);

impl XText {
    /// Checks wire text; `None` when it is not xtext.
    pub fn parse(raw: &str) -> Option<Self> {
        let bytes = raw.as_bytes();
        let mut normalised = String::with_capacity(raw.len());
        let mut index = 0;
        while index < bytes.len() {
            match bytes[index] {
                b'+' => {
                    let digits = bytes.get(index + 1..index + 3)?;
                    if !digits.iter().all(u8::is_ascii_hexdigit) {
                        return None;
                    }
                    normalised.push('+');
                    normalised.extend(digits.iter().map(|&digit| char::from(digit.to_ascii_uppercase())));
                    index += 3;
                }
                byte if is_xchar(byte) => {
                    normalised.push(char::from(byte));
                    index += 1;
                }
                _ => return None,
            }
        }
        Some(Self(normalised))
    }

    /// Encodes printable text: every byte outside `xchar` becomes `+XX`.
    pub fn encode(text: &PrintableAscii) -> Self {
        let mut encoded = String::with_capacity(text.0.len());
        for byte in text.0.bytes() {
            if is_xchar(byte) {
                encoded.push(char::from(byte));
            } else {
                encoded.push_str(&format!("+{byte:02X}"));
            }
        }
        Self(encoded)
    }

    /// The decoded bytes (any octet, which is why callers check them before use).
    pub fn decode(&self) -> Vec<u8> {
        let bytes = self.0.as_bytes();
        let mut decoded = Vec::with_capacity(bytes.len());
        let mut index = 0;
        while index < bytes.len() {
            if bytes[index] == b'+' {
                let digits = bytes.get(index + 1..index + 3).and_then(|digits| std::str::from_utf8(digits).ok());
                decoded.push(digits.and_then(|digits| u8::from_str_radix(digits, 16).ok()).unwrap_or(b'?'));
                index += 3;
            } else {
                decoded.push(bytes[index]);
                index += 1;
            }
        }
        decoded
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Decodes and requires printable ASCII.
    fn decode_printable(&self) -> Option<PrintableAscii> {
        PrintableAscii::new(std::str::from_utf8(&self.decode()).ok()?)
    }
}

impl fmt::Display for XText {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.0)
    }
}

/// The `ENVID` of a message (RFC 3461 4.4), decoded: 1 to 100 printable ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvelopeId(PrintableAscii);

impl EnvelopeId {
    /// From decoded text (the queue's stored form).
    pub fn new(text: &str) -> Option<Self> {
        (1..=MAX_ENVELOPE_ID).contains(&text.len()).then_some(())?;
        PrintableAscii::new(text).map(Self)
    }

    /// From the parameter value as the client sent it.
    pub fn from_xtext(value: &XText) -> Option<Self> {
        Self::new(value.decode_printable()?.as_str())
    }

    /// The wire form for `MAIL FROM:<...> ENVID=`.
    pub fn to_xtext(&self) -> XText {
        XText::encode(&self.0)
    }

    /// The decoded form, for the DSN's `Original-Envelope-Id:` field.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

/// The `ORCPT` of a recipient (RFC 3461 4.2) with address type `rfc822`, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginalRecipient(PrintableAscii);

impl OriginalRecipient {
    /// From a decoded address (the queue's stored form).
    pub fn new(address: &str) -> Option<Self> {
        if address.is_empty() || XText::encode(&PrintableAscii::new(address)?).0.len() > MAX_ORIGINAL_RECIPIENT {
            return None;
        }
        PrintableAscii::new(address).map(Self)
    }

    /// From the parameter value as the client sent it: `addr-type ";" xtext`. Only the
    /// `rfc822` type is accepted: it is the one this relay can carry and report.
    pub fn from_parameter(value: &str) -> Result<Self, ParameterError> {
        let syntax = ParameterError::Syntax("ORCPT");
        let (kind, address) = value.split_once(';').ok_or(syntax.clone())?;
        if !kind.eq_ignore_ascii_case("rfc822") || address.len() > MAX_ORIGINAL_RECIPIENT {
            return Err(syntax);
        }
        let address = XText::parse(address).ok_or(syntax.clone())?;
        Self::new(address.decode_printable().ok_or(syntax.clone())?.as_str()).ok_or(syntax)
    }

    /// The wire form for `RCPT TO:<...> ORCPT=`: `rfc822;` and the address in xtext.
    pub fn to_parameter(&self) -> String {
        format!("rfc822;{}", XText::encode(&self.0))
    }

    pub fn address(&self) -> &str {
        self.0.as_str()
    }
}

impl fmt::Display for OriginalRecipient {
    /// The DSN's `Original-Recipient:` value (RFC 3464 2.3.1).
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "rfc822; {}", self.0)
    }
}

/// `BODY=` (RFC 6152); BINARYMIME is not offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BodyType {
    #[default]
    SevenBit,
    EightBitMime,
}

/// The parameters of one `MAIL FROM`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MailParameters {
    pub size: Option<u64>,
    pub body: BodyType,
    pub smtputf8: bool,
    /// `RET=FULL` (`Some(true)`) or `RET=HDRS` (`Some(false)`).
    pub return_full: Option<bool>,
    pub envelope_id: Option<EnvelopeId>,
    /// `REQUIRETLS` (RFC 8689): the message may only travel over verified TLS.
    pub require_tls: bool,
}

/// The parameters of one `RCPT TO`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RcptParameters {
    /// smtp-proto's `RCPT_NOTIFY_*` bits; 0 without NOTIFY.
    pub notify: u64,
    pub original: Option<OriginalRecipient>,
}

/// Parses the parameters after `MAIL FROM:<path>` in a raw command line.
pub fn mail_parameters(line: &[u8]) -> Result<MailParameters, ParameterError> {
    let mut parameters = MailParameters::default();
    let mut seen = Vec::new();
    for (keyword, value) in split_parameters(line)? {
        let name = once(&mut seen, &keyword)?;
        match (name, value) {
            ("SIZE", Some(value)) => {
                let size = (value.len() <= 20 && value.bytes().all(|byte| byte.is_ascii_digit()))
                    .then(|| value.parse::<u64>().ok())
                    .flatten()
                    .ok_or(ParameterError::Syntax("SIZE"))?;
                parameters.size = Some(size);
            }
            ("BODY", Some(value)) if value.eq_ignore_ascii_case("7BIT") => parameters.body = BodyType::SevenBit,
            ("BODY", Some(value)) if value.eq_ignore_ascii_case("8BITMIME") => parameters.body = BodyType::EightBitMime,
            ("BODY", _) => return Err(ParameterError::Syntax("BODY")),
            ("SMTPUTF8", None) => parameters.smtputf8 = true,
            ("REQUIRETLS", None) => parameters.require_tls = true,
            ("RET", Some(value)) if value.eq_ignore_ascii_case("FULL") => parameters.return_full = Some(true),
            ("RET", Some(value)) if value.eq_ignore_ascii_case("HDRS") => parameters.return_full = Some(false),
            ("ENVID", Some(value)) => {
                let id = XText::parse(value).as_ref().and_then(EnvelopeId::from_xtext);
                parameters.envelope_id = Some(id.ok_or(ParameterError::Syntax("ENVID"))?);
            }
            // RFC 4954 5: accepted and ignored (the relay vouches for no one's AUTH identity),
            // but only when it is `<>` or xtext.
            ("AUTH", Some(value))
                if value == "<>" || XText::parse(value).and_then(|x| x.decode_printable()).is_some() => {}
            ("SIZE" | "SMTPUTF8" | "RET" | "ENVID" | "AUTH" | "REQUIRETLS", _) => {
                return Err(ParameterError::Syntax(name));
            }
            _ => return Err(unsupported(&keyword)),
        }
    }
    Ok(parameters)
}

/// Parses the parameters after `RCPT TO:<path>` in a raw command line.
pub fn rcpt_parameters(line: &[u8]) -> Result<RcptParameters, ParameterError> {
    let mut parameters = RcptParameters::default();
    let mut seen = Vec::new();
    for (keyword, value) in split_parameters(line)? {
        let name = once(&mut seen, &keyword)?;
        match (name, value) {
            ("NOTIFY", Some(value)) => parameters.notify = notify(value)?,
            ("ORCPT", Some(value)) => parameters.original = Some(OriginalRecipient::from_parameter(value)?),
            ("NOTIFY" | "ORCPT", None) => return Err(ParameterError::Syntax(name)),
            _ => return Err(unsupported(&keyword)),
        }
    }
    Ok(parameters)
}

/// `NOTIFY=NEVER` or a list of SUCCESS, FAILURE and DELAY (RFC 3461 4.1).
fn notify(value: &str) -> Result<u64, ParameterError> {
    if value.eq_ignore_ascii_case("NEVER") {
        return Ok(smtp_proto::RCPT_NOTIFY_NEVER);
    }
    let mut flags = 0;
    for item in value.split(',') {
        flags |= match item.to_ascii_uppercase().as_str() {
            "SUCCESS" => smtp_proto::RCPT_NOTIFY_SUCCESS,
            "FAILURE" => smtp_proto::RCPT_NOTIFY_FAILURE,
            "DELAY" => smtp_proto::RCPT_NOTIFY_DELAY,
            _ => return Err(ParameterError::Syntax("NOTIFY")),
        };
    }
    Ok(flags)
}

/// The parameters this relay knows, by canonical name; a second occurrence is refused.
fn once(seen: &mut Vec<&'static str>, keyword: &str) -> Result<&'static str, ParameterError> {
    const KNOWN: [&str; 9] = ["SIZE", "BODY", "SMTPUTF8", "RET", "ENVID", "AUTH", "REQUIRETLS", "NOTIFY", "ORCPT"];
    let Some(name) = KNOWN.iter().copied().find(|known| known.eq_ignore_ascii_case(keyword)) else {
        return Ok("");
    };
    if seen.contains(&name) {
        return Err(ParameterError::Duplicate(name));
    }
    seen.push(name);
    Ok(name)
}

fn unsupported(keyword: &str) -> ParameterError {
    let name = keyword
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(32)
        .collect::<String>()
        .to_ascii_uppercase();
    ParameterError::Unsupported(name)
}

/// Splits `... <path> SP keyword[=value] *(SP keyword[=value])` (RFC 5321 4.1.2) into keywords
/// and values, after checking that the parameter text is printable US-ASCII: `esmtp-keyword` is
/// letters, digits and hyphens, `esmtp-value` is `%d33-60 / %d62-126`.
fn split_parameters(line: &[u8]) -> Result<Vec<(String, Option<&str>)>, ParameterError> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let rest = &line[path_end(line).ok_or(ParameterError::Malformed)?..];
    if rest.is_empty() {
        return Ok(Vec::new());
    }
    if rest[0] != b' ' || !rest.iter().all(|&byte| (0x20..=0x7E).contains(&byte)) {
        return Err(ParameterError::Malformed);
    }
    let rest = std::str::from_utf8(rest).map_err(|_| ParameterError::Malformed)?;
    let mut parameters = Vec::new();
    for parameter in rest.split(' ').filter(|parameter| !parameter.is_empty()) {
        let (keyword, value) = match parameter.split_once('=') {
            Some((keyword, value)) => (keyword, Some(value)),
            None => (parameter, None),
        };
        let keyword_ok = keyword.bytes().next().is_some_and(|byte| byte.is_ascii_alphanumeric())
            && keyword.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'-');
        let value_ok = value.is_none_or(|value| !value.is_empty() && !value.contains('='));
        if !keyword_ok {
            return Err(ParameterError::Malformed);
        }
        if !value_ok {
            return Err(unsupported_or_syntax(keyword));
        }
        parameters.push((keyword.to_owned(), value));
    }
    Ok(parameters)
}

fn unsupported_or_syntax(keyword: &str) -> ParameterError {
    match unsupported(keyword) {
        ParameterError::Unsupported(name) if name == "ENVID" => ParameterError::Syntax("ENVID"),
        ParameterError::Unsupported(name) if name == "ORCPT" => ParameterError::Syntax("ORCPT"),
        _ => ParameterError::Malformed,
    }
}

/// The index just after the `>` that closes the path: the first `<` after the colon opens it,
/// and a `>` inside a quoted local part or after a backslash does not close it.
fn path_end(line: &[u8]) -> Option<usize> {
    let colon = line.iter().position(|&byte| byte == b':')?;
    let open = colon + 1 + line[colon + 1..].iter().position(|&byte| byte != b' ')?;
    if line[open] != b'<' {
        return None;
    }
    let (mut quoted, mut escaped) = (false, false);
    for (offset, &byte) in line[open + 1..].iter().enumerate() {
        match byte {
            _ if escaped => escaped = false,
            b'\\' if quoted => escaped = true,
            b'"' => quoted = !quoted,
            b'>' if !quoted => return Some(open + 2 + offset),
            _ => {}
        }
    }
    None
}

fn is_xchar(byte: u8) -> bool {
    (b'!'..=b'~').contains(&byte) && byte != b'+' && byte != b'='
}

impl Serialize for EnvelopeId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for EnvelopeId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::new(&text).ok_or_else(|| serde::de::Error::custom("ENVID is not 1 to 100 printable ASCII characters"))
    }
}

impl Serialize for OriginalRecipient {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.address())
    }
}

impl<'de> Deserialize<'de> for OriginalRecipient {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::new(&text).ok_or_else(|| serde::de::Error::custom("ORCPT is not printable ASCII"))
    }
}

/// For queue records written before these types existed: a stored value that no longer
/// validates is dropped (the message is still delivered, without that DSN parameter).
pub fn lenient<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    let value = Option::<serde_json::Value>::deserialize(deserializer)?;
    Ok(value.and_then(|value| T::deserialize(value).ok()))
}

#[cfg(test)]
mod tests;
