//! The queue on disk: append-only segment files with group commit.
//!
//! Every accepted message is one record appended to the current segment. One writer thread
//! takes all records waiting at that moment, writes them, calls `fdatasync` once and only then
//! acknowledges each, so many concurrent sessions share one flush (group commit) and no session
//! hears `250` before its message is on stable storage. A new segment file is followed by an
//! fsync of the directory before any of its records is acknowledged.
//!
//! When a write or an fsync fails, every record of the batch whose bytes are not known to be
//! durable is answered with an error (the client hears 4xx and retries): a failed write is cut
//! off and its segment closed, and every segment the batch touched is fsynced on its own, so
//! one record's failure never acknowledges another's unflushed bytes. A segment whose fsync
//! failed is never appended to again, and its unflushed records are tombstoned.
//!
//! A delivered message is not rewritten: its record's kind byte is overwritten in place (a
//! tombstone). A segment whose records are all tombstones, and which is no longer the one being
//! appended to, is deleted. A message whose delivery is deferred is appended again with its new
//! state and the old copy tombstoned, so long-lived messages do not pin old segments.
//!
//! Record: `LTQ1` | kind (1 live, 0 tombstone) | meta length u32 | content length u64 |
//! FNV-1a 64 of meta and content | meta (JSON) | content. A torn or corrupt record ends the
//! reading of its segment at recovery; it was never acknowledged.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::storage::{Disk, SegmentFile, Storage};

const MAGIC: &[u8; 4] = b"LTQ1";
const HEADER_LENGTH: usize = 25;
const KIND_LIVE: u8 = 1;
const KIND_TOMBSTONE: u8 = 0;
/// Segments roll over at this size.
const SEGMENT_LIMIT: u64 = 64 * 1024 * 1024;
/// Most records one flush takes, so a burst cannot delay its first writers for long.
const MAX_BATCH: usize = 512;

/// Where one record lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    pub segment: u64,
    /// Offset of the record header.
    pub offset: u64,
    pub meta_length: u32,
    pub content_length: u64,
}

impl Location {
    fn content_offset(&self) -> u64 {
        self.offset + HEADER_LENGTH as u64 + u64::from(self.meta_length)
    }
}

/// A live record found at startup.
pub struct Recovered {
    pub location: Location,
    pub meta: Vec<u8>,
}

enum Request {
    Append {
        meta: Vec<u8>,
        content: Vec<u8>,
        reply: oneshot::Sender<std::io::Result<Location>>,
    },
    /// Tombstone a record; `done` fires once the write is issued.
    Remove {
        location: Location,
        done: Option<oneshot::Sender<()>>,
    },
}

/// Handle to the writer thread.
#[derive(Clone)]
pub struct Journal {
    requests: mpsc::UnboundedSender<Request>,
    directory: PathBuf,
}

impl Journal {
    /// Reads every live record in `directory`, then starts the writer on a new segment.
    pub fn open(directory: &Path) -> std::io::Result<(Self, Vec<Recovered>)> {
        Self::open_with(directory, Arc::new(Disk))
    }

    /// Like [`Journal::open`], writing through `storage` (tests inject faults with it).
    pub(crate) fn open_with(directory: &Path, storage: Arc<dyn Storage>) -> std::io::Result<(Self, Vec<Recovered>)> {
        lienthong_config::state::create_private_dir(directory)?;
        let mut segments: Vec<u64> = std::fs::read_dir(directory)?
            .filter_map(|entry| entry.ok())
            .filter_map(|entry| segment_number(&entry.file_name().to_string_lossy()))
            .collect();
        segments.sort_unstable();
        let mut recovered = Vec::new();
        let mut live_counts = HashMap::new();
        for &segment in &segments {
            let records = read_segment(&segment_path(directory, segment), segment)?;
            if records.is_empty() {
                std::fs::remove_file(segment_path(directory, segment))?;
                continue;
            }
            live_counts.insert(segment, records.len());
            recovered.extend(records);
        }
        let next_segment = segments.last().map_or(1, |last| last + 1);
        let (sender, receiver) = mpsc::unbounded_channel();
        let writer = Writer {
            directory: directory.to_path_buf(),
            storage,
            current: None,
            next_segment,
            live_counts,
            tombstone_files: HashMap::new(),
        };
        std::thread::Builder::new().name("mail-journal".into()).spawn(move || writer.run(receiver))?;
        Ok((Self { requests: sender, directory: directory.to_path_buf() }, recovered))
    }

    /// Appends a record and returns once it is on stable storage.
    pub async fn append(&self, meta: Vec<u8>, content: Vec<u8>) -> std::io::Result<Location> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(Request::Append { meta, content, reply })
            .map_err(|_| std::io::Error::other("the queue writer has stopped"))?;
        answer.await.map_err(|_| std::io::Error::other("the queue writer has stopped"))?
    }

    /// Marks a record as no longer queued. Not flushed: losing a tombstone only means a
    /// message is delivered once more after a crash (at least once, never lost).
    pub fn remove(&self, location: Location) {
        let _ = self.requests.send(Request::Remove { location, done: None });
    }

    /// Like [`Journal::remove`], waiting until the tombstone is written.
    pub async fn remove_and_wait(&self, location: Location) {
        let (done, finished) = oneshot::channel();
        if self.requests.send(Request::Remove { location, done: Some(done) }).is_ok() {
            let _ = finished.await;
        }
    }

    /// Reads a record's content (the message) from disk.
    pub async fn read_content(&self, location: Location) -> std::io::Result<Vec<u8>> {
        let path = segment_path(&self.directory, location.segment);
        tokio::task::spawn_blocking(move || {
            let file = File::open(path)?;
            let length = usize::try_from(location.content_length).map_err(std::io::Error::other)?;
            let mut content = vec![0; length];
            file.read_exact_at(&mut content, location.content_offset())?;
            Ok(content)
        })
        .await
        .map_err(std::io::Error::other)?
    }
}

/// The segment being appended to.
struct Segment {
    number: u64,
    file: Box<dyn SegmentFile>,
    length: u64,
    /// Records were appended since the last fsync.
    dirty: bool,
}

struct Writer {
    directory: PathBuf,
    storage: Arc<dyn Storage>,
    current: Option<Segment>,
    next_segment: u64,
    /// Records written and not tombstoned, per segment, counted from the moment they are
    /// written (so a segment is never deleted under a record that is still being flushed).
    live_counts: HashMap<u64, usize>,
    tombstone_files: HashMap<u64, Box<dyn SegmentFile>>,
}

impl Writer {
    fn run(mut self, mut requests: mpsc::UnboundedReceiver<Request>) {
        while let Some(first) = requests.blocking_recv() {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match requests.try_recv() {
                    Ok(request) => batch.push(request),
                    Err(_) => break,
                }
            }
            let mut appended = Vec::new();
            let mut removals = Vec::new();
            // Segments this batch wrote to and then left (rolled over, or abandoned after a
            // failed write): their records still need the batch's fsync.
            let mut left = Vec::new();
            for request in batch {
                match request {
                    Request::Append { meta, content, reply } => {
                        let result = self.write_record(&meta, &content, &mut left);
                        appended.push((result, reply));
                    }
                    Request::Remove { location, done } => removals.push((location, done)),
                }
            }
            let failed = self.sync_batch(left);
            for (result, reply) in appended {
                let result = match result {
                    Ok(location) => match failed.get(&location.segment) {
                        None => Ok(location),
                        Some(kind) => {
                            // Not known to be on disk: the client hears 4xx, so the copy that may
                            // still reach the disk must not be delivered after a restart.
                            let _ = self.tombstone(location);
                            Err(std::io::Error::new(*kind, "the queue could not flush this message to disk"))
                        }
                    },
                    Err(error) => Err(error),
                };
                let _ = reply.send(result);
            }
            // Removals after appends: a deferred message's new copy is durable before the old dies.
            for (location, done) in removals {
                if let Err(error) = self.tombstone(location) {
                    tracing::error!(segment = location.segment, %error, "cannot mark a delivered message in the queue");
                }
                if let Some(done) = done {
                    let _ = done.send(());
                }
            }
        }
        if let Some(segment) = &self.current {
            let _ = segment.file.sync_data();
        }
    }

    /// One fsync per segment written in this batch. Returns the segments whose fsync failed,
    /// with the error kind. A segment whose fsync failed is never appended to again: after a
    /// failed fsync the kernel may have dropped the dirty pages, and a later fsync can report
    /// success without writing them.
    fn sync_batch(&mut self, left: Vec<Segment>) -> HashMap<u64, std::io::ErrorKind> {
        let mut failed = HashMap::new();
        for segment in left {
            if let Err(error) = segment.file.sync_data() {
                tracing::error!(segment = segment.number, %error, "queue fsync failed; its new messages are refused");
                failed.insert(segment.number, error.kind());
            }
        }
        if let Some(segment) = self.current.as_mut().filter(|segment| segment.dirty) {
            segment.dirty = false;
            if let Err(error) = segment.file.sync_data() {
                tracing::error!(segment = segment.number, %error, "queue fsync failed; its new messages are refused");
                failed.insert(segment.number, error.kind());
                self.current = None;
            }
        }
        failed
    }

    fn write_record(&mut self, meta: &[u8], content: &[u8], left: &mut Vec<Segment>) -> std::io::Result<Location> {
        let needs_new = match &self.current {
            None => true,
            Some(segment) => segment.length >= SEGMENT_LIMIT,
        };
        if needs_new {
            self.roll(left)?;
        }
        let Some(segment) = &mut self.current else {
            return Err(std::io::Error::other("no open segment"));
        };
        let meta_length = u32::try_from(meta.len()).map_err(std::io::Error::other)?;
        let mut record = Vec::with_capacity(HEADER_LENGTH + meta.len() + content.len());
        record.extend_from_slice(MAGIC);
        record.push(KIND_LIVE);
        record.extend_from_slice(&meta_length.to_le_bytes());
        record.extend_from_slice(&(content.len() as u64).to_le_bytes());
        record.extend_from_slice(&checksum(meta, content).to_le_bytes());
        record.extend_from_slice(meta);
        record.extend_from_slice(content);
        let offset = segment.length;
        if let Err(error) = segment.file.append(&record) {
            // Part of the record may be on disk. Cut it off if we can; either way this segment
            // takes no more records (recovery stops at a torn record), but the records already
            // in it are flushed with the batch.
            if let Err(truncate_error) = segment.file.truncate(offset) {
                tracing::warn!(segment = segment.number, %truncate_error, "cannot cut a partly written queue record");
            }
            tracing::error!(segment = segment.number, %error, "queue write failed; the message is refused");
            if let Some(segment) = self.current.take() {
                self.leave(segment, left);
            }
            return Err(error);
        }
        segment.length += record.len() as u64;
        segment.dirty = true;
        *self.live_counts.entry(segment.number).or_default() += 1;
        Ok(Location { segment: segment.number, offset, meta_length, content_length: content.len() as u64 })
    }

    fn roll(&mut self, left: &mut Vec<Segment>) -> std::io::Result<()> {
        if let Some(old) = self.current.take() {
            self.leave(old, left);
        }
        let number = self.next_segment;
        self.next_segment += 1;
        let path = segment_path(&self.directory, number);
        let file = self.storage.create(&path)?;
        if let Err(error) = self.storage.sync_directory(&self.directory) {
            // Its directory entry might not survive a crash: records in it would be lost.
            drop(file);
            let _ = self.storage.remove(&path);
            return Err(error);
        }
        self.current = Some(Segment { number, file, length: 0, dirty: false });
        Ok(())
    }

    /// Stops appending to `segment`: kept for the batch's fsync if it has unflushed records,
    /// deleted if nothing in it is live.
    fn leave(&mut self, segment: Segment, left: &mut Vec<Segment>) {
        if self.live_counts.get(&segment.number).copied().unwrap_or(0) == 0 {
            let number = segment.number;
            drop(segment);
            self.delete_segment(number);
        } else if segment.dirty {
            left.push(segment);
        }
    }

    fn tombstone(&mut self, location: Location) -> std::io::Result<()> {
        let path = segment_path(&self.directory, location.segment);
        let file = match self.tombstone_files.entry(location.segment) {
            std::collections::hash_map::Entry::Occupied(entry) => entry.into_mut(),
            std::collections::hash_map::Entry::Vacant(entry) => entry.insert(self.storage.open_existing(&path)?),
        };
        file.write_at(&[KIND_TOMBSTONE], location.offset + 4)?;
        let count = self.live_counts.entry(location.segment).or_default();
        *count = count.saturating_sub(1);
        let is_current = self.current.as_ref().is_some_and(|segment| segment.number == location.segment);
        if *count == 0 && !is_current {
            self.delete_segment(location.segment);
        }
        Ok(())
    }

    fn delete_segment(&mut self, segment: u64) {
        self.tombstone_files.remove(&segment);
        self.live_counts.remove(&segment);
        if let Err(error) = self.storage.remove(&segment_path(&self.directory, segment)) {
            tracing::warn!(segment, %error, "cannot delete an empty queue segment");
        }
    }
}

fn read_segment(path: &Path, segment: u64) -> std::io::Result<Vec<Recovered>> {
    let mut reader = BufReader::with_capacity(256 * 1024, File::open(path)?);
    let mut records = Vec::new();
    let mut offset = 0u64;
    let mut header = [0u8; HEADER_LENGTH];
    loop {
        if reader.read_exact(&mut header).is_err() || &header[..4] != MAGIC {
            break;
        }
        let kind = header[4];
        let meta_length = u32::from_le_bytes(header[5..9].try_into().unwrap_or_default());
        let content_length = u64::from_le_bytes(header[9..17].try_into().unwrap_or_default());
        let stored_checksum = u64::from_le_bytes(header[17..25].try_into().unwrap_or_default());
        if content_length > 1 << 40 {
            break;
        }
        let mut meta = vec![0; meta_length as usize];
        let mut content = vec![0; content_length as usize];
        if reader.read_exact(&mut meta).is_err() || reader.read_exact(&mut content).is_err() {
            break;
        }
        if checksum(&meta, &content) != stored_checksum {
            tracing::warn!(segment, offset, "queue segment ends in a torn record (never acknowledged); ignored");
            break;
        }
        let location = Location { segment, offset, meta_length, content_length };
        if kind == KIND_LIVE {
            records.push(Recovered { location, meta });
        }
        offset += HEADER_LENGTH as u64 + u64::from(meta_length) + content_length;
    }
    Ok(records)
}

/// FNV-1a, 64 bits: catches torn writes; not a defence against tampering.
fn checksum(meta: &[u8], content: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &byte in meta.iter().chain(content) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

fn segment_path(directory: &Path, segment: u64) -> PathBuf {
    directory.join(format!("segment-{segment:012}.log"))
}

fn segment_number(name: &str) -> Option<u64> {
    name.strip_prefix("segment-")?.strip_suffix(".log")?.parse().ok()
}

#[cfg(test)]
mod tests {
    use std::fs::OpenOptions;
    use std::io::Write;

    use super::*;

    #[tokio::test]
    async fn records_survive_reopen_and_tombstones_stick() {
        let directory = tempfile::tempdir().unwrap();
        let (journal, recovered) = Journal::open(directory.path()).unwrap();
        assert!(recovered.is_empty());
        let first = journal.append(b"{\"a\":1}".to_vec(), b"first".to_vec()).await.unwrap();
        let second = journal.append(b"{\"a\":2}".to_vec(), "thứ hai".as_bytes().to_vec()).await.unwrap();
        assert_eq!(journal.read_content(second).await.unwrap(), "thứ hai".as_bytes());
        journal.remove_and_wait(first).await;
        drop(journal);
        let (journal, recovered) = Journal::open(directory.path()).unwrap();
        assert_eq!(recovered.len(), 1);
        assert_eq!(recovered[0].meta, b"{\"a\":2}");
        assert_eq!(journal.read_content(recovered[0].location).await.unwrap(), "thứ hai".as_bytes());
    }

    #[tokio::test]
    async fn torn_tail_is_ignored() {
        let directory = tempfile::tempdir().unwrap();
        let (journal, _) = Journal::open(directory.path()).unwrap();
        let location = journal.append(b"{}".to_vec(), b"whole".to_vec()).await.unwrap();
        drop(journal);
        let path = segment_path(directory.path(), location.segment);
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(b"LTQ1\x01\x02\x00\x00\x00\x10\x00\x00\x00\x00\x00\x00\x00partial").unwrap();
        let (_, recovered) = Journal::open(directory.path()).unwrap();
        assert_eq!(recovered.len(), 1);
    }
}
