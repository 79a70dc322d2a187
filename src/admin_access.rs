//! Who may use the admin endpoint. It listens on loopback only, but a browser on the
//! appliance, or one at the far end of an operator's `ssh -L` tunnel, also reaches loopback:
//! a web page could POST to it cross-site, or rebind its own name to 127.0.0.1 and read it.
//! So every request must name this endpoint in `Host` (defeats rebinding), a state-changing
//! one must carry no `Origin` (browsers add it to cross-site POSTs; the CLI never does), and
//! everything but `GET /metrics` and `GET /healthz` needs the token that `lienthong run`
//! keeps in `state_dir/admin.token` (0600), which the CLI reads.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use axum::http::{HeaderMap, Method, StatusCode, header};

/// The token file's name inside `server.state_dir`.
pub const TOKEN_FILE: &str = "admin.token";

/// The path of the admin token for a config's state directory.
pub fn token_path(state_dir: &Path) -> PathBuf {
    state_dir.join(TOKEN_FILE)
}

/// Reads the admin token, creating a fresh random one (0600) when there is none.
pub fn load_or_create_token(state_dir: &Path) -> anyhow::Result<String> {
    let path = token_path(state_dir);
    match std::fs::read_to_string(&path) {
        Ok(text) if is_token(text.trim()) => return Ok(text.trim().to_owned()),
        Ok(_) => tracing::warn!(path = %path.display(), "the admin token file is malformed; writing a new token"),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(error).with_context(|| format!("reading the admin token {}", path.display())),
    }
    let token: String = rand::random::<[u8; 32]>().iter().map(|byte| format!("{byte:02x}")).collect();
    lienthong_config::state::write_private(&path, format!("{token}\n").as_bytes())
        .with_context(|| format!("writing the admin token {}", path.display()))?;
    Ok(token)
}

/// Reads the token for the CLI; the error says how to get access.
pub fn read_token(state_dir: &Path) -> anyhow::Result<String> {
    let path = token_path(state_dir);
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "cannot read the admin token {} (lienthong run writes it on start; run this command as the \
             user lienthong runs as, or as root)",
            path.display()
        )
    })?;
    let token = text.trim();
    anyhow::ensure!(is_token(token), "the admin token {} is malformed (restart lienthong to renew it)", path.display());
    Ok(token.to_owned())
}

/// Why a request is refused: the status and a short, fixed explanation (never request text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: StatusCode,
    pub reason: String,
}

/// Decides whether a request may proceed. `listen` is the admin listen address.
pub fn check(listen: SocketAddr, token: &str, method: &Method, path: &str, headers: &HeaderMap) -> Result<(), Refusal> {
    let host = headers.get(header::HOST).and_then(|value| value.to_str().ok());
    if !host.is_some_and(|host| host_names_endpoint(host, listen)) {
        return Err(Refusal {
            status: StatusCode::MISDIRECTED_REQUEST,
            reason: format!(
                "refused: the Host header must name this admin endpoint ({listen} or localhost:{})\n",
                listen.port()
            ),
        });
    }
    let reads_only = method == Method::GET || method == Method::HEAD;
    if !reads_only && headers.contains_key(header::ORIGIN) {
        return Err(Refusal {
            status: StatusCode::FORBIDDEN,
            reason: "refused: a request from a web page (it carries Origin) may not change anything here\n".into(),
        });
    }
    if reads_only && (path == "/metrics" || path == "/healthz") {
        return Ok(());
    }
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim);
    match presented {
        Some(presented) if equal_in_constant_time(presented.as_bytes(), token.as_bytes()) => Ok(()),
        Some(_) => Err(Refusal { status: StatusCode::UNAUTHORIZED, reason: "refused: wrong admin token\n".into() }),
        None => Err(Refusal {
            status: StatusCode::UNAUTHORIZED,
            reason: format!(
                "refused: this request needs the admin token (Authorization: Bearer, from server.state_dir/{TOKEN_FILE}; \
                 the lienthong CLI sends it)\n"
            ),
        }),
    }
}

/// `Host` must be the listen address itself or a loopback name with its port. A port may be
/// left out only when it is the HTTP default, 80.
fn host_names_endpoint(host: &str, listen: SocketAddr) -> bool {
    let host = host.trim().to_ascii_lowercase();
    let (name, port) = match host.rsplit_once(':') {
        Some((name, port)) if !name.is_empty() && (name.starts_with('[') || !name.contains(':')) => {
            match port.parse::<u16>() {
                Ok(port) => (name.to_owned(), port),
                Err(_) => return false,
            }
        }
        _ => (host.clone(), 80),
    };
    if port != listen.port() {
        return false;
    }
    let listen_name = match listen {
        SocketAddr::V4(address) => address.ip().to_string(),
        SocketAddr::V6(address) => format!("[{}]", address.ip()),
    };
    name == listen_name || name == "localhost" || name == "127.0.0.1" || name == "[::1]"
}

fn is_token(text: &str) -> bool {
    (16..=256).contains(&text.len()) && text.bytes().all(|byte| byte.is_ascii_graphic())
}

fn equal_in_constant_time(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |difference, (x, y)| difference | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    const TOKEN: &str = "0123456789abcdef0123456789abcdef";

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(name.clone(), HeaderValue::from_str(value).unwrap());
        }
        map
    }

    fn status(method: Method, path: &str, pairs: &[(header::HeaderName, &str)]) -> Option<StatusCode> {
        check("127.0.0.1:9090".parse().unwrap(), TOKEN, &method, path, &headers(pairs)).err().map(|r| r.status)
    }

    #[test]
    fn host_must_name_the_endpoint() {
        let listen: SocketAddr = "127.0.0.1:9090".parse().unwrap();
        for good in ["127.0.0.1:9090", "localhost:9090", "LOCALHOST:9090", "[::1]:9090"] {
            assert!(host_names_endpoint(good, listen), "{good}");
        }
        for bad in ["evil.example:9090", "127.0.0.1:9091", "127.0.0.1", "localhost", "", "127.0.0.1:x", "::1:9090"] {
            assert!(!host_names_endpoint(bad, listen), "{bad}");
        }
        assert!(host_names_endpoint("[::1]:9090", "[::1]:9090".parse().unwrap()));
        assert!(host_names_endpoint("localhost", "127.0.0.1:80".parse().unwrap()));
    }

    #[test]
    fn reads_of_metrics_need_only_the_host() {
        let host = (header::HOST, "127.0.0.1:9090");
        assert_eq!(status(Method::GET, "/metrics", std::slice::from_ref(&host)), None);
        assert_eq!(status(Method::GET, "/healthz", &[host.clone(), (header::ORIGIN, "http://a.example")]), None);
        assert_eq!(
            status(Method::GET, "/metrics", &[(header::HOST, "evil.example:9090")]),
            Some(StatusCode::MISDIRECTED_REQUEST)
        );
        assert_eq!(status(Method::GET, "/metrics", &[]), Some(StatusCode::MISDIRECTED_REQUEST));
        assert_eq!(status(Method::GET, "/queue", std::slice::from_ref(&host)), Some(StatusCode::UNAUTHORIZED));
    }

    #[test]
    fn changes_need_the_token_and_no_origin() {
        let host = (header::HOST, "localhost:9090");
        let bearer = format!("Bearer {TOKEN}");
        let auth = (header::AUTHORIZATION, bearer.as_str());
        assert_eq!(status(Method::POST, "/reload", &[host.clone(), auth.clone()]), None);
        assert_eq!(status(Method::DELETE, "/queue/x", &[host.clone(), auth.clone()]), None);
        assert_eq!(
            status(Method::POST, "/reload", &[host.clone(), auth.clone(), (header::ORIGIN, "null")]),
            Some(StatusCode::FORBIDDEN)
        );
        assert_eq!(status(Method::POST, "/reload", std::slice::from_ref(&host)), Some(StatusCode::UNAUTHORIZED));
        assert_eq!(
            status(
                Method::POST,
                "/reload",
                &[host.clone(), (header::AUTHORIZATION, "Bearer 0123456789abcdef0123456789abcdee")]
            ),
            Some(StatusCode::UNAUTHORIZED)
        );
        assert_eq!(
            status(Method::POST, "/metrics", &[host, (header::AUTHORIZATION, "Basic x")]),
            Some(StatusCode::UNAUTHORIZED)
        );
    }

    #[test]
    fn a_token_is_created_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_create_token(dir.path()).unwrap();
        assert_eq!(first.len(), 64);
        assert_eq!(load_or_create_token(dir.path()).unwrap(), first);
        assert_eq!(read_token(dir.path()).unwrap(), first);
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(token_path(dir.path())).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
}
