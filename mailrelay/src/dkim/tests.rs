use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt as _;
use std::sync::Mutex;

use mail_auth::common::parse::TxtRecordParser as _;
use mail_auth::common::verify::DomainKey;
use mail_auth::{AuthenticatedMessage, DkimResult, MessageAuthenticator, ResolverCache, Txt};

use super::*;

const DOMAIN: &str = "ninhthuan.gov.vn";
const DAY: u64 = 86_400;
const NOW: u64 = 1_796_083_200; // 2026-12-01

/// A TXT "resolver" that answers only from the records lienthong publishes.
#[derive(Default)]
pub(crate) struct Published(Mutex<HashMap<Box<str>, Txt>>);

impl Published {
    pub(crate) fn from_lines(lines: &[String]) -> Self {
        let published = Self::default();
        for line in lines {
            let (name, rest) = line.split_once(' ').unwrap();
            let text: String = rest.split('"').skip(1).step_by(2).collect();
            let key = DomainKey::parse(text.as_bytes()).unwrap();
            published.0.lock().unwrap().insert(name.into(), Txt::DomainKey(Arc::new(key)));
        }
        published
    }
}

impl ResolverCache<Box<str>, Txt> for Published {
    fn get<Q>(&self, name: &Q) -> Option<Txt>
    where
        Box<str>: std::borrow::Borrow<Q>,
        Q: std::hash::Hash + Eq + ?Sized,
    {
        self.0.lock().unwrap().get(name).cloned()
    }
    fn remove<Q>(&self, name: &Q) -> Option<Txt>
    where
        Box<str>: std::borrow::Borrow<Q>,
        Q: std::hash::Hash + Eq + ?Sized,
    {
        self.0.lock().unwrap().remove(name)
    }
    fn insert(&self, key: Box<str>, value: Txt, _: std::time::Instant) {
        self.0.lock().unwrap().insert(key, value);
    }
}

/// Every DKIM result of `message` against the published records, with the selector.
pub(crate) async fn verify(message: &[u8], lines: &[String]) -> Vec<(String, bool)> {
    use hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
    // A resolver that cannot answer: every key must come from `Published`.
    let mut server = NameServerConfig::udp_and_tcp("127.0.0.1".parse().unwrap());
    for connection in &mut server.connections {
        connection.port = 9;
    }
    let authenticator =
        MessageAuthenticator::new(ResolverConfig::from_name_servers(vec![server]), ResolverOpts::default()).unwrap();
    let published = Published::from_lines(lines);
    let parsed = AuthenticatedMessage::parse(message).unwrap();
    let outputs = authenticator.verify_dkim(mail_auth::Parameters::new(&parsed).with_txt_cache(&published)).await;
    outputs
        .iter()
        .map(|output| {
            let selector = output.signature().map(|signature| signature.s.clone()).unwrap_or_default();
            (selector, matches!(output.result(), DkimResult::Pass))
        })
        .collect()
}

fn message(from: &str) -> Vec<u8> {
    format!(
        "Received: from laptop ([10.20.3.4])\r\n\tby mail.ninhthuan.gov.vn (lienthong) with ESMTPSA id ABC;\r\n\tTue, 1 Dec 2026 08:00:00 +0000\r\n\
         Message-ID: <ABC@mail.ninhthuan.gov.vn>\r\nDate: Tue, 1 Dec 2026 08:00:00 +0000\r\n\
         From: \"Văn thư\" <{from}>\r\nTo: <so-tc@binhthuan.gov.vn>\r\nSubject: =?utf-8?q?Gi=E1=BA=A5y_m=E1=BB=9Di?=\r\n\r\n\
         Kính gửi các đơn vị,\r\n\r\n.dòng có dấu chấm\r\n"
    )
    .into_bytes()
}

fn domains() -> Vec<String> {
    vec![DOMAIN.to_owned()]
}

#[tokio::test]
async fn both_signatures_verify_against_the_published_records() {
    let state = tempfile::tempdir().unwrap();
    let signer = Signer::open(state.path(), &domains(), DAY, NOW).unwrap();
    let (signed, outcome) = signer.sign(message("VanThu@NinhThuan.gov.vn"), true);
    let outcome = outcome.unwrap();
    assert_eq!(outcome.domain, DOMAIN);
    assert_eq!(outcome.selectors, ["lt20261201a-ed".to_owned(), "lt20261201a-rsa".to_owned()]);
    let text = String::from_utf8(signed.clone()).unwrap();
    let (received, rest) = text.split_at(text.find("DKIM-Signature:").unwrap());
    assert!(received.starts_with("Received: from laptop") && received.ends_with("+0000\r\n"), "{text}");
    assert!(rest.starts_with("DKIM-Signature: v=1; a=ed25519-sha256;"), "{text}");
    assert!(text.contains("a=rsa-sha256"));
    // No folding whitespace between a `b=` value and its `;` (strict verifiers fail it).
    assert!(!text.contains("\t;"), "{text}");
    let records = records(state.path(), &domains(), DAY, NOW);
    assert_eq!(records.len(), 2);
    let results = verify(&signed, &records).await;
    assert_eq!(results, vec![("lt20261201a-ed".into(), true), ("lt20261201a-rsa".into(), true)]);

    // A header added on the way (a second From:) or a changed body breaks both.
    let forged = [b"From: <giamdoc@ninhthuan.gov.vn>\r\n".as_slice(), &signed].concat();
    assert!(verify(&forged, &records).await.iter().all(|(_, pass)| !pass));
    let mut changed = signed.clone();
    let last = changed.len() - 3;
    changed[last] ^= 1;
    assert!(verify(&changed, &records).await.iter().all(|(_, pass)| !pass));
}

#[test]
fn only_trusted_mail_from_a_local_domain_is_signed() {
    let state = tempfile::tempdir().unwrap();
    let signer = Signer::open(state.path(), &domains(), DAY, NOW).unwrap();
    let original = message("vanthu@ninhthuan.gov.vn");
    assert_eq!(signer.sign(original.clone(), false), (original.clone(), None));
    let foreign = message("a@binhthuan.gov.vn");
    assert_eq!(signer.sign(foreign.clone(), true), (foreign, None));
    let sub = message("a@sub.ninhthuan.gov.vn");
    assert_eq!(signer.sign(sub.clone(), true), (sub, None));
}

#[tokio::test]
async fn keys_survive_restart_with_private_permissions() {
    let state = tempfile::tempdir().unwrap();
    let first = Signer::open(state.path(), &domains(), DAY, NOW).unwrap();
    let (signed, _) = first.sign(message("vanthu@ninhthuan.gov.vn"), true);
    drop(first);
    let records_before = records(state.path(), &domains(), DAY, NOW);
    let again = Signer::open(state.path(), &domains(), DAY, NOW + 60).unwrap();
    assert_eq!(records(state.path(), &domains(), DAY, NOW + 60), records_before);
    let (signed_again, outcome) = again.sign(message("vanthu@ninhthuan.gov.vn"), true);
    assert_eq!(outcome.unwrap().selectors[0], "lt20261201a-ed");
    for message in [signed, signed_again] {
        assert!(verify(&message, &records_before).await.iter().all(|(_, pass)| *pass));
    }
    let dir = store::domain_dir(state.path(), DOMAIN);
    for directory in [dir.clone(), dir.parent().unwrap().to_owned()] {
        assert_eq!(std::fs::metadata(&directory).unwrap().permissions().mode() & 0o777, 0o700);
    }
    let files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|entry| entry.unwrap().path()).collect();
    assert_eq!(files.len(), 3, "{files:?}");
    for file in files {
        assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600, "{}", file.display());
    }
}

#[tokio::test]
async fn rotation_signs_with_new_keys_and_publishes_both_until_in_flight_mail_is_gone() {
    let state = tempfile::tempdir().unwrap();
    let signer = Signer::open(state.path(), &domains(), DAY, NOW).unwrap();
    let (old_mail, _) = signer.sign(message("vanthu@ninhthuan.gov.vn"), true);
    let rotated = signer.rotate(DOMAIN, NOW + 10).unwrap();
    assert_eq!(rotated.current, "lt20261201b");
    assert_eq!(rotated.retiring, vec![Retiring { selector: "lt20261201a".into(), retired_unix: NOW + 10 }]);
    let (new_mail, outcome) = signer.sign(message("vanthu@ninhthuan.gov.vn"), true);
    assert_eq!(outcome.unwrap().selectors, ["lt20261201b-ed".to_owned(), "lt20261201b-rsa".to_owned()]);

    let both = records(state.path(), &domains(), DAY, NOW + 20);
    assert_eq!(both.len(), 4);
    assert_eq!(verify(&new_mail, &both).await, vec![("lt20261201b-ed".into(), true), ("lt20261201b-rsa".into(), true)]);
    assert!(verify(&old_mail, &both).await.iter().all(|(_, pass)| *pass));

    // Past the in-flight time the old selector is no longer published, and a reload deletes it.
    let later = NOW + 10 + DAY;
    let current_only = records(state.path(), &domains(), DAY, later);
    assert_eq!(current_only.len(), 2);
    assert!(current_only.iter().all(|line| line.starts_with("lt20261201b-")));
    signer.reload(&domains(), DAY, later).unwrap();
    let dir = store::domain_dir(state.path(), DOMAIN);
    assert!(!dir.join("lt20261201a.rsa.pk8").exists());
    assert!(store::read_selectors(&dir).unwrap().unwrap().retiring.is_empty());
    assert!(matches!(signer.rotate("binhthuan.gov.vn", later), Err(Error::NotLocal(_))));
}

#[test]
fn long_records_are_split_into_dns_strings() {
    let line = record_line("s-rsa", DOMAIN, &"x".repeat(400));
    assert!(line.starts_with("s-rsa._domainkey.ninhthuan.gov.vn. 3600 IN TXT \""));
    let strings: Vec<&str> = line.split('"').skip(1).step_by(2).collect();
    assert_eq!(strings.iter().map(|part| part.len()).collect::<Vec<_>>(), vec![255, 145]);
    assert_eq!(date_stamp(NOW), "20261201");
}
