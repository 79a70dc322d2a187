//! STUN messages (RFC 8489) with the TURN methods and attributes (RFC 8656), and TURN
//! ChannelData. Parsing borrows the datagram and checks every length before reading;
//! building writes the wire form directly.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use hmac::{Hmac, Mac};
use sha1::Sha1;

use crate::Error;

/// The fixed value in every STUN header since RFC 5389.
pub const MAGIC_COOKIE: u32 = 0x2112_A442;
/// A STUN header: type, length, cookie, transaction id.
pub const HEADER_LENGTH: usize = 20;
/// Attributes we look at in one message; more is not a real client.
const MAX_ATTRIBUTES: usize = 32;
/// XOR value of the FINGERPRINT attribute (RFC 8489 section 14.7).
const FINGERPRINT_XOR: u32 = 0x5354_554E;
const CRC32: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC);

/// STUN and TURN methods.
pub mod method {
    pub const BINDING: u16 = 0x001;
    pub const ALLOCATE: u16 = 0x003;
    pub const REFRESH: u16 = 0x004;
    pub const SEND: u16 = 0x006;
    pub const DATA: u16 = 0x007;
    pub const CREATE_PERMISSION: u16 = 0x008;
    pub const CHANNEL_BIND: u16 = 0x009;
}

/// Attribute types this server reads or writes.
pub mod attribute {
    pub const MAPPED_ADDRESS: u16 = 0x0001;
    pub const USERNAME: u16 = 0x0006;
    pub const MESSAGE_INTEGRITY: u16 = 0x0008;
    pub const ERROR_CODE: u16 = 0x0009;
    pub const UNKNOWN_ATTRIBUTES: u16 = 0x000A;
    pub const CHANNEL_NUMBER: u16 = 0x000C;
    pub const LIFETIME: u16 = 0x000D;
    pub const XOR_PEER_ADDRESS: u16 = 0x0012;
    pub const DATA: u16 = 0x0013;
    pub const REALM: u16 = 0x0014;
    pub const NONCE: u16 = 0x0015;
    pub const XOR_RELAYED_ADDRESS: u16 = 0x0016;
    pub const REQUESTED_ADDRESS_FAMILY: u16 = 0x0017;
    pub const REQUESTED_TRANSPORT: u16 = 0x0019;
    pub const XOR_MAPPED_ADDRESS: u16 = 0x0020;
    pub const SOFTWARE: u16 = 0x8022;
    pub const FINGERPRINT: u16 = 0x8028;
}

/// The four STUN message classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Request,
    Indication,
    Success,
    Error,
}

/// A parsed STUN message that borrows its bytes.
#[derive(Debug)]
pub struct Message<'a> {
    pub method: u16,
    pub class: Class,
    pub transaction: [u8; 12],
    raw: &'a [u8],
    attributes: Vec<(u16, &'a [u8])>,
    /// Where MESSAGE-INTEGRITY starts; attributes after it (but FINGERPRINT) are ignored.
    integrity_at: Option<usize>,
}

/// True when `data` starts like a STUN message: two zero bits, then the magic cookie.
pub fn looks_like_stun(data: &[u8]) -> bool {
    data.len() >= 8 && data[0] & 0xC0 == 0 && data[4..8] == MAGIC_COOKIE.to_be_bytes()
}

/// The length of the STUN message or ChannelData frame at the start of a TCP stream, once
/// its header is there (RFC 8656 section 12.5: ChannelData is padded to 4 bytes on
/// streams). `None` means more bytes are needed; an error means the stream is not TURN.
pub fn frame_length(data: &[u8]) -> Result<Option<usize>, Error> {
    if data.len() < 4 {
        return Ok(None);
    }
    let length = usize::from(u16::from_be_bytes([data[2], data[3]]));
    match data[0] >> 6 {
        0 if data.len() < 8 => Ok(None),
        0 if looks_like_stun(data) => Ok(Some(HEADER_LENGTH + length)),
        1 => Ok(Some(4 + length.div_ceil(4) * 4)),
        _ => Err(Error::Malformed("neither STUN nor ChannelData")),
    }
}

impl<'a> Message<'a> {
    /// Parses one STUN message; the whole of `data` must be the message.
    pub fn parse(data: &'a [u8]) -> Result<Self, Error> {
        if data.len() < HEADER_LENGTH || !looks_like_stun(data) {
            return Err(Error::Malformed("not a STUN message"));
        }
        let kind = u16::from_be_bytes([data[0], data[1]]);
        let length = usize::from(u16::from_be_bytes([data[2], data[3]]));
        if length % 4 != 0 || HEADER_LENGTH + length != data.len() {
            return Err(Error::Malformed("STUN length does not match the datagram"));
        }
        let method = (kind & 0x000F) | ((kind & 0x00E0) >> 1) | ((kind & 0x3E00) >> 2);
        let class = match ((kind >> 7) & 0x2) | ((kind >> 4) & 0x1) {
            0 => Class::Request,
            1 => Class::Indication,
            2 => Class::Success,
            _ => Class::Error,
        };
        let mut transaction = [0u8; 12];
        transaction.copy_from_slice(&data[8..20]);
        let mut message = Message { method, class, transaction, raw: data, attributes: Vec::new(), integrity_at: None };
        let mut offset = HEADER_LENGTH;
        while offset < data.len() {
            if offset + 4 > data.len() {
                return Err(Error::Malformed("truncated attribute header"));
            }
            let kind = u16::from_be_bytes([data[offset], data[offset + 1]]);
            let value_length = usize::from(u16::from_be_bytes([data[offset + 2], data[offset + 3]]));
            let end = offset + 4 + value_length;
            if end > data.len() {
                return Err(Error::Malformed("attribute runs past the message"));
            }
            if message.attributes.len() >= MAX_ATTRIBUTES {
                return Err(Error::Malformed("too many attributes"));
            }
            let value = &data[offset + 4..end];
            if kind == attribute::FINGERPRINT {
                if end != data.len() || value.len() != 4 {
                    return Err(Error::Malformed("FINGERPRINT is not last"));
                }
                let expected = CRC32.checksum(&data[..offset]) ^ FINGERPRINT_XOR;
                if value != expected.to_be_bytes() {
                    return Err(Error::Malformed("wrong FINGERPRINT"));
                }
            } else if message.integrity_at.is_none() {
                if kind == attribute::MESSAGE_INTEGRITY {
                    if value.len() != 20 {
                        return Err(Error::Malformed("MESSAGE-INTEGRITY is not 20 bytes"));
                    }
                    message.integrity_at = Some(offset);
                }
                message.attributes.push((kind, value));
            }
            offset = offset + 4 + value_length.div_ceil(4) * 4;
        }
        Ok(message)
    }

    /// The first value of an attribute.
    pub fn get(&self, kind: u16) -> Option<&'a [u8]> {
        self.attributes.iter().find(|(found, _)| *found == kind).map(|(_, value)| *value)
    }

    /// Every value of an attribute (CreatePermission may carry several peer addresses).
    pub fn all(&self, kind: u16) -> impl Iterator<Item = &'a [u8]> + '_ {
        self.attributes.iter().filter(move |(found, _)| *found == kind).map(|(_, value)| *value)
    }

    /// Comprehension-required attributes (below 0x8000) this server does not know.
    pub fn unknown_required(&self, known: &[u16]) -> Vec<u16> {
        let mut unknown: Vec<u16> = self
            .attributes
            .iter()
            .map(|(kind, _)| *kind)
            .filter(|kind| *kind < 0x8000 && !known.contains(kind))
            .collect();
        unknown.dedup();
        unknown
    }

    pub fn has_integrity(&self) -> bool {
        self.integrity_at.is_some()
    }

    /// Checks MESSAGE-INTEGRITY (HMAC-SHA1 over the message up to it, with the length
    /// field counting up to and including it) against `key`, in constant time.
    pub fn verify_integrity(&self, key: &[u8]) -> bool {
        let Some(at) = self.integrity_at else { return false };
        let Some(received) = self.get(attribute::MESSAGE_INTEGRITY) else { return false };
        let Ok(mut mac) = Hmac::<Sha1>::new_from_slice(key) else { return false };
        let length = u16::try_from(at + 24 - HEADER_LENGTH).unwrap_or(u16::MAX);
        mac.update(&self.raw[..2]);
        mac.update(&length.to_be_bytes());
        mac.update(&self.raw[4..at]);
        mac.verify_slice(received).is_ok()
    }

    /// An XOR-encoded address attribute.
    pub fn xor_address(&self, kind: u16) -> Option<SocketAddr> {
        decode_xor_address(self.get(kind)?, &self.transaction)
    }

    /// A UTF-8 attribute (USERNAME, REALM, NONCE), capped as RFC 8489 caps them.
    pub fn text(&self, kind: u16) -> Option<&'a str> {
        let value = self.get(kind)?;
        if value.len() > 763 {
            return None;
        }
        std::str::from_utf8(value).ok()
    }

    /// A 32-bit attribute (LIFETIME).
    pub fn u32(&self, kind: u16) -> Option<u32> {
        let value: [u8; 4] = self.get(kind)?.try_into().ok()?;
        Some(u32::from_be_bytes(value))
    }
}

/// Decodes an XOR-MAPPED-ADDRESS style value.
pub fn decode_xor_address(value: &[u8], transaction: &[u8; 12]) -> Option<SocketAddr> {
    if value.len() < 4 {
        return None;
    }
    let cookie = MAGIC_COOKIE.to_be_bytes();
    let port = u16::from_be_bytes([value[2], value[3]]) ^ (MAGIC_COOKIE >> 16) as u16;
    match (value[1], value.len()) {
        (0x01, 8) => {
            let mut octets = [0u8; 4];
            for (index, octet) in octets.iter_mut().enumerate() {
                *octet = value[4 + index] ^ cookie[index];
            }
            Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::from(octets)), port))
        }
        (0x02, 20) => {
            let mut octets = [0u8; 16];
            for (index, octet) in octets.iter_mut().enumerate() {
                let mask = if index < 4 { cookie[index] } else { transaction[index - 4] };
                *octet = value[4 + index] ^ mask;
            }
            Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(octets)), port))
        }
        _ => None,
    }
}

/// Writes one STUN message.
pub struct Builder {
    buffer: Vec<u8>,
    transaction: [u8; 12],
}

impl Builder {
    pub fn new(method: u16, class: Class, transaction: [u8; 12]) -> Self {
        let class_bits: u16 = match class {
            Class::Request => 0b00,
            Class::Indication => 0b01,
            Class::Success => 0b10,
            Class::Error => 0b11,
        };
        let kind = (method & 0x000F)
            | ((method & 0x0070) << 1)
            | ((method & 0x0F80) << 2)
            | ((class_bits & 0x1) << 4)
            | ((class_bits & 0x2) << 7);
        let mut buffer = Vec::with_capacity(128);
        buffer.extend_from_slice(&kind.to_be_bytes());
        buffer.extend_from_slice(&[0, 0]);
        buffer.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
        buffer.extend_from_slice(&transaction);
        Builder { buffer, transaction }
    }

    /// Adds an attribute, padded to four bytes. Values longer than a STUN length field
    /// can say are cut (no caller builds one).
    pub fn attribute(&mut self, kind: u16, value: &[u8]) -> &mut Self {
        let value = &value[..value.len().min(usize::from(u16::MAX) - 3)];
        self.buffer.extend_from_slice(&kind.to_be_bytes());
        self.buffer.extend_from_slice(&(value.len() as u16).to_be_bytes());
        self.buffer.extend_from_slice(value);
        self.buffer.resize(self.buffer.len().next_multiple_of(4), 0);
        self.set_length();
        self
    }

    pub fn u32(&mut self, kind: u16, value: u32) -> &mut Self {
        self.attribute(kind, &value.to_be_bytes())
    }

    /// An XOR-encoded address (XOR-MAPPED-ADDRESS, XOR-RELAYED-ADDRESS, XOR-PEER-ADDRESS).
    pub fn xor_address(&mut self, kind: u16, address: SocketAddr) -> &mut Self {
        let cookie = MAGIC_COOKIE.to_be_bytes();
        let port = address.port() ^ (MAGIC_COOKIE >> 16) as u16;
        let mut value = vec![0u8];
        match address.ip() {
            IpAddr::V4(ip) => {
                value.push(0x01);
                value.extend_from_slice(&port.to_be_bytes());
                value.extend(ip.octets().iter().zip(cookie).map(|(octet, mask)| octet ^ mask));
            }
            IpAddr::V6(ip) => {
                value.push(0x02);
                value.extend_from_slice(&port.to_be_bytes());
                let mask = cookie.iter().chain(self.transaction.iter());
                value.extend(ip.octets().iter().zip(mask).map(|(octet, mask)| octet ^ mask));
            }
        }
        self.attribute(kind, &value)
    }

    /// ERROR-CODE with its reason phrase.
    pub fn error(&mut self, code: u16, reason: &str) -> &mut Self {
        let mut value = vec![0, 0, (code / 100) as u8, (code % 100) as u8];
        value.extend_from_slice(reason.as_bytes());
        self.attribute(attribute::ERROR_CODE, &value)
    }

    /// MESSAGE-INTEGRITY over everything so far, with `key` (RFC 8489 section 14.5).
    pub fn integrity(&mut self, key: &[u8]) -> &mut Self {
        let length = self.buffer.len() + 24 - HEADER_LENGTH;
        self.buffer[2..4].copy_from_slice(&(length as u16).to_be_bytes());
        let digest = match Hmac::<Sha1>::new_from_slice(key) {
            Ok(mut mac) => {
                mac.update(&self.buffer);
                mac.finalize().into_bytes().to_vec()
            }
            Err(_) => vec![0; 20],
        };
        self.attribute(attribute::MESSAGE_INTEGRITY, &digest)
    }

    /// FINGERPRINT: always last.
    pub fn fingerprint(mut self) -> Vec<u8> {
        let length = self.buffer.len() + 8 - HEADER_LENGTH;
        self.buffer[2..4].copy_from_slice(&(length as u16).to_be_bytes());
        let crc = CRC32.checksum(&self.buffer) ^ FINGERPRINT_XOR;
        self.attribute(attribute::FINGERPRINT, &crc.to_be_bytes());
        self.buffer
    }

    pub fn finish(self) -> Vec<u8> {
        self.buffer
    }

    fn set_length(&mut self) {
        let length = (self.buffer.len() - HEADER_LENGTH) as u16;
        self.buffer[2..4].copy_from_slice(&length.to_be_bytes());
    }
}

/// A TURN ChannelData message: channel number, then the application data.
pub fn channel_data(channel: u16, data: &[u8], pad: bool) -> Vec<u8> {
    let mut frame = Vec::with_capacity(4 + data.len() + 3);
    frame.extend_from_slice(&channel.to_be_bytes());
    frame.extend_from_slice(&(data.len() as u16).to_be_bytes());
    frame.extend_from_slice(data);
    if pad {
        frame.resize(frame.len().next_multiple_of(4), 0);
    }
    frame
}

/// Splits a ChannelData message into its channel number and data (padding ignored).
pub fn parse_channel_data(frame: &[u8]) -> Option<(u16, &[u8])> {
    if frame.len() < 4 {
        return None;
    }
    let channel = u16::from_be_bytes([frame[0], frame[1]]);
    let length = usize::from(u16::from_be_bytes([frame[2], frame[3]]));
    if !(0x4000..=0x4FFF).contains(&channel) || 4 + length > frame.len() {
        return None;
    }
    Some((channel, &frame[4..4 + length]))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 5769 section 2.1: a sample request with a short-term credential.
    const RFC5769_REQUEST: &[u8] = &[
        0x00, 0x01, 0x00, 0x58, 0x21, 0x12, 0xa4, 0x42, 0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87,
        0xdf, 0xae, 0x80, 0x22, 0x00, 0x10, 0x53, 0x54, 0x55, 0x4e, 0x20, 0x74, 0x65, 0x73, 0x74, 0x20, 0x63, 0x6c,
        0x69, 0x65, 0x6e, 0x74, 0x00, 0x24, 0x00, 0x04, 0x6e, 0x00, 0x01, 0xff, 0x80, 0x29, 0x00, 0x08, 0x93, 0x2f,
        0xf9, 0xb1, 0x51, 0x26, 0x3b, 0x36, 0x00, 0x06, 0x00, 0x09, 0x65, 0x76, 0x74, 0x6a, 0x3a, 0x68, 0x36, 0x76,
        0x59, 0x20, 0x20, 0x20, 0x00, 0x08, 0x00, 0x14, 0x9a, 0xea, 0xa7, 0x0c, 0xbf, 0xd8, 0xcb, 0x56, 0x78, 0x1e,
        0xf2, 0xb5, 0xb2, 0xd3, 0xf2, 0x49, 0xc1, 0xb5, 0x71, 0xa2, 0x80, 0x28, 0x00, 0x04, 0xe5, 0x7a, 0x3b, 0xcf,
    ];

    #[test]
    fn rfc5769_sample_request_verifies() {
        let message = Message::parse(RFC5769_REQUEST).unwrap();
        assert_eq!((message.method, message.class), (method::BINDING, Class::Request));
        assert_eq!(message.text(attribute::USERNAME), Some("evtj:h6vY"));
        assert!(message.verify_integrity(b"VOkJxbRl1RmTxUk/WvJxBt"));
        assert!(!message.verify_integrity(b"VOkJxbRl1RmTxUk/WvJxBT"));
    }

    #[test]
    fn a_flipped_bit_breaks_the_fingerprint() {
        let mut copy = RFC5769_REQUEST.to_vec();
        copy[30] ^= 1;
        assert!(Message::parse(&copy).is_err());
    }

    #[test]
    fn built_messages_parse_back() {
        let transaction = [7u8; 12];
        for address in ["10.20.0.5:10000".parse().unwrap(), "[fd00::5]:443".parse().unwrap()] {
            let mut builder = Builder::new(method::ALLOCATE, Class::Success, transaction);
            builder.xor_address(attribute::XOR_RELAYED_ADDRESS, address).u32(attribute::LIFETIME, 600);
            builder.integrity(b"key");
            let bytes = builder.fingerprint();
            let message = Message::parse(&bytes).unwrap();
            assert_eq!((message.method, message.class), (method::ALLOCATE, Class::Success));
            assert_eq!(message.xor_address(attribute::XOR_RELAYED_ADDRESS), Some(address));
            assert_eq!(message.u32(attribute::LIFETIME), Some(600));
            assert!(message.verify_integrity(b"key"));
        }
    }

    #[test]
    fn stream_framing() {
        assert_eq!(frame_length(&[0x00, 0x03, 0x00, 0x08, 0x21, 0x12, 0xA4, 0x42]).unwrap(), Some(28));
        assert_eq!(frame_length(&[0x00, 0x03, 0x00, 0x08]).unwrap(), None);
        assert_eq!(frame_length(&[0x40, 0x00, 0x00, 0x05]).unwrap(), Some(12));
        assert_eq!(frame_length(&[0x40, 0x00]).unwrap(), None);
        assert!(frame_length(b"\xffGET").is_err());
        assert!(frame_length(&[0x16, 0x03, 0x01, 0x00, 0x10, 0x01, 0x00, 0x00]).is_err());
    }

    #[test]
    fn channel_data_round_trips() {
        let frame = channel_data(0x4001, b"hello", true);
        assert_eq!(frame.len(), 12);
        assert_eq!(parse_channel_data(&frame), Some((0x4001, &b"hello"[..])));
        assert_eq!(parse_channel_data(&channel_data(0x3FFF, b"x", false)), None);
    }

    /// Random bytes and random mutations of a valid message never panic the parser.
    #[test]
    fn hostile_bytes_never_panic() {
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for round in 0..20_000 {
            let mut data = if round % 2 == 0 {
                RFC5769_REQUEST.to_vec()
            } else {
                (0..(next() % 120) as usize).map(|_| next() as u8).collect()
            };
            for _ in 0..(next() % 4) {
                if !data.is_empty() {
                    let at = (next() as usize) % data.len();
                    data[at] = next() as u8;
                }
            }
            if let Ok(message) = Message::parse(&data) {
                let _ = message.verify_integrity(b"k");
                let _ = message.xor_address(attribute::XOR_PEER_ADDRESS);
                let _ = message.text(attribute::USERNAME);
            }
            let _ = frame_length(&data);
            let _ = parse_channel_data(&data);
        }
    }
}
