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
pub mod derived;
pub mod engine;
pub mod forward;
pub mod index;
pub mod limits;
pub mod serial;
mod server;
mod stats;
pub mod transfer;
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
}

/// The running DNS service.
pub struct DnsService {
    shared: Option<Arc<Shared>>,
    serials: Mutex<Serials>,
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
            serials: Mutex::new(Serials::load(&config.server.state_dir)),
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
        let catalog = service.build(config.clone(), published).await?;
        let shared = Arc::new(Shared::new(catalog, config.dns.cache_entries));
        let workers = std::thread::available_parallelism().map_or(1, usize::from).min(16);
        for address in &config.dns.listen {
            let (sockets, bound) = server::bind_udp(*address, workers)?;
            let listener = server::bind_tcp(bound)?;
            service.addresses.push(bound);
            for (number, socket) in sockets.into_iter().enumerate() {
                let worker_shared = shared.clone();
                let socket = Arc::new(socket);
                let thread = std::thread::Builder::new()
                    .name(format!("dns-udp-{number}"))
                    .spawn(move || server::udp_worker(socket, worker_shared))
                    .map_err(|source| Error::Bind { address: bound, source })?;
                service.udp_threads.push(thread);
            }
            let acceptor = server::tcp_acceptor(
                listener,
                shared.clone(),
                connections.clone(),
                config.dns.tcp_idle_timeout,
                service.shutdown.subscribe(),
            );
            service.tcp_tasks.push(tokio::spawn(acceptor));
            tracing::info!(address = %bound, "DNS listening (UDP and TCP)");
        }
        let current = shared.current();
        for (zone, _) in &current.zones {
            tracing::info!(zone = %zone.apex, serial = zone.serial(), records = zone.record_count(), "DNS zone loaded");
            if !zone.secondaries.is_empty() {
                let zone = zone.clone();
                tokio::spawn(async move { transfer::notify(&zone, &zone.secondaries).await });
            }
        }
        service.shared = Some(shared);
        Ok(service)
    }

    /// Applies a new, already validated config: zones are rebuilt and swapped in atomically;
    /// a zone whose content changed gets a higher serial and its secondaries a NOTIFY. On
    /// error the old zones stay in force. Listen addresses and TCP limits need a restart.
    pub async fn reload(&self, config: Arc<Config>, published: Vec<String>) -> Result<(), Error> {
        let Some(shared) = &self.shared else { return Ok(()) };
        let catalog = self.build(config.clone(), published).await?;
        let old = shared.replace(catalog);
        let new = shared.current();
        let old_serials: HashMap<(String, Vec<String>), u32> =
            old.zones.iter().map(|(zone, views)| ((zone.apex.to_string(), views.clone()), zone.serial())).collect();
        for (zone, views) in &new.zones {
            let previous = old_serials.get(&(zone.apex.to_string(), views.clone()));
            if previous == Some(&zone.serial()) {
                continue;
            }
            tracing::info!(zone = %zone.apex, serial = zone.serial(), "DNS zone changed");
            if !zone.secondaries.is_empty() {
                let zone = zone.clone();
                tokio::spawn(async move { transfer::notify(&zone, &zone.secondaries).await });
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

    async fn build(&self, config: Arc<Config>, published: Vec<String>) -> Result<Catalog, Error> {
        let mut serials = match self.serials.lock() {
            Ok(serials) => serials.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        let built = tokio::task::spawn_blocking(move || {
            let catalog = Catalog::build(&config, &published, &mut serials, unix_now());
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

/// Checks what only the DNS service can check (zone files, inline record syntax).
/// Each problem is one line, `FILE:LINE:COL: key.path: message`.
pub fn check(config: &Config) -> Vec<String> {
    catalog::check(config)
}

/// Every record the server will serve, in zone-file syntax (`lienthong dns records`), zone by
/// zone, with the serial the server would use now.
pub fn render_records(config: &Config, published: &[String]) -> Result<String, Error> {
    let mut serials = Serials::load(&config.server.state_dir);
    let catalog = Catalog::build(config, published, &mut serials, unix_now()).map_err(Error::Zones)?;
    let mut text = String::new();
    for (zone, views) in &catalog.zones {
        let seen_by = if views.is_empty() { "every client".to_owned() } else { format!("views {}", views.join(", ")) };
        text.push_str(&format!("; zone {} (seen by {seen_by})\n", zone.apex));
        for record in zone.all_records() {
            text.push_str(&zone_file_line(&record));
            text.push('\n');
        }
        text.push('\n');
    }
    Ok(text)
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
