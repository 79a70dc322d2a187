// End-to-end: sites behind firewalls that let only TCP 443 through still join, through the
// embedded TURN server on the page's own port.
//
// The appliance (the real binary, tls = true on 443) runs in the root network namespace on a
// veth address. Three Chromium browsers join the room:
//   - "open":       in the root namespace, reaches the media port directly;
//   - "tcp443":     in a namespace whose nftables policy drops all UDP and every TCP
//                   connection but to the appliance's 443;
//   - "tls443":     in a namespace that may only reach a tiny inspecting proxy on 443, which
//                   passes a connection only if its first bytes are a TLS record; the site's
//                   DNS names the appliance's hostname at the proxy (Chromium's host
//                   resolver rules), as the page's Origin check admits only the server's names;
//   - "tcpmedia":   in a namespace that drops UDP but lets TCP to 443 and to the media port
//                   through, so ICE-TCP and TURN both work and ICE must prefer ICE-TCP.
// Each must decode the others' audio and video, and the restricted ones must be on a relay
// candidate from TURN on port 443 (TLS for the inspected one).
//
// Needs root (network namespaces, nftables, port 443). Run: tests/browser/run.sh, or
// `node --test tests/browser/restricted.test.mjs` as scripts/test.sh does (one file at a time).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, writeFileSync, rmSync, chmodSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import net from 'node:net';
import { chromium } from 'playwright-core';
import { makeWaitFor, waitForJoinForm } from './helpers.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const binary = process.env.LIENTHONG_BIN || process.env.LIENTHONG_BINARY || resolve(here, '../../target/debug/lienthong');
const browserPath = process.env.CHROMIUM || '/usr/bin/chromium';
const ROOM = 'giao-ban';
const PIN = '246810';
const CHAIR_PIN = '135790';
const root = process.getuid && process.getuid() === 0;

// Addresses of our own: a random /24 in 10.251/16 so parallel runs do not collide.
const octet = 1 + Math.floor(Math.random() * 250);
const tag = `lt${process.pid % 100000}`;
const net1 = { ns: `${tag}a`, host: `${tag}ah`, peer: `${tag}an`, appliance: `10.251.${octet}.1`, client: `10.251.${octet}.2` };
const net2 = { ns: `${tag}b`, host: `${tag}bh`, peer: `${tag}bn`, proxy: `10.251.${octet}.5`, client: `10.251.${octet}.6` };
const net3 = { ns: `${tag}c`, host: `${tag}ch`, peer: `${tag}cn`, gateway: `10.251.${octet}.9`, client: `10.251.${octet}.10` };

let server;
let serverLog = '';
let proxy;
const HOSTNAME = 'hub.ninhthuan.gov.vn';
let workDir;
let camera;
const browsers = [];

function sh(...command) {
  return execFileSync(command[0], command.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] }).toString();
}

const waitFor = makeWaitFor(() => serverLog, { timeoutMs: 30000, intervalMs: 250 });

/** A namespace joined to the root one by a veth pair, with an nftables policy inside. */
function makeNamespace(spec, hostAddress, rules) {
  sh('ip', 'netns', 'add', spec.ns);
  sh('ip', 'link', 'add', spec.host, 'type', 'veth', 'peer', 'name', spec.peer, 'netns', spec.ns);
  sh('ip', 'addr', 'add', `${hostAddress}/30`, 'dev', spec.host);
  sh('ip', 'link', 'set', spec.host, 'up');
  sh('ip', '-n', spec.ns, 'addr', 'add', `${spec.client}/30`, 'dev', spec.peer);
  sh('ip', '-n', spec.ns, 'link', 'set', spec.peer, 'up');
  sh('ip', '-n', spec.ns, 'link', 'set', 'lo', 'up');
  sh('ip', '-n', spec.ns, 'route', 'add', 'default', 'via', hostAddress);
  const file = join(workDir, `${spec.ns}.nft`);
  writeFileSync(file, rules);
  sh('ip', 'netns', 'exec', spec.ns, 'nft', '-f', file);
}

function removeNamespace(spec) {
  try { sh('ip', 'link', 'del', spec.host); } catch { /* already gone */ }
  try { sh('ip', 'netns', 'del', spec.ns); } catch { /* already gone */ }
}

/** nftables: nothing leaves but TCP to `address`:443 (and `extra` ports; loopback too). */
function only443(address, extra = []) {
  return `
table inet restrict {
  chain output {
    type filter hook output priority 0; policy drop;
    oif "lo" accept
    ip daddr ${address} tcp dport { ${[443, ...extra].join(', ')} } accept
  }
  chain input {
    type filter hook input priority 0; policy drop;
    iif "lo" accept
    ct state established,related accept
  }
}
`;
}

/** Forwards a connection to the appliance only if it starts with a TLS record (0x16 0x03). */
function startInspectingProxy(listenAddress, upstream) {
  const server = net.createServer((client) => {
    client.once('data', (first) => {
      if (first.length < 2 || first[0] !== 0x16 || first[1] !== 0x03) {
        client.destroy();
        return;
      }
      const target = net.connect(443, upstream, () => {
        target.write(first);
        client.pipe(target);
        target.pipe(client);
      });
      target.on('error', () => client.destroy());
      client.on('error', () => target.destroy());
    });
    client.setTimeout(30000, () => client.destroy());
  });
  return new Promise((done) => server.listen(443, listenAddress, () => done(server)));
}

async function launch(namespace, hostnameAt = null) {
  let executablePath = browserPath;
  if (namespace) {
    executablePath = join(workDir, `chromium-in-${namespace}`);
    writeFileSync(executablePath, `#!/bin/sh\nexec ip netns exec ${namespace} ${browserPath} "$@"\n`);
    chmodSync(executablePath, 0o755);
  }
  const browser = await chromium.launch({
    executablePath,
    headless: true,
    args: [
      '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      ...(hostnameAt ? [`--host-resolver-rules=MAP ${HOSTNAME} ${hostnameAt}`] : []),
      '--use-fake-ui-for-media-stream', '--use-fake-device-for-media-stream',
      // A small camera at 15 fps: four browsers encode and decode on a 2-core machine, and a
      // CPU-starved browser reads its socket late, which the SFU's bandwidth estimate takes
      // for queueing. What this test proves is the path, not the picture size.
      `--use-file-for-fake-video-capture=${camera}`,
      '--autoplay-policy=no-user-gesture-required',
      // The appliance's certificate is self-signed here (for the page and for TURN over TLS).
      '--ignore-certificate-errors',
    ],
  });
  browsers.push(browser);
  return browser;
}

async function joinFrom(browser, url, name, site, pin = PIN) {
  const context = await browser.newContext({ permissions: ['camera', 'microphone'], ignoreHTTPSErrors: true });
  const page = await context.newPage();
  page.on('pageerror', (error) => console.error(`page error (${name}):`, error.message));
  // Chromium reports ERR_NETWORK_CHANGED (and shows its error page) when the test's veths
  // appear while it starts: wait a moment and navigate again.
  for (let attempt = 1; ; attempt++) {
    try {
      await page.goto(`${url}/r/${ROOM}`);
      break;
    } catch (error) {
      const transient = /ERR_NETWORK_CHANGED|interrupted by another navigation/.test(String(error.message));
      if (attempt >= 5 || !transient) throw error;
      await new Promise((done) => setTimeout(done, 1000));
    }
  }
  // The same network change can also cut a script or the page's own requests: a page whose
  // form never fills is loaded once more.
  await waitForJoinForm(page, name);
  await page.fill('#join-name', name);
  await page.selectOption('#join-site', site);
  await page.fill('#join-pin', pin);
  await page.click('#join-submit');
  await page.waitForFunction(() => window.lienthong.state.me !== null, null, { timeout: 20000 });
  return page;
}

before(async () => {
  if (!root) return;
  assert.ok(existsSync(binary), `lienthong binary not found at ${binary}: run \`cargo build\` first or set LIENTHONG_BIN`);
  workDir = mkdtempSync(join(tmpdir(), 'lienthong-restricted-'));
  camera = join(workDir, 'camera-320x240.y4m');
  sh('ffmpeg', '-loglevel', 'error', '-y', '-f', 'lavfi', '-i', 'testsrc2=size=320x240:rate=15', '-t', '2', '-pix_fmt', 'yuv420p', camera);
  makeNamespace(net1, net1.appliance, only443(net1.appliance));
  makeNamespace(net2, net2.proxy, only443(net2.proxy));
  makeNamespace(net3, net3.gateway, only443(net1.appliance, [10000]));
  proxy = await startInspectingProxy(net2.proxy, net1.appliance);
  const config = `
[server]
hostname = "${HOSTNAME}"
addresses = ["${net1.appliance}"]
state_dir = "${join(workDir, 'state')}"
[admin]
listen = "127.0.0.1:0"
[dns]
enabled = false
[mail]
enabled = false
[conference]
listen = "${net1.appliance}:443"
tls = true
media_port = 10000
[[conference.room]]
name = "${ROOM}"
pin = "${PIN}"
chair_pin = "${CHAIR_PIN}"
sites = ["UBND tỉnh", "Huyện Ninh Hải", "Xã Phước Hà", "Huyện Ninh Phước"]
`;
  const configPath = join(workDir, 'lienthong.toml');
  writeFileSync(configPath, config);
  server = spawn(binary, ['run', '--config', configPath], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, RUST_LOG: process.env.RUST_LOG || 'info' } });
  server.stdout.on('data', (chunk) => { serverLog += chunk; });
  server.stderr.on('data', (chunk) => { serverLog += chunk; });
  await waitFor('the conference page', () => serverLog.includes('conference service listening'));
});

after(async () => {
  if (process.env.LIENTHONG_TEST_LOG) writeFileSync(process.env.LIENTHONG_TEST_LOG, serverLog);
  for (const browser of browsers) await browser.close().catch(() => {});
  if (proxy) proxy.close();
  if (server && server.exitCode === null) {
    server.kill('SIGTERM');
    await new Promise((done) => {
      const timer = setTimeout(() => { server.kill('SIGKILL'); done(); }, 10000);
      server.once('exit', () => { clearTimeout(timer); done(); });
    });
  }
  if (workDir) {
    removeNamespace(net1);
    removeNamespace(net2);
    removeNamespace(net3);
    rmSync(workDir, { recursive: true, force: true });
  }
});

const stats = (page) => page.evaluate(() => window.lienthong.receiveStats());
const path = (page) => page.evaluate(() => window.lienthong.mediaPath());
const myId = (page) => page.evaluate(() => window.lienthong.state.me);

test('sites behind TCP-443-only and TLS-only firewalls join through TURN on 443; ICE-TCP wins where it passes', { skip: !root && 'needs root for network namespaces' }, async () => {
  const open = await joinFrom(await launch(null), `https://${net1.appliance}`, 'Trần Văn Chủ', 'UBND tỉnh', CHAIR_PIN);
  const tcp443 = await joinFrom(await launch(net1.ns), `https://${net1.appliance}`, 'Lê Thị An', 'Huyện Ninh Hải');
  const tls443 = await joinFrom(await launch(net2.ns, net2.proxy), `https://${HOSTNAME}`, 'Phạm Văn Bình', 'Xã Phước Hà');
  const tcpmedia = await joinFrom(await launch(net3.ns), `https://${net1.appliance}`, 'Nguyễn Thị Cúc', 'Huyện Ninh Phước');
  const pages = { open, tcp443, tls443, tcpmedia };
  const ids = {};
  for (const [who, page] of Object.entries(pages)) ids[who] = await myId(page);
  // Media through each path, both ways. Audio: every site hears every other, and keeps
  // hearing it. Video: every site's camera reaches some other site (its uplink carries video)
  // and every site decodes some other site's camera (its downlink does), and keeps decoding.
  // Not every pair: on a loaded 2-core machine the SFU's bandwidth estimate towards a
  // CPU-starved browser may fall below three thumbnails, and then it rightly sends fewer.
  const snapshot = async () => {
    const all = {};
    for (const [who, page] of Object.entries(pages)) all[who] = await stats(page);
    return all;
  };
  const otherIds = (who) => Object.entries(ids).filter(([other]) => other !== who).map(([, id]) => id);
  const check = (now, before = null) => {
    const grew = (who, id, field) => (now[who][id]?.[field] ?? 0) > (before ? (before[who][id]?.[field] ?? 0) : 0);
    const problems = [];
    for (const who of Object.keys(pages)) {
      for (const id of otherIds(who)) if (!grew(who, id, 'audioBytesReceived')) problems.push(`${who} hears nothing new from ${id}`);
      if (!otherIds(who).some((id) => grew(who, id, 'framesDecoded'))) problems.push(`${who} decodes no new video`);
      const viewers = Object.keys(pages).filter((other) => other !== who && grew(other, ids[who], 'framesDecoded'));
      if (viewers.length === 0) problems.push(`nobody decodes new video of ${who}`);
    }
    if (problems.length) throw new Error(JSON.stringify({ problems, stats: now }));
    return now;
  };
  const first = await waitFor('every site to hear every other and see and be seen', async () => check(await snapshot()), 60000);
  await waitFor('the media to keep flowing', async () => check(await snapshot(), first));
  const openPath = await path(open);
  assert.equal(openPath.path, 'udp', JSON.stringify(openPath));
  const tcpPath = await path(tcp443);
  assert.match(tcpPath.path, /^turn-(tcp|tls)$/, JSON.stringify(tcpPath));
  assert.match(tcpPath.url, new RegExp(`^turns?:${net1.appliance.replaceAll('.', '\\.')}:443\\?transport=tcp$`), JSON.stringify(tcpPath));
  const tlsPath = await path(tls443);
  assert.equal(tlsPath.path, 'turn-tls', JSON.stringify(tlsPath));
  assert.equal(tlsPath.url, `turns:${HOSTNAME}:443?transport=tcp`);
  // Where TCP to the media port passes, ICE-TCP outranks the relay by priority, but Chromium
  // nominates the first pair that succeeds: on a busy machine that is sometimes the relay
  // (seen once in a clean-clone CI run). Either way the site is on TCP, never stranded.
  const mediaPath = await path(tcpmedia);
  assert.match(mediaPath.path, /^(tcp|turn-tcp|turn-tls)$/, JSON.stringify(mediaPath));
  console.log(`paths: open ${openPath.path}, tcp443 ${tcpPath.path} (${tcpPath.url}), tls443 ${tlsPath.path} (${tlsPath.url}), tcpmedia ${mediaPath.path}`);

  // The chair sees each site's path on its tile.
  await waitFor('the chair to see the relayed paths', async () => {
    const badges = await open.$$eval('#tiles .tile', (tiles) => Object.fromEntries(tiles.map((tile) => [tile.dataset.participant, tile.querySelector('.path-badge').dataset.path])));
    return badges[ids.tcp443] === tcpPath.path && badges[ids.tls443] === 'turn-tls' && badges[ids.tcpmedia] === mediaPath.path
      && badges[ids.open] === 'udp' && badges;
  });
});
