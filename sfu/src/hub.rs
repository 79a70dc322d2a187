//! The hub: the thin driver around the sans-IO [`Conference`]. It owns the media port (its
//! reader tasks queue what arrives; the hub sends a batch per system call), the channel from
//! the signaling connections and one outbound queue per browser, feeds the core with inputs
//! and `Instant::now()`, and carries out what the core returns.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use lienthong_config::Room as RoomConfig;
use tokio::sync::mpsc;

use crate::conference::{Command, Conference, Input, MediaSettings, Output, Signal};
use crate::load::LoadMeter;
use crate::net::{Datagram, MediaPort};
use crate::protocol::{ParticipantId, ServerMessage};
use crate::room::RoomSummary;
use crate::status::RoomStatus;

/// Messages queued for one browser before we consider it gone.
pub(crate) const OUTBOUND_QUEUE: usize = 256;
/// Datagrams taken from the port's queue before the sessions are polled.
const DATAGRAM_BATCH: usize = 128;

/// From the signaling side to the hub: the core's own [`Command`]s, and for a new
/// connection also the queue of what the hub sends it.
#[derive(Debug)]
pub(crate) enum HubCommand {
    /// A signaling connection opened: its queue, then `Command::Open` for the core.
    Open {
        outbound: mpsc::Sender<Outbound>,
        open: Command,
    },
    Core(Command),
}

/// From the hub to one signaling connection.
#[derive(Debug)]
pub(crate) enum Outbound {
    Message(ServerMessage),
    /// Close the WebSocket with this reason.
    Close(String),
}

pub(crate) struct Hub {
    conference: Conference,
    port: MediaPort,
    connections: HashMap<ParticipantId, mpsc::Sender<Outbound>>,
    summaries: Arc<RwLock<Vec<RoomSummary>>>,
    status: Arc<RwLock<Vec<RoomStatus>>>,
}

impl Hub {
    pub fn new(
        rooms: &[RoomConfig],
        port: MediaPort,
        media: MediaSettings,
        summaries: Arc<RwLock<Vec<RoomSummary>>>,
        status: Arc<RwLock<Vec<RoomStatus>>>,
    ) -> Self {
        let conference = Conference::new(Instant::now(), rooms, media);
        Hub { conference, port, connections: HashMap::new(), summaries, status }
    }

    /// Runs until the command channel closes or a shutdown command arrives.
    pub async fn run(mut self, mut commands: mpsc::Receiver<HubCommand>, mut datagrams: mpsc::Receiver<Datagram>) {
        let mut load = LoadMeter::new(Instant::now());
        loop {
            let deadline = self.flush();
            if let Some(busy) = load.stop(Instant::now()) {
                self.conference.handle_input(Instant::now(), Input::Load(busy));
                continue;
            }
            tokio::select! {
                command = commands.recv() => match command {
                    Some(HubCommand::Core(Command::Shutdown)) | None => break,
                    Some(command) => self.command(command),
                },
                Some(datagram) = datagrams.recv() => {
                    load.queued(datagrams.len());
                    self.conference.handle_input(Instant::now(), Input::Datagram(datagram));
                    // Take what else arrived before polling the sessions.
                    for _ in 0..DATAGRAM_BATCH {
                        let Ok(datagram) = datagrams.try_recv() else { break };
                        self.conference.handle_input(Instant::now(), Input::Datagram(datagram));
                    }
                }
                _ = tokio::time::sleep_until(deadline.into()) => {
                    self.conference.handle_input(Instant::now(), Input::Timeout);
                }
            }
            load.start();
        }
        self.conference.handle_input(Instant::now(), Input::Command(Command::Shutdown));
        self.flush();
        self.port.shutdown();
    }

    fn command(&mut self, command: HubCommand) {
        let command = match command {
            HubCommand::Open { outbound, open } => {
                if let Command::Open { id, .. } = &open {
                    self.connections.insert(*id, outbound);
                }
                open
            }
            HubCommand::Core(command) => {
                if let Command::Close { id } = &command {
                    self.connections.remove(id);
                }
                command
            }
        };
        self.conference.handle_input(Instant::now(), Input::Command(command));
    }

    /// Carries out everything the core has to do now; returns when it next wants time.
    fn flush(&mut self) -> Instant {
        loop {
            match self.conference.poll_output() {
                Output::Transmit(packet) => {
                    self.port.send(packet.proto, packet.source, packet.destination, packet.contents.into())
                }
                Output::Signal(id, signal) => self.signal(id, signal),
                Output::Rooms(summaries) => {
                    if let Ok(mut shared) = self.summaries.write() {
                        *shared = summaries;
                    }
                }
                Output::Status(status) => {
                    if let Ok(mut shared) = self.status.write() {
                        *shared = status;
                    }
                }
                Output::Timeout(at) => {
                    self.port.flush();
                    return at;
                }
            }
        }
    }

    /// Queues a message; a browser that does not read its messages is cut off (dropping its
    /// queue ends its connection, which then closes), so one slow client cannot make the hub
    /// buffer without bound.
    fn signal(&mut self, id: ParticipantId, signal: Signal) {
        let Some(outbound) = self.connections.get(&id) else {
            return;
        };
        let outbound_message = match signal {
            Signal::Message(message) => Outbound::Message(message),
            Signal::Close(reason) => Outbound::Close(reason),
        };
        match outbound.try_send(outbound_message) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::info!(participant = id, "signaling queue full; disconnecting");
                self.connections.remove(&id);
            }
            // The connection ended; its `Command::Close` is on the way.
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.connections.remove(&id);
            }
        }
    }
}
