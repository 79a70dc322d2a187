//! The file operations the journal writer needs, behind a trait so tests can inject write
//! errors, fsync errors and a full disk, and then simulate a crash (see `journal_faults`).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

/// Creates, syncs and deletes segment files.
pub(crate) trait Storage: Send + Sync + 'static {
    /// Creates a new segment file for appending (it must not exist yet).
    fn create(&self, path: &Path) -> std::io::Result<Box<dyn SegmentFile>>;
    /// Opens an existing segment to overwrite record kind bytes (tombstones).
    fn open_existing(&self, path: &Path) -> std::io::Result<Box<dyn SegmentFile>>;
    /// Makes a new directory entry durable (fsync of the directory).
    fn sync_directory(&self, path: &Path) -> std::io::Result<()>;
    fn remove(&self, path: &Path) -> std::io::Result<()>;
}

/// One open segment file.
pub(crate) trait SegmentFile: Send {
    /// Appends all of `bytes` at the end (a failure may leave part of them written).
    fn append(&mut self, bytes: &[u8]) -> std::io::Result<()>;
    /// `fdatasync`: everything appended so far is on stable storage when this returns `Ok`.
    fn sync_data(&self) -> std::io::Result<()>;
    /// Cuts the file back to `length` bytes (drops a partly written record).
    fn truncate(&self, length: u64) -> std::io::Result<()>;
    fn write_at(&self, bytes: &[u8], offset: u64) -> std::io::Result<()>;
}

/// The real file system. Segment files are created 0600 (they hold people's mail).
pub(crate) struct Disk;

impl Storage for Disk {
    fn create(&self, path: &Path) -> std::io::Result<Box<dyn SegmentFile>> {
        let file = OpenOptions::new().create_new(true).append(true).mode(0o600).open(path)?;
        Ok(Box::new(file))
    }

    fn open_existing(&self, path: &Path) -> std::io::Result<Box<dyn SegmentFile>> {
        Ok(Box::new(OpenOptions::new().write(true).open(path)?))
    }

    fn sync_directory(&self, path: &Path) -> std::io::Result<()> {
        File::open(path)?.sync_all()
    }

    fn remove(&self, path: &Path) -> std::io::Result<()> {
        std::fs::remove_file(path)
    }
}

impl SegmentFile for File {
    fn append(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.write_all(bytes)
    }

    fn sync_data(&self) -> std::io::Result<()> {
        File::sync_data(self)
    }

    fn truncate(&self, length: u64) -> std::io::Result<()> {
        self.set_len(length)
    }

    fn write_at(&self, bytes: &[u8], offset: u64) -> std::io::Result<()> {
        self.write_all_at(bytes, offset)
    }
}
