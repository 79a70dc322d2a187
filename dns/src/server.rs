//! The drivers: UDP workers (one socket per core with SO_REUSEPORT, each on its own thread,
//! blocking I/O, no shared state on the hot path) and TCP (tokio; connection cap, idle
//! timeout, pipelined queries answered in order).

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};

use crate::Error;
use crate::catalog::Catalog;
use crate::engine::{self, Action, Transport};
use crate::forward::Forwarder;
use crate::limits::{RateLimiter, Verdict};
use crate::stats::{Stats, Tally};
use crate::transfer;
use crate::wire;

/// How often a blocked UDP worker wakes up to notice shutdown.
const UDP_POLL: Duration = Duration::from_millis(200);
/// Socket buffers, as NSD sets them: bursts queue in the kernel instead of being dropped.
const SOCKET_BUFFER: usize = 1 << 20;

/// State every driver reads.
pub struct Shared {
    catalog: RwLock<Arc<Catalog>>,
    generation: AtomicU64,
    pub stopping: AtomicBool,
    pub forwarder: Forwarder,
    pub stats: Stats,
    runtime: tokio::runtime::Handle,
}

impl Shared {
    pub fn new(catalog: Catalog, cache_entries: usize) -> Shared {
        Shared {
            catalog: RwLock::new(Arc::new(catalog)),
            generation: AtomicU64::new(0),
            stopping: AtomicBool::new(false),
            forwarder: Forwarder::new(cache_entries),
            stats: Stats::new(),
            runtime: tokio::runtime::Handle::current(),
        }
    }

    pub fn current(&self) -> Arc<Catalog> {
        match self.catalog.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Swaps in a new catalog; workers pick it up on their next packet.
    pub fn replace(&self, catalog: Catalog) -> Arc<Catalog> {
        let catalog = Arc::new(catalog);
        let old = match self.catalog.write() {
            Ok(mut guard) => std::mem::replace(&mut *guard, catalog),
            Err(poisoned) => std::mem::replace(&mut *poisoned.into_inner(), catalog),
        };
        self.generation.fetch_add(1, Ordering::Release);
        old
    }
}

/// Binds `workers` UDP sockets on `address` (the same port for all, even when `address` asks
/// for port 0). Returns them and the bound address.
pub fn bind_udp(address: SocketAddr, workers: usize) -> Result<(Vec<UdpSocket>, SocketAddr), Error> {
    let bind_error = |source| Error::Bind { address, source };
    let mut sockets = Vec::new();
    let mut bound = address;
    for _ in 0..workers.max(1) {
        let socket = Socket::new(Domain::for_address(address), Type::DGRAM, Some(Protocol::UDP)).map_err(bind_error)?;
        socket.set_reuse_port(true).map_err(bind_error)?;
        if address.is_ipv6() {
            socket.set_only_v6(true).map_err(bind_error)?;
        }
        // Best effort: a smaller buffer only means more drops under bursts.
        let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
        let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
        socket.bind(&bound.into()).map_err(bind_error)?;
        let socket: UdpSocket = socket.into();
        socket.set_read_timeout(Some(UDP_POLL)).map_err(bind_error)?;
        bound = socket.local_addr().map_err(bind_error)?;
        sockets.push(socket);
    }
    Ok((sockets, bound))
}

/// Binds the TCP listener (address reuse so a restart does not wait for TIME_WAIT).
pub fn bind_tcp(address: SocketAddr) -> Result<TcpListener, Error> {
    let bind_error = |source| Error::Bind { address, source };
    let socket = Socket::new(Domain::for_address(address), Type::STREAM, Some(Protocol::TCP)).map_err(bind_error)?;
    socket.set_reuse_address(true).map_err(bind_error)?;
    if address.is_ipv6() {
        socket.set_only_v6(true).map_err(bind_error)?;
    }
    socket.bind(&address.into()).map_err(bind_error)?;
    socket.listen(1024).map_err(bind_error)?;
    socket.set_nonblocking(true).map_err(bind_error)?;
    TcpListener::from_std(socket.into()).map_err(bind_error)
}

/// One UDP worker: receive, answer, send, until shutdown. Batched system calls on Linux.
pub fn udp_worker(socket: Arc<UdpSocket>, shared: Arc<Shared>) {
    let mut worker = UdpWorker::new(socket.clone(), shared.clone());
    #[cfg(target_os = "linux")]
    {
        use crate::batch::{BATCH, Batch};
        let mut batch = Batch::new();
        let mut answers: Vec<Vec<u8>> = (0..BATCH).map(|_| Vec::with_capacity(1536)).collect();
        let mut send = [false; BATCH];
        while !shared.stopping.load(Ordering::Relaxed) {
            let count = match batch.receive(&socket) {
                Ok(count) => count,
                Err(error) => {
                    trace_receive_error(&error);
                    continue;
                }
            };
            worker.refresh();
            for (index, (answer, send)) in answers.iter_mut().zip(send.iter_mut()).enumerate().take(count) {
                let (packet, peer) = batch.datagram(index);
                *send = peer.is_some_and(|peer| worker.answer(packet, peer, answer));
            }
            let outgoing: [Option<&[u8]>; BATCH] =
                std::array::from_fn(|index| (index < count && send[index]).then(|| answers[index].as_slice()));
            batch.send(&socket, &outgoing);
            worker.flush();
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let mut buffer = [0u8; 4096];
        let mut out = Vec::with_capacity(1536);
        while !shared.stopping.load(Ordering::Relaxed) {
            let (length, peer) = match socket.recv_from(&mut buffer) {
                Ok(received) => received,
                Err(error) => {
                    trace_receive_error(&error);
                    continue;
                }
            };
            worker.refresh();
            if worker.answer(&buffer[..length], peer, &mut out) {
                let _ = socket.send_to(&out, peer);
            }
            worker.flush();
        }
    }
}

fn trace_receive_error(error: &std::io::Error) {
    // Timeouts let the loop notice shutdown; ICMP errors from earlier sends surface here on
    // Linux and are not ours to fix.
    if !matches!(
        error.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut | std::io::ErrorKind::Interrupted
    ) {
        tracing::trace!(%error, "udp receive");
    }
}

/// A UDP worker's own state: its view of the catalog and its rate limiter.
struct UdpWorker {
    socket: Arc<UdpSocket>,
    shared: Arc<Shared>,
    generation: u64,
    catalog: Arc<Catalog>,
    limiter: RateLimiter,
    started: Instant,
    tally: Tally,
}

impl UdpWorker {
    fn new(socket: Arc<UdpSocket>, shared: Arc<Shared>) -> UdpWorker {
        let generation = shared.generation.load(Ordering::Acquire);
        let catalog = shared.current();
        UdpWorker {
            socket,
            shared,
            generation,
            catalog,
            limiter: RateLimiter::default(),
            started: Instant::now(),
            tally: Tally::default(),
        }
    }

    /// Hands the counts of the last batch to the metrics.
    fn flush(&mut self) {
        self.tally.flush(&self.shared.stats);
    }

    /// Picks up a reloaded catalog (one atomic load when nothing changed).
    fn refresh(&mut self) {
        let generation = self.shared.generation.load(Ordering::Acquire);
        if generation != self.generation {
            self.generation = generation;
            self.catalog = self.shared.current();
        }
    }

    /// Answers one datagram into `out`; true when `out` is to be sent now. Forwarded
    /// queries not in the cache are answered later by a task.
    fn answer(&mut self, packet: &[u8], peer: SocketAddr, out: &mut Vec<u8>) -> bool {
        let shared = &self.shared;
        let outcome = engine::handle(&self.catalog, packet, peer.ip(), Transport::Udp, out);
        self.tally.query(outcome.qtype);
        match outcome.action {
            Action::Reply => {
                let policy = &self.catalog.policy;
                let now = self.started.elapsed().as_secs();
                match self.limiter.check(peer.ip(), policy.rate_limit, &policy.rate_limit_exempt, now) {
                    Verdict::Send => {}
                    Verdict::Slip => wire::slip(out),
                    Verdict::Drop => {
                        shared.stats.rate_limited.increment(1);
                        return false;
                    }
                }
                self.tally.response(outcome.rcode, outcome.truncated);
                true
            }
            Action::Drop | Action::Transfer(_) => false,
            Action::Forward(request) => {
                shared.stats.forwarded.increment(1);
                if let Some(truncated) = shared.forwarder.answer_from_cache(&request, Instant::now(), out) {
                    shared.stats.response(wire::rcode_of(out), truncated);
                    return true;
                }
                if shared.forwarder.is_saturated() {
                    crate::forward::write_servfail(out, &request.packet);
                    shared.stats.response(wire::RCODE_SERVFAIL, false);
                    return true;
                }
                let socket = self.socket.clone();
                let task_shared = shared.clone();
                shared.runtime.spawn(async move {
                    let mut answer = Vec::new();
                    let truncated = task_shared.forwarder.resolve(&request, &mut answer).await;
                    task_shared.stats.response(wire::rcode_of(&answer), truncated);
                    if !answer.is_empty() {
                        let _ = socket.send_to(&answer, peer);
                    }
                });
                false
            }
        }
    }
}

/// Accepts TCP connections until shutdown, at most `max_connections` at a time.
pub async fn tcp_acceptor(
    listener: TcpListener,
    shared: Arc<Shared>,
    connections: Arc<Semaphore>,
    idle_timeout: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let permit = tokio::select! {
            permit = connections.clone().acquire_owned() => match permit { Ok(permit) => permit, Err(_) => return },
            _ = shutdown.changed() => return,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.changed() => return,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::debug!(%error, "tcp accept");
                continue;
            }
        };
        let shared = shared.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            tcp_connection(stream, peer, shared, idle_timeout, shutdown).await;
            drop(permit);
        });
    }
}

/// One TCP connection: length-prefixed queries, answered in order.
async fn tcp_connection(
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    idle: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let (reader, mut writer) = stream.into_split();
    let mut reader = BufReader::new(reader);
    let mut out = Vec::new();
    loop {
        let length = tokio::select! {
            length = tokio::time::timeout(idle, reader.read_u16()) => match length { Ok(Ok(length)) => length, _ => return },
            _ = shutdown.changed() => return,
        };
        let mut packet = vec![0u8; usize::from(length)];
        match tokio::time::timeout(idle, reader.read_exact(&mut packet)).await {
            Ok(Ok(_)) => {}
            _ => return,
        }
        let catalog = shared.current();
        let outcome = engine::handle(&catalog, &packet, peer.ip(), Transport::Tcp, &mut out);
        shared.stats.query(outcome.qtype);
        let messages = match outcome.action {
            Action::Reply => {
                shared.stats.response(outcome.rcode, outcome.truncated);
                vec![std::mem::take(&mut out)]
            }
            Action::Drop => return,
            Action::Forward(request) => {
                shared.stats.forwarded.increment(1);
                let truncated = match shared.forwarder.answer_from_cache(&request, Instant::now(), &mut out) {
                    Some(truncated) => truncated,
                    None => shared.forwarder.resolve(&request, &mut out).await,
                };
                shared.stats.response(wire::rcode_of(&out), truncated);
                vec![std::mem::take(&mut out)]
            }
            Action::Transfer(zone) => {
                shared.stats.transfers.increment(1);
                tracing::info!(zone = %zone.apex, serial = zone.serial(), secondary = %peer, "zone transfer");
                transfer::axfr_messages(&packet, &zone)
            }
        };
        for message in messages {
            let Ok(length) = u16::try_from(message.len()) else { return };
            let mut framed = Vec::with_capacity(message.len() + 2);
            framed.extend_from_slice(&length.to_be_bytes());
            framed.extend_from_slice(&message);
            match tokio::time::timeout(idle, writer.write_all(&framed)).await {
                Ok(Ok(())) => {}
                _ => return,
            }
        }
    }
}
