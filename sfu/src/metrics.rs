//! `lienthong_conference_*` metrics, per room. Handles are cached so the per-frame path does
//! not build label sets.

use std::collections::HashMap;

use metrics::{Counter, counter, gauge};

use crate::room::{MediaSource, RoomSummary};

#[derive(Default)]
pub(crate) struct ConferenceMetrics {
    forwarded: HashMap<(String, MediaSource), (Counter, Counter)>,
    /// Rooms with a participant gauge, so a removed room's gauge drops to zero.
    known_rooms: Vec<String>,
}

impl ConferenceMetrics {
    /// Counts media forwarded to receivers: RTP packets and payload bytes, summed over receivers.
    pub fn forwarded(&mut self, room: &str, source: MediaSource, packets: u64, bytes: u64) {
        let key = (room.to_owned(), source);
        let (packet_counter, byte_counter) = self.forwarded.entry(key).or_insert_with(|| {
            let kind = match source {
                MediaSource::Microphone => "audio",
                MediaSource::Camera => "video",
                MediaSource::Screen => "screen",
            };
            (
                counter!("lienthong_conference_forwarded_packets_total", "room" => room.to_owned(), "kind" => kind),
                counter!("lienthong_conference_forwarded_bytes_total", "room" => room.to_owned(), "kind" => kind),
            )
        });
        packet_counter.increment(packets);
        byte_counter.increment(bytes);
    }

    /// Updates the room and participant gauges.
    pub fn rooms(&mut self, summaries: &[RoomSummary]) {
        gauge!("lienthong_conference_rooms").set(summaries.len() as f64);
        for name in &self.known_rooms {
            if !summaries.iter().any(|summary| summary.name == *name) {
                gauge!("lienthong_conference_participants", "room" => name.clone()).set(0.0);
            }
        }
        self.known_rooms = summaries.iter().map(|summary| summary.name.clone()).collect();
        for summary in summaries {
            gauge!("lienthong_conference_participants", "room" => summary.name.clone())
                .set(summary.participants as f64);
        }
    }
}
