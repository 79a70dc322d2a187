//! The media port: one UDP socket per host address, and ICE-TCP (RFC 6544, passive, framed
//! as in RFC 4571) on the same port number. A reader task per UDP socket takes datagrams a
//! batch per `recvmmsg` ([`crate::batch`]) and hands them to the hub over a bounded channel,
//! as ICE-TCP reader tasks do with their frames: while the hub is busy, the channel holds
//! thousands of datagrams where the socket's buffer holds a few hundred. The hub sends, a
//! batch per `sendmmsg`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use str0m::net::Protocol;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::Error;
use crate::batch;
use crate::limits::{ConnectionSlots, Slot};
/// ICE-TCP connections at once; each costs two tasks and a small buffer.
const MAX_TCP_CONNECTIONS: usize = 1000;
/// ICE-TCP connections from one client address (an IPv6 /64): a participant opens one or
/// two, so this leaves room for an office behind one NAT address, not for one client to
/// take every slot.
const MAX_TCP_CONNECTIONS_PER_CLIENT: usize = 100;
/// A new ICE-TCP connection must send its first frame (a STUN check) this soon.
pub(crate) const TCP_FIRST_FRAME_DEADLINE: Duration = Duration::from_secs(10);
/// An ICE-TCP connection that sends nothing for this long is closed. Browsers send consent
/// checks every few seconds and consider consent lost after 30 s (RFC 7675), besides RTCP.
pub(crate) const TCP_IDLE_LIMIT: Duration = Duration::from_secs(30);
/// Frames queued for one ICE-TCP connection before we drop (like a full UDP buffer).
const TCP_SEND_QUEUE: usize = 512;

/// A datagram from a browser, with the local address it arrived on.
#[derive(Debug)]
pub(crate) struct Datagram {
    pub proto: Protocol,
    pub source: SocketAddr,
    pub destination: SocketAddr,
    pub data: Vec<u8>,
}

/// One UDP socket of the media port and what waits to go out of it.
struct UdpEndpoint {
    socket: Arc<UdpSocket>,
    local: SocketAddr,
    outgoing: batch::Sender,
}

/// The media port, owned by the hub.
pub(crate) struct MediaPort {
    udp: Vec<UdpEndpoint>,
    tcp: Arc<Mutex<HashMap<SocketAddr, mpsc::Sender<Vec<u8>>>>>,
    pub local_addresses: Vec<SocketAddr>,
    pub tasks: Vec<JoinHandle<()>>,
}

/// Binds UDP on `address` and, with `ice_tcp`, TCP on the same port number. When the address
/// asks for port 0, the port UDP got may already be taken for TCP by someone else (another
/// program's outgoing connections): then it tries another port. A fixed port is never changed.
async fn bind_pair(address: SocketAddr, ice_tcp: bool) -> Result<(UdpSocket, SocketAddr, Option<TcpListener>), Error> {
    const ATTEMPTS: usize = 16;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let socket = UdpSocket::bind(address).await.map_err(|source| Error::Bind { address, source })?;
        let local = socket.local_addr().map_err(|source| Error::Bind { address, source })?;
        if !ice_tcp {
            return Ok((socket, local, None));
        }
        // ICE-TCP takes the same port number as UDP, so a test on port 0 gets one port.
        let tcp_address = SocketAddr::new(address.ip(), local.port());
        match TcpListener::bind(tcp_address).await {
            Ok(listener) => return Ok((socket, local, Some(listener))),
            Err(source)
                if address.port() == 0 && source.kind() == std::io::ErrorKind::AddrInUse && attempt < ATTEMPTS => {}
            Err(source) => return Err(Error::Bind { address: tcp_address, source }),
        }
    }
}

impl MediaPort {
    /// Binds UDP (and TCP with `ice_tcp`) on every address; the datagrams arrive on `inbound`.
    pub async fn bind(addresses: &[SocketAddr], ice_tcp: bool, inbound: mpsc::Sender<Datagram>) -> Result<Self, Error> {
        let mut port = MediaPort {
            udp: Vec::new(),
            tcp: Arc::new(Mutex::new(HashMap::new())),
            local_addresses: Vec::new(),
            tasks: Vec::new(),
        };
        for address in addresses {
            let (socket, local, listener) = bind_pair(*address, ice_tcp).await?;
            let socket = Arc::new(socket);
            port.tasks.push(tokio::spawn(read_udp(socket.clone(), local, inbound.clone())));
            port.udp.push(UdpEndpoint { socket, local, outgoing: batch::Sender::new() });
            port.local_addresses.push(local);
            if let Some(listener) = listener {
                let slots = ConnectionSlots::new(MAX_TCP_CONNECTIONS, MAX_TCP_CONNECTIONS_PER_CLIENT);
                port.tasks.push(tokio::spawn(accept_tcp(listener, local, inbound.clone(), port.tcp.clone(), slots)));
            }
        }
        Ok(port)
    }

    /// Sends one packet: UDP is queued and goes out with the next [`MediaPort::flush`] (or
    /// when a batch is full). A full socket buffer or a gone TCP connection drops it, as UDP
    /// would.
    pub fn send(&mut self, proto: Protocol, source: SocketAddr, destination: SocketAddr, data: Vec<u8>) {
        match proto {
            Protocol::Udp => {
                let Some(endpoint) = self.udp.iter_mut().find(|endpoint| endpoint.local == source) else {
                    return;
                };
                endpoint.outgoing.push(&*endpoint.socket, destination, data);
            }
            _ => {
                let sender = self.tcp.lock().ok().and_then(|map| map.get(&destination).cloned());
                if let Some(sender) = sender {
                    let _ = sender.try_send(data);
                }
            }
        }
    }

    /// Sends every queued UDP datagram.
    pub fn flush(&mut self) {
        for endpoint in &mut self.udp {
            endpoint.outgoing.send(&*endpoint.socket);
        }
    }

    pub fn shutdown(&mut self) {
        for task in self.tasks.drain(..) {
            task.abort();
        }
        if let Ok(mut map) = self.tcp.lock() {
            map.clear();
        }
    }
}

/// Reads one UDP socket, a batch per system call, into the hub's queue.
async fn read_udp(socket: Arc<UdpSocket>, local: SocketAddr, inbound: mpsc::Sender<Datagram>) {
    let mut receiver = batch::Receiver::new();
    loop {
        if socket.readable().await.is_err() {
            return;
        }
        match socket.try_io(tokio::io::Interest::READABLE, || receiver.receive(&*socket)) {
            Ok(count) => {
                for index in 0..count {
                    let (data, source) = receiver.datagram(index);
                    let Some(source) = source else { continue };
                    let datagram = Datagram { proto: Protocol::Udp, source, destination: local, data: data.to_vec() };
                    // A full queue means the hub is behind: drop, as the kernel would.
                    if let Err(mpsc::error::TrySendError::Closed(_)) = inbound.try_send(datagram) {
                        return;
                    }
                }
            }
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {}
            // ICMP port unreachable from a departed browser shows up here on Linux.
            Err(error) => tracing::trace!(%error, "media receive error"),
        }
    }
}

type TcpPeers = Arc<Mutex<HashMap<SocketAddr, mpsc::Sender<Vec<u8>>>>>;

async fn accept_tcp(
    listener: TcpListener,
    local: SocketAddr,
    inbound: mpsc::Sender<Datagram>,
    peers: TcpPeers,
    slots: ConnectionSlots,
) {
    loop {
        let Ok((stream, remote)) = listener.accept().await else {
            continue;
        };
        // Dropping the stream closes it: the listener or this client is at its cap.
        let Ok(slot) = slots.try_acquire(remote.ip()) else {
            tracing::debug!(%remote, "ICE-TCP connection refused: too many connections");
            continue;
        };
        let (sender, receiver) = mpsc::channel(TCP_SEND_QUEUE);
        {
            let Ok(mut map) = peers.lock() else { return };
            map.insert(remote, sender);
        }
        let _ = stream.set_nodelay(true);
        tokio::spawn(serve_tcp(stream, remote, local, inbound.clone(), receiver, peers.clone(), slot));
    }
}

/// Runs one ICE-TCP connection: 16-bit length-prefixed frames both ways.
async fn serve_tcp(
    stream: TcpStream,
    remote: SocketAddr,
    local: SocketAddr,
    inbound: mpsc::Sender<Datagram>,
    mut outbound: mpsc::Receiver<Vec<u8>>,
    peers: TcpPeers,
    slot: Slot,
) {
    let (mut reader, mut writer) = stream.into_split();
    let read = async {
        let mut buffer = vec![0u8; u16::MAX as usize];
        let mut limit = TCP_FIRST_FRAME_DEADLINE;
        loop {
            let frame = async {
                let length = reader.read_u16().await? as usize;
                reader.read_exact(&mut buffer[..length]).await?;
                Ok::<usize, std::io::Error>(length)
            };
            let Ok(length) = tokio::time::timeout(limit, frame).await else {
                tracing::debug!(%remote, "ICE-TCP connection silent; closing");
                return Ok(());
            };
            let length = length?;
            limit = TCP_IDLE_LIMIT;
            let datagram =
                Datagram { proto: Protocol::Tcp, source: remote, destination: local, data: buffer[..length].to_vec() };
            if inbound.send(datagram).await.is_err() {
                return Ok::<(), std::io::Error>(());
            }
        }
    };
    let write = async {
        while let Some(frame) = outbound.recv().await {
            let Ok(length) = u16::try_from(frame.len()) else {
                continue;
            };
            writer.write_u16(length).await?;
            writer.write_all(&frame).await?;
        }
        Ok::<(), std::io::Error>(())
    };
    tokio::select! {
        _ = read => {}
        _ = write => {}
    }
    if let Ok(mut map) = peers.lock() {
        map.remove(&remote);
    }
    drop(slot);
}
