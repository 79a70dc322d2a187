use rcgen::PublicKeyData as _;
use rustls::client::danger::ServerCertVerifier as _;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

use super::*;
use crate::dane::verifier::DaneVerifier;

const HOST: &str = "mx.dane.example";

struct Leaf {
    der: CertificateDer<'static>,
    spki: Vec<u8>,
}

/// A self-signed certificate for `names`, valid from `from` to `until` (years).
fn self_signed(names: &[&str], from: i32, until: i32) -> Leaf {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params =
        rcgen::CertificateParams::new(names.iter().map(|name| (*name).to_owned()).collect::<Vec<_>>()).unwrap();
    params.not_before = rcgen::date_time_ymd(from, 1, 1);
    params.not_after = rcgen::date_time_ymd(until, 1, 1);
    let certificate = params.self_signed(&key).unwrap();
    Leaf { der: certificate.der().clone(), spki: key.subject_public_key_info() }
}

/// A CA and a leaf for `names` that it signed.
struct Chain {
    ca: Leaf,
    leaf: Leaf,
}

fn chain(names: &[&str]) -> Chain {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.distinguished_name.push(rcgen::DnType::CommonName, "CA DANE thu nghiem");
    let ca = params.self_signed(&ca_key).unwrap();
    let ca = Leaf { der: ca.der().clone(), spki: ca_key.subject_public_key_info() };
    let issuer = rcgen::Issuer::new(params, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let names: Vec<String> = names.iter().map(|name| (*name).to_owned()).collect();
    let leaf = rcgen::CertificateParams::new(names).unwrap().signed_by(&key, &issuer).unwrap();
    Chain { ca, leaf: Leaf { der: leaf.der().clone(), spki: key.subject_public_key_info() } }
}

fn record(usage: u8, selector: u8, matching: u8, certificate: &Leaf) -> Tlsa {
    let selected: &[u8] = if selector == 0 { &certificate.der } else { &certificate.spki };
    let data = match matching {
        0 => selected.to_vec(),
        1 => digest::digest(&digest::SHA256, selected).as_ref().to_vec(),
        _ => digest::digest(&digest::SHA512, selected).as_ref().to_vec(),
    };
    Tlsa { usage, selector, matching, data }
}

/// What the verifier says for `end_entity` + `intermediates` presented as `name`.
fn check(records: Vec<Tlsa>, end_entity: &Leaf, intermediates: &[&Leaf], name: &str) -> Option<Usage> {
    let set = TlsaSet::usable(records)?;
    let verifier = DaneVerifier::new(set);
    let intermediates: Vec<CertificateDer<'static>> =
        intermediates.iter().map(|certificate| certificate.der.clone()).collect();
    let name = ServerName::try_from(name.to_owned()).unwrap();
    verifier.verify_server_cert(&end_entity.der, &intermediates, &name, &[], UnixTime::now()).ok()?;
    verifier.matched()
}

#[test]
fn dane_ee_matches_the_key_or_the_certificate_with_each_hash() {
    let leaf = self_signed(&[HOST], 2024, 2040);
    let other = self_signed(&[HOST], 2024, 2040);
    for (selector, matching) in [(1, 1), (0, 1), (1, 2), (0, 2), (1, 0), (0, 0)] {
        let good = record(3, selector, matching, &leaf);
        assert_eq!(check(vec![good.clone()], &leaf, &[], HOST), Some(Usage::DaneEe), "3 {selector} {matching}");
        assert_eq!(check(vec![good], &other, &[], HOST), None, "3 {selector} {matching}: another key");
        let wrong = record(3, selector, matching, &other);
        assert_eq!(check(vec![wrong.clone()], &leaf, &[], HOST), None, "3 {selector} {matching}: wrong data");
        // One matching record in the set is enough (key rollover publishes two).
        let both = vec![wrong, record(3, selector, matching, &leaf)];
        assert_eq!(check(both, &leaf, &[], HOST), Some(Usage::DaneEe));
    }
}

#[test]
fn dane_ee_ignores_names_and_dates() {
    // RFC 7672 3.1.1: the TLSA record is the whole authentication.
    let expired_elsewhere = self_signed(&["khac.example"], 2001, 2002);
    let record = record(3, 1, 1, &expired_elsewhere);
    assert_eq!(check(vec![record], &expired_elsewhere, &[], HOST), Some(Usage::DaneEe));
}

#[test]
fn dane_ta_needs_the_anchor_in_the_chain_a_valid_chain_and_the_host_name() {
    let good = chain(&[HOST]);
    let stranger = chain(&[HOST]);
    for (selector, matching) in [(0, 1), (1, 1), (0, 2), (1, 2), (0, 0)] {
        let ta = record(2, selector, matching, &good.ca);
        assert_eq!(
            check(vec![ta.clone()], &good.leaf, &[&good.ca], HOST),
            Some(Usage::DaneTa),
            "2 {selector} {matching}"
        );
        // The name must be the MX host's (RFC 7672 3.2.2).
        assert_eq!(check(vec![ta.clone()], &good.leaf, &[&good.ca], "mx.other.example"), None);
        // The server must send the trust anchor (RFC 7672 3.1.2).
        assert_eq!(check(vec![ta.clone()], &good.leaf, &[], HOST), None);
        // A leaf that the anchor did not sign, presented next to it.
        assert_eq!(check(vec![ta], &stranger.leaf, &[&good.ca], HOST), None);
    }
    // A DANE-TA record naming the leaf itself is no trust anchor for it.
    assert_eq!(check(vec![record(2, 0, 1, &good.leaf)], &good.leaf, &[&good.ca], HOST), None);
}

#[test]
fn dane_ta_checks_dates_along_the_chain() {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = params.self_signed(&ca_key).unwrap();
    let ca = Leaf { der: ca.der().clone(), spki: ca_key.subject_public_key_info() };
    let issuer = rcgen::Issuer::new(params, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let mut leaf_params = rcgen::CertificateParams::new(vec![HOST.to_owned()]).unwrap();
    leaf_params.not_before = rcgen::date_time_ymd(2001, 1, 1);
    leaf_params.not_after = rcgen::date_time_ymd(2002, 1, 1);
    let leaf = leaf_params.signed_by(&key, &issuer).unwrap();
    let leaf = Leaf { der: leaf.der().clone(), spki: key.subject_public_key_info() };
    assert_eq!(check(vec![record(2, 0, 1, &ca)], &leaf, &[&ca], HOST), None);
}

#[test]
fn pkix_usages_are_unusable_for_smtp_even_when_they_match() {
    let chain = chain(&[HOST]);
    for usage in [0, 1] {
        let records = vec![record(usage, 0, 1, &chain.ca), record(usage, 1, 1, &chain.leaf)];
        assert_eq!(TlsaSet::usable(records.clone()), None, "usage {usage}");
        // Next to a DANE-EE record that does not match, they do not authenticate anything.
        let mut mixed = records;
        mixed.push(record(3, 1, 1, &chain.ca));
        assert_eq!(check(mixed, &chain.leaf, &[&chain.ca], HOST), None, "usage {usage}");
    }
}

#[test]
fn malformed_records_are_unusable() {
    let leaf = self_signed(&[HOST], 2024, 2040);
    let good = record(3, 1, 1, &leaf);
    let malformed = [
        Tlsa { data: good.data[..31].to_vec(), ..good.clone() },
        Tlsa { matching: 2, ..good.clone() },
        Tlsa { matching: 1, data: vec![0; 64], ..good.clone() },
        Tlsa { selector: 2, ..good.clone() },
        Tlsa { selector: 255, ..good.clone() },
        Tlsa { matching: 3, ..good.clone() },
        Tlsa { matching: 255, ..good.clone() },
        Tlsa { usage: 4, ..good.clone() },
        Tlsa { usage: 255, ..good.clone() },
        Tlsa { matching: 0, data: Vec::new(), ..good.clone() },
        Tlsa { matching: 0, data: vec![0; MAX_DATA + 1], ..good.clone() },
    ];
    for record in malformed {
        assert_eq!(
            record.usage(),
            None,
            "{} {} {} ({} bytes)",
            record.usage,
            record.selector,
            record.matching,
            record.data.len()
        );
        assert_eq!(TlsaSet::usable([record]), None);
    }
    assert_eq!(good.usage(), Some(Usage::DaneEe));
}

#[test]
fn a_set_keeps_at_most_max_records() {
    let leaf = self_signed(&[HOST], 2024, 2040);
    let records = (0..MAX_RECORDS + 5).map(|index| Tlsa { data: vec![index as u8; 32], ..record(3, 1, 1, &leaf) });
    assert_eq!(TlsaSet::usable(records).unwrap().len(), MAX_RECORDS);
}

/// Generated certificates and records: every record made from a certificate matches it,
/// and no record with one byte changed does; garbage never matches nor panics.
#[test]
fn generated_records_match_exactly_their_certificate() {
    use rand::{Rng as _, SeedableRng as _};
    let mut random = rand::rngs::StdRng::seed_from_u64(7672);
    for round in 0..6 {
        let leaf = self_signed(&[HOST], 2024, 2040);
        for selector in 0..=1 {
            for matching in 0..=2 {
                let good = record(3, selector, matching, &leaf);
                assert!(good.matches(&leaf.der), "round {round}: 3 {selector} {matching}");
                let mut changed = good.clone();
                let index = random.random_range(0..changed.data.len());
                changed.data[index] ^= 1 << random.random_range(0..8);
                assert!(!changed.matches(&leaf.der), "round {round}: 3 {selector} {matching} changed at {index}");
            }
        }
        let mut garbage = vec![0u8; random.random_range(0..2048)];
        random.fill(garbage.as_mut_slice());
        if let Some(first) = garbage.first_mut() {
            *first = 0x30;
        }
        for selector in 0..=1 {
            assert!(!record(3, selector, 1, &leaf).matches(&garbage));
        }
    }
}
