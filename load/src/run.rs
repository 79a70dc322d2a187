//! One measured run: join every simulated site, wait until every receiver gets every stream
//! it should, measure for a fixed time, collect.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use crate::client::{Counters, MediaClient, Publication};
use crate::driver::{self, Phase, Progress};
use crate::janus::JanusTarget;
use crate::lienthong::{LienthongSignaling, LienthongTarget};
use crate::media::VideoShape;
use crate::report::Report;
use crate::{Error, cpu};

/// Which SFU and how to reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Lienthong(LienthongTarget),
    Janus(JanusTarget),
}

/// The load: who publishes what, who receives, for how long.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub target: Target,
    /// Sites publishing camera and microphone.
    pub video_publishers: usize,
    /// Sites publishing only a microphone.
    pub audio_publishers: usize,
    /// Sites that publish nothing and receive everything.
    pub receivers: usize,
    /// Publishing sites also receive everyone else (a meeting); otherwise they only send.
    pub publishers_receive: bool,
    /// Audio-only sites say their microphone is off (lienthong's `media` message; with Janus
    /// nobody subscribes to them): they keep sending, as a browser with a muted track does, and
    /// the server forwards none of it. A large meeting, where most sites listen.
    pub mute_audio_only: bool,
    /// Publish three simulcast layers with rids instead of one.
    pub simulcast: bool,
    pub video: VideoShape,
    pub audio_bitrate: u32,
    /// Time between two joins (a real room fills over seconds, not all at once).
    pub join_interval: Duration,
    /// Longest wait for every stream to arrive.
    pub setup_timeout: Duration,
    /// Media flowing before the measurement starts.
    pub warmup: Duration,
    pub duration: Duration,
    /// The SFU's process, for its CPU-seconds.
    pub server_pid: Option<u32>,
    /// Where the clients' media sockets bind: an address the SFU's candidates can reach
    /// (Janus never offers loopback candidates, so it needs the machine's own address).
    pub client_address: std::net::IpAddr,
    /// What the SFU forwards to each receiver at most, when it selects: cameras (lienthong's
    /// room `last_n`) and microphones (the loudest few). `None`: everything (Janus).
    pub forwarding_caps: Option<ForwardingCaps>,
}

/// A selective SFU's caps per receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForwardingCaps {
    pub cameras: usize,
    pub microphones: usize,
}

#[derive(Debug, Clone, Copy)]
struct Site {
    publication: Publication,
    receives: bool,
    muted: bool,
}

impl Site {
    /// This site's (cameras, microphones) that the server forwards to others.
    fn forwarded_tracks(&self) -> (usize, usize) {
        let audio = self.publication.audio_bitrate.is_some() && !self.muted;
        (usize::from(self.publication.video.is_some()), usize::from(audio))
    }
}

impl Plan {
    fn sites(&self) -> Vec<Site> {
        let video = Publication {
            video: Some(self.video),
            simulcast: self.simulcast,
            highest_first: matches!(self.target, Target::Janus(_)),
            audio_bitrate: Some(self.audio_bitrate),
        };
        let audio = Publication { audio_bitrate: Some(self.audio_bitrate), ..Publication::NOTHING };
        let receives = self.publishers_receive;
        let muted = self.mute_audio_only;
        let publishers =
            std::iter::repeat_n(Site { publication: video, receives, muted: false }, self.video_publishers)
                .chain(std::iter::repeat_n(Site { publication: audio, receives, muted }, self.audio_publishers));
        let receivers =
            (0..self.receivers).map(|_| Site { publication: Publication::NOTHING, receives: true, muted: false });
        publishers.chain(receivers).collect()
    }

    /// Streams all receivers together should get: every other site's audio and video, or
    /// as many as the SFU's caps let through to each.
    pub fn expected_streams(&self) -> usize {
        let sites = self.sites();
        let (cameras, microphones) =
            sites.iter().map(Site::forwarded_tracks).fold((0, 0), |(v, a), (site_v, site_a)| (v + site_v, a + site_a));
        let caps = self.forwarding_caps.unwrap_or(ForwardingCaps { cameras: usize::MAX, microphones: usize::MAX });
        let receiving = sites.iter().filter(|site| site.receives);
        receiving
            .map(|site| {
                let (own_cameras, own_microphones) = site.forwarded_tracks();
                (cameras - own_cameras).min(caps.cameras) + (microphones - own_microphones).min(caps.microphones)
            })
            .sum()
    }
}

type ClientTask = JoinHandle<Result<Counters, Error>>;

/// Runs the plan and reports. Client failures after setup are reported, not fatal.
pub async fn run(plan: &Plan) -> Result<Report, Error> {
    let (phase_sender, phase) = watch::channel(Phase::Setup);
    let progress = Arc::new(Progress::default());
    let tasks = match &plan.target {
        Target::Lienthong(target) => start_lienthong(plan, target, &phase, &progress).await?,
        Target::Janus(target) => start_janus(plan, target, &phase, &progress).await?,
    };

    let expected = plan.expected_streams();
    let setup_started = Instant::now();
    let publishers = plan.video_publishers + plan.audio_publishers;
    while progress.streams_seen.load(Ordering::Relaxed) < expected
        || progress.publishing.load(Ordering::Relaxed) < publishers
    {
        if let Some(task) = tasks.iter().position(|task| task.is_finished()) {
            let _ = phase_sender.send(Phase::Done);
            let result = collect(tasks).await;
            let error = result.into_iter().nth(task).and_then(Result::err);
            return Err(error.unwrap_or_else(|| Error::Signaling("a client stopped during setup".into())));
        }
        if setup_started.elapsed() > plan.setup_timeout {
            let _ = phase_sender.send(Phase::Done);
            collect(tasks).await;
            let seen = progress.streams_seen.load(Ordering::Relaxed);
            return Err(Error::Setup { seen, expected, seconds: plan.setup_timeout.as_secs() });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let setup = setup_started.elapsed();
    tokio::time::sleep(plan.warmup).await;

    let own_pid = std::process::id();
    let server_before = plan.server_pid.map(cpu::cpu_seconds).transpose()?;
    let own_before = cpu::cpu_seconds(own_pid)?;
    let started = Instant::now();
    let _ = phase_sender.send(Phase::Measuring);
    tokio::time::sleep(plan.duration).await;
    let _ = phase_sender.send(Phase::Done);
    let elapsed = started.elapsed();
    let server_after = plan.server_pid.map(cpu::cpu_seconds).transpose()?;
    let own_after = cpu::cpu_seconds(own_pid)?;

    let results = collect(tasks).await;
    let server_cpu = server_before.zip(server_after).map(|(before, after)| after - before);
    Ok(Report::new(plan, expected, setup, elapsed, server_cpu, own_after - own_before, results))
}

async fn collect(tasks: Vec<ClientTask>) -> Vec<Result<Counters, Error>> {
    let mut results = Vec::with_capacity(tasks.len());
    for task in tasks {
        results.push(task.await.unwrap_or_else(|error| Err(Error::Media(format!("client task: {error}")))));
    }
    results
}

async fn start_lienthong(
    plan: &Plan,
    target: &LienthongTarget,
    phase: &watch::Receiver<Phase>,
    progress: &Arc<Progress>,
) -> Result<Vec<ClientTask>, Error> {
    let sites = target.sites().await?;
    let mut tasks = Vec::new();
    for (number, site) in plan.sites().into_iter().enumerate() {
        let target = target.clone();
        let site_name = sites[number % sites.len()].clone();
        let (phase, progress, address) = (phase.clone(), progress.clone(), plan.client_address);
        tasks.push(tokio::spawn(async move {
            let socket = driver::media_socket(address).await?;
            let mut client = MediaClient::new(number as u32, socket.local_addr()?, site.publication, Instant::now())?;
            let name = format!("Tải thử {number}");
            let websocket = target.join(&mut client, &name, &site_name, site.muted).await?;
            driver::drive(client, socket, websocket, LienthongSignaling, phase, progress).await
        }));
        tokio::time::sleep(plan.join_interval).await;
    }
    Ok(tasks)
}

async fn start_janus(
    plan: &Plan,
    target: &JanusTarget,
    phase: &watch::Receiver<Phase>,
    progress: &Arc<Progress>,
) -> Result<Vec<ClientTask>, Error> {
    let sites = plan.sites();
    let publishers = sites.iter().filter(|site| site.publication.publishes()).count();
    target.create_room(publishers).await?;
    let mut tasks = Vec::new();
    let mut feeds = Vec::new();
    for (number, site) in sites.iter().enumerate().filter(|(_, site)| site.publication.publishes()) {
        let (target, publication) = (target.clone(), site.publication);
        let (phase, progress, address) = (phase.clone(), progress.clone(), plan.client_address);
        let (feed_sender, feed) = oneshot::channel();
        tasks.push(tokio::spawn(async move {
            let socket = driver::media_socket(address).await?;
            let mut client = MediaClient::new(number as u32, socket.local_addr()?, publication, Instant::now())?;
            let (handle, feed) = target.publish(&mut client, &format!("load-{number}")).await?;
            let _ = feed_sender.send(feed);
            let (websocket, signaling) = handle.into_session();
            driver::drive(client, socket, websocket, signaling, phase, progress).await
        }));
        if !site.muted {
            feeds.push((number, feed));
        }
        tokio::time::sleep(plan.join_interval).await;
    }
    let mut feed_ids = Vec::new();
    for (index, (number, feed)) in feeds.into_iter().enumerate() {
        match feed.await {
            Ok(feed) => feed_ids.push((number, feed)),
            Err(_) => {
                let error = tasks.remove(index).await.ok().and_then(Result::err);
                return Err(error.unwrap_or_else(|| Error::Signaling("a Janus publisher failed".into())));
            }
        }
    }
    while progress.publishing.load(Ordering::Relaxed) < feed_ids.len() {
        if let Some(index) = tasks.iter().position(|task| task.is_finished()) {
            let error = tasks.remove(index).await.ok().and_then(Result::err);
            return Err(error.unwrap_or_else(|| Error::Signaling("a Janus publisher stopped".into())));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Subscribers get their own peer connection, as Janus's VideoRoom wants.
    let subscriber_numbers = sites.len()..;
    for ((number, _), subscriber) in sites.iter().enumerate().filter(|(_, site)| site.receives).zip(subscriber_numbers)
    {
        let others: Vec<u64> =
            feed_ids.iter().filter(|(feed_owner, _)| *feed_owner != number).map(|(_, feed)| *feed).collect();
        let target = target.clone();
        let (phase, progress, address) = (phase.clone(), progress.clone(), plan.client_address);
        tasks.push(tokio::spawn(async move {
            let socket = driver::media_socket(address).await?;
            let mut client =
                MediaClient::new(subscriber as u32, socket.local_addr()?, Publication::NOTHING, Instant::now())?;
            let handle = target.subscribe(&mut client, &others).await?;
            let (websocket, signaling) = handle.into_session();
            driver::drive(client, socket, websocket, signaling, phase, progress).await
        }));
        tokio::time::sleep(plan.join_interval).await;
    }
    Ok(tasks)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(video: usize, audio: usize, receivers: usize, publishers_receive: bool) -> Plan {
        Plan {
            target: Target::Janus(JanusTarget { url: "ws://127.0.0.1:1".into(), room: 1 }),
            video_publishers: video,
            audio_publishers: audio,
            receivers,
            publishers_receive,
            mute_audio_only: false,
            simulcast: false,
            video: VideoShape::P360,
            audio_bitrate: 32_000,
            join_interval: Duration::ZERO,
            setup_timeout: Duration::from_secs(1),
            warmup: Duration::ZERO,
            duration: Duration::from_secs(1),
            server_pid: None,
            client_address: std::net::Ipv4Addr::LOCALHOST.into(),
            forwarding_caps: None,
        }
    }

    #[test]
    fn expected_streams_count_every_other_sites_tracks() {
        assert_eq!(plan(1, 0, 4, false).expected_streams(), 8, "4 receivers × audio and video");
        assert_eq!(plan(12, 0, 0, true).expected_streams(), 12 * 11 * 2);
        assert_eq!(plan(12, 38, 0, true).expected_streams(), 12 * (11 * 2 + 38) + 38 * (12 * 2 + 37));
        assert_eq!(plan(1, 0, 0, false).expected_streams(), 0, "a publisher nobody receives");
        let muted = Plan { mute_audio_only: true, ..plan(12, 38, 0, true) };
        assert_eq!(muted.expected_streams(), 12 * 11 * 2 + 38 * 12 * 2, "muted sites only receive");
        // lienthong: at most 12 cameras (last_n) and the 3 loudest microphones to each.
        let caps = Some(ForwardingCaps { cameras: 12, microphones: 3 });
        assert_eq!(
            Plan { forwarding_caps: caps, ..plan(12, 38, 0, true) }.expected_streams(),
            12 * (11 + 3) + 38 * (12 + 3)
        );
        let few = Some(ForwardingCaps { cameras: 2, microphones: 3 });
        assert_eq!(
            Plan { forwarding_caps: few, ..plan(1, 0, 4, false) }.expected_streams(),
            4 * 2,
            "fewer than the caps"
        );
    }
}
