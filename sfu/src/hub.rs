//! The hub: one task that owns the rooms, every participant's media session and the media
//! port. Signaling connections talk to it through a bounded channel, so all conference state
//! lives in one place without locks.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use lienthong_config::Room as RoomConfig;
use str0m::crypto::CryptoProvider;
use str0m::crypto::dtls::DtlsCert;
use str0m::net::{Protocol, Receive, TcpType};
use str0m::{Candidate, Input, Rtc};
use tokio::sync::mpsc;

use crate::guard::PinGuard;
use crate::metrics::ConferenceMetrics;
use crate::net::{Datagram, MediaPort};
use crate::peer::{Peer, Propagated};
use crate::protocol::{ClientMessage, EndReason, ParticipantId, Refusal, ServerMessage};
use crate::room::{Action, JoinRequest, MediaSource, Outgoing, RoomSummary, Rooms};

/// Messages queued for one browser before we consider it gone.
pub(crate) const OUTBOUND_QUEUE: usize = 256;
/// Wrong PINs one connection may try before it is closed.
const MAX_FAILED_JOINS: u32 = 5;
/// Rounds of poll-and-forward per wake-up; each round can only create work for the next.
const MAX_ROUNDS: usize = 8;

/// From the signaling side to the hub.
#[derive(Debug)]
pub(crate) enum HubCommand {
    Open {
        id: ParticipantId,
        outbound: mpsc::Sender<Outbound>,
        /// The browser's address, for the limit on wrong PINs.
        address: IpAddr,
    },
    Message {
        id: ParticipantId,
        message: ClientMessage,
    },
    Close {
        id: ParticipantId,
    },
    Reload {
        rooms: Vec<RoomConfig>,
    },
    /// End every session and stop.
    Shutdown,
}

/// From the hub to one signaling connection.
#[derive(Debug)]
pub(crate) enum Outbound {
    Message(ServerMessage),
    /// Close the WebSocket with this reason.
    Close(String),
}

struct Connection {
    outbound: mpsc::Sender<Outbound>,
    failed_joins: u32,
    address: IpAddr,
}

pub(crate) struct Hub {
    rooms: Rooms,
    connections: HashMap<ParticipantId, Connection>,
    peers: HashMap<ParticipantId, Peer>,
    timeouts: HashMap<ParticipantId, Instant>,
    /// Sessions that got input or media to send since they were last polled. Only these
    /// and those whose timeout fell due are polled, so a packet costs one poll, not one
    /// per participant.
    dirty: HashSet<ParticipantId>,
    /// Which session a remote address belongs to, so most packets skip the `accepts` scan.
    routes: HashMap<(Protocol, SocketAddr), ParticipantId>,
    port: MediaPort,
    crypto: Arc<CryptoProvider>,
    certificate: DtlsCert,
    summaries: Arc<RwLock<Vec<RoomSummary>>>,
    metrics: ConferenceMetrics,
    pin_guard: PinGuard,
}

impl Hub {
    pub fn new(
        rooms: &[RoomConfig],
        port: MediaPort,
        crypto: Arc<CryptoProvider>,
        certificate: DtlsCert,
        summaries: Arc<RwLock<Vec<RoomSummary>>>,
    ) -> Self {
        let mut hub = Hub {
            rooms: Rooms::new(rooms),
            connections: HashMap::new(),
            peers: HashMap::new(),
            timeouts: HashMap::new(),
            dirty: HashSet::new(),
            routes: HashMap::new(),
            port,
            crypto,
            certificate,
            summaries,
            metrics: ConferenceMetrics::default(),
            pin_guard: PinGuard::default(),
        };
        hub.publish_summaries();
        hub
    }

    /// Runs until the command channel closes (the service shuts down).
    pub async fn run(mut self, mut commands: mpsc::Receiver<HubCommand>, mut datagrams: mpsc::Receiver<Datagram>) {
        let mut ticker = tokio::time::interval(Duration::from_millis(200));
        loop {
            let deadline = self.drive(Instant::now());
            tokio::select! {
                command = commands.recv() => match command {
                    Some(HubCommand::Shutdown) | None => break,
                    Some(command) => self.handle_command(Instant::now(), command),
                },
                Some(datagram) = datagrams.recv() => {
                    self.handle_datagram(Instant::now(), datagram);
                    // Take what else arrived before polling everyone again.
                    for _ in 0..64 {
                        let Ok(datagram) = datagrams.try_recv() else { break };
                        self.handle_datagram(Instant::now(), datagram);
                    }
                }
                _ = tokio::time::sleep_until(deadline.into()) => {}
                _ = ticker.tick() => {
                    let out = self.rooms.tick(Instant::now());
                    self.deliver(Instant::now(), out);
                }
            }
        }
        self.shutdown(Instant::now());
    }

    fn shutdown(&mut self, now: Instant) {
        for id in self.rooms.everyone() {
            self.end(now, id, EndReason::Shutdown);
        }
        for connection in self.connections.values() {
            let _ = connection.outbound.try_send(Outbound::Close("server shutting down".into()));
        }
        self.port.shutdown();
    }

    fn handle_command(&mut self, now: Instant, command: HubCommand) {
        match command {
            HubCommand::Open { id, outbound, address } => {
                self.connections.insert(id, Connection { outbound, failed_joins: 0, address });
            }
            HubCommand::Close { id } => {
                self.connections.remove(&id);
                self.remove_participant(now, id);
            }
            HubCommand::Reload { rooms } => {
                let out = self.rooms.reload(now, &rooms);
                self.deliver(now, out);
                self.publish_summaries();
            }
            HubCommand::Message { id, message } => self.handle_message(now, id, message),
            HubCommand::Shutdown => {}
        }
    }

    fn handle_message(&mut self, now: Instant, id: ParticipantId, message: ClientMessage) {
        let joined = self.rooms.room_of(id).is_some();
        match message {
            ClientMessage::Join { room, name, site, pin, resume, .. } => {
                let request = JoinRequest { room, name, site, pin, resume, new_token: random_token() };
                let Some(address) = self.connections.get(&id).map(|connection| connection.address) else { return };
                if !self.pin_guard.allows(now, address) {
                    self.send(id, ServerMessage::refused(Refusal::TooManyAttempts));
                    if let Some(connection) = self.connections.get(&id) {
                        let _ = connection
                            .outbound
                            .try_send(Outbound::Close("too many wrong PINs from this address".into()));
                    }
                    return;
                }
                let (room, site) = (request.room.clone(), request.site.clone());
                match self.rooms.join(now, id, request) {
                    Ok(out) => {
                        tracing::info!(participant = id, %address, room, site, "joined");
                        self.deliver(now, out);
                        self.publish_summaries();
                    }
                    Err(reason) => {
                        tracing::info!(connection = id, %address, room = ?room, reason = reason.message(), "join refused");
                        self.send(id, ServerMessage::refused(reason));
                        let Some(connection) = self.connections.get_mut(&id) else {
                            return;
                        };
                        if reason == Refusal::WrongPin {
                            self.pin_guard.record_failure(now, address);
                            connection.failed_joins += 1;
                            if connection.failed_joins >= MAX_FAILED_JOINS {
                                let _ = connection.outbound.try_send(Outbound::Close("too many wrong PINs".into()));
                            }
                        }
                    }
                }
            }
            ClientMessage::Offer { .. } | ClientMessage::Answer { .. } if !joined => {
                self.send(id, ServerMessage::refused(Refusal::NotJoined));
            }
            ClientMessage::Offer { sdp, screen_mid } => self.handle_offer(now, id, &sdp, screen_mid),
            ClientMessage::Answer { sdp } => {
                let Some(peer) = self.peers.get_mut(&id) else {
                    return;
                };
                let result = peer.accept_answer(&sdp);
                self.dirty.insert(id);
                match result {
                    Ok(opened) => {
                        for (origin, mid) in opened {
                            if let Some(publisher) = self.peers.get_mut(&origin) {
                                publisher.request_keyframe(now, mid, str0m::media::KeyframeRequestKind::Pli);
                                self.dirty.insert(origin);
                            }
                        }
                    }
                    Err(reason) => self.fail(now, id, &reason),
                }
            }
            ClientMessage::Leave {} => self.remove_participant(now, id),
            ClientMessage::Media { microphone, camera, screen } => {
                self.act(now, id, Action::SelfMedia { microphone, camera, screen })
            }
            ClientMessage::Mute { participant } => self.act(now, id, Action::Mute(participant)),
            ClientMessage::StopCamera { participant } => self.act(now, id, Action::StopCamera(participant)),
            ClientMessage::Remove { participant } => self.act(now, id, Action::Remove(participant)),
            ClientMessage::Lock { locked } => self.act(now, id, Action::Lock(locked)),
            ClientMessage::Spotlight { participant } => self.act(now, id, Action::Spotlight(participant)),
        }
    }

    fn act(&mut self, now: Instant, id: ParticipantId, action: Action) {
        let out = self.rooms.act(now, id, action);
        self.deliver(now, out);
    }

    fn handle_offer(&mut self, now: Instant, id: ParticipantId, sdp: &str, screen_mid: Option<String>) {
        if !self.peers.contains_key(&id) {
            let mut rtc = Rtc::builder()
                .set_crypto_provider(self.crypto.clone())
                .set_dtls_cert(self.certificate.clone())
                .build(now);
            for address in &self.port.local_addresses {
                if let Ok(candidate) = Candidate::host(*address, "udp") {
                    rtc.add_local_candidate(candidate);
                }
                let tcp = Candidate::builder().tcp().host(*address).tcptype(TcpType::Passive).build();
                if let Ok(candidate) = tcp {
                    rtc.add_local_candidate(candidate);
                }
            }
            let mut peer = Peer::new(id, rtc);
            // A newcomer receives everything already published in its room.
            for other in self.rooms.peers(id) {
                if let Some(publisher) = self.peers.get(&other) {
                    for (mid, kind, source) in publisher.published() {
                        peer.subscribe(other, mid, kind, source);
                    }
                }
            }
            self.peers.insert(id, peer);
        }
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        let result = peer.accept_offer(sdp, screen_mid);
        self.dirty.insert(id);
        match result {
            Ok(Some(answer)) => self.send(id, ServerMessage::Answer { sdp: answer }),
            Ok(None) => tracing::debug!(participant = id, "offers crossed; the browser will retry"),
            Err(reason) => self.fail(now, id, &reason),
        }
    }

    fn handle_datagram(&mut self, now: Instant, datagram: Datagram) {
        let Ok(contents) = datagram.data.as_slice().try_into() else {
            return;
        };
        let input = Input::Receive(
            now,
            Receive { proto: datagram.proto, source: datagram.source, destination: datagram.destination, contents },
        );
        let key = (datagram.proto, datagram.source);
        let routed =
            self.routes.get(&key).copied().filter(|id| self.peers.get(id).is_some_and(|peer| peer.rtc.accepts(&input)));
        let target = routed.or_else(|| self.peers.values().find(|peer| peer.rtc.accepts(&input)).map(|peer| peer.id));
        let Some(id) = target else {
            tracing::trace!(proto = ?datagram.proto, source = %datagram.source, "no session accepts this datagram");
            return;
        };
        self.routes.insert(key, id);
        if let Some(peer) = self.peers.get_mut(&id) {
            peer.handle_input(input);
            self.dirty.insert(id);
        }
    }

    /// Polls every session, forwards what they produced, and starts renegotiations. Returns
    /// when the next session timeout falls due.
    fn drive(&mut self, now: Instant) -> Instant {
        for round in 0..MAX_ROUNDS {
            let timeouts = &self.timeouts;
            let dirty = &self.dirty;
            let due: Vec<ParticipantId> = self
                .peers
                .keys()
                .copied()
                .filter(|id| dirty.contains(id) || timeouts.get(id).is_none_or(|due| *due <= now))
                .collect();
            self.dirty.clear();
            if due.is_empty() {
                break;
            }
            let mut produced: Vec<(ParticipantId, Propagated)> = Vec::new();
            let port = &self.port;
            for id in due {
                let Some(peer) = self.peers.get_mut(&id) else { continue };
                if self.timeouts.get(&id).is_none_or(|due| *due <= now) {
                    peer.handle_input(Input::Timeout(now));
                }
                let mut events = Vec::new();
                let next = peer.poll(
                    now,
                    &mut |packet| port.send(packet.proto, packet.source, packet.destination, &packet.contents),
                    &mut events,
                );
                self.timeouts.insert(id, next);
                produced.extend(events.into_iter().map(|event| (id, event)));
            }
            if round == MAX_ROUNDS - 1 && !produced.is_empty() {
                tracing::debug!("media work left for the next wake-up");
            }
            for (id, event) in produced {
                self.propagate(now, id, event);
            }
        }
        let offers: Vec<(ParticipantId, String)> =
            self.peers.values_mut().filter_map(|peer| peer.offer_if_needed(now).map(|sdp| (peer.id, sdp))).collect();
        for (id, sdp) in offers {
            self.dirty.insert(id);
            self.send(id, ServerMessage::Offer { sdp });
        }
        if !self.dirty.is_empty() {
            return now + Duration::from_millis(1);
        }
        let soonest = self.timeouts.values().min().copied();
        soonest.unwrap_or(now + Duration::from_secs(1)).max(now + Duration::from_millis(1))
    }

    fn propagate(&mut self, now: Instant, id: ParticipantId, event: Propagated) {
        match event {
            Propagated::TrackOpened { mid, kind, source } => {
                for other in self.rooms.peers(id) {
                    if let Some(peer) = self.peers.get_mut(&other) {
                        peer.subscribe(id, mid, kind, source);
                    }
                }
            }
            Propagated::Media { source, data } => {
                if source == MediaSource::Microphone
                    && let Some(level) = data.ext_vals.audio_level
                {
                    self.rooms.audio_level(now, id, level.unsigned_abs());
                }
                if !self.rooms.forwards(id, source) {
                    return;
                }
                let packets = (**data.seq_range.end()).saturating_sub(**data.seq_range.start()) + 1;
                let mut receivers = 0u64;
                for other in self.rooms.peers(id) {
                    let Some(peer) = self.peers.get_mut(&other) else { continue };
                    if peer.forward(id, &data) {
                        receivers += 1;
                    }
                    self.dirty.insert(other);
                }
                if receivers > 0
                    && let Some(room) = self.rooms.room_of(id)
                {
                    self.metrics.forwarded(room, source, packets * receivers, data.data.len() as u64 * receivers);
                }
            }
            Propagated::KeyframeRequest { origin, origin_mid, kind } => {
                // Only within the room: a browser cannot poke a publisher elsewhere.
                if self.rooms.peers(id).contains(&origin)
                    && let Some(publisher) = self.peers.get_mut(&origin)
                {
                    publisher.request_keyframe(now, origin_mid, kind);
                    self.dirty.insert(origin);
                }
            }
            Propagated::Failed => self.fail(now, id, "media connection lost"),
        }
    }

    fn fail(&mut self, now: Instant, id: ParticipantId, reason: &str) {
        tracing::info!(participant = id, reason, "ending participant's session");
        self.end(now, id, EndReason::MediaFailed);
    }

    /// Ends a participant's session: tells the browser, closes its signaling, frees its media.
    fn end(&mut self, now: Instant, id: ParticipantId, reason: EndReason) {
        let message = match reason {
            EndReason::Removed => "the chair removed you from the room",
            EndReason::RoomClosed => "the operator closed this room",
            EndReason::Shutdown => "the server is shutting down",
            EndReason::MediaFailed => "the media connection failed",
        };
        self.send(id, ServerMessage::Ended { reason, message: message.to_owned() });
        if let Some(connection) = self.connections.get(&id) {
            let _ = connection.outbound.try_send(Outbound::Close(message.to_owned()));
        }
        self.remove_participant(now, id);
    }

    fn remove_participant(&mut self, now: Instant, id: ParticipantId) {
        if let Some(room) = self.rooms.room_of(id) {
            tracing::info!(participant = id, room, "left");
        }
        let others = self.rooms.peers(id);
        let out = self.rooms.leave(now, id);
        for other in others {
            if let Some(peer) = self.peers.get_mut(&other) {
                peer.unsubscribe_all(id);
            }
        }
        if let Some(mut peer) = self.peers.remove(&id) {
            peer.rtc.disconnect();
        }
        self.timeouts.remove(&id);
        self.dirty.remove(&id);
        self.routes.retain(|_, owner| *owner != id);
        self.deliver(now, out);
        self.publish_summaries();
    }

    fn deliver(&mut self, now: Instant, out: Vec<Outgoing>) {
        for item in out {
            match item {
                Outgoing::To(id, message) => self.send(id, message),
                Outgoing::End(id, reason) => self.end(now, id, reason),
            }
        }
    }

    /// Queues a message; a browser that does not read its messages is cut off, so one slow
    /// client cannot make the hub buffer without bound.
    fn send(&mut self, id: ParticipantId, message: ServerMessage) {
        let Some(connection) = self.connections.get(&id) else {
            return;
        };
        if connection.outbound.try_send(Outbound::Message(message)).is_err() {
            tracing::info!(participant = id, "signaling queue full; disconnecting");
            self.connections.remove(&id);
        }
    }

    fn publish_summaries(&mut self) {
        let summaries = self.rooms.summaries();
        self.metrics.rooms(&summaries);
        if let Ok(mut shared) = self.summaries.write() {
            *shared = summaries;
        }
    }
}

fn random_token() -> String {
    use rand::Rng;
    let bytes: [u8; 16] = rand::rng().random();
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}
