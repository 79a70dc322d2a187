//! Fault injection for the journal: write errors (with part of the record written), fsync
//! errors, a full disk, then a simulated crash that keeps only what was fsynced plus a torn
//! prefix of what was not. Invariant: a record acknowledged `Ok` (the client's `250`) is
//! recovered byte for byte after the crash, and nothing that was never appended is.

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::journal::Journal;
use super::storage::{SegmentFile, Storage};

/// How often each operation fails, in percent.
#[derive(Clone, Copy)]
struct Odds {
    write: u32,
    sync: u32,
    create: u32,
    directory: u32,
}

struct FileState {
    length: u64,
    /// Bytes known to be on stable storage (as of the last fsync that really flushed).
    durable: u64,
    /// A failed fsync dropped the dirty pages: later fsyncs "succeed" without flushing them.
    poisoned: bool,
    /// The directory entry was fsynced after the file was created.
    entry_durable: bool,
}

struct State {
    rng: StdRng,
    odds: Odds,
    files: HashMap<PathBuf, FileState>,
    crashed: bool,
    injected: usize,
}

#[derive(Clone)]
struct FaultyDisk(Arc<Mutex<State>>);

struct FaultyFile {
    path: PathBuf,
    file: File,
    disk: FaultyDisk,
}

fn injected(kind: std::io::ErrorKind) -> std::io::Error {
    std::io::Error::new(kind, "injected fault")
}

/// A failure kind for an injected write: a full disk or a plain I/O error.
fn failure_kind(rng: &mut StdRng) -> std::io::ErrorKind {
    if rng.random_bool(0.5) { std::io::ErrorKind::StorageFull } else { std::io::ErrorKind::Other }
}

impl FaultyDisk {
    fn new(seed: u64, odds: Odds) -> Self {
        Self(Arc::new(Mutex::new(State {
            rng: StdRng::seed_from_u64(seed),
            odds,
            files: HashMap::new(),
            crashed: false,
            injected: 0,
        })))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap()
    }

    /// Power loss: every later operation fails; each file keeps what was fsynced and a random
    /// prefix of the rest (a torn tail); files whose directory entry was never fsynced vanish.
    fn crash(&self) {
        let mut state = self.state();
        state.crashed = true;
        let files: Vec<(PathBuf, u64, u64, bool)> = state
            .files
            .iter()
            .map(|(path, file)| (path.clone(), file.durable, file.length, file.entry_durable))
            .collect();
        for (path, durable, length, entry_durable) in files {
            if !entry_durable {
                let _ = std::fs::remove_file(&path);
                continue;
            }
            let Ok(actual) = std::fs::metadata(&path).map(|metadata| metadata.len()) else { continue };
            let unflushed = length.min(actual).saturating_sub(durable);
            let kept = durable + state.rng.random_range(0..=unflushed);
            assert!(actual >= durable, "{path:?}: the journal cut into fsynced bytes");
            OpenOptions::new().write(true).open(&path).unwrap().set_len(kept.min(actual)).unwrap();
        }
    }
}

impl Storage for FaultyDisk {
    fn create(&self, path: &Path) -> std::io::Result<Box<dyn SegmentFile>> {
        let mut state = self.state();
        let odds = state.odds.create;
        if state.crashed {
            return Err(injected(std::io::ErrorKind::Other));
        }
        if state.rng.random_ratio(odds, 100) {
            state.injected += 1;
            return Err(injected(std::io::ErrorKind::StorageFull));
        }
        let file = OpenOptions::new().create_new(true).append(true).open(path)?;
        state.files.insert(path.to_owned(), FileState { length: 0, durable: 0, poisoned: false, entry_durable: false });
        Ok(Box::new(FaultyFile { path: path.to_owned(), file, disk: self.clone() }))
    }

    fn open_existing(&self, path: &Path) -> std::io::Result<Box<dyn SegmentFile>> {
        if self.state().crashed {
            return Err(injected(std::io::ErrorKind::Other));
        }
        let file = OpenOptions::new().write(true).open(path)?;
        Ok(Box::new(FaultyFile { path: path.to_owned(), file, disk: self.clone() }))
    }

    fn sync_directory(&self, _path: &Path) -> std::io::Result<()> {
        let mut state = self.state();
        let odds = state.odds.directory;
        if state.crashed {
            return Err(injected(std::io::ErrorKind::Other));
        }
        if state.rng.random_ratio(odds, 100) {
            state.injected += 1;
            return Err(injected(std::io::ErrorKind::Other));
        }
        for file in state.files.values_mut() {
            file.entry_durable = true;
        }
        Ok(())
    }

    fn remove(&self, path: &Path) -> std::io::Result<()> {
        let mut state = self.state();
        if state.crashed {
            return Err(injected(std::io::ErrorKind::Other));
        }
        state.files.remove(path);
        std::fs::remove_file(path)
    }
}

impl SegmentFile for FaultyFile {
    fn append(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let mut state = self.disk.state();
        let odds = state.odds.write;
        if state.crashed {
            return Err(injected(std::io::ErrorKind::Other));
        }
        if state.rng.random_ratio(odds, 100) {
            state.injected += 1;
            let partial = state.rng.random_range(0..bytes.len());
            self.file.write_all(&bytes[..partial])?;
            let kind = failure_kind(&mut state.rng);
            if let Some(file) = state.files.get_mut(&self.path) {
                file.length += partial as u64;
            }
            return Err(injected(kind));
        }
        self.file.write_all(bytes)?;
        if let Some(file) = state.files.get_mut(&self.path) {
            file.length += bytes.len() as u64;
        }
        Ok(())
    }

    fn sync_data(&self) -> std::io::Result<()> {
        let mut state = self.disk.state();
        let odds = state.odds.sync;
        if state.crashed {
            return Err(injected(std::io::ErrorKind::Other));
        }
        let fail = state.rng.random_ratio(odds, 100);
        if fail {
            state.injected += 1;
        }
        let Some(file) = state.files.get_mut(&self.path) else { return Ok(()) };
        if fail {
            file.poisoned = true;
            return Err(injected(std::io::ErrorKind::Other));
        }
        if !file.poisoned {
            file.durable = file.length;
        }
        Ok(())
    }

    fn truncate(&self, length: u64) -> std::io::Result<()> {
        let mut state = self.disk.state();
        if state.crashed {
            return Err(injected(std::io::ErrorKind::Other));
        }
        self.file.set_len(length)?;
        if let Some(file) = state.files.get_mut(&self.path) {
            assert!(length >= file.durable, "truncated into fsynced bytes");
            file.length = length;
        }
        Ok(())
    }

    fn write_at(&self, bytes: &[u8], offset: u64) -> std::io::Result<()> {
        if self.disk.state().crashed {
            return Err(injected(std::io::ErrorKind::Other));
        }
        self.file.write_all_at(bytes, offset)
    }
}

/// One round: concurrent appends through the faulty disk, a crash, a clean recovery.
async fn round(seed: u64, odds: Odds) -> (usize, usize) {
    let directory = tempfile::tempdir().unwrap();
    let disk = FaultyDisk::new(seed, odds);
    let (journal, _) = Journal::open_with(directory.path(), Arc::new(disk.clone())).unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for index in 0..120u32 {
        let journal = journal.clone();
        tasks.spawn(async move {
            let meta = format!("{{\"id\":\"{seed}-{index}\"}}").into_bytes();
            let content = format!("Subject: thu {index}\r\n\r\n{}\r\n", "noi dung ".repeat(index as usize % 50));
            let result = journal.append(meta.clone(), content.clone().into_bytes()).await;
            (meta, content.into_bytes(), result.is_ok())
        });
        if index % 7 == 0 {
            tokio::task::yield_now().await;
        }
    }
    let mut appended = HashMap::new();
    let mut acknowledged = HashSet::new();
    while let Some(outcome) = tasks.join_next().await {
        let (meta, content, ok) = outcome.unwrap();
        if ok {
            acknowledged.insert(meta.clone());
        }
        appended.insert(meta, content);
    }
    disk.crash();
    drop(journal);
    let (journal, recovered) = Journal::open(directory.path()).unwrap();
    let mut found = HashSet::new();
    for record in &recovered {
        let content = journal.read_content(record.location).await.unwrap();
        let expected =
            appended.get(&record.meta).unwrap_or_else(|| panic!("seed {seed}: recovered a record never appended"));
        assert_eq!(&content, expected, "seed {seed}: a recovered record's content differs");
        found.insert(record.meta.clone());
    }
    for meta in &acknowledged {
        assert!(found.contains(meta), "seed {seed}: acknowledged record {} lost", String::from_utf8_lossy(meta));
    }
    let injected = disk.state().injected;
    (acknowledged.len(), injected)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_records_survive_write_and_fsync_faults_and_a_crash() {
    let odds = Odds { write: 8, sync: 8, create: 3, directory: 3 };
    let mut acknowledged = 0;
    let mut injected = 0;
    for seed in 0..40 {
        let (ok, faults) = round(seed, odds).await;
        acknowledged += ok;
        injected += faults;
    }
    // The test means something only if both outcomes happened often.
    assert!(acknowledged > 1000 && injected > 100, "acknowledged {acknowledged}, faults {injected}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_everything_and_loses_nothing() {
    let odds = Odds { write: 100, sync: 0, create: 0, directory: 0 };
    let (acknowledged, injected) = round(99, odds).await;
    assert_eq!(acknowledged, 0);
    assert!(injected > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_fsync_acknowledges_nothing_of_its_batch() {
    let odds = Odds { write: 0, sync: 100, create: 0, directory: 0 };
    let (acknowledged, _) = round(7, odds).await;
    assert_eq!(acknowledged, 0);
}
