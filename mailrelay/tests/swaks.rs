//! swaks (the operator's SMTP test tool) against the relay: what an operator would type.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use common::{Ports, Sink, certificates, config, wait_until};
use lienthong_mailrelay::{MailService, StaticLookup};

/// Runs swaks with `arguments`; returns (success, transcript).
async fn swaks(arguments: Vec<String>) -> (bool, String) {
    let output = tokio::process::Command::new("swaks")
        .args(&arguments)
        .args(["--timeout", "10"])
        .output()
        .await
        .expect("swaks is not installed: `apt-get install -y swaks` (CI installs it)");
    let transcript = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(
        !transcript.contains("requires Net::SSLeay"),
        "swaks has no TLS support: `apt-get install -y libnet-ssleay-perl libio-socket-ssl-perl` (CI installs them)"
    );
    (output.status.success(), transcript)
}

fn arguments(text: &str) -> Vec<String> {
    text.split_whitespace().map(str::to_owned).collect()
}

#[tokio::test]
async fn swaks_sessions() {
    let state = tempfile::tempdir().unwrap();
    let (sink, sink_address) = Sink::start().await;
    let ports = Ports::new();
    let lookup = StaticLookup { routes: HashMap::from([("example.org".to_owned(), vec![sink_address])]) };
    let service = MailService::start_with_lookup(
        config(state.path(), &ports, sink_address, ""),
        certificates(),
        Arc::new(lookup),
    )
    .await
    .unwrap();

    // Inbound to a local domain, pipelined, with STARTTLS.
    let (ok, transcript) = swaks(arguments(&format!(
        "--server 127.0.0.1:{} --from ngoai@example.org --to vanthu@ninhthuan.gov.vn --pipeline --tls",
        ports.mx
    )))
    .await;
    assert!(ok, "{transcript}");
    assert!(transcript.contains("queued as"), "{transcript}");

    // Relaying for a stranger is refused.
    let (ok, transcript) =
        swaks(arguments(&format!("--server 127.0.0.1:{} --from ngoai@example.org --to someone@example.org", ports.mx)))
            .await;
    assert!(!ok && transcript.contains("554 5.7.1"), "{transcript}");

    // Submission with STARTTLS and AUTH LOGIN relays to a foreign domain.
    let (ok, transcript) = swaks(arguments(&format!(
        "--server 127.0.0.1:{} --from vanthu@ninhthuan.gov.vn --to doitac@example.org --tls --auth LOGIN --auth-user vanthu@ninhthuan.gov.vn --auth-password mat-khau-dung",
        ports.submission
    )))
    .await;
    assert!(ok, "{transcript}");
    assert!(transcript.contains("235 2.7.0"), "{transcript}");

    // Implicit TLS with a wrong password.
    let (ok, transcript) = swaks(arguments(&format!(
        "--server 127.0.0.1:{} --from vanthu@ninhthuan.gov.vn --to doitac@example.org --tlsc --auth PLAIN --auth-user vanthu@ninhthuan.gov.vn --auth-password sai",
        ports.submissions
    )))
    .await;
    assert!(!ok && transcript.contains("535 5.7.8"), "{transcript}");

    assert!(wait_until(Duration::from_secs(10), || sink.count() == 2).await, "{:?}", sink.all());
    service.shutdown().await;
}
