//! Synthetic media: VP8 frames with a real keyframe structure packetized into RTP payloads
//! (RFC 7741), Opus-shaped audio packets, and the probe every frame carries so a receiver can
//! tell who sent it and when.
//!
//! Nothing here decodes or encodes pictures: an SFU never does either. What matters to an SFU
//! is what it parses: the VP8 payload descriptor (start of partition, picture id), the key
//! frame bit and start code of the VP8 payload header, frame sizes (a keyframe is many
//! packets, a delta frame one or two), the marker bit on a frame's last packet, and a
//! keyframe sent promptly when a receiver asks for one.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Largest RTP payload we produce; keeps the SRTP datagram under 1200 bytes like browsers.
pub const MAX_PAYLOAD: usize = 1100;
/// RTP clock rate of video.
pub const VIDEO_CLOCK: u64 = 90_000;
/// RTP clock rate of Opus.
pub const AUDIO_CLOCK: u64 = 48_000;
/// Opus packet duration.
pub const AUDIO_FRAME: Duration = Duration::from_millis(20);

/// Marks a probe inside a payload.
const PROBE_MAGIC: [u8; 4] = *b"LTLD";
/// Bytes of a probe: magic, publisher number, send time in µs since the Unix epoch.
pub const PROBE_LEN: usize = 4 + 4 + 8;
/// Length of a VP8 keyframe's payload header: 3-byte frame tag, start code, width, height.
const VP8_KEYFRAME_HEADER: usize = 10;
/// Length of a VP8 delta frame's payload header: the frame tag.
const VP8_DELTA_HEADER: usize = 3;
/// Opus TOC byte: config 31 (CELT fullband, 20 ms), mono, one frame.
const OPUS_TOC: u8 = 0xF8;

/// Who sent a frame and when: carried at the start of every frame's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    /// The load tool's number for the publishing client.
    pub publisher: u32,
    /// Send time in microseconds since the Unix epoch (a clock every process on the machine
    /// shares, so the tool may measure another process's clients too).
    pub sent_micros: u64,
}

impl Probe {
    pub fn now(publisher: u32) -> Self {
        Probe { publisher, sent_micros: wall_micros() }
    }

    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&PROBE_MAGIC);
        out.extend_from_slice(&self.publisher.to_be_bytes());
        out.extend_from_slice(&self.sent_micros.to_be_bytes());
    }

    fn read(bytes: &[u8]) -> Option<Probe> {
        let probe = bytes.get(..PROBE_LEN)?;
        if probe[..4] != PROBE_MAGIC {
            return None;
        }
        let publisher = u32::from_be_bytes(probe[4..8].try_into().ok()?);
        let sent_micros = u64::from_be_bytes(probe[8..16].try_into().ok()?);
        Some(Probe { publisher, sent_micros })
    }
}

/// Microseconds since the Unix epoch.
pub fn wall_micros() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|elapsed| elapsed.as_micros() as u64).unwrap_or(0)
}

/// One RTP packet's worth of media, before str0m adds the header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    pub payload: Vec<u8>,
    /// The last packet of a video frame (the RTP marker bit).
    pub marker: bool,
    /// RTP timestamp in the stream's clock rate.
    pub rtp_time: u32,
}

/// What one video layer looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VideoShape {
    pub width: u16,
    pub height: u16,
    pub frames_per_second: u32,
    /// Average bitrate including keyframes, in bits per second.
    pub bitrate: u32,
    /// A keyframe at least this often even when nobody asks.
    pub keyframe_interval: Duration,
}

impl VideoShape {
    /// 640×360 at 30 frames/s and 600 kbit/s: what a browser sends for a 360p camera.
    pub const P360: VideoShape = VideoShape {
        width: 640,
        height: 360,
        frames_per_second: 30,
        bitrate: 600_000,
        keyframe_interval: Duration::from_secs(10),
    };

    /// The three simulcast layers a browser sends for this shape: quarter, half and full
    /// resolution, with bitrates in the proportions libwebrtc uses (about 1:3:9 by area).
    pub fn simulcast_layers(&self) -> [VideoShape; 3] {
        let scaled = |divisor: u16, bitrate_divisor: u32| VideoShape {
            width: self.width / divisor,
            height: self.height / divisor,
            bitrate: self.bitrate / bitrate_divisor,
            ..*self
        };
        [scaled(4, 8), scaled(2, 3), *self]
    }
}

/// A VP8 encoder stand-in: frame after frame at the shape's rate, a keyframe at the start,
/// every `keyframe_interval` and soon after a request.
#[derive(Debug)]
pub struct VideoSource {
    shape: VideoShape,
    publisher: u32,
    frame_index: u64,
    picture_id: u16,
    frames_since_keyframe: u64,
    keyframe_requested: bool,
    /// Cheap deterministic filler so payloads are not all zeros.
    noise: u32,
}

impl VideoSource {
    pub fn new(shape: VideoShape, publisher: u32) -> Self {
        VideoSource {
            shape,
            publisher,
            frame_index: 0,
            picture_id: (publisher as u16).wrapping_mul(997) & 0x7FFF,
            frames_since_keyframe: 0,
            keyframe_requested: true,
            noise: publisher.wrapping_mul(2_654_435_761).max(1),
        }
    }

    /// Time between frames.
    pub fn frame_interval(&self) -> Duration {
        Duration::from_secs(1) / self.shape.frames_per_second.max(1)
    }

    /// A receiver asked for a keyframe (PLI or FIR); the next frame is one.
    pub fn request_keyframe(&mut self) {
        self.keyframe_requested = true;
    }

    /// The next frame's packets. Frame `n` has RTP time `n × 90000 / fps`.
    pub fn next_frame(&mut self) -> Vec<Packet> {
        let fps = u64::from(self.shape.frames_per_second.max(1));
        let keyframe_every = (self.shape.keyframe_interval.as_millis() as u64 * fps / 1000).max(1);
        let keyframe = self.keyframe_requested || self.frames_since_keyframe >= keyframe_every;
        // Keyframes are about eight times a delta frame, so the average stays at the bitrate.
        let average = u64::from(self.shape.bitrate) / 8 / fps;
        let delta_size = (average * keyframe_every / (keyframe_every + 7)).max(PROBE_LEN as u64 + 16);
        let size = if keyframe { delta_size * 8 } else { delta_size } as usize;

        let mut frame = Vec::with_capacity(size);
        let header = if keyframe { VP8_KEYFRAME_HEADER } else { VP8_DELTA_HEADER };
        // Frame tag (RFC 6386 9.1): bit 0 inverse key frame, bits 1-3 version 0, bit 4
        // show_frame, bits 5-23 size of the first partition.
        let first_partition = (size - header).min(0x7_FFFF) as u32 / 4;
        let tag = u32::from(!keyframe) | 1 << 4 | first_partition << 5;
        frame.extend_from_slice(&tag.to_le_bytes()[..3]);
        if keyframe {
            frame.extend_from_slice(&[0x9D, 0x01, 0x2A]);
            frame.extend_from_slice(&(self.shape.width & 0x3FFF).to_le_bytes());
            frame.extend_from_slice(&(self.shape.height & 0x3FFF).to_le_bytes());
        }
        Probe::now(self.publisher).write(&mut frame);
        while frame.len() < size {
            self.noise ^= self.noise << 13;
            self.noise ^= self.noise >> 17;
            self.noise ^= self.noise << 5;
            frame.push(self.noise as u8);
        }

        let rtp_time = (self.frame_index * VIDEO_CLOCK / fps) as u32;
        self.frame_index += 1;
        self.frames_since_keyframe = if keyframe { 1 } else { self.frames_since_keyframe + 1 };
        self.keyframe_requested = false;
        let packets = packetize_vp8(&frame, self.picture_id, rtp_time);
        self.picture_id = (self.picture_id + 1) & 0x7FFF;
        packets
    }
}

/// Splits a VP8 frame into RTP payloads: a 4-byte payload descriptor (X, S on the first
/// packet, partition 0, 15-bit picture id) in front of each chunk.
pub fn packetize_vp8(frame: &[u8], picture_id: u16, rtp_time: u32) -> Vec<Packet> {
    let chunk = MAX_PAYLOAD - 4;
    let count = frame.len().div_ceil(chunk);
    frame
        .chunks(chunk)
        .enumerate()
        .map(|(index, bytes)| {
            let start = if index == 0 { 0x10 } else { 0 };
            let mut payload = Vec::with_capacity(bytes.len() + 4);
            payload.extend_from_slice(&[0x80 | start, 0x80, 0x80 | (picture_id >> 8) as u8, picture_id as u8]);
            payload.extend_from_slice(bytes);
            Packet { payload, marker: index + 1 == count, rtp_time }
        })
        .collect()
}

/// The probe in a VP8 RTP payload that starts a frame, whatever descriptor the SFU wrote.
/// `None` for packets in the middle of a frame and for payloads that are not ours.
pub fn vp8_probe(payload: &[u8]) -> Option<Probe> {
    let first = *payload.first()?;
    let start_of_partition = first & 0x10 != 0 && first & 0x07 == 0;
    if !start_of_partition {
        return None;
    }
    let mut offset = 1;
    if first & 0x80 != 0 {
        let extension = *payload.get(1)?;
        offset = 2;
        if extension & 0x80 != 0 {
            let picture = *payload.get(offset)?;
            offset += if picture & 0x80 != 0 { 2 } else { 1 };
        }
        if extension & 0x40 != 0 {
            offset += 1;
        }
        if extension & 0x30 != 0 {
            offset += 1;
        }
    }
    let frame = payload.get(offset..)?;
    let keyframe = frame.first()? & 0x01 == 0;
    let header = if keyframe { VP8_KEYFRAME_HEADER } else { VP8_DELTA_HEADER };
    Probe::read(frame.get(header..)?)
}

/// Opus-shaped audio: one packet every 20 ms of the configured size.
#[derive(Debug)]
pub struct AudioSource {
    publisher: u32,
    packet_index: u64,
    size: usize,
}

impl AudioSource {
    /// `bitrate` in bits per second (32 kbit/s is a browser's default for speech).
    pub fn new(publisher: u32, bitrate: u32) -> Self {
        let size = (bitrate as usize / 8 / 50).max(1 + PROBE_LEN);
        AudioSource { publisher, packet_index: 0, size }
    }

    pub fn next_packet(&mut self) -> Packet {
        let mut payload = Vec::with_capacity(self.size);
        payload.push(OPUS_TOC);
        Probe::now(self.publisher).write(&mut payload);
        payload.resize(self.size, 0x55);
        let rtp_time = (self.packet_index * AUDIO_CLOCK / 50) as u32;
        self.packet_index += 1;
        Packet { payload, marker: false, rtp_time }
    }
}

/// The probe in one of our Opus payloads.
pub fn opus_probe(payload: &[u8]) -> Option<Probe> {
    Probe::read(payload.get(1..)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_keyframe(packets: &[Packet]) -> bool {
        packets[0].payload[4] & 0x01 == 0
    }

    #[test]
    fn a_stream_starts_with_a_keyframe_and_keeps_the_bitrate() {
        let mut source = VideoSource::new(VideoShape::P360, 3);
        let first = source.next_frame();
        assert!(is_keyframe(&first));
        assert_eq!(&first[0].payload[7..10], &[0x9D, 0x01, 0x2A], "VP8 start code");
        assert_eq!(u16::from_le_bytes([first[0].payload[10], first[0].payload[11]]), 640);
        assert!(first.len() > 5, "a keyframe spans many packets");
        let mut bytes: usize = first.iter().map(|packet| packet.payload.len()).sum();
        let mut keyframes = 1;
        for _ in 1..300 {
            let frame = source.next_frame();
            keyframes += usize::from(is_keyframe(&frame));
            assert!(frame.last().unwrap().marker && frame.iter().rev().skip(1).all(|packet| !packet.marker));
            bytes += frame.iter().map(|packet| packet.payload.len()).sum::<usize>();
        }
        assert_eq!(keyframes, 1, "ten seconds between unrequested keyframes");
        let bitrate = bytes * 8 / 10;
        assert!((500_000..800_000).contains(&bitrate), "{bitrate} bit/s");
    }

    #[test]
    fn a_request_makes_the_next_frame_a_keyframe() {
        let mut source = VideoSource::new(VideoShape::P360, 1);
        source.next_frame();
        assert!(!is_keyframe(&source.next_frame()));
        source.request_keyframe();
        assert!(is_keyframe(&source.next_frame()));
        assert!(!is_keyframe(&source.next_frame()));
    }

    #[test]
    fn probes_survive_any_payload_descriptor() {
        let mut source = VideoSource::new(VideoShape::P360, 7);
        for _ in 0..3 {
            let packets = source.next_frame();
            let probe = vp8_probe(&packets[0].payload).expect("probe in the first packet");
            assert_eq!(probe.publisher, 7);
            assert!(packets[1..].iter().all(|packet| vp8_probe(&packet.payload).is_none()));
            // The same frame under a 1-byte descriptor and under one with a 7-bit picture
            // id, TL0PICIDX and key index, as other packetizers write it.
            let frame = &packets[0].payload[4..];
            for descriptor in [&[0x10][..], &[0x90, 0xE0, 0x05, 0x01, 0x20]] {
                let payload = [descriptor, frame].concat();
                assert_eq!(vp8_probe(&payload), Some(probe));
            }
        }
        assert_eq!(vp8_probe(&[]), None);
        assert_eq!(vp8_probe(&[0x90]), None, "truncated descriptor");
    }

    #[test]
    fn audio_packets_carry_probes_and_advance_by_20_ms() {
        let mut source = AudioSource::new(9, 32_000);
        let first = source.next_packet();
        let second = source.next_packet();
        assert_eq!(first.payload.len(), 80);
        assert_eq!(second.rtp_time - first.rtp_time, 960);
        assert_eq!(opus_probe(&second.payload).map(|probe| probe.publisher), Some(9));
        assert_eq!(opus_probe(&[OPUS_TOC, 1, 2]), None);
    }

    #[test]
    fn simulcast_layers_quarter_half_full() {
        let [low, mid, high] = VideoShape::P360.simulcast_layers();
        assert_eq!((low.width, low.height, mid.width, high.width), (160, 90, 320, 640));
        assert!(low.bitrate < mid.bitrate && mid.bitrate < high.bitrate);
    }
}
