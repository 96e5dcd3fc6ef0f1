// The web UI in a real browser, end to end against the binary: Debian's Chromium driven by
// playwright-core, on the embedded default (SQLite + memory), signed in with a named admin token.
// Each step is a check the issue names; a screenshot of each view goes under
// target/ui-screenshots/. Usage: node ui.mjs <flag-server binary>
// It fails on the first broken step, on any request to another host, and on any
// Content-Security-Policy violation or page error.

import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = dirname(fileURLToPath(import.meta.url));
const binary = resolve(process.argv[2] ?? '');
const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
const SHOTS = resolve(here, '../../../../target/ui-screenshots');
const ALICE = 'alice-secret-token';
const BOB = 'bob-secret-token';
const STEP_TIMEOUT_MS = 10_000;

const directory = mkdtempSync(join(tmpdir(), 'flag-ui-'));
let server;
let browser;
const problems = [];
let passed = 0;

function startServer() {
  server = spawn(binary, [], {
    cwd: directory,
    env: {
      PATH: process.env.PATH,
      FLAG_LISTEN: '127.0.0.1:0',
      FLAG_ADMIN_TOKENS: `alice:${ALICE},bob:${BOB}`,
      RUST_LOG: 'warn',
    },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  return new Promise((resolvePromise, reject) => {
    const timer = setTimeout(() => reject(new Error('flag-server did not start within 30 s')), 30_000);
    server.on('exit', (code) => reject(new Error(`flag-server exited early (${code})`)));
    createInterface({ input: server.stdout }).on('line', (line) => {
      const match = line.match(/^flag-server listening on (http:\/\/\S+)/);
      if (match) {
        clearTimeout(timer);
        resolvePromise(match[1]);
      }
    });
  });
}

async function api(base, method, path, { token = BOB, body, headers = {} } = {}) {
  const response = await fetch(`${base}${path}`, {
    method,
    headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json', ...headers },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  return { status: response.status, body: text ? JSON.parse(text) : null };
}

async function evaluate(base, key, context = { targetingKey: 'user-1' }) {
  const response = await fetch(`${base}/ofrep/v1/evaluate/flags/${key}`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ context }),
  });
  return response.json();
}

function check(condition, message) {
  if (!condition) throw new Error(message);
}

/** Opens `hash` of the UI afresh (a same-document hash change alone would keep the view). */
async function visit(page, base, hash) {
  await page.goto(`${base}/ui/${hash}`);
  await page.reload();
}

async function step(name, page, body) {
  try {
    await body();
    await page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true });
    passed += 1;
    console.log(`ok: ${name}`);
  } catch (error) {
    await page.screenshot({ path: join(SHOTS, `${name}-FAILED.png`), fullPage: true }).catch(() => {});
    throw new Error(`${name}: ${error.message}`);
  }
}

async function main() {
  mkdirSync(SHOTS, { recursive: true });
  const base = await startServer();
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update'],
  });
  const context = await browser.newContext({ viewport: { width: 1200, height: 900 } });
  const page = await context.newPage();
  page.setDefaultTimeout(STEP_TIMEOUT_MS);
  const origin = new URL(base).origin;
  page.on('request', (request) => {
    const url = new URL(request.url());
    if (url.origin !== origin && url.protocol !== 'data:') problems.push(`request to another host: ${request.url()}`);
  });
  page.on('console', (message) => {
    if (/Content Security Policy|Refused to/.test(message.text())) problems.push(`CSP: ${message.text()}`);
  });
  page.on('pageerror', (error) => problems.push(`page error: ${error.message}`));
  page.on('dialog', (dialog) => dialog.accept());

  await step('01-sign-in', page, async () => {
    await page.goto(`${base}/ui/`);
    await page.locator('#token').fill('not-a-token');
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByText('That token is not an admin token').waitFor();
    await page.locator('#token').fill(ALICE);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByRole('heading', { name: 'Environments' }).waitFor();
    const stored = await page.evaluate(() => ({ session: Object.values(sessionStorage), local: Object.keys(localStorage), url: location.href }));
    check(stored.session.includes(ALICE), 'the token is kept in sessionStorage');
    check(stored.local.length === 0 && !stored.url.includes(ALICE), 'and nowhere else');
  });

  await step('02-create-flag', page, async () => {
    await page.locator('#new-env').fill('production');
    await page.getByRole('button', { name: 'Create a flag there' }).click();
    await page.locator('#f-key').fill('checkout');
    await page.locator('#f-description').fill('The one-page checkout');
    await page.locator('#save').click();
    await page.getByText('Saved checkout (version 1).').waitFor();
    const stored = await api(base, 'GET', '/v1/environments/production/flags/checkout');
    check(stored.status === 200 && stored.body.description === 'The one-page checkout', `stored: ${JSON.stringify(stored)}`);
  });

  await step('03-toggle', page, async () => {
    await visit(page, base, `#/e/production`);
    const before = await evaluate(base, 'checkout');
    check(before.value === false && before.reason === 'DISABLED', `before: ${JSON.stringify(before)}`);
    const toggle = page.getByRole('switch', { name: 'checkout enabled' });
    await toggle.click();
    await page.waitForFunction(() => document.querySelector('[aria-label="checkout enabled"]').getAttribute('aria-checked') === 'true');
    const after = await evaluate(base, 'checkout');
    check(after.value === true && after.reason === 'STATIC', `after: ${JSON.stringify(after)}`);
  });

  await step('04-keyboard-toggle', page, async () => {
    await visit(page, base, `#/e/production`);
    await page.getByRole('switch', { name: 'checkout enabled' }).waitFor();
    // From the top of the page with Tab only, then Space.
    await page.evaluate(() => document.activeElement && document.activeElement.blur());
    let reached = false;
    for (let presses = 0; presses < 30 && !reached; presses += 1) {
      await page.keyboard.press('Tab');
      reached = await page.evaluate(() => document.activeElement?.getAttribute('aria-label') === 'checkout enabled');
    }
    check(reached, 'Tab never reached the toggle');
    await page.keyboard.press('Space');
    await page.waitForFunction(() => document.querySelector('[aria-label="checkout enabled"]').getAttribute('aria-checked') === 'false');
    const after = await evaluate(base, 'checkout');
    check(after.value === false && after.reason === 'DISABLED', `after the keyboard toggle: ${JSON.stringify(after)}`);
    await page.keyboard.press('Enter');
    await page.waitForFunction(() => document.querySelector('[aria-label="checkout enabled"]').getAttribute('aria-checked') === 'true');
    check((await evaluate(base, 'checkout')).value === true, 'Enter toggles back');
  });

  await step('05-segment', page, async () => {
    await visit(page, base, `#/e/production/new-segment`);
    await page.locator('#f-key').fill('beta');
    await page.locator('#s-included').fill('user-1\nuser-2');
    await page.getByRole('button', { name: 'Create segment' }).click();
    await page.getByText('Saved segment beta (version 1).').waitFor();
  });

  await step('06-rule-with-segment-and-rollout', page, async () => {
    await visit(page, base, `#/e/production/f/checkout`);
    await page.locator('#add-rule').click();
    const rule = page.locator('[data-rule="0"]');
    await rule.getByRole('button', { name: 'Add condition' }).click();
    await page.getByLabel('rules[0].conditions[0] operator').selectOption('in_segment');
    await page.getByLabel('rules[0].conditions[0] value').fill('beta');
    await rule.getByLabel('Serves').selectOption('rollout');
    await page.getByLabel('rules[0].rollout[0] weight').fill('30');
    await page.getByLabel('rules[0].rollout[0] weight').press('Tab');
    await page.locator('#save').click();
    await page.getByText(/Saved checkout \(version \d+\)/).waitFor();
    const stored = (await api(base, 'GET', '/v1/environments/production/flags/checkout')).body;
    check(stored.rules.length === 1 && stored.rules[0].conditions[0].operator === 'in_segment', `rules: ${JSON.stringify(stored.rules)}`);
    check(stored.rules[0].rollout[0].weight === 30, `rollout: ${JSON.stringify(stored.rules[0].rollout)}`);
    const served = await evaluate(base, 'checkout', { targetingKey: 'user-1' });
    check(served.reason === 'SPLIT', `a beta user is split: ${JSON.stringify(served)}`);
  });

  await step('07-invalid-edit', page, async () => {
    await visit(page, base, `#/e/production/f/checkout`);
    const rule = page.locator('[data-rule="0"]');
    await rule.getByRole('button', { name: 'Add condition' }).click();
    await page.getByLabel('rules[0].conditions[1] attribute').fill('email');
    await page.getByLabel('rules[0].conditions[1] operator').selectOption('matches');
    await page.getByLabel('rules[0].conditions[1] value').fill('(unclosed');
    await page.locator('#save').click();
    const value = page.getByLabel('rules[0].conditions[1] value');
    await page.waitForFunction(() => document.querySelector('[data-field="rules[0].conditions[1].value"]')?.getAttribute('aria-invalid') === 'true');
    const message = await page.evaluate(() => document.querySelector('[data-field="rules[0].conditions[1].value"]').nextElementSibling?.textContent);
    check(/invalid regular expression/.test(message ?? ''), `the message beside the field: ${message}`);
    check(await value.evaluate((element) => element === document.activeElement), 'the field is focused');
  });

  await step('08-conflict', page, async () => {
    await visit(page, base, `#/e/production/f/checkout`);
    await page.locator('#f-description').waitFor();
    const current = (await api(base, 'GET', '/v1/environments/production/flags/checkout')).body;
    const { version, updatedAt, key, ...definition } = current;
    const concurrent = await api(base, 'PUT', '/v1/environments/production/flags/checkout', {
      body: { ...definition, description: 'Changed by bob over the API' },
      headers: { 'If-Match': `"${version}"` },
    });
    check(concurrent.status === 200, `bob's write: ${concurrent.status}`);
    await page.locator('#f-description').fill('Changed by alice in the UI');
    await page.locator('#save').click();
    await page.locator('#conflict').waitFor();
    check(/Someone else saved checkout/.test(await page.locator('#conflict').textContent()), 'the banner says so');
    const stored = (await api(base, 'GET', '/v1/environments/production/flags/checkout')).body;
    check(stored.description === 'Changed by bob over the API', 'the lost edit was not written');
    await page.screenshot({ path: join(SHOTS, '08-conflict-banner.png'), fullPage: true });
    await page.locator('#reload').click();
    await page.waitForFunction(() => document.querySelector('#f-description')?.value === 'Changed by bob over the API');
  });

  await step('09-history', page, async () => {
    await visit(page, base, `#/e/production/f/checkout/history`);
    await page.locator('.audit-entry').first().waitFor();
    const actors = await page.locator('.audit-entry').evaluateAll((entries) => entries.map((entry) => `${entry.dataset.actor} ${entry.dataset.action}`));
    check(actors[0] === 'bob update', `newest first, bob's API write: ${actors}`);
    check(actors.includes('alice create') && actors.filter((actor) => actor === 'alice update').length >= 3, `alice's UI writes: ${actors}`);
    const newest = page.locator('.audit-entry').first();
    check(/Changed by bob over the API/.test(await newest.locator('.diff .add').allTextContents().then((lines) => lines.join('\n'))), 'the diff shows the new description');
    check((await newest.locator('.diff .del').count()) > 0, 'and the old one');
    await visit(page, base, `#/e/production/audit`);
    await page.locator('.audit-entry[data-actor="alice"][data-action="create"]').first().waitFor();
    check((await page.locator('.audit-entry').count()) >= 6, 'the environment log lists flag and segment writes');
  });

  await step('10-explain', page, async () => {
    await visit(page, base, `#/e/production/f/checkout/explain`);
    await page.locator('#context').fill('{"targetingKey": "user-1"}');
    await page.locator('#explain').click();
    await page.locator('#split').waitFor();
    const answer = await page.locator('#answer').textContent();
    check(/SPLIT/.test(answer), `answer: ${answer}`);
    check(/matched/.test(await page.locator('[data-explained-rule="0"]').textContent()), 'rule 1 matched');
    const shown = await page.locator('#bucket').textContent();
    const explained = (await api(base, 'POST', '/v1/environments/production/flags/checkout/explain', { body: { context: { targetingKey: 'user-1' } } })).body;
    check(Number(shown) === explained.explanation.split.bucket, `bucket shown ${shown}, API ${explained.explanation.split.bucket}`);
    check(answer.includes(explained.variant), 'the variant the API serves');
  });

  await step('11-copy', page, async () => {
    await visit(page, base, `#/e/production/f/checkout/copy`);
    await page.locator('#copy-target').fill('staging');
    await page.locator('#copy').click();
    await page.getByText(/segment beta does not exist/).waitFor();
    await api(base, 'PUT', '/v1/environments/staging/segments/beta', { body: { included: ['user-1'] } });
    await page.locator('#copy').click();
    await page.getByText(/Copied checkout to staging/).waitFor();
    const copied = await api(base, 'GET', '/v1/environments/staging/flags/checkout');
    check(copied.status === 200 && copied.body.rules[0].rollout[0].weight === 30, `copied: ${JSON.stringify(copied.body)}`);
  });

  await step('12-flag-list', page, async () => {
    for (const [key, description] of [['new-search', 'Search results v2'], ['dark-mode', 'Dark theme'], ['pricing-page', 'New pricing layout']]) {
      await api(base, 'PUT', `/v1/environments/production/flags/${key}`, { body: { description, enabled: key !== 'pricing-page' } });
    }
    await visit(page, base, `#/e/production`);
    await page.locator('#search').fill('dark');
    await page.waitForFunction(() => document.querySelectorAll('tr[data-flag]').length === 1);
    await page.locator('#search').fill('');
    await page.waitForFunction(() => document.querySelectorAll('tr[data-flag]').length === 4);
  });

  await step('13-editor', page, async () => {
    await visit(page, base, `#/e/production/f/checkout`);
    await page.locator('[data-rule="0"]').waitFor();
  });

  await step('14-json', page, async () => {
    await visit(page, base, `#/e/production/f/checkout/json`);
    const text = await page.locator('#json').inputValue();
    check(JSON.parse(text).rules.length === 1, 'the JSON view shows the definition');
  });

  await step('15-environments', page, async () => {
    await visit(page, base, `#/`);
    await page.getByRole('link', { name: 'staging' }).waitFor();
  });

  await step('16-export', page, async () => {
    await visit(page, base, `#/e/production/export`);
    await page.waitForFunction(() => document.querySelector('#export').value.length > 0);
    const json = JSON.parse(await page.locator('#export').inputValue());
    check(json.environment === 'production' && json.flags.length === 4, `export: ${json.flags.length} flags`);
    check((await page.locator('#download').getAttribute('href')).startsWith('blob:'), 'a download of the document');
    await page.locator('#export-format').selectOption('yaml');
    await page.waitForFunction(() => document.querySelector('#export').value.startsWith('environment: production'));
  });

  await step('17-import-preview-and-apply', page, async () => {
    const document = await (await fetch(`${base}/v1/environments/production/export`, { headers: { Authorization: `Bearer ${BOB}` } })).text();
    await visit(page, base, `#/e/qa/import`);
    await page.locator('#import').fill(document);
    await page.locator('#preview').click();
    await page.locator('[data-change="flags-created"]').waitFor();
    const created = await page.locator('[data-change="flags-created"] code').allTextContents();
    check(created.join(',') === 'checkout,dark-mode,new-search,pricing-page', `preview: ${created}`);
    check((await api(base, 'GET', '/v1/environments/qa/flags')).body.flags.length === 0, 'a preview writes nothing');
    await page.locator('#apply').click();
    await page.locator('#applied').waitFor();
    check((await api(base, 'GET', '/v1/environments/qa/flags')).body.flags.length === 4, 'applied');
    check((await evaluate(base, 'dark-mode')).value === true, 'production still serves');
  });

  await step('18-import-conflict-and-problems', page, async () => {
    await visit(page, base, `#/e/qa/import`);
    await page.locator('#import').fill('flags:\n  - key: dark-mode\n    enabled: false\n');
    await page.locator('#preview').click();
    await page.locator('[data-change="flags-updated"]').waitFor();
    await api(base, 'PUT', '/v1/environments/qa/flags/new-search', { body: { description: 'changed meanwhile' } });
    await page.locator('#apply').click();
    await page.locator('#conflict').waitFor();
    await page.locator('#import').fill('{"flags": [{"enabled": true}, {"key": "x", "rollout": [{"variant": "zz", "weight": 1}]}]}');
    await page.locator('#preview').click();
    await page.locator('#problems').waitFor();
    const listed = await page.locator('#problems li').allTextContents();
    check(listed.length === 2 && listed[0].startsWith('flags[0].key') && listed[1].startsWith('flags[1].rollout[0].variant'), `problems: ${listed}`);
  });

  await step('19-copy-between-environments', page, async () => {
    await visit(page, base, `#/e/dev/copy`);
    await page.locator('#copy-from').selectOption('production');
    await page.locator('#copy-keys').fill('checkout');
    await page.locator('#preview').click();
    await page.locator('[data-change="segments-created"]').waitFor();
    await page.locator('#apply').click();
    await page.locator('#applied').waitFor();
    const copied = await api(base, 'GET', '/v1/environments/dev/flags/checkout');
    check(copied.status === 200, `copied: ${copied.status}`);
    check((await api(base, 'GET', '/v1/environments/dev/segments/beta')).status === 200, 'with its segment');
  });

  check(problems.length === 0, problems.join('\n'));
  const headers = (await fetch(`${base}/ui/`)).headers;
  const policy = headers.get('content-security-policy') ?? '';
  check(/script-src 'self'/.test(policy) && !/unsafe-inline/.test(policy), `CSP: ${policy}`);
}

try {
  await main();
  console.log(`web UI: ${passed} steps passed; screenshots in ${SHOTS}`);
} catch (error) {
  console.error(`FAIL: ${error.message}`);
  process.exitCode = 1;
} finally {
  await browser?.close().catch(() => {});
  server?.kill('SIGTERM');
  rmSync(directory, { recursive: true, force: true });
}
