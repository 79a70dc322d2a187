//! The page listener's TCP connections: each holds a slot (a total and a per-client cap, so
//! one client cannot open every connection) and is closed when it sends nothing for
//! [`READ_IDLE_LIMIT`] (a client that opens connections and never sends a request, or
//! stops in the middle of one). Upgraded WebSockets stay well inside the limit: browsers
//! answer the server's pings every 15 s.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, Sleep};

use crate::limits::{ConnectionSlots, Slot};

/// TCP connections to the page listener at once.
pub(crate) const MAX_PAGE_CONNECTIONS: usize = 4096;
/// TCP connections to the page listener from one client address (an IPv6 /64) at once.
pub(crate) const MAX_PAGE_CONNECTIONS_PER_CLIENT: usize = 256;
/// A connection that sends nothing for this long is closed.
pub(crate) const READ_IDLE_LIMIT: Duration = Duration::from_secs(60);

/// Accepts the next connection that gets a slot; the others are closed at once.
pub(crate) async fn accept(listener: &TcpListener, slots: &ConnectionSlots) -> (TcpStream, SocketAddr, Slot) {
    loop {
        let (stream, remote) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors and the like: wait a little instead of spinning.
                tracing::debug!(%error, "page listener accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        match slots.try_acquire(remote.ip()) {
            Ok(slot) => return (stream, remote, slot),
            Err(full) => tracing::debug!(%remote, ?full, "page connection refused: too many connections"),
        }
    }
}

/// A plain-TCP axum listener whose connections hold a slot and have a read deadline.
pub(crate) struct CappedListener {
    listener: TcpListener,
    slots: ConnectionSlots,
}

impl CappedListener {
    pub fn new(listener: TcpListener, slots: ConnectionSlots) -> Self {
        CappedListener { listener, slots }
    }
}

impl axum::serve::Listener for CappedListener {
    type Io = Held<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (stream, remote, slot) = accept(&self.listener, &self.slots).await;
        let _ = stream.set_nodelay(true);
        (Held::new(stream, slot), remote)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.listener.local_addr()
    }
}

/// A connection with its slot and its read deadline.
pub(crate) struct Held<Io> {
    io: Io,
    idle: Pin<Box<Sleep>>,
    _slot: Slot,
}

impl<Io> Held<Io> {
    pub fn new(io: Io, slot: Slot) -> Self {
        Held { io, idle: Box::pin(tokio::time::sleep(READ_IDLE_LIMIT)), _slot: slot }
    }
}

impl<Io: AsyncRead + Unpin> AsyncRead for Held<Io> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        match Pin::new(&mut this.io).poll_read(context, buffer) {
            Poll::Ready(result) => {
                this.idle.as_mut().reset(Instant::now() + READ_IDLE_LIMIT);
                Poll::Ready(result)
            }
            Poll::Pending => match this.idle.as_mut().poll(context) {
                Poll::Ready(()) => Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "client sent nothing"))),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl<Io: AsyncWrite + Unpin> AsyncWrite for Held<Io> {
    fn poll_write(mut self: Pin<&mut Self>, context: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(context, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(context)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(context)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffers: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(context, buffers)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}
