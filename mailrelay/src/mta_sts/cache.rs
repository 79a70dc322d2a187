//! Policies already fetched, per domain, with their TXT id and expiry (RFC 8461 5.1): a
//! bounded table, saved as JSON so a restart does not forget an `enforce` policy (which is
//! what protects against an attacker who blocks the next fetch). Time is passed in.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::policy::{Policy, PolicyId};

/// Domains remembered at most; past that the policy expiring first is dropped.
pub const MAX_DOMAINS: usize = 10_000;
/// The saved file is read only up to this size (the table's bound, with room to spare).
pub const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// One domain's policy as fetched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cached {
    pub id: PolicyId,
    pub policy: Policy,
    pub fetched_unix: u64,
}

impl Cached {
    pub fn expires_unix(&self) -> u64 {
        self.fetched_unix.saturating_add(self.policy.max_age)
    }

    pub fn is_current(&self, now_unix: u64) -> bool {
        now_unix < self.expires_unix()
    }
}

/// The table; keys are lower-case domain names.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Cache {
    domains: HashMap<String, Cached>,
}

impl Cache {
    /// Reads a saved table; entries that are expired, or beyond the bound, are dropped.
    pub fn from_json(bytes: &[u8], now_unix: u64) -> Result<Self, serde_json::Error> {
        let mut cache: Self = serde_json::from_slice(bytes)?;
        cache.domains.retain(|domain, cached| domain.len() <= 253 && cached.is_current(now_unix));
        while cache.domains.len() > MAX_DOMAINS {
            cache.evict_one();
        }
        Ok(cache)
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// The domain's policy while it has not expired.
    pub fn current(&self, domain: &str, now_unix: u64) -> Option<&Cached> {
        self.domains.get(domain).filter(|cached| cached.is_current(now_unix))
    }

    /// Stores a freshly fetched policy; a full table first drops expired entries, then the
    /// one expiring soonest.
    pub fn insert(&mut self, domain: String, cached: Cached, now_unix: u64) {
        if !self.domains.contains_key(&domain) && self.domains.len() >= MAX_DOMAINS {
            self.domains.retain(|_, cached| cached.is_current(now_unix));
            if self.domains.len() >= MAX_DOMAINS {
                self.evict_one();
            }
        }
        self.domains.insert(domain, cached);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.domains.len()
    }

    fn evict_one(&mut self) {
        let soonest = self.domains.iter().min_by_key(|(_, cached)| cached.expires_unix()).map(|(key, _)| key.clone());
        if let Some(key) = soonest {
            self.domains.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mta_sts::policy::{Mode, Record, parse_policy, parse_record};

    fn cached(id: &str, max_age: u64, fetched_unix: u64) -> Cached {
        let text = format!("version: STSv1\nmode: enforce\nmx: mx.example.vn\nmax_age: {max_age}\n");
        let Record::Id(id) = parse_record([format!("v=STSv1; id={id}").as_bytes()]) else { panic!() };
        Cached { id, policy: parse_policy(text.as_bytes()).unwrap(), fetched_unix }
    }

    #[test]
    fn policies_expire_after_max_age_and_survive_a_save() {
        let mut cache = Cache::default();
        cache.insert("a.vn".into(), cached("one", 100, 1_000), 1_000);
        assert_eq!(cache.current("a.vn", 1_099).unwrap().policy.mode, Mode::Enforce);
        assert!(cache.current("a.vn", 1_100).is_none());
        let saved = cache.to_json();
        assert_eq!(Cache::from_json(&saved, 1_050).unwrap().current("a.vn", 1_050), cache.current("a.vn", 1_050));
        assert_eq!(Cache::from_json(&saved, 1_200).unwrap().len(), 0);
        assert!(Cache::from_json(b"{\"domains\":{\"a.vn\":{\"id\":\"x\"}}}", 0).is_err());
    }

    #[test]
    fn the_table_is_bounded_and_drops_the_soonest_expiry() {
        let mut cache = Cache::default();
        for n in 0..MAX_DOMAINS as u64 {
            cache.insert(format!("d{n}.vn"), cached("x", 1_000 + n, 0), 0);
        }
        cache.insert("new.vn".into(), cached("x", 50_000, 0), 10);
        assert_eq!(cache.len(), MAX_DOMAINS);
        assert!(cache.current("d0.vn", 10).is_none() && cache.current("new.vn", 10).is_some());
        assert!(cache.current("d1.vn", 10).is_some());
    }
}
