//! `lienthong run`: start, serve, reload on SIGHUP (or the admin endpoint), stop on SIGTERM.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use lienthong_config::Config;
use rustls::server::ResolvesServerCert;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{RwLock, mpsc, oneshot};

use crate::admin::{self, AdminState, ReloadRequest};
use crate::certificates::{self, Certificates};
use crate::services::Services;

pub fn run(config_path: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let config = match crate::load_checked(config_path.as_deref()) {
        Ok(config) => config,
        Err(problems) => {
            for problem in problems {
                eprintln!("{problem}");
            }
            return Ok(ExitCode::from(2));
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;
    runtime.block_on(serve(config_path, Arc::new(config)))
}

async fn serve(config_path: Option<PathBuf>, config: Arc<Config>) -> anyhow::Result<ExitCode> {
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .context("installing the metrics recorder")?;
    metrics::gauge!("lienthong_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);

    let state_dir = &config.server.state_dir;
    let tightened = lienthong_config::state::create_private_dir(state_dir)
        .with_context(|| format!("creating server.state_dir {}", state_dir.display()))?;
    if let Some(mode) = tightened {
        tracing::warn!(path = %state_dir.display(), old_mode = format!("{mode:o}"), "server.state_dir was readable by others; made it 0700");
    }
    match lienthong_config::state::tighten_tree(state_dir) {
        Ok(0) => {}
        Ok(count) => {
            tracing::warn!(path = %state_dir.display(), count, "state files were readable by others; made them owner-only")
        }
        Err(error) => tracing::warn!(path = %state_dir.display(), %error, "cannot check the state files' permissions"),
    }
    let certificates = Arc::new(Certificates::new(certificates::load(&config)?));
    let resolver: Arc<dyn ResolvesServerCert> = certificates.clone();

    let services = Arc::new(RwLock::new(Services::start(&config, &resolver).await?));
    let current = Arc::new(RwLock::new(config.clone()));
    let (reload_sender, mut reload_requests) = mpsc::channel::<ReloadRequest>(4);
    let token = match crate::admin_access::load_or_create_token(state_dir) {
        Ok(token) => Arc::<str>::from(token),
        Err(error) => {
            services.write().await.shutdown().await;
            return Err(error);
        }
    };
    let admin_state = AdminState {
        metrics,
        services: services.clone(),
        config: current.clone(),
        reloads: reload_sender,
        listen: config.admin.listen,
        token,
    };
    let admin_task = match admin::serve(config.admin.listen, admin_state).await {
        Ok(task) => task,
        Err(error) => {
            services.write().await.shutdown().await;
            return Err(error);
        }
    };
    let pid_file = state_dir.join("lienthong.pid");
    if let Err(error) =
        lienthong_config::state::write_private(&pid_file, format!("{}\n", std::process::id()).as_bytes())
    {
        tracing::warn!(path = %pid_file.display(), %error, "cannot write the pid file");
    }
    print_listeners(&config, config_path.as_deref());

    let mut hangups = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    let mut terminations = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut interrupts = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let reloader = Reloader {
        config_path: config_path.as_deref(),
        current: &current,
        services: &services,
        certificates: &certificates,
        resolver: &resolver,
    };
    let mut republish = tokio::time::interval(std::time::Duration::from_secs(3600));
    loop {
        tokio::select! {
            _ = republish.tick() => {
                let config = current.read().await.clone();
                if let Err(error) = services.write().await.republish(&config).await {
                    tracing::warn!(error = format!("{error:#}"), "cannot republish DNS records");
                }
            }
            _ = hangups.recv() => {
                tracing::info!("SIGHUP: reloading the config");
                let _ = reloader.reload().await;
            }
            Some(request) = reload_requests.recv() => {
                tracing::info!("admin endpoint: reloading the config");
                let result = reloader.reload().await;
                let _ = request.reply.send(result);
            }
            _ = terminations.recv() => { tracing::info!("SIGTERM: shutting down"); break; }
            _ = interrupts.recv() => { tracing::info!("SIGINT: shutting down"); break; }
        }
    }
    admin_task.abort();
    services.write().await.shutdown().await;
    let _ = std::fs::remove_file(&pid_file);
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// What a reload touches: the file, the config in force, the services and the certificate.
struct Reloader<'a> {
    config_path: Option<&'a Path>,
    current: &'a RwLock<Arc<Config>>,
    services: &'a RwLock<Services>,
    certificates: &'a Certificates,
    resolver: &'a Arc<dyn ResolvesServerCert>,
}

impl Reloader<'_> {
    /// Re-reads the config and certificate. A broken config is logged line by line with the
    /// same messages as `lienthong check`, and the running config stays in force.
    async fn reload(&self) -> Result<(), Vec<String>> {
        let result = self.try_reload().await;
        let outcome = if result.is_ok() { "ok" } else { "error" };
        metrics::counter!("lienthong_config_reloads_total", "result" => outcome).increment(1);
        match &result {
            Ok(()) => tracing::info!("config reloaded"),
            Err(problems) => {
                for problem in problems {
                    tracing::error!(problem = %problem, "reload refused; the previous config stays in force");
                }
            }
        }
        result
    }

    async fn try_reload(&self) -> Result<(), Vec<String>> {
        let config = Arc::new(crate::load_checked(self.config_path)?);
        let old = self.current.read().await.clone();
        if config.admin.listen != old.admin.listen {
            tracing::warn!(old = %old.admin.listen, new = %config.admin.listen, "admin.listen changes take effect on restart");
        }
        if config.server.state_dir != old.server.state_dir {
            tracing::warn!("server.state_dir changes take effect on restart");
        }
        let key = certificates::load(&config).map_err(|error| vec![format!("certificate: {error:#}")])?;
        self.certificates.replace(key);
        self.services.write().await.apply(&config, self.resolver).await.map_err(|error| vec![format!("{error:#}")])?;
        *self.current.write().await = config;
        Ok(())
    }
}

/// Tells the operator what listens where.
fn print_listeners(config: &Config, path: Option<&Path>) {
    let source = path.map_or_else(|| lienthong_config::BUILT_IN.to_owned(), |path| path.display().to_string());
    println!("lienthong {} running with config {source}", env!("CARGO_PKG_VERSION"));
    println!("  admin       http://{}/metrics  /healthz", config.admin.listen);
    if config.dns.enabled {
        for address in &config.dns.listen {
            println!("  dns         {address} udp+tcp");
        }
    }
    if config.mail.enabled {
        if let Some(address) = config.mail.mx_listen {
            println!("  smtp mx     {address} (STARTTLS)");
        }
        if let Some(address) = config.mail.submission_listen {
            println!("  submission  {address} (STARTTLS, AUTH)");
        }
        if let Some(address) = config.mail.submissions_listen {
            println!("  submissions {address} (implicit TLS, AUTH)");
        }
    }
    if config.conference.enabled {
        let scheme = if config.conference.tls { "https" } else { "http" };
        println!(
            "  conference  {scheme}://{}/  media udp+tcp port {}",
            config.conference.listen, config.conference.media_port
        );
    }
    println!("  state       {}", config.server.state_dir.display());
}

/// A reload asked for through the admin endpoint, answered with the problems if refused.
pub fn reload_request() -> (ReloadRequest, oneshot::Receiver<Result<(), Vec<String>>>) {
    let (reply, receiver) = oneshot::channel();
    (ReloadRequest { reply }, receiver)
}
