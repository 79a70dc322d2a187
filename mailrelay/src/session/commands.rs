//! Command handling for [`Session`]: one function per SMTP verb.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use smtp_proto::{Error as ParseError, MailFrom, RcptTo, Request};

use super::data::DataReader;
use super::{Action, Envelope, Recipient, Session, State};
use crate::address::{Address, AddressProblem, may_send_as};
use crate::esmtp::{self, BodyType, MailParameters, ParameterError, RcptParameters};
use crate::limits::{Admission, Kind};

impl Session {
    pub(super) fn command(&mut self, line: &[u8]) -> Option<Action> {
        // A CR or other control character inside a command is never legitimate; refusing it
        // here keeps it out of every later step (RFC 5321 2.3.8, 4.1.1).
        let text = line.strip_suffix(b"\n").unwrap_or(line);
        let text = text.strip_suffix(b"\r").unwrap_or(text);
        if text.iter().any(|&byte| byte.is_ascii_control()) {
            self.error(500, "5.5.2", "Control characters are not allowed in commands");
            return None;
        }
        let request = match Request::parse(&mut line.iter()) {
            Ok(request) => request,
            Err(error) => {
                self.parse_error(error);
                return None;
            }
        };
        match request {
            Request::Ehlo { host } => self.hello(&host, true),
            Request::Helo { host } => self.hello(&host, false),
            Request::Mail { from } => match esmtp::mail_parameters(line) {
                Ok(parameters) => self.mail(from, parameters),
                Err(error) => self.parameter_error(&error),
            },
            Request::Rcpt { to } => match esmtp::rcpt_parameters(line) {
                Ok(parameters) => self.rcpt(to, parameters),
                Err(error) => self.parameter_error(&error),
            },
            Request::Data => self.data(),
            Request::Bdat { chunk_size, is_last } => self.bdat(chunk_size, is_last),
            Request::Auth { mechanism, initial_response } => return self.auth(mechanism, &initial_response),
            Request::StartTls => return self.starttls(),
            Request::Rset => {
                self.envelope = None;
                self.reset_bdat();
                self.reply(250, "2.0.0", "Ok");
            }
            Request::Noop { .. } => self.reply(250, "2.0.0", "Ok"),
            Request::Quit => {
                self.reply(221, "2.0.0", "Bye");
                self.state = State::Closed;
            }
            Request::Vrfy { .. } => self.reply(252, "2.5.2", "Cannot VRFY user; send mail and it will be delivered"),
            Request::Help { .. } => self.reply(214, "2.0.0", "See RFC 5321"),
            Request::Expn { .. }
            | Request::Etrn { .. }
            | Request::Atrn { .. }
            | Request::Burl { .. }
            | Request::Lhlo { .. } => self.error(502, "5.5.1", "Command not implemented"),
        }
        None
    }

    fn parse_error(&mut self, error: ParseError) {
        match error {
            ParseError::UnknownCommand => self.error(500, "5.5.2", "Command unrecognized"),
            ParseError::InvalidSenderAddress => self.error(501, "5.1.7", "Bad sender address syntax"),
            ParseError::InvalidRecipientAddress => self.error(501, "5.1.3", "Bad recipient address syntax"),
            ParseError::SyntaxError { syntax } => self.error(501, "5.5.4", &format!("Syntax: {syntax}")),
            ParseError::InvalidParameter { param } => self.error(501, "5.5.4", &format!("Invalid parameter {param}")),
            ParseError::UnsupportedParameter { param } => {
                let param: String = param.chars().filter(|c| c.is_ascii_graphic()).take(64).collect();
                self.error(555, "5.5.4", &format!("Unsupported parameter {param}"))
            }
            ParseError::ResponseTooLong => self.error(500, "5.5.6", "Line too long"),
            _ => self.error(500, "5.5.2", "Syntax error"),
        }
    }

    fn parameter_error(&mut self, error: &ParameterError) {
        let (code, enhanced, text) = error.reply();
        self.error(code, enhanced, &text);
    }

    fn hello(&mut self, host: &str, extended: bool) {
        // The name goes into `Received:` and logs: printable ASCII only, as Postfix keeps it.
        let host: String = host
            .chars()
            .take(255)
            .map(|c| if c.is_ascii_graphic() && c != '(' && c != ')' { c } else { '?' })
            .collect();
        self.envelope = None;
        self.reset_bdat();
        self.esmtp = extended;
        let hostname = self.policy.hostname.clone();
        if !extended {
            self.reply(250, "", &hostname);
        } else {
            let mut lines = vec![
                format!("{hostname} Hello {host}"),
                "PIPELINING".to_owned(),
                format!("SIZE {}", self.policy.max_message_size),
                "8BITMIME".to_owned(),
                "SMTPUTF8".to_owned(),
                "ENHANCEDSTATUSCODES".to_owned(),
                "CHUNKING".to_owned(),
                "DSN".to_owned(),
            ];
            if self.tls.is_none() && self.tls_available {
                lines.push("STARTTLS".to_owned());
            }
            if self.tls.is_some() && self.authenticated.is_none() {
                lines.push("AUTH PLAIN LOGIN".to_owned());
            }
            // RFC 8689 2: offered only on a TLS session (after STARTTLS or on port 465).
            if self.tls.is_some() {
                lines.push("REQUIRETLS".to_owned());
            }
            self.reply(250, "", &lines.join("\n"));
        }
        self.helo = Some(host);
    }

    fn mail(&mut self, from: MailFrom<std::borrow::Cow<'_, str>>, parameters: MailParameters) {
        if self.helo.is_none() {
            return self.error(503, "5.5.1", "Send EHLO or HELO first");
        }
        if self.envelope.is_some() {
            return self.error(503, "5.5.1", "Nested MAIL command");
        }
        if self.listener.is_submission() && self.authenticated.is_none() {
            if self.tls.is_none() {
                return self.error(530, "5.7.0", "Must issue a STARTTLS command first");
            }
            return self.error(530, "5.7.0", "Authentication required");
        }
        // A suspension applied by reload reaches sessions that authenticated before it: 550
        // (permanent, the transaction is refused) with the RFC 7372 account-disabled detail.
        if let Some(login) = &self.authenticated
            && self.policy.limits.is_suspended(login)
        {
            return self.error(550, "5.7.13", &format!("Account {login} suspended; contact the postmaster"));
        }
        if parameters.require_tls && self.tls.is_none() {
            metrics::counter!("lienthong_mail_requiretls_refused_total", "stage" => "intake").increment(1);
            return self.error(530, "5.7.10", "REQUIRETLS needs a TLS session: issue STARTTLS first");
        }
        if parameters.size.is_some_and(|size| size > self.policy.max_message_size as u64) {
            let limit = self.policy.max_message_size;
            return self.error(552, "5.3.4", &format!("Message too big (limit {limit} bytes)"));
        }
        let smtputf8 = parameters.smtputf8;
        let sender = if from.address.is_empty() {
            None
        } else {
            match Address::parse(&from.address) {
                Ok(address) if !address.is_ascii() && !smtputf8 => {
                    return self.error(553, "5.6.7", "Non-ASCII address needs the SMTPUTF8 parameter");
                }
                Ok(address) => Some(address),
                Err(_) => return self.error(553, "5.1.7", "Bad sender address syntax"),
            }
        };
        // Mail from the world may not claim a local domain's sender: only its own users (AUTH)
        // and trusted networks may (Postfix's reject_unauthenticated_sender_login_mismatch).
        let outsider = self.authenticated.is_none() && !self.policy.may_relay_without_auth(self.peer);
        if outsider && sender.as_ref().is_some_and(|address| self.policy.is_local_domain(address.domain())) {
            return self.error(
                550,
                "5.7.1",
                "Sender address rejected: a local domain's sender must authenticate (submission port 587)",
            );
        }
        if let Some(login) = &self.authenticated {
            let allowed = self.policy.users.get(login).map(Vec::as_slice).unwrap_or_default();
            let permitted = sender.as_ref().is_some_and(|address| may_send_as(allowed, &address.canonical()));
            if !permitted {
                let shown = sender.as_ref().map(Address::to_string).unwrap_or_else(|| "<>".to_owned());
                return self.error(550, "5.7.1", &format!("{login} may not send as {shown}"));
            }
        }
        // Counted only now, once the transaction would be accepted. 450 (temporary, the client
        // queues and retries) with X.7.28, which RFC 7372 registers for mail floods and large
        // providers use for rate limits; Postfix answers its anvil limits with a 4.7.x too.
        let subject = self.policy.limit_subject(self.authenticated.as_deref(), self.peer);
        if let Admission::Limited { limit, .. } = self.policy.limits.take(subject, Kind::Messages) {
            return self.error(450, "4.7.28", &format!("Too many messages this hour (limit {limit}); try again later"));
        }
        self.envelope = Some(Envelope {
            sender,
            recipients: Vec::new(),
            return_full: parameters.return_full == Some(true),
            envelope_id: parameters.envelope_id,
            eight_bit: parameters.body == BodyType::EightBitMime,
            smtputf8,
            require_tls: parameters.require_tls,
        });
        self.reply(250, "2.1.0", "Ok");
    }

    fn rcpt(&mut self, to: RcptTo<std::borrow::Cow<'_, str>>, parameters: RcptParameters) {
        let Some(envelope) = &self.envelope else {
            return self.error(503, "5.5.1", "Need MAIL before RCPT");
        };
        if envelope.recipients.len() >= self.policy.max_recipients {
            let limit = self.policy.max_recipients;
            return self.error(452, "4.5.3", &format!("Too many recipients (limit {limit} per message)"));
        }
        let smtputf8 = envelope.smtputf8;
        let text = if to.address.is_empty() { self.postmaster() } else { to.address.to_string() };
        let address = match Address::parse(&text) {
            Ok(address) => address,
            Err(AddressProblem::Routing) => {
                return self.error(
                    554,
                    "5.7.1",
                    "Relay access denied: sender-specified routing (%, !, @) is not accepted",
                );
            }
            Err(AddressProblem::Malformed) => return self.error(501, "5.1.3", "Bad recipient address syntax"),
        };
        if !address.is_ascii() && !smtputf8 {
            return self.error(553, "5.6.7", "Non-ASCII address needs the SMTPUTF8 parameter on MAIL");
        }
        let trusted = self.authenticated.is_some() || self.policy.may_relay_without_auth(self.peer);
        if !trusted && !self.policy.is_local_domain(address.domain()) {
            let domain = address.domain().to_owned();
            return self.error(554, "5.7.1", &format!("Relay access denied: {domain} is not a local domain"));
        }
        // 452 as RFC 5321 4.5.3.1.10 says for too many recipients: the client keeps the
        // recipients already accepted, sends to them and retries the rest later.
        let subject = self.policy.limit_subject(self.authenticated.as_deref(), self.peer);
        if let Admission::Limited { limit, .. } = self.policy.limits.take(subject, Kind::Recipients) {
            return self.error(
                452,
                "4.7.28",
                &format!("Too many recipients this hour (limit {limit}); try again later"),
            );
        }
        let recipient = Recipient { address, notify: parameters.notify, original: parameters.original };
        self.accept_recipient(recipient, trusted);
    }

    /// `RCPT TO:<postmaster>` (RFC 5321 4.5.1) goes to the first local domain's postmaster.
    fn postmaster(&self) -> String {
        let mut domains: Vec<&String> = self.policy.local_domains.iter().collect();
        domains.sort();
        domains.first().map(|domain| format!("postmaster@{domain}")).unwrap_or_default()
    }

    fn data(&mut self) {
        match &self.envelope {
            None => self.error(503, "5.5.1", "Need MAIL before DATA"),
            Some(envelope) if envelope.recipients.is_empty() => self.error(554, "5.5.1", "No valid recipients"),
            Some(_) if !self.bdat_body.is_empty() => self.error(503, "5.5.1", "DATA after BDAT is not allowed"),
            Some(_) => {
                self.reply(354, "", "End data with <CR><LF>.<CR><LF>");
                self.state = State::Data(DataReader::new(self.policy.max_message_size));
            }
        }
    }

    fn bdat(&mut self, chunk_size: usize, last: bool) {
        let ready = self.envelope.as_ref().is_some_and(|envelope| !envelope.recipients.is_empty());
        self.state = State::Bdat { remaining: chunk_size, last, discard: !ready };
    }

    fn auth(&mut self, mechanism: u64, initial: &str) -> Option<Action> {
        if self.tls.is_none() {
            self.error(538, "5.7.11", "Encryption required: issue STARTTLS first");
            return None;
        }
        if self.authenticated.is_some() || self.envelope.is_some() {
            self.error(503, "5.5.1", "Already authenticated or in a transaction");
            return None;
        }
        match mechanism {
            smtp_proto::AUTH_PLAIN if initial.is_empty() => {
                self.reply(334, "", "");
                self.state = State::AuthPlain;
                None
            }
            smtp_proto::AUTH_PLAIN => self.auth_plain_response(initial.as_bytes()),
            smtp_proto::AUTH_LOGIN if initial.is_empty() => {
                self.reply(334, "", "VXNlcm5hbWU6");
                self.state = State::AuthLoginUser;
                None
            }
            smtp_proto::AUTH_LOGIN => self.auth_login_user(initial.as_bytes()),
            _ => {
                self.error(504, "5.5.4", "Unsupported mechanism (use PLAIN or LOGIN)");
                None
            }
        }
    }

    pub(super) fn auth_plain_response(&mut self, line: &[u8]) -> Option<Action> {
        self.state = State::Command;
        let decoded = self.decode_auth_line(line)?;
        let parts: Vec<&[u8]> = decoded.split(|&byte| byte == 0).collect();
        let [authorize_as, login, password] = parts.as_slice() else {
            self.error(501, "5.5.2", "Malformed PLAIN response");
            return None;
        };
        let (Ok(login), Ok(password), Ok(authorize_as)) =
            (std::str::from_utf8(login), std::str::from_utf8(password), std::str::from_utf8(authorize_as))
        else {
            self.error(501, "5.5.2", "Credentials are not UTF-8");
            return None;
        };
        let login = login.trim().to_lowercase();
        if !authorize_as.is_empty() && authorize_as.trim().to_lowercase() != login {
            self.error(535, "5.7.8", "Authorization identity differs from the login");
            return None;
        }
        self.state = State::WaitingForDriver;
        Some(Action::Authenticate { login, password: password.to_owned() })
    }

    pub(super) fn auth_login_user(&mut self, line: &[u8]) -> Option<Action> {
        self.state = State::Command;
        let Ok(login) = String::from_utf8(self.decode_auth_line(line)?) else {
            self.error(501, "5.5.2", "Login is not UTF-8");
            return None;
        };
        self.reply(334, "", "UGFzc3dvcmQ6");
        self.state = State::AuthLoginPassword { login: login.trim().to_lowercase() };
        None
    }

    pub(super) fn auth_login_password(&mut self, login: String, line: &[u8]) -> Option<Action> {
        self.state = State::Command;
        let Ok(password) = String::from_utf8(self.decode_auth_line(line)?) else {
            self.error(501, "5.5.2", "Password is not UTF-8");
            return None;
        };
        self.state = State::WaitingForDriver;
        Some(Action::Authenticate { login, password })
    }

    fn starttls(&mut self) -> Option<Action> {
        if self.tls.is_some() {
            self.error(503, "5.5.1", "TLS already active");
            return None;
        }
        if !self.tls_available {
            self.error(454, "4.7.0", "TLS not available");
            return None;
        }
        self.reply(220, "2.0.0", "Ready to start TLS");
        // Anything pipelined after STARTTLS was sent in clear text: never act on it (CVE-2011-0411).
        self.input.clear();
        self.state = State::WaitingForDriver;
        Some(Action::StartTls)
    }
}

/// Decodes one line of an AUTH exchange: `None` when the client cancelled with `*` or sent
/// something that is not base64 (both already answered).
impl Session {
    fn decode_auth_line(&mut self, line: &[u8]) -> Option<Vec<u8>> {
        let text = std::str::from_utf8(line).ok().map(str::trim);
        let decoded = match text {
            Some("*") => {
                self.error(501, "5.0.0", "Authentication cancelled");
                return None;
            }
            Some("=") => Some(Vec::new()),
            Some(text) => BASE64.decode(text).ok(),
            None => None,
        };
        if decoded.is_none() {
            self.error(501, "5.5.2", "Cannot decode the AUTH response (expected base64)");
        }
        decoded
    }
}
