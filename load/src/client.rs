//! One simulated participant's WebRTC session: a str0m `Rtc` in RTP mode that publishes
//! synthetic VP8/Opus (optionally three simulcast layers) and counts what it receives.
//!
//! Sans-IO like str0m: the driver passes datagrams, timeouts and `now` in and takes
//! transmits out; SDP goes in and out as strings, for whichever signaling carries it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind, Mid, Rid, Simulcast, SimulcastLayer};
use str0m::net::{Protocol, Receive, Transmit};
use str0m::rtp::{ExtensionValues, RtpPacket, RtpWrite};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc};

use crate::Error;
use crate::media::{AUDIO_FRAME, AudioSource, Packet, VideoShape, VideoSource, opus_probe, vp8_probe, wall_micros};
use crate::stats::{Latencies, StreamStats};

/// Rids of the three simulcast layers, low to high, as browsers name them.
pub const SIMULCAST_RIDS: [&str; 3] = ["q", "h", "f"];
/// A source that fell this far behind (an overloaded machine) skips ahead instead of
/// sending a burst.
const MAX_LAG: Duration = Duration::from_millis(500);

/// What a client publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Publication {
    /// Camera video of this shape, if any.
    pub video: Option<VideoShape>,
    /// Send three layers (quarter, half, full) with rids instead of one.
    pub simulcast: bool,
    /// List the simulcast layers highest first in the offer, as Janus's demos do (Janus reads
    /// the first rid as the highest layer); otherwise lowest first, as lienthong's page does
    /// and its server expects (`docs/signaling.md`).
    pub highest_first: bool,
    /// Microphone audio at this bitrate, if any.
    pub audio_bitrate: Option<u32>,
}

impl Publication {
    pub const NOTHING: Publication =
        Publication { video: None, simulcast: false, highest_first: false, audio_bitrate: None };

    pub fn publishes(&self) -> bool {
        self.video.is_some() || self.audio_bitrate.is_some()
    }
}

/// What a client counted while the run was measuring.
#[derive(Debug, Default)]
pub struct Counters {
    pub sent_audio: u64,
    pub sent_video: u64,
    pub streams: Vec<StreamStats>,
    pub latencies: Latencies,
    pub keyframe_requests: u64,
    /// Media the source skipped because the client could not keep up (machine overloaded).
    pub skipped_frames: u64,
}

struct VideoTrack {
    mid: Mid,
    rid: Option<Rid>,
    source: VideoSource,
    next_at: Instant,
    sequence: u64,
}

struct AudioTrack {
    mid: Mid,
    source: AudioSource,
    next_at: Instant,
    sequence: u64,
}

pub struct MediaClient {
    number: u32,
    rtc: Rtc,
    publication: Publication,
    video: Vec<VideoTrack>,
    audio: Option<AudioTrack>,
    pending: Option<SdpPendingOffer>,
    measuring: bool,
    counters: Counters,
    stream_index: HashMap<u32, usize>,
    media_started: bool,
}

impl MediaClient {
    /// A client whose media goes through the UDP socket bound at `local`.
    pub fn new(number: u32, local: SocketAddr, publication: Publication, now: Instant) -> Result<Self, Error> {
        // Only the codecs the tool sends: an answer to a server offer of many m-lines stays
        // small (each m-line lists every enabled codec that the offer has too).
        let mut rtc = Rtc::builder()
            .clear_codecs()
            .enable_opus(true, false)
            .enable_vp8(true)
            .set_rtp_mode(true)
            .set_crypto_provider(Arc::new(str0m::crypto::from_feature_flags()))
            .build(now);
        let candidate = Candidate::host(local, "udp").map_err(|error| Error::Media(error.to_string()))?;
        rtc.add_local_candidate(candidate);
        Ok(MediaClient {
            number,
            rtc,
            publication,
            video: Vec::new(),
            audio: None,
            pending: None,
            measuring: false,
            counters: Counters::default(),
            stream_index: HashMap::new(),
            media_started: false,
        })
    }

    /// The offer for what this client publishes. A client that publishes nothing offers one
    /// receive-only audio m-line (lienthong waits for a first offer from every page).
    pub fn offer(&mut self, now: Instant) -> Result<String, Error> {
        let stream = format!("load-{}", self.number);
        let mut change = self.rtc.sdp_api();
        let mut video_mid = None;
        let mut audio_mid = None;
        if self.publication.audio_bitrate.is_some() {
            audio_mid = Some(change.add_media(MediaKind::Audio, Direction::SendOnly, Some(stream.clone()), None, None));
        }
        if self.publication.video.is_some() {
            let simulcast = self.publication.simulcast.then(|| {
                let mut send: Vec<SimulcastLayer> = SIMULCAST_RIDS.iter().map(|rid| SimulcastLayer::new(rid)).collect();
                if self.publication.highest_first {
                    send.reverse();
                }
                Simulcast { send, recv: Vec::new() }
            });
            video_mid = Some(change.add_media(MediaKind::Video, Direction::SendOnly, Some(stream), None, simulcast));
        }
        if !self.publication.publishes() {
            change.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
        }
        let (offer, pending) = change.apply().ok_or_else(|| Error::Media("nothing to offer".into()))?;
        self.pending = Some(pending);
        if let (Some(mid), Some(bitrate)) = (audio_mid, self.publication.audio_bitrate) {
            self.audio =
                Some(AudioTrack { mid, source: AudioSource::new(self.number, bitrate), next_at: now, sequence: 1 });
        }
        if let (Some(mid), Some(shape)) = (video_mid, self.publication.video) {
            let layers: Vec<(Option<Rid>, VideoShape)> = if self.publication.simulcast {
                SIMULCAST_RIDS.iter().map(|rid| Some(Rid::from(*rid))).zip(shape.simulcast_layers()).collect()
            } else {
                vec![(None, shape)]
            };
            for (rid, shape) in layers {
                let source = VideoSource::new(shape, self.number);
                self.video.push(VideoTrack { mid, rid, source, next_at: now, sequence: 1 });
            }
        }
        Ok(offer.to_sdp_string())
    }

    /// Applies the server's answer to our offer.
    pub fn accept_answer(&mut self, sdp: &str) -> Result<(), Error> {
        let Some(pending) = self.pending.take() else {
            return Err(Error::Signaling("an answer without an offer".into()));
        };
        let answer = SdpAnswer::from_sdp_string(sdp).map_err(|error| Error::Media(format!("answer: {error}")))?;
        self.rtc.sdp_api().accept_answer(pending, answer).map_err(|error| Error::Media(format!("answer: {error}")))
    }

    /// Answers a server's offer (the tracks of others).
    pub fn accept_offer(&mut self, sdp: &str) -> Result<String, Error> {
        // The polite side of perfect negotiation: a crossing offer of ours is dropped.
        self.pending = None;
        let offer = SdpOffer::from_sdp_string(sdp).map_err(|error| Error::Media(format!("offer: {error}")))?;
        let answer = self.rtc.sdp_api().accept_offer(offer).map_err(|error| Error::Media(format!("offer: {error}")))?;
        Ok(answer.to_sdp_string())
    }

    /// A candidate the server trickled (Janus does).
    pub fn add_remote_candidate(&mut self, candidate: &str) {
        match Candidate::from_sdp_string(candidate) {
            Ok(candidate) => self.rtc.add_remote_candidate(candidate),
            Err(error) => tracing::debug!(%error, "ignoring a trickled candidate"),
        }
    }

    pub fn set_measuring(&mut self, measuring: bool) {
        self.measuring = measuring;
    }

    /// Incoming streams (SSRCs) seen so far, measuring or not.
    pub fn streams_seen(&self) -> usize {
        self.stream_index.len()
    }

    /// Whether this client publishes and its media has started (the session is connected).
    pub fn is_sending(&self) -> bool {
        self.media_started && self.publication.publishes()
    }

    pub fn is_alive(&self) -> bool {
        self.rtc.is_alive()
    }

    pub fn into_counters(self) -> Counters {
        self.counters
    }

    /// A datagram from the network.
    pub fn handle_datagram(&mut self, now: Instant, source: SocketAddr, destination: SocketAddr, bytes: &[u8]) {
        let Ok(contents) = bytes.try_into() else {
            return;
        };
        let input = Input::Receive(now, Receive { proto: Protocol::Udp, source, destination, contents });
        if self.rtc.accepts(&input)
            && let Err(error) = self.rtc.handle_input(input)
        {
            tracing::debug!(client = self.number, %error, "input refused");
        }
    }

    /// Lets time pass: str0m's timers, then every media frame that is due.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Err(error) = self.rtc.handle_input(Input::Timeout(now)) {
            tracing::debug!(client = self.number, %error, "timeout refused");
        }
        if self.rtc.is_connected() {
            self.send_due_media(now);
        }
    }

    /// Drains str0m: transmits go to `transmit`. Returns when to call
    /// [`handle_timeout`](Self::handle_timeout) next.
    pub fn poll(&mut self, transmit: &mut impl FnMut(Transmit)) -> Instant {
        loop {
            match self.rtc.poll_output() {
                Ok(Output::Timeout(at)) => return self.next_media_at().map_or(at, |media| media.min(at)),
                Ok(Output::Transmit(packet)) => transmit(packet),
                Ok(Output::Event(event)) => self.handle_event(event),
                Err(error) => {
                    tracing::info!(client = self.number, %error, "media session failed");
                    self.rtc.disconnect();
                    return Instant::now() + Duration::from_secs(1);
                }
            }
        }
    }

    fn next_media_at(&self) -> Option<Instant> {
        if !self.media_started {
            return None;
        }
        let video = self.video.iter().map(|track| track.next_at);
        video.chain(self.audio.as_ref().map(|track| track.next_at)).min()
    }

    fn handle_event(&mut self, event: Event) {
        match event {
            Event::RtpPacket(packet) => self.received(&packet),
            Event::KeyframeRequest(request) => {
                for track in self.video.iter_mut().filter(|track| track.mid == request.mid && track.rid == request.rid)
                {
                    track.source.request_keyframe();
                }
                if self.measuring {
                    self.counters.keyframe_requests += 1;
                }
            }
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                tracing::info!(client = self.number, "ICE disconnected");
            }
            _ => {}
        }
    }

    fn received(&mut self, packet: &RtpPacket) {
        let ssrc = *packet.header.ssrc;
        let video = packet.time.denom() == 90_000;
        let index = *self.stream_index.entry(ssrc).or_insert_with(|| {
            self.counters.streams.push(StreamStats::new(ssrc, video));
            self.counters.streams.len() - 1
        });
        let stream = &mut self.counters.streams[index];
        if !self.measuring {
            return;
        }
        if !stream.record(*packet.seq_no, packet.payload.len()) {
            return;
        }
        let probe = if video { vp8_probe(&packet.payload) } else { opus_probe(&packet.payload) };
        if let Some(probe) = probe {
            stream.frame_sent(packet.header.timestamp, probe.sent_micros);
        }
        if let Some(sent) = stream.sent_at(packet.header.timestamp) {
            self.counters.latencies.add(wall_micros().saturating_sub(sent));
        }
    }

    fn send_due_media(&mut self, now: Instant) {
        if !self.media_started {
            self.media_started = true;
            for track in &mut self.video {
                track.next_at = now;
            }
            if let Some(track) = &mut self.audio {
                track.next_at = now;
            }
        }
        let wallclock = now;
        for index in 0..self.video.len() {
            while self.video[index].next_at <= now {
                let track = &mut self.video[index];
                let interval = track.source.frame_interval();
                if now.duration_since(track.next_at) > MAX_LAG {
                    track.next_at = now;
                    self.counters.skipped_frames += u64::from(self.measuring);
                }
                let packets = track.source.next_frame();
                track.next_at += interval;
                let (mid, rid) = (track.mid, track.rid);
                let sent = self.write(mid, rid, Codec::Vp8, index, packets, wallclock);
                if self.measuring {
                    self.counters.sent_video += sent;
                }
            }
        }
        while let Some(track) = self.audio.as_mut().filter(|track| track.next_at <= now) {
            if now.duration_since(track.next_at) > MAX_LAG {
                track.next_at = now;
            }
            let packet = track.source.next_packet();
            track.next_at += AUDIO_FRAME;
            let mid = track.mid;
            let sent = self.write(mid, None, Codec::Opus, usize::MAX, vec![packet], wallclock);
            if self.measuring {
                self.counters.sent_audio += sent;
            }
        }
    }

    /// Writes packets to the stream of `mid`/`rid`; `video_index` is the video track (or
    /// `usize::MAX` for audio) whose sequence numbers advance. Returns how many went out.
    fn write(
        &mut self,
        mid: Mid,
        rid: Option<Rid>,
        codec: Codec,
        video_index: usize,
        packets: Vec<Packet>,
        wallclock: Instant,
    ) -> u64 {
        let Some(pt) = self.payload_type(mid, codec) else {
            return 0;
        };
        let mut extensions = ExtensionValues::default();
        if codec == Codec::Opus {
            // RFC 6464: a quiet speaker, so no load client wins the active speaker by noise.
            extensions.audio_level = Some(-50);
            extensions.voice_activity = Some(false);
        }
        let mut sent = 0;
        for packet in packets {
            let sequence = match self.video.get_mut(video_index) {
                Some(track) => &mut track.sequence,
                None => match &mut self.audio {
                    Some(track) => &mut track.sequence,
                    None => return sent,
                },
            };
            let number = *sequence;
            *sequence += 1;
            let mut direct = self.rtc.direct_api();
            let Some(stream) = direct.stream_tx_by_mid(mid, rid) else {
                return sent;
            };
            let write = RtpWrite::new(pt, number.into(), packet.rtp_time, wallclock, packet.payload)
                .marker(packet.marker)
                .nackable(codec == Codec::Vp8)
                .ext_vals(extensions.clone());
            stream.write_rtp(write);
            sent += 1;
        }
        sent
    }

    /// The negotiated payload type of `codec` on `mid`.
    fn payload_type(&self, mid: Mid, codec: Codec) -> Option<str0m::media::Pt> {
        let media = self.rtc.media(mid)?;
        let remote = media.remote_pts();
        let mut matching = self.rtc.codec_config().params().iter().filter(|params| params.spec().codec == codec);
        matching.find(|params| remote.is_empty() || remote.contains(&params.pt())).map(|params| params.pt())
    }
}
