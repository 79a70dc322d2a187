use std::sync::Arc;

use super::*;

fn rtc(now: Instant) -> Rtc {
    Rtc::builder().set_crypto_provider(Arc::new(str0m::crypto::from_feature_flags())).set_rtp_mode(true).build(now)
}

/// A browser stand-in (another str0m) that publishes one audio track.
fn browser_offer(now: Instant) -> String {
    let mut browser = rtc(now);
    let mut change = browser.sdp_api();
    change.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
    let (offer, _pending) = change.apply().expect("an offer");
    offer.to_sdp_string()
}

#[test]
fn a_browser_that_never_answers_our_offer_is_cut_off() {
    let start = Instant::now();
    let mut peer = Peer::new(1, rtc(start));
    assert!(peer.accept_offer(&browser_offer(start), None).unwrap().is_some());
    assert!(peer.offer_if_needed(start).is_none(), "nothing to offer yet");

    peer.subscribe(2, Mid::from("0"), MediaKind::Video, MediaSource::Camera);
    assert!(peer.offer_if_needed(start).is_some());
    // While our offer is pending, a crossing browser offer is ignored, not answered.
    assert_eq!(peer.accept_offer(&browser_offer(start), None), Ok(None));

    let mut events = Vec::new();
    peer.poll(start + Duration::from_secs(5), &mut |_| {}, &mut events);
    assert!(!events.iter().any(|event| matches!(event, Propagated::Failed)));
    peer.poll(start + NEGOTIATION_TIMEOUT + Duration::from_secs(1), &mut |_| {}, &mut events);
    assert!(events.iter().any(|event| matches!(event, Propagated::Failed)));
}

/// Runs a browser stand-in (str0m) against a `Peer` in memory, with a virtual clock,
/// until `done` says so or 10 virtual seconds pass. Returns the peer's events and the
/// virtual time reached.
fn run_in_memory(
    browser: &mut Rtc,
    peer: &mut Peer,
    start: Instant,
    mut done: impl FnMut(&[Propagated]) -> bool,
) -> (Vec<Propagated>, Instant) {
    let mut now = start;
    let mut events = Vec::new();
    while now < start + Duration::from_secs(10) && !done(&events) {
        let mut browser_due = now + Duration::from_millis(50);
        loop {
            match browser.poll_output().expect("browser output") {
                Output::Timeout(at) => {
                    browser_due = browser_due.min(at);
                    break;
                }
                Output::Transmit(packet) => {
                    let contents = (&*packet.contents).try_into().expect("a datagram");
                    let receive = str0m::net::Receive {
                        proto: packet.proto,
                        source: packet.source,
                        destination: packet.destination,
                        contents,
                    };
                    peer.handle_input(Input::Receive(now, receive));
                }
                Output::Event(_) => {}
            }
        }
        let peer_due = peer.poll(
            now,
            &mut |packet| {
                let contents = (&*packet.contents).try_into().expect("a datagram");
                let receive = str0m::net::Receive {
                    proto: packet.proto,
                    source: packet.source,
                    destination: packet.destination,
                    contents,
                };
                browser.handle_input(Input::Receive(now, receive)).expect("browser input");
            },
            &mut events,
        );
        now = browser_due.min(peer_due).max(now + Duration::from_millis(1));
        browser.handle_input(Input::Timeout(now)).expect("browser timeout");
        peer.handle_input(Input::Timeout(now));
    }
    (events, now)
}

#[test]
fn a_participant_publishes_at_most_four_tracks() {
    let start = Instant::now();
    let mut browser = rtc(start);
    browser.add_local_candidate(str0m::Candidate::host("10.30.1.7:50000".parse().unwrap(), "udp").unwrap());
    let mut change = browser.sdp_api();
    for _ in 0..10 {
        change.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
    }
    let (offer, pending) = change.apply().expect("an offer");

    let mut server = rtc(start);
    server.add_local_candidate(str0m::Candidate::host("10.20.0.5:10000".parse().unwrap(), "udp").unwrap());
    let mut peer = Peer::new(1, server);
    let answer = peer.accept_offer(&offer.to_sdp_string(), None).unwrap().expect("an answer");
    browser.sdp_api().accept_answer(pending, SdpAnswer::from_sdp_string(&answer).unwrap()).unwrap();

    let (events, now) = run_in_memory(&mut browser, &mut peer, start, |events| {
        events.iter().filter(|event| matches!(event, Propagated::TrackOpened { .. })).count() >= MAX_PUBLISHED_TRACKS
    });
    // Run on: nothing beyond the limit may show up later.
    let (later, _) = run_in_memory(&mut browser, &mut peer, now, |_| false);
    assert!(browser.is_connected(), "the in-memory connection did not come up");
    let events: Vec<Propagated> = events.into_iter().chain(later).collect();
    let opened = events.iter().filter(|event| matches!(event, Propagated::TrackOpened { .. })).count();
    assert_eq!(opened, MAX_PUBLISHED_TRACKS);
    assert_eq!(peer.published().len(), MAX_PUBLISHED_TRACKS);
}

#[test]
fn garbage_sdp_is_an_error_not_a_panic() {
    let start = Instant::now();
    let mut peer = Peer::new(1, rtc(start));
    assert!(peer.accept_offer("v=0\r\nnonsense", None).is_err());
    assert!(peer.accept_answer("v=0").is_ok(), "an answer without our offer is ignored");
}
