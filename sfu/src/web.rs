//! The conference page and its signaling WebSocket, over HTTP or HTTPS.
//!
//! The page's files are compiled into the binary: no CDN, works on a network without internet.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::serve::ListenerExt;
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;

use crate::capped::{self, CappedListener};
use crate::conference::Command;
use crate::hub::{HubCommand, OUTBOUND_QUEUE, Outbound};
use crate::limits::{ConnectionSlots, Full};
use crate::listener::PageListener;
use crate::origin::AllowedOrigins;
use crate::protocol::{
    ClientMessage, MAX_MESSAGE_BYTES, ParticipantId, ProtocolError, ServerMessage, parse_client_message,
};
use crate::relay::TurnHandle;
use crate::room::RoomSummary;

/// Signaling connections at once (each is a task and a small queue).
const MAX_CONNECTIONS: usize = 2000;
/// Signaling connections from one client address (an IPv6 /64) at once: room for a district
/// office's participants behind one NAT address, not for one client to hold every slot.
const MAX_CONNECTIONS_PER_CLIENT: usize = 200;
/// A signaling connection must have joined a room this long after it opened, or it is
/// closed. The page sends `join` as soon as the socket opens; a refused join closes it.
pub(crate) const JOIN_DEADLINE: Duration = Duration::from_secs(20);
/// WebSocket close code 1008: policy violation (RFC 6455 section 7.4.1).
const CLOSE_POLICY: u16 = 1008;
/// WebSocket close code 1001: going away.
const CLOSE_GOING_AWAY: u16 = 1001;
/// How often the server pings each browser, and how long it waits to hear anything back.
const PING_INTERVAL: Duration = Duration::from_secs(15);
const IDLE_LIMIT: Duration = Duration::from_secs(45);
/// WebSocket close code 1009: message too big.
const CLOSE_TOO_BIG: u16 = 1009;

#[derive(Clone)]
pub(crate) struct WebState {
    pub commands: mpsc::Sender<HubCommand>,
    pub summaries: Arc<RwLock<Vec<RoomSummary>>>,
    pub next_id: Arc<AtomicU64>,
    pub connections: ConnectionSlots,
    pub origins: Arc<AllowedOrigins>,
}

impl WebState {
    pub fn new(
        commands: mpsc::Sender<HubCommand>,
        summaries: Arc<RwLock<Vec<RoomSummary>>>,
        origins: AllowedOrigins,
    ) -> Self {
        WebState {
            commands,
            summaries,
            next_id: Arc::new(AtomicU64::new(1)),
            connections: ConnectionSlots::new(MAX_CONNECTIONS, MAX_CONNECTIONS_PER_CLIENT),
            origins: Arc::new(origins),
        }
    }
}

pub(crate) fn router(state: WebState) -> Router {
    Router::new()
        .route("/", get(|| async { page(include_str!("../../web/index.html")) }))
        .route("/r/{room}", get(|| async { page(include_str!("../../web/room.html")) }))
        .route(
            "/assets/style.css",
            get(|| async { asset("text/css; charset=utf-8", include_str!("../../web/style.css")) }),
        )
        .route(
            "/assets/i18n.js",
            get(|| async { asset("text/javascript; charset=utf-8", include_str!("../../web/i18n.js")) }),
        )
        .route(
            "/assets/index.js",
            get(|| async { asset("text/javascript; charset=utf-8", include_str!("../../web/index.js")) }),
        )
        .route(
            "/assets/room.js",
            get(|| async { asset("text/javascript; charset=utf-8", include_str!("../../web/room.js")) }),
        )
        .route(
            "/assets/view.js",
            get(|| async { asset("text/javascript; charset=utf-8", include_str!("../../web/view.js")) }),
        )
        .route("/api/rooms", get(list_rooms))
        .route("/api/rooms/{room}", get(room_details))
        .route("/ws", get(upgrade))
        .with_state(state)
}

fn page(html: &'static str) -> Response {
    let mut response = ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response();
    let headers = response.headers_mut();
    // Everything comes from this server; nothing may be loaded from elsewhere.
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; connect-src 'self'; media-src 'self' blob: mediastream:; img-src 'self' data:; \
             style-src 'self'; script-src 'self'; frame-ancestors 'none'",
        ),
    );
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "no-cache")], body).into_response()
}

async fn list_rooms(State(state): State<WebState>) -> Response {
    let summaries = state.summaries.read().map(|rooms| rooms.clone()).unwrap_or_default();
    axum::Json(summaries).into_response()
}

async fn room_details(State(state): State<WebState>, Path(room): Path<String>) -> Response {
    let found =
        state.summaries.read().ok().and_then(|rooms| rooms.iter().find(|summary| summary.name == room).cloned());
    match found {
        Some(summary) => axum::Json(summary).into_response(),
        None => (StatusCode::NOT_FOUND, axum::Json(serde_json::json!({ "error": "unknown_room" }))).into_response(),
    }
}

async fn upgrade(
    State(state): State<WebState>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    uri: Uri,
    upgrade: WebSocketUpgrade,
) -> Response {
    // An Origin that is not text is as unusable as a wrong one: check it as an empty one.
    let origin = headers.get(header::ORIGIN).map(|value| value.to_str().unwrap_or(""));
    let host = headers
        .get(header::HOST)
        .and_then(|value| value.to_str().ok())
        .or_else(|| uri.authority().map(|authority| authority.as_str()));
    if let Err(refusal) = state.origins.check(origin, host) {
        tracing::info!(%remote, reason = refusal.message(), "signaling handshake refused");
        return (StatusCode::FORBIDDEN, refusal.message()).into_response();
    }
    // The name the browser reached us by (checked against its Origin just above): TURN URLs
    // in `welcome` use it, so they resolve and match the certificate exactly as the page did.
    let host = host.and_then(crate::ice::PageHost::parse);
    let permit = match state.connections.try_acquire(remote.ip()) {
        Ok(permit) => permit,
        Err(Full::Total) => return (StatusCode::SERVICE_UNAVAILABLE, "too many connections").into_response(),
        Err(Full::Client) => {
            tracing::info!(%remote, "signaling connection refused: this client holds its share");
            return (StatusCode::TOO_MANY_REQUESTS, "too many connections from this address").into_response();
        }
    };
    // Our own cap, MAX_MESSAGE_BYTES, is checked per message with a clear close reason; the
    // library's cap is a backstop against frames far beyond it.
    upgrade.max_message_size(MAX_MESSAGE_BYTES * 2).max_frame_size(MAX_MESSAGE_BYTES * 2).on_upgrade(
        move |socket| async move {
            let id = state.next_id.fetch_add(1, Ordering::Relaxed);
            serve_socket(socket, id, remote.ip(), host, state.commands).await;
            drop(permit);
        },
    )
}

/// Relays one browser's messages to the hub and the hub's messages back.
async fn serve_socket(
    socket: WebSocket,
    id: ParticipantId,
    address: IpAddr,
    host: Option<crate::ice::PageHost>,
    commands: mpsc::Sender<HubCommand>,
) {
    let (outbound, mut from_hub) = mpsc::channel(OUTBOUND_QUEUE);
    if commands.send(HubCommand::Open { outbound, open: Command::Open { id, address, host } }).await.is_err() {
        return;
    }
    let (mut sink, mut stream) = socket.split();
    let mut close: Option<(u16, String)> = None;
    let mut budget = MessageBudget::new(Instant::now());
    // Pings find connections whose network vanished without a TCP reset (browsers answer
    // them by themselves), so their participants do not linger as frozen tiles.
    let mut keepalive = tokio::time::interval(PING_INTERVAL);
    keepalive.tick().await;
    let mut last_heard = tokio::time::Instant::now();
    let join_deadline = tokio::time::sleep(JOIN_DEADLINE);
    tokio::pin!(join_deadline);
    let mut joined = false;
    loop {
        tokio::select! {
            () = &mut join_deadline, if !joined => {
                tracing::info!(connection = id, "signaling connection did not join in time; closing");
                close = Some((CLOSE_POLICY, format!("no join within {} s", JOIN_DEADLINE.as_secs())));
                break;
            }
            incoming = stream.next() => {
                if matches!(incoming, Some(Ok(_))) {
                    last_heard = tokio::time::Instant::now();
                }
                match incoming {
                    Some(Ok(Message::Text(_))) if !budget.take(Instant::now()) => {
                        close = Some((CLOSE_POLICY, "too many messages".into()));
                        break;
                    }
                    Some(Ok(Message::Text(text))) => match parse_client_message(text.as_str()) {
                        Ok(message) => {
                            let leaving = message == ClientMessage::Leave {};
                            if commands.send(HubCommand::Core(Command::Message { id, message })).await.is_err() || leaving {
                                break;
                            }
                        }
                        Err(error) => {
                            tracing::info!(connection = id, %error, "closing signaling connection");
                            let code = if error == ProtocolError::TooLarge { CLOSE_TOO_BIG } else { CLOSE_POLICY };
                            close = Some((code, error.to_string()));
                            break;
                        }
                    },
                    Some(Ok(Message::Binary(_))) => {
                        close = Some((CLOSE_POLICY, "binary messages are not part of the protocol".into()));
                        break;
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                    Some(Ok(Message::Close(_))) | None => break,
                    Some(Err(error)) => {
                        tracing::debug!(connection = id, %error, "signaling read error");
                        close = Some((CLOSE_POLICY, "unreadable message (too large or not WebSocket)".into()));
                        break;
                    }
                }
            }
            _ = keepalive.tick() => {
                if last_heard.elapsed() > IDLE_LIMIT {
                    tracing::info!(connection = id, "signaling connection silent; closing");
                    close = Some((CLOSE_GOING_AWAY, "no answer to pings".into()));
                    break;
                }
                if sink.send(Message::Ping(Default::default())).await.is_err() {
                    break;
                }
            }
            outgoing = from_hub.recv() => match outgoing {
                Some(Outbound::Message(message)) => {
                    joined |= matches!(message, ServerMessage::Welcome { .. });
                    if sink.send(Message::Text(message.to_json().into())).await.is_err() {
                        break;
                    }
                }
                Some(Outbound::Close(reason)) => {
                    close = Some((1000, reason));
                    break;
                }
                None => break,
            },
        }
    }
    let _ = commands.send(HubCommand::Core(Command::Close { id })).await;
    // Flush what the hub queued before the close (an `ended` message explains why).
    while let Ok(Outbound::Message(message)) = from_hub.try_recv() {
        let _ = sink.send(Message::Text(message.to_json().into())).await;
    }
    if let Some((code, mut reason)) = close {
        // A close reason is limited to 123 bytes; cut on a character boundary.
        while reason.len() > 120 {
            reason.pop();
        }
        let frame = CloseFrame { code, reason: reason.into() };
        let _ = sink.send(Message::Close(Some(frame))).await;
    }
    let _ = sink.close().await;
}

/// A token bucket for one connection's messages: a browser sends a handful per user action,
/// so a client sending floods (each `media` message is relayed to the whole room) is cut off.
struct MessageBudget {
    tokens: f64,
    updated: Instant,
}

impl MessageBudget {
    const BURST: f64 = 100.0;
    const PER_SECOND: f64 = 20.0;

    fn new(now: Instant) -> Self {
        MessageBudget { tokens: Self::BURST, updated: now }
    }

    fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * Self::PER_SECOND).min(Self::BURST);
        self.updated = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Serves HTTP or HTTPS on an already bound listener until `stop` fires; with `turn`, TURN
/// connections on the same port go to the TURN server.
pub(crate) async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    turn: Option<TurnHandle>,
    app: Router,
    stop: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<()> {
    let shutdown = {
        let mut stop = stop.clone();
        async move {
            let _ = stop.wait_for(|stopped| *stopped).await;
        }
    };
    let slots = ConnectionSlots::new(capped::MAX_PAGE_CONNECTIONS, capped::MAX_PAGE_CONNECTIONS_PER_CLIENT);
    let app = app.into_make_service_with_connect_info::<SocketAddr>();
    if tls.is_none() && turn.is_none() {
        let listener = CappedListener::new(listener, slots).tap_io(|_| {});
        return axum::serve(listener, app).with_graceful_shutdown(shutdown).await;
    }
    // `tap_io` gives our listeners axum's ConnectInfo<SocketAddr> support.
    let listener = PageListener::start(listener, slots, tls, turn, stop).tap_io(|_| {});
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_budget_allows_bursts_and_refills() {
        let start = Instant::now();
        let mut budget = MessageBudget::new(start);
        for _ in 0..100 {
            assert!(budget.take(start));
        }
        assert!(!budget.take(start));
        assert!(budget.take(start + Duration::from_millis(100)));
        assert!(budget.take(start + Duration::from_millis(100)));
        assert!(!budget.take(start + Duration::from_millis(100)));
    }
}
