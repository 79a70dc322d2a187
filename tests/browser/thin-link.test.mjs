// End-to-end on a thin, lossy district link: a publisher with a 1280x720 camera (a y4m file
// made with ffmpeg), a receiver on an open link and a receiver whose Chromium runs in its own
// network namespace behind a router namespace that shapes the download to 300 kbit/s with
// `tc tbf`, drops 5% of it with iptables `statistic --mode random` and delays it by 40 ms
// through NFQUEUE (`delay-queue.py`; this kernel has no sch_netem). The shaping is on the
// router, never on the SFU's own interface. The second test puts two such publishers in
// the room (issue 9's report).
//
// Needs root (network namespaces); CI runs as root. Run: tests/browser/run.sh.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, writeFileSync, rmSync, chmodSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { makeWaitFor, waitForJoinForm } from './helpers.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const binary = process.env.LIENTHONG_BIN || process.env.LIENTHONG_BINARY || resolve(here, '../../target/debug/lienthong');
const browserPath = process.env.CHROMIUM || '/usr/bin/chromium';
const isRoot = process.getuid && process.getuid() === 0;
const tag = `lt${process.pid % 100000}`;
const ns = { router: `${tag}r`, client: `${tag}c` };
const SERVER_IP = '10.77.2.2';
const PIN = '246810';

let workDir;
let server;
let delayQueue;
let serverLog = '';
let baseUrl;
const browsers = [];

const run = (...args) => execFileSync(args[0], args.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] });
const inNs = (name, ...args) => run('ip', 'netns', 'exec', name, ...args);

function setUpNetwork() {
  run('ip', 'netns', 'add', ns.router);
  run('ip', 'netns', 'add', ns.client);
  // The SFU's side: a plain veth into the router, unshaped.
  run('ip', 'link', 'add', `${tag}s`, 'type', 'veth', 'peer', 'name', `${tag}rs`);
  run('ip', 'link', 'set', `${tag}rs`, 'netns', ns.router);
  run('ip', 'addr', 'add', `${SERVER_IP}/24`, 'dev', `${tag}s`);
  run('ip', 'link', 'set', `${tag}s`, 'up');
  run('ip', 'route', 'add', '10.77.1.0/24', 'via', '10.77.2.1');
  inNs(ns.router, 'ip', 'addr', 'add', '10.77.2.1/24', 'dev', `${tag}rs`);
  inNs(ns.router, 'ip', 'link', 'set', `${tag}rs`, 'up');
  // The district's side.
  inNs(ns.router, 'ip', 'link', 'add', `${tag}rc`, 'type', 'veth', 'peer', 'name', `${tag}cl`);
  inNs(ns.router, 'ip', 'link', 'set', `${tag}cl`, 'netns', ns.client);
  inNs(ns.router, 'ip', 'addr', 'add', '10.77.1.1/24', 'dev', `${tag}rc`);
  inNs(ns.router, 'ip', 'link', 'set', `${tag}rc`, 'up');
  inNs(ns.router, 'ip', 'link', 'set', 'lo', 'up');
  inNs(ns.router, 'sysctl', '-q', '-w', 'net.ipv4.ip_forward=1');
  inNs(ns.client, 'ip', 'addr', 'add', '10.77.1.2/24', 'dev', `${tag}cl`);
  inNs(ns.client, 'ip', 'link', 'set', `${tag}cl`, 'up');
  inNs(ns.client, 'ip', 'link', 'set', 'lo', 'up');
  inNs(ns.client, 'ip', 'route', 'add', 'default', 'via', '10.77.1.1');
  // 300 kbit/s towards the district, 5% of it lost, 40 ms late. The drop rule stays first:
  // a packet NFQUEUE accepts leaves the chain.
  inNs(ns.router, 'tc', 'qdisc', 'add', 'dev', `${tag}rc`, 'root', 'tbf', ...THIN_TBF);
  inNs(ns.router, 'iptables', '-A', 'FORWARD', '-o', `${tag}rc`, '-j', 'NFQUEUE', '--queue-num', '7');
  setLoss(true);
}

const LOSS_RULE = ['FORWARD', '-o', `${tag}rc`, '-m', 'statistic', '--mode', 'random', '--probability', '0.05', '-j', 'DROP'];
const setLoss = (on) => (on ? inNs(ns.router, 'iptables', '-I', ...LOSS_RULE.slice(0, 1), '1', ...LOSS_RULE.slice(1)) : inNs(ns.router, 'iptables', '-D', ...LOSS_RULE));
const THIN_TBF = ['rate', '300kbit', 'burst', '6kb', 'latency', '200ms'];

// The district's link as `setUpNetwork` made it, with the bottleneck's counters at zero,
// whatever an earlier test left: the 300 kbit/s queue made anew, the loss rule once.
function resetThinLink() {
  inNs(ns.router, 'tc', 'qdisc', 'del', 'dev', `${tag}rc`, 'root');
  inNs(ns.router, 'tc', 'qdisc', 'add', 'dev', `${tag}rc`, 'root', 'tbf', ...THIN_TBF);
  try { inNs(ns.router, 'iptables', '-C', ...LOSS_RULE); } catch { setLoss(true); }
}

// The bottleneck's own counters (`tc -s qdisc show`): what left the 300 kbit/s queue and
// what it dropped because the queue was full (the 5% random loss happens before it, in
// iptables, and is not counted here).
function bottleneck() {
  const text = String(inNs(ns.router, 'tc', '-s', 'qdisc', 'show', 'dev', `${tag}rc`));
  const counters = /Sent (\d+) bytes (\d+) pkt \(dropped (\d+)/.exec(text);
  assert.ok(counters, `no tbf counters in: ${text}`);
  return { bytes: Number(counters[1]), packets: Number(counters[2]), dropped: Number(counters[3]) };
}
const droppedShare = (from, to) => {
  const dropped = to.dropped - from.dropped;
  const offered = to.packets - from.packets + dropped;
  return { dropped, offered, share: offered > 0 ? dropped / offered : 0, kbps: ((to.bytes - from.bytes) * 8) / 1000 };
};

// Holds every packet towards the district 40 ms (tests/browser/delay-queue.py), and proves it
// does before the test relies on it: the kernel's queue is bound once it prints "ready".
async function startDelay() {
  delayQueue = spawn('ip', ['netns', 'exec', ns.router, 'python3', join(here, 'delay-queue.py'), '7', '40'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  delayQueue.stderr.on('data', (chunk) => { output += chunk; });
  await new Promise((ready, fail) => {
    delayQueue.stdout.on('data', (chunk) => { if (String(chunk).includes('ready')) ready(); });
    delayQueue.once('exit', (code) => fail(new Error(`delay-queue.py exited with ${code}: ${output}`)));
  });
}

function tearDownNetwork() {
  if (delayQueue && delayQueue.exitCode === null) delayQueue.kill('SIGTERM');
  for (const name of Object.values(ns)) {
    try { run('ip', 'netns', 'del', name); } catch { /* not created */ }
  }
  try { run('ip', 'link', 'del', `${tag}s`); } catch { /* gone with the namespace */ }
}

const waitFor = makeWaitFor(() => serverLog, { timeoutMs: 30000, intervalMs: 500, logTail: 3000 });

function launch(executablePath, extraArgs = []) {
  return chromium.launch({
    executablePath,
    headless: true,
    args: [
      '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      '--use-fake-ui-for-media-stream', '--use-fake-device-for-media-stream',
      '--autoplay-policy=no-user-gesture-required', ...extraArgs,
    ],
  }).then((browser) => { browsers.push(browser); return browser; });
}

async function joinAs(browser, name, site, viewport = { width: 1280, height: 800 }) {
  const context = await browser.newContext({ permissions: ['camera', 'microphone'], viewport, ignoreHTTPSErrors: true });
  const page = await context.newPage();
  page.on('pageerror', (error) => console.error('page error:', error.message));
  await page.goto(`${baseUrl}/r/giao-ban`);
  // A page whose form never fills (a network change cut a script) is loaded once more.
  await waitForJoinForm(page, name);
  await page.fill('#join-name', name);
  await page.selectOption('#join-site', site);
  await page.fill('#join-pin', PIN);
  await page.click('#join-submit');
  await page.waitForFunction(() => window.lienthong.state.me !== null, null, { timeout: 30000 });
  return page;
}

before(async () => {
  if (!isRoot) return;
  assert.ok(existsSync(binary), `lienthong binary not found at ${binary}`);
  workDir = mkdtempSync(join(tmpdir(), 'lienthong-thin-link-'));
  tearDownNetwork();
  setUpNetwork();
  await startDelay();
  const config = `
[server]
hostname = "hub.ninhthuan.gov.vn"
addresses = ["${SERVER_IP}"]
state_dir = "${join(workDir, 'state')}"
[admin]
listen = "127.0.0.1:0"
[dns]
enabled = false
[mail]
enabled = false
[conference]
listen = "${SERVER_IP}:18443"
tls = true
media_port = 18444
[[conference.room]]
name = "giao-ban"
title = "Họp giao ban UBND tỉnh"
pin = "${PIN}"
chair_pin = "135790"
sites = ["UBND tỉnh", "Sở Y tế", "Huyện A", "Huyện Bác Ái"]
max_participants = 50
`;
  const configPath = join(workDir, 'lienthong.toml');
  writeFileSync(configPath, config);
  server = spawn(binary, ['run', '--config', configPath], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, RUST_LOG: process.env.RUST_LOG || 'info' } });
  server.stdout.on('data', (chunk) => { serverLog += chunk; });
  server.stderr.on('data', (chunk) => { serverLog += chunk; });
  baseUrl = `https://${SERVER_IP}:18443`;
  // The server made itself a self-signed certificate; the browsers are told to accept it.
  process.env.NODE_TLS_REJECT_UNAUTHORIZED = '0';
  await waitFor('the conference page', async () => (await fetch(`${baseUrl}/api/rooms`)).ok, 30000, 200);
});

after(async () => {
  // SERVER_LOG keeps the whole server log (failures print only its end).
  if (process.env.SERVER_LOG) writeFileSync(process.env.SERVER_LOG, serverLog);
  for (const browser of browsers) await browser.close().catch(() => {});
  if (server && server.exitCode === null) {
    server.kill('SIGTERM');
    await new Promise((done) => {
      const timer = setTimeout(() => { server.kill('SIGKILL'); done(); }, 10000);
      server.once('exit', () => { clearTimeout(timer); done(); });
    });
  }
  if (isRoot) tearDownNetwork();
  if (workDir) rmSync(workDir, { recursive: true, force: true });
});

// Closes the browsers an earlier test left open: its participants leave the room.
async function closeBrowsers() {
  for (const browser of browsers.splice(0)) await browser.close().catch(() => {});
}

// A 1280x720 camera (a y4m file made with ffmpeg) for Chromium's fake capture device.
function camera720p() {
  const y4m = join(workDir, 'camera-720p.y4m');
  if (!existsSync(y4m)) run('ffmpeg', '-loglevel', 'error', '-y', '-f', 'lavfi', '-i', 'testsrc2=size=1280x720:rate=15', '-t', '2', '-pix_fmt', 'yuv420p', y4m);
  return y4m;
}

// Chromium inside the district's namespace: a wrapper runs it there.
function districtChromium() {
  const wrapper = join(workDir, 'chromium-in-district');
  writeFileSync(wrapper, `#!/bin/sh\nexec ip netns exec ${ns.client} ${browserPath} "$@"\n`);
  chmodSync(wrapper, 0o755);
  return wrapper;
}

const statsOf = async (page, id) => (await page.evaluate(() => window.lienthong.receiveStats()))[id] || { framesDecoded: 0, frameWidth: 0 };

// What a page receives from each of `ids` over `ms`, sampled every 100 ms: frames decoded,
// the longest stretch between two samples that saw new frames (the longest freeze, to
// within the sampling), the narrowest and widest picture and how many samples saw each
// width, Chromium's own freeze count, the
// share of audio concealed (Opus loss concealment) and the packets received.
async function watchReception(page, ids, ms) {
  return page.evaluate(async ({ ids, ms }) => {
    const empty = { framesDecoded: 0, frameWidth: 0, concealedSamples: 0, totalSamplesReceived: 0, freezeCount: 0, totalFreezesDuration: 0, packetsReceived: 0 };
    const sample = async () => {
      const all = await window.lienthong.receiveStats();
      return Object.fromEntries(ids.map((id) => [id, all[id] || empty]));
    };
    const first = await sample();
    const startedAt = performance.now();
    const watched = Object.fromEntries(ids.map((id) => [id, { lastNewFrame: startedAt, previous: first[id].framesDecoded, longestGapMs: 0, widest: first[id].frameWidth, narrowest: first[id].frameWidth || Infinity, widths: {} }]));
    let last = first;
    while (performance.now() - startedAt < ms) {
      await new Promise((done) => setTimeout(done, 100));
      last = await sample();
      const now = performance.now();
      for (const id of ids) {
        const seen = watched[id];
        const current = last[id];
        seen.widest = Math.max(seen.widest, current.frameWidth);
        if (current.frameWidth > 0) seen.narrowest = Math.min(seen.narrowest, current.frameWidth);
        seen.widths[current.frameWidth] = (seen.widths[current.frameWidth] || 0) + 1;
        if (current.framesDecoded > seen.previous) {
          seen.longestGapMs = Math.max(seen.longestGapMs, now - seen.lastNewFrame);
          seen.lastNewFrame = now;
          seen.previous = current.framesDecoded;
        }
      }
    }
    const end = performance.now();
    return Object.fromEntries(ids.map((id) => {
      const seen = watched[id];
      const samples = last[id].totalSamplesReceived - first[id].totalSamplesReceived;
      return [id, {
        frames: last[id].framesDecoded - first[id].framesDecoded,
        longestGapMs: Math.round(Math.max(seen.longestGapMs, end - seen.lastNewFrame)),
        widest: seen.widest,
        narrowest: seen.narrowest === Infinity ? 0 : seen.narrowest,
        widths: seen.widths,
        freezes: last[id].freezeCount - first[id].freezeCount,
        freezeSeconds: +(last[id].totalFreezesDuration - first[id].totalFreezesDuration).toFixed(2),
        concealedShare: samples > 0 ? (last[id].concealedSamples - first[id].concealedSamples) / samples : 1,
        packets: last[id].packetsReceived - first[id].packetsReceived,
        audioOnly: window.lienthong.state.audioOnly,
      }];
    }));
  }, { ids, ms });
}

test('a receiver behind a 300 kbit/s link with 5% loss decodes the lowest layer while an open link gets a high one, and its layer follows the link when it widens and narrows mid-call', { skip: !isRoot && 'needs root for network namespaces' }, async () => {
  const hd = await launch(browserPath, [`--use-file-for-fake-video-capture=${camera720p()}`]);
  const publisher = await joinAs(hd, 'Camera HD', 'UBND tỉnh');
  const publisherId = await publisher.evaluate(() => window.lienthong.state.me);

  const open = await joinAs(await launch(browserPath), 'Đường truyền tốt', 'Huyện A');
  // The open site only watches (camera and microphone off): the district's link is measured
  // on the province's camera and voice alone. (Which camera a link that fits one gets, when
  // several sites speak, is the layer selection's, tested in sfu/src/conference/tests.rs.)
  await open.click('#toggle-camera');
  await open.click('#toggle-microphone');
  const thin = await joinAs(await launch(districtChromium()), 'Đường truyền yếu', 'Huyện Bác Ái');

  const high = await waitFor('the open link to decode a high layer (>= 640 wide)', async () => {
    const current = await statsOf(open, publisherId);
    return current.framesDecoded > 0 && current.frameWidth >= 640 && current;
  }, 60000);
  const low = await waitFor('the thin link to decode the lowest layer', async () => {
    const current = await statsOf(thin, publisherId);
    return current.framesDecoded > 0 && current.frameWidth > 0 && current.frameWidth <= 320 && current;
  }, 60000);
  // The district's round trip carries the router's 40 ms (Chromium's own measure of it).
  const rtt = await waitFor('the thin link\'s round trip to show the 40 ms delay', async () => {
    const seconds = await thin.evaluate(async () => {
      let best = 0;
      (await window.lienthong.state.pc.getStats()).forEach((stats) => {
        if (stats.type === 'candidate-pair' && stats.nominated && stats.currentRoundTripTime) best = stats.currentRoundTripTime;
      });
      return best;
    });
    return seconds >= 0.04 && seconds;
  }, 20000);

  // After the first 10 s (BWE settling), no freeze longer than 1 s: the page samples the
  // frames decoded every 100 ms for 20 s (`watchReception`). Audio stays clear: the share of
  // concealed samples (Opus loss concealment) over the same 20 s.
  await new Promise((done) => setTimeout(done, 10000));
  const window20 = (await watchReception(thin, [publisherId], 20000))[publisherId];
  console.log(`thin link (300 kbit/s, 5% loss, 40 ms, rtt ${(rtt * 1000).toFixed(0)} ms): ${low.frameWidth}px, ${window20.frames} frames in 20 s, longest gap ${window20.longestGapMs} ms, Chromium freezes ${window20.freezes} (${window20.freezeSeconds} s), audio concealed ${(window20.concealedShare * 100).toFixed(1)}%, ${window20.packets} packets from the camera's site${window20.audioOnly ? ', in audio-only mode' : ''}; open link: ${high.frameWidth}px`);
  assert.ok(window20.widest <= 320, `the thin link got a ${window20.widest}px layer`);
  assert.ok(window20.frames >= 40, `the thin link decoded only ${window20.frames} frames in 20 s`);
  assert.ok(window20.longestGapMs <= 1100, `the thin link's video froze for ${window20.longestGapMs} ms`);
  assert.ok(window20.concealedShare < 0.1, `${(window20.concealedShare * 100).toFixed(1)}% of the thin link's audio was concealed`);

  // The district's link widens mid-call (20 Mbit/s, no loss): its layer goes up by itself...
  inNs(ns.router, 'tc', 'qdisc', 'change', 'dev', `${tag}rc`, 'root', 'tbf', 'rate', '20mbit', 'burst', '64kb', 'latency', '200ms');
  setLoss(false);
  const widened = Date.now();
  const up = await waitFor('the widened link to move up from the lowest layer', async () => {
    const current = await statsOf(thin, publisherId);
    return current.frameWidth > 320 && current;
  }, 90000, 1000);
  // ...and when it narrows again to 300 kbit/s with 5% loss, back down to the lowest.
  inNs(ns.router, 'tc', 'qdisc', 'change', 'dev', `${tag}rc`, 'root', 'tbf', 'rate', '300kbit', 'burst', '6kb', 'latency', '200ms');
  setLoss(true);
  const narrowed = Date.now();
  const down = await waitFor('the narrowed link to fall back to the lowest layer', async () => {
    const current = await statsOf(thin, publisherId);
    return current.frameWidth > 0 && current.frameWidth <= 320 && current;
  }, 60000, 1000);
  console.log(`link change: up to ${up.frameWidth}px ${((narrowed - widened) / 1000).toFixed(0)} s after widening, down to ${down.frameWidth}px ${((Date.now() - narrowed) / 1000).toFixed(0)} s after narrowing`);
});

// Issue 9's report: two 720p publishers, and a Chromium behind 300 kbit/s with 5% loss
// decoded no frame for 40 s while two thirds of what lienthong sent it died in the
// bottleneck's queue. What the SFU is designed to do when both cameras' lowest layers do not
// fit: each receiver's budget is 90% of its smoothed estimate less 32 kbit/s per forwarded
// voice (`Peer::select_layers`, sfu/src/peer/media.rs; on a link losing 2% or more the
// smoothed estimate follows a rising one only up to what one picture's lowest layer needs,
// and a line with random loss and a flat round trip keeps one picture whatever its
// estimate: `LinkHealth::steady`). `allocate` (sfu/src/layers.rs) then gives the lowest
// layer (150 kbit/s at most, as measured; a camera not yet flowing needs 25% more to start)
// to one visible camera after another: large tiles before thumbnails, then pictures that
// already flow, then the page's order (ranks from `Conference::select_layers`,
// sfu/src/conference/layers.rs), which lists the spotlight, then the active speaker, first
// (web/room.js `reportLayout`). So the one picture stays on the camera it started with when
// the active speaker changes: moving it would wait over a second for the other camera's
// keyframe. A camera the budget does not reach gets no video (its tile keeps its last
// picture; it is not made a name tile, which only last-N does); with none reached the
// receiver is in audio-only mode. On the district's link (~300 kbit/s estimate: 206 kbit/s
// of budget) that is one camera at 320 px and the other paused, not both: so the test asks
// that the camera the thin link gets most of keeps decoding (>= 2 frames/s, no gap over
// 1.1 s), that any camera it gets at all does not freeze, and that both voices stay clear.
// The 5% loss is not lost in the queue (iptables drops it before the qdisc), so the queue's
// own drop counter is what measures lienthong sending more than the link carries.
// A receiver whose line has not reported yet (its first five seconds) gets one picture: the
// initial estimate would start both cameras, more than the line carries. A lossy line gets
// at most a quarter more than it was sent (held at the initial estimate, or at a probe's
// overshoot, it started the second camera once its reports were in), and a line that shows
// its one picture keeps it while at most three of its last five reports show a grown round
// trip (the publishers' keyframes queue on the line for a third of a second each)
// (`LinkHealth::holds`). Before these (session 21) the thin receiver moved between two
// pictures, one and none in its first 20 s.
test('two 720p cameras towards a receiver behind a 300 kbit/s link with 5% loss: it keeps decoding the camera it shows first, hears both, and the bottleneck drops little, while an open link gets both cameras at >= 640 wide', { skip: !isRoot && 'needs root for network namespaces' }, async () => {
  // A room of its own: the first test's participants leave, and the district's link is the
  // 300 kbit/s, 5% loss one again, its queue's counters at zero.
  await closeBrowsers();
  resetThinLink();
  const y4m = camera720p();
  const first = await joinAs(await launch(browserPath, [`--use-file-for-fake-video-capture=${y4m}`]), 'Camera HD 1', 'UBND tỉnh');
  const second = await joinAs(await launch(browserPath, [`--use-file-for-fake-video-capture=${y4m}`]), 'Camera HD 2', 'Sở Y tế');
  const cameras = [await first.evaluate(() => window.lienthong.state.me), await second.evaluate(() => window.lienthong.state.me)];
  // Both receivers only watch (camera and microphone off): what crosses the district's link
  // is the two publishers' cameras and voices.
  // The open site watches on a 1920x1080 screen: its four tiles are 470 px wide there, large
  // enough for the page to ask for them large (web/room.js `reportLayout`: 400 px or more);
  // at 1280 px they are 310 px thumbnails, which get the lowest layer by design.
  const open = await joinAs(await launch(browserPath), 'Đường truyền tốt', 'Huyện A', { width: 1920, height: 1080 });
  await open.click('#toggle-camera');
  await open.click('#toggle-microphone');
  const thin = await joinAs(await launch(districtChromium()), 'Đường truyền yếu', 'Huyện Bác Ái');
  await thin.click('#toggle-camera');
  await thin.click('#toggle-microphone');
  const joined = Date.now();

  const high = await waitFor('the open link to decode both cameras at >= 640 wide', async () => {
    const all = await open.evaluate(() => window.lienthong.receiveStats());
    return cameras.every((id) => all[id] && all[id].framesDecoded > 0 && all[id].frameWidth >= 640) && cameras.map((id) => all[id].frameWidth);
  }, 60000);
  // No waiting for the thin link's first frame (a receiver that never decodes one is the
  // failure): 10 s after the open link has both cameras, BWE has settled on both links.
  const sinceJoin = Date.now() - joined;
  // After the first 10 s (BWE settling), 20 s watched on both pages at once, and what the
  // bottleneck let through and dropped meanwhile.
  await new Promise((done) => setTimeout(done, 10000));
  const before = bottleneck();
  const [thinWindow, openWindow] = await Promise.all([watchReception(thin, cameras, 20000), watchReception(open, cameras, 20000)]);
  const after = bottleneck();
  const view = await thin.evaluate(() => ({ speaker: window.lienthong.state.speaker, spotlight: window.lienthong.state.spotlight, layout: window.lienthong.state.layout, lastN: window.lienthong.state.lastN }));
  const inWindow = droppedShare(before, after);
  const whole = droppedShare({ bytes: 0, packets: 0, dropped: 0 }, after);
  const wideShare = (seen) => Object.entries(seen.widths).reduce((wide, [width, count]) => wide + (Number(width) >= 640 ? count : 0), 0) / Object.values(seen.widths).reduce((all, count) => all + count, 0);
  const describe = (id, seen) => `camera ${id}: ${seen.frames} frames, ${seen.narrowest}-${seen.widest}px (${(wideShare(seen) * 100).toFixed(0)}% of the time >= 640), longest gap ${seen.longestGapMs} ms, Chromium freezes ${seen.freezes} (${seen.freezeSeconds} s), audio concealed ${(seen.concealedShare * 100).toFixed(1)}%, ${seen.packets} packets`;
  console.log(`two cameras, thin link (300 kbit/s, 5% loss, 40 ms), open link's cameras >= 640 ${(sinceJoin / 1000).toFixed(0)} s after the thin link joined; in 20 s: ${cameras.map((id) => describe(id, thinWindow[id])).join('; ')}${thinWindow[cameras[0]].audioOnly ? '; in audio-only mode' : ''}; page: ${JSON.stringify(view)}`);
  console.log(`open link: first ${high.join('/')}px; in 20 s: ${cameras.map((id) => describe(id, openWindow[id])).join('; ')}`);
  console.log(`bottleneck: in the 20 s ${inWindow.dropped} of ${inWindow.offered} packets dropped in the queue (${(inWindow.share * 100).toFixed(1)}%), ${(inWindow.kbps / 20).toFixed(0)} kbit/s through; whole call ${whole.dropped} of ${whole.offered} (${(whole.share * 100).toFixed(1)}%)`);
  // The camera the thin link gets (the first its page lists) keeps going at the lowest layer...
  const shown = cameras.reduce((best, id) => (thinWindow[id].frames > thinWindow[best].frames ? id : best));
  assert.ok(thinWindow[shown].frames >= 40, `the thin link decoded only ${cameras.map((id) => thinWindow[id].frames).join(' and ')} frames of the two cameras in 20 s${thinWindow[shown].audioOnly ? ', in audio-only mode' : ''}`);
  for (const id of cameras.filter((camera) => thinWindow[camera].frames > 0)) {
    assert.ok(thinWindow[id].widest <= 320, `the thin link got a ${thinWindow[id].widest}px layer of camera ${id}`);
    assert.ok(thinWindow[id].longestGapMs <= 1100, `the thin link's picture of camera ${id} froze for ${thinWindow[id].longestGapMs} ms`);
  }
  // ...both voices stay clear...
  for (const id of cameras) {
    assert.ok(thinWindow[id].concealedShare < 0.1, `${(thinWindow[id].concealedShare * 100).toFixed(1)}% of camera ${id}'s audio was concealed on the thin link`);
  }
  // ...the open link gets both cameras at 640 wide or more, most of the time: the camera
  // listed first takes the budget above the lowest layers first (`allocate`),
  // and the open link's estimate swings when four Chromiums share two cores (a browser slow
  // to read its socket reads as a queue), so the other spends seconds at 320 px now and then.
  for (const id of cameras) {
    assert.ok(openWindow[id].frames >= 40 && wideShare(openWindow[id]) >= 0.5, `the open link got camera ${id} at ${JSON.stringify(openWindow[id].widths)} (px: samples), ${openWindow[id].frames} frames in 20 s`);
  }
  // ...and what lienthong sends the district mostly gets through the bottleneck (the old
  // failure: two thirds of it dropped in the queue).
  assert.ok(inWindow.share < 0.1, `the bottleneck dropped ${(inWindow.share * 100).toFixed(1)}% of what was sent into it in the 20 s`);
  assert.ok(whole.share < 0.1, `the bottleneck dropped ${(whole.share * 100).toFixed(1)}% of what was sent into it over the whole call`);
});
