//! The page's listener (443 in production), shared by HTTPS and TURN: it tells a TLS
//! ClientHello from STUN by the first bytes (a TLS record starts with 0x16; STUN with two
//! zero bits and the magic cookie at bytes 4..8), and after the TLS handshake tells TURN
//! from HTTP by the first decrypted bytes. TURN connections go to the TURN server; the rest
//! to axum. Handshakes run in their own tasks, so one slow client never holds up the others.
//!
//! Every connection takes a slot of the listener's [`ConnectionSlots`] (a total and a
//! per-client cap) when it is accepted, before the first byte is read, and holds it through
//! the TLS handshake and for as long as it lives, HTTP and TURN alike. HTTP connections also
//! get the page's read deadline ([`Held`]); TURN streams have the TURN server's own.

use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use lienthong_turn::Transport;
use lienthong_turn::message::looks_like_stun;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;

use crate::capped::{self, Held};
use crate::limits::{ConnectionSlots, Slot};
use crate::relay::TurnHandle;

/// A TLS handshake, or the first bytes of a connection, that take longer than this are dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes that decide: STUN's type, length and magic cookie.
const SNIFF: usize = 8;

/// What the first bytes of a connection say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FirstBytes {
    Tls,
    Stun,
    Other,
    /// Not enough bytes yet to tell.
    NeedMore,
}

/// Classifies a connection's first bytes. STUN needs the full 8 to see the cookie; anything
/// that cannot become STUN or TLS is decided at once.
pub(crate) fn classify(prefix: &[u8]) -> FirstBytes {
    match prefix.first() {
        None => FirstBytes::NeedMore,
        Some(0x16) => FirstBytes::Tls,
        Some(0x00 | 0x01) if prefix.len() < SNIFF => FirstBytes::NeedMore,
        Some(0x00 | 0x01) if looks_like_stun(prefix) => FirstBytes::Stun,
        Some(_) => FirstBytes::Other,
    }
}

/// A stream the page server reads: plain TCP or TLS, with the sniffed bytes put back.
pub(crate) trait PageIo: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> PageIo for T {}

/// The axum listener over the demultiplexed port.
pub(crate) struct PageListener {
    local: SocketAddr,
    ready: mpsc::Receiver<(Box<dyn PageIo>, SocketAddr)>,
}

impl PageListener {
    pub fn start(
        listener: TcpListener,
        slots: ConnectionSlots,
        tls: Option<TlsAcceptor>,
        turn: Option<TurnHandle>,
        mut stop: watch::Receiver<bool>,
    ) -> Self {
        let local = listener.local_addr().unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        let (sender, ready) = mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let (stream, remote, slot) = tokio::select! {
                    accepted = capped::accept(&listener, &slots) => accepted,
                    _ = stop.wait_for(|stopped| *stopped) => return,
                };
                let (tls, turn, sender) = (tls.clone(), turn.clone(), sender.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, route(stream, remote, slot, tls, turn)).await {
                        Ok(Some(page)) => {
                            let _ = sender.send((page, remote)).await;
                        }
                        Ok(None) => {}
                        Err(_) => tracing::debug!(%remote, "connection sent nothing usable in time"),
                    }
                });
            }
        });
        PageListener { local, ready }
    }
}

/// Decides where one connection goes; returns it, with its slot, when it is for the page.
/// A TURN connection takes its slot to the TURN server; a dropped one frees it.
async fn route(
    stream: TcpStream,
    remote: SocketAddr,
    slot: Slot,
    tls: Option<TlsAcceptor>,
    turn: Option<TurnHandle>,
) -> Option<Box<dyn PageIo>> {
    let local = stream.local_addr().ok()?;
    let Some(turn) = turn else {
        // No TURN here: the listener is what it always was.
        return match tls {
            None => Some(Box::new(Held::new(stream, slot))),
            Some(acceptor) => {
                handshake(acceptor, stream, remote).await.map(|tls| Box::new(Held::new(tls, slot)) as Box<dyn PageIo>)
            }
        };
    };
    match (sniff(&stream).await?, tls) {
        (FirstBytes::Stun, _) => {
            let _ = stream.set_nodelay(true);
            turn.serve_stream(stream, slot, Transport::Tcp, remote, local);
            None
        }
        (FirstBytes::Tls, Some(acceptor)) => {
            let mut tls = handshake(acceptor, stream, remote).await?;
            let mut prefix = Vec::with_capacity(SNIFF);
            while classify(&prefix) == FirstBytes::NeedMore {
                let mut byte = [0u8; SNIFF];
                let wanted = SNIFF - prefix.len();
                let read = tls.read(&mut byte[..wanted]).await.ok().filter(|read| *read > 0)?;
                prefix.extend_from_slice(&byte[..read]);
            }
            let stream = Prefixed { prefix, position: 0, inner: tls };
            if classify(&stream.prefix) == FirstBytes::Stun {
                let _ = stream.inner.get_ref().0.set_nodelay(true);
                turn.serve_stream(stream, slot, Transport::Tls, remote, local);
                None
            } else {
                Some(Box::new(Held::new(stream, slot)))
            }
        }
        (FirstBytes::Other, None) => Some(Box::new(Held::new(stream, slot))),
        // TLS to a plain listener, or plain bytes to a TLS one: nothing we serve.
        _ => None,
    }
}

/// Waits until the first bytes say what the connection is, without consuming them.
async fn sniff(stream: &TcpStream) -> Option<FirstBytes> {
    let mut prefix = [0u8; SNIFF];
    loop {
        let length = stream.peek(&mut prefix).await.ok()?;
        if length == 0 {
            return None;
        }
        match classify(&prefix[..length]) {
            // Fewer bytes than a STUN header so far: they come in one segment in practice,
            // so a short wait before looking again is rare.
            FirstBytes::NeedMore => tokio::time::sleep(Duration::from_millis(5)).await,
            decided => return Some(decided),
        }
    }
}

async fn handshake(
    acceptor: TlsAcceptor,
    stream: TcpStream,
    remote: SocketAddr,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    match acceptor.accept(stream).await {
        Ok(stream) => Some(stream),
        Err(error) => {
            tracing::debug!(%remote, %error, "TLS handshake failed");
            None
        }
    }
}

impl axum::serve::Listener for PageListener {
    type Io = Box<dyn PageIo>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(connection) => connection,
            // The accept task ended (shutdown): wait for graceful shutdown to stop us.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// A stream whose first bytes were read to classify it and are replayed before the rest.
pub(crate) struct Prefixed<S> {
    prefix: Vec<u8>,
    position: usize,
    inner: S,
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if this.position < this.prefix.len() {
            let rest = &this.prefix[this.position..];
            let length = rest.len().min(buffer.remaining());
            buffer.put_slice(&rest[..length]);
            this.position += length;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(context, buffer)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(self: Pin<&mut Self>, context: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(context, data)
    }

    fn poll_flush(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(context)
    }

    fn poll_shutdown(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(context)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_bytes_are_told_apart() {
        let allocate = [0x00, 0x03, 0x00, 0x24, 0x21, 0x12, 0xA4, 0x42];
        assert_eq!(classify(&allocate), FirstBytes::Stun);
        assert_eq!(classify(&allocate[..5]), FirstBytes::NeedMore);
        assert_eq!(classify(&[]), FirstBytes::NeedMore);
        assert_eq!(classify(&[0x16, 0x03, 0x01]), FirstBytes::Tls);
        assert_eq!(classify(b"GET / HTTP/1.1"), FirstBytes::Other);
        assert_eq!(classify(b"PRI * HTTP/2.0"), FirstBytes::Other);
        // STUN-like type bytes without the magic cookie are not STUN (RFC 3489 clients).
        assert_eq!(classify(&[0x00, 0x01, 0x00, 0x00, 1, 2, 3, 4]), FirstBytes::Other);
    }

    #[tokio::test]
    async fn prefixed_replays_then_continues() {
        let (mut client, server) = tokio::io::duplex(64);
        tokio::io::AsyncWriteExt::write_all(&mut client, b" world").await.unwrap();
        drop(client);
        let mut stream = Prefixed { prefix: b"hello".to_vec(), position: 0, inner: server };
        let mut text = String::new();
        stream.read_to_string(&mut text).await.unwrap();
        assert_eq!(text, "hello world");
    }
}
