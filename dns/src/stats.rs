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

impl Default for Stats {
    fn default() -> Self {
        Self::new()
    }
}
