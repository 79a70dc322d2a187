//! `[conference]`: the conference page, its media port and the rooms.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use serde::Deserialize;
use toml::Spanned;

use crate::names::DomainName;
use crate::server::Server;
use crate::validate::Context;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConference {
    enabled: Option<bool>,
    listen: Option<Spanned<String>>,
    tls: Option<bool>,
    hostname: Option<Spanned<String>>,
    media_port: Option<Spanned<u16>>,
    ice_tcp: Option<bool>,
    turn: Option<bool>,
    turn_port: Option<Spanned<u16>>,
    #[serde(default)]
    room: Vec<RawRoom>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoom {
    name: Spanned<String>,
    title: Option<String>,
    pin: Spanned<String>,
    chair_pin: Spanned<String>,
    sites: Vec<Spanned<String>>,
    max_participants: Option<Spanned<u32>>,
    last_n: Option<Spanned<u32>>,
    video_codec: Option<Spanned<String>>,
}

/// Cameras a participant receives by default: every other site of a meeting of the province
/// and its 11 districts, and one more.
pub const DEFAULT_LAST_N: u32 = 12;
/// More cameras than this at once helps nobody on one screen, and costs the link.
const MAX_LAST_N: u32 = 49;

/// The camera codec a room's pages publish in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VideoCodec {
    /// VP8: every browser encodes and decodes it in software; the default.
    #[default]
    Vp8,
    /// H.264 (constrained baseline): for PCs and phones whose hardware encodes it, which
    /// spares a weak office PC's CPU. A browser that cannot encode it publishes VP8.
    H264,
}

impl VideoCodec {
    /// The name in the config and in the page's `welcome`.
    pub fn name(self) -> &'static str {
        match self {
            VideoCodec::Vp8 => "vp8",
            VideoCodec::H264 => "h264",
        }
    }
}

/// The conference service's settings.
#[derive(Debug, Clone)]
pub struct Conference {
    pub enabled: bool,
    /// The page and its signaling WebSocket.
    pub listen: SocketAddr,
    /// Serve the page over HTTPS with the appliance's certificate. Required off loopback:
    /// browsers give cameras only to secure pages.
    pub tls: bool,
    /// The name participants type; published in DNS. Defaults to `server.hostname`.
    pub hostname: DomainName,
    /// One UDP port (and ICE-TCP on the same number) for all media.
    pub media_port: u16,
    /// ICE-TCP on `media_port`, for networks that block only UDP.
    pub ice_tcp: bool,
    /// The embedded TURN server on `listen` (TURN over TLS when `tls`, and over plain TCP),
    /// for networks that let only TCP to the page's port through.
    pub turn: bool,
    /// A dedicated TURN port (UDP and TCP) on `server.addresses`, for networks that allow it.
    pub turn_port: Option<u16>,
    pub rooms: Vec<Room>,
}

/// A standing meeting room.
#[derive(Clone, PartialEq, Eq)]
pub struct Room {
    /// URL name: lowercase letters, digits and `-` (`/r/giao-ban`).
    pub name: String,
    pub title: String,
    pub pin: String,
    pub chair_pin: String,
    /// The sites a participant picks from, e.g. the province and its districts.
    pub sites: Vec<String>,
    pub max_participants: u32,
    /// Cameras each participant receives at most (last-N): the spotlight, the active speaker
    /// and the most recent speakers first. The other sites are shown by name.
    pub last_n: u32,
    /// The codec the room's pages prefer for their cameras.
    pub video_codec: VideoCodec,
}

/// PINs stay out of debug output (and so out of any log line).
impl std::fmt::Debug for Room {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Room")
            .field("name", &self.name)
            .field("title", &self.title)
            .field("pin", &"<redacted>")
            .field("chair_pin", &"<redacted>")
            .field("sites", &self.sites)
            .field("max_participants", &self.max_participants)
            .field("last_n", &self.last_n)
            .field("video_codec", &self.video_codec)
            .finish()
    }
}

pub(crate) fn validate(raw: RawConference, server: &Server, context: &mut Context<'_>) -> Conference {
    let tls = raw.tls.unwrap_or(false);
    let default_listen = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8080);
    let listen = match &raw.listen {
        None => default_listen,
        Some(value) => match context.socket_addr(value, "conference.listen") {
            Some(address) => {
                if !address.ip().is_loopback() && !tls {
                    context.error(
                        value.span(),
                        "conference.listen",
                        format!(
                            "{address} is reachable from other hosts but tls = false; browsers give the camera and \
                             microphone only to secure pages (expected tls = true, or a loopback address)"
                        ),
                    );
                }
                address
            }
            None => default_listen,
        },
    };
    let hostname = raw
        .hostname
        .as_ref()
        .and_then(|value| context.domain(value, "conference.hostname"))
        .unwrap_or_else(|| server.hostname.clone());
    let media_port = match &raw.media_port {
        Some(value) if *value.get_ref() == 0 => {
            context.error(
                value.span(),
                "conference.media_port",
                "port 0 (expected a fixed port such as 10000: firewalls must allow it)",
            );
            10000
        }
        Some(value) => *value.get_ref(),
        None => 10000,
    };

    let turn_port = match &raw.turn_port {
        Some(value) if *value.get_ref() == 0 || *value.get_ref() == media_port => {
            context.error(
                value.span(),
                "conference.turn_port",
                format!("{} (expected a fixed port other than media_port, e.g. 3478)", value.get_ref()),
            );
            None
        }
        Some(value) => Some(*value.get_ref()),
        None => None,
    };

    let mut rooms = Vec::new();
    let mut names = HashSet::new();
    for (index, raw_room) in raw.room.iter().enumerate() {
        let path = format!("conference.room[{index}]");
        let name = raw_room.name.get_ref().clone();
        if name.is_empty()
            || name.len() > 64
            || !name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            context.error(
                raw_room.name.span(),
                format!("{path}.name"),
                format!("`{name}` is not a room name (expected lowercase letters, digits and `-`, e.g. giao-ban)"),
            );
        } else if !names.insert(name.clone()) {
            context.error(raw_room.name.span(), format!("{path}.name"), format!("room `{name}` is defined twice"));
        }
        for (value, key) in [(&raw_room.pin, "pin"), (&raw_room.chair_pin, "chair_pin")] {
            let pin = value.get_ref();
            if pin.len() < 4 || pin.len() > 12 || !pin.chars().all(|c| c.is_ascii_digit()) {
                context.error(value.span(), format!("{path}.{key}"), "expected 4 to 12 digits");
            }
        }
        if raw_room.pin.get_ref() == raw_room.chair_pin.get_ref() {
            context.error(
                raw_room.chair_pin.span(),
                format!("{path}.chair_pin"),
                "the chair PIN equals the participant PIN, so every participant could chair (expected a different PIN)",
            );
        }
        let mut sites = Vec::new();
        let mut seen_sites = HashSet::new();
        for (site_index, site) in raw_room.sites.iter().enumerate() {
            let text = site.get_ref().trim().to_owned();
            if text.is_empty() || text.chars().count() > 80 {
                context.error(
                    site.span(),
                    format!("{path}.sites[{site_index}]"),
                    "expected a site name of 1 to 80 characters",
                );
            } else if !seen_sites.insert(text.to_lowercase()) {
                context.error(
                    site.span(),
                    format!("{path}.sites[{site_index}]"),
                    format!("site `{text}` is listed twice in this room"),
                );
            } else {
                sites.push(text);
            }
        }
        if raw_room.sites.is_empty() {
            context.error(
                raw_room.name.span(),
                format!("{path}.sites"),
                "a room needs at least one site (expected e.g. [\"UBND tỉnh\", \"Huyện A\"])",
            );
        }
        let max_participants = match &raw_room.max_participants {
            Some(value) if *value.get_ref() < 2 || *value.get_ref() > 500 => {
                context.error(value.span(), format!("{path}.max_participants"), "expected 2 to 500");
                50
            }
            Some(value) => *value.get_ref(),
            None => 50,
        };
        let last_n = match &raw_room.last_n {
            Some(value) if *value.get_ref() > MAX_LAST_N => {
                context.error(value.span(), format!("{path}.last_n"), format!("expected 0 to {MAX_LAST_N}"));
                DEFAULT_LAST_N
            }
            Some(value) => *value.get_ref(),
            None => DEFAULT_LAST_N,
        };
        let video_codec = match &raw_room.video_codec {
            Some(value) => match value.get_ref().as_str() {
                "vp8" => VideoCodec::Vp8,
                "h264" => VideoCodec::H264,
                other => {
                    context.error(
                        value.span(),
                        format!("{path}.video_codec"),
                        format!("`{other}` (expected \"vp8\" or \"h264\")"),
                    );
                    VideoCodec::Vp8
                }
            },
            None => VideoCodec::Vp8,
        };
        rooms.push(Room {
            title: raw_room.title.clone().unwrap_or_else(|| name.clone()),
            name,
            pin: raw_room.pin.get_ref().clone(),
            chair_pin: raw_room.chair_pin.get_ref().clone(),
            sites,
            max_participants,
            last_n,
            video_codec,
        });
    }

    Conference {
        enabled: raw.enabled.unwrap_or(true),
        listen,
        tls,
        hostname,
        media_port,
        ice_tcp: raw.ice_tcp.unwrap_or(true),
        turn: raw.turn.unwrap_or(true),
        turn_port,
        rooms,
    }
}
