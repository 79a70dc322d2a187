//! Forwarding for names outside the local zones: a small stub client (UDP, TCP when the answer
//! is truncated) and one shared cache, bounded in entries and by TTL, holding negative answers
//! (RFC 2308) as well as positive ones.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query as HickoryQuery, ResponseCode};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use crate::engine::{ForwardRequest, Transport};
use crate::wire::{self, FLAG_AD, FLAG_CD, FLAG_RA, Query, RCODE_SERVFAIL};

/// How long one upstream gets before the next is tried.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest time anything stays cached (positive answers).
const MAX_TTL: u32 = 86_400;
/// Longest time a negative answer stays cached.
const MAX_NEGATIVE_TTL: u32 = 3_600;

type CacheKey = (Name, RecordType);

/// An upstream answer as cached.
#[derive(Debug, Clone)]
pub struct Cached {
    pub rcode: ResponseCode,
    pub answers: Vec<Record>,
    pub authorities: Vec<Record>,
    pub additionals: Vec<Record>,
    /// Validated from a trust anchor (DNSSEC): the answer may carry AD.
    pub authenticated: bool,
    stored: Instant,
    ttl: u32,
}

/// The shared cache: FIFO eviction once full, entries dropped when their TTL runs out.
#[derive(Debug)]
pub struct Cache {
    capacity: usize,
    entries: HashMap<CacheKey, Cached>,
    order: VecDeque<CacheKey>,
}

impl Cache {
    pub fn new(capacity: usize) -> Cache {
        Cache { capacity, entries: HashMap::new(), order: VecDeque::new() }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entry for `key` if it is still fresh at `now`.
    pub fn get(&mut self, key: &CacheKey, now: Instant) -> Option<Cached> {
        let entry = self.entries.get(key)?;
        if now.saturating_duration_since(entry.stored) >= Duration::from_secs(u64::from(entry.ttl)) {
            self.entries.remove(key);
            return None;
        }
        Some(entry.clone())
    }

    /// Stores an upstream answer if it may be cached; returns whether it was.
    pub fn insert(&mut self, key: CacheKey, message: &Message, now: Instant) -> bool {
        self.insert_checked(key, message, false, now)
    }

    /// [`Cache::insert`] for an answer whose DNSSEC status is known.
    pub fn insert_checked(&mut self, key: CacheKey, message: &Message, authenticated: bool, now: Instant) -> bool {
        let Some(ttl) = cache_ttl(message) else { return false };
        if self.capacity == 0 || ttl == 0 {
            return false;
        }
        while self.entries.len() >= self.capacity {
            let Some(oldest) = self.order.pop_front() else { break };
            self.entries.remove(&oldest);
        }
        if self.order.len() > self.capacity.saturating_mul(2) {
            // Keys of entries that expired or were replaced pile up; rebuild from the map.
            self.order.retain(|key| self.entries.contains_key(key));
        }
        let cached = Cached {
            rcode: message.metadata.response_code,
            answers: message.answers.clone(),
            authorities: message.authorities.clone(),
            additionals: message.additionals.clone(),
            authenticated,
            stored: now,
            ttl,
        };
        if self.entries.insert(key.clone(), cached).is_none() {
            self.order.push_back(key);
        }
        true
    }
}

/// How long an answer may be cached: the smallest TTL of its records; for a negative answer,
/// the SOA's negative TTL. `None` for answers never cached (SERVFAIL, REFUSED, ...).
fn cache_ttl(message: &Message) -> Option<u32> {
    let rcode = message.metadata.response_code;
    if rcode != ResponseCode::NoError && rcode != ResponseCode::NXDomain {
        return None;
    }
    if message.metadata.truncation {
        return None;
    }
    if rcode == ResponseCode::NoError && !message.answers.is_empty() {
        return message
            .answers
            .iter()
            .chain(&message.authorities)
            .map(|record| record.ttl)
            .min()
            .map(|ttl| ttl.min(MAX_TTL));
    }
    let soa = message.authorities.iter().find_map(|record| match &record.data {
        RData::SOA(soa) => Some(record.ttl.min(soa.minimum)),
        _ => None,
    });
    Some(soa.unwrap_or(0).min(MAX_NEGATIVE_TTL))
}

/// Upstream queries in flight at most; beyond that, new cache misses get SERVFAIL at once
/// (a flood from an allowed client must not exhaust sockets or memory).
pub const MAX_IN_FLIGHT: usize = 1024;

/// The forwarder: stub client plus cache.
#[derive(Debug)]
pub struct Forwarder {
    cache: Mutex<Cache>,
    in_flight: AtomicUsize,
}

/// A slot among the [`MAX_IN_FLIGHT`] upstream queries; freed on drop.
pub struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Forwarder {
    pub fn new(cache_entries: usize) -> Forwarder {
        Forwarder { cache: Mutex::new(Cache::new(cache_entries)), in_flight: AtomicUsize::new(0) }
    }

    /// True when no upstream query may start now.
    pub fn is_saturated(&self) -> bool {
        self.in_flight.load(Ordering::Relaxed) >= MAX_IN_FLIGHT
    }

    /// Takes a slot for one upstream query, if one is free.
    pub fn begin(&self) -> Option<InFlight<'_>> {
        let previous = self.in_flight.fetch_add(1, Ordering::Relaxed);
        let slot = InFlight(&self.in_flight);
        (previous < MAX_IN_FLIGHT).then_some(slot)
    }

    /// Answers from the cache into `out`, if the answer is there.
    pub fn answer_from_cache(&self, request: &ForwardRequest, now: Instant, out: &mut Vec<u8>) -> Option<bool> {
        let key = (request.name.clone(), request.qtype);
        let cached = self.cache.lock().ok()?.get(&key, now)?;
        metrics::counter!("lienthong_dns_cache_hits_total").increment(1);
        Some(write_forwarded(out, request, &cached, now))
    }

    /// Resolves upstream, caches, and writes the answer into `out`; returns whether the
    /// answer was truncated.
    pub async fn resolve(&self, request: &ForwardRequest, out: &mut Vec<u8>) -> bool {
        metrics::counter!("lienthong_dns_cache_misses_total").increment(1);
        let Some(_slot) = self.begin() else {
            tracing::debug!(name = %request.name, "too many upstream queries in flight");
            write_servfail(out, &request.packet);
            return false;
        };
        let mut answer = None;
        if let Some(validator) = &request.validator {
            answer = validator
                .lookup(&request.upstreams, &request.name, request.qtype)
                .await
                .map(|validated| (validated.message, validated.secure));
        } else {
            for upstream in request.upstreams.iter() {
                if let Some(message) = ask(*upstream, &request.name, request.qtype).await {
                    answer = Some((message, false));
                    break;
                }
            }
        }
        if let Some((message, authenticated)) = answer {
            let now = Instant::now();
            if let Ok(mut cache) = self.cache.lock() {
                cache.insert_checked((request.name.clone(), request.qtype), &message, authenticated, now);
            }
            let cached = Cached {
                rcode: message.metadata.response_code,
                answers: message.answers,
                authorities: message.authorities,
                additionals: message.additionals,
                authenticated,
                stored: now,
                ttl: 0,
            };
            return write_forwarded(out, request, &cached, now);
        }
        tracing::debug!(name = %request.name, "every forwarder failed, or the answer is bogus (DNSSEC)");
        write_servfail(out, &request.packet);
        false
    }
}

/// SERVFAIL for a query we could not resolve.
pub fn write_servfail(out: &mut Vec<u8>, packet: &[u8]) {
    if let Ok(query) = Query::parse(packet) {
        let flags = wire::response_flags(query.flags, RCODE_SERVFAIL | FLAG_RA | (query.flags & FLAG_CD));
        wire::write_refusal(out, query.id, flags, Some(query.question), RCODE_SERVFAIL, query.edns, None);
    }
}

/// Writes a forwarded answer, TTLs counted down by the time it spent in the cache.
fn write_forwarded(out: &mut Vec<u8>, request: &ForwardRequest, cached: &Cached, now: Instant) -> bool {
    let Ok(query) = Query::parse(&request.packet) else { return false };
    let elapsed = u32::try_from(now.saturating_duration_since(cached.stored).as_secs()).unwrap_or(u32::MAX);
    let age = |records: &[Record]| -> Vec<Record> {
        records
            .iter()
            .filter(|record| record.record_type() != RecordType::OPT)
            .map(|record| {
                let mut record = record.clone();
                record.ttl = record.ttl.saturating_sub(elapsed);
                record
            })
            .collect()
    };
    let mut flags = u16::from(cached.rcode.low()) | FLAG_RA;
    // RFC 6840 §5.8: AD only to a client that shows it understands it (DO or AD set).
    if cached.authenticated && (query.edns.is_some_and(|edns| edns.dnssec_ok) || query.flags & FLAG_AD != 0) {
        flags |= FLAG_AD;
    }
    let prepared = wire::prepare(
        &request.name,
        flags,
        &age(&cached.answers),
        &age(&cached.authorities),
        &age(&cached.additionals),
    );
    let Some(prepared) = prepared else {
        write_servfail(out, &request.packet);
        return false;
    };
    let limit = match request.transport {
        Transport::Udp => query.udp_limit(),
        Transport::Tcp => usize::from(u16::MAX),
    };
    // A resolver copies CD (RFC 4035 §3.2.2), unlike an authoritative answer.
    let extra = query.flags & FLAG_CD;
    if wire::write_answer(out, &query, &prepared, extra, limit, limit) == wire::Written::Whole {
        return false;
    }
    let (answers, authorities, additionals) =
        (age(&cached.answers), age(&cached.authorities), age(&cached.additionals));
    let sections = wire::Sections {
        answers: &answers,
        authorities: &authorities,
        authority_optional: false,
        additionals: &additionals,
    };
    wire::write_limited(out, &query, &request.name, flags | extra, &sections, limit, limit)
}

/// One question to one upstream: UDP first, TCP when the answer comes back truncated.
async fn ask(upstream: SocketAddr, name: &Name, qtype: RecordType) -> Option<Message> {
    let id: u16 = rand::random();
    let mut message = Message::new(id, MessageType::Query, OpCode::Query);
    message.metadata.recursion_desired = true;
    message.add_query(HickoryQuery::query(name.clone(), qtype));
    let mut edns = Edns::new();
    edns.set_max_payload(wire::MAX_UDP_PAYLOAD);
    message.set_edns(edns);
    let bytes = message.to_vec().ok()?;
    let bind: SocketAddr = if upstream.is_ipv4() { "0.0.0.0:0".parse().ok()? } else { "[::]:0".parse().ok()? };
    let socket = UdpSocket::bind(bind).await.ok()?;
    socket.connect(upstream).await.ok()?;
    socket.send(&bytes).await.ok()?;
    let mut buffer = vec![0u8; 4096];
    let deadline = tokio::time::Instant::now() + UPSTREAM_TIMEOUT;
    let response = loop {
        let length = tokio::time::timeout_at(deadline, socket.recv(&mut buffer)).await.ok()?.ok()?;
        let Ok(response) = Message::from_vec(&buffer[..length]) else { continue };
        if response.metadata.id == id && matches_question(&response, name, qtype) {
            break response;
        }
    };
    if !response.metadata.truncation {
        return Some(response);
    }
    let stream = tokio::time::timeout(UPSTREAM_TIMEOUT, TcpStream::connect(upstream)).await.ok()?.ok()?;
    tokio::time::timeout(UPSTREAM_TIMEOUT, ask_tcp(stream, &bytes, id, name, qtype)).await.ok()?
}

async fn ask_tcp(mut stream: TcpStream, bytes: &[u8], id: u16, name: &Name, qtype: RecordType) -> Option<Message> {
    let length = u16::try_from(bytes.len()).ok()?;
    stream.write_all(&length.to_be_bytes()).await.ok()?;
    stream.write_all(bytes).await.ok()?;
    let length = stream.read_u16().await.ok()?;
    let mut buffer = vec![0u8; usize::from(length)];
    stream.read_exact(&mut buffer).await.ok()?;
    let response = Message::from_vec(&buffer).ok()?;
    (response.metadata.id == id && matches_question(&response, name, qtype)).then_some(response)
}

fn matches_question(response: &Message, name: &Name, qtype: RecordType) -> bool {
    response.queries.len() == 1
        && response.queries[0].name().to_lowercase() == *name
        && response.queries[0].query_type() == qtype
}

#[cfg(test)]
mod tests {
    use hickory_proto::rr::rdata::{A, SOA};

    use super::*;

    fn answer(name: &str, ttl: u32) -> Message {
        let mut message = Message::new(1, MessageType::Response, OpCode::Query);
        let name = Name::from_ascii(name).unwrap();
        message.add_answer(Record::from_rdata(name, ttl, RData::A(A::new(192, 0, 2, 1))));
        message
    }

    fn key(name: &str) -> CacheKey {
        (Name::from_ascii(name).unwrap(), RecordType::A)
    }

    #[test]
    fn cache_is_bounded_and_entries_expire_with_their_ttl() {
        let mut cache = Cache::new(2);
        let now = Instant::now();
        for name in ["a.example.", "b.example.", "c.example."] {
            assert!(cache.insert(key(name), &answer(name, 30), now));
        }
        assert_eq!(cache.len(), 2);
        assert!(cache.get(&key("a.example."), now).is_none(), "the oldest entry was evicted");
        assert!(cache.get(&key("c.example."), now + Duration::from_secs(29)).is_some());
        assert!(cache.get(&key("c.example."), now + Duration::from_secs(30)).is_none(), "expired");
    }

    #[test]
    fn negative_answers_are_cached_for_the_soa_negative_ttl_and_failures_never() {
        let mut negative = Message::new(1, MessageType::Response, OpCode::Query);
        negative.metadata.response_code = ResponseCode::NXDomain;
        let soa = SOA::new(Name::root(), Name::root(), 1, 1, 1, 1, 60);
        negative.add_authority(Record::from_rdata(Name::from_ascii("example.").unwrap(), 600, RData::SOA(soa)));
        assert_eq!(cache_ttl(&negative), Some(60));
        let mut failure = answer("a.example.", 300);
        failure.metadata.response_code = ResponseCode::ServFail;
        assert_eq!(cache_ttl(&failure), None);
        assert_eq!(cache_ttl(&answer("a.example.", 300_000)), Some(MAX_TTL));
    }
}
