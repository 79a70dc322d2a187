//! Just enough DER to find a certificate's SubjectPublicKeyInfo (RFC 5280 4.1), for TLSA
//! selector 1 (RFC 6698 2.1.2). A bounded walk over the bytes the peer sent: no allocation,
//! no recursion, every length checked against what is left; anything unexpected is `None`.

const SEQUENCE: u8 = 0x30;
const INTEGER: u8 = 0x02;
/// `[0] EXPLICIT Version`, present in v2 and v3 certificates.
const VERSION: u8 = 0xA0;

/// The DER of the certificate's `subjectPublicKeyInfo` (tag and length included), or `None`
/// when `certificate` is not a DER X.509 certificate.
pub fn subject_public_key_info(certificate: &[u8]) -> Option<&[u8]> {
    let (certificate, _) = element(certificate, SEQUENCE)?;
    let (tbs, _) = element(certificate.content, SEQUENCE)?;
    let mut rest = tbs.content;
    if rest.first() == Some(&VERSION) {
        rest = element(rest, VERSION)?.1;
    }
    // serialNumber, signature, issuer, validity, subject.
    for tag in [INTEGER, SEQUENCE, SEQUENCE, SEQUENCE, SEQUENCE] {
        rest = element(rest, tag)?.1;
    }
    let (spki, _) = element(rest, SEQUENCE)?;
    Some(spki.whole)
}

struct Element<'a> {
    /// Tag, length and content.
    whole: &'a [u8],
    content: &'a [u8],
}

/// The element at the start of `input` if it has `tag`, and what follows it.
fn element(input: &[u8], tag: u8) -> Option<(Element<'_>, &[u8])> {
    let (&found, rest) = input.split_first()?;
    if found != tag {
        return None;
    }
    let (&first, mut rest) = rest.split_first()?;
    let length = match first {
        0..=0x7F => usize::from(first),
        // Long form with 1 to 3 length bytes (no certificate is 16 MiB); 0x80 is BER's
        // indefinite length, which DER forbids.
        0x81..=0x83 => {
            let count = usize::from(first & 0x7F);
            let (bytes, after) = rest.split_at_checked(count)?;
            rest = after;
            bytes.iter().fold(0usize, |length, &byte| (length << 8) | usize::from(byte))
        }
        _ => return None,
    };
    let header = input.len() - rest.len();
    let (content, after) = rest.split_at_checked(length)?;
    Some((Element { whole: &input[..header + length], content }, after))
}

#[cfg(test)]
mod tests {
    use rcgen::PublicKeyData as _;

    use super::*;

    #[test]
    fn finds_the_key_of_generated_certificates() {
        for algorithm in [&rcgen::PKCS_ECDSA_P256_SHA256, &rcgen::PKCS_ED25519, &rcgen::PKCS_ECDSA_P384_SHA384] {
            let key = rcgen::KeyPair::generate_for(algorithm).unwrap();
            let params = rcgen::CertificateParams::new(vec!["mx.example.vn".to_owned()]).unwrap();
            let certificate = params.self_signed(&key).unwrap();
            assert_eq!(subject_public_key_info(certificate.der()), Some(key.subject_public_key_info().as_slice()));
        }
    }

    #[test]
    fn truncated_or_garbled_input_is_refused_without_panic() {
        let key = rcgen::KeyPair::generate().unwrap();
        let certificate = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap().self_signed(&key).unwrap();
        let der = certificate.der().to_vec();
        for end in 0..der.len() {
            assert_eq!(subject_public_key_info(&der[..end]), None, "cut at {end}");
        }
        // Every single-byte change either still parses to a slice of the input or is refused.
        for index in 0..der.len() {
            let mut changed = der.clone();
            changed[index] ^= 0xFF;
            if let Some(spki) = subject_public_key_info(&changed) {
                assert!(spki.len() <= changed.len());
            }
        }
        assert_eq!(subject_public_key_info(&[0x30, 0x80, 0, 0]), None, "indefinite length");
        assert_eq!(subject_public_key_info(&[0x30, 0x84, 0xFF, 0xFF, 0xFF, 0xFF]), None);
    }
}
