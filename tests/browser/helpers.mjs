// Helpers the browser end-to-end tests share (conference, meeting12, restricted, thin-link):
// free ports, polling with the server log's end on failure, stopping child processes, and the
// join form that a network change can leave empty.

import net from 'node:net';
import dgram from 'node:dgram';

/** A port free for both TCP and UDP (the media port serves both on one number). */
export async function freePort() {
  for (;;) {
    const port = await new Promise((done, fail) => {
      const socket = dgram.createSocket('udp4');
      socket.on('error', fail);
      socket.bind(0, '127.0.0.1', () => {
        const { port } = socket.address();
        socket.close(() => done(port));
      });
    });
    const tcpFree = await new Promise((done) => {
      const probe = net.createServer();
      probe.once('error', () => done(false));
      probe.listen(port, '127.0.0.1', () => probe.close(() => done(true)));
    });
    if (tcpFree) return port;
  }
}

export const sleep = (ms) => new Promise((done) => setTimeout(done, ms));

/**
 * A `waitFor(what, check, timeoutMs, intervalMs)` for one test file: it polls `check` until it
 * returns something truthy (and returns that); on timeout it throws with the last result or
 * error and the last `logTail` characters of `log()` (the server's log, read when it fails).
 * Each file keeps its own defaults: its timing on a 2-core runner was tuned to them.
 */
export function makeWaitFor(log, { timeoutMs: defaultTimeoutMs, intervalMs: defaultIntervalMs, logTail = 4000 }) {
  return async function waitFor(what, check, timeoutMs = defaultTimeoutMs, intervalMs = defaultIntervalMs) {
    const deadline = Date.now() + timeoutMs;
    let last;
    while (Date.now() < deadline) {
      try {
        last = await check();
        if (last) return last;
      } catch (error) {
        last = error;
      }
      await sleep(intervalMs);
    }
    throw new Error(`timed out waiting for ${what} (last: ${JSON.stringify(last && last.message ? last.message : last)})\n--- server log ---\n${log().slice(-logTail)}`);
  };
}

/** Stops a child process by its PID: SIGTERM, then SIGKILL after `graceMs`. */
export async function stopProcess(child, graceMs = 5000) {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((done) => child.once('exit', done));
  try { process.kill(child.pid, 'SIGTERM'); } catch { return; }
  const timer = setTimeout(() => { try { process.kill(child.pid, 'SIGKILL'); } catch { /* gone */ } }, graceMs);
  await exited;
  clearTimeout(timer);
}

/**
 * Waits for the join form of a page that is loading to fill (its site list). Chromium sees
 * the tests' veths appear as a network change and may cut a script of the page being loaded
 * (the page retries its own requests; a script it cannot): a page whose form never fills is
 * loaded again, up to three tries in all, and the log says so under `name`.
 */
export async function waitForJoinForm(page, name) {
  for (let attempt = 1; ; attempt++) {
    try {
      await page.waitForSelector('#join-site option', { state: 'attached', timeout: 15000 });
      break;
    } catch (error) {
      if (attempt >= 3) throw error;
      console.log(`the join form of ${name} did not fill (${error.message.split('\n')[0]}); loading the page again`);
      await page.reload().catch(() => {});
    }
  }
}
