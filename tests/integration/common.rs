//! Starting and stopping the real `lienthong` binary for integration tests.
//!
//! Every instance runs in its own temporary directory, is polled for readiness (never slept
//! for), and is killed by PID when the test ends, even when it panics.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub const BINARY: &str = env!("CARGO_BIN_EXE_lienthong");

/// A running `lienthong run`.
pub struct Instance {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub admin: SocketAddr,
}

impl Instance {
    /// Writes `config` to `lienthong.toml` in a fresh directory and runs it; returns once
    /// `/healthz` answers 200.
    pub fn start(config: &str) -> Self {
        Self::launch(Self::prepare(config), config)
    }

    /// A fresh directory holding `lienthong.toml`, for tests that add files before starting.
    pub fn prepare(config: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("lienthong.toml"), config).expect("write config");
        dir
    }

    /// Runs `lienthong run --config lienthong.toml` in a directory from [`Instance::prepare`].
    pub fn launch(dir: tempfile::TempDir, config: &str) -> Self {
        let admin = admin_address(config);
        let child = spawn(dir.path(), &["run", "--config", "lienthong.toml"]);
        Self::ready(child, dir, admin)
    }

    /// Like [`Instance::launch`], with the process's umask set first (e.g. `022`, the usual
    /// default outside systemd); the shell leaves `umask.witness` created under that umask.
    pub fn launch_with_umask(dir: tempfile::TempDir, config: &str, umask: &str) -> Self {
        let admin = admin_address(config);
        let script = format!("umask {umask} && : > umask.witness && exec \"$0\" run --config lienthong.toml");
        let child = spawn_program(dir.path(), "sh", &["-c", &script, BINARY]);
        Self::ready(child, dir, admin)
    }

    /// Runs on the built-in default config (no `--config`), in a fresh directory.
    pub fn start_default() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let child = spawn(dir.path(), &["run"]);
        Self::ready(child, dir, "127.0.0.1:9090".parse().unwrap())
    }

    fn ready(child: Child, dir: tempfile::TempDir, admin: SocketAddr) -> Self {
        let mut instance = Self { child: Some(child), dir, admin };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = instance.child.as_mut().unwrap().try_wait().expect("try_wait") {
                panic!("lienthong exited early with {status}:\n{}", instance.stderr());
            }
            if let Ok((200, _)) = http(admin, "GET", "/healthz") {
                return instance;
            }
            assert!(Instant::now() < deadline, "lienthong not healthy within 60 s:\n{}", instance.stderr());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Sends a signal by name (`HUP`, `TERM`, `KILL`).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill").arg(format!("-{name}")).arg(self.pid().to_string()).status().expect("kill");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Replaces the config file (the next SIGHUP or reload reads it).
    pub fn write_config(&self, config: &str) {
        std::fs::write(self.dir.path().join("lienthong.toml"), config).expect("write config");
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("lienthong.toml")
    }

    /// Everything the instance logged so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    pub fn stdout(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stdout.log")).unwrap_or_default()
    }

    /// Waits until the log contains `needle` (bounded).
    pub fn wait_for_log(&self, needle: &str) {
        wait_until(Duration::from_secs(30), || self.stderr().contains(needle))
            .unwrap_or_else(|_| panic!("log never showed {needle:?}:\n{}", self.stderr()));
    }

    /// SIGTERM, then waits (bounded) for the exit status.
    pub fn stop(mut self) -> ExitStatus {
        self.signal("TERM");
        let mut child = self.child.take().expect("running");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("lienthong did not stop within 30 s of SIGTERM:\n{}", self.stderr());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn spawn(dir: &Path, args: &[&str]) -> Child {
    spawn_program(dir, BINARY, args)
}

fn spawn_program(dir: &Path, program: &str, args: &[&str]) -> Child {
    let stdout = std::fs::File::create(dir.join("stdout.log")).expect("stdout log");
    let stderr = std::fs::File::create(dir.join("stderr.log")).expect("stderr log");
    Command::new(program)
        .args(args)
        .current_dir(dir)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .expect("spawn lienthong")
}

/// The `[admin] listen` value of a config text (default 127.0.0.1:9090).
fn admin_address(config: &str) -> SocketAddr {
    let mut in_admin = false;
    for line in config.lines().map(str::trim) {
        if line.starts_with('[') {
            in_admin = line == "[admin]";
        } else if in_admin && line.starts_with("listen") {
            let value = line.split('"').nth(1).expect("quoted admin.listen");
            return value.parse().expect("admin.listen address");
        }
    }
    "127.0.0.1:9090".parse().unwrap()
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

/// Polls `condition` every 50 ms until it holds or `limit` passes.
pub fn wait_until(limit: Duration, mut condition: impl FnMut() -> bool) -> Result<(), ()> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if condition() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(())
}

/// One HTTP/1.1 request with `Connection: close`; returns status and body.
pub fn http(address: SocketAddr, method: &str, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(stream, "{method} {path} HTTP/1.1\r\nHost: {address}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let response = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head.split_whitespace().nth(1).and_then(|code| code.parse().ok()).unwrap_or(0);
    Ok((status, body.to_owned()))
}

/// Runs the binary to completion with `stdin`; returns exit code, stdout, stderr.
pub fn run_command(dir: &Path, args: &[&str], stdin: &str) -> (i32, String, String) {
    let mut child = Command::new(BINARY)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn lienthong");
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).expect("stdin");
    let output = child.wait_with_output().expect("wait");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A config with every listener on its own free loopback port and each service switched
/// on or off. Tests add tables after it.
pub struct Ports {
    pub admin: u16,
    pub dns: u16,
    pub mx: u16,
    pub submission: u16,
    pub submissions: u16,
    pub conference: u16,
    pub media: u16,
}

impl Ports {
    pub fn new() -> Self {
        Self {
            admin: free_port(),
            dns: free_port(),
            mx: free_port(),
            submission: free_port(),
            submissions: free_port(),
            conference: free_port(),
            media: free_port(),
        }
    }

    /// The base config: `[server]`, `[admin]` and the three service tables.
    pub fn config(&self, dns: bool, mail: bool, conference: bool) -> String {
        format!(
            r#"[server]
hostname = "hub.ninhthuan.gov.vn"
addresses = ["127.0.0.1"]
state_dir = "state"

[admin]
listen = "127.0.0.1:{admin}"

[dns]
enabled = {dns}
listen = ["127.0.0.1:{dns_port}"]

[mail]
enabled = {mail}
mx_listen = "127.0.0.1:{mx}"
submission_listen = "127.0.0.1:{submission}"
submissions_listen = "127.0.0.1:{submissions}"
# No DNS for SPF/DKIM/DMARC lookups here (mailrelay/tests/sender_checks.rs has one).
check_senders = false

[conference]
enabled = {conference}
listen = "127.0.0.1:{conference_port}"
media_port = {media}
"#,
            admin = self.admin,
            dns_port = self.dns,
            mx = self.mx,
            submission = self.submission,
            submissions = self.submissions,
            conference_port = self.conference,
            media = self.media,
        )
    }
}
