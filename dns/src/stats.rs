//! Metrics handles, created once and cloned into each worker (no label lookups per packet).

use metrics::Counter;

/// Query types counted under their own label; everything else is `other`.
const TYPES: [(u16, &str); 12] = [
    (1, "A"),
    (28, "AAAA"),
    (15, "MX"),
    (16, "TXT"),
    (2, "NS"),
    (6, "SOA"),
    (5, "CNAME"),
    (33, "SRV"),
    (12, "PTR"),
    (257, "CAA"),
    (255, "ANY"),
    (252, "AXFR"),
];
const RCODES: [(u16, &str); 7] =
    [(0, "NOERROR"), (1, "FORMERR"), (2, "SERVFAIL"), (3, "NXDOMAIN"), (4, "NOTIMP"), (5, "REFUSED"), (9, "NOTAUTH")];

/// Counters of the DNS service.
#[derive(Clone)]
pub struct Stats {
    by_type: Vec<Counter>,
    other_type: Counter,
    by_rcode: Vec<Counter>,
    other_rcode: Counter,
    pub truncated: Counter,
    pub refused: Counter,
    pub rate_limited: Counter,
    /// TCP connections closed at once because their client was over its cap.
    pub tcp_refused: Counter,
    pub forwarded: Counter,
    pub transfers: Counter,
}

impl Stats {
    pub fn new() -> Stats {
        Stats {
            by_type: TYPES
                .iter()
                .map(|(_, name)| metrics::counter!("lienthong_dns_queries_total", "type" => *name))
                .collect(),
            other_type: metrics::counter!("lienthong_dns_queries_total", "type" => "other"),
            by_rcode: RCODES
                .iter()
                .map(|(_, name)| metrics::counter!("lienthong_dns_responses_total", "rcode" => *name))
                .collect(),
            other_rcode: metrics::counter!("lienthong_dns_responses_total", "rcode" => "other"),
            truncated: metrics::counter!("lienthong_dns_truncated_total"),
            refused: metrics::counter!("lienthong_dns_refused_total"),
            rate_limited: metrics::counter!("lienthong_dns_rate_limited_total"),
            tcp_refused: metrics::counter!("lienthong_dns_tcp_refused_total"),
            forwarded: metrics::counter!("lienthong_dns_forwarded_total"),
            transfers: metrics::counter!("lienthong_dns_transfers_total"),
        }
    }

    pub fn query(&self, qtype: u16) {
        match TYPES.iter().position(|(code, _)| *code == qtype) {
            Some(position) => self.by_type[position].increment(1),
            None => self.other_type.increment(1),
        }
    }

    pub fn response(&self, rcode: u16, truncated: bool) {
        match RCODES.iter().position(|(code, _)| *code == rcode) {
            Some(position) => self.by_rcode[position].increment(1),
            None => self.other_rcode.increment(1),
        }
        if rcode == 5 {
            self.refused.increment(1);
        }
        if truncated {
            self.truncated.increment(1);
        }
    }
}

/// Counts kept by one UDP worker between flushes: plain integers on the hot path, one
/// atomic add per counter per batch instead of several per packet.
#[derive(Debug, Default)]
pub struct Tally {
    by_type: [u64; TYPES.len() + 1],
    by_rcode: [u64; RCODES.len() + 1],
    truncated: u64,
}

impl Tally {
    pub fn query(&mut self, qtype: u16) {
        let position = TYPES.iter().position(|(code, _)| *code == qtype).unwrap_or(TYPES.len());
        self.by_type[position] += 1;
    }

    pub fn response(&mut self, rcode: u16, truncated: bool) {
        let position = RCODES.iter().position(|(code, _)| *code == rcode).unwrap_or(RCODES.len());
        self.by_rcode[position] += 1;
        self.truncated += u64::from(truncated);
    }

    /// Adds the counts to the shared counters and starts again from zero.
    pub fn flush(&mut self, stats: &Stats) {
        for (position, count) in self.by_type.iter_mut().enumerate().filter(|(_, count)| **count > 0) {
            stats.by_type.get(position).unwrap_or(&stats.other_type).increment(*count);
            *count = 0;
        }
        for (position, count) in self.by_rcode.iter_mut().enumerate().filter(|(_, count)| **count > 0) {
            stats.by_rcode.get(position).unwrap_or(&stats.other_rcode).increment(*count);
            if RCODES.get(position).is_some_and(|(code, _)| *code == 5) {
                stats.refused.increment(*count);
            }
            *count = 0;
        }
        if self.truncated > 0 {
            stats.truncated.increment(self.truncated);
            self.truncated = 0;
        }
    }
}

impl Default for Stats {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};

    use metrics::{Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};

    use super::*;

    /// Counters by `name{label=value}`.
    #[derive(Default)]
    struct TestRecorder(Mutex<HashMap<String, Arc<AtomicU64>>>);

    impl TestRecorder {
        fn value(&self, name: &str) -> u64 {
            self.0.lock().unwrap().get(name).map_or(0, |counter| counter.load(Ordering::Relaxed))
        }
    }

    impl Recorder for TestRecorder {
        fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
            let labels: Vec<String> = key.labels().map(|label| format!("{}={}", label.key(), label.value())).collect();
            let name = format!("{}{{{}}}", key.name(), labels.join(","));
            Counter::from_arc(self.0.lock().unwrap().entry(name).or_default().clone())
        }
        fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
            Gauge::noop()
        }
        fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
            Histogram::noop()
        }
    }

    #[test]
    fn worker_tallies_reach_the_counters_by_type_and_rcode() {
        let recorder = TestRecorder::default();
        metrics::with_local_recorder(&recorder, || {
            let stats = Stats::new();
            let mut tally = Tally::default();
            tally.query(1);
            tally.query(1);
            tally.query(65);
            tally.response(0, false);
            tally.response(5, false);
            tally.response(3, true);
            tally.flush(&stats);
            tally.flush(&stats);
        });
        assert_eq!(recorder.value("lienthong_dns_queries_total{type=A}"), 2);
        assert_eq!(recorder.value("lienthong_dns_queries_total{type=other}"), 1);
        assert_eq!(recorder.value("lienthong_dns_responses_total{rcode=NXDOMAIN}"), 1);
        assert_eq!(recorder.value("lienthong_dns_responses_total{rcode=REFUSED}"), 1);
        assert_eq!(recorder.value("lienthong_dns_refused_total{}"), 1);
        assert_eq!(recorder.value("lienthong_dns_truncated_total{}"), 1);
    }
}
