//! Sessions at once per client, so that one address cannot take every session slot.
//!
//! A client is what [`crate::auth::client_key`] says: an IPv4 address or an IPv6 /64. The
//! table only holds clients with a session open, so it is bounded by the session cap.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use crate::auth::client_key;

/// Open sessions per client.
#[derive(Default)]
pub struct ClientConnections {
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One open session of a client; closing it (dropping) frees the slot.
pub struct ClientSlot {
    table: Arc<ClientConnections>,
    key: IpAddr,
}

impl ClientConnections {
    /// A slot for `peer`, or `None` when it already has `limit` sessions open.
    pub fn try_open(self: &Arc<Self>, peer: IpAddr, limit: usize) -> Option<ClientSlot> {
        let key = client_key(peer);
        let mut open = self.lock();
        let count = open.entry(key).or_default();
        if *count >= limit {
            if *count == 0 {
                open.remove(&key);
            }
            return None;
        }
        *count += 1;
        Some(ClientSlot { table: self.clone(), key })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut open = self.table.lock();
        if let Some(count) = open.get_mut(&self.key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_per_client_and_frees_on_close() {
        let table = Arc::new(ClientConnections::default());
        let peer: IpAddr = "2001:db8:20:5::1".parse().unwrap();
        let first = table.try_open(peer, 2).unwrap();
        let _second = table.try_open("2001:db8:20:5::99".parse().unwrap(), 2).unwrap();
        assert!(table.try_open(peer, 2).is_none(), "the same /64 is one client");
        assert!(table.try_open("10.20.1.7".parse().unwrap(), 2).is_some());
        drop(first);
        assert!(table.try_open(peer, 2).is_some());
        assert!(!table.lock().contains_key(&"10.20.1.7".parse::<IpAddr>().unwrap()), "closed clients are forgotten");
    }
}
