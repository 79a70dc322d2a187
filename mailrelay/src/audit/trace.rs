//! `lienthong mail trace`: a message's whole story from the audit files.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::io::BufRead;
use std::path::Path;

use super::{Accepted, Attempt, Outcome, Record, file_date};

/// What to look for.
#[derive(Debug, Clone)]
pub struct TraceQuery {
    /// A Message-ID (with or without `<>`) or an envelope address.
    pub needle: String,
    /// `YYYY-MM-DD`: only audit files of that day and later.
    pub since: Option<String>,
}

/// One block per matching message, oldest first; empty if nothing matched.
pub fn trace(directory: &Path, query: &TraceQuery) -> std::io::Result<String> {
    let mut files: Vec<(String, std::path::PathBuf)> = std::fs::read_dir(directory)?
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let date = file_date(&name)?.to_owned();
            Some((date, entry.path()))
        })
        .filter(|(date, _)| query.since.as_ref().is_none_or(|since| date.as_str() >= since.as_str()))
        .collect();
    files.sort();
    let needle = query.needle.trim();
    let message_id = needle.trim_start_matches('<').trim_end_matches('>');
    let mut messages: Vec<(Accepted, Vec<Attempt>, bool)> = Vec::new();
    let mut wanted = HashSet::new();
    let mut unreadable = 0usize;
    for (_, path) in &files {
        for line in std::io::BufReader::new(std::fs::File::open(path)?).lines() {
            // A torn last line (a crash during a write that was never acknowledged) is skipped.
            let Ok(record) = serde_json::from_str::<Record>(&line?) else {
                unreadable += 1;
                continue;
            };
            match record {
                Record::Accepted(accepted)
                    if matches(&accepted, needle, message_id) && wanted.insert(accepted.queue_id.clone()) =>
                {
                    messages.push((accepted, Vec::new(), false));
                }
                Record::Attempt(attempt) if wanted.contains(&attempt.queue_id) => {
                    if let Some(message) =
                        messages.iter_mut().rev().find(|message| message.0.queue_id == attempt.queue_id)
                    {
                        message.1.push(attempt);
                    }
                }
                Record::NotQueued { queue_id, .. } if wanted.contains(&queue_id) => {
                    if let Some(message) = messages.iter_mut().rev().find(|message| message.0.queue_id == queue_id) {
                        message.2 = true;
                    }
                }
                _ => {}
            }
        }
    }
    let mut text = String::new();
    for (accepted, attempts, not_queued) in &messages {
        render(&mut text, accepted, attempts, *not_queued);
    }
    if unreadable > 0 {
        let _ = writeln!(text, "({unreadable} unreadable audit lines skipped)");
    }
    Ok(text)
}

fn matches(accepted: &Accepted, needle: &str, message_id: &str) -> bool {
    accepted.message_id.as_deref().is_some_and(|id| id.trim_start_matches('<').trim_end_matches('>') == message_id)
        || accepted.sender.eq_ignore_ascii_case(needle)
        || accepted.recipients.iter().any(|recipient| recipient.eq_ignore_ascii_case(needle))
}

fn render(text: &mut String, accepted: &Accepted, attempts: &[Attempt], not_queued: bool) {
    let show = |value: &str| printable(value);
    let _ = writeln!(text, "message {}", show(&accepted.queue_id));
    let tls = match (&accepted.tls_version, &accepted.tls_cipher) {
        (Some(version), Some(cipher)) => format!("{} {}", show(version), show(cipher)),
        _ => "no TLS".to_owned(),
    };
    let user = accepted.user.as_deref().map_or_else(|| "none".to_owned(), show);
    let _ = writeln!(
        text,
        "  accepted    {} from {} (helo {}, {}, {tls}, user {user})",
        show(&accepted.time),
        show(&accepted.client),
        show(&accepted.helo),
        show(&accepted.listener)
    );
    let _ = writeln!(text, "  sender      <{}>", show(&accepted.sender));
    for recipient in &accepted.recipients {
        let _ = writeln!(text, "  recipient   <{}>", show(recipient));
    }
    let message_id = accepted.message_id.as_deref().map_or_else(|| "none".to_owned(), show);
    let _ = writeln!(text, "  message-id  {message_id}\n  size        {} bytes", accepted.size);
    match accepted.auth.as_ref().and_then(|auth| auth.dkim_signed.as_ref()) {
        Some(signed) => {
            let selectors: Vec<String> = signed.selectors.iter().map(|selector| show(selector)).collect();
            let _ = writeln!(text, "  dkim        signed d={} s={}", show(&signed.domain), selectors.join(","));
        }
        None => {
            let _ = writeln!(text, "  dkim        not signed");
        }
    }
    if let Some(checked) = accepted.auth.as_ref().and_then(|auth| auth.checked.as_ref()) {
        let _ = writeln!(
            text,
            "  checks      spf={} dkim={} arc={} dmarc={} header.from={} ({})",
            show(&checked.spf),
            show(&checked.dkim),
            show(&checked.arc),
            show(&checked.dmarc),
            show(&checked.from_domain),
            show(&checked.verdict)
        );
    }
    if not_queued {
        let _ = writeln!(text, "  not queued  the queue write failed; the client was told to retry");
    }
    for attempt in attempts {
        let outcome = match attempt.outcome {
            Outcome::Delivered => "delivered",
            Outcome::Deferred => "deferred",
            Outcome::Bounced => "bounced",
        };
        let remote = attempt.remote.as_deref().map_or_else(String::new, |remote| format!(" via {}", show(remote)));
        let code = attempt.reply_code.map_or_else(String::new, |code| format!("{code} "));
        let dane = if attempt.dane { " (DANE)" } else { "" };
        let _ = writeln!(
            text,
            "  {outcome:<11} {} <{}>{remote}{dane}: {code}{}",
            show(&attempt.time),
            show(&attempt.recipient),
            show(&attempt.reply)
        );
    }
    if attempts.is_empty() && !not_queued {
        let _ = writeln!(text, "  no delivery attempt yet");
    }
    text.push('\n');
}

/// `value` with control characters escaped, for a terminal.
fn printable(value: &str) -> String {
    value
        .chars()
        .flat_map(|character| {
            if character.is_control() || character == '\u{2028}' || character == '\u{2029}' {
                character.escape_unicode().collect::<Vec<_>>()
            } else {
                vec![character]
            }
        })
        .collect()
}
