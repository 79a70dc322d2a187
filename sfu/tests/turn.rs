//! The embedded TURN server over real sockets, as a browser's TURN client uses it: on the
//! page's own port (plain TCP here; TLS in the browser tests) and on the dedicated port
//! (UDP). Proves it relays to nothing but the SFU's media port, refuses forged credentials
//! and holds its caps (one client cannot hold every TCP connection of the dedicated port), and
//! that the page still works on the shared port.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use lienthong_sfu::ConferenceService;
use lienthong_turn::message::{self, Builder, Class, Message, attribute, method};
use md5::{Digest, Md5};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

const REALM: &str = "hub.ninhthuan.gov.vn";

async fn start_with_turn_port() -> ConferenceService {
    let mut config = (*config(ROOMS)).clone();
    config.conference.turn_port = Some(0);
    ConferenceService::start(Arc::new(config), Arc::new(NoCertificate)).await.expect("start")
}

/// Joins and returns the `iceServers` entry of the welcome.
async fn credential(service: &ConferenceService) -> (Value, Socket) {
    let mut socket = connect(service).await;
    let welcome = join(&mut socket, "giao-ban", "Huyện A", "246810").await;
    assert_eq!(welcome["type"], "welcome");
    (welcome["iceServers"][0].clone(), socket)
}

/// A minimal TURN client over one transport.
enum Link {
    Tcp(TcpStream),
    Udp(UdpSocket),
}

struct TurnClient {
    link: Link,
    username: String,
    key: [u8; 16],
    nonce: String,
    next: u8,
}

impl TurnClient {
    async fn tcp(server: SocketAddr, username: &str, password: &str) -> Self {
        let stream = TcpStream::connect(server).await.unwrap();
        Self::new(Link::Tcp(stream), username, password)
    }

    async fn udp(server: SocketAddr, username: &str, password: &str) -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        socket.connect(server).await.unwrap();
        Self::new(Link::Udp(socket), username, password)
    }

    fn new(link: Link, username: &str, password: &str) -> Self {
        let key = Md5::digest(format!("{username}:{REALM}:{password}")).into();
        TurnClient { link, username: username.into(), key, nonce: String::new(), next: 0 }
    }

    async fn send(&mut self, bytes: &[u8]) {
        match &mut self.link {
            Link::Tcp(stream) => stream.write_all(bytes).await.unwrap(),
            Link::Udp(socket) => {
                socket.send(bytes).await.unwrap();
            }
        }
    }

    /// The next STUN message from the server, or `None` if nothing comes within `wait`.
    async fn receive(&mut self, wait: Duration) -> Option<Vec<u8>> {
        let read = async {
            match &mut self.link {
                Link::Tcp(stream) => {
                    // The server only answers requests here: always STUN, header first.
                    let mut frame = vec![0u8; 20];
                    stream.read_exact(&mut frame).await.ok()?;
                    let length = message::frame_length(&frame).ok().flatten()?;
                    frame.resize(length, 0);
                    stream.read_exact(&mut frame[20..]).await.ok()?;
                    Some(frame)
                }
                Link::Udp(socket) => {
                    let mut buffer = vec![0u8; 2048];
                    let length = socket.recv(&mut buffer).await.ok()?;
                    buffer.truncate(length);
                    Some(buffer)
                }
            }
        };
        tokio::time::timeout(wait, read).await.ok().flatten()
    }

    /// Sends a signed request (after fetching a nonce if needed); returns the error code, or
    /// 200 and the response.
    async fn request(&mut self, kind: u16, attributes: &dyn Fn(&mut Builder)) -> (u16, Vec<u8>) {
        for _ in 0..2 {
            self.next += 1;
            let mut builder = Builder::new(kind, Class::Request, [self.next; 12]);
            attributes(&mut builder);
            if !self.nonce.is_empty() {
                builder
                    .attribute(attribute::USERNAME, self.username.as_bytes())
                    .attribute(attribute::REALM, REALM.as_bytes())
                    .attribute(attribute::NONCE, self.nonce.as_bytes())
                    .integrity(&self.key);
            }
            self.send(&builder.fingerprint()).await;
            let response = self.receive(Duration::from_secs(10)).await.expect("a response");
            let parsed = Message::parse(&response).expect("a STUN response");
            assert_eq!(parsed.transaction, [self.next; 12]);
            let code = parsed.get(attribute::ERROR_CODE).map(|value| u16::from(value[2]) * 100 + u16::from(value[3]));
            match code {
                Some(401 | 438) if self.nonce.is_empty() => {
                    self.nonce = parsed.text(attribute::NONCE).expect("a nonce").to_owned();
                }
                Some(code) => return (code, response),
                None => {
                    assert!(parsed.verify_integrity(&self.key), "responses are signed");
                    return (200, response);
                }
            }
        }
        panic!("no answer after a nonce")
    }

    async fn allocate(&mut self) -> Result<SocketAddr, u16> {
        let (code, response) = self
            .request(method::ALLOCATE, &|builder| {
                builder.attribute(attribute::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
            })
            .await;
        if code != 200 {
            return Err(code);
        }
        Ok(Message::parse(&response).unwrap().xor_address(attribute::XOR_RELAYED_ADDRESS).unwrap())
    }

    async fn permit(&mut self, peer: SocketAddr) -> u16 {
        self.request(method::CREATE_PERMISSION, &|builder| {
            builder.xor_address(attribute::XOR_PEER_ADDRESS, peer);
        })
        .await
        .0
    }

    async fn bind(&mut self, number: u16, peer: SocketAddr) -> u16 {
        self.request(method::CHANNEL_BIND, &|builder| {
            builder.attribute(attribute::CHANNEL_NUMBER, &[(number >> 8) as u8, number as u8, 0, 0]);
            builder.xor_address(attribute::XOR_PEER_ADDRESS, peer);
        })
        .await
        .0
    }

    async fn send_to(&mut self, peer: SocketAddr, data: &[u8]) {
        let mut builder = Builder::new(method::SEND, Class::Indication, [0xEE; 12]);
        builder.xor_address(attribute::XOR_PEER_ADDRESS, peer).attribute(attribute::DATA, data);
        self.send(&builder.finish()).await;
    }
}

fn credentials_of(server: &Value) -> (String, String) {
    (server["username"].as_str().unwrap().to_owned(), server["credential"].as_str().unwrap().to_owned())
}

#[tokio::test]
async fn welcome_names_turn_on_the_page_port_and_the_dedicated_port() {
    let service = start_with_turn_port().await;
    let (server, _socket) = credential(&service).await;
    let page = service.page_address().unwrap();
    let dedicated = service.turn_addresses()[0];
    let urls: Vec<&str> = server["urls"].as_array().unwrap().iter().map(|url| url.as_str().unwrap()).collect();
    assert_eq!(
        urls,
        [
            format!("turn:{page}?transport=tcp"),
            format!("turn:{dedicated}?transport=udp"),
            format!("turn:{dedicated}?transport=tcp"),
        ]
    );
    let (username, _) = credentials_of(&server);
    assert!(username.ends_with(":p1") || username.contains(":p"), "{username}");
    service.shutdown().await;
}

#[tokio::test]
async fn relays_only_to_the_sfu_media_port() {
    let service = start_with_turn_port().await;
    let (server, _socket) = credential(&service).await;
    let (username, password) = credentials_of(&server);
    let media = service.media_addresses()[0];
    let page = service.page_address().unwrap();
    // A host on the inside that an attacker would like to reach through the relay.
    let target = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let inside = target.local_addr().unwrap();
    for link in ["page-tcp", "dedicated-udp", "dedicated-tcp"] {
        let mut client = match link {
            "page-tcp" => TurnClient::tcp(page, &username, &password).await,
            "dedicated-udp" => TurnClient::udp(service.turn_addresses()[0], &username, &password).await,
            _ => TurnClient::tcp(service.turn_addresses()[0], &username, &password).await,
        };
        let relay = client.allocate().await.unwrap_or_else(|code| panic!("{link}: allocate {code}"));
        assert_eq!(relay.ip(), media.ip(), "{link}");
        for peer in
            [inside, page, SocketAddr::new(media.ip(), media.port() + 1), "10.20.0.20:25".parse().unwrap(), relay]
        {
            assert_eq!(client.permit(peer).await, 403, "{link}: permission for {peer}");
            assert_eq!(client.bind(0x4001, peer).await, 403, "{link}: channel to {peer}");
            client.send_to(peer, b"let me in").await;
        }
        assert_eq!(client.permit(media).await, 200, "{link}");
        assert_eq!(client.bind(0x4000, media).await, 200, "{link}");
        // With a permission for the SFU in place, a send to the inside still goes nowhere.
        client.send_to(inside, b"let me in").await;
        let mut buffer = [0u8; 64];
        let leaked = tokio::time::timeout(Duration::from_millis(300), target.recv_from(&mut buffer)).await;
        assert!(leaked.is_err(), "{link}: the relay reached {inside}");
    }
    service.shutdown().await;
}

#[tokio::test]
async fn forged_and_tampered_credentials_are_refused() {
    let service = start_with_turn_port().await;
    let (server, _socket) = credential(&service).await;
    let (username, password) = credentials_of(&server);
    let page = service.page_address().unwrap();
    let mut forged = TurnClient::tcp(page, &username, "not-the-password").await;
    assert_eq!(forged.allocate().await, Err(401));
    // A later expiry with the old password: the HMAC no longer matches.
    let (expiry, participant) = username.split_once(':').unwrap();
    let later = format!("{}:{participant}", expiry.parse::<u64>().unwrap() + 86_400);
    let mut tampered = TurnClient::tcp(page, &later, &password).await;
    assert_eq!(tampered.allocate().await, Err(401));
    let mut someone_else = TurnClient::tcp(page, &format!("{expiry}:p999"), &password).await;
    assert_eq!(someone_else.allocate().await, Err(401));
    let mut genuine = TurnClient::tcp(page, &username, &password).await;
    assert!(genuine.allocate().await.is_ok());
    service.shutdown().await;
}

#[tokio::test]
async fn allocations_per_participant_are_capped() {
    let service = start_with_turn_port().await;
    let (server, _socket) = credential(&service).await;
    let (username, password) = credentials_of(&server);
    let page = service.page_address().unwrap();
    let mut held = Vec::new();
    for _ in 0..8 {
        let mut client = TurnClient::tcp(page, &username, &password).await;
        client.allocate().await.expect("within the cap");
        held.push(client);
    }
    let mut one_more = TurnClient::tcp(page, &username, &password).await;
    assert_eq!(one_more.allocate().await, Err(486));
    // Closing a connection frees its allocation.
    drop(held.pop());
    let mut retry = TurnClient::tcp(page, &username, &password).await;
    let mut freed = false;
    for _ in 0..50 {
        match retry.allocate().await {
            Ok(_) => {
                freed = true;
                break;
            }
            Err(486) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                retry = TurnClient::tcp(page, &username, &password).await;
            }
            Err(code) => panic!("{code}"),
        }
    }
    assert!(freed, "a closed connection's allocation was not freed");
    service.shutdown().await;
}

#[tokio::test]
async fn the_page_still_answers_on_the_shared_port() {
    let service = start_with_turn_port().await;
    let page = service.page_address().unwrap();
    let mut stream = TcpStream::connect(page).await.unwrap();
    stream.write_all(b"GET /api/rooms HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("giao-ban"));
    // Garbage that is neither closes without harm, and the port keeps serving.
    let mut junk = TcpStream::connect(page).await.unwrap();
    junk.write_all(&[0x00, 0x01, 0x00, 0x00, 1, 2, 3, 4, 5, 6, 7, 8]).await.unwrap();
    let mut client = TurnClient::tcp(page, "0:p1", "x").await;
    assert_eq!(client.allocate().await, Err(401));
    service.shutdown().await;
}

/// A STUN Binding request over TCP; whether the TURN server answered it.
async fn binding_answered(stream: &mut TcpStream, number: u32) -> bool {
    let mut request = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xA4, 0x42];
    request.extend_from_slice(&[0; 8]);
    request.extend_from_slice(&number.to_be_bytes());
    if stream.write_all(&request).await.is_err() {
        return false;
    }
    let mut header = [0u8; 20];
    let answered = tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut header)).await;
    matches!(answered, Ok(Ok(_))) && header[..2] == [0x01, 0x01] && header[16..20] == number.to_be_bytes()
}

#[tokio::test]
async fn one_client_cannot_hold_every_tcp_connection_of_the_dedicated_port() {
    let service = start_with_turn_port().await;
    let port = service.turn_addresses()[0];
    let mut held = Vec::new();
    for number in 0..256 {
        let mut stream = TcpStream::connect(port).await.unwrap();
        assert!(binding_answered(&mut stream, number).await, "connection {number} was not served");
        held.push(stream);
    }
    let mut over = TcpStream::connect(port).await.unwrap();
    assert!(!binding_answered(&mut over, 256).await, "the 257th connection from one client was served");
    drop(held.pop());
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let mut stream = TcpStream::connect(port).await.unwrap();
            if binding_answered(&mut stream, 2000).await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the slot of a closed connection is returned");
    service.shutdown().await;
}
