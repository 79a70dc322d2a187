//! The forwarding half of a session: turning incoming RTP into [`Forwardable`] packets,
//! writing them to receivers' send streams rewritten for each, and choosing the simulcast
//! layers and microphones a receiver gets.

use str0m::bwe::Bitrate;
use str0m::format::Codec;
use str0m::media::{MediaKind, Mid};
use str0m::rtp::{ExtensionValues, RtpPacket, RtpWrite, SeqNo, Vp8Descriptor};

use super::*;
use crate::layers::{Allocation, Demand, Layer, NOMINAL_BITRATES, NOMINAL_SINGLE_LAYER, Priority, UPGRADE_HEADROOM};

/// A picture shown this recently keeps its place before cameras that would start, as one
/// that flows does (see `Peer::select_layers`).
const SHOWN_LATELY: Duration = Duration::from_secs(10);

impl Peer {
    /// Writes a packet from `origin` to the matching outgoing track, rewritten for this
    /// receiver.
    pub fn forward(&mut self, origin: ParticipantId, packet: &Forwardable) -> Forwarded {
        let Some(track) = self.tracks_out.iter_mut().find(|track| {
            track.origin == origin
                && track.origin_mid == packet.mid
                && !track.gone
                && matches!(track.state, TrackOutState::Open(_))
        }) else {
            return Forwarded::default();
        };
        let TrackOutState::Open(mid) = track.state else { return Forwarded::default() };
        let mut direct = self.rtc.direct_api();
        let cached = track.ssrc.filter(|ssrc| direct.stream_tx(ssrc).is_some_and(|stream| stream.mid() == mid));
        let ssrc = match cached {
            Some(ssrc) => ssrc,
            None => {
                let Some(stream) = direct.stream_tx_by_mid(mid, None) else {
                    return Forwarded::default();
                };
                track.ssrc = Some(stream.ssrc());
                stream.ssrc()
            }
        };
        let Some(stream) = direct.stream_tx(&ssrc) else {
            return Forwarded::default();
        };
        if stream.queue_info().is_some_and(|queue| queue.packet_count() > MAX_QUEUED_PACKETS) {
            track.forwarder.restart();
            return Forwarded { wants_keyframe: track.forwarder.awaiting_keyframe(), ..Forwarded::default() };
        }
        let Some(out) = track.forwarder.handle(&packet.incoming) else {
            return Forwarded { wants_keyframe: track.forwarder.awaiting_keyframe(), ..Forwarded::default() };
        };
        let source_pt = packet.params.pt();
        let pt = match track.payload_types {
            Some((from, to)) if from == source_pt => to,
            _ => {
                let Some(to) = self.rtc.codec_config().match_params(packet.params).map(|params| params.pt()) else {
                    return Forwarded::default();
                };
                track.payload_types = Some((source_pt, to));
                to
            }
        };
        let ext_vals = ExtensionValues {
            audio_level: packet.audio_level,
            voice_activity: packet.voice_activity,
            video_orientation: packet.video_orientation,
            ..ExtensionValues::default()
        };
        let mut write =
            RtpWrite::new(pt, SeqNo::from(out.seq), out.time, packet.incoming.arrival, packet.payload.clone())
                .marker(packet.marker)
                .ext_vals(ext_vals)
                .nackable(packet.kind == MediaKind::Video);
        if let Some(patch) = packet.vp8.and_then(|descriptor| vp8_patch(&descriptor, out.vp8)) {
            write = write.vp8_patch(patch);
        }
        let mut direct = self.rtc.direct_api();
        let Some(stream) = direct.stream_tx(&ssrc) else {
            return Forwarded::default();
        };
        stream.write_rtp(write);
        Forwarded { sent: true, wants_keyframe: track.forwarder.awaiting_keyframe(), switched: out.switched }
    }

    /// Measures the layer rates of this browser's tracks; call about twice a second.
    pub fn measure(&mut self, now: Instant) {
        let Some(since) = self.measured_at.replace(now) else { return };
        let elapsed = now.saturating_duration_since(since).as_micros() as u64;
        if elapsed == 0 {
            return;
        }
        for rate in self.tracks_in.iter_mut().flat_map(|track| track.layers.iter_mut()) {
            let current = rate.bytes * 8 * 1_000_000 / elapsed;
            // Up quickly, down slowly (over a few seconds): encoders' rates swing from frame
            // to frame, and an underestimate would make layers flap. A layer that stopped
            // decays to zero.
            rate.bitrate =
                if current > rate.bitrate { (rate.bitrate + current) / 2 } else { (rate.bitrate * 7 + current) / 8 };
            rate.bytes = 0;
        }
    }

    /// What this browser sends us now, in bits per second of RTP payload over all its
    /// tracks and layers (as measured twice a second).
    pub fn received_bitrate(&self) -> u64 {
        self.tracks_in.iter().flat_map(|track| track.layers.iter()).map(|rate| rate.bitrate).sum()
    }

    /// The layers of each published video track, lowest first, with what they cost: the
    /// measured rate, or the page's nominal rate for a layer not flowing (paused).
    pub fn video_layers(&self) -> Vec<(Mid, MediaSource, Vec<Layer>)> {
        self.tracks_in
            .iter()
            .filter(|track| track.source != MediaSource::Microphone)
            .map(|track| {
                let single = track.layers.len() == 1;
                let layers = track
                    .layers
                    .iter()
                    .enumerate()
                    .map(|(index, rate)| {
                        let nominal = if single { NOMINAL_SINGLE_LAYER } else { NOMINAL_BITRATES[index.min(2)] };
                        // Between half the nominal rate and the nominal rate (the page's
                        // cap): a keyframe burst must not price a layer out, and a layer
                        // just resuming, still measured low, must not look cheap.
                        // A track without simulcast is always sent in full: its measured
                        // rate is what it costs.
                        let bitrate = match (single, rate.bitrate) {
                            (true, 0) => nominal,
                            (true, measured) => measured.max(30_000),
                            (false, measured) => measured.clamp(nominal / 2, nominal),
                        };
                        Layer { id: rate.id, bitrate }
                    })
                    .collect();
                (track.mid, track.source, layers)
            })
            .collect()
    }

    /// The simulcast layers of each published video track that arrive now (a packet within
    /// `LAYER_FLOWING`): (m-line, layers). A browser sends only the layers its encoder can
    /// make: Chromium makes no top layer from a small camera and drops layers its uplink
    /// cannot carry, whatever it was asked.
    pub fn flowing_layers(&self, now: Instant) -> Vec<(Mid, Vec<LayerId>)> {
        let video = self.tracks_in.iter().filter(|track| track.source != MediaSource::Microphone);
        video
            .map(|track| {
                let flowing = track
                    .layers
                    .iter()
                    .filter(|rate| rate.seen.is_some_and(|seen| now.saturating_duration_since(seen) < LAYER_FLOWING));
                (track.mid, flowing.map(|rate| rate.id).collect())
            })
            .collect()
    }

    /// The simulcast layers this browser negotiated for its camera, lowest first (empty
    /// without simulcast).
    pub fn camera_rids(&self) -> Vec<str0m::media::Rid> {
        let camera = self.tracks_in.iter().find(|track| track.source == MediaSource::Camera);
        camera.map(|track| track.layers.iter().filter_map(|rate| rate.id).collect()).unwrap_or_default()
    }

    /// Chooses the layer of every video track this browser receives, within its bandwidth
    /// estimate (less what audio takes), or `budget_percent` of it while the server is
    /// overloaded. `demand` says how the page shows a track and what
    /// its layers cost; `None` leaves the track alone (not yet known).
    pub fn select_layers<'a>(
        &mut self,
        now: Instant,
        initial_estimate: u64,
        budget_percent: u64,
        mut demand: impl FnMut(ParticipantId, Mid, MediaSource) -> Option<Demand>,
        flowing: impl Fn(ParticipantId, Mid) -> Option<&'a [LayerId]>,
    ) -> Allocation {
        let audio = self
            .tracks_out
            .iter()
            .filter(|track| track.kind == MediaKind::Audio && !track.gone && track.forwarder.want() != Want::Nothing)
            .count();
        let mut indexes = Vec::new();
        let mut demands = Vec::new();
        for (index, track) in self.tracks_out.iter_mut().enumerate() {
            if track.kind != MediaKind::Video || track.gone {
                continue;
            }
            if let Some(mut wanted) = demand(track.origin, track.origin_mid, track.source) {
                // What flows, or, while the forwarder waits for a keyframe (it restarted
                // after the receiver's queue overflowed on a thin line, or has just been
                // chosen), what it waits for: that track keeps its place too. So does the
                // picture a thin line showed until a few seconds ago (its estimate dipped
                // below every picture for a moment): when one fits again it is that one,
                // not the next camera in the page's order.
                if track.forwarder.current().is_some() {
                    track.shown_at = Some(now);
                }
                let waited_for = match track.forwarder.want() {
                    Want::Layer(layer) => Some(layer),
                    Want::Nothing => None,
                };
                let shown_lately = track.shown_at.is_some_and(|at| now.saturating_duration_since(at) < SHOWN_LATELY);
                let lowest = wanted.layers.first().map(|layer| layer.id).filter(|_| shown_lately);
                let current = track.forwarder.current().or(waited_for).or(lowest);
                wanted.current =
                    current.and_then(|layer| wanted.layers.iter().position(|candidate| candidate.id == layer));
                indexes.push(index);
                demands.push(wanted);
            }
        }
        // Follow a falling estimate at once, a rising one over a few rounds: BWE overshoots
        // after probes, and a layer chosen on an overshoot only floods a thin link.
        let estimate = self.estimate.unwrap_or(initial_estimate);
        // What starting the cheapest visible picture needs of the budget, and of the
        // estimate: on a lossy link the budget rises to this, when the estimate allows it,
        // and no further; a steady line keeps it whatever the estimate.
        let one_picture = demands
            .iter()
            .filter(|wanted| wanted.priority != Priority::Off)
            .filter_map(|wanted| wanted.layers.first())
            .map(|layer| layer.bitrate * UPGRADE_HEADROOM / 100)
            .min();
        let one_picture_estimate =
            one_picture.map(|budget| ((budget + audio as u64 * AUDIO_BITRATE) * 100).div_ceil(90));
        let smoothed = match self.budget_estimate {
            // A link that loses packets holds its rate (see `LinkHealth::lossy`), but not
            // below one picture: held at the first dip of the call, a district line with 5%
            // random loss stayed audio-only for good while its estimate came back.
            Some(previous) if estimate > previous && self.link.lossy(now) => {
                previous.max(one_picture_estimate.unwrap_or(0).min(estimate))
            }
            // At most 8% a round (500 ms): doubling takes about five seconds.
            Some(previous) if estimate > previous => estimate.min(previous + previous.max(50_000) * 8 / 100),
            _ => estimate,
        };
        // Nor does a lossy link keep a rate it has not carried: held at the initial
        // estimate (500 kbit/s) or at an estimate read through a policer's burst allowance
        // (8-20 Mbit/s on the 300 kbit/s test line), it started a second camera there as
        // soon as its first reports were in. It gets at most a quarter more than what was
        // sent to it last round, and room for one picture.
        let smoothed = match self.link.lossy(now) {
            true => smoothed.min(one_picture_estimate.unwrap_or(0).max(self.carried * 5 / 4)),
            false => smoothed,
        };
        self.budget_estimate = Some(smoothed);
        let budget = (smoothed * 90 / 100 * budget_percent / 100).saturating_sub(audio as u64 * AUDIO_BITRATE);
        // A line that loses packets at random without queueing them keeps one picture: its
        // estimate dips with every loss report, and a budget that followed it to below the
        // lowest layer left a district line audio-only most of the call.
        let clear = self.link.clear(now);
        let shows = demands.iter().any(|wanted| wanted.priority != Priority::Off && wanted.current.is_some());
        let keeps = self.link.steady(now) || (shows && self.link.holds(now));
        let budget = match !clear && budget_percent == 100 && keeps {
            true => budget.max(one_picture.unwrap_or(0)),
            false => budget,
        };
        // One picture until the link's first reports are in: the initial estimate starts
        // more cameras than a 300 kbit/s line carries, their queue then reads as congestion
        // and the receiver moved between two pictures, one and none for its first 20 s.
        let pictures = match self.link_known() {
            true => usize::MAX,
            false => 1,
        };
        let allocation = crate::layers::allocate_pictures(budget, &demands, clear, pictures);
        self.link.set_floored(now, allocation.floored);
        for ((index, want), wanted) in indexes.into_iter().zip(&allocation.wants).zip(&demands) {
            let track = &mut self.tracks_out[index];
            track.chosen = *want;
            // A chosen layer that does not arrive (not resumed yet, or one the publisher's
            // browser does not make) would leave the receiver waiting for its keyframe: it
            // gets the best lower layer that flows until the chosen one does.
            let forwarded = match *want {
                Want::Layer(Some(chosen)) => {
                    let flowing = flowing(track.origin, track.origin_mid);
                    let below = wanted.layers.iter().map(|layer| layer.id).take_while(|id| *id != Some(chosen));
                    let arrives = |id: &LayerId| flowing.is_some_and(|layers| layers.contains(id));
                    match arrives(&Some(chosen)) {
                        true => *want,
                        false => below.filter(arrives).last().map_or(*want, Want::Layer),
                    }
                }
                other => other,
            };
            track.forwarder.set_want(forwarded);
        }
        // Probe for what the receiver would take on an open link. No padding beyond what is
        // sent: on a thin link sustained padding would only fill the bottleneck's queue. Nor
        // probes on a link that loses packets: its budget does not follow a rising estimate
        // (`LinkHealth::lossy`), and the probes only filled a 300 kbit/s line's queue, whose
        // grown round trip then read as congestion and took its one picture away.
        let audio = audio as u64 * AUDIO_BITRATE;
        let minimum = allocation.used + audio;
        self.carried = minimum;
        let desired = match self.link.lossy(now) {
            true => minimum,
            false => allocation.desired.max(allocation.used) + audio,
        };
        self.rtc.bwe().set_bitrate(Bitrate::bps(minimum), Bitrate::bps(desired));
        allocation
    }

    /// Forwards the audio of `heard` publishers only (the loudest few); the others' audio
    /// pauses and resumes with continuous sequence numbers.
    pub fn select_audio(&mut self, mut heard: impl FnMut(ParticipantId) -> bool) {
        for track in self.tracks_out.iter_mut().filter(|track| track.kind == MediaKind::Audio) {
            let want = if heard(track.origin) { Want::Layer(None) } else { Want::Nothing };
            if track.forwarder.want() != want {
                track.forwarder.set_want(want);
            }
        }
    }

    /// The layers of others' tracks this browser gets, waits for or was chosen (publisher,
    /// m-line, layer): the publisher is asked to send all of them.
    pub fn layers_in_use(&self) -> impl Iterator<Item = (ParticipantId, Mid, LayerId)> + '_ {
        self.tracks_out.iter().filter(|track| !track.gone).flat_map(|track| {
            let current = track.forwarder.current();
            let awaited = track.forwarder.awaiting_keyframe();
            let chosen = match track.chosen {
                Want::Layer(layer) if track.forwarder.want() != Want::Nothing => Some(layer),
                _ => None,
            };
            current.into_iter().chain(awaited).chain(chosen).map(move |layer| (track.origin, track.origin_mid, layer))
        })
    }

    /// The layer forwarded now of each track received from `origin`.
    #[cfg(test)]
    pub fn current_layers(&self, origin: ParticipantId) -> Vec<(MediaKind, Option<LayerId>)> {
        let from = self.tracks_out.iter().filter(|track| track.origin == origin && !track.gone);
        from.map(|track| (track.kind, track.forwarder.current())).collect()
    }

    /// Whether the link's first reports are in ([`crate::layers::LinkHealth::known`]). A
    /// test's pinned estimate plays a known link.
    fn link_known(&self) -> bool {
        #[cfg(test)]
        if self.estimate_pinned && !self.link_measured {
            return true;
        }
        self.link.known()
    }

    /// Plays a link of this capacity: str0m's own estimates are ignored from now on.
    #[cfg(test)]
    pub fn pin_estimate(&mut self, bits_per_second: u64) {
        self.estimate = Some(bits_per_second);
        self.estimate_pinned = true;
    }

    /// Plays an estimate that collapsed on its own (a starved receiver): str0m's estimates
    /// are ignored, the link's loss and round trip are still measured.
    #[cfg(test)]
    pub fn pin_estimate_on_a_measured_link(&mut self, bits_per_second: u64) {
        self.pin_estimate(bits_per_second);
        self.link_measured = true;
    }

    /// The share of packets lost towards this browser in the last second (from its
    /// transport-wide feedback) and the round trip, as last reported.
    pub fn link_report(&self) -> (Option<f32>, Option<Duration>) {
        self.link.last_report()
    }

    /// The link's recent reports and verdicts ([`crate::layers::LinkHealth::describe`]).
    pub fn describe_link(&self, now: Instant) -> String {
        self.link.describe(now)
    }

    /// The bandwidth estimate towards this browser, if str0m has one.
    pub fn estimate(&self) -> Option<u64> {
        self.estimate
    }

    /// Turns an incoming packet into what receivers need, or `None` for a packet of a track
    /// we do not forward (beyond the limit, or unknown).
    pub(super) fn forwardable(&mut self, packet: RtpPacket) -> Option<Forwardable> {
        let ssrc = packet.header.ssrc;
        let (mid, layer) = match self.ssrcs.iter().find(|(known, _, _)| *known == ssrc) {
            Some((_, mid, layer)) => (*mid, *layer),
            None => {
                let stream = self.rtc.direct_api().stream_rx(&ssrc).map(|stream| (stream.mid(), stream.rid()))?;
                if self.ssrcs.len() >= MAX_REMEMBERED {
                    self.ssrcs.remove(0);
                }
                self.ssrcs.push((ssrc, stream.0, stream.1));
                stream
            }
        };
        let track = self.tracks_in.iter_mut().find(|track| track.mid == mid)?;
        let source = track.source;
        if let Some(rate) = track.layers.iter_mut().find(|rate| rate.id == layer) {
            rate.bytes += packet.payload.len() as u64;
            rate.seen = Some(packet.timestamp);
        }
        let pt = packet.header.payload_type;
        let params = match self.payload_params.iter().find(|params| params.pt() == pt) {
            Some(params) => *params,
            None => {
                let params = *self.rtc.codec_config().find(|params| params.pt() == pt)?;
                if self.payload_params.len() >= MAX_REMEMBERED {
                    self.payload_params.remove(0);
                }
                self.payload_params.push(params);
                params
            }
        };
        let spec = params.spec();
        let kind = if source == MediaSource::Microphone { MediaKind::Audio } else { MediaKind::Video };
        let (keyframe, vp8) = match spec.codec {
            Codec::Vp8 => match Vp8Descriptor::parse(&packet.payload) {
                Ok(descriptor) => (descriptor.starts_keyframe(&packet.payload), Some(descriptor)),
                // A VP8 packet whose descriptor does not parse cannot be rewritten: drop it.
                Err(_) => return None,
            },
            Codec::H264 => (crate::forward::h264_starts_keyframe(&packet.payload), None),
            // Audio has no keyframes: any packet may start or switch a stream.
            _ => (kind == MediaKind::Audio, None),
        };
        let vp8_fields = vp8.map_or(Vp8Fields::default(), |descriptor| Vp8Fields {
            picture_id: descriptor.picture_id(),
            tl0_pic_idx: descriptor.tl0_pic_idx(),
        });
        let incoming = Incoming {
            layer,
            ssrc: *ssrc,
            seq: *packet.seq_no,
            time: packet.time.numer(),
            arrival: packet.timestamp,
            clock_rate: spec.clock_rate.get(),
            keyframe,
            vp8: vp8_fields,
        };
        let ext = &packet.header.ext_vals;
        Some(Forwardable {
            mid,
            source,
            kind,
            params,
            incoming,
            marker: packet.header.marker,
            audio_level: ext.audio_level,
            voice_activity: ext.voice_activity,
            video_orientation: ext.video_orientation,
            payload: packet.payload,
            vp8,
        })
    }
}

/// The VP8 descriptor rewrite for one receiver: picture id and TL0PICIDX continue across
/// layer switches. A 7-bit picture id keeps its width.
fn vp8_patch(descriptor: &Vp8Descriptor, fields: Vp8Fields) -> Option<str0m::rtp::Vp8Patch> {
    let build = |picture_id: Option<u16>| {
        let mut builder = descriptor.patch();
        if let Some(picture_id) = picture_id {
            builder = builder.picture_id(picture_id);
        }
        if let Some(index) = fields.tl0_pic_idx.filter(|_| descriptor.tl0_pic_idx().is_some()) {
            builder = builder.tl0_pic_idx(index);
        }
        builder.build().ok()
    };
    let picture_id = fields.picture_id.filter(|_| descriptor.picture_id().is_some());
    build(picture_id).or_else(|| build(picture_id.map(|id| id & 0x7f)))
}
