//! In-memory meetings for the core's tests: browser stand-ins (str0m clients) that join over
//! the signaling protocol, negotiate, publish synthetic media and count what they receive,
//! all exchanging datagrams with one [`Conference`] on a virtual clock.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lienthong_config::Room as RoomConfig;
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::media::{Direction, KeyframeRequestKind, MediaKind, MediaTime, Mid, Rid, Simulcast, SimulcastLayer};
use str0m::net::Receive;
use str0m::{Candidate, Event, Input as RtcInput, Output as RtcOutput, Rtc};

use super::{Command, Conference, Input, MediaSettings, Output, Signal};
use crate::net::Datagram;
use crate::protocol::{ClientMessage, ParticipantId, ServerMessage};

/// The server's media address in these tests (the province's hub).
pub const SERVER: &str = "10.20.0.5:10000";

pub fn room(name: &str, pin: &str) -> RoomConfig {
    RoomConfig {
        name: name.into(),
        title: format!("Phòng {name}"),
        pin: pin.into(),
        chair_pin: format!("{pin}9"),
        sites: vec!["UBND tỉnh".into(), "Huyện A".into(), "Huyện B".into()],
        last_n: 12,
        video_codec: lienthong_config::VideoCodec::Vp8,
        max_participants: 50,
    }
}

/// A browser stand-in.
pub struct Browser {
    pub id: ParticipantId,
    pub rtc: Rtc,
    pub address: SocketAddr,
    pending: Option<SdpPendingOffer>,
    pub messages: Vec<ServerMessage>,
    pub closed: Option<String>,
    /// This browser's own tracks.
    pub published: Vec<(Mid, MediaKind)>,
    /// Its camera's simulcast layers, lowest first (empty without simulcast).
    pub rids: Vec<Rid>,
    /// Negotiated layers this browser never sends (Chromium makes no top layer from a
    /// small camera, whatever it is asked).
    pub unmade: Vec<Rid>,
    /// Frames received per incoming m-line.
    pub received: HashMap<Mid, u64>,
    /// Keyframe requests the server sent for this browser's tracks.
    pub keyframe_requests: u64,
    /// Media RTP packets received per incoming m-line: the sequence ranges of the frames
    /// str0m assembled (BWE padding and probes carry no frame and are not counted).
    pub packets: HashMap<Mid, u64>,
    /// Incoming video delta frames after a gap (str0m could not deliver what came before them
    /// whole and in order), which a decoder cannot use.
    pub broken_frames: u64,
    /// Messages the browser still has to send (answers to server offers).
    outbox: Vec<ClientMessage>,
    frames_written: u64,
    next_frame: Option<Instant>,
    /// The RFC 6464 level its microphone reports (-127: silence); -30 is speech.
    pub audio_level: i8,
}

impl Browser {
    /// The participant ids whose streams this browser receives (from the `p<ID>` stream ids).
    pub fn origin_of(&self, mid: Mid) -> Option<ParticipantId> {
        let stream = self.rtc.media(mid)?.stream_id().to_owned();
        stream.strip_prefix('p')?.split('-').next()?.parse().ok()
    }

    /// Frames received from `origin` of this kind.
    pub fn frames_from(&self, origin: ParticipantId, kind: MediaKind) -> u64 {
        self.received
            .iter()
            .filter(|(mid, _)| self.origin_of(**mid) == Some(origin))
            .filter(|(mid, _)| self.rtc.media(**mid).is_some_and(|media| media.kind() == kind))
            .map(|(_, count)| *count)
            .sum()
    }
}

pub struct Meeting {
    pub conference: Conference,
    pub now: Instant,
    pub browsers: Vec<Browser>,
    next_id: ParticipantId,
    /// Drops every n-th media-sized datagram to and from these browser addresses.
    pub lossy: Vec<(SocketAddr, u64)>,
    /// The lossy links eat small datagrams too (audio, RTCP, STUN): set once sessions run.
    pub lossy_any_size: bool,
    pub datagrams_seen: u64,
    /// Times the core asked to be woken again within a millisecond (what the hub's driver
    /// turns into a wake-up of at least a millisecond each).
    pub prompt_wakeups: u64,
    /// The latest operator listing.
    pub status: Vec<crate::status::RoomStatus>,
}

impl Meeting {
    pub fn new(rooms: &[RoomConfig]) -> Self {
        let now = Instant::now();
        let crypto = Arc::new(str0m::crypto::from_feature_flags());
        let certificate = crypto.dtls_provider.generate_certificate().expect("a DTLS certificate");
        let media = MediaSettings {
            local_addresses: vec![SERVER.parse().unwrap()],
            ice_tcp: true,
            ice: None,
            crypto,
            certificate,
        };
        Meeting {
            conference: Conference::new(now, rooms, media),
            now,
            browsers: Vec::new(),
            next_id: 1,
            lossy: Vec::new(),
            lossy_any_size: false,
            datagrams_seen: 0,
            prompt_wakeups: 0,
            status: Vec::new(),
        }
    }

    /// Opens a signaling connection and joins; returns the browser's index.
    pub fn join(&mut self, room: &str, site: &str, pin: &str) -> usize {
        let id = self.next_id;
        self.next_id += 1;
        let address: SocketAddr = format!("10.30.{}.7:50000", id).parse().unwrap();
        let mut rtc = Rtc::builder().set_crypto_provider(Arc::new(str0m::crypto::from_feature_flags())).build(self.now);
        rtc.add_local_candidate(Candidate::host(address, "udp").unwrap());
        self.browsers.push(Browser {
            id,
            rtc,
            address,
            pending: None,
            messages: Vec::new(),
            closed: None,
            published: Vec::new(),
            rids: Vec::new(),
            unmade: Vec::new(),
            received: HashMap::new(),
            keyframe_requests: 0,
            packets: HashMap::new(),
            broken_frames: 0,
            outbox: Vec::new(),
            frames_written: 0,
            next_frame: None,
            audio_level: -30,
        });
        self.command(Command::Open { id, address: address.ip(), host: None });
        let join = ClientMessage::Join {
            v: crate::protocol::PROTOCOL_VERSION,
            room: room.into(),
            name: format!("Cán bộ {site}"),
            site: site.into(),
            pin: pin.into(),
            resume: None,
        };
        self.command(Command::Message { id, message: join });
        self.browsers.len() - 1
    }

    /// The browser offers a microphone and a camera and starts sending media.
    pub fn publish(&mut self, index: usize) {
        self.publish_layers(index, &[]);
    }

    /// Like [`Meeting::publish`], the camera in these simulcast layers (lowest first), as the
    /// page sends them: each layer three times the size of the one below.
    pub fn publish_layers(&mut self, index: usize, rids: &[&str]) {
        let browser = &mut self.browsers[index];
        browser.rids = rids.iter().map(|rid| Rid::from(*rid)).collect();
        let simulcast = (!rids.is_empty()).then(|| {
            let mut simulcast = Simulcast::new();
            for rid in rids {
                simulcast.add_send_layer(SimulcastLayer::new(rid));
            }
            simulcast
        });
        let mut change = browser.rtc.sdp_api();
        let audio = change.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
        let video = change.add_media(MediaKind::Video, Direction::SendOnly, None, None, simulcast);
        let (offer, pending) = change.apply().expect("an offer");
        browser.pending = Some(pending);
        browser.published = vec![(audio, MediaKind::Audio), (video, MediaKind::Video)];
        browser.next_frame = Some(self.now);
        let id = browser.id;
        self.command(Command::Message {
            id,
            message: ClientMessage::Offer { sdp: offer.to_sdp_string(), screen_mid: None },
        });
    }

    pub fn command(&mut self, command: Command) {
        self.conference.handle_input(self.now, Input::Command(command));
        self.pump();
    }

    /// Runs the virtual clock until `done` holds or `limit` of virtual time passes; returns
    /// whether `done` held.
    pub fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&Meeting) -> bool) -> bool {
        let end = self.now + limit;
        while self.now < end {
            if done(self) {
                return true;
            }
            let due = self.pump();
            if due <= self.now + Duration::from_millis(1) {
                self.prompt_wakeups += 1;
            }
            let next = self.browsers_due().map_or(due, |at| at.min(due));
            self.now = next.max(self.now + Duration::from_millis(1)).min(end);
            for browser in &mut self.browsers {
                browser.rtc.handle_input(RtcInput::Timeout(self.now)).expect("browser timeout");
            }
            self.write_media();
            self.conference.handle_input(self.now, Input::Timeout);
        }
        done(self)
    }

    /// The browser stops sending media (its tracks stay negotiated).
    /// What `pick` takes from each message browser `index` was sent, oldest first.
    pub fn told<T>(&self, index: usize, pick: impl FnMut(&ServerMessage) -> Option<T>) -> Vec<T> {
        self.browsers[index].messages.iter().filter_map(pick).collect()
    }

    pub fn stop_publishing(&mut self, index: usize) {
        self.browsers[index].next_frame = None;
    }

    fn browsers_due(&self) -> Option<Instant> {
        self.browsers.iter().filter_map(|browser| browser.next_frame).min()
    }

    /// Exchanges everything the core and the browsers have to say until both are quiet;
    /// returns when the core next wants time.
    fn pump(&mut self) -> Instant {
        loop {
            let mut quiet = true;
            let deadline = loop {
                match self.conference.poll_output() {
                    Output::Timeout(at) => break at,
                    Output::Transmit(packet) => {
                        quiet = false;
                        if self.loses(packet.destination, packet.contents.len()) {
                            continue;
                        }
                        let Some(browser) = self.browsers.iter_mut().find(|b| b.address == packet.destination) else {
                            continue;
                        };
                        let contents = (&*packet.contents).try_into().expect("a datagram");
                        let receive = Receive {
                            proto: packet.proto,
                            source: packet.source,
                            destination: packet.destination,
                            contents,
                        };
                        browser.rtc.handle_input(RtcInput::Receive(self.now, receive)).expect("browser input");
                    }
                    Output::Signal(id, signal) => {
                        quiet = false;
                        self.signal(id, signal);
                    }
                    Output::Rooms(_) => {}
                    Output::Status(status) => self.status = status,
                }
            };
            let mut datagrams = Vec::new();
            for browser in &mut self.browsers {
                poll_browser(browser, &mut datagrams);
            }
            for datagram in datagrams {
                quiet = false;
                if self.loses(datagram.source, datagram.data.len()) {
                    continue;
                }
                self.conference.handle_input(self.now, Input::Datagram(datagram));
            }
            let mut messages = Vec::new();
            for browser in &mut self.browsers {
                messages.extend(browser.outbox.drain(..).map(|message| (browser.id, message)));
            }
            for (id, message) in messages {
                quiet = false;
                self.conference.handle_input(self.now, Input::Command(Command::Message { id, message }));
            }
            if quiet {
                return deadline;
            }
        }
    }

    /// Whether the lossy link of `address` eats this datagram: only media-sized ones, so
    /// ICE and DTLS still come up.
    fn loses(&mut self, address: SocketAddr, size: usize) -> bool {
        let Some((_, every)) = self.lossy.iter().find(|(lossy, _)| *lossy == address) else { return false };
        if size < 300 && !self.lossy_any_size {
            return false;
        }
        self.datagrams_seen += 1;
        self.datagrams_seen.is_multiple_of(*every)
    }

    fn signal(&mut self, id: ParticipantId, signal: Signal) {
        let Some(browser) = self.browsers.iter_mut().find(|browser| browser.id == id) else { return };
        match signal {
            Signal::Close(reason) => {
                // The first close is the one a real connection acts on.
                browser.closed.get_or_insert(reason);
            }
            Signal::Message(message) => {
                match &message {
                    ServerMessage::Answer { sdp } => {
                        if let Some(pending) = browser.pending.take() {
                            let answer = SdpAnswer::from_sdp_string(sdp).expect("a valid answer");
                            browser.rtc.sdp_api().accept_answer(pending, answer).expect("answer accepted");
                        }
                    }
                    ServerMessage::Offer { sdp } => {
                        let offer = SdpOffer::from_sdp_string(sdp).expect("a valid offer");
                        let answer = browser.rtc.sdp_api().accept_offer(offer).expect("offer accepted");
                        browser.outbox.push(ClientMessage::Answer { sdp: answer.to_sdp_string() });
                    }
                    _ => {}
                }
                browser.messages.push(message);
            }
        }
    }

    /// Publishing browsers send a 20 ms audio frame and, every 100 ms, a video frame (a
    /// keyframe every second).
    fn write_media(&mut self) {
        let now = self.now;
        for browser in &mut self.browsers {
            let Some(at) = browser.next_frame else { continue };
            if at > now || !browser.rtc.is_connected() {
                continue;
            }
            browser.next_frame = Some(at + Duration::from_millis(20));
            browser.frames_written += 1;
            let count = browser.frames_written;
            let level = browser.audio_level;
            for (mid, kind) in browser.published.clone() {
                let Some(writer) = browser.rtc.writer(mid) else { continue };
                let codec = if kind == MediaKind::Audio { Codec::Opus } else { Codec::Vp8 };
                let Some(pt) = writer.payload_params().find(|params| params.spec().codec == codec).map(|p| p.pt())
                else {
                    continue;
                };
                if kind == MediaKind::Audio {
                    let time = MediaTime::new(count * 960, str0m::media::Frequency::FORTY_EIGHT_KHZ);
                    let _ = writer.audio_level(level, level > -127).write(pt, now, time, vec![0xfc; 40]);
                } else if count.is_multiple_of(5) {
                    let time = MediaTime::new(count * 1800, str0m::media::Frequency::NINETY_KHZ);
                    let keyframe = count.is_multiple_of(50);
                    if browser.rids.is_empty() {
                        let _ = writer.write(pt, now, time, vp8_frame(keyframe, 2400));
                        continue;
                    }
                    drop(writer);
                    // Like the page: only the layers the last `layers` message named (all
                    // until told).
                    let told = browser.messages.iter().rev().find_map(|message| match message {
                        ServerMessage::Layers { active } => Some(active.clone()),
                        _ => None,
                    });
                    let mut size = 600;
                    for rid in browser.rids.clone() {
                        let paused = told.as_ref().is_some_and(|active| !active.contains(&rid.to_string()));
                        if paused || browser.unmade.contains(&rid) {
                            size *= 3;
                            continue;
                        }
                        let Some(writer) = browser.rtc.writer(mid) else { break };
                        let _ = writer.rid(rid).write(pt, now, time, vp8_frame(keyframe, size));
                        size *= 3;
                    }
                }
            }
        }
    }
}

/// A VP8 frame of `size` bytes whose first byte marks it as a keyframe or not (RFC 6386
/// section 9.1: bit 0 of the frame tag is 0 for a keyframe), with the keyframe start code.
pub fn vp8_frame(keyframe: bool, size: usize) -> Vec<u8> {
    let mut frame = vec![0x55; size];
    frame[0] = if keyframe { 0x10 } else { 0x11 };
    frame[3..6].copy_from_slice(&[0x9d, 0x01, 0x2a]);
    frame
}

fn poll_browser(browser: &mut Browser, datagrams: &mut Vec<Datagram>) {
    loop {
        match browser.rtc.poll_output().expect("browser output") {
            RtcOutput::Timeout(_) => return,
            RtcOutput::Transmit(packet) => datagrams.push(Datagram {
                proto: packet.proto,
                source: packet.source,
                destination: packet.destination,
                data: packet.contents.to_vec(),
            }),
            RtcOutput::Event(Event::MediaData(data)) => {
                // Audio is not retransmitted (Opus FEC covers it in the decoder): only video
                // counts, once its stream runs (a receiver cannot ask for what came before its
                // first packet; a real one asks for a keyframe). A keyframe after a gap is
                // not broken: a decoder starts again from it. That is what a layer switch
                // makes when the new layer's keyframe arrives before the end of the old
                // layer's frame (the rest of that frame is not forwarded).
                let video = browser.rtc.media(data.mid).is_some_and(|media| media.kind() == MediaKind::Video);
                let keyframe = data.data.first().is_some_and(|tag| tag & 1 == 0);
                if !data.contiguous && !keyframe && video && browser.received.contains_key(&data.mid) {
                    browser.broken_frames += 1;
                }
                let packets = (**data.seq_range.end()).saturating_sub(**data.seq_range.start()) + 1;
                *browser.packets.entry(data.mid).or_default() += packets;
                *browser.received.entry(data.mid).or_default() += 1;
            }
            RtcOutput::Event(Event::KeyframeRequest(_)) => browser.keyframe_requests += 1,
            RtcOutput::Event(_) => {}
        }
    }
}

/// A receiver asks the server for a keyframe on one of its incoming video m-lines.
pub fn request_keyframe(browser: &mut Browser, mid: Mid) {
    if let Some(mut writer) = browser.rtc.writer(mid) {
        let _ = writer.request_keyframe(None, KeyframeRequestKind::Pli);
    }
}
