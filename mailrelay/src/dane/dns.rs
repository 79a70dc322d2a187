//! The few DNS questions DANE asks, sent by hand with hickory-proto so that the AD bit of the
//! answer can be read (hickory-resolver's lookups do not expose it).
//!
//! Like Postfix with `smtp_dns_support_level = dnssec`, this relay does not validate
//! signatures itself: it sets AD (RFC 6840 5.7) and DO in the query and trusts the AD bit of
//! the resolvers [`super::resolvers`] chose (the appliance's own forwarder with
//! `validate = true` over loopback, else `dns.forwarders` or those of /etc/resolv.conf),
//! which must be validating resolvers on a trusted path.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use hickory_resolver::proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_resolver::proto::rr::{Name, Record, RecordType};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// Resolvers asked per question, in order, when one fails.
pub const MAX_SERVERS: usize = 3;
/// Time for one resolver to answer over UDP, and over TCP after a truncated answer.
const UDP_TIMEOUT: Duration = Duration::from_secs(3);
const TCP_TIMEOUT: Duration = Duration::from_secs(5);
/// EDNS payload size advertised (the DNS flag day 2020 value) and the UDP buffer.
const PAYLOAD: u16 = 1232;
const UDP_BUFFER: usize = 4096;
/// Records read from one answer section.
const MAX_ANSWERS: usize = 64;
/// Datagrams read per question before giving up on a resolver (stray or spoofed ones).
const MAX_DATAGRAMS: usize = 8;

/// What a resolver said.
#[derive(Debug)]
pub struct Answer {
    pub code: ResponseCode,
    /// AD: the resolver validated the answer with DNSSEC.
    pub authenticated: bool,
    /// The answer section (at most [`MAX_ANSWERS`] records).
    pub records: Vec<Record>,
}

/// Asks `servers` in turn for `name`/`kind`; the first resolver that answers NOERROR or
/// NXDOMAIN wins. `Err` names the last failure (timeout, SERVFAIL, a malformed answer).
pub async fn ask(servers: &[SocketAddr], name: &str, kind: RecordType) -> Result<Answer, String> {
    let mut fqdn = Name::from_utf8(name).map_err(|_| "not a DNS name".to_owned())?;
    fqdn.set_fqdn(true);
    let mut last = "no DNS resolver configured".to_owned();
    for server in servers.iter().take(MAX_SERVERS) {
        match ask_one(*server, &fqdn, kind).await {
            Ok(answer) if matches!(answer.code, ResponseCode::NoError | ResponseCode::NXDomain) => return Ok(answer),
            Ok(answer) => last = format!("{kind} query: {} from {server}", answer.code),
            Err(reason) => last = format!("{kind} query to {server}: {reason}"),
        }
    }
    Err(last)
}

async fn ask_one(server: SocketAddr, name: &Name, kind: RecordType) -> Result<Answer, String> {
    let id: u16 = rand::random();
    let mut query = Message::new(id, MessageType::Query, OpCode::Query);
    query.metadata.recursion_desired = true;
    query.metadata.authentic_data = true;
    let mut edns = Edns::new();
    edns.set_dnssec_ok(true).set_max_payload(PAYLOAD);
    query.set_edns(edns);
    let question = Query::query(name.clone(), kind);
    query.add_query(question.clone());
    let bytes = query.to_vec().map_err(|error| format!("cannot encode the query: {error}"))?;
    let response = match tokio::time::timeout(UDP_TIMEOUT, udp(server, &bytes, id)).await {
        Ok(result) => result?,
        Err(_) => return Err("timed out".into()),
    };
    let response = if response.metadata.truncation {
        tokio::time::timeout(TCP_TIMEOUT, tcp(server, &bytes)).await.map_err(|_| "timed out over TCP".to_owned())??
    } else {
        response
    };
    check(&response, id, &question)?;
    let mut records = response.answers;
    records.truncate(MAX_ANSWERS);
    Ok(Answer { code: response.metadata.response_code, authenticated: response.metadata.authentic_data, records })
}

async fn udp(server: SocketAddr, query: &[u8], id: u16) -> Result<Message, String> {
    let local: IpAddr = if server.is_ipv4() { Ipv4Addr::UNSPECIFIED.into() } else { Ipv6Addr::UNSPECIFIED.into() };
    let socket = tokio::net::UdpSocket::bind((local, 0)).await.map_err(|error| error.to_string())?;
    socket.connect(server).await.map_err(|error| error.to_string())?;
    socket.send(query).await.map_err(|error| error.to_string())?;
    let mut buffer = vec![0u8; UDP_BUFFER];
    for _ in 0..MAX_DATAGRAMS {
        let length = socket.recv(&mut buffer).await.map_err(|error| error.to_string())?;
        // A datagram for another id is stray (or a guess); wait for ours.
        match Message::from_vec(&buffer[..length]) {
            Ok(message) if message.metadata.id == id => return Ok(message),
            _ => {}
        }
    }
    Err("no matching answer".into())
}

async fn tcp(server: SocketAddr, query: &[u8]) -> Result<Message, String> {
    let mut stream = tokio::net::TcpStream::connect(server).await.map_err(|error| error.to_string())?;
    let length = u16::try_from(query.len()).map_err(|_| "query too long".to_owned())?;
    let mut framed = Vec::with_capacity(query.len() + 2);
    framed.extend_from_slice(&length.to_be_bytes());
    framed.extend_from_slice(query);
    stream.write_all(&framed).await.map_err(|error| error.to_string())?;
    let mut prefix = [0u8; 2];
    stream.read_exact(&mut prefix).await.map_err(|error| error.to_string())?;
    // At most 64 KiB by the length's type.
    let mut buffer = vec![0u8; usize::from(u16::from_be_bytes(prefix))];
    stream.read_exact(&mut buffer).await.map_err(|error| error.to_string())?;
    Message::from_vec(&buffer).map_err(|_| "malformed answer over TCP".to_owned())
}

/// The answer must be a response to this very question.
fn check(response: &Message, id: u16, question: &Query) -> Result<(), String> {
    let metadata = &response.metadata;
    let same_question = response.queries.len() == 1
        && response.queries[0].query_type() == question.query_type()
        && response.queries[0].name() == question.name();
    if metadata.id != id || metadata.message_type != MessageType::Response || !same_question {
        return Err("an answer to another question".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A one-shot resolver on loopback: reads one query, lets `reply` build the answer bytes
    /// from it (or none), and returns the query it got.
    async fn resolver(
        reply: impl FnOnce(&Message) -> Vec<Vec<u8>> + Send + 'static,
    ) -> (SocketAddr, tokio::task::JoinHandle<Message>) {
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let address = socket.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut buffer = vec![0u8; 4096];
            let (length, peer) = socket.recv_from(&mut buffer).await.unwrap();
            let query = Message::from_vec(&buffer[..length]).unwrap();
            for datagram in reply(&query) {
                socket.send_to(&datagram, peer).await.unwrap();
            }
            query
        });
        (address, task)
    }

    fn answer_to(query: &Message, authenticated: bool, code: ResponseCode) -> Message {
        let mut response = Message::new(query.metadata.id, MessageType::Response, OpCode::Query);
        response.add_query(query.queries[0].clone());
        response.metadata.authentic_data = authenticated;
        response.metadata.response_code = code;
        response
    }

    #[tokio::test]
    async fn queries_ask_for_validation_and_answers_carry_the_ad_bit() {
        let (server, task) =
            resolver(|query| vec![answer_to(query, true, ResponseCode::NoError).to_vec().unwrap()]).await;
        let answer = ask(&[server], "_25._tcp.mx.example.vn", RecordType::TLSA).await.unwrap();
        assert!(answer.authenticated);
        let query = task.await.unwrap();
        assert!(query.metadata.authentic_data && query.metadata.recursion_desired, "AD (RFC 6840 5.7) and RD");
        assert!(query.edns.as_ref().is_some_and(|edns| edns.flags().dnssec_ok), "DO");
        assert_eq!(query.queries[0].query_type(), RecordType::TLSA);

        let (server, _) =
            resolver(|query| vec![answer_to(query, false, ResponseCode::NXDomain).to_vec().unwrap()]).await;
        let answer = ask(&[server], "mx.example.vn", RecordType::A).await.unwrap();
        assert!(!answer.authenticated && answer.code == ResponseCode::NXDomain);
    }

    #[tokio::test]
    async fn servfail_strays_and_answers_to_other_questions_are_failures() {
        let (server, _) =
            resolver(|query| vec![answer_to(query, true, ResponseCode::ServFail).to_vec().unwrap()]).await;
        let failure = ask(&[server], "mx.example.vn", RecordType::TLSA).await.unwrap_err();
        assert!(failure.contains("Server Failure"), "{failure}");

        let (server, _) = resolver(|query| {
            let mut other = answer_to(query, true, ResponseCode::NoError);
            other.queries[0] = Query::query(Name::from_ascii("evil.example.").unwrap(), RecordType::TLSA);
            vec![other.to_vec().unwrap()]
        })
        .await;
        let failure = ask(&[server], "mx.example.vn", RecordType::TLSA).await.unwrap_err();
        assert!(failure.contains("another question"), "{failure}");

        // A wrong id is skipped; the real answer after it counts.
        let (server, _) = resolver(|query| {
            let mut stray = answer_to(query, false, ResponseCode::NoError);
            stray.metadata.id = query.metadata.id.wrapping_add(1);
            vec![
                stray.to_vec().unwrap(),
                b"garbage".to_vec(),
                answer_to(query, true, ResponseCode::NoError).to_vec().unwrap(),
            ]
        })
        .await;
        assert!(ask(&[server], "mx.example.vn", RecordType::TLSA).await.unwrap().authenticated);
    }

    #[tokio::test]
    async fn a_silent_resolver_times_out_and_the_next_one_is_asked() {
        let (silent, _) = resolver(|_| Vec::new()).await;
        let (good, _) = resolver(|query| vec![answer_to(query, true, ResponseCode::NoError).to_vec().unwrap()]).await;
        let answer = ask(&[silent, good], "mx.example.vn", RecordType::MX).await.unwrap();
        assert!(answer.authenticated);
        let (silent, _) = resolver(|_| Vec::new()).await;
        let (other, _) = resolver(|_| Vec::new()).await;
        let failure = ask(&[silent, other], "mx.example.vn", RecordType::MX).await.unwrap_err();
        assert!(failure.contains("timed out") && failure.contains(&other.to_string()), "{failure}");
    }
}
