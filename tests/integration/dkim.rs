//! DKIM end to end: mail from a local domain leaves signed twice (Ed25519, RSA), both
//! signatures verify against the records lienthong's own DNS serves (over real DNS queries)
//! with mail-auth and with dkimpy; a rotation switches new mail to the new selector while
//! both are served.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::common::{Instance, Ports, run_command};

const DOMAIN: &str = "ninhthuan.gov.vn";

/// A mailbox server stand-in: accepts plain SMTP and hands every message over `messages`.
pub(crate) fn capture_server() -> (SocketAddr, mpsc::Receiver<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let (sender, messages) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let sender = sender.clone();
            std::thread::spawn(move || {
                let _ = serve_capture(stream, &sender);
            });
        }
    });
    (address, messages)
}

fn serve_capture(stream: TcpStream, messages: &mpsc::Sender<Vec<u8>>) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    writer.write_all(b"220 mailbox.ninhthuan.gov.vn ESMTP\r\n")?;
    let mut line = Vec::new();
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            return Ok(());
        }
        let command = String::from_utf8_lossy(&line).to_ascii_uppercase();
        if command.starts_with("EHLO") {
            writer.write_all(b"250-mailbox.ninhthuan.gov.vn\r\n250 8BITMIME\r\n")?;
        } else if command.starts_with("DATA") {
            writer.write_all(b"354 go ahead\r\n")?;
            let mut message = Vec::new();
            loop {
                line.clear();
                reader.read_until(b'\n', &mut line)?;
                if line == b".\r\n" || line.is_empty() {
                    break;
                }
                message.extend_from_slice(line.strip_prefix(b".").unwrap_or(&line));
            }
            writer.write_all(b"250 2.0.0 stored\r\n")?;
            let _ = messages.send(message);
        } else if command.starts_with("QUIT") {
            writer.write_all(b"221 bye\r\n")?;
            return Ok(());
        } else {
            writer.write_all(b"250 ok\r\n")?;
        }
    }
}

/// Sends one message over plain SMTP (the test runs in `relay_from`).
pub(crate) fn send(port: u16, subject: &str) {
    let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    let mut expect = |code: &str| loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        assert!(line.starts_with(code), "expected {code}, got {line:?}");
        if line.as_bytes().get(3) == Some(&b' ') {
            break;
        }
    };
    expect("220");
    for (command, code) in [
        ("EHLO laptop.ninhthuan.gov.vn", "250"),
        ("MAIL FROM:<vanthu@ninhthuan.gov.vn>", "250"),
        ("RCPT TO:<lanhdao@ninhthuan.gov.vn>", "250"),
        ("DATA", "354"),
    ] {
        writer.write_all(format!("{command}\r\n").as_bytes()).unwrap();
        expect(code);
    }
    let body = format!(
        "Message-ID: <{}.{}@laptop.ninhthuan.gov.vn>\r\nFrom: \"Văn thư\" <vanthu@ninhthuan.gov.vn>\r\nTo: <lanhdao@ninhthuan.gov.vn>\r\nSubject: {subject}\r\n\
         MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nKính gửi lãnh đạo,\r\n..dòng chấm\r\n.\r\n",
        std::process::id(),
        subject.len()
    );
    writer.write_all(body.as_bytes()).unwrap();
    expect("250");
    writer.write_all(b"QUIT\r\n").unwrap();
}

/// mail-auth's verdict per signature, keys fetched from lienthong's DNS on `dns_port`.
fn verify_with_mail_auth(message: &[u8], dns_port: u16) -> Vec<(String, bool)> {
    use mail_auth::hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let mut server = NameServerConfig::udp_and_tcp("127.0.0.1".parse().unwrap());
        for connection in &mut server.connections {
            connection.port = dns_port;
        }
        let authenticator = mail_auth::MessageAuthenticator::new(
            ResolverConfig::from_name_servers(vec![server]),
            ResolverOpts::default(),
        )
        .unwrap();
        let parsed = mail_auth::AuthenticatedMessage::parse(message).unwrap();
        authenticator
            .verify_dkim(&parsed)
            .await
            .iter()
            .map(|output| {
                let selector = output.signature().map(|signature| signature.s.clone()).unwrap_or_default();
                (selector, matches!(output.result(), mail_auth::DkimResult::Pass))
            })
            .collect()
    })
}

/// dkimpy's verdict lines (`pass SELECTOR`), keys fetched from lienthong's DNS.
fn verify_with_dkimpy(message: &[u8], dns_port: u16) -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/dkim_verify.py");
    let mut child = Command::new("python3")
        .arg(script)
        .arg(dns_port.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 (scripts/test.sh installs it with dkimpy)");
    child.stdin.take().unwrap().write_all(message).unwrap();
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "dkimpy refused the message:\n{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

fn dig(port: u16, name: &str, record_type: &str) -> String {
    let output = Command::new("dig")
        .args(["@127.0.0.1", "-p", &port.to_string(), "+short", "+time=2", "+tries=1", name, record_type])
        .output()
        .expect("dig (package bind9-dnsutils; scripts/test.sh installs it)");
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

fn selectors_of(message: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(message)
        .split("DKIM-Signature:")
        .skip(1)
        .filter_map(|signature| signature.split("s=").nth(1)?.split(';').next().map(str::to_owned))
        .collect()
}

#[test]
fn signed_mail_verifies_against_lienthongs_dns_and_survives_a_rotation() {
    let (mailbox, messages) = capture_server();
    let ports = Ports::new();
    let config = ports
        .config(true, true, false)
        .replace("[mail]\nenabled = true\n", "[mail]\nenabled = true\nrelay_from = [\"127.0.0.1/32\"]\n")
        + &format!(
            "\n[[mail.domain]]\nname = \"{DOMAIN}\"\ndeliver_to = \"{mailbox}\"\n\n[[dns.zone]]\nname = \"{DOMAIN}\"\nrecords = []\n"
        );
    let instance = Instance::start(&config);

    send(ports.mx, "Giấy mời họp giao ban");
    let first = messages.recv_timeout(Duration::from_secs(60)).expect("delivered to the mailbox server");
    let old = selectors_of(&first);
    assert_eq!(old.len(), 2, "{}", String::from_utf8_lossy(&first));
    assert!(old[0].ends_with("-ed") && old[1].ends_with("-rsa"), "{old:?}");
    let results = verify_with_mail_auth(&first, ports.dns);
    assert_eq!(results, vec![(old[0].clone(), true), (old[1].clone(), true)]);
    let dkimpy = verify_with_dkimpy(&first, ports.dns);
    assert_eq!(dkimpy, format!("pass {}\npass {}\n", old[0], old[1]));

    let (code, stdout, stderr) =
        run_command(instance.dir.path(), &["mail", "dkim", "rotate", DOMAIN, "--config", "lienthong.toml"], "");
    assert_eq!(code, 0, "{stdout}{stderr}");
    send(ports.mx, "Họp khẩn");
    let second = messages.recv_timeout(Duration::from_secs(60)).expect("delivered after the rotation");
    let new = selectors_of(&second);
    assert!(new.iter().all(|selector| !old.contains(selector)), "{old:?} {new:?}");
    assert!(stdout.contains(&new[0]) && stdout.contains(&new[1]), "{stdout}");
    assert_eq!(verify_with_mail_auth(&second, ports.dns), vec![(new[0].clone(), true), (new[1].clone(), true)]);
    verify_with_dkimpy(&second, ports.dns);
    // The old selector stays published: mail signed before the rotation still verifies.
    assert!(verify_with_mail_auth(&first, ports.dns).iter().all(|(_, pass)| *pass));
    for selector in old.iter().chain(&new) {
        let answer = dig(ports.dns, &format!("{selector}._domainkey.{DOMAIN}"), "TXT");
        assert!(answer.starts_with("\"v=DKIM1; k="), "{selector}: {answer}");
    }
    let (code, records, _) = run_command(instance.dir.path(), &["dns", "records", "--config", "lienthong.toml"], "");
    assert_eq!(code, 0);
    for selector in old.iter().chain(&new) {
        assert!(records.contains(&format!("{selector}._domainkey.{DOMAIN}.")), "{selector} not in:\n{records}");
    }

    let (code, _, stderr) = run_command(
        instance.dir.path(),
        &["mail", "dkim", "rotate", "binhthuan.gov.vn", "--config", "lienthong.toml"],
        "",
    );
    assert_ne!(code, 0);
    assert!(stderr.contains("not a local mail domain"), "{stderr}");
    instance.stop();
}
