//! One budget for the message data that all sessions hold in memory while receiving.
//!
//! Each session may buffer up to `max_message_size`; with thousands of sessions that is tens
//! of GiB. Sessions take the bytes they buffer from one shared budget, and a message that does
//! not fit is refused with a 4xx at its end (the client retries later), so the relay's memory
//! for message data stays under `max_message_memory` whatever the clients do.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The shared budget (one per relay; a reload changes its limit).
#[derive(Debug)]
pub struct MemoryBudget {
    limit: AtomicUsize,
    used: AtomicUsize,
}

impl MemoryBudget {
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self { limit: AtomicUsize::new(limit), used: AtomicUsize::new(0) })
    }

    pub fn set_limit(&self, limit: usize) {
        self.limit.store(limit, Ordering::Relaxed);
    }

    /// Bytes held by all sessions now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    fn take(&self, bytes: usize) -> bool {
        let limit = self.limit.load(Ordering::Relaxed);
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|total| *total <= limit)
            })
            .is_ok()
    }

    fn give_back(&self, bytes: usize) {
        self.used.fetch_sub(bytes, Ordering::AcqRel);
    }
}

/// The bytes one session holds from the budget; given back when released or dropped.
#[derive(Debug)]
pub struct Reservation {
    budget: Arc<MemoryBudget>,
    bytes: usize,
}

impl Reservation {
    pub fn new(budget: Arc<MemoryBudget>) -> Self {
        Self { budget, bytes: 0 }
    }

    /// Appends `bytes` to `buffer`, taking its growth from the budget first; the buffer's
    /// capacity (what it really holds) is what is counted. Returns false, changing nothing,
    /// when the budget has no room.
    pub fn append(&mut self, buffer: &mut Vec<u8>, bytes: &[u8], ceiling: usize) -> bool {
        let needed = buffer.len() + bytes.len();
        if needed > buffer.capacity() {
            let target = needed.max(buffer.capacity().saturating_mul(2)).min(ceiling.max(needed));
            let growth = target - buffer.capacity();
            if !self.budget.take(growth) {
                return false;
            }
            self.bytes += growth;
            let before = buffer.capacity();
            buffer.reserve_exact(target - buffer.len());
            // The allocator may round up; count what it gave.
            let extra = buffer.capacity().saturating_sub(before + growth);
            if extra > 0 && self.budget.take(extra) {
                self.bytes += extra;
            }
        }
        buffer.extend_from_slice(bytes);
        true
    }

    /// Gives everything back (the buffer it counted was dropped).
    pub fn release(&mut self) {
        self.budget.give_back(std::mem::take(&mut self.bytes));
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_share_one_limit_and_give_back() {
        let budget = MemoryBudget::new(1000);
        let mut first = Reservation::new(budget.clone());
        let mut second = Reservation::new(budget.clone());
        let (mut a, mut b) = (Vec::new(), Vec::new());
        assert!(first.append(&mut a, &[1; 600], 1000));
        assert!(budget.used() >= 600);
        assert!(!second.append(&mut b, &[2; 600], 1000));
        assert!(b.is_empty());
        first.release();
        drop(a);
        assert_eq!(budget.used(), 0);
        assert!(second.append(&mut b, &[2; 600], 1000));
        drop(second);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn counts_capacity_not_length() {
        let budget = MemoryBudget::new(1 << 20);
        let mut reservation = Reservation::new(budget.clone());
        let mut buffer = Vec::new();
        for _ in 0..1000 {
            assert!(reservation.append(&mut buffer, b"0123456789", 1 << 20));
            assert!(budget.used() >= buffer.capacity(), "{} < {}", budget.used(), buffer.capacity());
        }
    }
}
