//! The operator's loopback HTTP endpoint: `/metrics`, `/healthz`, `POST /reload`, the
//! conference listing (`/conference`) and the mail queue. The config only accepts a loopback
//! address for it; `admin_access` decides which requests on that address are the operator's
//! (Host, Origin, the admin token).

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use lienthong_config::Config;
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;
use tokio::sync::{RwLock, mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::services::Services;

/// Asks the main loop to reload; the reply carries the problems when the reload is refused.
pub struct ReloadRequest {
    pub reply: oneshot::Sender<Result<(), Vec<String>>>,
}

#[derive(Clone)]
pub struct AdminState {
    pub metrics: PrometheusHandle,
    pub services: Arc<RwLock<Services>>,
    pub config: Arc<RwLock<Arc<Config>>>,
    pub reloads: mpsc::Sender<ReloadRequest>,
    /// The admin listen address, which `Host` must name.
    pub listen: SocketAddr,
    /// The token in `state_dir/admin.token`.
    pub token: Arc<str>,
}

/// Binds the admin listener (the error names the address) and serves it in the background.
pub async fn serve(address: SocketAddr, state: AdminState) -> anyhow::Result<JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("cannot listen on {address} (admin.listen)"))?;
    let router = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/conference", get(conference))
        .route("/reload", post(reload))
        .route("/queue", get(queue_list))
        .route("/queue/flush", post(queue_flush_all))
        .route("/queue/{id}", get(queue_show).delete(queue_remove))
        .route("/queue/{id}/flush", post(queue_flush_one))
        .route("/mail/dkim/{domain}/rotate", post(dkim_rotate))
        .layer(middleware::from_fn_with_state(state.clone(), guard))
        .with_state(state);
    Ok(tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, router).await {
            tracing::error!(%error, "admin endpoint stopped");
        }
    }))
}

/// Refuses requests that are not the operator's before any handler runs (also for unknown paths).
async fn guard(State(state): State<AdminState>, request: Request, next: Next) -> Response {
    match crate::admin_access::check(
        state.listen,
        &state.token,
        request.method(),
        request.uri().path(),
        request.headers(),
    ) {
        Ok(()) => next.run(request).await,
        Err(refusal) => {
            metrics::counter!("lienthong_admin_refused_total").increment(1);
            (refusal.status, refusal.reason).into_response()
        }
    }
}

async fn metrics(State(state): State<AdminState>) -> Response {
    let config = state.config.read().await.clone();
    for (service, serving) in state.services.read().await.health(&config) {
        metrics::gauge!("lienthong_service_serving", "service" => service).set(if serving { 1.0 } else { 0.0 });
    }
    state.metrics.run_upkeep();
    ([("content-type", "text/plain; version=0.0.4")], state.metrics.render()).into_response()
}

/// Every room, its participants and their connection quality (JSON).
async fn conference(State(state): State<AdminState>) -> Response {
    let rooms = state.services.read().await.conference.as_ref().map(|service| service.status()).unwrap_or_default();
    axum::Json(rooms).into_response()
}

/// 200 only when every enabled service is serving; the body says which is not.
async fn healthz(State(state): State<AdminState>) -> Response {
    let config = state.config.read().await.clone();
    let health = state.services.read().await.health(&config);
    let body: String = health
        .iter()
        .map(|(service, serving)| format!("{service} {}\n", if *serving { "serving" } else { "NOT serving" }))
        .collect();
    let status =
        if health.iter().all(|(_, serving)| *serving) { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, body).into_response()
}

async fn reload(State(state): State<AdminState>) -> Response {
    let (request, reply) = crate::run::reload_request();
    if state.reloads.send(request).await.is_err() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response();
    }
    match reply.await {
        Ok(Ok(())) => (StatusCode::OK, "reloaded\n").into_response(),
        Ok(Err(problems)) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("reload refused; the previous config stays in force:\n{}\n", problems.join("\n")),
        )
            .into_response(),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response(),
    }
}

const MAIL_DISABLED: &str = "the mail relay is not enabled\n";

async fn queue_list(State(state): State<AdminState>) -> Response {
    let services = state.services.read().await;
    let Some(mail) = &services.mail else {
        return (StatusCode::NOT_FOUND, MAIL_DISABLED).into_response();
    };
    let entries: Vec<_> = mail
        .queue_list()
        .await
        .into_iter()
        .map(|entry| {
            json!({
                "id": entry.id,
                "sender": entry.sender,
                "recipients": entry.recipients,
                "size": entry.size,
                "arrived_unix": entry.arrived_unix,
                "attempts": entry.attempts,
                "next_attempt_unix": entry.next_attempt_unix,
                "last_error": entry.last_error,
            })
        })
        .collect();
    axum::Json(entries).into_response()
}

async fn queue_show(State(state): State<AdminState>, Path(id): Path<String>) -> Response {
    let services = state.services.read().await;
    let Some(mail) = &services.mail else {
        return (StatusCode::NOT_FOUND, MAIL_DISABLED).into_response();
    };
    match mail.queue_show(&id).await {
        Some(text) => text.into_response(),
        None => (StatusCode::NOT_FOUND, format!("no queued message {id}\n")).into_response(),
    }
}

async fn queue_flush_all(State(state): State<AdminState>) -> Response {
    queue_flush(state, None).await
}

async fn queue_flush_one(State(state): State<AdminState>, Path(id): Path<String>) -> Response {
    queue_flush(state, Some(id)).await
}

async fn queue_flush(state: AdminState, id: Option<String>) -> Response {
    let services = state.services.read().await;
    let Some(mail) = &services.mail else {
        return (StatusCode::NOT_FOUND, MAIL_DISABLED).into_response();
    };
    let count = mail.queue_flush(id.as_deref()).await;
    if id.is_some() && count == 0 {
        return (StatusCode::NOT_FOUND, format!("no queued message {}\n", id.unwrap_or_default())).into_response();
    }
    format!("{count} message(s) scheduled for delivery now\n").into_response()
}

async fn queue_remove(State(state): State<AdminState>, Path(id): Path<String>) -> Response {
    let services = state.services.read().await;
    let Some(mail) = &services.mail else {
        return (StatusCode::NOT_FOUND, MAIL_DISABLED).into_response();
    };
    if mail.queue_remove(&id).await {
        format!("removed {id}\n").into_response()
    } else {
        (StatusCode::NOT_FOUND, format!("no queued message {id}\n")).into_response()
    }
}

/// New DKIM keys for one domain, then DNS republished with the new and retiring selectors.
async fn dkim_rotate(State(state): State<AdminState>, Path(domain): Path<String>) -> Response {
    let config = state.config.read().await.clone();
    let mut services = state.services.write().await;
    let Some(mail) = &services.mail else {
        return (StatusCode::NOT_FOUND, MAIL_DISABLED).into_response();
    };
    let selectors = match mail.dkim_rotate(&domain) {
        Ok(selectors) => selectors,
        Err(error @ lienthong_mailrelay::Error::NotLocal(_)) => {
            return (StatusCode::NOT_FOUND, format!("{error}\n")).into_response();
        }
        Err(error) => return (StatusCode::INTERNAL_SERVER_ERROR, format!("{error}\n")).into_response(),
    };
    if let Err(error) = services.republish(&config).await {
        return (StatusCode::INTERNAL_SERVER_ERROR, format!("keys rotated, but {error:#}\n")).into_response();
    }
    let [ed, rsa] = lienthong_mailrelay::dkim::selector_names(&selectors.current);
    let retiring: Vec<&str> = selectors.retiring.iter().map(|retiring| retiring.selector.as_str()).collect();
    format!(
        "{domain}: new mail is signed with selectors {ed} and {rsa}; still published until their mail is delivered: {}\n",
        if retiring.is_empty() { "none".to_owned() } else { retiring.join(", ") }
    )
    .into_response()
}
