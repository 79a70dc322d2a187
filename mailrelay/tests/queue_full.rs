//! The queue on a full disk (a 1 MiB tmpfs, as root): clients hear 4xx once nothing more fits,
//! every message that got its 250 is delivered after a restart, and no 250 is given for a
//! message whose bytes did not reach the disk.

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::{Ports, Sink, certificates, codes, config, converse, free_port, wait_until};
use lienthong_mailrelay::MailService;

/// Unmounts the tmpfs even if the test fails half-way.
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| status.lines().find(|line| line.starts_with("Uid:")).map(|line| line.to_owned()))
        .is_some_and(|line| line.split_whitespace().nth(1) == Some("0"))
}

async fn send(port: u16, subject: &str) -> String {
    let body = "Kinh gui cac dong chi, day la noi dung giay moi hop giao ban.\r\n".repeat(1500);
    let script = format!(
        "EHLO test\r\nMAIL FROM:<vanthu@ninhthuan.gov.vn>\r\nRCPT TO:<ubnd@ninhthuan.gov.vn>\r\nDATA\r\nFrom: <vanthu@ninhthuan.gov.vn>\r\nSubject: {subject}\r\n\r\n{body}.\r\nQUIT\r\n"
    );
    converse(port, script.as_bytes(), 7).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_gets_4xx_and_every_250_survives_a_restart() {
    if !is_root() {
        eprintln!("not root: cannot mount a tmpfs; the fault-injection unit tests cover ENOSPC");
        return;
    }
    let holder = tempfile::tempdir().unwrap();
    let state = holder.path().join("state");
    std::fs::create_dir(&state).unwrap();
    let mounted = Command::new("mount").args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"]).arg(&state).status().unwrap();
    assert!(mounted.success(), "mount -t tmpfs failed (CI runs as root with mount rights)");
    let _mount = Mount(state.clone());

    // First run: the mailbox server is down, so everything stays queued until the disk is full.
    let ports = Ports::new();
    let nowhere: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let trusted = r#"relay_from = ["127.0.0.1/32"]"#;
    let service = MailService::start(config(&state, &ports, nowhere, trusted), certificates()).await.unwrap();
    let mut accepted = HashSet::new();
    let mut refused = 0;
    for index in 0..40 {
        let subject = format!("giay moi {index}");
        let transcript = send(ports.mx, &subject).await;
        let replies = codes(&transcript);
        match replies.get(5).map(String::as_str) {
            Some("250") => {
                accepted.insert(subject);
            }
            Some(code) if code.starts_with('4') => refused += 1,
            other => panic!("unexpected reply {other:?} to message {index}: {transcript}"),
        }
        if refused >= 3 {
            break;
        }
    }
    assert!(!accepted.is_empty() && refused >= 3, "accepted {}, refused {refused}", accepted.len());
    service.shutdown().await;

    // Second run, same full disk: every acknowledged message reaches the mailbox server.
    let (sink, sink_address) = Sink::start().await;
    let ports = Ports::new();
    let service = MailService::start(config(&state, &ports, sink_address, trusted), certificates()).await.unwrap();
    let delivered = || {
        sink.all()
            .iter()
            .filter_map(|message| {
                let text = String::from_utf8_lossy(&message.content).into_owned();
                text.lines().find_map(|line| line.strip_prefix("Subject: ").map(str::to_owned))
            })
            .collect::<HashSet<String>>()
    };
    let all_there = wait_until(Duration::from_secs(30), || accepted.is_subset(&delivered())).await;
    assert!(all_there, "acknowledged {accepted:?}, delivered {:?}", delivered());
    service.shutdown().await;
}
