//! Files under `server.state_dir` (the mail queue, certificates and keys, DNS serials, the
//! admin token, the pid file) are readable by the service's user only, whatever the umask
//! it was started with: directories 0700, files 0600. Every crate that writes there uses
//! these helpers (they live here because every crate already depends on `config`, and
//! services must not import each other).

use std::fs::{DirBuilder, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::Path;

/// Mode of every directory under `state_dir`, and of `state_dir` itself.
pub const DIRECTORY_MODE: u32 = 0o700;
/// Mode of every file under `state_dir`.
pub const FILE_MODE: u32 = 0o600;

/// Creates `path` and its missing parents as 0700 directories, and makes `path` itself
/// 0700 when it already existed with more permissive bits. Returns the mode it had
/// before when it had to be tightened (the caller logs it), `None` otherwise.
pub fn create_private_dir(path: &Path) -> std::io::Result<Option<u32>> {
    DirBuilder::new().recursive(true).mode(DIRECTORY_MODE).create(path)?;
    let metadata = std::fs::metadata(path)?;
    let mode = metadata.permissions().mode() & 0o7777;
    if mode & 0o077 == 0 {
        return Ok(None);
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode & !0o077))?;
    Ok(Some(mode))
}

/// Takes group and other permissions off every directory and file below `root` (symlinks
/// are neither followed nor changed), for state written by an older version or by hand.
/// Returns how many entries it changed.
pub fn tighten_tree(root: &Path) -> std::io::Result<usize> {
    let mut changed = 0;
    let mut pending = vec![root.to_path_buf()];
    while let Some(path) = pending.pop() {
        let metadata = std::fs::symlink_metadata(&path)?;
        if metadata.file_type().is_symlink() {
            continue;
        }
        let mode = metadata.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode & !0o077))?;
            changed += 1;
        }
        if metadata.is_dir() {
            for entry in std::fs::read_dir(&path)? {
                pending.push(entry?.path());
            }
        }
    }
    Ok(changed)
}

/// `OpenOptions` that create files as 0600; add `.write(true).create_new(true)` and so on.
pub fn private_file() -> OpenOptions {
    let mut options = OpenOptions::new();
    options.mode(FILE_MODE);
    options
}

/// Replaces `path` with `contents` atomically (a 0600 temporary file beside it, synced,
/// then renamed over it, then the directory synced), so readers see the old or the new
/// contents, never a mix, and the new contents survive a crash once this returns.
pub fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".new");
    let temporary = Path::new(&temporary);
    // A leftover from a crash may carry other permissions; start from a fresh file.
    match std::fs::remove_file(temporary) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => return Err(error),
        _ => {}
    }
    let mut file = private_file().write(true).create_new(true).open(temporary)?;
    file.write_all(contents)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(temporary, path)?;
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => std::fs::File::open(parent)?.sync_all(),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn directories_and_files_are_owner_only() {
        let root = tempfile::tempdir().unwrap();
        let nested = root.path().join("state/mail/queue");
        assert_eq!(create_private_dir(&nested).unwrap(), None);
        assert_eq!(mode(&root.path().join("state")), DIRECTORY_MODE);
        assert_eq!(mode(&nested), DIRECTORY_MODE);
        let file = nested.join("segment");
        private_file().write(true).create_new(true).open(&file).unwrap();
        assert_eq!(mode(&file), FILE_MODE);
        let replaced = root.path().join("state/serials.tsv");
        std::fs::write(&replaced, "old").unwrap();
        std::fs::set_permissions(&replaced, std::fs::Permissions::from_mode(0o644)).unwrap();
        write_private(&replaced, b"new").unwrap();
        assert_eq!(std::fs::read(&replaced).unwrap(), b"new");
        assert_eq!(mode(&replaced), FILE_MODE);
    }

    #[test]
    fn files_left_by_older_versions_are_tightened() {
        let root = tempfile::tempdir().unwrap();
        let queue = root.path().join("mail/queue");
        std::fs::create_dir_all(&queue).unwrap();
        std::fs::write(queue.join("segment-1"), "x").unwrap();
        std::fs::set_permissions(queue.join("segment-1"), std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::set_permissions(&queue, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(tighten_tree(root.path()).unwrap() >= 2);
        assert_eq!(mode(&queue.join("segment-1")), 0o600);
        assert_eq!(mode(&queue), 0o700);
        assert_eq!(tighten_tree(root.path()).unwrap(), 0);
    }

    #[test]
    fn an_existing_open_directory_is_tightened() {
        let root = tempfile::tempdir().unwrap();
        let state = root.path().join("state");
        std::fs::create_dir(&state).unwrap();
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(create_private_dir(&state).unwrap(), Some(0o755));
        assert_eq!(mode(&state), DIRECTORY_MODE);
    }
}
