//! What a receiving client counts: packets per incoming stream, sequence gaps (loss), and the
//! time from a frame's send (its probe) to each of its packets' arrival.

use std::collections::VecDeque;

/// Sequence numbers remembered per stream for telling duplicates from new packets.
const SEQUENCE_WINDOW: u64 = 4096;
/// Latency samples kept per client; beyond this, samples are dropped (counted, not stored).
const MAX_LATENCY_SAMPLES: usize = 1 << 20;
/// Frames per stream whose send time is remembered, for packets after the first.
const FRAMES_REMEMBERED: usize = 64;

/// Counters of one incoming RTP stream (one SSRC).
#[derive(Debug)]
pub struct StreamStats {
    pub ssrc: u32,
    pub video: bool,
    /// Distinct packets received while measuring.
    pub packets: u64,
    pub bytes: u64,
    pub duplicates: u64,
    first_sequence: Option<u64>,
    highest_sequence: u64,
    seen: Vec<u64>,
    frames: VecDeque<(u32, u64)>,
}

impl StreamStats {
    pub fn new(ssrc: u32, video: bool) -> Self {
        StreamStats {
            ssrc,
            video,
            packets: 0,
            bytes: 0,
            duplicates: 0,
            first_sequence: None,
            highest_sequence: 0,
            seen: vec![0; (SEQUENCE_WINDOW / 64) as usize],
            frames: VecDeque::new(),
        }
    }

    /// Packets the sender sent in the span we saw (first to highest sequence number).
    pub fn expected(&self) -> u64 {
        self.first_sequence.map_or(0, |first| self.highest_sequence - first + 1)
    }

    /// Packets missing from that span (never negative: duplicates are not counted).
    pub fn lost(&self) -> u64 {
        self.expected().saturating_sub(self.packets)
    }

    /// Counts one packet by its extended sequence number. Returns false for a duplicate or a
    /// packet older than the window, which are not counted.
    pub fn record(&mut self, sequence: u64, bytes: usize) -> bool {
        let Some(first) = self.first_sequence else {
            self.first_sequence = Some(sequence);
            self.highest_sequence = sequence;
            self.mark(sequence);
            self.packets = 1;
            self.bytes = bytes as u64;
            return true;
        };
        if sequence < first || sequence + SEQUENCE_WINDOW <= self.highest_sequence {
            return false;
        }
        if sequence > self.highest_sequence {
            let cleared = (sequence - self.highest_sequence).min(SEQUENCE_WINDOW);
            for step in 1..=cleared {
                self.unmark(self.highest_sequence + step);
            }
            self.highest_sequence = sequence;
        } else if self.is_marked(sequence) {
            self.duplicates += 1;
            return false;
        }
        self.mark(sequence);
        self.packets += 1;
        self.bytes += bytes as u64;
        true
    }

    /// Remembers when the frame with this RTP time was sent.
    pub fn frame_sent(&mut self, rtp_time: u32, sent_micros: u64) {
        if self.frames.iter().any(|(time, _)| *time == rtp_time) {
            return;
        }
        if self.frames.len() == FRAMES_REMEMBERED {
            self.frames.pop_front();
        }
        self.frames.push_back((rtp_time, sent_micros));
    }

    /// When the frame with this RTP time was sent, if its first packet arrived.
    pub fn sent_at(&self, rtp_time: u32) -> Option<u64> {
        self.frames.iter().rev().find(|(time, _)| *time == rtp_time).map(|(_, sent)| *sent)
    }

    fn slot(sequence: u64) -> (usize, u64) {
        let index = sequence % SEQUENCE_WINDOW;
        ((index / 64) as usize, 1 << (index % 64))
    }

    fn mark(&mut self, sequence: u64) {
        let (word, bit) = Self::slot(sequence);
        self.seen[word] |= bit;
    }

    fn unmark(&mut self, sequence: u64) {
        let (word, bit) = Self::slot(sequence);
        self.seen[word] &= !bit;
    }

    fn is_marked(&self, sequence: u64) -> bool {
        let (word, bit) = Self::slot(sequence);
        self.seen[word] & bit != 0
    }
}

/// Latency samples in microseconds, capped.
#[derive(Debug, Default)]
pub struct Latencies {
    pub samples: Vec<u32>,
    pub dropped: u64,
}

impl Latencies {
    pub fn add(&mut self, micros: u64) {
        if self.samples.len() < MAX_LATENCY_SAMPLES {
            self.samples.push(micros.min(u64::from(u32::MAX)) as u32);
        } else {
            self.dropped += 1;
        }
    }
}

/// The `quantile` (0 to 1) of sorted samples, by nearest rank.
pub fn quantile(sorted: &[u32], quantile: f64) -> Option<u32> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((quantile * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_count_as_loss_and_late_fills_repair_them() {
        let mut stream = StreamStats::new(1, true);
        for sequence in [100, 101, 103, 104, 107] {
            assert!(stream.record(sequence, 10));
        }
        assert_eq!((stream.expected(), stream.packets, stream.lost()), (8, 5, 3));
        assert!(stream.record(102, 10), "a retransmission fills the hole");
        assert!(!stream.record(102, 10), "a second copy is a duplicate");
        assert!(!stream.record(99, 10), "before the first packet we saw");
        assert_eq!((stream.lost(), stream.duplicates), (2, 1));
    }

    #[test]
    fn the_window_forgets_old_sequence_numbers_after_a_jump() {
        let mut stream = StreamStats::new(1, false);
        stream.record(10, 1);
        stream.record(10 + SEQUENCE_WINDOW + 5, 1);
        assert!(!stream.record(11, 1), "older than the window");
        assert!(stream.record(10 + SEQUENCE_WINDOW + 4, 1), "inside the window, not seen");
        assert_eq!(stream.packets, 3);
        assert_eq!(stream.expected(), SEQUENCE_WINDOW + 6);
    }

    #[test]
    fn frames_map_rtp_time_to_send_time() {
        let mut stream = StreamStats::new(1, true);
        for frame in 0..100u32 {
            stream.frame_sent(frame * 3000, u64::from(frame) * 33_333);
        }
        assert_eq!(stream.sent_at(99 * 3000), Some(99 * 33_333));
        assert_eq!(stream.sent_at(0), None, "forgotten");
    }

    #[test]
    fn quantiles_by_nearest_rank() {
        let samples: Vec<u32> = (1..=100).collect();
        assert_eq!(quantile(&samples, 0.5), Some(50));
        assert_eq!(quantile(&samples, 0.99), Some(99));
        assert_eq!(quantile(&samples, 1.0), Some(100));
        assert_eq!(quantile(&[], 0.5), None);
    }
}
