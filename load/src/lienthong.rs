//! lienthong's signaling (`docs/signaling.md`, version 1): join with room, name, site and PIN,
//! offer our own tracks, answer the server's offers of the others' tracks.

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

use crate::Error;
use crate::client::MediaClient;
use crate::driver::{Signaling, WebSocket};

/// Largest answer accepted from `/api/rooms/<room>`.
const MAX_ROOM_RESPONSE: u64 = 1 << 20;

/// Where and how to join: `base` is the page's address, `http://HOST:PORT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LienthongTarget {
    pub base: String,
    pub room: String,
    pub pin: String,
}

impl LienthongTarget {
    fn host_port(&self) -> Result<&str, Error> {
        let rest = self.base.strip_prefix("http://").ok_or_else(|| {
            Error::Signaling(format!("{}: only http:// page addresses are supported (loopback runs)", self.base))
        })?;
        Ok(rest.trim_end_matches('/'))
    }

    fn websocket_url(&self) -> Result<String, Error> {
        Ok(format!("ws://{}/ws", self.host_port()?))
    }

    /// The room's sites, from `GET /api/rooms/<room>`; participants pick them in turn.
    pub async fn sites(&self) -> Result<Vec<String>, Error> {
        let host = self.host_port()?;
        let mut stream = TcpStream::connect(host).await?;
        let request = format!("GET /api/rooms/{} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n", self.room);
        stream.write_all(request.as_bytes()).await?;
        let mut response = Vec::new();
        stream.take(MAX_ROOM_RESPONSE).read_to_end(&mut response).await?;
        let response = String::from_utf8_lossy(&response);
        let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
        if !head.starts_with("HTTP/1.1 200") {
            let status = head.lines().next().unwrap_or("");
            return Err(Error::Signaling(format!("room {}: {status}", self.room)));
        }
        let room: Value = serde_json::from_str(body).map_err(|error| Error::Signaling(format!("room: {error}")))?;
        let sites: Vec<String> = room["sites"]
            .as_array()
            .map(|sites| sites.iter().filter_map(|site| site.as_str().map(str::to_owned)).collect())
            .unwrap_or_default();
        if sites.is_empty() {
            return Err(Error::Signaling(format!("room {} lists no sites", self.room)));
        }
        Ok(sites)
    }

    /// Joins the room and sends our offer (and, if `muted`, that the microphone is off).
    /// Returns the WebSocket, ready for [`crate::driver::drive`].
    pub(crate) async fn join(
        &self,
        client: &mut MediaClient,
        name: &str,
        site: &str,
        muted: bool,
    ) -> Result<WebSocket, Error> {
        let (mut websocket, _) = tokio_tungstenite::connect_async(self.websocket_url()?).await?;
        let join = json!({"type": "join", "v": 1, "room": self.room, "name": name, "site": site, "pin": self.pin});
        websocket.send(Message::text(join.to_string())).await?;
        loop {
            let message = websocket.next().await.ok_or_else(|| Error::Signaling("closed before welcome".into()))??;
            let Message::Text(text) = message else {
                if let Message::Close(frame) = message {
                    return Err(Error::Signaling(format!("closed before welcome: {frame:?}")));
                }
                continue;
            };
            let message: Value = parse(&text)?;
            match message["type"].as_str() {
                Some("welcome") => break,
                Some("refused") => {
                    return Err(Error::Signaling(format!("join refused: {}", message["reason"])));
                }
                _ => {}
            }
        }
        let offer = client.offer(std::time::Instant::now())?;
        websocket.send(Message::text(json!({"type": "offer", "sdp": offer}).to_string())).await?;
        if muted {
            let media = json!({"type": "media", "microphone": false, "camera": false, "screen": false});
            websocket.send(Message::text(media.to_string())).await?;
        }
        Ok(websocket)
    }
}

/// The session after the join.
pub(crate) struct LienthongSignaling;

impl Signaling for LienthongSignaling {
    fn on_text(&mut self, text: &str, client: &mut MediaClient) -> Result<Vec<String>, Error> {
        let message = parse(text)?;
        match message["type"].as_str() {
            Some("answer") => {
                client.accept_answer(sdp(&message)?)?;
                Ok(Vec::new())
            }
            Some("offer") => {
                let answer = client.accept_offer(sdp(&message)?)?;
                Ok(vec![json!({"type": "answer", "sdp": answer}).to_string()])
            }
            Some("ended") => Err(Error::Signaling(format!("session ended: {}", message["reason"]))),
            Some("refused") => {
                tracing::warn!(reason = %message["reason"], "the server refused a message");
                Ok(Vec::new())
            }
            _ => Ok(Vec::new()),
        }
    }

    fn keepalive(&mut self) -> Option<String> {
        // The server pings; tungstenite answers by itself.
        None
    }

    fn leave(&mut self) -> Option<String> {
        Some(json!({"type": "leave"}).to_string())
    }
}

fn parse(text: &str) -> Result<Value, Error> {
    serde_json::from_str(text).map_err(|error| Error::Signaling(format!("not JSON from the server: {error}")))
}

fn sdp(message: &Value) -> Result<&str, Error> {
    message["sdp"].as_str().ok_or_else(|| Error::Signaling("a message without sdp".into()))
}
