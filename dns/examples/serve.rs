//! Runs only the DNS service from a config file, for benchmarks and manual testing:
//! `cargo run --release -p lienthong-dns --example serve -- lienthong.toml`.
//! Stops on Ctrl-C or SIGTERM.

use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args().nth(1).ok_or("usage: serve CONFIG")?;
    let config = lienthong_config::load(std::path::Path::new(&path)).map_err(|errors| errors.to_string())?;
    let service = lienthong_dns::DnsService::start(Arc::new(config), Vec::new()).await?;
    for address in service.local_addresses() {
        println!("serving DNS on {address}");
    }
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    service.shutdown().await;
    Ok(())
}
