//! Signing one assembled zone: an RRSIG for every authoritative set (the DNSKEY, CDS and
//! CDNSKEY sets by the KSKs, the rest by the signing ZSK), and the NSEC3 chain over every
//! authoritative name, empty non-terminals and delegation points included (no opt-out).

use std::sync::Arc;

use hickory_proto::dnssec::rdata::{DNSKEY, DNSSECRData, NSEC3, RRSIG, SigInput};
use hickory_proto::dnssec::{Algorithm, Nsec3HashAlgorithm, TBS};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType, SerialNumber};
use rustc_hash::FxHashMap;

use super::keys::{Key, Role};
use super::nsec3::{self, Hash};
use super::{DNSKEY_TTL, DnssecError, Signer};
use crate::zone::Zone;

/// A zone's signatures and NSEC3 chain, made at load time and only looked up by answers.
#[derive(Debug, Default)]
pub struct Signatures {
    /// RRSIGs by (lowercase owner, covered type).
    pub rrsigs: FxHashMap<(Name, RecordType), Vec<Record>>,
    /// The NSEC3 chain in hash order, each record with its RRSIGs.
    pub chain: Vec<(Hash, Nsec3Entry)>,
    /// When the zone must be signed again (end of the refresh period, or a key event).
    pub refresh_at: u64,
    /// Expiration of every signature made (unix seconds).
    pub expiration: u64,
}

/// One NSEC3 record and its signatures.
#[derive(Debug, Clone)]
pub struct Nsec3Entry {
    pub record: Record,
    pub rrsigs: Vec<Record>,
}

impl Signatures {
    /// Every record the signer added, for AXFR and `dns records`.
    pub fn records(&self) -> Vec<Record> {
        let mut keys: Vec<&(Name, RecordType)> = self.rrsigs.keys().collect();
        keys.sort();
        let mut records: Vec<Record> = keys.into_iter().flat_map(|key| self.rrsigs[key].iter().cloned()).collect();
        for (_, entry) in &self.chain {
            records.push(entry.record.clone());
            records.extend(entry.rrsigs.iter().cloned());
        }
        records
    }
}

/// Signs `zone` with `signer`'s keys (unchanged without a signer). A signature of `previous`
/// (the copy this one replaces) is kept when its set is unchanged and it was made by the same
/// key for the same validity window: ECDSA signatures differ each time they are made, so
/// re-signing everything would put every RRSIG of the zone into each IXFR. Errors are
/// config-style lines (`FILE:LINE:COL: key.path: message`) naming `where_is`.
pub fn sign(
    mut zone: Zone,
    signer: Option<&Signer>,
    previous: Option<&Zone>,
    where_is: &str,
) -> Result<Zone, Vec<String>> {
    let Some(signer) = signer else { return Ok(zone) };
    let failed = |error: DnssecError| vec![format!("{where_is}: cannot sign zone `{}`: {error}", zone.apex)];
    let now = signer.now;
    let window = signer.timing.window(now);
    let signing = |role: Role| -> Vec<&Key> {
        signer.keys.keys.iter().filter(|key| key.role == role && key.is_signing(now)).collect()
    };
    let (ksks, zsks) = (signing(Role::Ksk), signing(Role::Zsk));
    if ksks.is_empty() || zsks.is_empty() {
        return Err(failed(DnssecError::Crypto("no active KSK or ZSK".into())));
    }
    // Signatures of `previous` are kept only from keys it published under the same tag, and
    // no other key of that tag (a tag names a key only within one DNSKEY set).
    let previous = previous.filter(|previous| previous.apex == zone.apex && previous.dnssec.is_some());
    let reusable: Vec<u16> = previous
        .and_then(|previous| previous.nodes.get(&previous.apex)?.rrsets.get(&RecordType::DNSKEY))
        .map(|published| {
            let published: Vec<&DNSKEY> = published
                .iter()
                .filter_map(|record| match &record.data {
                    RData::DNSSEC(DNSSECRData::DNSKEY(key)) => Some(key),
                    _ => None,
                })
                .collect();
            ksks.iter()
                .chain(&zsks)
                .filter(|key| {
                    let same_tag: Vec<&&DNSKEY> =
                        published.iter().filter(|other| other.calculate_key_tag().ok() == Some(key.tag)).collect();
                    same_tag.len() == 1 && **same_tag[0] == key.dnskey
                })
                .map(|key| key.tag)
                .collect()
        })
        .unwrap_or_default();
    let keep = |kept: &[Record], key: &Key| reusable.contains(&key.tag).then(|| still_current(kept, key, window))?;
    let mut signatures = Signatures::default();
    let mut hashed: Vec<(Hash, Vec<RecordType>)> = Vec::with_capacity(zone.nodes.len());
    for (name, node) in &zone.nodes {
        let cut = zone.cut_above(name);
        if cut.is_some_and(|cut| cut != name) {
            continue; // glue and anything else below a delegation is not ours to sign
        }
        let mut types = Vec::with_capacity(node.rrsets.len() + 1);
        let mut signed = false;
        for (record_type, records) in &node.rrsets {
            types.push(*record_type);
            if cut.is_some() && *record_type != RecordType::DS {
                continue; // the delegation's NS set is the child's, unsigned here
            }
            let keys = if matches!(record_type, RecordType::DNSKEY | RecordType::CDS | RecordType::CDNSKEY) {
                &ksks
            } else {
                &zsks
            };
            let kept = previous.and_then(|previous| {
                let unchanged = previous.nodes.get(name)?.rrsets.get(record_type)? == records;
                unchanged.then(|| previous.dnssec.as_deref()?.rrsigs.get(&(name.clone(), *record_type)))?
            });
            let made = keys
                .iter()
                .map(|key| match kept.and_then(|kept| keep(kept, key)) {
                    Some(signature) => Ok(signature),
                    None => sign_rrset(name, records, key, &zone.apex, window),
                })
                .collect::<Result<Vec<_>, _>>()
                .map_err(failed)?;
            signatures.rrsigs.insert((name.clone(), *record_type), made);
            signed = true;
        }
        if signed {
            types.push(RecordType::RRSIG);
        }
        hashed.push((nsec3::hash(name, &[], 0), types));
    }
    hashed.sort_by_key(|(hash, _)| *hash);
    hashed.dedup_by(|left, right| left.0 == right.0);
    let ttl = zone.negative_soa().ttl;
    for (position, (hash, types)) in hashed.iter().enumerate() {
        let next = hashed[(position + 1) % hashed.len()].0;
        let Some(owner) = nsec3::owner(hash, &zone.apex) else { continue };
        let data = NSEC3::new(Nsec3HashAlgorithm::SHA1, false, 0, Vec::new(), next.to_vec(), types.iter().copied());
        let record = Record::from_rdata(owner.clone(), ttl, RData::DNSSEC(DNSSECRData::NSEC3(data)));
        let kept = previous.and_then(|previous| {
            let chain = &previous.dnssec.as_deref()?.chain;
            let (_, entry) = &chain[chain.binary_search_by_key(hash, |(hash, _)| *hash).ok()?];
            (entry.record == record).then_some(&entry.rrsigs)
        });
        let rrsigs = zsks
            .iter()
            .map(|key| match kept.and_then(|kept| keep(kept, key)) {
                Some(signature) => Ok(signature),
                None => sign_rrset(&owner, std::slice::from_ref(&record), key, &zone.apex, window),
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(failed)?;
        signatures.chain.push((*hash, Nsec3Entry { record, rrsigs }));
    }
    let next_key_change = signer.keys.next_change(now, &signer.timing, DNSKEY_TTL).unwrap_or(u64::MAX);
    signatures.refresh_at = signer.timing.next_refresh(now).min(next_key_change);
    signatures.expiration = window.1;
    zone.dnssec = Some(Arc::new(signatures));
    Ok(zone)
}

/// The signature among `kept` that `key` made for the validity `window`, if any.
fn still_current(kept: &[Record], key: &Key, (inception, expiration): (u64, u64)) -> Option<Record> {
    kept.iter()
        .find(|record| match &record.data {
            RData::DNSSEC(DNSSECRData::RRSIG(rrsig)) => {
                let input = rrsig.input();
                input.key_tag == key.tag
                    && u64::from(input.sig_inception.get()) == inception
                    && u64::from(input.sig_expiration.get()) == expiration
            }
            _ => false,
        })
        .cloned()
}

/// The RRSIG of one set (RFC 4034 §3.1.8.1; the original TTL is the set's largest).
fn sign_rrset(
    owner: &Name,
    records: &[Record],
    key: &Key,
    apex: &Name,
    (inception, expiration): (u64, u64),
) -> Result<Record, DnssecError> {
    let record_type = records.first().map_or(RecordType::NULL, Record::record_type);
    let original_ttl = records.iter().map(|record| record.ttl).max().unwrap_or(0);
    let input = SigInput {
        type_covered: record_type,
        algorithm: Algorithm::ECDSAP256SHA256,
        num_labels: owner.num_labels(),
        original_ttl,
        sig_expiration: SerialNumber::new(expiration as u32),
        sig_inception: SerialNumber::new(inception as u32),
        key_tag: key.tag,
        signer_name: apex.clone(),
    };
    let data = TBS::from_input(owner, DNSClass::IN, &input, records.iter())
        .map_err(|error| DnssecError::Crypto(error.to_string()))?;
    let signature = key.sign(data.as_ref())?;
    let rrsig = RRSIG::from_sig(input, signature);
    Ok(Record::from_rdata(owner.clone(), original_ttl, RData::DNSSEC(DNSSECRData::RRSIG(rrsig))))
}
