use super::*;

const DMARCS: [Dmarc; 4] = [Dmarc::Pass, Dmarc::Fail, Dmarc::TempError, Dmarc::None];
const POLICIES: [Published; 3] = [Published::None, Published::Quarantine, Published::Reject];
const ENFORCEMENTS: [DmarcEnforcement; 3] =
    [DmarcEnforcement::Follow, DmarcEnforcement::Quarantine, DmarcEnforcement::Report];

fn every_case() -> Vec<(Results, DmarcEnforcement)> {
    let mut cases = Vec::new();
    for dmarc in DMARCS {
        for policy in POLICIES {
            for spf_fail in [false, true] {
                for from_local in [false, true] {
                    for enforcement in ENFORCEMENTS {
                        cases.push((Results { dmarc, policy, spf_fail, from_local }, enforcement));
                    }
                }
            }
        }
    }
    cases
}

#[test]
fn a_local_from_from_outside_passes_dmarc_or_is_refused_whatever_the_setting() {
    for (results, enforcement) in every_case().into_iter().filter(|(results, _)| results.from_local) {
        let verdict = decide(&results, enforcement, "ninhthuan.gov.vn");
        match results.dmarc {
            Dmarc::Pass => assert_eq!(verdict, Verdict::Accept),
            Dmarc::TempError => assert!(matches!(verdict, Verdict::Retry { .. }), "{results:?}"),
            Dmarc::Fail | Dmarc::None => {
                assert!(matches!(verdict, Verdict::Refuse { enhanced: "5.7.1", .. }), "{results:?} {enforcement:?}")
            }
        }
    }
}

#[test]
fn a_temporary_dns_failure_is_never_an_accept() {
    for (results, enforcement) in every_case().into_iter().filter(|(results, _)| results.dmarc == Dmarc::TempError) {
        assert!(matches!(decide(&results, enforcement, "x.example"), Verdict::Retry { .. }), "{results:?}");
    }
}

#[test]
fn a_foreign_domain_s_policy_is_followed_as_far_as_the_setting_allows() {
    for (results, enforcement) in every_case().into_iter().filter(|(results, _)| !results.from_local) {
        let verdict = decide(&results, enforcement, "example.net");
        let expected = match (results.dmarc, results.policy, enforcement) {
            (Dmarc::Pass, _, _) => Verdict::Accept,
            (Dmarc::TempError, _, _) => continue,
            (Dmarc::Fail, _, DmarcEnforcement::Report) => Verdict::Accept,
            (Dmarc::Fail, Published::Reject, DmarcEnforcement::Follow) => {
                Verdict::Refuse { enhanced: "5.7.1", text: "Rejected by the DMARC policy of example.net".into() }
            }
            (Dmarc::Fail, Published::Reject | Published::Quarantine, _) => Verdict::Quarantine,
            (Dmarc::Fail, Published::None, _) => Verdict::Accept,
            (Dmarc::None, _, _) if !results.spf_fail => Verdict::Accept,
            (Dmarc::None, _, DmarcEnforcement::Follow) => {
                assert!(matches!(verdict, Verdict::Refuse { enhanced: "5.7.23", .. }), "{results:?}");
                continue;
            }
            (Dmarc::None, _, DmarcEnforcement::Quarantine) => Verdict::Quarantine,
            (Dmarc::None, _, DmarcEnforcement::Report) => Verdict::Accept,
        };
        assert_eq!(verdict, expected, "{results:?} {enforcement:?}");
    }
}

#[test]
fn a_hostile_domain_never_reaches_the_reply_line_raw() {
    let results = Results { dmarc: Dmarc::Fail, policy: Published::Reject, spf_fail: false, from_local: false };
    for domain in ["evil.example\r\n250 ok", "ví-dụ.vn", "a b", "", &"x".repeat(5000)] {
        let Verdict::Refuse { text, .. } = decide(&results, DmarcEnforcement::Follow, domain) else { panic!() };
        assert!(text.bytes().all(|byte| (0x20..0x7f).contains(&byte)), "{text:?}");
        assert!(text.len() < 400, "{}", text.len());
        let safe = safe_domain(domain);
        assert!(safe.bytes().all(|byte| byte.is_ascii_alphanumeric() || b".-_?".contains(&byte)), "{safe:?}");
        assert!(safe.len() <= 253);
    }
    assert_eq!(safe_domain("so-tttt.ninhthuan.gov.vn"), "so-tttt.ninhthuan.gov.vn");
}

const HOST: &str = "mail.ninhthuan.gov.vn";

fn stripped(headers: &str) -> String {
    let message = format!("{headers}\r\nbody\r\nAuthentication-Results: {HOST}; dkim=pass (in the body)\r\n");
    String::from_utf8(strip_forged_results(message.as_bytes(), HOST).into_owned()).unwrap()
}

#[test]
fn forged_results_claiming_this_relay_are_removed_in_every_spelling() {
    let forged = [
        format!("Authentication-Results: {HOST}; dkim=pass\r\n"),
        format!("authentication-results:{HOST};\r\n\tspf=pass smtp.mailfrom=a@b\r\n"),
        "AUTHENTICATION-RESULTS : MAIL.NINHTHUAN.GOV.VN.; dmarc=pass\r\n".to_owned(),
        format!("Authentication-Results:\r\n {HOST}; dmarc=pass\r\n"),
        format!("Authentication-Results: (a comment) {HOST}; dmarc=pass\r\n"),
        format!("Authentication-Results: ((nested) \\) comment) {HOST}; dmarc=pass\r\n"),
        format!("Authentication-Results: \"{HOST}\"; dmarc=pass\r\n"),
        format!("Authentication-Results: {HOST} 1; none\r\n"),
    ];
    for field in &forged {
        let headers = format!("Received: from x\r\n{field}From: <a@example.net>\r\nSubject: s\r\n");
        let result = stripped(&headers);
        assert_eq!(
            result,
            format!(
                "Received: from x\r\nFrom: <a@example.net>\r\nSubject: s\r\n\r\nbody\r\nAuthentication-Results: {HOST}; dkim=pass (in the body)\r\n"
            ),
            "{field:?}"
        );
    }
    // The first field and the last one too.
    for field in &forged {
        let result = stripped(&format!("{field}From: <a@example.net>\r\n{field}"));
        assert!(result.starts_with("From: <a@example.net>\r\n\r\nbody"), "{result:?}");
    }
}

#[test]
fn results_of_other_servers_and_other_headers_are_kept_byte_for_byte() {
    let kept = [
        "Authentication-Results: mx.google.com; dkim=pass header.d=example.net\r\n",
        "Authentication-Results: ninhthuan.gov.vn; spf=pass\r\n",
        "Authentication-Results: mail.ninhthuan.gov.vn.evil.example; dkim=pass\r\n",
        "Authentication-Results: evilmail.ninhthuan.gov.vn; dkim=pass\r\n",
        "X-Authentication-Results: mail.ninhthuan.gov.vn; dkim=pass\r\n",
        "ARC-Authentication-Results: i=1; mail.ninhthuan.gov.vn; dkim=pass\r\n",
        "Subject: Authentication-Results: mail.ninhthuan.gov.vn; dkim=pass\r\n",
        "Authentication-Results: (unterminated mail.ninhthuan.gov.vn; dkim=pass\r\n",
    ];
    for field in kept {
        let headers = format!("From: <a@example.net>\r\n{field}");
        let message = format!("{headers}\r\nbody\r\n");
        assert_eq!(strip_forged_results(message.as_bytes(), HOST), message.as_bytes(), "{field:?}");
    }
    // A message without a body or without an empty line loses nothing either.
    for message in ["From: <a@example.net>\r\n", "From: <a@example.net>", "", "\r\n\r\nbody"] {
        assert_eq!(strip_forged_results(message.as_bytes(), HOST), message.as_bytes(), "{message:?}");
    }
}

#[test]
fn generated_header_sections_lose_exactly_the_forged_fields() {
    // A small deterministic generator: fields drawn from a pool, some forged.
    let pool = [
        ("Received: from a\r\n\tby b\r\n", false),
        (&*format!("Authentication-Results: {HOST}; dkim=pass\r\n"), true),
        ("Authentication-Results: other.example; dkim=fail\r\n", false),
        (&*format!("Authentication-Results:\r\n\t{HOST};\r\n\tspf=pass\r\n"), true),
        ("Subject: =?utf-8?q?Gi=E1=BA=A5y_m=E1=BB=9Di?=\r\n", false),
        ("X-Long: a\r\n b\r\n c\r\n", false),
    ];
    let mut state = 0x9e37_79b9u32;
    for _ in 0..500 {
        let mut message = String::new();
        let mut expected = String::new();
        let count = 1 + (state % 7) as usize;
        for _ in 0..count {
            state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            let (field, forged) = &pool[(state >> 16) as usize % pool.len()];
            message.push_str(field);
            if !forged {
                expected.push_str(field);
            }
        }
        message.push_str("\r\nthe body\r\n");
        expected.push_str("\r\nthe body\r\n");
        assert_eq!(String::from_utf8(strip_forged_results(message.as_bytes(), HOST).into_owned()).unwrap(), expected);
    }
}
