//! `lienthong-load`: simulated conference participants for measuring an SFU.
//!
//! Each participant is a str0m `Rtc` in RTP mode ([`client`]) on its own UDP socket on
//! loopback, driven by a small async loop ([`driver`]). Publishers send synthetic VP8 with a
//! real keyframe structure (optionally three simulcast layers with rids) and Opus-shaped audio
//! ([`media`]); every frame carries a probe with its send time, so receivers measure loss and
//! latency per packet ([`stats`]). Signaling is the real thing: lienthong's WebSocket protocol
//! (`docs/signaling.md`, [`lienthong`]) or Janus's VideoRoom plugin ([`janus`]). A run
//! ([`run`]) joins everyone, waits until every receiver gets every stream it should, measures
//! for a fixed time and reports packets, loss, latency and the server's CPU-seconds per
//! packet ([`report`]).

#![forbid(unsafe_code)]

pub mod client;
#[cfg(test)]
mod client_tests;
pub mod cpu;
mod driver;
pub mod janus;
pub mod lienthong;
pub mod media;
pub mod report;
pub mod run;
pub mod stats;

pub use report::Report;
pub use run::{ForwardingCaps, Plan, Target, run};

/// Errors of a load run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A socket could not be bound or used.
    #[error("network: {0}")]
    Io(#[from] std::io::Error),
    /// The WebSocket to the server failed.
    #[error("signaling connection: {0}")]
    WebSocket(#[from] Box<tokio_tungstenite::tungstenite::Error>),
    /// The server said something the tool did not expect (refused join, ended session, ...).
    #[error("signaling: {0}")]
    Signaling(String),
    /// str0m refused SDP or a candidate.
    #[error("media: {0}")]
    Media(String),
    /// The server process's CPU time could not be read.
    #[error("cannot read /proc/{pid}/stat: {source}")]
    Cpu { pid: u32, source: std::io::Error },
    /// `/proc/PID/stat` did not have the expected fields.
    #[error("unexpected format of /proc/{pid}/stat")]
    CpuFormat { pid: u32 },
    /// Not every receiver got every stream within the setup time.
    #[error("setup incomplete: {seen} of {expected} streams arrived within {seconds} s")]
    Setup { seen: usize, expected: usize, seconds: u64 },
}

impl From<tokio_tungstenite::tungstenite::Error> for Error {
    fn from(error: tokio_tungstenite::tungstenite::Error) -> Self {
        Error::WebSocket(Box::new(error))
    }
}
