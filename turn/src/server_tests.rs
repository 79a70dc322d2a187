use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::*;
use crate::message::{Builder, Class, Message, attribute, method};
use crate::{Credential, Credentials, Secret};

const REALM: &str = "hop.ninhthuan.gov.vn";
const SFU: &str = "10.20.0.5:10000";
const RELAY: &str = "10.20.0.5:40001";

struct Harness {
    server: Server,
    credentials: Credentials,
    now: Now,
    client: Client,
    nonce: String,
    transaction: u64,
}

fn harness(limits: Limits) -> Harness {
    let credentials = Credentials::new(Secret::new([9; 32]), Secret::new([8; 32]));
    let config = ServerConfig { realm: REALM.into(), allowed_peers: vec![SFU.parse().unwrap()], limits };
    Harness {
        server: Server::new(config, credentials.clone()),
        credentials,
        now: Now { instant: Instant::now(), unix_seconds: 1_800_000_000 },
        client: client(50000),
        nonce: String::new(),
        transaction: 0,
    }
}

fn client(port: u16) -> Client {
    Client {
        transport: Transport::Tls,
        remote: SocketAddr::new("10.30.1.7".parse().unwrap(), port),
        local: "10.20.0.5:443".parse().unwrap(),
    }
}

impl Harness {
    fn credential(&self, participant: &str) -> Credential {
        self.credentials.mint(participant, self.now.unix_seconds + 600)
    }

    fn next_transaction(&mut self) -> [u8; 12] {
        self.transaction += 1;
        let mut transaction = [0u8; 12];
        transaction[..8].copy_from_slice(&self.transaction.to_be_bytes());
        transaction
    }

    /// Sends a request signed with `credential` (or unsigned) and returns the outputs.
    fn request(
        &mut self,
        method: u16,
        credential: Option<&Credential>,
        attributes: &dyn Fn(&mut Builder),
    ) -> Vec<Output> {
        let transaction = self.next_transaction();
        let mut builder = Builder::new(method, Class::Request, transaction);
        attributes(&mut builder);
        if let Some(credential) = credential {
            builder
                .attribute(attribute::USERNAME, credential.username.as_bytes())
                .attribute(attribute::REALM, REALM.as_bytes())
                .attribute(attribute::NONCE, self.nonce.as_bytes());
            // Signed the way a browser signs: from the password it was given.
            builder.integrity(&md5_key(credential));
        }
        let bytes = builder.fingerprint();
        let mut out = Vec::new();
        self.server.handle_client(self.now, self.client, &bytes, &mut out);
        out
    }

    /// Gets a nonce, allocates, and completes the relay; returns the relayed address.
    fn allocate(&mut self, credential: &Credential) -> Result<SocketAddr, u16> {
        let out = self.request(method::ALLOCATE, None, &|_| {});
        let challenge = reply(&out);
        assert_eq!(code(&challenge), Some(401));
        self.nonce = Message::parse(&challenge).unwrap().text(attribute::NONCE).unwrap().to_owned();
        let out = self.request(method::ALLOCATE, Some(credential), &|builder| {
            builder.attribute(attribute::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
        });
        match out.as_slice() {
            [Output::OpenRelay { ip, .. }] => {
                assert_eq!(*ip, SFU.parse::<SocketAddr>().unwrap().ip());
                let relay = SocketAddr::new(*ip, 40000 + self.server.allocations() as u16);
                let mut out = Vec::new();
                self.server.relay_opened(self.now, self.client, Some(relay), &mut out);
                let response = reply(&out);
                let message = Message::parse(&response).unwrap();
                assert_eq!(message.class, Class::Success);
                assert!(message.verify_integrity(&self.credentials.key(&credential.username, REALM)));
                Ok(message.xor_address(attribute::XOR_RELAYED_ADDRESS).unwrap())
            }
            other => Err(code(&reply(other)).unwrap()),
        }
    }

    fn permit(&mut self, credential: &Credential, peer: SocketAddr) -> u16 {
        let out = self.request(method::CREATE_PERMISSION, Some(credential), &|builder| {
            builder.xor_address(attribute::XOR_PEER_ADDRESS, peer);
        });
        code(&reply(&out)).unwrap_or(200)
    }

    fn bind(&mut self, credential: &Credential, number: u16, peer: SocketAddr) -> u16 {
        let out = self.request(method::CHANNEL_BIND, Some(credential), &|builder| {
            builder.attribute(attribute::CHANNEL_NUMBER, &[(number >> 8) as u8, number as u8, 0, 0]);
            builder.xor_address(attribute::XOR_PEER_ADDRESS, peer);
        });
        code(&reply(&out)).unwrap_or(200)
    }

    fn raw(&mut self, bytes: &[u8]) -> Vec<Output> {
        let mut out = Vec::new();
        self.server.handle_client(self.now, self.client, bytes, &mut out);
        out
    }

    fn advance(&mut self, by: Duration) -> Vec<Output> {
        self.now.instant += by;
        self.now.unix_seconds += by.as_secs();
        let mut out = Vec::new();
        self.server.handle_timeout(self.now, &mut out);
        out
    }
}

fn reply(out: &[Output]) -> Vec<u8> {
    match out {
        [Output::ToClient { data, .. }] => data.clone(),
        other => panic!("expected one reply, got {other:?}"),
    }
}

fn code(bytes: &[u8]) -> Option<u16> {
    let message = Message::parse(bytes).unwrap();
    let value = message.get(attribute::ERROR_CODE)?;
    Some(u16::from(value[2]) * 100 + u16::from(value[3]))
}

fn send_indication(peer: SocketAddr, data: &[u8]) -> Vec<u8> {
    let mut builder = Builder::new(method::SEND, Class::Indication, [5; 12]);
    builder.xor_address(attribute::XOR_PEER_ADDRESS, peer).attribute(attribute::DATA, data);
    builder.finish()
}

#[test]
fn relays_to_the_sfu_both_ways() {
    let mut harness = harness(Limits::default());
    let credential = harness.credential("p1");
    let relay = harness.allocate(&credential).unwrap();
    assert_eq!(relay, RELAY.parse().unwrap());
    let sfu: SocketAddr = SFU.parse().unwrap();
    assert_eq!(harness.permit(&credential, sfu), 200);
    let out = harness.raw(&send_indication(sfu, b"stun check"));
    assert_eq!(out, vec![Output::ToPeer { relay, peer: sfu, data: b"stun check".to_vec() }]);
    assert_eq!(harness.bind(&credential, 0x4000, sfu), 200);
    let out = harness.raw(&message::channel_data(0x4000, b"rtp", true));
    assert_eq!(out, vec![Output::ToPeer { relay, peer: sfu, data: b"rtp".to_vec() }]);
    let mut out = Vec::new();
    harness.server.handle_peer(harness.now, relay, sfu, b"answer", &mut out);
    assert_eq!(reply(&out), message::channel_data(0x4000, b"answer", true));
}

#[test]
fn every_other_peer_is_forbidden() {
    let mut harness = harness(Limits::default());
    let credential = harness.credential("p1");
    let relay = harness.allocate(&credential).unwrap();
    let sfu: SocketAddr = SFU.parse().unwrap();
    // The SFU's other ports, its other addresses, internal hosts, loopback, the relay itself.
    let others = [
        "10.20.0.5:10001",
        "10.20.0.5:22",
        "10.20.0.20:25",
        "127.0.0.1:9090",
        "169.254.169.254:80",
        "[::1]:10000",
        "[fd00::5]:10000",
        "0.0.0.0:10000",
        RELAY,
    ];
    for (index, other) in others.iter().enumerate() {
        let peer: SocketAddr = other.parse().unwrap();
        assert_eq!(harness.permit(&credential, peer), 403, "{peer}");
        assert_eq!(harness.bind(&credential, 0x4000 + index as u16, peer), 403, "{peer}");
        assert!(harness.raw(&send_indication(peer, b"x")).is_empty(), "{peer}");
        let mut out = Vec::new();
        harness.server.handle_peer(harness.now, relay, peer, b"x", &mut out);
        assert!(out.is_empty(), "{peer}");
    }
    // A request naming the SFU and another peer is refused as a whole.
    let out = harness.request(method::CREATE_PERMISSION, Some(&credential), &|builder| {
        builder.xor_address(attribute::XOR_PEER_ADDRESS, sfu);
        builder.xor_address(attribute::XOR_PEER_ADDRESS, "10.20.0.20:25".parse().unwrap());
    });
    assert_eq!(code(&reply(&out)), Some(403));
    // Without a permission nothing reaches the SFU either.
    assert!(harness.raw(&send_indication(sfu, b"x")).is_empty());
    assert_eq!(harness.server.stats().packets_to_peer, 0);
    assert!(harness.server.stats().forbidden_peer >= 2 * others.len() as u64);
}

#[test]
fn stale_forged_and_expired_credentials_are_refused() {
    let mut harness = harness(Limits::default());
    let expired = harness.credentials.mint("p1", harness.now.unix_seconds - 1);
    assert_eq!(harness.allocate(&expired), Err(401));
    let forged = Credential { username: harness.credential("p1").username, password: "guess".into() };
    // A forged password gives another key: the integrity check fails.
    let nonce = harness.credentials.nonce(harness.client.remote, harness.now.unix_seconds);
    let out = harness.request(method::ALLOCATE, None, &|builder| {
        builder
            .attribute(attribute::REQUESTED_TRANSPORT, &[17, 0, 0, 0])
            .attribute(attribute::USERNAME, forged.username.as_bytes())
            .attribute(attribute::REALM, REALM.as_bytes())
            .attribute(attribute::NONCE, nonce.as_bytes());
        builder.integrity(&md5_key(&forged));
    });
    assert_eq!(code(&reply(&out)), Some(401));
    // Another secret's credentials are forged too.
    let other = Credentials::new(Secret::new([1; 32]), Secret::new([8; 32])).mint("p1", harness.now.unix_seconds + 60);
    let out = harness.request(method::ALLOCATE, None, &|builder| {
        builder
            .attribute(attribute::REQUESTED_TRANSPORT, &[17, 0, 0, 0])
            .attribute(attribute::USERNAME, other.username.as_bytes())
            .attribute(attribute::REALM, REALM.as_bytes())
            .attribute(attribute::NONCE, nonce.as_bytes());
        builder.integrity(&md5_key(&other));
    });
    assert_eq!(code(&reply(&out)), Some(401));
    assert_eq!(harness.server.allocations(), 0);
    // A nonce past its lifetime is stale: 438 with a new one.
    let good = harness.credential("p1");
    harness.nonce = harness.credentials.nonce(harness.client.remote, harness.now.unix_seconds - 700);
    let out = harness.request(method::ALLOCATE, Some(&good), &|builder| {
        builder.attribute(attribute::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
    });
    assert_eq!(code(&reply(&out)), Some(438));
    assert_eq!(harness.server.allocations(), 0);
    assert!(harness.server.stats().refused_credentials >= 1);
}

/// The long-term key a client computes from a credential it holds.
fn md5_key(credential: &Credential) -> [u8; 16] {
    use md5::{Digest, Md5};
    Md5::digest(format!("{}:{REALM}:{}", credential.username, credential.password)).into()
}

#[test]
fn allocations_are_capped_per_participant_and_in_total() {
    let limits = Limits { max_allocations: 5, max_allocations_per_participant: 3, ..Limits::default() };
    let mut harness = harness(limits);
    let credential = harness.credential("p1");
    for port in 0..3 {
        harness.client = client(50000 + port);
        harness.allocate(&credential).unwrap();
    }
    harness.client = client(50010);
    assert_eq!(harness.allocate(&credential), Err(486));
    let other = harness.credential("p2");
    for port in 0..2 {
        harness.client = client(50020 + port);
        harness.allocate(&other).unwrap();
    }
    harness.client = client(50030);
    assert_eq!(harness.allocate(&harness.credential("p3")), Err(508));
    assert_eq!(harness.server.allocations(), 5);
    // A closed connection frees its allocation and its place in both caps.
    let mut out = Vec::new();
    harness.server.client_closed(client(50000), &mut out);
    assert!(matches!(out.as_slice(), [Output::CloseRelay { .. }]));
    harness.client = client(50011);
    harness.allocate(&credential).unwrap();
}

#[test]
fn idle_and_unrefreshed_allocations_expire() {
    let mut harness = harness(Limits::default());
    let credential = harness.credential("p1");
    let relay = harness.allocate(&credential).unwrap();
    let sfu: SocketAddr = SFU.parse().unwrap();
    harness.permit(&credential, sfu);
    // Traffic keeps it; silence for the idle timeout ends it.
    assert!(harness.advance(Duration::from_secs(100)).is_empty());
    harness.raw(&send_indication(sfu, b"x"));
    assert!(harness.advance(Duration::from_secs(100)).is_empty());
    assert_eq!(harness.advance(Duration::from_secs(30)), vec![Output::CloseRelay { relay }]);
    assert_eq!(harness.server.allocations(), 0);
    // An active allocation that is never refreshed ends at its lifetime.
    harness.client = client(50001);
    harness.allocate(&credential).unwrap();
    harness.permit(&credential, sfu);
    for _ in 0..11 {
        harness.raw(&send_indication(sfu, b"x"));
        harness.advance(Duration::from_secs(55));
    }
    assert_eq!(harness.server.allocations(), 0);
}

#[test]
fn refresh_with_zero_lifetime_deletes() {
    let mut harness = harness(Limits::default());
    let credential = harness.credential("p1");
    let relay = harness.allocate(&credential).unwrap();
    let out = harness.request(method::REFRESH, Some(&credential), &|builder| {
        builder.u32(attribute::LIFETIME, 0);
    });
    assert!(matches!(&out[..], [Output::CloseRelay { relay: closed }, Output::ToClient { .. }] if *closed == relay));
    // Another user cannot refresh or use someone's allocation.
    harness.allocate(&credential).unwrap();
    let other = harness.credential("p2");
    let out = harness.request(method::REFRESH, Some(&other), &|_| {});
    assert_eq!(code(&reply(&out)), Some(441));
}

#[test]
fn bandwidth_per_allocation_is_bounded() {
    let limits = Limits { to_peer_bytes_per_second: 10_000, ..Limits::default() };
    let mut harness = harness(limits);
    let credential = harness.credential("p1");
    harness.allocate(&credential).unwrap();
    let sfu: SocketAddr = SFU.parse().unwrap();
    harness.bind(&credential, 0x4000, sfu);
    let frame = message::channel_data(0x4000, &[0u8; 1000], true);
    let relayed = (0..100).filter(|_| !harness.raw(&frame).is_empty()).count();
    assert_eq!(relayed, 10);
    assert_eq!(harness.server.stats().over_budget, 90);
}

#[test]
fn unknown_required_attributes_and_transports_are_refused() {
    let mut harness = harness(Limits::default());
    let credential = harness.credential("p1");
    harness.allocate(&credential).unwrap_or_else(|code| panic!("{code}"));
    harness.client = client(50001);
    harness.nonce = harness.credentials.nonce(harness.client.remote, harness.now.unix_seconds);
    let out = harness.request(method::ALLOCATE, Some(&credential), &|builder| {
        builder.attribute(attribute::REQUESTED_TRANSPORT, &[6, 0, 0, 0]);
    });
    assert_eq!(code(&reply(&out)), Some(442));
    let out = harness.request(method::ALLOCATE, Some(&credential), &|builder| {
        builder.attribute(attribute::REQUESTED_TRANSPORT, &[17, 0, 0, 0]).attribute(0x0018, &[0x80, 0, 0, 0]);
    });
    assert_eq!(code(&reply(&out)), Some(420));
    let out = harness.request(method::ALLOCATE, Some(&credential), &|builder| {
        builder.attribute(attribute::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
        builder.attribute(attribute::REQUESTED_ADDRESS_FAMILY, &[2, 0, 0, 0]);
    });
    assert_eq!(code(&reply(&out)), Some(440));
}

/// Random bytes and random mutations of real requests: no panic, no allocation without a
/// valid credential, and nothing ever relayed anywhere.
#[test]
fn hostile_clients_get_nothing() {
    let mut harness = harness(Limits::default());
    let credential = harness.credential("p1");
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let sample = {
        let mut builder = Builder::new(method::ALLOCATE, Class::Request, [3; 12]);
        builder
            .attribute(attribute::REQUESTED_TRANSPORT, &[17, 0, 0, 0])
            .attribute(attribute::USERNAME, credential.username.as_bytes())
            .attribute(attribute::REALM, REALM.as_bytes())
            .attribute(attribute::NONCE, b"0000000000000000aaaaaaaaaaaaaaaaaaaaaaaa")
            .integrity(b"wrong key");
        builder.fingerprint()
    };
    for round in 0..20_000u32 {
        let mut data = if round % 3 == 0 {
            (0..(next() % 200) as usize).map(|_| next() as u8).collect::<Vec<u8>>()
        } else {
            sample.clone()
        };
        for _ in 0..(next() % 5) {
            let at = (next() as usize) % data.len().max(1);
            if let Some(byte) = data.get_mut(at) {
                *byte = next() as u8;
            }
        }
        harness.client = client((next() % 60000) as u16 + 1);
        for output in harness.raw(&data) {
            assert!(matches!(output, Output::ToClient { .. }), "{output:?}");
        }
    }
    assert_eq!(harness.server.allocations(), 0);
}

/// Credentials only start allocations for a few minutes; a meeting that lasts hours keeps
/// its allocation by refreshing it with the same credential.
#[test]
fn a_long_meeting_outlives_its_credential() {
    let mut harness = harness(Limits::default());
    let credential = harness.credential("p1");
    harness.allocate(&credential).unwrap();
    let sfu: SocketAddr = SFU.parse().unwrap();
    assert_eq!(harness.bind(&credential, 0x4000, sfu), 200);
    let frame = message::channel_data(0x4000, b"rtp", true);
    for _ in 0..8 {
        for _ in 0..6 {
            assert_eq!(harness.raw(&frame).len(), 1);
            assert!(harness.advance(Duration::from_secs(50)).is_empty());
        }
        harness.nonce = harness.credentials.nonce(harness.client.remote, harness.now.unix_seconds);
        let out = harness.request(method::REFRESH, Some(&credential), &|builder| {
            builder.u32(attribute::LIFETIME, 600);
        });
        assert_eq!(code(&reply(&out)), None);
        assert_eq!(harness.bind(&credential, 0x4000, sfu), 200);
    }
    assert_eq!(harness.server.allocations(), 1);
    // The expired credential cannot start a new allocation.
    harness.client = client(50001);
    assert_eq!(harness.allocate(&credential), Err(401));
}
