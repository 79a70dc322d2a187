//! What a session needs to know from the config, computed once per (re)load.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;
use lienthong_config::{Config, RecipientCheck};

use super::memory::MemoryBudget;
use crate::limits::{Limits, Subject};

/// Which port a session arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// Port 25: mail from the world for local domains; relay only for trusted clients.
    Mx,
    /// Port 587: clients must STARTTLS and AUTH before sending.
    Submission,
    /// Port 465: TLS from the first byte, then AUTH.
    Submissions,
}

impl Listener {
    pub fn is_submission(self) -> bool {
        !matches!(self, Listener::Mx)
    }
}

/// The relay rules a session applies. Sessions keep the policy they started with, so a reload
/// changes new sessions only.
#[derive(Debug, Clone)]
pub struct Policy {
    pub hostname: String,
    pub max_message_size: usize,
    pub max_recipients: usize,
    /// Errors (4xx/5xx replies) a client may collect before it is disconnected.
    pub max_errors: u32,
    pub local_domains: HashSet<String>,
    pub relay_from: Vec<IpNet>,
    /// login -> addresses it may send as.
    pub users: HashMap<String, Vec<String>>,
    /// Sessions at once per client (IPv4 address or IPv6 /64) outside `relay_from`.
    pub max_connections_per_client: usize,
    /// The relay-wide budget for message data held while receiving.
    pub memory: Arc<MemoryBudget>,
    /// Hourly limits and suspended users, shared by all sessions and updated in place on
    /// reload (so a suspension reaches sessions that are already authenticated).
    pub limits: Arc<Limits>,
    /// How recipients of each local domain are checked for untrusted clients; a domain not
    /// listed here is not checked.
    pub recipients: HashMap<String, Recipients>,
}

/// How a local domain's recipients are known to exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recipients {
    /// Ask the domain's mailbox server (the driver does, through a cache).
    Probe,
    /// Only these local parts (lowercase), and `postmaster`.
    Listed(HashSet<String>),
}

impl Policy {
    pub fn from_config(config: &Config) -> Self {
        let mail = &config.mail;
        Self {
            hostname: mail.hostname.as_str().to_owned(),
            max_message_size: usize::try_from(mail.max_message_size).unwrap_or(usize::MAX),
            max_recipients: mail.max_recipients as usize,
            max_errors: 10,
            local_domains: mail.domains.iter().map(|domain| domain.name.as_str().to_owned()).collect(),
            relay_from: mail.relay_from.clone(),
            users: mail.users.iter().map(|user| (user.login.clone(), user.may_send_as.clone())).collect(),
            max_connections_per_client: mail.max_connections_per_client as usize,
            memory: MemoryBudget::new(usize::try_from(mail.max_message_memory).unwrap_or(usize::MAX)),
            limits: Arc::new(Limits::new(config)),
            recipients: mail
                .domains
                .iter()
                .map(|domain| {
                    let check = match &domain.recipients {
                        RecipientCheck::Probe => Recipients::Probe,
                        RecipientCheck::List(parts) => Recipients::Listed(parts.iter().cloned().collect()),
                    };
                    (domain.name.as_str().to_owned(), check)
                })
                .collect(),
        }
    }

    pub fn is_local_domain(&self, domain: &str) -> bool {
        self.local_domains.contains(domain)
    }

    /// Whom a transaction from `peer` (authenticated as `login`, if at all) counts against.
    pub fn limit_subject<'a>(&self, login: Option<&'a str>, peer: IpAddr) -> Subject<'a> {
        match login {
            Some(login) => Subject::User(login),
            None if self.may_relay_without_auth(peer) => Subject::Exempt,
            None => Subject::Client(peer),
        }
    }

    pub fn may_relay_without_auth(&self, peer: IpAddr) -> bool {
        let peer = match peer {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(peer),
            v4 => v4,
        };
        self.relay_from.iter().any(|network| network.contains(&peer))
    }
}
