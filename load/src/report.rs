//! The numbers of one run, summed over clients.

use std::fmt;
use std::time::Duration;

use serde::Serialize;

use crate::Error;
use crate::client::Counters;
use crate::run::{Plan, Target};
use crate::stats::quantile;

/// What a run measured. Packets are RTP packets (audio and video), counted in the
/// measurement window only.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub target: &'static str,
    pub video_publishers: usize,
    pub audio_publishers: usize,
    pub receivers: usize,
    pub publishers_receive: bool,
    pub simulcast: bool,
    /// Peer connections the tool ran (Janus: one per publisher and one per receiving site).
    pub clients: usize,
    pub errors: Vec<String>,
    pub setup_seconds: f64,
    pub seconds: f64,
    pub streams_expected: usize,
    /// Incoming streams that delivered packets while measuring.
    pub streams_measured: usize,
    pub sent_packets: u64,
    pub sent_video_packets: u64,
    pub received_packets: u64,
    pub received_video_packets: u64,
    pub received_per_second: f64,
    /// Gaps in the receivers' sequence numbers (after any retransmission arrived).
    pub lost_packets: u64,
    pub loss_ratio: f64,
    pub duplicates: u64,
    /// Send (probe in the frame) to arrival, over every packet whose frame start arrived.
    pub latency_p50_micros: Option<u32>,
    pub latency_p99_micros: Option<u32>,
    pub latency_samples: usize,
    pub keyframe_requests: u64,
    pub skipped_frames: u64,
    pub server_cpu_seconds: Option<f64>,
    /// Server CPU-seconds per second: 1.0 is one core busy.
    pub server_cores: Option<f64>,
    pub server_micros_per_received_packet: Option<f64>,
    pub server_micros_per_sent_packet: Option<f64>,
    pub tool_cpu_seconds: f64,
}

impl Report {
    pub(crate) fn new(
        plan: &Plan,
        streams_expected: usize,
        setup: Duration,
        elapsed: Duration,
        server_cpu: Option<f64>,
        tool_cpu: f64,
        results: Vec<Result<Counters, Error>>,
    ) -> Report {
        let clients = results.len();
        let mut errors = Vec::new();
        let (mut sent_packets, mut sent_video, mut received, mut received_video) = (0, 0, 0, 0);
        let (mut expected, mut lost, mut duplicates, mut keyframe_requests, mut skipped) = (0, 0, 0, 0, 0);
        let mut streams_measured = 0;
        let mut latencies = Vec::new();
        for result in results {
            let counters = match result {
                Ok(counters) => counters,
                Err(error) => {
                    errors.push(error.to_string());
                    continue;
                }
            };
            sent_packets += counters.sent_audio + counters.sent_video;
            sent_video += counters.sent_video;
            keyframe_requests += counters.keyframe_requests;
            skipped += counters.skipped_frames;
            for stream in &counters.streams {
                streams_measured += usize::from(stream.packets > 0);
                received += stream.packets;
                if stream.video {
                    received_video += stream.packets;
                }
                expected += stream.expected();
                lost += stream.lost();
                duplicates += stream.duplicates;
            }
            latencies.extend_from_slice(&counters.latencies.samples);
        }
        latencies.sort_unstable();
        let seconds = elapsed.as_secs_f64();
        let per_packet = |cpu: f64, packets: u64| (packets > 0).then(|| cpu * 1e6 / packets as f64);
        Report {
            target: match plan.target {
                Target::Lienthong(_) => "lienthong",
                Target::Janus(_) => "janus",
            },
            video_publishers: plan.video_publishers,
            audio_publishers: plan.audio_publishers,
            receivers: plan.receivers,
            publishers_receive: plan.publishers_receive,
            simulcast: plan.simulcast,
            clients,
            errors,
            setup_seconds: setup.as_secs_f64(),
            seconds,
            streams_expected,
            streams_measured,
            sent_packets,
            sent_video_packets: sent_video,
            received_packets: received,
            received_video_packets: received_video,
            received_per_second: received as f64 / seconds.max(1e-9),
            lost_packets: lost,
            loss_ratio: if expected > 0 { lost as f64 / expected as f64 } else { 0.0 },
            duplicates,
            latency_p50_micros: quantile(&latencies, 0.5),
            latency_p99_micros: quantile(&latencies, 0.99),
            latency_samples: latencies.len(),
            keyframe_requests,
            skipped_frames: skipped,
            server_cpu_seconds: server_cpu,
            server_cores: server_cpu.map(|cpu| cpu / seconds.max(1e-9)),
            server_micros_per_received_packet: server_cpu.and_then(|cpu| per_packet(cpu, received)),
            server_micros_per_sent_packet: server_cpu.and_then(|cpu| per_packet(cpu, sent_packets)),
            tool_cpu_seconds: tool_cpu,
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let optional = |value: Option<f64>| value.map_or("-".to_owned(), |value| format!("{value:.1}"));
        let micros =
            |value: Option<u32>| value.map_or("-".to_owned(), |value| format!("{:.2}", f64::from(value) / 1000.0));
        write!(
            formatter,
            "{:<9} pub {:>2}v+{:<2}a recv {:>2}{} {:>4.1}s  sent {:>7}  received {:>8} ({:>7.0}/s)  loss {:.3}%  \
             latency p50 {} ms p99 {} ms  server cpu {} s = {} % core, {} µs/recv pkt, {} µs/sent pkt  streams {}/{}",
            self.target,
            self.video_publishers,
            self.audio_publishers,
            self.receivers,
            if self.publishers_receive { "+meeting" } else { "" },
            self.seconds,
            self.sent_packets,
            self.received_packets,
            self.received_per_second,
            self.loss_ratio * 100.0,
            micros(self.latency_p50_micros),
            micros(self.latency_p99_micros),
            self.server_cpu_seconds.map_or("-".to_owned(), |value| format!("{value:.2}")),
            optional(self.server_cores.map(|cores| cores * 100.0)),
            optional(self.server_micros_per_received_packet),
            optional(self.server_micros_per_sent_packet),
            self.streams_measured,
            self.streams_expected,
        )?;
        for error in &self.errors {
            write!(formatter, "\n  client error: {error}")?;
        }
        Ok(())
    }
}
