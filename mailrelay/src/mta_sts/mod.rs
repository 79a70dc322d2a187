//! MTA-STS (RFC 8461) for outbound delivery: which policy a recipient domain has now.
//!
//! Per delivery to a domain: its `_mta-sts` TXT record is looked up; when its `id` is the one
//! of the cached, unexpired policy, that policy is used; otherwise the policy is fetched over
//! HTTPS ([`fetch`]), parsed ([`policy`]) and cached ([`cache`], saved in
//! `state_dir/mail/mta-sts.json`). A failed lookup or fetch falls back to the cached policy
//! while it is unexpired (RFC 8461 5.1), so an attacker who blocks DNS or HTTPS cannot turn an
//! `enforce` domain into a clear-text one. Everything read from DNS or HTTP is bounded and
//! only logged through [`policy::sanitize`].

pub mod cache;
pub mod fetch;
pub mod policy;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

use hickory_resolver::TokioResolver;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;

pub use policy::{Mode, Policy};

/// TXT record sets longer than this are not an MTA-STS announcement.
const MAX_TXT_BYTES: usize = 4096;
/// Addresses of `mta-sts.DOMAIN` tried per fetch.
const MAX_ADDRESSES: usize = 4;

/// The policies of recipient domains, looked up and cached.
pub struct MtaSts {
    resolver: Option<TokioResolver>,
    /// The relay's verifying client config (system roots and `ca_file`), swapped on reload.
    tls: RwLock<Arc<rustls::ClientConfig>>,
    /// 443, except in tests.
    https_port: u16,
    cache: Mutex<cache::Cache>,
    path: PathBuf,
    /// One fetch per domain at a time; the others wait for it and use its result.
    fetching: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Saves one at a time, each of the table as it is then, so the newest wins.
    saving: tokio::sync::Mutex<()>,
}

impl MtaSts {
    /// Resolves through `forwarders` (else the system configuration); policies are fetched
    /// from `https_port` and kept in `state_dir/mail/mta-sts.json`.
    pub fn new(
        forwarders: &[SocketAddr],
        tls: Arc<rustls::ClientConfig>,
        https_port: u16,
        state_dir: &std::path::Path,
        now_unix: u64,
    ) -> Self {
        let builder = if forwarders.is_empty() {
            TokioResolver::builder_tokio().map_err(|error| error.to_string())
        } else {
            Ok(TokioResolver::builder_with_config(
                crate::resolver::forwarder_config(forwarders),
                TokioRuntimeProvider::default(),
            ))
        };
        let resolver = match builder.and_then(|builder| builder.build().map_err(|error| error.to_string())) {
            Ok(resolver) => Some(resolver),
            Err(reason) => {
                tracing::warn!(%reason, "no DNS for MTA-STS lookups: foreign mail is sent as if no domain had a policy");
                None
            }
        };
        let path = state_dir.join("mail").join("mta-sts.json");
        let cache = read_cache(&path, now_unix);
        Self {
            resolver,
            tls: RwLock::new(tls),
            https_port,
            cache: Mutex::new(cache),
            path,
            fetching: Mutex::default(),
            saving: tokio::sync::Mutex::default(),
        }
    }

    /// New trust anchors (a reloaded `ca_file`).
    pub fn set_tls(&self, tls: Arc<rustls::ClientConfig>) {
        *self.tls.write().unwrap_or_else(std::sync::PoisonError::into_inner) = tls;
    }

    /// The policy `domain` has now, `None` when it has none (or mode `none`).
    pub async fn policy(&self, domain: &str, now_unix: u64) -> Option<Policy> {
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        let found = self.current_policy(&domain, now_unix).await;
        found.filter(|policy| policy.mode != Mode::None)
    }

    async fn current_policy(&self, domain: &str, now_unix: u64) -> Option<Policy> {
        let cached = self.cached(domain, now_unix);
        let id = match self.record(domain).await {
            Ok(policy::Record::Id(id)) => id,
            // No announcement (any more): a cached policy stays in force until it expires
            // (RFC 8461 8.3: a domain withdraws one by publishing mode `none`).
            Ok(policy::Record::Absent) => return cached.map(|cached| cached.policy),
            Err(reason) => {
                tracing::warn!(domain, %reason, "MTA-STS TXT lookup failed; using the cached policy if any");
                return cached.map(|cached| cached.policy);
            }
        };
        if let Some(cached) = cached.as_ref().filter(|cached| cached.id == id) {
            return Some(cached.policy.clone());
        }
        let gate = {
            let mut fetching = self.fetching.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            fetching.entry(domain.to_owned()).or_default().clone()
        };
        let guard = gate.lock().await;
        // Whoever held the gate before may have fetched this very id meanwhile.
        let result = match self.cached(domain, now_unix).filter(|cached| cached.id == id) {
            Some(cached) => Some(cached.policy),
            None => self.refresh(domain, id, now_unix).await.or_else(|| cached.map(|cached| cached.policy)),
        };
        drop(guard);
        drop(gate);
        // The last one out removes the gate: the table holds only domains being fetched.
        let mut fetching = self.fetching.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if fetching.get(domain).is_some_and(|gate| Arc::strong_count(gate) == 1) {
            fetching.remove(domain);
        }
        result
    }

    fn cached(&self, domain: &str, now_unix: u64) -> Option<cache::Cached> {
        self.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner).current(domain, now_unix).cloned()
    }

    /// Fetches and stores the policy for `id`; `None` (logged, counted) when that fails.
    async fn refresh(&self, domain: &str, id: policy::PolicyId, now_unix: u64) -> Option<Policy> {
        let body = match self.fetch(domain).await {
            Ok(body) => body,
            Err(reason) => {
                metrics::counter!("lienthong_mail_mta_sts_fetches_total", "result" => "failed").increment(1);
                tracing::warn!(domain, %reason, "MTA-STS policy fetch failed; using the cached policy if any");
                return None;
            }
        };
        let parsed = match policy::parse_policy(&body) {
            Ok(parsed) => parsed,
            Err(error) => {
                metrics::counter!("lienthong_mail_mta_sts_fetches_total", "result" => "invalid").increment(1);
                let start = policy::sanitize(&body, 80);
                tracing::warn!(domain, %error, body_start = %start, "MTA-STS policy is invalid; using the cached policy if any");
                return None;
            }
        };
        metrics::counter!("lienthong_mail_mta_sts_fetches_total", "result" => "ok").increment(1);
        tracing::info!(
            domain,
            id = id.as_str(),
            mode = parsed.mode.as_str(),
            max_age = parsed.max_age,
            "MTA-STS policy fetched"
        );
        {
            let mut cache = self.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let cached = cache::Cached { id, policy: parsed.clone(), fetched_unix: now_unix };
            cache.insert(domain.to_owned(), cached, now_unix);
        }
        let saving = self.saving.lock().await;
        let saved = self.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner).to_json();
        let path = self.path.clone();
        let written = tokio::task::spawn_blocking(move || write_cache(&path, &saved)).await;
        if let Ok(Err(error)) | Err(error) = written.map_err(std::io::Error::other) {
            tracing::warn!(path = %self.path.display(), %error, "cannot save the MTA-STS policy cache");
        }
        drop(saving);
        Some(parsed)
    }

    async fn record(&self, domain: &str) -> Result<policy::Record, String> {
        let Some(resolver) = &self.resolver else { return Err("no resolver".into()) };
        let name = format!("_mta-sts.{domain}.");
        let lookup = match resolver.txt_lookup(name.as_str()).await {
            Ok(lookup) => lookup,
            Err(error) if error.is_nx_domain() || error.is_no_records_found() => return Ok(policy::Record::Absent),
            Err(error) => return Err(error.to_string()),
        };
        let records: Vec<Vec<u8>> = lookup
            .answers()
            .iter()
            .filter_map(|record| match &record.data {
                RData::TXT(txt) => Some(txt.txt_data.iter().flat_map(|bytes| bytes.iter().copied()).collect()),
                _ => None,
            })
            .filter(|joined: &Vec<u8>| joined.len() <= MAX_TXT_BYTES)
            .collect();
        Ok(policy::parse_record(records.iter().map(Vec::as_slice)))
    }

    async fn fetch(&self, domain: &str) -> Result<Vec<u8>, String> {
        let Some(resolver) = &self.resolver else { return Err("no resolver".into()) };
        let host = format!("mta-sts.{domain}");
        let addresses = resolver
            .lookup_ip(format!("{host}.").as_str())
            .await
            .map_err(|error| format!("address lookup for {host}: {error}"))?;
        let tls = self.tls.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        let mut last = format!("no address for {host}");
        for address in addresses.iter().take(MAX_ADDRESSES) {
            match fetch::fetch(tls.clone(), &host, SocketAddr::new(address, self.https_port)).await {
                Ok(body) => return Ok(body),
                Err(error) => last = format!("https://{host}/ [{address}]: {error}"),
            }
        }
        Err(last)
    }
}

fn read_cache(path: &std::path::Path, now_unix: u64) -> cache::Cache {
    use std::io::Read as _;
    let mut bytes = Vec::new();
    let read = std::fs::File::open(path).and_then(|file| file.take(cache::MAX_FILE_BYTES).read_to_end(&mut bytes));
    match read {
        Ok(_) => cache::Cache::from_json(&bytes, now_unix).unwrap_or_else(|error| {
            tracing::warn!(path = %path.display(), %error, "ignoring an unreadable MTA-STS policy cache");
            cache::Cache::default()
        }),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => cache::Cache::default(),
        Err(error) => {
            tracing::warn!(path = %path.display(), %error, "cannot read the MTA-STS policy cache");
            cache::Cache::default()
        }
    }
}

fn write_cache(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(directory) = path.parent() {
        lienthong_config::state::create_private_dir(directory)?;
    }
    lienthong_config::state::write_private(path, bytes)
}
