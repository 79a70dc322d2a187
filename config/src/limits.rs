//! `[mail]` abuse limits: messages and recipients per hour, per authenticated user and per
//! client address, and the per-user overrides in `[[mail.user]]`.

/// At most this many per sliding hour; `0` means no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HourlyLimits {
    /// Transactions (`MAIL FROM`) per hour.
    pub messages: u32,
    /// Accepted recipients (`RCPT TO`) per hour, over all messages.
    pub recipients: u32,
}

impl HourlyLimits {
    /// Per authenticated user: a busy clerk's day fits, a stolen password's spam run does not.
    pub const USER_DEFAULT: Self = Self { messages: 200, recipients: 500 };
    /// Per client address (IPv4, or IPv6 /64) without AUTH and outside `relay_from` (which is
    /// exempt, like Postfix's `smtpd_client_event_limit_exceptions = $mynetworks`): a large
    /// outside provider's one address sending to the province.
    pub const CLIENT_DEFAULT: Self = Self { messages: 500, recipients: 1000 };

    /// `raw` values where given, else `defaults`.
    pub(crate) fn resolve(messages: Option<u32>, recipients: Option<u32>, defaults: Self) -> Self {
        Self { messages: messages.unwrap_or(defaults.messages), recipients: recipients.unwrap_or(defaults.recipients) }
    }
}
