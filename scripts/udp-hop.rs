// The cost of the relay's extra hop: one sendto from a relay socket plus one recvfrom on the
// media socket, for a 1000-byte datagram on loopback.
use std::net::UdpSocket;
use std::time::Instant;
fn cpu() -> f64 {
    let text = std::fs::read_to_string("/proc/self/stat").unwrap();
    let fields: Vec<&str> = text.rsplit_once(')').unwrap().1.split_whitespace().collect();
    (fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap()) / 100.0
}
fn main() {
    let relay = UdpSocket::bind("127.0.0.1:0").unwrap();
    let media = UdpSocket::bind("127.0.0.1:0").unwrap();
    let target = media.local_addr().unwrap();
    let payload = [7u8; 1000];
    let mut buffer = [0u8; 2048];
    let rounds = 400_000;
    let (start_cpu, start) = (cpu(), Instant::now());
    for _ in 0..rounds {
        relay.send_to(&payload, target).unwrap();
        media.recv_from(&mut buffer).unwrap();
    }
    let (used, elapsed) = (cpu() - start_cpu, start.elapsed().as_secs_f64());
    println!("{rounds} hops: {:.2} µs CPU per hop ({:.2} µs wall)", used * 1e6 / rounds as f64, elapsed * 1e6 / rounds as f64);
}
