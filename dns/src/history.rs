//! What changed between the versions of a zone copy, kept for incremental transfers (IXFR,
//! RFC 1995): each reload that changes a copy's content adds one difference (the records
//! removed and added between two serials). The history is bounded as NSD's is: at most
//! [`MAX_DIFFERENCES`] differences (`ixfr-number`), and never more records than the zone
//! itself holds (beyond that a full transfer is smaller). It lives in memory only: after a
//! restart, a secondary gets one full transfer and increments again from then on.

use std::collections::HashSet;
use std::sync::Arc;

use hickory_proto::rr::{RData, Record, RecordType};

use crate::zone::Zone;

/// Differences kept per zone copy at most (NSD's default `ixfr-number`).
pub const MAX_DIFFERENCES: usize = 5;
/// Records the history may always hold, however small the zone.
pub const MIN_BUDGET: usize = 10_000;

/// The change from one serial of a zone to the next.
#[derive(Debug, Clone, PartialEq)]
pub struct Difference {
    pub old_soa: Record,
    pub new_soa: Record,
    pub removed: Vec<Record>,
    pub added: Vec<Record>,
}

impl Difference {
    /// The change from `old` to `new` (SOAs aside).
    pub fn between(old: &Zone, new: &Zone) -> Difference {
        let old_records: Vec<Record> = old.all_records().into_iter().skip(1).collect();
        let new_records: Vec<Record> = new.all_records().into_iter().skip(1).collect();
        // Records compare by their presentation form (name, TTL, class, type, data).
        let old_set: HashSet<String> = old_records.iter().map(ToString::to_string).collect();
        let new_set: HashSet<String> = new_records.iter().map(ToString::to_string).collect();
        Difference {
            old_soa: old.soa.clone(),
            new_soa: new.soa.clone(),
            removed: old_records.iter().filter(|record| !new_set.contains(&record.to_string())).cloned().collect(),
            added: new_records.iter().filter(|record| !old_set.contains(&record.to_string())).cloned().collect(),
        }
    }

    fn size(&self) -> usize {
        self.removed.len() + self.added.len() + 2
    }
}

/// The history of `new`, given the zone it replaces: the old history plus the difference
/// between them, bounded. A zone whose serial did not change keeps the old history.
pub fn extend(old: &Zone, new: &Zone) -> Vec<Arc<Difference>> {
    if old.serial() == new.serial() {
        return old.history.clone();
    }
    let mut history = old.history.clone();
    history.push(Arc::new(Difference::between(old, new)));
    let budget = new.record_count().max(MIN_BUDGET);
    while history.len() > MAX_DIFFERENCES || history.iter().map(|difference| difference.size()).sum::<usize>() > budget
    {
        history.remove(0);
    }
    history
}

/// The records of an IXFR answer for a client at `client_serial`: the incremental form
/// (current SOA, then per difference the old SOA, removals, the new SOA, additions, then the
/// current SOA again) when the history reaches back to that serial; the current SOA alone
/// when the client is up to date; `None` when only a full transfer can bring it up to date.
pub fn incremental(zone: &Zone, client_serial: u32) -> Option<Vec<Record>> {
    if !serial_is_older(client_serial, zone.serial()) {
        return Some(vec![zone.soa.clone()]);
    }
    let start = zone.history.iter().position(|difference| soa_serial(&difference.old_soa) == Some(client_serial))?;
    let mut records = vec![zone.soa.clone()];
    for difference in &zone.history[start..] {
        records.push(difference.old_soa.clone());
        records.extend(difference.removed.iter().cloned());
        records.push(difference.new_soa.clone());
        records.extend(difference.added.iter().cloned());
    }
    records.push(zone.soa.clone());
    Some(records)
}

/// RFC 1982 serial arithmetic: true when `a` is older than `b`.
fn serial_is_older(a: u32, b: u32) -> bool {
    a != b && b.wrapping_sub(a) < (1 << 31)
}

fn soa_serial(record: &Record) -> Option<u32> {
    match &record.data {
        RData::SOA(soa) if record.record_type() == RecordType::SOA => Some(soa.serial),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use hickory_proto::rr::rdata::{A, SOA};
    use hickory_proto::rr::{Name, RData};

    use super::*;

    fn zone(serial: u32, addresses: &[u8]) -> Zone {
        let apex = Name::from_ascii("ninhthuan.gov.vn.").unwrap();
        let soa = SOA::new(apex.clone(), apex.clone(), serial, 3600, 600, 86400, 300);
        let mut records = vec![Record::from_rdata(apex.clone(), 3600, RData::SOA(soa))];
        let www = Name::from_ascii("www.ninhthuan.gov.vn.").unwrap();
        for last in addresses {
            records.push(Record::from_rdata(www.clone(), 300, RData::A(A::new(10, 20, 0, *last))));
        }
        Zone::new(apex, records, Vec::new())
    }

    #[test]
    fn increments_reach_back_through_the_kept_differences_only() {
        let mut current = zone(1, &[10]);
        for serial in 2..=8u32 {
            let mut next = zone(serial, &[10, serial as u8]);
            next.history = extend(&current, &next);
            current = next;
        }
        assert_eq!(current.history.len(), MAX_DIFFERENCES);
        let up_to_date = incremental(&current, 8).unwrap();
        assert_eq!(up_to_date.len(), 1);
        let from_seven = incremental(&current, 7).unwrap();
        // SOA 8, SOA 7, -www 7, SOA 8, +www 8, SOA 8.
        assert_eq!(from_seven.len(), 6);
        assert!(incremental(&current, 3).is_some(), "five differences back");
        assert!(incremental(&current, 2).is_none(), "older than the history: a full transfer");
        assert!(incremental(&current, 0).is_none(), "an unknown older serial: a full transfer");
        assert_eq!(incremental(&current, 9).unwrap().len(), 1, "a newer serial: the current SOA alone");
    }
}
