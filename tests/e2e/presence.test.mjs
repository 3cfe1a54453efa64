// End-to-end tests of presence on a real harkd: the phoenix client's
// Presence class on several sockets, the exact frames a joiner receives,
// rejected metas and user_ids, presence_update, crashes without a close
// frame, GET /api/presence/TOPIC, and the --presence and --no-presence flags.
import { test, describe, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { spawn } from 'node:child_process';
import { Socket, Presence } from 'phoenix';
import WebSocket from 'ws';
import { startHarkd, harkdPath, waitFor } from './lib/harkd.mjs';

const refPattern = /^[A-Za-z0-9_-]{16}$/;
const maxMetaBytes = 4096;

// ---- Raw WebSocket client ----

// A V2 WebSocket client that queues every text frame, so a test can read
// frames in the order the server sent them.
class RawClient {
  static open(url) {
    const ws = new WebSocket(url);
    return new Promise((resolve, reject) => {
      ws.once('open', () => resolve(new RawClient(ws)));
      ws.once('error', reject);
    });
  }

  constructor(ws) {
    this.ws = ws;
    this.frames = [];
    this.waiting = null;
    this.heartbeats = 0;
    ws.on('message', (data) => {
      this.frames.push(data.toString('utf8'));
      if (this.waiting) this.waiting();
    });
  }

  send(message) {
    this.ws.send(typeof message === 'string' ? message : JSON.stringify(message));
  }

  // Resolves with the next frame as text, or rejects after timeoutMs.
  async next(timeoutMs = 2000) {
    const deadline = Date.now() + timeoutMs;
    while (this.frames.length === 0) {
      if (Date.now() > deadline) throw new Error(`no frame within ${timeoutMs} ms`);
      await new Promise((resolve) => {
        this.waiting = resolve;
        setTimeout(resolve, 20);
      });
      this.waiting = null;
    }
    return this.frames.shift();
  }

  async nextJson(timeoutMs) {
    return JSON.parse(await this.next(timeoutMs));
  }

  // Sends a heartbeat and checks that its reply is the very next frame. The
  // server handles one connection's messages in order, so this proves that
  // nothing else was sent for the messages before it.
  async expectNothingElse() {
    const ref = `hb${++this.heartbeats}`;
    this.send([null, ref, 'phoenix', 'heartbeat', {}]);
    assert.equal(await this.next(), JSON.stringify([null, ref, 'phoenix', 'phx_reply', { status: 'ok', response: {} }]));
  }

  // Joins `topic` on a presence topic and checks the three frames: the ok
  // reply, presence_state and the presence_diff announcing this socket.
  // Resolves with { state, key, meta } from those frames.
  async joinWithPresence(topic, joinRef, payload = {}) {
    this.send([joinRef, joinRef, topic, 'phx_join', payload]);
    assert.equal(await this.next(), okReply(joinRef, joinRef, topic));
    const [stateJoinRef, stateRef, stateTopic, stateEvent, state] = await this.nextJson();
    assert.deepEqual([stateJoinRef, stateRef, stateTopic, stateEvent], [joinRef, null, topic, 'presence_state']);
    const [diffJoinRef, diffRef, diffTopic, diffEvent, diff] = await this.nextJson();
    assert.deepEqual([diffJoinRef, diffRef, diffTopic, diffEvent], [null, null, topic, 'presence_diff']);
    assert.deepEqual(diff.leaves, {});
    const keys = Object.keys(diff.joins);
    assert.equal(keys.length, 1, JSON.stringify(diff));
    const metas = diff.joins[keys[0]].metas;
    assert.equal(metas.length, 1);
    return { state, key: keys[0], meta: metas[0] };
  }

  terminate() {
    this.ws.terminate();
  }
}

function okReply(joinRef, ref, topic, response = {}) {
  return JSON.stringify([joinRef, ref, topic, 'phx_reply', { status: 'ok', response }]);
}

function errorReply(joinRef, ref, topic, reason) {
  return JSON.stringify([joinRef, ref, topic, 'phx_reply', { status: 'error', response: { reason } }]);
}

// A join payload whose "meta" member is exactly `bytes` bytes of JSON text.
function metaOfSize(bytes) {
  const meta = { p: 'x'.repeat(bytes - '{"p":""}'.length) };
  assert.equal(JSON.stringify(meta).length, bytes);
  return meta;
}

// ---- Phoenix client ----

const phoenixSockets = [];
const rawClients = [];

function openPhoenix(server, params = {}) {
  const socket = new Socket(`${server.wsUrl}/socket`, {
    transport: WebSocket,
    params,
    // Keep the client from reconnecting or rejoining behind a test's back.
    reconnectAfterMs: () => 60000,
    rejoinAfterMs: () => 60000,
  });
  phoenixSockets.push(socket);
  socket.connect();
  return socket;
}

async function openRaw(server, query = '') {
  const raw = await RawClient.open(`${server.wsUrl}/socket/websocket?vsn=2.0.0${query}`);
  rawClients.push(raw);
  return raw;
}

// Closes every socket a test opened. A socket whose server is gone may
// never report its close, so this waits at most one second.
async function closeAll() {
  const closing = phoenixSockets.splice(0).map((socket) => new Promise((resolve) => socket.disconnect(resolve)));
  for (const raw of rawClients.splice(0)) raw.terminate();
  let timer;
  const limit = new Promise((resolve) => { timer = setTimeout(resolve, 1000); });
  await Promise.race([Promise.all(closing), limit]);
  clearTimeout(timer);
}

function copy(value) {
  return value === undefined ? undefined : JSON.parse(JSON.stringify(value));
}

// Joins `topic` with a Presence attached before the join, so that the
// presence_state pushed right after the reply is seen. Resolves with
// { socket, channel, presence, joins, leaves }, where joins and leaves
// record every onJoin and onLeave call.
async function joinPresence(server, topic, { userId, meta } = {}) {
  const socket = openPhoenix(server, userId === undefined ? {} : { user_id: userId });
  const channel = socket.channel(topic, meta === undefined ? {} : { meta });
  const presence = new Presence(channel);
  const client = { socket, channel, presence, joins: [], leaves: [] };
  presence.onJoin((key, current, newPres) => client.joins.push({ key, current: copy(current), newPres: copy(newPres) }));
  presence.onLeave((key, current, leftPres) => client.leaves.push({ key, current: copy(current), leftPres: copy(leftPres) }));

  // The client cancels its own join timeout when the socket drops (as when
  // harkd crashes), so a timer of ours makes sure the test ends.
  let timer;
  await new Promise((resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`join ${topic} got no reply within 3000 ms`)), 3000);
    channel.join(2000)
      .receive('ok', resolve)
      .receive('error', (response) => reject(new Error(`join ${topic} failed: ${JSON.stringify(response)}`)))
      .receive('timeout', () => reject(new Error(`join ${topic} timed out`)));
  }).finally(() => clearTimeout(timer));
  return client;
}

// Pushes an event and resolves with { status, response }; the status is
// 'timeout' when no reply came within two seconds.
function pushEvent(channel, event, payload) {
  let timer;
  return new Promise((resolve) => {
    timer = setTimeout(() => resolve({ status: 'timeout', response: null }), 2500);
    channel.push(event, payload, 2000)
      .receive('ok', (response) => resolve({ status: 'ok', response }))
      .receive('error', (response) => resolve({ status: 'error', response }))
      .receive('timeout', () => resolve({ status: 'timeout', response: null }));
  }).finally(() => clearTimeout(timer));
}

// Sorts an object's keys, so that two presence maps compare equal whatever
// order their keys were inserted in.
function sortKeys(object) {
  const byKey = ([a], [b]) => {
    if (a === b) return 0;
    return a < b ? -1 : 1;
  };
  return Object.fromEntries(Object.entries(object).sort(byKey));
}

// The client's presences as {KEY: {metas: [...]}}, sorted by key.
function stateOf(presence) {
  return sortKeys(copy(Object.fromEntries(presence.list((key, pres) => [key, pres]))));
}

function metasOf(presence, key) {
  const entry = presence.list((k, pres) => (k === key ? pres : null)).find((pres) => pres);
  return entry ? copy(entry.metas) : [];
}

// ---- HTTP ----

function httpGet(server, urlPath, method = 'GET') {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port: server.port, path: urlPath, method, agent: false });
    req.on('response', (res) => {
      const chunks = [];
      res.on('data', (chunk) => chunks.push(chunk));
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, text: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
}

// GET /api/presence/TOPIC, checked for status 200 and JSON; resolves with
// the parsed list, sorted by key.
async function apiPresence(server, topic) {
  const res = await httpGet(server, `/api/presence/${encodeURIComponent(topic)}`);
  assert.equal(res.status, 200, res.text);
  assert.match(res.headers['content-type'], /^application\/json/);
  return sortKeys(JSON.parse(res.text));
}

async function stopCleanly(server) {
  await closeAll();
  if (server) assert.deepEqual(await server.stop(), { code: 0, signal: null }, server.logs);
}

// ---- Tests ----

describe('presence', { timeout: 30000 }, () => {
  let server;

  before(async () => {
    server = await startHarkd();
  });

  afterEach(closeAll);

  after(() => stopCleanly(server));

  describe('phoenix Presence', () => {
    test('list agrees on every client', async () => {
      const topic = 'room:lobby';
      const startedAt = Date.now();
      const clients = [];
      for (const name of ['alice', 'bob', 'carol']) {
        clients.push(await joinPresence(server, topic, { userId: name, meta: { name: name.toUpperCase() } }));
      }
      await waitFor(() => clients.every((c) => c.presence.list().length === 3), 'three presences on every client');
      const finishedAt = Date.now();

      const expected = stateOf(clients[0].presence);
      assert.deepEqual(Object.keys(expected), ['alice', 'bob', 'carol']);
      for (const [key, pres] of Object.entries(expected)) {
        assert.deepEqual(Object.keys(pres), ['metas']);
        assert.equal(pres.metas.length, 1);
        const meta = pres.metas[0];
        assert.deepEqual(Object.keys(meta).sort(), ['name', 'online_at', 'phx_ref']);
        assert.equal(meta.name, key.toUpperCase());
        assert.match(meta.phx_ref, refPattern);
        assert.ok(Number.isInteger(meta.online_at), `online_at ${meta.online_at}`);
        assert.ok(meta.online_at >= startedAt, `online_at ${meta.online_at} is before ${startedAt}`);
        assert.ok(meta.online_at <= finishedAt, `online_at ${meta.online_at} is after ${finishedAt}`);
      }
      const refs = Object.values(expected).map((pres) => pres.metas[0].phx_ref);
      assert.equal(new Set(refs).size, 3);

      assert.deepEqual(stateOf(clients[1].presence), expected);
      assert.deepEqual(stateOf(clients[2].presence), expected);
      assert.deepEqual(await apiPresence(server, topic), expected);
    });

    test('onJoin and onLeave arguments', async () => {
      const topic = 'room:callbacks';
      const alice = await joinPresence(server, topic, { userId: 'alice' });
      await waitFor(() => alice.presence.list().length === 1, 'alice to see herself');
      const aliceMeta = metasOf(alice.presence, 'alice')[0];
      assert.deepEqual(alice.joins, [{ key: 'alice', current: undefined, newPres: { metas: [aliceMeta] } }]);

      const bob = await joinPresence(server, topic, { userId: 'bob', meta: { color: 'blue' } });
      await waitFor(() => alice.presence.list().length === 2 && bob.presence.list().length === 2, 'both to see both');
      const bobMeta = metasOf(bob.presence, 'bob')[0];
      assert.equal(bobMeta.color, 'blue');
      assert.deepEqual(alice.joins[1], { key: 'bob', current: undefined, newPres: { metas: [bobMeta] } });
      assert.equal(alice.joins.length, 2);

      // Bob learns of alice from presence_state, then of himself from the
      // diff.
      assert.deepEqual(bob.joins, [
        { key: 'alice', current: undefined, newPres: { metas: [aliceMeta] } },
        { key: 'bob', current: undefined, newPres: { metas: [bobMeta] } },
      ]);

      await new Promise((resolve, reject) => {
        bob.channel.leave(2000).receive('ok', resolve).receive('timeout', () => reject(new Error('leave timed out')));
      });
      await waitFor(() => alice.presence.list().length === 1, 'alice to see bob leave');
      assert.deepEqual(alice.leaves, [{ key: 'bob', current: { metas: [] }, leftPres: { metas: [bobMeta] } }]);
      assert.deepEqual(Object.keys(stateOf(alice.presence)), ['alice']);
      assert.deepEqual(bob.leaves, []);
      assert.deepEqual(await apiPresence(server, topic), stateOf(alice.presence));
    });

    test('same user_id on two sockets', async () => {
      const topic = 'room:devices';
      const observer = await joinPresence(server, topic, { userId: 'observer' });
      const phone = await joinPresence(server, topic, { userId: 'dana', meta: { device: 'phone' } });
      const laptop = await joinPresence(server, topic, { userId: 'dana', meta: { device: 'laptop' } });
      await waitFor(() => metasOf(observer.presence, 'dana').length === 2, 'two metas for dana');

      const metas = metasOf(observer.presence, 'dana');
      assert.deepEqual(metas.map((meta) => meta.device), ['phone', 'laptop']);
      assert.notEqual(metas[0].phx_ref, metas[1].phx_ref);
      assert.deepEqual(Object.keys(stateOf(observer.presence)), ['dana', 'observer']);
      assert.deepEqual(await apiPresence(server, topic), stateOf(observer.presence));
      await waitFor(() => metasOf(laptop.presence, 'dana').length === 2, 'the laptop to see both metas');
      assert.deepEqual(stateOf(laptop.presence), stateOf(observer.presence));

      await new Promise((resolve) => phone.socket.disconnect(resolve));
      await waitFor(() => metasOf(observer.presence, 'dana').length === 1, 'one meta left for dana');
      assert.deepEqual(metasOf(observer.presence, 'dana'), [metas[1]]);
      assert.deepEqual(observer.leaves, [{ key: 'dana', current: { metas: [metas[1]] }, leftPres: { metas: [metas[0]] } }]);
      await waitFor(() => metasOf(laptop.presence, 'dana').length === 1, 'the laptop to see the phone leave');
      assert.deepEqual(stateOf(laptop.presence), stateOf(observer.presence));
      assert.deepEqual(await apiPresence(server, topic), stateOf(observer.presence));
    });

    test('presence_update replaces meta', async () => {
      const topic = 'room:status';
      const alice = await joinPresence(server, topic, { userId: 'alice', meta: { status: 'online', mood: 'calm' } });
      const bob = await joinPresence(server, topic, { userId: 'bob' });
      const carol = await joinPresence(server, topic, { userId: 'carol' });
      const clients = [alice, bob, carol];
      await waitFor(() => clients.every((c) => c.presence.list().length === 3), 'three presences on every client');
      const oldMeta = metasOf(bob.presence, 'alice')[0];
      assert.equal(oldMeta.status, 'online');

      const reply = await pushEvent(alice.channel, 'presence_update', { meta: { status: 'away', typing: true } });
      assert.deepEqual(reply, { status: 'ok', response: {} });
      await waitFor(() => clients.every((c) => metasOf(c.presence, 'alice')[0]?.status === 'away'), 'the update on every client');

      for (const client of clients) {
        const metas = metasOf(client.presence, 'alice');
        assert.equal(metas.length, 1);
        const meta = metas[0];
        // The meta is replaced, not merged: "mood" is gone.
        assert.deepEqual(Object.keys(meta).sort(), ['online_at', 'phx_ref', 'phx_ref_prev', 'status', 'typing']);
        assert.equal(meta.typing, true);
        assert.equal(meta.online_at, oldMeta.online_at);
        assert.match(meta.phx_ref, refPattern);
        assert.notEqual(meta.phx_ref, oldMeta.phx_ref);
        assert.equal(meta.phx_ref_prev, oldMeta.phx_ref);
      }
      const newMeta = metasOf(bob.presence, 'alice')[0];
      assert.deepEqual(bob.joins.at(-1), { key: 'alice', current: { metas: [oldMeta] }, newPres: { metas: [newMeta] } });
      assert.deepEqual(bob.leaves, [{ key: 'alice', current: { metas: [newMeta] }, leftPres: { metas: [oldMeta] } }]);
      assert.deepEqual(stateOf(carol.presence), stateOf(bob.presence));
      assert.deepEqual(stateOf(alice.presence), stateOf(bob.presence));
      assert.deepEqual(await apiPresence(server, topic), stateOf(bob.presence));
    });

    test('crash without close frame leaves', async () => {
      const topic = 'room:crash';
      const alice = await joinPresence(server, topic, { userId: 'alice' });
      const bob = await joinPresence(server, topic, { userId: 'bob' });
      const carol = await joinPresence(server, topic, { userId: 'carol', meta: { last: true } });
      await waitFor(() => [alice, bob, carol].every((c) => c.presence.list().length === 3), 'three presences');
      const carolMeta = metasOf(alice.presence, 'carol')[0];

      // Destroying the TCP socket sends no close frame, so harkd reads end of
      // stream with no WebSocket close.
      carol.socket.conn._socket.destroy();
      await waitFor(() => alice.presence.list().length === 2 && bob.presence.list().length === 2, 'carol to leave');
      for (const client of [alice, bob]) {
        assert.deepEqual(Object.keys(stateOf(client.presence)), ['alice', 'bob']);
        assert.deepEqual(client.leaves, [{ key: 'carol', current: { metas: [] }, leftPres: { metas: [carolMeta] } }]);
      }
      assert.deepEqual(await apiPresence(server, topic), stateOf(alice.presence));
    });

    test('binary presence_update rejected', async () => {
      const topic = 'room:binary-update';
      const alice = await joinPresence(server, topic, { userId: 'alice' });
      await waitFor(() => alice.presence.list().length === 1, 'alice to see herself');
      const before = stateOf(alice.presence);

      const reply = await pushEvent(alice.channel, 'presence_update', new Uint8Array([123, 125]).buffer);
      assert.deepEqual(reply, { status: 'error', response: { reason: 'payload must be a JSON object' } });
      assert.deepEqual(await apiPresence(server, topic), before);

      const fixed = await pushEvent(alice.channel, 'presence_update', { meta: { ok: 1 } });
      assert.equal(fixed.status, 'ok');
      await waitFor(() => metasOf(alice.presence, 'alice')[0]?.ok === 1, 'the valid update');
    });
  });

  describe('raw frames', () => {
    test('joiner gets reply, state, own diff', async () => {
      const topic = 'room:frames';
      const alice = await joinPresence(server, topic, { userId: 'alice' });
      await waitFor(() => alice.presence.list().length === 1, 'alice to see herself');
      const stateBefore = await apiPresence(server, topic);

      const raw = await openRaw(server, '&user_id=raw-user');
      const startedAt = Date.now();
      raw.send(['7', '7', topic, 'phx_join', { meta: { k: 'v', online_at: 1, phx_ref: 'forged' } }]);
      assert.equal(await raw.next(), okReply('7', '7', topic));

      const stateFrame = await raw.nextJson();
      assert.deepEqual(stateFrame.slice(0, 4), ['7', null, topic, 'presence_state']);
      assert.deepEqual(sortKeys(stateFrame[4]), stateBefore);

      const diffText = await raw.next();
      const finishedAt = Date.now();
      // JSON.parse keeps the last of duplicate members, so count them in the
      // text: the server's phx_ref must be the only one.
      assert.equal(diffText.match(/"phx_ref"/g).length, 1, diffText);
      const [joinRef, ref, diffTopic, event, diff] = JSON.parse(diffText);
      assert.deepEqual([joinRef, ref, diffTopic, event], [null, null, topic, 'presence_diff']);
      assert.deepEqual(Object.keys(diff).sort(), ['joins', 'leaves']);
      assert.deepEqual(diff.leaves, {});
      assert.deepEqual(Object.keys(diff.joins), ['raw-user']);
      const meta = diff.joins['raw-user'].metas[0];
      assert.equal(diff.joins['raw-user'].metas.length, 1);
      assert.deepEqual(Object.keys(meta).sort(), ['k', 'online_at', 'phx_ref']);
      assert.equal(meta.k, 'v');
      assert.ok(meta.online_at >= startedAt, `online_at ${meta.online_at} is before ${startedAt}`);
      assert.ok(meta.online_at <= finishedAt, `online_at ${meta.online_at} is after ${finishedAt}`);
      assert.match(meta.phx_ref, refPattern);
      await raw.expectNothingElse();

      await waitFor(() => alice.presence.list().length === 2, 'alice to see the raw client');
      assert.deepEqual(metasOf(alice.presence, 'raw-user'), [meta]);
    });

    test('anonymous key per connection', async () => {
      const first = await openRaw(server);
      const a = await first.joinWithPresence('room:anon-1', '1');
      assert.match(a.key, /^[0-9a-f]{16}$/);
      const b = await first.joinWithPresence('room:anon-2', '2');
      assert.equal(b.key, a.key);

      // An empty user_id counts as none.
      const second = await openRaw(server, '&user_id=');
      const c = await second.joinWithPresence('room:anon-1', '1');
      assert.match(c.key, /^[0-9a-f]{16}$/);
      assert.notEqual(c.key, a.key);
      assert.deepEqual(Object.keys(c.state), [a.key]);
    });

    test('user_id limits', async () => {
      const topic = 'room:user-ids';
      const watcher = await openRaw(server, '&user_id=watcher');
      await watcher.joinWithPresence(topic, '1');

      const longest = 'u'.repeat(256);
      const accepted = await openRaw(server, `&user_id=${longest}`);
      assert.equal((await accepted.joinWithPresence(topic, '1')).key, longest);
      const accented = await openRaw(server, `&user_id=${encodeURIComponent('zoë ✓')}`);
      assert.equal((await accented.joinWithPresence(topic, '1')).key, 'zoë ✓');
      assert.deepEqual(Object.keys(await apiPresence(server, topic)).sort(), [longest, 'watcher', 'zoë ✓'].sort());
      await watcher.next();
      await watcher.next();

      const reason = 'invalid user_id: it must be UTF-8 text of at most 256 bytes';
      for (const query of [`&user_id=${'u'.repeat(257)}`, '&user_id=%FF', '&user_id=ab%C3']) {
        const rejected = await openRaw(server, query);
        rejected.send(['1', '1', topic, 'phx_join', {}]);
        assert.equal(await rejected.next(), errorReply('1', '1', topic, reason), query);
        // Nothing else was sent, and the connection stays open.
        await rejected.expectNothingElse();
      }
      // The watcher saw no diff for the rejected joins.
      await watcher.expectNothingElse();
      assert.equal(Object.keys(await apiPresence(server, topic)).length, 3);
    });

    test('meta size limit', async () => {
      const topic = 'room:meta-size';
      const watcher = await openRaw(server, '&user_id=watcher');
      await watcher.joinWithPresence(topic, '1');
      const raw = await openRaw(server, '&user_id=big');

      raw.send(['1', '1', topic, 'phx_join', { meta: metaOfSize(maxMetaBytes + 1) }]);
      assert.equal(await raw.next(), errorReply('1', '1', topic, 'meta is larger than 4096 bytes'));
      await raw.expectNothingElse();
      await watcher.expectNothingElse();
      assert.deepEqual(Object.keys(await apiPresence(server, topic)), ['watcher']);

      // Exactly 4096 bytes is accepted on the same socket.
      const joined = await raw.joinWithPresence(topic, '2', { meta: metaOfSize(maxMetaBytes) });
      assert.equal(joined.key, 'big');
      assert.equal(joined.meta.p, metaOfSize(maxMetaBytes).p);
      const watcherDiff = await watcher.nextJson();
      assert.deepEqual(watcherDiff[4].joins.big.metas, [joined.meta]);
    });

    test('meta not an object', async () => {
      const topic = 'room:meta-type';
      const watcher = await openRaw(server, '&user_id=watcher');
      await watcher.joinWithPresence(topic, '1');
      const raw = await openRaw(server, '&user_id=typed');

      const bad = [[1, 2], 'text', 42, null, true];
      for (const [i, meta] of bad.entries()) {
        const ref = String(i + 1);
        raw.send([ref, ref, topic, 'phx_join', { meta }]);
        assert.equal(await raw.next(), errorReply(ref, ref, topic, 'meta must be a JSON object'), JSON.stringify(meta));
      }
      await raw.expectNothingElse();
      await watcher.expectNothingElse();

      const joined = await raw.joinWithPresence(topic, '9', { meta: { fine: true } });
      assert.equal(joined.meta.fine, true);
    });

    // jansson cannot load some valid JSON (a \u0000 escape, an integer
    // beyond 64 bits), so such a meta must be rejected or kept, never
    // dropped without a word.
    test('unusual meta kept or rejected', async () => {
      const topic = 'room:meta-unusual';
      const cases = [
        ['nul escape', '{"name":"a\\u0000b"}'],
        ['huge integer', '{"name":"n","big":123456789012345678901234567890}'],
      ];
      const dropped = [];
      for (const [what, metaText] of cases) {
        const raw = await openRaw(server, `&user_id=${encodeURIComponent(what)}`);
        raw.send(`["1","1","${topic}","phx_join",{"meta":${metaText}}]`);
        const reply = JSON.parse(await raw.next());
        if (reply[4].status === 'error') continue;
        assert.equal(reply[4].status, 'ok');
        await raw.nextJson();
        const diff = await raw.nextJson();
        const meta = diff[4].joins[what].metas[0];
        if (!('name' in meta)) dropped.push(`${what}: sent ${metaText}, stored ${JSON.stringify(meta)}`);
      }
      assert.deepEqual(dropped, []);
    });

    test('presence_update errors', async () => {
      const topic = 'room:update-errors';
      const watcher = await openRaw(server, '&user_id=watcher');
      await watcher.joinWithPresence(topic, '1');
      const raw = await openRaw(server, '&user_id=updater');
      const joined = await raw.joinWithPresence(topic, '1', { meta: { n: 1 } });
      await watcher.next();
      const before = await apiPresence(server, topic);

      raw.send(['1', '2', 'room:not-joined', 'presence_update', { meta: { n: 2 } }]);
      assert.equal(await raw.next(), errorReply(null, '2', 'room:not-joined', 'unmatched topic'));

      const cases = [
        [{}, 'payload must be an object with a "meta" object'],
        [{ other: { n: 2 } }, 'payload must be an object with a "meta" object'],
        [{ meta: [1] }, 'meta must be a JSON object'],
        [{ meta: 'away' }, 'meta must be a JSON object'],
        [{ meta: null }, 'meta must be a JSON object'],
        [{ meta: metaOfSize(maxMetaBytes + 1) }, 'meta is larger than 4096 bytes'],
      ];
      for (const [i, [payload, reason]] of cases.entries()) {
        const ref = String(10 + i);
        raw.send(['1', ref, topic, 'presence_update', payload]);
        assert.equal(await raw.next(), errorReply('1', ref, topic, reason), JSON.stringify(payload).slice(0, 80));
      }
      await raw.expectNothingElse();
      await watcher.expectNothingElse();
      assert.deepEqual(await apiPresence(server, topic), before);

      // A valid update still works: the pusher gets an ok reply and the diff.
      raw.send(['1', '30', topic, 'presence_update', { meta: { n: 3 } }]);
      const frames = [await raw.next(), await raw.next()];
      assert.ok(frames.includes(okReply('1', '30', topic)), frames.join('\n'));
      const diffFrame = JSON.parse(frames.find((frame) => frame !== okReply('1', '30', topic)));
      assert.deepEqual(diffFrame.slice(0, 4), [null, null, topic, 'presence_diff']);
      const updated = diffFrame[4].joins.updater.metas[0];
      assert.equal(updated.n, 3);
      assert.equal(updated.phx_ref_prev, joined.meta.phx_ref);
      assert.deepEqual(diffFrame[4].leaves, { updater: { metas: [joined.meta] } });
      assert.deepEqual(await watcher.nextJson(), diffFrame);
    });

    test('second join replaces presence', async () => {
      const topic = 'room:rejoin';
      const watcher = await openRaw(server, '&user_id=watcher');
      await watcher.joinWithPresence(topic, '1');
      const raw = await openRaw(server, '&user_id=twice');
      const first = await raw.joinWithPresence(topic, '1', { meta: { round: 1 } });
      assert.deepEqual((await watcher.nextJson())[4].joins, { twice: { metas: [first.meta] } });

      raw.send(['3', '3', topic, 'phx_join', { meta: { round: 2 } }]);
      assert.equal(await raw.next(), okReply('3', '3', topic));
      assert.equal(await raw.next(), JSON.stringify(['1', '1', topic, 'phx_close', {}]));
      const [stateJoinRef, , , stateEvent, state] = await raw.nextJson();
      assert.deepEqual([stateJoinRef, stateEvent], ['3', 'presence_state']);
      assert.deepEqual(Object.keys(state), ['watcher']);
      const [, , , diffEvent, diff] = await raw.nextJson();
      assert.equal(diffEvent, 'presence_diff');
      assert.deepEqual(diff.leaves, {});
      const second = diff.joins.twice.metas[0];
      assert.equal(diff.joins.twice.metas.length, 1);
      assert.equal(second.round, 2);
      assert.notEqual(second.phx_ref, first.meta.phx_ref);
      await raw.expectNothingElse();

      // The watcher gets a diff for the old meta leaving, then one for the new
      // meta joining.
      const seen = [(await watcher.nextJson())[4], (await watcher.nextJson())[4]];
      assert.deepEqual(seen, [
        { joins: {}, leaves: { twice: { metas: [first.meta] } } },
        { joins: { twice: { metas: [second] } }, leaves: {} },
      ]);
      const list = await apiPresence(server, topic);
      assert.deepEqual(list.twice, { metas: [second] });

      // The new channel works: an update goes through.
      raw.send(['3', '4', topic, 'presence_update', { meta: { round: 3 } }]);
      const frames = [await raw.next(), await raw.next()];
      assert.ok(frames.includes(okReply('3', '4', topic)), frames.join('\n'));
      assert.equal((await apiPresence(server, topic)).twice.metas.length, 1);
    });
  });

  describe('HTTP API', () => {
    test('unknown topic is empty', async () => {
      const res = await httpGet(server, '/api/presence/room:nobody-here');
      assert.equal(res.status, 200);
      assert.match(res.headers['content-type'], /^application\/json/);
      assert.equal(res.text, '{}');
    });

    test('percent-encoded topic', async () => {
      const topic = 'room:spaced name/ü?#%';
      const client = await joinPresence(server, topic, { userId: 'encoded' });
      await waitFor(() => client.presence.list().length === 1, 'the client to see itself');

      const res = await httpGet(server, `/api/presence/${encodeURIComponent(topic)}`);
      assert.equal(res.status, 200, res.text);
      assert.deepEqual(JSON.parse(res.text), stateOf(client.presence));
      // Percent-encoding plain characters gives the same topic.
      const colon = await joinPresence(server, 'room:colon', { userId: 'c' });
      await waitFor(() => colon.presence.list().length === 1, 'the client to see itself');
      const plain = await httpGet(server, '/api/presence/room:colon');
      const encoded = await httpGet(server, '/api/presence/room%3A%63olon');
      assert.equal(encoded.text, plain.text);
      assert.deepEqual(JSON.parse(plain.text), stateOf(colon.presence));
    });

    test('missing topic and wrong method', async () => {
      const empty = await httpGet(server, '/api/presence/');
      assert.equal(empty.status, 400);
      assert.ok(JSON.parse(empty.text).error, empty.text);
      const post = await httpGet(server, '/api/presence/room:1', 'POST');
      assert.equal(post.status, 405);
    });
  });
});

describe('presence limited by --presence', { timeout: 10000 }, () => {
  let server;

  before(async () => {
    server = await startHarkd(['--presence', 'room:*', '--presence', 'game:*']);
  });

  afterEach(closeAll);

  after(() => stopCleanly(server));

  test('matching topics have presence', async () => {
    for (const topic of ['room:1', 'game:chess']) {
      const raw = await openRaw(server, '&user_id=player');
      const joined = await raw.joinWithPresence(topic, '1');
      assert.equal(joined.key, 'player');
      assert.deepEqual(Object.keys(await apiPresence(server, topic)), ['player']);
    }
  });

  test('other topics have none', async () => {
    for (const topic of ['chat:1', 'roomy:1', 'lobby']) {
      const raw = await openRaw(server, '&user_id=quiet');
      raw.send(['1', '1', topic, 'phx_join', { meta: { ignored: true } }]);
      assert.equal(await raw.next(), okReply('1', '1', topic));
      await raw.expectNothingElse();

      raw.send(['1', '2', topic, 'presence_update', { meta: { n: 1 } }]);
      assert.equal(await raw.next(), errorReply('1', '2', topic, 'presence is not enabled for this topic'));
      assert.deepEqual(await apiPresence(server, topic), {});

      // Ordinary broadcasts still flow on the topic.
      raw.send(['1', '3', topic, 'shout', { n: 1 }]);
      assert.equal(await raw.next(), okReply('1', '3', topic));
    }

    // A meta that would be rejected on a presence topic is ignored here.
    const raw = await openRaw(server);
    raw.send(['1', '1', 'chat:2', 'phx_join', { meta: [1] }]);
    assert.equal(await raw.next(), okReply('1', '1', 'chat:2'));
  });
});

describe('--no-presence', { timeout: 10000 }, () => {
  let server;

  before(async () => {
    server = await startHarkd(['--no-presence']);
  });

  afterEach(closeAll);

  after(() => stopCleanly(server));

  test('joins get no presence', async () => {
    const raw = await openRaw(server, '&user_id=nobody');
    raw.send(['1', '1', 'room:1', 'phx_join', {}]);
    assert.equal(await raw.next(), okReply('1', '1', 'room:1'));
    await raw.expectNothingElse();

    raw.send(['1', '2', 'room:1', 'presence_update', { meta: {} }]);
    assert.equal(await raw.next(), errorReply('1', '2', 'room:1', 'presence is not enabled for this topic'));

    const res = await httpGet(server, '/api/presence/room:1');
    assert.equal(res.status, 404);
    assert.match(res.headers['content-type'], /^application\/json/);
    assert.deepEqual(JSON.parse(res.text), { error: 'presence is not enabled' });
  });

  test('combined with --presence is a usage error', async () => {
    const proc = spawn(harkdPath, ['--listen', '127.0.0.1:0', '--presence', 'room:*', '--no-presence'],
      { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    proc.stderr.on('data', (chunk) => { stderr += chunk; });
    const timer = setTimeout(() => proc.kill('SIGKILL'), 5000);
    const [code, signal] = await new Promise((resolve) => proc.on('close', (c, s) => resolve([c, s])));
    clearTimeout(timer);
    assert.equal(signal, null);
    assert.notEqual(code, 0);
    assert.match(stderr, /--presence and --no-presence cannot be combined/);
  });
});
