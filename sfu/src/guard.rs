//! Slows down PIN guessing: each client address (an IPv6 /64 counts as one) gets a limited
//! number of wrong PINs per window, across all of its connections. Sans-IO: time is passed in.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Wrong PINs an address may send per window. A district office behind one NAT address has
/// room for typos from many people; guessing a 6-digit PIN takes about 25,000 windows.
pub(crate) const MAX_WRONG_PINS: u32 = 20;
pub(crate) const WINDOW: Duration = Duration::from_secs(600);
/// Addresses remembered at once; beyond this, expired entries are dropped first.
const MAX_TRACKED: usize = 100_000;

#[derive(Debug, Default)]
pub(crate) struct PinGuard {
    failures: HashMap<IpAddr, (Instant, u32)>,
}

impl PinGuard {
    /// Whether this address may try a PIN now.
    pub fn allows(&self, now: Instant, address: IpAddr) -> bool {
        match self.failures.get(&key(address)) {
            Some((since, count)) => now.duration_since(*since) >= WINDOW || *count < MAX_WRONG_PINS,
            None => true,
        }
    }

    pub fn record_failure(&mut self, now: Instant, address: IpAddr) {
        if self.failures.len() >= MAX_TRACKED {
            self.failures.retain(|_, (since, _)| now.duration_since(*since) < WINDOW);
            if self.failures.len() >= MAX_TRACKED {
                tracing::warn!("too many addresses guessing PINs to track them all");
                return;
            }
        }
        let entry = self.failures.entry(key(address)).or_insert((now, 0));
        if now.duration_since(entry.0) >= WINDOW {
            *entry = (now, 0);
        }
        entry.1 += 1;
    }
}

/// IPv6 clients usually own a whole /64, so it counts as one address.
fn key(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V4(_) => address,
        IpAddr::V6(v6) => {
            let mut segments = v6.segments();
            segments[4..].fill(0);
            IpAddr::from(segments)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_stopped_after_too_many_wrong_pins_until_the_window_passes() {
        let now = Instant::now();
        let mut guard = PinGuard::default();
        let district: IpAddr = "10.30.1.7".parse().unwrap();
        let other: IpAddr = "10.30.2.7".parse().unwrap();
        for _ in 0..MAX_WRONG_PINS {
            assert!(guard.allows(now, district));
            guard.record_failure(now, district);
        }
        assert!(!guard.allows(now, district));
        assert!(guard.allows(now, other));
        assert!(guard.allows(now + WINDOW, district));
        guard.record_failure(now + WINDOW, district);
        assert!(guard.allows(now + WINDOW, district));
    }

    #[test]
    fn an_ipv6_slash_64_counts_as_one_address() {
        let now = Instant::now();
        let mut guard = PinGuard::default();
        for host in 0..MAX_WRONG_PINS {
            guard.record_failure(now, format!("2001:db8:1:2::{host:x}").parse().unwrap());
        }
        assert!(!guard.allows(now, "2001:db8:1:2::ffff".parse().unwrap()));
        assert!(guard.allows(now, "2001:db8:1:3::1".parse().unwrap()));
    }
}
