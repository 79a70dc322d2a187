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

/// The bucket a client address counts in. An IPv4 client seen on a dual-stack listener
/// arrives as `::ffff:a.b.c.d`: it counts as that IPv4 address, not as the `::ffff:0:0/64`
/// every IPv4 client shares. IPv6 clients usually own a whole /64, so it counts as one.
pub(crate) fn key(address: IpAddr) -> IpAddr {
    match address.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => {
            let mut segments = v6.segments();
            segments[4..].fill(0);
            IpAddr::from(segments)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

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

    /// Property over random IPv4 addresses: the plain and the IPv4-mapped form of one address
    /// share a bucket, two different IPv4 addresses never do, whatever form each arrives in.
    #[test]
    fn ipv4_mapped_addresses_count_as_their_ipv4_address() {
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let forms = |v4: Ipv4Addr| [IpAddr::V4(v4), IpAddr::V6(v4.to_ipv6_mapped())];
        for _ in 0..20_000 {
            let a = Ipv4Addr::from(next() as u32);
            let b = Ipv4Addr::from(next() as u32);
            for form in forms(a) {
                assert_eq!(key(form), IpAddr::V4(a), "{form}");
            }
            if a != b {
                for (x, y) in forms(a).into_iter().zip(forms(b).into_iter().rev()) {
                    assert_ne!(key(x), key(y), "{x} and {y} share a bucket");
                }
            }
        }
    }

    /// Through the guard itself: one IPv4 client on a dual-stack listener locks only itself out.
    #[test]
    fn one_mapped_ipv4_client_does_not_lock_out_the_others() {
        let now = Instant::now();
        let mut guard = PinGuard::default();
        let attacker: IpAddr = "::ffff:10.30.1.7".parse().unwrap();
        for _ in 0..MAX_WRONG_PINS {
            guard.record_failure(now, attacker);
        }
        assert!(!guard.allows(now, attacker));
        assert!(!guard.allows(now, "10.30.1.7".parse().unwrap()));
        assert!(guard.allows(now, "::ffff:10.30.1.8".parse().unwrap()));
        assert!(guard.allows(now, "::ffff:192.168.5.20".parse().unwrap()));
    }
}
