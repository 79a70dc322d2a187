//! A publishing client and a receiving client connected in memory on a virtual clock.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use str0m::net::Transmit;

use crate::client::{Counters, MediaClient, Publication};
use crate::media::VideoShape;

const PUBLISHER: &str = "10.20.0.31:40000";
const RECEIVER: &str = "10.20.0.32:40000";

/// Runs both clients for `seconds` of virtual time, every datagram delivered at once.
fn run(publication: Publication, seconds: u64) -> (Counters, Counters) {
    let start = Instant::now();
    let publisher_address: SocketAddr = PUBLISHER.parse().unwrap();
    let receiver_address: SocketAddr = RECEIVER.parse().unwrap();
    let mut publisher = MediaClient::new(1, publisher_address, publication, start).unwrap();
    let mut receiver = MediaClient::new(2, receiver_address, Publication::NOTHING, start).unwrap();
    let offer = publisher.offer(start).unwrap();
    let answer = receiver.accept_offer(&offer).unwrap();
    publisher.accept_answer(&answer).unwrap();
    publisher.set_measuring(true);
    receiver.set_measuring(true);

    let mut now = start;
    while now < start + Duration::from_secs(seconds) {
        let mut to_receiver: VecDeque<Transmit> = VecDeque::new();
        let mut to_publisher: VecDeque<Transmit> = VecDeque::new();
        let mut publisher_due = publisher.poll(&mut |transmit| to_receiver.push_back(transmit));
        let mut receiver_due = receiver.poll(&mut |transmit| to_publisher.push_back(transmit));
        while !to_receiver.is_empty() || !to_publisher.is_empty() {
            // One datagram, then a poll: the order the real driver keeps.
            if let Some(transmit) = to_receiver.pop_front() {
                receiver.handle_datagram(now, transmit.source, transmit.destination, &transmit.contents);
                receiver_due = receiver.poll(&mut |transmit| to_publisher.push_back(transmit));
            }
            if let Some(transmit) = to_publisher.pop_front() {
                publisher.handle_datagram(now, transmit.source, transmit.destination, &transmit.contents);
                publisher_due = publisher.poll(&mut |transmit| to_receiver.push_back(transmit));
            }
        }
        now = publisher_due.min(receiver_due).max(now + Duration::from_millis(1));
        publisher.handle_timeout(now);
        receiver.handle_timeout(now);
    }
    (publisher.into_counters(), receiver.into_counters())
}

#[test]
fn a_receiver_gets_every_packet_the_publisher_sends() {
    let publication = Publication {
        video: Some(VideoShape::P360),
        simulcast: false,
        highest_first: false,
        audio_bitrate: Some(32_000),
    };
    let (sent, received) = run(publication, 4);
    assert_eq!(received.streams.len(), 2, "audio and video");
    let video = received.streams.iter().find(|stream| stream.video).expect("video");
    let audio = received.streams.iter().find(|stream| !stream.video).expect("audio");
    // Media starts once DTLS is up, well within the first second of virtual time.
    assert!(sent.sent_video > 200 && sent.sent_audio > 100, "{sent:?}");
    assert_eq!(video.packets, sent.sent_video);
    assert_eq!(audio.packets, sent.sent_audio);
    assert_eq!(video.lost() + audio.lost(), 0);
    assert_eq!(received.latencies.samples.len() as u64, video.packets + audio.packets, "every packet timed");
}

#[test]
fn simulcast_sends_three_layers_with_rids() {
    let publication =
        Publication { video: Some(VideoShape::P360), simulcast: true, highest_first: false, audio_bitrate: None };
    let (sent, received) = run(publication, 3);
    let mut layers: Vec<u64> =
        received.streams.iter().filter(|stream| stream.video).map(|stream| stream.packets).collect();
    layers.sort_unstable();
    assert_eq!(layers.len(), 3, "{:?}", received.streams);
    assert_eq!(layers.iter().sum::<u64>(), sent.sent_video);
    // Quarter and half size fit a frame in one packet; the full layer needs three.
    assert!(layers[2] > 2 * layers[1], "{layers:?}");
}

/// lienthong's server takes the offer's simulcast layers lowest first, as its page lists
/// them; Janus reads the first as the highest.
#[test]
fn simulcast_layers_are_offered_in_the_order_each_server_reads() {
    for (highest_first, order) in [(false, "q;h;f"), (true, "f;h;q")] {
        let publication =
            Publication { video: Some(VideoShape::P360), simulcast: true, highest_first, audio_bitrate: None };
        let address: SocketAddr = PUBLISHER.parse().unwrap();
        let start = Instant::now();
        let offer = MediaClient::new(1, address, publication, start).unwrap().offer(start).unwrap();
        assert!(offer.contains(&format!("a=simulcast:send {order}")), "{offer}");
    }
}
