// The meeting page at /r/<room>: join form, tiles, controls, signaling and reconnection.
// Signaling protocol: docs/signaling.md (version 1).
'use strict';

const t = lienthongI18n.t;
const roomName = decodeURIComponent(location.pathname.split('/')[2] || '');
const element = (id) => document.getElementById(id);

const state = {
  ws: null,
  pc: null,
  me: null,
  role: null,
  join: null, // { name, site, pin }
  resume: null,
  participants: new Map(), // id -> view from the server
  tiles: new Map(), // id -> tile element
  streams: new Map(), // "p7" / "p7-screen" -> MediaStream
  receivers: [], // { participant, kind, receiver }
  speaker: null,
  spotlight: null,
  lastN: null, // whose cameras the server sends us (last-N); null: not told yet, everyone
  namePage: 0, // which page of the sites shown by name
  locked: false,
  localStream: new MediaStream(),
  microphone: true,
  camera: true,
  screenTrack: null,
  screenTransceiver: null,
  makingOffer: false,
  ended: false,
  reconnectAttempt: 0,
  reconnecting: false,
  disconnectedTimer: null,
  cameraTransceiver: null,
  activeLayers: null, // the camera's rids the server says anyone receives; null: all
  layout: '', // the last layout sent, as JSON
  audioOnly: false,
  videoCodec: 'vp8',
  iceServers: [], // the embedded TURN server, with this participant's credential (from welcome)
  path: null, // how our media travels: udp, tcp, turn-udp, turn-tcp, turn-tls
};

// The camera goes out in three simulcast layers, lowest first (docs/signaling.md): the
// server gives each receiver the one its link and layout call for. The bitrates match the
// server's nominal layer rates (sfu/src/layers.rs).
const CAMERA_LAYERS = [
  { rid: 'q', scaleResolutionDownBy: 4, maxBitrate: 150000 },
  { rid: 'h', scaleResolutionDownBy: 2, maxBitrate: 500000 },
  { rid: 'f', scaleResolutionDownBy: 1, maxBitrate: 1500000 },
];

// ---------------------------------------------------------------------------------------
// Join form

async function loadRoom() {
  element('room-title').textContent = roomName;
  // A district link that drops a request is not a missing room: retry network failures,
  // server errors and "too many" with a growing pause, saying so; other refusals (404: no
  // such room) are final.
  let response = null;
  for (let attempt = 0; ; attempt++) {
    response = await fetch('/api/rooms/' + encodeURIComponent(roomName), { cache: 'no-store' }).catch(() => null);
    const final = response && response.status >= 400 && response.status < 500 && ![408, 429].includes(response.status);
    if (response && (response.ok || final)) break;
    banner(t('status.page_retry'));
    await new Promise((done) => setTimeout(done, Math.min(1000 * 2 ** attempt, 10000)));
  }
  banner(null);
  if (!response.ok) {
    showJoinError('unknown_room');
    element('join-form').querySelectorAll('input, select, button').forEach((control) => { control.disabled = true; });
    return;
  }
  const room = await response.json();
  element('room-title').textContent = room.title;
  document.title = room.title;
  const select = element('join-site');
  select.replaceChildren();
  for (const site of room.sites) {
    const option = document.createElement('option');
    option.value = site;
    option.textContent = site;
    select.append(option);
  }
  const saved = JSON.parse(localStorage.getItem('lienthong.identity') || '{}');
  if (saved.name) element('join-name').value = saved.name;
  if (saved.site && room.sites.includes(saved.site)) select.value = saved.site;
}

function showJoinError(reason) {
  const error = element('join-error');
  error.textContent = t('refused.' + reason) !== 'refused.' + reason ? t('refused.' + reason) : t('refused.other');
  error.dataset.reason = reason;
  error.hidden = false;
  element('join-submit').disabled = false;
  element('join-submit').textContent = t('join.submit');
}

element('join-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  element('join-error').hidden = true;
  element('join-submit').disabled = true;
  element('join-submit').textContent = t('join.joining');
  state.join = {
    name: element('join-name').value.trim(),
    site: element('join-site').value,
    pin: element('join-pin').value.trim(),
  };
  localStorage.setItem('lienthong.identity', JSON.stringify({ name: state.join.name, site: state.join.site }));
  state.ended = false;
  state.resume = null;
  if (state.localStream.getTracks().length === 0) await openLocalMedia();
  connect();
});

async function openLocalMedia(constraints) {
  const attempts = constraints ? [constraints] : [{ audio: true, video: true }, { audio: true }, { video: true }];
  for (const attempt of attempts) {
    try {
      const stream = await navigator.mediaDevices.getUserMedia(attempt);
      for (const track of stream.getTracks()) state.localStream.addTrack(track);
      return;
    } catch (error) {
      console.warn('getUserMedia', attempt, error);
    }
  }
  toast(t('media.denied'));
}

// ---------------------------------------------------------------------------------------
// Signaling

function send(message) {
  if (state.ws && state.ws.readyState === WebSocket.OPEN) state.ws.send(JSON.stringify(message));
}

function connect() {
  const scheme = location.protocol === 'https:' ? 'wss://' : 'ws://';
  const ws = new WebSocket(scheme + location.host + '/ws');
  state.ws = ws;
  ws.onopen = () => {
    send({ type: 'join', v: 1, room: roomName, name: state.join.name, site: state.join.site, pin: state.join.pin, resume: state.resume });
  };
  ws.onmessage = (event) => {
    let message;
    try { message = JSON.parse(event.data); } catch (error) { return; }
    handleMessage(message).catch((error) => console.error('signaling', message.type, error));
  };
  ws.onclose = () => {
    if (state.ws !== ws) return;
    if (!state.ended && state.me !== null) scheduleReconnect();
    else if (!state.ended && state.reconnecting) scheduleReconnect();
  };
}

async function handleMessage(message) {
  switch (message.type) {
    case 'welcome': return welcome(message);
    case 'refused': return refused(message);
    case 'joined': upsertParticipant(message.participant); return render();
    case 'updated': upsertParticipant(message.participant); return render();
    case 'left': removeParticipant(message.participant); return render();
    case 'room':
      state.locked = message.locked;
      state.spotlight = message.spotlight;
      return render();
    case 'speaker': state.speaker = message.participant; return render();
    case 'last_n': state.lastN = message.video; return render();
    case 'forced': return forced(message);
    case 'offer': return serverOffer(message.sdp);
    case 'answer': return serverAnswer(message.sdp);
    case 'ended': return ended(message.reason);
    case 'layers': state.activeLayers = message.active; return applyCameraLayers();
    case 'bandwidth': return bandwidth(message);
    default: return undefined;
  }
}

function welcome(message) {
  const wasReconnecting = state.reconnecting;
  state.me = message.you;
  state.role = message.role;
  state.resume = message.resume;
  state.iceServers = message.iceServers || [];
  state.videoCodec = message.video_codec || 'vp8';
  state.path = null;
  state.locked = message.locked;
  state.spotlight = message.spotlight;
  state.speaker = message.speaker;
  state.lastN = null;
  state.reconnecting = false;
  state.reconnectAttempt = 0;
  element('room-title').textContent = message.title;
  state.participants.clear();
  for (const tile of state.tiles.values()) tile.remove();
  state.tiles.clear();
  state.streams.clear();
  state.receivers = [];
  state.participants.set(state.me, {
    id: state.me, name: state.join.name, site: state.join.site, role: message.role,
    microphone: state.microphone, camera: state.camera, screen: false,
  });
  for (const participant of message.participants) state.participants.set(participant.id, participant);
  element('join-view').hidden = true;
  element('ended-view').hidden = true;
  element('meeting-view').hidden = false;
  banner(wasReconnecting ? t('status.reconnected') : null, true);
  startPeerConnection();
  sendMediaState();
  render();
}

// Pauses the camera layers nobody receives, and resumes them when someone does. One change
// at a time: a `layers` message arriving while the browser still applies the one before
// would read stale parameters, and Chromium refuses them (the camera then stayed paused
// for good). What arrived meanwhile is applied after, and every two seconds the page checks
// its encodings still match the last message (a refused change is tried again).
let applyingLayers = null;
let layersAgain = false;
function applyCameraLayers() {
  if (applyingLayers) {
    layersAgain = true;
    return applyingLayers;
  }
  applyingLayers = (async () => {
    do {
      layersAgain = false;
      await applyCameraLayersOnce();
    } while (layersAgain);
  })().finally(() => { applyingLayers = null; });
  return applyingLayers;
}

async function applyCameraLayersOnce() {
  const transceiver = state.cameraTransceiver;
  if (!transceiver || !state.activeLayers) return;
  const parameters = transceiver.sender.getParameters();
  if (!parameters.encodings || parameters.encodings.length === 0) return;
  let changed = false;
  for (const encoding of parameters.encodings) {
    const active = !encoding.rid || state.activeLayers.includes(encoding.rid);
    if (encoding.active !== active) { encoding.active = active; changed = true; }
  }
  if (!changed) return;
  try { await transceiver.sender.setParameters(parameters); } catch (error) { console.warn('setParameters', error); }
}
setInterval(() => { applyCameraLayers(); }, 2000);

// The server's estimate of our link cannot carry even the lowest video layer: it sends us
// audio only until the link recovers, and we say so.
function bandwidth(message) {
  if (message.audio_only === state.audioOnly) return;
  state.audioOnly = message.audio_only;
  document.body.classList.toggle('audio-only', state.audioOnly);
  if (state.audioOnly) banner(t('status.audio_only'));
  else banner(t('status.video_back'), true);
}

// Tells the server how each remote camera is shown: large (the spotlight, the active
// speaker, a big tile), as a thumbnail, or not at all (hidden or scrolled away), so it sends
// each the layer it needs and nothing for what is not seen.
function reportLayout() {
  if (!state.ws || state.ws.readyState !== WebSocket.OPEN || state.me === null) return;
  const high = [];
  const low = [];
  const viewport = { width: window.innerWidth, height: window.innerHeight };
  for (const [id, tile] of state.tiles) {
    if (id === state.me) continue;
    const rect = tile.querySelector('video').getBoundingClientRect();
    const visible = !document.hidden && rect.width > 0 && rect.height > 0 && rect.bottom > 0 && rect.right > 0
      && rect.top < viewport.height && rect.left < viewport.width && !tile.hidden;
    if (!visible) continue;
    // By size on screen: the spotlight's tile is large on a desk screen, not on a phone.
    const large = rect.width * (window.devicePixelRatio || 1) >= 400;
    (large ? high : low).push(id);
  }
  // The spotlight and the active speaker first: on a thin link they get video first.
  const first = (id) => (id === state.spotlight ? 0 : id === state.speaker ? 1 : 2);
  high.sort((a, b) => first(a) - first(b));
  low.sort((a, b) => first(a) - first(b));
  const layout = JSON.stringify({ type: 'layout', high, low });
  if (layout === state.layout) return;
  state.layout = layout;
  send({ type: 'layout', high, low });
}
window.addEventListener('resize', () => reportLayout());
document.addEventListener('visibilitychange', () => reportLayout());
setInterval(reportLayout, 2000);

function refused(message) {
  if (state.me === null) {
    // A refused join: back to the form (also after a failed rejoin).
    state.ended = true;
    state.reconnecting = false;
    banner(null);
    if (state.ws) state.ws.close();
    element('meeting-view').hidden = true;
    element('join-view').hidden = false;
    showJoinError(message.reason);
  } else {
    toast(t('refused.' + message.reason));
    lastRefusal = message.reason;
  }
}
let lastRefusal = null;

function forced(message) {
  if (!message.microphone) {
    setMicrophone(false, false);
    toast(t('forced.microphone'));
  }
  if (!message.camera) {
    setCamera(false, false);
    toast(t('forced.camera'));
  }
}

function ended(reason) {
  if (reason === 'media_failed' || reason === 'shutdown') {
    // Not the user's doing: come back by ourselves.
    if (reason === 'shutdown') banner(t('ended.shutdown'));
    return;
  }
  finish(t('ended.' + reason));
}

function finish(text) {
  state.ended = true;
  state.me = null;
  closePeerConnection();
  if (state.ws) state.ws.close();
  element('meeting-view').hidden = true;
  element('ended-view').hidden = false;
  element('ended-message').textContent = text;
  banner(null);
}

function scheduleReconnect() {
  closePeerConnection();
  state.me = null;
  state.reconnecting = true;
  banner(t('status.reconnecting'));
  const delay = Math.min(1000 * 2 ** state.reconnectAttempt, 8000);
  state.reconnectAttempt += 1;
  setTimeout(() => { if (state.reconnecting && !state.ended) connect(); }, delay);
}

// ---------------------------------------------------------------------------------------
// WebRTC: the browser publishes with its own offers and is the "polite" peer of perfect
// negotiation; the server offers the other participants' tracks.

// The room's camera codec first (H.264 with packetization mode 1, the one SFUs forward), the
// browser's own order for the rest; a browser that cannot encode it keeps its default (VP8).
function preferCodec(transceiver, codec) {
  if (codec !== 'h264' || !transceiver.setCodecPreferences || !window.RTCRtpSender || !RTCRtpSender.getCapabilities) return;
  const sendable = (RTCRtpSender.getCapabilities('video') || { codecs: [] }).codecs;
  const canSend = sendable.some((c) => c.mimeType.toLowerCase() === 'video/h264' && /packetization-mode=1/.test(c.sdpFmtpLine || ''));
  if (!canSend) return;
  const codecs = ((RTCRtpReceiver.getCapabilities && RTCRtpReceiver.getCapabilities('video')) || { codecs: [] }).codecs;
  const preferred = (c) => c.mimeType.toLowerCase() === 'video/h264' && /packetization-mode=1/.test(c.sdpFmtpLine || '');
  try {
    transceiver.setCodecPreferences([...codecs.filter(preferred), ...codecs.filter((c) => !preferred(c))]);
  } catch (error) {
    console.warn('codec preference not applied', error);
  }
}

function startPeerConnection() {
  closePeerConnection();
  // ICE prefers direct UDP, then ICE-TCP, then TURN (TCP/TLS on the page's port) by itself.
  const pc = new RTCPeerConnection({ iceServers: state.iceServers, bundlePolicy: 'max-bundle', rtcpMuxPolicy: 'require' });
  state.pc = pc;
  pc.onnegotiationneeded = () => makeOffer(pc);
  pc.ontrack = (event) => attachTrack(event);
  pc.onconnectionstatechange = () => {
    if (state.pc !== pc) return;
    clearTimeout(state.disconnectedTimer);
    if (pc.connectionState === 'failed') restartSession();
    if (pc.connectionState === 'disconnected') state.disconnectedTimer = setTimeout(restartSession, 5000);
  };
  const audio = state.localStream.getAudioTracks()[0];
  const video = state.localStream.getVideoTracks()[0];
  if (audio) { audio.enabled = state.microphone; pc.addTransceiver(audio, { direction: 'sendonly', streams: [state.localStream] }); }
  state.cameraTransceiver = null;
  state.activeLayers = null;
  state.layout = '';
  if (video) {
    video.enabled = state.camera;
    state.cameraTransceiver = pc.addTransceiver(video, { direction: 'sendonly', streams: [state.localStream], sendEncodings: CAMERA_LAYERS.map((layer) => ({ ...layer })) });
    preferCodec(state.cameraTransceiver, state.videoCodec);
  }
  // With nothing to send, still open the connection so we receive the others.
  if (!audio && !video) pc.addTransceiver('audio', { direction: 'recvonly' });
  state.screenTransceiver = null;
  if (state.screenTrack) {
    state.screenTransceiver = pc.addTransceiver(state.screenTrack, { direction: 'sendonly' });
  }
}

function closePeerConnection() {
  clearTimeout(state.disconnectedTimer);
  if (state.pc) {
    state.pc.onconnectionstatechange = null;
    state.pc.close();
  }
  state.pc = null;
}

// Media lost for good (ICE failed): rejoin with a fresh session; the resume token keeps our
// place even in a locked room.
function restartSession() {
  if (state.ended) return;
  const old = state.ws;
  state.ws = null;
  if (old) old.close();
  scheduleReconnect();
}

async function makeOffer(pc) {
  if (pc !== state.pc) return;
  try {
    state.makingOffer = true;
    await pc.setLocalDescription();
    const screenMid = state.screenTransceiver ? state.screenTransceiver.mid : null;
    send({ type: 'offer', sdp: pc.localDescription.sdp, screen_mid: screenMid });
  } catch (error) {
    console.error('offer', error);
  } finally {
    state.makingOffer = false;
  }
}

async function serverOffer(sdp) {
  const pc = state.pc;
  if (!pc) return;
  // Polite: our own offer (if any) is rolled back; the server ignored it and we offer again.
  await pc.setRemoteDescription({ type: 'offer', sdp });
  await pc.setLocalDescription();
  send({ type: 'answer', sdp: pc.localDescription.sdp });
  if (pc.getTransceivers().some((transceiver) => !transceiver.mid && !transceiver.stopped)) makeOffer(pc);
}

async function serverAnswer(sdp) {
  const pc = state.pc;
  if (!pc || pc.signalingState !== 'have-local-offer') return;
  await pc.setRemoteDescription({ type: 'answer', sdp });
}

function attachTrack(event) {
  const stream = event.streams[0];
  if (!stream) return;
  const match = /^p(\d+)(-screen)?$/.exec(stream.id);
  if (!match) return;
  const participant = Number(match[1]);
  const kind = match[2] ? 'screen' : event.track.kind;
  state.streams.set(stream.id, stream);
  state.receivers.push({ participant, kind, receiver: event.receiver });
  render();
}

// ---------------------------------------------------------------------------------------
// Local controls

function sendMediaState() {
  send({ type: 'media', microphone: state.microphone, camera: state.camera, screen: Boolean(state.screenTrack) });
}

function setMicrophone(on, announce = true) {
  state.microphone = on;
  for (const track of state.localStream.getAudioTracks()) track.enabled = on;
  if (announce) sendMediaState();
  const me = state.participants.get(state.me);
  if (me) me.microphone = on;
  render();
}

function setCamera(on, announce = true) {
  state.camera = on;
  for (const track of state.localStream.getVideoTracks()) track.enabled = on;
  if (announce) sendMediaState();
  const me = state.participants.get(state.me);
  if (me) me.camera = on;
  render();
}

async function toggleScreen() {
  if (state.screenTrack) return stopScreen();
  let stream;
  try {
    stream = await navigator.mediaDevices.getDisplayMedia({ video: true, audio: false });
  } catch (error) {
    console.warn('getDisplayMedia', error);
    return undefined;
  }
  const track = stream.getVideoTracks()[0];
  state.screenTrack = track;
  track.onended = stopScreen;
  if (state.screenTransceiver && state.pc) {
    // Reuse the m-line from an earlier share: no renegotiation needed.
    await state.screenTransceiver.sender.replaceTrack(track);
  } else if (state.pc) {
    state.screenTransceiver = state.pc.addTransceiver(track, { direction: 'sendonly' });
  }
  sendMediaState();
  render();
  return undefined;
}

async function stopScreen() {
  if (!state.screenTrack) return;
  state.screenTrack.stop();
  state.screenTrack = null;
  if (state.screenTransceiver) await state.screenTransceiver.sender.replaceTrack(null);
  sendMediaState();
  render();
}

async function listDevices() {
  const devices = await navigator.mediaDevices.enumerateDevices();
  for (const [kind, selectId, track] of [
    ['audioinput', 'microphone-device', state.localStream.getAudioTracks()[0]],
    ['videoinput', 'camera-device', state.localStream.getVideoTracks()[0]],
  ]) {
    const select = element(selectId);
    select.replaceChildren();
    const current = track && track.getSettings().deviceId;
    for (const device of devices.filter((candidate) => candidate.kind === kind)) {
      const option = document.createElement('option');
      option.value = device.deviceId;
      option.textContent = device.label || device.deviceId.slice(0, 8);
      option.selected = device.deviceId === current;
      select.append(option);
    }
  }
}

async function switchDevice(kind, deviceId) {
  const constraints = kind === 'audio' ? { audio: { deviceId: { exact: deviceId } } } : { video: { deviceId: { exact: deviceId } } };
  let stream;
  try { stream = await navigator.mediaDevices.getUserMedia(constraints); } catch (error) { toast(t('media.denied')); return; }
  const track = stream.getTracks()[0];
  const old = kind === 'audio' ? state.localStream.getAudioTracks()[0] : state.localStream.getVideoTracks()[0];
  track.enabled = kind === 'audio' ? state.microphone : state.camera;
  if (state.pc) {
    const sender = state.pc.getSenders().find((candidate) => candidate.track && candidate.track === old);
    if (sender) await sender.replaceTrack(track);
  }
  if (old) { state.localStream.removeTrack(old); old.stop(); }
  state.localStream.addTrack(track);
  render();
}

element('toggle-microphone').onclick = () => setMicrophone(!state.microphone);
element('toggle-camera').onclick = () => setCamera(!state.camera);
element('toggle-screen').onclick = () => toggleScreen();
element('toggle-devices').onclick = async () => {
  const panel = element('devices');
  panel.hidden = !panel.hidden;
  if (!panel.hidden) await listDevices();
};
element('microphone-device').onchange = (event) => switchDevice('audio', event.target.value);
element('camera-device').onchange = (event) => switchDevice('video', event.target.value);
element('toggle-lock').onclick = () => send({ type: 'lock', locked: !state.locked });
element('leave').onclick = () => {
  send({ type: 'leave' });
  finish(t('ended.left'));
};
element('rejoin').onclick = () => {
  element('ended-view').hidden = true;
  element('join-view').hidden = false;
  element('join-submit').disabled = false;
  element('join-submit').textContent = t('join.submit');
};

// ---------------------------------------------------------------------------------------
// Rendering

function upsertParticipant(participant) {
  state.participants.set(participant.id, participant);
}

function removeParticipant(id) {
  state.participants.delete(id);
  const tile = state.tiles.get(id);
  if (tile) tile.remove();
  state.tiles.delete(id);
  state.streams.delete('p' + id);
  state.streams.delete('p' + id + '-screen');
  state.receivers = state.receivers.filter((entry) => entry.participant !== id);
}

// ---------------------------------------------------------------------------------------
// Which path our media took (the selected ICE candidate pair), reported to the server so
// the chair sees every site's path on its tile.

async function mediaPath() {
  const pc = state.pc;
  if (!pc) return null;
  const report = await pc.getStats();
  let pair = null;
  report.forEach((stats) => {
    if (stats.type === 'transport' && stats.selectedCandidatePairId) pair = report.get(stats.selectedCandidatePairId);
  });
  if (!pair) return null;
  const local = report.get(pair.localCandidateId);
  if (!local) return null;
  if (local.candidateType === 'relay') {
    const relay = ['udp', 'tcp', 'tls'].includes(local.relayProtocol) ? local.relayProtocol : 'udp';
    return { path: 'turn-' + relay, url: local.url || null };
  }
  return { path: local.protocol === 'tcp' ? 'tcp' : 'udp', url: null };
}

setInterval(async () => {
  if (state.me === null || !state.pc) return;
  const found = await mediaPath().catch(() => null);
  if (found && found.path !== state.path) {
    state.path = found.path;
    send({ type: 'path', path: found.path });
    render();
  }
}, 2000);

// ---------------------------------------------------------------------------------------
// For operators' diagnostics and the end-to-end tests: receive statistics per participant.

async function receiveStats() {
  const result = {};
  for (const { participant, kind, receiver } of state.receivers) {
    if (!state.participants.has(participant)) continue;
    const entry = result[participant] || (result[participant] = { framesDecoded: 0, audioBytesReceived: 0, screenFramesDecoded: 0, frameWidth: 0, packetsReceived: 0, packetsLost: 0, freezeCount: 0, totalFreezesDuration: 0, concealedSamples: 0, totalSamplesReceived: 0 });
    const report = await receiver.getStats();
    report.forEach((stats) => {
      if (stats.type !== 'inbound-rtp') return;
      entry.packetsReceived += stats.packetsReceived || 0;
      entry.packetsLost += stats.packetsLost || 0;
      if (kind === 'audio') {
        entry.audioBytesReceived += stats.bytesReceived || 0;
        entry.concealedSamples += stats.concealedSamples || 0;
        entry.totalSamplesReceived += stats.totalSamplesReceived || 0;
      } else if (kind === 'video') {
        entry.framesDecoded += stats.framesDecoded || 0;
        entry.freezeCount += stats.freezeCount || 0;
        entry.totalFreezesDuration += stats.totalFreezesDuration || 0;
        entry.frameWidth = Math.max(entry.frameWidth, stats.frameWidth || 0);
        const codec = stats.codecId && report.get(stats.codecId);
        if (codec && codec.mimeType && (stats.framesDecoded || 0) > 0) entry.videoCodec = codec.mimeType;
      }
      else entry.screenFramesDecoded += stats.framesDecoded || 0;
    });
  }
  return result;
}

// The connection indicator on each tile: how the media from that site reaches us (loss
// and frame rate over the last two seconds); on our own tile, how the server's estimate of
// our link reads (audio-only is poor).
const previousReception = new Map();
async function updateConnectionIndicators() {
  if (state.me === null || !state.pc) return;
  const current = await receiveStats().catch(() => ({}));
  for (const [id, tile] of state.tiles) {
    const dot = tile.querySelector('.connection');
    let quality = 'unknown';
    if (id === state.me) {
      quality = state.audioOnly ? 'poor' : state.pc.connectionState === 'connected' ? 'good' : 'unknown';
    } else if (current[id]) {
      const now = current[id];
      const before = previousReception.get(id);
      previousReception.set(id, now);
      if (before) {
        const received = now.packetsReceived - before.packetsReceived;
        const lost = Math.max(0, now.packetsLost - before.packetsLost);
        const loss = received + lost > 0 ? lost / (received + lost) : 0;
        const frames = now.framesDecoded - before.framesDecoded;
        const participant = state.participants.get(id);
        // A site outside last-N sends us no video by design.
        const expectsVideo = participant && participant.camera && (state.lastN === null || state.lastN.includes(id));
        // Nothing at all from a site with its camera off is silence (only the loudest
        // voices are forwarded), not a bad link.
        if (received === 0) quality = expectsVideo ? 'poor' : 'unknown';
        else if (loss > 0.08 || (expectsVideo && frames === 0)) quality = 'poor';
        else if (loss > 0.02) quality = 'fair';
        else quality = 'good';
      }
    }
    dot.dataset.quality = quality;
    dot.title = t('connection.' + quality);
  }
}
setInterval(updateConnectionIndicators, 2000);

window.lienthong = {
  state,
  send,
  receiveStats,
  mediaPath,
  lastRefusal: () => lastRefusal,
  toggleScreen,
  setMicrophone,
};

lienthongI18n.onChange(render);
lienthongI18n.apply();
render();
loadRoom();
