//! kill -9 while messages arrive and are being delivered; after a restart every message that
//! got its 250 arrives at the mailbox server at least once, and has its audit line.

mod common;

use std::collections::HashSet;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{Ports, Sink, config_text, converse, wait_until};

const MESSAGES: usize = 120;
const SESSIONS: usize = 6;

fn spawn_relay(config: &std::path::Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_mailrelay-test-server"))
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the test server binary starts")
}

async fn wait_for_port(port: u16) -> bool {
    for _ in 0..500 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// Queue ids of every acceptance line in the audit files.
fn audited_queue_ids(directory: &std::path::Path) -> HashSet<String> {
    let mut ids = HashSet::new();
    for entry in std::fs::read_dir(directory).expect("the audit directory exists") {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        for line in text.lines() {
            let Ok(record) = serde_json::from_str::<serde_json::Value>(line) else { continue };
            if record["event"] == "accepted" {
                ids.insert(record["queue_id"].as_str().unwrap_or_default().to_owned());
            }
        }
    }
    ids
}

/// Kills the child by its PID even if the test fails half-way.
struct Reaper(Child);

impl Drop for Reaper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_no_accepted_message() {
    let state = tempfile::tempdir().unwrap();
    let (sink, sink_address) = Sink::start().await;
    sink.delay_milliseconds.store(50, Ordering::Relaxed);
    let ports = Ports::new();
    let config_path = state.path().join("lienthong.toml");
    std::fs::write(&config_path, config_text(state.path(), &ports, sink_address, "")).unwrap();

    let mut relay = Reaper(spawn_relay(&config_path));
    assert!(wait_for_port(ports.mx).await, "the relay did not start");

    let accepted = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sent = Arc::new(AtomicUsize::new(0));
    let mut senders = Vec::new();
    for session in 0..SESSIONS {
        let accepted = accepted.clone();
        let sent = sent.clone();
        let port = ports.mx;
        senders.push(tokio::spawn(async move {
            for number in (session..MESSAGES).step_by(SESSIONS) {
                let script = format!(
                    "EHLO crash\r\nMAIL FROM:<crash@example.org>\r\nRCPT TO:<hopthu@ninhthuan.gov.vn>\r\nDATA\r\nFrom: <crash@example.org>\r\nSubject: thu so {number}\r\n\r\nNoi dung {number}\r\n.\r\nQUIT\r\n"
                );
                let transcript = converse(port, script.as_bytes(), 6).await;
                for reply in transcript.split("queued as ").skip(1) {
                    let id: String = reply.chars().take_while(char::is_ascii_alphanumeric).collect();
                    accepted.lock().unwrap().push((number, id));
                }
                sent.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    // Kill in the middle: messages still arriving, others queued or being delivered.
    assert!(wait_until(Duration::from_secs(30), || sent.load(Ordering::Relaxed) >= MESSAGES / 2).await);
    relay.0.kill().unwrap();
    relay.0.wait().unwrap();
    for sender in senders {
        sender.await.unwrap();
    }
    let accepted_ids: HashSet<String> = accepted.lock().unwrap().iter().map(|(_, id)| id.clone()).collect();
    let accepted: HashSet<usize> = accepted.lock().unwrap().iter().map(|(number, _)| *number).collect();
    // Read before the restart: what the killed process left on disk.
    let audited = audited_queue_ids(&state.path().join("mail").join("audit"));
    let unaudited: Vec<&String> = accepted_ids.difference(&audited).collect();
    assert!(unaudited.is_empty(), "accepted without an audit line: {unaudited:?}");
    assert!(accepted.len() >= MESSAGES / 3, "too few messages accepted before the kill: {}", accepted.len());
    let delivered_before = sink.count();
    // Otherwise the kill did not happen during delivery and the test proves little.
    assert!(delivered_before < accepted.len(), "everything was delivered before the kill");

    let _restarted = Reaper(spawn_relay(&config_path));
    assert!(wait_for_port(ports.mx).await, "the relay did not restart");
    let arrived = || -> HashSet<usize> {
        sink.all()
            .iter()
            .filter_map(|message| {
                let text = String::from_utf8_lossy(&message.content).into_owned();
                let subject = text.lines().find_map(|line| line.strip_prefix("Subject: thu so "))?.trim().to_owned();
                subject.parse().ok()
            })
            .collect()
    };
    let complete = wait_until(Duration::from_secs(60), || accepted.is_subset(&arrived())).await;
    let arrived_now = arrived();
    let missing: Vec<&usize> = accepted.difference(&arrived_now).collect();
    assert!(complete, "accepted but never delivered: {missing:?} (delivered before the kill: {delivered_before})");
}
