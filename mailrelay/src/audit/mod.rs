//! The audit trail: one JSON line per accepted message and one per delivery attempt, in
//! `state_dir/mail/audit/audit-YYYY-MM-DD.jsonl` (UTC date, files 0600), read back by
//! `lienthong mail trace`.
//!
//! One writer thread takes every line waiting at that moment, appends them and calls
//! `fdatasync` once for the batch when any of them is an acceptance, before the sessions
//! waiting on those lines are answered (group commit, like the queue journal, running next to
//! it: a session awaits both flushes at once, so the audit adds no fsync per message and
//! little latency). Attempt lines are not waited for; they are on disk with the next flush.
//!
//! Every string comes from the network and is written through `serde_json`; control
//! characters that JSON allows raw (DEL, C1, U+2028/U+2029) are escaped too, so a line can be
//! shown on a terminal as it is. Never a body, never a password.

mod record;
mod trace;

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

pub use record::{accepted, attempt};
pub use trace::{TraceQuery, trace};

/// Most lines one flush takes.
const MAX_BATCH: usize = 1024;
const FILE_PREFIX: &str = "audit-";
const FILE_SUFFIX: &str = ".jsonl";

/// One line of the audit log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Record {
    Accepted(Accepted),
    Attempt(Attempt),
    /// The acceptance line was written but the queue could not store the message (the client
    /// heard 4xx and will send it again).
    NotQueued {
        queue_id: String,
        time: String,
    },
}

/// A message the relay accepted (written before its `250`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Accepted {
    pub queue_id: String,
    /// RFC 3339, UTC.
    pub time: String,
    pub client: String,
    pub helo: String,
    pub listener: String,
    pub tls_version: Option<String>,
    pub tls_cipher: Option<String>,
    pub user: Option<String>,
    /// Empty for the null sender `<>`.
    pub sender: String,
    pub recipients: Vec<String>,
    pub message_id: Option<String>,
    pub size: u64,
    /// SPF/DKIM/DMARC results; today only the relay's own DKIM signing, `null` if unsigned.
    pub auth: Option<AuthResults>,
}

/// Authentication results recorded with a message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuthResults {
    /// The signatures the relay added: `d=` domain and selectors (Ed25519 first).
    pub dkim_signed: Option<DkimSigned>,
    /// The sender checks of mail from outside.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checked: Option<Box<SenderResults>>,
}

/// SPF, DKIM, ARC and DMARC results of a message from outside, and what they led to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SenderResults {
    pub spf: String,
    pub dkim: String,
    pub arc: String,
    pub dmarc: String,
    /// The `From:` domain DMARC was checked for.
    pub from_domain: String,
    /// `accepted` or `quarantined`.
    pub verdict: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DkimSigned {
    pub domain: String,
    pub selectors: Vec<String>,
}

/// One delivery attempt for one recipient.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    pub queue_id: String,
    pub time: String,
    pub recipient: String,
    pub remote: Option<String>,
    pub reply_code: Option<u16>,
    pub reply: String,
    pub outcome: Outcome,
    /// The remote host was chosen and checked with DANE (RFC 7672): its TLSA records, which
    /// DNSSEC vouched for, authenticated (or failed to authenticate) its certificate.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dane: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Delivered,
    Deferred,
    Bounced,
}

impl Record {
    /// Marks an attempt line as made under DANE; other lines are returned unchanged.
    pub fn under_dane(mut self, dane: bool) -> Self {
        if let Self::Attempt(attempt) = &mut self {
            attempt.dane = dane;
        }
        self
    }
}

impl Attempt {
    /// Splits an SMTP reply line (`"250 2.0.0 ok"`) into code and text.
    pub fn reply_parts(reply: &str) -> (Option<u16>, String) {
        let code = reply.get(..3).and_then(|code| code.parse().ok()).filter(|code| (200..600).contains(code));
        let text = if code.is_some() { reply[3..].trim_start() } else { reply };
        (code, text.to_owned())
    }
}

/// Handle to the audit writer thread.
#[derive(Clone)]
pub struct Audit {
    requests: mpsc::UnboundedSender<Request>,
}

struct Request {
    line: Vec<u8>,
    unix: u64,
    /// Answered once the line is on stable storage.
    durable: Option<oneshot::Sender<std::io::Result<()>>>,
}

impl Audit {
    /// Starts the writer on `directory`, removing files older than `retention_days`.
    pub fn open(directory: &Path, retention_days: u32) -> std::io::Result<Self> {
        lienthong_config::state::create_private_dir(directory)?;
        let (requests, receiver) = mpsc::unbounded_channel();
        let writer = Writer { directory: directory.to_path_buf(), retention_days, current: None };
        std::thread::Builder::new().name("mail-audit".into()).spawn(move || writer.run(receiver))?;
        Ok(Self { requests })
    }

    /// Appends `record` and returns once it is on stable storage.
    pub async fn write_durable(&self, record: &Record, unix: u64) -> std::io::Result<()> {
        let (reply, answer) = oneshot::channel();
        let request = Request { line: encode(record)?, unix, durable: Some(reply) };
        self.requests.send(request).map_err(|_| std::io::Error::other("the audit writer has stopped"))?;
        answer.await.map_err(|_| std::io::Error::other("the audit writer has stopped"))?
    }

    /// Appends `record` without waiting (flushed with the next batch that needs it).
    pub fn write(&self, record: &Record, unix: u64) {
        match encode(record) {
            Ok(line) => {
                let _ = self.requests.send(Request { line, unix, durable: None });
            }
            Err(error) => tracing::error!(%error, "cannot encode an audit line"),
        }
    }
}

/// The audit directory under `state_dir`.
pub fn directory(state_dir: &Path) -> PathBuf {
    state_dir.join("mail").join("audit")
}

/// RFC 3339 UTC time of `unix`.
pub fn rfc3339(unix: u64) -> String {
    let date = mail_parser::DateTime::from_timestamp(i64::try_from(unix).unwrap_or(i64::MAX));
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        date.year, date.month, date.day, date.hour, date.minute, date.second
    )
}

/// The file name holding lines of the UTC day of `unix`.
fn file_name(unix: u64) -> String {
    format!("{FILE_PREFIX}{}{FILE_SUFFIX}", &rfc3339(unix)[..10])
}

/// The `YYYY-MM-DD` of an audit file name.
fn file_date(name: &str) -> Option<&str> {
    let date = name.strip_prefix(FILE_PREFIX)?.strip_suffix(FILE_SUFFIX)?;
    is_day(date).then_some(date)
}

/// Whether `text` is a day as `YYYY-MM-DD` (month 01-12, day 01-31).
pub fn is_day(text: &str) -> bool {
    let bytes = text.as_bytes();
    let shaped = bytes.len() == 10
        && bytes
            .iter()
            .enumerate()
            .all(|(index, byte)| if index == 4 || index == 7 { *byte == b'-' } else { byte.is_ascii_digit() });
    shaped
        && text[5..7].parse::<u8>().is_ok_and(|month| (1..=12).contains(&month))
        && text[8..10].parse::<u8>().is_ok_and(|day| (1..=31).contains(&day))
}

/// One JSON line, newline-terminated, with no raw control character in it.
fn encode(record: &Record) -> std::io::Result<Vec<u8>> {
    let json = serde_json::to_string(record).map_err(std::io::Error::other)?;
    let mut line = String::with_capacity(json.len() + 1);
    for character in json.chars() {
        // serde_json escapes U+0000..U+001F; these it leaves raw (valid JSON either way).
        if character == '\u{7f}'
            || ('\u{80}'..='\u{9f}').contains(&character)
            || character == '\u{2028}'
            || character == '\u{2029}'
        {
            line.push_str(&format!("\\u{:04x}", u32::from(character)));
        } else {
            line.push(character);
        }
    }
    line.push('\n');
    Ok(line.into_bytes())
}

struct Writer {
    directory: PathBuf,
    retention_days: u32,
    /// The open file and its name.
    current: Option<(String, File)>,
}

impl Writer {
    fn run(mut self, mut requests: mpsc::UnboundedReceiver<Request>) {
        self.remove_expired(crate::unix_now());
        while let Some(first) = requests.blocking_recv() {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match requests.try_recv() {
                    Ok(request) => batch.push(request),
                    Err(_) => break,
                }
            }
            let result = self.write_batch(&batch);
            if let Err(error) = &result {
                tracing::error!(%error, "cannot write the mail audit log");
                // Reopen next time: the file may have been removed or the disk freed.
                self.current = None;
            }
            for request in batch {
                if let Some(reply) = request.durable {
                    let _ = reply.send(
                        result
                            .as_ref()
                            .map(|_| ())
                            .map_err(|error| std::io::Error::new(error.kind(), error.to_string())),
                    );
                }
            }
        }
    }

    fn write_batch(&mut self, batch: &[Request]) -> std::io::Result<()> {
        for request in batch {
            let name = file_name(request.unix);
            self.file(&name, request.unix)?.write_all(&request.line)?;
        }
        if batch.iter().any(|request| request.durable.is_some()) {
            // Lines of an earlier day in this batch went to a file that is already closed and
            // synced (see `file`); only the current one needs it now.
            if let Some((_, file)) = &self.current {
                file.sync_data()?;
            }
        }
        Ok(())
    }

    /// The open file for `name`, switching (and expiring old files) on a new day.
    fn file(&mut self, name: &str, unix: u64) -> std::io::Result<&mut File> {
        if self.current.as_ref().is_none_or(|(current, _)| current != name) {
            if let Some((_, old)) = self.current.take() {
                old.sync_data()?;
            }
            let path = self.directory.join(name);
            let created = !path.exists();
            let file = lienthong_config::state::private_file().create(true).append(true).open(&path)?;
            if created {
                File::open(&self.directory)?.sync_all()?;
                self.remove_expired(unix);
            }
            self.current = Some((name.to_owned(), file));
        }
        Ok(&mut self.current.as_mut().expect("opened above").1)
    }

    /// Deletes files whose day is more than `retention_days` before the day of `now_unix`.
    fn remove_expired(&self, now_unix: u64) {
        let cutoff = rfc3339(now_unix.saturating_sub(u64::from(self.retention_days) * 86400));
        let Ok(entries) = std::fs::read_dir(&self.directory) else { return };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(date) = file_date(&name) else { continue };
            if date < &cutoff[..10] {
                match std::fs::remove_file(entry.path()) {
                    Ok(()) => tracing::info!(file = %name, "expired mail audit file removed"),
                    Err(error) => tracing::warn!(file = %name, %error, "cannot remove an expired mail audit file"),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
