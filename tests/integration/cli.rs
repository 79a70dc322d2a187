//! The one-shot commands: check, default-config, hash-password.

use argon2::PasswordVerifier;

use crate::common::run_command;

#[test]
fn default_config_is_the_example_file_and_passes_check() {
    let dir = tempfile::tempdir().unwrap();
    let (code, printed, _) = run_command(dir.path(), &["default-config"], "");
    assert_eq!(code, 0);
    let example =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/lienthong.example.toml")).unwrap();
    assert_eq!(printed, example, "`lienthong default-config` must print config/lienthong.example.toml");
    std::fs::write(dir.path().join("default.toml"), &printed).unwrap();
    let (code, stdout, stderr) = run_command(dir.path(), &["check", "--config", "default.toml"], "");
    assert_eq!(code, 0, "default config fails check: {stderr}");
    assert!(stdout.starts_with("default.toml: ok\nconference ports"), "{stdout}");
    assert!(stdout.contains("TCP 127.0.0.1:8080  page, signaling, TURN over TCP"), "{stdout}");
    assert!(stdout.contains("UDP 127.0.0.1:10000  media"), "{stdout}");
    assert!(stderr.is_empty(), "{stderr}");
}

#[test]
fn check_warns_when_browsers_would_refuse_the_media_port() {
    let dir = tempfile::tempdir().unwrap();
    let config = "[server]\naddresses = [\"10.20.0.5\"]\n\n[conference]\nlisten = \"10.20.0.5:443\"\ntls = true\nmedia_port = 443\n";
    std::fs::write(dir.path().join("m.toml"), config).unwrap();
    let (code, stdout, stderr) = run_command(dir.path(), &["check", "--config", "m.toml"], "");
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("TCP 10.20.0.5:443  page, signaling, TURN over TLS and TCP"), "{stdout}");
    assert!(
        stderr.contains("warning: conference.media_port: browsers refuse media candidates 10.20.0.5:443 (ports 80 and 443 are refused on private addresses)"),
        "{stderr}"
    );
}

#[test]
fn check_prints_every_problem_with_position_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let config = "\
[server]
hostname = \"hub ninhthuan\"
addresses = [\"10.20.0.5\", \"not-an-ip\"]

[admin]
listen = \"0.0.0.0:9090\"

[[mail.domain]]
name = \"ninhthuan.gov.vn\"

[[conference.room]]
name = \"giao-ban\"
pin = \"246810\"
chair_pin = \"246810\"
sites = [\"UBND tỉnh\", \"Huyện A\", \"Huyện A\"]
";
    std::fs::write(dir.path().join("bad.toml"), config).unwrap();
    let (code, stdout, stderr) = run_command(dir.path(), &["check", "--config", "bad.toml"], "");
    assert_eq!(code, 2, "stdout: {stdout}\nstderr: {stderr}");
    let expected = [
        "bad.toml:2:12: server.hostname: `hub ninhthuan` contains ` ` (expected ASCII letters, digits, `-` or `_`; write IDN names in their xn-- form)",
        "bad.toml:3:27: server.addresses[1]: `not-an-ip` is not an IP address (expected e.g. 10.20.0.5 or 2001:db8::5)",
        "bad.toml:6:10: admin.listen: 0.0.0.0:9090 is not a loopback address; the admin endpoint has no login and must stay on the appliance (expected 127.0.0.1:PORT or [::1]:PORT; reach it remotely through SSH)",
        "bad.toml:9:8: mail.domain[0].deliver_to: mail domain `ninhthuan.gov.vn` has no route (expected deliver_to = \"IP:PORT\" of its mailbox server)",
        "bad.toml:14:13: conference.room[0].chair_pin: the chair PIN equals the participant PIN, so every participant could chair (expected a different PIN)",
        "bad.toml:15:34: conference.room[0].sites[2]: site `Huyện A` is listed twice in this room",
    ];
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines, expected);
}

#[test]
fn check_reports_an_unknown_key_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("typo.toml"), "[mail]\nmax_recipient = 50\n").unwrap();
    let (code, _, stderr) = run_command(dir.path(), &["check", "--config", "typo.toml"], "");
    assert_eq!(code, 2);
    assert!(
        stderr.starts_with("typo.toml:2:1: mail.max_recipient: unknown field `max_recipient`, expected one of"),
        "{stderr}"
    );
}

#[test]
fn check_of_a_missing_file_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, stderr) = run_command(dir.path(), &["check", "--config", "nope.toml"], "");
    assert_eq!(code, 2);
    assert!(stderr.starts_with("nope.toml:1:1: (top level): cannot read the config file:"), "{stderr}");
}

#[test]
fn hash_password_prints_a_verifiable_argon2id_hash() {
    let dir = tempfile::tempdir().unwrap();
    let (code, stdout, _) = run_command(dir.path(), &["hash-password"], "Mật khẩu 2026\n");
    assert_eq!(code, 0);
    let hash = stdout.trim();
    assert!(hash.starts_with("$argon2id$v=19$"), "{hash}");
    let parsed = argon2::PasswordHash::new(hash).unwrap();
    argon2::Argon2::default().verify_password("Mật khẩu 2026".as_bytes(), &parsed).expect("hash verifies");
    assert!(argon2::Argon2::default().verify_password(b"wrong", &parsed).is_err());

    let (code, _, stderr) = run_command(dir.path(), &["hash-password"], "");
    assert_eq!(code, 1);
    assert!(stderr.contains("empty password"), "{stderr}");
}

#[test]
fn check_warns_about_a_private_address_published_outside_but_passes() {
    let dir = tempfile::tempdir().unwrap();
    let config = "\
[server]
hostname = \"hub.ninhthuan.gov.vn\"
addresses = [\"10.20.0.5\"]

[dns]
listen = [\"127.0.0.1:0\"]

[[dns.zone]]
name = \"ninhthuan.gov.vn\"

[mail]
enabled = false

[conference]
enabled = false
";
    std::fs::write(dir.path().join("leak.toml"), config).unwrap();
    let (code, stdout, stderr) = run_command(dir.path(), &["check", "--config", "leak.toml"], "");
    assert_eq!(code, 0, "a warning does not refuse the config: {stderr}");
    assert_eq!(stdout, "leak.toml: ok\n");
    assert!(
        stderr.starts_with("leak.toml:3:14: server.addresses[0]: warning: zone `ninhthuan.gov.vn` (seen by every client) publishes the private address 10.20.0.5"),
        "{stderr}"
    );
}

#[test]
fn dns_ds_prints_the_ds_of_a_signed_zone_and_roll_ksk_adds_a_second() {
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "[server]\nhostname = \"hub.ninhthuan.gov.vn\"\naddresses = [\"10.20.0.5\"]\nstate_dir = \"{}\"\n\n[dns]\nlisten = [\"127.0.0.1:0\"]\n\n[[dns.zone]]\nname = \"ninhthuan.gov.vn\"\ndnssec = true\n\n[[dns.zone]]\nname = \"plain.gov.vn\"\n\n[mail]\nenabled = false\n\n[conference]\nenabled = false\n",
        dir.path().join("state").display()
    );
    std::fs::write(dir.path().join("signed.toml"), config).unwrap();
    let ds = |zone: &str| run_command(dir.path(), &["dns", "ds", zone, "--config", "signed.toml"], "");
    let (code, first, stderr) = ds("ninhthuan.gov.vn");
    assert_eq!(code, 0, "{stderr}");
    let lines: Vec<&str> = first.lines().collect();
    assert_eq!(lines.len(), 1, "{first}");
    assert!(lines[0].starts_with("ninhthuan.gov.vn. 3600 IN DS ") && lines[0].contains(" 13 2 "), "{first}");
    assert_eq!(ds("ninhthuan.gov.vn").1, first, "the keys are made once and kept");
    let (code, _, stderr) = ds("plain.gov.vn");
    assert_ne!(code, 0);
    assert!(stderr.contains("is not signed"), "{stderr}");

    let roll = |extra: &[&str]| {
        let mut arguments = vec!["dns", "roll-ksk", "ninhthuan.gov.vn", "--config", "signed.toml"];
        arguments.extend_from_slice(extra);
        run_command(dir.path(), &arguments, "")
    };
    let (code, message, stderr) = roll(&[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(message.contains("--finish"), "{message}");
    assert_eq!(ds("ninhthuan.gov.vn").1.lines().count(), 2, "old and new KSK during the rollover");
    let (code, _, stderr) = roll(&["--finish"]);
    assert_eq!(code, 0, "{stderr}");
    let after = ds("ninhthuan.gov.vn").1;
    assert_eq!(after.lines().count(), 1);
    assert_ne!(after, first, "the new KSK's DS is left");
}
