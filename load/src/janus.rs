//! Janus's VideoRoom over its WebSocket transport (`janus-protocol`): one Janus session and
//! plugin handle per peer connection. A publisher joins and publishes with our offer; a
//! subscriber joins with the list of feeds and answers Janus's offer (multistream, Janus 1.x).

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use crate::Error;
use crate::client::MediaClient;
use crate::driver::{Signaling, WebSocket};

const PLUGIN: &str = "janus.plugin.videoroom";
/// VideoRoom's error code for "room already exists".
const ROOM_EXISTS: i64 = 427;
/// VideoRoom's error code for "no such feed".
const NO_SUCH_FEED: i64 = 428;

/// Where Janus listens (`ws://127.0.0.1:PORT`) and which VideoRoom to use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JanusTarget {
    pub url: String,
    pub room: u64,
}

/// One Janus session with one VideoRoom handle.
pub(crate) struct JanusHandle {
    websocket: WebSocket,
    session: u64,
    handle: u64,
    transaction: u64,
    /// Candidates Janus trickled while we waited for a reply.
    candidates: Vec<String>,
}

impl JanusTarget {
    /// Creates the room (or uses it if it exists) for `publishers` publishers.
    pub async fn create_room(&self, publishers: usize) -> Result<(), Error> {
        let mut handle = JanusHandle::open(&self.url).await?;
        let body = json!({
            "request": "create", "room": self.room, "publishers": publishers.max(1),
            "audiocodec": "opus", "videocodec": "vp8", "bitrate": 0, "notify_joining": false,
        });
        let reply = handle.message(body, None).await?;
        let data = &reply["plugindata"]["data"];
        if data["videoroom"] == "created" || data["error_code"].as_i64() == Some(ROOM_EXISTS) {
            handle.destroy().await;
            return Ok(());
        }
        Err(Error::Signaling(format!("Janus did not create room {}: {data}", self.room)))
    }

    /// Joins as a publisher and publishes the client's offer. Returns the handle and the
    /// feed id others subscribe to.
    pub(crate) async fn publish(&self, client: &mut MediaClient, name: &str) -> Result<(JanusHandle, u64), Error> {
        let mut handle = JanusHandle::open(&self.url).await?;
        let join = json!({"request": "join", "ptype": "publisher", "room": self.room, "display": name});
        let joined = handle.message(join, None).await?;
        let feed = joined["plugindata"]["data"]["id"]
            .as_u64()
            .ok_or_else(|| Error::Signaling(format!("Janus join: {}", joined["plugindata"]["data"])))?;
        let offer = client.offer(std::time::Instant::now())?;
        let jsep = json!({"type": "offer", "sdp": offer, "trickle": false});
        let configured = handle.message(json!({"request": "publish"}), Some(jsep)).await?;
        let answer = configured["jsep"]["sdp"]
            .as_str()
            .ok_or_else(|| Error::Signaling(format!("Janus publish: {}", configured["plugindata"]["data"])))?;
        tracing::debug!(%offer, %answer, candidates = ?handle.candidates, "Janus publish");
        client.accept_answer(answer)?;
        handle.apply_candidates(client);
        Ok((handle, feed))
    }

    /// Joins as a subscriber to `feeds` and answers Janus's offer.
    pub(crate) async fn subscribe(&self, client: &mut MediaClient, feeds: &[u64]) -> Result<JanusHandle, Error> {
        let mut handle = JanusHandle::open(&self.url).await?;
        let streams: Vec<Value> = feeds.iter().map(|feed| json!({"feed": feed})).collect();
        let join = json!({"request": "join", "ptype": "subscriber", "room": self.room, "streams": streams});
        let mut attempts = 0;
        let attached = loop {
            let attached = handle.message(join.clone(), None).await?;
            // A publisher becomes a feed only once its DTLS is up on Janus's side, a moment
            // after ours: retry for a while.
            attempts += 1;
            if attached["plugindata"]["data"]["error_code"].as_i64() != Some(NO_SUCH_FEED) || attempts == 40 {
                break attached;
            }
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        };
        let offer = attached["jsep"]["sdp"]
            .as_str()
            .ok_or_else(|| Error::Signaling(format!("Janus subscribe: {}", attached["plugindata"]["data"])))?;
        let answer = client.accept_offer(offer)?;
        handle.apply_candidates(client);
        let jsep = json!({"type": "answer", "sdp": answer, "trickle": false});
        let started = handle.message(json!({"request": "start"}), Some(jsep)).await?;
        if started["plugindata"]["data"]["started"] != "ok" {
            return Err(Error::Signaling(format!("Janus start: {}", started["plugindata"]["data"])));
        }
        handle.apply_candidates(client);
        Ok(handle)
    }
}

impl JanusHandle {
    async fn open(url: &str) -> Result<JanusHandle, Error> {
        let mut request = url.into_client_request()?;
        request.headers_mut().insert("Sec-WebSocket-Protocol", HeaderValue::from_static("janus-protocol"));
        let (websocket, _) = tokio_tungstenite::connect_async(request).await?;
        let mut handle = JanusHandle { websocket, session: 0, handle: 0, transaction: 0, candidates: Vec::new() };
        let created = handle.call(json!({"janus": "create"})).await?;
        handle.session = id(&created)?;
        let attached = handle.call(json!({"janus": "attach", "plugin": PLUGIN, "session_id": handle.session})).await?;
        handle.handle = id(&attached)?;
        Ok(handle)
    }

    /// Sends a plugin message and waits for its result: a synchronous `success` or the
    /// asynchronous `event` that carries our transaction.
    async fn message(&mut self, body: Value, jsep: Option<Value>) -> Result<Value, Error> {
        let mut request =
            json!({"janus": "message", "session_id": self.session, "handle_id": self.handle, "body": body});
        if let Some(jsep) = jsep {
            request["jsep"] = jsep;
        }
        self.call(request).await
    }

    /// Sends a request with a fresh transaction and waits for its reply, skipping `ack`s.
    async fn call(&mut self, mut request: Value) -> Result<Value, Error> {
        self.transaction += 1;
        let transaction = format!("t{}", self.transaction);
        request["transaction"] = json!(transaction);
        self.websocket.send(Message::text(request.to_string())).await?;
        loop {
            let message = self.websocket.next().await.ok_or_else(|| Error::Signaling("Janus closed".into()))??;
            let Message::Text(text) = message else { continue };
            let reply: Value = serde_json::from_str(&text)
                .map_err(|error| Error::Signaling(format!("not JSON from Janus: {error}")))?;
            if reply["janus"] == "trickle" {
                if let Some(candidate) = reply["candidate"]["candidate"].as_str() {
                    self.candidates.push(candidate.to_owned());
                }
                continue;
            }
            if reply["transaction"] != transaction.as_str() || reply["janus"] == "ack" {
                continue;
            }
            if reply["janus"] == "error" {
                return Err(Error::Signaling(format!("Janus: {}", reply["error"])));
            }
            return Ok(reply);
        }
    }

    fn apply_candidates(&mut self, client: &mut MediaClient) {
        for candidate in self.candidates.drain(..) {
            client.add_remote_candidate(&candidate);
        }
    }

    /// Ends the session (Janus frees the handle and its peer connection).
    async fn destroy(mut self) {
        let _ = self.call(json!({"janus": "destroy", "session_id": self.session})).await;
    }

    /// The WebSocket and the signaling that keeps the session alive afterwards.
    pub(crate) fn into_session(self) -> (WebSocket, JanusSignaling) {
        let signaling = JanusSignaling { session: self.session, keepalives: 0 };
        (self.websocket, signaling)
    }
}

/// A published or subscribed session, after negotiation.
pub(crate) struct JanusSignaling {
    session: u64,
    keepalives: u64,
}

impl Signaling for JanusSignaling {
    fn on_text(&mut self, text: &str, client: &mut MediaClient) -> Result<Vec<String>, Error> {
        let message: Value =
            serde_json::from_str(text).map_err(|error| Error::Signaling(format!("not JSON from Janus: {error}")))?;
        match message["janus"].as_str() {
            Some("trickle") => {
                if let Some(candidate) = message["candidate"]["candidate"].as_str() {
                    client.add_remote_candidate(candidate);
                }
            }
            Some("hangup") => return Err(Error::Signaling(format!("Janus hung up: {}", message["reason"]))),
            Some("timeout") => return Err(Error::Signaling("Janus timed the session out".into())),
            _ => {}
        }
        Ok(Vec::new())
    }

    fn keepalive(&mut self) -> Option<String> {
        self.keepalives += 1;
        Some(
            json!({"janus": "keepalive", "session_id": self.session, "transaction": format!("k{}", self.keepalives)})
                .to_string(),
        )
    }

    fn leave(&mut self) -> Option<String> {
        Some(json!({"janus": "destroy", "session_id": self.session, "transaction": "bye"}).to_string())
    }
}

fn id(reply: &Value) -> Result<u64, Error> {
    reply["data"]["id"].as_u64().ok_or_else(|| Error::Signaling(format!("Janus: unexpected reply {reply}")))
}
