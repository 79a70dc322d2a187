//! One SMTP server session as a sans-IO state machine (RFC 5321, 3207, 4954, 3030, 3461, 6531).
//!
//! The driver feeds received bytes with [`Session::receive`], calls [`Session::advance`] and
//! acts on what it returns (write the output, start TLS, check a password, store a message),
//! reporting results back. No sockets, no clock, no disk in here, so tests drive it in memory.

mod commands;
pub mod data;
pub mod memory;
pub mod policy;
mod recipients;

use std::net::IpAddr;
use std::sync::Arc;

use crate::address::Address;
use crate::esmtp::{EnvelopeId, OriginalRecipient};
use data::{DataProgress, DataReader};
use memory::Reservation;
pub use policy::{Listener, Policy, Recipients};

/// Longest command line accepted (RFC 5321 asks for 512; extensions make lines longer).
pub const MAX_COMMAND_LINE: usize = 4096;
/// Most bytes buffered while the driver is busy (pipelined commands waiting for a reply).
const MAX_BUFFERED_INPUT: usize = 256 * 1024;

/// The negotiated TLS parameters, for `Received:` and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsInfo {
    pub protocol: String,
    pub cipher: String,
}

/// One accepted recipient and its DSN parameters (RFC 3461), kept with the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    pub address: Address,
    /// smtp-proto's `RCPT_NOTIFY_*` bits; 0 when the client sent no NOTIFY.
    pub notify: u64,
    pub original: Option<OriginalRecipient>,
}

/// The envelope of one message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Envelope {
    /// `None` is the null sender `<>` (bounces): it never gets a bounce back.
    pub sender: Option<Address>,
    pub recipients: Vec<Recipient>,
    /// DSN `RET=FULL` (else headers only).
    pub return_full: bool,
    pub envelope_id: Option<EnvelopeId>,
    pub eight_bit: bool,
    pub smtputf8: bool,
    /// `MAIL FROM:<...> REQUIRETLS` (RFC 8689): onward only over verified TLS to a next hop
    /// that offers REQUIRETLS too.
    pub require_tls: bool,
}

/// Where a message came from, for its `Received:` header.
#[derive(Debug, Clone)]
pub struct Trace {
    pub helo: String,
    pub peer: IpAddr,
    pub tls: Option<TlsInfo>,
    pub authenticated: Option<String>,
    pub esmtp: bool,
    pub listener: Listener,
}

/// A complete message the driver must make durable before the session replies.
#[derive(Debug)]
pub struct Incoming {
    pub envelope: Envelope,
    pub trace: Trace,
    /// The message as received, dot-unstuffed, CRLF line endings.
    pub content: Vec<u8>,
}

/// The result of checking AUTH credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthOutcome {
    Accepted,
    Rejected,
    /// Too many failures from this client address recently.
    RateLimited,
    /// The server is checking too many passwords at once; the client may retry.
    Busy,
    /// The password matched but the operator suspended the account (`suspended = true`).
    Suspended,
}

/// Whether a local recipient exists, as its mailbox server (or the cache) says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecipientStatus {
    Exists,
    /// Refused by the mailbox server: `550 5.1.1`.
    Unknown,
    /// The mailbox server could not be asked now: `450 4.1.1`, the client retries.
    Unverified,
}

/// What the driver must do next. Output bytes are always taken with [`Session::take_output`].
#[derive(Debug)]
pub enum Action {
    /// Write the output and read more input.
    NeedInput,
    /// Write the output (the `220` to STARTTLS), then run the TLS handshake and call
    /// [`Session::tls_started`].
    StartTls,
    /// Check these credentials, then call [`Session::authentication_result`].
    Authenticate { login: String, password: String },
    /// Store the message durably, then call [`Session::enqueue_result`].
    Enqueue(Box<Incoming>),
    /// Find out whether this local recipient exists, then call
    /// [`Session::verification_result`].
    VerifyRecipient(Address),
    /// Write the output and close the connection.
    Close,
}

#[derive(Debug)]
enum State {
    Command,
    /// Skipping the rest of a command line that was too long.
    DiscardLine,
    AuthPlain,
    AuthLoginUser,
    AuthLoginPassword {
        login: String,
    },
    Data(DataReader),
    Bdat {
        remaining: usize,
        last: bool,
        discard: bool,
    },
    /// A `RCPT` waits for its recipient check ([`Session::pending_recipient`]).
    VerifyRecipient,
    WaitingForDriver,
    Closed,
}

/// One SMTP session.
#[derive(Debug)]
pub struct Session {
    policy: Arc<Policy>,
    listener: Listener,
    peer: IpAddr,
    tls: Option<TlsInfo>,
    tls_available: bool,
    helo: Option<String>,
    esmtp: bool,
    authenticated: Option<String>,
    envelope: Option<Envelope>,
    /// The recipient of a `RCPT` whose check the driver is doing.
    pending_recipient: Option<Recipient>,
    bdat_body: Vec<u8>,
    bdat_oversized: bool,
    bdat_bare: bool,
    bdat_previous_cr: bool,
    bdat_out_of_memory: bool,
    /// What this session's message buffer holds from the relay-wide memory budget, kept
    /// until the message is stored or refused.
    memory: Reservation,
    state: State,
    input: Vec<u8>,
    output: Vec<u8>,
    errors: u32,
}

impl Session {
    /// A new session; the greeting is already in the output.
    pub fn new(
        policy: Arc<Policy>,
        listener: Listener,
        peer: IpAddr,
        tls: Option<TlsInfo>,
        tls_available: bool,
    ) -> Self {
        let mut session = Self {
            policy: policy.clone(),
            listener,
            peer,
            tls,
            tls_available,
            helo: None,
            esmtp: false,
            authenticated: None,
            envelope: None,
            pending_recipient: None,
            bdat_body: Vec::new(),
            bdat_oversized: false,
            bdat_bare: false,
            bdat_previous_cr: false,
            bdat_out_of_memory: false,
            memory: Reservation::new(policy.memory.clone()),
            state: State::Command,
            input: Vec::new(),
            output: Vec::new(),
            errors: 0,
        };
        let greeting = format!("{} ESMTP lienthong", session.policy.hostname);
        session.reply(220, "", &greeting);
        session
    }

    /// Adds received bytes. Returns false (and closes) when the client floods the buffer.
    pub fn receive(&mut self, bytes: &[u8]) -> bool {
        if self.input.len() + bytes.len() > MAX_BUFFERED_INPUT
            && !matches!(self.state, State::Data(_) | State::Bdat { .. })
        {
            self.reply(421, "4.7.0", "Too much pipelined input; closing");
            self.state = State::Closed;
            return false;
        }
        self.input.extend_from_slice(bytes);
        true
    }

    /// Bytes to write to the client.
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.output)
    }

    pub fn has_output(&self) -> bool {
        !self.output.is_empty()
    }

    /// Processes buffered input until the driver has to act.
    pub fn advance(&mut self) -> Action {
        loop {
            let action = match std::mem::replace(&mut self.state, State::WaitingForDriver) {
                State::Closed => {
                    self.state = State::Closed;
                    return Action::Close;
                }
                State::WaitingForDriver => {
                    self.state = State::WaitingForDriver;
                    return Action::NeedInput;
                }
                State::VerifyRecipient => match &self.pending_recipient {
                    Some(recipient) => return Action::VerifyRecipient(recipient.address.clone()),
                    None => {
                        self.state = State::Command;
                        None
                    }
                },
                State::Data(reader) => self.advance_data(reader),
                State::Bdat { remaining, last, discard } => self.advance_bdat(remaining, last, discard),
                State::DiscardLine => match self.input.iter().position(|&byte| byte == b'\n') {
                    Some(end) => {
                        self.input.drain(..=end);
                        self.state = State::Command;
                        None
                    }
                    None => {
                        self.input.clear();
                        self.state = State::DiscardLine;
                        Some(Action::NeedInput)
                    }
                },
                state => self.advance_line(state),
            };
            // `None`: input was consumed or the state changed; keep going.
            if let Some(action) = action {
                return action;
            }
        }
    }

    /// The TLS handshake finished: forget everything said before it (RFC 3207 4.2).
    pub fn tls_started(&mut self, info: TlsInfo) {
        self.tls = Some(info);
        self.helo = None;
        self.esmtp = false;
        self.envelope = None;
        self.input.clear();
        self.state = State::Command;
    }

    pub fn authentication_result(&mut self, login: &str, outcome: AuthOutcome) {
        self.state = State::Command;
        match outcome {
            AuthOutcome::Accepted => {
                self.authenticated = Some(login.to_owned());
                self.reply(235, "2.7.0", "Authentication successful");
            }
            AuthOutcome::Rejected => self.error(535, "5.7.8", "Authentication credentials invalid"),
            AuthOutcome::RateLimited => {
                self.reply(454, "4.7.0", "Too many failed authentications from your address; try again later");
                self.state = State::Closed;
            }
            AuthOutcome::Busy => self.error(454, "4.7.0", "Temporary authentication failure; try again later"),
            // RFC 7372 3.2 registers X.7.13 "User Account Disabled" with basic code 525 for
            // exactly this (after a successful authentication); 535 5.7.8 would tell the user
            // to fix a password that is right.
            AuthOutcome::Suspended => self.error(525, "5.7.13", "Account suspended; contact the postmaster"),
        }
    }

    /// The driver stored the message (`Ok(queue id)`) or could not (`Err(reason)`, a 451).
    pub fn enqueue_result(&mut self, result: Result<String, String>) {
        self.state = State::Command;
        self.memory.release();
        match result {
            Ok(id) => self.reply(250, "2.0.0", &format!("Ok: queued as {id}")),
            Err(reason) => {
                self.error(451, "4.3.0", &format!("Local error storing the message ({reason}); try again later"))
            }
        }
    }

    /// The driver refused the message after reading it (a sender check): `code` is 4xx or
    /// 5xx, `text` printable ASCII.
    pub fn refuse_message(&mut self, code: u16, enhanced: &str, text: &str) {
        self.state = State::Command;
        self.memory.release();
        self.error(code, enhanced, text);
    }

    /// The client said nothing for too long.
    pub fn timed_out(&mut self) {
        self.reply(421, "4.4.2", "Idle timeout; closing connection");
        self.state = State::Closed;
    }

    /// The driver is shutting down.
    pub fn shutting_down(&mut self) {
        self.reply(421, "4.3.2", "Service shutting down; try again later");
        self.state = State::Closed;
    }

    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    fn advance_line(&mut self, state: State) -> Option<Action> {
        let Some(newline) = self.input.iter().position(|&byte| byte == b'\n') else {
            self.state = state;
            if self.input.len() > MAX_COMMAND_LINE {
                self.input.clear();
                self.state = State::DiscardLine;
                self.error(500, "5.5.6", "Line too long");
                return None;
            }
            return Some(Action::NeedInput);
        };
        let line: Vec<u8> = self.input.drain(..=newline).collect();
        if line.len() > MAX_COMMAND_LINE {
            self.state = State::Command;
            self.error(500, "5.5.6", "Line too long");
            return None;
        }
        match state {
            State::AuthPlain => self.auth_plain_response(&line),
            State::AuthLoginUser => self.auth_login_user(&line),
            State::AuthLoginPassword { login } => self.auth_login_password(login, &line),
            _ => {
                self.state = State::Command;
                self.command(&line)
            }
        }
    }

    fn advance_data(&mut self, mut reader: DataReader) -> Option<Action> {
        let (progress, consumed) = reader.ingest(&self.input, &mut self.memory);
        self.input.drain(..consumed);
        match progress {
            DataProgress::NeedMore => {
                self.state = State::Data(reader);
                Some(Action::NeedInput)
            }
            DataProgress::Complete { .. } => {
                let body = reader.finish();
                self.finish_message(body.bytes, body.oversized, body.bare_line_ending, body.out_of_memory)
            }
        }
    }

    fn advance_bdat(&mut self, remaining: usize, last: bool, discard: bool) -> Option<Action> {
        let take = remaining.min(self.input.len());
        let chunk: Vec<u8> = self.input.drain(..take).collect();
        let remaining = remaining - take;
        if !discard {
            if data::has_bare_line_ending(&chunk, &mut self.bdat_previous_cr) {
                self.bdat_bare = true;
            }
            let limit = self.policy.max_message_size;
            if self.bdat_body.len() + chunk.len() > limit {
                self.bdat_oversized = true;
                self.bdat_body = Vec::new();
                self.memory.release();
            } else if !self.bdat_oversized
                && !self.bdat_out_of_memory
                && !self.memory.append(&mut self.bdat_body, &chunk, limit)
            {
                self.bdat_out_of_memory = true;
                self.bdat_body = Vec::new();
                self.memory.release();
            }
        }
        if remaining > 0 {
            self.state = State::Bdat { remaining, last, discard };
            return Some(Action::NeedInput);
        }
        self.state = State::Command;
        if discard {
            self.error(503, "5.5.1", "BDAT without a valid MAIL and RCPT; chunk discarded");
            return None;
        }
        if !last {
            let size = self.bdat_body.len();
            self.reply(250, "2.0.0", &format!("{size} octets received"));
            return None;
        }
        let body = std::mem::take(&mut self.bdat_body);
        // A CR that ends the last chunk has no LF after it: a bare CR, like inside a chunk.
        let bare = self.bdat_bare || self.bdat_previous_cr;
        let (oversized, out_of_memory) = (self.bdat_oversized, self.bdat_out_of_memory);
        self.finish_message(body, oversized, bare, out_of_memory)
    }

    /// The content's memory stays reserved only while the driver stores it.
    fn finish_message(
        &mut self,
        content: Vec<u8>,
        oversized: bool,
        bare_line_ending: bool,
        out_of_memory: bool,
    ) -> Option<Action> {
        let action = self.check_message(content, oversized, bare_line_ending, out_of_memory);
        if !matches!(action, Some(Action::Enqueue(_))) {
            self.memory.release();
        }
        action
    }

    fn check_message(
        &mut self,
        content: Vec<u8>,
        oversized: bool,
        bare_line_ending: bool,
        out_of_memory: bool,
    ) -> Option<Action> {
        self.state = State::Command;
        self.reset_bdat();
        if out_of_memory && !oversized {
            self.envelope = None;
            self.error(452, "4.3.1", "Insufficient system storage for the message now; try again later");
            return None;
        }
        let Some(envelope) = self.envelope.take() else {
            self.error(503, "5.5.1", "No transaction in progress");
            return None;
        };
        if oversized {
            let limit = self.policy.max_message_size;
            self.error(552, "5.3.4", &format!("Message too big (limit {limit} bytes); not accepted"));
            return None;
        }
        if bare_line_ending {
            self.error(550, "5.6.0", "Message contains a bare CR or LF (lines must end with CRLF); not accepted");
            return None;
        }
        let originators = match crate::message::originators(&content) {
            Ok(originators) => originators,
            Err(problem) => {
                self.error(550, "5.6.0", problem.text());
                return None;
            }
        };
        if let Some(login) = &self.authenticated {
            let allowed = self.policy.users.get(login).map(Vec::as_slice).unwrap_or_default();
            let fields = originators.from.iter().map(|address| (address, "From:"));
            if let Some((address, field)) = fields
                .chain(originators.sender.iter().map(|address| (address, "Sender:")))
                .find(|(address, _)| !crate::address::may_send_as(allowed, address))
            {
                self.error(550, "5.7.1", &format!("You may not send as {address} ({field} header)"));
                return None;
            }
        }
        let trace = Trace {
            helo: self.helo.clone().unwrap_or_default(),
            peer: self.peer,
            tls: self.tls.clone(),
            authenticated: self.authenticated.clone(),
            esmtp: self.esmtp,
            listener: self.listener,
        };
        self.state = State::WaitingForDriver;
        Some(Action::Enqueue(Box::new(Incoming { envelope, trace, content })))
    }

    fn reset_bdat(&mut self) {
        if self.bdat_body.capacity() > 0 {
            // A BDAT body is dropped half-way (RSET, EHLO): so is its memory.
            self.memory.release();
        }
        self.bdat_body = Vec::new();
        self.bdat_out_of_memory = false;
        self.bdat_oversized = false;
        self.bdat_bare = false;
        self.bdat_previous_cr = false;
    }

    /// Writes one reply line (or several, separated by `\n` in `text`).
    fn reply(&mut self, code: u16, enhanced: &str, text: &str) {
        let lines: Vec<&str> = text.split('\n').collect();
        for (index, line) in lines.iter().enumerate() {
            let separator = if index + 1 == lines.len() { ' ' } else { '-' };
            let line: String = line.chars().map(|c| if c.is_control() { '?' } else { c }).collect();
            if enhanced.is_empty() {
                self.output.extend_from_slice(format!("{code}{separator}{line}\r\n").as_bytes());
            } else {
                self.output.extend_from_slice(format!("{code}{separator}{enhanced} {line}\r\n").as_bytes());
            }
        }
    }

    /// A 4xx/5xx reply that counts towards the disconnect limit.
    fn error(&mut self, code: u16, enhanced: &str, text: &str) {
        self.reply(code, enhanced, text);
        self.errors += 1;
        if self.errors >= self.policy.max_errors {
            self.reply(421, "4.7.0", "Too many errors; closing connection");
            self.state = State::Closed;
        }
    }
}

#[cfg(test)]
mod tests;
