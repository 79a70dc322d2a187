//! DKIM keys on disk: `state_dir/mail/dkim/DOMAIN/` (0700) holds one PKCS#8 file per
//! selector and algorithm (0600) and `selectors.json`, which names the current selector and
//! the retiring ones with the time they stopped signing. Every write goes to a temporary file
//! that is synced and renamed, so a crash leaves either the old or the new state.

use std::fs;
use std::path::{Path, PathBuf};

use aws_lc_rs::encoding::{AsDer as _, Pkcs8V1Der};
use aws_lc_rs::signature::KeyPair as _;
use base64::Engine as _;
use mail_auth::common::crypto::{Ed25519Key, RsaKey, Sha256};

use crate::Error;

/// Which selectors a domain has: the one that signs and those still published.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Selectors {
    /// Base name of the signing selector; the records are `BASE-ed` and `BASE-rsa`.
    pub current: String,
    /// Selectors replaced by a rotation, still published while their mail may be in flight.
    #[serde(default)]
    pub retiring: Vec<Retiring>,
}

/// A replaced selector and when it stopped signing.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Retiring {
    pub selector: String,
    pub retired_unix: u64,
}

/// The two keys of one selector, loaded.
pub struct KeyPair {
    pub ed25519: Ed25519Key,
    pub rsa: RsaKey<Sha256>,
    /// `p=` of the records, base64.
    pub ed25519_public: String,
    pub rsa_public: String,
}

/// Names the two DNS selectors of a base selector.
pub fn selector_names(base: &str) -> [String; 2] {
    [format!("{base}-ed"), format!("{base}-rsa")]
}

/// The directory of one domain's keys.
pub fn domain_dir(state_dir: &Path, domain: &str) -> PathBuf {
    state_dir.join("mail").join("dkim").join(domain)
}

/// Reads a domain's selectors; `None` when it has no keys yet.
pub fn read_selectors(dir: &Path) -> Result<Option<Selectors>, Error> {
    let path = dir.join("selectors.json");
    match fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|error| dkim_error(&path, &format!("not a selectors file: {error}"))),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(dkim_error(&path, &error.to_string())),
    }
}

/// Makes sure a domain has keys: generates the first selector if it has none.
pub fn ensure(dir: &Path, now_unix: u64) -> Result<Selectors, Error> {
    if let Some(selectors) = read_selectors(dir)? {
        return Ok(selectors);
    }
    let current = generate(dir, None, now_unix)?;
    let selectors = Selectors { current, retiring: Vec::new() };
    write_selectors(dir, &selectors)?;
    Ok(selectors)
}

/// New keys under a new selector; the old one becomes retiring. Returns the new state.
pub fn rotate(dir: &Path, now_unix: u64) -> Result<Selectors, Error> {
    let mut selectors = ensure(dir, now_unix)?;
    let current = generate(dir, Some(&selectors), now_unix)?;
    let previous = std::mem::replace(&mut selectors.current, current);
    selectors.retiring.push(Retiring { selector: previous, retired_unix: now_unix });
    write_selectors(dir, &selectors)?;
    Ok(selectors)
}

/// Drops retiring selectors whose mail can no longer be in flight (and their key files).
pub fn prune(dir: &Path, selectors: &mut Selectors, now_unix: u64, in_flight_secs: u64) -> Result<(), Error> {
    let (expired, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut selectors.retiring)
        .into_iter()
        .partition(|retiring| now_unix >= retiring.retired_unix.saturating_add(in_flight_secs));
    selectors.retiring = kept;
    if expired.is_empty() {
        return Ok(());
    }
    write_selectors(dir, selectors)?;
    for retiring in expired {
        for suffix in ["ed25519", "rsa"] {
            let _ = fs::remove_file(dir.join(format!("{}.{suffix}.pk8", retiring.selector)));
        }
        tracing::info!(dir = %dir.display(), selector = %retiring.selector, "DKIM selector retired and unpublished");
    }
    Ok(())
}

/// Loads the keys of one selector.
pub fn load(dir: &Path, base: &str) -> Result<KeyPair, Error> {
    let ed_path = dir.join(format!("{base}.ed25519.pk8"));
    let rsa_path = dir.join(format!("{base}.rsa.pk8"));
    let ed_der = fs::read(&ed_path).map_err(|error| dkim_error(&ed_path, &error.to_string()))?;
    let rsa_der = fs::read(&rsa_path).map_err(|error| dkim_error(&rsa_path, &error.to_string()))?;
    let ed25519 = Ed25519Key::from_pkcs8_der(&ed_der)
        .map_err(|error| dkim_error(&ed_path, &format!("not an Ed25519 PKCS#8 key: {error}")))?;
    let pkcs8 = rustls::pki_types::PrivatePkcs8KeyDer::from(rsa_der.as_slice());
    let rsa = RsaKey::<Sha256>::from_key_der(rustls::pki_types::PrivateKeyDer::Pkcs8(pkcs8))
        .map_err(|error| dkim_error(&rsa_path, &format!("not an RSA PKCS#8 key: {error}")))?;
    let rsa_public = aws_lc_rs::rsa::KeyPair::from_pkcs8(&rsa_der)
        .map_err(|error| dkim_error(&rsa_path, &format!("not an RSA PKCS#8 key: {error}")))?
        .public_key()
        .as_der()
        .map_err(|error| dkim_error(&rsa_path, &format!("cannot encode the public key: {error}")))?;
    let engine = base64::engine::general_purpose::STANDARD;
    Ok(KeyPair {
        ed25519_public: engine.encode(ed25519.public_key()),
        rsa_public: engine.encode(rsa_public.as_ref()),
        ed25519,
        rsa,
    })
}

/// Generates both keys of a new selector, named after the date and unused in `previous`.
fn generate(dir: &Path, previous: Option<&Selectors>, now_unix: u64) -> Result<String, Error> {
    create_private_dir(dir)?;
    let date = super::date_stamp(now_unix);
    let taken = |name: &str| {
        previous.is_some_and(|selectors| {
            selectors.current == name || selectors.retiring.iter().any(|retiring| retiring.selector == name)
        }) || dir.join(format!("{name}.ed25519.pk8")).exists()
    };
    let base = (b'a'..=b'z')
        .map(|letter| format!("lt{date}{}", letter as char))
        .find(|name| !taken(name))
        .ok_or_else(|| dkim_error(dir, "26 selectors today already; rotate again tomorrow"))?;
    let ed = Ed25519Key::generate_pkcs8().map_err(|error| dkim_error(dir, &format!("Ed25519 generation: {error}")))?;
    let rsa = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
        .map_err(|error| dkim_error(dir, &format!("RSA generation: {error}")))?;
    let rsa: Pkcs8V1Der<'static> = rsa.as_der().map_err(|error| dkim_error(dir, &format!("RSA encoding: {error}")))?;
    write_private(&dir.join(format!("{base}.ed25519.pk8")), &ed)?;
    write_private(&dir.join(format!("{base}.rsa.pk8")), rsa.as_ref())?;
    tracing::info!(dir = %dir.display(), selector = %base, "DKIM keys generated (Ed25519 and RSA-2048)");
    Ok(base)
}

fn write_selectors(dir: &Path, selectors: &Selectors) -> Result<(), Error> {
    let bytes = serde_json::to_vec_pretty(selectors).unwrap_or_default();
    write_private(&dir.join("selectors.json"), &bytes)
}

/// `state_dir/mail/dkim/DOMAIN` and its parents, all 0700 (through the state helpers every
/// crate uses for `state_dir`).
fn create_private_dir(dir: &Path) -> Result<(), Error> {
    lienthong_config::state::create_private_dir(dir).map_err(|error| dkim_error(dir, &error.to_string()))?;
    Ok(())
}

/// Writes a 0600 file atomically (temporary file, fsync, rename, directory fsync).
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    lienthong_config::state::write_private(path, bytes).map_err(|error| dkim_error(path, &error.to_string()))
}

fn dkim_error(path: &Path, reason: &str) -> Error {
    Error::Dkim { path: path.to_owned(), reason: reason.to_owned() }
}
