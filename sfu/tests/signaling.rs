//! The signaling WebSocket over real sockets: joins, refusals, chair powers, validation and
//! reload.

mod common;

use common::*;
use futures_util::SinkExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn join_refusals_are_clear_and_the_connection_stays_usable() {
    let service = start(ROOMS).await;
    let mut socket = connect(&service).await;
    for (room, site, pin, reason) in [
        ("khong-co", "Huyện A", "246810", "unknown_room"),
        ("giao-ban", "Huyện A", "000000", "wrong_pin"),
        ("giao-ban", "Huyện Z", "246810", "unknown_site"),
    ] {
        let answer = join(&mut socket, room, site, pin).await;
        assert_eq!(answer["type"], "refused");
        assert_eq!(answer["reason"], reason);
    }
    let welcome = join(&mut socket, "giao-ban", "Huyện A", "246810").await;
    assert_eq!(welcome["type"], "welcome");
    assert_eq!(welcome["role"], "participant");
    assert_eq!(welcome["v"], 1);
    service.shutdown().await;
}

#[tokio::test]
async fn repeated_wrong_pins_close_the_connection() {
    let service = start(ROOMS).await;
    let mut socket = connect(&service).await;
    for _ in 0..5 {
        assert_eq!(join(&mut socket, "giao-ban", "Huyện A", "000000").await["reason"], "wrong_pin");
    }
    let (_, reason) = closed(&mut socket).await;
    assert_eq!(reason, "too many wrong PINs");
    service.shutdown().await;
}

#[tokio::test]
async fn an_address_guessing_pins_is_stopped_across_connections() {
    let service = start(ROOMS).await;
    for _ in 0..4 {
        let mut socket = connect(&service).await;
        for _ in 0..5 {
            assert_eq!(join(&mut socket, "giao-ban", "Huyện A", "000000").await["reason"], "wrong_pin");
        }
        closed(&mut socket).await;
    }
    // Even the right PIN is refused from this address now.
    let mut socket = connect(&service).await;
    assert_eq!(join(&mut socket, "giao-ban", "Huyện A", "246810").await["reason"], "too_many_attempts");
    service.shutdown().await;
}

/// The browser's network vanished without a TCP reset, so it answers no pings. Real time:
/// the server pings every 15 s and gives up after 45 s of silence, so this takes about 60 s.
#[tokio::test]
async fn a_silent_connection_is_closed_and_its_participant_leaves() {
    let service = start(ROOMS).await;
    let mut watcher = connect(&service).await;
    assert_eq!(join(&mut watcher, "giao-ban", "UBND tỉnh", "135790").await["type"], "welcome");
    let mut silent = connect(&service).await;
    let silent_id = join(&mut silent, "giao-ban", "Huyện A", "246810").await["you"].clone();
    assert_eq!(receive(&mut watcher).await["type"], "joined");

    // The watcher keeps reading, which answers pings; the silent one reads nothing.
    let started = std::time::Instant::now();
    let left = tokio::time::timeout(std::time::Duration::from_secs(90), async {
        loop {
            match futures_util::StreamExt::next(&mut watcher).await {
                Some(Ok(Message::Text(text))) if text.contains("\"left\"") => return text.to_string(),
                Some(Ok(_)) => {}
                other => panic!("watcher connection ended: {other:?}"),
            }
        }
    })
    .await
    .expect("the silent participant leaves within 90 s");
    assert!(started.elapsed() >= std::time::Duration::from_secs(40), "closed too early");
    assert!(left.contains(&format!("\"participant\":{silent_id}")), "{left}");
    // Its socket is closed (with code 1001 if the close frame gets through before the reset).
    let (code, _) = closed(&mut silent).await;
    assert!(code == 1001 || code == 0, "{code}");
    service.shutdown().await;
}

#[tokio::test]
async fn malformed_and_oversized_messages_close_with_a_reason() {
    let service = start(ROOMS).await;
    let mut socket = connect(&service).await;
    socket.send(Message::Text("{\"type\":\"explode\"}".into())).await.unwrap();
    let (code, reason) = closed(&mut socket).await;
    assert_eq!(code, 1008);
    assert!(reason.starts_with("malformed message"), "{reason}");

    let mut socket = connect(&service).await;
    let huge =
        json!({"type": "answer", "sdp": "a".repeat(lienthong_sfu::protocol::MAX_MESSAGE_BYTES + 1024)}).to_string();
    socket.send(Message::Text(huge.into())).await.unwrap();
    let (code, reason) = closed(&mut socket).await;
    assert_eq!(code, 1009);
    assert!(reason.contains("too large"), "{reason}");

    let mut socket = connect(&service).await;
    socket.send(Message::Binary(vec![1, 2, 3].into())).await.unwrap();
    assert_eq!(closed(&mut socket).await.0, 1008);

    // A flood is cut off.
    let mut socket = connect(&service).await;
    assert_eq!(join(&mut socket, "giao-ban", "Huyện B", "246810").await["type"], "welcome");
    for _ in 0..150 {
        let media = json!({"type": "media", "microphone": true, "camera": false, "screen": false});
        if socket.send(Message::Text(media.to_string().into())).await.is_err() {
            break;
        }
    }
    assert_eq!(closed(&mut socket).await, (1008, "too many messages".to_owned()));

    // The service is unharmed.
    let mut socket = connect(&service).await;
    assert_eq!(join(&mut socket, "giao-ban", "Huyện A", "246810").await["type"], "welcome");
    assert!(service.is_serving());
    service.shutdown().await;
}

#[tokio::test]
async fn chair_powers_are_enforced_and_rooms_are_isolated() {
    let service = start(ROOMS).await;
    let mut chair = connect(&service).await;
    let chair_id = join(&mut chair, "giao-ban", "UBND tỉnh", "135790").await["you"].as_u64().unwrap();
    let mut district = connect(&service).await;
    let district_id = join(&mut district, "giao-ban", "Huyện A", "246810").await["you"].as_u64().unwrap();
    assert_eq!(receive(&mut chair).await["type"], "joined");
    let mut other_room = connect(&service).await;
    let other_id = join(&mut other_room, "hop-khan", "Huyện A", "111111").await["you"].as_u64().unwrap();

    // A participant cannot mute the chair.
    send(&mut district, json!({"type": "mute", "participant": chair_id})).await;
    let answer = receive(&mut district).await;
    assert_eq!((answer["type"].as_str(), answer["reason"].as_str()), (Some("refused"), Some("not_chair")));

    // The chair cannot reach into another room.
    send(&mut chair, json!({"type": "mute", "participant": other_id})).await;
    assert_eq!(receive(&mut chair).await["reason"], "unknown_participant");

    // The chair mutes the district: it is told, and everyone sees it.
    send(&mut chair, json!({"type": "mute", "participant": district_id})).await;
    assert_eq!(
        receive_type(&mut district, "forced").await,
        json!({"type": "forced", "microphone": false, "camera": true})
    );
    let updated = receive_type(&mut chair, "updated").await;
    assert_eq!(updated["participant"]["microphone"], false);

    // Lock: newcomers are refused, and the room list says so.
    send(&mut chair, json!({"type": "lock", "locked": true})).await;
    assert_eq!(receive_type(&mut chair, "room").await["locked"], true);
    let mut late = connect(&service).await;
    assert_eq!(join(&mut late, "giao-ban", "Huyện B", "246810").await["reason"], "locked");

    // Remove: the district is told why and its connection closes.
    send(&mut chair, json!({"type": "remove", "participant": district_id})).await;
    assert_eq!(receive_type(&mut district, "ended").await["reason"], "removed");
    closed(&mut district).await;
    assert_eq!(receive_type(&mut chair, "left").await["participant"], district_id);

    // The other room heard none of it.
    send(&mut other_room, json!({"type": "leave"})).await;
    let mut saw = Vec::new();
    while let Ok(Some(Ok(Message::Text(text)))) =
        tokio::time::timeout(std::time::Duration::from_millis(300), futures_util::StreamExt::next(&mut other_room))
            .await
    {
        saw.push(text.to_string());
    }
    assert!(saw.is_empty(), "{saw:?}");
    service.shutdown().await;
}

#[tokio::test]
async fn reload_closes_removed_rooms_opens_new_ones_and_changes_pins() {
    let service = start(ROOMS).await;
    let mut in_closed_room = connect(&service).await;
    assert_eq!(join(&mut in_closed_room, "hop-khan", "Huyện A", "111111").await["type"], "welcome");
    let mut stays = connect(&service).await;
    assert_eq!(join(&mut stays, "giao-ban", "Huyện A", "246810").await["type"], "welcome");

    let new_rooms = r#"
[[conference.room]]
name = "giao-ban"
title = "Họp giao ban UBND tỉnh"
pin = "999999"
chair_pin = "135790"
sites = ["UBND tỉnh", "Huyện A", "Huyện B"]

[[conference.room]]
name = "tiep-dan"
title = "Tiếp dân"
pin = "333333"
chair_pin = "444444"
sites = ["UBND tỉnh"]
"#;
    service.reload(config(new_rooms)).await.unwrap();
    let ended = receive_type(&mut in_closed_room, "ended").await;
    assert_eq!(ended["reason"], "room_closed");
    closed(&mut in_closed_room).await;

    let mut newcomer = connect(&service).await;
    assert_eq!(join(&mut newcomer, "giao-ban", "Huyện B", "246810").await["reason"], "wrong_pin");
    assert_eq!(join(&mut newcomer, "giao-ban", "Huyện B", "999999").await["type"], "welcome");
    let mut visitor = connect(&service).await;
    assert_eq!(join(&mut visitor, "tiep-dan", "UBND tỉnh", "333333").await["type"], "welcome");
    // The participant already in giao-ban was not disturbed.
    assert_eq!(receive(&mut stays).await["type"], "joined");

    let address = service.page_address().unwrap();
    let body = http_get(address, "/api/rooms").await;
    assert!(body.contains("tiep-dan") && !body.contains("hop-khan"), "{body}");
    service.shutdown().await;
}

#[tokio::test]
async fn pages_are_served_without_external_resources() {
    let service = start(ROOMS).await;
    let address = service.page_address().unwrap();
    for path in [
        "/",
        "/r/giao-ban",
        "/assets/room.js",
        "/assets/view.js",
        "/assets/i18n.js",
        "/assets/index.js",
        "/assets/style.css",
    ] {
        let body = http_get(address, path).await;
        assert!(body.starts_with("HTTP/1.1 200"), "{path}: {body}");
        assert!(!body.contains("http://") && !body.contains("https://"), "{path} refers to another site");
    }
    assert!(http_get(address, "/api/rooms/khong-co").await.starts_with("HTTP/1.1 404"));
    service.shutdown().await;
}

async fn http_get(address: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
}
