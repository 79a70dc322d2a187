//! `RCPT` for a local domain from an untrusted client: is there such a mailbox? Refusing
//! unknown recipients here, instead of bouncing later to a sender that may be forged, keeps
//! the relay from sending backscatter in the province's name.

use super::{Recipient, RecipientStatus, Recipients, Session, State};

impl Session {
    /// Accepts `recipient` now, refuses it, or asks the driver to check it first.
    pub(super) fn accept_recipient(&mut self, recipient: Recipient, trusted: bool) {
        let check = if trusted { None } else { self.policy.recipients.get(recipient.address.domain()) };
        match check {
            None => self.add_recipient(recipient),
            Some(Recipients::Listed(known)) => {
                let local = recipient.address.local().to_lowercase();
                if local == "postmaster" || known.contains(&local) {
                    self.add_recipient(recipient);
                } else {
                    self.refuse_unknown(&recipient);
                }
            }
            Some(Recipients::Probe) => {
                self.pending_recipient = Some(recipient);
                self.state = State::VerifyRecipient;
            }
        }
    }

    /// The driver's answer for the recipient of [`super::Action::VerifyRecipient`].
    pub fn verification_result(&mut self, status: RecipientStatus) {
        self.state = State::Command;
        let Some(recipient) = self.pending_recipient.take() else { return };
        match status {
            RecipientStatus::Exists => self.add_recipient(recipient),
            RecipientStatus::Unknown => self.refuse_unknown(&recipient),
            RecipientStatus::Unverified => {
                let address = recipient.address;
                self.error(
                    450,
                    "4.1.1",
                    &format!("<{address}>: Recipient address rejected: unverified address; try again later"),
                )
            }
        }
    }

    fn add_recipient(&mut self, recipient: Recipient) {
        if let Some(envelope) = &mut self.envelope
            && !envelope.recipients.iter().any(|known| known.address == recipient.address)
        {
            envelope.recipients.push(recipient);
        }
        self.reply(250, "2.1.5", "Ok");
    }

    fn refuse_unknown(&mut self, recipient: &Recipient) {
        let address = &recipient.address;
        self.error(550, "5.1.1", &format!("<{address}>: Recipient address rejected: User unknown"));
    }
}
