//! What a session needs to know from the config, computed once per (re)load.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use ipnet::IpNet;
use lienthong_config::Config;

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
        }
    }

    pub fn is_local_domain(&self, domain: &str) -> bool {
        self.local_domains.contains(domain)
    }

    pub fn may_relay_without_auth(&self, peer: IpAddr) -> bool {
        let peer = match peer {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(peer),
            v4 => v4,
        };
        self.relay_from.iter().any(|network| network.contains(&peer))
    }
}
