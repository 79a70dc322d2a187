//! Interop with a real NSD on loopback: it transfers our zone and follows our NOTIFY. The
//! answer-by-answer comparison is `differential.rs`.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Nsd, free_port, query, udp_exchange};
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
async fn nsd_transfers_the_zone_and_follows_notify_with_ixfr() {
    let directory = tempfile::tempdir().unwrap();
    let nsd_port = free_port();
    let secondary = format!("\"127.0.0.1:{nsd_port}\"");
    let config = plain_config(directory.path(), &secondary, "\"extra 300 IN A 10.20.0.13\"");
    let service = DnsService::start(Arc::new(config), Vec::new()).await.unwrap();
    let port = service.local_addresses()[0].port();
    let our_serial = soa_serial(port).await.unwrap();

    let nsd_directory = tempfile::tempdir().unwrap();
    let zone_clause = format!(
        "zone:\n  name: \"ninhthuan.gov.vn\"\n  zonefile: \"secondary.zone\"\n  allow-notify: 127.0.0.1 NOKEY\n  request-xfr: 127.0.0.1@{port} NOKEY\n"
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
    // NSD asked by IXFR (its default): the first update was the whole zone, the second only
    // the difference (NSD logs the bytes of each update).
    let sizes: Vec<usize> = nsd
        .log()
        .lines()
        .filter(|line| line.contains("received update to serial") && line.contains(" bytes"))
        .filter_map(|line| line.split(" of ").last()?.split(' ').next()?.parse().ok())
        .collect();
    assert_eq!(sizes.len(), 2, "two updates:\n{}", nsd.log());
    assert!(sizes[1] * 2 < sizes[0], "the second update is incremental: {sizes:?}\n{}", nsd.log());

    // Anyone else is refused a transfer.
    let output = common::dig(port, &["-b", "127.0.0.2", "+tcp", "ninhthuan.gov.vn", "AXFR"]).await;
    assert!(output.contains("Transfer failed") || output.contains("REFUSED"), "{output}");
    drop(nsd);
    service.shutdown().await;
}
