//! The conference core: every room, every participant's media session and the forwarding
//! between them, as one sans-IO state machine (the shape of quinn-proto's `Endpoint` and
//! str0m's `chat.rs`).
//!
//! The driver (`hub.rs`) owns the sockets and channels. It feeds [`Input`]s with `now` to
//! [`Conference::handle_input`] and acts on what [`Conference::poll_output`] returns until
//! that is an [`Output::Timeout`], then waits for the next input or that deadline. Nothing in
//! here reads a clock, touches a socket or awaits, so the tests drive whole meetings in
//! memory on a virtual clock.

#[cfg(test)]
mod harness;
mod layers;
mod media;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lienthong_config::Room as RoomConfig;
use str0m::crypto::CryptoProvider;
use str0m::crypto::dtls::DtlsCert;
use str0m::net::{Protocol, Transmit};

use crate::guard::PinGuard;
use crate::ice::{IcePlan, PageHost};
use crate::metrics::ConferenceMetrics;
use crate::net::Datagram;
use crate::peer::Peer;
use crate::protocol::{ClientMessage, EndReason, ParticipantId, Refusal, ServerMessage};
use crate::room::{Action, JoinRequest, Outgoing, RoomSummary, Rooms};
use crate::status::{ParticipantStatus, Quality, RoomStatus};

/// Wrong PINs one connection may try before it is closed.
const MAX_FAILED_JOINS: u32 = 5;
/// How often the active speaker is re-evaluated.
const SPEAKER_TICK: Duration = Duration::from_millis(200);
/// How often layer rates are measured and every receiver's layers chosen again.
const LAYER_TICK: Duration = Duration::from_millis(500);

/// Something for the core to handle.
#[derive(Debug)]
pub(crate) enum Input {
    /// A datagram (or an ICE-TCP frame) that arrived on the media port.
    Datagram(Datagram),
    /// Something from a signaling connection or the operator.
    Command(Command),
    /// Time passed; nothing else happened.
    Timeout,
    /// The share of the last second the driver's thread spent busy on the core
    /// (`crate::load`).
    Load(f32),
}

/// From the signaling side (or the operator) to the core.
#[derive(Debug)]
pub(crate) enum Command {
    /// A signaling connection opened from this browser address (for the limit on wrong PINs).
    Open {
        id: ParticipantId,
        address: IpAddr,
        /// The host the browser reached the page by, for the TURN URLs in `welcome`.
        host: Option<PageHost>,
    },
    Message {
        id: ParticipantId,
        message: ClientMessage,
    },
    /// The signaling connection closed.
    Close {
        id: ParticipantId,
    },
    Reload {
        rooms: Vec<RoomConfig>,
    },
    /// End every session: each browser is told why and its connection closed.
    Shutdown,
}

/// What the driver must do.
#[derive(Debug)]
pub(crate) enum Output {
    /// Send this datagram from the media port.
    Transmit(Transmit),
    /// Deliver this to one signaling connection.
    Signal(ParticipantId, Signal),
    /// The public room list changed (someone joined or left, a reload).
    Rooms(Vec<RoomSummary>),
    /// The operator's listing, refreshed twice a second.
    Status(Vec<RoomStatus>),
    /// Nothing more to do until this time or the next input.
    Timeout(Instant),
}

/// To one signaling connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Signal {
    Message(ServerMessage),
    /// Close the WebSocket with this reason.
    Close(String),
}

/// One signaling connection and, once it offered, its media session.
struct Member {
    /// The browser's address, for the limit on wrong PINs.
    address: IpAddr,
    /// The host the browser reached the page by, for the TURN URLs in `welcome`.
    host: Option<PageHost>,
    failed_joins: u32,
    peer: Option<Peer>,
    /// When the session next wants a timeout; `None` until first polled.
    due: Option<Instant>,
    /// The session got input or media to send since it was last polled.
    dirty: bool,
    /// What the page shows, from its last `layout`; `None`: every camera large.
    layout: Option<Layout>,
    /// Whether the browser was last told it is in audio-only mode.
    audio_only: bool,
    /// Since when layer selection disagrees with `audio_only`.
    mode_change_since: Option<Instant>,
    /// The camera layers the browser was last told to send; `None` until first told.
    active_layers: Option<Vec<String>>,
    /// When each camera layer (by RID) was last received by anyone.
    layers_used_at: Vec<(str0m::media::Rid, Instant)>,
    /// Whose cameras the browser was last told it receives (last-N); `None` until told.
    last_n: Option<Vec<ParticipantId>>,
}

/// A page's layout: whose camera it shows large and whose as a thumbnail.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Layout {
    pub high: Vec<ParticipantId>,
    pub low: Vec<ParticipantId>,
}

/// What the media sessions need from the driver's media port.
pub(crate) struct MediaSettings {
    /// The media port's addresses, offered to browsers as host candidates (UDP and ICE-TCP).
    pub local_addresses: Vec<SocketAddr>,
    /// ICE-TCP listens next to UDP (`conference.ice_tcp`): offer TCP candidates too.
    pub ice_tcp: bool,
    /// TURN servers for `welcome`, when TURN is on.
    pub ice: Option<IcePlan>,
    pub crypto: Arc<CryptoProvider>,
    pub certificate: DtlsCert,
}

pub(crate) struct Conference {
    rooms: Rooms,
    members: HashMap<ParticipantId, Member>,
    /// Which participant a remote address belongs to, so most packets skip the `accepts` scan.
    routes: HashMap<(Protocol, SocketAddr), ParticipantId>,
    media: MediaSettings,
    metrics: ConferenceMetrics,
    pin_guard: PinGuard,
    /// The time of the latest input; str0m-style, time only moves in `handle_input`.
    now: Instant,
    next_speaker_tick: Instant,
    next_layer_tick: Instant,
    /// The driver's last report of how busy it is, not yet acted on.
    busy: Option<f32>,
    /// Every receiver's video budget, in percent of its estimate: below 100 while the
    /// driver's thread is overloaded (`crate::load`).
    video_budget: u64,
    /// Sessions may have work: set by every input, cleared when `poll_output` drove them.
    pending: bool,
    outputs: VecDeque<Output>,
}

impl Conference {
    pub fn new(now: Instant, rooms: &[RoomConfig], media: MediaSettings) -> Self {
        let mut conference = Conference {
            rooms: Rooms::new(rooms),
            members: HashMap::new(),
            routes: HashMap::new(),
            media,
            metrics: ConferenceMetrics::default(),
            pin_guard: PinGuard::default(),
            now,
            next_speaker_tick: now + SPEAKER_TICK,
            next_layer_tick: now + LAYER_TICK,
            busy: None,
            video_budget: 100,
            pending: false,
            outputs: VecDeque::new(),
        };
        conference.publish_summaries();
        conference
    }

    /// Takes one input at `now` (which must not go backwards; an earlier time counts as the
    /// latest seen).
    pub fn handle_input(&mut self, now: Instant, input: Input) {
        self.now = self.now.max(now);
        let now = self.now;
        self.pending = true;
        match input {
            Input::Datagram(datagram) => self.handle_datagram(now, datagram),
            Input::Command(command) => self.handle_command(now, command),
            Input::Timeout => {}
            Input::Load(busy) => self.busy = Some(busy),
        }
    }

    /// The next thing for the driver to do. Call until it returns [`Output::Timeout`].
    pub fn poll_output(&mut self) -> Output {
        if self.outputs.is_empty() && self.pending {
            self.pending = false;
            let now = self.now;
            if now >= self.next_speaker_tick {
                self.next_speaker_tick = now + SPEAKER_TICK;
                let out = self.rooms.tick(now);
                self.deliver(now, out);
            }
            if now >= self.next_layer_tick {
                self.next_layer_tick = now + LAYER_TICK;
                self.select_layers(now);
                let status = self.status();
                self.metrics.links(&status);
                self.outputs.push_back(Output::Status(status));
            }
            self.drive(now);
        }
        match self.outputs.pop_front() {
            Some(output) => output,
            None => Output::Timeout(self.next_timeout()),
        }
    }

    fn next_timeout(&self) -> Instant {
        let now = self.now;
        if self.members.values().any(|member| member.dirty) {
            return now + Duration::from_millis(1);
        }
        let sessions = self.members.values().filter(|member| member.peer.is_some()).filter_map(|member| member.due);
        sessions
            .fold(self.next_speaker_tick.min(self.next_layer_tick), Instant::min)
            .max(now + Duration::from_millis(1))
    }

    fn handle_command(&mut self, now: Instant, command: Command) {
        match command {
            Command::Open { id, address, host } => {
                let member = Member {
                    address,
                    host,
                    failed_joins: 0,
                    peer: None,
                    due: None,
                    dirty: false,
                    layout: None,
                    audio_only: false,
                    mode_change_since: None,
                    active_layers: None,
                    layers_used_at: Vec::new(),
                    last_n: None,
                };
                self.members.insert(id, member);
            }
            Command::Close { id } => {
                self.remove_participant(now, id);
                self.members.remove(&id);
            }
            Command::Reload { rooms } => {
                let out = self.rooms.reload(now, &rooms);
                self.deliver(now, out);
                self.publish_summaries();
            }
            Command::Message { id, message } => self.handle_message(now, id, message),
            Command::Shutdown => {
                for id in self.rooms.everyone() {
                    self.end(now, id, EndReason::Shutdown);
                }
                let ids: Vec<ParticipantId> = self.members.keys().copied().collect();
                for id in ids {
                    self.signal(id, Signal::Close("server shutting down".into()));
                }
            }
        }
    }

    fn handle_message(&mut self, now: Instant, id: ParticipantId, message: ClientMessage) {
        let joined = self.rooms.room_of(id).is_some();
        match message {
            ClientMessage::Join { room, name, site, pin, resume, .. } => {
                // TURN credentials are minted per participant at join, for `welcome`.
                let host = self.members.get(&id).and_then(|member| member.host.as_ref());
                let ice_servers = self.media.ice.as_ref().map(|ice| ice.servers(id, host)).unwrap_or_default();
                let request = JoinRequest { room, name, site, pin, resume, new_token: random_token(), ice_servers };
                self.join(now, id, request);
            }
            ClientMessage::Offer { .. } | ClientMessage::Answer { .. } if !joined => {
                self.send(id, ServerMessage::refused(Refusal::NotJoined));
            }
            ClientMessage::Offer { sdp, screen_mid } => self.handle_offer(now, id, &sdp, screen_mid),
            ClientMessage::Answer { sdp } => self.handle_answer(now, id, &sdp),
            ClientMessage::Layout { high, low } => {
                if let Some(member) = self.members.get_mut(&id) {
                    member.layout = Some(Layout { high, low });
                }
                // Apply at once: a tile that appeared should not wait for the next round.
                self.next_layer_tick = now;
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
            ClientMessage::Path { path } => self.act(now, id, Action::Path(path)),
        }
    }

    fn join(&mut self, now: Instant, id: ParticipantId, request: JoinRequest) {
        let Some(address) = self.members.get(&id).map(|member| member.address) else { return };
        if !self.pin_guard.allows(now, address) {
            self.send(id, ServerMessage::refused(Refusal::TooManyAttempts));
            self.signal(id, Signal::Close("too many wrong PINs from this address".into()));
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
                if reason != Refusal::WrongPin {
                    return;
                }
                self.pin_guard.record_failure(now, address);
                let Some(member) = self.members.get_mut(&id) else { return };
                member.failed_joins += 1;
                if member.failed_joins >= MAX_FAILED_JOINS {
                    self.signal(id, Signal::Close("too many wrong PINs".into()));
                }
            }
        }
    }

    fn act(&mut self, now: Instant, id: ParticipantId, action: Action) {
        let out = self.rooms.act(now, id, action);
        self.deliver(now, out);
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
        self.signal(id, Signal::Close(message.to_owned()));
        self.remove_participant(now, id);
    }

    /// Takes a participant out of its room and frees its media session; the signaling
    /// connection stays open (a browser that left may join again).
    fn remove_participant(&mut self, now: Instant, id: ParticipantId) {
        if let Some(room) = self.rooms.room_of(id) {
            tracing::info!(participant = id, room, "left");
        }
        let others = self.rooms.peers(id);
        let out = self.rooms.leave(now, id);
        for other in others {
            if let Some(peer) = self.peer_mut(other) {
                peer.unsubscribe_all(id);
            }
        }
        if let Some(member) = self.members.get_mut(&id) {
            if let Some(mut peer) = member.peer.take() {
                peer.rtc.disconnect();
            }
            member.due = None;
            member.dirty = false;
            self.routes.retain(|_, owner| *owner != id);
        }
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

    fn send(&mut self, id: ParticipantId, message: ServerMessage) {
        self.signal(id, Signal::Message(message));
    }

    fn signal(&mut self, id: ParticipantId, signal: Signal) {
        if self.members.contains_key(&id) {
            self.outputs.push_back(Output::Signal(id, signal));
        }
    }

    fn publish_summaries(&mut self) {
        let summaries = self.rooms.summaries();
        self.metrics.rooms(&summaries);
        self.outputs.push_back(Output::Rooms(summaries));
    }

    /// Every room and participant with its connection, for the operator.
    fn status(&self) -> Vec<RoomStatus> {
        let listing = self.rooms.listing();
        listing
            .into_iter()
            .map(|(name, members)| {
                let participants = members
                    .into_iter()
                    .map(|view| {
                        let member = self.members.get(&view.id);
                        let peer = member.and_then(|member| member.peer.as_ref());
                        let estimate = peer.and_then(Peer::estimate);
                        let audio_only = member.is_some_and(|member| member.audio_only);
                        let (loss, rtt) = peer.map(Peer::link_report).unwrap_or_default();
                        ParticipantStatus {
                            id: view.id,
                            name: view.name,
                            site: view.site,
                            role: view.role,
                            estimate_kbps: estimate.map(|bits| bits / 1000),
                            audio_only,
                            loss_permille: loss.map(|loss| (loss.clamp(0.0, 1.0) * 1000.0).round() as u32),
                            rtt_ms: rtt.map(|rtt| rtt.as_millis() as u64),
                            sending_kbps: peer.map_or(0, Peer::received_bitrate) / 1000,
                            quality: Quality::from_estimate(estimate, audio_only),
                        }
                    })
                    .collect();
                let (forwarded, layer_switches) = self.metrics.room_totals(&name);
                RoomStatus {
                    name,
                    participants,
                    forwarded_packets: forwarded.packets,
                    forwarded_bytes: forwarded.bytes,
                    layer_switches,
                }
            })
            .collect()
    }

    fn peer_mut(&mut self, id: ParticipantId) -> Option<&mut Peer> {
        self.members.get_mut(&id).and_then(|member| member.peer.as_mut())
    }

    /// Marks a session as having work for the next poll.
    fn touch(&mut self, id: ParticipantId) {
        if let Some(member) = self.members.get_mut(&id) {
            member.dirty = true;
        }
    }
}

fn random_token() -> String {
    use rand::Rng;
    let bytes: [u8; 16] = rand::rng().random();
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}
