//! `lienthong-load`: runs simulated conference sites against lienthong or Janus and prints
//! what the SFU delivered and what it cost.

use std::time::Duration;

use anyhow::Context;
use clap::{Parser, ValueEnum};
use lienthong_load::janus::JanusTarget;
use lienthong_load::lienthong::LienthongTarget;
use lienthong_load::media::VideoShape;
use lienthong_load::{ForwardingCaps, Plan, Target};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Server {
    Lienthong,
    Janus,
}

/// Simulated conference sites (str0m clients, synthetic VP8 + Opus) against an SFU.
#[derive(Debug, Parser)]
#[command(version)]
struct Arguments {
    /// Which SFU speaks at --url.
    #[arg(long, value_enum, default_value = "lienthong")]
    server: Server,
    /// lienthong: the page address, http://HOST:PORT. Janus: its WebSocket, ws://HOST:PORT.
    #[arg(long)]
    url: String,
    /// lienthong: the room's name.
    #[arg(long, default_value = "giao-ban")]
    room: String,
    /// lienthong: the participants' PIN.
    #[arg(long, default_value = "")]
    pin: String,
    /// Janus: the VideoRoom number (created if missing).
    #[arg(long, default_value_t = 4242)]
    janus_room: u64,
    /// Sites publishing camera (VP8) and microphone (Opus).
    #[arg(long, default_value_t = 1)]
    video_publishers: usize,
    /// Sites publishing only a microphone.
    #[arg(long, default_value_t = 0)]
    audio_publishers: usize,
    /// Sites that only receive.
    #[arg(long, default_value_t = 2)]
    receivers: usize,
    /// Publishing sites also receive every other site (a meeting).
    #[arg(long)]
    meeting: bool,
    /// Audio-only sites tell the server their microphone is off (they keep sending; the
    /// server forwards none of it).
    #[arg(long)]
    mute_audio_only: bool,
    /// Publish three simulcast layers (quarter, half, full size) with rids q, h, f.
    #[arg(long)]
    simulcast: bool,
    /// Video size as WIDTHxHEIGHT.
    #[arg(long, default_value = "640x360")]
    video_size: String,
    /// Video bitrate of the full layer, kbit/s.
    #[arg(long, default_value_t = 600)]
    video_kbps: u32,
    #[arg(long, default_value_t = 30)]
    fps: u32,
    #[arg(long, default_value_t = 32)]
    audio_kbps: u32,
    /// Milliseconds between two joins.
    #[arg(long, default_value_t = 100)]
    join_interval_ms: u64,
    /// Seconds to wait for every receiver to get every stream.
    #[arg(long, default_value_t = 60)]
    setup_timeout: u64,
    /// Seconds of media before measuring.
    #[arg(long, default_value_t = 2)]
    warmup: u64,
    /// Seconds to measure.
    #[arg(long, default_value_t = 20)]
    duration: u64,
    /// The SFU's process id, for its CPU-seconds (from /proc/PID/stat).
    #[arg(long)]
    server_pid: Option<u32>,
    /// Address the clients' media sockets bind to. Janus offers no loopback candidates: use
    /// the address Janus gathers on (its `ice_enforce_list`).
    #[arg(long, default_value = "127.0.0.1")]
    client_ip: std::net::IpAddr,
    /// lienthong: the room's `last_n`, the cameras it forwards to each receiver at most.
    #[arg(long, default_value_t = 12)]
    last_n: usize,
    /// lienthong: the microphones it forwards to each receiver (the loudest few).
    #[arg(long, default_value_t = 3)]
    loudest_audio: usize,
    /// Print the report as one JSON object instead of a line of text.
    #[arg(long)]
    json: bool,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("LOAD_LOG").unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let arguments = Arguments::parse();
    let (width, height) = arguments
        .video_size
        .split_once('x')
        .and_then(|(width, height)| Some((width.parse().ok()?, height.parse().ok()?)))
        .context("--video-size must be WIDTHxHEIGHT")?;
    let target = match arguments.server {
        Server::Lienthong => Target::Lienthong(LienthongTarget {
            base: arguments.url.clone(),
            room: arguments.room.clone(),
            pin: arguments.pin.clone(),
        }),
        Server::Janus => Target::Janus(JanusTarget { url: arguments.url.clone(), room: arguments.janus_room }),
    };
    let plan = Plan {
        target,
        video_publishers: arguments.video_publishers,
        audio_publishers: arguments.audio_publishers,
        receivers: arguments.receivers,
        publishers_receive: arguments.meeting,
        mute_audio_only: arguments.mute_audio_only,
        simulcast: arguments.simulcast,
        video: VideoShape {
            width,
            height,
            frames_per_second: arguments.fps,
            bitrate: arguments.video_kbps * 1000,
            ..VideoShape::P360
        },
        audio_bitrate: arguments.audio_kbps * 1000,
        join_interval: Duration::from_millis(arguments.join_interval_ms),
        setup_timeout: Duration::from_secs(arguments.setup_timeout),
        warmup: Duration::from_secs(arguments.warmup),
        duration: Duration::from_secs(arguments.duration),
        server_pid: arguments.server_pid,
        client_address: arguments.client_ip,
        forwarding_caps: (arguments.server == Server::Lienthong)
            .then_some(ForwardingCaps { cameras: arguments.last_n, microphones: arguments.loudest_audio }),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let report = runtime.block_on(lienthong_load::run(&plan)).context("load run")?;
    if arguments.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("{report}");
    }
    Ok(())
}
