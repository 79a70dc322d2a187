//! A zone's signing keys and their timeline: generated on first use, kept in
//! `state_dir/dnssec/ZONE.keys` (mode 0600), rolled by [`KeyRing::update`] as time passes (the
//! ZSK by pre-publication) and by the operator's commands (the KSK, double-signature method).
//!
//! Every decision takes `now` (unix seconds) from the caller, so the rollover is tested on a
//! virtual clock.

use std::io::Write;
use std::path::{Path, PathBuf};

use hickory_proto::dnssec::rdata::DNSKEY;
use hickory_proto::dnssec::{Algorithm, PublicKeyBuf};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};

use super::{DnssecError, Timing};

/// What a key signs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Key-signing key: signs the DNSKEY, CDS and CDNSKEY sets; the parent's DS points at it.
    Ksk,
    /// Zone-signing key: signs every other set.
    Zsk,
}

/// One key with its timeline (unix seconds).
#[derive(Debug)]
pub struct Key {
    pub role: Role,
    /// In the DNSKEY set from this time...
    pub publish: u64,
    /// ...signing from this time...
    pub active: u64,
    /// ...until this time (none: until a successor takes over)...
    pub retire: Option<u64>,
    /// ...and out of the DNSKEY set from this time.
    pub remove: Option<u64>,
    pkcs8: Vec<u8>,
    pair: EcdsaKeyPair,
    pub dnskey: DNSKEY,
    pub tag: u16,
}

/// The keys of one zone (shared by every view's copy: one DS at the parent covers them all).
#[derive(Debug)]
pub struct KeyRing {
    path: PathBuf,
    pub keys: Vec<Key>,
}

impl Key {
    fn generate(role: Role, publish: u64, active: u64) -> Result<Key, DnssecError> {
        let random = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &random)
            .map_err(|_| DnssecError::Crypto("cannot generate an ECDSA P-256 key".into()))?;
        Key::from_pkcs8(role, publish, active, None, None, pkcs8.as_ref().to_vec())
    }

    fn from_pkcs8(
        role: Role,
        publish: u64,
        active: u64,
        retire: Option<u64>,
        remove: Option<u64>,
        pkcs8: Vec<u8>,
    ) -> Result<Key, DnssecError> {
        let random = SystemRandom::new();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &pkcs8, &random)
            .map_err(|_| DnssecError::Crypto("a stored key is not an ECDSA P-256 PKCS#8 key".into()))?;
        // ring gives the uncompressed point 0x04 | X | Y; DNSKEY holds X | Y (RFC 6605 §4).
        let public = pair.public_key().as_ref().get(1..).unwrap_or_default().to_vec();
        let dnskey = DNSKEY::new(true, role == Role::Ksk, false, PublicKeyBuf::new(public, Algorithm::ECDSAP256SHA256));
        let tag = dnskey.calculate_key_tag().map_err(|error| DnssecError::Crypto(error.to_string()))?;
        Ok(Key { role, publish, active, retire, remove, pkcs8, pair, dnskey, tag })
    }

    /// In the DNSKEY set at `now`.
    pub fn is_published(&self, now: u64) -> bool {
        self.publish <= now && self.remove.is_none_or(|remove| now < remove)
    }

    /// Makes signatures at `now`.
    pub fn is_signing(&self, now: u64) -> bool {
        self.active <= now && self.retire.is_none_or(|retire| now < retire)
    }

    /// An ECDSA P-256/SHA-256 signature in the DNSSEC form (r | s, 64 bytes).
    pub fn sign(&self, data: &[u8]) -> Result<Vec<u8>, DnssecError> {
        let random = SystemRandom::new();
        self.pair
            .sign(&random, data)
            .map(|signature| signature.as_ref().to_vec())
            .map_err(|_| DnssecError::Crypto("signing failed".into()))
    }
}

impl KeyRing {
    /// Where the keys of `zone` (without the final dot) live.
    pub fn path(state_dir: &Path, zone: &str) -> PathBuf {
        state_dir.join("dnssec").join(format!("{}.keys", zone.trim_end_matches('.').to_ascii_lowercase()))
    }

    /// Reads the key file; a missing file is an empty ring (keys come with [`KeyRing::update`]).
    pub fn load(state_dir: &Path, zone: &str) -> Result<KeyRing, DnssecError> {
        let path = KeyRing::path(state_dir, zone);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(source) => return Err(DnssecError::Io { path, source }),
        };
        let mut keys = Vec::new();
        for (number, line) in text.lines().enumerate() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let bad = || DnssecError::KeyFile { path: path.clone(), line: number + 1 };
            let fields: Vec<&str> = line.split('\t').collect();
            let [role, publish, active, retire, remove, pkcs8] = fields[..] else { return Err(bad()) };
            let role = match role {
                "ksk" => Role::Ksk,
                "zsk" => Role::Zsk,
                _ => return Err(bad()),
            };
            let time = |text: &str| text.parse::<u64>().map_err(|_| bad());
            let optional = |text: &str| if text == "-" { Ok(None) } else { time(text).map(Some) };
            let pkcs8 = decode_hex(pkcs8).ok_or_else(bad)?;
            keys.push(Key::from_pkcs8(
                role,
                time(publish)?,
                time(active)?,
                optional(retire)?,
                optional(remove)?,
                pkcs8,
            )?);
        }
        Ok(KeyRing { path, keys })
    }

    /// Writes the ring (temp file with mode 0600, then rename; owned like `state_dir`).
    pub fn save(&self) -> Result<(), DnssecError> {
        let io = |source| DnssecError::Io { path: self.path.clone(), source };
        let directory = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(directory).map_err(io)?;
        let mut text = String::from("# lienthong DNSSEC keys: role publish active retire remove pkcs8 (keep secret)\n");
        for key in &self.keys {
            let optional = |value: Option<u64>| value.map_or("-".to_owned(), |value| value.to_string());
            text.push_str(&format!(
                "{}\t{}\t{}\t{}\t{}\t{}\n",
                if key.role == Role::Ksk { "ksk" } else { "zsk" },
                key.publish,
                key.active,
                optional(key.retire),
                optional(key.remove),
                encode_hex(&key.pkcs8)
            ));
        }
        let temporary = self.path.with_extension("keys.new");
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&temporary).map_err(io)?;
        file.write_all(text.as_bytes()).map_err(io)?;
        file.sync_all().map_err(io)?;
        follow_owner(directory, &temporary);
        std::fs::rename(&temporary, &self.path).map_err(io)
    }

    /// Moves the timeline to `now`: the first KSK and ZSK on first use, a ZSK successor
    /// pre-published `timing.prepublish(dnskey_ttl)` before the current one's lifetime ends,
    /// keys past their removal time dropped. Returns true when something changed (save it).
    pub fn update(&mut self, now: u64, timing: &Timing, dnskey_ttl: u32, max_ttl: u32) -> Result<bool, DnssecError> {
        let before = self.keys.len();
        self.keys.retain(|key| key.remove.is_none_or(|remove| now < remove));
        let mut changed = before != self.keys.len();
        if !self.keys.iter().any(|key| key.role == Role::Ksk) {
            self.keys.push(Key::generate(Role::Ksk, now, now)?);
            changed = true;
        }
        let prepublish = timing.prepublish(dnskey_ttl);
        let newest = self.keys.iter_mut().filter(|key| key.role == Role::Zsk).max_by_key(|key| key.active);
        match newest {
            None => {
                self.keys.push(Key::generate(Role::Zsk, now, now)?);
                changed = true;
            }
            Some(current) if current.retire.is_none() && current.active + timing.zsk_lifetime <= now + prepublish => {
                let active = (now + prepublish).max(current.active + timing.zsk_lifetime);
                current.retire = Some(active);
                current.remove = Some(active + timing.retire_hold(max_ttl));
                self.keys.push(Key::generate(Role::Zsk, now, active)?);
                changed = true;
            }
            Some(_) => {}
        }
        Ok(changed)
    }

    /// The operator starts a KSK rollover: a new KSK is published and signs the DNSKEY set
    /// next to the old one (so either DS validates); CDS/CDNSKEY name the new one.
    pub fn start_ksk_rollover(&mut self, now: u64) -> Result<u16, DnssecError> {
        let key = Key::generate(Role::Ksk, now, now)?;
        let tag = key.tag;
        self.keys.push(key);
        Ok(tag)
    }

    /// The operator finishes it (the parent now has the new DS, and its TTL has passed): every
    /// KSK but the newest leaves. Returns the tags removed (empty: no rollover in progress).
    pub fn finish_ksk_rollover(&mut self) -> Vec<u16> {
        let Some(newest) = self.newest_ksk().map(|key| key.tag) else { return Vec::new() };
        let removed: Vec<u16> =
            self.keys.iter().filter(|key| key.role == Role::Ksk && key.tag != newest).map(|key| key.tag).collect();
        self.keys.retain(|key| key.role != Role::Ksk || key.tag == newest);
        removed
    }

    /// The KSK the parent should point at (CDS/CDNSKEY, `lienthong dns ds`).
    pub fn newest_ksk(&self) -> Option<&Key> {
        self.keys.iter().filter(|key| key.role == Role::Ksk).max_by_key(|key| (key.active, key.publish))
    }

    /// The next time after `now` when the key set or the signing keys change.
    pub fn next_change(&self, now: u64, timing: &Timing, dnskey_ttl: u32) -> Option<u64> {
        let mut times: Vec<u64> = Vec::new();
        for key in &self.keys {
            times.extend([Some(key.publish), Some(key.active), key.retire, key.remove].into_iter().flatten());
        }
        if let Some(current) = self.keys.iter().filter(|key| key.role == Role::Zsk).max_by_key(|key| key.active)
            && current.retire.is_none()
        {
            times.push((current.active + timing.zsk_lifetime).saturating_sub(timing.prepublish(dnskey_ttl)));
        }
        times.into_iter().filter(|time| *time > now).min()
    }
}

/// A file written by root (the operator's command) stays readable by the service's user.
fn follow_owner(directory: &Path, file: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if let Ok(metadata) = std::fs::metadata(directory) {
            let _ = std::os::unix::fs::chown(file, Some(metadata.uid()), Some(metadata.gid()));
        }
    }
}

fn encode_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len()).step_by(2).map(|at| u8::from_str_radix(text.get(at..at + 2)?, 16).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_generated_once_into_a_private_file_and_read_back() {
        let directory = tempfile::tempdir().unwrap();
        let timing = Timing::default();
        let mut ring = KeyRing::load(directory.path(), "ninhthuan.gov.vn.").unwrap();
        assert!(ring.keys.is_empty());
        assert!(ring.update(1_800_000_000, &timing, 3600, 3600).unwrap());
        ring.save().unwrap();
        let path = KeyRing::path(directory.path(), "ninhthuan.gov.vn");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        let mut again = KeyRing::load(directory.path(), "ninhthuan.gov.vn").unwrap();
        let tags = |ring: &KeyRing| ring.keys.iter().map(|key| (key.role, key.tag)).collect::<Vec<_>>();
        assert_eq!(tags(&again), tags(&ring));
        assert!(!again.update(1_800_000_100, &timing, 3600, 3600).unwrap(), "nothing to do a moment later");
        assert_eq!(again.keys.iter().filter(|key| key.role == Role::Ksk).count(), 1);
        assert_eq!(again.keys.iter().filter(|key| key.role == Role::Zsk).count(), 1);
    }

    #[test]
    fn a_damaged_key_file_is_an_error_naming_the_line() {
        let directory = tempfile::tempdir().unwrap();
        let path = KeyRing::path(directory.path(), "a.vn");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, "# header\nksk\t1\t2\t-\t-\tnothex\n").unwrap();
        let error = KeyRing::load(directory.path(), "a.vn").unwrap_err();
        assert!(error.to_string().ends_with("a.vn.keys:2: not a lienthong DNSSEC key line"), "{error}");
    }

    #[test]
    fn zsk_successor_is_prepublished_and_the_old_key_held_after_retiring() {
        let directory = tempfile::tempdir().unwrap();
        let timing = Timing::default();
        let mut ring = KeyRing::load(directory.path(), "a.vn").unwrap();
        let start = 1_800_000_000;
        ring.update(start, &timing, 3600, 7200).unwrap();
        let due = ring.next_change(start, &timing, 3600).unwrap();
        assert_eq!(due, start + timing.zsk_lifetime - timing.prepublish(3600));
        assert!(!ring.update(due - 1, &timing, 3600, 7200).unwrap());
        assert!(ring.update(due, &timing, 3600, 7200).unwrap());
        let zsks: Vec<&Key> = ring.keys.iter().filter(|key| key.role == Role::Zsk).collect();
        assert_eq!(zsks.len(), 2);
        let (old, new) = (zsks[0], zsks[1]);
        assert!(new.is_published(due) && !new.is_signing(due) && old.is_signing(due));
        assert_eq!(new.active, start + timing.zsk_lifetime);
        assert_eq!(old.retire, Some(new.active));
        assert_eq!(old.remove, Some(new.active + 7200 + timing.propagation));
    }
}
