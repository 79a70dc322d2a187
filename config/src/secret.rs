//! Which config keys hold secrets, and how a message about one is stripped of its value.
//!
//! A config message travels far: `lienthong check` prints it, a refused reload logs it and
//! `POST /reload` returns it. So a message about a secret key never carries the value, even
//! a wrong one: `pin = 246810` (an integer) is most likely the real PIN, typed without quotes.

/// Whether a key (the last part of a path such as `conference.room[0].chair_pin`) holds a
/// secret: a PIN, a password or password hash, a shared secret, a token or a private key's
/// text. Decided by name so that a key added later is covered without a list to update:
/// `pin`, `*_pin`, anything with `password`, `passphrase` or `secret` in it, `token`,
/// `*_token`, `psk`, `private_key`. Keys naming a *file* (`tls_key`) are paths, not secrets.
pub fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    key == "pin"
        || key.ends_with("_pin")
        || key.contains("password")
        || key.contains("passphrase")
        || key.contains("secret")
        || key == "token"
        || key.ends_with("_token")
        || key == "psk"
        || key == "private_key"
}

/// What a message says instead of a secret value.
pub const REDACTED: &str = "<not shown: secret>";

/// `message` with every backquoted fragment and every copy of `value` (the offending text,
/// quotes and whitespace trimmed) replaced by [`REDACTED`].
pub(crate) fn redact(message: &str, value: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(start) = rest.find('`') {
        out.push_str(&rest[..start]);
        match rest[start + 1..].find('`') {
            Some(length) => {
                out.push_str(REDACTED);
                rest = &rest[start + 1 + length + 1..];
            }
            // An unmatched quote: what follows may be the value.
            None => {
                out.push_str(REDACTED);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    // Messages about secrets are written never to quote the value; this catches one that
    // does without backquotes. Very short texts (a digit) would also match the fixed words
    // of a message ("expected 4 to 12 digits"), so only texts of 3 or more characters count.
    let value = value.trim().trim_matches(|c| c == '"' || c == '\'').trim();
    if value.chars().count() >= 3 {
        out = out.replace(value, REDACTED);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_keys_are_recognised_by_name() {
        for key in ["pin", "chair_pin", "password", "password_hash", "shared_secret", "secret", "token", "api_token"] {
            assert!(is_secret_key(key), "{key}");
        }
        for key in ["tls_key", "tls_cert", "login", "name", "pinned", "sites", "listen", "hostname"] {
            assert!(!is_secret_key(key), "{key}");
        }
    }

    #[test]
    fn redact_removes_quoted_values_and_copies_of_the_value() {
        assert_eq!(
            redact("invalid type: integer `246810`, expected a string", "246810"),
            format!("invalid type: integer {REDACTED}, expected a string")
        );
        assert_eq!(redact("bad 98765 here", "\"98765\""), format!("bad {REDACTED} here"));
        assert_eq!(redact("unterminated `quote 1", "1"), format!("unterminated {REDACTED}"));
        assert_eq!(redact("expected 4 to 12 digits", "4"), "expected 4 to 12 digits");
    }
}
