//! The three services as one unit: start, reload, health, shutdown. The binary is the only
//! place that knows all three; they never import each other, so what one publishes for
//! another (the mail relay's DKIM keys for DNS) passes through here as plain values.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use lienthong_config::Config;
use lienthong_dns::DnsService;
use lienthong_mailrelay::MailService;
use lienthong_sfu::ConferenceService;
use rustls::server::ResolvesServerCert;

/// How long shutdown waits for in-flight work (SMTP sessions, deliveries) before giving up.
pub const SHUTDOWN_BOUND: Duration = Duration::from_secs(15);

#[derive(Default)]
pub struct Services {
    pub dns: Option<DnsService>,
    pub mail: Option<MailService>,
    pub conference: Option<ConferenceService>,
    /// The records DNS was last given (see [`Services::republish`]).
    published: Vec<String>,
}

impl Services {
    /// Starts every enabled service. If one fails, those already started are stopped again.
    pub async fn start(config: &Arc<Config>, certificates: &Arc<dyn ResolvesServerCert>) -> anyhow::Result<Self> {
        let mut services = Services::default();
        if let Err(error) = services.apply(config, certificates).await {
            services.shutdown().await;
            return Err(error);
        }
        Ok(services)
    }

    /// Brings the running set in line with `config`: reloads running services, starts newly
    /// enabled ones, stops disabled ones. Sessions and conferences in progress are kept.
    pub async fn apply(
        &mut self,
        config: &Arc<Config>,
        certificates: &Arc<dyn ResolvesServerCert>,
    ) -> anyhow::Result<()> {
        if config.mail.enabled {
            lienthong_mailrelay::prepare_dkim(config).context("preparing the DKIM keys")?;
        }
        let published = published_records(config);
        self.published = published.clone();
        match (&self.dns, config.dns.enabled) {
            (Some(dns), true) => dns.reload(config.clone(), published).await.context("reloading DNS")?,
            (None, true) => {
                self.dns = Some(DnsService::start(config.clone(), published).await.context("starting DNS")?);
            }
            (Some(_), false) => {
                if let Some(dns) = self.dns.take() {
                    dns.shutdown().await;
                }
            }
            (None, false) => {}
        }
        match (&self.mail, config.mail.enabled) {
            (Some(mail), true) => mail.reload(config.clone()).await.context("reloading the mail relay")?,
            (None, true) => {
                self.mail = Some(
                    MailService::start(config.clone(), certificates.clone())
                        .await
                        .context("starting the mail relay")?,
                );
            }
            (Some(_), false) => {
                if let Some(mail) = self.mail.take() {
                    mail.shutdown().await;
                }
            }
            (None, false) => {}
        }
        match (&self.conference, config.conference.enabled) {
            (Some(conference), true) => conference.reload(config.clone()).await.context("reloading conferences")?,
            (None, true) => {
                self.conference = Some(
                    ConferenceService::start(config.clone(), certificates.clone())
                        .await
                        .context("starting conferences")?,
                );
            }
            (Some(_), false) => {
                if let Some(conference) = self.conference.take() {
                    conference.shutdown().await;
                }
            }
            (None, false) => {}
        }
        Ok(())
    }

    /// Hands DNS the published records again if they changed: after a DKIM rotation, and
    /// when a retired selector's mail can no longer be in flight (checked hourly).
    pub async fn republish(&mut self, config: &Arc<Config>) -> anyhow::Result<()> {
        let published = published_records(config);
        if published == self.published {
            return Ok(());
        }
        if let Some(dns) = &self.dns {
            dns.reload(config.clone(), published.clone()).await.context("republishing DNS records")?;
        }
        self.published = published;
        Ok(())
    }

    /// Each enabled service and whether it is serving.
    pub fn health(&self, config: &Config) -> Vec<(&'static str, bool)> {
        let mut health = Vec::new();
        if config.dns.enabled {
            health.push(("dns", self.dns.as_ref().is_some_and(DnsService::is_serving)));
        }
        if config.mail.enabled {
            health.push(("mail", self.mail.as_ref().is_some_and(MailService::is_serving)));
        }
        if config.conference.enabled {
            health.push(("conference", self.conference.as_ref().is_some_and(ConferenceService::is_serving)));
        }
        health
    }

    /// Stops all services concurrently, each within [`SHUTDOWN_BOUND`].
    pub async fn shutdown(&mut self) {
        let dns = self.dns.take();
        let mail = self.mail.take();
        let conference = self.conference.take();
        let all = async {
            tokio::join!(
                async {
                    if let Some(dns) = dns {
                        dns.shutdown().await;
                    }
                },
                async {
                    if let Some(mail) = mail {
                        mail.shutdown().await;
                    }
                },
                async {
                    if let Some(conference) = conference {
                        conference.shutdown().await;
                    }
                },
            )
        };
        if tokio::time::timeout(SHUTDOWN_BOUND, all).await.is_err() {
            tracing::warn!(bound = ?SHUTDOWN_BOUND, "shutdown did not finish in time; exiting anyway");
        }
    }
}

/// Checks only the services can make (zone files, inline DNS records), as printable lines.
pub fn check(config: &Config) -> Vec<String> {
    lienthong_dns::check(config)
}

/// What `lienthong check` warns about without refusing the config.
pub fn warnings(config: &Config) -> Vec<String> {
    lienthong_dns::warnings(config)
}

/// Records other services ask DNS to publish (the mail relay's DKIM keys).
pub fn published_records(config: &Config) -> Vec<String> {
    if !config.mail.enabled {
        return Vec::new();
    }
    lienthong_mailrelay::dkim_records(config)
}
