//! One outbound SMTP connection as a sans-IO state machine (RFC 5321, 3207, 1870, 6152, 6531,
//! 3461, 8689): greeting, `EHLO`, `STARTTLS`, then transactions (`MAIL`, one `RCPT` per
//! recipient, `DATA`, `RSET`) or a recipient probe, replies parsed with smtp-proto.
//!
//! The driver ([`super::Client`]) writes [`Conversation::take_output`], reads the socket into
//! [`Conversation::feed`], calls [`Conversation::advance`] and acts on the [`Action`]: it owns the
//! socket, the TLS handshake and the timeouts (a timeout or a closed socket is reported with
//! [`Conversation::closed`]). No sockets, no clock in here, so tests drive it in memory.
//!
//! Commands go one at a time (no pipelining), so after each reply the input must be empty:
//! bytes beyond the reply answer commands this relay never sent (a next hop that read an
//! injected command, or a response-injection attack on STARTTLS). Such a connection is out of
//! step and is closed, never reused.

use std::collections::VecDeque;

use smtp_proto::{EXT_REQUIRE_TLS, EXT_SMTP_UTF8, EXT_START_TLS, EhloResponse};

use crate::address::Address;
use crate::esmtp::{EnvelopeId, OriginalRecipient};
pub use commands::CommandLine;
use commands::dot_stuff;
use reply::{Framed, Replies};
pub use reply::{MAX_REPLY_BYTES, MAX_REPLY_LINES, Reply};

mod commands;
mod reply;

/// What failed for the whole transaction (or the connection before it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub permanent: bool,
    pub message: String,
    /// The next hop could not give the TLS that was required: no STARTTLS, a certificate that
    /// does not verify, or no `REQUIRETLS` (not a network failure).
    pub security: bool,
}

impl Failure {
    pub fn temporary(message: String) -> Self {
        Self { permanent: false, message, security: false }
    }

    pub fn insecure(message: String) -> Self {
        Self { permanent: false, message, security: true }
    }

    /// A refusal by reply: permanent for 5xx.
    fn refused(what: &str, reply: &Reply) -> Self {
        Self { permanent: reply.code >= 500, message: format!("{what}: {reply}"), security: false }
    }
}

/// One message to send.
pub struct Outgoing<'a> {
    pub sender: Option<&'a Address>,
    pub recipients: Vec<(&'a Address, u64, Option<&'a OriginalRecipient>)>,
    pub content: &'a [u8],
    pub eight_bit: bool,
    pub smtputf8: bool,
    pub return_full: bool,
    pub envelope_id: Option<&'a EnvelopeId>,
    /// Pass `REQUIRETLS` on (RFC 8689 4.2.1); a next hop that does not offer it is refused
    /// with a [`Failure::security`] failure before `MAIL`.
    pub require_tls: bool,
}

/// Per-recipient outcome: `Ok` with the final reply, or the refusal.
pub type RecipientOutcome = Result<Reply, Reply>;

/// What the next hop offered in its last `EHLO` reply (smtp-proto's `EXT_*` bits).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Extensions(u32);

impl Extensions {
    pub fn offers(self, extension: u32) -> bool {
        self.0 & extension != 0
    }
}

/// What the conversation does with `STARTTLS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encryption {
    /// Start TLS when offered, go on in clear text otherwise (RFC 7435).
    WhenOffered,
    /// A next hop that does not offer `STARTTLS` is a [`Failure::security`] failure.
    Required,
}

/// Which timeout applies to the reply the driver reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    Command,
    /// The reply after the message content (RFC 5321 4.5.3.2.6: 10 minutes).
    Content,
}

/// What the driver must do next. Output bytes are always taken with
/// [`Conversation::take_output`] and written first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Write the output, then read and [`Conversation::feed`] the reply.
    Read(Wait),
    /// `STARTTLS` was accepted: run the TLS handshake, then call [`Conversation::tls_started`].
    StartTls,
    /// Greeting and `EHLO` are done: [`Conversation::start_transaction`] may follow.
    Ready,
    /// `DATA` was accepted: call [`Conversation::write_content`] with the message.
    SendContent,
    /// The transaction ended, one outcome per recipient in order. `reusable`: the connection
    /// is known to be between transactions, in step.
    Finished { outcomes: Vec<RecipientOutcome>, reusable: bool },
    /// The probe's `RCPT` reply; `QUIT` is in the output.
    Probed(Reply),
    /// The connection closed (or said 421) before the transaction's first reply: a pooled
    /// connection the server had closed. Nothing was decided; try a fresh connection.
    Lost,
    /// Nothing more happens on this connection.
    Failed(Failure),
}

/// The client side of one SMTP connection.
#[derive(Debug)]
pub struct Conversation {
    hostname: String,
    encryption: Encryption,
    state: State,
    replies: Replies,
    output: Vec<u8>,
    extensions: Extensions,
    secured: bool,
}

#[derive(Debug)]
enum State {
    Greeting,
    Ehlo,
    StartTls,
    /// The driver runs the TLS handshake.
    Handshake,
    EhloSecured,
    Ready,
    Mail(Transaction),
    Recipient(Transaction),
    Data(Transaction),
    /// The driver writes the content.
    Content(Transaction),
    /// The reply after the content.
    Final(Transaction),
    Reset(AfterReset),
    ProbeMail(CommandLine),
    ProbeRecipient,
    /// Reported by the next [`Conversation::advance`].
    Refused(Failure),
    Closed,
}

#[derive(Debug)]
struct Transaction {
    /// `RCPT` commands not sent yet.
    pending: VecDeque<CommandLine>,
    outcomes: Vec<RecipientOutcome>,
}

/// What a `RSET` reply ends.
#[derive(Debug)]
enum AfterReset {
    Fail(Failure),
    Finish(Vec<RecipientOutcome>),
}

impl Conversation {
    /// A connection just opened: the next reply is the greeting. `hostname` goes in `EHLO`.
    pub fn new(hostname: String, encryption: Encryption) -> Self {
        Self {
            hostname,
            encryption,
            state: State::Greeting,
            replies: Replies::default(),
            output: Vec::new(),
            extensions: Extensions::default(),
            secured: false,
        }
    }

    /// Received bytes. At most one reply is kept; anything beyond fails the conversation.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.replies.feed(bytes);
    }

    /// The bytes to write now.
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.output)
    }

    /// What the last `EHLO` reply offered.
    pub fn extensions(&self) -> Extensions {
        self.extensions
    }

    /// The TLS handshake after `STARTTLS` succeeded: everything said before is forgotten
    /// (RFC 3207 4.2) and `EHLO` goes again.
    pub fn tls_started(&mut self) {
        if matches!(self.state, State::Handshake) {
            self.secured = true;
            self.replies.clear();
            self.command(&self.ehlo_line());
            self.state = State::EhloSecured;
        }
    }

    /// Begins a transaction on a [`Action::Ready`] connection; [`Self::advance`] reports.
    pub fn start_transaction(&mut self, message: &Outgoing<'_>) {
        if !matches!(self.state, State::Ready) {
            self.state = State::Refused(Failure::temporary("the connection is not between transactions".into()));
            return;
        }
        if message.require_tls && (!self.secured || !self.extensions.offers(EXT_REQUIRE_TLS)) {
            self.state = State::Refused(Failure {
                permanent: true,
                message: "550 5.7.10 REQUIRETLS: the next hop does not offer REQUIRETLS over TLS".into(),
                security: true,
            });
            return;
        }
        let (mail, pending) = commands::transaction(message, self.extensions);
        // A control character in a queued value is a bug upstream (everything is validated on
        // the way in), so the message waits rather than being sent.
        let lines: Option<VecDeque<CommandLine>> = pending.into_iter().map(CommandLine::new).collect();
        let (Some(mail), Some(pending)) = (CommandLine::new(mail), lines) else {
            self.state =
                State::Refused(Failure::temporary("refusing to send a command holding a control character".into()));
            return;
        };
        self.command(&mail);
        let outcomes = Vec::with_capacity(pending.len());
        self.state = State::Mail(Transaction { pending, outcomes });
    }

    /// Begins a recipient probe on a [`Action::Ready`] connection: `MAIL FROM:<>`, `RCPT TO:`,
    /// `QUIT`; no message is sent. [`Self::advance`] reports [`Action::Probed`].
    pub fn start_probe(&mut self, recipient: &Address) {
        if !matches!(self.state, State::Ready) {
            self.state = State::Refused(Failure::temporary("the connection is not between transactions".into()));
            return;
        }
        let utf8 = !recipient.is_ascii() && self.extensions.offers(EXT_SMTP_UTF8);
        let mail = if utf8 { "MAIL FROM:<> SMTPUTF8" } else { "MAIL FROM:<>" };
        let (Some(mail), Some(rcpt)) =
            (CommandLine::new(mail.into()), CommandLine::new(format!("RCPT TO:<{recipient}>")))
        else {
            self.state = State::Refused(Failure {
                permanent: true,
                message: "a probe command holds a control character".into(),
                security: false,
            });
            return;
        };
        self.command(&mail);
        self.state = State::ProbeMail(rcpt);
    }

    /// The message content after [`Action::SendContent`], dot-stuffed and ended with `.`.
    pub fn write_content(&mut self, content: &[u8]) {
        if let State::Content(transaction) = std::mem::replace(&mut self.state, State::Closed) {
            self.output.extend_from_slice(&dot_stuff(content));
            self.output.extend_from_slice(b".\r\n");
            self.state = State::Final(transaction);
        }
    }

    /// The connection closed, failed or timed out (`reason`, for the failure message).
    pub fn closed(&mut self, reason: &str) -> Action {
        match std::mem::replace(&mut self.state, State::Closed) {
            State::Greeting => Action::Failed(Failure::temporary(format!("no usable greeting: {reason}"))),
            State::Ehlo | State::EhloSecured => Action::Failed(Failure::temporary(format!("EHLO failed: {reason}"))),
            State::StartTls | State::Handshake => {
                Action::Failed(Failure::temporary(format!("STARTTLS failed: {reason}")))
            }
            State::Ready | State::Mail(_) => Action::Lost,
            State::Recipient(_) | State::Data(_) | State::Content(_) => {
                Action::Failed(Failure::temporary(format!("connection lost during the transaction: {reason}")))
            }
            // The content was sent; the outcome is unknown. Retrying may duplicate, never lose.
            State::Final(_) => {
                Action::Failed(Failure::temporary(format!("no usable reply after the message content: {reason}")))
            }
            State::Reset(after) => Self::after_reset(after, false),
            State::ProbeMail(_) | State::ProbeRecipient => {
                Action::Failed(Failure::temporary(format!("recipient probe: {reason}")))
            }
            State::Refused(failure) => Action::Failed(failure),
            State::Closed => Action::Failed(Failure::temporary(format!("connection closed: {reason}"))),
        }
    }

    /// Handles the buffered input and says what to do next.
    pub fn advance(&mut self) -> Action {
        let wait = match &self.state {
            State::Ready => return Action::Ready,
            State::Handshake => return Action::StartTls,
            State::Content(_) => return Action::SendContent,
            State::Closed => return Action::Failed(Failure::temporary("the conversation is over".into())),
            State::Refused(failure) => {
                let failure = failure.clone();
                self.state = State::Closed;
                return Action::Failed(failure);
            }
            State::Final(_) => Wait::Content,
            _ => Wait::Command,
        };
        match self.replies.next() {
            Framed::Incomplete => Action::Read(wait),
            Framed::Reply(reply, raw) => self.handle(reply, &raw),
            Framed::OutOfStep(what) => self.out_of_step(what),
        }
    }

    fn handle(&mut self, reply: Reply, raw: &[u8]) -> Action {
        let state = std::mem::replace(&mut self.state, State::Closed);
        if reply.code < 400 && !expected(&state).contains(&reply.code) {
            self.state = state;
            return self.out_of_step("a reply that does not answer the command");
        }
        let positive = reply.code < 400;
        match state {
            State::Greeting if positive => {
                self.command(&self.ehlo_line());
                self.state = State::Ehlo;
                Action::Read(Wait::Command)
            }
            State::Greeting => Action::Failed(Failure::refused("greeted with", &reply)),
            State::Ehlo | State::EhloSecured if !positive => Action::Failed(Failure::refused("EHLO refused", &reply)),
            State::Ehlo | State::EhloSecured => {
                let Ok(ehlo) = EhloResponse::parse(&mut raw.iter()) else {
                    return Action::Failed(Failure::temporary(format!("unreadable EHLO reply: {reply}")));
                };
                self.extensions = Extensions(ehlo.capabilities);
                if self.secured {
                    self.state = State::Ready;
                    return Action::Ready;
                }
                if self.extensions.offers(EXT_START_TLS) {
                    self.command(&CommandLine::constant("STARTTLS"));
                    self.state = State::StartTls;
                    return Action::Read(Wait::Command);
                }
                match self.encryption {
                    Encryption::WhenOffered => {
                        self.state = State::Ready;
                        Action::Ready
                    }
                    Encryption::Required => Action::Failed(Failure::insecure(
                        "TLS is required for this destination but the next hop does not offer STARTTLS".into(),
                    )),
                }
            }
            State::StartTls if positive => {
                self.state = State::Handshake;
                Action::StartTls
            }
            State::StartTls => Action::Failed(Failure::insecure(format!("refused STARTTLS: {reply}"))),
            State::Mail(_) if reply.code == 421 => Action::Lost,
            State::Mail(mut transaction) if positive => match transaction.pending.pop_front() {
                Some(rcpt) => {
                    self.command(&rcpt);
                    self.state = State::Recipient(transaction);
                    Action::Read(Wait::Command)
                }
                None => self.reset(AfterReset::Finish(transaction.outcomes)),
            },
            // The connection is dropped either way; RSET tells the server so politely.
            State::Mail(_) => self.reset(AfterReset::Fail(Failure::refused("MAIL FROM refused", &reply))),
            State::Recipient(_) | State::Data(_) if reply.code == 421 => {
                Action::Failed(Failure::temporary(format!("the next hop closed the transaction: {reply}")))
            }
            State::Recipient(mut transaction) => {
                transaction.outcomes.push(if positive { Ok(reply) } else { Err(reply) });
                if let Some(rcpt) = transaction.pending.pop_front() {
                    self.command(&rcpt);
                    self.state = State::Recipient(transaction);
                    return Action::Read(Wait::Command);
                }
                if transaction.outcomes.iter().any(Result::is_ok) {
                    self.command(&CommandLine::constant("DATA"));
                    self.state = State::Data(transaction);
                    return Action::Read(Wait::Command);
                }
                self.reset(AfterReset::Finish(transaction.outcomes))
            }
            State::Data(transaction) if positive => {
                self.state = State::Content(transaction);
                Action::SendContent
            }
            State::Data(transaction) => {
                let outcomes =
                    transaction.outcomes.into_iter().map(|outcome| outcome.and(Err(reply.clone()))).collect();
                self.reset(AfterReset::Finish(outcomes))
            }
            State::Final(transaction) => {
                let reusable = reply.code != 421;
                let result = if positive { Ok(reply) } else { Err(reply) };
                let outcomes = transaction.outcomes.into_iter().map(|outcome| outcome.and(result.clone())).collect();
                if reusable {
                    self.state = State::Ready;
                }
                Action::Finished { outcomes, reusable }
            }
            State::Reset(after) => {
                let action = Self::after_reset(after, reply.code == 250);
                if matches!(action, Action::Finished { reusable: true, .. }) {
                    self.state = State::Ready;
                }
                action
            }
            State::ProbeMail(rcpt) if positive => {
                self.command(&rcpt);
                self.state = State::ProbeRecipient;
                Action::Read(Wait::Command)
            }
            State::ProbeMail(_) => {
                self.command(&CommandLine::constant("QUIT"));
                Action::Failed(Failure::refused("MAIL FROM:<> refused", &reply))
            }
            State::ProbeRecipient => {
                self.command(&CommandLine::constant("QUIT"));
                Action::Probed(reply)
            }
            State::Ready | State::Handshake | State::Content(_) | State::Refused(_) | State::Closed => {
                self.out_of_step("a reply nobody asked for")
            }
        }
    }

    fn reset(&mut self, after: AfterReset) -> Action {
        self.command(&CommandLine::constant("RSET"));
        self.state = State::Reset(after);
        Action::Read(Wait::Command)
    }

    fn after_reset(after: AfterReset, in_step: bool) -> Action {
        match after {
            AfterReset::Fail(failure) => Action::Failed(failure),
            AfterReset::Finish(outcomes) => Action::Finished { outcomes, reusable: in_step },
        }
    }

    /// A reply that cannot be trusted: the conversation ends, keeping what was decided.
    fn out_of_step(&mut self, what: &str) -> Action {
        let reason = format!("reply sequence out of step ({what}); connection closed");
        match std::mem::replace(&mut self.state, State::Closed) {
            State::Reset(after) => Self::after_reset(after, false),
            State::Mail(_) => Action::Failed(Failure::temporary(reason)),
            state => {
                self.state = state;
                self.closed(&reason)
            }
        }
    }

    fn ehlo_line(&self) -> CommandLine {
        // The hostname is validated config; a control character in it still never reaches the
        // wire (the next hop refuses the empty EHLO).
        CommandLine::new(format!("EHLO {}", self.hostname)).unwrap_or_else(|| CommandLine::constant("EHLO"))
    }

    fn command(&mut self, line: &CommandLine) {
        self.output.extend_from_slice(line.as_str().as_bytes());
        self.output.extend_from_slice(b"\r\n");
    }
}

/// The positive codes that may answer in `state`; 4xx and 5xx always may.
fn expected(state: &State) -> &'static [u16] {
    match state {
        State::Greeting | State::StartTls => &[220],
        State::Data(_) => &[354],
        State::Recipient(_) | State::ProbeRecipient => &[250, 251],
        State::Ehlo | State::EhloSecured | State::Mail(_) | State::Final(_) | State::Reset(_) | State::ProbeMail(_) => {
            &[250]
        }
        State::Ready | State::Handshake | State::Content(_) | State::Refused(_) | State::Closed => &[],
    }
}

#[cfg(test)]
mod tests;
