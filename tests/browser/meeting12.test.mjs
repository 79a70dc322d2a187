// End-to-end: a 12-site meeting on the real lienthong binary (issue 9: every receiver gets
// every site it should, within the last-N rules). Three sites are headless Chromium pages
// (fake microphone, fake 1280x720 camera so simulcast has three layers); nine are simulated
// by the workspace's load tool, lienthong-load (str0m clients publishing three-layer VP8
// and Opus, each receiving the meeting).
//   - room hop-12 (default last_n, 12): each page receives the camera of all 11 other sites
//     (the other pages' decoded; the load tool's VP8 is synthetic, so its RTP must arrive),
//     no site is shown by name, each page hears at most the three loudest of the other
//     microphones and the pages together no more than four; the load tool's sites receive
//     every camera in the room, the Chromium ones included (from its summed stream count);
//   - room hop-12-n4 (last_n = 4): each page is told four cameras, shows the other seven
//     sites as name tiles, receives those four and, once its last-N has settled, no other.
//
// Run: tests/browser/run.sh, or from tests/browser:
//   node --test --test-concurrency=1 --test-timeout=240000 meeting12.test.mjs
// LIENTHONG_BIN (or LIENTHONG_BINARY) overrides the binary (default: target/debug/lienthong);
// LIENTHONG_LOAD_BIN the load tool (default: target/debug/lienthong-load);
// CHROMIUM the browser (default: /usr/bin/chromium); MEETING12_LOAD_KBPS the load sites'
// full-layer bitrate (default 150, see LOAD_VIDEO_KBPS); DEBUG_MEETING12=1 prints what is
// still missing while waiting. Needs ffmpeg (for the camera file).
//
// Seen while writing it (debug build, this 2-core machine): once in three to six runs the
// two load sites first in a page's last-N in hop-12-n4 never reached it. Traced in session
// 21 with the server's debug log: that page's bandwidth estimate sat near 120 kbit/s for
// 20 s (it decodes two 720p cameras and reads its socket late), so it got no camera; by the
// time it had video again a speaker among the load sites had moved into its last-N, so the
// list the test had read first was never complete; and the load tool left after 40 s. The
// test now reads the lists anew for every window and keeps the load tool for the checks'
// whole wait. The failure message lists what each missing camera sent, the page's last-N
// and its layout.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { freePort, makeWaitFor, sleep, stopProcess } from './helpers.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const binary = process.env.LIENTHONG_BIN || process.env.LIENTHONG_BINARY || resolve(here, '../../target/debug/lienthong');
const loadBinary = process.env.LIENTHONG_LOAD_BIN || resolve(here, '../../target/debug/lienthong-load');
const browserPath = process.env.CHROMIUM || '/usr/bin/chromium';
const PIN = '246810';
const CHAIR_PIN = '135790';
// The default last_n (config/src/conference.rs): every site of a 12-site meeting.
const ROOM = 'hop-12';
// The same meeting with last_n = 4.
const LAST_N_ROOM = 'hop-12-n4';
const LAST_N = 4;
// LOUDEST_AUDIO in sfu/src/conference/layers.rs.
const LOUDEST_AUDIO = 3;
const SITES = 12;
const BROWSER_SITES = 3;
const LOAD_SITES = SITES - BROWSER_SITES;
// The load tool's sites take the room's sites in order (load/src/run.rs); the pages take
// the last three, so every participant is its own site.
const SITE_NAMES = Array.from({ length: SITES }, (_, index) => `Xã ${index + 1}`);
// Seconds the load tool measures; the pages are checked while it does, so it stays as long
// as the checks may wait (see above: a page can go 20 s without video before they pass).
const LOAD_SECONDS = 80;
// How long a page's last-N must stay put before cameras outside it must have stopped.
const LAST_N_SETTLE_MS = 3000;
// The load sites' full-layer bitrate, kbit/s (its layers: 1/8, 1/3 and all of it). Below the
// page's 1500 to keep nine publishers light on a 2-core runner with a debug build. (Writing
// this test found that the load tool listed its rids high to low, which the server read as
// lowest first; the tool now lists them lowest first, as the page does: load/src/client.rs.)
const LOAD_VIDEO_KBPS = process.env.MEETING12_LOAD_KBPS || '150';

let server;
let serverLog = '';
let workDir;
let baseUrl;
let browserServer;
let browser;
const loadTools = new Set();

const waitFor = makeWaitFor(() => serverLog, { timeoutMs: 20000, intervalMs: 200 });

before(async () => {
  assert.ok(existsSync(binary), `lienthong binary not found at ${binary}: run \`cargo build\` first or set LIENTHONG_BIN`);
  assert.ok(existsSync(loadBinary), `lienthong-load not found at ${loadBinary}: run \`cargo build -p lienthong-load\` or set LIENTHONG_LOAD_BIN`);
  assert.ok(existsSync(browserPath), `Chromium not found at ${browserPath}: run tests/browser/run.sh (it installs Debian's chromium) or set CHROMIUM`);
  workDir = mkdtempSync(join(tmpdir(), 'lienthong-meeting12-'));
  const [pagePort, mediaPort, adminPort] = [await freePort(), await freePort(), await freePort()];
  const sites = SITE_NAMES.map((name) => `"${name}"`).join(', ');
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
title = "Họp 12 điểm cầu"
pin = "${PIN}"
chair_pin = "${CHAIR_PIN}"
sites = [${sites}]
[[conference.room]]
name = "${LAST_N_ROOM}"
title = "Họp 12 điểm cầu (last_n = ${LAST_N})"
pin = "${PIN}"
chair_pin = "${CHAIR_PIN}"
sites = [${sites}]
last_n = ${LAST_N}
`;
  const configPath = join(workDir, 'lienthong.toml');
  writeFileSync(configPath, config);
  server = spawn(binary, ['run', '--config', configPath], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, RUST_LOG: process.env.RUST_LOG || 'info' } });
  server.stdout.on('data', (chunk) => { serverLog += chunk; });
  server.stderr.on('data', (chunk) => { serverLog += chunk; });
  baseUrl = `http://127.0.0.1:${pagePort}`;
  await waitFor('the conference page', async () => (await fetch(`${baseUrl}/api/rooms`)).ok);

  // Chromium's fake camera is 640x480, too small for three simulcast layers: feed it a
  // 1280x720 file, as the simulcast tests do.
  const y4m = join(workDir, 'camera-720p.y4m');
  execFileSync('ffmpeg', ['-loglevel', 'error', '-y', '-f', 'lavfi', '-i', 'testsrc2=size=1280x720:rate=15', '-t', '2', '-pix_fmt', 'yuv420p', y4m]);
  // A browser server, not a plain launch: its process has a PID to stop on failure.
  browserServer = await chromium.launchServer({
    executablePath: browserPath,
    headless: true,
    args: [
      '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      '--use-fake-ui-for-media-stream', '--use-fake-device-for-media-stream',
      `--use-file-for-fake-video-capture=${y4m}`, '--autoplay-policy=no-user-gesture-required',
    ],
  });
  browser = await chromium.connect(browserServer.wsEndpoint());
});

after(async () => {
  // SERVER_LOG keeps the whole server log (failures print only its end).
  if (process.env.SERVER_LOG) writeFileSync(process.env.SERVER_LOG, serverLog);
  for (const tool of loadTools) await stopProcess(tool);
  if (browser) await Promise.race([browser.close().catch(() => {}), sleep(10000)]);
  if (browserServer) {
    const pid = browserServer.process().pid;
    await Promise.race([browserServer.close().catch(() => {}), sleep(10000)]);
    try { process.kill(pid, 'SIGKILL'); } catch { /* already gone */ }
  }
  await stopProcess(server, 10000);
  if (workDir) rmSync(workDir, { recursive: true, force: true });
});

async function joinRoom(room, name, site, pin) {
  // Tall enough that all twelve tiles are on screen: the page reports tiles scrolled away
  // as not shown, and the server sends them no video.
  const context = await browser.newContext({ permissions: ['camera', 'microphone'], viewport: { width: 1280, height: 1000 } });
  const page = await context.newPage();
  page.on('pageerror', (error) => console.error('page error:', error.message));
  await page.goto(`${baseUrl}/r/${room}`);
  await page.waitForSelector('#join-site option', { state: 'attached' });
  await page.fill('#join-name', name);
  await page.selectOption('#join-site', site);
  await page.fill('#join-pin', pin);
  await page.click('#join-submit');
  await page.waitForFunction(() => window.lienthong.state.me !== null, null, { timeout: 15000 });
  return page;
}

/** The three Chromium sites, the first as chair. */
async function joinBrowsers(room) {
  const pages = [];
  for (let index = 0; index < BROWSER_SITES; index++) {
    const site = SITE_NAMES[LOAD_SITES + index];
    pages.push(await joinRoom(room, `Chromium ${index + 1}`, site, index === 0 ? CHAIR_PIN : PIN));
  }
  return pages;
}

/**
 * Starts lienthong-load with the nine simulated sites (camera in three simulcast layers and
 * microphone, each receiving everyone). Resolves with its JSON report once it has measured.
 */
function runLoadTool(room, lastN) {
  const args = [
    '--url', baseUrl, '--room', room, '--pin', PIN,
    '--video-publishers', String(LOAD_SITES), '--receivers', '0', '--meeting',
    '--simulcast', '--video-size', '1280x720', '--fps', '15', '--video-kbps', LOAD_VIDEO_KBPS,
    '--join-interval-ms', '100', '--setup-timeout', '60', '--warmup', '2', '--duration', String(LOAD_SECONDS),
    '--server-pid', String(server.pid), '--last-n', String(lastN), '--loudest-audio', String(LOUDEST_AUDIO), '--json',
  ];
  const tool = spawn(loadBinary, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  loadTools.add(tool);
  let stdout = '';
  let stderr = '';
  tool.stdout.on('data', (chunk) => { stdout += chunk; });
  tool.stderr.on('data', (chunk) => { stderr += chunk; });
  const report = new Promise((done, fail) => {
    tool.once('error', fail);
    tool.once('exit', (code, signal) => {
      loadTools.delete(tool);
      if (code !== 0) return fail(new Error(`lienthong-load exited with ${code ?? signal}\n${stderr.slice(-4000)}`));
      try {
        done(JSON.parse(stdout.trim().split('\n').pop()));
      } catch (error) {
        fail(new Error(`lienthong-load printed no JSON report (${error.message}): ${stdout.slice(-2000)}`));
      }
    });
  });
  // Not awaited before the pages are checked: keep an early failure from going unhandled.
  report.catch(() => {});
  return report;
}

const myId = (page) => page.evaluate(() => window.lienthong.state.me);
const participants = (page) => page.evaluate(() => [...window.lienthong.state.participants.keys()]);
const lastNList = (page) => page.evaluate(() => window.lienthong.state.lastN);
const nameTiles = (page) => page.$$eval('#tiles .tile.name-only', (tiles) => tiles.map((tile) => Number(tile.dataset.participant)).sort((a, b) => a - b));
const sorted = (ids) => [...ids].sort((a, b) => a - b);

/**
 * Per other site, what its camera and microphone deliver to `page`, from getStats
 * inbound-rtp of the receivers the page keeps per participant (the mapping
 * receiveStats in web/room.js uses).
 */
const receiveCounters = (page) => page.evaluate(async () => {
  const { state } = window.lienthong;
  const result = {};
  for (const { participant, kind, receiver } of state.receivers) {
    if (!state.participants.has(participant) || (kind !== 'video' && kind !== 'audio')) continue;
    const entry = result[participant] || (result[participant] = { videoTracks: 0, videoPackets: 0, framesReceived: 0, framesDecoded: 0, frameWidth: 0, audioBytes: 0 });
    if (kind === 'video') entry.videoTracks += 1;
    (await receiver.getStats()).forEach((stats) => {
      if (stats.type !== 'inbound-rtp') return;
      if (kind === 'audio') {
        entry.audioBytes += stats.bytesReceived || 0;
        return;
      }
      entry.videoPackets += stats.packetsReceived || 0;
      entry.framesReceived += stats.framesReceived || 0;
      entry.framesDecoded += stats.framesDecoded || 0;
      entry.frameWidth = Math.max(entry.frameWidth, stats.frameWidth || 0);
    });
  }
  return result;
});

/**
 * Samples every page twice, `ms` apart; for each page, a function from a counter's name to
 * the other sites whose counter grew in between.
 */
async function sampleGrowth(pages, ms) {
  const first = await Promise.all(pages.map(receiveCounters));
  await sleep(ms);
  const second = await Promise.all(pages.map(receiveCounters));
  return second.map((after, index) => (field) => sorted(Object.keys(after).map(Number)
    .filter((id) => after[id][field] > ((first[index][id] || {})[field] || 0))));
}

/** Waits until `page` lists all twelve participants; returns the other eleven. */
async function othersOf(page, who) {
  const me = await myId(page);
  const all = await waitFor(`${who} to list ${SITES} participants`, async () => {
    const ids = await participants(page);
    return ids.length === SITES && ids;
  }, 30000);
  return sorted(all.filter((id) => id !== me));
}

/**
 * What a camera must show on a page to count as received: a Chromium site's pictures are
 * decoded (framesDecoded grows); the load tool's VP8 is synthetic (load/src/media.rs: real
 * frame structure, noise for pictures), which Chromium receives but cannot decode, so its
 * RTP packets on the camera track must grow.
 */
const receivedField = (browserIds, id) => (browserIds.includes(id) ? 'framesDecoded' : 'videoPackets');

/**
 * Waits until each page has had one window in which every camera in `expected[i]` kept
 * arriving at pages[i] (pages may get there in different windows: on this 2-core machine
 * a page now and then reads its socket late and the server puts it in audio-only mode for
 * a few seconds, as it should). `expected` may be a function that reads the lists anew for
 * every window (a page's last-N moves with the speakers); a page whose list changed during
 * a window does not complete in it. Returns the growth of each page's complete window.
 */
async function waitForCameras(pages, browserIds, expected, what) {
  const complete = pages.map(() => null);
  const read = typeof expected === 'function' ? expected : async () => expected;
  return waitFor(what, async () => {
    const before = await read();
    const growth = await sampleGrowth(pages, 2500);
    const after = await read();
    const missing = after.map((ids, index) => {
      const moved = JSON.stringify(before[index]) !== JSON.stringify(ids);
      return ids.filter((id) => moved || !growth[index](receivedField(browserIds, id)).includes(id));
    });
    missing.forEach((ids, index) => { if (ids.length === 0 && !complete[index]) complete[index] = growth[index]; });
    if (complete.every(Boolean)) return complete;
    const audioOnly = await Promise.all(pages.map((page) => page.evaluate(() => window.lienthong.state.audioOnly)));
    const counters = await Promise.all(pages.map(receiveCounters));
    const layouts = await Promise.all(pages.map((page) => page.evaluate(() => window.lienthong.state.layout)));
    // For a camera the page has no track of: the m-lines the server's last offer gave it
    // (mid, direction) and what the page's transceiver of that mid says.
    const negotiated = await Promise.all(pages.map((page, index) => page.evaluate((ids) => {
      const { pc } = window.lienthong.state;
      const sections = ((pc && pc.remoteDescription && pc.remoteDescription.sdp) || '').split('\r\nm=').slice(1);
      return Object.fromEntries(ids.map((id) => [id, sections.filter((section) => section.includes(`a=msid:p${id} `)).map((section) => {
        const mid = (/a=mid:(\S+)/.exec(section) || [])[1];
        const direction = (/a=(sendonly|recvonly|sendrecv|inactive)/.exec(section) || [])[1];
        const transceiver = pc.getTransceivers().find((candidate) => candidate.mid === mid);
        return `${section.split(' ')[0]} ${mid} ${direction}, page ${transceiver ? `${transceiver.currentDirection}/${transceiver.receiver.track.readyState}` : 'none'}`;
      }).join(' + ') || 'not offered']));
    }, missing[index])));
    // Each missing camera with the video packets and decoded frames it delivered so far (or
    // that the page has no track of it), and the layout the page last reported.
    const pending = missing.map((ids, index) => !complete[index] && `page ${index + 1}${audioOnly[index] ? ' (audio-only now)' : ''} lacks `
      + ids.map((id) => ((counters[index][id] || {}).videoTracks
        ? `${id} (${counters[index][id].videoPackets} packets, ${counters[index][id].framesDecoded} frames)`
        : `${id} (no video track; ${negotiated[index][id]})`)).join(', ')
      + `; its last-N ${after[index]}, its layout ${layouts[index]}`).filter(Boolean);
    if (process.env.DEBUG_MEETING12) console.log(what, pending.join('; '));
    throw new Error(pending.join('; '));
  }, 90000, 0);
}

/**
 * The microphones each page hears over one window. Rooms::loudest ranks the room's other
 * microphones and each receiver gets those of the LOUDEST_AUDIO loudest, so a page hears
 * at most three, and all pages together no more than four (a page among the three loudest
 * hears the fourth instead of itself). A window in which the loudest change shows one
 * more: this takes the first window, within 20 s, in which every page hears someone and
 * none more than that.
 */
function hearLoudest(pages) {
  return waitFor(`every page to hear between 1 and ${LOUDEST_AUDIO} microphones, ${LOUDEST_AUDIO + 1} at most together`, async () => {
    const current = (await sampleGrowth(pages, 3000)).map((grew) => grew('audioBytes'));
    const together = new Set(current.flat()).size;
    if (current.every((ids) => ids.length > 0 && ids.length <= LOUDEST_AUDIO) && together <= LOUDEST_AUDIO + 1) return current;
    throw new Error(`pages hear ${current.map((ids) => ids.join(',')).join(' / ')}`);
  }, 20000, 0);
}

/**
 * The load tool's report. It counts only its own nine sites in `streams_expected` (8
 * cameras and 3 microphones each) and sums the streams that delivered packets while it
 * measured over all its clients, so the test works out what its sites should get at least
 * in this room: `cameras` each (the Chromium ones included) and the LOUDEST_AUDIO loudest
 * microphones of the others (twelve in the room). A load site that misses a camera falls
 * below that count unless another stream makes up for it: a speaker change during the
 * window moves a camera into last-N and the loudest microphones around, so the sum has no
 * upper bound to check against.
 */
function checkReport(report, cameras) {
  if (process.env.DEBUG_MEETING12) console.log(JSON.stringify(report));
  assert.deepEqual(report.errors, [], 'load tool clients failed');
  assert.equal(report.clients, LOAD_SITES);
  assert.ok(report.seconds >= LOAD_SECONDS - 1, `the load tool measured ${report.seconds} s`);
  const microphones = LOAD_SITES * LOUDEST_AUDIO;
  const least = LOAD_SITES * cameras + microphones;
  assert.ok(report.streams_measured >= least,
    `the load sites received ${report.streams_measured} streams, expected at least ${least} (${cameras} cameras each, ${microphones} microphones in all)`);
}

const figures = (report) => `load tool: streams ${report.streams_measured} measured (its own count of its sites' streams: ${report.streams_expected}), `
  + `loss ${(100 * report.loss_ratio).toFixed(3)}%, latency p50 ${(report.latency_p50_micros / 1000).toFixed(1)} ms `
  + `p99 ${(report.latency_p99_micros / 1000).toFixed(1)} ms, server ${(100 * report.server_cores).toFixed(0)}% of a core`;

test(`12 sites, default last_n: every page gets all 11 other cameras and at most the ${LOUDEST_AUDIO} loudest microphones; the load tool's sites get every camera`, async () => {
  const started = Date.now();
  const pages = await joinBrowsers(ROOM);
  try {
    const browserIds = await Promise.all(pages.map(myId));
    const report = runLoadTool(ROOM, SITES);
    const others = [];
    for (const [index, page] of pages.entries()) {
      const who = `page ${index + 1}`;
      others.push(await othersOf(page, who));
      // Everyone is within last-N: the server names all eleven cameras, no site by name.
      await waitFor(`${who} to be told all ${SITES - 1} cameras`, async () => JSON.stringify(sorted((await lastNList(page)) || [])) === JSON.stringify(others[index]), 30000);
      assert.deepEqual(await nameTiles(page), [], `${who} shows sites by name in a room where all fit`);
    }
    const growth = await waitForCameras(pages, browserIds, others, 'every page to receive all 11 other cameras');
    for (const [index, grew] of growth.entries()) {
      assert.ok(grew('videoPackets').every((id) => others[index].includes(id)), `page ${index + 1} receives a camera that is not another site's`);
    }
    const heard = await hearLoudest(pages);
    const result = await report;
    checkReport(result, SITES - 1);
    console.log(`figures (12 sites, last_n 12): pages hear ${heard.map((ids) => ids.join(',')).join(' / ')}; ${figures(result)}; ${((Date.now() - started) / 1000).toFixed(0)} s`);
  } finally {
    for (const page of pages) await page.context().close().catch(() => {});
  }
});

test(`12 sites, last_n = ${LAST_N}: every page gets the ${LAST_N} cameras the server names and shows the other sites by name`, async () => {
  const started = Date.now();
  const pages = await joinBrowsers(LAST_N_ROOM);
  try {
    const browserIds = await Promise.all(pages.map(myId));
    const report = runLoadTool(LAST_N_ROOM, LAST_N);
    const lists = [];
    for (const [index, page] of pages.entries()) {
      const who = `page ${index + 1}`;
      const others = await othersOf(page, who);
      const list = await waitFor(`${who} to be told its ${LAST_N} cameras`, async () => {
        const current = await lastNList(page);
        return current && current.length === LAST_N && current;
      }, 30000);
      assert.ok(list.every((id) => others.includes(id)), `${who}'s last-N ${list} names a site that is not another`);
      const named = others.filter((id) => !list.includes(id));
      await waitFor(`${who} to show the ${named.length} other sites by name`, async () => JSON.stringify(await nameTiles(page)) === JSON.stringify(named));
      assert.equal(await page.textContent('#name-count'), `${SITES - 1 - LAST_N} điểm cầu khác (không hiện hình)`);
      lists.push(list);
    }
    // The lists as they are at each window: a speaker among the load sites moves into
    // every page's last-N (seen: a page's list changed while its cameras started).
    await waitForCameras(pages, browserIds, () => Promise.all(pages.map(lastNList)), `every page to receive its ${LAST_N} cameras`);
    // Over a window in which no page's last-N changed, and none had for LAST_N_SETTLE_MS
    // before (a camera dropped from last-N may still have packets on the way), cameras
    // arrive from those sites only: at most LAST_N, none of them a site shown by name.
    const settled = await waitFor('a window without a last-N change', async () => {
      const before = JSON.stringify(await Promise.all(pages.map(lastNList)));
      await sleep(LAST_N_SETTLE_MS);
      const start = JSON.stringify(await Promise.all(pages.map(lastNList)));
      const growth = await sampleGrowth(pages, 3000);
      const after = await Promise.all(pages.map(lastNList));
      return before === start && start === JSON.stringify(after) && { lists: after, growth };
    }, 60000, 0);
    for (const [index, grew] of settled.growth.entries()) {
      const receiving = sorted(new Set([...grew('videoPackets'), ...grew('framesDecoded')]));
      assert.ok(receiving.length <= LAST_N, `page ${index + 1} receives ${receiving.length} cameras: ${receiving}`);
      const outside = receiving.filter((id) => !settled.lists[index].includes(id));
      assert.deepEqual(outside, [], `page ${index + 1} receives cameras outside its last-N ${settled.lists[index]}`);
    }
    await hearLoudest(pages);
    const result = await report;
    checkReport(result, LAST_N);
    console.log(`figures (12 sites, last_n ${LAST_N}): pages get cameras ${settled.lists.map((ids) => ids.join(',')).join(' / ')} `
      + `(Chromium sites ${browserIds.join(',')}); ${figures(result)}; ${((Date.now() - started) / 1000).toFixed(0)} s`);
  } finally {
    for (const page of pages) await page.context().close().catch(() => {});
  }
});
