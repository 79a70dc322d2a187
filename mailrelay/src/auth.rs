//! Password checks and the per-address limit on failed AUTH attempts.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordVerifier};

/// Failures allowed per client address within [`WINDOW`] before AUTH is refused outright.
const MAX_FAILURES: u32 = 5;
const WINDOW: Duration = Duration::from_secs(15 * 60);
/// Addresses tracked at once; the oldest are forgotten first when full.
const MAX_TRACKED: usize = 10_000;

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

/// Recent failed AUTH attempts per client address.
#[derive(Default)]
pub struct AuthFailures {
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

impl AuthFailures {
    pub fn is_blocked(&self, peer: IpAddr, now: Instant) -> bool {
        let failures = self.failures.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        failures.get(&peer).is_some_and(|(count, since)| *count >= MAX_FAILURES && now.duration_since(*since) < WINDOW)
    }

    pub fn record(&self, peer: IpAddr, now: Instant) {
        let mut failures = self.failures.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if failures.len() >= MAX_TRACKED {
            failures.retain(|_, (_, since)| now.duration_since(*since) < WINDOW);
        }
        if failures.len() >= MAX_TRACKED {
            return;
        }
        let entry = failures.entry(peer).or_insert((0, now));
        if now.duration_since(entry.1) >= WINDOW {
            *entry = (0, now);
        }
        entry.0 += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_after_five_failures_then_forgets() {
        let limiter = AuthFailures::default();
        let peer: IpAddr = "10.20.1.7".parse().unwrap();
        let start = Instant::now();
        for _ in 0..4 {
            limiter.record(peer, start);
        }
        assert!(!limiter.is_blocked(peer, start));
        limiter.record(peer, start);
        assert!(limiter.is_blocked(peer, start));
        assert!(!limiter.is_blocked("10.20.1.8".parse().unwrap(), start));
        assert!(!limiter.is_blocked(peer, start + WINDOW));
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
