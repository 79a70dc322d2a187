use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use super::*;

fn pattern(text: &str) -> MxPattern {
    MxPattern::parse(text).unwrap()
}

#[test]
fn a_policy_parses_in_any_order_with_either_line_ending() {
    let text =
        b"version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.backup.example.com\r\nmax_age: 604800\r\n";
    let policy = parse_policy(text).unwrap();
    assert_eq!(policy.mode, Mode::Enforce);
    assert_eq!(policy.max_age, 604_800);
    assert_eq!(policy.mx, vec![pattern("mail.example.com"), pattern("*.backup.example.com")]);
    let reordered = b"max_age:86400\nmx:\tmx.example.net \nextension_key: whatever\nmode: testing\nversion: STSv1";
    let policy = parse_policy(reordered).unwrap();
    assert_eq!((policy.mode, policy.max_age), (Mode::Testing, 86_400));
    assert!(policy.allows("MX.Example.NET."));
    assert_eq!(parse_policy(b"version: STSv1\nmode: none\nmax_age: 0\n").unwrap().mx, vec![]);
}

#[test]
fn broken_policies_are_refused_with_their_reason() {
    let cases: [(&[u8], PolicyError); 13] = [
        (b"mode: enforce\nmx: a.example\nmax_age: 1\n", PolicyError::Version),
        (b"version: STSv2\nmode: enforce\nmx: a.example\nmax_age: 1\n", PolicyError::Version),
        (b"version: STSv1\nversion: STSv1\nmode: enforce\nmx: a.example\nmax_age: 1\n", PolicyError::Version),
        (b"version: STSv1\nmode: Enforce\nmx: a.example\nmax_age: 1\n", PolicyError::Mode),
        (b"version: STSv1\nmx: a.example\nmax_age: 1\n", PolicyError::Mode),
        (b"version: STSv1\nmode: enforce\nmx: a.example\n", PolicyError::MaxAge),
        (b"version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 31557601\n", PolicyError::MaxAge),
        (b"version: STSv1\nmode: enforce\nmx: a.example\nmax_age: -1\n", PolicyError::MaxAge),
        (b"version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 00000000001\n", PolicyError::MaxAge),
        (b"version: STSv1\nmode: enforce\nmx: a..example\nmax_age: 1\n", PolicyError::Mx),
        (b"version: STSv1\nmode: enforce\nmx: *.*.example\nmax_age: 1\n", PolicyError::Mx),
        (b"version: STSv1\nmode: testing\nmax_age: 1\n", PolicyError::NoMx),
        (b"version: STSv1\nmode: enforce\n<html>\nmx: a.example\nmax_age: 1\n", PolicyError::Line(3)),
    ];
    for (text, expected) in cases {
        assert_eq!(parse_policy(text), Err(expected), "{}", String::from_utf8_lossy(text));
    }
    assert_eq!(parse_policy(b"version: STSv1\x00\nmode: none\nmax_age: 1\n"), Err(PolicyError::Line(1)));
    let many: String = (0..65).map(|n| format!("mx: mx{n}.example\n")).collect();
    let text = format!("version: STSv1\nmode: enforce\nmax_age: 1\n{many}");
    assert_eq!(parse_policy(text.as_bytes()), Err(PolicyError::Mx));
}

#[test]
fn wildcards_match_exactly_one_leftmost_label() {
    let wildcard = pattern("*.example.com");
    assert!(wildcard.matches("mx1.example.com"));
    assert!(wildcard.matches("MX1.EXAMPLE.COM."));
    for host in ["example.com", "a.b.example.com", "mx1.example.org", "mx1example.com", ".example.com", "*.example.com"]
    {
        assert!(!wildcard.matches(host), "{host}");
    }
    let exact = pattern("mail.example.com.");
    assert!(exact.matches("Mail.Example.com") && !exact.matches("x.mail.example.com"));
    for bad in ["", "*", "*.", "com", "*.com.", "a_b.example", "-a.example", "a-.example", "a.*.example", "é.example"]
    {
        assert!(MxPattern::parse(bad).is_none(), "{bad:?}");
    }
    assert!(MxPattern::parse(&format!("{}.example", "a".repeat(64))).is_none());
}

#[test]
fn txt_records_need_exactly_one_sts_record_with_an_id() {
    let id = |text: &str| Record::Id(PolicyId(text.to_owned()));
    assert_eq!(parse_record([&b"v=STSv1; id=20160831085700Z;"[..]]), id("20160831085700Z"));
    assert_eq!(parse_record([&b"v=spf1 -all"[..], b"v=STSv1;id=abc; ext=1"]), id("abc"));
    for records in [
        vec![&b"v=STSv1; id=a"[..], b"v=STSv1; id=b"],
        vec![b"v=STSv1;"],
        vec![b"v=STSv1; id="],
        vec![b"v=STSv1; id=has-hyphen"],
        vec![b"v=STSv1; id=a; id=b"],
        vec![b"v=STSv10; id=a"],
        vec![b"v=STSv1 id=a"],
        vec![b"v=STSv1; id=123456789012345678901234567890123"],
        vec![],
    ] {
        assert_eq!(parse_record(records.iter().copied()), Record::Absent, "{records:?}");
    }
}

#[test]
fn hostile_text_is_cut_and_made_printable_for_logs() {
    assert_eq!(sanitize(b"ok\r\n\x1b[31mred\xC3\xA1", 100), "ok???[31mred??");
    assert_eq!(sanitize(&[b'a'; 500], 80).len(), 80);
}

/// A valid policy's lines, shuffled, with random line endings, junk keys and blank lines,
/// always parses to the same policy; any corruption of one required field is refused.
#[test]
fn generated_policies_parse_or_fail_as_their_fields_say() {
    let mut random = StdRng::seed_from_u64(0x0053_5453_7631);
    for _ in 0..5_000 {
        let mode = ["enforce", "testing", "none"][random.random_range(0..3)];
        let max_age = random.random_range(0..=MAX_AGE_LIMIT);
        let hosts: Vec<String> =
            (0..random.random_range(1..5)).map(|n| format!("{}mx{n}.example.vn", ["", "*."][n % 2])).collect();
        let mut lines = vec!["version: STSv1".to_owned(), format!("mode: {mode}"), format!("max_age: {max_age}")];
        lines.extend(hosts.iter().map(|host| format!("mx: {host}")));
        for _ in 0..random.random_range(0..3) {
            lines.push(format!("x-extension{}: some value", random.random_range(0..100)));
        }
        if random.random_bool(0.3) {
            lines.push(String::new());
        }
        lines.shuffle(&mut random);
        let ending = if random.random_bool(0.5) { "\r\n" } else { "\n" };
        let text = lines.join(ending);
        let policy = parse_policy(text.as_bytes()).unwrap_or_else(|error| panic!("{error}: {text:?}"));
        assert_eq!(policy.max_age, max_age);
        assert_eq!(policy.mode.as_str(), mode);
        let mut parsed: Vec<String> = policy.mx.iter().cloned().map(String::from).collect();
        parsed.sort();
        let mut expected = hosts.clone();
        expected.sort();
        assert_eq!(parsed, expected);

        // Break one thing: a bad max_age, a junk line, a duplicate, a bad version, oversize.
        let broken = match random.random_range(0..5) {
            0 => text.replace(&format!("max_age: {max_age}"), &format!("max_age: {}", MAX_AGE_LIMIT + 1 + max_age)),
            1 => format!("{text}{ending}this is not a field{ending}"),
            2 => format!("{text}{ending}mode: {mode}"),
            3 => text.replace("STSv1", "STSv2"),
            _ => text.replace(&format!("max_age: {max_age}"), &format!("max_age: {max_age}{}", "0".repeat(10))),
        };
        assert!(parse_policy(broken.as_bytes()).is_err(), "{broken:?}");
    }
}

/// Whatever bytes arrive, the parser answers (no panic), and what it accepts is consistent.
#[test]
fn generated_junk_never_panics_and_accepted_policies_are_bounded() {
    let mut random = StdRng::seed_from_u64(7);
    let alphabet: &[u8] = b"version: STSv1\r\nmode:enforcetsingx_a9*.-\t\x00\xFF";
    for _ in 0..20_000 {
        let length = random.random_range(0..200);
        let bytes: Vec<u8> = (0..length).map(|_| alphabet[random.random_range(0..alphabet.len())]).collect();
        if let Ok(policy) = parse_policy(&bytes) {
            assert!(policy.max_age <= MAX_AGE_LIMIT);
            assert!(policy.mode == Mode::None || !policy.mx.is_empty());
        }
        let _ = parse_record([bytes.as_slice()]);
    }
}
