//! The driver of the embedded TURN server (`lienthong-turn`): one task owns the sans-IO
//! core; reader tasks hand it what arrives on client transports (UDP on the dedicated TURN
//! port, TCP and TLS streams from that port or from the page's listener) and on the relay
//! sockets. Each allocation gets a real UDP socket on the appliance's address, so the SFU
//! sees relayed browsers as ordinary UDP peers and needs no TURN-specific code.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use lienthong_turn::{Client, Credential, Credentials, Now, Output, Server, ServerConfig, Transport};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinHandle;

use crate::Error;
use crate::capped;
use crate::limits::{ConnectionSlots, Slot};

/// Largest STUN message or ChannelData frame accepted on a stream (browsers stay under
/// the path MTU; this leaves room for TURN's own headers).
const MAX_FRAME: usize = 4096;
/// TCP/TLS TURN connections at once.
const MAX_STREAMS: usize = 1000;
/// TCP TURN connections to the dedicated port from one client address (an IPv6 /64) at
/// once: a district office's sites behind one NAT address, not every slot for one client.
const MAX_STREAMS_PER_CLIENT: usize = 256;
/// Frames queued for one stream client before we drop (like a full UDP buffer).
const STREAM_QUEUE: usize = 512;
/// A stream that sends nothing for this long is closed (browsers refresh well within it).
const STREAM_IDLE: Duration = Duration::from_secs(90);
/// Events queued for the TURN task.
const EVENT_QUEUE: usize = 8192;
const MAX_DATAGRAM: usize = 2048;
/// How long TURN credentials minted at join time can start new allocations.
pub(crate) const CREDENTIAL_LIFETIME: Duration = Duration::from_secs(600);

enum Event {
    FromClient { client: Client, data: Vec<u8> },
    FromPeer { relay: SocketAddr, peer: SocketAddr, data: Vec<u8> },
    StreamOpened { client: Client, writer: mpsc::Sender<Vec<u8>> },
    StreamClosed { client: Client },
}

/// What the page listener and the hub need from the TURN server: hand it a stream, mint
/// a credential.
#[derive(Clone)]
pub(crate) struct TurnHandle {
    events: mpsc::Sender<Event>,
    streams: Arc<Semaphore>,
    credentials: Credentials,
}

impl TurnHandle {
    /// Serves one TCP or TLS connection whose first bytes were TURN.
    /// Serves one TURN stream; `slot` (its listener's per-client cap) is held until it ends.
    pub fn serve_stream<S>(&self, stream: S, slot: Slot, transport: Transport, remote: SocketAddr, local: SocketAddr)
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let Ok(permit) = self.streams.clone().try_acquire_owned() else {
            tracing::debug!(%remote, "too many TURN connections; dropping one");
            return;
        };
        let client = Client { transport, remote, local };
        let events = self.events.clone();
        tokio::spawn(async move {
            serve_stream(stream, client, events).await;
            drop(permit);
            drop(slot);
        });
    }

    /// A credential for `participant`, good for starting allocations for a few minutes.
    pub fn mint(&self, participant: &str) -> Credential {
        let expires = unix_seconds() + CREDENTIAL_LIFETIME.as_secs();
        self.credentials.mint(participant, expires)
    }
}

/// The running TURN task and its sockets.
pub(crate) struct Turn {
    pub handle: TurnHandle,
    pub task: JoinHandle<()>,
    /// The dedicated port's addresses (UDP and TCP), if one is configured.
    pub dedicated: Vec<SocketAddr>,
}

/// Starts the TURN task; with `dedicated_port`, also listens on UDP and TCP there on every
/// address in `bind`.
pub(crate) async fn start(
    config: ServerConfig,
    credentials: Credentials,
    bind: &[std::net::IpAddr],
    dedicated_port: Option<u16>,
    stop: watch::Receiver<bool>,
) -> Result<Turn, Error> {
    let (events, receiver) = mpsc::channel(EVENT_QUEUE);
    let handle = TurnHandle { events: events.clone(), streams: Arc::new(Semaphore::new(MAX_STREAMS)), credentials };
    let mut udp = Vec::new();
    let mut dedicated = Vec::new();
    let mut readers = Vec::new();
    if let Some(port) = dedicated_port {
        for ip in bind {
            let address = SocketAddr::new(*ip, port);
            let socket = UdpSocket::bind(address).await.map_err(|source| Error::Bind { address, source })?;
            let local = socket.local_addr().map_err(|source| Error::Bind { address, source })?;
            let socket = Arc::new(socket);
            readers.push(tokio::spawn(read_client_udp(socket.clone(), local, events.clone())));
            udp.push(socket);
            let tcp_address = SocketAddr::new(*ip, local.port());
            let listener =
                TcpListener::bind(tcp_address).await.map_err(|source| Error::Bind { address: tcp_address, source })?;
            let slots = ConnectionSlots::new(MAX_STREAMS, MAX_STREAMS_PER_CLIENT);
            readers.push(tokio::spawn(accept_tcp(listener, handle.clone(), slots)));
            dedicated.push(local);
        }
    }
    let server = Server::new(config, handle.credentials.clone());
    let task = tokio::spawn(async move {
        let mut driver = Driver { server, udp, streams: HashMap::new(), relays: HashMap::new(), events };
        driver.run(receiver, stop).await;
        for reader in readers {
            reader.abort();
        }
    });
    Ok(Turn { handle, task, dedicated })
}

struct Relay {
    socket: Arc<UdpSocket>,
    reader: JoinHandle<()>,
}

struct Driver {
    server: Server,
    udp: Vec<Arc<UdpSocket>>,
    streams: HashMap<Client, mpsc::Sender<Vec<u8>>>,
    relays: HashMap<SocketAddr, Relay>,
    events: mpsc::Sender<Event>,
}

impl Driver {
    async fn run(&mut self, mut receiver: mpsc::Receiver<Event>, mut stop: watch::Receiver<bool>) {
        let mut ticker = tokio::time::interval(Duration::from_secs(1));
        let mut out = Vec::new();
        let mut reported = lienthong_turn::Stats::default();
        loop {
            tokio::select! {
                event = receiver.recv() => {
                    let Some(event) = event else { break };
                    self.handle(event, &mut out);
                    for _ in 0..64 {
                        let Ok(event) = receiver.try_recv() else { break };
                        self.handle(event, &mut out);
                    }
                }
                _ = ticker.tick() => {
                    self.server.handle_timeout(now(), &mut out);
                    reported = report(reported, self.server.stats());
                }
                _ = stop.wait_for(|stopped| *stopped) => break,
            }
            self.execute(&mut out);
            metrics::gauge!("lienthong_conference_turn_allocations").set(self.server.allocations() as f64);
        }
        for (_, relay) in self.relays.drain() {
            relay.reader.abort();
        }
    }

    fn handle(&mut self, event: Event, out: &mut Vec<Output>) {
        match event {
            Event::FromClient { client, data } => self.server.handle_client(now(), client, &data, out),
            Event::FromPeer { relay, peer, data } => self.server.handle_peer(now(), relay, peer, &data, out),
            Event::StreamOpened { client, writer } => {
                self.streams.insert(client, writer);
            }
            Event::StreamClosed { client } => {
                self.streams.remove(&client);
                self.server.client_closed(client, out);
            }
        }
    }

    /// Carries out what the core asked for, including what opening a relay socket leads to.
    fn execute(&mut self, out: &mut Vec<Output>) {
        while !out.is_empty() {
            for output in std::mem::take(out) {
                match output {
                    Output::ToClient { client, data } => self.send_to_client(client, data),
                    Output::ToPeer { relay, peer, data } => {
                        // A full socket buffer drops the packet, as UDP would; only sent ones count.
                        if let Some(relay) = self.relays.get(&relay)
                            && relay.socket.try_send_to(&data, peer).is_ok()
                        {
                            metrics::counter!("lienthong_conference_turn_relayed_packets_total").increment(1);
                        }
                    }
                    Output::OpenRelay { client, ip } => {
                        let relay = self.open_relay(ip);
                        self.server.relay_opened(now(), client, relay, out);
                    }
                    Output::CloseRelay { relay } => {
                        if let Some(relay) = self.relays.remove(&relay) {
                            relay.reader.abort();
                        }
                    }
                }
            }
        }
    }

    fn send_to_client(&self, client: Client, data: Vec<u8>) {
        match client.transport {
            Transport::Udp => {
                let socket =
                    self.udp.iter().find(|socket| socket.local_addr().is_ok_and(|local| local == client.local));
                if let Some(socket) = socket {
                    let _ = socket.try_send_to(&data, client.remote);
                }
            }
            Transport::Tcp | Transport::Tls => {
                if let Some(writer) = self.streams.get(&client) {
                    let _ = writer.try_send(data);
                }
            }
        }
    }

    fn open_relay(&mut self, ip: std::net::IpAddr) -> Option<SocketAddr> {
        let socket = std::net::UdpSocket::bind(SocketAddr::new(ip, 0))
            .and_then(|socket| socket.set_nonblocking(true).map(|()| socket))
            .and_then(UdpSocket::from_std);
        let socket = match socket {
            Ok(socket) => Arc::new(socket),
            Err(error) => {
                tracing::warn!(%ip, %error, "cannot open a TURN relay socket");
                return None;
            }
        };
        let address = socket.local_addr().ok()?;
        let reader = tokio::spawn(read_peer(socket.clone(), address, self.events.clone()));
        self.relays.insert(address, Relay { socket, reader });
        Some(address)
    }
}

/// Adds what the core refused since the last report to the metrics; returns the new totals.
fn report(before: lienthong_turn::Stats, now: lienthong_turn::Stats) -> lienthong_turn::Stats {
    for (reason, total, previous) in [
        ("forbidden_peer", now.forbidden_peer, before.forbidden_peer),
        ("credentials", now.refused_credentials, before.refused_credentials),
        ("quota", now.refused_quota, before.refused_quota),
        ("over_budget", now.over_budget, before.over_budget),
    ] {
        if total > previous {
            metrics::counter!("lienthong_conference_turn_refused_total", "reason" => reason)
                .increment(total - previous);
        }
    }
    now
}

fn unix_seconds() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|elapsed| elapsed.as_secs()).unwrap_or(0)
}

fn now() -> Now {
    Now { instant: Instant::now(), unix_seconds: unix_seconds() }
}

async fn read_client_udp(socket: Arc<UdpSocket>, local: SocketAddr, events: mpsc::Sender<Event>) {
    let mut buffer = vec![0u8; MAX_DATAGRAM];
    loop {
        let Ok((length, remote)) = socket.recv_from(&mut buffer).await else { continue };
        let client = Client { transport: Transport::Udp, remote, local };
        let event = Event::FromClient { client, data: buffer[..length].to_vec() };
        if let Err(mpsc::error::TrySendError::Closed(_)) = events.try_send(event) {
            return;
        }
    }
}

async fn read_peer(socket: Arc<UdpSocket>, relay: SocketAddr, events: mpsc::Sender<Event>) {
    let mut buffer = vec![0u8; MAX_DATAGRAM];
    loop {
        let Ok((length, peer)) = socket.recv_from(&mut buffer).await else { continue };
        let event = Event::FromPeer { relay, peer, data: buffer[..length].to_vec() };
        if let Err(mpsc::error::TrySendError::Closed(_)) = events.try_send(event) {
            return;
        }
    }
}

/// Accepts TURN over TCP on the dedicated port; each connection holds a slot of `slots`
/// (a total and a per-client cap) for as long as it lives.
async fn accept_tcp(listener: TcpListener, handle: TurnHandle, slots: ConnectionSlots) {
    let local = listener.local_addr().ok();
    loop {
        let (stream, remote, slot) = capped::accept(&listener, &slots).await;
        let _ = stream.set_nodelay(true);
        let local = stream.local_addr().ok().or(local).unwrap_or(remote);
        handle.serve_stream(stream, slot, Transport::Tcp, remote, local);
    }
}

/// Runs one TURN stream: STUN messages and padded ChannelData frames, both ways.
async fn serve_stream<S>(stream: S, client: Client, events: mpsc::Sender<Event>)
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (writer_sender, mut outbound) = mpsc::channel::<Vec<u8>>(STREAM_QUEUE);
    if events.send(Event::StreamOpened { client, writer: writer_sender }).await.is_err() {
        return;
    }
    let (mut reader, mut writer) = tokio::io::split(stream);
    let read = async {
        let mut buffer: Vec<u8> = Vec::with_capacity(MAX_FRAME * 2);
        loop {
            // Hand over every complete frame; a frame above the cap or bytes that are not
            // TURN end the connection.
            loop {
                match lienthong_turn::message::frame_length(&buffer) {
                    Ok(Some(length)) if length > MAX_FRAME => return,
                    Ok(Some(length)) if buffer.len() >= length => {
                        let rest = buffer.split_off(length);
                        let frame = std::mem::replace(&mut buffer, rest);
                        if events.send(Event::FromClient { client, data: frame }).await.is_err() {
                            return;
                        }
                    }
                    Ok(_) => break,
                    Err(_) => return,
                }
            }
            let mut chunk = [0u8; MAX_FRAME];
            match tokio::time::timeout(STREAM_IDLE, reader.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return,
                Ok(Ok(length)) => buffer.extend_from_slice(&chunk[..length]),
            }
        }
    };
    let write = async {
        while let Some(frame) = outbound.recv().await {
            if writer.write_all(&frame).await.is_err() {
                return;
            }
        }
    };
    tokio::select! {
        _ = read => {}
        _ = write => {}
        // The TURN task stopped (shutdown): let the connection go at once.
        _ = events.closed() => return,
    }
    let _ = events.send(Event::StreamClosed { client }).await;
}
