//! Connection slots for a listener: a total cap and a cap per client, so one client cannot
//! hold every slot. A client is an address as the PIN guard counts it (an IPv4 address, also
//! when it arrives IPv4-mapped; an IPv6 /64). A slot is returned when its guard drops.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Why no slot was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Full {
    /// The listener holds its total number of connections.
    Total,
    /// This client holds its share.
    Client,
}

/// The slots of one listener; cheap to clone (shared).
#[derive(Debug, Clone)]
pub(crate) struct ConnectionSlots {
    state: Arc<Mutex<Counts>>,
}

#[derive(Debug)]
struct Counts {
    total: usize,
    max_total: usize,
    max_per_client: usize,
    per_client: HashMap<IpAddr, usize>,
}

/// One held slot; dropping it frees the slot.
#[derive(Debug)]
pub(crate) struct Slot {
    state: Arc<Mutex<Counts>>,
    client: IpAddr,
}

impl ConnectionSlots {
    pub fn new(max_total: usize, max_per_client: usize) -> Self {
        let counts = Counts { total: 0, max_total, max_per_client, per_client: HashMap::new() };
        ConnectionSlots { state: Arc::new(Mutex::new(counts)) }
    }

    /// A slot for a connection from `address`, unless the listener or the client is full.
    pub fn try_acquire(&self, address: IpAddr) -> Result<Slot, Full> {
        let client = crate::guard::key(address);
        let mut counts = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if counts.total >= counts.max_total {
            return Err(Full::Total);
        }
        let max_per_client = counts.max_per_client;
        let held = counts.per_client.entry(client).or_insert(0);
        if *held >= max_per_client {
            return Err(Full::Client);
        }
        *held += 1;
        counts.total += 1;
        Ok(Slot { state: self.state.clone(), client })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        counts.total = counts.total.saturating_sub(1);
        if let Some(held) = counts.per_client.get_mut(&self.client) {
            *held -= 1;
            if *held == 0 {
                counts.per_client.remove(&self.client);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_client_gets_its_share_and_the_total_is_a_cap() {
        let slots = ConnectionSlots::new(5, 2);
        let a: IpAddr = "10.30.1.7".parse().unwrap();
        let a_mapped: IpAddr = "::ffff:10.30.1.7".parse().unwrap();
        let first = slots.try_acquire(a).unwrap();
        let _second = slots.try_acquire(a_mapped).unwrap();
        assert_eq!(slots.try_acquire(a).unwrap_err(), Full::Client);
        assert_eq!(slots.try_acquire("2001:db8:1:2::1".parse().unwrap()).map(drop), Ok(()));
        let _others: Vec<Slot> = ["10.30.1.8", "10.30.1.9", "10.30.1.10"]
            .iter()
            .map(|ip| slots.try_acquire(ip.parse().unwrap()).unwrap())
            .collect();
        assert_eq!(slots.try_acquire("10.30.1.11".parse().unwrap()).unwrap_err(), Full::Total);
        drop(first);
        assert!(slots.try_acquire(a).is_ok());
    }

    #[test]
    fn an_ipv6_slash_64_is_one_client() {
        let slots = ConnectionSlots::new(100, 2);
        let _a = slots.try_acquire("2001:db8:1:2::1".parse().unwrap()).unwrap();
        let _b = slots.try_acquire("2001:db8:1:2::2".parse().unwrap()).unwrap();
        assert_eq!(slots.try_acquire("2001:db8:1:2::3".parse().unwrap()).unwrap_err(), Full::Client);
        assert!(slots.try_acquire("2001:db8:1:3::1".parse().unwrap()).is_ok());
    }
}
