//! `lienthong run`: start, health, reload, shutdown.

use std::time::Duration;

use crate::common::{Instance, Ports, http, run_command, wait_until};

#[test]
fn runs_on_the_built_in_default_and_stops_cleanly_on_sigterm() {
    let instance = Instance::start_default();
    let (status, body) = http(instance.admin, "GET", "/healthz").unwrap();
    assert_eq!(status, 200);
    assert_eq!(body, "dns serving\nmail serving\nconference serving\n");
    let stdout = instance.stdout();
    for expected in
        ["127.0.0.1:1053 udp+tcp", "127.0.0.1:2525", "127.0.0.1:2587", "127.0.0.1:2465", "http://127.0.0.1:8080/"]
    {
        assert!(stdout.contains(expected), "start-up summary lacks {expected}:\n{stdout}");
    }
    assert!(instance.dir.path().join("lienthong-state/tls/self-signed.crt").exists());
    let (status, metrics) = http(instance.admin, "GET", "/metrics").unwrap();
    assert_eq!(status, 200);
    assert!(metrics.contains("lienthong_build_info"), "{metrics}");
    assert!(metrics.contains("lienthong_service_serving{service=\"mail\"} 1"), "{metrics}");
    let status = instance.stop();
    assert!(status.success(), "exit status {status}");
}

#[test]
fn sighup_applies_a_changed_config_and_keeps_the_old_one_when_broken() {
    let ports = Ports::new();
    let instance = Instance::start(&ports.config(false, true, false));
    assert_eq!(http(instance.admin, "GET", "/healthz").unwrap().1, "mail serving\n");

    // A valid change: DNS switched on, observable on the admin endpoint and the DNS socket.
    instance.write_config(&ports.config(true, true, false));
    instance.signal("HUP");
    wait_until(Duration::from_secs(20), || {
        http(instance.admin, "GET", "/healthz").is_ok_and(|(_, body)| body == "dns serving\nmail serving\n")
    })
    .unwrap_or_else(|_| panic!("reload did not start DNS:\n{}", instance.stderr()));

    // A broken file: refused with check's message, the old config stays in force.
    instance.write_config(&format!("{}\n[dns]\nlisten = 5\n", ports.config(false, false, false)));
    instance.signal("HUP");
    instance.wait_for_log("reload refused");
    assert!(instance.stderr().contains("lienthong.toml:"), "{}", instance.stderr());
    assert_eq!(http(instance.admin, "GET", "/healthz").unwrap().1, "dns serving\nmail serving\n");

    let status = instance.stop();
    assert!(status.success());
}

#[test]
fn reload_command_reports_problems_and_success() {
    let ports = Ports::new();
    let instance = Instance::start(&ports.config(false, true, false));
    let config_path = instance.config_path();
    let config_arg = config_path.to_str().unwrap();

    let (code, stdout, stderr) = run_command(instance.dir.path(), &["reload", "--config", config_arg], "");
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert_eq!(stdout, "reloaded\n");

    let (code, stdout, _) = run_command(instance.dir.path(), &["queue", "list", "--config", config_arg], "");
    assert_eq!(code, 0);
    assert!(stdout.contains("the queue is empty") || stdout.contains("message(s)"), "{stdout}");

    let (status, metrics) = http(instance.admin, "GET", "/metrics").unwrap();
    assert_eq!(status, 200);
    assert!(metrics.contains("lienthong_config_reloads_total{result=\"ok\"} 1"), "{metrics}");
    assert!(instance.stop().success());
}

#[test]
fn a_listen_address_in_use_is_named() {
    let ports = Ports::new();
    let _occupied = std::net::TcpListener::bind(("127.0.0.1", ports.admin)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("lienthong.toml"), ports.config(false, false, false)).unwrap();
    let (code, _, stderr) = run_command(dir.path(), &["run", "--config", "lienthong.toml"], "");
    assert_eq!(code, 1);
    assert!(stderr.contains(&format!("cannot listen on 127.0.0.1:{} (admin.listen)", ports.admin)), "{stderr}");
}
