//! What becomes of each recipient after a delivery attempt: done, tried again later, or
//! bounced. A pure decision from the attempt's outcome, the message's age and attempt count and
//! the operator's retry schedule: no I/O, time passed in.

use lienthong_config::QueuePolicy;

use crate::outbound::{Failure, RecipientOutcome};
use crate::queue::backoff;

/// What one attempt did for one recipient. `dane`: the host was used under DANE (RFC 7672),
/// for the audit line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Delivered { relay: String, reply: String, dane: bool },
    Failed { permanent: bool, diagnostic: String, remote: Option<String>, dane: bool },
}

impl Outcome {
    pub fn under_dane(&self) -> bool {
        match self {
            Outcome::Delivered { dane, .. } | Outcome::Failed { dane, .. } => *dane,
        }
    }
}

/// The message's history at the end of this attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempt {
    /// Attempts made before this one.
    pub earlier: u32,
    pub arrived_unix: u64,
    pub now: u64,
}

/// The decision for one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Delivered: nothing more to do.
    Complete,
    /// Deferred: try again at `at` (unix seconds).
    Retry { at: u64 },
    /// Refused for good, or deferred for longer than `give_up_after`: a bounce to the sender
    /// with `diagnostic`.
    Bounce { diagnostic: String, remote: Option<String> },
}

/// Decides for one recipient. `outcome` is `None` when this attempt did not reach it (it is
/// retried like a deferral, with no new diagnostic).
pub fn decide(outcome: Option<&Outcome>, attempt: Attempt, schedule: &QueuePolicy) -> Decision {
    let last_error = match outcome {
        Some(Outcome::Delivered { .. }) => return Decision::Complete,
        Some(Outcome::Failed { permanent: true, diagnostic, remote, .. }) => {
            return Decision::Bounce { diagnostic: diagnostic.clone(), remote: remote.clone() };
        }
        Some(Outcome::Failed { permanent: false, diagnostic, .. }) => diagnostic.as_str(),
        None => "",
    };
    if attempt.now.saturating_sub(attempt.arrived_unix) >= schedule.give_up_after.as_secs() {
        let days = schedule.give_up_after.as_secs() / 86400;
        let diagnostic = format!("550 5.4.7 gave up after {days} days in the queue; last error: {last_error}");
        return Decision::Bounce { diagnostic, remote: None };
    }
    let delay = backoff(attempt.earlier.saturating_add(1), schedule.retry_after, schedule.max_retry_interval);
    Decision::Retry { at: attempt.now.saturating_add(delay.as_secs().max(1)) }
}

/// Each recipient's outcome from the replies of the host that took the transaction.
pub fn answered(relay: &str, host: &str, replies: Vec<RecipientOutcome>, dane: bool) -> Vec<Outcome> {
    replies
        .into_iter()
        .map(|reply| match reply {
            Ok(reply) => Outcome::Delivered { relay: relay.to_owned(), reply: reply.to_string(), dane },
            Err(reply) => Outcome::Failed {
                permanent: reply.code >= 500,
                diagnostic: reply.to_string(),
                remote: Some(host.to_owned()),
                dane,
            },
        })
        .collect()
}

/// The hosts of one destination, tried in order until one takes the transaction: what their
/// failures mean for every recipient of the group.
#[derive(Debug)]
pub struct HostAttempts {
    /// The message passes `REQUIRETLS` on.
    requiretls: bool,
    last_failure: String,
    /// Every host so far failed for want of TLS, none for a network failure.
    only_insecure: bool,
    tried: bool,
    /// The last failure was of a host used under DANE.
    last_dane: bool,
}

impl HostAttempts {
    pub fn new(requiretls: bool) -> Self {
        Self {
            requiretls,
            last_failure: "451 4.4.0 no host to try".into(),
            only_insecure: true,
            tried: false,
            last_dane: false,
        }
    }

    /// `host` failed the whole transaction. `Some`: the outcome for every recipient, no other
    /// host is tried (a permanent refusal); `None`: try the next host.
    pub fn failed(&mut self, host: &str, failure: &Failure, dane: bool) -> Option<Outcome> {
        self.tried = true;
        self.last_dane = dane;
        if self.requiretls && failure.security {
            self.last_failure = match failure.message.strip_prefix("550 5.7.10 ") {
                Some(reason) => format!("550 5.7.10 {reason} ({host})"),
                None => format!("550 5.7.10 REQUIRETLS: {}", failure.message),
            };
            return None;
        }
        if failure.permanent {
            return Some(Outcome::Failed {
                permanent: true,
                diagnostic: failure.message.clone(),
                remote: Some(host.to_owned()),
                dane,
            });
        }
        self.only_insecure = false;
        self.last_failure = failure.message.clone();
        None
    }

    /// Every host failed: the message waits, except that `REQUIRETLS` bounces when every host
    /// failed for want of TLS, not of a network (RFC 8689 4.2.1).
    pub fn exhausted(self) -> Outcome {
        let permanent = self.requiretls && self.only_insecure && self.tried;
        Outcome::Failed { permanent, diagnostic: self.last_failure, remote: None, dane: self.last_dane }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const NOW: u64 = 1_800_000_000;
    const DAY: u64 = 86_400;

    fn schedule() -> QueuePolicy {
        QueuePolicy {
            retry_after: Duration::from_secs(300),
            max_retry_interval: Duration::from_secs(3600),
            give_up_after: Duration::from_secs(5 * DAY),
        }
    }

    fn attempt(earlier: u32, age: u64) -> Attempt {
        Attempt { earlier, arrived_unix: NOW - age, now: NOW }
    }

    fn deferred(diagnostic: &str) -> Outcome {
        Outcome::Failed {
            permanent: false,
            diagnostic: diagnostic.into(),
            remote: Some("mx.example.vn".into()),
            dane: false,
        }
    }

    #[test]
    fn a_4xx_is_retried_with_a_doubling_capped_backoff() {
        let outcome = deferred("451 4.3.0 later");
        let at = |earlier| match decide(Some(&outcome), attempt(earlier, 60), &schedule()) {
            Decision::Retry { at } => at - NOW,
            other => panic!("{other:?}"),
        };
        assert_eq!([at(0), at(1), at(2), at(3), at(4), at(40)], [300, 600, 1200, 2400, 3600, 3600]);
        let zero = QueuePolicy { retry_after: Duration::ZERO, ..schedule() };
        assert_eq!(decide(Some(&outcome), attempt(0, 0), &zero), Decision::Retry { at: NOW + 1 }, "never now");
    }

    #[test]
    fn a_5xx_bounces_at_once_with_its_reply() {
        let refused = Outcome::Failed {
            permanent: true,
            diagnostic: "550 5.1.1 no such user".into(),
            remote: Some("mx.example.vn".into()),
            dane: false,
        };
        let decision = decide(Some(&refused), attempt(0, 0), &schedule());
        let expected =
            Decision::Bounce { diagnostic: "550 5.1.1 no such user".into(), remote: Some("mx.example.vn".into()) };
        assert_eq!(decision, expected);
    }

    #[test]
    fn deferrals_past_give_up_after_bounce_with_the_last_error() {
        let outcome = deferred("451 4.4.1 no answer");
        let just_before = decide(Some(&outcome), attempt(30, 5 * DAY - 1), &schedule());
        assert!(matches!(just_before, Decision::Retry { .. }), "{just_before:?}");
        let Decision::Bounce { diagnostic, remote } = decide(Some(&outcome), attempt(31, 5 * DAY), &schedule()) else {
            panic!()
        };
        assert_eq!(diagnostic, "550 5.4.7 gave up after 5 days in the queue; last error: 451 4.4.1 no answer");
        assert_eq!(remote, None);
        assert!(matches!(decide(None, attempt(31, 6 * DAY), &schedule()), Decision::Bounce { .. }));
        assert!(matches!(decide(None, attempt(0, 0), &schedule()), Decision::Retry { at } if at == NOW + 300));
    }

    fn failure(permanent: bool, security: bool, message: &str) -> Failure {
        Failure { permanent, security, message: message.into() }
    }

    #[test]
    fn replies_become_outcomes_per_recipient() {
        use crate::outbound::Reply;
        let ok = Reply { code: 250, text: "2.0.0 queued".into() };
        let unknown = Reply { code: 521, text: "5.3.2 no mail here\nsee the directory".into() };
        let busy = Reply { code: 452, text: "4.2.2 full".into() };
        let outcomes = answered("mx[192.0.2.1]", "mx", vec![Ok(ok), Err(unknown), Err(busy)], false);
        assert_eq!(
            outcomes,
            [
                Outcome::Delivered { relay: "mx[192.0.2.1]".into(), reply: "250 2.0.0 queued".into(), dane: false },
                Outcome::Failed {
                    permanent: true,
                    diagnostic: "521 5.3.2 no mail here see the directory".into(),
                    remote: Some("mx".into()),
                    dane: false,
                },
                Outcome::Failed {
                    permanent: false,
                    diagnostic: "452 4.2.2 full".into(),
                    remote: Some("mx".into()),
                    dane: false
                },
            ]
        );
    }

    #[test]
    fn hosts_are_tried_until_a_permanent_refusal_and_then_the_message_waits() {
        let mut attempts = HostAttempts::new(false);
        assert_eq!(attempts.failed("mx1", &failure(false, false, "cannot connect"), false), None);
        assert_eq!(attempts.failed("mx2", &failure(false, true, "no STARTTLS"), false), None);
        assert_eq!(
            attempts.exhausted(),
            Outcome::Failed { permanent: false, diagnostic: "no STARTTLS".into(), remote: None, dane: false }
        );
        let mut attempts = HostAttempts::new(false);
        let refused = attempts.failed("mx1", &failure(true, false, "MAIL FROM refused: 550 no"), false);
        assert_eq!(
            refused,
            Some(Outcome::Failed {
                permanent: true,
                diagnostic: "MAIL FROM refused: 550 no".into(),
                remote: Some("mx1".into()),
                dane: false,
            })
        );
        let nothing = HostAttempts::new(true).exhausted();
        assert_eq!(
            nothing,
            Outcome::Failed {
                permanent: false,
                diagnostic: "451 4.4.0 no host to try".into(),
                remote: None,
                dane: false
            }
        );
    }

    #[test]
    fn requiretls_bounces_only_when_every_host_lacked_tls() {
        let no_extension =
            failure(true, true, "550 5.7.10 REQUIRETLS: the next hop does not offer REQUIRETLS over TLS");
        let mut attempts = HostAttempts::new(true);
        assert_eq!(attempts.failed("mx1", &no_extension, false), None, "a security failure tries the next host");
        assert_eq!(attempts.failed("mx2", &failure(false, true, "certificate does not verify"), false), None);
        let Outcome::Failed { permanent: true, diagnostic, .. } = attempts.exhausted() else { panic!() };
        assert_eq!(diagnostic, "550 5.7.10 REQUIRETLS: certificate does not verify");
        let mut attempts = HostAttempts::new(true);
        attempts.failed("mx1", &no_extension, false);
        assert_eq!(
            attempts.exhausted(),
            Outcome::Failed {
                permanent: true,
                diagnostic: "550 5.7.10 REQUIRETLS: the next hop does not offer REQUIRETLS over TLS (mx1)".into(),
                remote: None,
                dane: false,
            }
        );
        let mut attempts = HostAttempts::new(true);
        attempts.failed("mx1", &no_extension, false);
        attempts.failed("mx2", &failure(false, false, "connection timed out"), false);
        assert!(matches!(attempts.exhausted(), Outcome::Failed { permanent: false, .. }), "a network failure waits");
    }

    #[test]
    fn a_mixed_attempt_decides_each_recipient_on_its_own() {
        let delivered =
            Outcome::Delivered { relay: "mx.example.vn[192.0.2.1]".into(), reply: "250 ok".into(), dane: false };
        let refused =
            Outcome::Failed { permanent: true, diagnostic: "550 5.1.1 unknown".into(), remote: None, dane: false };
        let outcomes = [Some(delivered), Some(refused), Some(deferred("450 4.2.1 busy"))];
        for age in [0, 10 * DAY] {
            let decisions: Vec<Decision> =
                outcomes.iter().map(|outcome| decide(outcome.as_ref(), attempt(2, age), &schedule())).collect();
            assert_eq!(decisions[0], Decision::Complete, "delivered is delivered, however old");
            assert!(
                matches!(&decisions[1], Decision::Bounce { diagnostic, .. } if diagnostic.starts_with("550 5.1.1"))
            );
            match (age, &decisions[2]) {
                (0, Decision::Retry { at }) => assert_eq!(*at, NOW + 1200),
                (_, Decision::Bounce { diagnostic, .. }) if age > 0 => assert!(diagnostic.contains("450 4.2.1 busy")),
                (_, other) => panic!("age {age}: {other:?}"),
            }
        }
    }
}
