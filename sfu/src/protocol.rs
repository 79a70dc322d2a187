//! The signaling protocol, version 1: JSON text messages over one WebSocket per participant.
//!
//! Documented in `docs/signaling.md`. Every message from a browser is parsed here, once, with
//! size caps, into a typed [`ClientMessage`]; anything else closes that connection with a reason.

use serde::{Deserialize, Serialize};

/// The protocol version a client must name in its `join`.
pub const PROTOCOL_VERSION: u32 = 1;

/// Largest accepted text message. A browser's SDP answer carries one m-line of about 1 KB per
/// track it receives: ~60 KB in a room of 50 (50 microphones, 12 cameras), ~220 KB for 200
/// communes. 512 KiB leaves room for that without letting a client make us buffer megabytes
/// (connections are capped per address and in total, see `limits.rs`).
pub const MAX_MESSAGE_BYTES: usize = 512 * 1024;

/// Longest display name, in characters.
pub const MAX_NAME_CHARS: usize = 60;

/// A participant's identifier, unique for the life of the process.
pub type ParticipantId = u64;

/// A message from a browser.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientMessage {
    /// The first message: which room, who, and the PIN (participant's or chair's).
    Join {
        v: u32,
        room: String,
        name: String,
        site: String,
        pin: String,
        /// The token from an earlier `welcome`: lets a participant whose network dropped back
        /// into a locked room.
        #[serde(default)]
        resume: Option<String>,
    },
    /// An SDP offer for the browser's own tracks. `screen_mid` names the m-line carrying the
    /// screen share, if any, so the server can tell it from the camera.
    Offer {
        sdp: String,
        #[serde(default)]
        screen_mid: Option<String>,
    },
    /// The answer to a server offer (the server offers when other participants' tracks arrive).
    Answer { sdp: String },
    /// The browser's own microphone, camera and screen share switches.
    Media { microphone: bool, camera: bool, screen: bool },
    /// Chair: turn a participant's microphone off.
    Mute { participant: ParticipantId },
    /// Chair: turn a participant's camera off.
    StopCamera { participant: ParticipantId },
    /// Chair: remove a participant from the room.
    Remove { participant: ParticipantId },
    /// Chair: lock (no new joins) or unlock the room.
    Lock { locked: bool },
    /// Chair: give the floor to a participant for everyone, or take it back (`null`).
    Spotlight { participant: Option<ParticipantId> },
    /// What the page shows: cameras of `high` participants large (stage, spotlight, active
    /// speaker), of `low` ones as thumbnails; any other camera is hidden and gets no video.
    /// Until a page sends this, every camera counts as `high`.
    Layout {
        #[serde(default)]
        high: Vec<ParticipantId>,
        #[serde(default)]
        low: Vec<ParticipantId>,
    },
    /// Leaving on purpose (the page's leave button).
    Leave {},
    /// The path the browser's media took (its selected ICE candidate pair), for the chair.
    Path { path: MediaPath },
}

/// How a participant's media reaches the appliance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MediaPath {
    /// Direct UDP to the media port.
    Udp,
    /// ICE-TCP to the media port.
    Tcp,
    /// Relayed by the embedded TURN server, reached over UDP, TCP or TLS.
    TurnUdp,
    TurnTcp,
    TurnTls,
}

/// Most participants one `layout` list may name.
pub const MAX_LAYOUT_ENTRIES: usize = 256;

/// Why a client message was rejected; the connection is closed with this text as reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("message too large (limit {MAX_MESSAGE_BYTES} bytes)")]
    TooLarge,
    #[error("malformed message: {0}")]
    Malformed(String),
    #[error("unsupported protocol version {0} (expected {PROTOCOL_VERSION})")]
    Version(u32),
    #[error("invalid field `{0}`")]
    InvalidField(&'static str),
}

/// Parses and validates one text message from a browser.
pub fn parse_client_message(text: &str) -> Result<ClientMessage, ProtocolError> {
    if text.len() > MAX_MESSAGE_BYTES {
        return Err(ProtocolError::TooLarge);
    }
    let message: ClientMessage = serde_json::from_str(text).map_err(|error| {
        // serde's message names the field or type that was wrong; cut it so a hostile client
        // cannot make the close reason (limited to 123 bytes) overflow.
        let mut text = error.to_string();
        text.truncate(80);
        ProtocolError::Malformed(text)
    })?;
    validate(&message)?;
    Ok(message)
}

fn validate(message: &ClientMessage) -> Result<(), ProtocolError> {
    match message {
        ClientMessage::Join { v, room, name, site, pin, resume } => {
            if *v != PROTOCOL_VERSION {
                return Err(ProtocolError::Version(*v));
            }
            if room.is_empty() || room.len() > 64 {
                return Err(ProtocolError::InvalidField("room"));
            }
            let name_chars = name.trim().chars().count();
            if name_chars == 0 || name_chars > MAX_NAME_CHARS || name.chars().any(char::is_control) {
                return Err(ProtocolError::InvalidField("name"));
            }
            if site.is_empty() || site.len() > 400 {
                return Err(ProtocolError::InvalidField("site"));
            }
            if pin.len() > 32 {
                return Err(ProtocolError::InvalidField("pin"));
            }
            if resume.as_ref().is_some_and(|token| token.len() > 64) {
                return Err(ProtocolError::InvalidField("resume"));
            }
        }
        ClientMessage::Offer { sdp, screen_mid } => {
            if sdp.is_empty() {
                return Err(ProtocolError::InvalidField("sdp"));
            }
            if screen_mid.as_ref().is_some_and(|mid| mid.is_empty() || mid.len() > 16) {
                return Err(ProtocolError::InvalidField("screen_mid"));
            }
        }
        ClientMessage::Answer { sdp } if sdp.is_empty() => {
            return Err(ProtocolError::InvalidField("sdp"));
        }
        ClientMessage::Layout { high, low } => {
            if high.len() > MAX_LAYOUT_ENTRIES {
                return Err(ProtocolError::InvalidField("high"));
            }
            if low.len() > MAX_LAYOUT_ENTRIES {
                return Err(ProtocolError::InvalidField("low"));
            }
        }
        _ => {}
    }
    Ok(())
}

/// A participant's role, decided by the PIN they joined with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Chair,
    Participant,
}

/// What every page knows about a participant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ParticipantView {
    pub id: ParticipantId,
    pub name: String,
    pub site: String,
    pub role: Role,
    pub microphone: bool,
    pub camera: bool,
    pub screen: bool,
    /// The path its media takes, once the browser has reported it.
    pub path: Option<MediaPath>,
}

/// A TURN server for the browser's `RTCPeerConnection` (the WebRTC `RTCIceServer` shape),
/// with a credential minted for this participant at join time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IceServer {
    pub urls: Vec<String>,
    pub username: String,
    pub credential: String,
}

/// Why a join or a chair command was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Refusal {
    UnknownRoom,
    WrongPin,
    UnknownSite,
    Full,
    Locked,
    NotChair,
    UnknownParticipant,
    NotJoined,
    AlreadyJoined,
    /// Too many wrong PINs came from this address lately.
    TooManyAttempts,
}

impl Refusal {
    /// English text for logs and for clients that do not translate the reason code.
    pub fn message(self) -> &'static str {
        match self {
            Refusal::UnknownRoom => "this room does not exist",
            Refusal::WrongPin => "wrong PIN",
            Refusal::UnknownSite => "this site is not in the room's list",
            Refusal::Full => "the room is full",
            Refusal::Locked => "the chair has locked the room",
            Refusal::NotChair => "only the chair can do this",
            Refusal::UnknownParticipant => "no such participant in this room",
            Refusal::NotJoined => "join a room first",
            Refusal::AlreadyJoined => "already in a room",
            Refusal::TooManyAttempts => "too many wrong PINs from your address; try again in 10 minutes",
        }
    }
}

/// Why the server ended a participant's session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// The chair removed them.
    Removed,
    /// The operator removed the room from the config.
    RoomClosed,
    /// The server is shutting down.
    Shutdown,
    /// The browser's media connection failed or sent something the server could not use.
    MediaFailed,
}

/// A message to a browser.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// The join succeeded.
    Welcome {
        v: u32,
        you: ParticipantId,
        role: Role,
        room: String,
        title: String,
        locked: bool,
        spotlight: Option<ParticipantId>,
        speaker: Option<ParticipantId>,
        participants: Vec<ParticipantView>,
        /// Present this in a later `join` to get back in after a network drop.
        resume: String,
        /// Pass to `new RTCPeerConnection({iceServers})`: the embedded TURN server, for
        /// networks that let nothing but TCP 443 through.
        #[serde(rename = "iceServers")]
        ice_servers: Vec<IceServer>,
        /// The codec the room's pages publish their cameras in when the browser can encode it
        /// (`"vp8"` or `"h264"`).
        video_codec: &'static str,
    },
    /// A join or command was refused; the connection stays open (a join can be retried).
    Refused {
        reason: Refusal,
        message: String,
    },
    Joined {
        participant: ParticipantView,
    },
    Updated {
        participant: ParticipantView,
    },
    Left {
        participant: ParticipantId,
    },
    /// Room-wide state the chair changed.
    Room {
        locked: bool,
        spotlight: Option<ParticipantId>,
    },
    /// The active speaker, from the audio levels the server measures.
    Speaker {
        participant: Option<ParticipantId>,
    },
    /// Whose cameras the server forwards to this browser (last-N), best first: the
    /// spotlight, the active speaker, the most recent speakers, then by arrival, at most the
    /// room's `last_n`. The page shows these as video tiles and the other sites by name.
    LastN {
        video: Vec<ParticipantId>,
    },
    /// The chair turned this browser's microphone or camera off.
    Forced {
        microphone: bool,
        camera: bool,
    },
    Offer {
        sdp: String,
    },
    Answer {
        sdp: String,
    },
    /// The simulcast layers (rids) of this browser's camera that someone receives; the page
    /// pauses the others and resumes them when they are listed again.
    Layers {
        active: Vec<String>,
    },
    /// The server's bandwidth estimate towards this browser changed whether it can carry
    /// video: with `audio_only` the server forwards no video to it until the estimate
    /// recovers, and the page says so.
    Bandwidth {
        kbps: u64,
        audio_only: bool,
    },
    /// The session is over; the server closes the connection after this.
    Ended {
        reason: EndReason,
        message: String,
    },
}

impl ServerMessage {
    pub fn refused(reason: Refusal) -> Self {
        ServerMessage::Refused { reason, message: reason.message().to_owned() }
    }

    pub fn to_json(&self) -> String {
        // Serializing these plain structs cannot fail; an empty object keeps the connection
        // alive if that ever changes.
        serde_json::to_string(self).unwrap_or_else(|_| "{}".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_parses() {
        let message = parse_client_message(
            r#"{"type":"join","v":1,"room":"giao-ban","name":"Nguyễn Văn A","site":"Huyện A","pin":"246810"}"#,
        )
        .unwrap();
        assert!(matches!(message, ClientMessage::Join { ref room, resume: None, .. } if room == "giao-ban"));
    }

    #[test]
    fn unknown_fields_and_types_are_malformed() {
        for text in [
            r#"{"type":"leave","extra":1}"#,
            r#"{"type":"explode"}"#,
            r#"{"type":"mute","participant":"x"}"#,
            r#"[1,2,3]"#,
            "not json",
            "",
        ] {
            assert!(matches!(parse_client_message(text), Err(ProtocolError::Malformed(_))), "{text}");
        }
    }

    #[test]
    fn oversized_is_refused_before_parsing() {
        let text = format!(r#"{{"type":"answer","sdp":"{}"}}"#, "a".repeat(MAX_MESSAGE_BYTES));
        assert_eq!(parse_client_message(&text), Err(ProtocolError::TooLarge));
    }

    #[test]
    fn version_and_fields_are_checked() {
        let wrong_version = r#"{"type":"join","v":2,"room":"r","name":"A","site":"S","pin":"1234"}"#;
        assert_eq!(parse_client_message(wrong_version), Err(ProtocolError::Version(2)));
        let blank_name = r#"{"type":"join","v":1,"room":"r","name":"  ","site":"S","pin":"1234"}"#;
        assert_eq!(parse_client_message(blank_name), Err(ProtocolError::InvalidField("name")));
        let long_name =
            format!(r#"{{"type":"join","v":1,"room":"r","name":"{}","site":"S","pin":"1"}}"#, "x".repeat(61));
        assert_eq!(parse_client_message(&long_name), Err(ProtocolError::InvalidField("name")));
        assert_eq!(parse_client_message(r#"{"type":"answer","sdp":""}"#), Err(ProtocolError::InvalidField("sdp")));
    }

    #[test]
    fn layout_parses_and_its_lists_are_capped() {
        let message = parse_client_message(r#"{"type":"layout","high":[7],"low":[8,9]}"#).unwrap();
        assert_eq!(message, ClientMessage::Layout { high: vec![7], low: vec![8, 9] });
        assert_eq!(
            parse_client_message(r#"{"type":"layout"}"#).unwrap(),
            ClientMessage::Layout { high: vec![], low: vec![] },
            "both lists may be omitted"
        );
        let ids: Vec<String> = (0..=MAX_LAYOUT_ENTRIES).map(|id| id.to_string()).collect();
        let long = format!(r#"{{"type":"layout","low":[{}]}}"#, ids.join(","));
        assert_eq!(parse_client_message(&long), Err(ProtocolError::InvalidField("low")));
        let long = format!(r#"{{"type":"layout","high":[{}]}}"#, ids.join(","));
        assert_eq!(parse_client_message(&long), Err(ProtocolError::InvalidField("high")));
        assert!(matches!(parse_client_message(r#"{"type":"layout","high":["x"]}"#), Err(ProtocolError::Malformed(_))));
    }

    #[test]
    fn path_reports_parse_and_unknown_paths_do_not() {
        let message = parse_client_message(r#"{"type":"path","path":"turn-tls"}"#).unwrap();
        assert_eq!(message, ClientMessage::Path { path: MediaPath::TurnTls });
        assert!(parse_client_message(r#"{"type":"path","path":"carrier-pigeon"}"#).is_err());
    }

    #[test]
    fn server_messages_are_tagged() {
        let json = ServerMessage::refused(Refusal::WrongPin).to_json();
        assert_eq!(json, r#"{"type":"refused","reason":"wrong_pin","message":"wrong PIN"}"#);
        assert_eq!(ServerMessage::Left { participant: 7 }.to_json(), r#"{"type":"left","participant":7}"#);
        let layers = ServerMessage::Layers { active: vec!["q".into(), "h".into()] };
        assert_eq!(layers.to_json(), r#"{"type":"layers","active":["q","h"]}"#);
        let last_n = ServerMessage::LastN { video: vec![3, 1] };
        assert_eq!(last_n.to_json(), r#"{"type":"last_n","video":[3,1]}"#);
        let bandwidth = ServerMessage::Bandwidth { kbps: 180, audio_only: true };
        assert_eq!(bandwidth.to_json(), r#"{"type":"bandwidth","kbps":180,"audio_only":true}"#);
    }
}
