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
  renderNameTiles();

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

// Sites per page of those shown by name: two rows on a desk screen.
const NAMES_PER_PAGE = 24;

// Last-N: the server sends the cameras of the spotlight, the active speaker and the most
// recent speakers (up to the room's last_n); every other site is a small name tile, a page
// of them at a time, with its controls (the chair can still give it the floor).
function renderNameTiles() {
  const named = [];
  for (const [id, tile] of state.tiles) {
    const nameOnly = state.lastN !== null && id !== state.me && id !== state.spotlight && !state.lastN.includes(id);
    tile.classList.toggle('name-only', nameOnly);
    if (nameOnly) named.push(tile);
    else tile.hidden = false;
  }
  const pages = Math.max(1, Math.ceil(named.length / NAMES_PER_PAGE));
  state.namePage = Math.min(state.namePage, pages - 1);
  named.forEach((tile, index) => { tile.hidden = Math.floor(index / NAMES_PER_PAGE) !== state.namePage; });
  element('name-pager').hidden = named.length === 0;
  element('name-count').textContent = t('names.heading', { count: named.length });
  element('name-page').textContent = t('names.page', { page: state.namePage + 1, pages });
  element('name-page').hidden = pages === 1;
  const previous = element('name-previous');
  const next = element('name-next');
  previous.textContent = t('names.previous');
  next.textContent = t('names.next');
  previous.hidden = next.hidden = pages === 1;
  previous.disabled = state.namePage === 0;
  next.disabled = state.namePage === pages - 1;
}

function turnNamePage(step) {
  state.namePage = Math.max(0, state.namePage + step);
  render();
}
document.getElementById('name-previous').onclick = () => turnNamePage(-1);
document.getElementById('name-next').onclick = () => turnNamePage(1);

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
