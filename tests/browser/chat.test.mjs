// Runs the demo chat page in two headless Chromium pages against a real
// harkd and checks that messages typed in one page show up in the other.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';
import { startHarkd } from '../e2e/lib/harkd.mjs';

const chromiumPath = process.env.CHROMIUM || '/usr/bin/chromium';
const chromiumArgs = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

// Opens the chat page as `name`, joins the default room and resolves once
// the page shows it has joined.
async function openChat(context, server, name) {
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (error) => errors.push(error.message));
  await page.goto(`${server.url}/`);
  assert.equal(await page.inputValue('#room'), 'room:lobby');
  await page.fill('#name', name);
  await page.waitForSelector('#status[data-state="joined"]', { timeout: 5000 });
  assert.equal(await page.textContent('#status'), 'joined room:lobby');
  assert.deepEqual(errors, []);
  return page;
}

async function send(page, text) {
  await page.fill('#body', text);
  await page.click('#send');
}

// Resolves once #messages contains an item from `user` with `body`.
async function waitForMessage(page, user, body) {
  const item = page.locator('#messages li', { has: page.locator('.user', { hasText: user }) })
    .filter({ has: page.locator('.body', { hasText: body }) });
  await item.first().waitFor({ timeout: 5000 });
  return item.count();
}

describe('demo chat in chromium', () => {
  let server;
  let context;
  let userDataDir;

  before(async () => {
    assert.ok(existsSync(chromiumPath),
      `Chromium not found at ${chromiumPath}: install it or set CHROMIUM to its path`);
    server = await startHarkd();
    userDataDir = await mkdtemp(path.join(tmpdir(), 'hark-chromium-'));
    context = await chromium.launchPersistentContext(userDataDir, {
      executablePath: chromiumPath,
      headless: true,
      args: chromiumArgs,
    });
  });

  after(async () => {
    if (context) await context.close();
    if (server) await server.stop();
    if (userDataDir) await rm(userDataDir, { recursive: true, force: true });
  });

  test('messages reach the other page', async () => {
    const alice = await openChat(context, server, 'alice');
    const bob = await openChat(context, server, 'bob');

    await send(alice, 'hello from alice');
    assert.equal(await waitForMessage(bob, 'alice', 'hello from alice'), 1);
    assert.equal(await waitForMessage(alice, 'alice', 'hello from alice'), 1);

    await send(bob, 'hi alice, bob here');
    assert.equal(await waitForMessage(alice, 'bob', 'hi alice, bob here'), 1);
    assert.equal(await waitForMessage(bob, 'bob', 'hi alice, bob here'), 1);

    // The sender's own message is shown once: the server does not echo it.
    assert.equal(await alice.locator('#messages li.mine').count(), 1);
    assert.equal(await bob.locator('#messages li.mine').count(), 1);
    assert.equal(await bob.inputValue('#body'), '');
  });

  test('other rooms do not see messages', async () => {
    const carol = await openChat(context, server, 'carol');
    const dave = await openChat(context, server, 'dave');
    await dave.fill('#room', 'room:side');
    await dave.click('#join');
    await dave.waitForSelector('#status[data-state="joined"]', { timeout: 5000 });
    assert.equal(await dave.textContent('#status'), 'joined room:side');

    const erin = await openChat(context, server, 'erin');
    await send(carol, 'lobby only');
    await waitForMessage(erin, 'carol', 'lobby only');
    assert.equal(await dave.locator('#messages li', { hasText: 'lobby only' }).count(), 0);
  });
});
