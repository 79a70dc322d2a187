//! `GET https://mta-sts.DOMAIN/.well-known/mta-sts.txt` (RFC 8461 3.3): HTTP/1.1 over
//! tokio-rustls with the relay's verifying client config, no redirects, a 200 with
//! `Content-Type: text/plain` only, at most [`MAX_BODY`] bytes, all within [`FETCH_TIMEOUT`].
//! The response is read whole (bounded) and then parsed by [`parse_response`], which has no I/O.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::policy::sanitize;

/// The largest policy body accepted (RFC 8461 3.3 suggests 64 KiB).
pub const MAX_BODY: usize = 64 * 1024;
/// The whole fetch: connection, handshake, request and response (RFC 8461 3.3: 10 s or more
/// is reasonable; more would hold a delivery up).
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Room for the status line and headers on top of the body.
const MAX_HEAD: usize = 8 * 1024;

/// Why no policy body came back; the text never carries raw bytes from the server.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("TLS handshake failed (certificate not valid for the host?): {0}")]
    Tls(String),
    #[error("timed out")]
    Timeout,
    #[error("HTTP status {0} (only 200 counts; redirects are not followed)")]
    Status(u16),
    #[error("Content-Type is `{0}`, not text/plain")]
    ContentType(String),
    #[error("response larger than {MAX_BODY} bytes")]
    TooLarge,
    #[error("malformed HTTP response: {0}")]
    Malformed(&'static str),
}

/// Fetches the policy body from `address`, checking the certificate for `mta-sts.DOMAIN`.
pub async fn fetch(config: Arc<rustls::ClientConfig>, host: &str, address: SocketAddr) -> Result<Vec<u8>, FetchError> {
    tokio::time::timeout(FETCH_TIMEOUT, fetch_unbounded(config, host, address))
        .await
        .map_err(|_| FetchError::Timeout)?
}

async fn fetch_unbounded(
    config: Arc<rustls::ClientConfig>,
    host: &str,
    address: SocketAddr,
) -> Result<Vec<u8>, FetchError> {
    let name = ServerName::try_from(host.to_owned()).map_err(|_| FetchError::Connect("not a host name".into()))?;
    let tcp = TcpStream::connect(address).await.map_err(|error| FetchError::Connect(error.to_string()))?;
    let mut tls =
        TlsConnector::from(config).connect(name, tcp).await.map_err(|error| FetchError::Tls(error.to_string()))?;
    let request = format!(
        "GET /.well-known/mta-sts.txt HTTP/1.1\r\nHost: {host}\r\nUser-Agent: lienthong\r\nAccept: text/plain\r\n\
         Connection: close\r\n\r\n"
    );
    tls.write_all(request.as_bytes()).await.map_err(|error| FetchError::Connect(error.to_string()))?;
    let mut response = Vec::new();
    let limit = (MAX_HEAD + MAX_BODY + MAX_BODY / 8 + 1) as u64;
    // A server that closes without close_notify still sent what it sent: parse that.
    let read = (&mut tls).take(limit).read_to_end(&mut response).await;
    if let Err(error) = read
        && error.kind() != std::io::ErrorKind::UnexpectedEof
    {
        return Err(FetchError::Connect(error.to_string()));
    }
    if response.len() as u64 >= limit {
        return Err(FetchError::TooLarge);
    }
    parse_response(&response)
}

/// Reads a complete HTTP/1.x response: a 200, `text/plain`, and the body by Content-Length,
/// chunked encoding or the end of the connection.
pub fn parse_response(response: &[u8]) -> Result<Vec<u8>, FetchError> {
    let head_end = find(response, b"\r\n\r\n").ok_or(FetchError::Malformed("no end of headers"))?;
    if head_end > MAX_HEAD {
        return Err(FetchError::Malformed("headers too long"));
    }
    let head = std::str::from_utf8(&response[..head_end]).map_err(|_| FetchError::Malformed("headers not text"))?;
    let body = &response[head_end + 4..];
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or_default();
    let mut words = status.splitn(3, ' ');
    let version = words.next().unwrap_or_default();
    let code = words.next().unwrap_or_default();
    if !matches!(version, "HTTP/1.1" | "HTTP/1.0") || code.len() != 3 {
        return Err(FetchError::Malformed("status line"));
    }
    let code: u16 = code.parse().map_err(|_| FetchError::Malformed("status line"))?;
    if code != 200 {
        return Err(FetchError::Status(code));
    }
    let mut content_type = None;
    let mut length = None;
    let mut chunked = false;
    for line in lines {
        let (name, value) = line.split_once(':').ok_or(FetchError::Malformed("header line"))?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-type") {
            content_type = Some(value);
        } else if name.eq_ignore_ascii_case("content-length") {
            let parsed: usize = value.parse().map_err(|_| FetchError::Malformed("Content-Length"))?;
            if length.is_some_and(|known| known != parsed) {
                return Err(FetchError::Malformed("two Content-Lengths"));
            }
            length = Some(parsed);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            if !value.eq_ignore_ascii_case("chunked") {
                return Err(FetchError::Malformed("Transfer-Encoding"));
            }
            chunked = true;
        }
    }
    let media_type = content_type.unwrap_or_default().split(';').next().unwrap_or_default().trim();
    if !media_type.eq_ignore_ascii_case("text/plain") {
        return Err(FetchError::ContentType(sanitize(media_type.as_bytes(), 64)));
    }
    let body = match (chunked, length) {
        (true, _) => dechunk(body)?,
        (false, Some(length)) if length > MAX_BODY => return Err(FetchError::TooLarge),
        (false, Some(length)) => {
            body.get(..length).ok_or(FetchError::Malformed("body shorter than announced"))?.to_vec()
        }
        (false, None) => body.to_vec(),
    };
    if body.len() > MAX_BODY {
        return Err(FetchError::TooLarge);
    }
    Ok(body)
}

/// `Transfer-Encoding: chunked` (RFC 9112 7.1), extensions and trailers ignored.
fn dechunk(mut rest: &[u8]) -> Result<Vec<u8>, FetchError> {
    let mut body = Vec::new();
    loop {
        let line_end = find(rest, b"\r\n").ok_or(FetchError::Malformed("chunk size line"))?;
        let size_text = std::str::from_utf8(&rest[..line_end]).map_err(|_| FetchError::Malformed("chunk size"))?;
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        if size_text.is_empty() || size_text.len() > 8 {
            return Err(FetchError::Malformed("chunk size"));
        }
        let size = usize::from_str_radix(size_text, 16).map_err(|_| FetchError::Malformed("chunk size"))?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Ok(body);
        }
        if body.len() + size > MAX_BODY {
            return Err(FetchError::TooLarge);
        }
        let chunk = rest.get(..size).ok_or(FetchError::Malformed("chunk shorter than announced"))?;
        body.extend_from_slice(chunk);
        rest =
            rest.get(size..).and_then(|after| after.strip_prefix(b"\r\n")).ok_or(FetchError::Malformed("chunk end"))?;
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|window| window == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: &[u8] = b"version: STSv1\r\nmode: enforce\r\nmx: mx.example.vn\r\nmax_age: 86400\r\n";

    fn response(head: &str, body: &[u8]) -> Vec<u8> {
        let mut bytes = head.replace('\n', "\r\n").into_bytes();
        bytes.extend_from_slice(b"\r\n");
        bytes.extend_from_slice(body);
        bytes
    }

    #[test]
    fn a_plain_200_gives_its_body_by_length_chunks_or_close() {
        let sized = response(
            &format!("HTTP/1.1 200 OK\nContent-Type: text/plain; charset=utf-8\nContent-Length: {}\n", POLICY.len()),
            POLICY,
        );
        assert_eq!(parse_response(&sized).unwrap(), POLICY);
        let chunked = response(
            "HTTP/1.1 200 OK\nContent-Type: text/plain\nTransfer-Encoding: chunked\n",
            b"10\r\nversion: STSv1\r\n\r\n5;ext=1\r\nmode:\r\n0\r\n\r\n",
        );
        assert_eq!(parse_response(&chunked).unwrap(), b"version: STSv1\r\nmode:");
        let closed = response("HTTP/1.0 200 OK\nContent-Type: TEXT/PLAIN\n", POLICY);
        assert_eq!(parse_response(&closed).unwrap(), POLICY);
    }

    #[test]
    fn redirects_other_types_and_oversize_bodies_are_refused() {
        let redirect = response("HTTP/1.1 301 Moved\nLocation: https://evil.example/\nContent-Type: text/plain\n", b"");
        assert_eq!(parse_response(&redirect), Err(FetchError::Status(301)));
        let html = response("HTTP/1.1 200 OK\nContent-Type: text/html\x1b[2J\n", POLICY);
        assert_eq!(parse_response(&html), Err(FetchError::ContentType("text/html?[2J".into())));
        let untyped = response("HTTP/1.1 200 OK\n", POLICY);
        assert!(matches!(parse_response(&untyped), Err(FetchError::ContentType(_))));
        let big = vec![b'a'; MAX_BODY + 1];
        let by_length =
            response(&format!("HTTP/1.1 200 OK\nContent-Type: text/plain\nContent-Length: {}\n", big.len()), &big);
        assert_eq!(parse_response(&by_length), Err(FetchError::TooLarge));
        let by_close = response("HTTP/1.1 200 OK\nContent-Type: text/plain\n", &big);
        assert_eq!(parse_response(&by_close), Err(FetchError::TooLarge));
        let by_chunks = response(
            "HTTP/1.1 200 OK\nContent-Type: text/plain\nTransfer-Encoding: chunked\n",
            format!("{:x}\r\n{}\r\n0\r\n\r\n", big.len(), "a".repeat(big.len())).as_bytes(),
        );
        assert_eq!(parse_response(&by_chunks), Err(FetchError::TooLarge));
        for broken in
            [&b"garbage"[..], b"HTTP/2 200\r\n\r\n", b"HTTP/1.1 20 OK\r\n\r\n", b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n"]
        {
            assert!(matches!(parse_response(broken), Err(FetchError::Malformed(_))), "{broken:?}");
        }
        let short = response("HTTP/1.1 200 OK\nContent-Type: text/plain\nContent-Length: 500\n", POLICY);
        assert!(matches!(parse_response(&short), Err(FetchError::Malformed(_))));
    }
}
