//! `lienthong_conference_*` metrics, per room. Handles are cached so the per-frame path does
//! not build label sets.

use std::collections::HashMap;

use metrics::{Counter, counter, gauge};

use crate::room::{MediaSource, RoomSummary};
use crate::status::RoomStatus;

/// What one room forwarded since it opened, for the admin listing and the tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Forwarded {
    pub packets: u64,
    pub bytes: u64,
}

#[derive(Default)]
pub(crate) struct ConferenceMetrics {
    forwarded: HashMap<(String, MediaSource), (Counter, Counter, Forwarded)>,
    /// Layer switches per room: the counter and the running total.
    switches: HashMap<String, (Counter, u64)>,
    /// Rooms with a participant gauge, so a removed room's gauge drops to zero.
    known_rooms: Vec<String>,
}

impl ConferenceMetrics {
    /// Counts media forwarded to receivers: RTP packets written to receivers' send streams
    /// (each goes out once; str0m's resends for NACKs are not counted) and their payload
    /// bytes, summed over receivers.
    pub fn forwarded(&mut self, room: &str, source: MediaSource, packets: u64, bytes: u64) {
        let key = (room.to_owned(), source);
        let (packet_counter, byte_counter, totals) = self.forwarded.entry(key).or_insert_with(|| {
            let kind = match source {
                MediaSource::Microphone => "audio",
                MediaSource::Camera => "video",
                MediaSource::Screen => "screen",
            };
            (
                counter!("lienthong_conference_forwarded_packets_total", "room" => room.to_owned(), "kind" => kind),
                counter!("lienthong_conference_forwarded_bytes_total", "room" => room.to_owned(), "kind" => kind),
                Forwarded::default(),
            )
        });
        packet_counter.increment(packets);
        byte_counter.increment(bytes);
        totals.packets += packets;
        totals.bytes += bytes;
    }

    /// Counts receivers moved to another simulcast layer (or started on one).
    pub fn layer_switches(&mut self, room: &str, switches: u64) {
        let (counter, total) = self
            .switches
            .entry(room.to_owned())
            .or_insert_with(|| (counter!("lienthong_conference_layer_switches_total", "room" => room.to_owned()), 0));
        counter.increment(switches);
        *total += switches;
    }

    /// How busy the media core's thread was in the last second, and the video budget it
    /// leaves receivers (percent of their estimates).
    pub fn load(&mut self, busy: f32, budget_percent: u64) {
        gauge!("lienthong_conference_media_busy_ratio").set(f64::from(busy));
        gauge!("lienthong_conference_video_budget_percent").set(budget_percent as f64);
    }

    /// A room's forwarded packets and bytes (all sources) and layer switches so far.
    pub fn room_totals(&self, room: &str) -> (Forwarded, u64) {
        let mut forwarded = Forwarded::default();
        for ((name, _), (_, _, totals)) in &self.forwarded {
            if name == room {
                forwarded.packets += totals.packets;
                forwarded.bytes += totals.bytes;
            }
        }
        (forwarded, self.switches.get(room).map_or(0, |entry| entry.1))
    }

    /// What a room forwarded of one source so far.
    #[cfg(test)]
    pub fn forwarded_totals(&self, room: &str, source: MediaSource) -> Forwarded {
        self.forwarded.get(&(room.to_owned(), source)).map(|entry| entry.2).unwrap_or_default()
    }

    /// Updates the gauges of how well each room's links carry it: the worst loss towards a
    /// receiver in the last second, the lowest bandwidth estimate, how many receivers are in
    /// audio-only mode, and the media the publishers send in. Twice a second, from the operator's listing.
    pub fn links(&mut self, rooms: &[RoomStatus]) {
        for room in rooms {
            let worst_loss = room.participants.iter().filter_map(|participant| participant.loss_permille).max();
            let lowest = room.participants.iter().filter_map(|participant| participant.estimate_kbps).min();
            let audio_only = room.participants.iter().filter(|participant| participant.audio_only).count();
            let received: u64 = room.participants.iter().map(|participant| participant.sending_kbps).sum();
            let label = room.name.clone();
            gauge!("lienthong_conference_worst_loss_ratio", "room" => label.clone())
                .set(f64::from(worst_loss.unwrap_or(0)) / 1000.0);
            gauge!("lienthong_conference_lowest_estimate_bps", "room" => label.clone())
                .set(lowest.map_or(0.0, |kbps| kbps as f64 * 1000.0));
            gauge!("lienthong_conference_audio_only_participants", "room" => label.clone()).set(audio_only as f64);
            gauge!("lienthong_conference_received_bps", "room" => label).set(received as f64 * 1000.0);
        }
    }

    /// Updates the room and participant gauges.
    pub fn rooms(&mut self, summaries: &[RoomSummary]) {
        gauge!("lienthong_conference_rooms").set(summaries.len() as f64);
        for name in &self.known_rooms {
            if !summaries.iter().any(|summary| summary.name == *name) {
                gauge!("lienthong_conference_participants", "room" => name.clone()).set(0.0);
                gauge!("lienthong_conference_worst_loss_ratio", "room" => name.clone()).set(0.0);
                gauge!("lienthong_conference_lowest_estimate_bps", "room" => name.clone()).set(0.0);
                gauge!("lienthong_conference_audio_only_participants", "room" => name.clone()).set(0.0);
                gauge!("lienthong_conference_received_bps", "room" => name.clone()).set(0.0);
            }
        }
        self.known_rooms = summaries.iter().map(|summary| summary.name.clone()).collect();
        for summary in summaries {
            gauge!("lienthong_conference_participants", "room" => summary.name.clone())
                .set(summary.participants as f64);
        }
    }
}
