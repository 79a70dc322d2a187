//! One participant's WebRTC session: a str0m `Rtc` and the bookkeeping of which tracks it
//! publishes and which of the others' tracks it receives.
//!
//! Sans-IO like str0m itself: the core passes datagrams and `now` in and takes transmits and
//! [`Propagated`] events out. The browser publishes with its own offers; the server offers
//! the others' tracks. When both offer at once the server wins and ignores the browser's
//! offer; the page (the "polite" side of WebRTC perfect negotiation) rolls back and retries.
//!
//! str0m runs in RTP mode: incoming packets are handed on as they are (one parse of the
//! header, the payload shared by every receiver) and written to each receiver's send stream
//! with that receiver's sequence numbers and timestamps ([`crate::forward`]). str0m still
//! does the transport work on both legs: NACK and RTX, TWCC feedback and the sender reports.

use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::bwe::BweKind;
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::format::PayloadParams;
use str0m::media::{Direction, KeyframeRequestKind, MediaKind, Mid, Pt, Rids};
use str0m::net::Transmit;
use str0m::rtp::{Ssrc, VideoOrientation, Vp8Descriptor};
use str0m::{Event, IceConnectionState, Input, Output, Rtc};

use crate::forward::{Forwarder, Incoming, LayerId, Vp8Fields, Want};
use crate::protocol::ParticipantId;
use crate::room::MediaSource;

mod media;

/// Minimum spacing of keyframe requests we send to one publisher's track.
const KEYFRAME_REQUEST_SPACING: Duration = Duration::from_millis(500);
/// A simulcast layer counts as arriving while its last packet is this recent (each layer
/// carries at least a few frames a second while it is sent).
const LAYER_FLOWING: Duration = Duration::from_millis(1500);
/// How long ICE may stay disconnected before the session counts as failed.
const DISCONNECTED_GRACE: Duration = Duration::from_secs(15);
/// Tracks one participant may publish: microphone, camera, screen share, and one spare for a
/// device switch that renegotiates.
const MAX_PUBLISHED_TRACKS: usize = 4;
/// How long a browser may take to answer our offer.
const NEGOTIATION_TIMEOUT: Duration = Duration::from_secs(15);
/// What one forwarded audio track takes, reserved before video (Opus speech with FEC and
/// packet overhead; silence takes less).
const AUDIO_BITRATE: u64 = 32_000;
/// Simulcast layers per track we use (the page sends three).
const MAX_LAYERS: usize = 3;
/// Incoming SSRCs and payload types remembered per session (layers and RTX included); a
/// client cycling through SSRCs cannot grow these.
const MAX_REMEMBERED: usize = 32;
/// Packets one outgoing stream may have waiting in str0m's pacer queue. Beyond this the
/// receiver's link is far behind: the track stops until its next keyframe instead of
/// queueing without bound.
const MAX_QUEUED_PACKETS: usize = 600;

/// Something a peer's session produced that matters to other peers or to the room.
#[derive(Debug)]
pub(crate) enum Propagated {
    /// The browser started publishing a track.
    TrackOpened { mid: Mid, kind: MediaKind, source: MediaSource },
    /// An RTP packet from one of this browser's tracks.
    Rtp(Box<Forwardable>),
    /// This browser asks for a keyframe of a track (and layer) it receives from `origin`.
    KeyframeRequest { origin: ParticipantId, origin_mid: Mid, layer: LayerId, kind: KeyframeRequestKind },
    /// The session is dead (ICE failed, DTLS error, ...).
    Failed,
}

/// One incoming RTP packet, parsed once for every receiver.
#[derive(Debug)]
pub(crate) struct Forwardable {
    /// The publisher's m-line.
    pub mid: Mid,
    pub source: MediaSource,
    pub kind: MediaKind,
    pub params: PayloadParams,
    pub incoming: Incoming,
    pub marker: bool,
    pub audio_level: Option<i8>,
    pub voice_activity: Option<bool>,
    pub video_orientation: Option<VideoOrientation>,
    pub payload: Arc<[u8]>,
    pub vp8: Option<Vp8Descriptor>,
}

/// What forwarding one packet to one receiver did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Forwarded {
    /// The packet was written to the receiver's send stream.
    pub sent: bool,
    /// The receiver waits for a keyframe of this layer (a switch or a start).
    pub wants_keyframe: Option<LayerId>,
    /// This packet switched the receiver to another layer.
    pub switched: bool,
}

#[derive(Debug)]
struct TrackIn {
    mid: Mid,
    source: MediaSource,
    /// Last keyframe request per simulcast layer.
    keyframe_requests: Vec<(LayerId, Instant)>,
    /// The layers the browser negotiated, lowest first (`[None]` without simulcast), with
    /// their measured rates.
    layers: Vec<LayerRate>,
}

#[derive(Debug, Clone, Copy)]
struct LayerRate {
    id: LayerId,
    /// Payload bytes since the last measurement.
    bytes: u64,
    /// Smoothed bits per second; 0 until measured (or while paused).
    bitrate: u64,
    /// When the last packet of this layer arrived.
    seen: Option<Instant>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TrackOutState {
    ToOpen,
    Negotiating(Mid),
    Open(Mid),
    NegotiatingStop(Mid),
}

#[derive(Debug)]
struct TrackOut {
    origin: ParticipantId,
    origin_mid: Mid,
    kind: MediaKind,
    source: MediaSource,
    state: TrackOutState,
    /// The publisher left or stopped; the m-line must be stopped at the next negotiation.
    gone: bool,
    forwarder: Forwarder,
    /// The layer layer selection chose, which the publisher is asked to send; the forwarder
    /// may get a lower one while this one does not flow (see `Peer::select_layers`).
    chosen: Want,
    /// The publisher's payload type and ours for it, looked up once.
    payload_types: Option<(Pt, Pt)>,
    /// Our send stream's SSRC for this track, once found: str0m finds a stream by SSRC in a
    /// hash map, by m-line only by scanning every stream of the session.
    ssrc: Option<Ssrc>,
    /// When layer selection last found this track's video flowing to the browser.
    shown_at: Option<Instant>,
}

pub(crate) struct Peer {
    pub id: ParticipantId,
    pub rtc: Rtc,
    pending: Option<SdpPendingOffer>,
    /// When our pending offer went out; a browser that never answers is cut off.
    pending_since: Option<Instant>,
    /// The browser's first offer was accepted, so the server may start offering.
    ready: bool,
    screen_mid: Option<String>,
    tracks_in: Vec<TrackIn>,
    tracks_out: Vec<TrackOut>,
    disconnected_since: Option<Instant>,
    failed: bool,
    /// Incoming SSRC to (m-line, layer), so each packet costs no stream lookup.
    ssrcs: Vec<(Ssrc, Mid, LayerId)>,
    payload_params: Vec<PayloadParams>,
    /// The send-side bandwidth estimate towards this browser (str0m's TWCC BWE).
    estimate: Option<u64>,
    /// When the layer rates were last measured.
    measured_at: Option<Instant>,
    /// The estimate layer selection used last (rises slowly, falls at once).
    budget_estimate: Option<u64>,
    /// Bits per second the last layer selection sent this browser (its layers and voices).
    carried: u64,
    /// Loss and round trip towards this browser: while they show no congestion, visible
    /// tracks keep their lowest layer whatever the estimate says.
    link: crate::layers::LinkHealth,
    /// Tests pin the estimate to play a thin link.
    #[cfg(test)]
    estimate_pinned: bool,
    /// With a pinned estimate, the link's loss and round trip are still measured.
    #[cfg(test)]
    link_measured: bool,
}

impl Peer {
    pub fn new(id: ParticipantId, rtc: Rtc) -> Self {
        Peer {
            id,
            rtc,
            pending: None,
            pending_since: None,
            ready: false,
            screen_mid: None,
            tracks_in: Vec::new(),
            tracks_out: Vec::new(),
            disconnected_since: None,
            failed: false,
            ssrcs: Vec::new(),
            payload_params: Vec::new(),
            estimate: None,
            measured_at: None,
            budget_estimate: None,
            carried: 0,
            link: crate::layers::LinkHealth::default(),
            #[cfg(test)]
            estimate_pinned: false,
            #[cfg(test)]
            link_measured: false,
        }
    }

    pub fn is_failed(&self) -> bool {
        self.failed || !self.rtc.is_alive()
    }

    /// Accepts the browser's offer. Returns `Ok(None)` when the offer crossed one of ours and
    /// is ignored (the browser rolls back and offers again).
    pub fn accept_offer(&mut self, sdp: &str, screen_mid: Option<String>) -> Result<Option<String>, String> {
        if self.pending.is_some() {
            return Ok(None);
        }
        let offer = SdpOffer::from_sdp_string(sdp).map_err(|error| format!("invalid SDP offer: {error}"))?;
        self.screen_mid = screen_mid;
        let answer = self.rtc.sdp_api().accept_offer(offer).map_err(|error| format!("offer not accepted: {error}"))?;
        self.ready = true;
        Ok(Some(answer.to_sdp_string()))
    }

    /// Applies the browser's answer to our last offer; stale answers are ignored.
    /// Returns the tracks that just opened, so the hub can ask their publishers for keyframes.
    pub fn accept_answer(&mut self, sdp: &str) -> Result<Vec<(ParticipantId, Mid, LayerId)>, String> {
        self.pending_since = None;
        let Some(pending) = self.pending.take() else {
            return Ok(Vec::new());
        };
        let answer = SdpAnswer::from_sdp_string(sdp).map_err(|error| format!("invalid SDP answer: {error}"))?;
        self.rtc.sdp_api().accept_answer(pending, answer).map_err(|error| format!("answer not accepted: {error}"))?;
        let mut opened = Vec::new();
        for track in &mut self.tracks_out {
            if let TrackOutState::Negotiating(mid) = track.state {
                track.state = TrackOutState::Open(mid);
                if track.kind == MediaKind::Video {
                    opened.push((track.origin, track.origin_mid, track.forwarder.awaiting_keyframe().unwrap_or(None)));
                }
            }
        }
        self.tracks_out.retain(|track| !matches!(track.state, TrackOutState::NegotiatingStop(_)));
        tracing::debug!(participant = self.id, ?opened, "answer accepted; video tracks opened");
        Ok(opened)
    }

    /// Starts receiving another participant's track.
    pub fn subscribe(&mut self, origin: ParticipantId, origin_mid: Mid, kind: MediaKind, source: MediaSource) {
        if self.tracks_out.iter().any(|track| track.origin == origin && track.origin_mid == origin_mid && !track.gone) {
            return;
        }
        // Until layer selection says otherwise a track starts on the publisher's only (or
        // first-listed) layer: `None` without simulcast.
        self.tracks_out.push(TrackOut {
            origin,
            origin_mid,
            kind,
            source,
            state: TrackOutState::ToOpen,
            gone: false,
            forwarder: Forwarder::new(Want::Layer(None)),
            chosen: Want::Layer(None),
            payload_types: None,
            ssrc: None,
            shown_at: None,
        });
    }

    /// Stops receiving everything from a participant who left.
    pub fn unsubscribe_all(&mut self, origin: ParticipantId) {
        self.tracks_out.retain(|track| !(track.origin == origin && track.state == TrackOutState::ToOpen));
        for track in self.tracks_out.iter_mut().filter(|track| track.origin == origin) {
            track.gone = true;
        }
    }

    /// Creates an offer for tracks to add or stop, if any and if no negotiation is under way.
    pub fn offer_if_needed(&mut self, now: Instant) -> Option<String> {
        if !self.ready || self.pending.is_some() {
            return None;
        }
        let mut change = self.rtc.sdp_api();
        for track in &mut self.tracks_out {
            match track.state {
                TrackOutState::ToOpen if !track.gone => {
                    let stream = match track.source {
                        MediaSource::Screen => format!("p{}-screen", track.origin),
                        _ => format!("p{}", track.origin),
                    };
                    let track_id = format!("p{}-{}", track.origin, track.origin_mid);
                    let mid = change.add_media(track.kind, Direction::SendOnly, Some(stream), Some(track_id), None);
                    track.state = TrackOutState::Negotiating(mid);
                }
                TrackOutState::Open(mid) if track.gone => {
                    change.stop_media(mid);
                    track.state = TrackOutState::NegotiatingStop(mid);
                }
                _ => {}
            }
        }
        let (offer, pending) = change.apply()?;
        self.pending = Some(pending);
        self.pending_since = Some(now);
        Some(offer.to_sdp_string())
    }

    /// Feeds a datagram or a timeout; a str0m error ends the session.
    pub fn handle_input(&mut self, input: Input) {
        if self.rtc.is_alive()
            && let Err(error) = self.rtc.handle_input(input)
        {
            tracing::info!(participant = self.id, %error, "media session ended");
            self.rtc.disconnect();
        }
    }

    /// Drains str0m's output: transmits go to `transmit`, events to `events`. Returns when
    /// str0m next wants a timeout.
    pub fn poll(&mut self, now: Instant, transmit: &mut impl FnMut(Transmit), events: &mut Vec<Propagated>) -> Instant {
        loop {
            if self.is_failed() {
                events.push(Propagated::Failed);
                return now + Duration::from_secs(1);
            }
            let stuck = self.pending_since.is_some_and(|since| now.duration_since(since) > NEGOTIATION_TIMEOUT);
            if stuck || self.disconnected_since.is_some_and(|since| now.duration_since(since) > DISCONNECTED_GRACE) {
                self.failed = true;
                continue;
            }
            let output = match self.rtc.poll_output() {
                Ok(output) => output,
                Err(error) => {
                    tracing::info!(participant = self.id, %error, "media session failed");
                    self.failed = true;
                    continue;
                }
            };
            match output {
                Output::Timeout(at) => return at,
                Output::Transmit(packet) => transmit(packet),
                Output::Event(event) => self.handle_event(now, event, events),
            }
        }
    }

    fn handle_event(&mut self, now: Instant, event: Event, events: &mut Vec<Propagated>) {
        match event {
            Event::IceConnectionStateChange(state) => {
                tracing::debug!(participant = self.id, ?state, "ICE state");
                self.disconnected_since = match state {
                    IceConnectionState::Disconnected => Some(self.disconnected_since.unwrap_or(now)),
                    _ => None,
                };
            }
            Event::MediaAdded(added) if added.direction.is_receiving() => {
                if self.tracks_in.iter().any(|track| track.mid == added.mid) {
                    return;
                }
                if self.tracks_in.len() >= MAX_PUBLISHED_TRACKS {
                    // Each published track is offered to everyone in the room: a client
                    // offering dozens of m-lines must not multiply everyone's work.
                    tracing::info!(participant = self.id, mid = %added.mid, "ignoring a track beyond the limit");
                    return;
                }
                let source = match added.kind {
                    MediaKind::Audio => MediaSource::Microphone,
                    MediaKind::Video if self.screen_mid.as_deref() == Some(&*added.mid.to_string()) => {
                        MediaSource::Screen
                    }
                    MediaKind::Video => MediaSource::Camera,
                };
                let layers = match self.rtc.media(added.mid).map(|media| media.rids_rx()) {
                    Some(Rids::Specific(rids)) if added.kind == MediaKind::Video => {
                        rids.iter().take(MAX_LAYERS).map(|rid| Some(*rid)).collect()
                    }
                    _ => vec![None],
                };
                let layers = layers.into_iter().map(|id| LayerRate { id, bytes: 0, bitrate: 0, seen: None }).collect();
                self.tracks_in.push(TrackIn { mid: added.mid, source, keyframe_requests: Vec::new(), layers });
                events.push(Propagated::TrackOpened { mid: added.mid, kind: added.kind, source });
            }
            Event::PeerStats(stats) => {
                #[cfg(test)]
                if self.estimate_pinned && !self.link_measured {
                    return;
                }
                self.link.record(now, stats.egress_loss_fraction, stats.rtt);
            }
            Event::EgressBitrateEstimate(BweKind::Twcc { estimate, .. }) => {
                #[cfg(test)]
                if self.estimate_pinned {
                    return;
                }
                self.estimate = Some(estimate.as_u64());
            }
            Event::RtpPacket(packet) => {
                if let Some(forwardable) = self.forwardable(packet) {
                    events.push(Propagated::Rtp(Box::new(forwardable)));
                }
            }
            Event::KeyframeRequest(request) => {
                let found = self.tracks_out.iter().find(|track| track.state == TrackOutState::Open(request.mid));
                if let Some(track) = found {
                    let layer = track.forwarder.current().or(track.forwarder.awaiting_keyframe()).unwrap_or(None);
                    events.push(Propagated::KeyframeRequest {
                        origin: track.origin,
                        origin_mid: track.origin_mid,
                        layer,
                        kind: request.kind,
                    });
                }
            }
            _ => {}
        }
    }

    /// Asks this browser for a keyframe of one layer of one of its tracks, at most every
    /// half second per layer.
    pub fn request_keyframe(&mut self, now: Instant, mid: Mid, layer: LayerId, kind: KeyframeRequestKind) {
        let Some(track) = self.tracks_in.iter_mut().find(|track| track.mid == mid) else {
            return;
        };
        match track.keyframe_requests.iter().position(|(requested, _)| *requested == layer) {
            Some(index) => {
                let at = &mut track.keyframe_requests[index].1;
                if now.duration_since(*at) < KEYFRAME_REQUEST_SPACING {
                    return;
                }
                *at = now;
            }
            // One entry per layer the publisher negotiated; a bounded, small list.
            None if track.keyframe_requests.len() < MAX_REMEMBERED => track.keyframe_requests.push((layer, now)),
            None => return,
        }
        let id = self.id;
        let mut direct = self.rtc.direct_api();
        let stream = direct.stream_rx_by_mid(mid, layer);
        tracing::debug!(participant = id, %mid, ?layer, ?kind, found = stream.is_some(), "keyframe requested");
        if let Some(stream) = stream {
            stream.request_keyframe(kind);
        }
    }

    /// Publishing tracks, for a newcomer to subscribe to.
    pub fn published(&self) -> Vec<(Mid, MediaKind, MediaSource)> {
        self.tracks_in
            .iter()
            .map(|track| {
                let kind = if track.source == MediaSource::Microphone { MediaKind::Audio } else { MediaKind::Video };
                (track.mid, kind, track.source)
            })
            .collect()
    }
}

#[cfg(test)]
#[path = "peer_tests.rs"]
mod tests;
