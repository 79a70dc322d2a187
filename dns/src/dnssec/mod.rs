//! DNSSEC signing of the zones that ask for it (`dnssec = true`): ECDSA P-256/SHA-256
//! (algorithm 13), a KSK and a ZSK per zone, NSEC3 with RFC 9276's parameters.
//!
//! Signing happens when a catalog is built (load, reload, and the refresh timer), never per
//! query: [`sign`] attaches [`Signatures`] to a [`Zone`], and [`answer`] serves DO queries from
//! answers precomputed with them. The zone compile pipeline calls in at one place,
//! `catalog::Catalog::build`: [`Signer::for_zone`] (keys), [`with_key_records`] (DNSKEY, CDS,
//! CDNSKEY, NSEC3PARAM join the zone before its serial is settled), [`sign`] (after the zone
//! is assembled).

pub mod answer;
pub mod keys;
pub mod nsec3;
pub mod sign;
pub mod validate;

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};

use hickory_proto::dnssec::rdata::{CDNSKEY, CDS, DNSSECRData, NSEC3PARAM};
use hickory_proto::dnssec::{Algorithm, DigestType, Nsec3HashAlgorithm, PublicKey};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use lienthong_config::Config;

pub use answer::{SignedIndex, answer};
pub use keys::{KeyRing, Role};
pub use sign::{Signatures, sign};
pub use validate::Validator;

/// TTL of the DNSKEY, CDS and CDNSKEY sets.
pub const DNSKEY_TTL: u32 = 3600;

/// Errors of signing and key handling.
#[derive(Debug, thiserror::Error)]
pub enum DnssecError {
    /// The key file could not be read or written.
    #[error("{}: {source}", .path.display())]
    Io { path: PathBuf, source: std::io::Error },
    /// A line of the key file is not `role publish active retire remove pkcs8`.
    #[error("{}:{line}: not a lienthong DNSSEC key line", .path.display())]
    KeyFile { path: PathBuf, line: usize },
    /// Key generation, loading or signing failed.
    #[error("{0}")]
    Crypto(String),
}

/// The signing schedule (seconds). The defaults follow Knot DNS's: signatures valid 14 days,
/// refreshed weekly, a new ZSK every 30 days.
#[derive(Debug, Clone)]
pub struct Timing {
    /// How long a signature is valid from the start of its refresh period.
    pub signature_validity: u64,
    /// Signatures are remade at every multiple of this (so at least `validity - refresh` remain).
    pub refresh: u64,
    /// How long a ZSK signs before its successor takes over.
    pub zsk_lifetime: u64,
    /// Time for a change to reach every secondary (NOTIFY, transfer), added to TTLs.
    pub propagation: u64,
}

impl Default for Timing {
    fn default() -> Timing {
        Timing { signature_validity: 14 * DAY, refresh: 7 * DAY, zsk_lifetime: 30 * DAY, propagation: DAY }
    }
}

const DAY: u64 = 86_400;
/// Inception is back-dated for validators whose clocks run slow.
const CLOCK_SKEW: u64 = 3600;

impl Timing {
    /// How long a new ZSK sits in the DNSKEY set before it signs: resolvers must have it.
    pub fn prepublish(&self, dnskey_ttl: u32) -> u64 {
        u64::from(dnskey_ttl) + self.propagation
    }

    /// How long a retired ZSK stays published: its signatures may still be cached.
    pub fn retire_hold(&self, max_ttl: u32) -> u64 {
        u64::from(max_ttl) + self.propagation
    }

    /// (inception, expiration) of signatures made at `now`.
    pub fn window(&self, now: u64) -> (u64, u64) {
        let start = now - now % self.refresh.max(1);
        (start.saturating_sub(CLOCK_SKEW), start + self.signature_validity)
    }

    /// When signatures made at `now` are remade.
    pub fn next_refresh(&self, now: u64) -> u64 {
        let refresh = self.refresh.max(1);
        now - now % refresh + refresh
    }
}

/// The keys and schedule of one signed zone copy, at one moment.
#[derive(Debug)]
pub struct Signer {
    pub apex: Name,
    pub keys: KeyRing,
    pub timing: Timing,
    pub now: u64,
}

impl Signer {
    /// For a zone with `dnssec = true`: loads its keys from `state_dir/dnssec/` (creating
    /// them on first use) and moves their timeline to `now`, saving any change. `records` are
    /// the zone's assembled records (their TTLs decide how long an old ZSK stays).
    pub fn for_zone(config: &Config, position: usize, records: &[Record], now: u64) -> Result<Option<Signer>, String> {
        let zone = &config.dns.zones[position];
        if !zone.dnssec {
            return Ok(None);
        }
        let path = format!("dns.zone[{position}].dnssec");
        let failed = |error: DnssecError| format!("{}:1:1: {path}: {error}", config_file(config).display());
        let timing = Timing::default();
        let mut keys = KeyRing::load(&config.server.state_dir, zone.name.as_str()).map_err(failed)?;
        let max_ttl = records.iter().map(|record| record.ttl).max().unwrap_or(DNSKEY_TTL).max(DNSKEY_TTL);
        if keys.update(now, &timing, DNSKEY_TTL, max_ttl).map_err(failed)? {
            keys.save().map_err(failed)?;
        }
        let apex = crate::catalog::absolute(zone.name.as_str());
        Ok(Some(Signer { apex, keys, timing, now }))
    }

    /// What makes two signings differ besides the records: the refresh period and which keys
    /// sign. A change of it changes the serial, so secondaries fetch the new signatures.
    pub fn state_hash(&self) -> u64 {
        let mut hasher = DefaultHasher::new();
        self.timing.window(self.now).hash(&mut hasher);
        for key in self.keys.keys.iter().filter(|key| key.is_signing(self.now)) {
            key.tag.hash(&mut hasher);
        }
        hasher.finish()
    }

    /// The DS records (SHA-256) for the parent: one per KSK in the DNSKEY set.
    pub fn ds_records(&self) -> Vec<String> {
        let mut lines = Vec::new();
        for key in self.keys.keys.iter().filter(|key| key.role == Role::Ksk && key.is_published(self.now)) {
            if let Ok(digest) = key.dnskey.to_digest(&self.apex, DigestType::SHA256) {
                let hex: String = digest.as_ref().iter().map(|byte| format!("{byte:02X}")).collect();
                lines.push(format!("{} {DNSKEY_TTL} IN DS {} 13 2 {hex}", self.apex, key.tag));
            }
        }
        lines
    }
}

/// `records` with the operator's own DNSSEC records removed (the signer makes them) and the
/// apex's DNSKEY, CDS, CDNSKEY and NSEC3PARAM sets added. Unchanged without a signer.
pub fn with_key_records(mut records: Vec<Record>, signer: Option<&Signer>) -> Vec<Record> {
    let Some(signer) = signer else { return records };
    records.retain(|record| !is_signer_type(record.record_type()));
    let apex = &signer.apex;
    for key in signer.keys.keys.iter().filter(|key| key.is_published(signer.now)) {
        records.push(Record::from_rdata(
            apex.clone(),
            DNSKEY_TTL,
            RData::DNSSEC(DNSSECRData::DNSKEY(key.dnskey.clone())),
        ));
    }
    if let Some(ksk) = signer.keys.newest_ksk()
        && let Ok(digest) = ksk.dnskey.to_digest(apex, DigestType::SHA256)
    {
        let cds = CDS::new(ksk.tag, Some(Algorithm::ECDSAP256SHA256), DigestType::SHA256, digest.as_ref().to_vec());
        records.push(Record::from_rdata(apex.clone(), DNSKEY_TTL, RData::DNSSEC(DNSSECRData::CDS(cds))));
        let public = ksk.dnskey.public_key().public_bytes().to_vec();
        let cdnskey = CDNSKEY::new(true, true, false, Some(Algorithm::ECDSAP256SHA256), public);
        records.push(Record::from_rdata(apex.clone(), DNSKEY_TTL, RData::DNSSEC(DNSSECRData::CDNSKEY(cdnskey))));
    }
    let parameters = NSEC3PARAM::new(Nsec3HashAlgorithm::SHA1, false, 0, Vec::new());
    records.push(Record::from_rdata(apex.clone(), 0, RData::DNSSEC(DNSSECRData::NSEC3PARAM(parameters))));
    records
}

/// The hash input [`Signer::state_hash`] adds to a zone's content hash (0 when unsigned).
pub fn state_hash(signer: Option<&Signer>) -> u64 {
    signer.map_or(0, Signer::state_hash)
}

/// Types only the signer writes.
pub fn is_signer_type(record_type: RecordType) -> bool {
    matches!(
        record_type,
        RecordType::DNSKEY
            | RecordType::RRSIG
            | RecordType::NSEC
            | RecordType::NSEC3
            | RecordType::NSEC3PARAM
            | RecordType::CDS
            | RecordType::CDNSKEY
    )
}

/// `lienthong dns ds ZONE`: the DS records to give the parent registry, creating the keys
/// when the zone has none yet (the same keys the server would create on its first start).
pub fn ds_for(config: &Config, zone: &str, now: u64) -> Result<Vec<String>, String> {
    let wanted = crate::catalog::absolute(zone);
    let named = |candidate: &&lienthong_config::Zone| crate::catalog::absolute(candidate.name.as_str()) == wanted;
    if !config.dns.zones.iter().any(|candidate| named(&candidate)) {
        return Err(format!("no [[dns.zone]] is named `{zone}`"));
    }
    let Some(position) = config.dns.zones.iter().position(|candidate| named(&candidate) && candidate.dnssec) else {
        return Err(format!("zone `{zone}` is not signed (set dnssec = true in its [[dns.zone]])"));
    };
    let signer = Signer::for_zone(config, position, &[], now)?.ok_or_else(|| format!("zone `{zone}` is not signed"))?;
    Ok(signer.ds_records())
}

/// The step of a KSK rollover the operator asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KskStep {
    /// Publish a new KSK (both sign the DNSKEY set; CDS/CDNSKEY name the new one).
    Start,
    /// The parent has the new DS and its TTL has passed: retire the old KSK.
    Finish,
}

/// `lienthong dns roll-ksk ZONE [--finish]`: changes the key file; the running server picks
/// the change up at its next reload. Returns a message for the operator.
pub fn roll_ksk(state_dir: &Path, zone: &str, step: KskStep, now: u64) -> Result<String, String> {
    let mut keys = KeyRing::load(state_dir, zone).map_err(|error| error.to_string())?;
    if keys.newest_ksk().is_none() {
        return Err(format!("zone `{zone}` has no keys yet (start the server with dnssec = true first)"));
    }
    let message = match step {
        KskStep::Start => {
            let tag = keys.start_ksk_rollover(now).map_err(|error| error.to_string())?;
            format!(
                "new KSK {tag} published for {zone}; reload, give the parent the new DS (lienthong dns ds {zone}), wait for its TTL, then run roll-ksk {zone} --finish"
            )
        }
        KskStep::Finish => {
            let removed = keys.finish_ksk_rollover();
            if removed.is_empty() {
                return Err(format!("zone `{zone}` has a single KSK: no rollover in progress"));
            }
            let tags: Vec<String> = removed.iter().map(u16::to_string).collect();
            format!("old KSK {} removed from {zone}; reload to apply", tags.join(", "))
        }
    };
    keys.save().map_err(|error| error.to_string())?;
    Ok(message)
}

fn config_file(config: &Config) -> PathBuf {
    config.path.clone().unwrap_or_else(|| PathBuf::from(lienthong_config::BUILT_IN))
}
