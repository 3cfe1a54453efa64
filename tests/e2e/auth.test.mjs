// End-to-end tests of access control on a real harkd: connection tokens in
// the connect params and in phoenix.js's authToken subprotocol, rejected
// tokens, topic policies, channel tokens, presence identity, the API key,
// check_origin, open mode and the per-socket limits. Keys and tokens are made
// here with node:crypto, so no key material is stored in the repository.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHmac, generateKeyPairSync, randomBytes, sign as cryptoSign } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Socket } from 'phoenix';
import WebSocket from 'ws';
import { startHarkd, harkdPath, waitFor } from './lib/harkd.mjs';

const secret = randomBytes(32).toString('hex');
const apiKey = `key-${randomBytes(16).toString('hex')}`;
const now = () => Math.floor(Date.now() / 1000);

// ---- Tokens ----

const b64url = (data) => Buffer.from(data).toString('base64url');

// Signs `claims` as a compact JWS. `alg` picks the header and the signature;
// `key` is the HMAC secret or a private KeyObject.
function signToken(claims, { alg = 'HS256', key = secret, header } = {}) {
  const input = `${b64url(JSON.stringify(header ?? { alg, typ: 'JWT' }))}.${b64url(JSON.stringify(claims))}`;
  let signature = Buffer.alloc(0);
  if (alg === 'HS256') signature = createHmac('sha256', key).update(input).digest();
  if (alg === 'RS256') signature = cryptoSign('sha256', Buffer.from(input), key);
  if (alg === 'ES256') signature = cryptoSign('sha256', Buffer.from(input), { key, dsaEncoding: 'ieee-p1363' });
  return `${input}.${b64url(signature)}`;
}

const alice = {
  sub: 'alice',
  exp: now() + 3600,
  join: ['room:1', 'room:2', 'quiet:*'],
  publish: ['room:1'],
  presence: { name: 'Alice', role: 'admin' },
};

// ---- Config files ----

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'hark-auth-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

function writeFile(name, text) {
  const file = path.join(tmp, name);
  fs.writeFileSync(file, text);
  return file;
}

const writeConfig = (name, config) => writeFile(name, JSON.stringify(config));

// ---- Clients ----

// Opens a raw V2 WebSocket and resolves with the HTTP status of the response:
// 101 when the upgrade succeeded, else the error status.
function upgradeStatus(url, { protocols, origin } = {}) {
  return new Promise((resolve) => {
    const ws = new WebSocket(url, protocols, origin ? { origin } : {});
    ws.on('open', () => {
      ws.close();
      resolve(101);
    });
    ws.on('unexpected-response', (request, response) => {
      response.resume();
      resolve(response.statusCode);
    });
    ws.on('error', () => {});
  });
}

// A V2 WebSocket client that queues frames, so a test reads them in order.
class RawClient {
  static open(url, options) {
    const ws = new WebSocket(url, options);
    return new Promise((resolve, reject) => {
      ws.once('open', () => resolve(new RawClient(ws)));
      ws.once('error', reject);
    });
  }

  constructor(ws) {
    this.ws = ws;
    this.frames = [];
    this.closed = new Promise((resolve) => ws.on('close', (code, reason) => resolve({ code, reason: reason.toString() })));
    ws.on('message', (data) => this.frames.push(JSON.parse(data.toString('utf8'))));
  }

  send(message) {
    this.ws.send(JSON.stringify(message));
  }

  // Resolves with the next reply to `ref`, skipping other frames.
  async reply(ref, timeoutMs = 2000) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const index = this.frames.findIndex((f) => f[3] === 'phx_reply' && f[1] === ref);
      if (index >= 0) return this.frames.splice(index, 1)[0][4];
      if (Date.now() > deadline) throw new Error(`no reply to ref ${ref} within ${timeoutMs} ms`);
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
  }

  async join(topic, payload = {}, ref = `${topic}-join`) {
    this.send([ref, ref, topic, 'phx_join', payload]);
    return this.reply(ref);
  }

  async push(topic, event, payload, joinRef = `${topic}-join`) {
    const ref = `${topic}-${event}-${Math.random()}`;
    this.send([joinRef, ref, topic, event, payload]);
    return this.reply(ref);
  }

  close() {
    this.ws.close();
  }
}

const socketUrl = (server, query = '') => `${server.wsUrl}/socket/websocket?${query}vsn=2.0.0`;

function api(server, method, route, { key, body } = {}) {
  const headers = { 'content-type': 'application/json' };
  if (key !== undefined) headers.authorization = `Bearer ${key}`;
  return fetch(`${server.url}${route}`, { method, headers, body: body && JSON.stringify(body) });
}

// ---- HS256 with topic policies ----

describe('HS256 tokens and topic policies', () => {
  let server;
  const clients = [];
  const open = async (query) => {
    const client = await RawClient.open(socketUrl(server, query));
    clients.push(client);
    return client;
  };

  before(async () => {
    writeFile('secret.txt', `${secret}\n`);
    const config = writeConfig('hs256.json', {
      secret_file: 'secret.txt',
      topics: [
        { pattern: 'public:*', join: 'anyone', publish: 'authenticated' },
        { pattern: 'members:*', join: 'authenticated', publish: 'none' },
        { pattern: 'room:*', join: 'claims', publish: 'claims' },
        { pattern: 'quiet:*', join: 'claims', publish: 'claims', client_meta: false },
      ],
    });
    server = await startHarkd(['--config', config], { env: { HARK_API_KEY: apiKey } });
  });
  after(async () => {
    for (const client of clients) client.close();
    await server.stop();
  });

  test('mode line says auth', () => {
    assert.match(server.logs, /msg=security_mode mode=auth tokens=on api_key=on check_origin=host topic_rules=4/);
  });

  test('token in params joins claimed topic', async () => {
    const client = await open(`token=${signToken(alice)}&`);
    assert.deepEqual(await client.join('room:1'), { status: 'ok', response: {} });
  });

  test('authToken subprotocol connects', async () => {
    const token = signToken(alice);
    const socket = new Socket(`${server.wsUrl}/socket`, {
      transport: WebSocket, authToken: token, reconnectAfterMs: () => 60000,
    });
    socket.connect();
    try {
      const channel = socket.channel('room:2', { meta: { name: 'Mallory', color: 'red', online_at: 1 } });
      const response = await new Promise((resolve, reject) => {
        channel.join(2000).receive('ok', resolve).receive('error', reject).receive('timeout', () => reject(new Error('timeout')));
      });
      assert.deepEqual(response, {});
      assert.equal(socket.conn.protocol, 'phoenix');

      // The presence key is the sub; the signed presence claim wins over the
      // client's meta, and online_at is the server's.
      const list = await (await api(server, 'GET', '/api/presence/room:2', { key: apiKey })).json();
      assert.deepEqual(Object.keys(list), ['alice']);
      const meta = list.alice.metas[0];
      assert.equal(meta.name, 'Alice');
      assert.equal(meta.role, 'admin');
      assert.equal(meta.color, 'red');
      assert.ok(meta.online_at > 1600000000000, `online_at ${meta.online_at} is not the server's`);
      assert.ok(!server.logs.includes(token.split('.')[2]), 'the token signature is in the log');
    } finally {
      socket.disconnect();
    }
  });

  test('user_id param cannot pick presence key', async () => {
    const client = await open(`token=${signToken({ sub: 'bob', join: ['room:bob'] })}&user_id=alice&`);
    assert.equal((await client.join('room:bob')).status, 'ok');
    const list = await (await api(server, 'GET', '/api/presence/room:bob', { key: apiKey })).json();
    assert.deepEqual(Object.keys(list), ['bob']);
  });

  test('bad tokens get 403 and stay out of log', async () => {
    const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const bad = {
      'wrong secret': signToken(alice, { key: randomBytes(32).toString('hex') }),
      expired: signToken({ ...alice, exp: now() - 3600 }),
      'not yet valid': signToken({ ...alice, nbf: now() + 3600 }),
      'alg none': signToken(alice, { alg: 'none' }),
      'RS256 instead of HS256': signToken(alice, { alg: 'RS256', key: privateKey }),
      'tampered payload': (() => {
        const [h, , s] = signToken(alice).split('.');
        return `${h}.${b64url(JSON.stringify({ ...alice, join: ['*'] }))}.${s}`;
      })(),
      'channel token': signToken({ sub: 'alice', channel: 'room:1' }),
      garbage: 'not-a-jwt',
    };
    for (const [name, token] of Object.entries(bad)) {
      assert.equal(await upgradeStatus(socketUrl(server, `token=${encodeURIComponent(token)}&`)), 403, `params: ${name}`);
      const protocol = `base64url.bearer.phx.${Buffer.from(token).toString('base64').replace(/=/g, '')}`;
      assert.equal(await upgradeStatus(socketUrl(server), { protocols: ['phoenix', protocol] }), 403, `subprotocol: ${name}`);
    }
    await waitFor(() => (server.logs.match(/reason="invalid token"/g) || []).length >= 16, 'the rejections in the log');
    for (const [name, token] of Object.entries(bad)) {
      const part = token.length > 20 ? token.slice(-20) : token;
      assert.ok(!server.logs.includes(part), `the ${name} token is in the log`);
    }
  });

  test('anonymous socket follows rules', async () => {
    const client = await open('');
    assert.equal((await client.join('public:news')).status, 'ok');
    assert.deepEqual(await client.push('public:news', 'say', { body: 'hi' }),
      { status: 'error', response: { reason: 'unauthorized' } });
    assert.deepEqual(await client.join('members:1'), { status: 'error', response: { reason: 'unauthorized' } });
    assert.deepEqual(await client.join('room:1'), { status: 'error', response: { reason: 'unauthorized' } });
    await waitFor(() => /msg=join_rejected .*topic="members:1"/.test(server.logs), 'the join_rejected line');
    await waitFor(() => /msg=publish_rejected .*topic="public:news"/.test(server.logs), 'the publish_rejected line');
  });

  test('claims decide join and publish', async () => {
    const client = await open(`token=${signToken(alice)}&`);
    assert.equal((await client.join('members:1')).status, 'ok');
    assert.equal((await client.push('members:1', 'say', {})).response.reason, 'unauthorized');
    assert.equal((await client.join('public:news')).status, 'ok');
    assert.equal((await client.push('public:news', 'say', {})).status, 'ok');
    assert.equal((await client.join('room:1')).status, 'ok');
    assert.equal((await client.push('room:1', 'say', { body: 'hi' })).status, 'ok');
    assert.equal((await client.join('room:2')).status, 'ok');
    assert.deepEqual(await client.push('room:2', 'say', {}), { status: 'error', response: { reason: 'unauthorized' } });
    assert.deepEqual(await client.join('room:3'), { status: 'error', response: { reason: 'unauthorized' } });
  });

  test('unmatched topic is denied', async () => {
    const client = await open(`token=${signToken({ ...alice, join: ['*'] })}&`);
    assert.deepEqual(await client.join('other:1'), { status: 'error', response: { reason: 'unauthorized' } });
  });

  test('channel token grants one topic', async () => {
    const client = await open(`token=${signToken(alice)}&`);
    const grant = signToken({ sub: 'alice', channel: 'room:9', publish: ['room:9'], exp: now() + 60 });
    assert.equal((await client.join('room:9', { channel_token: grant })).status, 'ok');
    assert.equal((await client.push('room:9', 'say', {})).status, 'ok');

    const joinOnly = signToken({ channel: 'room:8' });
    assert.equal((await client.join('room:8', { channel_token: joinOnly })).status, 'ok');
    assert.equal((await client.push('room:8', 'say', {})).response.reason, 'unauthorized');

    const other = signToken({ sub: 'alice', channel: 'room:7' });
    assert.equal((await client.join('room:6', { channel_token: other })).response.reason, 'unauthorized');
    const bobs = signToken({ sub: 'bob', channel: 'room:5' });
    assert.equal((await client.join('room:5', { channel_token: bobs })).response.reason, 'unauthorized');
    const forged = signToken({ sub: 'alice', channel: 'room:4' }, { key: randomBytes(32).toString('hex') });
    assert.equal((await client.join('room:4', { channel_token: forged })).response.reason, 'unauthorized');
  });

  test('client_meta off rejects client meta', async () => {
    const client = await open(`token=${signToken(alice)}&`);
    assert.deepEqual(await client.join('quiet:1', { meta: { status: 'away' } }),
      { status: 'error', response: { reason: 'client meta is not allowed on this topic' } });
    assert.equal((await client.join('quiet:1', {})).status, 'ok');
    assert.equal((await client.push('quiet:1', 'presence_update', { meta: { a: 1 } })).response.reason,
      'client meta is not allowed on this topic');
    const list = await (await api(server, 'GET', '/api/presence/quiet:1', { key: apiKey })).json();
    assert.equal(list.alice.metas[0].name, 'Alice');
  });

  test('API key is required', async () => {
    const body = { topic: 'room:1', event: 'news', payload: {} };
    for (const key of [undefined, 'wrong', `${apiKey}x`, apiKey.slice(0, -1)]) {
      const response = await api(server, 'POST', '/api/broadcast', { key, body });
      assert.equal(response.status, 401, `key ${key}`);
      assert.equal(response.headers.get('www-authenticate'), 'Bearer');
      assert.match((await response.json()).error, /API key/);
    }
    const wrongScheme = await fetch(`${server.url}/api/broadcast`, {
      method: 'POST', headers: { authorization: `Basic ${apiKey}` }, body: JSON.stringify(body),
    });
    assert.equal(wrongScheme.status, 401);
    assert.equal((await api(server, 'POST', '/api/broadcast', { key: apiKey, body })).status, 200);
    assert.equal((await fetch(`${server.url}/healthz`)).status, 200);
    await waitFor(() => /status=401 reason="wrong API key"/.test(server.logs), 'the 401 line');
    assert.ok(!server.logs.includes(apiKey), 'the API key is in the log');
  });

  test('check_origin defaults to host', async () => {
    assert.equal(await upgradeStatus(socketUrl(server), { origin: `http://127.0.0.1:${server.port}` }), 101);
    assert.equal(await upgradeStatus(socketUrl(server), { origin: 'https://127.0.0.1' }), 101);
    assert.equal(await upgradeStatus(socketUrl(server), { origin: 'https://evil.example' }), 403);
    assert.equal(await upgradeStatus(socketUrl(server), { origin: 'null' }), 403);
    assert.equal(await upgradeStatus(socketUrl(server)), 101);
    await waitFor(() => /reason="origin not allowed" origin="https:\/\/evil.example"/.test(server.logs), 'the origin line');
  });
});

// ---- Public keys and origin lists ----

describe('RS256 and ES256 public keys', () => {
  for (const [alg, type, options] of [['RS256', 'rsa', { modulusLength: 2048 }], ['ES256', 'ec', { namedCurve: 'P-256' }]]) {
    test(`${alg} tokens`, async () => {
      const { publicKey, privateKey } = generateKeyPairSync(type, options);
      const other = generateKeyPairSync(type, options).privateKey;
      const pem = publicKey.export({ type: 'spki', format: 'pem' });
      writeFile(`${alg}.pem`, pem);
      const config = writeConfig(`${alg}.json`, {
        algorithm: alg, public_key_file: `${alg}.pem`, issuer: 'https://backend.example',
        check_origin: ['https://app.example', '//*.chat.example'],
      });
      const server = await startHarkd(['--config', config]);
      try {
        const claims = { ...alice, iss: 'https://backend.example' };
        const good = signToken(claims, { alg, key: privateKey });
        assert.equal(await upgradeStatus(socketUrl(server, `token=${good}&`)), 101);
        assert.equal(await upgradeStatus(socketUrl(server, `token=${signToken(claims, { alg, key: other })}&`)), 403);
        assert.equal(await upgradeStatus(socketUrl(server, `token=${signToken({ ...claims, iss: 'x' }, { alg, key: privateKey })}&`)), 403);
        // Algorithm confusion: an HMAC keyed with the public key's PEM.
        assert.equal(await upgradeStatus(socketUrl(server, `token=${signToken(claims, { alg: 'HS256', key: pem })}&`)), 403);

        assert.equal(await upgradeStatus(socketUrl(server), { origin: 'https://app.example' }), 101);
        assert.equal(await upgradeStatus(socketUrl(server), { origin: 'http://app.example' }), 403);
        assert.equal(await upgradeStatus(socketUrl(server), { origin: 'https://eu.chat.example:8443' }), 101);
        assert.equal(await upgradeStatus(socketUrl(server), { origin: 'https://evilchat.example' }), 403);
      } finally {
        await server.stop();
      }
    });
  }
});

// ---- Open mode, config errors and limits ----

// Runs harkd to its exit and returns { code, stderr }.
function runHarkd(args, env = {}) {
  return new Promise((resolve) => {
    const proc = spawn(harkdPath, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    proc.stderr.on('data', (chunk) => { stderr += chunk; });
    const timer = setTimeout(() => proc.kill('SIGKILL'), 5000);
    proc.on('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, stderr });
    });
  });
}

describe('open mode and startup checks', () => {
  test('open mode says so', async () => {
    const server = await startHarkd([]);
    try {
      assert.match(server.logs, /msg=security_mode mode=open tokens=off api_key=off check_origin=off/);
      assert.match(server.logs, /listening on loopback only/);
      assert.equal(await upgradeStatus(socketUrl(server), { origin: 'https://evil.example' }), 101);
      const response = await api(server, 'POST', '/api/broadcast', { body: { topic: 't', event: 'e', payload: {} } });
      assert.equal(response.status, 200);
    } finally {
      await server.stop();
    }
  });

  test('open mode refuses 0.0.0.0', async () => {
    const { code, stderr } = await runHarkd(['--listen', '0.0.0.0:0']);
    assert.equal(code, 1);
    const lines = stderr.trim().split('\n');
    assert.equal(lines.length, 1, stderr);
    assert.match(lines[0], /level=error msg=startup_failed .*--insecure/);
  });

  test('--insecure allows 0.0.0.0', async () => {
    const server = await startHarkd(['--listen', '0.0.0.0:0', '--insecure']);
    try {
      assert.match(server.logs, /mode=open .*--insecure/);
      assert.equal((await fetch(`http://127.0.0.1:${server.port}/healthz`)).status, 200);
    } finally {
      await server.stop();
    }
  });

  test('auth allows 0.0.0.0', async () => {
    const server = await startHarkd(['--listen', '0.0.0.0:0'], { env: { HARK_JWT_SECRET: secret } });
    try {
      assert.match(server.logs, /mode=auth tokens=on api_key=off/);
    } finally {
      await server.stop();
    }
  });

  test('invalid config exits 2', async () => {
    const cases = [
      ['{"secret": 1', /invalid JSON at line 1/],
      ['{"secert": "x"}', /unknown key "secert"/],
      ['{"topics": [{"pattern": "*", "join": "claims"}]}', /topics\[0\]\.join is "claims"/],
      ['{"secret_file": "missing.txt"}', /cannot read secret_file/],
      ['{"check_origin": ["example.com"]}', /check_origin\[0\]/],
    ];
    for (const [text, message] of cases) {
      const file = writeFile('invalid.json', text);
      const { code, stderr } = await runHarkd(['--listen', '127.0.0.1:0', '--config', file]);
      assert.equal(code, 2, stderr);
      assert.match(stderr, message);
      assert.ok(stderr.includes('invalid.json'), stderr);
    }
    const { code } = await runHarkd(['--config', path.join(tmp, 'none.json')]);
    assert.equal(code, 2);
  });

  test('rate limit closes with 1008', async () => {
    const server = await startHarkd(['--max-messages-per-second', '5']);
    try {
      const client = await RawClient.open(socketUrl(server));
      for (let i = 0; i < 30; i++) client.send([null, `${i}`, 'phoenix', 'heartbeat', {}]);
      const { code, reason } = await client.closed;
      assert.equal(code, 1008);
      assert.equal(reason, 'message rate limit exceeded');
      // The burst is twice the rate: 10 heartbeats got replies.
      assert.equal(client.frames.length, 10);
      await waitFor(() => /msg=rate_limit_exceeded .*limit_per_s=5/.test(server.logs), 'the rate limit line');
    } finally {
      await server.stop();
    }
  });

  test('default rate allows normal use', async () => {
    const server = await startHarkd([]);
    try {
      const client = await RawClient.open(socketUrl(server));
      for (let i = 0; i < 150; i++) client.send([null, `${i}`, 'phoenix', 'heartbeat', {}]);
      assert.deepEqual(await client.reply('149'), { status: 'ok', response: {} });
      client.close();
    } finally {
      await server.stop();
    }
  });

  test('topic and event length limits', async () => {
    const server = await startHarkd([]);
    try {
      const client = await RawClient.open(socketUrl(server));
      const long = 'x'.repeat(256);
      assert.deepEqual(await client.join(long), { status: 'error', response: { reason: 'topic is longer than 255 bytes' } });
      assert.equal((await client.join('x'.repeat(255))).status, 'ok');
      assert.equal((await client.join('room:1')).status, 'ok');
      assert.deepEqual(await client.push('room:1', 'e'.repeat(256), {}),
        { status: 'error', response: { reason: 'event is longer than 255 bytes' } });
      assert.equal((await client.push('room:1', 'e'.repeat(255), {})).status, 'ok');
      client.close();
    } finally {
      await server.stop();
    }
  });

  test('length limits follow flags', async () => {
    const server = await startHarkd(['--max-topic-bytes', '16', '--max-event-bytes', '20']);
    try {
      const client = await RawClient.open(socketUrl(server));
      assert.equal((await client.join('room:12345678901')).status, 'ok');
      assert.equal((await client.join('room:123456789012')).response.reason, 'topic is longer than 16 bytes');
      assert.equal((await client.push('room:12345678901', 'e'.repeat(20), {})).status, 'ok');
      assert.equal((await client.push('room:12345678901', 'e'.repeat(21), {})).response.reason,
        'event is longer than 20 bytes');
      client.close();
    } finally {
      await server.stop();
    }
  });

  test('topic max_meta_bytes limits meta', async () => {
    const config = writeConfig('meta.json', { topics: [{ pattern: '*', max_meta_bytes: 20 }] });
    const server = await startHarkd(['--config', config]);
    try {
      const client = await RawClient.open(socketUrl(server));
      assert.equal((await client.join('a', { meta: { n: 'x'.repeat(20) } })).response.reason, 'meta is larger than 20 bytes');
      assert.equal((await client.join('a', { meta: { n: 1 } })).status, 'ok');
      client.close();
    } finally {
      await server.stop();
    }
  });
});
