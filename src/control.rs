//! Commands that act on the running instance through its loopback admin endpoint:
//! `reload` and `queue ...`. A tiny HTTP/1.1 client is enough for one loopback request; it
//! presents the admin token from the config's `server.state_dir`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use lienthong_config::Config;

pub fn reload(config: &Config) -> anyhow::Result<ExitCode> {
    print_reply(request(config, "POST", "/reload")?)
}

pub fn queue_list(config: &Config) -> anyhow::Result<ExitCode> {
    let (status, body) = request(config, "GET", "/queue")?;
    if status != 200 {
        return print_reply((status, body));
    }
    let entries: Vec<serde_json::Value> = serde_json::from_str(&body).context("reading the queue listing")?;
    if entries.is_empty() {
        println!("the queue is empty");
        return Ok(ExitCode::SUCCESS);
    }
    println!("{:<26} {:>9} {:>8}  {:<32} RECIPIENTS / LAST ERROR", "ID", "SIZE", "TRIES", "SENDER");
    for entry in &entries {
        let recipients: Vec<&str> = entry["recipients"]
            .as_array()
            .map(|list| list.iter().filter_map(|value| value.as_str()).collect())
            .unwrap_or_default();
        let sender = entry["sender"].as_str().unwrap_or("");
        println!(
            "{:<26} {:>9} {:>8}  {:<32} {}",
            entry["id"].as_str().unwrap_or("?"),
            entry["size"].as_u64().unwrap_or(0),
            entry["attempts"].as_u64().unwrap_or(0),
            if sender.is_empty() { "<>" } else { sender },
            recipients.join(", ")
        );
        if let Some(error) = entry["last_error"].as_str() {
            println!("{:<26} {:>9} {:>8}  {:<32} {error}", "", "", "", "");
        }
    }
    println!("{} message(s)", entries.len());
    Ok(ExitCode::SUCCESS)
}

pub fn queue_show(config: &Config, id: &str) -> anyhow::Result<ExitCode> {
    print_reply(request(config, "GET", &format!("/queue/{}", path_segment(id)?))?)
}

pub fn queue_flush(config: &Config, id: Option<&str>) -> anyhow::Result<ExitCode> {
    let path = match id {
        Some(id) => format!("/queue/{}/flush", path_segment(id)?),
        None => "/queue/flush".to_owned(),
    };
    print_reply(request(config, "POST", &path)?)
}

pub fn queue_remove(config: &Config, id: &str) -> anyhow::Result<ExitCode> {
    print_reply(request(config, "DELETE", &format!("/queue/{}", path_segment(id)?))?)
}

pub fn dkim_rotate(config: &Config, domain: &str) -> anyhow::Result<ExitCode> {
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    if domain.is_empty() || !domain.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.') {
        anyhow::bail!("`{domain}` is not a domain name (expected one of [[mail.domain]] name)");
    }
    print_reply(request(config, "POST", &format!("/mail/dkim/{domain}/rotate"))?)
}

/// Reads the audit files in `state_dir` directly (the instance need not be running).
pub fn mail_trace(config: &Config, needle: String, since: Option<String>) -> anyhow::Result<ExitCode> {
    use lienthong_mailrelay::audit;
    if let Some(since) = &since
        && !audit::is_day(since)
    {
        anyhow::bail!("--since {since}: expected a UTC day as YYYY-MM-DD");
    }
    let directory = audit::directory(&config.server.state_dir);
    let query = audit::TraceQuery { needle, since };
    let text = audit::trace(&directory, &query)
        .with_context(|| format!("reading the mail audit log in {}", directory.display()))?;
    if text.is_empty() {
        eprintln!("no accepted message matches {} in {}", query.needle.escape_debug(), directory.display());
        return Ok(ExitCode::FAILURE);
    }
    print!("{text}");
    Ok(ExitCode::SUCCESS)
}

fn path_segment(id: &str) -> anyhow::Result<&str> {
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.') {
        anyhow::bail!("`{id}` is not a queue id (expected the ID column of `lienthong queue list`)");
    }
    Ok(id)
}

fn print_reply((status, body): (u16, String)) -> anyhow::Result<ExitCode> {
    if (200..300).contains(&status) {
        print!("{body}");
        Ok(ExitCode::SUCCESS)
    } else {
        eprint!("{body}");
        Ok(ExitCode::FAILURE)
    }
}

/// One request to the admin endpoint named in the config; returns status and body.
fn request(config: &Config, method: &str, path: &str) -> anyhow::Result<(u16, String)> {
    let address = config.admin.listen;
    let token = crate::admin_access::read_token(&config.server.state_dir)?;
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(5)).with_context(|| {
        format!("cannot reach the running lienthong at {address} (admin.listen); is it running with this config?")
    })?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {token}\r\nContent-Length: 0\r\n\
         Connection: close\r\n\r\n"
    )?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).context("reading the admin endpoint's reply")?;
    let response = String::from_utf8_lossy(&response);
    let (head, body) = response.split_once("\r\n\r\n").context("malformed reply from the admin endpoint")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .context("malformed status line from the admin endpoint")?;
    let chunked = head.lines().any(|line| line.to_ascii_lowercase().starts_with("transfer-encoding: chunked"));
    let body = if chunked { dechunk(body) } else { body.to_owned() };
    Ok((status, body))
}

/// Decodes a chunked body (axum streams some replies that way).
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size_line, rest)) = body.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size_line.trim(), 16) else {
            break;
        };
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].strip_prefix("\r\n").unwrap_or(&rest[size..]);
    }
    out
}
