//! Replies off the wire: framed here, with caps against a hostile peer, then parsed by
//! smtp-proto (multi-line replies, enhanced status codes, `EHLO` extensions).

use smtp_proto::response::parser::{MAX_RESPONSE_LENGTH, ResponseReceiver};

/// Longest reply accepted, all lines together (smtp-proto keeps no more text than this).
pub const MAX_REPLY_BYTES: usize = MAX_RESPONSE_LENGTH;
/// Most lines in one reply (an `EHLO` reply names one extension a line; 20 is already many).
pub const MAX_REPLY_LINES: usize = 64;

/// A server reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    /// The enhanced status code (if any) and text, continuation lines joined with `\n`;
    /// control characters are replaced by `?`.
    pub text: String,
}

impl std::fmt::Display for Reply {
    /// One line (continuation lines joined with a space), for logs, DSNs and `queue show`.
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "{} {}", self.code, self.text.replace('\n', " "))
    }
}

/// Received bytes that are not a whole reply yet: at most one reply's worth.
#[derive(Debug, Default)]
pub(super) struct Replies {
    pub(super) input: Vec<u8>,
    /// More arrived than one reply may hold.
    overflowed: bool,
}

pub(super) enum Framed {
    Incomplete,
    /// The reply and its bytes (an `EHLO` reply is parsed again for its extensions).
    Reply(Reply, Vec<u8>),
    OutOfStep(&'static str),
}

impl Replies {
    /// Keeps at most one reply's worth (and a byte to notice more); the rest is dropped and
    /// fails the next [`Self::next`].
    pub(super) fn feed(&mut self, bytes: &[u8]) {
        let room = (MAX_REPLY_BYTES + 1).saturating_sub(self.input.len());
        let taken = bytes.len().min(room);
        self.input.extend_from_slice(&bytes[..taken]);
        self.overflowed |= taken < bytes.len();
    }

    pub(super) fn clear(&mut self) {
        self.input.clear();
    }

    /// One complete reply off the input: every line `CODE-text` but the last, `CODE text`, all
    /// with the same code, and nothing after it.
    pub(super) fn next(&mut self) -> Framed {
        if self.overflowed {
            return Framed::OutOfStep("reply too long");
        }
        let mut start = 0;
        let mut code = None;
        let mut lines = 0;
        loop {
            lines += 1;
            let Some(length) = self.input[start..].iter().position(|&byte| byte == b'\n') else {
                return if self.input.len() > MAX_REPLY_BYTES {
                    Framed::OutOfStep("reply too long")
                } else {
                    Framed::Incomplete
                };
            };
            let end = start + length + 1;
            if end > MAX_REPLY_BYTES {
                return Framed::OutOfStep("reply too long");
            }
            if lines > MAX_REPLY_LINES {
                return Framed::OutOfStep("reply has too many lines");
            }
            let line = &self.input[start..end - 1];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let digits = line.get(..3).filter(|digits| digits.iter().all(u8::is_ascii_digit));
            let separator = line.get(3).copied();
            let (Some(digits), Some(b' ' | b'-') | None) = (digits, separator) else {
                return Framed::OutOfStep("malformed reply line");
            };
            let this = digits.iter().fold(0u16, |value, digit| value * 10 + u16::from(digit - b'0'));
            if !(200..600).contains(&this) || code.is_some_and(|code| code != this) {
                return Framed::OutOfStep("malformed reply code");
            }
            code = Some(this);
            if separator == Some(b'-') {
                start = end;
                continue;
            }
            if end < self.input.len() {
                return Framed::OutOfStep("more data after the reply");
            }
            let raw = std::mem::take(&mut self.input);
            return match ResponseReceiver::default().parse(&mut raw.iter()) {
                Ok(response) => Framed::Reply(reply_from(&response), raw),
                Err(_) => Framed::OutOfStep("unparsable reply"),
            };
        }
    }
}

fn reply_from(response: &smtp_proto::Response<String>) -> Reply {
    let mut text = String::with_capacity(response.message.len() + 8);
    if response.esc != [0, 0, 0] {
        let [class, subject, detail] = response.esc;
        text.push_str(&format!("{class}.{subject}.{detail}"));
        if !response.message.is_empty() {
            text.push(' ');
        }
    }
    let lines: Vec<&str> = response.message.split('\n').map(str::trim_end).collect();
    for (index, line) in lines.iter().enumerate() {
        if index > 0 {
            text.push('\n');
        }
        text.extend(line.chars().filter(|&c| c != '\r').map(|c| if c.is_control() { '?' } else { c }));
    }
    Reply { code: response.code, text }
}
