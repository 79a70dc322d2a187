//! One participant's WebRTC session: a str0m `Rtc` and the bookkeeping of which tracks it
//! publishes and which of the others' tracks it receives.
//!
//! Sans-IO like str0m itself: the hub passes datagrams and `now` in and takes transmits and
//! [`Propagated`] events out. The browser publishes with its own offers; the server offers
//! the others' tracks. When both offer at once the server wins and ignores the browser's
//! offer; the page (the "polite" side of WebRTC perfect negotiation) rolls back and retries.

use std::time::{Duration, Instant};

use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::media::{Direction, KeyframeRequestKind, MediaData, MediaKind, Mid};
use str0m::net::Transmit;
use str0m::{Event, IceConnectionState, Input, Output, Rtc};

use crate::protocol::ParticipantId;
use crate::room::MediaSource;

/// Minimum spacing of keyframe requests we send to one publisher's track.
const KEYFRAME_REQUEST_SPACING: Duration = Duration::from_millis(500);
/// How long ICE may stay disconnected before the session counts as failed.
const DISCONNECTED_GRACE: Duration = Duration::from_secs(15);
/// Tracks one participant may publish: microphone, camera, screen share, and one spare for a
/// device switch that renegotiates.
const MAX_PUBLISHED_TRACKS: usize = 4;
/// How long a browser may take to answer our offer.
const NEGOTIATION_TIMEOUT: Duration = Duration::from_secs(15);

/// Something a peer's session produced that matters to other peers or to the room.
#[derive(Debug)]
pub(crate) enum Propagated {
    /// The browser started publishing a track.
    TrackOpened { mid: Mid, kind: MediaKind, source: MediaSource },
    /// A frame from one of this browser's tracks.
    Media { source: MediaSource, data: Box<MediaData> },
    /// This browser asks for a keyframe of a track it receives from `origin`.
    KeyframeRequest { origin: ParticipantId, origin_mid: Mid, kind: KeyframeRequestKind },
    /// The session is dead (ICE failed, DTLS error, ...).
    Failed,
}

#[derive(Debug)]
struct TrackIn {
    mid: Mid,
    source: MediaSource,
    last_keyframe_request: Option<Instant>,
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
    pub fn accept_answer(&mut self, sdp: &str) -> Result<Vec<(ParticipantId, Mid)>, String> {
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
                    opened.push((track.origin, track.origin_mid));
                }
            }
        }
        self.tracks_out.retain(|track| !matches!(track.state, TrackOutState::NegotiatingStop(_)));
        Ok(opened)
    }

    /// Starts receiving another participant's track.
    pub fn subscribe(&mut self, origin: ParticipantId, origin_mid: Mid, kind: MediaKind, source: MediaSource) {
        if self.tracks_out.iter().any(|track| track.origin == origin && track.origin_mid == origin_mid && !track.gone) {
            return;
        }
        self.tracks_out.push(TrackOut { origin, origin_mid, kind, source, state: TrackOutState::ToOpen, gone: false });
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
                self.tracks_in.push(TrackIn { mid: added.mid, source, last_keyframe_request: None });
                events.push(Propagated::TrackOpened { mid: added.mid, kind: added.kind, source });
            }
            Event::MediaData(data) => {
                let Some(track) = self.tracks_in.iter().find(|track| track.mid == data.mid) else {
                    return;
                };
                let source = track.source;
                if !data.contiguous {
                    self.request_keyframe(now, data.mid, KeyframeRequestKind::Fir);
                }
                events.push(Propagated::Media { source, data: Box::new(data) });
            }
            Event::KeyframeRequest(request) => {
                let found = self.tracks_out.iter().find(|track| track.state == TrackOutState::Open(request.mid));
                if let Some(track) = found {
                    events.push(Propagated::KeyframeRequest {
                        origin: track.origin,
                        origin_mid: track.origin_mid,
                        kind: request.kind,
                    });
                }
            }
            _ => {}
        }
    }

    /// Asks this browser for a keyframe on one of its tracks, at most every half second.
    pub fn request_keyframe(&mut self, now: Instant, mid: Mid, kind: KeyframeRequestKind) {
        let Some(track) = self.tracks_in.iter_mut().find(|track| track.mid == mid) else {
            return;
        };
        if track.last_keyframe_request.is_some_and(|last| now.duration_since(last) < KEYFRAME_REQUEST_SPACING) {
            return;
        }
        track.last_keyframe_request = Some(now);
        if let Some(mut writer) = self.rtc.writer(mid) {
            // Fails only when the track does not receive; nothing to do then.
            let _ = writer.request_keyframe(None, kind);
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

    /// Writes a frame from `origin` to the matching outgoing track. Returns whether it went out.
    pub fn forward(&mut self, origin: ParticipantId, data: &MediaData) -> bool {
        let Some(mid) = self.tracks_out.iter().find_map(|track| match track.state {
            TrackOutState::Open(mid) if track.origin == origin && track.origin_mid == data.mid && !track.gone => {
                Some(mid)
            }
            _ => None,
        }) else {
            return false;
        };
        let Some(writer) = self.rtc.writer(mid) else {
            return false;
        };
        let Some(pt) = writer.match_params(data.params) else {
            return false;
        };
        if let Err(error) = writer.write(pt, data.network_time, data.time, data.data.clone()) {
            tracing::info!(participant = self.id, %error, "cannot forward media");
            self.failed = true;
            return false;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn rtc(now: Instant) -> Rtc {
        Rtc::builder().set_crypto_provider(Arc::new(str0m::crypto::from_feature_flags())).build(now)
    }

    /// A browser stand-in (another str0m) that publishes one audio track.
    fn browser_offer(now: Instant) -> String {
        let mut browser = rtc(now);
        let mut change = browser.sdp_api();
        change.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
        let (offer, _pending) = change.apply().expect("an offer");
        offer.to_sdp_string()
    }

    #[test]
    fn a_browser_that_never_answers_our_offer_is_cut_off() {
        let start = Instant::now();
        let mut peer = Peer::new(1, rtc(start));
        assert!(peer.accept_offer(&browser_offer(start), None).unwrap().is_some());
        assert!(peer.offer_if_needed(start).is_none(), "nothing to offer yet");

        peer.subscribe(2, Mid::from("0"), MediaKind::Video, MediaSource::Camera);
        assert!(peer.offer_if_needed(start).is_some());
        // While our offer is pending, a crossing browser offer is ignored, not answered.
        assert_eq!(peer.accept_offer(&browser_offer(start), None), Ok(None));

        let mut events = Vec::new();
        peer.poll(start + Duration::from_secs(5), &mut |_| {}, &mut events);
        assert!(!events.iter().any(|event| matches!(event, Propagated::Failed)));
        peer.poll(start + NEGOTIATION_TIMEOUT + Duration::from_secs(1), &mut |_| {}, &mut events);
        assert!(events.iter().any(|event| matches!(event, Propagated::Failed)));
    }

    /// Runs a browser stand-in (str0m) against a `Peer` in memory, with a virtual clock,
    /// until `done` says so or 10 virtual seconds pass. Returns the peer's events and the
    /// virtual time reached.
    fn run_in_memory(
        browser: &mut Rtc,
        peer: &mut Peer,
        start: Instant,
        mut done: impl FnMut(&[Propagated]) -> bool,
    ) -> (Vec<Propagated>, Instant) {
        let mut now = start;
        let mut events = Vec::new();
        while now < start + Duration::from_secs(10) && !done(&events) {
            let mut browser_due = now + Duration::from_millis(50);
            loop {
                match browser.poll_output().expect("browser output") {
                    Output::Timeout(at) => {
                        browser_due = browser_due.min(at);
                        break;
                    }
                    Output::Transmit(packet) => {
                        let contents = (&*packet.contents).try_into().expect("a datagram");
                        let receive = str0m::net::Receive {
                            proto: packet.proto,
                            source: packet.source,
                            destination: packet.destination,
                            contents,
                        };
                        peer.handle_input(Input::Receive(now, receive));
                    }
                    Output::Event(_) => {}
                }
            }
            let peer_due = peer.poll(
                now,
                &mut |packet| {
                    let contents = (&*packet.contents).try_into().expect("a datagram");
                    let receive = str0m::net::Receive {
                        proto: packet.proto,
                        source: packet.source,
                        destination: packet.destination,
                        contents,
                    };
                    browser.handle_input(Input::Receive(now, receive)).expect("browser input");
                },
                &mut events,
            );
            now = browser_due.min(peer_due).max(now + Duration::from_millis(1));
            browser.handle_input(Input::Timeout(now)).expect("browser timeout");
            peer.handle_input(Input::Timeout(now));
        }
        (events, now)
    }

    #[test]
    fn a_participant_publishes_at_most_four_tracks() {
        let start = Instant::now();
        let mut browser = rtc(start);
        browser.add_local_candidate(str0m::Candidate::host("10.30.1.7:50000".parse().unwrap(), "udp").unwrap());
        let mut change = browser.sdp_api();
        for _ in 0..10 {
            change.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
        }
        let (offer, pending) = change.apply().expect("an offer");

        let mut server = rtc(start);
        server.add_local_candidate(str0m::Candidate::host("10.20.0.5:10000".parse().unwrap(), "udp").unwrap());
        let mut peer = Peer::new(1, server);
        let answer = peer.accept_offer(&offer.to_sdp_string(), None).unwrap().expect("an answer");
        browser.sdp_api().accept_answer(pending, SdpAnswer::from_sdp_string(&answer).unwrap()).unwrap();

        let (events, now) = run_in_memory(&mut browser, &mut peer, start, |events| {
            events.iter().filter(|event| matches!(event, Propagated::TrackOpened { .. })).count()
                >= MAX_PUBLISHED_TRACKS
        });
        // Run on: nothing beyond the limit may show up later.
        let (later, _) = run_in_memory(&mut browser, &mut peer, now, |_| false);
        assert!(browser.is_connected(), "the in-memory connection did not come up");
        let events: Vec<Propagated> = events.into_iter().chain(later).collect();
        let opened = events.iter().filter(|event| matches!(event, Propagated::TrackOpened { .. })).count();
        assert_eq!(opened, MAX_PUBLISHED_TRACKS);
        assert_eq!(peer.published().len(), MAX_PUBLISHED_TRACKS);
    }

    #[test]
    fn garbage_sdp_is_an_error_not_a_panic() {
        let start = Instant::now();
        let mut peer = Peer::new(1, rtc(start));
        assert!(peer.accept_offer("v=0\r\nnonsense", None).is_err());
        assert!(peer.accept_answer("v=0").is_ok(), "an answer without our offer is ignored");
    }
}
