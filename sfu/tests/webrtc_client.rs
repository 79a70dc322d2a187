//! An independent WebRTC implementation (webrtc-rs) joins a room through the real signaling
//! WebSocket: one client publishes Opus, a second one receives the packets through the SFU.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;
use rtc::ice::network_type::NetworkType;
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind};
use serde_json::json;
use tokio::sync::Mutex;
use webrtc::media_stream::MediaStreamTrack;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCConfigurationBuilder,
    RTCIceCandidateInit, RTCSessionDescription, Registry, SettingEngineBuilder, register_default_interceptors,
};
use webrtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};

/// Counts the RTP packets and remembers the payloads a receiving client gets.
#[derive(Clone, Default)]
struct Receiver {
    packets: Arc<AtomicUsize>,
    payloads: Arc<Mutex<Vec<Vec<u8>>>>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Receiver {
    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let receiver = self.clone();
        tokio::spawn(async move {
            while let Some(event) = track.poll().await {
                if let TrackRemoteEvent::OnRtpPacket(packet) = event {
                    receiver.packets.fetch_add(1, Ordering::Relaxed);
                    let mut payloads = receiver.payloads.lock().await;
                    if payloads.len() < 1000 {
                        payloads.push(packet.payload.to_vec());
                    }
                }
            }
        });
    }
}

/// How a test client reaches the media port.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Transport {
    Udp,
    /// ICE-TCP only, as on a network whose firewall blocks UDP.
    TcpOnly,
}

async fn peer_connection(
    handler: Arc<dyn PeerConnectionEventHandler>,
    transport: Transport,
) -> Arc<dyn PeerConnection> {
    let mut media_engine = MediaEngine::default();
    media_engine.register_default_codecs().expect("codecs");
    let registry = register_default_interceptors(Registry::new(), &mut media_engine).expect("interceptors");
    // No ICE servers: nothing but loopback host candidates, as on a network without internet.
    let configuration = RTCConfigurationBuilder::new().build();
    let builder = PeerConnectionBuilder::new()
        .with_configuration(configuration)
        .with_media_engine(media_engine)
        .with_interceptor_registry(registry)
        .with_handler(handler);
    let builder = match transport {
        Transport::Udp => builder.with_udp_addrs(vec!["127.0.0.1:0".to_owned()]),
        Transport::TcpOnly => {
            let settings = SettingEngineBuilder::new().with_network_types(vec![NetworkType::Tcp4]).build();
            builder
                .with_setting_engine(settings)
                .with_tcp_addrs(vec!["127.0.0.1:0".to_owned()])
                .with_udp_addrs(Vec::<String>::new())
        }
    };
    let connection = builder.build().await.expect("peer connection");
    Arc::new(connection)
}

/// Offers our tracks to the SFU and applies its answer.
async fn offer(socket: &mut Socket, connection: &Arc<dyn PeerConnection>) -> String {
    let offer = connection.create_offer(None).await.expect("offer");
    connection.set_local_description(offer).await.expect("local offer");
    let sdp = connection.local_description().await.expect("local description").sdp;
    send(socket, json!({"type": "offer", "sdp": sdp})).await;
    let answer = receive_type(socket, "answer").await;
    let answer = answer["sdp"].as_str().expect("answer SDP").to_owned();
    connection.set_remote_description(RTCSessionDescription::answer(answer.clone()).unwrap()).await.expect("answer");
    // webrtc-rs opens ICE-TCP connections only to passive candidates given through
    // add_ice_candidate, not to those in the SDP (browsers use both), so hand them over.
    for line in answer.lines().filter(|line| line.starts_with("a=candidate:") && line.contains(" tcp ")) {
        let candidate = RTCIceCandidateInit {
            candidate: line.trim_start_matches("a=").to_owned(),
            sdp_mid: Some("0".to_owned()),
            sdp_mline_index: Some(0),
            ..Default::default()
        };
        connection.add_ice_candidate(candidate).await.expect("TCP candidate");
    }
    answer
}

/// Answers the SFU's offer (it offers the other participants' tracks).
async fn answer_server_offer(socket: &mut Socket, connection: &Arc<dyn PeerConnection>) {
    let offer = receive_type(socket, "offer").await;
    let sdp = offer["sdp"].as_str().expect("offer SDP").to_owned();
    connection.set_remote_description(RTCSessionDescription::offer(sdp).unwrap()).await.expect("remote offer");
    let answer = connection.create_answer(None).await.expect("answer");
    connection.set_local_description(answer).await.expect("local answer");
    let sdp = connection.local_description().await.expect("local description").sdp;
    send(socket, json!({"type": "answer", "sdp": sdp})).await;
}

fn opus_payload_type(sdp: &str) -> u8 {
    sdp.lines()
        .find_map(|line| {
            let rest = line.strip_prefix("a=rtpmap:")?;
            let (payload_type, codec) = rest.split_once(' ')?;
            codec.to_ascii_lowercase().starts_with("opus/").then(|| payload_type.parse().ok())?
        })
        .expect("Opus in the answer")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webrtc_rs_client_publishes_and_another_receives_through_the_sfu() {
    publish_and_receive(Transport::Udp, Transport::Udp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_flows_over_ice_tcp_when_udp_is_blocked() {
    publish_and_receive(Transport::TcpOnly, Transport::TcpOnly).await;
}

async fn publish_and_receive(publisher_transport: Transport, receiver_transport: Transport) {
    let service = start(ROOMS).await;

    // Publisher: Huyện A sends Opus packets.
    let mut publisher_socket = connect(&service).await;
    assert_eq!(join(&mut publisher_socket, "giao-ban", "Huyện A", "246810").await["type"], "welcome");
    let publisher = peer_connection(Arc::new(Receiver::default()), publisher_transport).await;
    let ssrc = 0x4c54_0001;
    let track = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
        "huyen-a".to_owned(),
        "huyen-a-microphone".to_owned(),
        "microphone".to_owned(),
        RtpCodecKind::Audio,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters { ssrc: Some(ssrc), ..Default::default() },
            codec: RTCRtpCodec {
                mime_type: "audio/opus".to_owned(),
                clock_rate: 48000,
                channels: 2,
                sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
                rtcp_feedback: vec![],
            },
            ..Default::default()
        }],
    )));
    publisher.add_track(track.clone() as Arc<dyn TrackLocal>).await.expect("add track");
    let answer = offer(&mut publisher_socket, &publisher).await;
    let payload_type = opus_payload_type(&answer);

    // Receiver: UBND tỉnh joins with nothing to send and is offered Huyện A's track.
    let mut receiver_socket = connect(&service).await;
    let welcome = join(&mut receiver_socket, "giao-ban", "UBND tỉnh", "135790").await;
    assert_eq!(welcome["participants"][0]["site"], "Huyện A");
    let receiver = Receiver::default();
    let receiving = peer_connection(Arc::new(receiver.clone()), receiver_transport).await;
    let init = RTCRtpTransceiverInit { direction: RTCRtpTransceiverDirection::Recvonly, ..Default::default() };
    receiving.add_transceiver_from_kind(RtpCodecKind::Audio, Some(init)).await.expect("transceiver");
    offer(&mut receiver_socket, &receiving).await;
    answer_server_offer(&mut receiver_socket, &receiving).await;

    // Send 20 ms Opus frames until the receiver has 50 of them, for at most 20 seconds.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut sequence: u16 = 1;
    while receiver.packets.load(Ordering::Relaxed) < 50 {
        assert!(Instant::now() < deadline, "only {} packets arrived", receiver.packets.load(Ordering::Relaxed));
        let mut payload = vec![0xfc, 0xff, 0xfe];
        payload.extend_from_slice(&sequence.to_be_bytes());
        let packet = rtp::Packet {
            header: rtp::header::Header {
                version: 2,
                payload_type,
                sequence_number: sequence,
                timestamp: u32::from(sequence) * 960,
                ssrc,
                ..Default::default()
            },
            payload: bytes::Bytes::from(payload),
        };
        // Before ICE and DTLS complete the track is not bound yet; keep trying.
        let _ = track.write_rtp(packet).await;
        sequence = sequence.wrapping_add(1);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The payloads arrive unchanged.
    let payloads = receiver.payloads.lock().await;
    assert!(payloads.iter().all(|payload| payload.len() == 5 && payload[..3] == [0xfc, 0xff, 0xfe]), "{payloads:?}");
    drop(payloads);

    let _ = publisher.close().await;
    let _ = receiving.close().await;
    service.shutdown().await;
}
