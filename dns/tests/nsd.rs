//! Interop and differential tests against a real NSD on loopback.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Nsd, free_port, query, udp_exchange};
use hickory_proto::op::Message;
use hickory_proto::rr::{RData, RecordType};
use lienthong_dns::DnsService;

/// The zone file alone, nothing derived: the server name lies outside the zone, mail and
/// conferences are off.
fn plain_config(directory: &std::path::Path, secondaries: &str, extra_record: &str) -> lienthong_config::Config {
    common::write_zone(directory);
    let text = format!(
        "[server]\nhostname = \"hub.example.net\"\naddresses = [\"10.20.0.5\"]\nstate_dir = \"{}\"\n\n[dns]\nlisten = [\"127.0.0.1:0\"]\n\n[[dns.zone]]\nname = \"ninhthuan.gov.vn\"\nfile = \"ninhthuan.zone\"\nrecords = [{extra_record}]\nsecondaries = [{secondaries}]\n\n[mail]\nenabled = false\n\n[conference]\nenabled = false\n",
        directory.join("state").display()
    );
    lienthong_config::parse(&text, "test.toml", directory).unwrap_or_else(|errors| panic!("{errors}"))
}

async fn soa_serial(port: u16) -> Option<u32> {
    let answer = udp_exchange(port, &query("ninhthuan.gov.vn.", RecordType::SOA, None)).await?;
    answer.answers.iter().find_map(|record| match &record.data {
        RData::SOA(soa) => Some(soa.serial),
        _ => None,
    })
}

async fn wait_for<F, Fut>(what: &str, nsd: &Nsd, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    while !condition().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}; NSD log:\n{}", nsd.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nsd_transfers_the_zone_and_follows_notify() {
    let directory = tempfile::tempdir().unwrap();
    let nsd_port = free_port();
    let secondary = format!("\"127.0.0.1:{nsd_port}\"");
    let config = plain_config(directory.path(), &secondary, "\"extra 300 IN A 10.20.0.13\"");
    let service = DnsService::start(Arc::new(config), Vec::new()).await.unwrap();
    let port = service.local_addresses()[0].port();
    let our_serial = soa_serial(port).await.unwrap();

    let nsd_directory = tempfile::tempdir().unwrap();
    let zone_clause = format!(
        "zone:\n  name: \"ninhthuan.gov.vn\"\n  zonefile: \"secondary.zone\"\n  allow-notify: 127.0.0.1 NOKEY\n  request-xfr: AXFR 127.0.0.1@{port} NOKEY\n"
    );
    let nsd = Nsd::start(nsd_directory.path(), &zone_clause, nsd_port);
    wait_for("NSD to transfer the zone", &nsd, || async { soa_serial(nsd_port).await == Some(our_serial) }).await;

    for (name, record_type) in [("www.ninhthuan.gov.vn.", RecordType::A), ("extra.ninhthuan.gov.vn.", RecordType::A)] {
        let ours = udp_exchange(port, &query(name, record_type, None)).await.unwrap();
        let theirs = udp_exchange(nsd_port, &query(name, record_type, None)).await.unwrap();
        assert_eq!(common::lines(&ours.answers), common::lines(&theirs.answers), "{name}");
    }

    // A change: higher serial, NOTIFY, and NSD pulls the new data by itself.
    let changed = plain_config(directory.path(), &secondary, "\"extra 300 IN A 10.20.0.14\"");
    service.reload(Arc::new(changed), Vec::new()).await.unwrap();
    let new_serial = soa_serial(port).await.unwrap();
    assert!(new_serial > our_serial);
    wait_for("NSD to follow the NOTIFY", &nsd, || async {
        let answer = udp_exchange(nsd_port, &query("extra.ninhthuan.gov.vn.", RecordType::A, None)).await;
        answer.is_some_and(|answer| common::lines(&answer.answers) == ["extra.ninhthuan.gov.vn. 300 IN A 10.20.0.14"])
    })
    .await;
    assert!(nsd.log().contains("notify"), "NSD logged the NOTIFY:\n{}", nsd.log());

    // Anyone else is refused a transfer.
    let output = common::dig(port, &["-b", "127.0.0.2", "+tcp", "ninhthuan.gov.vn", "AXFR"]).await;
    assert!(output.contains("Transfer failed") || output.contains("REFUSED"), "{output}");
    drop(nsd);
    service.shutdown().await;
}

/// rcode, the AA and TC flags, and the answer and authority sets, comparable across servers.
/// One deliberate difference is left out: with an answer, NSD also sends the apex NS set in
/// the authority section; lienthong sends minimal responses (as Knot and BIND's default do),
/// so the authority of a positive answer is not compared.
fn summary(message: &Message) -> String {
    let authorities = if message.answers.is_empty() { &message.authorities[..] } else { &[] };
    let lower = |records: &[hickory_proto::rr::Record]| -> Vec<String> {
        let mut lines: Vec<String> = records.iter().map(|record| record.to_string().to_lowercase()).collect();
        lines.sort();
        lines
    };
    format!(
        "rcode={} aa={} tc={}\nanswer={:?}\nauthority={:?}",
        message.metadata.response_code,
        message.metadata.authoritative,
        message.metadata.truncation,
        lower(&message.answers),
        lower(authorities),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_match_nsd_serving_the_same_zone_file() {
    let directory = tempfile::tempdir().unwrap();
    let config = plain_config(directory.path(), "", "");
    let service = DnsService::start(Arc::new(config), Vec::new()).await.unwrap();
    let port = service.local_addresses()[0].port();

    let nsd_directory = tempfile::tempdir().unwrap();
    std::fs::write(nsd_directory.path().join("primary.zone"), common::ZONE_FILE).unwrap();
    let nsd_port = free_port();
    let nsd = Nsd::start(
        nsd_directory.path(),
        "zone:\n  name: \"ninhthuan.gov.vn\"\n  zonefile: \"primary.zone\"\n",
        nsd_port,
    );
    wait_for("NSD to serve the zone", &nsd, || async { soa_serial(nsd_port).await.is_some() }).await;

    let questions = [
        ("www.ninhthuan.gov.vn.", RecordType::A),
        ("WWW.NinhThuan.Gov.Vn.", RecordType::A),
        ("www.ninhthuan.gov.vn.", RecordType::AAAA),
        ("www.ninhthuan.gov.vn.", RecordType::MX),
        ("nope.ninhthuan.gov.vn.", RecordType::A),
        ("x.y.z.ninhthuan.gov.vn.", RecordType::TXT),
        ("chain1.ninhthuan.gov.vn.", RecordType::A),
        ("chain1.ninhthuan.gov.vn.", RecordType::AAAA),
        ("motcua.ninhthuan.gov.vn.", RecordType::CNAME),
        ("motcua.ninhthuan.gov.vn.", RecordType::A),
        ("dangling.ninhthuan.gov.vn.", RecordType::A),
        ("outside.ninhthuan.gov.vn.", RecordType::A),
        ("a.wild.ninhthuan.gov.vn.", RecordType::A),
        ("a.b.wild.ninhthuan.gov.vn.", RecordType::A),
        ("a.wild.ninhthuan.gov.vn.", RecordType::MX),
        ("b.ent.ninhthuan.gov.vn.", RecordType::A),
        ("a.b.ent.ninhthuan.gov.vn.", RecordType::A),
        ("_sip._tcp.ninhthuan.gov.vn.", RecordType::SRV),
        ("ptr.ninhthuan.gov.vn.", RecordType::PTR),
        ("caa.ninhthuan.gov.vn.", RecordType::CAA),
        ("ninhthuan.gov.vn.", RecordType::SOA),
        ("ninhthuan.gov.vn.", RecordType::NS),
        ("ninhthuan.gov.vn.", RecordType::MX),
        ("hub.ninhthuan.gov.vn.", RecordType::A),
        ("huyen.ninhthuan.gov.vn.", RecordType::A),
        ("www.huyen.ninhthuan.gov.vn.", RecordType::A),
    ];
    let mut differences = Vec::new();
    for (name, record_type) in questions {
        let packet = query(name, record_type, Some(1232));
        let ours = udp_exchange(port, &packet).await.unwrap();
        let theirs = udp_exchange(nsd_port, &packet).await.unwrap();
        if summary(&ours) != summary(&theirs) {
            differences.push(format!(
                "{name} {record_type}\n lienthong: {}\n nsd:       {}",
                summary(&ours),
                summary(&theirs)
            ));
        }
    }
    assert!(differences.is_empty(), "{}", differences.join("\n"));
    drop(nsd);
    service.shutdown().await;
}
