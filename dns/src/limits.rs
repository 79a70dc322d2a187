//! Response rate limiting per client prefix (/24 for IPv4, /56 for IPv6), the defence against
//! being used as a reflector for floods of NXDOMAIN or large answers.
//!
//! Over the limit, every second answer "slips" as an empty TC=1 answer (a real client retries
//! over TCP, which cannot be spoofed) and the others are dropped, as in BIND and NSD's RRL.
//! Each UDP worker keeps its own counters, so nothing is shared on the hot path.

use std::net::IpAddr;

use ipnet::IpNet;
use rustc_hash::FxHashMap;

/// Prefixes tracked at most per worker; beyond that, new prefixes are not limited (memory
/// stays bounded under a spoofed-source flood).
const MAX_TRACKED: usize = 100_000;

/// What to do with one answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Send,
    Slip,
    Drop,
}

/// Counters for one one-second window.
#[derive(Debug, Default)]
pub struct RateLimiter {
    window: u64,
    counts: FxHashMap<u128, u32>,
}

impl RateLimiter {
    /// `limit` answers per second per prefix (0: unlimited); `exempt` networks are never
    /// limited; `now_seconds` is any monotonic second count.
    pub fn check(&mut self, client: IpAddr, limit: u32, exempt: &[IpNet], now_seconds: u64) -> Verdict {
        if limit == 0 || exempt.iter().any(|network| network.contains(&client)) {
            return Verdict::Send;
        }
        if now_seconds != self.window {
            self.window = now_seconds;
            self.counts.clear();
        }
        let prefix = match client {
            IpAddr::V4(v4) => u128::from(u32::from(v4) & 0xFFFF_FF00),
            IpAddr::V6(v6) => (u128::from(v6) & !((1u128 << 72) - 1)) | 1,
        };
        if self.counts.len() >= MAX_TRACKED && !self.counts.contains_key(&prefix) {
            return Verdict::Send;
        }
        let count = self.counts.entry(prefix).or_insert(0);
        *count += 1;
        if *count <= limit {
            Verdict::Send
        } else if (*count - limit) % 2 == 1 {
            Verdict::Slip
        } else {
            Verdict::Drop
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_per_prefix_and_exempts_loopback() {
        let mut limiter = RateLimiter::default();
        let exempt: Vec<IpNet> = vec!["127.0.0.0/8".parse().unwrap()];
        let client: IpAddr = "10.20.0.7".parse().unwrap();
        let neighbour: IpAddr = "10.20.0.8".parse().unwrap();
        for _ in 0..3 {
            assert_eq!(limiter.check(client, 3, &exempt, 1), Verdict::Send);
        }
        assert_eq!(limiter.check(neighbour, 3, &exempt, 1), Verdict::Slip);
        assert_eq!(limiter.check(client, 3, &exempt, 1), Verdict::Drop);
        assert_eq!(limiter.check("127.0.0.1".parse().unwrap(), 3, &exempt, 1), Verdict::Send);
        assert_eq!(limiter.check(client, 3, &exempt, 2), Verdict::Send);
    }
}
