// End-to-end tests of harkd's HTTP side: /healthz, POST /api/broadcast,
// error statuses, keep-alive and the demo page assets.
import { test, describe, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import { Socket } from 'phoenix';
import WebSocket from 'ws';
import { startHarkd, waitFor } from './lib/harkd.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const maxBodyBytes = 1048576;

// Sends one HTTP request and resolves with
// { status, headers, text, reusedSocket }.
// A string or Buffer body is sent with a Content-Length; an array of
// strings is sent chunked, one chunk per element.
function request(server, { method = 'GET', path: urlPath = '/', body, headers = {}, agent } = {}) {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port: server.port, method, path: urlPath, headers, agent });
    let responded = false;
    req.on('response', (res) => {
      responded = true;
      const chunks = [];
      res.on('data', (chunk) => chunks.push(chunk));
      res.on('end', () => resolve({
        status: res.statusCode,
        headers: res.headers,
        text: Buffer.concat(chunks).toString('utf8'),
        reusedSocket: req.reusedSocket,
      }));
      res.on('error', reject);
    });
    // The server may respond to an oversized body and close before reading all
    // of it, so a write error after the response is expected.
    req.on('error', (error) => { if (!responded) reject(error); });
    if (Array.isArray(body)) {
      for (const chunk of body) req.write(chunk);
    } else if (body !== undefined) {
      req.setHeader('Content-Length', Buffer.byteLength(body));
      req.write(body);
    }
    req.end();
  });
}

function postBroadcast(server, body, options = {}) {
  const text = typeof body === 'string' || Buffer.isBuffer(body) ? body : JSON.stringify(body);
  return request(server, {
    method: 'POST',
    path: '/api/broadcast',
    body: text,
    headers: { 'Content-Type': 'application/json' },
    ...options,
  });
}

// Writes raw bytes on a new TCP connection and resolves with everything the
// server sent until it closed the connection or `idleMs` passed in silence.
function rawExchange(server, text, idleMs = 500) {
  return new Promise((resolve, reject) => {
    const socket = net.connect(server.port, '127.0.0.1');
    const chunks = [];
    const finish = () => {
      socket.destroy();
      resolve(Buffer.concat(chunks).toString('utf8'));
    };
    let timer = setTimeout(finish, idleMs);
    socket.on('data', (chunk) => {
      chunks.push(chunk);
      clearTimeout(timer);
      timer = setTimeout(finish, idleMs);
    });
    socket.on('end', () => { clearTimeout(timer); finish(); });
    socket.on('error', (error) => { clearTimeout(timer); if (chunks.length) finish(); else reject(error); });
    socket.write(text);
  });
}

// Checks the status, the JSON content type and the {"error": "..."} body.
function assertJsonError(response, status) {
  assert.equal(response.status, status, `status, body ${response.text}`);
  assert.match(response.headers['content-type'] ?? '', /^application\/json/);
  const body = JSON.parse(response.text);
  assert.deepEqual(Object.keys(body), ['error']);
  assert.equal(typeof body.error, 'string');
  assert.ok(body.error.length > 0, 'error message is empty');
}

const phoenixSockets = [];

function openPhoenix(server) {
  const socket = new Socket(`${server.wsUrl}/socket`, {
    transport: WebSocket,
    reconnectAfterMs: () => 60000,
    rejoinAfterMs: () => 60000,
  });
  phoenixSockets.push(socket);
  socket.connect();
  return socket;
}

function joinChannel(socket, topic) {
  const channel = socket.channel(topic, {});
  return new Promise((resolve, reject) => {
    channel.join(2000)
      .receive('ok', () => resolve(channel))
      .receive('error', (response) => reject(new Error(`join ${topic} failed: ${JSON.stringify(response)}`)))
      .receive('timeout', () => reject(new Error(`join ${topic} timed out`)));
  });
}

function pushStatus(channel, event, payload) {
  return new Promise((resolve) => {
    channel.push(event, payload, 2000)
      .receive('ok', () => resolve('ok'))
      .receive('error', () => resolve('error'))
      .receive('timeout', () => resolve('timeout'));
  });
}

function ping(socket) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('ping got no reply within 2000 ms')), 2000);
    if (!socket.ping((rtt) => { clearTimeout(timer); resolve(rtt); })) {
      clearTimeout(timer);
      reject(new Error('ping was not sent: the socket is not connected'));
    }
  });
}

async function closePhoenixSockets() {
  await Promise.all(phoenixSockets.splice(0).map((socket) => new Promise((resolve) => socket.disconnect(resolve))));
}

describe('http api', () => {
  let server;
  // A client connected for the whole file; every error test checks that it
  // still gets replies afterwards.
  let watcher;
  let watcherChannel;

  // Checks that channels still work: the long-lived client still gets a
  // ping reply and a fresh client can join and broadcast to it.
  async function assertChannelsStillWork() {
    assert.equal(typeof await ping(watcher), 'number');
    const got = [];
    const ref = watcherChannel.on('still_alive', (payload) => got.push(payload));
    const socket = openPhoenix(server);
    const channel = await joinChannel(socket, 'room:watch');
    assert.equal(await pushStatus(channel, 'still_alive', { n: 1 }), 'ok');
    await waitFor(() => got.length === 1, 'the broadcast on the long-lived client');
    watcherChannel.off('still_alive', ref);
    await new Promise((resolve) => socket.disconnect(resolve));
    phoenixSockets.splice(phoenixSockets.indexOf(socket), 1);
  }

  // Presence is off so that frames can be compared one by one; presence
  // has its own tests in presence.test.mjs.
  before(async () => {
    server = await startHarkd(['--no-presence']);
    watcher = new Socket(`${server.wsUrl}/socket`, {
      transport: WebSocket,
      reconnectAfterMs: () => 60000,
      rejoinAfterMs: () => 60000,
    });
    watcher.connect();
    watcherChannel = await joinChannel(watcher, 'room:watch');
  });

  afterEach(closePhoenixSockets);

  after(async () => {
    await closePhoenixSockets();
    if (watcher) await new Promise((resolve) => watcher.disconnect(resolve));
    if (server) assert.deepEqual(await server.stop(), { code: 0, signal: null }, server.logs);
  });

  test('healthz returns ok', async () => {
    const response = await request(server, { path: '/healthz' });
    assert.equal(response.status, 200);
    assert.match(response.headers['content-type'] ?? '', /^application\/json/);
    assert.deepEqual(JSON.parse(response.text), { status: 'ok' });
  });

  test('broadcast reaches topic subscribers only', async () => {
    const topic = 'room:api';
    const subscribers = [];
    for (let i = 0; i < 3; i++) {
      const channel = await joinChannel(openPhoenix(server), topic);
      const got = [];
      channel.on('announce', (payload) => got.push(payload));
      subscribers.push(got);
    }
    const outsiderSocket = openPhoenix(server);
    const outsider = await joinChannel(outsiderSocket, 'room:api-other');
    const outsiderGot = [];
    outsider.on('announce', (payload) => outsiderGot.push(payload));

    const response = await postBroadcast(server, { topic, event: 'announce', payload: { text: 'hi', n: 1 } });
    assert.equal(response.status, 200, response.text);
    assert.match(response.headers['content-type'] ?? '', /^application\/json/);
    assert.deepEqual(JSON.parse(response.text), { status: 'ok' });

    await waitFor(() => subscribers.every((got) => got.length >= 1), 'the broadcast on every subscriber');
    for (const got of subscribers) assert.deepEqual(got, [{ text: 'hi', n: 1 }]);
    await ping(outsiderSocket);
    assert.deepEqual(outsiderGot, []);
  });

  test('head healthz has no body', async () => {
    const response = await request(server, { method: 'HEAD', path: '/healthz' });
    assert.equal(response.status, 200);
    assert.equal(response.text, '');
  });

  test('broadcast reaches V1 subscribers', async () => {
    const topic = 'room:api-v1';
    const ws = new WebSocket(`${server.wsUrl}/socket/websocket?vsn=1.0.0`);
    const frames = [];
    ws.on('message', (data) => frames.push(data.toString('utf8')));
    await new Promise((resolve, reject) => { ws.once('open', resolve); ws.once('error', reject); });
    try {
      ws.send(JSON.stringify({ topic, event: 'phx_join', payload: {}, ref: '1' }));
      await waitFor(() => frames.length === 1, 'the join reply');

      const response = await postBroadcast(server, { topic, event: 'announce', payload: { n: 2 } });
      assert.equal(response.status, 200, response.text);
      await waitFor(() => frames.length === 2, 'the broadcast frame');
      assert.deepEqual(JSON.parse(frames[1]), { topic, event: 'announce', payload: { n: 2 }, ref: null });
    } finally {
      ws.terminate();
    }
  });

  test('broadcast frame is exact', async () => {
    const topic = 'room:api-raw';
    const ws = new WebSocket(`${server.wsUrl}/socket/websocket?vsn=2.0.0`);
    const frames = [];
    ws.on('message', (data) => frames.push(data.toString('utf8')));
    await new Promise((resolve, reject) => { ws.once('open', resolve); ws.once('error', reject); });
    try {
      ws.send(JSON.stringify(['1', '1', topic, 'phx_join', {}]));
      await waitFor(() => frames.length === 1, 'the join reply');

      // The payload keeps its own spacing on the way out.
      const body = `{"topic":"${topic}","event":"announce","payload":{ "a" : [1, 2] , "b":"\\u00e9" }}`;
      const response = await postBroadcast(server, body);
      assert.equal(response.status, 200, response.text);
      await waitFor(() => frames.length === 2, 'the broadcast frame');
      assert.equal(frames[1], `[null,null,"${topic}","announce",{ "a" : [1, 2] , "b":"\\u00e9" }]`);
    } finally {
      ws.terminate();
    }
  });

  test('invalid bodies get 400', async () => {
    const cases = [
      ['invalid JSON', '{"topic":'],
      ['empty body', ''],
      ['array body', '[]'],
      ['string body', '"room:x"'],
      ['missing topic', { event: 'e', payload: {} }],
      ['missing event', { topic: 'room:x', payload: {} }],
      ['missing payload', { topic: 'room:x', event: 'e' }],
      ['numeric topic', { topic: 5, event: 'e', payload: {} }],
      ['null event', { topic: 'room:x', event: null, payload: {} }],
      ['array payload', { topic: 'room:x', event: 'e', payload: [1] }],
      ['string payload', { topic: 'room:x', event: 'e', payload: 'text' }],
      ['null payload', { topic: 'room:x', event: 'e', payload: null }],
      ['empty topic', { topic: '', event: 'e', payload: {} }],
      ['empty event', { topic: 'room:x', event: '', payload: {} }],
      ['trailing garbage', '{"topic":"room:x","event":"e","payload":{}} extra'],
      ['invalid UTF-8', Buffer.concat([Buffer.from('{"topic":"room:'), Buffer.from([0xff, 0xfe]), Buffer.from('","event":"e","payload":{}}')])],
      ['nesting over 64 levels', `{"topic":"room:x","event":"e","payload":${'{"a":'.repeat(70)}1${'}'.repeat(70)}}`],
    ];
    for (const [name, body] of cases) {
      const response = await postBroadcast(server, body);
      assert.equal(response.status, 400, `${name}: status, body ${response.text}`);
      assertJsonError(response, 400);
    }
    await assertChannelsStillWork();
  });

  test('unknown path gets 404', async () => {
    for (const [method, urlPath] of [['GET', '/nope'], ['POST', '/api/nope'], ['GET', '/api/broadcast/extra']]) {
      const response = await request(server, { method, path: urlPath });
      assert.equal(response.status, 404, `${method} ${urlPath}`);
      assertJsonError(response, 404);
    }
    await assertChannelsStillWork();
  });

  test('wrong method gets 405 with Allow', async () => {
    const broadcastGet = await request(server, { path: '/api/broadcast' });
    assertJsonError(broadcastGet, 405);
    assert.match(broadcastGet.headers.allow ?? '', /\bPOST\b/);

    const healthPost = await request(server, { method: 'POST', path: '/healthz', body: '{}' });
    assertJsonError(healthPost, 405);
    assert.match(healthPost.headers.allow ?? '', /\bGET\b/);

    const broadcastPut = await request(server, { method: 'PUT', path: '/api/broadcast', body: '{}' });
    assertJsonError(broadcastPut, 405);
    assert.match(broadcastPut.headers.allow ?? '', /\bPOST\b/);
    await assertChannelsStillWork();
  });

  test('body over the limit gets 413', async () => {
    const padding = 'x'.repeat(maxBodyBytes);
    const body = JSON.stringify({ topic: 'room:big', event: 'e', payload: { padding } });
    assert.ok(body.length > maxBodyBytes);
    assertJsonError(await postBroadcast(server, body), 413);
    await assertChannelsStillWork();
  });

  test('chunked body over the limit gets 413', async () => {
    const chunk = 'x'.repeat(64 * 1024);
    const chunks = ['{"topic":"room:big","event":"e","payload":{"padding":"'];
    for (let i = 0; i < 17; i++) chunks.push(chunk);
    chunks.push('"}}');
    const response = await request(server, {
      method: 'POST',
      path: '/api/broadcast',
      body: chunks,
      headers: { 'Content-Type': 'application/json', 'Transfer-Encoding': 'chunked' },
    });
    assertJsonError(response, 413);
    await assertChannelsStillWork();
  });

  test('body at the limit is accepted', async () => {
    const prefix = '{"topic":"room:limit","event":"e","payload":{"padding":"';
    const suffix = '"}}';
    const body = prefix + 'x'.repeat(maxBodyBytes - prefix.length - suffix.length) + suffix;
    assert.equal(body.length, maxBodyBytes);
    const response = await postBroadcast(server, body);
    assert.equal(response.status, 200, response.text);
  });

  test('keep-alive serves two requests', async () => {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    try {
      const first = await request(server, { path: '/healthz', agent });
      assert.equal(first.status, 200);
      assert.equal(first.reusedSocket, false);

      const second = await postBroadcast(server, { topic: 'room:keep', event: 'e', payload: {} }, { agent });
      assert.equal(second.status, 200, second.text);
      assert.equal(second.reusedSocket, true, 'the second request did not reuse the connection');

      const third = await request(server, { path: '/healthz', agent });
      assert.equal(third.status, 200);
      assert.equal(third.reusedSocket, true);
    } finally {
      agent.destroy();
    }
  });

  test('pipelined requests are answered in order', async () => {
    const healthRequest = 'GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n';
    const unknownRequest = 'GET /nope HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n';
    const reply = await rawExchange(server, healthRequest + unknownRequest);
    // A status line may follow the previous body on the same line.
    const statuses = [...reply.matchAll(/HTTP\/1\.1 (\d{3}) /g)].map((match) => match[1]);
    assert.deepEqual(statuses, ['200', '404']);
  });

  test('malformed request gets 400', async () => {
    const reply = await rawExchange(server, 'THIS IS NOT HTTP\r\n\r\n');
    assert.match(reply, /^HTTP\/1\.1 400 /);
    await assertChannelsStillWork();
  });

  test('oversized headers get 431', async () => {
    const reply = await rawExchange(server,
      `GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Filler: ${'x'.repeat(20 * 1024)}\r\n\r\n`);
    assert.match(reply, /^HTTP\/1\.1 431 /);
    await assertChannelsStillWork();
  });

  test('path traversal is not served', async () => {
    for (const urlPath of ['/../CMakeLists.txt', '/assets/../../package.json', '/%2e%2e/CMakeLists.txt', '/assets/..%2f..%2fpackage.json']) {
      const reply = await rawExchange(server, `GET ${urlPath} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n`);
      assert.match(reply, /^HTTP\/1\.1 (400|403|404) /, `GET ${urlPath}`);
      assert.doesNotMatch(reply, /cmake_minimum_required|devDependencies/, `GET ${urlPath} leaked a file`);
    }
  });

  test('demo page is served', async () => {
    const response = await request(server, { path: '/' });
    assert.equal(response.status, 200);
    assert.match(response.headers['content-type'] ?? '', /^text\/html/);
    assert.equal(response.text, await readFile(path.join(root, 'web/index.html'), 'utf8'));
  });

  test('phoenix.mjs is served from npm', async () => {
    const response = await request(server, { path: '/assets/phoenix.mjs' });
    assert.equal(response.status, 200);
    // Browsers load a module script only with a JavaScript MIME type.
    assert.match(response.headers['content-type'] ?? '', /^(text|application)\/javascript/);
    const expected = await readFile(path.join(root, 'node_modules/phoenix/priv/static/phoenix.mjs'), 'utf8');
    assert.equal(response.text, expected);
  });
});
