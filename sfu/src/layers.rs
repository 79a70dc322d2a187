//! Choosing which simulcast layer of each video track a receiver gets, from that receiver's
//! send-side bandwidth estimate and what its page shows (as LiveKit's and Jitsi's allocators
//! do): first every visible track gets its lowest layer, in priority order, while the budget
//! lasts; then the large tiles (stage, spotlight, active speaker, screen shares) move up as
//! far as the rest of the budget allows. Thumbnails stay on the lowest layer; hidden tiles get
//! nothing. Pure functions: the core calls them a few times a second.
//!
//! The estimate alone does not decide when video stops. A delay-based estimator also reads
//! a receiver that is slow to read its socket (a busy desktop, a CPU-starved browser) as a
//! queue, and its estimate can fall far below an open link, where with no video flowing
//! only padding probes could raise it again. So, as LiveKit keeps every visible track on at
//! least its lowest layer unless pausing is allowed, a receiver whose link shows no
//! congestion of its own ([`LinkHealth`]: no packet loss, no round trip grown well above
//! its floor) keeps the lowest layer of every visible track whatever the estimate says.
//! Pictures stop (audio-only mode) only on a link that loses packets or queues them; a link
//! that became congested while it was held up that way is left to the estimate for a while
//! (longer each time).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::forward::{LayerId, Want};

/// How prominently a receiver shows a track.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Priority {
    /// Large: the stage, the spotlight, the active speaker, a screen share.
    High,
    /// A thumbnail.
    Low,
    /// Hidden, off-screen or paged out.
    Off,
}

/// One layer a publisher sends, with what it costs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Layer {
    pub id: LayerId,
    pub bitrate: u64,
}

/// One video track a receiver could get: its layers from lowest to highest.
#[derive(Debug, Clone)]
pub(crate) struct Demand {
    pub priority: Priority,
    pub layers: Vec<Layer>,
    /// The layer (index into `layers`) the receiver gets now, if any. A track that flows
    /// keeps its place before one that would start, and going up needs headroom, so a
    /// fluctuating estimate does not make pictures flap between layers (each switch waits
    /// for a keyframe).
    pub current: Option<usize>,
    /// Place in the page's list (the spotlight and the active speaker first): among tracks
    /// of one priority, lower ranks get the budget first.
    pub rank: usize,
}

/// Going above the current layer needs this much more budget than the layer costs, in
/// percent.
pub(crate) const UPGRADE_HEADROOM: u64 = 125;
/// A flowing layer is kept while it costs up to this share of the budget left, in percent.
const KEEP_TOLERANCE: u64 = 115;

/// What [`allocate`] decided for one receiver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Allocation {
    /// One entry per demand, in the same order.
    pub wants: Vec<Want>,
    /// Bits per second the chosen layers take.
    pub used: u64,
    /// What the receiver would take with an unlimited link (for BWE probing).
    pub desired: u64,
    /// Some visible track got no video because the estimate cannot carry even its lowest
    /// layer (the others still get theirs).
    pub starved: bool,
    /// No visible track got video at all: the receiver is in audio-only mode. A receiver
    /// that still gets some pictures is not told it is audio-only.
    pub audio_only: bool,
    /// Some lowest layer was given beyond the budget because the link shows no congestion.
    pub floored: bool,
}

/// Nominal bitrates of the page's layers, lowest first, used until a layer's rate is
/// measured (a paused layer has no rate). They match the page's `maxBitrate`s.
pub(crate) const NOMINAL_BITRATES: [u64; 3] = [150_000, 500_000, 1_500_000];
/// A track without simulcast (a screen share, a client without simulcast) whose rate is
/// not measured yet.
pub(crate) const NOMINAL_SINGLE_LAYER: u64 = 300_000;

/// Chooses layers within `budget` bits per second. With `floor` (the link shows no
/// congestion of its own) every visible track gets at least its lowest layer even beyond
/// the budget; only what goes above the lowest layers stays within it.
#[cfg(test)]
pub(crate) fn allocate(budget: u64, demands: &[Demand], floor: bool) -> Allocation {
    allocate_pictures(budget, demands, floor, usize::MAX)
}

/// [`allocate`], giving video to at most `pictures` tracks: the first in its order (so a
/// flowing one before one that would start).
pub(crate) fn allocate_pictures(budget: u64, demands: &[Demand], floor: bool, pictures: usize) -> Allocation {
    let mut wants = vec![Want::Nothing; demands.len()];
    let mut chosen: Vec<Option<usize>> = vec![None; demands.len()];
    let mut order: Vec<usize> = (0..demands.len()).filter(|index| demands[*index].priority != Priority::Off).collect();
    // Stable: by priority, then flowing tracks before ones that would start, then the page's
    // order. Among tiles shown alike, a picture keeps its place when the page's order
    // changes (the active speaker moves first): on a line that carries one picture, moving
    // it to the new speaker would freeze both tiles while the other camera's keyframe comes.
    order.sort_by_key(|index| (demands[*index].priority, demands[*index].current.is_none(), demands[*index].rank));
    let mut remaining = budget;
    let mut starved = false;
    let mut floored = false;
    let mut given = 0;
    for &index in &order {
        let Some(lowest) = demands[index].layers.first() else { continue };
        if given >= pictures {
            break;
        }
        // A flowing track keeps its lowest layer while it overshoots what is left by up to
        // 15%; a new one starts only with 25% to spare.
        let needed = match demands[index].current {
            Some(_) => lowest.bitrate * 100 / KEEP_TOLERANCE,
            None => lowest.bitrate * UPGRADE_HEADROOM / 100,
        };
        if needed <= remaining {
            remaining = remaining.saturating_sub(lowest.bitrate);
            chosen[index] = Some(0);
            given += 1;
        } else if floor {
            remaining = remaining.saturating_sub(lowest.bitrate);
            chosen[index] = Some(0);
            given += 1;
            floored = true;
        } else {
            starved = true;
        }
    }
    for &index in &order {
        let demand = &demands[index];
        let Some(current) = chosen[index] else { continue };
        if demand.priority != Priority::High {
            continue;
        }
        let mut best = current;
        for (layer_index, layer) in demand.layers.iter().enumerate().skip(current + 1) {
            let extra = layer.bitrate.saturating_sub(demand.layers[current].bitrate);
            let above_current = demand.current.is_none_or(|flowing| layer_index > flowing);
            let needed = if above_current { extra * UPGRADE_HEADROOM / 100 } else { extra };
            if needed <= remaining {
                best = layer_index;
            }
        }
        remaining -= demand.layers[best].bitrate.saturating_sub(demand.layers[current].bitrate);
        chosen[index] = Some(best);
    }
    let mut used = 0;
    let mut desired = 0;
    for (index, demand) in demands.iter().enumerate() {
        if let Some(layer) = chosen[index] {
            wants[index] = Want::Layer(demand.layers[layer].id);
            used += demand.layers[layer].bitrate;
        }
        desired += match demand.priority {
            Priority::High => demand.layers.last().map_or(0, |layer| layer.bitrate),
            Priority::Low => demand.layers.first().map_or(0, |layer| layer.bitrate),
            Priority::Off => 0,
        };
    }
    let audio_only = starved && chosen.iter().all(Option::is_none);
    Allocation { wants, used, desired, starved, audio_only, floored }
}

/// Loss above this share of the packets sent in a second is congestion.
const CONGESTED_LOSS: f32 = 0.02;
/// A round trip this much above the lowest one seen means a queue is building.
const CONGESTED_RTT_GROWTH: Duration = Duration::from_millis(250);
/// The link must have been clear for this many consecutive stats reports (one a second)
/// before the floor applies, and their mean loss below [`CLEAR_MEAN_LOSS`]: a link with
/// random loss (a lossy district line) has seconds without a lost packet, but not five in a
/// row averaging under 1%.
const CLEAR_REPORTS: usize = 5;
const CLEAR_MEAN_LOSS: f32 = 0.01;
/// A report older than this is stale: no floor on what is not known.
const REPORT_MAX_AGE: Duration = Duration::from_secs(3);
/// Loss a line may show at random, without queueing, and still keep one picture.
const RANDOM_LOSS_MAX: f32 = 0.10;
/// Reports of five with a grown round trip that a line showing one picture may have and
/// keep it ([`LinkHealth::holds`]).
const HOLD_QUEUED: usize = 3;
/// After a link became congested under the floor, the floor waits this long before it
/// applies again, doubling each time up to [`MAX_FLOOR_BACKOFF`].
const FLOOR_BACKOFF: Duration = Duration::from_secs(20);
const MAX_FLOOR_BACKOFF: Duration = Duration::from_secs(300);
/// A floor held this long without congestion resets the backoff.
const FLOOR_PROVEN: Duration = Duration::from_secs(60);

/// One stats report of the link towards a receiver.
#[derive(Debug, Clone, Copy)]
struct Report {
    at: Instant,
    congested: bool,
    /// The round trip had grown well above its lowest: packets wait in a queue.
    queued: bool,
    loss: f32,
}

/// Whether the link towards one receiver shows congestion of its own, from str0m's stats
/// reports (once a second): the share of packets the receiver's transport-wide feedback
/// reports lost, and the round trip.
#[derive(Debug)]
pub(crate) struct LinkHealth {
    reports: VecDeque<Report>,
    /// The last report's loss and round trip, for the operator.
    last: (Option<f32>, Option<Duration>),
    min_rtt: Option<Duration>,
    /// Since when the allocation has been held up by the floor.
    floored_since: Option<Instant>,
    blocked_until: Option<Instant>,
    backoff: Duration,
}

impl Default for LinkHealth {
    fn default() -> Self {
        LinkHealth {
            reports: VecDeque::new(),
            last: (None, None),
            min_rtt: None,
            floored_since: None,
            blocked_until: None,
            backoff: FLOOR_BACKOFF,
        }
    }
}

impl LinkHealth {
    /// Records one stats report. A report without a loss figure (nothing was sent or
    /// acknowledged in its second) counts as not clear.
    pub fn record(&mut self, now: Instant, loss: Option<f32>, rtt: Option<Duration>) {
        self.last = (loss, rtt);
        if let Some(rtt) = rtt {
            self.min_rtt = Some(self.min_rtt.map_or(rtt, |min| min.min(rtt)));
        }
        let grown = match (rtt, self.min_rtt) {
            (Some(rtt), Some(min)) => rtt > min + CONGESTED_RTT_GROWTH,
            _ => false,
        };
        let congested = !loss.is_some_and(|loss| loss < CONGESTED_LOSS) || grown;
        if congested && self.floored_since.is_some() && loss.is_some() {
            // The floor pushed more than the link carries: leave it to the estimate.
            self.blocked_until = Some(now + self.backoff);
            self.backoff = (self.backoff * 2).min(MAX_FLOOR_BACKOFF);
            self.floored_since = None;
        }
        if self.reports.len() == CLEAR_REPORTS {
            self.reports.pop_front();
        }
        self.reports.push_back(Report { at: now, congested, queued: grown, loss: loss.unwrap_or(1.0) });
    }

    /// The last report's share of packets lost towards the receiver and its round trip.
    pub fn last_report(&self) -> (Option<f32>, Option<Duration>) {
        self.last
    }

    /// Whether the floor applies now.
    pub fn clear(&self, now: Instant) -> bool {
        self.blocked_until.is_none_or(|until| now >= until)
            && self.reports.len() == CLEAR_REPORTS
            && self.reports.iter().all(|report| !report.congested)
            && self.reports.iter().map(|report| report.loss).sum::<f32>() < CLEAR_MEAN_LOSS * CLEAR_REPORTS as f32
            && self.reports.back().is_some_and(|last| now.saturating_duration_since(last.at) <= REPORT_MAX_AGE)
    }

    /// Whether the link's first reports are in (five of them, about five seconds). Until
    /// then only the initial estimate speaks for it, and that is more than a district line
    /// carries.
    pub fn known(&self) -> bool {
        self.reports.len() == CLEAR_REPORTS
    }

    /// Whether the receiver's recent reports (up to the last five seconds) lose packets on
    /// average at [`CONGESTED_LOSS`] or more. On such a link a rising estimate is not
    /// followed (libwebrtc's loss-based rule: between 2% and 10% loss, hold the rate): probes
    /// through a policer's burst allowance or a shallow queue read far above what the link
    /// carries, and every layer chosen on them is lost in the bottleneck.
    pub fn lossy(&self, now: Instant) -> bool {
        let fresh = self.reports.back().is_some_and(|last| now.saturating_duration_since(last.at) <= REPORT_MAX_AGE);
        let measured: Vec<f32> = self.reports.iter().map(|report| report.loss).filter(|loss| *loss < 1.0).collect();
        fresh && !measured.is_empty() && measured.iter().sum::<f32>() >= CONGESTED_LOSS * measured.len() as f32
    }

    /// Whether the line loses packets at random rather than queueing them: five fresh
    /// reports, at most one with the round trip grown (a keyframe crossing a 300 kbit/s
    /// line queues for a third of a second; a queue that stays shows in the next reports
    /// too), averaging under [`RANDOM_LOSS_MAX`] loss.
    /// A district line with a few percent of random loss is never [`LinkHealth::clear`],
    /// and its estimate dips with the loss; such a line keeps one picture. Not while a floor
    /// that congested the line waits out its back-off.
    pub fn steady(&self, now: Instant) -> bool {
        self.random_loss(now, 1)
    }

    /// Whether a line that shows one picture keeps it: as [`LinkHealth::steady`], but with
    /// up to [`HOLD_QUEUED`] of the five reports showing a grown round trip. A publisher's
    /// keyframes (each one a third of a second on a 300 kbit/s line, and asked for again
    /// whenever another receiver switches layers) grow the round trip in two or three
    /// reports of five; dropping the picture for that froze it for 2-4 s. A line that
    /// cannot carry the picture queues in every report and loses more than a tenth.
    pub fn holds(&self, now: Instant) -> bool {
        self.random_loss(now, HOLD_QUEUED)
    }

    fn random_loss(&self, now: Instant, queued: usize) -> bool {
        self.blocked_until.is_none_or(|until| now >= until)
            && self.reports.len() == CLEAR_REPORTS
            && self.reports.iter().filter(|report| report.queued).count() <= queued
            && self.reports.iter().map(|report| report.loss).sum::<f32>() < RANDOM_LOSS_MAX * CLEAR_REPORTS as f32
            && self.reports.back().is_some_and(|last| now.saturating_duration_since(last.at) <= REPORT_MAX_AGE)
    }

    /// The recent reports and what they make of the link, for the debug log: each report's
    /// loss in percent (`q` where the round trip had grown), then the verdicts.
    pub fn describe(&self, now: Instant) -> String {
        let reports: Vec<String> = self
            .reports
            .iter()
            .map(|report| format!("{:.1}{}", report.loss * 100.0, if report.queued { "q" } else { "" }))
            .collect();
        format!(
            "[{}] known={} clear={} steady={} holds={} lossy={}",
            reports.join(" "),
            self.known(),
            self.clear(now),
            self.steady(now),
            self.holds(now),
            self.lossy(now)
        )
    }

    /// Tells whether the last allocation was held up by the floor.
    pub fn set_floored(&mut self, now: Instant, floored: bool) {
        match (floored, self.floored_since) {
            (false, _) => self.floored_since = None,
            (true, None) => self.floored_since = Some(now),
            (true, Some(since)) => {
                if now.saturating_duration_since(since) >= FLOOR_PROVEN {
                    self.backoff = FLOOR_BACKOFF;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use str0m::media::Rid;

    use super::*;

    fn simulcast() -> Vec<Layer> {
        ["q", "h", "f"]
            .iter()
            .zip(NOMINAL_BITRATES)
            .map(|(rid, bitrate)| Layer { id: Some(Rid::from(*rid)), bitrate })
            .collect()
    }

    fn want(rid: &str) -> Want {
        Want::Layer(Some(Rid::from(rid)))
    }

    fn demand(priority: Priority) -> Demand {
        Demand { priority, layers: simulcast(), current: None, rank: 0 }
    }

    #[test]
    fn an_open_link_gets_the_top_layer_on_stage_and_the_lowest_for_thumbnails() {
        let demands = [demand(Priority::High), demand(Priority::Low), demand(Priority::Low), demand(Priority::Off)];
        let allocation = allocate(10_000_000, &demands, false);
        assert_eq!(allocation.wants, vec![want("f"), want("q"), want("q"), Want::Nothing]);
        assert_eq!(allocation.used, 1_500_000 + 2 * 150_000);
        assert_eq!(allocation.desired, allocation.used);
        assert!(!allocation.starved);
    }

    #[test]
    fn a_thin_link_gets_the_lowest_layers_and_then_audio_only() {
        let demands = [demand(Priority::High), demand(Priority::Low)];
        // Both lowest layers fit (with the headroom a start needs), nothing more.
        assert_eq!(allocate(400_000, &demands, false).wants, vec![want("q"), want("q")]);
        // Room for the stage's middle layer (with headroom) but not its top one.
        assert_eq!(allocate(750_000, &demands, false).wants, vec![want("h"), want("q")]);
        // Only the stage's lowest layer fits; the thumbnail is dropped first.
        let allocation = allocate(200_000, &demands, false);
        assert_eq!(allocation.wants, vec![want("q"), Want::Nothing]);
        assert!(allocation.starved);
        assert!(!allocation.audio_only, "a receiver that still gets the stage is not audio-only");
        // Not even that: audio only.
        let allocation = allocate(100_000, &demands, false);
        assert_eq!(allocation.wants, vec![Want::Nothing, Want::Nothing]);
        assert!(allocation.starved);
        assert!(allocation.audio_only);
        assert_eq!(allocation.used, 0);
    }

    #[test]
    fn a_flowing_track_keeps_its_place_and_going_up_needs_headroom() {
        // Room for one lowest layer: the one that flows keeps it, whatever the order.
        let waiting = demand(Priority::Low);
        let flowing = Demand { current: Some(0), ..demand(Priority::Low) };
        assert_eq!(allocate(200_000, &[waiting.clone(), flowing.clone()], false).wants, vec![Want::Nothing, want("q")]);
        // The middle layer costs 350 kbit/s more: at 500 kbit/s it fits exactly but a start
        // there needs 25% headroom; a track already on it keeps it.
        let stage = demand(Priority::High);
        assert_eq!(allocate(500_000, std::slice::from_ref(&stage), false).wants, vec![want("q")]);
        assert_eq!(allocate(590_000, std::slice::from_ref(&stage), false).wants, vec![want("h")]);
        let on_middle = Demand { current: Some(1), ..demand(Priority::High) };
        assert_eq!(allocate(500_000, &[on_middle], false).wants, vec![want("h")]);
    }

    #[test]
    fn a_picture_limit_gives_video_to_that_many_tracks_the_flowing_one_first_and_still_lets_it_go_up() {
        // Generated: any number of tiles, any limit, an open budget and the floor or not.
        for tiles in 1..8usize {
            for limit in 0..=tiles + 1 {
                for floor in [false, true] {
                    let flowing_rank = tiles / 2;
                    let demands: Vec<Demand> = (0..tiles)
                        .map(|rank| Demand {
                            rank,
                            current: (rank == flowing_rank).then_some(0),
                            ..demand(Priority::High)
                        })
                        .collect();
                    let allocation = allocate_pictures(100_000_000, &demands, floor, limit);
                    let given = allocation.wants.iter().filter(|want| **want != Want::Nothing).count();
                    assert_eq!(given, limit.min(tiles), "{tiles} tiles, limit {limit}");
                    if limit >= 1 {
                        // The flowing one is among them, at the top layer.
                        assert_eq!(allocation.wants[flowing_rank], want("f"), "{tiles} tiles, limit {limit}");
                    }
                    assert!(!allocation.audio_only, "a limit is not audio-only mode");
                }
            }
        }
        assert_eq!(allocate_pictures(100_000_000, &[demand(Priority::Low)], false, usize::MAX).wants, vec![want("q")]);
    }

    #[test]
    fn a_picture_keeps_its_place_when_the_page_reorders_tiles_of_one_size() {
        // The page lists the new active speaker first (rank 0); the camera that flows is now
        // second. A line with room for one lowest layer keeps the flowing one.
        let speaker = demand(Priority::Low);
        let flowing = Demand { current: Some(0), rank: 1, ..demand(Priority::Low) };
        assert_eq!(allocate(200_000, &[speaker.clone(), flowing.clone()], false).wants, vec![Want::Nothing, want("q")]);
        // Room for both: both, the speaker too.
        assert_eq!(allocate(400_000, &[speaker.clone(), flowing.clone()], false).wants, vec![want("q"), want("q")]);
        // A larger tile still comes first: the stage (or a screen share) takes the one picture.
        let stage = demand(Priority::High);
        assert_eq!(allocate(200_000, &[stage, flowing], false).wants, vec![want("q"), Want::Nothing]);
        // Generated: whatever the ranks, with room for one picture the flowing track of a
        // priority keeps it against any number of tiles of that priority that would start.
        for tiles in 2..8usize {
            for flowing_rank in 0..tiles {
                let demands: Vec<Demand> = (0..tiles)
                    .map(|rank| Demand { rank, current: (rank == flowing_rank).then_some(0), ..demand(Priority::Low) })
                    .collect();
                let wants = allocate(200_000, &demands, false).wants;
                for (rank, got) in wants.iter().enumerate() {
                    let expected = if rank == flowing_rank { want("q") } else { Want::Nothing };
                    assert_eq!(*got, expected, "{tiles} tiles, flowing rank {flowing_rank}");
                }
            }
        }
    }

    #[test]
    fn hidden_tiles_cost_nothing_and_starve_nobody() {
        let demands = [demand(Priority::Off), demand(Priority::Off)];
        let allocation = allocate(0, &demands, false);
        assert_eq!(allocation.wants, vec![Want::Nothing, Want::Nothing]);
        assert!(!allocation.starved);
        assert!(!allocation.audio_only);
        assert_eq!(allocation.desired, 0);
    }

    #[test]
    fn a_track_without_simulcast_is_all_or_nothing() {
        let single = Demand {
            priority: Priority::High,
            layers: vec![Layer { id: None, bitrate: 800_000 }],
            current: None,
            rank: 0,
        };
        assert_eq!(allocate(1_000_000, std::slice::from_ref(&single), false).wants, vec![Want::Layer(None)]);
        assert_eq!(allocate(500_000, &[single], false).wants, vec![Want::Nothing]);
    }

    #[test]
    fn generated_budgets_never_exceed_the_budget_and_grow_monotonically() {
        let demands = [demand(Priority::High), demand(Priority::Low), demand(Priority::High), demand(Priority::Low)];
        let mut previous_used = 0;
        for budget in (0..5_000_000).step_by(25_000) {
            let allocation = allocate(budget, &demands, false);
            assert!(allocation.used <= budget, "{budget}: {allocation:?}");
            assert!(allocation.used >= previous_used, "more budget, less video at {budget}");
            previous_used = allocation.used;
            for (index, want) in allocation.wants.iter().enumerate() {
                if demands[index].priority == Priority::Low {
                    assert!(matches!(want, Want::Nothing) || *want == super::tests::want("q"));
                }
            }
        }
    }

    #[test]
    fn on_a_clear_link_every_visible_track_keeps_its_lowest_layer_whatever_the_estimate() {
        let demands = [demand(Priority::High), demand(Priority::Low), demand(Priority::Off)];
        let allocation = allocate(50_000, &demands, true);
        assert_eq!(allocation.wants, vec![want("q"), want("q"), Want::Nothing]);
        assert!(allocation.floored);
        assert!(!allocation.starved && !allocation.audio_only);
        // Going above the lowest layer still needs the budget.
        let allocation = allocate(800_000, &demands, true);
        assert_eq!(allocation.wants, vec![want("h"), want("q"), Want::Nothing]);
        assert!(!allocation.floored, "everything fitted: the floor did nothing");
        // Generated budgets: the floor never takes video away, and adds only lowest layers.
        for budget in (0..3_000_000).step_by(10_000) {
            let with = allocate(budget, &demands, true);
            let without = allocate(budget, &demands, false);
            assert!(with.used >= without.used, "{budget}");
            assert!(!with.audio_only, "{budget}");
            for (index, (a, b)) in with.wants.iter().zip(&without.wants).enumerate() {
                if *b == Want::Nothing && *a != Want::Nothing {
                    assert_eq!(*a, want("q"), "{budget}: track {index}");
                }
            }
        }
    }

    fn second(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn the_floor_needs_five_clear_reports_and_no_loss_or_grown_round_trip() {
        let start = Instant::now();
        let rtt = Some(Duration::from_millis(20));
        let mut link = LinkHealth::default();
        assert!(!link.clear(start), "nothing known yet");
        for (at, loss) in [(0, 0.0), (1, 0.01), (2, 0.0), (3, 0.0)] {
            link.record(start + second(at), Some(loss), rtt);
        }
        assert!(!link.clear(start + second(3)), "four reports are not enough");
        link.record(start + second(4), Some(0.0), rtt);
        assert!(link.clear(start + second(4)));
        assert!(!link.clear(start + second(8)), "a stale report says nothing");
        // Loss at 2% or more, or a report without a loss figure, or a round trip 250 ms
        // above the lowest: not clear until five clear reports again.
        for bad in [(Some(0.02), rtt), (None, rtt), (Some(0.0), Some(Duration::from_millis(300)))] {
            let mut link = LinkHealth::default();
            for at in 0..5 {
                link.record(start + second(at), Some(0.0), rtt);
            }
            link.record(start + second(5), bad.0, bad.1);
            assert!(!link.clear(start + second(5)), "{bad:?}");
            for at in 6..10 {
                link.record(start + second(at), Some(0.0), rtt);
            }
            assert!(!link.clear(start + second(9)), "{bad:?}");
            link.record(start + second(10), Some(0.0), rtt);
            assert!(link.clear(start + second(10)), "{bad:?}");
        }
        // Every second under 2%, but 1.5% on average: a lossy line, not clear.
        let mut link = LinkHealth::default();
        for at in 0..10 {
            link.record(start + second(at), Some(0.015), rtt);
        }
        assert!(!link.clear(start + second(9)));
    }

    #[test]
    fn a_line_that_queues_or_loses_a_tenth_is_not_steady() {
        let start = Instant::now();
        let mut queueing = LinkHealth::default();
        let mut losing = LinkHealth::default();
        for at in 0..10 {
            let rtt = Duration::from_millis(if at < 5 { 30 } else { 400 });
            queueing.record(start + second(at), Some(0.03), Some(rtt));
            losing.record(start + second(at), Some(0.12), Some(Duration::from_millis(30)));
        }
        assert!(!queueing.steady(start + second(9)), "a grown round trip is a queue");
        // One second of grown round trip (a keyframe in the line's queue) among five is not.
        let mut burst = LinkHealth::default();
        for at in 0..10 {
            let rtt = Duration::from_millis(if at == 7 { 400 } else { 30 });
            burst.record(start + second(at), Some(0.05), Some(rtt));
            assert!(at < 4 || burst.steady(start + second(at)), "a keyframe burst at 7 s: not steady at {at} s");
        }
        let mut twice = LinkHealth::default();
        for at in 0..10 {
            let rtt = Duration::from_millis(if at == 6 || at == 8 { 400 } else { 30 });
            twice.record(start + second(at), Some(0.05), Some(rtt));
        }
        assert!(!twice.steady(start + second(9)), "two grown round trips in five seconds are a queue");
        assert!(!losing.steady(start + second(9)), "12% loss is more than random loss");
        assert!(!queueing.steady(start + second(20)), "stale reports");
    }

    #[test]
    fn a_line_showing_a_picture_keeps_it_through_keyframe_queues_but_not_a_standing_queue() {
        let start = Instant::now();
        // Generated: every pattern of grown round trips over five seconds of 5% loss.
        for pattern in 0u32..32 {
            let mut link = LinkHealth::default();
            for at in 0..5 {
                let rtt = Duration::from_millis(if pattern & (1 << at) != 0 { 400 } else { 30 });
                link.record(start + second(at), Some(0.05), Some(rtt));
            }
            // A round trip is grown once a lower one has been seen before it.
            let grown = |at: u32| pattern & (1 << at) != 0 && (0..at).any(|before| pattern & (1 << before) == 0);
            let seen = (0..5).filter(|at| grown(*at)).count();
            let now = start + second(4);
            assert_eq!(link.steady(now), seen <= 1, "{pattern:05b}: steady");
            assert_eq!(link.holds(now), seen <= HOLD_QUEUED, "{pattern:05b}: holds");
            assert!(link.holds(now) || !link.steady(now), "{pattern:05b}: steady but does not hold");
        }
        // A line that loses a tenth, or whose reports stopped, does not hold either.
        let mut losing = LinkHealth::default();
        for at in 0..5 {
            losing.record(start + second(at), Some(0.12), Some(Duration::from_millis(30)));
        }
        assert!(!losing.holds(start + second(4)));
        assert!(!losing.holds(start + second(20)));
    }

    #[test]
    fn random_loss_of_a_district_line_never_opens_the_floor() {
        // Ten minutes of a link losing 3% or 5% of packets at random, 60 packets a second
        // (audio and some video): single seconds without loss happen, the floor never opens.
        for percent in [3u64, 5] {
            let start = Instant::now();
            let mut link = LinkHealth::default();
            let mut state = 0x2545_f491_4f6c_dd1du64 ^ percent;
            let mut quiet_seconds = 0;
            for at in 0..600 {
                let mut lost = 0;
                for _ in 0..60 {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    lost += u32::from(state % 100 < percent);
                }
                quiet_seconds += u32::from(lost <= 1);
                link.record(start + second(at), Some(lost as f32 / 60.0), Some(Duration::from_millis(30)));
                assert!(!link.clear(start + second(at)), "{percent}% loss opened the floor at {at} s");
                // It is steady, though: random loss, the round trip flat.
                assert!(at < 4 || link.steady(start + second(at)), "{percent}% loss not steady at {at} s");
            }
            assert!(quiet_seconds > 0, "the generator never made a quiet second: the test proves nothing");
        }
    }

    #[test]
    fn a_line_losing_five_percent_holds_its_rate_and_a_clean_one_does_not() {
        // Ten minutes at 60 packets a second: 5% random loss reads as lossy nearly always
        // (the mean of five seconds), no loss never; a stale report says nothing.
        let start = Instant::now();
        for (percent, lossy_at_least, lossy_at_most) in [(5u64, 570, 600), (0, 0, 0)] {
            let mut link = LinkHealth::default();
            let mut state = 0x2545_f491_4f6c_dd1du64;
            let mut lossy = 0;
            for at in 0..600 {
                let mut lost = 0;
                for _ in 0..60 {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    lost += u32::from(state % 100 < percent);
                }
                link.record(start + second(at), Some(lost as f32 / 60.0), Some(Duration::from_millis(70)));
                lossy += u32::from(link.lossy(start + second(at)));
            }
            assert!((lossy_at_least..=lossy_at_most).contains(&lossy), "{percent}% loss: lossy in {lossy} of 600 s");
            assert!(!link.lossy(start + second(610)), "a stale report still holds the rate");
        }
        // Seconds with nothing acknowledged carry no loss figure: they do not count.
        let mut link = LinkHealth::default();
        link.record(start, None, None);
        assert!(!link.lossy(start));
    }

    #[test]
    fn congestion_under_the_floor_withdraws_it_for_longer_each_time() {
        let start = Instant::now();
        let rtt = Some(Duration::from_millis(20));
        let mut link = LinkHealth::default();
        let mut at = 0;
        let clear_run = |link: &mut LinkHealth, at: &mut u64, count: u64| {
            for _ in 0..count {
                link.record(start + second(*at), Some(0.0), rtt);
                *at += 1;
            }
        };
        clear_run(&mut link, &mut at, 5);
        assert!(link.clear(start + second(at)));
        link.set_floored(start + second(at), true);
        // The floor overfilled the link: 10% loss.
        link.record(start + second(at), Some(0.10), rtt);
        let blocked_at = at;
        at += 1;
        clear_run(&mut link, &mut at, 10);
        assert!(!link.clear(start + second(at)), "blocked for 20 s");
        at = blocked_at + 20;
        clear_run(&mut link, &mut at, 5);
        assert!(link.clear(start + second(at)), "the block is over");
        // Again: now 40 s.
        link.set_floored(start + second(at), true);
        link.record(start + second(at), Some(0.10), rtt);
        let blocked_at = at;
        at = blocked_at + 35;
        clear_run(&mut link, &mut at, 5);
        assert!(!link.clear(start + second(at - 1)), "still blocked at 39 s");
        at = blocked_at + 40;
        clear_run(&mut link, &mut at, 5);
        assert!(link.clear(start + second(at)));
        // Loss while the floor was not holding anything up blocks nothing.
        link.set_floored(start + second(at), false);
        link.record(start + second(at), Some(0.10), rtt);
        at += 1;
        clear_run(&mut link, &mut at, 5);
        assert!(link.clear(start + second(at - 1)));
    }
}
