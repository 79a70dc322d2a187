//! Recipient verification against backscatter, like Postfix's `reject_unverified_recipient`.
//!
//! Before an untrusted client's `RCPT` for a local domain gets its `250`, the domain's mailbox
//! server is asked (`MAIL FROM:<>`, `RCPT TO:`, `QUIT`; no `DATA`) and the answer is cached:
//! a mailbox that exists is trusted for [`POSITIVE_REFRESH`], then asked again but still
//! trusted when the mailbox server cannot answer, up to [`POSITIVE_TTL`] (as Postfix's
//! `address_verify_positive_refresh_time` / `_expire_time`); one that does not exist is
//! remembered for [`NEGATIVE_TTL`], "could not ask" for [`TEMPORARY_TTL`].
//!
//! The probe must not be a way to flood the mailbox server: identical probes in flight are
//! coalesced into one, at most [`MAX_PROBES`] run at once, at most [`MAX_PENDING`] distinct
//! addresses wait, and the cache is bounded ([`MAX_CACHED`], oldest forgotten first). The
//! probe itself is the caller's (the outbound client's), so this module has no sockets.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, watch};

use crate::address::Address;
use crate::outbound::{Failure, Reply};
use crate::session::RecipientStatus;

/// After this, a mailbox known to exist is asked about again.
pub const POSITIVE_REFRESH: Duration = Duration::from_secs(7 * 86400);
/// How long a mailbox known to exist stays known while its server cannot be asked.
pub const POSITIVE_TTL: Duration = Duration::from_secs(31 * 86400);
/// How long a refused mailbox stays refused.
pub const NEGATIVE_TTL: Duration = Duration::from_secs(3600);
/// How long "the mailbox server could not be asked" is remembered, so that a server that is
/// down is not asked again for every `RCPT`.
pub const TEMPORARY_TTL: Duration = Duration::from_secs(30);
/// Probes at once, to all mailbox servers together.
pub const MAX_PROBES: usize = 8;
/// Distinct addresses waiting for a probe; beyond this, `450 4.1.1` at once.
pub const MAX_PENDING: usize = 256;
/// Cached answers.
pub const MAX_CACHED: usize = 100_000;
/// How long a client's `RCPT` waits for the answer (the probe included) before `450 4.1.1`.
pub const ANSWER_WAIT: Duration = Duration::from_secs(15);

type Key = (SocketAddr, String);

/// The cache and the probes in flight.
pub struct RecipientVerifier {
    cache: Mutex<ProbeCache>,
    in_flight: Mutex<HashMap<Key, watch::Receiver<Option<RecipientStatus>>>>,
    probes: Semaphore,
}

impl Default for RecipientVerifier {
    fn default() -> Self {
        Self {
            cache: Mutex::new(ProbeCache::default()),
            in_flight: Mutex::default(),
            probes: Semaphore::new(MAX_PROBES),
        }
    }
}

impl RecipientVerifier {
    /// Whether `server` takes mail for `recipient`: from the cache, or by a (shared) probe.
    /// `ask` runs one probe (the caller's SMTP client), called only when no answer is cached
    /// and no identical probe is in flight.
    pub async fn check<Ask, Probe>(
        &self,
        server: SocketAddr,
        recipient: &Address,
        now: Instant,
        ask: Ask,
    ) -> RecipientStatus
    where
        Ask: FnOnce() -> Probe,
        Probe: Future<Output = Result<Reply, Failure>>,
    {
        let key = (server, recipient.canonical());
        let cached = lock(&self.cache).get(&key, now);
        let known = match cached {
            Some(Cached { status, fresh: true }) => {
                metrics::counter!("lienthong_mail_recipient_checks_total", "source" => "cache", "result" => status.label())
                    .increment(1);
                return status;
            }
            // Known to exist, due for a refresh: ask, but keep it if the server cannot answer.
            Some(Cached { status: RecipientStatus::Exists, fresh: false }) => true,
            _ => false,
        };
        let sender = match self.join_or_lead(&key) {
            Role::Follow(mut receiver) => {
                let answer = tokio::time::timeout(ANSWER_WAIT, receiver.wait_for(Option::is_some)).await;
                return match answer {
                    Ok(Ok(status)) => status.unwrap_or(RecipientStatus::Unverified),
                    _ => RecipientStatus::Unverified,
                };
            }
            Role::Refuse => {
                tracing::warn!("recipient probes: too many waiting; answering 450 without asking");
                return RecipientStatus::Unverified;
            }
            Role::Lead(sender) => sender,
        };
        // Removes the in-flight entry however this ends (answered, timed out, session gone).
        let _pending = Pending { verifier: self, key: &key };
        // A probe that takes too long counts as "could not ask" (and is remembered as such, so
        // a mailbox server that hangs is not asked again at once).
        let mut status = tokio::time::timeout(ANSWER_WAIT, self.probe(server, recipient, ask))
            .await
            .unwrap_or(RecipientStatus::Unverified);
        if known && status == RecipientStatus::Unverified {
            status = RecipientStatus::Exists;
        } else {
            lock(&self.cache).insert(key.clone(), status, now);
        }
        let _ = sender.send(Some(status));
        status
    }

    /// Waits for the same probe in flight, or becomes the one that runs it.
    fn join_or_lead(&self, key: &Key) -> Role {
        let mut in_flight = lock(&self.in_flight);
        if let Some(receiver) = in_flight.get(key) {
            return Role::Follow(receiver.clone());
        }
        if in_flight.len() >= MAX_PENDING {
            return Role::Refuse;
        }
        let (sender, receiver) = watch::channel(None);
        in_flight.insert(key.clone(), receiver);
        Role::Lead(sender)
    }

    async fn probe<Ask, Probe>(&self, server: SocketAddr, recipient: &Address, ask: Ask) -> RecipientStatus
    where
        Ask: FnOnce() -> Probe,
        Probe: Future<Output = Result<Reply, Failure>>,
    {
        let Ok(_permit) = self.probes.acquire().await else { return RecipientStatus::Unverified };
        let status = match ask().await {
            Ok(reply) if reply.code == 250 || reply.code == 251 => RecipientStatus::Exists,
            Ok(reply) if reply.code >= 500 => {
                tracing::info!(%recipient, %server, code = reply.code, "recipient refused by its mailbox server");
                RecipientStatus::Unknown
            }
            Ok(reply) => {
                tracing::warn!(%recipient, %server, code = reply.code, "recipient probe deferred by the mailbox server");
                RecipientStatus::Unverified
            }
            Err(failure) => {
                tracing::warn!(%recipient, %server, reason = %failure.message, "cannot verify a recipient");
                RecipientStatus::Unverified
            }
        };
        metrics::counter!("lienthong_mail_recipient_checks_total", "source" => "probe", "result" => status.label())
            .increment(1);
        status
    }
}

enum Role {
    Follow(watch::Receiver<Option<RecipientStatus>>),
    Lead(watch::Sender<Option<RecipientStatus>>),
    Refuse,
}

struct Pending<'a> {
    verifier: &'a RecipientVerifier,
    key: &'a Key,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        lock(&self.verifier.in_flight).remove(self.key);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl RecipientStatus {
    fn label(self) -> &'static str {
        match self {
            RecipientStatus::Exists => "exists",
            RecipientStatus::Unknown => "unknown",
            RecipientStatus::Unverified => "unverified",
        }
    }

    /// (trusted without asking, kept at all).
    fn lifetimes(self) -> (Duration, Duration) {
        match self {
            RecipientStatus::Exists => (POSITIVE_REFRESH, POSITIVE_TTL),
            RecipientStatus::Unknown => (NEGATIVE_TTL, NEGATIVE_TTL),
            RecipientStatus::Unverified => (TEMPORARY_TTL, TEMPORARY_TTL),
        }
    }
}

/// A cached answer; not `fresh` when it should be asked again before it is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cached {
    status: RecipientStatus,
    fresh: bool,
}

/// Answers by address, each with when it was learnt; bounded, oldest insertion forgotten first.
#[derive(Default)]
struct ProbeCache {
    entries: HashMap<Key, (RecipientStatus, Instant, u64)>,
    /// (generation, key) in insertion order; stale generations are skipped.
    order: VecDeque<(u64, Key)>,
    generation: u64,
}

impl ProbeCache {
    fn get(&mut self, key: &Key, now: Instant) -> Option<Cached> {
        let (status, learnt, _) = *self.entries.get(key)?;
        let age = now.saturating_duration_since(learnt);
        let (fresh_for, kept_for) = status.lifetimes();
        if age >= kept_for {
            self.entries.remove(key);
            return None;
        }
        Some(Cached { status, fresh: age < fresh_for })
    }

    fn insert(&mut self, key: Key, status: RecipientStatus, now: Instant) {
        self.generation += 1;
        let generation = self.generation;
        if !self.entries.contains_key(&key) {
            while self.entries.len() >= MAX_CACHED {
                let Some((old_generation, old_key)) = self.order.pop_front() else { break };
                if self.entries.get(&old_key).is_some_and(|entry| entry.2 == old_generation) {
                    self.entries.remove(&old_key);
                }
            }
        }
        self.entries.insert(key.clone(), (status, now, generation));
        self.order.push_back((generation, key));
        if self.order.len() > 2 * MAX_CACHED {
            let entries = &self.entries;
            self.order.retain(|(generation, key)| entries.get(key).is_some_and(|entry| entry.2 == *generation));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(local: &str) -> Key {
        ("10.20.0.20:25".parse().unwrap(), format!("{local}@ninhthuan.gov.vn"))
    }

    #[test]
    fn answers_expire_by_kind() {
        let mut cache = ProbeCache::default();
        let now = Instant::now();
        cache.insert(key("vanthu"), RecipientStatus::Exists, now);
        cache.insert(key("khongco"), RecipientStatus::Unknown, now);
        cache.insert(key("cham"), RecipientStatus::Unverified, now);
        let fresh = |status| Some(Cached { status, fresh: true });
        let later = now + Duration::from_secs(3601);
        assert_eq!(cache.get(&key("vanthu"), later), fresh(RecipientStatus::Exists));
        assert_eq!(cache.get(&key("khongco"), later), None);
        assert_eq!(cache.get(&key("cham"), now + TEMPORARY_TTL), None);
        let stale = Some(Cached { status: RecipientStatus::Exists, fresh: false });
        assert_eq!(cache.get(&key("vanthu"), now + POSITIVE_REFRESH), stale);
        assert_eq!(cache.get(&key("vanthu"), now + POSITIVE_TTL), None);
    }

    fn answer(code: u16) -> Result<Reply, Failure> {
        Ok(Reply { code, text: "from the mailbox server".into() })
    }

    fn down() -> Result<Reply, Failure> {
        Err(Failure { permanent: false, message: "connection refused".into(), security: false })
    }

    #[tokio::test]
    async fn answers_map_to_statuses_and_are_cached() {
        let verifier = RecipientVerifier::default();
        let server: SocketAddr = "10.20.0.20:25".parse().unwrap();
        let now = Instant::now();
        let asked = std::cell::Cell::new(0);
        let ask = |result: fn() -> Result<Reply, Failure>| {
            asked.set(asked.get() + 1);
            async move { result() }
        };
        let vanthu = Address::parse("VanThu@ninhthuan.gov.vn").unwrap();
        assert_eq!(verifier.check(server, &vanthu, now, || ask(|| answer(250))).await, RecipientStatus::Exists);
        let same = Address::parse("vanthu@ninhthuan.gov.vn").unwrap();
        assert_eq!(verifier.check(server, &same, now, || ask(|| answer(550))).await, RecipientStatus::Exists);
        assert_eq!(asked.get(), 1, "the second answer came from the cache");
        let unknown = Address::parse("khongco@ninhthuan.gov.vn").unwrap();
        assert_eq!(verifier.check(server, &unknown, now, || ask(|| answer(550))).await, RecipientStatus::Unknown);
        let busy = Address::parse("ban@ninhthuan.gov.vn").unwrap();
        assert_eq!(verifier.check(server, &busy, now, || ask(|| answer(451))).await, RecipientStatus::Unverified);
        assert!(lock(&verifier.in_flight).is_empty());
    }

    #[tokio::test]
    async fn a_known_mailbox_stays_known_while_its_server_is_down() {
        let verifier = RecipientVerifier::default();
        let server: SocketAddr = "10.20.0.20:25".parse().unwrap();
        let recipient = Address::parse("vanthu@ninhthuan.gov.vn").unwrap();
        let now = Instant::now();
        lock(&verifier.cache).insert((server, recipient.canonical()), RecipientStatus::Exists, now);
        let due = now + POSITIVE_REFRESH + Duration::from_secs(1);
        // Due for a refresh, the server is down: still known, and still due.
        for _ in 0..2 {
            assert_eq!(verifier.check(server, &recipient, due, || async { down() }).await, RecipientStatus::Exists);
        }
        // A refresh that says "no such user" is believed.
        let refused = verifier.check(server, &recipient, due, || async { answer(550) }).await;
        assert_eq!(refused, RecipientStatus::Unknown);
        // Past the positive lifetime nothing is trusted without an answer.
        lock(&verifier.cache).insert((server, recipient.canonical()), RecipientStatus::Exists, now);
        let expired = now + POSITIVE_TTL;
        assert_eq!(verifier.check(server, &recipient, expired, || async { down() }).await, RecipientStatus::Unverified);
    }

    #[test]
    fn the_cache_is_bounded_and_forgets_the_oldest() {
        let mut cache = ProbeCache::default();
        let now = Instant::now();
        for index in 0..MAX_CACHED + 10 {
            cache.insert(key(&format!("u{index}")), RecipientStatus::Unknown, now);
        }
        // Refreshing one entry over and over does not grow the order queue without bound.
        for _ in 0..3 * MAX_CACHED {
            cache.insert(key("u99999"), RecipientStatus::Exists, now);
        }
        assert_eq!(cache.entries.len(), MAX_CACHED);
        assert!(cache.order.len() <= 2 * MAX_CACHED + 1);
        assert_eq!(cache.get(&key("u0"), now), None);
        let last = cache.get(&key(&format!("u{}", MAX_CACHED + 9)), now);
        assert_eq!(last, Some(Cached { status: RecipientStatus::Unknown, fresh: true }));
    }
}
