//! `lienthong mail trace`: after a message went through the real binary, its audit lines
//! tell the story by Message-ID and by address; `--since` and bad input behave.

use std::time::Duration;

use crate::common::{Instance, Ports, run_command, wait_until};
use crate::dkim::{capture_server, send};

#[test]
fn trace_shows_acceptance_and_delivery_of_a_message() {
    let (mailbox, messages) = capture_server();
    let ports = Ports::new();
    let config = ports
        .config(false, true, false)
        .replace("[mail]\nenabled = true\n", "[mail]\nenabled = true\nrelay_from = [\"127.0.0.1/32\"]\n")
        + &format!("\n[[mail.domain]]\nname = \"ninhthuan.gov.vn\"\ndeliver_to = \"{mailbox}\"\n");
    let instance = Instance::start(&config);
    send(ports.mx, "Giấy mời họp giao ban");
    let delivered = messages.recv_timeout(Duration::from_secs(60)).expect("delivered to the mailbox server");
    let text = String::from_utf8_lossy(&delivered).into_owned();
    let message_id = text
        .lines()
        .find_map(|line| line.strip_prefix("Message-ID: "))
        .expect("the relay adds a Message-ID")
        .trim()
        .to_owned();

    let trace = |args: &[&str]| {
        let mut all = vec!["mail", "trace"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--config", "lienthong.toml"]);
        run_command(instance.dir.path(), &all, "")
    };
    // The attempt line is written without waiting for its flush: poll for it.
    let mut story = String::new();
    let found = wait_until(Duration::from_secs(20), || {
        story = trace(&[&message_id]).1;
        story.contains("delivered")
    });
    assert!(found.is_ok(), "no delivery in the trace:\n{story}");
    for expected in [
        "accepted",
        "from 127.0.0.1",
        "helo laptop.ninhthuan.gov.vn",
        "sender      <vanthu@ninhthuan.gov.vn>",
        "recipient   <lanhdao@ninhthuan.gov.vn>",
        &format!("message-id  {message_id}"),
        "dkim        signed d=ninhthuan.gov.vn",
        "<lanhdao@ninhthuan.gov.vn> via ",
        ": 250 2.0.0 stored",
    ] {
        assert!(story.contains(expected), "{expected:?} missing from:\n{story}");
    }
    assert!(!story.contains("Kính gửi"), "the body is never in the audit trail:\n{story}");

    let (code, by_address, _) = trace(&["LanhDao@NinhThuan.gov.vn"]);
    assert_eq!((code, by_address.matches("\nmessage ").count() + 1), (0, 1), "{by_address}");
    let bare = message_id.trim_start_matches('<').trim_end_matches('>').to_owned();
    assert_eq!(trace(&[&bare]).1, story);

    let (code, stdout, stderr) = trace(&["lanhdao@ninhthuan.gov.vn", "--since", "2999-01-01"]);
    assert_eq!((code, stdout.as_str()), (1, ""), "{stderr}");
    assert!(stderr.contains("no accepted message matches"), "{stderr}");
    let (code, _, stderr) = trace(&["lanhdao@ninhthuan.gov.vn", "--since", "yesterday"]);
    assert_ne!(code, 0);
    assert!(stderr.contains("expected a UTC day as YYYY-MM-DD"), "{stderr}");

    for entry in std::fs::read_dir(instance.dir.path().join("state/mail/audit")).unwrap() {
        let body = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        assert!(!body.contains("Kính gửi") && !body.contains("dòng chấm"), "a body in the audit file");
    }
}
