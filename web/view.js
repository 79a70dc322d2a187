// The meeting page's view: tiles, the stage for screen shares, buttons, notices.
// Loaded before room.js, which owns the state and calls render() when it changes.
'use strict';

function tileFor(id) {
  let tile = state.tiles.get(id);
  if (tile) return tile;
  tile = element('tile-template').content.firstElementChild.cloneNode(true);
  tile.dataset.participant = String(id);
  tile.querySelectorAll('.chair-controls button').forEach((button) => {
    button.onclick = () => chairAction(button.dataset.action, id);
  });
  element('tiles').append(tile);
  state.tiles.set(id, tile);
  return tile;
}

function chairAction(action, id) {
  const participant = state.participants.get(id);
  if (action === 'remove') {
    if (!confirm(t('chair.confirm_remove', { name: participant ? participant.name : id }))) return;
    send({ type: 'remove', participant: id });
  } else if (action === 'spotlight') {
    send({ type: 'spotlight', participant: state.spotlight === id ? null : id });
  } else {
    send({ type: action, participant: id });
  }
}

function render() {
  element('locked-badge').hidden = !state.locked;
  const isChair = state.role === 'chair';
  for (const [id, participant] of state.participants) {
    const tile = tileFor(id);
    const self = id === state.me;
    tile.classList.toggle('self', self);
    tile.classList.toggle('speaking', state.speaker === id);
    tile.classList.toggle('spotlighted', state.spotlight === id);
    tile.querySelector('.site').textContent = participant.site;
    tile.querySelector('.name').textContent = participant.name + (self ? ' ' + t('tile.you') : '');
    const badge = tile.querySelector('.chair-badge');
    badge.hidden = participant.role !== 'chair';
    badge.textContent = t('tile.chair');
    // A stopped camera would freeze on its last frame: show the site instead.
    tile.classList.toggle('camera-off', !participant.camera);
    tile.querySelector('.placeholder').textContent = participant.site;
    const mutedIcon = tile.querySelector('.muted-icon');
    mutedIcon.hidden = participant.microphone;
    mutedIcon.textContent = t('tile.microphone_off');
    const cameraIcon = tile.querySelector('.camera-icon');
    cameraIcon.hidden = participant.camera;
    cameraIcon.textContent = t('tile.camera_off');
    // The chair sees how each site's media arrives (and everyone sees their own).
    const pathBadge = tile.querySelector('.path-badge');
    const path = self ? state.path : participant.path;
    pathBadge.hidden = !path || !(isChair || self);
    pathBadge.dataset.path = path || '';
    pathBadge.textContent = path ? t('path.' + path) : '';
    const video = tile.querySelector('video');
    const stream = self ? state.localStream : state.streams.get('p' + id);
    if (stream && video.srcObject !== stream) video.srcObject = stream;
    video.muted = self;
    const controls = tile.querySelector('.chair-controls');
    controls.hidden = !isChair || self;
    controls.querySelector('[data-action="mute"]').textContent = t('chair.mute');
    controls.querySelector('[data-action="stop_camera"]').textContent = t('chair.stop_camera');
    controls.querySelector('[data-action="remove"]').textContent = t('chair.remove');
    controls.querySelector('[data-action="spotlight"]').textContent = state.spotlight === id ? t('chair.unspotlight') : t('chair.spotlight');
  }
  element('tiles').classList.toggle('spotlight', state.spotlight !== null && state.participants.has(state.spotlight));

  // A screen share takes the stage; our own is shown to us too.
  const sharer = [...state.participants.values()].find((participant) => participant.screen && (participant.id === state.me ? state.screenTrack : state.streams.get('p' + participant.id + '-screen')));
  element('stage').hidden = !sharer;
  if (sharer) {
    const stageVideo = element('stage-video');
    const stream = sharer.id === state.me ? new MediaStream([state.screenTrack]) : state.streams.get('p' + sharer.id + '-screen');
    if (sharer.id !== state.me || !stageVideo.srcObject || stageVideo.srcObject.getTracks()[0] !== state.screenTrack) {
      if (stageVideo.srcObject !== stream) stageVideo.srcObject = stream;
    }
    element('stage-label').textContent = t('tile.screen', { name: sharer.site + ' · ' + sharer.name });
  }

  const microphoneButton = element('toggle-microphone');
  microphoneButton.textContent = state.microphone ? t('controls.mic_on') : t('controls.mic_off');
  microphoneButton.classList.toggle('off', !state.microphone);
  const cameraButton = element('toggle-camera');
  cameraButton.textContent = state.camera ? t('controls.camera_on') : t('controls.camera_off');
  cameraButton.classList.toggle('off', !state.camera);
  element('toggle-screen').textContent = state.screenTrack ? t('controls.screen_stop') : t('controls.screen_start');
  const lockButton = element('toggle-lock');
  lockButton.hidden = !isChair;
  lockButton.textContent = state.locked ? t('controls.unlock') : t('controls.lock');
  reportLayout();
}

let bannerTimer = null;
function banner(text, ok = false) {
  const box = element('banner');
  clearTimeout(bannerTimer);
  box.hidden = !text;
  box.textContent = text || '';
  box.classList.toggle('ok', ok);
  if (ok && text) bannerTimer = setTimeout(() => { box.hidden = true; }, 4000);
}

let toastTimer = null;
function toast(text) {
  const box = element('toast');
  box.textContent = text;
  box.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { box.hidden = true; }, 5000);
}
