//! Messages from several browsers, as raw text, must never panic the parser or the rooms.
//! Input: lines; each line is `<participant digit><message JSON>`.

#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use lienthong_config::Room;
use lienthong_sfu::protocol::{ClientMessage, parse_client_message};
use lienthong_sfu::room::{Action, JoinRequest, Rooms};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let room = Room {
        name: "giao-ban".into(),
        title: "Họp giao ban".into(),
        pin: "246810".into(),
        chair_pin: "135790".into(),
        sites: vec!["UBND tỉnh".into(), "Huyện A".into()],
        last_n: 12,
        max_participants: 3,
    };
    let mut rooms = Rooms::new(&[room]);
    let start = Instant::now();
    for (step, line) in text.lines().enumerate() {
        let now = start + Duration::from_millis(step as u64 * 50);
        let Some(first) = line.chars().next() else { continue };
        let id = u64::from(first.to_digit(10).unwrap_or(0));
        let Ok(message) = parse_client_message(&line[first.len_utf8()..]) else { continue };
        let _ = match message {
            ClientMessage::Join { room, name, site, pin, resume, .. } => rooms
                .join(
                    now,
                    id,
                    JoinRequest {
                        room,
                        name,
                        site,
                        pin,
                        resume,
                        new_token: format!("t{step}"),
                        ice_servers: Vec::new(),
                    },
                )
                .unwrap_or_default(),
            ClientMessage::Leave {} => rooms.leave(now, id),
            ClientMessage::Media { microphone, camera, screen } => {
                rooms.act(now, id, Action::SelfMedia { microphone, camera, screen })
            }
            ClientMessage::Mute { participant } => rooms.act(now, id, Action::Mute(participant)),
            ClientMessage::StopCamera { participant } => rooms.act(now, id, Action::StopCamera(participant)),
            ClientMessage::Remove { participant } => rooms.act(now, id, Action::Remove(participant)),
            ClientMessage::Lock { locked } => rooms.act(now, id, Action::Lock(locked)),
            ClientMessage::Spotlight { participant } => rooms.act(now, id, Action::Spotlight(participant)),
            ClientMessage::Path { path } => rooms.act(now, id, Action::Path(path)),
            ClientMessage::Offer { .. } | ClientMessage::Answer { .. } => Vec::new(),
        };
        rooms.audio_level(now, id, (step % 128) as u8);
        let _ = rooms.tick(now);
    }
});
