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
    assert_eq!(stdout, "default.toml: ok\n");
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
