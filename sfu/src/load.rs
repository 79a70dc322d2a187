//! Load management for the media core, as Jitsi's bridge has it: when the hub's thread
//! cannot keep up with what the rooms ask it to forward, datagrams wait in its queue and
//! are dropped, and every receiver's pictures break at random. Instead the core is told how
//! busy the hub's thread was (its own CPU time, or fully busy when datagrams piled up in
//! its queue), and while it stays near saturation every receiver's video budget shrinks
//! (lower simulcast layers, fewer packets to forward), then grows back once there is room
//! again.

use std::time::{Duration, Instant};

/// Share of a second the hub's thread may spend on media before budgets shrink.
pub(crate) const OVERLOADED: f32 = 0.85;
/// Below this share budgets grow back.
pub(crate) const RELIEVED: f32 = 0.65;
/// The lowest video budget, in percent of each receiver's estimate: the lowest layers of
/// twelve cameras still fit a typical estimate.
pub(crate) const MIN_BUDGET_PERCENT: u64 = 20;

/// Measures the CPU time the hub's thread spends between its wake-ups, per second of
/// wall time. Each busy stretch is one synchronous run of the hub (no await inside), so it
/// stays on one thread; a machine busy with other work does not count as load.
pub(crate) struct LoadMeter {
    window_start: Instant,
    busy: Duration,
    started: Option<Duration>,
    /// Datagrams waited in the hub's queue beyond `BACKLOG` in this window.
    behind: bool,
}

/// Datagrams waiting in the hub's queue (4,096 deep) that mean it is behind: a thread
/// that other processes keep from running is as overloaded as one busy all the time.
pub(crate) const BACKLOG: usize = 1024;

impl LoadMeter {
    pub fn new(now: Instant) -> Self {
        LoadMeter { window_start: now, busy: Duration::ZERO, started: None, behind: false }
    }

    /// The hub woke up.
    pub fn start(&mut self) {
        self.started = thread_cpu_time();
    }

    /// The hub found this many datagrams waiting when it woke.
    pub fn queued(&mut self, datagrams: usize) {
        self.behind |= datagrams > BACKLOG;
    }

    /// The hub is about to wait again. Returns the share of the last second it was busy
    /// (1.0 if datagrams piled up in its queue), once a second has passed.
    pub fn stop(&mut self, now: Instant) -> Option<f32> {
        if let (Some(start), Some(end)) = (self.started.take(), thread_cpu_time()) {
            self.busy += end.saturating_sub(start);
        }
        let elapsed = now.saturating_duration_since(self.window_start);
        if elapsed < Duration::from_secs(1) {
            return None;
        }
        let share = self.busy.as_secs_f32() / elapsed.as_secs_f32();
        let share = if self.behind { share.max(1.0) } else { share };
        self.window_start = now;
        self.busy = Duration::ZERO;
        self.behind = false;
        Some(share)
    }
}

#[allow(unsafe_code)]
fn thread_cpu_time() -> Option<Duration> {
    let mut time = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `time` is a valid timespec for the call to write.
    let result = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut time) };
    (result == 0).then(|| Duration::new(time.tv_sec as u64, time.tv_nsec as u32))
}

/// The next video budget (percent of each receiver's estimate) after a measured busy share:
/// a quarter less while overloaded, a tenth back per round while relieved.
pub(crate) fn next_budget(percent: u64, busy: f32) -> u64 {
    if busy > OVERLOADED {
        (percent * 3 / 4).max(MIN_BUDGET_PERCENT)
    } else if busy < RELIEVED {
        (percent + 10).min(100)
    } else {
        percent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_meter_counts_cpu_time_not_waiting() {
        let start = Instant::now();
        let mut meter = LoadMeter::new(start);
        // Half the time spinning, half asleep, until the meter reports.
        let share = loop {
            meter.start();
            let spin = Instant::now();
            while spin.elapsed() < Duration::from_millis(5) {
                std::hint::black_box(spin.elapsed());
            }
            if let Some(share) = meter.stop(Instant::now()) {
                break share;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        assert!(start.elapsed() >= Duration::from_secs(1));
        // Spinning counts (a loaded test machine takes some of it away), sleeping does not.
        assert!((0.05..=1.0).contains(&share), "busy share {share}");

        let mut behind = LoadMeter::new(Instant::now());
        behind.queued(BACKLOG);
        behind.queued(BACKLOG + 1);
        std::thread::sleep(Duration::from_millis(1010));
        assert_eq!(behind.stop(Instant::now()), Some(1.0), "a piled-up queue is full load");
        std::thread::sleep(Duration::from_millis(1010));
        assert!(behind.stop(Instant::now()).is_some_and(|share| share < 0.05), "the next window starts afresh");

        let mut idle = LoadMeter::new(Instant::now());
        idle.start();
        std::thread::sleep(Duration::from_millis(1010));
        let share = idle.stop(Instant::now()).expect("a second passed");
        assert!(share < 0.05, "asleep counted as busy: {share}");
    }

    #[test]
    fn budgets_shrink_while_overloaded_and_grow_back() {
        let mut percent = 100;
        let mut rounds = Vec::new();
        for _ in 0..8 {
            percent = next_budget(percent, 0.97);
            rounds.push(percent);
        }
        assert_eq!(rounds, [75, 56, 42, 31, 23, 20, 20, 20]);
        assert_eq!(next_budget(42, 0.75), 42, "between the marks the budget holds");
        let mut back = 20;
        for _ in 0..8 {
            back = next_budget(back, 0.3);
        }
        assert_eq!(back, 100);
        assert_eq!(next_budget(100, 0.3), 100);
    }
}
