//! The TURN server state machine: authentication, allocations, permissions, channels and
//! the relaying of data between clients and the allowed peers.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use crate::allocation::{Allocation, ByteBudget};
use crate::credentials::{Credentials, UsernameProblem};
use crate::message::{self, Builder, Class, Message, attribute, method};
use crate::responses::{allocated, error, success, unknown_attributes};
use crate::{Client, Now, Output, Transport};

/// RFC 8656 section 9: permissions last 300 s, channels 600 s.
const PERMISSION_LIFETIME: Duration = Duration::from_secs(300);
const CHANNEL_LIFETIME: Duration = Duration::from_secs(600);
/// UDP in REQUESTED-TRANSPORT (the only relay transport TURN defines for browsers).
const PROTOCOL_UDP: u8 = 17;
/// Attributes a TURN request may carry that this server understands.
const KNOWN: &[u16] = &[
    attribute::USERNAME,
    attribute::MESSAGE_INTEGRITY,
    attribute::REALM,
    attribute::NONCE,
    attribute::LIFETIME,
    attribute::REQUESTED_TRANSPORT,
    attribute::REQUESTED_ADDRESS_FAMILY,
    attribute::XOR_PEER_ADDRESS,
    attribute::CHANNEL_NUMBER,
    attribute::DATA,
    0x001A, // DONT-FRAGMENT: the relay's only peer is on this host, so nothing is fragmented.
];

/// Caps and timers.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Allocations at once, over all clients.
    pub max_allocations: usize,
    /// Allocations one participant (one credential's user part) may hold.
    pub max_allocations_per_participant: usize,
    /// Bytes per second one allocation may send to the SFU, and receive from it.
    pub to_peer_bytes_per_second: u64,
    pub to_client_bytes_per_second: u64,
    pub default_lifetime: Duration,
    pub max_lifetime: Duration,
    /// An allocation that relays nothing for this long is removed.
    pub idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_allocations: 1000,
            // Chromium allocates once per TURN URL and network interface: two URLs on two
            // interfaces, and an ICE restart's new set, fit.
            max_allocations_per_participant: 8,
            // A browser uploads a few Mbit/s (camera simulcast, screen); it receives a whole
            // room's video.
            to_peer_bytes_per_second: 1_500_000,
            to_client_bytes_per_second: 6_000_000,
            default_lifetime: Duration::from_secs(600),
            max_lifetime: Duration::from_secs(3600),
            idle_timeout: Duration::from_secs(120),
        }
    }
}

/// What the server relays to and how it authenticates.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The REALM of the long-term credentials.
    pub realm: String,
    /// The only peers anything may be relayed to or from: the SFU's media addresses.
    pub allowed_peers: Vec<SocketAddr>,
    pub limits: Limits,
}

/// Counters for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub packets_to_peer: u64,
    pub packets_to_client: u64,
    pub bytes_to_peer: u64,
    pub bytes_to_client: u64,
    /// Permission, channel or send requests for a peer that is not allowed.
    pub forbidden_peer: u64,
    /// Wrong passwords, expired or malformed usernames.
    pub refused_credentials: u64,
    /// Allocations refused by a cap.
    pub refused_quota: u64,
    /// Packets dropped because an allocation was over its byte budget.
    pub over_budget: u64,
}

struct Authenticated {
    username: String,
    key: [u8; 16],
}

/// The TURN server core.
pub struct Server {
    config: ServerConfig,
    credentials: Credentials,
    allocations: HashMap<Client, Allocation>,
    by_relay: HashMap<SocketAddr, Client>,
    per_participant: HashMap<String, usize>,
    stats: Stats,
    next_indication: u64,
}

impl Server {
    pub fn new(config: ServerConfig, credentials: Credentials) -> Self {
        Server {
            config,
            credentials,
            allocations: HashMap::new(),
            by_relay: HashMap::new(),
            per_participant: HashMap::new(),
            stats: Stats::default(),
            next_indication: 0,
        }
    }

    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Allocations at present (including those whose relay socket is being opened).
    pub fn allocations(&self) -> usize {
        self.allocations.len()
    }

    /// True when `client` holds an allocation (the driver closes idle streams without one).
    pub fn has_allocation(&self, client: &Client) -> bool {
        self.allocations.contains_key(client)
    }

    /// One STUN message or ChannelData frame from a client.
    pub fn handle_client(&mut self, now: Now, client: Client, data: &[u8], out: &mut Vec<Output>) {
        if data.first().is_some_and(|byte| byte & 0xC0 == 0x40) {
            self.channel_data(now, client, data, out);
            return;
        }
        let Ok(request) = Message::parse(data) else { return };
        match (request.class, request.method) {
            (Class::Request, method::BINDING) => {
                let mut builder = Builder::new(method::BINDING, Class::Success, request.transaction);
                builder.xor_address(attribute::XOR_MAPPED_ADDRESS, client.remote);
                out.push(Output::ToClient { client, data: builder.fingerprint() });
            }
            (Class::Request, method::ALLOCATE) => self.allocate(now, client, &request, out),
            (Class::Request, method::REFRESH) => self.refresh(now, client, &request, out),
            (Class::Request, method::CREATE_PERMISSION) => self.create_permission(now, client, &request, out),
            (Class::Request, method::CHANNEL_BIND) => self.channel_bind(now, client, &request, out),
            (Class::Indication, method::SEND) => self.send(now, client, &request, out),
            (Class::Request, _) => error(client, &request, 400, "Bad Request", None, out),
            _ => {}
        }
    }

    /// A datagram that arrived on relay socket `relay` from `peer`.
    pub fn handle_peer(&mut self, now: Now, relay: SocketAddr, peer: SocketAddr, data: &[u8], out: &mut Vec<Output>) {
        let Some(client) = self.by_relay.get(&relay).copied() else { return };
        let Some(allocation) = self.allocations.get_mut(&client) else { return };
        if !self.config.allowed_peers.contains(&peer) || !allocation.permits(now.instant, peer) {
            return;
        }
        if !allocation.to_client.take(now.instant, data.len()) {
            self.stats.over_budget += 1;
            return;
        }
        allocation.last_activity = now.instant;
        let frame = match allocation.channel_for(now.instant, peer) {
            Some(number) => message::channel_data(number, data, client.transport != Transport::Udp),
            None => {
                self.next_indication += 1;
                let mut transaction = [0u8; 12];
                transaction[4..].copy_from_slice(&self.next_indication.to_be_bytes());
                let mut builder = Builder::new(method::DATA, Class::Indication, transaction);
                builder.xor_address(attribute::XOR_PEER_ADDRESS, peer).attribute(attribute::DATA, data);
                builder.finish()
            }
        };
        self.stats.packets_to_client += 1;
        self.stats.bytes_to_client += data.len() as u64;
        out.push(Output::ToClient { client, data: frame });
    }

    /// The driver opened (or failed to open) the relay socket asked for by
    /// [`Output::OpenRelay`]; answers the Allocate.
    pub fn relay_opened(&mut self, now: Now, client: Client, relay: Option<SocketAddr>, out: &mut Vec<Output>) {
        let Some(allocation) = self.allocations.get_mut(&client).filter(|allocation| allocation.relay.is_none()) else {
            if let Some(relay) = relay {
                out.push(Output::CloseRelay { relay });
            }
            return;
        };
        match relay {
            Some(relay) => {
                allocation.relay = Some(relay);
                self.by_relay.insert(relay, client);
                out.push(Output::ToClient { client, data: allocated(now, client, allocation, relay) });
            }
            None => {
                let mut builder = Builder::new(method::ALLOCATE, Class::Error, allocation.transaction);
                builder.error(508, "Insufficient Capacity").integrity(&allocation.key);
                out.push(Output::ToClient { client, data: builder.fingerprint() });
                self.remove(client, out);
            }
        }
    }

    /// The client's TCP or TLS connection closed: its allocation ends with it.
    pub fn client_closed(&mut self, client: Client, out: &mut Vec<Output>) {
        self.remove(client, out);
    }

    /// Expires allocations, permissions and channels. Call about once a second.
    pub fn handle_timeout(&mut self, now: Now, out: &mut Vec<Output>) {
        let idle = self.config.limits.idle_timeout;
        let over: Vec<Client> = self
            .allocations
            .iter_mut()
            .filter_map(|(client, allocation)| allocation.expire(now.instant, idle).then_some(*client))
            .collect();
        for client in over {
            self.remove(client, out);
        }
    }

    fn allocate(&mut self, now: Now, client: Client, request: &Message<'_>, out: &mut Vec<Output>) {
        let Some(auth) = self.authenticate(now, client, request, out) else { return };
        if let Some(existing) = self.allocations.get(&client) {
            // A retransmitted Allocate gets the same answer; anything else is a mismatch.
            if existing.transaction == request.transaction && existing.username == auth.username {
                if let Some(relay) = existing.relay {
                    out.push(Output::ToClient { client, data: allocated(now, client, existing, relay) });
                }
                return;
            }
            return error(client, request, 437, "Allocation Mismatch", Some(&auth.key), out);
        }
        let participant = match self.credentials.check_username(&auth.username, now.unix_seconds) {
            Ok(participant) => participant.to_owned(),
            Err(problem) => {
                self.stats.refused_credentials += 1;
                let reason = if problem == UsernameProblem::Expired { "Credentials Expired" } else { "Unauthorized" };
                return self.challenge(now, client, request, 401, reason, out);
            }
        };
        let unknown = request.unknown_required(KNOWN);
        if !unknown.is_empty() {
            return unknown_attributes(client, request, &unknown, &auth.key, out);
        }
        match request.get(attribute::REQUESTED_TRANSPORT) {
            None => return error(client, request, 400, "Bad Request", Some(&auth.key), out),
            Some(value) if value.first() != Some(&PROTOCOL_UDP) => {
                return error(client, request, 442, "Unsupported Transport Protocol", Some(&auth.key), out);
            }
            Some(_) => {}
        }
        let want_ipv6 = match request.get(attribute::REQUESTED_ADDRESS_FAMILY).map(|value| value.first().copied()) {
            None => false,
            Some(Some(0x01)) => false,
            Some(Some(0x02)) => true,
            Some(_) => return error(client, request, 440, "Address Family not Supported", Some(&auth.key), out),
        };
        let Some(peer) = self.config.allowed_peers.iter().find(|peer| peer.is_ipv6() == want_ipv6) else {
            return error(client, request, 440, "Address Family not Supported", Some(&auth.key), out);
        };
        let ip = peer.ip();
        let held = self.per_participant.get(&participant).copied().unwrap_or(0);
        let limits = &self.config.limits;
        if self.allocations.len() >= limits.max_allocations {
            self.stats.refused_quota += 1;
            return error(client, request, 508, "Insufficient Capacity", Some(&auth.key), out);
        }
        if held >= limits.max_allocations_per_participant {
            self.stats.refused_quota += 1;
            return error(client, request, 486, "Allocation Quota Reached", Some(&auth.key), out);
        }
        let lifetime = self.lifetime(request);
        let allocation = Allocation {
            relay: None,
            transaction: request.transaction,
            username: auth.username,
            participant: participant.clone(),
            key: auth.key,
            expires: now.instant + lifetime,
            last_activity: now.instant,
            permissions: Vec::new(),
            channels: Vec::new(),
            to_peer: ByteBudget::new(now.instant, limits.to_peer_bytes_per_second, limits.to_peer_bytes_per_second),
            to_client: ByteBudget::new(
                now.instant,
                limits.to_client_bytes_per_second,
                limits.to_client_bytes_per_second,
            ),
        };
        self.allocations.insert(client, allocation);
        *self.per_participant.entry(participant).or_insert(0) += 1;
        out.push(Output::OpenRelay { client, ip });
    }

    fn refresh(&mut self, now: Now, client: Client, request: &Message<'_>, out: &mut Vec<Output>) {
        let Some(key) = self.authorize(now, client, request, out) else { return };
        let lifetime = match request.u32(attribute::LIFETIME) {
            Some(0) => Duration::ZERO,
            _ => self.lifetime(request),
        };
        if lifetime.is_zero() {
            self.remove(client, out);
        } else if let Some(allocation) = self.allocations.get_mut(&client) {
            allocation.expires = now.instant + lifetime;
        }
        let mut builder = Builder::new(method::REFRESH, Class::Success, request.transaction);
        builder.u32(attribute::LIFETIME, lifetime.as_secs() as u32).integrity(&key);
        out.push(Output::ToClient { client, data: builder.fingerprint() });
    }

    fn create_permission(&mut self, now: Now, client: Client, request: &Message<'_>, out: &mut Vec<Output>) {
        let Some(key) = self.authorize(now, client, request, out) else { return };
        let peers: Option<Vec<SocketAddr>> = request
            .all(attribute::XOR_PEER_ADDRESS)
            .map(|value| message::decode_xor_address(value, &request.transaction))
            .collect();
        let Some(peers) = peers.filter(|peers| !peers.is_empty()) else {
            return error(client, request, 400, "Bad Request", Some(&key), out);
        };
        if peers.iter().any(|peer| !self.config.allowed_peers.contains(peer)) {
            self.stats.forbidden_peer += 1;
            return error(client, request, 403, "Forbidden", Some(&key), out);
        }
        if let Some(allocation) = self.allocations.get_mut(&client) {
            for peer in peers {
                allocation.permit(peer, now.instant + PERMISSION_LIFETIME);
            }
        }
        success(client, request, &key, out);
    }

    fn channel_bind(&mut self, now: Now, client: Client, request: &Message<'_>, out: &mut Vec<Output>) {
        let Some(key) = self.authorize(now, client, request, out) else { return };
        let number = request.get(attribute::CHANNEL_NUMBER).filter(|value| value.len() == 4);
        let number = number.map(|value| u16::from_be_bytes([value[0], value[1]]));
        let peer = request.xor_address(attribute::XOR_PEER_ADDRESS);
        let (Some(number), Some(peer)) = (number.filter(|number| (0x4000..=0x4FFF).contains(number)), peer) else {
            return error(client, request, 400, "Bad Request", Some(&key), out);
        };
        if !self.config.allowed_peers.contains(&peer) {
            self.stats.forbidden_peer += 1;
            return error(client, request, 403, "Forbidden", Some(&key), out);
        }
        let Some(allocation) = self.allocations.get_mut(&client) else { return };
        if !allocation.bind(number, peer, now.instant + CHANNEL_LIFETIME) {
            return error(client, request, 400, "Bad Request", Some(&key), out);
        }
        allocation.permit(peer, now.instant + PERMISSION_LIFETIME);
        success(client, request, &key, out);
    }

    fn send(&mut self, now: Now, client: Client, indication: &Message<'_>, out: &mut Vec<Output>) {
        let (Some(peer), Some(data)) =
            (indication.xor_address(attribute::XOR_PEER_ADDRESS), indication.get(attribute::DATA))
        else {
            return;
        };
        if !self.config.allowed_peers.contains(&peer) {
            self.stats.forbidden_peer += 1;
            return;
        }
        self.relay_to_peer(now, client, peer, data, out);
    }

    fn channel_data(&mut self, now: Now, client: Client, frame: &[u8], out: &mut Vec<Output>) {
        let Some((number, data)) = message::parse_channel_data(frame) else { return };
        let Some(peer) =
            self.allocations.get(&client).and_then(|allocation| allocation.channel_peer(now.instant, number))
        else {
            return;
        };
        self.relay_to_peer(now, client, peer, data, out);
    }

    fn relay_to_peer(&mut self, now: Now, client: Client, peer: SocketAddr, data: &[u8], out: &mut Vec<Output>) {
        let Some(allocation) = self.allocations.get_mut(&client) else { return };
        let Some(relay) = allocation.relay else { return };
        if !allocation.permits(now.instant, peer) {
            return;
        }
        if !allocation.to_peer.take(now.instant, data.len()) {
            self.stats.over_budget += 1;
            return;
        }
        allocation.last_activity = now.instant;
        self.stats.packets_to_peer += 1;
        self.stats.bytes_to_peer += data.len() as u64;
        out.push(Output::ToPeer { relay, peer, data: data.to_vec() });
    }

    /// Authenticates a request on an existing allocation: same user, known attributes only.
    fn authorize(
        &mut self,
        now: Now,
        client: Client,
        request: &Message<'_>,
        out: &mut Vec<Output>,
    ) -> Option<[u8; 16]> {
        let auth = self.authenticate(now, client, request, out)?;
        let Some(allocation) = self.allocations.get(&client) else {
            error(client, request, 437, "Allocation Mismatch", Some(&auth.key), out);
            return None;
        };
        if allocation.username != auth.username {
            self.stats.refused_credentials += 1;
            error(client, request, 441, "Wrong Credentials", Some(&auth.key), out);
            return None;
        }
        let unknown = request.unknown_required(KNOWN);
        if !unknown.is_empty() {
            unknown_attributes(client, request, &unknown, &auth.key, out);
            return None;
        }
        Some(auth.key)
    }

    /// The long-term credential check (RFC 8489 section 9.2.4).
    fn authenticate(
        &mut self,
        now: Now,
        client: Client,
        request: &Message<'_>,
        out: &mut Vec<Output>,
    ) -> Option<Authenticated> {
        if !request.has_integrity() {
            self.challenge(now, client, request, 401, "Unauthorized", out);
            return None;
        }
        let (Some(username), Some(realm), Some(nonce)) =
            (request.text(attribute::USERNAME), request.text(attribute::REALM), request.text(attribute::NONCE))
        else {
            error(client, request, 400, "Bad Request", None, out);
            return None;
        };
        if realm != self.config.realm {
            self.challenge(now, client, request, 401, "Unauthorized", out);
            return None;
        }
        if !self.credentials.nonce_is_fresh(nonce, client.remote, now.unix_seconds) {
            self.challenge(now, client, request, 438, "Stale Nonce", out);
            return None;
        }
        let key = self.credentials.key(username, realm);
        if !request.verify_integrity(&key) {
            self.stats.refused_credentials += 1;
            self.challenge(now, client, request, 401, "Unauthorized", out);
            return None;
        }
        Some(Authenticated { username: username.to_owned(), key })
    }

    /// An error that tells the client the realm and a fresh nonce to (re)try with.
    fn challenge(
        &self,
        now: Now,
        client: Client,
        request: &Message<'_>,
        code: u16,
        reason: &str,
        out: &mut Vec<Output>,
    ) {
        let mut builder = Builder::new(request.method, Class::Error, request.transaction);
        builder
            .error(code, reason)
            .attribute(attribute::REALM, self.config.realm.as_bytes())
            .attribute(attribute::NONCE, self.credentials.nonce(client.remote, now.unix_seconds).as_bytes());
        out.push(Output::ToClient { client, data: builder.fingerprint() });
    }

    fn lifetime(&self, request: &Message<'_>) -> Duration {
        let limits = &self.config.limits;
        match request.u32(attribute::LIFETIME) {
            Some(seconds) => {
                Duration::from_secs(u64::from(seconds)).clamp(limits.default_lifetime, limits.max_lifetime)
            }
            None => limits.default_lifetime,
        }
    }

    fn remove(&mut self, client: Client, out: &mut Vec<Output>) {
        let Some(allocation) = self.allocations.remove(&client) else { return };
        if let Some(relay) = allocation.relay {
            self.by_relay.remove(&relay);
            out.push(Output::CloseRelay { relay });
        }
        if let Some(count) = self.per_participant.get_mut(&allocation.participant) {
            *count -= 1;
            if *count == 0 {
                self.per_participant.remove(&allocation.participant);
            }
        }
    }
}

#[cfg(test)]
#[path = "server_tests.rs"]
mod tests;
