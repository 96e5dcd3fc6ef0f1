// A real browser against flag-server: Debian's Chromium, driven by playwright-core, loads a page
// from another origin that uses the OpenFeature web SDK with the OFREP web provider (bundled with
// esbuild). The test toggles a flag through the management API and measures how long the page
// takes to show the new value without a reload, over 50 toggles per scenario:
//   - one instance on its embedded default (SQLite + memory);
//   - with client tokens (the stream needs the credential the bulk answer issued);
//   - with --redis-postgres: the browser on a second instance (tiered, then redis) while the
//     writes go through the first, on the REDIS_URL and DATABASE_URL given.
// Usage: node run.mjs <flag-server binary> [--redis-postgres]
// It fails when a toggle is not shown within 10 s; the latencies are reported, not asserted.

import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';
import { chromium } from 'playwright-core';

const here = dirname(fileURLToPath(import.meta.url));
const binary = resolve(process.argv[2] ?? '');
const shared = process.argv.includes('--redis-postgres');
const ADMIN = 'browser-admin';
const TOGGLES = 50;
const SEEN_WITHIN_MS = 10_000;
const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';

const children = [];
const scratch = [];
let failures = 0;
let passes = 0;

function fail(message) {
  console.error(`FAIL: ${message}`);
  failures += 1;
}

/** Starts the binary with `env`; resolves to its base URL once it listens. */
function startServer(env) {
  const directory = mkdtempSync(join(tmpdir(), 'flag-browser-'));
  scratch.push(directory);
  const child = spawn(binary, [], {
    cwd: directory,
    env: { PATH: process.env.PATH, FLAG_LISTEN: '127.0.0.1:0', FLAG_ADMIN_TOKEN: ADMIN, RUST_LOG: 'warn', ...env },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  children.push(child);
  return new Promise((resolvePromise, reject) => {
    const timer = setTimeout(() => reject(new Error('flag-server did not start within 30 s')), 30_000);
    child.on('exit', (code) => reject(new Error(`flag-server exited early (${code})`)));
    createInterface({ input: child.stdout }).on('line', (line) => {
      const match = line.match(/^flag-server listening on (http:\/\/\S+)/);
      if (match) {
        clearTimeout(timer);
        resolvePromise(match[1]);
      }
    });
  });
}

/** Serves the page and its bundle on a port of its own: another origin than the server. */
async function servePage(bundle) {
  const html = readFileSync(join(here, 'index.html'));
  const server = createServer((request, response) => {
    const path = new URL(request.url, 'http://page').pathname;
    if (path === '/page.bundle.js') {
      response.writeHead(200, { 'content-type': 'text/javascript' }).end(bundle);
    } else if (path === '/') {
      response.writeHead(200, { 'content-type': 'text/html' }).end(html);
    } else {
      response.writeHead(404).end();
    }
  });
  await new Promise((ready) => server.listen(0, '127.0.0.1', ready));
  return { server, origin: `http://127.0.0.1:${server.address().port}` };
}

async function writeFlag(base, env, enabled) {
  const response = await fetch(`${base}/v1/environments/${env}/flags/kill-switch`, {
    method: 'PUT',
    headers: { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/json' },
    body: JSON.stringify({ enabled }),
  });
  if (response.status !== 200 && response.status !== 201) {
    throw new Error(`PUT answered ${response.status}: ${await response.text()}`);
  }
}

function percentile(sorted, fraction) {
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * fraction))];
}

/** One scenario: the page reads from `reader`, the writes go to `writer`. */
async function scenario(browser, pageOrigin, name, { writer, reader, env, token }) {
  await writeFlag(writer, env, false);
  const context = await browser.newContext();
  const page = await context.newPage();
  const query = new URLSearchParams({ server: reader, env, ...(token ? { token } : {}) });
  await page.goto(`${pageOrigin}/?${query}`);
  await page.waitForFunction(() => document.getElementById('status').textContent !== 'loading', null, { timeout: 20_000 });
  const status = await page.textContent('#status');
  if (status !== 'ready') {
    fail(`${name}: the page did not start: ${status}`);
    await context.close();
    return;
  }
  const latencies = [];
  for (let toggle = 1; toggle <= TOGGLES; toggle += 1) {
    const enabled = toggle % 2 === 1;
    const began = Date.now();
    await writeFlag(writer, env, enabled);
    try {
      await page.waitForFunction((expected) => document.getElementById('flag').textContent === expected, String(enabled), {
        timeout: SEEN_WITHIN_MS,
        polling: 5,
      });
    } catch {
      fail(`${name}: toggle ${toggle} (${enabled}) was not shown within ${SEEN_WITHIN_MS} ms`);
      break;
    }
    const shownAt = await page.evaluate(() => window.shown[window.shown.length - 1].at);
    latencies.push(Math.max(0, shownAt - began));
    // Apart by more than the server's 100 ms coalescing, so each toggle is measured alone.
    await new Promise((wait) => setTimeout(wait, 150));
  }
  await context.close();
  if (latencies.length === TOGGLES) {
    const sorted = [...latencies].sort((a, b) => a - b);
    console.log(
      `ok:   ${name}: ${TOGGLES} toggles shown without a reload; P50 ${percentile(sorted, 0.5)} ms, ` +
        `P99 ${percentile(sorted, 0.99)} ms, max ${sorted[sorted.length - 1]} ms`,
    );
    passes += 1;
  }
}

async function main() {
  const bundled = await build({
    entryPoints: [join(here, 'page.js')],
    bundle: true,
    format: 'iife',
    target: 'es2020',
    write: false,
    logLevel: 'warning',
  });
  const { server: pageServer, origin } = await servePage(bundled.outputFiles[0].contents);
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update'],
  });
  try {
    const cors = { FLAG_CORS_ORIGINS: origin };
    const embedded = await startServer({ ...cors });
    await scenario(browser, origin, 'embedded (SQLite + memory)', { writer: embedded, reader: embedded, env: 'web' });

    const guarded = await startServer({ ...cors, FLAG_CLIENT_TOKENS: 'web:browser-token' });
    await scenario(browser, origin, 'client tokens (credentialed stream)', {
      writer: guarded,
      reader: guarded,
      env: 'web',
      token: 'browser-token',
    });

    if (shared) {
      const redis = process.env.REDIS_URL;
      const database = process.env.DATABASE_URL;
      if (!redis || !database) {
        throw new Error('--redis-postgres needs REDIS_URL and DATABASE_URL (a running Redis and Postgres)');
      }
      const run = `browser-${process.pid}-${Date.now()}`;
      const stores = { ...cors, REDIS_URL: redis, DATABASE_URL: database, REDIS_KEY_PREFIX: run };
      const writer = await startServer({ ...stores, CACHE_BACKEND: 'redis' });
      for (const backend of ['tiered', 'redis']) {
        const reader = await startServer({ ...stores, CACHE_BACKEND: backend });
        await scenario(browser, origin, `second instance (${backend}, writes through another)`, {
          writer,
          reader,
          env: `${run.replace(/[^a-z0-9-]/g, '-')}-${backend}`.slice(0, 60),
        });
      }
    }
  } finally {
    await browser.close();
    pageServer.close();
  }
}

try {
  await main();
} catch (error) {
  fail(String(error?.stack ?? error));
} finally {
  for (const child of children) {
    child.kill('SIGTERM');
  }
  for (const directory of scratch) {
    rmSync(directory, { recursive: true, force: true });
  }
}
console.log(`browser checks: ${passes} passed, ${failures} failed`);
process.exit(failures === 0 ? 0 : 1);
