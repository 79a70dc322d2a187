use super::*;

fn giao_ban() -> RoomConfig {
    RoomConfig {
        name: "giao-ban".into(),
        title: "Họp giao ban UBND tỉnh".into(),
        pin: "246810".into(),
        chair_pin: "135790".into(),
        sites: vec!["UBND tỉnh".into(), "Huyện A".into(), "Huyện B".into()],
        last_n: 12,
        video_codec: lienthong_config::VideoCodec::Vp8,
        max_participants: 3,
    }
}

fn hop_khan() -> RoomConfig {
    RoomConfig { name: "hop-khan".into(), pin: "1111".into(), chair_pin: "2222".into(), ..giao_ban() }
}

fn request(room: &str, site: &str, pin: &str) -> JoinRequest {
    JoinRequest {
        room: room.into(),
        name: format!("Người ở {site}"),
        site: site.into(),
        pin: pin.into(),
        resume: None,
        new_token: format!("token-{site}-{pin}"),
        ice_servers: Vec::new(),
    }
}

fn messages_to(out: &[Outgoing], id: ParticipantId) -> Vec<&ServerMessage> {
    out.iter()
        .filter_map(|item| match item {
            Outgoing::To(to, message) if *to == id => Some(message),
            _ => None,
        })
        .collect()
}

/// Rooms with the chair (1) from the province and a participant (2) from Huyện A.
fn meeting(now: Instant) -> Rooms {
    let mut rooms = Rooms::new(&[giao_ban(), hop_khan()]);
    rooms.join(now, 1, request("giao-ban", "UBND tỉnh", "135790")).unwrap();
    rooms.join(now, 2, request("giao-ban", "Huyện A", "246810")).unwrap();
    rooms
}

#[test]
fn join_welcomes_with_role_and_announces_to_others() {
    let now = Instant::now();
    let mut rooms = Rooms::new(&[giao_ban()]);
    let out = rooms.join(now, 1, request("giao-ban", "UBND tỉnh", "135790")).unwrap();
    assert!(
        matches!(messages_to(&out, 1)[..], [ServerMessage::Welcome { role: Role::Chair, participants, .. }] if participants.is_empty())
    );

    let out = rooms.join(now, 2, request("giao-ban", "Huyện A", "246810")).unwrap();
    match messages_to(&out, 2)[..] {
        [ServerMessage::Welcome { role: Role::Participant, participants, you: 2, .. }] => {
            assert_eq!(participants.len(), 1);
            assert_eq!(participants[0].site, "UBND tỉnh");
        }
        ref other => panic!("unexpected {other:?}"),
    }
    assert!(matches!(messages_to(&out, 1)[..], [ServerMessage::Joined { participant }] if participant.id == 2));
    assert_eq!(rooms.peers(1), vec![2]);
}

#[test]
fn refusals() {
    let now = Instant::now();
    let mut rooms = meeting(now);
    assert_eq!(rooms.join(now, 3, request("khong-co", "Huyện A", "246810")), Err(Refusal::UnknownRoom));
    assert_eq!(rooms.join(now, 3, request("giao-ban", "Huyện A", "000000")), Err(Refusal::WrongPin));
    assert_eq!(rooms.join(now, 3, request("giao-ban", "Huyện A", "24681")), Err(Refusal::WrongPin));
    assert_eq!(rooms.join(now, 3, request("giao-ban", "Huyện Z", "246810")), Err(Refusal::UnknownSite));
    assert_eq!(rooms.join(now, 2, request("giao-ban", "Huyện A", "246810")), Err(Refusal::AlreadyJoined));
    rooms.join(now, 3, request("giao-ban", "Huyện B", "246810")).unwrap();
    assert_eq!(rooms.join(now, 4, request("giao-ban", "Huyện B", "246810")), Err(Refusal::Full));
}

#[test]
fn leave_announces_and_clears_spotlight() {
    let now = Instant::now();
    let mut rooms = meeting(now);
    rooms.act(now, 1, Action::Spotlight(Some(2)));
    let out = rooms.leave(now, 2);
    let to_chair = messages_to(&out, 1);
    assert!(to_chair.contains(&&ServerMessage::Left { participant: 2 }));
    assert!(to_chair.contains(&&ServerMessage::Room { locked: false, spotlight: None }));
    assert!(rooms.peers(1).is_empty());
    assert!(rooms.leave(now, 2).is_empty(), "leaving twice is harmless");
}

#[test]
fn chair_mutes_and_stops_camera_and_the_server_stops_forwarding() {
    let now = Instant::now();
    let mut rooms = meeting(now);
    assert!(rooms.forwards(2, MediaSource::Microphone));
    let out = rooms.act(now, 1, Action::Mute(2));
    assert!(messages_to(&out, 2).contains(&&ServerMessage::Forced { microphone: false, camera: true }));
    assert!(!rooms.forwards(2, MediaSource::Microphone));
    assert!(rooms.forwards(2, MediaSource::Camera));

    rooms.act(now, 1, Action::StopCamera(2));
    assert!(!rooms.forwards(2, MediaSource::Camera));

    // The participant may switch back on deliberately, as in Jitsi; the chair can remove them.
    rooms.act(now, 2, Action::SelfMedia { microphone: true, camera: true, screen: false });
    assert!(rooms.forwards(2, MediaSource::Microphone));
}

#[test]
fn non_chair_commands_are_refused() {
    let now = Instant::now();
    let mut rooms = meeting(now);
    for action in
        [Action::Mute(1), Action::StopCamera(1), Action::Remove(1), Action::Lock(true), Action::Spotlight(Some(2))]
    {
        let out = rooms.act(now, 2, action);
        assert_eq!(out, vec![Outgoing::To(2, ServerMessage::refused(Refusal::NotChair))], "{action:?}");
    }
    assert!(rooms.forwards(1, MediaSource::Microphone));
    assert_eq!(rooms.peers(1), vec![2]);
    let out = rooms.act(now, 99, Action::Lock(true));
    assert_eq!(out, vec![Outgoing::To(99, ServerMessage::refused(Refusal::NotJoined))]);
}

#[test]
fn chair_cannot_reach_into_another_room() {
    let now = Instant::now();
    let mut rooms = meeting(now);
    rooms.join(now, 5, request("hop-khan", "Huyện B", "1111")).unwrap();
    let out = rooms.act(now, 1, Action::Mute(5));
    assert_eq!(out, vec![Outgoing::To(1, ServerMessage::refused(Refusal::UnknownParticipant))]);
    assert!(rooms.forwards(5, MediaSource::Microphone));
    assert!(rooms.peers(5).is_empty());
}

#[test]
fn remove_ends_the_target_and_tells_the_room() {
    let now = Instant::now();
    let mut rooms = meeting(now);
    let out = rooms.act(now, 1, Action::Remove(2));
    assert!(out.contains(&Outgoing::End(2, EndReason::Removed)));
    assert!(messages_to(&out, 1).contains(&&ServerMessage::Left { participant: 2 }));
    assert!(rooms.room_of(2).is_none());
}

#[test]
fn lock_keeps_newcomers_out_but_lets_the_chair_and_dropped_participants_back() {
    let now = Instant::now();
    let mut rooms = meeting(now);
    rooms.act(now, 1, Action::Lock(true));
    assert_eq!(rooms.join(now, 3, request("giao-ban", "Huyện B", "246810")), Err(Refusal::Locked));

    // Participant 2's network drops; it comes back with its token.
    rooms.leave(now, 2);
    let mut back = request("giao-ban", "Huyện A", "246810");
    back.resume = Some("token-Huyện A-246810".into());
    back.new_token = "second".into();
    rooms.join(now, 4, back.clone()).unwrap();
    // A token works once: the old one is spent, the new one works.
    rooms.leave(now, 4);
    back.new_token = "third".into();
    assert_eq!(rooms.join(now, 6, back.clone()), Err(Refusal::Locked));
    back.resume = Some("second".into());
    rooms.join(now, 6, back).unwrap();

    // The chair drops and returns although the room is locked.
    rooms.leave(now, 1);
    rooms.join(now, 7, request("giao-ban", "UBND tỉnh", "135790")).unwrap();
    rooms.act(now, 7, Action::Lock(false));
    rooms.join(now, 8, request("giao-ban", "Huyện B", "246810")).unwrap();
}

#[test]
fn resume_tokens_expire() {
    let now = Instant::now();
    let mut rooms = meeting(now);
    rooms.act(now, 1, Action::Lock(true));
    rooms.leave(now, 2);
    let mut back = request("giao-ban", "Huyện A", "246810");
    back.resume = Some("token-Huyện A-246810".into());
    assert_eq!(rooms.join(now + RESUME_WINDOW + Duration::from_secs(1), 3, back), Err(Refusal::Locked));
}

#[test]
fn active_speaker_follows_the_loudest_voice() {
    let start = Instant::now();
    let mut rooms = meeting(start);
    let mut now = start;
    let mut speakers = Vec::new();
    for step in 0..100u32 {
        now = start + Duration::from_millis(20 * u64::from(step));
        rooms.audio_level(now, 2, 25);
        rooms.audio_level(now, 1, 110);
        speakers.extend(rooms.tick(now));
    }
    assert!(messages_to(&speakers, 1).contains(&&ServerMessage::Speaker { participant: Some(2) }));

    // The chair starts talking and participant 2 falls silent.
    let mut later = Vec::new();
    for step in 0..150u32 {
        let at = now + Duration::from_millis(20 * u64::from(step));
        rooms.audio_level(at, 1, 20);
        later.extend(rooms.tick(at));
    }
    assert!(messages_to(&later, 2).contains(&&ServerMessage::Speaker { participant: Some(1) }));
}

#[test]
fn muted_participant_is_never_the_active_speaker() {
    let now = Instant::now();
    let mut rooms = meeting(now);
    rooms.act(now, 1, Action::Mute(2));
    for step in 0..100u64 {
        let at = now + Duration::from_millis(20 * step);
        rooms.audio_level(at, 2, 10);
        assert!(rooms.tick(at).is_empty());
    }
}

#[test]
fn reload_opens_closes_and_changes_pins() {
    let now = Instant::now();
    let mut rooms = meeting(now);
    rooms.join(now, 5, request("hop-khan", "Huyện B", "1111")).unwrap();

    let mut changed = giao_ban();
    changed.pin = "999999".into();
    let new_room = RoomConfig { name: "tiep-dan".into(), ..hop_khan() };
    let out = rooms.reload(now, &[changed, new_room]);
    assert_eq!(out, vec![Outgoing::End(5, EndReason::RoomClosed)]);
    assert!(rooms.room_of(5).is_none());
    // People already in giao-ban stay; the new PIN applies to new joins.
    assert_eq!(rooms.peers(1), vec![2]);
    assert_eq!(rooms.join(now, 6, request("giao-ban", "Huyện B", "246810")), Err(Refusal::WrongPin));
    rooms.join(now, 6, request("giao-ban", "Huyện B", "999999")).unwrap();
    rooms.join(now, 7, request("tiep-dan", "Huyện B", "1111")).unwrap();
    let names: Vec<String> = rooms.summaries().into_iter().map(|summary| summary.name).collect();
    assert_eq!(names, ["giao-ban", "tiep-dan"]);
}

#[test]
fn constant_time_equal_compares_whole_strings() {
    assert!(constant_time_equal("246810", "246810"));
    assert!(!constant_time_equal("24681", "246810"));
    assert!(!constant_time_equal("2468100", "246810"));
    assert!(!constant_time_equal("", "246810"));
}

#[test]
fn the_loudest_few_are_ranked_and_a_muted_microphone_does_not_count() {
    let start = Instant::now();
    let mut big = giao_ban();
    big.max_participants = 10;
    let mut rooms = Rooms::new(&[big]);
    for id in 1..=5 {
        rooms.join(start, id, request("giao-ban", "Huyện A", "246810")).unwrap();
    }
    // 1 is silent, 2 whispers, 3 and 4 speak, 5 shouts; every 20 ms for a second.
    let levels = [(1, 127u8), (2, 55), (3, 35), (4, 30), (5, 10)];
    let mut now = start;
    for _ in 0..50 {
        now += Duration::from_millis(20);
        for (id, level) in levels {
            rooms.audio_level(now, id, level);
        }
    }
    assert_eq!(rooms.loudest(now, 1, 3), vec![5, 4, 3]);
    assert_eq!(rooms.loudest(now, 1, 10), vec![5, 4, 3, 2], "a small room hears everyone else");
    // The loudest site does not hear itself: it gets the next three.
    assert_eq!(rooms.loudest(now, 5, 3), vec![4, 3, 2]);
    assert_eq!(rooms.loudest(now, 4, 3), vec![5, 3, 2]);
    rooms.act(now, 5, Action::SelfMedia { microphone: false, camera: true, screen: false });
    assert_eq!(rooms.loudest(now, 1, 3), vec![4, 3, 2]);
    // Audio that stopped arriving counts as silence: the places go by id.
    assert_eq!(rooms.loudest(now + Duration::from_secs(1), 1, 3), vec![2, 3, 4]);
    assert_eq!(rooms.loudest(now + Duration::from_secs(1), 3, 3), vec![1, 2, 4]);
    assert!(rooms.loudest(now, 99, 3).is_empty(), "not in a room");
}

#[test]
fn a_reported_media_path_reaches_the_room_once() {
    use crate::protocol::MediaPath;
    let now = Instant::now();
    let mut rooms = Rooms::new(&[giao_ban()]);
    rooms.join(now, 1, request("giao-ban", "UBND tỉnh", "135790")).unwrap();
    rooms.join(now, 2, request("giao-ban", "Huyện A", "246810")).unwrap();
    let out = rooms.act(now, 2, Action::Path(MediaPath::TurnTls));
    assert!(matches!(
        messages_to(&out, 1)[..],
        [ServerMessage::Updated { participant }] if participant.id == 2 && participant.path == Some(MediaPath::TurnTls)
    ));
    // The same path again is not news.
    assert!(rooms.act(now, 2, Action::Path(MediaPath::TurnTls)).is_empty());
}

/// `id` talks for two seconds while nobody else sends sound; returns the time after.
fn speak(rooms: &mut Rooms, mut now: Instant, id: ParticipantId) -> Instant {
    for _ in 0..100 {
        now += Duration::from_millis(20);
        rooms.audio_level(now, id, 20);
        rooms.tick(now);
    }
    now
}

fn big_room(last_n: u32) -> RoomConfig {
    RoomConfig { max_participants: 50, last_n, ..giao_ban() }
}

#[test]
fn last_n_ranks_the_spotlight_the_speaker_and_the_recent_speakers_first() {
    let start = Instant::now();
    let mut rooms = Rooms::new(&[big_room(3)]);
    rooms.join(start, 1, request("giao-ban", "UBND tỉnh", "135790")).unwrap();
    for id in 2..=8 {
        rooms.join(start, id, request("giao-ban", "Huyện A", "246810")).unwrap();
    }
    // Nobody spoke yet: everyone by arrival, and the room's last_n.
    assert_eq!(rooms.video_ranking(3), (vec![1, 2, 4, 5, 6, 7, 8], 3));
    let mut now = speak(&mut rooms, start, 5);
    now = speak(&mut rooms, now, 7);
    assert_eq!(rooms.video_ranking(3).0, vec![7, 5, 1, 2, 4, 6, 8], "the speaker, then the one before");
    rooms.act(now, 1, Action::Spotlight(Some(2)));
    assert_eq!(rooms.video_ranking(3).0, vec![2, 7, 5, 1, 4, 6, 8], "the spotlight before the speaker");
    assert_eq!(rooms.video_ranking(7).0, vec![2, 5, 1, 3, 4, 6, 8], "nobody receives their own camera");
    // 5 speaks again: back in front of 7, behind the current speaker's place.
    now = speak(&mut rooms, now, 5);
    assert_eq!(rooms.video_ranking(3).0, vec![2, 5, 7, 1, 4, 6, 8]);
    // A camera that is off takes no place; one that left is forgotten.
    rooms.act(now, 7, Action::SelfMedia { microphone: true, camera: false, screen: false });
    assert_eq!(rooms.video_ranking(3).0, vec![2, 5, 1, 4, 6, 8]);
    rooms.leave(now, 5);
    rooms.act(now, 7, Action::SelfMedia { microphone: true, camera: true, screen: false });
    assert_eq!(rooms.video_ranking(3).0, vec![2, 7, 1, 4, 6, 8]);
    assert_eq!(rooms.video_ranking(99), (Vec::new(), 0), "not in a room");
}

/// A small deterministic generator for the property test (no dependency needed).
struct Sequence(u64);

impl Sequence {
    fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % bound
    }
}

#[test]
fn last_n_ranking_holds_its_invariants_over_generated_meetings() {
    for seed in 1..=200u64 {
        let mut random = Sequence(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let start = Instant::now();
        let mut rooms = Rooms::new(&[big_room(4)]);
        let mut now = start;
        let mut cameras: BTreeMap<ParticipantId, bool> = BTreeMap::new();
        rooms.join(now, 1, request("giao-ban", "UBND tỉnh", "135790")).unwrap();
        cameras.insert(1, true);
        for _ in 0..150 {
            now += Duration::from_millis(20 * (1 + random.below(40)));
            let id = 1 + random.below(15);
            match random.below(6) {
                0 if !cameras.contains_key(&id) => {
                    rooms.join(now, id, request("giao-ban", "Huyện B", "246810")).unwrap();
                    cameras.insert(id, true);
                }
                1 if id != 1 && cameras.contains_key(&id) => {
                    rooms.leave(now, id);
                    cameras.remove(&id);
                }
                2 if cameras.contains_key(&id) => {
                    let camera = random.below(2) == 0;
                    rooms.act(now, id, Action::SelfMedia { microphone: true, camera, screen: false });
                    cameras.insert(id, camera);
                }
                3 => {
                    let target = Some(id).filter(|id| cameras.contains_key(id) && random.below(3) > 0);
                    rooms.act(now, 1, Action::Spotlight(target));
                }
                _ if cameras.contains_key(&id) => now = speak(&mut rooms, now, id),
                _ => {}
            }
            let spotlight = rooms.rooms["giao-ban"].spotlight;
            let speaker = rooms.rooms["giao-ban"].speaker;
            for (&receiver, _) in cameras.iter() {
                let (ranking, last_n) = rooms.video_ranking(receiver);
                assert_eq!(last_n, 4);
                // Exactly the others whose cameras are on, each once.
                let mut sorted = ranking.clone();
                sorted.sort_unstable();
                let expected: Vec<ParticipantId> =
                    cameras.iter().filter(|(id, on)| **on && **id != receiver).map(|(id, _)| *id).collect();
                assert_eq!(sorted, expected, "seed {seed}: {ranking:?}");
                // The spotlight first, then the speaker, when they are in the ranking at all.
                let leaders: Vec<ParticipantId> =
                    spotlight.into_iter().chain(speaker).filter(|id| ranking.contains(id)).collect();
                let mut deduplicated = leaders.clone();
                deduplicated.dedup();
                assert_eq!(ranking[..deduplicated.len()], deduplicated[..], "seed {seed}: {ranking:?}");
            }
        }
    }
}
