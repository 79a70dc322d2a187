//! A scripted DNS server on loopback for the tests that need names the relay looks up (SPF,
//! DKIM and DMARC TXT records, MTA-STS, MX): each question goes to a closure that fills the
//! answer, or returns `false` to stay silent (a timeout for the relay's resolver).

use std::net::SocketAddr;

use hickory_resolver::proto::op::{Message, MessageType, OpCode, Query};

/// Serves until the test's runtime ends. `answer` gets the first question, its name in lower
/// case without the final dot, and a response that already copies the id, RD and the question
/// (authoritative, RA set, NOERROR).
pub async fn serve(mut answer: impl FnMut(&Query, &str, &mut Message) -> bool + Send + 'static) -> SocketAddr {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let address = socket.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buffer = vec![0u8; 4096];
        while let Ok((length, peer)) = socket.recv_from(&mut buffer).await {
            let Ok(query) = Message::from_vec(&buffer[..length]) else { continue };
            let Some(question) = query.queries.first() else { continue };
            let name = question.name().to_ascii().trim_end_matches('.').to_ascii_lowercase();
            let mut response = Message::new(query.metadata.id, MessageType::Response, OpCode::Query);
            response.metadata.authoritative = true;
            response.metadata.recursion_desired = query.metadata.recursion_desired;
            response.metadata.recursion_available = true;
            response.add_query(question.clone());
            if answer(question, &name, &mut response) {
                let _ = socket.send_to(&response.to_vec().unwrap(), peer).await;
            }
        }
    });
    address
}

/// A TLSA record (RFC 6698) for `name`: `usage selector matching data`. A test's closure
/// sets `response.metadata.authentic_data` for the answers a validating resolver would have
/// validated (what DANE trusts, RFC 7672 and RFC 6840 5.7).
pub fn tlsa(
    name: &hickory_resolver::proto::rr::Name,
    usage: u8,
    selector: u8,
    matching: u8,
    data: Vec<u8>,
) -> hickory_resolver::proto::rr::Record {
    use hickory_resolver::proto::rr::RData;
    use hickory_resolver::proto::rr::rdata::TLSA;
    let rdata = TLSA::new(usage.into(), selector.into(), matching.into(), data);
    hickory_resolver::proto::rr::Record::from_rdata(name.clone(), 60, RData::TLSA(rdata))
}
