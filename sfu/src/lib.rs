//! lienthong's conferences: a str0m SFU, the rooms, the signaling WebSocket and the embedded
//! web page.
//!
//! Shape: [`room`] is the sans-IO room state machine (joins, roles, the chair's powers, the
//! active speaker); `peer.rs` wraps one participant's str0m session; `conference/` is the
//! sans-IO core that owns both and forwards media between sessions; the hub (`hub.rs`) is
//! the thin driver task that owns the media port and the signaling queues and runs the core;
//! `web.rs` serves the page and relays signaling to the hub.

#![deny(unsafe_code)]

mod batch;
mod capped;
mod conference;
mod forward;
mod guard;
mod hub;
mod ice;
mod layers;
mod limits;
mod listener;
mod load;
mod metrics;
mod net;
mod origin;
mod peer;
mod ports;
pub mod protocol;
mod relay;
pub mod room;
pub mod status;
mod web;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use lienthong_config::Config;
use rustls::server::ResolvesServerCert;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::conference::Command;
use crate::hub::{Hub, HubCommand};
pub use crate::ports::{PortReport, port_report};

/// How long shutdown waits for the page server and the hub before cutting them off.
const SHUTDOWN_BOUND: Duration = Duration::from_secs(5);

/// Errors of the conference service.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A listen socket could not be bound; names the address.
    #[error("cannot listen on {address}: {source}")]
    Bind { address: SocketAddr, source: std::io::Error },
    /// The TLS settings for the page could not be built.
    #[error("conference TLS: {0}")]
    Tls(#[from] rustls::Error),
    /// The DTLS certificate for media encryption could not be generated.
    #[error("cannot generate the DTLS certificate for media")]
    DtlsCertificate,
    /// The service has stopped.
    #[error("the conference service is not running")]
    Stopped,
}

/// Starts the embedded TURN server: it relays only to `media` (the SFU's own addresses),
/// with secrets generated here, in memory (a restart ends every session anyway).
async fn start_turn(config: &Config, media: &[SocketAddr], stop: watch::Receiver<bool>) -> Result<relay::Turn, Error> {
    use rand::Rng;
    let secret = lienthong_turn::Secret::new(rand::rng().random());
    let nonce_secret = lienthong_turn::Secret::new(rand::rng().random());
    let server = lienthong_turn::ServerConfig {
        realm: config.conference.hostname.to_string(),
        allowed_peers: media.to_vec(),
        limits: lienthong_turn::Limits::default(),
    };
    let credentials = lienthong_turn::Credentials::new(secret, nonce_secret);
    relay::start(server, credentials, &config.server.addresses, config.conference.turn_port, stop).await
}

/// The running conference service: web page, signaling and the media port.
pub struct ConferenceService {
    running: Option<Running>,
    config: Mutex<Arc<Config>>,
}

struct Running {
    commands: mpsc::Sender<HubCommand>,
    stop: watch::Sender<bool>,
    hub: JoinHandle<()>,
    web: JoinHandle<()>,
    serving: Arc<AtomicBool>,
    page_address: SocketAddr,
    media_addresses: Vec<SocketAddr>,
    status: Arc<RwLock<Vec<status::RoomStatus>>>,
    turn: Option<JoinHandle<()>>,
    turn_addresses: Vec<SocketAddr>,
}

impl ConferenceService {
    /// Binds the page listener and the media port (UDP and ICE-TCP on every address of
    /// `server.addresses`) and starts serving. With `conference.enabled = false` nothing binds.
    pub async fn start(config: Arc<Config>, certificates: Arc<dyn ResolvesServerCert>) -> Result<Self, Error> {
        if !config.conference.enabled {
            return Ok(ConferenceService { running: None, config: Mutex::new(config) });
        }
        let settings = &config.conference;
        let crypto = Arc::new(str0m::crypto::from_feature_flags());
        let certificate = crypto.dtls_provider.generate_certificate().ok_or(Error::DtlsCertificate)?;

        let page_listener = tokio::net::TcpListener::bind(settings.listen)
            .await
            .map_err(|source| Error::Bind { address: settings.listen, source })?;
        let page_address =
            page_listener.local_addr().map_err(|source| Error::Bind { address: settings.listen, source })?;
        let tls = if settings.tls {
            let server_config =
                rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                    .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
                    .with_no_client_auth()
                    .with_cert_resolver(certificates);
            Some(tokio_rustls::TlsAcceptor::from(Arc::new(server_config)))
        } else {
            None
        };

        let (datagram_sender, datagrams) = mpsc::channel(4096);
        let media_bind: Vec<SocketAddr> =
            config.server.addresses.iter().map(|address| SocketAddr::new(*address, settings.media_port)).collect();
        let port = net::MediaPort::bind(&media_bind, settings.ice_tcp, datagram_sender).await?;
        let media_addresses = port.local_addresses.clone();

        let (stop, stop_receiver) = watch::channel(false);
        let turn = if settings.turn || settings.turn_port.is_some() {
            Some(start_turn(&config, &media_addresses, stop_receiver.clone()).await?)
        } else {
            None
        };
        let ice = turn.as_ref().map(|turn| ice::IcePlan {
            turn: turn.handle.clone(),
            on_page_port: settings.turn,
            page_tls: settings.tls,
            page_port: if settings.tls { 443 } else { 80 },
            dedicated_port: turn.dedicated.first().map(SocketAddr::port),
            hostname: settings.hostname.to_string(),
        });

        let summaries = Arc::new(RwLock::new(Vec::new()));
        let (commands, command_receiver) = mpsc::channel(1024);
        let media = conference::MediaSettings {
            local_addresses: media_addresses.clone(),
            ice_tcp: settings.ice_tcp,
            ice,
            crypto,
            certificate,
        };
        let status = Arc::new(RwLock::new(Vec::new()));
        let hub = Hub::new(&settings.rooms, port, media, summaries.clone(), status.clone());
        let serving = Arc::new(AtomicBool::new(true));
        let hub_serving = serving.clone();
        let hub = tokio::spawn(async move {
            hub.run(command_receiver, datagrams).await;
            hub_serving.store(false, Ordering::Relaxed);
        });

        let hostnames = [settings.hostname.as_str(), config.server.hostname.as_str()];
        let origins = origin::AllowedOrigins::new(settings.tls, page_address, &hostnames, &config.server.addresses);
        let app = web::router(web::WebState::new(commands.clone(), summaries, origins));
        let web_serving = serving.clone();
        let page_turn = turn.as_ref().filter(|_| settings.turn).map(|turn| turn.handle.clone());
        let web = tokio::spawn(async move {
            if let Err(error) = web::serve(page_listener, tls, page_turn, app, stop_receiver).await {
                tracing::error!(%error, "conference page server stopped");
            }
            web_serving.store(false, Ordering::Relaxed);
        });
        let turn_addresses = turn.as_ref().map(|turn| turn.dedicated.clone()).unwrap_or_default();
        tracing::info!(
            page = %page_address,
            media = ?media_addresses,
            ice_tcp = settings.ice_tcp,
            turn_on_page = settings.turn,
            turn_port = ?turn_addresses,
            "conference service listening"
        );
        let turn = turn.map(|turn| turn.task);
        let running =
            Running { commands, stop, hub, web, serving, page_address, media_addresses, status, turn, turn_addresses };
        Ok(ConferenceService { running: Some(running), config: Mutex::new(config) })
    }

    /// Applies new rooms and PINs; removed rooms end with a message to their participants.
    /// A changed listen address or media port needs a restart; that is logged.
    pub async fn reload(&self, config: Arc<Config>) -> Result<(), Error> {
        let previous = self.config.lock().map(|previous| previous.clone()).ok();
        if let Some(previous) = previous {
            let (old, new) = (&previous.conference, &config.conference);
            if old.listen != new.listen
                || old.tls != new.tls
                || old.hostname != new.hostname
                || previous.server.hostname != config.server.hostname
                || previous.server.addresses != config.server.addresses
                || old.media_port != new.media_port
                || old.enabled != new.enabled
                || (old.ice_tcp, old.turn, old.turn_port) != (new.ice_tcp, new.turn, new.turn_port)
            {
                tracing::warn!(
                    "conference listen, tls, hostname, media_port, ice_tcp, turn, turn_port and enabled, and server \
                     hostname and addresses, take effect for conferences at the next restart"
                );
            }
        }
        if let Some(running) = &self.running {
            let rooms = config.conference.rooms.clone();
            running.commands.send(HubCommand::Core(Command::Reload { rooms })).await.map_err(|_| Error::Stopped)?;
        }
        if let Ok(mut current) = self.config.lock() {
            *current = config;
        }
        Ok(())
    }

    pub fn is_serving(&self) -> bool {
        self.running.as_ref().is_none_or(|running| running.serving.load(Ordering::Relaxed))
    }

    /// Where the page is served (the actual port when the config said port 0).
    pub fn page_address(&self) -> Option<SocketAddr> {
        self.running.as_ref().map(|running| running.page_address)
    }

    /// Every room, its participants and their connection quality, as of the last half
    /// second (empty when conferences are disabled).
    pub fn status(&self) -> Vec<status::RoomStatus> {
        let Some(running) = &self.running else { return Vec::new() };
        running.status.read().map(|status| status.clone()).unwrap_or_default()
    }

    /// The media port's addresses, one per `server.addresses` entry.
    pub fn media_addresses(&self) -> Vec<SocketAddr> {
        self.running.as_ref().map(|running| running.media_addresses.clone()).unwrap_or_default()
    }

    /// The dedicated TURN port's addresses (UDP and TCP), if `turn_port` is set.
    pub fn turn_addresses(&self) -> Vec<SocketAddr> {
        self.running.as_ref().map(|running| running.turn_addresses.clone()).unwrap_or_default()
    }

    /// Ends every conference with a message, stops the page server and frees the ports,
    /// within about five seconds.
    pub async fn shutdown(self) {
        let Some(running) = self.running else { return };
        let Running { commands, stop, hub, web, turn, .. } = running;
        let _ = commands.send(HubCommand::Core(Command::Shutdown)).await;
        drop(commands);
        let _ = stop.send(true);
        let turn = turn.unwrap_or_else(|| tokio::spawn(async {}));
        for (name, mut task) in [("hub", hub), ("page server", web), ("TURN server", turn)] {
            if tokio::time::timeout(SHUTDOWN_BOUND, &mut task).await.is_err() {
                tracing::warn!(task = name, "conference task did not stop in time; aborting it");
                task.abort();
            }
        }
    }
}
