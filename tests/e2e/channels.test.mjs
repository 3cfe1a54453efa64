// End-to-end tests of the Phoenix Channels protocol on a real harkd, driven
// by the phoenix npm client (1.8.16) and by raw WebSocket frames where the
// exact bytes on the wire matter.
import { test, describe, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { Socket } from 'phoenix';
import WebSocket from 'ws';
import { startHarkd, waitFor } from './lib/harkd.mjs';

// A WebSocket that queues every received frame as text (or a Buffer for
// binary frames), so a test can read replies in order with next().
class RawSocket {
  static open(url) {
    const ws = new WebSocket(url);
    return new Promise((resolve, reject) => {
      ws.once('open', () => resolve(new RawSocket(ws, url)));
      ws.once('error', reject);
    });
  }

  constructor(ws, url) {
    this.ws = ws;
    this.url = url;
    this.frames = [];
    this.waiters = [];
    this.closeInfo = null;
    ws.on('message', (data, isBinary) => {
      const frame = isBinary ? data : data.toString('utf8');
      const waiter = this.waiters.shift();
      if (waiter) waiter.resolve(frame);
      else this.frames.push(frame);
    });
    this.closed = new Promise((resolve) => {
      ws.on('close', (code, reason) => {
        this.closeInfo = { code, reason: reason.toString() };
        for (const waiter of this.waiters.splice(0)) {
          waiter.reject(new Error(`${this.url} closed with code ${code} while a frame was expected`));
        }
        resolve(this.closeInfo);
      });
    });
  }

  send(frame) {
    this.ws.send(typeof frame === 'string' ? frame : JSON.stringify(frame));
  }

  // Resolves with the next frame, or rejects after timeoutMs.
  next(timeoutMs = 2000) {
    if (this.frames.length > 0) return Promise.resolve(this.frames.shift());
    if (this.closeInfo) return Promise.reject(new Error(`${this.url} is closed (code ${this.closeInfo.code})`));
    return new Promise((resolve, reject) => {
      const waiter = {
        resolve: (frame) => { clearTimeout(timer); resolve(frame); },
        reject: (error) => { clearTimeout(timer); reject(error); },
      };
      const timer = setTimeout(() => {
        this.waiters.splice(this.waiters.indexOf(waiter), 1);
        reject(new Error(`no frame within ${timeoutMs} ms on ${this.url}`));
      }, timeoutMs);
      this.waiters.push(waiter);
    });
  }

  // Sends a V2 join and checks the exact ok reply.
  async join(topic, ref) {
    this.send([ref, ref, topic, 'phx_join', {}]);
    assert.equal(await this.next(), JSON.stringify([ref, ref, topic, 'phx_reply', { status: 'ok', response: {} }]));
  }

  // Sends a V2 heartbeat and checks that its reply is the very next frame.
  // The server handles one connection's frames in order, so this proves that
  // nothing was sent in reply to the frames before it.
  async expectNoReplyBefore(heartbeatRef) {
    this.send([null, heartbeatRef, 'phoenix', 'heartbeat', {}]);
    assert.equal(await this.next(), heartbeatReply(heartbeatRef));
  }

  terminate() {
    this.ws.terminate();
  }
}

// Resolves like `promise`, or rejects with `message` after timeoutMs.
function withTimeout(promise, timeoutMs, message) {
  let timer;
  const timeout = new Promise((resolve, reject) => {
    timer = setTimeout(() => reject(new Error(message)), timeoutMs);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

function heartbeatReply(ref) {
  return JSON.stringify([null, ref, 'phoenix', 'phx_reply', { status: 'ok', response: {} }]);
}

function okReply(joinRef, ref, topic) {
  return JSON.stringify([joinRef, ref, topic, 'phx_reply', { status: 'ok', response: {} }]);
}

// Performs a WebSocket upgrade request by hand and resolves with the HTTP
// status: 101 when the upgrade was accepted.
function upgradeStatus(port, path) {
  return new Promise((resolve, reject) => {
    const req = http.request({
      host: '127.0.0.1',
      port,
      path,
      agent: false,
      headers: {
        Connection: 'Upgrade',
        Upgrade: 'websocket',
        'Sec-WebSocket-Version': '13',
        'Sec-WebSocket-Key': 'dGhlIHNhbXBsZSBub25jZQ==',
      },
    });
    req.on('upgrade', (res, socket) => {
      socket.destroy();
      resolve(res.statusCode);
    });
    req.on('response', (res) => {
      res.resume();
      resolve(res.statusCode);
    });
    req.on('error', reject);
    req.end();
  });
}

// Tracks every phoenix socket and raw WebSocket a test opens, so that
// afterEach can close them and `node --test` exits promptly.
const phoenixSockets = [];
const rawSockets = [];

function openPhoenix(server, options = {}) {
  const socket = new Socket(`${server.wsUrl}/socket`, {
    transport: WebSocket,
    // Keep the client from reconnecting or rejoining behind a test's back.
    reconnectAfterMs: () => 60000,
    rejoinAfterMs: () => 60000,
    ...options,
  });
  phoenixSockets.push(socket);
  socket.connect();
  return socket;
}

async function openRaw(server, query = 'vsn=2.0.0') {
  const raw = await RawSocket.open(`${server.wsUrl}/socket/websocket${query === null ? '' : `?${query}`}`);
  rawSockets.push(raw);
  return raw;
}

// Joins `topic` and resolves with { channel, response }; rejects on an
// error reply or a timeout.
function joinChannel(socket, topic, params = {}) {
  const channel = socket.channel(topic, params);
  return new Promise((resolve, reject) => {
    channel.join(2000)
      .receive('ok', (response) => resolve({ channel, response }))
      .receive('error', (response) => reject(new Error(`join ${topic} failed: ${JSON.stringify(response)}`)))
      .receive('timeout', () => reject(new Error(`join ${topic} timed out`)));
  });
}

// Pushes an event and resolves with { status, response } for ok, error and
// timeout alike, so the caller asserts the status.
function pushEvent(channel, event, payload) {
  return new Promise((resolve) => {
    channel.push(event, payload, 2000)
      .receive('ok', (response) => resolve({ status: 'ok', response }))
      .receive('error', (response) => resolve({ status: 'error', response }))
      .receive('timeout', () => resolve({ status: 'timeout', response: null }));
  });
}

function ping(socket) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('ping got no reply within 2000 ms')), 2000);
    const pushed = socket.ping((rtt) => {
      clearTimeout(timer);
      resolve(rtt);
    });
    if (!pushed) {
      clearTimeout(timer);
      reject(new Error('ping was not sent: the socket is not connected'));
    }
  });
}

// Encodes and decodes frames as V1 JSON objects. The 1.8.16 client has no
// built-in V1 serializer, so a V1 client passes these as encode/decode.
const v1Serializer = {
  encode: (message, callback) => callback(JSON.stringify(message)),
  decode: (text, callback) => callback(JSON.parse(text)),
};

async function closeAll() {
  const closing = phoenixSockets.splice(0).map((socket) => new Promise((resolve) => socket.disconnect(resolve)));
  for (const raw of rawSockets.splice(0)) raw.terminate();
  await Promise.all(closing);
}

describe('channels', () => {
  let server;

  // Presence is off so that frames can be compared one by one; presence
  // has its own tests in presence.test.mjs.
  before(async () => {
    server = await startHarkd(['--no-presence']);
  });

  afterEach(closeAll);

  after(async () => {
    await closeAll();
    if (server) assert.deepEqual(await server.stop(), { code: 0, signal: null }, server.logs);
  });

  describe('phoenix client', () => {
    test('join and push get ok replies', async () => {
      const socket = openPhoenix(server);
      const { channel, response } = await joinChannel(socket, 'room:basic');
      assert.deepEqual(response, {});

      const reply = await pushEvent(channel, 'new_msg', { body: 'hi' });
      assert.equal(reply.status, 'ok');
      assert.deepEqual(reply.response, {});
    });

    test('broadcast reaches others, not sender', async () => {
      const topic = 'room:fanout';
      const sender = openPhoenix(server);
      const { channel: senderChannel } = await joinChannel(sender, topic);
      const senderGot = [];
      senderChannel.on('shout', (payload) => senderGot.push(payload));

      const received = [];
      for (let i = 0; i < 5; i++) {
        const socket = openPhoenix(server);
        const { channel } = await joinChannel(socket, topic);
        received.push([]);
        channel.on('shout', (payload) => received[i].push(payload));
      }

      const reply = await pushEvent(senderChannel, 'shout', { text: 'hello all', n: 1 });
      assert.equal(reply.status, 'ok');
      assert.deepEqual(reply.response, {});

      await waitFor(() => received.every((list) => list.length >= 1), 'the broadcast on all 5 receivers');
      for (const list of received) assert.deepEqual(list, [{ text: 'hello all', n: 1 }]);

      // A ping round trip on the sender's connection comes after anything
      // the server would have sent it for the push.
      await ping(sender);
      assert.deepEqual(senderGot, []);
    });

    test('broadcast skips other topics', async () => {
      const sender = openPhoenix(server);
      const { channel: senderChannel } = await joinChannel(sender, 'room:topic-a');
      const other = openPhoenix(server);
      const { channel: otherChannel } = await joinChannel(other, 'room:topic-b');
      const same = openPhoenix(server);
      const { channel: sameChannel } = await joinChannel(same, 'room:topic-a');
      const otherGot = [];
      const sameGot = [];
      otherChannel.on('shout', (payload) => otherGot.push(payload));
      sameChannel.on('shout', (payload) => sameGot.push(payload));

      assert.equal((await pushEvent(senderChannel, 'shout', { n: 7 })).status, 'ok');
      await waitFor(() => sameGot.length === 1, 'the broadcast on room:topic-a');
      await ping(other);
      assert.deepEqual(otherGot, []);
    });

    test('ping resolves with a round-trip time', async () => {
      const socket = openPhoenix(server);
      await waitFor(() => socket.isConnected(), 'the socket to open');
      const rtt = await ping(socket);
      assert.equal(typeof rtt, 'number');
      assert.ok(rtt >= 0, `round-trip time ${rtt} ms`);
      assert.ok(rtt < 2000, `round-trip time ${rtt} ms`);
    });

    test('leave gets ok and closes channel', async () => {
      const socket = openPhoenix(server);
      const { channel } = await joinChannel(socket, 'room:leave');
      const status = await new Promise((resolve) => {
        channel.leave(2000).receive('ok', () => resolve('ok')).receive('timeout', () => resolve('timeout'));
      });
      assert.equal(status, 'ok');
      assert.equal(channel.state, 'closed');
    });

    test('second channel on a topic closes first', async () => {
      const socket = openPhoenix(server);
      const { channel: first } = await joinChannel(socket, 'room:dup-client');
      let firstClosed = 0;
      first.onClose(() => { firstClosed += 1; });

      const { channel: second } = await joinChannel(socket, 'room:dup-client');
      await waitFor(() => first.state === 'closed', 'the first channel to close');
      assert.equal(firstClosed, 1);
      assert.equal(second.state, 'joined');

      // Only the second channel receives broadcasts now, and only once.
      const secondGot = [];
      const firstGot = [];
      second.on('shout', (payload) => secondGot.push(payload));
      first.on('shout', (payload) => firstGot.push(payload));
      const other = openPhoenix(server);
      const { channel: otherChannel } = await joinChannel(other, 'room:dup-client');
      assert.equal((await pushEvent(otherChannel, 'shout', { n: 1 })).status, 'ok');
      await waitFor(() => secondGot.length === 1, 'the broadcast on the second channel');
      await ping(socket);
      assert.deepEqual(secondGot, [{ n: 1 }]);
      assert.deepEqual(firstGot, []);

      assert.equal((await pushEvent(second, 'shout', { n: 2 })).status, 'ok');
    });

    test('connect params are accepted', async () => {
      // null makes the client write an empty pair, so the URL contains "&&".
      const socket = openPhoenix(server, { params: { token: 'abc', empty: null, user: { id: 5 } } });
      assert.match(socket.endPointURL(), /\?token=abc&&user%5Bid%5D=5&vsn=2\.0\.0$/);
      const { response } = await joinChannel(socket, 'room:params');
      assert.deepEqual(response, {});
    });

    test('ArrayBuffer payload arrives intact', async () => {
      const topic = 'room:array-buffer';
      const sender = openPhoenix(server);
      const { channel: senderChannel } = await joinChannel(sender, topic);
      const receiver = openPhoenix(server);
      const { channel: receiverChannel } = await joinChannel(receiver, topic);
      const got = [];
      receiverChannel.on('blob', (payload) => got.push(payload));

      const bytes = new Uint8Array([1, 2, 3, 0, 255, 128]);
      const reply = await pushEvent(senderChannel, 'blob', bytes.buffer);
      assert.equal(reply.status, 'ok');
      await waitFor(() => got.length === 1, 'the binary broadcast');
      assert.ok(got[0] instanceof ArrayBuffer, 'the payload is not an ArrayBuffer');
      assert.deepEqual([...new Uint8Array(got[0])], [...bytes]);
    });

    test('authToken subprotocol is accepted', async () => {
      const socket = openPhoenix(server, { authToken: 'secret-token' });
      const { response } = await joinChannel(socket, 'room:auth-token');
      assert.deepEqual(response, {});
      assert.equal(socket.conn.protocol, 'phoenix');
    });

    test('V1 serializer works end to end', async () => {
      const topic = 'room:v1-client';
      const v1 = openPhoenix(server, { vsn: '1.0.0', ...v1Serializer });
      assert.match(v1.endPointURL(), /vsn=1\.0\.0$/);
      const { channel: v1Channel, response } = await joinChannel(v1, topic);
      assert.deepEqual(response, {});
      const v1Got = [];
      v1Channel.on('shout', (payload) => v1Got.push(payload));

      const v2 = openPhoenix(server);
      const { channel: v2Channel } = await joinChannel(v2, topic);
      const v2Got = [];
      v2Channel.on('shout', (payload) => v2Got.push(payload));

      assert.equal((await pushEvent(v2Channel, 'shout', { from: 'v2' })).status, 'ok');
      await waitFor(() => v1Got.length === 1, 'the V2 broadcast on the V1 client');
      assert.deepEqual(v1Got, [{ from: 'v2' }]);

      const reply = await pushEvent(v1Channel, 'shout', { from: 'v1' });
      assert.equal(reply.status, 'ok');
      assert.deepEqual(reply.response, {});
      await waitFor(() => v2Got.length === 1, 'the V1 broadcast on the V2 client');
      assert.deepEqual(v2Got, [{ from: 'v1' }]);

      assert.equal(typeof await ping(v1), 'number');
    });
  });

  describe('raw frames', () => {
    test('heartbeat gets exact reply', async () => {
      const raw = await openRaw(server);
      raw.send('[null,"1","phoenix","heartbeat",{}]');
      assert.equal(await raw.next(), '[null,"1","phoenix","phx_reply",{"status":"ok","response":{}}]');
    });

    test('push to unjoined topic gets error', async () => {
      const raw = await openRaw(server);
      raw.send('["5","6","room:never","new_msg",{"body":"x"}]');
      assert.equal(await raw.next(),
        '[null,"6","room:never","phx_reply",{"status":"error","response":{"reason":"unmatched topic"}}]');
    });

    test('leave of unjoined topic gets ok', async () => {
      const raw = await openRaw(server);
      raw.send('["5","6","room:never","phx_leave",{}]');
      assert.equal(await raw.next(), okReply('5', '6', 'room:never'));
      await raw.expectNoReplyBefore('7');
    });

    test('join, leave, then push is unmatched', async () => {
      const raw = await openRaw(server);
      await raw.join('room:raw-leave', '1');

      raw.send('["1","2","room:raw-leave","phx_leave",{}]');
      assert.equal(await raw.next(), okReply('1', '2', 'room:raw-leave'));
      assert.equal(await raw.next(), '["1","1","room:raw-leave","phx_close",{}]');

      raw.send('["1","3","room:raw-leave","new_msg",{}]');
      assert.equal(await raw.next(),
        '[null,"3","room:raw-leave","phx_reply",{"status":"error","response":{"reason":"unmatched topic"}}]');
    });

    test('duplicate join closes old join_ref', async () => {
      const raw = await openRaw(server);
      await raw.join('room:dup', '1');

      raw.send('["3","3","room:dup","phx_join",{}]');
      assert.equal(await raw.next(), okReply('3', '3', 'room:dup'));
      assert.equal(await raw.next(), '["1","1","room:dup","phx_close",{}]');

      // The new join is the live one.
      raw.send('["3","4","room:dup","new_msg",{}]');
      assert.equal(await raw.next(), okReply('3', '4', 'room:dup'));
    });

    test('stale join_ref is dropped', async () => {
      const topic = 'room:stale';
      const pusher = await openRaw(server);
      const listener = await openRaw(server);
      await listener.join(topic, '1');
      await pusher.join(topic, '1');
      pusher.send(['3', '3', topic, 'phx_join', {}]);
      assert.equal(await pusher.next(), okReply('3', '3', topic));
      assert.equal(await pusher.next(), JSON.stringify(['1', '1', topic, 'phx_close', {}]));

      // A push and a leave with the old join_ref get no reply and no broadcast.
      pusher.send(['1', '5', topic, 'shout', { n: 1 }]);
      pusher.send(['1', '6', topic, 'phx_leave', {}]);
      await pusher.expectNoReplyBefore('7');

      // The current join_ref works, and its broadcast is the first frame the
      // listener gets, so the stale push was not forwarded.
      pusher.send(['3', '8', topic, 'shout', { n: 2 }]);
      assert.equal(await pusher.next(), okReply('3', '8', topic));
      assert.equal(await listener.next(), JSON.stringify([null, null, topic, 'shout', { n: 2 }]));
    });

    test('null join_ref push is accepted', async () => {
      const topic = 'room:null-join-ref';
      const pusher = await openRaw(server);
      const listener = await openRaw(server);
      await listener.join(topic, '1');
      await pusher.join(topic, '1');

      pusher.send([null, '2', topic, 'shout', { n: 3 }]);
      const reply = JSON.parse(await pusher.next());
      assert.equal(reply[1], '2');
      assert.equal(reply[2], topic);
      assert.equal(reply[3], 'phx_reply');
      assert.deepEqual(reply[4], { status: 'ok', response: {} });
      assert.equal(await listener.next(), JSON.stringify([null, null, topic, 'shout', { n: 3 }]));
    });

    test('non-object payload gets error reply', async () => {
      const topic = 'room:bad-payload';
      const pusher = await openRaw(server);
      const listener = await openRaw(server);
      await listener.join(topic, '1');
      await pusher.join(topic, '1');

      for (const [ref, payload] of [['2', '[1,2]'], ['3', '"text"'], ['4', '42'], ['5', 'null']]) {
        pusher.send(`["1","${ref}","${topic}","shout",${payload}]`);
        assert.equal(await pusher.next(),
          `["1","${ref}","${topic}","phx_reply",{"status":"error","response":{"reason":"payload must be a JSON object"}}]`,
          `reply to payload ${payload}`);
      }

      // None of them was broadcast: the first frame the listener gets is
      // this valid one.
      pusher.send(['1', '6', topic, 'shout', { ok: true }]);
      assert.equal(await pusher.next(), okReply('1', '6', topic));
      assert.equal(await listener.next(), JSON.stringify([null, null, topic, 'shout', { ok: true }]));
    });

    test('101st channel is rejected', async () => {
      const raw = await openRaw(server);
      for (let i = 0; i < 100; i++) {
        raw.send([`${i}`, `${i}`, `room:many-${i}`, 'phx_join', {}]);
      }
      for (let i = 0; i < 100; i++) {
        assert.equal(await raw.next(), okReply(`${i}`, `${i}`, `room:many-${i}`));
      }

      raw.send('["100","100","room:many-100","phx_join",{}]');
      assert.equal(await raw.next(),
        '["100","100","room:many-100","phx_reply",{"status":"error","response":{"reason":"too many channels joined"}}]');

      // A rejoin of a topic already held replaces that channel, so it is
      // not counted as a new one.
      raw.send('["101","101","room:many-0","phx_join",{}]');
      assert.equal(await raw.next(), okReply('101', '101', 'room:many-0'));
      assert.equal(await raw.next(), '["0","0","room:many-0","phx_close",{}]');

      // A leave frees a slot for the topic that was rejected.
      raw.send('["101","102","room:many-0","phx_leave",{}]');
      assert.equal(await raw.next(), okReply('101', '102', 'room:many-0'));
      assert.equal(await raw.next(), '["101","101","room:many-0","phx_close",{}]');
      await raw.join('room:many-100', '103');
    });

    test('payload bytes are forwarded as sent', async () => {
      const topic = 'room:bytes';
      const pusher = await openRaw(server);
      const listener = await openRaw(server);
      await listener.join(topic, '1');
      await pusher.join(topic, '1');

      // Valid JSON with odd spacing, escapes and raw UTF-8 that a
      // re-encoder would normalize.
      const payload = '{ "text" :\t"caf\\u00e9 \\ud83d\\ude00 \\/ \\"q\\"" ,\n "raw": "ünïcödé 😀", "n" : 1.50e+2, "list":[ 1 , {} , [] ] }';
      pusher.send(`[ "1" , "2" , "${topic}" , "shout" , ${payload} ]`);
      assert.equal(await pusher.next(), okReply('1', '2', topic));
      assert.equal(await listener.next(), `[null,null,"${topic}","shout",${payload}]`);
    });

    test('reserved event gets error', async () => {
      const topic = 'room:reserved';
      const pusher = await openRaw(server);
      const listener = await openRaw(server);
      await listener.join(topic, '1');
      await pusher.join(topic, '1');

      for (const [ref, event] of [['2', 'phx_custom'], ['3', 'phx_reply'], ['4', 'phx_close'], ['5', 'phx_error']]) {
        pusher.send(['1', ref, topic, event, {}]);
        assert.equal(await pusher.next(),
          JSON.stringify(['1', ref, topic, 'phx_reply', { status: 'error', response: { reason: 'reserved event' } }]),
          `reply to ${event}`);
      }
      pusher.send(['1', '6', topic, 'shout', {}]);
      assert.equal(await pusher.next(), okReply('1', '6', topic));
      assert.equal(await listener.next(), JSON.stringify([null, null, topic, 'shout', {}]));
    });

    test('numeric refs are echoed as numbers', async () => {
      const topic = 'room:numeric-refs';
      const raw = await openRaw(server);
      raw.send(`[1,2,"${topic}","phx_join",{}]`);
      assert.equal(await raw.next(), `[1,2,"${topic}","phx_reply",{"status":"ok","response":{}}]`);
      raw.send(`[1,3,"${topic}","shout",{}]`);
      assert.equal(await raw.next(), `[1,3,"${topic}","phx_reply",{"status":"ok","response":{}}]`);

      // Refs compare by JSON value, so the string "1" is not the number 1
      // and the push is stale.
      raw.send(`["1","4","${topic}","shout",{}]`);
      await raw.expectNoReplyBefore('5');
    });

    test('escaped refs and topics match', async () => {
      const pusher = await openRaw(server);
      const listener = await openRaw(server);
      await listener.join('room:é', '1');

      // "\u00e9" is "é" and "\u0031" is "1" once the JSON is decoded.
      pusher.send('["\\u0031","\\u0031","room:\\u00e9","phx_join",{}]');
      const joinReply = JSON.parse(await pusher.next());
      assert.deepEqual(joinReply, ['1', '1', 'room:é', 'phx_reply', { status: 'ok', response: {} }]);

      pusher.send('["1","2","room:\\u00e9","shout",{"n":1}]');
      assert.deepEqual(JSON.parse(await pusher.next()), ['1', '2', 'room:é', 'phx_reply', { status: 'ok', response: {} }]);
      assert.deepEqual(JSON.parse(await listener.next()), [null, null, 'room:é', 'shout', { n: 1 }]);
    });

    test('binary push reaches V2 as binary', async () => {
      const topic = 'room:binary';
      const pusher = await openRaw(server);
      const listener = await openRaw(server);
      await listener.join(topic, '1');
      await pusher.join(topic, '1');

      // Kind 0 push: join_ref "1", ref "2", topic, event "blob", then the
      // payload bytes, which need not be UTF-8.
      const payload = Buffer.from([0x00, 0xff, 0x7b, 0x0a, 0x80]);
      const header = Buffer.from([0, 1, 1, topic.length, 4]);
      pusher.ws.send(Buffer.concat([header, Buffer.from(`12${topic}blob`), payload]));
      assert.equal(await pusher.next(), okReply('1', '2', topic));

      // Kind 2 broadcast: topic length, event length, topic, event, payload.
      const frame = await listener.next();
      assert.ok(Buffer.isBuffer(frame), `expected a binary frame, got ${frame}`);
      const expected = Buffer.concat([Buffer.from([2, topic.length, 4]), Buffer.from(`${topic}blob`), payload]);
      assert.equal(frame.toString('hex'), expected.toString('hex'));
    });

    test('invalid frame closes the connection', async () => {
      const raw = await openRaw(server);
      raw.send('this is not json');
      const { code } = await raw.closed;
      assert.equal(code, 1007);

      // Other connections are unaffected.
      const other = await openRaw(server);
      await other.expectNoReplyBefore('1');
    });
  });

  describe('V1 raw frames', () => {
    test('V1 frames are objects without join_ref', async () => {
      const topic = 'room:v1-raw';
      const raw = await openRaw(server, 'vsn=1.0.0');
      const listener = await openRaw(server, 'vsn=1.0.0');

      raw.send({ topic, event: 'phx_join', payload: {}, ref: '1' });
      assert.deepEqual(JSON.parse(await raw.next()),
        { topic, event: 'phx_reply', payload: { status: 'ok', response: {} }, ref: '1' });
      listener.send({ topic, event: 'phx_join', payload: {}, ref: '1', join_ref: '1' });
      assert.deepEqual(JSON.parse(await listener.next()),
        { topic, event: 'phx_reply', payload: { status: 'ok', response: {} }, ref: '1' });

      raw.send({ topic, event: 'shout', payload: { n: 1 }, ref: '2' });
      assert.deepEqual(JSON.parse(await raw.next()),
        { topic, event: 'phx_reply', payload: { status: 'ok', response: {} }, ref: '2' });
      assert.deepEqual(JSON.parse(await listener.next()), { topic, event: 'shout', payload: { n: 1 }, ref: null });

      raw.send({ topic: 'phoenix', event: 'heartbeat', payload: {}, ref: '3' });
      assert.deepEqual(JSON.parse(await raw.next()),
        { topic: 'phoenix', event: 'phx_reply', payload: { status: 'ok', response: {} }, ref: '3' });

      raw.send({ topic: 'room:v1-unjoined', event: 'shout', payload: {}, ref: '4' });
      assert.deepEqual(JSON.parse(await raw.next()), {
        topic: 'room:v1-unjoined',
        event: 'phx_reply',
        payload: { status: 'error', response: { reason: 'unmatched topic' } },
        ref: '4',
      });

      raw.send({ topic, event: 'phx_leave', payload: {}, ref: '5' });
      assert.deepEqual(JSON.parse(await raw.next()),
        { topic, event: 'phx_reply', payload: { status: 'ok', response: {} }, ref: '5' });
      assert.deepEqual(JSON.parse(await raw.next()), { topic, event: 'phx_close', payload: {}, ref: '1' });
    });

    test('missing vsn means V1', async () => {
      const raw = await openRaw(server, null);
      raw.send({ topic: 'phoenix', event: 'heartbeat', payload: {}, ref: '1' });
      assert.deepEqual(JSON.parse(await raw.next()),
        { topic: 'phoenix', event: 'phx_reply', payload: { status: 'ok', response: {} }, ref: '1' });
    });

    test('V2 broadcast reaches V1 as object', async () => {
      const topic = 'room:mixed';
      const v1 = await openRaw(server, 'vsn=1.0.0');
      const v2 = await openRaw(server);
      v1.send({ topic, event: 'phx_join', payload: {}, ref: '1' });
      assert.equal(JSON.parse(await v1.next()).payload.status, 'ok');
      await v2.join(topic, '1');

      v2.send(['1', '2', topic, 'shout', { from: 'v2' }]);
      assert.equal(await v2.next(), okReply('1', '2', topic));
      assert.deepEqual(JSON.parse(await v1.next()), { topic, event: 'shout', payload: { from: 'v2' }, ref: null });
    });
  });

  describe('connect', () => {
    test('unsupported vsn gets 403', async () => {
      for (const vsn of ['3.0.0', '2.1.0', '0.9.0', 'abc', '']) {
        assert.equal(await upgradeStatus(server.port, `/socket/websocket?vsn=${vsn}`), 403, `vsn=${vsn}`);
      }
    });

    test('supported vsn values upgrade', async () => {
      for (const query of ['vsn=2.0.0', 'vsn=1.0.0', 'vsn=2.0.1', '']) {
        assert.equal(await upgradeStatus(server.port, `/socket/websocket?${query}`), 101, `query "${query}"`);
      }
    });

    test('query params and empty pairs accepted', async () => {
      for (const query of ['token=abc&vsn=2.0.0', 'token=abc&&vsn=2.0.0', '&&token=&vsn=2.0.0&', 'user%5Bid%5D=5&vsn=2.0.0']) {
        const raw = await openRaw(server, query);
        await raw.expectNoReplyBefore('1');
        raw.terminate();
      }
    });
  });
});

describe('idle timeout', () => {
  let server;

  before(async () => {
    server = await startHarkd(['--idle-timeout-ms', '500']);
  });

  afterEach(closeAll);

  after(async () => {
    await closeAll();
    if (server) assert.deepEqual(await server.stop(), { code: 0, signal: null }, server.logs);
  });

  test('silent connection is closed', async () => {
    const raw = await openRaw(server);
    const started = Date.now();
    await withTimeout(raw.closed, 3000, 'a silent connection was still open after 3000 ms');
    const elapsed = Date.now() - started;
    assert.ok(elapsed >= 400, `closed after ${elapsed} ms, before the 500 ms idle timeout`);
    assert.equal(raw.closeInfo.code, 1001);
  });

  test('idle HTTP connection is closed', async () => {
    const socket = net.connect(server.port, '127.0.0.1');
    const closed = new Promise((resolve) => socket.on('close', resolve));
    socket.on('error', () => {});
    try {
      await withTimeout(closed, 3000, 'an idle HTTP connection was still open after 3000 ms');
    } finally {
      socket.destroy();
    }
  });

  test('heartbeats keep connections open', async () => {
    const raw = await openRaw(server);
    const socket = openPhoenix(server, { heartbeatIntervalMs: 100 });
    let phoenixCloses = 0;
    socket.onClose(() => { phoenixCloses += 1; });
    await waitFor(() => socket.isConnected(), 'the phoenix socket to open');

    // Heartbeat every 100 ms for 1.5 s, three idle timeouts.
    for (let i = 1; i <= 15; i++) {
      await sleep(100);
      await raw.expectNoReplyBefore(`${i}`);
    }
    assert.equal(raw.closeInfo, null);
    assert.equal(phoenixCloses, 0);
    assert.ok(socket.isConnected());
  });
});
