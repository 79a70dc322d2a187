//! The drivers: UDP workers (one socket per core with SO_REUSEPORT, each on its own thread,
//! blocking I/O, the group steered to the first worker until it is overloaded: [`Steering`];
//! the only shared state they write on the hot path is the rate limiter's atomic counters)
//! and TCP (tokio; connection caps in total and per client, deadlines, pipelined queries
//! answered in order).

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};

use crate::Error;
use crate::catalog::{Catalog, Policy};
use crate::engine::{self, Action, Transport};
use crate::forward::Forwarder;
use crate::limits::{ClientSlots, RateLimiter, Verdict};
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
    /// One limiter for every UDP answer, whichever worker or path sends it.
    pub limiter: RateLimiter,
    /// The limiter's clock origin.
    started: Instant,
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
            limiter: RateLimiter::default(),
            started: Instant::now(),
            runtime: tokio::runtime::Handle::current(),
        }
    }

    /// Seconds since start: the rate limiter's window number.
    pub fn seconds(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    /// Applies response rate limiting to the UDP answer in `out` for `peer`: true when it is
    /// to be sent (possibly slipped to an empty TC=1 answer), false when it is dropped.
    pub fn admit(&self, policy: &Policy, peer: std::net::IpAddr, now_seconds: u64, out: &mut Vec<u8>) -> bool {
        match self.limiter.check(peer, policy.rate_limit, &policy.rate_limit_exempt, now_seconds) {
            Verdict::Send => true,
            Verdict::Slip => {
                wire::slip(out);
                true
            }
            Verdict::Drop => {
                self.stats.rate_limited.increment(1);
                false
            }
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

/// Binds the UDP sockets and the TCP listener of one listen address on one port. When the
/// address asks for port 0, the port the UDP sockets got may already be taken for TCP by
/// someone else: then it tries another port (a fixed port is never changed).
pub fn bind_pair(address: SocketAddr, workers: usize) -> Result<(Vec<UdpSocket>, TcpListener, SocketAddr), Error> {
    const ATTEMPTS: usize = 16;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let (sockets, bound) = bind_udp(address, workers)?;
        match bind_tcp(bound) {
            Ok(listener) => return Ok((sockets, listener, bound)),
            Err(Error::Bind { source, .. })
                if address.port() == 0 && source.kind() == std::io::ErrorKind::AddrInUse && attempt < ATTEMPTS => {}
            Err(error) => return Err(error),
        }
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

/// Where the datagrams of one listen address go, decided by its first worker from the size
/// of the batches it reads (Linux; elsewhere the kernel spreads them).
///
/// One worker answering everything costs less CPU per answer than several: its batches are
/// larger (fewer system calls and wake-ups per answer), and it leaves the other cores to the
/// mail relay, the conference hub and the clients (on the 2-core benchmark machine, two
/// workers made 4 datagrams per `recvmmsg` and 6 times the context switches of one, for the
/// same qps). So the socket group starts steered to the first socket; when that worker no
/// longer keeps up (its batches are nearly all full: the socket queue is growing), the kernel
/// spreads the flows over every worker again, and once the load has fallen (batches small
/// again, after a hold time so it does not flap) everything goes back to the first worker.
#[derive(Debug)]
pub struct Steering {
    /// Batches read since the window started, those of them that were full, and datagrams.
    batches: u32,
    full: u32,
    datagrams: u32,
    /// Consecutive windows in which nearly every batch was full.
    saturated: u32,
    spread: bool,
    since: Instant,
}

/// Batches per decision window.
const STEERING_WINDOW: u32 = 1024;
/// Full batches (in a window) from which the window counts as saturated: the socket queue
/// stayed longer than a batch for the whole window, not only after a burst.
const SATURATED_FULL: u32 = STEERING_WINDOW * 15 / 16;
/// Consecutive saturated windows (over 100,000 datagrams) after which one worker is taken as
/// overloaded: a quarter-second when other processes take its core is not.
const SPREAD_AFTER: u32 = 4;
/// Average per batch (of the first worker, spread) below which one worker would do again.
const CONCENTRATE_BELOW: u32 = 8;
/// Shortest time in one mode before switching back.
const STEERING_HOLD: Duration = Duration::from_secs(2);

impl Steering {
    /// Steers `socket`'s group to its first socket (`socket` must be that first socket).
    /// `None` when the kernel refuses (then it spreads, as before).
    #[cfg(target_os = "linux")]
    pub fn start(socket: &UdpSocket) -> Option<Steering> {
        match crate::batch::steer_to_first(socket, true) {
            Ok(()) => {
                Some(Steering { batches: 0, full: 0, datagrams: 0, saturated: 0, spread: false, since: Instant::now() })
            }
            Err(error) => {
                tracing::debug!(%error, "cannot steer the UDP socket group; the kernel spreads queries");
                None
            }
        }
    }

    /// Counts one batch of `count` datagrams read by the first worker and switches mode at the
    /// end of a window when the load says so.
    #[cfg(target_os = "linux")]
    fn batch(&mut self, socket: &UdpSocket, count: usize) {
        self.batches += 1;
        self.datagrams += count as u32;
        self.full += u32::from(count == crate::batch::BATCH);
        if self.batches < STEERING_WINDOW {
            return;
        }
        let average = self.datagrams / self.batches;
        let full = self.full;
        self.batches = 0;
        self.full = 0;
        self.datagrams = 0;
        self.saturated = if full >= SATURATED_FULL { self.saturated + 1 } else { 0 };
        let switch = if self.spread { average < CONCENTRATE_BELOW } else { self.saturated >= SPREAD_AFTER };
        if !switch || self.since.elapsed() < STEERING_HOLD {
            return;
        }
        match crate::batch::steer_to_first(socket, self.spread) {
            Ok(()) => {
                self.spread = !self.spread;
                self.saturated = 0;
                self.since = Instant::now();
                tracing::debug!(spread = self.spread, average, full, "UDP socket group steering");
            }
            Err(error) => tracing::debug!(%error, "UDP socket group steering"),
        }
    }
}

/// One UDP worker: receive, answer, send, until shutdown. Batched system calls on Linux.
/// The first worker of an address gets its [`Steering`].
pub fn udp_worker(socket: Arc<UdpSocket>, shared: Arc<Shared>, mut steering: Option<Steering>) {
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
            if let Some(steering) = &mut steering {
                steering.batch(&socket, count);
            }
            worker.refresh();
            if count > 1 {
                for stage in [1, 2] {
                    for index in 0..count {
                        if let (packet, Some(peer)) = batch.datagram(index) {
                            engine::prefetch(&worker.catalog, packet, peer.ip(), stage);
                        }
                    }
                }
            }
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
        let _ = &mut steering;
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

/// A UDP worker's own state: its view of the catalog, the second its batch arrived in, and
/// its metric tallies.
struct UdpWorker {
    socket: Arc<UdpSocket>,
    shared: Arc<Shared>,
    generation: u64,
    catalog: Arc<Catalog>,
    now_seconds: u64,
    tally: Tally,
}

impl UdpWorker {
    fn new(socket: Arc<UdpSocket>, shared: Arc<Shared>) -> UdpWorker {
        let generation = shared.generation.load(Ordering::Acquire);
        let catalog = shared.current();
        UdpWorker { socket, shared, generation, catalog, now_seconds: 0, tally: Tally::default() }
    }

    /// Hands the counts of the last batch to the metrics.
    fn flush(&mut self) {
        self.tally.flush(&self.shared.stats);
    }

    /// Picks up a reloaded catalog (one atomic load when nothing changed) and the time.
    fn refresh(&mut self) {
        self.now_seconds = self.shared.seconds();
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
                if !shared.admit(&self.catalog.policy, peer.ip(), self.now_seconds, out) {
                    return false;
                }
                self.tally.response(outcome.rcode, outcome.truncated);
                true
            }
            Action::Drop | Action::Transfer(..) => false,
            Action::Forward(request) => {
                shared.stats.forwarded.increment(1);
                if let Some(truncated) = shared.forwarder.answer_from_cache(&request, Instant::now(), out) {
                    if !shared.admit(&self.catalog.policy, peer.ip(), self.now_seconds, out) {
                        return false;
                    }
                    shared.stats.response(wire::rcode_of(out), truncated);
                    return true;
                }
                if shared.forwarder.is_saturated() {
                    crate::forward::write_servfail(out, &request.packet);
                    if !shared.admit(&self.catalog.policy, peer.ip(), self.now_seconds, out) {
                        return false;
                    }
                    shared.stats.response(wire::RCODE_SERVFAIL, false);
                    return true;
                }
                let socket = self.socket.clone();
                let task_shared = shared.clone();
                shared.runtime.spawn(async move {
                    let mut answer = Vec::new();
                    let truncated = task_shared.forwarder.resolve(&request, &mut answer).await;
                    if answer.is_empty() {
                        return;
                    }
                    let policy = &task_shared.current().policy;
                    if !task_shared.admit(policy, peer.ip(), task_shared.seconds(), &mut answer) {
                        return;
                    }
                    task_shared.stats.response(wire::rcode_of(&answer), truncated);
                    let _ = socket.send_to(&answer, peer);
                });
                false
            }
        }
    }
}

/// The TCP listener's limits.
#[derive(Debug, Clone, Copy)]
pub struct TcpLimits {
    /// Open connections per client at most (see [`ClientSlots`]).
    pub per_client: usize,
    /// Longest silence between queries, and longest time one query may take to arrive or one
    /// answer to be written.
    pub idle: Duration,
}

/// Accepts TCP connections until shutdown, at most `connections` at a time and
/// `limits.per_client` per client (a client over it has the new connection closed at once).
pub async fn tcp_acceptor(
    listener: TcpListener,
    shared: Arc<Shared>,
    connections: Arc<Semaphore>,
    clients: Arc<ClientSlots>,
    limits: TcpLimits,
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
        let Some(slot) = clients.take(peer.ip(), limits.per_client) else {
            shared.stats.tcp_refused.increment(1);
            tracing::debug!(client = %peer, "DNS TCP connection over the per-client cap closed");
            drop(stream);
            continue;
        };
        let shared = shared.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            tcp_connection(stream, peer, shared, limits.idle, shutdown).await;
            drop(slot);
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
        // The query's body must follow within the same deadline: a client trickling bytes
        // does not keep its slot.
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
            Action::Transfer(zone, client_serial) => {
                shared.stats.transfers.increment(1);
                let kind = if client_serial.is_some() { "IXFR" } else { "AXFR" };
                tracing::info!(zone = %zone.apex, serial = zone.serial(), secondary = %peer, kind, "zone transfer");
                transfer::messages(&packet, &zone, client_serial)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog(directory: &std::path::Path) -> Catalog {
        let text = format!(
            "[server]\nhostname = \"hub.ninhthuan.gov.vn\"\naddresses = [\"10.20.0.5\"]\nstate_dir = \"{}\"\n\n[dns]\nrate_limit = 5\nrate_limit_exempt = []\n\n[[dns.zone]]\nname = \"ninhthuan.gov.vn\"\n\n[mail]\nenabled = false\n\n[conference]\nenabled = false\n",
            directory.join("state").display()
        );
        let config = lienthong_config::parse(&text, "t.toml", directory).unwrap();
        Catalog::build(&config, &[], &mut crate::serial::Serials::in_memory(), 1_700_000_000).unwrap()
    }

    fn query() -> Vec<u8> {
        let mut packet = vec![0x12, 0x34, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in ["hub", "ninhthuan", "gov", "vn"] {
            packet.push(label.len() as u8);
            packet.extend_from_slice(label.as_bytes());
        }
        packet.extend_from_slice(&[0, 0, 1, 0, 1]);
        packet
    }

    /// Datagrams from 32 client sockets: which of the group's sockets received them.
    #[cfg(target_os = "linux")]
    fn deliveries(sockets: &[UdpSocket], bound: SocketAddr) -> Vec<usize> {
        let clients: Vec<UdpSocket> = (0..32).map(|_| UdpSocket::bind("127.0.0.1:0").unwrap()).collect();
        for client in &clients {
            client.send_to(b"x", bound).unwrap();
        }
        std::thread::sleep(Duration::from_millis(50));
        let mut counts = vec![0; sockets.len()];
        for (number, socket) in sockets.iter().enumerate() {
            socket.set_nonblocking(true).unwrap();
            let mut buffer = [0u8; 16];
            while socket.recv_from(&mut buffer).is_ok() {
                counts[number] += 1;
            }
        }
        counts
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn steering_sends_everything_to_the_first_worker_until_it_is_overloaded() {
        let (sockets, bound) = bind_udp("127.0.0.1:0".parse().unwrap(), 2).unwrap();
        let mut steering = Steering::start(&sockets[0]).expect("the kernel takes a reuseport program");
        assert_eq!(deliveries(&sockets, bound), vec![32, 0]);
        // Full batches for less than the required windows, or within the hold time: no change.
        for _ in 0..STEERING_WINDOW * (SPREAD_AFTER - 1) {
            steering.batch(&sockets[0], crate::batch::BATCH);
        }
        steering.since -= STEERING_HOLD;
        assert!(!steering.spread);
        // One window that is not saturated starts the count again.
        for _ in 0..STEERING_WINDOW {
            steering.batch(&sockets[0], 3);
        }
        for _ in 0..STEERING_WINDOW * (SPREAD_AFTER - 1) {
            steering.batch(&sockets[0], crate::batch::BATCH);
        }
        assert!(!steering.spread);
        for _ in 0..STEERING_WINDOW {
            steering.batch(&sockets[0], crate::batch::BATCH);
        }
        assert!(steering.spread, "sustained full batches spread the load");
        let spread = deliveries(&sockets, bound);
        assert_eq!(spread.iter().sum::<usize>(), 32);
        assert!(spread[1] > 0, "the kernel spreads 32 flows over both sockets: {spread:?}");
        // Small batches again: back to the first worker after the hold time only.
        for _ in 0..STEERING_WINDOW {
            steering.batch(&sockets[0], 2);
        }
        assert!(steering.spread, "held");
        steering.since -= STEERING_HOLD;
        for _ in 0..STEERING_WINDOW {
            steering.batch(&sockets[0], 2);
        }
        assert!(!steering.spread);
        assert_eq!(deliveries(&sockets, bound), vec![32, 0]);
    }

    #[tokio::test]
    async fn every_worker_counts_against_one_limit() {
        let directory = tempfile::tempdir().unwrap();
        let shared = Arc::new(Shared::new(catalog(directory.path()), 10));
        let socket = Arc::new(UdpSocket::bind("127.0.0.1:0").unwrap());
        let mut workers: Vec<UdpWorker> = (0..4).map(|_| UdpWorker::new(socket.clone(), shared.clone())).collect();
        let peer: SocketAddr = "203.0.113.7:5353".parse().unwrap();
        let mut full = 0;
        let mut out = Vec::new();
        for _ in 0..5 {
            for worker in &mut workers {
                worker.refresh();
                if worker.answer(&query(), peer, &mut out) && out[2] & 0x02 == 0 {
                    full += 1;
                }
            }
        }
        // 20 queries over four workers within one second: the limit is 5 in total. (The
        // window may roll over once on a slow machine: at most twice the limit.)
        assert!((5..=10).contains(&full), "{full} full answers: each worker had its own budget");
    }
}
