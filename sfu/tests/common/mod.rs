//! Shared helpers: start the conference service on loopback and talk signaling to it.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use lienthong_config::Config;
use lienthong_sfu::ConferenceService;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// The tests serve plain HTTP on loopback; no certificate is ever asked for.
#[derive(Debug)]
pub struct NoCertificate;

impl ResolvesServerCert for NoCertificate {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        None
    }
}

pub const ROOMS: &str = r#"
[[conference.room]]
name = "giao-ban"
title = "Họp giao ban UBND tỉnh"
pin = "246810"
chair_pin = "135790"
sites = ["UBND tỉnh", "Huyện A", "Huyện B"]

[[conference.room]]
name = "hop-khan"
title = "Họp khẩn"
pin = "111111"
chair_pin = "222222"
sites = ["UBND tỉnh", "Huyện A"]
"#;

/// A config with these rooms; the media port is 0 (any free port), which only tests may use:
/// operators must name a fixed port for their firewall, so the config file refuses 0.
pub fn config(rooms: &str) -> Arc<Config> {
    let source = format!(
        r#"
[server]
hostname = "hub.ninhthuan.gov.vn"
addresses = ["127.0.0.1"]
state_dir = "state"
[dns]
enabled = false
[mail]
enabled = false
[conference]
listen = "127.0.0.1:0"
media_port = 10000
{rooms}
"#
    );
    let mut config = lienthong_config::parse(&source, "test.toml", Path::new("/tmp")).expect("valid config");
    config.conference.media_port = 0;
    Arc::new(config)
}

pub async fn start(rooms: &str) -> ConferenceService {
    // RUST_LOG=lienthong_sfu=debug shows the service's log when a test fails.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    ConferenceService::start(config(rooms), Arc::new(NoCertificate)).await.expect("start")
}

pub type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub async fn connect(service: &ConferenceService) -> Socket {
    let address: SocketAddr = service.page_address().expect("running");
    let (socket, _) = tokio_tungstenite::connect_async(format!("ws://{address}/ws")).await.expect("websocket");
    socket
}

pub async fn send(socket: &mut Socket, message: Value) {
    socket.send(Message::Text(message.to_string().into())).await.expect("send");
}

/// The next JSON message, skipping the given types (e.g. speaker updates).
pub async fn receive(socket: &mut Socket) -> Value {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("a message within 10 s")
            .expect("connection open")
            .expect("no protocol error");
        match message {
            Message::Text(text) => {
                let value: Value = serde_json::from_str(&text).expect("JSON");
                if value["type"] != "speaker" {
                    return value;
                }
            }
            Message::Close(frame) => panic!("closed: {frame:?}"),
            _ => {}
        }
    }
}

/// Receives until a message of this type arrives.
pub async fn receive_type(socket: &mut Socket, kind: &str) -> Value {
    loop {
        let message = receive(socket).await;
        if message["type"] == kind {
            return message;
        }
    }
}

pub async fn join(socket: &mut Socket, room: &str, site: &str, pin: &str) -> Value {
    send(socket, serde_json::json!({"type": "join", "v": 1, "room": room, "name": format!("Người ở {site}"), "site": site, "pin": pin})).await;
    receive(socket).await
}

/// Waits for the server to close the connection and returns the close code and reason.
pub async fn closed(socket: &mut Socket) -> (u16, String) {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), socket.next()).await.expect("closes within 10 s");
        match message {
            Some(Ok(Message::Close(Some(frame)))) => return (frame.code.into(), frame.reason.to_string()),
            Some(Ok(Message::Close(None))) | None | Some(Err(_)) => return (0, String::new()),
            Some(Ok(_)) => {}
        }
    }
}
