//! Golden tests: each class of operator mistake gives its `FILE:LINE:COL: path: message`.

use std::path::Path;

use super::*;

fn errors(source: &str) -> Vec<String> {
    match parse(source, "t.toml", Path::new("/nonexistent-base")) {
        Ok(_) => Vec::new(),
        Err(errors) => errors.0.iter().map(ToString::to_string).collect(),
    }
}

fn assert_error(source: &str, expected_prefix: &str) {
    let found = errors(source);
    assert!(
        found.iter().any(|line| line.starts_with(expected_prefix)),
        "expected an error starting with {expected_prefix:?}, got {found:#?}"
    );
}

#[test]
fn built_in_default_is_valid() {
    let config = built_in(Path::new(".")).expect("the default config must pass check");
    assert!(config.dns.enabled && config.mail.enabled && config.conference.enabled);
    assert_eq!(config.admin.listen.to_string(), "127.0.0.1:9090");
    assert_eq!(config.conference.rooms[0].name, "giao-ban");
}

#[test]
fn example_file_is_the_built_in_default() {
    let on_disk = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/lienthong.example.toml")).unwrap();
    assert_eq!(on_disk, DEFAULT_CONFIG);
}

#[test]
fn syntax_error_has_position() {
    assert_error("[server]\nhostname = \n", "t.toml:2:");
}

#[test]
fn unknown_section() {
    assert_error("[server]\n[mial]\n", "t.toml:2:2: mial: unknown section");
}

#[test]
fn unknown_keys_are_rejected_in_every_table() {
    let tables = [
        ("[server]", "server"),
        ("[admin]", "admin"),
        ("[dns]", "dns"),
        ("[[dns.zone]]\nname = \"a.vn\"", "dns.zone"),
        ("[[dns.view]]\nname = \"v\"\nclients = []", "dns.view"),
        ("[[dns.forward]]\nzone = \"a.vn\"\nto = [\"10.0.0.1\"]", "dns.forward"),
        ("[mail]", "mail"),
        ("[[mail.domain]]\nname = \"a.vn\"\ndeliver_to = \"10.0.0.1\"", "mail.domain"),
        ("[[mail.user]]\nlogin = \"a@a.vn\"\npassword = \"x\"", "mail.user"),
        ("[mail.outbound]", "mail.outbound"),
        ("[mail.queue]", "mail.queue"),
        ("[conference]", "conference"),
        ("[[conference.room]]\nname = \"r\"\npin = \"1234\"\nchair_pin = \"4321\"\nsites = [\"A\"]", "conference.room"),
    ];
    for (table, path) in tables {
        let source = format!("{table}\nbogus_key = 1\n");
        let found = errors(&source);
        assert!(
            found.iter().any(|line| line.contains(path) && line.contains("bogus_key")),
            "unknown key in [{path}] not reported: {found:#?}"
        );
    }
}

#[test]
fn wrong_type_names_the_key() {
    assert_error("[mail]\nmax_recipients = \"many\"\n", "t.toml:2:18: mail.max_recipients:");
}

#[test]
fn bad_address_names_key_and_expectation() {
    assert_error(
        "[dns]\nlisten = [\"127.0.0.1\"]\n",
        "t.toml:2:11: dns.listen[0]: `127.0.0.1` is not a socket address",
    );
}

#[test]
fn every_problem_is_reported_not_just_the_first() {
    let found =
        errors("[server]\nhostname = \"bad name\"\naddresses = [\"nope\"]\n[admin]\nlisten = \"10.0.0.1:9090\"\n");
    assert_eq!(found.len(), 3, "{found:#?}");
}

#[test]
fn mail_domain_without_route() {
    assert_error(
        "[[mail.domain]]\nname = \"ninhthuan.gov.vn\"\n",
        "t.toml:2:8: mail.domain[0].deliver_to: mail domain `ninhthuan.gov.vn` has no route",
    );
}

#[test]
fn recipient_checks_per_domain() {
    let domain = "[[mail.domain]]\nname = \"ninhthuan.gov.vn\"\ndeliver_to = \"10.20.0.20\"\n";
    let config = parse(
        &format!("{domain}verify_recipients = \"list\"\nrecipients = [\"VanThu\", \"ubnd@ninhthuan.gov.vn\"]\n"),
        "t.toml",
        Path::new("/nonexistent-base"),
    )
    .unwrap();
    assert_eq!(config.mail.domains[0].recipients, RecipientCheck::List(vec!["vanthu".into(), "ubnd".into()]));
    let config = parse(domain, "t.toml", Path::new("/nonexistent-base")).unwrap();
    assert_eq!(config.mail.domains[0].recipients, RecipientCheck::Probe);
    assert_error(&format!("{domain}verify_recipients = \"list\"\n"), "t.toml:4:21: mail.domain[0].recipients:");
    assert_error(&format!("{domain}recipients = [\"a\"]\n"), "t.toml:4:14: mail.domain[0].recipients:");
    assert_error(&format!("{domain}verify_recipients = \"ldap\"\n"), "t.toml:4:21: mail.domain[0].verify_recipients:");
    assert_error(
        &format!("{domain}verify_recipients = \"list\"\nrecipients = [\"a@other.vn\"]\n"),
        "t.toml:5:15: mail.domain[0].recipients[0]: `a@other.vn` is not a mailbox of ninhthuan.gov.vn",
    );
}

#[test]
fn memory_and_connection_limits() {
    let config = parse("[mail]\n", "t.toml", Path::new("/nonexistent-base")).unwrap();
    assert_eq!((config.mail.max_connections_per_client, config.mail.max_message_memory), (50, 512 * 1024 * 1024));
    assert_error("[mail]\nmax_connections_per_client = 0\n", "t.toml:2:30: mail.max_connections_per_client:");
    assert_error(
        "[mail]\nmax_message_size = 2000000\nmax_message_memory = 1000000\n",
        "t.toml:3:22: mail.max_message_memory: smaller than max_message_size",
    );
}

#[test]
fn hourly_limits_default_and_per_user_override() {
    let hash = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaA";
    let source = format!(
        "[mail]\nmax_recipients_per_hour_per_user = 50\nmax_messages_per_hour_per_client = 0\n\
         [[mail.user]]\nlogin = \"a@a.vn\"\npassword = \"{hash}\"\n\
         [[mail.user]]\nlogin = \"b@a.vn\"\npassword = \"{hash}\"\nmax_messages_per_hour = 7\nsuspended = true\n"
    );
    let config = parse(&source, "t.toml", Path::new("/nonexistent-base")).unwrap_or_else(|errors| panic!("{errors}"));
    let users = &config.mail.users;
    assert_eq!(users[0].limits, crate::HourlyLimits { messages: 200, recipients: 50 });
    assert!(!users[0].suspended);
    assert_eq!(users[1].limits, crate::HourlyLimits { messages: 7, recipients: 50 });
    assert!(users[1].suspended);
    assert_eq!(config.mail.client_limits, crate::HourlyLimits { messages: 0, recipients: 1000 });
    assert_error("[mail]\nmax_messages_per_hour_per_user = -1\n", "t.toml:2:34: mail.max_messages_per_hour_per_user:");
    assert_error(
        "[[mail.user]]\nlogin = \"a@a.vn\"\npassword = \"x\"\nsuspended = \"yes\"\n",
        "t.toml:4:13: mail.user[0].suspended:",
    );
}

#[test]
fn audit_retention() {
    assert_eq!(parse("[mail]\n", "t.toml", Path::new("/nonexistent-base")).unwrap().mail.audit_retention_days, 180);
    let config = parse("[mail]\naudit_retention_days = 400\n", "t.toml", Path::new("/nonexistent-base")).unwrap();
    assert_eq!(config.mail.audit_retention_days, 400);
    assert_error("[mail]\naudit_retention_days = 0\n", "t.toml:2:24: mail.audit_retention_days: must be at least 1");
}

#[test]
fn sender_checks_are_on_by_default_and_dmarc_enforcement_is_one_of_three() {
    use crate::mail::DmarcEnforcement;
    let config = parse("[mail]\n", "t.toml", Path::new("/nonexistent-base")).unwrap();
    assert!(config.mail.check_senders);
    assert_eq!(config.mail.dmarc_enforcement, DmarcEnforcement::Follow);
    for (text, expected) in [
        ("follow", DmarcEnforcement::Follow),
        ("quarantine", DmarcEnforcement::Quarantine),
        ("report", DmarcEnforcement::Report),
    ] {
        let config = parse(
            &format!("[mail]\ncheck_senders = false\ndmarc_enforcement = \"{text}\"\n"),
            "t.toml",
            Path::new("/nonexistent-base"),
        )
        .unwrap();
        assert_eq!(config.mail.dmarc_enforcement, expected);
        assert!(!config.mail.check_senders);
    }
    assert_error(
        "[mail]\ndmarc_enforcement = \"strict\"\n",
        "t.toml:2:21: mail.dmarc_enforcement: expected \"follow\"",
    );
}

#[test]
fn dane_is_on_by_default_and_a_boolean() {
    let base = Path::new("/nonexistent-base");
    assert!(parse("[mail]\n", "t.toml", base).unwrap().mail.outbound.dane);
    assert!(!parse("[mail.outbound]\ndane = false\n", "t.toml", base).unwrap().mail.outbound.dane);
    assert_error("[mail.outbound]\ndane = \"yes\"\n", "t.toml:2:8: mail.outbound.dane");
}

#[test]
fn plain_password_is_refused() {
    assert_error(
        "[[mail.user]]\nlogin = \"vanthu@ninhthuan.gov.vn\"\npassword = \"secret\"\n",
        "t.toml:3:12: mail.user[0].password: not an argon2id hash",
    );
}

#[test]
fn duplicate_sites_in_a_room() {
    assert_error(
        "[[conference.room]]\nname = \"giao-ban\"\npin = \"1234\"\nchair_pin = \"5678\"\nsites = [\"Huyện A\", \"huyện a\"]\n",
        "t.toml:5:21: conference.room[0].sites[1]: site `huyện a` is listed twice",
    );
}

#[test]
fn conference_off_loopback_needs_tls() {
    assert_error(
        "[conference]\nlisten = \"10.20.0.5:443\"\n",
        "t.toml:2:10: conference.listen: 10.20.0.5:443 is reachable from other hosts but tls = false",
    );
}

#[test]
fn admin_must_be_loopback() {
    assert_error(
        "[admin]\nlisten = \"0.0.0.0:9090\"\n",
        "t.toml:2:10: admin.listen: 0.0.0.0:9090 is not a loopback address",
    );
}

#[test]
fn missing_certificate_file() {
    assert_error(
        "[server]\ntls_cert = \"/nonexistent/cert.pem\"\ntls_key = \"/nonexistent/key.pem\"\n",
        "t.toml:2:12: server.tls_cert: cannot open `/nonexistent/cert.pem`",
    );
}

#[test]
fn certificate_and_key_that_do_not_match() {
    let directory = tempfile::tempdir().unwrap();
    let write = |name: &str, names: Vec<String>| {
        let certified = rcgen_pair(names);
        std::fs::write(directory.path().join(format!("{name}.crt")), certified.0).unwrap();
        std::fs::write(directory.path().join(format!("{name}.key")), certified.1).unwrap();
    };
    write("a", vec!["a.test".into()]);
    write("b", vec!["b.test".into()]);
    let source = "[server]\ntls_cert = \"a.crt\"\ntls_key = \"b.key\"\n";
    let found = match parse(source, "t.toml", directory.path()) {
        Ok(_) => Vec::new(),
        Err(errors) => errors.0.iter().map(ToString::to_string).collect(),
    };
    assert!(found.iter().any(|line| line.starts_with("t.toml:2:12: server.tls_cert: the key in")), "{found:#?}");
    let matching = "[server]\ntls_cert = \"a.crt\"\ntls_key = \"a.key\"\n";
    parse(matching, "t.toml", directory.path()).expect("a matching pair is accepted");
}

fn rcgen_pair(names: Vec<String>) -> (String, String) {
    let certified = rcgen::generate_simple_self_signed(names).unwrap();
    (certified.cert.pem(), certified.signing_key.serialize_pem())
}

/// Mutated configs never panic the parser: every outcome is a config or positioned errors.
#[test]
fn mutated_configs_never_panic() {
    let original = DEFAULT_CONFIG.as_bytes();
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let alphabet = b"[]{}=\".,#\n \\'0123456789abcz-:/@$";
    for _ in 0..3000 {
        let mut bytes = original.to_vec();
        for _ in 0..(next() % 8 + 1) {
            let position = (next() as usize) % bytes.len();
            match next() % 3 {
                0 => bytes[position] = alphabet[(next() as usize) % alphabet.len()],
                1 => {
                    bytes.remove(position);
                }
                _ => bytes.insert(position, alphabet[(next() as usize) % alphabet.len()]),
            }
        }
        let text = String::from_utf8_lossy(&bytes);
        if let Err(errors) = parse(&text, "fuzz.toml", Path::new("/nonexistent-base")) {
            for error in errors.0 {
                assert!(error.line >= 1 && error.column >= 1);
            }
        }
    }
}

#[test]
fn secrets_stay_out_of_debug_output() {
    let source = "[[mail.user]]\nlogin = \"vanthu@ninhthuan.gov.vn\"\npassword = \"$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2g\"\n\n[[conference.room]]\nname = \"giao-ban\"\npin = \"246810\"\nchair_pin = \"135790\"\nsites = [\"A\"]\n";
    let config = parse(source, "t.toml", Path::new("/")).expect("valid");
    let debug = format!("{config:?}");
    for secret in ["aGFzaGhhc2g", "246810", "135790"] {
        assert!(!debug.contains(secret), "{secret} leaked into {debug}");
    }
}

#[test]
fn dns_numeric_settings_out_of_range_are_errors() {
    assert_error("[dns]\nrate_limit = -1\n", "t.toml:2:14: dns.rate_limit: -1 is out of range (expected 0 to 1000000)");
    assert_error(
        "[dns]\ntcp_max_connections = 0\n",
        "t.toml:2:23: dns.tcp_max_connections: 0 is out of range (expected 1 to 100000)",
    );
    assert_error(
        "[dns]\ntcp_idle_seconds = 7200\n",
        "t.toml:2:20: dns.tcp_idle_seconds: 7200 is out of range (expected 1 to 3600)",
    );
    assert_error("[dns]\nrate_limit_exempt = [\"10.0.0.0/33\"]\n", "t.toml:2:22: dns.rate_limit_exempt[0]:");
    assert_error(
        "[[dns.zone]]\nname = \"a.vn\"\nsecondaries = [\"10.0.0.1:port\"]\n",
        "t.toml:3:16: dns.zone[0].secondaries[0]:",
    );
}

#[test]
fn every_copy_of_a_signed_zone_is_signed() {
    let copies = |inside: &str| {
        format!(
            "[[dns.view]]\nname = \"inside\"\nclients = [\"10.0.0.0/8\"]\n\n\
             [[dns.zone]]\nname = \"a.vn\"\nviews = [\"inside\"]\n{inside}\n\
             [[dns.zone]]\nname = \"a.vn\"\ndnssec = true\n"
        )
    };
    assert_error(
        &copies(""),
        "t.toml:10:8: dns.zone[1].dnssec: zone `a.vn` is signed in one [[dns.zone]] and not in another",
    );
    assert_error(&copies("dnssec = false"), "t.toml:10:8: dns.zone[1].dnssec:");
    assert!(errors(&copies("dnssec = true")).is_empty());
}

/// Every table, with the keys it needs to be otherwise valid.
const TABLES: [(&str, &str); 13] = [
    ("[server]", "server"),
    ("[admin]", "admin"),
    ("[dns]", "dns"),
    ("[[dns.zone]]\nname = \"a.vn\"", "dns.zone"),
    ("[[dns.view]]\nname = \"v\"\nclients = []", "dns.view"),
    ("[[dns.forward]]\nzone = \"a.vn\"\nto = [\"10.0.0.1\"]", "dns.forward"),
    ("[mail]", "mail"),
    ("[[mail.domain]]\nname = \"a.vn\"\ndeliver_to = \"10.0.0.1\"", "mail.domain"),
    (
        "[[mail.user]]\nlogin = \"vanthu@ninhthuan.gov.vn\"\npassword = \"$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2g\"",
        "mail.user",
    ),
    ("[mail.outbound]", "mail.outbound"),
    ("[mail.queue]", "mail.queue"),
    ("[conference]", "conference"),
    ("[[conference.room]]\nname = \"r\"\npin = \"1234\"\nchair_pin = \"4321\"\nsites = [\"A\"]", "conference.room"),
];

/// The keys a table accepts, read from the schema itself (serde lists them when a key is unknown).
fn keys_of(table: &str) -> Vec<String> {
    let found = errors(&format!("{table}\nbogus_key = 1\n"));
    let line = found.iter().find(|line| line.contains("unknown field `bogus_key`")).expect("unknown key reported");
    let expected = line.split_once("expected").map_or("", |(_, rest)| rest);
    expected.split('`').skip(1).step_by(2).map(str::to_owned).collect()
}

/// Generated over every secret key of the schema and many wrong-typed and invalid values:
/// no message names the value (`pin = 246810` once printed the PIN in `lienthong check`, the
/// reload log and the `POST /reload` reply).
#[test]
fn no_message_shows_the_value_of_a_secret_key() {
    // (value as written, texts that must not appear in any message)
    let values: &[(&str, &[&str])] = &[
        ("246810", &["246810"]),
        ("-135790", &["135790"]),
        ("24681.5", &["24681"]),
        ("0x3c41a", &["246810", "3c41a"]),
        ("true", &[]),
        ("[246810, 135790]", &["246810", "135790"]),
        ("{ value = \"246810\" }", &["246810"]),
        ("1979-05-27T07:32:00Z", &["1979-05-27"]),
        ("\"24681x\"", &["24681x"]),
        ("\"hunter2plain\"", &["hunter2plain"]),
        ("\"\"\"975310\nmultiline\"\"\"", &["975310", "multiline"]),
        ("'$argon2id$v=19$m=1,t=1,p=1$broken'", &["broken", "m=1,t=1"]),
        ("246810x", &["246810"]),
        ("\"unterminated 246810", &["246810"]),
    ];
    let mut secret_keys = Vec::new();
    for (table, path) in TABLES {
        for key in keys_of(table) {
            if is_secret_key(&key) {
                secret_keys.push((table, path, key));
            }
        }
    }
    let found_names: Vec<&str> = secret_keys.iter().map(|(_, _, key)| key.as_str()).collect();
    for expected in ["pin", "chair_pin", "password"] {
        assert!(found_names.contains(&expected), "schema walk missed {expected}: {found_names:?}");
    }
    for (table, path, key) in &secret_keys {
        let others: String = table
            .lines()
            .filter(|line| !line.starts_with(&format!("{key} =")))
            .map(|line| format!("{line}\n"))
            .collect();
        for (value, forbidden) in values {
            let source = format!("{others}{key} = {value}\n");
            let found = errors(&source);
            assert!(!found.is_empty(), "{path}.{key} = {value} was accepted");
            for line in &found {
                for text in *forbidden {
                    assert!(!line.contains(text), "{path}.{key} = {value} leaked {text:?}: {line}");
                }
            }
        }
    }
}

/// Messages about other keys keep their values: the operator needs to see them.
#[test]
fn messages_about_other_keys_still_quote_the_value() {
    assert_error("[server]\nhostname = 246810\n", "t.toml:2:12: server.hostname: invalid type: integer `246810`");
}

#[test]
fn turn_port_must_differ_from_media_port() {
    assert_error(
        "[conference]\nturn_port = 10000\n",
        "t.toml:2:13: conference.turn_port: 10000 (expected a fixed port other than media_port, e.g. 3478)",
    );
}

#[test]
fn last_n_defaults_to_every_site_of_a_province_meeting_and_is_bounded() {
    let config = built_in(Path::new(".")).unwrap();
    assert_eq!(config.conference.rooms[0].last_n, 12);
    let room = |last_n: &str| {
        format!(
            "[[conference.room]]\nname = \"x\"\npin = \"1234\"\nchair_pin = \"5678\"\nsites = [\"A\"]\nlast_n = {last_n}\n"
        )
    };
    assert_error(&room("50"), "t.toml:6:10: conference.room[0].last_n: expected 0 to 49");
    assert!(errors(&room("0")).is_empty(), "0: cameras off, voices only");
    assert!(errors(&room("49")).is_empty());
}

#[test]
fn video_codec_defaults_to_vp8_and_takes_h264() {
    let config = built_in(Path::new(".")).unwrap();
    assert_eq!(config.conference.rooms[0].video_codec, VideoCodec::Vp8);
    let room = |codec: &str| {
        format!(
            "[[conference.room]]\nname = \"x\"\npin = \"1234\"\nchair_pin = \"5678\"\nsites = [\"A\"]\nvideo_codec = {codec}\n"
        )
    };
    assert_error(&room("\"vp9\""), "t.toml:6:15: conference.room[0].video_codec: `vp9` (expected \"vp8\" or \"h264\")");
    let config = parse(&room("\"h264\""), "t.toml", Path::new("/nonexistent-base")).unwrap();
    assert_eq!(config.conference.rooms[0].video_codec, VideoCodec::H264);
}
