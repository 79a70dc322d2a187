//! Layer selection for every receiver, and telling publishers which of their camera's
//! simulcast layers anyone receives (the others are paused in the browser).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use str0m::media::Mid;

use super::Conference;
use crate::forward::LayerId;
use crate::layers::{Demand, Layer, Priority};
use crate::protocol::{ParticipantId, ServerMessage};
use crate::room::MediaSource;

/// The estimate assumed towards a browser until str0m's BWE has one; BWE probes up from
/// here (str0m is configured with the same starting rate).
pub(crate) const INITIAL_ESTIMATE: u64 = 500_000;
/// Microphones forwarded to each receiver: the loudest few, as Jitsi's bridge does. Three
/// voices at once is already more than anyone follows in a meeting.
pub(crate) const LOUDEST_AUDIO: usize = 3;
/// How long the estimate must stay below (or back above) the lowest video layer before a
/// browser is told it is in (or out of) audio-only mode.
const AUDIO_ONLY_HOLD: Duration = Duration::from_secs(3);
/// How long a camera layer nobody receives keeps being sent before its publisher is told to
/// pause it. Receivers move between layers every few seconds as their estimates move; a
/// layer paused at once must be started again (a keyframe from a restarted encoder layer)
/// when one comes back, and every change reconfigures the publisher's encoder. LiveKit's
/// dynacast does the same: more layers at once, fewer only after a delay.
pub(crate) const PAUSE_AFTER: Duration = Duration::from_secs(5);

impl Conference {
    /// Measures the publishers' layers, chooses every receiver's layers, and tells browsers
    /// about audio-only mode and which camera layers to send.
    pub(super) fn select_layers(&mut self, now: Instant) {
        if let Some(busy) = self.busy.take() {
            let budget = crate::load::next_budget(self.video_budget, busy);
            if budget < self.video_budget && self.video_budget == 100 {
                tracing::warn!(busy, "media core overloaded: lowering every receiver's video");
            } else if budget == 100 && self.video_budget < 100 {
                tracing::info!(busy, "media core no longer overloaded: video budgets back to the estimates");
            }
            self.video_budget = budget;
            self.metrics.load(busy, budget);
        }
        let video_budget = self.video_budget;
        let mut published: HashMap<(ParticipantId, Mid), Vec<Layer>> = HashMap::new();
        let mut flowing: HashMap<(ParticipantId, Mid), Vec<LayerId>> = HashMap::new();
        let mut cameras: HashSet<ParticipantId> = HashSet::new();
        for (id, member) in &mut self.members {
            let Some(peer) = member.peer.as_mut() else { continue };
            peer.measure(now);
            for (mid, layers) in peer.flowing_layers(now) {
                flowing.insert((*id, mid), layers);
            }
            for (mid, source, layers) in peer.video_layers() {
                published.insert((*id, mid), layers);
                if source == MediaSource::Camera {
                    cameras.insert(*id);
                }
            }
        }
        let mut notices = Vec::new();
        let mut in_use: HashMap<(ParticipantId, Mid), Vec<LayerId>> = HashMap::new();
        for (id, member) in &mut self.members {
            let Some(peer) = member.peer.as_mut() else { continue };
            let loudest = self.rooms.loudest(now, *id, LOUDEST_AUDIO);
            let rooms = &self.rooms;
            peer.select_audio(|origin| loudest.contains(&origin) || !rooms.sends_audio_levels(origin));
            // Last-N: only the best-ranked cameras that are published go to this browser,
            // whatever its layout asks for; screen shares always do.
            let (ranking, last_n) = rooms.video_ranking(*id);
            let video: Vec<ParticipantId> =
                ranking.into_iter().filter(|origin| cameras.contains(origin)).take(last_n).collect();
            let layout = member.layout.as_ref();
            let allocation = peer.select_layers(
                now,
                INITIAL_ESTIMATE,
                video_budget,
                |origin, mid, source| {
                    let layers = published.get(&(origin, mid))?;
                    let position = |list: &[ParticipantId]| list.iter().position(|listed| *listed == origin);
                    let (priority, rank) = match (source, layout) {
                        (MediaSource::Screen, _) => (Priority::High, 0),
                        (_, _) if !video.contains(&origin) => (Priority::Off, 0),
                        (_, None) => (Priority::High, 0),
                        (_, Some(layout)) => match (position(&layout.high), position(&layout.low)) {
                            (Some(rank), _) => (Priority::High, rank),
                            (None, Some(rank)) => (Priority::Low, rank),
                            (None, None) => (Priority::Off, 0),
                        },
                    };
                    Some(Demand { priority, layers: layers.clone(), current: None, rank })
                },
                |origin, mid| flowing.get(&(origin, mid)).map(Vec::as_slice),
            );
            member.dirty = true;
            tracing::debug!(
                participant = id,
                estimate = peer.estimate(),
                used = allocation.used,
                desired = allocation.desired,
                floored = allocation.floored,
                wants = ?allocation.wants,
                link = %peer.describe_link(now),
                "layers chosen"
            );
            // The mode changes only after the estimate held for a while: BWE dips at the
            // start of a call and on short bursts of loss.
            if allocation.audio_only == member.audio_only {
                member.mode_change_since = None;
            } else {
                let since = *member.mode_change_since.get_or_insert(now);
                if now.duration_since(since) >= AUDIO_ONLY_HOLD {
                    member.audio_only = allocation.audio_only;
                    member.mode_change_since = None;
                    let kbps = peer.estimate().unwrap_or(INITIAL_ESTIMATE) / 1000;
                    notices.push((*id, ServerMessage::Bandwidth { kbps, audio_only: allocation.audio_only }));
                }
            }
            if member.last_n.as_ref() != Some(&video) {
                notices.push((*id, ServerMessage::LastN { video: video.clone() }));
                member.last_n = Some(video);
            }
            for (origin, mid, layer) in peer.layers_in_use() {
                in_use.entry((origin, mid)).or_default().push(layer);
            }
        }
        for (id, member) in &mut self.members {
            let Some(peer) = member.peer.as_ref() else { continue };
            let rids = peer.camera_rids();
            let camera = peer.video_layers().into_iter().find(|(_, source, _)| *source == MediaSource::Camera);
            let Some((mid, _, _)) = camera.filter(|_| !rids.is_empty()) else { continue };
            let used = in_use.get(&(*id, mid));
            // A layer is asked for at once, and paused only once nobody received it for
            // `PAUSE_AFTER`; a new camera sends every layer for that long.
            let first_seen = member.active_layers.is_none();
            let mut active = Vec::new();
            for rid in &rids {
                let received = used.is_some_and(|layers| layers.contains(&Some(*rid)));
                let last = match member.layers_used_at.iter_mut().find(|(known, _)| known == rid) {
                    Some((_, last)) => last,
                    None => {
                        member.layers_used_at.push((*rid, now));
                        &mut member.layers_used_at.last_mut().expect("just pushed").1
                    }
                };
                if first_seen || received {
                    *last = now;
                }
                if now.saturating_duration_since(*last) < PAUSE_AFTER {
                    active.push(rid.to_string());
                }
            }
            if member.active_layers.as_ref() != Some(&active) {
                tracing::debug!(participant = id, ?active, "camera layers to send");
                member.active_layers = Some(active.clone());
                notices.push((*id, ServerMessage::Layers { active }));
            }
        }
        for (id, message) in notices {
            self.send(id, message);
        }
    }
}
