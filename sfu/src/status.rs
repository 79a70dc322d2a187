//! What the operator's admin endpoint lists: every room, its participants and how well
//! their connections carry the meeting. Built by the core twice a second.

use serde::Serialize;

use crate::protocol::{ParticipantId, Role};

/// One room, for the admin listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RoomStatus {
    pub name: String,
    pub participants: Vec<ParticipantStatus>,
    /// RTP packets and payload bytes written to receivers since the room opened.
    pub forwarded_packets: u64,
    pub forwarded_bytes: u64,
    /// Times a receiver was moved to another simulcast layer (or started on one).
    pub layer_switches: u64,
}

/// One participant and its connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ParticipantStatus {
    pub id: ParticipantId,
    pub name: String,
    pub site: String,
    pub role: Role,
    /// The server's send-side bandwidth estimate towards this browser, once measured.
    pub estimate_kbps: Option<u64>,
    /// The server sends it audio only: its link cannot carry the lowest video layer.
    pub audio_only: bool,
    /// Packets lost on the way to this browser in the last second, per thousand (from its
    /// transport-wide congestion-control feedback), once media flows.
    pub loss_permille: Option<u32>,
    /// The round trip to this browser, in milliseconds, once measured.
    pub rtt_ms: Option<u64>,
    /// What this browser publishes: RTP payload it sends us, all tracks and layers.
    pub sending_kbps: u64,
    pub quality: Quality,
}

/// A plain reading of the estimate for operators: `good` carries a large picture,
/// `fair` thumbnails only, `poor` little or no video; `unknown` before media flows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Quality {
    Good,
    Fair,
    Poor,
    Unknown,
}

impl Quality {
    pub(crate) fn from_estimate(estimate: Option<u64>, audio_only: bool) -> Self {
        match estimate {
            _ if audio_only => Quality::Poor,
            None => Quality::Unknown,
            Some(bits) if bits >= 800_000 => Quality::Good,
            Some(bits) if bits >= 250_000 => Quality::Fair,
            Some(_) => Quality::Poor,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quality_reads_the_estimate() {
        assert_eq!(Quality::from_estimate(None, false), Quality::Unknown);
        assert_eq!(Quality::from_estimate(Some(2_000_000), false), Quality::Good);
        assert_eq!(Quality::from_estimate(Some(300_000), false), Quality::Fair);
        assert_eq!(Quality::from_estimate(Some(100_000), false), Quality::Poor);
        assert_eq!(
            Quality::from_estimate(Some(2_000_000), true),
            Quality::Poor,
            "audio-only is poor whatever BWE says"
        );
    }
}
