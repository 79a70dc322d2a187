//! `lienthong-load` against the real binary: a publisher and two receivers for a few seconds,
//! so the load tool (and the benchmark built on it) cannot rot.

use std::time::Duration;

use lienthong_load::janus::JanusTarget;
use lienthong_load::lienthong::LienthongTarget;
use lienthong_load::media::VideoShape;
use lienthong_load::{ForwardingCaps, Plan, Target};

use crate::common::{Instance, Ports};

const ROOM: &str = r#"
[[conference.room]]
name = "giao-ban"
title = "Họp giao ban UBND tỉnh"
pin = "246810"
chair_pin = "135790"
sites = ["UBND tỉnh", "Huyện A", "Huyện B"]
"#;

fn plan(ports: &Ports, instance: &Instance) -> Plan {
    Plan {
        target: Target::Lienthong(LienthongTarget {
            base: format!("http://127.0.0.1:{}", ports.conference),
            room: "giao-ban".into(),
            pin: "246810".into(),
        }),
        video_publishers: 1,
        audio_publishers: 0,
        receivers: 2,
        publishers_receive: false,
        mute_audio_only: false,
        simulcast: false,
        video: VideoShape::P360,
        audio_bitrate: 32_000,
        join_interval: Duration::from_millis(50),
        // Generous: CI machines may be loaded; the run ends as soon as every stream arrives.
        setup_timeout: Duration::from_secs(60),
        warmup: Duration::from_millis(500),
        duration: Duration::from_secs(6),
        server_pid: Some(instance.pid()),
        client_address: std::net::Ipv4Addr::LOCALHOST.into(),
        forwarding_caps: Some(ForwardingCaps { cameras: 12, microphones: 3 }),
    }
}

#[test]
fn the_load_tool_receives_every_stream_and_its_counts_add_up() {
    let ports = Ports::new();
    let instance = Instance::start(&format!("{}{ROOM}", ports.config(false, false, true)));
    let plan = plan(&ports, &instance);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let report = runtime.block_on(lienthong_load::run(&plan)).expect("load run");

    assert!(report.errors.is_empty(), "{report}");
    assert_eq!((report.streams_expected, report.streams_measured), (4, 4), "{report}");
    // 6 s of 30 frames/s video (a few packets each) and 50 audio packets/s.
    assert!(report.sent_packets > 400 && report.sent_video_packets > 300, "{report}");
    // Each receiver gets what the publisher sent, give or take the packets in flight when
    // the measurement window opened and closed. Every client opens its own window, and on a
    // busy 2-core machine (this binary's other tests run beside it) they open seconds apart:
    // a clean-clone CI run counted 430 of 840 in a 3 s window, 0 lost. So the lower bound only
    // catches gross undercounting; double counting is the upper bound, and lost packets are
    // what `loss_ratio` counts, below.
    let forwarded = 2 * report.sent_packets;
    assert!(
        report.received_packets * 10 >= forwarded * 4 && report.received_packets * 10 <= forwarded * 11,
        "received {} for {forwarded} sent to receivers: {report}",
        report.received_packets
    );
    assert!(report.received_video_packets > report.received_packets / 3, "{report}");
    assert!(report.loss_ratio < 0.05, "{report}");
    let p50 = report.latency_p50_micros.expect("latency measured");
    assert!(p50 > 0 && p50 < 1_000_000 && report.latency_p99_micros >= Some(p50), "{report}");
    assert!(report.latency_samples as u64 * 2 > report.received_packets, "most packets timed: {report}");
    let cpu = report.server_cpu_seconds.expect("server CPU read");
    assert!(cpu > 0.0 && report.server_micros_per_received_packet.is_some(), "{report}");
}

#[test]
fn a_wrong_pin_fails_the_run_with_the_servers_reason() {
    let ports = Ports::new();
    let instance = Instance::start(&format!("{}{ROOM}", ports.config(false, false, true)));
    let mut plan = plan(&ports, &instance);
    if let Target::Lienthong(target) = &mut plan.target {
        target.pin = "000000".into();
    }
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let error = runtime.block_on(lienthong_load::run(&plan)).expect_err("a refused join");
    assert!(error.to_string().contains("wrong_pin"), "{error}");
    // A Janus target that is not there fails fast too.
    plan.target = Target::Janus(JanusTarget { url: format!("ws://127.0.0.1:{}", ports.dns), room: 1 });
    assert!(runtime.block_on(lienthong_load::run(&plan)).is_err());
}
