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

/// A port free for TCP and UDP on 127.0.0.1, outside the kernel's ephemeral range (Linux:
/// 32768-60999). A port the kernel handed out for `:0` can be taken again, before the test
/// binds it, as the local port of any outgoing connection (a relay's delivery, a client);
/// these ports are never handed out that way. Each is given once per process, from an offset
/// by PID, and checked free by binding it.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    const FIRST: u32 = 20_000;
    const COUNT: u32 = 12_000;
    for _ in 0..COUNT {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (FIRST + (n + std::process::id().wrapping_mul(613)) % COUNT) as u16;
        let tcp = std::net::TcpListener::bind(("127.0.0.1", port));
        if tcp.is_ok() && std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {FIRST}..{}", FIRST + COUNT)
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
        Nsd::start_with(directory, "", zone_clause, port)
    }

    /// [`Nsd::start`] with extra `server:` options (each line indented by two spaces).
    pub fn start_with(directory: &Path, server_options: &str, zone_clause: &str, port: u16) -> Nsd {
        let conf = format!(
            "server:\n{server_options}  ip-address: 127.0.0.1\n  port: {port}\n  do-ip6: no\n  server-count: 1\n  username: \"\"\n  chroot: \"\"\n  database: \"\"\n  zonesdir: \"{dir}\"\n  zonelistfile: \"{dir}/zone.list\"\n  xfrdfile: \"{dir}/xfrd.state\"\n  xfrdir: \"{dir}\"\n  pidfile: \"{dir}/nsd.pid\"\n  logfile: \"{dir}/nsd.log\"\n  verbosity: 2\n  rrl-ratelimit: 0\n  rrl-whitelist-ratelimit: 0\nremote-control:\n  control-enable: no\n{zone_clause}",
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

/// The zone both lienthong and NSD serve in the differential tests: every category of name
/// (wildcards and their siblings, empty non-terminals, CNAME chains in and out of the zone,
/// delegations with glue).
pub const NSD_ZONE: &str = r#"$ORIGIN ninhthuan.gov.vn.
$TTL 3600
@       IN SOA hub hostmaster ( 2024010101 7200 3600 1209600 300 )
@       IN NS   hub
@       IN NS   ns2.example.net.
@       IN MX   10 mail
@       IN MX   20 mx.example.net.
@       IN TXT  "v=spf1 a:mail.ninhthuan.gov.vn -all"
@       IN A    10.20.0.5
hub     IN A    10.20.0.5
hub     IN AAAA 2001:db8::5
mail    IN A    10.20.0.20
mail    IN AAAA 2001:db8::20
www     300 IN A 10.20.0.10
www     300 IN A 10.20.0.11
www     IN TXT  "portal"
motcua  IN CNAME www
chain1  IN CNAME chain2
chain2  IN CNAME www
c1      IN CNAME c2
c2      IN CNAME c3
c3      IN CNAME c4
c4      IN CNAME c5
c5      IN CNAME c6
c6      IN CNAME c7
c7      IN CNAME c8
c8      IN CNAME c9
c9      IN CNAME c10
c10     IN CNAME c11
c11     IN CNAME c12
c12     IN CNAME www
loop1   IN CNAME loop2
loop2   IN CNAME loop1
self    IN CNAME self
dangling IN CNAME nowhere
outside IN CNAME portal.example.com.
towild  IN CNAME x.wild
toent   IN CNAME ent
todeleg IN CNAME www.huyen
tomx    IN CNAME q.mx
*.wild  IN A    10.20.0.99
*.wild  IN TXT  "wild"
real.wild IN A  10.20.0.98
*.wc    IN CNAME www
*.mx    IN MX   10 mail
a.b.ent IN A    10.20.0.12
*.x.ent IN A    10.20.0.13
huyen   IN NS   ns1.huyen
huyen   IN NS   ns.example.net.
ns1.huyen IN A  10.20.0.30
ns1.huyen IN AAAA 2001:db8::30
nsonly  IN NS   ns.example.net.
_sip._tcp IN SRV 0 1 5060 hub
_ldap._tcp IN SRV 0 1 389 ns1.huyen
_wild._tcp IN SRV 0 1 80 q.wild
mxg     IN MX   10 ns1.huyen
ptr     IN PTR  hub
caa     IN CAA  0 issue "letsencrypt.org"
mixed   IN TXT  "first"
mixed   IN MX   10 mail
mixed   IN A    10.20.0.50
txtonly IN TXT  "t"
txtonly IN SRV  0 0 1 hub
txtonly IN CAA  0 issue "ca.example"
tosib   IN CNAME www.khanhhoa.gov.vn.
tosibnx IN CNAME nope.khanhhoa.gov.vn.
tosibback IN CNAME back.khanhhoa.gov.vn.
tosibwild IN CNAME x.wild.khanhhoa.gov.vn.
tosibdeleg IN CNAME www.deleg.khanhhoa.gov.vn.
tosibmx IN CNAME mx.khanhhoa.gov.vn.
tosibent IN CNAME ent.khanhhoa.gov.vn.
tosibout IN CNAME out.khanhhoa.gov.vn.
xloop   IN CNAME loop.khanhhoa.gov.vn.
tochild IN CNAME www.sub.ninhthuan.gov.vn.
tochildnx IN CNAME nope.sub.ninhthuan.gov.vn.
sub     IN NS   ns.sub
ns.sub  IN A    10.20.0.40
"#;

/// A sibling zone the same server serves (no wildcard: its NXDOMAINs take the precomputed
/// path), for CNAME chains that cross zones.
pub const NSD_SIBLING_ZONE: &str = r#"$ORIGIN khanhhoa.gov.vn.
$TTL 3600
@        IN SOA ns1 hostmaster 2024020202 7200 3600 1209600 600
@        IN NS  ns1
@        IN NS  ns2.example.net.
ns1      IN A   10.30.0.1
www      IN A   10.30.0.10
back     IN CNAME www.ninhthuan.gov.vn.
deleg    IN NS  ns.deleg
ns.deleg IN A   10.30.0.50
mx       IN MX  10 ns1
a.ent    IN A   10.30.0.12
out      IN CNAME portal.example.org.
loop     IN CNAME xloop.ninhthuan.gov.vn.
"#;

/// One raw exchange with 127.0.0.1:`port`, over TCP or UDP (three tries); `None` on timeout.
pub async fn exchange(port: u16, packet: &[u8], tcp: bool) -> Option<Vec<u8>> {
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let deadline = Duration::from_secs(5);
    if tcp {
        let mut stream =
            tokio::time::timeout(deadline, tokio::net::TcpStream::connect(("127.0.0.1", port))).await.ok()?.ok()?;
        let mut framed = (packet.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(packet);
        stream.write_all(&framed).await.ok()?;
        let length = tokio::time::timeout(deadline, stream.read_u16()).await.ok()?.ok()?;
        let mut buffer = vec![0u8; usize::from(length)];
        tokio::time::timeout(deadline, stream.read_exact(&mut buffer)).await.ok()?.ok()?;
        return Some(buffer);
    }
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.ok()?;
    let mut buffer = vec![0u8; 65535];
    for _ in 0..3 {
        socket.send_to(packet, ("127.0.0.1", port)).await.ok()?;
        if let Ok(Ok((length, _))) = tokio::time::timeout(Duration::from_secs(2), socket.recv_from(&mut buffer)).await {
            return Some(buffer[..length].to_vec());
        }
    }
    None
}
