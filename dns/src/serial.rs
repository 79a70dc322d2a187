//! SOA serials that only ever go up.
//!
//! A zone's serial is tied to a hash of its content (everything but the serial). The last
//! (hash, serial) of each zone is kept in `state_dir/dns-serials.tsv`, so a restart with the
//! same content keeps the serial, and any change, across reloads or restarts, gets
//! `max(previous + 1, the operator's own serial, unix time)`. Secondaries therefore always
//! see a higher serial after a change and never a lower one.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// File name of the serial state inside `state_dir`.
pub const STATE_FILE: &str = "dns-serials.tsv";

/// The serial memory: zone key -> (content hash, serial).
#[derive(Debug, Default, Clone)]
pub struct Serials {
    path: Option<PathBuf>,
    entries: HashMap<String, (u64, u32)>,
}

impl Serials {
    /// Loads the state (a missing or unreadable file is an empty memory).
    pub fn load(state_dir: &Path) -> Serials {
        let path = state_dir.join(STATE_FILE);
        let mut entries = HashMap::new();
        if let Ok(text) = std::fs::read_to_string(&path) {
            for line in text.lines() {
                let fields: Vec<&str> = line.split('\t').collect();
                if let [key, hash, serial] = fields[..]
                    && let (Ok(hash), Ok(serial)) = (u64::from_str_radix(hash, 16), serial.parse::<u32>())
                {
                    entries.insert(key.to_owned(), (hash, serial));
                }
            }
        }
        Serials { path: Some(path), entries }
    }

    /// A memory that is never written (tests, `dns records`).
    pub fn in_memory() -> Serials {
        Serials::default()
    }

    /// The serial for zone `key` with content `hash`; `operator` is the serial in the
    /// operator's own SOA (0 when derived); `now` is unix seconds.
    pub fn serial(&mut self, key: &str, hash: u64, operator: u32, now: u64) -> u32 {
        let now = u32::try_from(now).unwrap_or(u32::MAX);
        let serial = match self.entries.get(key) {
            Some((old_hash, old_serial)) if *old_hash == hash => (*old_serial).max(operator),
            Some((_, old_serial)) => old_serial.saturating_add(1).max(operator).max(now),
            None => operator.max(now),
        };
        self.entries.insert(key.to_owned(), (hash, serial));
        serial
    }

    /// Writes the memory back (atomically: temp file, then rename).
    pub fn save(&self) -> std::io::Result<()> {
        let Some(path) = &self.path else { return Ok(()) };
        let mut keys: Vec<&String> = self.entries.keys().collect();
        keys.sort();
        let mut text = String::new();
        for key in keys {
            let (hash, serial) = self.entries[key];
            text.push_str(&format!("{key}\t{hash:016x}\t{serial}\n"));
        }
        if let Some(parent) = path.parent() {
            lienthong_config::state::create_private_dir(parent)?;
        }
        lienthong_config::state::write_private(path, text.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serial_is_stable_for_same_content_and_grows_on_change() {
        let directory = tempfile::tempdir().unwrap();
        let mut serials = Serials::load(directory.path());
        let first = serials.serial("a.vn", 1, 0, 1_700_000_000);
        assert_eq!(first, 1_700_000_000);
        serials.save().unwrap();
        let mut reloaded = Serials::load(directory.path());
        assert_eq!(reloaded.serial("a.vn", 1, 0, 1_800_000_000), first);
        assert_eq!(reloaded.serial("a.vn", 2, 0, 1_600_000_000), first + 1);
        assert_eq!(reloaded.serial("a.vn", 3, 2_024_010_101, 1_600_000_000), 2_024_010_101);
    }
}
