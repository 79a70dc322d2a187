//! The admin endpoint's access rules, secrets in config messages, and state file modes,
//! through the real binary.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::time::Duration;

use crate::common::{Instance, Ports, free_port, http, run_command, wait_until};

/// One raw HTTP/1.1 request with the given extra header lines; returns status and body.
fn request(address: SocketAddr, method: &str, path: &str, headers: &[String]) -> (u16, String) {
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(2)).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut text = format!("{method} {path} HTTP/1.1\r\n");
    for header in headers {
        text.push_str(header);
        text.push_str("\r\n");
    }
    text.push_str("Content-Length: 0\r\nConnection: close\r\n\r\n");
    stream.write_all(text.as_bytes()).unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let response = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    (head.split_whitespace().nth(1).and_then(|code| code.parse().ok()).unwrap_or(0), body.to_owned())
}

fn token(instance: &Instance) -> String {
    std::fs::read_to_string(instance.dir.path().join("state/admin.token")).expect("admin token").trim().to_owned()
}

fn reloads_ok(instance: &Instance) -> String {
    let (_, metrics) = http(instance.admin, "GET", "/metrics").unwrap();
    metrics
        .lines()
        .find(|line| line.starts_with("lienthong_config_reloads_total{result=\"ok\"}"))
        .unwrap_or("none")
        .to_owned()
}

#[test]
fn admin_refuses_cross_site_rebound_and_tokenless_requests_and_the_cli_still_works() {
    let ports = Ports::new();
    let instance = Instance::start(&ports.config(false, true, false));
    let admin = instance.admin;
    let token = token(&instance);
    let host = format!("Host: {admin}");
    let bearer = format!("Authorization: Bearer {token}");
    let origin = "Origin: http://evil.example".to_owned();

    // A cross-site POST from a page: refused even with the token (a page cannot have it,
    // but the Origin alone is reason enough), and without it.
    for path in ["/reload", "/queue/flush"] {
        assert_eq!(request(admin, "POST", path, &[host.clone(), origin.clone(), bearer.clone()]).0, 403, "{path}");
        assert_eq!(request(admin, "POST", path, &[host.clone(), origin.clone()]).0, 403, "{path}");
    }
    // DNS rebinding: the page's own name in Host, for reads and writes alike.
    let rebound = format!("Host: rebind.evil.example:{}", admin.port());
    for (method, path) in [("GET", "/queue"), ("GET", "/metrics"), ("POST", "/reload"), ("DELETE", "/queue/x")] {
        assert_eq!(request(admin, method, path, &[rebound.clone(), bearer.clone()]).0, 421, "{method} {path}");
    }
    assert_eq!(request(admin, "GET", "/healthz", &[]).0, 421, "no Host at all");
    // Missing or wrong token.
    let wrong = format!("Authorization: Bearer {}", "0".repeat(64));
    for (method, path) in [("POST", "/reload"), ("POST", "/queue/flush"), ("GET", "/queue"), ("DELETE", "/queue/x")] {
        assert_eq!(request(admin, method, path, std::slice::from_ref(&host)).0, 401, "{method} {path} without token");
        assert_eq!(request(admin, method, path, &[host.clone(), wrong.clone()]).0, 401, "{method} {path} wrong token");
    }
    assert_eq!(reloads_ok(&instance), "none", "a refused request reached the reload");

    // Open to loopback GETs with a proper Host; `localhost` works too.
    assert_eq!(request(admin, "GET", "/metrics", std::slice::from_ref(&host)).0, 200);
    assert_eq!(request(admin, "GET", "/healthz", &[format!("Host: localhost:{}", admin.port())]).0, 200);
    assert_eq!(request(admin, "POST", "/reload", &[host.clone(), bearer.clone()]), (200, "reloaded\n".to_owned()));

    // The CLI reads the token from the config's state_dir.
    let config = instance.config_path();
    let config = config.to_str().unwrap();
    let (code, stdout, stderr) = run_command(instance.dir.path(), &["reload", "--config", config], "");
    assert_eq!((code, stdout.as_str()), (0, "reloaded\n"), "{stderr}");
    let (code, stdout, stderr) = run_command(instance.dir.path(), &["queue", "list", "--config", config], "");
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("the queue is empty"), "{stdout}");
    let (code, stdout, stderr) = run_command(instance.dir.path(), &["queue", "flush", "--config", config], "");
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("scheduled for delivery"), "{stdout}");
    assert_eq!(reloads_ok(&instance), "lienthong_config_reloads_total{result=\"ok\"} 2");

    assert!(instance.stop().success());
}

#[test]
fn a_secret_typed_as_a_number_stays_out_of_check_the_reload_log_and_the_reply() {
    let ports = Ports::new();
    let room = |pin: &str| {
        format!(
            "\n[[conference.room]]\nname = \"giao-ban\"\npin = {pin}\nchair_pin = \"135790\"\nsites = [\"UBND tỉnh\"]\n"
        )
    };
    let good = format!("{}{}", ports.config(false, false, false), room("\"975310\""));
    let broken = format!("{}{}", ports.config(false, false, false), room("246810"));
    let instance = Instance::start(&good);

    std::fs::write(instance.dir.path().join("broken.toml"), &broken).unwrap();
    let (code, _, stderr) = run_command(instance.dir.path(), &["check", "--config", "broken.toml"], "");
    assert_eq!(code, 2);
    assert!(stderr.contains("conference.room[0].pin: invalid type: integer"), "{stderr}");
    assert!(!stderr.contains("246810"), "check printed the PIN: {stderr}");

    instance.write_config(&broken);
    let (status, reply) = request(
        instance.admin,
        "POST",
        "/reload",
        &[format!("Host: {}", instance.admin), format!("Authorization: Bearer {}", token(&instance))],
    );
    assert_eq!(status, 422, "{reply}");
    assert!(reply.contains("conference.room[0].pin"), "{reply}");
    assert!(!reply.contains("246810"), "the reload reply showed the PIN: {reply}");
    let config = instance.config_path();
    let (code, _, stderr) = run_command(instance.dir.path(), &["reload", "--config", config.to_str().unwrap()], "");
    assert_ne!(code, 0);
    assert!(!stderr.contains("246810"), "lienthong reload printed the PIN: {stderr}");
    instance.signal("HUP");
    wait_until(Duration::from_secs(20), || instance.stderr().matches("reload refused").count() >= 2)
        .unwrap_or_else(|_| panic!("no refused SIGHUP reload in the log:\n{}", instance.stderr()));
    assert!(!instance.stderr().contains("246810"), "the log showed the PIN:\n{}", instance.stderr());
    assert!(instance.stop().success());
}

/// Reads one SMTP reply (all its lines); returns the last line.
fn smtp_reply(reader: &mut BufReader<TcpStream>) -> String {
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).expect("SMTP reply");
        if line.len() < 4 || line.as_bytes()[3] != b'-' {
            return line;
        }
    }
}

fn queue_one_message(mx: SocketAddr) {
    let stream = TcpStream::connect_timeout(&mx, Duration::from_secs(5)).expect("connect MX");
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    assert!(smtp_reply(&mut reader).starts_with("220"));
    for (command, expected) in [
        ("EHLO mailbox.ninhthuan.gov.vn\r\n", "250"),
        ("MAIL FROM:<vanthu@ninhthuan.gov.vn>\r\n", "250"),
        ("RCPT TO:<phongvanthu@example.net>\r\n", "250"),
        ("DATA\r\n", "354"),
        (
            "From: <vanthu@ninhthuan.gov.vn>\r\nTo: <phongvanthu@example.net>\r\nSubject: Giay moi hop\r\n\r\nKinh gui.\r\n.\r\n",
            "250",
        ),
        ("QUIT\r\n", "221"),
    ] {
        writer.write_all(command.as_bytes()).unwrap();
        let reply = smtp_reply(&mut reader);
        assert!(reply.starts_with(expected), "{command:?} got {reply:?}");
    }
}

/// Every directory under (and including) `root` and every file in it, with its mode.
fn modes(root: &Path) -> Vec<(String, bool, u32)> {
    let mut found = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(path) = pending.pop() {
        // The running service may delete a file (a spent journal segment) between the two calls.
        let Ok(metadata) = std::fs::symlink_metadata(&path) else { continue };
        found.push((path.display().to_string(), metadata.is_dir(), metadata.permissions().mode() & 0o7777));
        if metadata.is_dir() {
            for entry in std::fs::read_dir(&path).into_iter().flatten().flatten() {
                pending.push(entry.path());
            }
        }
    }
    found
}

fn assert_owner_only(root: &Path) {
    for (path, is_dir, mode) in modes(root) {
        let expected = if is_dir { 0o700 } else { 0o600 };
        assert_eq!(mode, expected, "{path} has mode {mode:o}, expected {expected:o}");
    }
}

#[test]
fn state_files_are_owner_only_under_umask_022_with_mail_queued() {
    let ports = Ports::new();
    let dead_resolver = free_port();
    let config = ports
        .config(false, true, false)
        .replace("[mail]\n", "[mail]\nrelay_from = [\"127.0.0.1/32\"]\n")
        .replace("[dns]\n", &format!("[dns]\nforwarders = [\"127.0.0.1:{dead_resolver}\"]\n"));
    // State left by an older version: an open directory with a world-readable file in it.
    let dir = Instance::prepare(&config);
    std::fs::create_dir(dir.path().join("state")).unwrap();
    std::fs::write(dir.path().join("state/old-notes.txt"), "x").unwrap();
    for (path, mode) in [("state", 0o755), ("state/old-notes.txt", 0o644)] {
        std::fs::set_permissions(dir.path().join(path), std::fs::Permissions::from_mode(mode)).unwrap();
    }
    let instance = Instance::launch_with_umask(dir, &config, "022");
    queue_one_message(SocketAddr::from(([127, 0, 0, 1], ports.mx)));
    let config_path = instance.config_path();
    let (code, stdout, stderr) =
        run_command(instance.dir.path(), &["queue", "list", "--config", config_path.to_str().unwrap()], "");
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("1 message(s)"), "{stdout}");
    let state = instance.dir.path().join("state");
    for expected in ["admin.token", "lienthong.pid", "tls/self-signed.key", "tls/self-signed.crt", "mail/queue"] {
        assert!(state.join(expected).exists(), "{expected} missing: {:?}", modes(&state));
    }
    assert_owner_only(&state);
    // The umask really was 022: the shell's own witness file is group and world readable.
    let witness = instance.dir.path().join("umask.witness");
    assert_eq!(std::fs::metadata(&witness).unwrap().permissions().mode() & 0o777, 0o644);
    assert!(instance.stop().success());
    assert_owner_only(&state);
}
