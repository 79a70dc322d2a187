//! RFC 1035 master files: `$ORIGIN`, `$TTL`, `@`, relative names, an omitted owner (the
//! previous one), parentheses across lines, `;` comments and quoted strings.
//!
//! Only the record types lienthong serves are accepted (A, AAAA, CNAME, MX, NS, SOA, TXT, SRV,
//! PTR, CAA, and DS at a delegation to a signed child); anything else is an error with its line and column, so an operator never
//! believes a record is served when it is not.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use hickory_proto::rr::rdata::{A, AAAA, CNAME, MX, NS, PTR, SOA, SRV, TXT};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};

/// The record types a zone file may hold, for error messages.
const SERVED_TYPES: &str = "A, AAAA, CNAME, MX, NS, SOA, TXT, SRV, PTR, CAA or DS";

/// A problem in zone text: where it is (1-based) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// Parses zone text whose relative names are taken from `origin`. Every record must lie
/// within `zone`. Returns the records, or every error found (parsing goes on after an error).
pub fn parse(text: &str, origin: &Name, zone: &Name, default_ttl: u32) -> Result<Vec<Record>, Vec<ZoneError>> {
    parse_with_positions(text, origin, zone, default_ttl).map(|(records, _)| records)
}

/// Line and column (1-based) of a record's data in zone text.
pub type Position = (usize, usize);

/// [`parse`], with the position of each record's data alongside.
pub fn parse_with_positions(
    text: &str,
    origin: &Name,
    zone: &Name,
    default_ttl: u32,
) -> Result<(Vec<Record>, Vec<Position>), Vec<ZoneError>> {
    let mut parser = Parser {
        origin: origin.clone(),
        zone: zone.clone(),
        ttl: default_ttl,
        explicit_default_ttl: false,
        previous_owner: None,
        records: Vec::new(),
        positions: Vec::new(),
        errors: Vec::new(),
    };
    for entry in entries(text, &mut parser.errors) {
        if let Err(error) = parser.entry(&entry) {
            parser.errors.push(error);
        }
    }
    if parser.errors.is_empty() { Ok((parser.records, parser.positions)) } else { Err(parser.errors) }
}

/// One token with its position; `quoted` tokens are never names or directives.
#[derive(Debug, Clone)]
struct Token {
    text: String,
    line: usize,
    column: usize,
    quoted: bool,
}

/// One logical entry (parentheses joined); `indented` means the owner was left out.
struct Entry {
    tokens: Vec<Token>,
    indented: bool,
    line: usize,
}

/// Splits text into entries, handling comments, quotes, escapes and parentheses.
fn entries(text: &str, errors: &mut Vec<ZoneError>) -> Vec<Entry> {
    let mut result = Vec::new();
    let mut current: Option<Entry> = None;
    let mut depth = 0usize;
    let mut open_at = (0, 0);
    for (line_index, line) in text.lines().enumerate() {
        let line_number = line_index + 1;
        if depth == 0 {
            if let Some(entry) = current.take()
                && !entry.tokens.is_empty()
            {
                result.push(entry);
            }
            let indented = line.starts_with([' ', '\t']);
            current = Some(Entry { tokens: Vec::new(), indented, line: line_number });
        }
        let entry = current.as_mut().expect("an entry is open");
        let characters: Vec<(usize, char)> = line.char_indices().collect();
        let mut index = 0;
        while index < characters.len() {
            let (_, character) = characters[index];
            let column = index + 1;
            match character {
                ';' => break,
                ' ' | '\t' | '\r' => index += 1,
                '(' => {
                    if depth == 0 {
                        open_at = (line_number, column);
                    }
                    depth += 1;
                    index += 1;
                }
                ')' => {
                    if depth == 0 {
                        errors.push(ZoneError { line: line_number, column, message: "`)` without `(`".into() });
                    } else {
                        depth -= 1;
                    }
                    index += 1;
                }
                '"' => {
                    let mut text = String::new();
                    index += 1;
                    let mut closed = false;
                    while index < characters.len() {
                        let (_, inner) = characters[index];
                        if inner == '\\' && index + 1 < characters.len() {
                            text.push('\\');
                            text.push(characters[index + 1].1);
                            index += 2;
                            continue;
                        }
                        index += 1;
                        if inner == '"' {
                            closed = true;
                            break;
                        }
                        text.push(inner);
                    }
                    if !closed {
                        errors.push(ZoneError {
                            line: line_number,
                            column,
                            message: "unterminated quoted string".into(),
                        });
                    }
                    entry.tokens.push(Token { text, line: line_number, column, quoted: true });
                }
                _ => {
                    let mut text = String::new();
                    while index < characters.len() {
                        let (_, inner) = characters[index];
                        if matches!(inner, ' ' | '\t' | '\r' | ';' | '(' | ')' | '"') {
                            break;
                        }
                        if inner == '\\' && index + 1 < characters.len() {
                            text.push('\\');
                            text.push(characters[index + 1].1);
                            index += 2;
                            continue;
                        }
                        text.push(inner);
                        index += 1;
                    }
                    entry.tokens.push(Token { text, line: line_number, column, quoted: false });
                }
            }
        }
    }
    if depth > 0 {
        errors.push(ZoneError { line: open_at.0, column: open_at.1, message: "`(` is never closed".into() });
    }
    if let Some(entry) = current
        && !entry.tokens.is_empty()
    {
        result.push(entry);
    }
    result
}

struct Parser {
    origin: Name,
    zone: Name,
    ttl: u32,
    explicit_default_ttl: bool,
    previous_owner: Option<Name>,
    records: Vec<Record>,
    positions: Vec<(usize, usize)>,
    errors: Vec<ZoneError>,
}

fn error_at(token: &Token, message: impl Into<String>) -> ZoneError {
    ZoneError { line: token.line, column: token.column, message: message.into() }
}

impl Parser {
    fn entry(&mut self, entry: &Entry) -> Result<(), ZoneError> {
        let tokens = &entry.tokens;
        let first = &tokens[0];
        if !entry.indented && !first.quoted && first.text.starts_with('$') {
            return self.directive(tokens);
        }
        let mut rest = &tokens[..];
        let owner = if entry.indented {
            self.previous_owner.clone().ok_or_else(|| ZoneError {
                line: entry.line,
                column: 1,
                message: "record without an owner name and no previous record to take it from".into(),
            })?
        } else {
            rest = &tokens[1..];
            self.name(first)?
        };
        if !self.zone.zone_of(&owner) {
            return Err(error_at(first, format!("`{owner}` is outside the zone `{}`", self.zone)));
        }
        self.previous_owner = Some(owner.clone());
        let mut ttl = None;
        let mut record_type = None;
        let mut position = 0;
        while position < rest.len() {
            let token = &rest[position];
            position += 1;
            if token.text.eq_ignore_ascii_case("IN") {
                continue;
            }
            if ["CH", "HS", "CS"].iter().any(|class| token.text.eq_ignore_ascii_case(class)) {
                return Err(error_at(token, format!("class {} is not served (expected IN)", token.text)));
            }
            if ttl.is_none() && token.text.starts_with(|c: char| c.is_ascii_digit()) {
                ttl = Some(parse_ttl(token)?);
                continue;
            }
            let parsed = RecordType::from_str(&token.text.to_ascii_uppercase())
                .map_err(|_| error_at(token, format!("`{}` is not a record type", token.text)))?;
            record_type = Some((parsed, token));
            break;
        }
        let Some((record_type, type_token)) = record_type else {
            let last = rest.last().unwrap_or(first);
            return Err(error_at(last, "missing record type and data (expected e.g. `www 300 IN A 10.20.0.10`)"));
        };
        let data = &rest[position..];
        let rdata = self.rdata(record_type, type_token, data)?;
        let ttl = match ttl {
            Some(ttl) => ttl,
            None if !self.explicit_default_ttl => match &rdata {
                // RFC 1035 says "the last explicit TTL"; without $TTL, the SOA's minimum is the
                // usual reading (what BIND and NSD do).
                RData::SOA(soa) => soa.minimum,
                _ => self.ttl,
            },
            None => self.ttl,
        };
        if let RData::SOA(soa) = &rdata
            && !self.explicit_default_ttl
        {
            self.ttl = soa.minimum;
        }
        let mut record = Record::from_rdata(owner, ttl, rdata);
        record.dns_class = DNSClass::IN;
        let at = data.first().unwrap_or(type_token);
        self.positions.push((at.line, at.column));
        self.records.push(record);
        Ok(())
    }

    fn directive(&mut self, tokens: &[Token]) -> Result<(), ZoneError> {
        let first = &tokens[0];
        let argument = tokens.get(1).ok_or_else(|| error_at(first, format!("{} needs a value", first.text)))?;
        if tokens.len() > 2 {
            return Err(error_at(&tokens[2], format!("unexpected `{}` after {}", tokens[2].text, first.text)));
        }
        match first.text.to_ascii_uppercase().as_str() {
            "$ORIGIN" => {
                let origin = self.name(argument)?;
                self.origin = origin;
            }
            "$TTL" => {
                self.ttl = parse_ttl(argument)?;
                self.explicit_default_ttl = true;
            }
            "$INCLUDE" => return Err(error_at(first, "$INCLUDE is not supported (put the records in this file)")),
            other => return Err(error_at(first, format!("unknown directive {other} (expected $ORIGIN or $TTL)"))),
        }
        Ok(())
    }

    fn name(&self, token: &Token) -> Result<Name, ZoneError> {
        if token.quoted {
            return Err(error_at(token, "a name cannot be quoted"));
        }
        if token.text == "@" {
            return Ok(self.origin.clone());
        }
        Name::parse(&token.text, Some(&self.origin))
            .map(|name| name.to_lowercase())
            .map_err(|error| error_at(token, format!("`{}` is not a valid name: {error}", token.text)))
    }

    fn rdata(&self, record_type: RecordType, type_token: &Token, data: &[Token]) -> Result<RData, ZoneError> {
        let expect = |count: usize, shape: &str| -> Result<(), ZoneError> {
            if data.len() < count {
                let at = data.last().unwrap_or(type_token);
                return Err(error_at(at, format!("{record_type} needs {shape}")));
            }
            if data.len() > count {
                return Err(error_at(
                    &data[count],
                    format!("unexpected `{}` ({record_type} takes {shape})", data[count].text),
                ));
            }
            Ok(())
        };
        let number = |token: &Token| -> Result<u16, ZoneError> {
            token
                .text
                .parse::<u16>()
                .map_err(|_| error_at(token, format!("`{}` is not a number from 0 to 65535", token.text)))
        };
        Ok(match record_type {
            RecordType::A => {
                expect(1, "an IPv4 address")?;
                let address = Ipv4Addr::from_str(&data[0].text)
                    .map_err(|_| error_at(&data[0], format!("`{}` is not an IPv4 address", data[0].text)))?;
                RData::A(A(address))
            }
            RecordType::AAAA => {
                expect(1, "an IPv6 address")?;
                let address = Ipv6Addr::from_str(&data[0].text)
                    .map_err(|_| error_at(&data[0], format!("`{}` is not an IPv6 address", data[0].text)))?;
                RData::AAAA(AAAA(address))
            }
            RecordType::CNAME => {
                expect(1, "a target name")?;
                RData::CNAME(CNAME(self.name(&data[0])?))
            }
            RecordType::NS => {
                expect(1, "a server name")?;
                RData::NS(NS(self.name(&data[0])?))
            }
            RecordType::PTR => {
                expect(1, "a target name")?;
                RData::PTR(PTR(self.name(&data[0])?))
            }
            RecordType::MX => {
                expect(2, "a preference and a mail server name")?;
                RData::MX(MX::new(number(&data[0])?, self.name(&data[1])?))
            }
            RecordType::SRV => {
                expect(4, "priority, weight, port and target")?;
                RData::SRV(SRV::new(number(&data[0])?, number(&data[1])?, number(&data[2])?, self.name(&data[3])?))
            }
            RecordType::SOA => {
                expect(7, "primary server, mailbox, serial, refresh, retry, expire and minimum")?;
                let serial = data[2]
                    .text
                    .parse::<u32>()
                    .map_err(|_| error_at(&data[2], format!("`{}` is not a serial number", data[2].text)))?;
                let times: Vec<u32> = data[3..7].iter().map(parse_ttl).collect::<Result<_, _>>()?;
                RData::SOA(SOA::new(
                    self.name(&data[0])?,
                    self.name(&data[1])?,
                    serial,
                    times[0] as i32,
                    times[1] as i32,
                    times[2] as i32,
                    times[3],
                ))
            }
            RecordType::TXT => {
                if data.is_empty() {
                    return Err(error_at(type_token, "TXT needs at least one string"));
                }
                let mut strings = Vec::new();
                for token in data {
                    let bytes = unescape(token)?;
                    if bytes.len() > 255 {
                        return Err(error_at(
                            token,
                            "a TXT string is longer than 255 bytes (split it into several quoted strings)",
                        ));
                    }
                    strings.push(bytes);
                }
                RData::TXT(TXT::from_bytes(strings.iter().map(Vec::as_slice).collect()))
            }
            RecordType::CAA => {
                expect(3, "flags, tag and value (e.g. 0 issue \"letsencrypt.org\")")?;
                let text = format!("{} {} \"{}\"", data[0].text, data[1].text, data[2].text);
                RData::try_from_str(RecordType::CAA, &text)
                    .map_err(|error| error_at(&data[0], format!("not a valid CAA record: {error}")))?
            }
            RecordType::DS => {
                // The digest may be split over several tokens (as `dnssec-dsfromkey` prints it).
                if data.len() < 4 {
                    return Err(error_at(type_token, "DS needs a key tag, algorithm, digest type and digest"));
                }
                let digest: String = data[3..].iter().map(|token| token.text.as_str()).collect();
                let text = format!("{} {} {} {digest}", data[0].text, data[1].text, data[2].text);
                RData::try_from_str(RecordType::DS, &text)
                    .map_err(|error| error_at(&data[0], format!("not a valid DS record: {error}")))?
            }
            other => {
                return Err(error_at(type_token, format!("type {other} is not served (expected {SERVED_TYPES})")));
            }
        })
    }
}

fn parse_ttl(token: &Token) -> Result<u32, ZoneError> {
    let value = hickory_proto::serialize::txt::parse_ttl(&token.text)
        .map_err(|_| error_at(token, format!("`{}` is not a TTL (expected seconds or e.g. 1h, 2d)", token.text)))?;
    if value > i32::MAX as u32 {
        return Err(error_at(token, "TTL larger than 2147483647"));
    }
    Ok(value)
}

/// Resolves `\X` and `\DDD` escapes of a character string.
fn unescape(token: &Token) -> Result<Vec<u8>, ZoneError> {
    let bytes = token.text.as_bytes();
    let mut result = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'\\' && index + 1 < bytes.len() {
            let digits = &bytes[index + 1..bytes.len().min(index + 4)];
            if digits.len() == 3 && digits.iter().all(u8::is_ascii_digit) {
                let value =
                    (digits[0] - b'0') as u32 * 100 + (digits[1] - b'0') as u32 * 10 + (digits[2] - b'0') as u32;
                let value = u8::try_from(value).map_err(|_| error_at(token, "escape \\DDD above 255"))?;
                result.push(value);
                index += 4;
            } else {
                result.push(bytes[index + 1]);
                index += 2;
            }
        } else {
            result.push(bytes[index]);
            index += 1;
        }
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zone() -> Name {
        Name::from_ascii("ninhthuan.gov.vn.").unwrap()
    }

    fn parse_ok(text: &str) -> Vec<Record> {
        parse(text, &zone(), &zone(), 3600).unwrap()
    }

    #[test]
    fn parses_directives_relative_names_and_multiline_soa() {
        let records = parse_ok(
            "$ORIGIN ninhthuan.gov.vn.\n$TTL 1h\n@ IN SOA hub hostmaster ( 2024010101 ; serial\n  7200 3600 1209600 300 )\n\
             @ NS hub\nhub 300 IN A 10.20.0.5\n  IN AAAA 2001:db8::5\nwww CNAME hub.ninhthuan.gov.vn.\n\
             @ MX 10 hub\n_sip._tcp SRV 0 1 5060 hub\nt TXT \"v=spf1 -all\" \"x\\\"y\"\nc CAA 0 issue \"letsencrypt.org\"\n",
        );
        assert_eq!(records.len(), 9);
        assert_eq!(records[0].ttl, 3600);
        assert_eq!(records[2].ttl, 300);
        assert_eq!(records[3].name.to_string(), "hub.ninhthuan.gov.vn.");
        let RData::SOA(soa) = &records[0].data else { panic!() };
        assert_eq!((soa.serial, soa.minimum), (2024010101, 300));
        assert_eq!(soa.mname.to_string(), "hub.ninhthuan.gov.vn.");
        let RData::TXT(txt) = &records[7].data else { panic!() };
        assert_eq!(&*txt.txt_data[1], b"x\"y");
    }

    #[test]
    fn reports_line_and_column() {
        let errors = parse(
            "ok A 10.0.0.1\nbad A 10.0.0.300\nx 300 IN HINFO a b\nfar.example.com. A 1.2.3.4\n",
            &zone(),
            &zone(),
            60,
        )
        .unwrap_err();
        let rendered: Vec<String> = errors.iter().map(|e| format!("{}:{}: {}", e.line, e.column, e.message)).collect();
        assert_eq!(
            rendered,
            [
                "2:7: `10.0.0.300` is not an IPv4 address",
                "3:10: type HINFO is not served (expected A, AAAA, CNAME, MX, NS, SOA, TXT, SRV, PTR, CAA or DS)",
                "4:1: `far.example.com.` is outside the zone `ninhthuan.gov.vn.`",
            ]
        );
    }

    #[test]
    fn unclosed_parenthesis_is_an_error() {
        let errors = parse("@ SOA a b ( 1 2 3 4 5\n", &zone(), &zone(), 60).unwrap_err();
        assert_eq!(errors[0].message, "`(` is never closed");
    }

    #[test]
    fn ds_at_a_delegation_parses_with_its_digest_split_over_tokens() {
        let apex = Name::from_ascii("ninhthuan.gov.vn.").unwrap();
        let text =
            "huyen 3600 IN DS 12345 13 2 2b9a7c2f4e7d0a1c2b9a7c2f4e7d0a1c ( 2b9a7c2f4e7d0a1c2b9a7c2f4e7d0a1c )\n";
        let records = parse(text, &apex, &apex, 300).unwrap();
        assert_eq!(
            records[0].to_string(),
            "huyen.ninhthuan.gov.vn. 3600 IN DS 12345 13 2 2B9A7C2F4E7D0A1C2B9A7C2F4E7D0A1C2B9A7C2F4E7D0A1C2B9A7C2F4E7D0A1C"
        );
        let errors = parse("huyen IN DS 12345 13\n", &apex, &apex, 300).unwrap_err();
        assert!(errors[0].message.contains("DS needs"), "{}", errors[0].message);
    }
}
