// End-to-end tests of harkd in cluster mode: three or more harkd processes
// share one real redis-server and are driven by the phoenix npm client.
// They cover distributed broadcasts, presence replicated between nodes, a
// node that is killed, restarted, stopped with SIGTERM or paused with
// SIGSTOP, a network partition through a TCP proxy, a Redis restart,
// garbage published straight to Redis, and GET /api/cluster.
//
// The tracker runs with short periods so that the file finishes in well
// under a minute. A test that kills, pauses or cuts off a node starts its own
// redis-server and nodes, so no test depends on what an earlier one did.
import { test, describe, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Socket, Presence } from 'phoenix';
import WebSocket from 'ws';
import { startHarkd } from './lib/harkd.mjs';
import { startRedis, RedisSubscriber } from './lib/redis.mjs';
import { startTcpProxy } from './lib/tcp_proxy.mjs';

// ---- Timing ----

// A liveness heartbeat goes out every (maxSilentPeriods + 1) periods, so a
// live node is heard from every 300 ms. The down period is three of those
// intervals, which keeps a loaded machine from marking live nodes down.
const periodMs = 100;
const maxSilentPeriods = 2;
const downPeriodMs = 900;
const permdownPeriodMs = 2500;
const heartbeatIntervalMs = periodMs * (maxSilentPeriods + 1);

const timingArgs = [
  '--broadcast-period-ms', String(periodMs),
  '--max-silent-periods', String(maxSilentPeriods),
  '--down-period-ms', String(downPeriodMs),
  '--permdown-period-ms', String(permdownPeriodMs),
];

// Set HARK_E2E_LOG_DIR to keep every node's log in that folder, and
// HARK_E2E_HARKD_ARGS to add flags to every clustered node, such as
// "--log-level debug".
const logDir = process.env.HARK_E2E_LOG_DIR;
const extraArgs = (process.env.HARK_E2E_HARKD_ARGS || '').split(' ').filter((arg) => arg !== '');

// ---- Polling ----

// Polls `check` every `intervalMs` until it returns true, and rejects after
// `timeoutMs`. Any other return value is what was seen, and the last one is
// put in the error message so that a failure shows the actual state.
async function eventually(what, timeoutMs, check, intervalMs = 25) {
  const startedAt = Date.now();
  let seen;
  for (;;) {
    try {
      seen = await check();
      if (seen === true) return Date.now() - startedAt;
    } catch (error) {
      seen = `error: ${error.message}`;
    }
    if (Date.now() - startedAt > timeoutMs) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}; last seen: ${JSON.stringify(seen, null, 1)}`);
    }
    await sleep(intervalMs);
  }
}

function sorted(list) {
  return [...list].sort();
}

function sameList(a, b) {
  return JSON.stringify(sorted(a)) === JSON.stringify(sorted(b));
}

// ---- HTTP ----

function httpRequest(node, method, urlPath, body) {
  return new Promise((resolve, reject) => {
    const req = http.request({
      host: '127.0.0.1',
      port: node.port,
      method,
      path: urlPath,
      agent: false,
      timeout: 2000,
      headers: body === undefined ? {} : { 'Content-Type': 'application/json' },
    });
    req.on('response', (res) => {
      const chunks = [];
      res.on('data', (chunk) => chunks.push(chunk));
      res.on('end', () => resolve({ status: res.statusCode, text: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`${method} ${urlPath} on ${node.name} timed out`)));
    req.on('error', reject);
    if (body !== undefined) req.write(JSON.stringify(body));
    req.end();
  });
}

async function getJson(node, urlPath) {
  const res = await httpRequest(node, 'GET', urlPath);
  assert.equal(res.status, 200, `GET ${urlPath} on ${node.name}: ${res.text}`);
  return JSON.parse(res.text);
}

function clusterInfo(node) {
  return getJson(node, '/api/cluster');
}

function apiPresence(node, topic) {
  return getJson(node, `/api/presence/${encodeURIComponent(topic)}`);
}

async function postBroadcast(node, topic, event, payload) {
  const res = await httpRequest(node, 'POST', '/api/broadcast', { topic, event, payload });
  assert.equal(res.status, 200, res.text);
  assert.deepEqual(JSON.parse(res.text), { status: 'ok' });
}

// The replica entries of /api/cluster that carry `name`, one per shard.
function replicasNamed(info, name) {
  return info.replicas.filter((replica) => replica.name === name);
}

// ---- Clusters ----

// One redis-server, the harkd nodes on it, an optional TCP proxy and the
// phoenix sockets the test opened. close() stops all of them and checks
// that every node that was not killed exits with status 0.
class Cluster {
  constructor(redis) {
    this.redis = redis;
    this.nodes = [];
    this.sockets = [];
    this.rawSockets = [];
    this.proxies = [];
  }

  // Starts a node named `name` on `clusterUrl` (the Redis URL unless given).
  // With `viaEnv` the URL is passed in HARK_CLUSTER instead of --cluster.
  async startNode(name, { clusterUrl = this.redis.url, viaEnv = false, args = [] } = {}) {
    const clusterArgs = viaEnv ? [] : ['--cluster', clusterUrl];
    const env = viaEnv ? { HARK_CLUSTER: clusterUrl } : { HARK_CLUSTER: undefined };
    const node = await startHarkd([...clusterArgs, '--node-name', name, ...timingArgs, ...extraArgs, ...args], { env });
    node.name = name;
    node.killed = false;
    node.paused = false;
    this.nodes.push(node);
    return node;
  }

  // Resolves once each of `nodes` lists every other one as up on each of
  // its `shards` shards, so replication runs between all of them.
  async waitFormed(nodes = this.nodes.filter((node) => !node.killed), { shards = 1, timeoutMs = 5000 } = {}) {
    await eventually(`nodes ${nodes.map((n) => n.name).join(', ')} to see each other up`, timeoutMs, async () => {
      const missing = [];
      for (const node of nodes) {
        const info = await clusterInfo(node);
        for (const other of nodes) {
          if (other === node) continue;
          const entries = replicasNamed(info, other.name);
          if (entries.length !== shards || entries.some((entry) => entry.status !== 'up')) {
            missing.push(`${node.name} sees ${other.name}: ${JSON.stringify(entries)}`);
          }
        }
      }
      return missing.length === 0 || missing;
    });
  }

  // Sends `signal` to a node. SIGKILL marks it killed, so close() does not
  // expect a clean exit from it.
  signal(node, signal) {
    if (signal === 'SIGKILL') node.killed = true;
    if (signal === 'SIGSTOP') node.paused = true;
    if (signal === 'SIGCONT') node.paused = false;
    node.proc.kill(signal);
  }

  openSocket(node, params = {}, options = {}) {
    const socket = new Socket(`${node.wsUrl}/socket`, {
      transport: WebSocket,
      params,
      // Keep the client from reconnecting or rejoining behind a test's back.
      reconnectAfterMs: () => 60000,
      rejoinAfterMs: () => 60000,
      ...options,
    });
    this.sockets.push(socket);
    socket.connect();
    return socket;
  }

  // Disconnects every socket. A socket whose node is gone may never report
  // its close, so this waits at most one second.
  async closeSockets() {
    for (const ws of this.rawSockets.splice(0)) ws.terminate();
    const closing = this.sockets.splice(0).map((socket) => new Promise((resolve) => socket.disconnect(resolve)));
    let timer;
    const limit = new Promise((resolve) => { timer = setTimeout(resolve, 1000); });
    await Promise.race([Promise.all(closing), limit]);
    clearTimeout(timer);
  }

  async close() {
    await this.closeSockets();
    const problems = [];
    await Promise.all(this.nodes.map(async (node) => {
      const result = await this.stopNode(node);
      if (!node.killed && (result.code !== 0 || result.signal !== null)) {
        problems.push(`${node.name} exited with ${JSON.stringify(result)}:\n${node.logs}`);
      }
    }));
    for (const proxy of this.proxies) await proxy.close();
    if (this.redis) await this.redis.stop();
    if (logDir) {
      for (const [i, node] of this.nodes.entries()) {
        writeFileSync(path.join(logDir, `${node.name}-${i}-${node.port}.log`), node.logs);
      }
    }
    assert.deepEqual(problems, []);
  }

  // Stops a node with SIGTERM, or SIGKILL when it does not exit within
  // five seconds. Resolves with its { code, signal }.
  async stopNode(node) {
    if (node.exitCode !== null || node.exitSignal !== null) return { code: node.exitCode, signal: node.exitSignal };
    if (node.paused) this.signal(node, 'SIGCONT');
    node.proc.kill('SIGTERM');
    let timer;
    const hung = new Promise((resolve) => {
      timer = setTimeout(() => resolve('hung'), 5000);
    });
    const result = await Promise.race([node.exited, hung]);
    clearTimeout(timer);
    if (result !== 'hung') return result;
    node.proc.kill('SIGKILL');
    await node.exited;
    return { code: 'no exit within 5000 ms of SIGTERM', signal: null };
  }
}

// Starts a redis-server and one node per name, and waits until the nodes
// see each other. Nodes in `viaProxy` reach Redis through a TCP proxy, and
// nodes in `viaEnv` get the Redis URL from HARK_CLUSTER. `onCreated` gets
// the cluster before any node starts, so that a failed start is cleaned up
// too.
async function startCluster(names, { viaProxy = [], viaEnv = [], onCreated }) {
  const cluster = new Cluster(await startRedis());
  onCreated(cluster);
  let proxy = null;
  if (viaProxy.length > 0) {
    proxy = await startTcpProxy({ upstreamPort: cluster.redis.port });
    cluster.proxies.push(proxy);
  }
  await Promise.all(names.map((name) => cluster.startNode(name, {
    clusterUrl: viaProxy.includes(name) ? `redis://127.0.0.1:${proxy.port}` : cluster.redis.url,
    viaEnv: viaEnv.includes(name),
  })));
  // Promise.all may finish the starts in any order, so keep the given one.
  cluster.nodes.sort((x, y) => names.indexOf(x.name) - names.indexOf(y.name));
  await cluster.waitFormed();
  return { cluster, nodes: cluster.nodes, proxy };
}

// startCluster options that stop the cluster when test `t` ends.
function cleanedUpBy(t, options = {}) {
  return { ...options, onCreated: (cluster) => t.after(() => cluster.close()) };
}

// ---- Clients ----

// Joins `topic` on `node` with a phoenix socket, a Presence attached before
// the join, and a record of the payloads of each event in `events`.
async function joinClient(cluster, node, topic, { userId, meta, events = [], socketOptions = {} } = {}) {
  const socket = cluster.openSocket(node, userId === undefined ? {} : { user_id: userId }, socketOptions);
  const channel = socket.channel(topic, meta === undefined ? {} : { meta });
  const presence = new Presence(channel);
  const client = { node, socket, channel, presence, userId, topic, got: {} };
  for (const event of events) {
    client.got[event] = [];
    channel.on(event, (payload) => client.got[event].push(payload));
  }

  let timer;
  await new Promise((resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`join ${topic} on ${node.name} got no reply within 3000 ms`)), 3000);
    channel.join(2000)
      .receive('ok', resolve)
      .receive('error', (response) => reject(new Error(`join ${topic} failed: ${JSON.stringify(response)}`)))
      .receive('timeout', () => reject(new Error(`join ${topic} on ${node.name} timed out`)));
  }).finally(() => clearTimeout(timer));
  return client;
}

// Joins `topic` on an open socket, with no Presence, and resolves on the ok
// reply.
function joinChannel(socket, topic) {
  const channel = socket.channel(topic, {});
  return new Promise((resolve, reject) => {
    channel.join(2000)
      .receive('ok', () => resolve(channel))
      .receive('error', (response) => reject(new Error(`join ${topic} failed: ${JSON.stringify(response)}`)))
      .receive('timeout', () => reject(new Error(`join ${topic} timed out`)));
  });
}

// Opens a V2 WebSocket without the phoenix client, whose decoder would
// throw on a frame that is not JSON, joins `topic` and records every text
// frame after the join reply.
async function openRawWatcher(cluster, node, topic) {
  const ws = new WebSocket(`${node.wsUrl}/socket/websocket?vsn=2.0.0`);
  await new Promise((resolve, reject) => {
    ws.once('open', resolve);
    ws.once('error', reject);
  });
  const watcher = { node, ws, frames: [] };
  cluster.rawSockets.push(ws);
  ws.on('message', (data, isBinary) => {
    if (!isBinary) watcher.frames.push(data.toString('utf8'));
  });
  ws.send(JSON.stringify(['1', '1', topic, 'phx_join', {}]));
  await eventually(`the join reply on ${node.name}`, 2000,
    () => watcher.frames.some((frame) => frame.includes('"phx_reply"')) || watcher.frames);
  return watcher;
}

// Pushes an event and resolves with the reply status: 'ok', 'error' or
// 'timeout'.
function push(client, event, payload) {
  let timer;
  return new Promise((resolve) => {
    timer = setTimeout(() => resolve('timeout'), 2500);
    client.channel.push(event, payload, 2000)
      .receive('ok', () => resolve('ok'))
      .receive('error', () => resolve('error'))
      .receive('timeout', () => resolve('timeout'));
  }).finally(() => clearTimeout(timer));
}

function leave(client) {
  return new Promise((resolve, reject) => {
    client.channel.leave(2000)
      .receive('ok', resolve)
      .receive('timeout', () => reject(new Error(`leave ${client.topic} timed out`)));
  });
}

// Resolves after a ping round trip on the client's socket. The node handles
// one connection's frames in order, so anything it sent this client before
// the reply has arrived by then.
function ping(client) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('ping got no reply within 2000 ms')), 2000);
    const sent = client.socket.ping(() => {
      clearTimeout(timer);
      resolve();
    });
    if (!sent) {
      clearTimeout(timer);
      reject(new Error('ping was not sent: the socket is not connected'));
    }
  });
}

function copy(value) {
  return value === undefined ? undefined : JSON.parse(JSON.stringify(value));
}

function keysOf(client) {
  return sorted(client.presence.list((key) => key));
}

// The client's presences as {KEY: {metas: [...]}}, keys sorted.
function stateOf(client) {
  return Object.fromEntries(sorted(client.presence.list((key) => key)).map((key) => [
    key,
    copy(client.presence.list((k, pres) => (k === key ? pres : null)).find((pres) => pres)),
  ]));
}

function sortKeys(object) {
  return Object.fromEntries(Object.keys(object).sort().map((key) => [key, object[key]]));
}

// Collects the presence keys that each client's Presence and each node's
// GET /api/presence/TOPIC list now, labelled by where they were read.
async function presenceViews(topic, clients, nodes) {
  const views = {};
  for (const client of clients) views[`client ${client.userId}@${client.node.name}`] = keysOf(client);
  for (const node of nodes) views[`GET ${node.name}`] = sorted(Object.keys(await apiPresence(node, topic)));
  return views;
}

// Resolves once every client and node lists exactly `keys` on `topic`.
// Resolves with the wait in ms.
function waitForKeys(what, { topic, clients = [], nodes = [], keys, timeoutMs = 5000 }) {
  return eventually(`${what} (expected ${JSON.stringify(sorted(keys))})`, timeoutMs, async () => {
    const views = await presenceViews(topic, clients, nodes);
    return Object.values(views).every((list) => sameList(list, keys)) || views;
  });
}

// Reads every client's and node's list every 50 ms for `durationMs` and
// asserts that each one is exactly `keys` every time.
async function assertListsStay(keys, durationMs, { topic, clients = [], nodes = [] }) {
  const changes = [];
  const startedAt = Date.now();
  while (Date.now() - startedAt < durationMs) {
    const views = await presenceViews(topic, clients, nodes);
    for (const [where, list] of Object.entries(views)) {
      if (!sameList(list, keys)) changes.push(`${where} at ${Date.now() - startedAt} ms: ${list}`);
    }
    await sleep(50);
  }
  assert.deepEqual(changes, [], `the lists changed from ${JSON.stringify(sorted(keys))}`);
}

// ---- Redis channels ----

// The Redis channels whose name contains `text`, with their subscriber
// counts.
async function channelsContaining(redis, text) {
  const names = (await redis.command(['PUBSUB', 'CHANNELS', '*'])).filter((name) => name.includes(text));
  if (names.length === 0) return {};
  const reply = await redis.command(['PUBSUB', 'NUMSUB', ...names]);
  const counts = {};
  for (let i = 0; i < reply.length; i += 2) counts[reply[i]] = reply[i + 1];
  return counts;
}

// Resolves once the Redis channel of `topic` has exactly `count`
// subscribers, one connection per node that has a local subscriber. A
// broadcast sent before a node's SUBSCRIBE is done never reaches that node,
// because Redis pub/sub keeps no messages.
async function waitForTopicSubscribers(redis, topic, count, timeoutMs = 3000) {
  await eventually(`${count} Redis subscribers of ${topic}`, timeoutMs, async () => {
    const counts = await channelsContaining(redis, topic);
    const all = await redis.command(['PUBSUB', 'CHANNELS', '*']);
    const total = Object.values(counts).reduce((sum, n) => sum + n, 0);
    return total === count || { counts, all };
  });
}

// ---- Envelopes ----

// Reads an unsigned LEB128 varint at `offset` and returns [value, next].
function readVarint(bytes, offset) {
  let value = 0;
  let shift = 0;
  for (let i = offset; i < bytes.length; i++) {
    value += (bytes[i] & 0x7f) * 2 ** shift;
    if ((bytes[i] & 0x80) === 0) return [value, i + 1];
    shift += 7;
  }
  throw new Error('truncated varint');
}

function writeVarint(value) {
  const out = [];
  do {
    let byte = value % 128;
    value = Math.floor(value / 128);
    if (value > 0) byte |= 0x80;
    out.push(byte);
  } while (value > 0);
  return Buffer.from(out);
}

// Decodes a broadcast envelope as harkd writes it to Redis: a version byte,
// then origin, dispatcher, topic, event and payload, each a varint length
// and its bytes, then a flags byte.
function decodeEnvelope(bytes) {
  assert.equal(bytes[0], 1, 'envelope version');
  const fields = [];
  let offset = 1;
  for (let i = 0; i < 5; i++) {
    const [length, start] = readVarint(bytes, offset);
    fields.push(bytes.subarray(start, start + length));
    offset = start + length;
  }
  const [origin, dispatcher, topic, event, payload] = fields;
  return { origin, dispatcher, topic, event, payload, flags: bytes[offset], length: offset + 1 };
}

function encodeEnvelope({ origin, dispatcher, topic, event, payload, flags }) {
  const parts = [Buffer.from([1])];
  for (const field of [origin, dispatcher, topic, event, payload]) {
    const bytes = Buffer.from(field);
    parts.push(writeVarint(bytes.length), bytes);
  }
  parts.push(Buffer.from([flags]));
  return Buffer.concat(parts);
}

// Pushes "shout" {n: 'capture'} from `client` and resolves with the decoded
// envelope that its node published on `channel`.
async function captureBroadcast(redis, channel, client) {
  const spy = await RedisSubscriber.open(redis.port, { channels: [channel] });
  try {
    assert.equal(await push(client, 'shout', { n: 'capture' }), 'ok');
    await eventually(`the push on ${channel}`, 2000, () => spy.messages.length > 0 || spy.messages.length);
  } finally {
    spy.close();
  }
  const envelope = decodeEnvelope(spy.messages[0].data);
  assert.equal(envelope.topic.toString(), client.topic);
  assert.equal(envelope.event.toString(), 'shout');
  assert.deepEqual(JSON.parse(envelope.payload.toString()), { n: 'capture' });
  return envelope;
}

// ---- Tests ----

describe('three nodes on one Redis', { timeout: 30000 }, () => {
  let cluster;
  let a;
  let b;
  let c;

  // The third node gets the Redis URL from HARK_CLUSTER.
  before(async () => {
    await startCluster(['alpha', 'beta', 'gamma'], { viaEnv: ['gamma'], onCreated: (created) => { cluster = created; } });
    [a, b, c] = cluster.nodes;
  });

  afterEach(() => cluster.closeSockets());

  after(() => cluster?.close());

  describe('distributed broadcast', () => {
    test('push reaches every node', async () => {
      const topic = 'room:fanout';
      const sender = await joinClient(cluster, a, topic, { events: ['shout'] });
      const receivers = [
        await joinClient(cluster, a, topic, { events: ['shout'] }),
        await joinClient(cluster, b, topic, { events: ['shout'] }),
        await joinClient(cluster, c, topic, { events: ['shout'] }),
      ];
      await waitForTopicSubscribers(cluster.redis, topic, 3);

      assert.equal(await push(sender, 'shout', { n: 1 }), 'ok');
      assert.equal(await push(sender, 'shout', { n: 2 }), 'ok');
      await eventually('both pushes on every receiver', 3000,
        () => receivers.every((r) => r.got.shout.length >= 2) || receivers.map((r) => r.got.shout));

      // An echo of A's own publish, or a second delivery, would arrive
      // within a few milliseconds.
      await sleep(3 * periodMs);
      for (const receiver of receivers) {
        assert.deepEqual(receiver.got.shout, [{ n: 1 }, { n: 2 }], `receiver on ${receiver.node.name}`);
      }
      await ping(sender);
      assert.deepEqual(sender.got.shout, []);
    });

    test('HTTP broadcast reaches every node', async () => {
      const topic = 'room:http';
      const clients = [
        await joinClient(cluster, a, topic, { events: ['notice'] }),
        await joinClient(cluster, a, topic, { events: ['notice'] }),
        await joinClient(cluster, b, topic, { events: ['notice'] }),
        await joinClient(cluster, c, topic, { events: ['notice'] }),
      ];
      await waitForTopicSubscribers(cluster.redis, topic, 3);

      await postBroadcast(b, topic, 'notice', { text: 'first' });
      await postBroadcast(b, topic, 'notice', { text: 'second', list: [1, 2, { deep: null }] });
      await eventually('both broadcasts on every client', 3000,
        () => clients.every((client) => client.got.notice.length >= 2) || clients.map((client) => client.got.notice));
      await sleep(3 * periodMs);
      for (const client of clients) {
        assert.deepEqual(client.got.notice, [{ text: 'first' }, { text: 'second', list: [1, 2, { deep: null }] }],
          `client on ${client.node.name}`);
      }
    });

    test('node without subscribers gets nothing', async () => {
      const topic = 'room:a-and-b';
      const onA = await joinClient(cluster, a, topic, { events: ['shout'] });
      const onB = await joinClient(cluster, b, topic, { events: ['shout'] });
      const onC = await joinClient(cluster, c, 'room:c-only', { events: ['shout'] });
      await waitForTopicSubscribers(cluster.redis, topic, 2);
      await waitForTopicSubscribers(cluster.redis, 'room:c-only', 1);
      const cBefore = await clusterInfo(c);

      assert.equal(await push(onA, 'shout', { n: 1 }), 'ok');
      await eventually('the push on B', 2000, () => onB.got.shout.length === 1 || onB.got.shout);
      await postBroadcast(a, 'room:nobody', 'shout', { n: 2 });

      // C has no Redis subscription to either topic, so Redis never sends
      // it the messages, and C keeps working.
      await sleep(3 * periodMs);
      assert.deepEqual(await channelsContaining(cluster.redis, 'room:nobody'), {});
      assert.equal(Object.values(await channelsContaining(cluster.redis, topic)).reduce((x, y) => x + y, 0), 2);
      await ping(onC);
      assert.deepEqual(onC.got.shout, []);
      const cAfter = await clusterInfo(c);
      assert.equal(cAfter.redis.invalid, cBefore.redis.invalid);
      assert.doesNotMatch(c.logs, /level=error/);

      await postBroadcast(a, 'room:c-only', 'shout', { n: 3 });
      await eventually('the broadcast on C', 2000, () => onC.got.shout.length === 1 || onC.got.shout);
      assert.deepEqual(onC.got.shout, [{ n: 3 }]);
      assert.deepEqual(onA.got.shout, []);

      // A node drops its Redis subscription with its last local subscriber.
      await leave(onB);
      await waitForTopicSubscribers(cluster.redis, topic, 1);
    });

    test('V1 and V2 clients on two nodes', async () => {
      const topic = 'room:serializers';
      const v1Serializer = {
        encode: (message, callback) => callback(JSON.stringify(message)),
        decode: (text, callback) => callback(JSON.parse(text)),
      };
      const v1 = await joinClient(cluster, a, topic, {
        events: ['shout'],
        socketOptions: { vsn: '1.0.0', ...v1Serializer },
      });
      assert.match(v1.socket.endPointURL(), /vsn=1\.0\.0$/);
      const v2 = await joinClient(cluster, c, topic, { events: ['shout'] });
      await waitForTopicSubscribers(cluster.redis, topic, 2);

      assert.equal(await push(v2, 'shout', { from: 'v2' }), 'ok');
      await eventually('the V2 push on the V1 client', 2000, () => v1.got.shout.length === 1 || v1.got.shout);
      assert.equal(await push(v1, 'shout', { from: 'v1' }), 'ok');
      await eventually('the V1 push on the V2 client', 2000, () => v2.got.shout.length === 1 || v2.got.shout);
      await ping(v1);
      await ping(v2);
      assert.deepEqual(v1.got.shout, [{ from: 'v2' }]);
      assert.deepEqual(v2.got.shout, [{ from: 'v1' }]);
    });
  });

  describe('presence across nodes', () => {
    test('lists converge on every node', async () => {
      const topic = 'room:x';
      const clients = [
        await joinClient(cluster, a, topic, { userId: 'alice', meta: { name: 'Alice' } }),
        await joinClient(cluster, b, topic, { userId: 'bob', meta: { name: 'Bob' } }),
        await joinClient(cluster, c, topic, { userId: 'carol', meta: { name: 'Carol' } }),
      ];
      await waitForKeys('three presences everywhere', {
        topic, clients, nodes: [a, b, c], keys: ['alice', 'bob', 'carol'],
      });

      // Every node and client lists the same metas, phx_ref included.
      const expected = stateOf(clients[0]);
      for (const [key, name] of [['alice', 'Alice'], ['bob', 'Bob'], ['carol', 'Carol']]) {
        assert.equal(expected[key].metas.length, 1, key);
        assert.equal(expected[key].metas[0].name, name);
        assert.equal(typeof expected[key].metas[0].phx_ref, 'string');
        assert.ok(Number.isInteger(expected[key].metas[0].online_at), key);
      }
      assert.deepEqual(stateOf(clients[1]), expected);
      assert.deepEqual(stateOf(clients[2]), expected);
      for (const node of [a, b, c]) assert.deepEqual(sortKeys(await apiPresence(node, topic)), expected, node.name);
    });

    test('update and leave replicate', async () => {
      const topic = 'room:changes';
      const alice = await joinClient(cluster, a, topic, { userId: 'alice' });
      const bob = await joinClient(cluster, b, topic, { userId: 'bob', meta: { status: 'here' } });
      const carol = await joinClient(cluster, c, topic, { userId: 'carol' });
      const clients = [alice, bob, carol];
      await waitForKeys('three presences everywhere', {
        topic, clients, nodes: [a, b, c], keys: ['alice', 'bob', 'carol'],
      });
      const oldMeta = stateOf(alice).bob.metas[0];
      assert.equal(oldMeta.status, 'here');

      assert.equal(await push(bob, 'presence_update', { meta: { status: 'away' } }), 'ok');
      await eventually('the update on every client and node', 3000, async () => {
        const seen = clients.map((client) => stateOf(client).bob?.metas);
        for (const node of [a, b, c]) seen.push((await apiPresence(node, topic)).bob?.metas);
        return seen.every((metas) => metas?.length === 1 && metas[0].status === 'away') || seen;
      });
      const newMeta = stateOf(carol).bob.metas[0];
      assert.notEqual(newMeta.phx_ref, oldMeta.phx_ref);
      assert.equal(newMeta.phx_ref_prev, oldMeta.phx_ref);
      assert.deepEqual(stateOf(alice).bob.metas, [newMeta]);

      await leave(carol);
      await waitForKeys('carol gone everywhere', {
        topic, clients: [alice, bob], nodes: [a, b, c], keys: ['alice', 'bob'],
      });
    });
  });

  describe('garbage from Redis', () => {
    test('nodes count it and keep working', async () => {
      const topic = 'room:garbage';
      const alice = await joinClient(cluster, a, topic, { userId: 'alice', events: ['shout'] });
      const bob = await joinClient(cluster, b, topic, { userId: 'bob', events: ['shout'] });
      const carol = await joinClient(cluster, c, topic, { userId: 'carol', events: ['shout'] });
      const nodes = [a, b, c];
      await waitForKeys('three presences everywhere', {
        topic, clients: [alice, bob, carol], nodes, keys: ['alice', 'bob', 'carol'],
      });
      await waitForTopicSubscribers(cluster.redis, topic, 3);

      const channels = await cluster.redis.command(['PUBSUB', 'CHANNELS', '*']);
      const topicChannels = channels.filter((name) => name.endsWith(topic));
      const shardChannels = channels.filter((name) => name.includes('phx_presence'));
      assert.equal(topicChannels.length, 1, JSON.stringify(channels));
      assert.ok(shardChannels.length >= 1, JSON.stringify(channels));
      const broadcast = await captureBroadcast(cluster.redis, topicChannels[0], alice);
      await eventually('the captured push on B and C', 2000,
        () => (bob.got.shout.length === 1 && carol.got.shout.length === 1) || [bob.got.shout, carol.got.shout]);

      // A real tracker envelope, captured from Redis, gives the dispatcher
      // and topic that a well-formed envelope with a bad payload needs.
      const spy = await RedisSubscriber.open(cluster.redis.port, { channels: [shardChannels[0]] });
      await eventually('a tracker message on Redis', 3000, () => spy.messages.length > 0 || spy.messages.length);
      spy.close();
      const real = spy.messages[0].data;
      const envelope = decodeEnvelope(real);
      assert.equal(envelope.length, real.length, 'the envelope has trailing bytes');

      const before = await Promise.all(nodes.map(clusterInfo));
      const garbage = [
        Buffer.alloc(0),
        Buffer.from('garbage'),
        Buffer.from([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]),
        Buffer.from([1, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80]),
        Buffer.alloc(70000, 0x01),
        real.subarray(0, 1),
        real.subarray(0, real.length >> 1),
        real.subarray(0, real.length - 1),
        Buffer.concat([real, Buffer.from([0])]),
      ];
      // Well-formed envelopes from an unknown node whose tracker payload is
      // not a tracker message.
      const badPayloads = [Buffer.alloc(0), Buffer.from('garbage'), Buffer.from([1, 1, 0xff, 0xff]),
        envelope.payload.subarray(0, envelope.payload.length - 1)];
      const wrapped = badPayloads.map((payload) => encodeEnvelope({ ...envelope, origin: 'intruder', payload }));
      for (const channel of channels) {
        for (const bytes of garbage) await cluster.redis.command(['PUBLISH', channel, bytes]);
      }
      for (const channel of shardChannels) {
        for (const bytes of wrapped) await cluster.redis.command(['PUBLISH', channel, bytes]);
      }
      // A well-formed broadcast whose topic is not the one of its channel.
      const other = await joinClient(cluster, b, 'room:garbage-other', { events: ['shout'] });
      const misrouted = encodeEnvelope({ ...broadcast, origin: 'intruder', topic: 'room:garbage-other' });
      await cluster.redis.command(['PUBLISH', topicChannels[0], misrouted]);

      await eventually('every node to count the garbage', 3000, async () => {
        const counts = [];
        for (const [i, node] of nodes.entries()) {
          const info = await clusterInfo(node);
          counts.push({
            node: node.name,
            redisInvalid: info.redis.invalid - before[i].redis.invalid,
            trackerInvalid: info.tracker.invalid_messages - before[i].tracker.invalid_messages,
          });
        }
        // Every node listens on the topic and shard channels, so each one
        // gets the raw garbage and the bad tracker payloads.
        return counts.every((count) => count.redisInvalid >= garbage.length && count.trackerInvalid >= 1) || counts;
      });
      for (const node of nodes) assert.equal(node.exitCode, null, `${node.name} exited:\n${node.logs}`);

      // Broadcasts and presence still work, and nothing was delivered or
      // listed because of the garbage.
      await ping(alice);
      assert.deepEqual(alice.got.shout, []);
      assert.equal(await push(alice, 'shout', { after: 'garbage' }), 'ok');
      await eventually('the push on B and C', 3000,
        () => (bob.got.shout.length === 2 && carol.got.shout.length === 2) || [bob.got.shout, carol.got.shout]);
      assert.deepEqual(bob.got.shout, [{ n: 'capture' }, { after: 'garbage' }]);
      assert.deepEqual(carol.got.shout, [{ n: 'capture' }, { after: 'garbage' }]);
      await ping(other);
      assert.deepEqual(other.got.shout, []);
      const dave = await joinClient(cluster, c, topic, { userId: 'dave' });
      await waitForKeys('dave everywhere', {
        topic, clients: [alice, bob, carol, dave], nodes, keys: ['alice', 'bob', 'carol', 'dave'],
      });
      for (const node of nodes) {
        assert.deepEqual(replicasNamed(await clusterInfo(node), 'intruder'), [], node.name);
      }
    });

    // The origin node checks the JSON of every push and HTTP broadcast, but a
    // receiving node writes the payload bytes of an envelope into its
    // frames, so a bad envelope in Redis would reach every client.
    test('invalid JSON payload never reaches clients', async () => {
      const topic = 'room:json';
      const watchers = [a, b, c].map((node) => openRawWatcher(cluster, node, topic));
      const sender = await joinClient(cluster, a, topic, { events: ['shout'] });
      await waitForTopicSubscribers(cluster.redis, topic, 3);
      const channel = (await cluster.redis.command(['PUBSUB', 'CHANNELS', '*'])).find((name) => name.endsWith(topic));
      const broadcast = await captureBroadcast(cluster.redis, channel, sender);
      // The phoenix client would throw on a frame that is not JSON.
      await leave(sender);

      const before = await Promise.all([a, b, c].map(clusterInfo));
      const badPayloads = ['not json', '{"a":', '"]]]', '{}]', '[1,2', 'nul'];
      for (const payload of badPayloads) {
        const bytes = encodeEnvelope({ ...broadcast, origin: 'intruder', payload: Buffer.from(payload) });
        await cluster.redis.command(['PUBLISH', channel, bytes]);
      }
      const last = encodeEnvelope({ ...broadcast, origin: 'intruder', payload: Buffer.from('{"last":true}') });
      await cluster.redis.command(['PUBLISH', channel, last]);

      for (const watcher of await Promise.all(watchers)) {
        await eventually(`the last broadcast on ${watcher.node.name}`, 2000,
          () => watcher.frames.some((frame) => frame.includes('"last":true')) || watcher.frames);
        const invalid = watcher.frames.filter((frame) => {
          try {
            JSON.parse(frame);
            return false;
          } catch {
            return true;
          }
        });
        assert.deepEqual(invalid, [], `frames on ${watcher.node.name} that are not JSON`);
      }
      for (const [i, node] of [a, b, c].entries()) {
        const counted = (await clusterInfo(node)).redis.invalid - before[i].redis.invalid;
        assert.ok(counted >= badPayloads.length, `${node.name} counted ${counted} invalid envelopes`);
      }
    });
  });
});

describe('node failures', { timeout: 30000 }, () => {
  test('SIGKILL: presences leave after down period', async (t) => {
    const { cluster, nodes: [a, b, c] } = await startCluster(['kill-a', 'kill-b', 'kill-c'], cleanedUpBy(t));
    const topic = 'room:kill';
    const alice = await joinClient(cluster, a, topic, { userId: 'alice' });
    const bob = await joinClient(cluster, b, topic, { userId: 'bob' });
    await joinClient(cluster, c, topic, { userId: 'carol' });
    const observers = { topic, clients: [alice, bob], nodes: [a, b] };
    await waitForKeys('three presences', { ...observers, keys: ['alice', 'bob', 'carol'] });
    const [cBefore] = replicasNamed(await clusterInfo(a), 'kill-c');
    assert.equal(cBefore.status, 'up');

    const killedAt = Date.now();
    cluster.signal(c, 'SIGKILL');
    await c.exited;

    // The last heartbeat from C is at most one heartbeat interval old, so
    // its presences must still be listed a third of the down period later.
    await sleep(downPeriodMs / 3);
    const early = await presenceViews(topic, observers.clients, observers.nodes);
    const earlyAt = Date.now() - killedAt;
    for (const [where, keys] of Object.entries(early)) {
      assert.ok(keys.includes('carol'), `${where} dropped carol ${earlyAt} ms after the kill: ${keys}`);
    }

    await waitForKeys('carol to leave', {
      ...observers, keys: ['alice', 'bob'], timeoutMs: downPeriodMs + 6 * periodMs - (Date.now() - killedAt),
    });
    t.diagnostic(`carol left ${Date.now() - killedAt} ms after SIGKILL (down period ${downPeriodMs} ms)`);
    for (const node of [a, b]) {
      const info = await clusterInfo(node);
      const entries = replicasNamed(info, 'kill-c');
      assert.equal(entries.length, 1, JSON.stringify(info.replicas));
      assert.equal(entries[0].status, 'down', `${node.name}: ${JSON.stringify(entries)}`);
      assert.equal(entries[0].vsn, cBefore.vsn);
      assert.ok(info.tracker.replicas_down >= 1, JSON.stringify(info.tracker));
    }

    // After the permdown period C is forgotten.
    const permdownWait = permdownPeriodMs + 10 * periodMs - (Date.now() - killedAt);
    await eventually('kill-c to be permdown or forgotten on A and B', permdownWait, async () => {
      const seen = [];
      for (const node of [a, b]) seen.push(replicasNamed(await clusterInfo(node), 'kill-c'));
      return seen.every((entries) => entries.every((entry) => entry.status === 'permdown')) || seen;
    });
    const forgottenAt = Date.now() - killedAt;
    assert.ok(forgottenAt > permdownPeriodMs - 2 * heartbeatIntervalMs,
      `kill-c was forgotten ${forgottenAt} ms after the kill, before the permdown period of ${permdownPeriodMs} ms`);
    for (const node of [a, b]) {
      assert.ok((await clusterInfo(node)).tracker.replicas_permdown >= 1, node.name);
    }
    await waitForKeys('the survivors', { ...observers, keys: ['alice', 'bob'], timeoutMs: 500 });
  });

  // Each restart case: C is killed and started again with the same node name
  // either after A and B saw it down, or at once, before they could notice.
  for (const [when, waitForDown] of [['after down', true], ['before down is seen', false]]) {
    test(`restart ${when}: new vsn, old entries gone`, async (t) => {
      const prefix = waitForDown ? 'restart' : 'quick';
      const { cluster, nodes: [a, b, c] } = await startCluster([`${prefix}-a`, `${prefix}-b`, `${prefix}-c`],
        cleanedUpBy(t));
      const topic = 'room:restart';
      // Records the tracker messages of the old C, to be replayed later.
      const spy = await RedisSubscriber.open(cluster.redis.port, { patterns: ['*phx_presence*'] });
      t.after(() => spy.close());
      const alice = await joinClient(cluster, a, topic, { userId: 'alice' });
      const bob = await joinClient(cluster, b, topic, { userId: 'bob' });
      await joinClient(cluster, c, topic, { userId: 'carol-old' });
      await waitForKeys('three presences', {
        topic, clients: [alice, bob], nodes: [a, b, c], keys: ['alice', 'bob', 'carol-old'],
      });
      const [oldEntry] = replicasNamed(await clusterInfo(a), c.name);
      assert.ok(spy.messages.length > 0, 'no tracker message captured');

      cluster.signal(c, 'SIGKILL');
      await c.exited;
      if (waitForDown) {
        await eventually('A and B to see C down', downPeriodMs + 10 * periodMs, async () => {
          const seen = [];
          for (const node of [a, b]) seen.push(replicasNamed(await clusterInfo(node), c.name));
          return seen.every((entries) => entries.length === 1 && entries[0].status === 'down') || seen;
        });
      }

      const c2 = await cluster.startNode(c.name);
      const carolNew = await joinClient(cluster, c2, topic, { userId: 'carol-new' });
      const everyone = { topic, clients: [alice, bob, carolNew], nodes: [a, b, c2] };
      await waitForKeys('carol-new everywhere and carol-old nowhere', {
        ...everyone, keys: ['alice', 'bob', 'carol-new'], timeoutMs: 6000,
      });

      for (const node of [a, b]) {
        const entries = replicasNamed(await clusterInfo(node), c.name);
        assert.equal(entries.length, 1, `${node.name}: ${JSON.stringify(entries)}`);
        assert.equal(entries[0].status, 'up');
        assert.notEqual(entries[0].vsn, oldEntry.vsn, `${node.name} still has the old vsn`);
      }
      const ownView = await clusterInfo(c2);
      assert.equal(ownView.node, c.name);
      assert.deepEqual(sorted(ownView.replicas.map((entry) => `${entry.name}:${entry.status}`)),
        [`${a.name}:up`, `${b.name}:up`]);

      // A message of the old C that Redis delivers late (replayed here) must
      // not bring the old C back. Neither may the transfers and clock
      // sampling that run every few periods.
      const oldMessages = spy.messages.filter((message) => decodeEnvelope(message.data).origin.toString() === c.name);
      assert.ok(oldMessages.length > 0, 'no message of the old C captured');
      for (const message of oldMessages) await cluster.redis.command(['PUBLISH', message.channel, message.data]);
      await assertListsStay(['alice', 'bob', 'carol-new'], 1500, everyone);
      for (const node of [a, b]) {
        const entries = replicasNamed(await clusterInfo(node), c.name);
        assert.deepEqual(entries.map((entry) => entry.status), ['up'], node.name);
        assert.notEqual(entries[0].vsn, oldEntry.vsn, `${node.name} went back to the old vsn`);
      }
    });
  }

  test('SIGTERM: presences leave at once', async (t) => {
    const { cluster, nodes: [a, b, c] } = await startCluster(['term-a', 'term-b', 'term-c'], cleanedUpBy(t));
    const topic = 'room:term';
    const alice = await joinClient(cluster, a, topic, { userId: 'alice' });
    const bob = await joinClient(cluster, b, topic, { userId: 'bob' });
    const carol = await joinClient(cluster, c, topic, { userId: 'carol' });
    await waitForKeys('three presences', {
      topic, clients: [alice, bob, carol], nodes: [a, b, c], keys: ['alice', 'bob', 'carol'],
    });
    const closeCodes = [];
    carol.socket.onClose((event) => closeCodes.push(event.code));

    const stoppedAt = Date.now();
    cluster.signal(c, 'SIGTERM');
    // Without the graceful permdown, C's presences would stay until the
    // down period (at least 600 ms here) had passed.
    await waitForKeys('carol to leave', {
      topic, clients: [alice, bob], nodes: [a, b], keys: ['alice', 'bob'], timeoutMs: 3 * periodMs + 200,
    });
    t.diagnostic(`carol left ${Date.now() - stoppedAt} ms after SIGTERM`);

    assert.deepEqual(await c.exited, { code: 0, signal: null }, c.logs);
    await eventually('the close code on carol', 1000, () => closeCodes.length > 0 || closeCodes);
    assert.deepEqual(closeCodes, [1001]);
    for (const node of [a, b]) {
      const entries = replicasNamed(await clusterInfo(node), 'term-c');
      assert.ok(entries.every((entry) => entry.status === 'permdown'), `${node.name}: ${JSON.stringify(entries)}`);
    }
  });

  test('SIGSTOP then SIGCONT: presences return', async (t) => {
    const { cluster, nodes: [a, b, c] } = await startCluster(['pause-a', 'pause-b', 'pause-c'], cleanedUpBy(t));
    const topic = 'room:pause';
    const alice = await joinClient(cluster, a, topic, { userId: 'alice' });
    const bob = await joinClient(cluster, b, topic, { userId: 'bob' });
    const carol = await joinClient(cluster, c, topic, { userId: 'carol' });
    const everyone = { topic, clients: [alice, bob, carol], nodes: [a, b, c] };
    await waitForKeys('three presences', { ...everyone, keys: ['alice', 'bob', 'carol'] });
    const carolMetas = stateOf(alice).carol.metas;
    const [cBefore] = replicasNamed(await clusterInfo(a), 'pause-c');

    const pausedAt = Date.now();
    cluster.signal(c, 'SIGSTOP');
    await waitForKeys('carol to leave', {
      topic, clients: [alice, bob], nodes: [a, b], keys: ['alice', 'bob'], timeoutMs: downPeriodMs + 8 * periodMs,
    });
    for (const node of [a, b]) {
      const entries = replicasNamed(await clusterInfo(node), 'pause-c');
      assert.deepEqual(entries.map((entry) => [entry.status, entry.vsn]), [['down', cBefore.vsn]], node.name);
    }
    await sleep(Math.max(0, downPeriodMs + 300 - (Date.now() - pausedAt)));

    cluster.signal(c, 'SIGCONT');
    await waitForKeys('carol to come back', { ...everyone, keys: ['alice', 'bob', 'carol'], timeoutMs: 5000 });
    assert.deepEqual(stateOf(alice).carol.metas, carolMetas);
    assert.deepEqual(stateOf(bob).carol.metas, carolMetas);
    for (const node of [a, b]) {
      const entries = replicasNamed(await clusterInfo(node), 'pause-c');
      assert.deepEqual(entries.map((entry) => [entry.status, entry.vsn]), [['up', cBefore.vsn]], node.name);
    }
  });
});

describe('network and Redis failures', { timeout: 30000 }, () => {
  // 'refuse' and 'blackhole' drop C's Redis connections, so C reconnects
  // after the heal. 'stall' keeps them open and delivers the held bytes
  // late, so C never detects a failed link.
  for (const mode of ['refuse', 'blackhole', 'stall']) {
    test(`partition (${mode}) heals to right lists`, async (t) => {
      const names = [`${mode}-a`, `${mode}-b`, `${mode}-c`];
      const { cluster, nodes: [a, b, c], proxy } = await startCluster(names, cleanedUpBy(t, { viaProxy: [names[2]] }));
      const topic = 'room:split';
      const alice = await joinClient(cluster, a, topic, { userId: 'alice' });
      const bob = await joinClient(cluster, b, topic, { userId: 'bob' });
      const carol1 = await joinClient(cluster, c, topic, { userId: 'carol1' });
      const carol2 = await joinClient(cluster, c, topic, { userId: 'carol2' });
      await waitForKeys('four presences', {
        topic, clients: [alice, bob, carol1, carol2], nodes: [a, b, c], keys: ['alice', 'bob', 'carol1', 'carol2'],
      });

      proxy.cut(mode);
      const cutAt = Date.now();
      await waitForKeys('A and B to drop the carols', {
        topic, clients: [alice, bob], nodes: [a, b], keys: ['alice', 'bob'], timeoutMs: downPeriodMs + 10 * periodMs,
      });
      await waitForKeys('C to drop alice and bob', {
        topic, clients: [carol1, carol2], nodes: [c], keys: ['carol1', 'carol2'], timeoutMs: downPeriodMs + 10 * periodMs,
      });
      const cDuringCut = await clusterInfo(c);
      if (mode !== 'stall') assert.equal(cDuringCut.redis.connected, false, JSON.stringify(cDuringCut.redis));
      for (const name of [names[0], names[1]]) {
        const entries = replicasNamed(cDuringCut, name);
        assert.deepEqual(entries.map((entry) => entry.status), ['down'], JSON.stringify(cDuringCut.replicas));
      }

      // Changes on both sides of the cut.
      const dave = await joinClient(cluster, a, topic, { userId: 'dave' });
      await leave(carol2);
      await waitForKeys('dave on A and B', {
        topic, clients: [alice, bob, dave], nodes: [a, b], keys: ['alice', 'bob', 'dave'],
      });
      await waitForKeys('carol2 gone on C', { topic, clients: [carol1], nodes: [c], keys: ['carol1'] });
      assert.ok(Date.now() - cutAt > downPeriodMs);

      proxy.heal();
      const healedAt = Date.now();
      const everyone = { topic, clients: [alice, bob, dave, carol1], nodes: [a, b, c] };
      await waitForKeys('the merged lists', { ...everyone, keys: ['alice', 'bob', 'carol1', 'dave'], timeoutMs: 10000 });
      t.diagnostic(`lists merged ${Date.now() - healedAt} ms after the heal`);
      const cAfter = await clusterInfo(c);
      assert.equal(cAfter.redis.connected, true);
      if (mode !== 'stall') assert.ok(cAfter.redis.reconnects >= 1, JSON.stringify(cAfter.redis));
      await assertListsStay(['alice', 'bob', 'carol1', 'dave'], 1000, everyone);
    });
  }

  test('Redis restart: nodes reconnect', async (t) => {
    const { cluster, nodes } = await startCluster(['rr-a', 'rr-b', 'rr-c'], cleanedUpBy(t));
    const [a, b, c] = nodes;
    const topic = 'room:redis-restart';
    const alice = await joinClient(cluster, a, topic, { userId: 'alice', events: ['shout'] });
    const bob = await joinClient(cluster, b, topic, { userId: 'bob', events: ['shout'] });
    const carol = await joinClient(cluster, c, topic, { userId: 'carol', events: ['shout'] });
    await waitForKeys('three presences', {
      topic, clients: [alice, bob, carol], nodes, keys: ['alice', 'bob', 'carol'],
    });

    assert.deepEqual(await cluster.redis.stop(), { code: 0, signal: null });
    await eventually('every node to notice the lost link', 3000, async () => {
      const links = await Promise.all(nodes.map(async (node) => (await clusterInfo(node)).redis));
      return links.every((link) => link.connected === false) || links;
    });

    // A push while Redis is down still gets its ok reply, and the copy for the
    // other nodes is dropped and counted.
    const droppedBefore = (await clusterInfo(a)).redis.dropped;
    assert.equal(await push(alice, 'shout', { during: 'outage' }), 'ok');
    assert.ok((await clusterInfo(a)).redis.dropped > droppedBefore);

    await cluster.redis.start();
    await eventually('every node to reconnect', 8000, async () => {
      const links = await Promise.all(nodes.map(async (node) => (await clusterInfo(node)).redis));
      return links.every((link) => link.connected === true && link.reconnects >= 1) || links;
    });
    await waitForTopicSubscribers(cluster.redis, topic, 3);

    assert.equal(await push(alice, 'shout', { after: 'restart' }), 'ok');
    await eventually('the push on B and C', 3000,
      () => (bob.got.shout.length >= 1 && carol.got.shout.length >= 1) || [bob.got.shout, carol.got.shout]);
    assert.deepEqual(bob.got.shout, [{ after: 'restart' }]);
    assert.deepEqual(carol.got.shout, [{ after: 'restart' }]);

    const dave = await joinClient(cluster, b, topic, { userId: 'dave' });
    await waitForKeys('dave everywhere', {
      topic, clients: [alice, bob, carol, dave], nodes, keys: ['alice', 'bob', 'carol', 'dave'], timeoutMs: 8000,
    });
  });
});

describe('cluster options and transfers', { timeout: 30000 }, () => {
  test('late node gets whole state', async (t) => {
    const { cluster, nodes: [a, b] } = await startCluster(['late-a', 'late-b'], cleanedUpBy(t));
    const topics = Array.from({ length: 50 }, (_, i) => `room:bulk-${i}`);
    // One socket on A joins every topic, so user "bulk" has 50 presences.
    const bulkSocket = cluster.openSocket(a, { user_id: 'bulk' });
    for (const topic of topics) await joinChannel(bulkSocket, topic);
    const bob = await joinClient(cluster, b, topics[7], { userId: 'bob' });
    await waitForKeys('bulk and bob on A and B', {
      topic: topics[7], clients: [bob], nodes: [a, b], keys: ['bob', 'bulk'],
    });
    const before = await Promise.all([a, b].map(clusterInfo));

    // D starts empty and must fetch everything by transfer, because heartbeats
    // carry only changes made after it started.
    const d = await cluster.startNode('late-d');
    await cluster.waitFormed();
    await eventually('all 50 topics on D', 5000, async () => {
      const missing = [];
      for (const topic of topics) {
        const keys = sorted(Object.keys(await apiPresence(d, topic)));
        const expected = topic === topics[7] ? ['bob', 'bulk'] : ['bulk'];
        if (!sameList(keys, expected)) missing.push(`${topic}: ${keys}`);
      }
      return missing.length === 0 || missing;
    });
    const after = await Promise.all([a, b].map(clusterInfo));
    const sent = after.reduce((sum, info, i) => sum
      + info.tracker.transfers_sent_delta - before[i].tracker.transfers_sent_delta
      + info.tracker.transfers_sent_full - before[i].tracker.transfers_sent_full, 0);
    assert.ok(sent >= 1, `no transfer sent to D: ${JSON.stringify(after.map((info) => info.tracker))}`);
    const dInfo = await clusterInfo(d);
    assert.ok(dInfo.tracker.transfers_requested >= 1, JSON.stringify(dInfo.tracker));

    const dave = await joinClient(cluster, d, topics[7], { userId: 'dave' });
    await waitForKeys('dave everywhere', {
      topic: topics[7], clients: [bob, dave], nodes: [a, b, d], keys: ['bob', 'bulk', 'dave'],
    });
  });

  test('--redis-prefix separates clusters', async (t) => {
    const cluster = new Cluster(await startRedis());
    t.after(() => cluster.close());
    const oneNodes = await Promise.all(['one-a', 'one-b'].map((name) => cluster.startNode(name, {
      args: ['--redis-prefix', 'one'],
    })));
    const twoNode = await cluster.startNode('two-a', { args: ['--redis-prefix', 'two'] });
    await cluster.waitFormed(oneNodes);
    const topic = 'room:prefix';
    const alice = await joinClient(cluster, oneNodes[0], topic, { userId: 'alice', events: ['shout'] });
    const bob = await joinClient(cluster, oneNodes[1], topic, { userId: 'bob', events: ['shout'] });
    const zed = await joinClient(cluster, twoNode, topic, { userId: 'zed', events: ['shout'] });
    await waitForKeys('alice and bob in cluster one', {
      topic, clients: [alice, bob], nodes: oneNodes, keys: ['alice', 'bob'],
    });

    const channels = await cluster.redis.command(['PUBSUB', 'CHANNELS', '*']);
    const foreign = channels.filter((name) => !name.startsWith('one:') && !name.startsWith('two:'));
    assert.deepEqual(foreign, []);
    assert.ok(channels.some((name) => name.startsWith('two:')), JSON.stringify(channels));
    await waitForTopicSubscribers(cluster.redis, `one:t:${topic}`, 2);
    await waitForTopicSubscribers(cluster.redis, `two:t:${topic}`, 1);

    assert.equal(await push(alice, 'shout', { from: 'one' }), 'ok');
    await postBroadcast(twoNode, topic, 'shout', { from: 'two' });
    await eventually('each broadcast in its own cluster', 2000,
      () => (bob.got.shout.length === 1 && zed.got.shout.length === 1) || [bob.got.shout, zed.got.shout]);
    await sleep(2 * heartbeatIntervalMs);
    assert.deepEqual(bob.got.shout, [{ from: 'one' }]);
    assert.deepEqual(zed.got.shout, [{ from: 'two' }]);
    assert.deepEqual(alice.got.shout, []);
    assert.deepEqual(keysOf(zed), ['zed']);
    assert.deepEqual(sorted(Object.keys(await apiPresence(twoNode, topic))), ['zed']);
    assert.deepEqual((await clusterInfo(twoNode)).replicas, []);
    for (const node of oneNodes) {
      assert.deepEqual(replicasNamed(await clusterInfo(node), 'two-a'), [], node.name);
    }
  });

  test('--pool-size 4 replicates every shard', async (t) => {
    const cluster = new Cluster(await startRedis());
    t.after(() => cluster.close());
    const nodes = await Promise.all(['pool-a', 'pool-b'].map((name) => cluster.startNode(name, {
      args: ['--pool-size', '4'],
    })));
    await cluster.waitFormed(nodes, { shards: 4 });
    for (const [node, other] of [[nodes[0], nodes[1]], [nodes[1], nodes[0]]]) {
      const entries = replicasNamed(await clusterInfo(node), other.name);
      assert.deepEqual(entries.map((entry) => entry.shard).sort(), [0, 1, 2, 3], node.name);
    }
    const shardChannels = (await cluster.redis.command(['PUBSUB', 'CHANNELS', '*']))
      .filter((name) => name.includes('phx_presence'));
    assert.equal(shardChannels.length, 4, JSON.stringify(shardChannels));

    // Twelve topics spread over the four shards.
    const topics = Array.from({ length: 12 }, (_, i) => `room:pool-${i}`);
    const aliceSocket = cluster.openSocket(nodes[0], { user_id: 'alice' });
    const bobSocket = cluster.openSocket(nodes[1], { user_id: 'bob' });
    for (const topic of topics) {
      await joinChannel(aliceSocket, topic);
      await joinChannel(bobSocket, topic);
    }
    await eventually('alice and bob on every topic and node', 5000, async () => {
      const wrong = [];
      for (const node of nodes) {
        for (const topic of topics) {
          const keys = sorted(Object.keys(await apiPresence(node, topic)));
          if (!sameList(keys, ['alice', 'bob'])) wrong.push(`${node.name} ${topic}: ${keys}`);
        }
      }
      return wrong.length === 0 || wrong;
    });
  });
});

describe('without --cluster', { timeout: 10000 }, () => {
  test('GET /api/cluster shows no cluster', async (t) => {
    const node = await startHarkd(['--node-name', 'solo'], { env: { HARK_CLUSTER: undefined } });
    node.name = 'solo';
    t.after(async () => assert.deepEqual(await node.stop(), { code: 0, signal: null }, node.logs));

    const info = await clusterInfo(node);
    assert.equal(info.node, 'solo');
    assert.equal(info.cluster, null);
    assert.deepEqual(info.replicas, []);
    assert.equal(info.redis, undefined);
    assert.equal(info.tracker.heartbeats_sent, 0);
  });
});
