use std::time::Duration;

use super::*;

/// A publisher's layer as a packet source: `step` packets of 33 ms frames, three packets a
/// frame, a keyframe every `gop` frames.
struct Source {
    layer: LayerId,
    ssrc: u32,
    seq: u64,
    time: u64,
    picture_id: u16,
    packet: u64,
    gop: u64,
}

impl Source {
    fn new(rid: &str, ssrc: u32, seq: u64, picture_id: u16) -> Self {
        Source { layer: Some(Rid::from(rid)), ssrc, seq, time: 7_000_000, picture_id, packet: 0, gop: 30 }
    }

    fn next(&mut self, start: Instant) -> Incoming {
        let frame = self.packet / 3;
        let first_of_frame = self.packet.is_multiple_of(3);
        let incoming = Incoming {
            layer: self.layer,
            ssrc: self.ssrc,
            seq: self.seq,
            time: self.time + frame * 3000,
            arrival: start + Duration::from_millis(frame * 33),
            clock_rate: 90_000,
            keyframe: first_of_frame && frame.is_multiple_of(self.gop),
            vp8: Vp8Fields {
                picture_id: Some(self.picture_id.wrapping_add(frame as u16) & 0x7fff),
                tl0_pic_idx: Some(frame as u8),
            },
        };
        self.seq += 1;
        self.packet += 1;
        incoming
    }
}

fn low() -> Want {
    Want::Layer(Some(Rid::from("l")))
}

fn high() -> Want {
    Want::Layer(Some(Rid::from("h")))
}

#[test]
fn the_stream_starts_on_a_keyframe_below_the_first_rollover() {
    let start = Instant::now();
    // A long-running publisher: its extended sequence number is past several rollovers.
    let mut source = Source::new("l", 1, 5 * 65536 + 100, 10);
    source.packet = 3; // start mid-GOP
    let mut forwarder = Forwarder::new(low());
    let mut sent = Vec::new();
    for _ in 0..200 {
        sent.extend(forwarder.handle(&source.next(start)));
    }
    assert_eq!(forwarder.switches(), 1);
    let first = sent[0];
    assert!(first.switched && first.seq < 65536, "{first:?}");
    // Nothing before the keyframe at packet 90 (frame 30) went out.
    assert_eq!(sent.len(), 200 + 3 - 90);
    for pair in sent.windows(2) {
        assert_eq!(pair[1].seq, pair[0].seq + 1);
        assert!(!pair[1].switched);
    }
}

#[test]
fn a_switch_waits_for_the_wanted_layers_keyframe_and_stays_continuous() {
    let start = Instant::now();
    let mut low_layer = Source::new("l", 11, 1000, 300);
    let mut high_layer = Source::new("h", 33, 40_000, 9000);
    high_layer.packet = 15; // its keyframes fall elsewhere than the low layer's
    let mut forwarder = Forwarder::new(low());
    let mut sent = Vec::new();
    let mut after_switch_request = 0;
    for step in 0..400 {
        if step == 100 {
            forwarder.set_want(high());
        }
        let (l, h) = (low_layer.next(start), high_layer.next(start));
        let from_low = forwarder.handle(&l);
        let from_high = forwarder.handle(&h);
        if step >= 100 && forwarder.current() == Some(Some(Rid::from("l"))) {
            after_switch_request += 1;
            assert_eq!(forwarder.awaiting_keyframe(), Some(Some(Rid::from("h"))));
            assert!(from_low.is_some(), "the low layer must keep flowing until the switch");
        }
        sent.extend(from_low.into_iter().chain(from_high));
    }
    assert!(after_switch_request > 0, "the switch happened at once, not on a keyframe");
    assert_eq!(forwarder.current(), Some(Some(Rid::from("h"))));
    assert_eq!(forwarder.awaiting_keyframe(), None);
    assert_eq!(forwarder.switches(), 2);
    for pair in sent.windows(2) {
        assert_eq!(pair[1].seq, pair[0].seq + 1, "a gap or jump in sequence numbers");
        assert!(pair[1].time >= pair[0].time, "time went backwards at {:?}", pair[1]);
        let (a, b) = (pair[0].vp8.picture_id.unwrap(), pair[1].vp8.picture_id.unwrap());
        assert!(b == a || b == (a + 1) & 0x7fff, "picture id jumped from {a} to {b}");
    }
    let switch = sent.iter().position(|out| out.switched && out.seq != sent[0].seq).unwrap();
    assert!(sent[switch].time > sent[switch - 1].time, "the new layer's first frame must be later");
}

#[test]
fn pausing_stops_at_once_and_resuming_waits_for_a_keyframe() {
    let start = Instant::now();
    let mut source = Source::new("l", 5, 100, 0);
    let mut forwarder = Forwarder::new(low());
    let mut sent = Vec::new();
    for step in 0..300 {
        if step == 120 {
            forwarder.set_want(Want::Nothing);
        }
        if step == 150 {
            forwarder.set_want(low());
        }
        let out = forwarder.handle(&source.next(start));
        if (120..180).contains(&step) {
            assert!(out.is_none(), "sent while paused or before the next keyframe (step {step})");
        }
        sent.extend(out);
    }
    // Keyframes at packets 0, 90, 180, 270: resumed at 180.
    assert_eq!(sent.len(), 120 + (300 - 180));
    for pair in sent.windows(2) {
        assert_eq!(pair[1].seq, pair[0].seq + 1);
    }
}

#[test]
fn retransmissions_keep_their_numbers_and_pre_switch_packets_are_dropped() {
    let start = Instant::now();
    let mut source = Source::new("l", 5, 100, 0);
    source.packet = 87;
    let mut forwarder = Forwarder::new(low());
    let packets: Vec<Incoming> = (0..10).map(|_| source.next(start)).collect();
    // Packets 87..90 come before the keyframe at 90 and are dropped.
    assert!(packets[..3].iter().all(|packet| forwarder.handle(packet).is_none()));
    let sent: Vec<Outgoing> = packets[3..].iter().filter_map(|packet| forwarder.handle(packet)).collect();
    assert_eq!(sent.len(), 7);
    // A late repair of packet 95 maps to the same number; one from before the switch does not go out.
    let again = forwarder.handle(&packets[8]).unwrap();
    assert_eq!(again.seq, sent[5].seq);
    assert!(forwarder.handle(&packets[1]).is_none());
}

#[test]
fn a_new_encoder_on_the_same_layer_is_a_new_stream() {
    let start = Instant::now();
    let mut before = Source::new("l", 5, 100, 0);
    let mut after = Source::new("l", 6, 30_000, 500);
    let mut forwarder = Forwarder::new(low());
    let mut sent: Vec<Outgoing> = (0..50).filter_map(|_| forwarder.handle(&before.next(start))).collect();
    sent.extend((0..50).filter_map(|_| forwarder.handle(&after.next(start))));
    assert_eq!(sent.len(), 100);
    assert_eq!(forwarder.switches(), 2);
    for pair in sent.windows(2) {
        assert_eq!(pair[1].seq, pair[0].seq + 1);
    }
}

#[test]
fn generated_switch_schedules_never_break_continuity() {
    // A small linear congruential generator: reproducible schedules without a dependency.
    let mut state = 0x2545_f491_u64;
    let mut random = move |bound: u64| {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (state >> 33) % bound
    };
    for _ in 0..200 {
        let start = Instant::now();
        let mut layers = [
            Source::new("l", 1, random(70_000), random(32768) as u16),
            Source::new("m", 2, random(70_000), 7),
            Source::new("h", 3, random(70_000), 9),
        ];
        for layer in &mut layers {
            layer.packet = random(90);
            layer.gop = 5 + random(40);
        }
        let mut forwarder = Forwarder::new(low());
        let mut sent: Vec<Outgoing> = Vec::new();
        for _ in 0..600 {
            if random(50) == 0 {
                let want = match random(4) {
                    0 => Want::Nothing,
                    1 => low(),
                    2 => Want::Layer(Some(Rid::from("m"))),
                    _ => high(),
                };
                forwarder.set_want(want);
            }
            for layer in &mut layers {
                let packet = layer.next(start);
                if let Some(out) = forwarder.handle(&packet) {
                    if let Some(previous) = sent.last() {
                        assert_eq!(out.seq, previous.seq + 1);
                        assert!(out.time >= previous.time);
                        assert!(!out.switched || packet.keyframe, "switched on a non-keyframe");
                    }
                    assert!(forwarder.current() == Some(packet.layer));
                    sent.push(out);
                }
            }
        }
    }
}

#[test]
fn h264_keyframes_are_found_alone_aggregated_and_fragmented() {
    assert!(h264_starts_keyframe(&[0x65, 0x88]), "IDR slice");
    assert!(h264_starts_keyframe(&[0x67, 0x42]), "SPS");
    assert!(!h264_starts_keyframe(&[0x41, 0x9a]), "a P slice");
    // STAP-A with SPS and PPS.
    assert!(h264_starts_keyframe(&[0x78, 0x00, 0x02, 0x67, 0x42, 0x00, 0x02, 0x68, 0xce]));
    assert!(!h264_starts_keyframe(&[0x78, 0x00, 0x02, 0x41, 0x42]));
    // FU-A: start of an IDR, middle of an IDR, start of a P slice.
    assert!(h264_starts_keyframe(&[0x7c, 0x85, 0x00]));
    assert!(!h264_starts_keyframe(&[0x7c, 0x05, 0x00]));
    assert!(!h264_starts_keyframe(&[0x7c, 0x81, 0x00]));
    // Truncated or empty input is not a keyframe, and never panics.
    for payload in [&[][..], &[0x78], &[0x78, 0xff, 0xff, 0x65], &[0x7c]] {
        assert!(!h264_starts_keyframe(payload));
    }
}
