//! The media half of the core: SDP exchange, demultiplexing datagrams to sessions, polling
//! the sessions and forwarding what they produce within their room.

use std::time::{Duration, Instant};

use lienthong_config::VideoCodec;
use str0m::media::KeyframeRequestKind;
use str0m::net::{Receive, TcpType};
use str0m::{Candidate, Input as RtcInput, Rtc};

use super::{Conference, Output};
use crate::forward::LayerId;
use crate::net::Datagram;
use crate::peer::{Forwardable, Peer, Propagated};
use crate::protocol::{ParticipantId, ServerMessage};
use crate::room::MediaSource;

/// Rounds of poll-and-forward per drive; each round can only create work for the next.
const MAX_ROUNDS: usize = 8;
/// str0m's pacer releases one packet per timeout and asks for the next one a microsecond
/// later (its clock must move between packets). Deadlines this close are taken at once,
/// at their own time, instead of costing the hub a wake-up each (it sleeps at least 1 ms):
/// otherwise every session could send at most one paced packet per millisecond.
/// With the estimate no longer held down by that limit, layers switch more often, and each
/// switch sends the publisher two `layers` messages a few milliseconds apart: the page must
/// apply them one at a time (`web/room.js`), or Chromium refuses the second and the camera
/// stays paused (what made 3e741d2 fail in the Chromium suite and be reverted).
const PACER_STEP: Duration = Duration::from_micros(50);
/// Pacer steps taken per session per drive; the rest waits for the next wake-up.
const MAX_PACER_STEPS: usize = 256;

impl Conference {
    pub(super) fn handle_offer(&mut self, now: Instant, id: ParticipantId, sdp: &str, screen_mid: Option<String>) {
        if self.peer_mut(id).is_none() {
            let peer = self.new_peer(now, id);
            let Some(member) = self.members.get_mut(&id) else { return };
            member.peer = Some(peer);
        }
        let Some(member) = self.members.get_mut(&id) else { return };
        let Some(peer) = member.peer.as_mut() else { return };
        member.dirty = true;
        match peer.accept_offer(sdp, screen_mid) {
            Ok(Some(answer)) => self.send(id, ServerMessage::Answer { sdp: answer }),
            Ok(None) => tracing::debug!(participant = id, "offers crossed; the browser will retry"),
            Err(reason) => self.fail(now, id, &reason),
        }
    }

    /// A new session for `id`, already subscribed to everything published in its room.
    fn new_peer(&self, now: Instant, id: ParticipantId) -> Peer {
        let builder = Rtc::builder()
            .set_crypto_provider(self.media.crypto.clone())
            .set_dtls_cert(self.media.certificate.clone())
            .set_rtp_mode(true);
        // Only codecs the SFU can switch layers of on keyframes (VP8 and H.264 are detected in
        // `forwardable`): a browser offered VP9, AV1 or H.265 could publish video that no
        // receiver would ever be started on. str0m answers in its own order, and a browser
        // sends the first codec of the answer, so the room's codec goes first.
        let builder = builder.clear_codecs().enable_opus(true, false);
        let builder = match self.rooms.video_codec(id) {
            VideoCodec::Vp8 => builder.enable_vp8(true).enable_h264(true),
            VideoCodec::H264 => builder.enable_h264(true).enable_vp8(true),
        };
        let mut rtc = builder
            .enable_bwe(Some(str0m::bwe::Bitrate::bps(super::layers::INITIAL_ESTIMATE)))
            // Once a second: the loss and round trip towards the browser (LinkHealth).
            .set_stats_interval(Some(std::time::Duration::from_secs(1)))
            .build(now);
        for address in &self.media.local_addresses {
            if let Ok(candidate) = Candidate::host(*address, "udp") {
                rtc.add_local_candidate(candidate);
            }
            let tcp = Candidate::builder().tcp().host(*address).tcptype(TcpType::Passive).build();
            if let Ok(candidate) = tcp
                && self.media.ice_tcp
            {
                rtc.add_local_candidate(candidate);
            }
        }
        let mut peer = Peer::new(id, rtc);
        for other in self.rooms.peers(id) {
            if let Some(publisher) = self.members.get(&other).and_then(|member| member.peer.as_ref()) {
                for (mid, kind, source) in publisher.published() {
                    peer.subscribe(other, mid, kind, source);
                }
            }
        }
        peer
    }

    pub(super) fn handle_answer(&mut self, now: Instant, id: ParticipantId, sdp: &str) {
        let Some(member) = self.members.get_mut(&id) else { return };
        let Some(peer) = member.peer.as_mut() else { return };
        member.dirty = true;
        match peer.accept_answer(sdp) {
            Ok(opened) => {
                for (origin, mid, layer) in opened {
                    if let Some(publisher) = self.peer_mut(origin) {
                        publisher.request_keyframe(now, mid, layer, KeyframeRequestKind::Pli);
                        self.touch(origin);
                    }
                }
            }
            Err(reason) => self.fail(now, id, &reason),
        }
    }

    pub(super) fn handle_datagram(&mut self, now: Instant, datagram: Datagram) {
        let Ok(contents) = datagram.data.as_slice().try_into() else {
            return;
        };
        let input = RtcInput::Receive(
            now,
            Receive { proto: datagram.proto, source: datagram.source, destination: datagram.destination, contents },
        );
        let key = (datagram.proto, datagram.source);
        let accepts = |member: &super::Member| member.peer.as_ref().is_some_and(|peer| peer.rtc.accepts(&input));
        let routed = self.routes.get(&key).copied().filter(|id| self.members.get(id).is_some_and(accepts));
        let target = routed.or_else(|| self.members.iter().find(|(_, member)| accepts(member)).map(|(id, _)| *id));
        let Some(id) = target else {
            tracing::trace!(proto = ?datagram.proto, source = %datagram.source, "no session accepts this datagram");
            return;
        };
        self.routes.insert(key, id);
        let Some(member) = self.members.get_mut(&id) else { return };
        let Some(peer) = member.peer.as_mut() else { return };
        peer.handle_input(input);
        // str0m holds one received RTP packet until the next poll: poll before the next
        // datagram, or that packet is lost.
        let outputs = &mut self.outputs;
        let mut events = Vec::new();
        let next = peer.poll(now, &mut |packet| outputs.push_back(Output::Transmit(packet)), &mut events);
        member.due = Some(next);
        for event in events {
            self.propagate(now, id, event);
        }
    }

    /// Polls every session with input, media to send or a due timeout, forwards what they
    /// produced, and starts renegotiations.
    pub(super) fn drive(&mut self, now: Instant) {
        for round in 0..MAX_ROUNDS {
            let mut produced: Vec<(ParticipantId, Propagated)> = Vec::new();
            let outputs = &mut self.outputs;
            for (id, member) in &mut self.members {
                let Some(peer) = member.peer.as_mut() else { continue };
                let due = member.due.is_none_or(|due| due <= now);
                if !member.dirty && !due {
                    continue;
                }
                member.dirty = false;
                if due {
                    peer.handle_input(RtcInput::Timeout(now));
                }
                let mut events = Vec::new();
                let mut transmit = |packet| outputs.push_back(Output::Transmit(packet));
                let mut next = peer.poll(now, &mut transmit, &mut events);
                for _ in 0..MAX_PACER_STEPS {
                    if next > now + PACER_STEP {
                        break;
                    }
                    let at = next.max(now);
                    peer.handle_input(RtcInput::Timeout(at));
                    next = peer.poll(at, &mut transmit, &mut events);
                }
                member.due = Some(next);
                produced.extend(events.into_iter().map(|event| (*id, event)));
            }
            if produced.is_empty() {
                break;
            }
            if round == MAX_ROUNDS - 1 {
                tracing::debug!("media work left for the next wake-up");
            }
            for (id, event) in produced {
                self.propagate(now, id, event);
            }
        }
        let mut offers = Vec::new();
        for (id, member) in &mut self.members {
            if let Some(sdp) = member.peer.as_mut().and_then(|peer| peer.offer_if_needed(now)) {
                member.dirty = true;
                offers.push((*id, sdp));
            }
        }
        for (id, sdp) in offers {
            self.send(id, ServerMessage::Offer { sdp });
        }
    }

    fn propagate(&mut self, now: Instant, id: ParticipantId, event: Propagated) {
        match event {
            Propagated::TrackOpened { mid, kind, source } => {
                for other in self.rooms.peers(id) {
                    if let Some(peer) = self.peer_mut(other) {
                        peer.subscribe(id, mid, kind, source);
                    }
                }
            }
            Propagated::Rtp(packet) => self.forward(now, id, &packet),
            Propagated::KeyframeRequest { origin, origin_mid, layer, kind } => {
                // Only within the room: a browser cannot poke a publisher elsewhere.
                if self.rooms.peers(id).contains(&origin)
                    && let Some(publisher) = self.peer_mut(origin)
                {
                    publisher.request_keyframe(now, origin_mid, layer, kind);
                    self.touch(origin);
                }
            }
            Propagated::Failed => self.fail(now, id, "media connection lost"),
        }
    }

    /// Hands one publisher's packet to every receiver in its room that should get it, and
    /// asks the publisher for the keyframes receivers wait for.
    fn forward(&mut self, now: Instant, publisher: ParticipantId, packet: &Forwardable) {
        if packet.source == MediaSource::Microphone
            && let Some(level) = packet.audio_level
        {
            self.rooms.audio_level(now, publisher, level.unsigned_abs());
        }
        if !self.rooms.forwards(publisher, packet.source) {
            return;
        }
        let mut sent = 0u64;
        let mut switches = 0u64;
        let mut keyframes: Vec<LayerId> = Vec::new();
        for other in self.rooms.peers(publisher) {
            let Some(member) = self.members.get_mut(&other) else { continue };
            let Some(peer) = member.peer.as_mut() else { continue };
            let forwarded = peer.forward(publisher, packet);
            if forwarded.sent {
                sent += 1;
                member.dirty = true;
            }
            if forwarded.switched {
                switches += 1;
                tracing::debug!(receiver = other, publisher, mid = %packet.mid, layer = ?packet.incoming.layer, "layer switched");
            }
            if let Some(layer) = forwarded.wants_keyframe
                && !keyframes.contains(&layer)
            {
                keyframes.push(layer);
            }
        }
        if !keyframes.is_empty()
            && let Some(publisher_peer) = self.peer_mut(publisher)
        {
            for layer in keyframes {
                publisher_peer.request_keyframe(now, packet.mid, layer, KeyframeRequestKind::Pli);
            }
            self.touch(publisher);
        }
        if let Some(room) = self.rooms.room_of(publisher) {
            if sent > 0 {
                self.metrics.forwarded(room, packet.source, sent, packet.payload.len() as u64 * sent);
            }
            if switches > 0 {
                self.metrics.layer_switches(room, switches);
            }
        }
    }
}
