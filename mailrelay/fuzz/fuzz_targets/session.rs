//! Arbitrary bytes into an SMTP session (command parser, AUTH, DATA and BDAT readers):
//! it must never panic, and every step must end in a reply, a request to the driver or a close.

#![no_main]

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use lienthong_mailrelay::session::{Action, AuthOutcome, Listener, Policy, RecipientStatus, Session, TlsInfo};

fuzz_target!(|data: &[u8]| {
    let policy = Arc::new(Policy {
        hostname: "mail.ninhthuan.gov.vn".into(),
        max_message_size: 4096,
        max_recipients: 5,
        max_errors: 20,
        local_domains: HashSet::from(["ninhthuan.gov.vn".to_owned()]),
        relay_from: Vec::new(),
        users: HashMap::from([("vanthu@ninhthuan.gov.vn".to_owned(), vec!["vanthu@ninhthuan.gov.vn".to_owned()])]),
        max_connections_per_client: 50,
        memory: lienthong_mailrelay::session::memory::MemoryBudget::new(usize::MAX),
        limits: Arc::new(lienthong_mailrelay::limits::Limits::with_clock(Box::new(std::time::Instant::now))),
        recipients: HashMap::new(),
    });
    let tls = (data.first().copied().unwrap_or(0) & 1 == 1)
        .then(|| TlsInfo { protocol: "TLSv1.3".into(), cipher: "TLS13_AES_128_GCM_SHA256".into() });
    let mut session = Session::new(policy, Listener::Submission, "203.0.113.9".parse().unwrap(), tls, true);
    // Feed in uneven pieces so every buffer boundary gets exercised.
    for piece in data.chunks(7) {
        session.receive(piece);
        for _ in 0..64 {
            match session.advance() {
                Action::NeedInput | Action::StartTls => break,
                Action::Close => return,
                Action::Authenticate { login, .. } => session.authentication_result(&login, AuthOutcome::Accepted),
                Action::Enqueue(_) => session.enqueue_result(Ok("Q".into())),
                Action::VerifyRecipient(_) => session.verification_result(RecipientStatus::Unknown),
            }
        }
        session.take_output();
    }
});
