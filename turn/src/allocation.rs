//! One TURN allocation: its relayed address, lifetime, permissions, channels and byte
//! budgets. Permissions and channels can only ever name an allowed peer (the SFU's media
//! addresses), so their number is bounded by that short list.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// A token bucket of bytes.
#[derive(Debug)]
pub(crate) struct ByteBudget {
    tokens: f64,
    updated: Instant,
    per_second: f64,
    burst: f64,
}

impl ByteBudget {
    pub fn new(now: Instant, per_second: u64, burst: u64) -> Self {
        ByteBudget { tokens: burst as f64, updated: now, per_second: per_second as f64, burst: burst as f64 }
    }

    /// Takes `bytes` if they fit; a packet that does not is dropped, as a full link would.
    pub fn take(&mut self, now: Instant, bytes: usize) -> bool {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.burst);
        self.updated = now;
        if self.tokens >= bytes as f64 {
            self.tokens -= bytes as f64;
            true
        } else {
            false
        }
    }
}

#[derive(Debug)]
pub(crate) struct Channel {
    pub number: u16,
    pub peer: SocketAddr,
    pub expires: Instant,
}

#[derive(Debug)]
pub(crate) struct Allocation {
    /// `None` while the driver is opening the relay socket.
    pub relay: Option<SocketAddr>,
    /// The Allocate request being answered (a retransmission gets the same answer).
    pub transaction: [u8; 12],
    pub username: String,
    pub participant: String,
    pub key: [u8; 16],
    pub expires: Instant,
    pub last_activity: Instant,
    pub permissions: Vec<(SocketAddr, Instant)>,
    pub channels: Vec<Channel>,
    pub to_peer: ByteBudget,
    pub to_client: ByteBudget,
}

impl Allocation {
    pub fn permits(&self, now: Instant, peer: SocketAddr) -> bool {
        self.permissions.iter().any(|(permitted, expires)| *permitted == peer && *expires > now)
    }

    pub fn permit(&mut self, peer: SocketAddr, expires: Instant) {
        match self.permissions.iter_mut().find(|(permitted, _)| *permitted == peer) {
            Some(entry) => entry.1 = expires,
            None => self.permissions.push((peer, expires)),
        }
    }

    pub fn channel_peer(&self, now: Instant, number: u16) -> Option<SocketAddr> {
        self.channels
            .iter()
            .find(|channel| channel.number == number && channel.expires > now)
            .map(|channel| channel.peer)
    }

    pub fn channel_for(&self, now: Instant, peer: SocketAddr) -> Option<u16> {
        self.channels.iter().find(|channel| channel.peer == peer && channel.expires > now).map(|channel| channel.number)
    }

    /// Binds or refreshes a channel; `false` when the number or the peer is already bound
    /// to something else (RFC 8656 section 11.2).
    pub fn bind(&mut self, number: u16, peer: SocketAddr, expires: Instant) -> bool {
        let conflict = self.channels.iter().any(|channel| (channel.number == number) != (channel.peer == peer));
        if conflict {
            return false;
        }
        match self.channels.iter_mut().find(|channel| channel.number == number) {
            Some(channel) => channel.expires = expires,
            None => self.channels.push(Channel { number, peer, expires }),
        }
        true
    }

    /// Drops expired permissions and channels; true when the allocation itself is over
    /// (lifetime passed, or nothing relayed for `idle`).
    pub fn expire(&mut self, now: Instant, idle: Duration) -> bool {
        self.permissions.retain(|(_, expires)| *expires > now);
        self.channels.retain(|channel| channel.expires > now);
        self.expires <= now || now.saturating_duration_since(self.last_activity) >= idle
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_refills_at_its_rate() {
        let start = Instant::now();
        let mut budget = ByteBudget::new(start, 1000, 1500);
        assert!(budget.take(start, 1500));
        assert!(!budget.take(start, 1));
        assert!(budget.take(start + Duration::from_millis(500), 500));
        assert!(!budget.take(start + Duration::from_millis(500), 1));
        // Idle time refills only up to the burst.
        assert!(!budget.take(start + Duration::from_secs(100), 1501));
    }
}
