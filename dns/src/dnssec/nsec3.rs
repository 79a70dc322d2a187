//! NSEC3 (RFC 5155) with the RFC 9276 parameters: SHA-1, no extra iterations, no salt, no
//! opt-out. The chain is built once per signing; answers only look records up in it.

use hickory_proto::rr::Name;
use ring::digest::{SHA1_FOR_LEGACY_USE_ONLY, digest};

/// Length of an NSEC3 SHA-1 hash.
pub const HASH_LENGTH: usize = 20;

/// One NSEC3 hash.
pub type Hash = [u8; HASH_LENGTH];

/// RFC 5155 §5: IH(salt, x, 0) = H(x || salt), IH(salt, x, k) = H(IH(salt, x, k-1) || salt),
/// over the canonical (lowercase, uncompressed) wire form of `name`.
pub fn hash(name: &Name, salt: &[u8], iterations: u16) -> Hash {
    let mut input = canonical_wire(name);
    input.extend_from_slice(salt);
    let mut value = digest(&SHA1_FOR_LEGACY_USE_ONLY, &input);
    for _ in 0..iterations {
        let mut next = value.as_ref().to_vec();
        next.extend_from_slice(salt);
        value = digest(&SHA1_FOR_LEGACY_USE_ONLY, &next);
    }
    let mut hash = [0u8; HASH_LENGTH];
    hash.copy_from_slice(value.as_ref());
    hash
}

/// [`hash`] with no salt and no extra iterations (RFC 9276) of a name already in lowercase
/// wire form: the per-query hash of a DO NXDOMAIN answer.
pub fn hash_wire(lower_wire: &[u8]) -> Hash {
    let mut hash = [0u8; HASH_LENGTH];
    hash.copy_from_slice(digest(&SHA1_FOR_LEGACY_USE_ONLY, lower_wire).as_ref());
    hash
}

/// The "Base 32 Encoding with Extended Hex Alphabet" of RFC 4648 §7, lowercase, unpadded:
/// the first label of an NSEC3 owner name.
pub fn base32hex(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"0123456789abcdefghijklmnopqrstuv";
    let mut text = String::with_capacity(bytes.len().div_ceil(5) * 8);
    let mut buffer: u64 = 0;
    let mut bits = 0;
    for byte in bytes {
        buffer = (buffer << 8) | u64::from(*byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            text.push(char::from(ALPHABET[((buffer >> bits) & 31) as usize]));
        }
    }
    if bits > 0 {
        text.push(char::from(ALPHABET[((buffer << (5 - bits)) & 31) as usize]));
    }
    text
}

/// The NSEC3 owner of `hash` in the zone `apex`.
pub fn owner(hash: &Hash, apex: &Name) -> Option<Name> {
    Name::from_ascii(base32hex(hash)).ok()?.append_domain(apex).ok()
}

/// Position in a sorted chain of the entry matching `hash` exactly.
pub fn matching<T>(chain: &[(Hash, T)], hash: &Hash) -> Option<usize> {
    chain.binary_search_by(|(entry, _)| entry.cmp(hash)).ok()
}

/// Position in a sorted chain of the entry covering `hash` (owner < hash < next, wrapping
/// around at the end). `None` when `hash` is itself in the chain or the chain is empty.
pub fn covering<T>(chain: &[(Hash, T)], hash: &Hash) -> Option<usize> {
    match chain.binary_search_by(|(entry, _)| entry.cmp(hash)) {
        Ok(_) => None,
        Err(0) => chain.len().checked_sub(1),
        Err(position) => Some(position - 1),
    }
}

fn canonical_wire(name: &Name) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(255);
    for label in name.iter() {
        bytes.push(label.len() as u8);
        bytes.extend(label.iter().map(u8::to_ascii_lowercase));
    }
    bytes.push(0);
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 5155 Appendix A: zone `example`, salt aabbccdd, 12 iterations.
    #[test]
    fn hashes_match_rfc_5155_appendix_a() {
        let salt = [0xaa, 0xbb, 0xcc, 0xdd];
        let vectors = [
            ("example.", "0p9mhaveqvm6t7vbl5lop2u3t2rp3tom"),
            ("a.example.", "35mthgpgcu1qg68fab165klnsnk3dpvl"),
            ("ai.example.", "gjeqe526plbf1g8mklp59enfd789njgi"),
            ("ns1.example.", "2t7b4g4vsa5smi47k61mv5bv1a22bojr"),
            ("ns2.example.", "q04jkcevqvmu85r014c7dkba38o0ji5r"),
            ("w.example.", "k8udemvp1j2f7eg6jebps17vp3n8i58h"),
            ("*.w.example.", "r53bq7cc2uvmubfu5ocmm6pers9tk9en"),
            ("x.w.example.", "b4um86eghhds6nea196smvmlo4ors995"),
            ("y.w.example.", "ji6neoaepv8b5o6k4ev33abha8ht9fgc"),
            ("x.y.w.example.", "2vptu5timamqttgl4luu9kg21e0aor3s"),
            ("xx.example.", "t644ebqk9bibcna874givr6joj62mlhv"),
            ("2t7b4g4vsa5smi47k61mv5bv1a22bojr.example.", "kohar7mbb8dc2ce8a9qvl8hon4k53uhi"),
        ];
        for (name, expected) in vectors {
            let name = Name::from_ascii(name).unwrap();
            assert_eq!(base32hex(&hash(&name, &salt, 12)), expected, "{name}");
        }
    }

    #[test]
    fn hash_ignores_letter_case_and_uses_zero_iterations_as_one_digest() {
        let lower = hash(&Name::from_ascii("hub.ninhthuan.gov.vn.").unwrap(), &[], 0);
        let upper = hash(&Name::from_ascii("HUB.NinhThuan.gov.vn.").unwrap(), &[], 0);
        assert_eq!(lower, upper);
        let wire = b"\x03hub\x09ninhthuan\x03gov\x02vn\x00".to_vec();
        assert_eq!(lower.as_slice(), digest(&SHA1_FOR_LEGACY_USE_ONLY, &wire).as_ref());
        assert_eq!(hash_wire(&wire), lower);
    }

    #[test]
    fn base32hex_matches_rfc_4648_vectors() {
        for (input, expected) in
            [("", ""), ("f", "co"), ("fo", "cpng"), ("foo", "cpnmu"), ("foob", "cpnmuog"), ("fooba", "cpnmuoj1")]
        {
            assert_eq!(base32hex(input.as_bytes()), expected);
        }
    }

    #[test]
    fn covering_wraps_around_the_chain() {
        let chain: Vec<(Hash, ())> = [[10u8; 20], [20u8; 20], [30u8; 20]].into_iter().map(|hash| (hash, ())).collect();
        assert_eq!(covering(&chain, &[15u8; 20]), Some(0));
        assert_eq!(covering(&chain, &[35u8; 20]), Some(2));
        assert_eq!(covering(&chain, &[5u8; 20]), Some(2));
        assert_eq!(covering(&chain, &[20u8; 20]), None);
        assert_eq!(matching(&chain, &[20u8; 20]), Some(1));
    }
}
