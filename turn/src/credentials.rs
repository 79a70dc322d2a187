//! Time-limited TURN credentials in the "TURN REST API" style that coturn calls
//! `use-auth-secret`: the username is `EXPIRY:PARTICIPANT`, the password is
//! base64(HMAC-SHA1(secret, username)). The server keeps no list of users: whoever holds a
//! password for an unexpired username got it from the signaling server at join time.
//! Nonces are stateless too: `EXPIRY-HEX` + a MAC binding it to the client's address.

use std::net::SocketAddr;

use base64::Engine;
use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use sha1::Sha1;

/// How long a nonce is good for before the client is told 438 (Stale Nonce) and retries.
pub const NONCE_LIFETIME_SECONDS: u64 = 600;

/// The secret behind every credential; generated at start, never configured or logged.
#[derive(Clone)]
pub struct Secret([u8; 32]);

impl Secret {
    pub fn new(bytes: [u8; 32]) -> Self {
        Secret(bytes)
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// A credential handed to one browser (as `iceServers[].username` / `.credential`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    pub username: String,
    pub password: String,
}

/// Why a username is not acceptable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsernameProblem {
    /// Not `EXPIRY:PARTICIPANT`.
    Malformed,
    /// The expiry has passed.
    Expired,
}

/// Mints credentials and checks them.
#[derive(Debug, Clone)]
pub struct Credentials {
    secret: Secret,
    nonce_secret: Secret,
}

impl Credentials {
    pub fn new(secret: Secret, nonce_secret: Secret) -> Self {
        Credentials { secret, nonce_secret }
    }

    /// A credential for `participant` valid until `expires_unix` (seconds). `participant`
    /// is what the per-participant allocation cap counts; it must not contain `:`.
    pub fn mint(&self, participant: &str, expires_unix: u64) -> Credential {
        let username = format!("{expires_unix}:{}", participant.replace(':', "_"));
        let password = self.password(&username);
        Credential { username, password }
    }

    /// The password that belongs to `username`.
    pub fn password(&self, username: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(mac(&self.secret.0, &[username.as_bytes()]))
    }

    /// The participant a username names, if it is well formed and not expired.
    pub fn check_username<'a>(&self, username: &'a str, now_unix: u64) -> Result<&'a str, UsernameProblem> {
        let (expiry, participant) = username.split_once(':').ok_or(UsernameProblem::Malformed)?;
        let expiry: u64 = expiry.parse().map_err(|_| UsernameProblem::Malformed)?;
        if participant.is_empty() || participant.len() > 64 {
            return Err(UsernameProblem::Malformed);
        }
        if expiry < now_unix {
            return Err(UsernameProblem::Expired);
        }
        Ok(participant)
    }

    /// The long-term credential key: MD5(username ":" realm ":" password) (RFC 8489 9.2.2).
    pub fn key(&self, username: &str, realm: &str) -> [u8; 16] {
        let password = self.password(username);
        let mut hasher = Md5::new();
        hasher.update(username.as_bytes());
        hasher.update(b":");
        hasher.update(realm.as_bytes());
        hasher.update(b":");
        hasher.update(password.as_bytes());
        hasher.finalize().into()
    }

    /// A nonce for `client`, valid for [`NONCE_LIFETIME_SECONDS`].
    pub fn nonce(&self, client: SocketAddr, now_unix: u64) -> String {
        let expiry = now_unix + NONCE_LIFETIME_SECONDS;
        let tag = self.nonce_tag(client, expiry);
        format!("{expiry:016x}{tag}")
    }

    /// True when `nonce` was made by [`Self::nonce`] for this client and has not expired.
    pub fn nonce_is_fresh(&self, nonce: &str, client: SocketAddr, now_unix: u64) -> bool {
        let (Some(expiry), Some(tag)) = (nonce.get(..16), nonce.get(16..)) else { return false };
        let Ok(expiry) = u64::from_str_radix(expiry, 16) else { return false };
        expiry >= now_unix && constant_time_equal(tag.as_bytes(), self.nonce_tag(client, expiry).as_bytes())
    }

    fn nonce_tag(&self, client: SocketAddr, expiry: u64) -> String {
        let digest = mac(&self.nonce_secret.0, &[client.to_string().as_bytes(), &expiry.to_be_bytes()]);
        digest[..12].iter().map(|byte| format!("{byte:02x}")).collect()
    }
}

fn mac(key: &[u8], parts: &[&[u8]]) -> [u8; 20] {
    // HMAC takes keys of any length; the error arm is never taken.
    let Ok(mut mac) = <Hmac<Sha1> as Mac>::new_from_slice(key) else { return [0; 20] };
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

fn constant_time_equal(left: &[u8], right: &[u8]) -> bool {
    left.len() == right.len() && left.iter().zip(right).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn credentials() -> Credentials {
        Credentials::new(Secret::new([1; 32]), Secret::new([2; 32]))
    }

    #[test]
    fn minted_credentials_check_until_they_expire() {
        let credentials = credentials();
        let credential = credentials.mint("p12", 1_000);
        assert_eq!(credential.username, "1000:p12");
        assert_eq!(credentials.password(&credential.username), credential.password);
        assert_eq!(credentials.check_username(&credential.username, 1_000), Ok("p12"));
        assert_eq!(credentials.check_username(&credential.username, 1_001), Err(UsernameProblem::Expired));
        for bad in ["", "p12", "x:p12", "1000:", "-1:p"] {
            assert_eq!(credentials.check_username(bad, 0), Err(UsernameProblem::Malformed), "{bad}");
        }
    }

    #[test]
    fn another_secret_gives_another_password() {
        let other = Credentials::new(Secret::new([3; 32]), Secret::new([2; 32]));
        assert_ne!(credentials().mint("p1", 5).password, other.mint("p1", 5).password);
    }

    /// coturn's `use-auth-secret` computes the same: base64(HMAC-SHA1(secret, username)).
    #[test]
    fn password_matches_the_rest_api_formula() {
        let credentials = Credentials::new(Secret::new(*b"0123456789abcdef0123456789abcdef"), Secret::new([0; 32]));
        let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(b"0123456789abcdef0123456789abcdef").unwrap();
        mac.update(b"1700000000:p1");
        let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        assert_eq!(credentials.password("1700000000:p1"), expected);
    }

    #[test]
    fn nonces_bind_client_and_time() {
        let credentials = credentials();
        let client: SocketAddr = "10.30.1.7:50000".parse().unwrap();
        let nonce = credentials.nonce(client, 100);
        assert!(credentials.nonce_is_fresh(&nonce, client, 100 + NONCE_LIFETIME_SECONDS));
        assert!(!credentials.nonce_is_fresh(&nonce, client, 101 + NONCE_LIFETIME_SECONDS));
        assert!(!credentials.nonce_is_fresh(&nonce, "10.30.1.7:50001".parse().unwrap(), 100));
        assert!(!credentials.nonce_is_fresh("00000000ffffffffdeadbeef", client, 0));
        assert!(!credentials.nonce_is_fresh("é", client, 0));
    }
}
