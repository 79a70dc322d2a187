//! lienthong's embedded TURN server (RFC 8656 over RFC 8489 STUN), as a sans-IO core: bytes
//! and the time go in, bytes and actions come out. No sockets, no clock, no randomness
//! inside (the secrets are passed in), so tests drive it deterministically.
//!
//! It is a TURN server with one purpose: letting browsers behind firewalls that allow only
//! TCP/TLS to port 443 reach the appliance's own SFU. So it is no open relay: permissions
//! and channels can only name [`ServerConfig::allowed_peers`] (the SFU's media addresses);
//! anything else is refused with 403. Allocations are capped per participant and in total,
//! expire when idle, and each has a byte budget per direction.
//!
//! The driver (in `lienthong-sfu`) owns the sockets: the client transports (UDP, TCP, TLS)
//! and one UDP relay socket per allocation, which it opens when asked by
//! [`Output::OpenRelay`].

#![forbid(unsafe_code)]

mod allocation;
pub mod credentials;
pub mod message;
mod responses;
mod server;

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

pub use credentials::{Credential, Credentials, Secret};
pub use server::{Limits, Server, ServerConfig, Stats};

/// Errors of the TURN core: what was wrong with bytes from the network.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The bytes are not a well-formed STUN message or ChannelData frame.
    #[error("malformed TURN message: {0}")]
    Malformed(&'static str),
}

/// How a client reaches the TURN server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
}

/// A client's transport 5-tuple: an allocation belongs to exactly one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Client {
    pub transport: Transport,
    pub remote: SocketAddr,
    pub local: SocketAddr,
}

/// The time, passed in: monotonic for lifetimes and budgets, Unix seconds for credentials.
#[derive(Debug, Clone, Copy)]
pub struct Now {
    pub instant: Instant,
    pub unix_seconds: u64,
}

/// What the driver must do.
#[derive(Debug, PartialEq, Eq)]
pub enum Output {
    /// Send these bytes to the client over its transport.
    ToClient { client: Client, data: Vec<u8> },
    /// Send this datagram from the relay socket `relay` to `peer` (always an allowed peer).
    ToPeer { relay: SocketAddr, peer: SocketAddr, data: Vec<u8> },
    /// Open a UDP relay socket on `ip` (any free port) and report it with
    /// [`Server::relay_opened`].
    OpenRelay { client: Client, ip: IpAddr },
    /// The allocation that owned this relay socket is gone: close it.
    CloseRelay { relay: SocketAddr },
}
