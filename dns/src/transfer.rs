//! Zone transfers to secondaries (AXFR, RFC 5936; IXFR, RFC 1995) and NOTIFY when a zone
//! changes (RFC 1996).

use std::net::SocketAddr;
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, Query as HickoryQuery};
use hickory_proto::rr::{Record, RecordType};
use hickory_proto::serialize::binary::{BinEncodable, BinEncoder, NameEncoding};
use tokio::net::UdpSocket;

use crate::zone::Zone;

/// Bytes of records per AXFR message (well under the 64 KiB a TCP message may hold).
const MESSAGE_BUDGET: usize = 16_000;
const NOTIFY_TIMEOUT: Duration = Duration::from_secs(2);
const NOTIFY_ATTEMPTS: usize = 3;

/// The transfer answer to `request` (a parsed query packet), split into messages of about
/// [`MESSAGE_BUDGET`] bytes, each ready to send. AXFR (`client_serial` is `None`): the SOA,
/// every record, the SOA again. IXFR from `client_serial`: the incremental answer when the
/// zone's history reaches back to it, else (RFC 1995 §4) the full zone as AXFR has it.
pub fn messages(request: &[u8], zone: &Zone, client_serial: Option<u32>) -> Vec<Vec<u8>> {
    let Ok(request) = Message::from_vec(request) else { return Vec::new() };
    let records = match client_serial.and_then(|serial| crate::history::incremental(zone, serial)) {
        Some(records) => records,
        None => {
            let mut records = zone.all_records();
            records.push(zone.soa.clone());
            records
        }
    };
    let mut messages = Vec::new();
    let mut current = new_message(&request);
    let mut size = 0;
    for record in records {
        let record_size = encoded_size(&record);
        if size + record_size > MESSAGE_BUDGET && !current.answers.is_empty() {
            messages.extend(current.to_vec().ok());
            current = new_message(&request);
            size = 0;
        }
        size += record_size;
        current.add_answer(record);
    }
    messages.extend(current.to_vec().ok());
    messages
}

fn new_message(request: &Message) -> Message {
    let mut message = Message::new(request.metadata.id, MessageType::Response, OpCode::Query);
    message.metadata.authoritative = true;
    message.add_queries(request.queries.iter().cloned());
    message
}

fn encoded_size(record: &Record) -> usize {
    let mut bytes = Vec::new();
    let mut encoder = BinEncoder::new(&mut bytes);
    encoder.set_name_encoding(NameEncoding::Uncompressed);
    let _ = record.emit(&mut encoder);
    bytes.len()
}

/// Tells each secondary that `zone` changed, retrying a few times; logs the outcome.
pub async fn notify(zone: &Zone, secondaries: &[SocketAddr]) {
    for secondary in secondaries {
        let mut acknowledged = false;
        for _ in 0..NOTIFY_ATTEMPTS {
            if notify_once(zone, *secondary).await.is_some() {
                acknowledged = true;
                break;
            }
        }
        if acknowledged {
            tracing::info!(zone = %zone.apex, serial = zone.serial(), %secondary, "secondary acknowledged NOTIFY");
        } else {
            tracing::warn!(zone = %zone.apex, %secondary, "secondary did not answer NOTIFY");
        }
    }
}

async fn notify_once(zone: &Zone, secondary: SocketAddr) -> Option<()> {
    let id: u16 = rand::random();
    let mut message = Message::new(id, MessageType::Query, OpCode::Notify);
    message.metadata.authoritative = true;
    message.add_query(HickoryQuery::query(zone.apex.clone(), RecordType::SOA));
    message.add_answer(zone.soa.clone());
    let bytes = message.to_vec().ok()?;
    let bind: SocketAddr = if secondary.is_ipv4() { "0.0.0.0:0".parse().ok()? } else { "[::]:0".parse().ok()? };
    let socket = UdpSocket::bind(bind).await.ok()?;
    socket.connect(secondary).await.ok()?;
    socket.send(&bytes).await.ok()?;
    let mut buffer = [0u8; 512];
    let deadline = tokio::time::Instant::now() + NOTIFY_TIMEOUT;
    loop {
        let length = tokio::time::timeout_at(deadline, socket.recv(&mut buffer)).await.ok()?.ok()?;
        if let Ok(response) = Message::from_vec(&buffer[..length])
            && response.metadata.id == id
            && response.metadata.message_type == MessageType::Response
        {
            return Some(());
        }
    }
}
