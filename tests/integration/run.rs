//! `lienthong run`: start, health, reload, shutdown.

use std::time::Duration;

use crate::common::{Instance, Ports, http, run_command, wait_until};

#[test]
fn runs_on_the_built_in_default_and_stops_cleanly_on_sigterm() {
    let instance = Instance::start_default();
    let (status, body) = http(instance.admin, "GET", "/healthz").unwrap();
    assert_eq!(status, 200);
    assert_eq!(body, "dns serving\nmail serving\nconference serving\n");
    // The admin endpoint may answer before the start-up summary has reached our reader.
    let expected =
        ["127.0.0.1:1053 udp+tcp", "127.0.0.1:2525", "127.0.0.1:2587", "127.0.0.1:2465", "http://127.0.0.1:8080/"];
    let _ = wait_until(Duration::from_secs(10), || {
        let stdout = instance.stdout();
        expected.iter().all(|line| stdout.contains(line))
    });
    let stdout = instance.stdout();
    for expected in expected {
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

/// `dig +short` against the instance's DNS port.
fn dig(port: u16, name: &str, record_type: &str) -> String {
    let output = std::process::Command::new("dig")
        .args(["@127.0.0.1", "-p", &port.to_string(), "+short", "+time=2", "+tries=1", name, record_type])
        .output()
        .expect("dig (package bind9-dnsutils; scripts/test.sh installs it)");
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

#[test]
fn sighup_changes_what_dns_answers_without_a_restart() {
    let ports = Ports::new();
    let zone = |address: &str| {
        format!(
            "{}\n[[dns.zone]]\nname = \"ninhthuan.gov.vn\"\nrecords = [\"www 300 IN A {address}\"]\n",
            ports.config(true, false, false)
        )
    };
    let instance = Instance::start(&zone("10.20.0.10"));
    assert_eq!(dig(ports.dns, "www.ninhthuan.gov.vn", "A"), "10.20.0.10");
    let serial_before: u64 =
        dig(ports.dns, "ninhthuan.gov.vn", "SOA").split_whitespace().nth(2).and_then(|s| s.parse().ok()).expect("SOA");
    let pid_before = instance.pid();

    instance.write_config(&zone("10.20.0.11"));
    instance.signal("HUP");
    wait_until(Duration::from_secs(20), || dig(ports.dns, "www.ninhthuan.gov.vn", "A") == "10.20.0.11")
        .unwrap_or_else(|_| panic!("the changed record was not served after SIGHUP:\n{}", instance.stderr()));
    let serial_after: u64 =
        dig(ports.dns, "ninhthuan.gov.vn", "SOA").split_whitespace().nth(2).and_then(|s| s.parse().ok()).expect("SOA");
    assert!(serial_after > serial_before, "SOA serial {serial_before} -> {serial_after} did not increase");
    assert_eq!(instance.pid(), pid_before);
    assert!(instance.stop().success());
}

/// The subject alternative names of the certificate the TLS listener at `port` presents.
fn presented_certificate_names(port: u16) -> String {
    let mut client = std::process::Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{port}"), "-servername", "hub.ninhthuan.gov.vn"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("openssl");
    let mut pem = Vec::new();
    std::io::Read::read_to_end(client.stdout.as_mut().unwrap(), &mut pem).unwrap();
    let _ = client.wait();
    let mut x509 = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-ext", "subjectAltName"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("openssl x509");
    std::io::Write::write_all(x509.stdin.as_mut().unwrap(), &pem).unwrap();
    drop(x509.stdin.take());
    String::from_utf8_lossy(&x509.wait_with_output().unwrap().stdout).into_owned()
}

#[test]
fn sighup_rereads_the_certificate() {
    let ports = Ports::new();
    let base = ports.config(false, true, false).replacen(
        "state_dir = \"state\"\n",
        "state_dir = \"state\"\ntls_cert = \"cert.pem\"\ntls_key = \"key.pem\"\n",
        1,
    );
    let write_pair = |dir: &std::path::Path, name: &str| {
        let pair = rcgen::generate_simple_self_signed(vec![name.to_owned()]).unwrap();
        std::fs::write(dir.join("cert.pem"), pair.cert.pem()).unwrap();
        std::fs::write(dir.join("key.pem"), pair.signing_key.serialize_pem()).unwrap();
    };
    let dir = tempfile::tempdir().unwrap();
    write_pair(dir.path(), "first.ninhthuan.gov.vn");
    // The instance needs the files before it starts: copy them next to its config.
    let instance = {
        let staged = Instance::prepare(&base);
        std::fs::copy(dir.path().join("cert.pem"), staged.path().join("cert.pem")).unwrap();
        std::fs::copy(dir.path().join("key.pem"), staged.path().join("key.pem")).unwrap();
        Instance::launch(staged, &base)
    };
    assert!(presented_certificate_names(ports.submissions).contains("first.ninhthuan.gov.vn"));

    write_pair(instance.dir.path(), "second.ninhthuan.gov.vn");
    instance.signal("HUP");
    wait_until(Duration::from_secs(20), || {
        presented_certificate_names(ports.submissions).contains("second.ninhthuan.gov.vn")
    })
    .unwrap_or_else(|_| panic!("the renewed certificate was not presented after SIGHUP:\n{}", instance.stderr()));
    assert!(instance.stop().success());
}
