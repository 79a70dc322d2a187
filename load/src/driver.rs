//! The I/O around one [`MediaClient`]: its UDP socket, its signaling WebSocket, its timers
//! and the run's phase. One task per client.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::Error;
use crate::client::{Counters, MediaClient};

pub(crate) type WebSocket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Where a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    Setup,
    Measuring,
    Done,
}

/// What a server's signaling protocol does once the session is up.
pub(crate) trait Signaling: Send {
    /// Handles one text message from the server; returns the messages to send back.
    fn on_text(&mut self, text: &str, client: &mut MediaClient) -> Result<Vec<String>, Error>;
    /// A message the server needs now and then to keep the session, if any.
    fn keepalive(&mut self) -> Option<String>;
    /// The message that ends the session politely, if the protocol has one.
    fn leave(&mut self) -> Option<String>;
}

/// Counts of the whole run, shared by every client task.
#[derive(Debug, Default)]
pub(crate) struct Progress {
    /// Incoming streams seen by all clients.
    pub streams_seen: AtomicUsize,
    /// Clients that publish and whose media has started flowing.
    pub publishing: AtomicUsize,
}

const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(20);
/// Larger than any datagram str0m accepts.
const RECEIVE_BUFFER: usize = 2048;

/// Runs a client until the phase is `Done`; returns what it counted.
pub(crate) async fn drive(
    mut client: MediaClient,
    socket: UdpSocket,
    mut websocket: WebSocket,
    mut signaling: impl Signaling,
    mut phase: watch::Receiver<Phase>,
    progress: Arc<Progress>,
) -> Result<Counters, Error> {
    let local = socket.local_addr()?;
    let mut buffer = vec![0u8; RECEIVE_BUFFER];
    let mut keepalive = tokio::time::interval(KEEPALIVE_INTERVAL);
    keepalive.tick().await;
    let mut reported = 0;
    let mut reported_sending = false;
    client.set_measuring(*phase.borrow() == Phase::Measuring);
    let result = loop {
        let next = pump(&mut client, &socket);
        let seen = client.streams_seen();
        if seen > reported {
            progress.streams_seen.fetch_add(seen - reported, Ordering::Relaxed);
            reported = seen;
        }
        if !reported_sending && client.is_sending() {
            progress.publishing.fetch_add(1, Ordering::Relaxed);
            reported_sending = true;
        }
        if !client.is_alive() {
            break Err(Error::Media("the media session closed".into()));
        }
        tokio::select! {
            received = socket.recv_from(&mut buffer) => {
                let (length, source) = received?;
                client.handle_datagram(Instant::now(), source, local, &buffer[..length]);
                // Take whatever else is queued. str0m must be drained after every input: it
                // holds one received packet at a time.
                while let Ok((length, source)) = socket.try_recv_from(&mut buffer) {
                    pump(&mut client, &socket);
                    client.handle_datagram(Instant::now(), source, local, &buffer[..length]);
                }
            }
            () = tokio::time::sleep_until(next.into()) => client.handle_timeout(Instant::now()),
            message = websocket.next() => match message {
                Some(Ok(Message::Text(text))) => {
                    match signaling.on_text(&text, &mut client) {
                        Ok(replies) => {
                            for reply in replies {
                                websocket.send(Message::text(reply)).await?;
                            }
                        }
                        Err(error) => break Err(error),
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    break Err(Error::Signaling(format!("the server closed signaling: {frame:?}")));
                }
                Some(Ok(_)) => {}
                Some(Err(error)) => break Err(error.into()),
                None => break Err(Error::Signaling("the server closed signaling".into())),
            },
            _ = keepalive.tick() => {
                if let Some(message) = signaling.keepalive() {
                    websocket.send(Message::text(message)).await?;
                }
            }
            changed = phase.changed() => {
                let current = if changed.is_ok() { *phase.borrow() } else { Phase::Done };
                client.set_measuring(current == Phase::Measuring);
                if current == Phase::Done {
                    break Ok(());
                }
            }
        }
    };
    if let Some(message) = signaling.leave() {
        let _ = websocket.send(Message::text(message)).await;
    }
    let _ = websocket.close(None).await;
    result.map(|()| client.into_counters())
}

/// Drains the client's output: transmits go out now. Returns when its next timeout is due.
fn pump(client: &mut MediaClient, socket: &UdpSocket) -> Instant {
    client.poll(&mut |transmit| {
        // A full socket buffer drops the packet, as a congested network would.
        let _ = socket.try_send_to(&transmit.contents, transmit.destination);
    })
}

/// A UDP socket for one client on a free port of `address`.
pub(crate) async fn media_socket(address: std::net::IpAddr) -> Result<UdpSocket, Error> {
    Ok(UdpSocket::bind((address, 0)).await?)
}
