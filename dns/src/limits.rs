//! Response rate limiting per client prefix (/24 for IPv4, /56 for IPv6), the defence against
//! being used as a reflector for floods of NXDOMAIN or large answers.
//!
//! Over the limit, every second answer "slips" as an empty TC=1 answer (a real client retries
//! over TCP, which cannot be spoofed) and the others are dropped, as in BIND and NSD's RRL.
//!
//! One limiter serves every UDP worker and every answer path (authoritative, forwarded from
//! the cache, forwarded after an upstream round trip), so the limit is what the operator
//! wrote, whatever the number of cores. It is a fixed table of atomic counters, as NSD's
//! `rrl-size` table: no lock, no allocation, one atomic add per answer. Each slot packs the
//! one-second window it counts for (high 32 bits) and the count (low 32 bits). Two prefixes
//! that hash to one slot share its budget: under a spoofed-source flood that fails closed
//! (more limiting, never less), and memory never grows.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use ipnet::IpNet;

/// Slots in the table (2 MiB of counters).
const SLOTS: usize = 1 << 18;

/// What to do with one answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Send,
    Slip,
    Drop,
}

/// The shared limiter: counters for the current one-second window of each prefix.
pub struct RateLimiter {
    slots: Box<[AtomicU64]>,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("RateLimiter").field("slots", &self.slots.len()).finish()
    }
}

impl Default for RateLimiter {
    fn default() -> Self {
        RateLimiter { slots: (0..SLOTS).map(|_| AtomicU64::new(0)).collect() }
    }
}

impl RateLimiter {
    /// `limit` answers per second per prefix (0: unlimited); `exempt` networks are never
    /// limited; `now_seconds` is any monotonic second count shared by every caller.
    pub fn check(&self, client: IpAddr, limit: u32, exempt: &[IpNet], now_seconds: u64) -> Verdict {
        if limit == 0 || exempt.iter().any(|network| network.contains(&client)) {
            return Verdict::Send;
        }
        let client = canonical(client);
        let prefix = match client {
            IpAddr::V4(v4) => u128::from(u32::from(v4) & 0xFFFF_FF00),
            IpAddr::V6(v6) => (u128::from(v6) & !((1u128 << 72) - 1)) | 1,
        };
        let slot = &self.slots[slot_of(prefix)];
        let window = now_seconds as u32;
        let current = slot.load(Ordering::Relaxed);
        let count = if (current >> 32) as u32 == window {
            (slot.fetch_add(1, Ordering::Relaxed) as u32).saturating_add(1)
        } else {
            match slot.compare_exchange(current, (u64::from(window) << 32) | 1, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => 1,
                // Another worker opened the window first: count in it.
                Err(_) => (slot.fetch_add(1, Ordering::Relaxed) as u32).saturating_add(1),
            }
        };
        if count <= limit {
            Verdict::Send
        } else if (count - limit) % 2 == 1 {
            Verdict::Slip
        } else {
            Verdict::Drop
        }
    }
}

/// IPv4-mapped IPv6 addresses count as the IPv4 address they carry.
fn canonical(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(address, IpAddr::V4),
        IpAddr::V4(_) => address,
    }
}

/// The table slot of a prefix: a multiplicative hash of both halves (keyed per process would
/// not help: the attacker does not see the table).
fn slot_of(prefix: u128) -> usize {
    let mixed = ((prefix as u64) ^ ((prefix >> 64) as u64).rotate_left(29)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (mixed >> (64 - SLOTS.trailing_zeros())) as usize
}

/// TCP connections per client, so one client cannot hold every slot of the listener.
///
/// A TCP client has completed a handshake, so its address is its own. IPv4 clients are
/// counted by address, not by /24: the data center's own hosts (mailbox server, secondaries,
/// the district resolvers) often share one /24, and one of them misbehaving must not lock
/// out the others. IPv6 clients are counted by /64, because one host may use every address
/// of its /64 (privacy addresses) while a /56 is a whole site. IPv4-mapped addresses count as
/// IPv4. Entries exist only for clients with an open connection, so the table is bounded by
/// the total connection cap.
#[derive(Debug, Default)]
pub struct ClientSlots {
    open: std::sync::Mutex<rustc_hash::FxHashMap<u128, u32>>,
}

/// One open connection of one client; frees its slot when dropped.
#[derive(Debug)]
pub struct ClientSlot {
    slots: std::sync::Arc<ClientSlots>,
    key: u128,
}

impl ClientSlots {
    /// Takes a slot for `client` unless it already has `cap` connections open.
    pub fn take(self: &std::sync::Arc<Self>, client: IpAddr, cap: usize) -> Option<ClientSlot> {
        let key = client_key(client);
        let mut open = self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = open.entry(key).or_insert(0);
        if *count as usize >= cap {
            if *count == 0 {
                open.remove(&key);
            }
            return None;
        }
        *count += 1;
        Some(ClientSlot { slots: self.clone(), key })
    }

    /// How many clients have a connection open.
    pub fn clients(&self) -> usize {
        self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner).len()
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut open = self.slots.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(count) = open.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.key);
            }
        }
    }
}

fn client_key(client: IpAddr) -> u128 {
    match canonical(client) {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => (u128::from(v6) & !((1u128 << 64) - 1)) | 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_per_prefix_and_exempts_loopback() {
        let limiter = RateLimiter::default();
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
        let mapped: IpAddr = "::ffff:10.20.0.9".parse().unwrap();
        assert_eq!(limiter.check(mapped, 3, &exempt, 2), Verdict::Send);
        assert_eq!(limiter.check(mapped, 3, &exempt, 2), Verdict::Send);
        assert_eq!(limiter.check(client, 3, &exempt, 2), Verdict::Slip, "mapped IPv4 shares the /24");
    }

    #[test]
    fn threads_share_one_budget() {
        let limiter = std::sync::Arc::new(RateLimiter::default());
        let client: IpAddr = "203.0.113.9".parse().unwrap();
        let sent: usize = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    let limiter = limiter.clone();
                    scope
                        .spawn(move || (0..1000).filter(|_| limiter.check(client, 50, &[], 7) == Verdict::Send).count())
                })
                .collect();
            handles.into_iter().map(|handle| handle.join().unwrap()).sum()
        });
        assert_eq!(sent, 50, "four threads together get the limit, not four times it");
    }

    #[test]
    fn tcp_slots_are_capped_per_address_and_per_ipv6_64() {
        let slots = std::sync::Arc::new(ClientSlots::default());
        let client: IpAddr = "10.20.0.7".parse().unwrap();
        let first = slots.take(client, 2).unwrap();
        let _second = slots.take(client, 2).unwrap();
        assert!(slots.take(client, 2).is_none());
        assert!(slots.take("::ffff:10.20.0.7".parse().unwrap(), 2).is_none(), "mapped IPv4 is the same client");
        assert!(slots.take("10.20.0.8".parse().unwrap(), 2).is_some(), "a neighbour has its own slots");
        drop(first);
        assert!(slots.take(client, 2).is_some());
        let _a = slots.take("2001:db8:1:2::1".parse().unwrap(), 1).unwrap();
        assert!(slots.take("2001:db8:1:2::ffff".parse().unwrap(), 1).is_none(), "one /64");
        assert!(slots.take("2001:db8:1:3::1".parse().unwrap(), 1).is_some(), "the next /64");
    }

    #[test]
    fn distinct_prefixes_rarely_share_a_slot() {
        let mut used = std::collections::HashSet::new();
        for third in 0..=255u128 {
            for second in 0..16u128 {
                used.insert(slot_of(10 << 24 | second << 16 | third << 8));
            }
        }
        assert!(used.len() > 4000, "{} slots for 4096 prefixes", used.len());
    }
}
