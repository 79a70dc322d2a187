//! lienthong's internal DNS: authoritative for the province's zones (from zone files, inline
//! records and records derived from the rest of the config), and a safe forwarder for
//! everyone in `recursion_from`.
//!
//! Shape: [`engine::handle`] is the sans-IO core (packet in, answer out) over an immutable
//! [`catalog::Catalog`]; the hot path answers from precomputed wire bytes ([`index`]). The
//! drivers in `server` do the socket work; a reload builds a new catalog and swaps it in.

#[cfg(target_os = "linux")]
mod batch;
pub mod catalog;
pub mod compile;
pub mod compress;
pub mod derived;
pub mod dnssec;
pub mod engine;
mod exposure;
pub mod forward;
pub mod history;
pub mod index;
pub mod limits;
pub mod resolve;
pub mod serial;
mod server;
mod stats;
pub mod transfer;
mod truncate;
pub mod wire;
pub mod zone;
pub mod zonefile;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lienthong_config::Config;
use tokio::sync::{Semaphore, watch};

use catalog::Catalog;
use serial::Serials;
use server::Shared;

/// How long shutdown waits for TCP connections in progress.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Errors of the DNS service.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A listen socket could not be bound; names the address.
    #[error("cannot listen on {address}: {source}")]
    Bind { address: SocketAddr, source: std::io::Error },
    /// Zone files or inline records have problems; one `FILE:LINE:COL: key.path: message` each.
    #[error("{}", .0.join("\n"))]
    Zones(Vec<String>),
    /// A DNSSEC key command could not be carried out; says why.
    #[error("{0}")]
    Dnssec(String),
}

/// The running DNS service.
pub struct DnsService {
    shared: Option<Arc<Shared>>,
    rebuild: Arc<Rebuild>,
    addresses: Vec<SocketAddr>,
    udp_threads: Vec<std::thread::JoinHandle<()>>,
    tcp_tasks: Vec<tokio::task::JoinHandle<()>>,
    connections: Arc<Semaphore>,
    max_connections: usize,
    shutdown: watch::Sender<bool>,
}

impl DnsService {
    /// Loads every zone, binds every listener (UDP and TCP on each `dns.listen` address) and
    /// starts answering. `published` are records other services publish (absolute zone-file
    /// lines); they are served when they fall in a local zone.
    pub async fn start(config: Arc<Config>, published: Vec<String>) -> Result<Self, Error> {
        let (shutdown, _) = watch::channel(false);
        let max_connections = config.dns.tcp_max_connections;
        let connections = Arc::new(Semaphore::new(max_connections));
        let mut service = DnsService {
            shared: None,
            rebuild: Arc::new(Rebuild {
                serials: Mutex::new(Serials::load(&config.server.state_dir)),
                latest: Mutex::new((config.clone(), published.clone())),
                swapping: tokio::sync::Mutex::new(()),
            }),
            addresses: Vec::new(),
            udp_threads: Vec::new(),
            tcp_tasks: Vec::new(),
            connections: connections.clone(),
            max_connections,
            shutdown,
        };
        if !config.dns.enabled {
            return Ok(service);
        }
        let catalog = service.rebuild.build(config.clone(), published, None).await?;
        for warning in catalog::warnings(&config) {
            tracing::warn!("{warning}");
        }
        let shared = Arc::new(Shared::new(catalog, config.dns.cache_entries));
        // One table for every listener: a client's cap holds across addresses.
        let clients = Arc::new(limits::ClientSlots::default());
        let workers = std::thread::available_parallelism().map_or(1, usize::from).min(16);
        for address in &config.dns.listen {
            let (sockets, listener, bound) = server::bind_pair(*address, workers)?;
            service.addresses.push(bound);
            for (number, socket) in sockets.into_iter().enumerate() {
                let worker_shared = shared.clone();
                let steering = if number == 0 && workers > 1 { steer(&socket) } else { None };
                let socket = Arc::new(socket);
                let thread = std::thread::Builder::new()
                    .name(format!("dns-udp-{number}"))
                    .spawn(move || server::udp_worker(socket, worker_shared, steering))
                    .map_err(|source| Error::Bind { address: bound, source })?;
                service.udp_threads.push(thread);
            }
            let limits =
                server::TcpLimits { per_client: config.dns.tcp_max_per_client, idle: config.dns.tcp_idle_timeout };
            let acceptor = server::tcp_acceptor(
                listener,
                shared.clone(),
                connections.clone(),
                clients.clone(),
                limits,
                service.shutdown.subscribe(),
            );
            service.tcp_tasks.push(tokio::spawn(acceptor));
            tracing::info!(address = %bound, "DNS listening (UDP and TCP)");
        }
        let current = shared.current();
        for copy in &current.zones {
            let zone = &copy.zone;
            tracing::info!(zone = %zone.apex, serial = zone.serial(), records = zone.record_count(), "DNS zone loaded");
            if !zone.secondaries.is_empty() {
                let zone = zone.clone();
                tokio::spawn(async move { transfer::notify(&zone, &zone.secondaries).await });
            }
        }
        let refresh = refresh_signatures(shared.clone(), service.rebuild.clone(), service.shutdown.subscribe());
        service.tcp_tasks.push(tokio::spawn(refresh));
        service.shared = Some(shared);
        Ok(service)
    }

    /// Applies a new, already validated config: zones are rebuilt and swapped in atomically;
    /// a zone whose content changed gets a higher serial and its secondaries a NOTIFY. On
    /// error the old zones stay in force. Listen addresses and TCP limits need a restart.
    pub async fn reload(&self, config: Arc<Config>, published: Vec<String>) -> Result<(), Error> {
        let Some(shared) = &self.shared else { return Ok(()) };
        {
            let _swapping = self.rebuild.swapping.lock().await;
            let catalog = self.rebuild.build(config.clone(), published.clone(), Some(shared.current())).await?;
            swap_and_notify(shared, catalog);
            if let Ok(mut latest) = self.rebuild.latest.lock() {
                *latest = (config.clone(), published);
            }
        }
        if config.dns.listen.len() != self.addresses.len() {
            tracing::warn!("a change of dns.listen takes effect at the next restart");
        }
        Ok(())
    }

    /// True while every listener is serving.
    pub fn is_serving(&self) -> bool {
        match &self.shared {
            None => true,
            Some(shared) => {
                !shared.stopping.load(Ordering::Relaxed)
                    && self.udp_threads.iter().all(|thread| !thread.is_finished())
                    && self.tcp_tasks.iter().all(|task| !task.is_finished())
            }
        }
    }

    /// The addresses bound (UDP and TCP each), with the real port when the config said 0.
    pub fn local_addresses(&self) -> &[SocketAddr] {
        &self.addresses
    }

    /// Stops accepting and finishes in-flight work (TCP connections get up to 5 s).
    pub async fn shutdown(self) {
        let Some(shared) = self.shared else { return };
        shared.stopping.store(true, Ordering::Relaxed);
        let _ = self.shutdown.send(true);
        for task in self.tcp_tasks {
            let _ = task.await;
        }
        let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
        while self.connections.available_permits() < self.max_connections && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let threads = self.udp_threads;
        let _ = tokio::task::spawn_blocking(move || {
            for thread in threads {
                let _ = thread.join();
            }
        })
        .await;
    }
}

/// What rebuilding the catalog needs besides the catalog itself: the serial memory, the
/// config in force (for the DNSSEC refresh timer), and a lock so that a reload and a
/// re-signing never build from the same catalog at once (each change is its own serial, and
/// its own IXFR difference).
struct Rebuild {
    serials: Mutex<Serials>,
    latest: Mutex<(Arc<Config>, Vec<String>)>,
    swapping: tokio::sync::Mutex<()>,
}

impl Rebuild {
    /// Builds a catalog off the async threads (zone loading and signing are CPU work),
    /// keeping the serial memory; `previous` gives each changed copy its IXFR history.
    async fn build(
        &self,
        config: Arc<Config>,
        published: Vec<String>,
        previous: Option<Arc<Catalog>>,
    ) -> Result<Catalog, Error> {
        let mut serials = match self.serials.lock() {
            Ok(serials) => serials.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        let built = tokio::task::spawn_blocking(move || {
            let catalog = Catalog::build_after(&config, &published, &mut serials, unix_now(), previous.as_deref());
            (catalog, serials)
        })
        .await;
        let (catalog, serials) = match built {
            Ok(built) => built,
            Err(error) => return Err(Error::Zones(vec![format!("<dns>:1:1: dns: zone loading failed: {error}")])),
        };
        let catalog = catalog.map_err(Error::Zones)?;
        if let Err(error) = serials.save() {
            tracing::warn!(%error, "cannot save DNS serials; a restart may reuse a serial");
        }
        if let Ok(mut stored) = self.serials.lock() {
            *stored = serials;
        }
        Ok(catalog)
    }
}

/// Swaps `catalog` in; every zone copy whose serial changed is logged and its secondaries
/// notified.
fn swap_and_notify(shared: &Shared, catalog: Catalog) {
    let old = shared.replace(catalog);
    let new = shared.current();
    let old_serials: HashMap<String, u32> = old.zones.iter().map(|copy| (copy.key(), copy.zone.serial())).collect();
    for copy in &new.zones {
        let zone = &copy.zone;
        let previous = old_serials.get(&copy.key());
        if previous == Some(&zone.serial()) {
            continue;
        }
        tracing::info!(zone = %zone.apex, serial = zone.serial(), "DNS zone changed");
        if !zone.secondaries.is_empty() {
            let zone = zone.clone();
            tokio::spawn(async move { transfer::notify(&zone, &zone.secondaries).await });
        }
    }
}

/// Re-signs the signed zones when their signatures are due for refresh or a key event comes
/// (ZSK pre-publication, switch, removal): the catalog is rebuilt from the config in force,
/// as a reload would, so the serial rises, the change joins each copy's IXFR history and
/// secondaries are notified. Wakes at least hourly, so zones signed by a later reload are
/// covered too.
async fn refresh_signatures(shared: Arc<Shared>, rebuild: Arc<Rebuild>, mut shutdown: watch::Receiver<bool>) {
    const MAX_SLEEP: u64 = 3600;
    loop {
        let now = unix_now();
        let due = shared
            .current()
            .zones
            .iter()
            .filter_map(|copy| copy.zone.dnssec.as_ref().map(|signed| signed.refresh_at))
            .min();
        let wait = due.map_or(MAX_SLEEP, |due| due.saturating_sub(now).min(MAX_SLEEP));
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(wait)) => {}
            _ = shutdown.changed() => return,
        }
        if due.is_none_or(|due| unix_now() < due) {
            continue;
        }
        let swapping = rebuild.swapping.lock().await;
        let (config, published) = match rebuild.latest.lock() {
            Ok(latest) => latest.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        match rebuild.build(config, published, Some(shared.current())).await {
            Ok(catalog) => {
                tracing::info!("DNSSEC signatures refreshed");
                swap_and_notify(&shared, catalog);
                drop(swapping);
            }
            Err(error) => {
                drop(swapping);
                tracing::error!(%error, "cannot refresh DNSSEC signatures; retrying in a minute");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(60)) => {}
                    _ = shutdown.changed() => return,
                }
            }
        }
    }
}

/// Checks what only the DNS service can check (zone files, inline record syntax).
/// Each problem is one line, `FILE:LINE:COL: key.path: message`.
pub fn check(config: &Config) -> Vec<String> {
    catalog::check(config)
}

/// What `lienthong check` warns about without refusing the config: private addresses that
/// clients outside private networks would be given. One line each,
/// `FILE:LINE:COL: key.path: warning: message`.
pub fn warnings(config: &Config) -> Vec<String> {
    catalog::warnings(config)
}

/// Every record the server will serve, in zone-file syntax (`lienthong dns records`), zone by
/// zone, with the serial the server would use now.
pub fn render_records(config: &Config, published: &[String]) -> Result<String, Error> {
    let mut serials = Serials::load(&config.server.state_dir);
    let catalog = Catalog::build(config, published, &mut serials, unix_now()).map_err(Error::Zones)?;
    let mut text = String::new();
    for copy in &catalog.zones {
        let zone = &copy.zone;
        text.push_str(&format!("; zone {} (seen by {})\n", zone.apex, copy.audience));
        for record in zone.all_records() {
            text.push_str(&zone_file_line(&record));
            text.push('\n');
        }
        text.push('\n');
    }
    Ok(text)
}

/// `lienthong dns ds ZONE`: the DS records (SHA-256) of a signed zone's KSKs.
pub fn ds_records(config: &Config, zone: &str) -> Result<Vec<String>, Error> {
    dnssec::ds_for(config, zone, unix_now()).map_err(Error::Dnssec)
}

/// `lienthong dns roll-ksk ZONE [--finish]`: starts or finishes a KSK rollover in the key
/// file; the running server applies it at its next reload.
pub fn roll_ksk(config: &Config, zone: &str, finish: bool) -> Result<String, Error> {
    if !config
        .dns
        .zones
        .iter()
        .any(|candidate| candidate.dnssec && catalog::absolute(candidate.name.as_str()) == catalog::absolute(zone))
    {
        return Err(Error::Dnssec(format!("zone `{zone}` is not signed (set dnssec = true in its [[dns.zone]])")));
    }
    let step = if finish { dnssec::KskStep::Finish } else { dnssec::KskStep::Start };
    dnssec::roll_ksk(&config.server.state_dir, zone, step, unix_now()).map_err(Error::Dnssec)
}

/// One record in zone-file syntax (hickory's display leaves TXT strings unquoted).
fn zone_file_line(record: &hickory_proto::rr::Record) -> String {
    let hickory_proto::rr::RData::TXT(txt) = &record.data else { return record.to_string() };
    let strings: Vec<String> = txt
        .txt_data
        .iter()
        .map(|bytes| {
            let mut quoted = String::from("\"");
            for byte in bytes.iter() {
                match byte {
                    b'"' | b'\\' => {
                        quoted.push('\\');
                        quoted.push(char::from(*byte));
                    }
                    0x20..=0x7E => quoted.push(char::from(*byte)),
                    _ => quoted.push_str(&format!("\\{byte:03}")),
                }
            }
            quoted.push('"');
            quoted
        })
        .collect();
    format!("{} {} {} TXT {}", record.name, record.ttl, record.dns_class, strings.join(" "))
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_secs())
}

/// The first worker's [`server::Steering`] of a listen address's socket group.
#[cfg(target_os = "linux")]
fn steer(socket: &std::net::UdpSocket) -> Option<server::Steering> {
    server::Steering::start(socket)
}

#[cfg(not(target_os = "linux"))]
fn steer(_socket: &std::net::UdpSocket) -> Option<server::Steering> {
    None
}
