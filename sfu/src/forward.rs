//! Rewriting one forwarded track for one receiver: the receiver sees a single continuous RTP
//! stream (sequence numbers, timestamps, VP8 picture ids) while the SFU moves it between the
//! publisher's simulcast layers, or stops and resumes it.
//!
//! Sans-IO and codec-light: the caller says which layer a packet belongs to and whether it
//! starts a keyframe. A switch to another layer, and the start after a pause, happen only on
//! a keyframe of the wanted layer; until one arrives the current layer keeps flowing, so the
//! picture never freezes on a switch and the decoder never sees a frame whose references it
//! lacks.

use std::time::Instant;

use str0m::media::Rid;

/// A simulcast layer of one published track: its `rid`, or `None` without simulcast.
pub(crate) type LayerId = Option<Rid>;

/// What a receiver should get of a track.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Want {
    /// Nothing: the tile is hidden, off-screen or beyond last-N.
    Nothing,
    Layer(LayerId),
}

/// VP8 descriptor fields that must stay continuous across switches (RFC 7741).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Vp8Fields {
    pub picture_id: Option<u16>,
    pub tl0_pic_idx: Option<u8>,
}

/// One incoming packet, as forwarding sees it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Incoming {
    pub layer: LayerId,
    /// The publisher's SSRC: a layer whose SSRC changed (a new encoder) is a new stream.
    pub ssrc: u32,
    /// Extended sequence number and RTP time, as str0m reports them.
    pub seq: u64,
    pub time: u64,
    pub arrival: Instant,
    /// The codec's clock rate (90 kHz video, 48 kHz Opus).
    pub clock_rate: u32,
    pub keyframe: bool,
    pub vp8: Vp8Fields,
}

/// The numbers to put on the packet sent to the receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Outgoing {
    /// Extended sequence number; starts below 65536 so the receiver's SRTP rollover counter
    /// starts at zero.
    pub seq: u64,
    pub time: u32,
    pub vp8: Vp8Fields,
    /// This packet switched layers (or started the stream).
    pub switched: bool,
}

#[derive(Debug, Clone, Copy)]
struct Current {
    layer: LayerId,
    ssrc: u32,
    /// Packets of this source below this sequence number predate the switch: dropped.
    first_seq: u64,
    seq_offset: u64,
    time_offset: u64,
    picture_id_offset: u16,
    tl0_offset: u8,
}

#[derive(Debug, Clone, Copy)]
struct Last {
    seq: u64,
    time: u64,
    arrival: Instant,
    picture_id: u16,
    tl0_pic_idx: u8,
}

/// The rewriting state of one track towards one receiver.
#[derive(Debug, Clone)]
pub(crate) struct Forwarder {
    want: Want,
    current: Option<Current>,
    /// The highest numbers sent so far (the next switch continues from them).
    last: Option<Last>,
    switches: u64,
}

impl Forwarder {
    pub fn new(want: Want) -> Self {
        Forwarder { want, current: None, last: None, switches: 0 }
    }

    pub fn want(&self) -> Want {
        self.want
    }

    /// Sets what the receiver should get. Stopping takes effect at once; a new layer (or a
    /// start) waits for its keyframe.
    pub fn set_want(&mut self, want: Want) {
        self.want = want;
        if want == Want::Nothing {
            self.current = None;
        }
    }

    /// The layer currently forwarded, if any.
    pub fn current(&self) -> Option<LayerId> {
        self.current.map(|current| current.layer)
    }

    /// The layer whose keyframe is awaited, if the receiver is waiting for one.
    pub fn awaiting_keyframe(&self) -> Option<LayerId> {
        match self.want {
            Want::Layer(layer) if self.current.is_none_or(|current| current.layer != layer) => Some(layer),
            _ => None,
        }
    }

    #[cfg_attr(not(test), allow(dead_code))]
    /// Layer switches done so far (the first start counts).
    pub fn switches(&self) -> u64 {
        self.switches
    }

    /// Drops the current source so the next packet must be a keyframe again (the receiver's
    /// queue overflowed and packets were lost on our side).
    pub fn restart(&mut self) {
        self.current = None;
    }

    /// Decides about one packet: `Some` with the numbers to send it under, or `None` to drop.
    pub fn handle(&mut self, packet: &Incoming) -> Option<Outgoing> {
        let Want::Layer(wanted) = self.want else { return None };
        let same_source = |current: &Current| current.layer == packet.layer && current.ssrc == packet.ssrc;
        let mut switched = false;
        match self.current {
            // The current layer keeps flowing, even when another is wanted, until the wanted
            // one has a keyframe.
            Some(current) if same_source(&current) => {
                if packet.seq < current.first_seq {
                    return None;
                }
            }
            _ if packet.layer == wanted && packet.keyframe => {
                self.current = Some(self.start(packet));
                self.switches += 1;
                switched = true;
            }
            _ => return None,
        }
        let current = self.current?;
        let seq = packet.seq.wrapping_add(current.seq_offset);
        let time = packet.time.wrapping_add(current.time_offset);
        let vp8 = Vp8Fields {
            picture_id: packet.vp8.picture_id.map(|id| id.wrapping_add(current.picture_id_offset) & 0x7fff),
            tl0_pic_idx: packet.vp8.tl0_pic_idx.map(|index| index.wrapping_add(current.tl0_offset)),
        };
        self.remember(seq, time, packet.arrival, vp8);
        Some(Outgoing { seq, time: time as u32, vp8, switched })
    }

    /// The offsets that make `packet` follow on from what the receiver got last.
    fn start(&self, packet: &Incoming) -> Current {
        let (seq, time, picture_id, tl0) = match self.last {
            None => (packet.seq & 0xffff, packet.time & 0xffff_ffff, packet.vp8.picture_id, packet.vp8.tl0_pic_idx),
            Some(last) => {
                // Advance the clock by the wall time between the packets (at least one tick)
                // so frame timing stays plausible for the receiver's jitter buffer.
                let elapsed = packet.arrival.saturating_duration_since(last.arrival);
                let ticks = (elapsed.as_micros() as u64 * u64::from(packet.clock_rate) / 1_000_000).max(1);
                (
                    last.seq + 1,
                    last.time + ticks,
                    Some(last.picture_id.wrapping_add(1) & 0x7fff),
                    Some(last.tl0_pic_idx.wrapping_add(1)),
                )
            }
        };
        Current {
            layer: packet.layer,
            ssrc: packet.ssrc,
            first_seq: packet.seq,
            seq_offset: seq.wrapping_sub(packet.seq),
            time_offset: time.wrapping_sub(packet.time),
            picture_id_offset: match (picture_id, packet.vp8.picture_id) {
                (Some(out), Some(incoming)) => out.wrapping_sub(incoming),
                _ => 0,
            },
            tl0_offset: match (tl0, packet.vp8.tl0_pic_idx) {
                (Some(out), Some(incoming)) => out.wrapping_sub(incoming),
                _ => 0,
            },
        }
    }

    fn remember(&mut self, seq: u64, time: u64, arrival: Instant, vp8: Vp8Fields) {
        let previous = self.last;
        let newer = previous.is_none_or(|last| seq > last.seq);
        if !newer {
            return;
        }
        let keep = |value: Option<u16>, old: Option<u16>| value.or(old).unwrap_or(0);
        self.last = Some(Last {
            seq,
            time: previous.map_or(time, |last| last.time.max(time)),
            arrival,
            picture_id: keep(vp8.picture_id, previous.map(|last| last.picture_id)),
            tl0_pic_idx: vp8.tl0_pic_idx.or(previous.map(|last| last.tl0_pic_idx)).unwrap_or(0),
        });
    }
}

/// Whether an H.264 RTP payload (RFC 6184) starts a keyframe: an IDR slice or the SPS that
/// precedes one, alone, first in a STAP-A, or in the first fragment of an FU-A.
pub(crate) fn h264_starts_keyframe(payload: &[u8]) -> bool {
    const IDR: u8 = 5;
    const SPS: u8 = 7;
    const STAP_A: u8 = 24;
    const FU_A: u8 = 28;
    let is_key = |nal: u8| matches!(nal & 0x1f, IDR | SPS);
    let Some(first) = payload.first() else { return false };
    match first & 0x1f {
        STAP_A => {
            // Aggregated NAL units: 16-bit size, then the unit.
            let mut rest = &payload[1..];
            while rest.len() > 2 {
                let size = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
                let Some(unit) = rest.get(2..2 + size) else { return false };
                if unit.first().is_some_and(|nal| is_key(*nal)) {
                    return true;
                }
                rest = &rest[2 + size..];
            }
            false
        }
        FU_A => payload.get(1).is_some_and(|header| header & 0x80 != 0 && is_key(*header)),
        _ => is_key(*first),
    }
}

#[cfg(test)]
#[path = "forward_tests.rs"]
mod tests;
