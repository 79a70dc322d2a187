//! Password checks, the per-client limit on failed AUTH attempts and the cap on argon2
//! verifications running at once.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordVerifier};
use tokio::sync::Semaphore;

/// Failures allowed per client address within [`WINDOW`] before AUTH is refused outright.
const MAX_FAILURES: u32 = 5;
const WINDOW: Duration = Duration::from_secs(15 * 60);
/// Clients tracked at once; the longest idle is forgotten first when full.
const MAX_TRACKED: usize = 10_000;
/// argon2id verifications at once (~19 MiB each); more wait up to [`VERIFICATION_WAIT`].
const MAX_VERIFICATIONS: usize = 4;
const VERIFICATION_WAIT: Duration = Duration::from_secs(10);

/// A hash of a random password, checked when the login is unknown so that the reply takes as
/// long as for a known login (no user enumeration by timing).
const DECOY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$bGllbnRob25nZGVjb3k$3t8mQ7E6n1T5b8dKp9ZsYw2x0vJ6qRlWc4HhUoNaBfg";

/// Verifies `password` against an argon2id PHC string (or the decoy when `hash` is `None`).
pub fn verify(hash: Option<&str>, password: &str) -> bool {
    let known = hash.is_some();
    let Ok(parsed) = PasswordHash::new(hash.unwrap_or(DECOY_HASH)) else { return false };
    let matches = argon2::Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok();
    known && matches
}

/// The unit a client is limited by: an IPv4 address, or an IPv6 /64 (one subscriber's LAN;
/// its owner can use any of its 2^64 addresses). IPv4-mapped IPv6 counts as the IPv4 address.
pub fn client_key(peer: IpAddr) -> IpAddr {
    match peer {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX))),
        },
        v4 => v4,
    }
}

#[derive(Debug, Clone, Copy)]
struct Attempts {
    count: u32,
    since: Instant,
    last: Instant,
}

/// Recent AUTH attempts per client ([`client_key`]). An attempt is counted as failed before
/// its password is checked and refunded if it succeeds, so parallel sessions cannot each get a
/// try past the limit. When the table is full the longest-idle client is forgotten: limiting
/// never stops.
#[derive(Default)]
pub struct AuthFailures {
    attempts: Mutex<HashMap<IpAddr, Attempts>>,
}

/// An attempt counted against a client; give it back with [`AuthFailures::refund`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reservation(IpAddr);

impl AuthFailures {
    /// Counts one attempt for `peer`, or `None` when it has used up its failures.
    pub fn reserve(&self, peer: IpAddr, now: Instant) -> Option<Reservation> {
        let key = client_key(peer);
        let mut table = self.attempts.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if !table.contains_key(&key) && table.len() >= MAX_TRACKED {
            table.retain(|_, attempts| now.duration_since(attempts.since) < WINDOW);
            if table.len() >= MAX_TRACKED
                && let Some(oldest) = table.iter().min_by_key(|(_, attempts)| attempts.last).map(|(key, _)| *key)
            {
                table.remove(&oldest);
            }
        }
        let entry = table.entry(key).or_insert(Attempts { count: 0, since: now, last: now });
        if now.duration_since(entry.since) >= WINDOW {
            *entry = Attempts { count: 0, since: now, last: now };
        }
        if entry.count >= MAX_FAILURES {
            return None;
        }
        entry.count += 1;
        entry.last = now;
        Some(Reservation(key))
    }

    /// The attempt succeeded (or was never checked): it does not count as a failure.
    pub fn refund(&self, reservation: Reservation) {
        let mut table = self.attempts.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(entry) = table.get_mut(&reservation.0) {
            entry.count = entry.count.saturating_sub(1);
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.attempts.lock().unwrap_or_else(std::sync::PoisonError::into_inner).len()
    }
}

/// The AUTH check: the per-client limit, then argon2id with a cap on verifications at once
/// (each needs ~19 MiB and a core for tens of milliseconds).
pub struct Authenticator {
    pub failures: AuthFailures,
    verifications: Semaphore,
    wait: Duration,
}

/// What [`Authenticator::check`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Accepted,
    Rejected,
    /// Too many failures from this client recently.
    RateLimited,
    /// Every verification slot stayed busy for too long.
    Busy,
}

impl Default for Authenticator {
    fn default() -> Self {
        Self::new(MAX_VERIFICATIONS, VERIFICATION_WAIT)
    }
}

impl Authenticator {
    pub fn new(slots: usize, wait: Duration) -> Self {
        Self { failures: AuthFailures::default(), verifications: Semaphore::new(slots), wait }
    }

    /// Checks `password` against `hash` (`None`: unknown login, checked against the decoy).
    pub async fn check(&self, peer: IpAddr, hash: Option<String>, password: String) -> Verdict {
        let Some(reservation) = self.failures.reserve(peer, Instant::now()) else { return Verdict::RateLimited };
        let permit = match tokio::time::timeout(self.wait, self.verifications.acquire()).await {
            Ok(Ok(permit)) => permit,
            Ok(Err(_)) | Err(_) => {
                self.failures.refund(reservation);
                return Verdict::Busy;
            }
        };
        let accepted = tokio::task::spawn_blocking(move || verify(hash.as_deref(), &password)).await.unwrap_or(false);
        drop(permit);
        if accepted {
            self.failures.refund(reservation);
            Verdict::Accepted
        } else {
            Verdict::Rejected
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fail(limiter: &AuthFailures, peer: &str, now: Instant) -> bool {
        limiter.reserve(peer.parse().unwrap(), now).is_some()
    }

    #[test]
    fn blocks_after_five_failures_then_forgets() {
        let limiter = AuthFailures::default();
        let start = Instant::now();
        for _ in 0..5 {
            assert!(fail(&limiter, "10.20.1.7", start));
        }
        assert!(!fail(&limiter, "10.20.1.7", start));
        assert!(fail(&limiter, "10.20.1.8", start));
        assert!(fail(&limiter, "10.20.1.7", start + WINDOW));
    }

    #[test]
    fn a_success_refunds_only_its_own_attempt() {
        let limiter = AuthFailures::default();
        let start = Instant::now();
        let peer: IpAddr = "10.20.1.7".parse().unwrap();
        for _ in 0..4 {
            limiter.reserve(peer, start).unwrap();
        }
        let last = limiter.reserve(peer, start).unwrap();
        assert!(limiter.reserve(peer, start).is_none());
        limiter.refund(last);
        assert!(limiter.reserve(peer, start).is_some());
        assert!(limiter.reserve(peer, start).is_none());
    }

    #[test]
    fn an_ipv6_slash_64_is_one_client_and_mapped_ipv4_is_ipv4() {
        let limiter = AuthFailures::default();
        let start = Instant::now();
        for index in 1..=5 {
            assert!(fail(&limiter, &format!("2001:db8:20:5:{index:x}::{index:x}"), start));
        }
        assert!(!fail(&limiter, "2001:db8:20:5:ffff:ffff:ffff:ffff", start));
        assert!(fail(&limiter, "2001:db8:20:6::1", start));
        for _ in 0..5 {
            assert!(fail(&limiter, "::ffff:10.20.3.4", start));
        }
        assert!(!fail(&limiter, "10.20.3.4", start));
        assert_eq!(client_key("::ffff:10.20.3.4".parse().unwrap()), "10.20.3.4".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn a_full_table_keeps_limiting_and_forgets_the_longest_idle() {
        let limiter = AuthFailures::default();
        let start = Instant::now();
        for index in 0..MAX_TRACKED as u32 {
            let peer = IpAddr::V6(Ipv6Addr::from((0x2001_0db8_u128 << 96) | (u128::from(index) << 64)));
            limiter.reserve(peer, start + Duration::from_millis(u64::from(index))).unwrap();
        }
        assert_eq!(limiter.len(), MAX_TRACKED);
        let later = start + Duration::from_secs(60);
        for _ in 0..5 {
            assert!(fail(&limiter, "203.0.113.9", later));
        }
        assert!(!fail(&limiter, "203.0.113.9", later), "a full table must not stop limiting");
        assert_eq!(limiter.len(), MAX_TRACKED);
        // The first client (idle longest) was forgotten; the second is still known.
        let table = limiter.attempts.lock().unwrap();
        assert!(!table.contains_key(&"2001:db8::".parse::<IpAddr>().unwrap()));
        assert!(table.contains_key(&"2001:db8:0:1::".parse::<IpAddr>().unwrap()));
    }

    #[tokio::test]
    async fn verifications_beyond_the_cap_wait_then_get_busy() {
        let authenticator = Authenticator::new(1, Duration::from_millis(50));
        let held = authenticator.verifications.acquire().await.unwrap();
        let verdict = authenticator.check("10.20.1.7".parse().unwrap(), None, "x".into()).await;
        assert_eq!(verdict, Verdict::Busy);
        drop(held);
        // The busy attempt was refunded: five real tries remain.
        for _ in 0..5 {
            assert_eq!(authenticator.check("10.20.1.7".parse().unwrap(), None, "x".into()).await, Verdict::Rejected);
        }
        assert_eq!(authenticator.check("10.20.1.7".parse().unwrap(), None, "x".into()).await, Verdict::RateLimited);
    }

    #[test]
    fn verifies_argon2id() {
        use argon2::password_hash::{PasswordHasher, SaltString};
        let salt = SaltString::encode_b64(b"ninhthuan-salt16").unwrap();
        let hash = argon2::Argon2::default().hash_password(b"mat-khau-dung", &salt).unwrap().to_string();
        assert!(verify(Some(&hash), "mat-khau-dung"));
        assert!(!verify(Some(&hash), "sai"));
        assert!(!verify(None, "mat-khau-dung"));
    }
}
