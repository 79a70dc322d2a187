//! The async driver: listeners, TLS, and the loop that runs a [`Session`] over a socket.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;

use crate::session::{Action, Listener, Session};
use crate::tls::TlsInfoExt;
use crate::{Shared, unix_now};

/// Idle time allowed between client commands (RFC 5321 4.5.3.2 asks for 5 minutes).
const IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// Time allowed for a TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// Sessions at once, across listeners.
pub const MAX_SESSIONS: usize = 2000;

/// Accepts connections until `shutdown` turns true.
pub async fn accept_loop(
    listener: TcpListener,
    kind: Listener,
    shared: Arc<Shared>,
    sessions: Arc<Semaphore>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.changed() => return,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let policy = shared.policy();
        let peer_ip = canonical_ip(peer.ip());
        let slot = if policy.may_relay_without_auth(peer_ip) {
            None
        } else {
            match shared.connections.try_open(peer_ip, policy.max_connections_per_client) {
                Some(slot) => Some(slot),
                None => {
                    metrics::counter!("lienthong_mail_connections_refused_total", "reason" => "per_client")
                        .increment(1);
                    tracing::info!(peer = %peer_ip, "connection refused: too many sessions from this client");
                    refuse(stream, b"421 4.7.0 Too many connections from your address; try again later\r\n");
                    continue;
                }
            }
        };
        let Ok(permit) = sessions.clone().try_acquire_owned() else {
            metrics::counter!("lienthong_mail_connections_refused_total", "reason" => "total").increment(1);
            refuse(stream, b"421 4.7.0 Too many connections; try again later\r\n");
            continue;
        };
        let shared = shared.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            serve(stream, peer, kind, &shared, shutdown).await;
            drop(permit);
            drop(slot);
        });
    }
}

/// Says 421 and closes, without holding up the accept loop.
fn refuse(mut stream: TcpStream, reply: &'static [u8]) {
    tokio::spawn(async move {
        let _ = tokio::time::timeout(Duration::from_secs(5), stream.write_all(reply)).await;
    });
}

enum Ended<S> {
    Done,
    Upgrade(S),
}

async fn serve(stream: TcpStream, peer: SocketAddr, kind: Listener, shared: &Shared, shutdown: watch::Receiver<bool>) {
    let _ = stream.set_nodelay(true);
    let policy = shared.policy();
    let acceptor = TlsAcceptor::from(shared.tls_server.clone());
    let peer_ip = canonical_ip(peer.ip());
    if kind == Listener::Submissions {
        let Some(tls) = handshake(&acceptor, stream, peer).await else { return };
        let info = tls.get_ref().1.info();
        let mut session = Session::new(policy, kind, peer_ip, Some(info), true);
        let _ = drive(tls, &mut session, shared, peer_ip, shutdown).await;
        return;
    }
    let mut session = Session::new(policy, kind, peer_ip, None, true);
    if let Ended::Upgrade(stream) = drive(stream, &mut session, shared, peer_ip, shutdown.clone()).await {
        let Some(tls) = handshake(&acceptor, stream, peer).await else { return };
        session.tls_started(tls.get_ref().1.info());
        let _ = drive(tls, &mut session, shared, peer_ip, shutdown).await;
    }
}

async fn handshake(
    acceptor: &TlsAcceptor,
    stream: TcpStream,
    peer: SocketAddr,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => Some(tls),
        Ok(Err(error)) => {
            tracing::info!(%peer, %error, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::info!(%peer, "TLS handshake timed out");
            None
        }
    }
}

async fn drive<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    session: &mut Session,
    shared: &Shared,
    peer: IpAddr,
    mut shutdown: watch::Receiver<bool>,
) -> Ended<S> {
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        match session.advance() {
            Action::NeedInput => {
                if write_output(&mut stream, session).await.is_err() {
                    return Ended::Done;
                }
                let read = tokio::select! {
                    read = tokio::time::timeout(IDLE_TIMEOUT, stream.read(&mut buffer)) => read,
                    _ = shutdown.changed() => {
                        session.shutting_down();
                        continue;
                    }
                };
                match read {
                    Ok(Ok(0)) | Ok(Err(_)) => return Ended::Done,
                    Ok(Ok(count)) => {
                        session.receive(&buffer[..count]);
                    }
                    Err(_) => session.timed_out(),
                }
            }
            Action::StartTls => {
                if write_output(&mut stream, session).await.is_err() {
                    return Ended::Done;
                }
                return Ended::Upgrade(stream);
            }
            Action::Authenticate { login, password } => {
                let outcome = shared.authenticate(peer, &login, password).await;
                session.authentication_result(&login, outcome);
            }
            Action::VerifyRecipient(recipient) => {
                let status = shared.verify_recipient(&recipient).await;
                session.verification_result(status);
            }
            Action::Enqueue(mut incoming) => match shared.check_sender(&mut incoming).await {
                Err(refusal) => session.refuse_message(refusal.code, refusal.enhanced, &refusal.text),
                Ok(checked) => {
                    let result = shared.accept_message(*incoming, checked.as_ref(), unix_now()).await;
                    session.enqueue_result(result);
                }
            },
            Action::Close => {
                let _ = write_output(&mut stream, session).await;
                let _ = stream.shutdown().await;
                return Ended::Done;
            }
        }
    }
}

async fn write_output<S: AsyncWrite + Unpin>(stream: &mut S, session: &mut Session) -> std::io::Result<()> {
    if session.has_output() {
        let output = session.take_output();
        stream.write_all(&output).await?;
        stream.flush().await?;
    }
    Ok(())
}

fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}
