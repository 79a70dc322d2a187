//! Abuse limits: messages and recipients per sliding hour, per authenticated user and per
//! client address, and the set of suspended users.
//!
//! [`RateLimiter`] is the sans-IO core: time comes in as an offset from an origin, nothing
//! here reads a clock. [`Limits`] is the thin shared wrapper sessions call: it reads the clock
//! it was given, holds the config (swapped on reload), logs and counts metrics.
//!
//! Why a sliding-window counter (two fixed hourly buckets, the previous one weighted by how
//! much of it still overlaps the last hour) rather than a token bucket: the operator's setting
//! reads "per hour", and a window keeps any hour within about that number, where a bucket
//! sized to the hour allows twice it (a full bucket plus an hour of refill). It also gives a
//! natural "once per window" for the log line. Both are O(1) in time and memory per key; a
//! log of timestamps would be exact but grows with the limit.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use lienthong_config::{Config, HourlyLimits};

/// The window the limits are counted over.
pub const WINDOW: Duration = Duration::from_secs(3600);
/// Client addresses tracked at once. The hostile network can spray addresses (IPv6 /64s), so
/// the table is capped and the oldest entry goes first; users are only configured logins.
const MAX_CLIENTS: usize = 50_000;
const MAX_USERS: usize = 10_000;

/// Whom a transaction counts against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject<'a> {
    /// An authenticated submission user (its login).
    User(&'a str),
    /// A client without AUTH outside `relay_from`, by `auth::client_key` (IPv4 or IPv6 /64).
    Client(IpAddr),
    /// `relay_from` without AUTH: the province's own servers, not limited here.
    Exempt,
}

/// What is being counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Messages,
    Recipients,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Messages => "messages",
            Kind::Recipients => "recipients",
        }
    }
}

/// The answer for one message or recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Allowed,
    /// Over `limit` this hour. `first` is true once per key, kind and window: log only then.
    Limited {
        limit: u32,
        first: bool,
    },
}

/// Two adjacent fixed windows; the estimate for the last hour is
/// `previous * (time of the previous window still inside the hour) + current`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SlidingWindow {
    index: u64,
    current: u32,
    previous: u32,
    /// The window index in which a refusal was last reported.
    reported: Option<u64>,
}

impl SlidingWindow {
    /// Counts one event at `now` (since the limiter's origin) if the last hour holds fewer
    /// than `limit`; `limit == 0` means unlimited.
    pub fn take(&mut self, now: Duration, limit: u32) -> Admission {
        if limit == 0 {
            return Admission::Allowed;
        }
        let window = WINDOW.as_millis() as u64;
        let millis = now.as_millis() as u64;
        let index = millis / window;
        if index == self.index + 1 {
            self.previous = self.current;
            self.current = 0;
        } else if index != self.index {
            self.previous = 0;
            self.current = 0;
        }
        self.index = index;
        let remaining = window - millis % window;
        let estimate = u64::from(self.previous) * remaining / window + u64::from(self.current);
        if estimate < u64::from(limit) {
            self.current = self.current.saturating_add(1);
            return Admission::Allowed;
        }
        let first = self.reported != Some(index);
        self.reported = Some(index);
        Admission::Limited { limit, first }
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Counters {
    messages: SlidingWindow,
    recipients: SlidingWindow,
}

/// A map with a capacity: when full, the entry inserted longest ago is dropped. O(1): every
/// key is in `order` exactly once, because entries leave only through eviction.
#[derive(Debug)]
struct BoundedTable<K> {
    entries: HashMap<K, Counters>,
    order: VecDeque<K>,
    capacity: usize,
}

impl<K: Hash + Eq + Clone> BoundedTable<K> {
    fn new(capacity: usize) -> Self {
        Self { entries: HashMap::new(), order: VecDeque::new(), capacity }
    }

    fn get(&mut self, key: &K) -> &mut Counters {
        if !self.entries.contains_key(key) {
            if self.entries.len() >= self.capacity
                && let Some(oldest) = self.order.pop_front()
            {
                self.entries.remove(&oldest);
            }
            self.order.push_back(key.clone());
        }
        self.entries.entry(key.clone()).or_default()
    }
}

/// The counting core: per-user and per-client counters, capped in memory.
#[derive(Debug)]
pub struct RateLimiter {
    users: BoundedTable<String>,
    clients: BoundedTable<IpAddr>,
}

impl Default for RateLimiter {
    fn default() -> Self {
        Self::with_capacity(MAX_USERS, MAX_CLIENTS)
    }
}

impl RateLimiter {
    pub fn with_capacity(users: usize, clients: usize) -> Self {
        Self { users: BoundedTable::new(users.max(1)), clients: BoundedTable::new(clients.max(1)) }
    }

    /// Counts one message or recipient for `subject` at `now` against `limits`.
    pub fn take(&mut self, subject: Subject<'_>, kind: Kind, limits: HourlyLimits, now: Duration) -> Admission {
        let counters = match subject {
            Subject::Exempt => return Admission::Allowed,
            Subject::User(login) => self.users.get(&login.to_owned()),
            Subject::Client(address) => self.clients.get(&crate::auth::client_key(address)),
        };
        match kind {
            Kind::Messages => counters.messages.take(now, limits.messages),
            Kind::Recipients => counters.recipients.take(now, limits.recipients),
        }
    }

    /// Client addresses tracked now (at most the capacity).
    pub fn clients_tracked(&self) -> usize {
        self.clients.entries.len()
    }
}

/// The limits in force, from the config.
#[derive(Debug, Default)]
struct Settings {
    users: HashMap<String, HourlyLimits>,
    suspended: HashSet<String>,
    client: Option<HourlyLimits>,
}

/// What sessions share: the counters (kept across reloads), the settings (swapped on reload)
/// and the clock.
pub struct Limits {
    limiter: Mutex<RateLimiter>,
    settings: RwLock<Settings>,
    origin: Instant,
    clock: Box<dyn Fn() -> Instant + Send + Sync>,
}

impl std::fmt::Debug for Limits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limits").finish_non_exhaustive()
    }
}

impl Limits {
    /// Limits from `config` on the system clock.
    pub fn new(config: &Config) -> Self {
        let limits = Self::with_clock(Box::new(Instant::now));
        limits.set_config(config);
        limits
    }

    /// No limits yet (see [`Limits::configure`]) on `clock`; tests drive a virtual one.
    pub fn with_clock(clock: Box<dyn Fn() -> Instant + Send + Sync>) -> Self {
        Self {
            limiter: Mutex::new(RateLimiter::default()),
            settings: RwLock::new(Settings::default()),
            origin: clock(),
            clock,
        }
    }

    /// Takes the new settings; counters carry over, so a reload does not reset anyone's hour.
    pub fn set_config(&self, config: &Config) {
        let mail = &config.mail;
        let users = mail.users.iter().map(|user| (user.login.clone(), user.limits, user.suspended));
        self.configure(users, mail.client_limits);
    }

    /// Per-user `(login, limits, suspended)` and the per-client limits. A login not listed is
    /// not limited here (only configured users can authenticate).
    pub fn configure(&self, users: impl IntoIterator<Item = (String, HourlyLimits, bool)>, client: HourlyLimits) {
        let mut settings = Settings { client: Some(client), ..Settings::default() };
        for (login, limits, suspended) in users {
            if suspended {
                settings.suspended.insert(login.clone());
            }
            settings.users.insert(login, limits);
        }
        *self.settings.write().unwrap_or_else(PoisonError::into_inner) = settings;
    }

    /// Whether the operator suspended `login` (as of the last reload).
    pub fn is_suspended(&self, login: &str) -> bool {
        self.settings.read().unwrap_or_else(PoisonError::into_inner).suspended.contains(login)
    }

    /// Counts one message or recipient; logs and counts the first refusal per window.
    pub fn take(&self, subject: Subject<'_>, kind: Kind) -> Admission {
        let limits = {
            let settings = self.settings.read().unwrap_or_else(PoisonError::into_inner);
            match subject {
                Subject::User(login) => settings.users.get(login).copied(),
                Subject::Client(_) => settings.client,
                Subject::Exempt => None,
            }
        };
        let Some(limits) = limits else { return Admission::Allowed };
        let now = (self.clock)().saturating_duration_since(self.origin);
        let admission = self.limiter.lock().unwrap_or_else(PoisonError::into_inner).take(subject, kind, limits, now);
        if let Admission::Limited { limit, first } = admission {
            let scope = if matches!(subject, Subject::User(_)) { "user" } else { "client" };
            metrics::counter!("lienthong_mail_rate_limited_total", "scope" => scope, "kind" => kind.label())
                .increment(1);
            if first {
                match subject {
                    Subject::User(login) => {
                        tracing::warn!(login, kind = kind.label(), limit, "hourly limit reached; deferring (4.7.28)")
                    }
                    Subject::Client(peer) => {
                        let client = crate::auth::client_key(peer);
                        tracing::warn!(%client, kind = kind.label(), limit, "hourly limit reached; deferring (4.7.28)")
                    }
                    Subject::Exempt => {}
                }
            }
        }
        admission
    }
}

#[cfg(test)]
mod tests;
