//! Who may open the signaling WebSocket, and the caps and deadlines on every conference
//! listener (the page port's TURN connections included), through the real listeners on loopback.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use common::{ROOMS, Socket, join, send, start};
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

/// A TCP connection to `to` from the loopback address `from` (127.0.0.2 is a second client).
async fn tcp_from(from: IpAddr, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(from, 0)).unwrap();
    socket.connect(to).await.expect("tcp connect")
}

/// A WebSocket handshake with the given `Host` and `Origin` (each left as the client's default
/// when `None`); returns the socket or the HTTP status of the refusal.
async fn handshake(page: SocketAddr, from: IpAddr, host: Option<&str>, origin: Option<&str>) -> Result<Socket, u16> {
    let mut request = format!("ws://{page}/ws").into_client_request().unwrap();
    if let Some(host) = host {
        request.headers_mut().insert("host", HeaderValue::from_str(host).unwrap());
    }
    if let Some(origin) = origin {
        request.headers_mut().insert("origin", HeaderValue::from_str(origin).unwrap());
    }
    let stream = tcp_from(from, page).await;
    match tokio_tungstenite::client_async(request, tokio_tungstenite::MaybeTlsStream::Plain(stream)).await {
        Ok((socket, _)) => Ok(socket),
        Err(WsError::Http(response)) => Err(response.status().as_u16()),
        Err(other) => panic!("handshake failed oddly: {other}"),
    }
}

const CLIENT: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 1));
const OTHER_CLIENT: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));

#[tokio::test]
async fn only_the_conference_page_itself_may_open_the_websocket() {
    let service = start(ROOMS).await;
    let page = service.page_address().unwrap();
    let port = page.port();
    let own = format!("http://127.0.0.1:{port}");
    let named_host = format!("hub.ninhthuan.gov.vn:{port}");
    let named = format!("http://{named_host}");
    let rebound_host = format!("rebind.evil.example:{port}");
    let rebound = format!("http://{rebound_host}");

    // Another site's page, in a visitor's browser.
    assert_eq!(handshake(page, CLIENT, None, Some("http://evil.example")).await.err(), Some(403));
    assert_eq!(handshake(page, CLIENT, None, Some(&format!("http://evil.example:{port}"))).await.err(), Some(403));
    // A page that rebound its own name to this server: Origin and Host agree, the name is not ours.
    assert_eq!(handshake(page, CLIENT, Some(&rebound_host), Some(&rebound)).await.err(), Some(403));
    // Wrong scheme, opaque origins.
    assert_eq!(handshake(page, CLIENT, None, Some(&format!("https://127.0.0.1:{port}"))).await.err(), Some(403));
    assert_eq!(handshake(page, CLIENT, None, Some("null")).await.err(), Some(403));

    // The page as served under its address and under the conference's name can join.
    let mut socket = handshake(page, CLIENT, None, Some(&own)).await.expect("own origin");
    assert_eq!(join(&mut socket, "giao-ban", "Huyện A", "246810").await["type"], "welcome");
    let mut socket = handshake(page, CLIENT, Some(&named_host), Some(&named)).await.expect("conference name");
    assert_eq!(join(&mut socket, "giao-ban", "Huyện B", "246810").await["type"], "welcome");
    // Non-browser clients send no Origin.
    let mut socket = handshake(page, CLIENT, None, None).await.expect("no origin");
    assert_eq!(join(&mut socket, "giao-ban", "UBND tỉnh", "246810").await["type"], "welcome");
    service.shutdown().await;
}

/// Waits (bounded) for the server to close; returns the close code, reason and when.
async fn close_of(socket: &mut Socket, limit: Duration) -> (u16, String, Instant) {
    let result = tokio::time::timeout(limit, async {
        loop {
            match socket.next().await {
                Some(Ok(Message::Close(Some(frame)))) => return (frame.code.into(), frame.reason.to_string()),
                Some(Ok(Message::Close(None))) | None | Some(Err(_)) => return (0, String::new()),
                Some(Ok(_)) => {}
            }
        }
    })
    .await
    .expect("the server closes the connection in time");
    (result.0, result.1, Instant::now())
}

#[tokio::test]
async fn a_connection_that_never_joins_is_closed_with_a_reason() {
    let service = start(ROOMS).await;
    let page = service.page_address().unwrap();
    let opened = Instant::now();
    let mut idle = handshake(page, CLIENT, None, None).await.unwrap();
    let mut member = handshake(page, CLIENT, None, None).await.unwrap();
    assert_eq!(join(&mut member, "giao-ban", "Huyện A", "246810").await["type"], "welcome");

    let (code, reason, at) = close_of(&mut idle, Duration::from_secs(60)).await;
    assert_eq!((code, reason.as_str()), (1008, "no join within 20 s"));
    let waited = at - opened;
    assert!(waited >= Duration::from_secs(19) && waited < Duration::from_secs(50), "closed after {waited:?}");
    // The joined participant is still connected: it gets an answer to a second join.
    send(&mut member, serde_json::json!({"type": "join", "v": 1, "room": "giao-ban", "name": "x", "site": "Huyện A", "pin": "246810"})).await;
    assert_eq!(common::receive(&mut member).await["reason"], "already_joined");
    service.shutdown().await;
}

#[tokio::test]
async fn one_client_cannot_hold_every_signaling_slot() {
    let service = start(ROOMS).await;
    let page = service.page_address().unwrap();
    let mut held = Vec::new();
    for _ in 0..200 {
        held.push(handshake(page, CLIENT, None, None).await.expect("within the client's share"));
    }
    assert_eq!(handshake(page, CLIENT, None, None).await.err(), Some(429));
    let mut other = handshake(page, OTHER_CLIENT, None, None).await.expect("another client still gets in");
    assert_eq!(join(&mut other, "giao-ban", "Huyện A", "246810").await["type"], "welcome");
    // A freed slot is usable again.
    drop(held.pop());
    tokio::time::timeout(Duration::from_secs(20), async {
        while handshake(page, CLIENT, None, None).await.is_err() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the slot of a closed connection is returned");
    service.shutdown().await;
}

/// Reads until the peer closes; returns when, or `None` if still open after `limit`.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Option<Instant> {
    let mut buffer = [0u8; 256];
    tokio::time::timeout(limit, async {
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return Instant::now(),
                Ok(_) => {}
            }
        }
    })
    .await
    .ok()
}

#[tokio::test]
async fn ice_tcp_connections_are_capped_per_client_and_closed_when_silent() {
    let service = start(ROOMS).await;
    let media = service.media_addresses()[0];
    let opened = Instant::now();
    let mut held = Vec::new();
    for _ in 0..100 {
        held.push(tcp_from(CLIENT, media).await);
    }
    // One more from the same client is closed at once; another client is let in.
    let mut over = tcp_from(CLIENT, media).await;
    assert!(closed_within(&mut over, Duration::from_secs(5)).await.is_some(), "the 101st connection stayed open");
    let mut other = tcp_from(OTHER_CLIENT, media).await;
    // It sends a frame (not STUN; the hub drops it), which moves it to the longer idle limit.
    other.write_all(&[0, 4, 1, 2, 3, 4]).await.unwrap();
    let framed = Instant::now();

    // Silent connections are closed once the first-frame deadline passes (10 s)...
    let first = closed_within(&mut held[0], Duration::from_secs(40)).await.expect("a silent connection is closed");
    let waited = first - opened;
    assert!(waited >= Duration::from_secs(9) && waited < Duration::from_secs(35), "closed after {waited:?}");
    // ...and a connection that went quiet after a frame, once the idle limit (30 s) passes.
    let idle = closed_within(&mut other, Duration::from_secs(60)).await.expect("an idle connection is closed");
    let waited = idle - framed;
    assert!(waited >= Duration::from_secs(29) && waited < Duration::from_secs(55), "closed after {waited:?}");
    service.shutdown().await;
}

#[tokio::test]
async fn page_connections_are_capped_per_client_and_closed_when_silent() {
    let service = start(ROOMS).await;
    let page = service.page_address().unwrap();
    let opened = Instant::now();
    let mut held = Vec::new();
    for _ in 0..256 {
        held.push(tcp_from(CLIENT, page).await);
    }
    // One held connection starts a request and stops in the middle of it.
    held[0].write_all(b"GET /api/rooms HTTP/1.1\r\n").await.unwrap();
    let stalled = Instant::now();
    let mut over = tcp_from(CLIENT, page).await;
    assert!(closed_within(&mut over, Duration::from_secs(5)).await.is_some(), "the 257th connection stayed open");
    // Another client is served meanwhile.
    let mut other = tcp_from(OTHER_CLIENT, page).await;
    other.write_all(b"GET /api/rooms HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut reply = String::new();
    tokio::time::timeout(Duration::from_secs(10), other.read_to_string(&mut reply)).await.unwrap().unwrap();
    assert!(reply.starts_with("HTTP/1.1 200") && reply.contains("giao-ban"), "{reply}");
    // A connection that never sends a byte is closed once the listener's first-bytes deadline
    // (10 s: with TURN on the page's port, its first bytes say whether it is HTTP or TURN).
    let closed = closed_within(&mut held[1], Duration::from_secs(60)).await.expect("a silent connection is closed");
    let waited = closed - opened;
    assert!(waited >= Duration::from_secs(9) && waited < Duration::from_secs(50), "closed after {waited:?}");
    // The slots of closed connections are returned: this client may connect again.
    let mut again = tcp_from(CLIENT, page).await;
    again.write_all(b"GET /api/rooms HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut reply = String::new();
    tokio::time::timeout(Duration::from_secs(10), again.read_to_string(&mut reply)).await.unwrap().unwrap();
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    // A connection that stopped in the middle of a request is closed after the idle limit (60 s).
    let closed = closed_within(&mut held[0], Duration::from_secs(120)).await.expect("a stalled connection is closed");
    let waited = closed - stalled;
    assert!(waited >= Duration::from_secs(59) && waited < Duration::from_secs(110), "closed after {waited:?}");
    service.shutdown().await;
}

/// A STUN Binding request over TCP, answered by the TURN server on the page's port.
async fn turn_binding(stream: &mut TcpStream, number: u32) -> bool {
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
async fn turn_connections_on_the_page_port_hold_the_clients_slots() {
    let service = start(ROOMS).await;
    let page = service.page_address().unwrap();
    // Every connection is TURN (the page's port serves it by default) and answered, so each
    // has been handed to the TURN server, which now holds its slot.
    let mut held = Vec::new();
    for number in 0..256 {
        let mut stream = tcp_from(CLIENT, page).await;
        assert!(turn_binding(&mut stream, number).await, "TURN connection {number} was not served");
        held.push(stream);
    }
    let mut over = tcp_from(CLIENT, page).await;
    assert!(!turn_binding(&mut over, 256).await, "the 257th connection was served");
    // Another client is served meanwhile, TURN and the page alike.
    let mut other = tcp_from(OTHER_CLIENT, page).await;
    assert!(turn_binding(&mut other, 1000).await);
    // Closing a TURN connection returns its slot.
    drop(held.pop());
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let mut stream = tcp_from(CLIENT, page).await;
            if turn_binding(&mut stream, 2000).await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the slot of a closed TURN connection is returned");
    service.shutdown().await;
}
