//! Taking due messages off the queue and delivering them, one log line per event.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, watch};

use crate::address::Address;
use crate::audit;
use crate::dane::{self, HostDane};
use crate::dsn::{self, FailedRecipient};
use crate::message;
use crate::outbound::{Outgoing, TlsPolicy};
use crate::queue::Meta;
use crate::queue::journal::Location;
use crate::resolver::Exchanger;
use crate::{Shared, unix_now};
use decision::{Attempt, Decision, Outcome};

mod decision;
mod secure;

/// Deliveries running at once.
const MAX_PARALLEL_DELIVERIES: usize = 64;
/// History lines kept per message (for `queue show`).
const MAX_HISTORY: usize = 20;

/// Where a group of recipients goes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Destination {
    /// A local domain's mailbox server (final delivery: TLS when offered).
    Local(SocketAddr),
    /// The smarthost, with TLS required when the domain is in `require_tls_to`.
    Smarthost(SocketAddr, TlsPolicy),
    /// The MX hosts of this domain.
    Exchangers(String),
}

/// Runs until `shutdown` turns true, then waits (at most 10 s) for deliveries in flight.
pub async fn run(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let permits = Arc::new(Semaphore::new(MAX_PARALLEL_DELIVERIES));
    let mut gauges_updated: Option<std::time::Instant> = None;
    loop {
        let now = unix_now();
        let available = permits.available_permits();
        if available > 0 {
            for (meta, location) in shared.queue.take_due(now, available) {
                let Ok(permit) = permits.clone().try_acquire_owned() else { break };
                let shared = shared.clone();
                tokio::spawn(async move {
                    deliver(&shared, meta, location).await;
                    drop(permit);
                    shared.queue.wake.notify_one();
                });
            }
        }
        // Scanning for the oldest message is O(queue): at most once a second.
        if gauges_updated.is_none_or(|updated| updated.elapsed() >= Duration::from_secs(1)) {
            let (depth, oldest) = shared.queue.depth_and_oldest(now);
            metrics::gauge!("lienthong_mail_queue_depth").set(depth as f64);
            metrics::gauge!("lienthong_mail_queue_oldest_age_seconds").set(oldest as f64);
            metrics::gauge!("lienthong_mail_message_memory_bytes").set(shared.message_memory_used() as f64);
            gauges_updated = Some(std::time::Instant::now());
        }
        let wait = match shared.queue.next_due() {
            Some(due) if due <= now && permits.available_permits() > 0 => Duration::from_millis(10),
            Some(due) => Duration::from_secs(due.saturating_sub(now).clamp(1, 60)),
            None => Duration::from_secs(60),
        };
        tokio::select! {
            _ = shared.queue.wake.notified() => {}
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => break,
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(10), permits.acquire_many(MAX_PARALLEL_DELIVERIES as u32)).await;
}

async fn deliver(shared: &Shared, mut meta: Meta, location: Location) {
    let content = match shared.queue.read_content(location).await {
        Ok(content) => content,
        Err(error) => {
            tracing::error!(queue_id = %meta.id, %error, "cannot read a queued message; will retry");
            shared.queue.release(&meta.id, unix_now() + 60);
            return;
        }
    };
    let routes = shared.routes();
    let mut groups: HashMap<Destination, Vec<usize>> = HashMap::new();
    for (index, recipient) in meta.recipients.iter().enumerate() {
        let domain = recipient.address.domain.clone();
        let destination = match (routes.local.get(&domain), routes.smarthost) {
            (Some(address), _) => Destination::Local(*address),
            (None, Some(smarthost)) => {
                let tls = if routes.requires_tls(&domain) { TlsPolicy::Required } else { TlsPolicy::Opportunistic };
                Destination::Smarthost(smarthost, tls)
            }
            (None, None) => Destination::Exchangers(domain),
        };
        groups.entry(destination).or_default().push(index);
    }
    let mut outcomes: Vec<Option<Outcome>> = (0..meta.recipients.len()).map(|_| None).collect();
    for (destination, indexes) in groups {
        let results = deliver_group(shared, &meta, &content, &destination, &indexes).await;
        for (index, outcome) in indexes.into_iter().zip(results) {
            outcomes[index] = Some(outcome);
        }
    }
    finish(shared, &mut meta, &content, outcomes).await;
}

async fn deliver_group(
    shared: &Shared,
    meta: &Meta,
    content: &[u8],
    destination: &Destination,
    indexes: &[usize],
) -> Vec<Outcome> {
    let routes = shared.routes();
    let failed_all = |permanent: bool, diagnostic: String, remote: Option<String>, dane: bool| {
        indexes
            .iter()
            .map(|_| Outcome::Failed { permanent, diagnostic: diagnostic.clone(), remote: remote.clone(), dane })
            .collect()
    };
    // RFC 8689 4.2.1: the requirement binds messages with a return path; a bounce goes as before.
    let requiretls = meta.require_tls && meta.sender.is_some();
    let direct = |address: &SocketAddr, tls: TlsPolicy| secure::Target {
        exchanger: Exchanger { host: address.ip().to_string(), address: *address },
        tls,
    };
    let (targets, report) = match destination {
        Destination::Local(address) => (vec![direct(address, TlsPolicy::Opportunistic)], secure::Report::Nothing),
        Destination::Smarthost(address, tls) => {
            let policy = if requiretls { TlsPolicy::Required } else { tls.clone() };
            (vec![direct(address, policy)], secure::Report::Nothing)
        }
        Destination::Exchangers(domain) => match shared.lookup.mail_exchangers(domain).await {
            Ok(exchangers) => {
                let asks = secure::Asks {
                    operator_requires_tls: routes.requires_tls(domain),
                    requiretls,
                    policy_waived: message::waives_tls_policy(message::header_section(content)),
                };
                let policy = if routes.mta_sts && (requiretls || !asks.policy_waived) {
                    shared.mta_sts.policy(domain, unix_now()).await
                } else {
                    None
                };
                let findings = if routes.dane && shared.lookup.answers_from_dns() {
                    shared.dane.findings(domain, &exchangers).await
                } else {
                    dane::Findings::default()
                };
                record_findings(&meta.id, &findings);
                match secure::plan(domain, exchangers, policy.as_ref(), &findings, asks) {
                    secure::Plan::Send { targets, report } => (targets, report),
                    secure::Plan::Refuse { permanent, diagnostic, dane: true } => {
                        return failed_all(permanent, diagnostic, None, true);
                    }
                    secure::Plan::Refuse { permanent, diagnostic, dane: false } => {
                        let mode = if requiretls { "requiretls" } else { "enforce" };
                        metrics::counter!("lienthong_mail_mta_sts_failures_total", "mode" => mode).increment(1);
                        if requiretls {
                            metrics::counter!("lienthong_mail_requiretls_refused_total", "stage" => "delivery")
                                .increment(1);
                        }
                        return failed_all(permanent, diagnostic, None, false);
                    }
                }
            }
            Err(failure) => {
                let code = if failure.permanent { "550" } else { "451" };
                let diagnostic = format!("{code} {} {}", failure.status, failure.message);
                return failed_all(failure.permanent, diagnostic, None, false);
            }
        },
    };
    let addresses: Vec<Option<Address>> =
        indexes.iter().map(|&index| meta.recipients[index].address.to_address()).collect();
    let sender = meta.sender.as_ref().and_then(|sender| sender.to_address());
    let mut recipients = Vec::new();
    for (position, &index) in indexes.iter().enumerate() {
        if let Some(address) = &addresses[position] {
            let recipient = &meta.recipients[index];
            recipients.push((address, recipient.notify, recipient.original.as_ref()));
        }
    }
    if recipients.len() != indexes.len() {
        return failed_all(true, "550 5.1.3 unreadable recipient address in the queue".into(), None, false);
    }
    let outgoing = Outgoing {
        sender: sender.as_ref(),
        recipients,
        content,
        eight_bit: meta.eight_bit,
        smtputf8: meta.smtputf8,
        return_full: meta.return_full,
        envelope_id: meta.envelope_id.as_ref(),
        require_tls: requiretls && !matches!(destination, Destination::Local(_)),
    };
    let mut attempts = decision::HostAttempts::new(outgoing.require_tls);
    for secure::Target { exchanger: Exchanger { host, address }, tls: tls_policy } in &targets {
        let dane = matches!(tls_policy, TlsPolicy::Dane(_));
        if let secure::Report::Testing(policy) = &report
            && !dane
            && !policy.allows(host)
        {
            metrics::counter!("lienthong_mail_mta_sts_failures_total", "mode" => "testing").increment(1);
            tracing::warn!(queue_id = %meta.id, %host, "MTA-STS testing: this MX host is not in the policy (sent anyway)");
        }
        let sent = match &report {
            // What `enforce` would require is tried first; its failures happen before MAIL,
            // and the message then goes as without a policy.
            secure::Report::Testing(_) if !dane => {
                match shared.client.send(*address, host, TlsPolicy::Required, &outgoing).await {
                    Err(failure) if failure.security => {
                        metrics::counter!("lienthong_mail_mta_sts_failures_total", "mode" => "testing").increment(1);
                        tracing::warn!(queue_id = %meta.id, %host, reason = %failure.message,
                        "MTA-STS testing: enforce would have failed; sending as without a policy");
                        shared.client.send(*address, host, tls_policy.clone(), &outgoing).await
                    }
                    sent => sent,
                }
            }
            _ => shared.client.send(*address, host, tls_policy.clone(), &outgoing).await,
        };
        if dane {
            let result = match &sent {
                Ok(_) => "verified",
                Err(failure) if failure.security => "refused",
                Err(_) => "unreachable",
            };
            metrics::counter!("lienthong_mail_dane_total", "result" => result).increment(1);
        }
        let failure = match sent {
            Ok((tls, replies)) => {
                let relay = match &tls {
                    Some(tls) => format!("{host}[{address}] ({tls})"),
                    None => format!("{host}[{address}]"),
                };
                return decision::answered(&relay, host, replies, dane);
            }
            Err(failure) => failure,
        };
        if outgoing.require_tls && failure.security {
            tracing::warn!(queue_id = %meta.id, %host, reason = %failure.message, "REQUIRETLS: next hop refused");
        } else if failure.security && dane {
            tracing::warn!(queue_id = %meta.id, host = %sanitize(host), reason = %failure.message,
                "DANE: no TLS that the TLSA records authenticate to this MX host; not sending in clear");
        } else if failure.security && !failure.permanent && report == secure::Report::Enforced {
            metrics::counter!("lienthong_mail_mta_sts_failures_total", "mode" => "enforce").increment(1);
            tracing::warn!(queue_id = %meta.id, %host, reason = %failure.message,
                "MTA-STS enforce: no verified TLS to this MX host; not sending in clear");
        }
        if let Some(outcome) = attempts.failed(host, &failure, dane) {
            return indexes.iter().map(|_| outcome.clone()).collect();
        }
    }
    let outcome = attempts.exhausted();
    if outgoing.require_tls && matches!(outcome, Outcome::Failed { permanent: true, .. }) {
        metrics::counter!("lienthong_mail_requiretls_refused_total", "stage" => "delivery").increment(1);
    }
    indexes.iter().map(|_| outcome.clone()).collect()
}

/// Counts and logs what DNSSEC said about each MX host (`lienthong_mail_dane_total`).
fn record_findings(queue_id: &str, findings: &dane::Findings) {
    for (host, finding) in &findings.hosts {
        metrics::counter!("lienthong_mail_dane_total", "result" => finding.metric()).increment(1);
        match finding {
            HostDane::Failed(reason) => tracing::warn!(queue_id, host = %sanitize(host), reason = %sanitize(reason),
                "DANE: lookup failed without an authenticated denial; this MX host is not used now"),
            HostDane::Records(records) => {
                tracing::debug!(queue_id, host = %sanitize(host), records = records.len(), "DANE: TLSA records found");
            }
            HostDane::Unusable => tracing::info!(queue_id, host = %sanitize(host),
                "DANE: only TLSA records unusable for SMTP (RFC 7672 3.1.3); TLS required, not authenticated"),
            HostDane::NotApplicable => {}
        }
    }
}

/// DNS-derived text for a log line.
fn sanitize(text: &str) -> String {
    crate::mta_sts::policy::sanitize(text.as_bytes(), 300)
}

async fn finish(shared: &Shared, meta: &mut Meta, content: &[u8], outcomes: Vec<Option<Outcome>>) {
    let now = unix_now();
    let routes = shared.routes();
    let attempt = Attempt { earlier: meta.attempts, arrived_unix: meta.arrived_unix, now };
    let mut remaining = Vec::new();
    let mut failed = Vec::new();
    let mut last_temporary = None;
    let mut next_attempt = None;
    for (recipient, outcome) in meta.recipients.iter().zip(outcomes) {
        let address = recipient.address.to_string();
        match &outcome {
            Some(Outcome::Delivered { relay, reply, dane }) => {
                metrics::counter!("lienthong_mail_delivered_total").increment(1);
                let line = audit::attempt(&meta.id, &address, Some(relay), reply, audit::Outcome::Delivered, now)
                    .under_dane(*dane);
                shared.audit.write(&line, now);
                tracing::info!(queue_id = %meta.id, recipient = %recipient.address, %relay, %reply, "delivered");
            }
            Some(Outcome::Failed { permanent: false, diagnostic, remote, dane }) => {
                let line =
                    audit::attempt(&meta.id, &address, remote.as_deref(), diagnostic, audit::Outcome::Deferred, now)
                        .under_dane(*dane);
                shared.audit.write(&line, now);
                metrics::counter!("lienthong_mail_deferred_total").increment(1);
                tracing::warn!(queue_id = %meta.id, recipient = %recipient.address, reply = %diagnostic, "deferred");
                meta.history.push(format!(
                    "{} deferred <{}>: {diagnostic}",
                    crate::message::rfc822_date(now),
                    recipient.address
                ));
                last_temporary = Some(diagnostic.clone());
            }
            Some(Outcome::Failed { permanent: true, .. }) | None => {}
        }
        let dane = outcome.as_ref().is_some_and(Outcome::under_dane);
        match decision::decide(outcome.as_ref(), attempt, &routes.queue) {
            Decision::Complete => {}
            Decision::Retry { at } => {
                next_attempt = Some(at);
                remaining.push(recipient.clone());
            }
            Decision::Bounce { diagnostic, remote } => {
                let line =
                    audit::attempt(&meta.id, &address, remote.as_deref(), &diagnostic, audit::Outcome::Bounced, now)
                        .under_dane(dane);
                shared.audit.write(&line, now);
                failed.push(FailedRecipient { recipient: recipient.clone(), diagnostic, remote });
            }
        }
    }
    if !failed.is_empty() {
        bounce(shared, meta, content, &failed, now).await;
    }
    let Some(next_attempt) = next_attempt else {
        shared.queue.complete(&meta.id).await;
        return;
    };
    meta.attempts += 1;
    meta.recipients = remaining;
    meta.last_error = last_temporary;
    meta.next_attempt_unix = next_attempt;
    let excess = meta.history.len().saturating_sub(MAX_HISTORY);
    meta.history.drain(..excess);
    if let Err(error) = shared.queue.defer(meta.clone()).await {
        tracing::error!(queue_id = %meta.id, %error, "cannot record the deferral; the message stays queued as before");
        shared.queue.release(&meta.id, meta.next_attempt_unix);
    }
}

async fn bounce(shared: &Shared, meta: &Meta, content: &[u8], failed: &[FailedRecipient], now: u64) {
    for failure in failed {
        metrics::counter!("lienthong_mail_bounced_total").increment(1);
        tracing::warn!(queue_id = %meta.id, recipient = %failure.recipient.address, reply = %failure.diagnostic, "bounced");
    }
    // Never answer a bounce with a bounce (RFC 5321 4.5.5: the null sender gets nothing).
    let Some(sender) = meta.sender.as_ref().and_then(|sender| sender.to_address()) else { return };
    let notify: Vec<FailedRecipient> = failed
        .iter()
        .filter(|failure| dsn::wants_failure_notice(&failure.recipient))
        .map(|failure| FailedRecipient {
            recipient: failure.recipient.clone(),
            diagnostic: failure.diagnostic.clone(),
            remote: failure.remote.clone(),
        })
        .collect();
    if notify.is_empty() {
        return;
    }
    let hostname = shared.routes().hostname.clone();
    let id = crate::new_queue_id();
    let report = dsn::bounce(&hostname, meta, content, &notify, &id, now);
    let envelope = crate::session::Envelope {
        sender: None,
        recipients: vec![crate::session::Recipient { address: sender, notify: 0, original: None }],
        return_full: false,
        envelope_id: None,
        eight_bit: true,
        smtputf8: meta.smtputf8,
        require_tls: false,
    };
    let bounce_meta = Meta::new(id.clone(), &envelope, report.len() as u64, now);
    match shared.queue.enqueue(bounce_meta, report).await {
        Ok(()) => tracing::info!(queue_id = %id, original = %meta.id, "bounce queued"),
        Err(error) => tracing::error!(queue_id = %meta.id, %error, "cannot queue the bounce"),
    }
}
