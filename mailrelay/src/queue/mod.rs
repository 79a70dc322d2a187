//! The mail queue: what is waiting, when to try it next, and the operator's view of it.
//!
//! Memory holds only envelopes and schedule (a few hundred bytes a message); message content
//! stays in the [`journal`] on disk and is read back for each delivery attempt.

pub mod journal;
#[cfg(test)]
mod journal_faults;
mod storage;

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::QueueEntry;
use crate::address::Address;
use crate::esmtp::{EnvelopeId, OriginalRecipient};
use crate::session::{Envelope, Recipient};
use journal::{Journal, Location};

/// What is stored next to each message (JSON in the journal record).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Meta {
    pub id: String,
    pub arrived_unix: u64,
    pub sender: Option<StoredAddress>,
    pub recipients: Vec<StoredRecipient>,
    pub return_full: bool,
    #[serde(default, deserialize_with = "crate::esmtp::lenient")]
    pub envelope_id: Option<EnvelopeId>,
    pub eight_bit: bool,
    pub smtputf8: bool,
    pub attempts: u32,
    pub next_attempt_unix: u64,
    pub last_error: Option<String>,
    pub history: Vec<String>,
    pub size: u64,
    /// Accepted with `REQUIRETLS` (RFC 8689). Absent in records written before it existed,
    /// and left out when false, so such records read the same both ways.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub require_tls: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct StoredAddress {
    pub local: String,
    pub domain: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredRecipient {
    pub address: StoredAddress,
    pub notify: u64,
    #[serde(default, deserialize_with = "crate::esmtp::lenient")]
    pub original: Option<OriginalRecipient>,
}

impl StoredAddress {
    pub fn from_address(address: &Address) -> Self {
        Self { local: address.local().to_owned(), domain: address.domain().to_owned() }
    }

    /// Back to an [`Address`]; `None` only if the record was edited by hand.
    pub fn to_address(&self) -> Option<Address> {
        Address::parse(&format!("{}@{}", self.local, self.domain)).ok()
    }
}

impl std::fmt::Display for StoredAddress {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.to_address() {
            Some(address) => address.fmt(formatter),
            None => write!(formatter, "{}@{}", self.local, self.domain),
        }
    }
}

impl Meta {
    pub fn new(id: String, envelope: &Envelope, size: u64, now_unix: u64) -> Self {
        Self {
            id,
            arrived_unix: now_unix,
            sender: envelope.sender.as_ref().map(StoredAddress::from_address),
            recipients: envelope.recipients.iter().map(StoredRecipient::from_recipient).collect(),
            return_full: envelope.return_full,
            envelope_id: envelope.envelope_id.clone(),
            eight_bit: envelope.eight_bit,
            smtputf8: envelope.smtputf8,
            attempts: 0,
            next_attempt_unix: now_unix,
            last_error: None,
            history: Vec::new(),
            size,
            require_tls: envelope.require_tls,
        }
    }
}

impl StoredRecipient {
    pub fn from_recipient(recipient: &Recipient) -> Self {
        Self {
            address: StoredAddress::from_address(&recipient.address),
            notify: recipient.notify,
            original: recipient.original.clone(),
        }
    }
}

struct Entry {
    meta: Meta,
    location: Location,
    in_flight: bool,
}

#[derive(Default)]
struct Index {
    entries: HashMap<String, Entry>,
    /// (next attempt, id) of every entry not in flight.
    schedule: BTreeSet<(u64, String)>,
}

/// The queue shared by the sessions (which add) and the delivery loop (which takes).
pub struct Queue {
    journal: Journal,
    index: Mutex<Index>,
    /// Woken when something becomes due earlier than the delivery loop planned.
    pub wake: Notify,
}

impl Queue {
    /// Opens (and recovers) the queue in `directory`.
    pub fn open(directory: &std::path::Path) -> std::io::Result<Self> {
        let (journal, recovered) = Journal::open(directory)?;
        let mut index = Index::default();
        for record in recovered {
            let meta: Meta = match serde_json::from_slice(&record.meta) {
                Ok(meta) => meta,
                Err(error) => {
                    tracing::error!(segment = record.location.segment, %error, "unreadable queue record kept on disk");
                    continue;
                }
            };
            // A message appended again (deferred) appears twice; the later copy wins.
            if let Some(older) = index.entries.remove(&meta.id) {
                index.schedule.remove(&(older.meta.next_attempt_unix, older.meta.id.clone()));
                journal.remove(older.location);
            }
            index.schedule.insert((meta.next_attempt_unix, meta.id.clone()));
            index.entries.insert(meta.id.clone(), Entry { meta, location: record.location, in_flight: false });
        }
        if !index.entries.is_empty() {
            tracing::info!(messages = index.entries.len(), "mail queue recovered from disk");
        }
        Ok(Self { journal, index: Mutex::new(index), wake: Notify::new() })
    }

    /// Stores a new message durably. Returns after the data is on stable storage.
    pub async fn enqueue(&self, meta: Meta, content: Vec<u8>) -> std::io::Result<()> {
        let encoded = serde_json::to_vec(&meta).map_err(std::io::Error::other)?;
        let location = self.journal.append(encoded, content).await?;
        {
            let mut index = self.lock();
            index.schedule.insert((meta.next_attempt_unix, meta.id.clone()));
            index.entries.insert(meta.id.clone(), Entry { meta, location, in_flight: false });
        }
        self.wake.notify_one();
        Ok(())
    }

    /// Takes up to `limit` messages due at `now`, marking them in flight.
    pub fn take_due(&self, now_unix: u64, limit: usize) -> Vec<(Meta, Location)> {
        let mut index = self.lock();
        let mut due = Vec::new();
        while due.len() < limit {
            let Some((when, id)) = index.schedule.first().cloned() else { break };
            if when > now_unix {
                break;
            }
            index.schedule.pop_first();
            if let Some(entry) = index.entries.get_mut(&id) {
                entry.in_flight = true;
                due.push((entry.meta.clone(), entry.location));
            }
        }
        due
    }

    /// When the earliest waiting message is due.
    pub fn next_due(&self) -> Option<u64> {
        self.lock().schedule.first().map(|(when, _)| *when)
    }

    pub async fn read_content(&self, location: Location) -> std::io::Result<Vec<u8>> {
        self.journal.read_content(location).await
    }

    /// The message is finished (delivered or bounced): forget it.
    pub async fn complete(&self, id: &str) {
        let location = self.lock().entries.remove(id).map(|entry| entry.location);
        if let Some(location) = location {
            self.journal.remove(location);
        }
    }

    /// The message stays queued with new state (fewer recipients, a later attempt).
    pub async fn defer(&self, meta: Meta) -> std::io::Result<()> {
        let old = self.lock().entries.get(&meta.id).map(|entry| entry.location);
        let Some(old) = old else { return Ok(()) };
        let content = self.journal.read_content(old).await?;
        let encoded = serde_json::to_vec(&meta).map_err(std::io::Error::other)?;
        let location = self.journal.append(encoded, content).await?;
        self.journal.remove(old);
        let mut index = self.lock();
        let Some(entry) = index.entries.get_mut(&meta.id) else {
            // Removed by the operator while in flight.
            self.journal.remove(location);
            return Ok(());
        };
        entry.location = location;
        entry.in_flight = false;
        entry.meta = meta.clone();
        index.schedule.insert((meta.next_attempt_unix, meta.id));
        Ok(())
    }

    /// Puts a message back on the schedule unchanged (the attempt could not run).
    pub fn release(&self, id: &str, retry_unix: u64) {
        let mut index = self.lock();
        if let Some(entry) = index.entries.get_mut(id) {
            entry.in_flight = false;
            entry.meta.next_attempt_unix = retry_unix;
            index.schedule.insert((retry_unix, id.to_owned()));
        }
    }

    pub fn list(&self) -> Vec<QueueEntry> {
        let index = self.lock();
        let mut entries: Vec<QueueEntry> = index.entries.values().map(|entry| entry_view(&entry.meta)).collect();
        entries.sort_by(|a, b| (a.arrived_unix, &a.id).cmp(&(b.arrived_unix, &b.id)));
        entries
    }

    /// Envelope, headers and history; never the body.
    pub async fn show(&self, id: &str) -> Option<String> {
        let (meta, location) = {
            let index = self.lock();
            let entry = index.entries.get(id)?;
            (entry.meta.clone(), entry.location)
        };
        let content = self.journal.read_content(location).await.ok()?;
        let headers = crate::message::header_section(&content);
        let mut text = format!("id: {}\narrived: {}\n", meta.id, crate::message::rfc822_date(meta.arrived_unix));
        let sender = meta.sender.as_ref().map(ToString::to_string).unwrap_or_default();
        text.push_str(&format!("sender: <{sender}>\n"));
        for recipient in &meta.recipients {
            text.push_str(&format!("recipient: <{}>\n", recipient.address));
        }
        text.push_str(&format!(
            "size: {}\nattempts: {}\nnext attempt: {}\n",
            meta.size,
            meta.attempts,
            crate::message::rfc822_date(meta.next_attempt_unix)
        ));
        for line in &meta.history {
            text.push_str(&format!("history: {line}\n"));
        }
        text.push('\n');
        text.push_str(&String::from_utf8_lossy(headers));
        Some(text)
    }

    /// Makes one message (or all) due now; returns how many.
    pub fn flush(&self, id: Option<&str>, now_unix: u64) -> usize {
        let mut index = self.lock();
        let Index { entries, schedule } = &mut *index;
        let mut count = 0;
        for entry in entries.values_mut() {
            if id.is_some_and(|wanted| wanted != entry.meta.id) {
                continue;
            }
            if !entry.in_flight {
                schedule.remove(&(entry.meta.next_attempt_unix, entry.meta.id.clone()));
                entry.meta.next_attempt_unix = now_unix;
                schedule.insert((now_unix, entry.meta.id.clone()));
            }
            count += 1;
        }
        drop(index);
        self.wake.notify_one();
        count
    }

    pub async fn remove(&self, id: &str) -> bool {
        let removed = {
            let mut index = self.lock();
            let entry = index.entries.remove(id);
            if let Some(entry) = &entry {
                index.schedule.remove(&(entry.meta.next_attempt_unix, entry.meta.id.clone()));
            }
            entry
        };
        match removed {
            Some(entry) => {
                self.journal.remove_and_wait(entry.location).await;
                true
            }
            None => false,
        }
    }

    /// (messages queued, age of the oldest in seconds).
    pub fn depth_and_oldest(&self, now_unix: u64) -> (usize, u64) {
        let index = self.lock();
        let oldest = index.entries.values().map(|entry| entry.meta.arrived_unix).min().unwrap_or(now_unix);
        (index.entries.len(), now_unix.saturating_sub(oldest))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The retry delay after `attempts` failed attempts: doubling from `first`, capped at `max`.
pub fn backoff(attempts: u32, first: Duration, max: Duration) -> Duration {
    let factor = 1u32.checked_shl(attempts.saturating_sub(1).min(30)).unwrap_or(u32::MAX);
    first.saturating_mul(factor).min(max)
}

fn entry_view(meta: &Meta) -> QueueEntry {
    QueueEntry {
        id: meta.id.clone(),
        sender: meta.sender.as_ref().map(ToString::to_string).unwrap_or_default(),
        recipients: meta.recipients.iter().map(|recipient| recipient.address.to_string()).collect(),
        size: meta.size,
        arrived_unix: meta.arrived_unix,
        attempts: meta.attempts,
        next_attempt_unix: meta.next_attempt_unix,
        last_error: meta.last_error.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records written before REQUIRETLS existed read as without it, and a record without
    /// it is written exactly as before.
    #[test]
    fn requiretls_is_optional_in_journal_records() {
        let old = r#"{"id":"X","arrived_unix":1,"sender":null,"recipients":[],"return_full":false,
            "eight_bit":false,"smtputf8":false,"attempts":0,"next_attempt_unix":1,"last_error":null,
            "history":[],"size":3}"#;
        let mut meta: Meta = serde_json::from_str(old).unwrap();
        assert!(!meta.require_tls);
        assert!(!serde_json::to_string(&meta).unwrap().contains("require_tls"));
        meta.require_tls = true;
        let written = serde_json::to_string(&meta).unwrap();
        assert!(serde_json::from_str::<Meta>(&written).unwrap().require_tls, "{written}");
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let first = Duration::from_secs(300);
        let max = Duration::from_secs(4 * 3600);
        assert_eq!(backoff(1, first, max), first);
        assert_eq!(backoff(2, first, max), Duration::from_secs(600));
        assert_eq!(backoff(3, first, max), Duration::from_secs(1200));
        assert_eq!(backoff(40, first, max), max);
    }
}
