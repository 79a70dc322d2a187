//! The outbound client's side of the wire: command lines that cannot carry a line break, and
//! replies that must answer the command just sent, nothing more.
//!
//! Commands go one at a time (no pipelining), so after each reply the read buffer must be
//! empty: bytes beyond the reply are answers to commands this relay never sent (a next hop that
//! read an injected command, or a response-injection attack on STARTTLS), and the connection is
//! out of step. An out-of-step connection is closed, never reused.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};

/// Longest reply accepted (all lines together).
const MAX_REPLY: usize = 64 * 1024;

/// A server reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    /// The text, continuation lines joined with `\n`; control characters are replaced by `?`.
    pub text: String,
}

impl std::fmt::Display for Reply {
    /// One line (continuation lines joined with a space), for logs, DSNs and `queue show`.
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "{} {}", self.code, self.text.replace('\n', " "))
    }
}

/// One command line: no control character anywhere, CRLF added when written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandLine(String);

impl CommandLine {
    /// `None` when `text` holds a control character (CR, LF, NUL, DEL, C1...).
    pub fn new(text: String) -> Option<Self> {
        (!text.chars().any(char::is_control)).then_some(Self(text))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Why a command got no usable reply.
#[derive(Debug)]
pub enum WireError {
    /// The connection failed, timed out or closed.
    Io(std::io::Error),
    /// The reply was malformed, did not fit the command, or more bytes followed it.
    OutOfStep(&'static str),
}

impl std::fmt::Display for WireError {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Io(error) => write!(formatter, "{error}"),
            Self::OutOfStep(what) => write!(formatter, "reply sequence out of step ({what}); connection closed"),
        }
    }
}

/// The positive codes that may answer a command; 4xx and 5xx always may.
#[derive(Debug, Clone, Copy)]
pub struct Expect(pub &'static [u16]);

pub const GREETING: Expect = Expect(&[220]);
pub const OK: Expect = Expect(&[250]);
pub const RECIPIENT: Expect = Expect(&[250, 251]);
pub const START_DATA: Expect = Expect(&[354]);
pub const START_TLS: Expect = Expect(&[220]);

/// Writes `line` and reads its reply, which must fit `expect` and be all the server sent.
pub async fn command<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut BufReader<S>,
    line: &CommandLine,
    expect: Expect,
    wait: Duration,
) -> Result<Reply, WireError> {
    let mut bytes = Vec::with_capacity(line.0.len() + 2);
    bytes.extend_from_slice(line.0.as_bytes());
    bytes.extend_from_slice(b"\r\n");
    send_raw(stream, &bytes).await?;
    reply(stream, expect, wait).await
}

/// Writes bytes that are not a command (the dot-stuffed content).
pub async fn send_raw<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut BufReader<S>,
    bytes: &[u8],
) -> Result<(), WireError> {
    stream.get_mut().write_all(bytes).await.map_err(WireError::Io)?;
    stream.get_mut().flush().await.map_err(WireError::Io)
}

/// Reads the reply to what was just sent (or the greeting).
pub async fn reply<S: AsyncRead + Unpin>(
    stream: &mut BufReader<S>,
    expect: Expect,
    wait: Duration,
) -> Result<Reply, WireError> {
    let reply = tokio::time::timeout(wait, read_reply(stream))
        .await
        .map_err(|_| WireError::Io(std::io::Error::new(std::io::ErrorKind::TimedOut, "reply timeout")))??;
    if !stream.buffer().is_empty() {
        return Err(WireError::OutOfStep("more data after the reply"));
    }
    if reply.code < 400 && !expect.0.contains(&reply.code) {
        return Err(WireError::OutOfStep("a reply that does not answer the command"));
    }
    Ok(reply)
}

/// True when an idle connection has something to read (data nobody asked for, or the close):
/// it must not be used again.
pub async fn has_unread_input<S: AsyncRead + Unpin>(stream: &mut BufReader<S>) -> bool {
    if !stream.buffer().is_empty() {
        return true;
    }
    // A zero timeout still polls the read once: ready means data, EOF or an error.
    tokio::time::timeout(Duration::ZERO, stream.fill_buf()).await.is_ok()
}

/// One (possibly multi-line) reply: every line `CODE-text` but the last, `CODE text`, all with
/// the same code.
async fn read_reply<S: AsyncRead + Unpin>(stream: &mut BufReader<S>) -> Result<Reply, WireError> {
    let mut text = String::new();
    let mut line = Vec::new();
    let mut code = None;
    loop {
        line.clear();
        let limit = (MAX_REPLY + 1 - text.len().min(MAX_REPLY)) as u64;
        let read = (&mut *stream).take(limit).read_until(b'\n', &mut line).await.map_err(WireError::Io)?;
        if read == 0 {
            return Err(WireError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
        let Some(content) = line.strip_suffix(b"\n") else { return Err(WireError::OutOfStep("reply too long")) };
        let content = content.strip_suffix(b"\r").unwrap_or(content);
        let digits = content.get(..3).filter(|digits| digits.iter().all(u8::is_ascii_digit));
        let separator = content.get(3).copied();
        let (Some(digits), Some(b' ' | b'-') | None) = (digits, separator) else {
            return Err(WireError::OutOfStep("malformed reply line"));
        };
        let this: u16 = digits.iter().fold(0, |value, digit| value * 10 + u16::from(digit - b'0'));
        if !(200..600).contains(&this) || code.is_some_and(|code| code != this) {
            return Err(WireError::OutOfStep("malformed reply code"));
        }
        code = Some(this);
        if !text.is_empty() {
            text.push('\n');
        }
        let words = String::from_utf8_lossy(content.get(4..).unwrap_or_default());
        text.extend(words.trim_end().chars().map(|c| if c.is_control() { '?' } else { c }));
        if text.len() > MAX_REPLY {
            return Err(WireError::OutOfStep("reply too long"));
        }
        if separator != Some(b'-') {
            return Ok(Reply { code: this, text });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn parse(bytes: &'static [u8], expect: Expect) -> Result<Reply, WireError> {
        let mut stream = BufReader::new(bytes);
        reply(&mut stream, expect, Duration::from_secs(1)).await
    }

    #[tokio::test]
    async fn replies_must_be_one_answer_to_one_command() {
        let reply = parse(b"250-mx.example\r\n250-DSN\r\n250 SIZE 100\r\n", OK).await.unwrap();
        assert_eq!(reply, Reply { code: 250, text: "mx.example\nDSN\nSIZE 100".into() });
        assert_eq!(reply.to_string(), "250 mx.example DSN SIZE 100");
        assert_eq!(parse(b"250\r\n", OK).await.unwrap().code, 250);
        assert_eq!(parse(b"550 5.1.1 no\x00 such\x1b user\r\n", RECIPIENT).await.unwrap().text, "5.1.1 no? such? user");
        for bytes in [
            &b"250 ok\r\n250 ok\r\n"[..],
            b"354 go ahead\r\n",
            b"250-a\r\n251 b\r\n",
            b"25 short\r\n",
            b"250xok\r\n",
            b"199 what\r\n",
        ] {
            let leaked: &'static [u8] = Box::leak(bytes.to_vec().into_boxed_slice());
            assert!(matches!(parse(leaked, RECIPIENT).await, Err(WireError::OutOfStep(_))), "{bytes:?}");
        }
    }

    #[test]
    fn command_lines_cannot_carry_control_characters() {
        assert!(CommandLine::new("MAIL FROM:<a@b.example> ENVID=x+0D+0A".into()).is_some());
        assert!(CommandLine::new("RCPT TO:<nguyễn@b.example>".into()).is_some());
        for text in ["MAIL FROM:<a@b>\r\nRSET", "RCPT TO:<a@b>\n", "NOOP\x00", "NOOP\u{85}"] {
            assert!(CommandLine::new(text.into()).is_none(), "{text:?}");
        }
    }
}
