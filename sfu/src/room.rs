//! The rooms: who is in which room, roles, the chair's powers, and the active speaker.
//!
//! Sans-IO: no sockets, no clock. The hub feeds it joins, leaves, commands and audio levels
//! with `now`, and sends the returned [`Outgoing`] messages. Media forwarding asks
//! [`Rooms::forwards`] and [`Rooms::peers`], so a room never sees another room's media.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use lienthong_config::Room as RoomConfig;

use crate::protocol::{EndReason, MediaPath, ParticipantId, ParticipantView, Refusal, Role, ServerMessage};

/// How long a participant who dropped may come back into a locked room with its token.
const RESUME_WINDOW: Duration = Duration::from_secs(120);
/// Cap on remembered resume tokens per room.
const MAX_RESUME_TOKENS: usize = 1000;
/// A new active speaker must hold the floor this long before the highlight moves again.
const SPEAKER_HOLD: Duration = Duration::from_millis(1200);
/// Audio older than this counts as silence (a muted or departed microphone sends nothing).
const AUDIO_STALE: Duration = Duration::from_millis(500);
/// Smoothed loudness a participant needs to become the active speaker.
const SPEAKER_THRESHOLD: f32 = 6.0;

/// A request to join, already parsed by the protocol layer.
#[derive(Debug, Clone)]
pub struct JoinRequest {
    pub room: String,
    pub name: String,
    pub site: String,
    pub pin: String,
    pub resume: Option<String>,
    /// A fresh random token for this participant, made by the caller (no randomness here).
    pub new_token: String,
    /// The TURN servers and credential minted for this participant, passed on in `welcome`.
    pub ice_servers: Vec<crate::protocol::IceServer>,
}

/// What a browser is told to do with a participant's media.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MediaSource {
    Microphone,
    Camera,
    Screen,
}

/// A chair command or a participant's own switch, from the protocol layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    SelfMedia {
        microphone: bool,
        camera: bool,
        screen: bool,
    },
    Mute(ParticipantId),
    StopCamera(ParticipantId),
    Remove(ParticipantId),
    Lock(bool),
    Spotlight(Option<ParticipantId>),
    /// The participant's browser reports the path its media took.
    Path(MediaPath),
}

/// A message the caller must deliver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outgoing {
    To(ParticipantId, ServerMessage),
    /// Send `Ended` and close this participant's connection and media.
    End(ParticipantId, EndReason),
}

#[derive(Debug)]
struct Participant {
    id: ParticipantId,
    name: String,
    site: String,
    role: Role,
    microphone: bool,
    camera: bool,
    screen: bool,
    token: String,
    loudness: f32,
    last_audio: Option<Instant>,
    path: Option<MediaPath>,
}

impl Participant {
    fn view(&self) -> ParticipantView {
        ParticipantView {
            id: self.id,
            name: self.name.clone(),
            site: self.site.clone(),
            role: self.role,
            microphone: self.microphone,
            camera: self.camera,
            screen: self.screen,
            path: self.path,
        }
    }
}

#[derive(Debug)]
struct RoomState {
    config: RoomConfig,
    locked: bool,
    spotlight: Option<ParticipantId>,
    speaker: Option<ParticipantId>,
    speaker_since: Option<Instant>,
    /// Everyone who was the active speaker, the most recent first (last-N's order).
    recent_speakers: Vec<ParticipantId>,
    members: BTreeMap<ParticipantId, Participant>,
    resumable: HashMap<String, Instant>,
}

impl RoomState {
    fn new(config: RoomConfig) -> Self {
        RoomState {
            config,
            locked: false,
            spotlight: None,
            speaker: None,
            speaker_since: None,
            recent_speakers: Vec::new(),
            members: BTreeMap::new(),
            resumable: HashMap::new(),
        }
    }

    fn broadcast(&self, message: &ServerMessage, except: Option<ParticipantId>, out: &mut Vec<Outgoing>) {
        for id in self.members.keys().filter(|id| Some(**id) != except) {
            out.push(Outgoing::To(*id, message.clone()));
        }
    }

    fn room_message(&self) -> ServerMessage {
        ServerMessage::Room { locked: self.locked, spotlight: self.spotlight }
    }
}

/// A public summary for the room list page.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RoomSummary {
    pub name: String,
    pub title: String,
    pub sites: Vec<String>,
    pub participants: usize,
    pub max_participants: u32,
    pub locked: bool,
}

/// Every room of the config and the people in them.
#[derive(Debug, Default)]
pub struct Rooms {
    rooms: BTreeMap<String, RoomState>,
    membership: HashMap<ParticipantId, String>,
}

impl Rooms {
    pub fn new(configs: &[RoomConfig]) -> Self {
        let rooms = configs.iter().map(|config| (config.name.clone(), RoomState::new(config.clone()))).collect();
        Rooms { rooms, membership: HashMap::new() }
    }

    /// Admits `id` to a room, or says why not.
    pub fn join(&mut self, now: Instant, id: ParticipantId, request: JoinRequest) -> Result<Vec<Outgoing>, Refusal> {
        if self.membership.contains_key(&id) {
            return Err(Refusal::AlreadyJoined);
        }
        let room = self.rooms.get_mut(&request.room).ok_or(Refusal::UnknownRoom)?;
        let role = if constant_time_equal(&request.pin, &room.config.chair_pin) {
            Role::Chair
        } else if constant_time_equal(&request.pin, &room.config.pin) {
            Role::Participant
        } else {
            return Err(Refusal::WrongPin);
        };
        if !room.config.sites.contains(&request.site) {
            return Err(Refusal::UnknownSite);
        }
        if room.members.len() >= room.config.max_participants as usize {
            return Err(Refusal::Full);
        }
        room.resumable.retain(|_, expires| *expires > now);
        let resuming = request.resume.as_ref().is_some_and(|token| room.resumable.remove(token).is_some());
        // The chair may always enter: otherwise a dropped chair could lock itself out.
        if room.locked && role != Role::Chair && !resuming {
            return Err(Refusal::Locked);
        }

        let participant = Participant {
            id,
            name: request.name.trim().to_owned(),
            site: request.site,
            role,
            microphone: true,
            camera: true,
            screen: false,
            token: request.new_token.clone(),
            loudness: 0.0,
            last_audio: None,
            path: None,
        };
        let mut out = Vec::new();
        room.broadcast(&ServerMessage::Joined { participant: participant.view() }, None, &mut out);
        let participants = room.members.values().map(Participant::view).collect();
        out.push(Outgoing::To(
            id,
            ServerMessage::Welcome {
                v: crate::protocol::PROTOCOL_VERSION,
                you: id,
                role,
                room: room.config.name.clone(),
                title: room.config.title.clone(),
                locked: room.locked,
                spotlight: room.spotlight,
                speaker: room.speaker,
                participants,
                resume: request.new_token,
                ice_servers: request.ice_servers,
                video_codec: room.config.video_codec.name(),
            },
        ));
        room.members.insert(id, participant);
        self.membership.insert(id, request.room);
        Ok(out)
    }

    /// Removes `id` (connection closed or leave). Unknown ids are ignored.
    pub fn leave(&mut self, now: Instant, id: ParticipantId) -> Vec<Outgoing> {
        self.remove_member(now, id, true)
    }

    /// Applies a participant's action; refusals go back to the actor only.
    pub fn act(&mut self, now: Instant, actor: ParticipantId, action: Action) -> Vec<Outgoing> {
        match self.try_act(now, actor, action) {
            Ok(out) => out,
            Err(reason) => vec![Outgoing::To(actor, ServerMessage::refused(reason))],
        }
    }

    fn try_act(&mut self, now: Instant, actor: ParticipantId, action: Action) -> Result<Vec<Outgoing>, Refusal> {
        let room_name = self.membership.get(&actor).ok_or(Refusal::NotJoined)?.clone();
        let room = self.rooms.get_mut(&room_name).ok_or(Refusal::NotJoined)?;
        let is_chair = room.members.get(&actor).is_some_and(|member| member.role == Role::Chair);
        let mut out = Vec::new();
        if let Action::SelfMedia { microphone, camera, screen } = action {
            let member = room.members.get_mut(&actor).ok_or(Refusal::NotJoined)?;
            (member.microphone, member.camera, member.screen) = (microphone, camera, screen);
            let message = ServerMessage::Updated { participant: member.view() };
            room.broadcast(&message, None, &mut out);
            return Ok(out);
        }
        if let Action::Path(path) = action {
            let member = room.members.get_mut(&actor).ok_or(Refusal::NotJoined)?;
            if member.path != Some(path) {
                member.path = Some(path);
                let message = ServerMessage::Updated { participant: member.view() };
                room.broadcast(&message, None, &mut out);
            }
            return Ok(out);
        }
        if !is_chair {
            return Err(Refusal::NotChair);
        }
        match action {
            Action::SelfMedia { .. } | Action::Path(_) => {}
            Action::Mute(target) | Action::StopCamera(target) => {
                let member = room.members.get_mut(&target).ok_or(Refusal::UnknownParticipant)?;
                let mute = matches!(action, Action::Mute(_));
                if mute {
                    member.microphone = false;
                    member.loudness = 0.0;
                } else {
                    member.camera = false;
                }
                out.push(Outgoing::To(target, ServerMessage::Forced { microphone: !mute, camera: mute }));
                let message = ServerMessage::Updated { participant: member.view() };
                room.broadcast(&message, None, &mut out);
            }
            Action::Remove(target) => {
                if !room.members.contains_key(&target) {
                    return Err(Refusal::UnknownParticipant);
                }
                out.push(Outgoing::End(target, EndReason::Removed));
                out.extend(self.remove_member(now, target, false));
            }
            Action::Lock(locked) => {
                room.locked = locked;
                room.broadcast(&room.room_message(), None, &mut out);
            }
            Action::Spotlight(target) => {
                if target.is_some_and(|target| !room.members.contains_key(&target)) {
                    return Err(Refusal::UnknownParticipant);
                }
                room.spotlight = target;
                room.broadcast(&room.room_message(), None, &mut out);
            }
        }
        Ok(out)
    }

    fn remove_member(&mut self, now: Instant, id: ParticipantId, may_resume: bool) -> Vec<Outgoing> {
        let mut out = Vec::new();
        let Some(room_name) = self.membership.remove(&id) else {
            return out;
        };
        let Some(room) = self.rooms.get_mut(&room_name) else {
            return out;
        };
        let Some(member) = room.members.remove(&id) else {
            return out;
        };
        if may_resume && room.resumable.len() < MAX_RESUME_TOKENS {
            room.resumable.insert(member.token, now + RESUME_WINDOW);
        }
        room.broadcast(&ServerMessage::Left { participant: id }, None, &mut out);
        if room.spotlight == Some(id) {
            room.spotlight = None;
            room.broadcast(&room.room_message(), None, &mut out);
        }
        room.recent_speakers.retain(|speaker| *speaker != id);
        if room.speaker == Some(id) {
            room.speaker = None;
            room.broadcast(&ServerMessage::Speaker { participant: None }, None, &mut out);
        }
        out
    }

    /// Whether `publisher`'s media of this source may go to the others. The chair's mute and
    /// stop-camera take effect here, on the server, whatever the publisher's browser does.
    pub fn forwards(&self, publisher: ParticipantId, source: MediaSource) -> bool {
        let Some(member) = self.member(publisher) else {
            return false;
        };
        match source {
            MediaSource::Microphone => member.microphone,
            MediaSource::Camera => member.camera,
            MediaSource::Screen => member.screen,
        }
    }

    /// The other participants in `id`'s room.
    pub fn peers(&self, id: ParticipantId) -> Vec<ParticipantId> {
        let Some(room) = self.membership.get(&id).and_then(|name| self.rooms.get(name)) else {
            return Vec::new();
        };
        room.members.keys().copied().filter(|other| *other != id).collect()
    }

    /// The `count` loudest microphones `id` hears in its room now (louder first, then by
    /// id), as Jitsi's bridge forwards only the loudest few. Its own microphone takes no
    /// place (a loud site hears the next loudest instead); switched-off microphones do not
    /// count; quiet ones fill the places left, so a small room hears everyone.
    pub fn loudest(&self, now: Instant, id: ParticipantId, count: usize) -> Vec<ParticipantId> {
        let Some(room) = self.membership.get(&id).and_then(|name| self.rooms.get(name)) else {
            return Vec::new();
        };
        let fresh = |member: &Participant| member.last_audio.is_some_and(|last| now.duration_since(last) < AUDIO_STALE);
        let mut heard: Vec<(ParticipantId, f32)> = room
            .members
            .values()
            .filter(|member| member.microphone && member.id != id)
            .map(|member| (member.id, if fresh(member) { member.loudness } else { 0.0 }))
            .collect();
        heard.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        heard.into_iter().take(count).map(|(id, _)| id).collect()
    }

    /// Whose cameras `id` should receive first, best first, and how many at most (the room's
    /// `last_n`): the spotlight, the active speaker, the most recent speakers, then everyone
    /// else in the order they joined. Cameras that are off take no place. The caller keeps
    /// the first `last_n` of these that publish a camera.
    pub fn video_ranking(&self, id: ParticipantId) -> (Vec<ParticipantId>, usize) {
        let Some(room) = self.membership.get(&id).and_then(|name| self.rooms.get(name)) else {
            return (Vec::new(), 0);
        };
        let first = room.spotlight.into_iter().chain(room.speaker).chain(room.recent_speakers.iter().copied());
        let mut ranking: Vec<ParticipantId> = Vec::with_capacity(room.members.len());
        let mut placed = HashSet::with_capacity(room.members.len());
        for candidate in first.chain(room.members.keys().copied()) {
            let camera_on = room.members.get(&candidate).is_some_and(|member| member.camera);
            if candidate != id && camera_on && placed.insert(candidate) {
                ranking.push(candidate);
            }
        }
        (ranking, room.config.last_n as usize)
    }

    /// Whether `id`'s microphone sends audio levels at all; one that does not cannot be
    /// ranked and is always forwarded.
    pub fn sends_audio_levels(&self, id: ParticipantId) -> bool {
        self.member(id).is_some_and(|member| member.last_audio.is_some())
    }

    /// The camera codec of `id`'s room (VP8 outside a room).
    pub fn video_codec(&self, id: ParticipantId) -> lienthong_config::VideoCodec {
        let room = self.membership.get(&id).and_then(|name| self.rooms.get(name));
        room.map(|room| room.config.video_codec).unwrap_or_default()
    }

    pub fn room_of(&self, id: ParticipantId) -> Option<&str> {
        self.membership.get(&id).map(String::as_str)
    }

    /// Records an RFC 6464 audio level (0 = loudest, 127 = silence, in -dBov) from `id`.
    pub fn audio_level(&mut self, now: Instant, id: ParticipantId, level: u8) {
        let Some(name) = self.membership.get(&id) else {
            return;
        };
        let Some(member) = self.rooms.get_mut(name).and_then(|room| room.members.get_mut(&id)) else {
            return;
        };
        if !member.microphone {
            return;
        }
        // Speech sits around -20 to -40 dBov; below -70 is background. Smoothing over about
        // 20 packets (400 ms) ignores clicks.
        let energy = 70.0 - f32::from(level.min(127));
        member.loudness = member.loudness * 0.95 + energy.max(0.0) * 0.05;
        member.last_audio = Some(now);
    }

    /// Moves the active-speaker highlight where the sound is; call a few times a second.
    pub fn tick(&mut self, now: Instant) -> Vec<Outgoing> {
        let mut out = Vec::new();
        for room in self.rooms.values_mut() {
            let loudness = |member: &Participant| {
                if member.last_audio.is_some_and(|last| now.duration_since(last) < AUDIO_STALE) {
                    member.loudness
                } else {
                    0.0
                }
            };
            let Some((loudest, level)) =
                room.members.values().map(|member| (member.id, loudness(member))).max_by(|a, b| a.1.total_cmp(&b.1))
            else {
                continue;
            };
            if level < SPEAKER_THRESHOLD || room.speaker == Some(loudest) {
                continue;
            }
            let current = room.speaker.and_then(|id| room.members.get(&id)).map_or(0.0, loudness);
            let held = room.speaker_since.is_none_or(|since| now.duration_since(since) >= SPEAKER_HOLD);
            if held && level > current * 1.5 {
                room.speaker = Some(loudest);
                room.speaker_since = Some(now);
                room.recent_speakers.retain(|speaker| *speaker != loudest);
                room.recent_speakers.insert(0, loudest);
                room.broadcast(&ServerMessage::Speaker { participant: Some(loudest) }, None, &mut out);
            }
        }
        out
    }

    /// Applies a new list of rooms: new rooms open, removed rooms end for their participants,
    /// changed PINs and limits apply to the next joins.
    pub fn reload(&mut self, now: Instant, configs: &[RoomConfig]) -> Vec<Outgoing> {
        let mut out = Vec::new();
        let removed: Vec<String> =
            self.rooms.keys().filter(|name| !configs.iter().any(|config| config.name == **name)).cloned().collect();
        for name in removed {
            if let Some(room) = self.rooms.remove(&name) {
                for id in room.members.keys() {
                    self.membership.remove(id);
                    out.push(Outgoing::End(*id, EndReason::RoomClosed));
                }
            }
        }
        for config in configs {
            match self.rooms.get_mut(&config.name) {
                Some(room) => room.config = config.clone(),
                None => {
                    self.rooms.insert(config.name.clone(), RoomState::new(config.clone()));
                }
            }
        }
        for room in self.rooms.values_mut() {
            room.resumable.retain(|_, expires| *expires > now);
        }
        out
    }

    pub fn summaries(&self) -> Vec<RoomSummary> {
        self.rooms
            .values()
            .map(|room| RoomSummary {
                name: room.config.name.clone(),
                title: room.config.title.clone(),
                sites: room.config.sites.clone(),
                participants: room.members.len(),
                max_participants: room.config.max_participants,
                locked: room.locked,
            })
            .collect()
    }

    /// Every room with the people in it, for the operator's listing.
    pub fn listing(&self) -> Vec<(String, Vec<ParticipantView>)> {
        let rooms = self.rooms.values();
        rooms.map(|room| (room.config.name.clone(), room.members.values().map(Participant::view).collect())).collect()
    }

    /// Every participant, for shutdown.
    pub fn everyone(&self) -> Vec<ParticipantId> {
        self.membership.keys().copied().collect()
    }

    fn member(&self, id: ParticipantId) -> Option<&Participant> {
        self.rooms.get(self.membership.get(&id)?)?.members.get(&id)
    }
}

/// Compares PINs without an early exit, so response time does not reveal matching digits.
fn constant_time_equal(given: &str, expected: &str) -> bool {
    let (given, expected) = (given.as_bytes(), expected.as_bytes());
    let mut difference = given.len() ^ expected.len();
    for (index, byte) in expected.iter().enumerate() {
        difference |= usize::from(byte ^ given.get(index).copied().unwrap_or(0));
    }
    difference == 0
}

#[cfg(test)]
#[path = "room_tests.rs"]
mod tests;
