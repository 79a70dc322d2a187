//! Shared fixtures: the province's test zone, a config around it, query helpers.
#![allow(dead_code)]

use std::net::IpAddr;
use std::path::Path;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RecordType};
use lienthong_config::Config;
use lienthong_dns::catalog::Catalog;
use lienthong_dns::engine::{self, Action, Transport};
use lienthong_dns::serial::Serials;

pub const ZONE_FILE: &str = r#"$ORIGIN ninhthuan.gov.vn.
$TTL 3600
@       IN SOA hub hostmaster (
            2024010101 ; serial
            7200 3600 1209600 300 )
@       IN NS   hub
hub     IN A    10.20.0.5
www     300 IN A 10.20.0.10
www     300 IN A 10.20.0.11
motcua  IN CNAME www
chain1  IN CNAME chain2
chain2  IN CNAME www
dangling IN CNAME nowhere
outside IN CNAME portal.example.com.
*.wild  IN A    10.20.0.99
a.b.ent IN A    10.20.0.12
huyen   IN NS   ns1.huyen
ns1.huyen IN A  10.20.0.30
_sip._tcp IN SRV 0 1 5060 hub
ptr     IN PTR  hub
caa     IN CAA  0 issue "letsencrypt.org"
"#;

/// A config serving ZONE_FILE (written into `directory`) plus derived records.
pub fn config_text(directory: &Path, extra_dns: &str) -> String {
    format!(
        r#"[server]
hostname = "hub.ninhthuan.gov.vn"
addresses = ["10.20.0.5", "2001:db8::5"]
state_dir = "{state}"

[dns]
listen = ["127.0.0.1:0"]
recursion_from = ["127.0.0.1/32"]
{extra_dns}

[[dns.zone]]
name = "ninhthuan.gov.vn"
file = "ninhthuan.zone"
records = ["extra 300 IN A 10.20.0.13", 'big 60 IN TXT {big}']

[mail]
enabled = true
hostname = "mail.ninhthuan.gov.vn"
submission_listen = "127.0.0.1:2587"
submissions_listen = "127.0.0.1:2465"

[[mail.domain]]
name = "ninhthuan.gov.vn"
deliver_to = "10.20.0.20:25"

[conference]
enabled = false
"#,
        state = directory.join("state").display(),
        big = (0..5)
            .map(|index| format!("\"{}\"", char::from(b'a' + index).to_string().repeat(200)))
            .collect::<Vec<_>>()
            .join(" "),
    )
}

pub fn write_zone(directory: &Path) {
    std::fs::write(directory.join("ninhthuan.zone"), ZONE_FILE).unwrap();
}

pub fn config(directory: &Path, extra_dns: &str) -> Config {
    write_zone(directory);
    let text = config_text(directory, extra_dns);
    lienthong_config::parse(&text, "test.toml", directory).unwrap_or_else(|errors| panic!("{errors}"))
}

pub fn catalog(config: &Config, published: &[String]) -> Catalog {
    Catalog::build(config, published, &mut Serials::in_memory(), 1_700_000_000)
        .unwrap_or_else(|errors| panic!("{errors:?}"))
}

pub fn query(name: &str, record_type: RecordType, edns_payload: Option<u16>) -> Vec<u8> {
    let mut message = Message::new(0x1234, MessageType::Query, OpCode::Query);
    message.add_query(Query::query(Name::from_ascii(name).unwrap(), record_type));
    if let Some(payload) = edns_payload {
        let mut edns = Edns::new();
        edns.set_max_payload(payload);
        message.set_edns(edns);
    }
    message.to_vec().unwrap()
}

/// Sends `packet` through the engine; returns the decoded answer.
pub fn ask_packet(catalog: &Catalog, packet: &[u8], client: &str, transport: Transport) -> Option<Message> {
    let mut out = Vec::new();
    let client: IpAddr = client.parse().unwrap();
    let outcome = engine::handle(catalog, packet, client, transport, &mut out);
    match outcome.action {
        Action::Reply => Some(Message::from_vec(&out).expect("the answer decodes")),
        Action::Drop => None,
        other => panic!("unexpected action {other:?}"),
    }
}

pub fn ask(catalog: &Catalog, name: &str, record_type: RecordType) -> Message {
    ask_packet(catalog, &query(name, record_type, None), "127.0.0.1", Transport::Udp).unwrap()
}

/// Records of a section as `name ttl class type data` lines, sorted.
pub fn lines(records: &[hickory_proto::rr::Record]) -> Vec<String> {
    let mut lines: Vec<String> = records.iter().map(ToString::to_string).collect();
    lines.sort();
    lines
}

/// Runs `dig` with `arguments`; fails the test with a clear message when dig is missing.
pub async fn dig(port: u16, arguments: &[&str]) -> String {
    let port = port.to_string();
    let mut command = tokio::process::Command::new("dig");
    command.args(["@127.0.0.1", "-p", &port, "+time=3", "+tries=1"]).args(arguments);
    let output = command
        .output()
        .await
        .unwrap_or_else(|error| panic!("cannot run dig ({error}); install it: apt-get install bind9-dnsutils"));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A fake upstream resolver on loopback: answers every A query with `address` (TTL 300),
/// names starting with `nx` with NXDOMAIN (negative TTL 60), and counts what it receives.
pub struct FakeUpstream {
    pub address: std::net::SocketAddr,
    pub queries: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeUpstream {
    pub async fn start(answer: std::net::Ipv4Addr) -> FakeUpstream {
        use hickory_proto::rr::rdata::{A, SOA};
        use hickory_proto::rr::{RData, Record};
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let address = socket.local_addr().unwrap();
        let queries = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = queries.clone();
        let task = tokio::spawn(async move {
            let mut buffer = [0u8; 4096];
            loop {
                let Ok((length, peer)) = socket.recv_from(&mut buffer).await else { return };
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let Ok(request) = Message::from_vec(&buffer[..length]) else { continue };
                let mut response = Message::new(request.metadata.id, MessageType::Response, OpCode::Query);
                response.metadata.recursion_desired = true;
                response.metadata.recursion_available = true;
                response.add_queries(request.queries.iter().cloned());
                let question = request.queries[0].name().clone();
                if question.to_ascii().starts_with("nx") {
                    response.metadata.response_code = hickory_proto::op::ResponseCode::NXDomain;
                    let soa = SOA::new(
                        Name::from_ascii("ns.example.").unwrap(),
                        Name::from_ascii("h.example.").unwrap(),
                        1,
                        1,
                        1,
                        1,
                        60,
                    );
                    response.add_authority(Record::from_rdata(
                        Name::from_ascii("example.").unwrap(),
                        600,
                        RData::SOA(soa),
                    ));
                } else {
                    response.add_answer(Record::from_rdata(question, 300, RData::A(A(answer))));
                }
                let _ = socket.send_to(&response.to_vec().unwrap(), peer).await;
            }
        });
        FakeUpstream { address, queries, task }
    }

    pub fn count(&self) -> usize {
        self.queries.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A UDP port free right now on 127.0.0.1 (for peers that need their port up front).
pub fn free_port() -> u16 {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = socket.local_addr().unwrap().port();
    let tcp = std::net::TcpListener::bind(("127.0.0.1", port));
    if tcp.is_err() {
        return free_port();
    }
    port
}

/// Sends `packet` over UDP to 127.0.0.1:`port`, returns the decoded answer (None on timeout).
pub async fn udp_exchange(port: u16, packet: &[u8]) -> Option<Message> {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.ok()?;
    socket.send_to(packet, ("127.0.0.1", port)).await.ok()?;
    let mut buffer = vec![0u8; 65535];
    let (length, _) =
        tokio::time::timeout(std::time::Duration::from_secs(2), socket.recv_from(&mut buffer)).await.ok()?.ok()?;
    Message::from_vec(&buffer[..length]).ok()
}

/// A private NSD with its own config in a directory; killed (by PID) when dropped.
pub struct Nsd {
    pub port: u16,
    child: std::process::Child,
    pub directory: std::path::PathBuf,
}

impl Nsd {
    /// Starts NSD with `zone_clause` (the `zone:` section) on a free port.
    pub fn start(directory: &Path, zone_clause: &str, port: u16) -> Nsd {
        let conf = format!(
            "server:\n  ip-address: 127.0.0.1\n  port: {port}\n  do-ip6: no\n  server-count: 1\n  username: \"\"\n  chroot: \"\"\n  database: \"\"\n  zonesdir: \"{dir}\"\n  zonelistfile: \"{dir}/zone.list\"\n  xfrdfile: \"{dir}/xfrd.state\"\n  xfrdir: \"{dir}\"\n  pidfile: \"{dir}/nsd.pid\"\n  logfile: \"{dir}/nsd.log\"\n  verbosity: 2\n  rrl-ratelimit: 0\n  rrl-whitelist-ratelimit: 0\nremote-control:\n  control-enable: no\n{zone_clause}",
            dir = directory.display()
        );
        std::fs::write(directory.join("nsd.conf"), conf).unwrap();
        let child = std::process::Command::new("nsd")
            .args(["-d", "-c"])
            .arg(directory.join("nsd.conf"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|error| panic!("cannot run nsd ({error}); install it: apt-get install nsd"));
        Nsd { port, child, directory: directory.to_path_buf() }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.directory.join("nsd.log")).unwrap_or_default()
    }
}

impl Drop for Nsd {
    fn drop(&mut self) {
        // SIGTERM lets NSD stop its own server children; then reap it.
        let _ = std::process::Command::new("kill").arg(self.child.id().to_string()).status();
        for _ in 0..50 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
