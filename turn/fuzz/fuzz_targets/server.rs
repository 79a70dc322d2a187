//! Datagrams and stream frames from clients and peers must never panic the TURN core, and
//! nothing may ever be relayed to a peer that is not allowed.
//! Input: chunks separated by 0xFF 0xFF; the chunk's first byte picks the sender.

#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use lienthong_turn::{Client, Credentials, Limits, Now, Output, Secret, Server, ServerConfig, Transport};

fuzz_target!(|data: &[u8]| {
    let sfu = "10.20.0.5:10000".parse().unwrap();
    let config =
        ServerConfig { realm: "hop.ninhthuan.gov.vn".into(), allowed_peers: vec![sfu], limits: Limits::default() };
    let mut server = Server::new(config, Credentials::new(Secret::new([1; 32]), Secret::new([2; 32])));
    let start = Instant::now();
    let mut out = Vec::new();
    for (step, chunk) in data.split(|byte| *byte == 0xFF).enumerate() {
        let Some((&selector, bytes)) = chunk.split_first() else { continue };
        let now = Now { instant: start + Duration::from_millis(step as u64 * 100), unix_seconds: 1_800_000_000 };
        let client = Client {
            transport: [Transport::Udp, Transport::Tcp, Transport::Tls][usize::from(selector % 3)],
            remote: std::net::SocketAddr::new([10, 30, 1, selector].into(), 50000),
            local: "10.20.0.5:443".parse().unwrap(),
        };
        match selector % 4 {
            0 => server.handle_peer(now, "10.20.0.5:40000".parse().unwrap(), sfu, bytes, &mut out),
            1 => server.handle_timeout(now, &mut out),
            _ => server.handle_client(now, client, bytes, &mut out),
        }
        for output in out.drain(..) {
            match output {
                Output::ToPeer { peer, .. } => assert_eq!(peer, sfu),
                Output::OpenRelay { client, .. } => {
                    server.relay_opened(now, client, Some("10.20.0.5:40000".parse().unwrap()), &mut Vec::new())
                }
                _ => {}
            }
        }
    }
});
