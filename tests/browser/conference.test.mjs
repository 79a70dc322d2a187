// End-to-end: the real lienthong binary and three headless Chromium participants with fake
// cameras and microphones, all on loopback.
//
// Run: tests/browser/run.sh (installs Chromium and playwright-core when missing).
// LIENTHONG_BIN (or LIENTHONG_BINARY) overrides the binary (default: target/debug/lienthong);
// CHROMIUM overrides the browser (default: /usr/bin/chromium);
// SCREENSHOT_DIR keeps the screenshots (default: a temporary directory).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { freePort, makeWaitFor } from './helpers.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const binary = process.env.LIENTHONG_BIN || process.env.LIENTHONG_BINARY || resolve(here, '../../target/debug/lienthong');
const browserPath = process.env.CHROMIUM || '/usr/bin/chromium';
const ROOM = 'giao-ban';
const PIN = '246810';
const CHAIR_PIN = '135790';
// A room whose pages publish H.264.
const H264_ROOM = 'hop-h264';
// A room with last_n = 1: each browser receives one camera, the other sites by name.
const COMMUNE_ROOM = 'hop-xa';

let server;
let serverLog = '';
let workDir;
let baseUrl;
let adminUrl;
let browser;
const pages = {};

const waitFor = makeWaitFor(() => serverLog, { timeoutMs: 20000, intervalMs: 200 });

before(async () => {
  assert.ok(existsSync(binary), `lienthong binary not found at ${binary}: run \`cargo build\` first or set LIENTHONG_BIN`);
  assert.ok(existsSync(browserPath), `Chromium not found at ${browserPath}: run tests/browser/run.sh (it installs Debian's chromium) or set CHROMIUM`);
  workDir = mkdtempSync(join(tmpdir(), 'lienthong-browser-'));
  const [pagePort, mediaPort, adminPort] = [await freePort(), await freePort(), await freePort()];
  const config = `
[server]
hostname = "hub.ninhthuan.gov.vn"
addresses = ["127.0.0.1"]
state_dir = "${join(workDir, 'state')}"
[admin]
listen = "127.0.0.1:${adminPort}"
[dns]
enabled = false
[mail]
enabled = false
[conference]
listen = "127.0.0.1:${pagePort}"
media_port = ${mediaPort}
[[conference.room]]
name = "${ROOM}"
title = "Họp giao ban UBND tỉnh"
pin = "${PIN}"
chair_pin = "${CHAIR_PIN}"
sites = ["UBND tỉnh", "Huyện A", "Huyện B"]
max_participants = 50
[[conference.room]]
name = "${COMMUNE_ROOM}"
title = "Họp trực tuyến với các xã"
pin = "${PIN}"
chair_pin = "${CHAIR_PIN}"
sites = ["UBND tỉnh", "Xã Phước Dinh", "Xã Nhị Hà"]
last_n = 1
[[conference.room]]
name = "${H264_ROOM}"
title = "Họp trực tuyến (H.264)"
pin = "${PIN}"
chair_pin = "${CHAIR_PIN}"
sites = ["UBND tỉnh", "Huyện Ninh Hải"]
video_codec = "h264"
`;
  const configPath = join(workDir, 'lienthong.toml');
  writeFileSync(configPath, config);
  server = spawn(binary, ['run', '--config', configPath], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, RUST_LOG: process.env.RUST_LOG || 'info' } });
  server.stdout.on('data', (chunk) => { serverLog += chunk; });
  server.stderr.on('data', (chunk) => { serverLog += chunk; });
  baseUrl = `http://127.0.0.1:${pagePort}`;
  adminUrl = `http://127.0.0.1:${adminPort}`;
  await waitFor('the conference page', async () => (await fetch(`${baseUrl}/api/rooms`)).ok);

  browser = await chromium.launch({
    executablePath: browserPath,
    headless: true,
    args: [
      '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      '--use-fake-ui-for-media-stream', '--use-fake-device-for-media-stream',
      '--autoplay-policy=no-user-gesture-required',
      '--auto-select-desktop-capture-source=Entire screen',
    ],
  });
});

after(async () => {
  // SERVER_LOG keeps the whole server log (failures print only its end).
  if (process.env.SERVER_LOG) writeFileSync(process.env.SERVER_LOG, serverLog);
  if (browser) await browser.close().catch(() => {});
  if (server && server.exitCode === null) {
    server.kill('SIGTERM');
    await new Promise((done) => {
      const timer = setTimeout(() => { server.kill('SIGKILL'); done(); }, 10000);
      server.once('exit', () => { clearTimeout(timer); done(); });
    });
  }
  if (workDir) rmSync(workDir, { recursive: true, force: true });
});

async function openPage(room = ROOM) {
  const context = await browser.newContext({ permissions: ['camera', 'microphone'], viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
  page.on('pageerror', (error) => console.error('page error:', error.message));
  await page.goto(`${baseUrl}/r/${room}`);
  await page.waitForSelector('#join-site option', { state: 'attached' });
  return page;
}

async function fillJoin(page, name, site, pin) {
  await page.fill('#join-name', name);
  await page.selectOption('#join-site', site);
  await page.fill('#join-pin', pin);
  await page.click('#join-submit');
}

async function joinRoom(name, site, pin, room = ROOM) {
  const page = await openPage(room);
  await fillJoin(page, name, site, pin);
  await page.waitForFunction(() => window.lienthong.state.me !== null, null, { timeout: 15000 });
  return page;
}

/** Sum of a counter over all its label sets in Prometheus text. */
function counterSum(metrics, name) {
  return metrics.split('\n').filter((line) => line.startsWith(name + '{')).reduce((sum, line) => sum + Number(line.split(' ').pop()), 0);
}

function cpuSeconds(pid) {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100; // utime + stime, in USER_HZ (100)
}

/** Prints what the server forwards and what it costs for three participants. */
async function measure() {
  const sample = async () => ({ at: Date.now(), cpu: cpuSeconds(server.pid), metrics: await (await fetch(`${adminUrl}/metrics`)).text() });
  const first = await sample();
  await new Promise((done) => setTimeout(done, 5000));
  const second = await sample();
  const seconds = (second.at - first.at) / 1000;
  const rate = (name) => (counterSum(second.metrics, name) - counterSum(first.metrics, name)) / seconds;
  console.log(`figures (3 participants, debug build): ${rate('lienthong_conference_forwarded_packets_total').toFixed(0)} packets/s and `
    + `${(rate('lienthong_conference_forwarded_bytes_total') * 8 / 1e6).toFixed(2)} Mbit/s forwarded, `
    + `server CPU ${(100 * (second.cpu - first.cpu) / seconds).toFixed(1)}% of one core`);
}

const myId = (page) => page.evaluate(() => window.lienthong.state.me);
const stats = (page) => page.evaluate(() => window.lienthong.receiveStats());
const tileIds = (page) => page.$$eval('#tiles .tile', (tiles) => tiles.map((tile) => Number(tile.dataset.participant)).sort());

test('the room list shows the configured rooms', async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(`${baseUrl}/`);
  await page.waitForSelector('#rooms li');
  assert.equal(await page.textContent('#rooms li a'), 'Họp giao ban UBND tỉnh');
  assert.equal(await page.getAttribute('#rooms li a', 'href'), `/r/${ROOM}`);
  await context.close();
});

test('the join form retries room details a dropped link did not deliver, and says so', async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  let dropped = 0;
  await page.route(`**/api/rooms/${ROOM}`, (route) => (dropped++ < 2 ? route.abort('failed') : route.continue()));
  await page.goto(`${baseUrl}/r/${ROOM}`);
  await waitFor('the retry notice', async () => (await page.textContent('#banner')) === 'Chưa kết nối được máy chủ. Đang thử lại…');
  await page.waitForSelector('#join-site option', { state: 'attached', timeout: 15000 });
  assert.equal(dropped, 3, 'two requests dropped, the third answered');
  assert.equal(await page.isHidden('#join-error'), true, 'a dropped request is not an unknown room');
  assert.equal(await page.isHidden('#banner'), true);
  await context.close();
});

test('an unknown room says so', async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(`${baseUrl}/r/khong-co`);
  await page.waitForSelector('#join-error:not([hidden])');
  assert.equal(await page.textContent('#join-error'), 'Phòng họp này không tồn tại.');
  await context.close();
});

test('a wrong PIN is refused with a clear message', async () => {
  const page = await openPage();
  await fillJoin(page, 'Người thử', 'Huyện A', '000000');
  await page.waitForSelector('#join-error:not([hidden])');
  assert.equal(await page.$eval('#join-error', (box) => box.dataset.reason), 'wrong_pin');
  assert.equal(await page.$eval('#join-error', (box) => box.textContent), 'Mã PIN không đúng.');
  assert.equal(await page.isHidden('#meeting-view'), true);
  await page.context().close();
});

test('three participants receive and decode each other\'s video and audio', async () => {
  pages.chair = await joinRoom('Trần Văn Chủ', 'UBND tỉnh', CHAIR_PIN);
  pages.a = await joinRoom('Lê Thị An', 'Huyện A', PIN);
  pages.b = await joinRoom('Phạm Văn Bình', 'Huyện B', PIN);
  const ids = { chair: await myId(pages.chair), a: await myId(pages.a), b: await myId(pages.b) };
  pages.ids = ids;
  const all = Object.values(ids).sort();
  for (const [who, page] of Object.entries({ chair: pages.chair, a: pages.a, b: pages.b })) {
    await waitFor(`${who} to show three tiles`, async () => JSON.stringify(await tileIds(page)) === JSON.stringify(all));
    const others = all.filter((id) => id !== ids[who]);
    const first = await waitFor(`${who} to decode the others' media`, async () => {
      const current = await stats(page);
      return others.every((id) => current[id] && current[id].framesDecoded > 0 && current[id].audioBytesReceived > 0) && current;
    });
    await waitFor(`${who}'s received media to keep flowing`, async () => {
      const current = await stats(page);
      return others.every((id) => current[id].framesDecoded > first[id].framesDecoded
        && current[id].audioBytesReceived > first[id].audioBytesReceived);
    });
  }
  for (const page of [pages.chair, pages.a, pages.b]) {
    await waitFor('an active speaker highlight (from server-side audio levels)', () => page.$('#tiles .tile.speaking'));
  }
  await measure();
  const metrics = await (await fetch(`${adminUrl}/metrics`)).text();
  for (const name of ['lienthong_conference_forwarded_packets_total', 'lienthong_conference_forwarded_bytes_total']) {
    assert.match(metrics, new RegExp(`${name}\\{[^}]*room="${ROOM}"[^}]*\\} [1-9]`), `${name} missing from /metrics`);
  }
  assert.match(metrics, new RegExp(`lienthong_conference_participants\\{room="${ROOM}"\\} 3`));
  // The operator's listing: the room, its three participants and their connections.
  const listing = await waitFor('the admin listing to show the connections', async () => {
    // Everything but /metrics and /healthz needs the admin token lienthong keeps in state_dir.
    const token = readFileSync(join(workDir, 'state', 'admin.token'), 'utf8').trim();
    const rooms = await (await fetch(`${adminUrl}/conference`, { headers: { authorization: `Bearer ${token}` } })).json();
    const room = rooms.find((candidate) => candidate.name === ROOM);
    return room && room.participants.length === 3 && room.participants.every((p) => p.estimate_kbps > 0 && p.quality !== 'unknown'
      && p.sending_kbps > 0 && Number.isInteger(p.loss_permille) && Number.isInteger(p.rtt_ms)) && room;
  });
  assert.ok(listing.forwarded_packets > 0);
  // The room's link gauges: what the publishers send in, and its weakest link.
  const gauges = await (await fetch(`${adminUrl}/metrics`)).text();
  assert.match(gauges, new RegExp(`lienthong_conference_received_bps\\{room="${ROOM}"\\} [1-9]`));
  for (const name of ['worst_loss_ratio', 'lowest_estimate_bps', 'audio_only_participants']) {
    assert.match(gauges, new RegExp(`lienthong_conference_${name}\\{room="${ROOM}"\\} `), `${name} missing from /metrics`);
  }
  assert.deepEqual(listing.participants.map((p) => p.id).sort(), all);
  // Each page shows how every other site's media reaches it.
  for (const page of [pages.chair, pages.a, pages.b]) {
    await waitFor('a connection indicator on every other tile', async () => {
      const qualities = await page.$$eval('#tiles .tile:not(.self) .connection', (dots) => dots.map((dot) => dot.dataset.quality));
      return qualities.length === 2 && qualities.every((quality) => quality === 'good' || quality === 'fair');
    });
  }
  const shots = process.env.SCREENSHOT_DIR || workDir;
  await pages.chair.screenshot({ path: join(shots, 'three-participants.png') });
  console.log(`screenshot: ${join(shots, 'three-participants.png')}`);
});

test('the chair mutes a participant and its audio stops reaching the others', async () => {
  const { ids } = pages;
  await pages.chair.click(`#tiles .tile[data-participant="${ids.a}"] [data-action="mute"]`);
  await waitFor('A to see it was muted', () => pages.a.evaluate(() => window.lienthong.state.microphone === false));
  await waitFor('B to show A muted', () => pages.b.$eval(`#tiles .tile[data-participant="${ids.a}"] .muted-icon`, (icon) => !icon.hidden));
  // Let packets already in flight drain, then A's audio must stand still at B and at the
  // chair while the chair's audio keeps arriving at B.
  await new Promise((done) => setTimeout(done, 1000));
  const before = { b: await stats(pages.b), chair: await stats(pages.chair) };
  await new Promise((done) => setTimeout(done, 2500));
  const after = { b: await stats(pages.b), chair: await stats(pages.chair) };
  assert.equal(after.b[ids.a].audioBytesReceived, before.b[ids.a].audioBytesReceived, 'A\'s audio still reaches B');
  assert.equal(after.chair[ids.a].audioBytesReceived, before.chair[ids.a].audioBytesReceived, 'A\'s audio still reaches the chair');
  assert.ok(after.b[ids.chair].audioBytesReceived > before.b[ids.chair].audioBytesReceived, 'the chair\'s audio stopped too');
  assert.ok(after.b[ids.a].framesDecoded > before.b[ids.a].framesDecoded, 'A\'s video stopped too');
});

test('a participant\'s attempt to mute someone is refused by the server', async () => {
  const { ids } = pages;
  await pages.b.evaluate((chair) => window.lienthong.send({ type: 'mute', participant: chair }), ids.chair);
  await waitFor('the refusal', () => pages.b.evaluate(() => window.lienthong.lastRefusal() === 'not_chair'));
  assert.equal(await pages.b.isVisible('#toast'), true);
  const first = await stats(pages.a);
  await waitFor('the chair\'s audio to keep reaching A', async () => (await stats(pages.a))[ids.chair].audioBytesReceived > first[ids.chair].audioBytesReceived);
  assert.equal(await pages.chair.evaluate(() => window.lienthong.state.microphone), true);
  // No chair controls are offered to a participant either.
  assert.equal(await pages.b.isHidden(`#tiles .tile[data-participant="${ids.chair}"] .chair-controls`), true);
});

test('a screen share reaches the others and is shown large', async () => {
  const { ids } = pages;
  await pages.a.click('#toggle-screen');
  await waitFor('A to share its screen', () => pages.a.evaluate(() => Boolean(window.lienthong.state.screenTrack)));
  for (const [who, page] of [['chair', pages.chair], ['b', pages.b]]) {
    const first = await waitFor(`${who} to decode A's screen`, async () => {
      const current = await stats(page);
      return current[ids.a] && current[ids.a].screenFramesDecoded > 0 && current;
    });
    await waitFor(`${who} to keep decoding A's screen`, async () => (await stats(page))[ids.a].screenFramesDecoded > first[ids.a].screenFramesDecoded);
    await waitFor(`${who} to show the screen on the stage`, () => page.isVisible('#stage'));
  }
  await pages.chair.screenshot({ path: join(process.env.SCREENSHOT_DIR || workDir, 'screen-share.png') });
});

test('the chair gives the floor to a site for everyone', async () => {
  const { ids } = pages;
  await pages.chair.click(`#tiles .tile[data-participant="${ids.b}"] [data-action="spotlight"]`);
  for (const page of [pages.a, pages.b, pages.chair]) {
    await waitFor('the spotlight layout', () => page.$eval(`#tiles .tile[data-participant="${ids.b}"]`, (tile) => tile.classList.contains('spotlighted') && tile.parentElement.classList.contains('spotlight')));
  }
  await pages.chair.click(`#tiles .tile[data-participant="${ids.b}"] [data-action="spotlight"]`);
  await waitFor('the spotlight to end', () => pages.a.$eval('#tiles', (tiles) => !tiles.classList.contains('spotlight')));
});

test('the chair locks the room and a newcomer is told so', async () => {
  await pages.chair.click('#toggle-lock');
  await waitFor('the locked badge', () => pages.a.isVisible('#locked-badge'));
  const late = await openPage();
  await fillJoin(late, 'Người đến muộn', 'Huyện B', PIN);
  await late.waitForSelector('#join-error:not([hidden])');
  assert.equal(await late.textContent('#join-error'), 'Chủ trì đã khoá phòng họp.');
  await late.context().close();
  await pages.chair.click('#toggle-lock');
  await waitFor('the room to open again', () => pages.a.isHidden('#locked-badge'));
});

test('after its connection drops a page rejoins by itself and says so', async () => {
  const { ids } = pages;
  await pages.a.evaluate(() => window.lienthong.state.ws.close());
  await waitFor('the reconnecting notice', () => pages.a.$eval('#banner', (banner) => !banner.hidden && banner.textContent.includes('kết nối lại')));
  await waitFor('A to be back', () => pages.a.evaluate((old) => window.lienthong.state.me !== null && window.lienthong.state.me !== old, ids.a));
  await waitFor('the reconnected notice', () => pages.a.$eval('#banner', (banner) => banner.textContent === 'Đã kết nối lại.'));
  ids.a = await myId(pages.a);
  for (const [who, page] of [['chair', pages.chair], ['b', pages.b]]) {
    const first = await waitFor(`${who} to decode A again`, async () => {
      const current = await stats(page);
      return current[ids.a] && current[ids.a].framesDecoded > 0 && current;
    });
    await waitFor(`${who} to keep decoding A`, async () => (await stats(page))[ids.a].framesDecoded > first[ids.a].framesDecoded);
  }
  // A drops B's and the chair's old tiles and shows them again with their media.
  const first = await waitFor('A to decode the others again', async () => {
    const current = await stats(pages.a);
    return [ids.chair, ids.b].every((id) => current[id] && current[id].framesDecoded > 0 && current[id].audioBytesReceived > 0) && current;
  });
  await waitFor('A to keep decoding the others', async () => (await stats(pages.a))[ids.b].framesDecoded > first[ids.b].framesDecoded);
});

test('the chair stops a participant\'s camera and the others show its site instead', async () => {
  const { ids } = pages;
  await pages.chair.click(`#tiles .tile[data-participant="${ids.b}"] [data-action="stop_camera"]`);
  await waitFor('B to see its camera was stopped', () => pages.b.evaluate(() => window.lienthong.state.camera === false));
  await waitFor('A to show B\'s site instead of a frozen picture', () => pages.a.$eval(`#tiles .tile[data-participant="${ids.b}"]`, (tile) => tile.classList.contains('camera-off')));
  await new Promise((done) => setTimeout(done, 1000));
  const before = await stats(pages.a);
  await new Promise((done) => setTimeout(done, 2000));
  const after = await stats(pages.a);
  assert.equal(after[ids.b].framesDecoded, before[ids.b].framesDecoded, 'B\'s video still reaches A');
  assert.ok(after[ids.b].audioBytesReceived > before[ids.b].audioBytesReceived, 'B\'s audio stopped too');
  // B turns its camera back on by itself.
  const clicked = Date.now();
  await pages.b.click('#toggle-camera');
  await waitFor('B\'s video to reach A again', async () => (await stats(pages.a))[ids.b].framesDecoded > after[ids.b].framesDecoded, 30000, 100);
  console.log(`B's camera back on A's page ${Date.now() - clicked} ms after B switched it on`);
});

test('the page switches to English and back', async () => {
  assert.equal(await pages.b.textContent('#leave'), 'Rời phòng');
  await pages.b.click('#language');
  assert.equal(await pages.b.textContent('#leave'), 'Leave');
  assert.equal(await pages.b.textContent('#language'), 'Tiếng Việt');
  await pages.b.click('#language');
  assert.equal(await pages.b.textContent('#leave'), 'Rời phòng');
});

test('a participant switches microphone and camera devices while in the meeting', async () => {
  const { ids } = pages;
  await pages.b.click('#toggle-devices');
  await pages.b.waitForSelector('#microphone-device option', { state: 'attached' });
  const microphones = await pages.b.$$eval('#microphone-device option', (options) => options.map((option) => option.value));
  const cameras = await pages.b.$$eval('#camera-device option', (options) => options.map((option) => option.value));
  assert.ok(microphones.length >= 1 && cameras.length >= 1, 'no devices listed');
  const current = await pages.b.$eval('#microphone-device', (select) => select.value);
  const other = microphones.find((id) => id !== current) || current;
  await pages.b.selectOption('#microphone-device', other);
  await waitFor('the new microphone to be in use', () => pages.b.evaluate((id) => window.lienthong.state.localStream.getAudioTracks()[0].getSettings().deviceId === id, other));
  const first = await stats(pages.chair);
  // B's camera came back in the test before; with last-N the chair's page shows it as a video
  // tile again only once told, then reports its layout, and the next keyframe starts it: on a
  // loaded runner that takes longer than the default wait.
  await waitFor('B\'s audio and video to keep reaching the chair', async () => {
    const current = await stats(pages.chair);
    return current[ids.b].audioBytesReceived > first[ids.b].audioBytesReceived && current[ids.b].framesDecoded > first[ids.b].framesDecoded;
  }, 60000);
});

test('a participant who leaves disappears from the others\' pages', async () => {
  const { ids } = pages;
  await pages.b.click('#leave');
  await waitFor('B\'s page to say it left', () => pages.b.isVisible('#ended-view'));
  const remaining = [ids.chair, ids.a].sort();
  for (const [who, page] of [['chair', pages.chair], ['a', pages.a]]) {
    await waitFor(`${who} to drop B's tile`, async () => JSON.stringify(await tileIds(page)) === JSON.stringify(remaining));
  }
});

test('the chair removes a participant, whose page says why', async () => {
  const { ids } = pages;
  pages.chair.once('dialog', (dialog) => dialog.accept());
  await pages.chair.click(`#tiles .tile[data-participant="${ids.a}"] [data-action="remove"]`);
  await waitFor('A\'s page to say it was removed', () => pages.a.isVisible('#ended-view'));
  assert.equal(await pages.a.textContent('#ended-message'), 'Chủ trì đã mời bạn ra khỏi phòng.');
  await waitFor('the chair to drop A\'s tile', async () => JSON.stringify(await tileIds(pages.chair)) === JSON.stringify([ids.chair]));
  // A removed page does not come back by itself.
  await new Promise((done) => setTimeout(done, 1500));
  assert.equal(await pages.a.evaluate(() => window.lienthong.state.me), null);
});

test('simulcast: the spotlight on a desk screen gets a high layer of a 1280x720 camera and a phone the lowest', async () => {
  // Chromium's fake camera is 640x480, too small for three layers: feed it a 1280x720 file.
  const y4m = join(workDir, 'camera-720p.y4m');
  execFileSync('ffmpeg', ['-loglevel', 'error', '-y', '-f', 'lavfi', '-i', 'testsrc2=size=1280x720:rate=15', '-t', '2', '-pix_fmt', 'yuv420p', y4m]);
  const hd = await chromium.launch({
    executablePath: browserPath,
    headless: true,
    args: [
      '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      '--use-fake-ui-for-media-stream', '--use-fake-device-for-media-stream',
      `--use-file-for-fake-video-capture=${y4m}`, '--autoplay-policy=no-user-gesture-required',
    ],
  });
  try {
    const context = await hd.newContext({ permissions: ['camera', 'microphone'], viewport: { width: 1280, height: 800 } });
    const publisher = await context.newPage();
    publisher.on('pageerror', (error) => console.error('page error:', error.message));
    await publisher.goto(`${baseUrl}/r/${ROOM}`);
    await publisher.waitForSelector('#join-site option', { state: 'attached' });
    await fillJoin(publisher, 'Camera HD', 'UBND tỉnh', PIN);
    await publisher.waitForFunction(() => window.lienthong.state.me !== null, null, { timeout: 15000 });
    const publisherId = await myId(publisher);

    // The chair gives the floor to the HD site: a large tile on the chair's desk screen.
    const large = await joinRoom('Chủ trì màn hình lớn', 'Huyện A', CHAIR_PIN);
    await large.evaluate((id) => window.lienthong.send({ type: 'spotlight', participant: id }), publisherId);
    const smallContext = await browser.newContext({ permissions: ['camera', 'microphone'], viewport: { width: 360, height: 640 } });
    const small = await smallContext.newPage();
    await small.goto(`${baseUrl}/r/${ROOM}`);
    await small.waitForSelector('#join-site option', { state: 'attached' });
    await fillJoin(small, 'Điện thoại', 'Huyện B', PIN);
    await small.waitForFunction(() => window.lienthong.state.me !== null, null, { timeout: 15000 });

    const widthOn = async (page) => ((await stats(page))[publisherId] || { frameWidth: 0, framesDecoded: 0 });
    const high = await waitFor('the large tile to decode a high layer (>= 640 wide)', async () => {
      const current = await widthOn(large);
      if (process.env.DEBUG_SIMULCAST) console.log('large', JSON.stringify(current), await large.evaluate(() => window.lienthong.state.layout));
      return current.framesDecoded > 0 && current.frameWidth >= 640 && current;
    }, 90000, 500);
    const low = await waitFor('the thumbnail to decode the lowest layer (<= 320 wide)', async () => {
      const current = await widthOn(small);
      if (process.env.DEBUG_SIMULCAST) console.log('small', JSON.stringify(current), await small.evaluate(() => window.lienthong.state.layout));
      return current.framesDecoded > 0 && current.frameWidth > 0 && current.frameWidth <= 320 && current;
    }, 60000, 500);
    console.log(`simulcast: large tile ${high.frameWidth}px wide, thumbnail ${low.frameWidth}px wide`);
    await large.close();
    await smallContext.close();
  } finally {
    await hd.close().catch(() => {});
  }
});

test('last-N: in a room with last_n = 1 each site receives one camera, shows the others by name, and the spotlight takes the place', async () => {
  const chair = await joinRoom('Chủ trì', 'UBND tỉnh', CHAIR_PIN, COMMUNE_ROOM);
  const first = await joinRoom('Cán bộ xã', 'Xã Phước Dinh', PIN, COMMUNE_ROOM);
  const second = await joinRoom('Cán bộ xã', 'Xã Nhị Hà', PIN, COMMUNE_ROOM);
  try {
    // Microphones off: the fake devices all beep alike, and the active speaker (which moves
    // cameras into last-N, tested in sfu/src/conference/tests.rs) would move between them.
    for (const page of [chair, first, second]) await page.evaluate(() => window.lienthong.setMicrophone(false));
    const [chairId, firstId, secondId] = await Promise.all([chair, first, second].map(myId));
    const nameTiles = (page) => page.$$eval('#tiles .tile.name-only', (tiles) => tiles.map((tile) => Number(tile.dataset.participant)));
    const lastN = (page) => page.evaluate(() => window.lienthong.state.lastN);
    for (const [who, page, me] of [['chair', chair, chairId], ['first', first, firstId], ['second', second, secondId]]) {
      const video = await waitFor(`${who} to be told its one camera`, async () => {
        const list = await lastN(page);
        return list && list.length === 1 && list;
      });
      assert.notEqual(video[0], me);
      const others = [chairId, firstId, secondId].filter((id) => id !== me && id !== video[0]);
      await waitFor(`${who} to show the other site by name`, async () => JSON.stringify(await nameTiles(page)) === JSON.stringify(others));
      await waitFor(`${who} to decode the camera it receives`, async () => ((await stats(page))[video[0]] || { framesDecoded: 0 }).framesDecoded > 0);
      assert.equal(await page.textContent('#name-count'), '1 điểm cầu khác (không hiện hình)');
      assert.equal(await page.isVisible('#name-pager'), true);
      // The site shown by name sends this browser no pictures.
      const before = ((await stats(page))[others[0]] || { framesDecoded: 0 }).framesDecoded;
      await new Promise((done) => setTimeout(done, 2000));
      assert.equal(((await stats(page))[others[0]] || { framesDecoded: 0 }).framesDecoded, before, `${who} decoded a camera outside last-N`);
    }
    // The chair gives the floor to the site the chair sees by name: it takes the one place.
    const named = (await nameTiles(chair))[0];
    await chair.click(`#tiles .tile[data-participant="${named}"] [data-action="spotlight"]`);
    for (const [who, page, me] of [['chair', chair, chairId], ['first', first, firstId], ['second', second, secondId]]) {
      if (me === named) continue;
      await waitFor(`${who} to receive the spotlight's camera`, async () => JSON.stringify(await lastN(page)) === JSON.stringify([named]));
      await waitFor(`${who} to show the spotlight as a video tile`, async () => !(await nameTiles(page)).includes(named));
      const start = ((await stats(page))[named] || { framesDecoded: 0 }).framesDecoded;
      await waitFor(`${who} to decode the spotlight`, async () => ((await stats(page))[named] || { framesDecoded: 0 }).framesDecoded > start + 5, 60000);
    }
  } finally {
    for (const page of [chair, first, second]) await page.context().close().catch(() => {});
  }
});

test('a room with video_codec = "h264" publishes and forwards H.264, and the other rooms VP8', async () => {
  const chair = await joinRoom('Chủ trì', 'UBND tỉnh', CHAIR_PIN, H264_ROOM);
  const district = await joinRoom('Cán bộ huyện', 'Huyện Ninh Hải', PIN, H264_ROOM);
  try {
    const [chairId, districtId] = await Promise.all([chair, district].map(myId));
    for (const [who, page, other] of [['chair', chair, districtId], ['district', district, chairId]]) {
      const first = await waitFor(`${who} to decode the other site's H.264`, async () => {
        const entry = (await stats(page))[other];
        return entry && entry.framesDecoded > 0 && entry.videoCodec && entry;
      }, 60000);
      assert.equal(first.videoCodec.toLowerCase(), 'video/h264', `${who} decodes ${first.videoCodec}`);
      await waitFor(`${who} to keep decoding H.264`, async () => ((await stats(page))[other] || { framesDecoded: 0 }).framesDecoded > first.framesDecoded + 20);
      // What the browser publishes: H.264 put first on its camera transceiver.
      const sent = await page.evaluate(async () => {
        const report = await window.lienthong.state.cameraTransceiver.sender.getStats();
        const codecs = [];
        report.forEach((stats) => { if (stats.type === 'outbound-rtp' && stats.codecId) codecs.push(report.get(stats.codecId).mimeType); });
        return codecs;
      });
      assert.ok(sent.length > 0 && sent.every((mime) => mime.toLowerCase() === 'video/h264'), `${who} sends ${JSON.stringify(sent)}`);
    }
  } finally {
    for (const page of [chair, district]) await page.context().close().catch(() => {});
  }
  // The default room stays on VP8.
  const a = await joinRoom('Chủ trì', 'UBND tỉnh', CHAIR_PIN);
  const b = await joinRoom('Cán bộ huyện', 'Huyện A', PIN);
  try {
    const bId = await myId(b);
    const entry = await waitFor('the default room\'s video to decode', async () => {
      const current = (await stats(a))[bId];
      return current && current.framesDecoded > 0 && current.videoCodec && current;
    }, 60000);
    assert.equal(entry.videoCodec.toLowerCase(), 'video/vp8');
  } finally {
    for (const page of [a, b]) await page.context().close().catch(() => {});
  }
});
