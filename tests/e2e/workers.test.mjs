// End-to-end tests of harkd with several worker threads: connections land on
// every worker, broadcasts and presence cross between them, the HTTP API
// returns the same data from every worker, and the limits count the whole
// process.
import { test, describe, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import { Socket, Presence } from 'phoenix';
import WebSocket from 'ws';
import { startHarkd, waitFor } from './lib/harkd.mjs';

const cleanups = [];
after(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

function httpGet(port, urlPath) {
  return new Promise((resolve, reject) => {
    http.get({ host: '127.0.0.1', port, path: urlPath, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk) => { body += chunk; });
      res.on('end', () => resolve({ status: res.statusCode, body }));
    }).on('error', reject);
  });
}

// Opens a phoenix Socket for `userId` and joins `topic` with Presence.
async function joinWithPresence(port, topic, userId) {
  const socket = new Socket(`ws://127.0.0.1:${port}/socket`, { transport: WebSocket, params: { user_id: userId } });
  socket.connect();
  const channel = socket.channel(topic, {});
  const presence = new Presence(channel);
  const received = [];
  channel.on('shout', (payload) => received.push(payload));
  await new Promise((resolve, reject) => {
    channel.join().receive('ok', resolve).receive('error', reject).receive('timeout', () => reject(new Error('join timeout')));
  });
  return { socket, channel, presence, received };
}

// The worker of each connection, from the debug lines harkd logs.
function workersSeen(logs) {
  const seen = new Set();
  for (const match of logs.matchAll(/msg=connection_opened conn=\d+ peer=\S+ worker=(\d+)/g)) seen.add(Number(match[1]));
  return seen;
}

describe('workers', () => {
  test('presence and broadcasts cross workers', async () => {
    const server = await startHarkd(['--workers', '2', '--log-level', 'debug']);
    cleanups.push(() => server.stop());
    const count = 16;
    const clients = [];
    for (let i = 0; i < count; i++) clients.push(await joinWithPresence(server.port, 'room:workers', `user-${i}`));
    cleanups.push(() => clients.forEach((c) => c.socket.disconnect()));

    // SO_REUSEPORT spreads connections by a hash of their addresses; with 16
    // connections both workers get some unless the hash is very unlucky.
    assert.deepEqual([...workersSeen(server.logs)].sort(), [0, 1]);

    await waitFor(() => clients.every((c) => c.presence.list().length === count), 'every client to list everyone');
    for (const client of clients) {
      const keys = client.presence.list((key) => key).sort();
      assert.deepEqual(keys, clients.map((_, i) => `user-${i}`).sort());
    }

    clients[0].channel.push('shout', { n: 1 });
    await waitFor(() => clients.slice(1).every((c) => c.received.length === 1), 'every other client to get the shout');
    assert.equal(clients[0].received.length, 0);

    // Every HTTP request may land on either worker; all must agree.
    for (let i = 0; i < 8; i++) {
      const { status, body } = await httpGet(server.port, '/api/presence/room%3Aworkers');
      assert.equal(status, 200);
      assert.equal(Object.keys(JSON.parse(body)).length, count);
      const cluster = await httpGet(server.port, '/api/cluster');
      assert.equal(cluster.status, 200);
      assert.ok(JSON.parse(cluster.body).node);
    }

    // Leaving on any worker reaches the others.
    clients[count - 1].socket.disconnect();
    clients[count - 2].channel.leave();
    await waitFor(() => clients.slice(0, count - 2).every((c) => c.presence.list().length === count - 2),
      'the two leaves to reach everyone');
  });

  test('a presence_update from another worker changes the meta', async () => {
    const server = await startHarkd(['--workers', '2']);
    cleanups.push(() => server.stop());
    const clients = [];
    for (let i = 0; i < 6; i++) clients.push(await joinWithPresence(server.port, 'room:update', `u${i}`));
    cleanups.push(() => clients.forEach((c) => c.socket.disconnect()));
    await waitFor(() => clients.every((c) => c.presence.list().length === 6), 'every client to list everyone');

    for (const client of clients) client.channel.push('presence_update', { meta: { status: `away-${client.socket.params().user_id}` } });
    await waitFor(() => clients.every((c) => c.presence.list((key, { metas }) => metas[0].status === `away-${key}`).every(Boolean)),
      'every update to reach every client');
  });

  test('the per-address limit counts every worker', async () => {
    const server = await startHarkd(['--workers', '2', '--max-connections-per-ip', '5']);
    cleanups.push(() => server.stop());
    const sockets = [];
    const results = [];
    for (let i = 0; i < 10; i++) {
      const ws = new WebSocket(`ws://127.0.0.1:${server.port}/socket/websocket?vsn=2.0.0`);
      sockets.push(ws);
      results.push(new Promise((resolve) => {
        ws.once('open', () => resolve('open'));
        ws.once('unexpected-response', (req, res) => resolve(res.statusCode));
        ws.once('error', () => resolve('error'));
      }));
    }
    const outcomes = await Promise.all(results);
    sockets.forEach((ws) => ws.terminate());
    assert.equal(outcomes.filter((o) => o === 'open').length, 5);
    assert.equal(outcomes.filter((o) => o === 503).length, 5);
  });

  test('Connection: close API request closes promptly', async () => {
    const server = await startHarkd(['--workers', '2', '--max-connections-per-ip', '3']);
    cleanups.push(() => server.stop());
    // About half of these land on worker 1, whose response body is built on
    // worker 0. The server must close as soon as the client closes its side,
    // not after its 2 s linger. With at most 3 connections per address,
    // lingering connections would turn the later requests into 503s.
    for (let i = 0; i < 12; i++) {
      const started = Date.now();
      const text = await new Promise((resolve, reject) => {
        const socket = net.connect(server.port, '127.0.0.1');
        let received = '';
        socket.on('data', (chunk) => { received += chunk.toString('latin1'); });
        socket.on('end', () => { socket.end(); resolve(received); });
        socket.on('error', reject);
        socket.write('GET /api/cluster HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
      });
      assert.match(text, /^HTTP\/1\.1 200 /);
      assert.ok(Date.now() - started < 1000, `request ${i} took ${Date.now() - started} ms to close`);
    }
  });

  test('a second harkd cannot share the port', async () => {
    const first = await startHarkd(['--workers', '2']);
    cleanups.push(() => first.stop());
    await assert.rejects(startHarkd(['--workers', '2', '--listen', `127.0.0.1:${first.port}`]), /exited early/);
  });
});
