// End-to-end tests of harkd's limits against abusive clients. They cover the
// output limit for sockets that stop reading, the linger deadline of a closing
// socket, the request timeout (408) and the connection caps (503). They also
// cover HTTP edge cases: an upgrade on a plain path, Expect: 100-continue,
// absolute-form targets and invalid broadcast bodies. The last ones check the
// rate limit on log lines that clients cause, and a shutdown while clients are
// still sending. Attacks use raw TCP sockets, so the test controls the exact
// bytes. After every test a well-behaved client from the `ws` package must
// still get heartbeat replies.
import { test, describe, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import WebSocket from 'ws';
import { startHarkd, waitFor } from './lib/harkd.mjs';

const SOCKET_PATH = '/socket/websocket?vsn=2.0.0';
// Generous, because a sanitizer build on a busy machine can be slow to reply.
const TIMEOUT_MS = 5000;
const SMALL_OUTPUT_LIMIT = 65536;
// harkd's defaults for --max-output-bytes and the linger of a closing socket.
const DEFAULT_OUTPUT_LIMIT = 16 * 1024 * 1024;
const LINGER_MS = 2000;
const CLIENT_LOG_LINES_PER_SECOND = 50;
const OP = { text: 0x1, ping: 0x9 };

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function heartbeatFrame(ref) {
  return `[null,"${ref}","phoenix","heartbeat",{}]`;
}

function heartbeatReply(ref) {
  return `[null,"${ref}","phoenix","phx_reply",{"status":"ok","response":{}}]`;
}

// Builds one masked client frame with a payload under 126 bytes.
function maskedFrame(opcode, payload = Buffer.alloc(0)) {
  const body = Buffer.from(payload);
  assert.ok(body.length < 126, 'maskedFrame only builds the 7-bit length form');
  const mask = crypto.randomBytes(4);
  for (let i = 0; i < body.length; i++) body[i] ^= mask[i & 3];
  return Buffer.concat([Buffer.from([0x80 | opcode, 0x80 | body.length]), mask, body]);
}

// Returns `count` copies of `frame` in one buffer, so a flood is written in
// large chunks.
function repeatFrame(frame, count) {
  return Buffer.concat(Array(count).fill(frame));
}

// The end of harkd's output, for assertion messages.
function logTail(server, chars = 4000) {
  return server.logs.slice(-chars);
}

// Reads a field of /proc/PID/status, such as VmRSS or VmHWM, in bytes.
function procStatusBytes(pid, field) {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const match = new RegExp(`^${field}:\\s+(\\d+) kB$`, 'm').exec(status);
  assert.ok(match, `no ${field} in /proc/${pid}/status`);
  return Number(match[1]) * 1024;
}

// Returns the log lines with `msg=<msg>`, and for `conn` only that
// connection's lines, each as { time, text }.
function logLines(server, msg, conn) {
  const connField = conn === undefined ? '' : ` conn=${conn}(?= |$)`;
  const pattern = new RegExp(`^(\\S+) level=\\w+ msg=${msg}${connField}.*$`, 'gm');
  return [...server.logs.matchAll(pattern)].map((match) => ({ time: Date.parse(match[1]), text: match[0] }));
}

// Waits for the `connection_opened` line (debug level) of the connection
// whose client port is `localPort`, looking only at output after `logOffset`,
// and returns harkd's connection id.
async function connectionId(server, localPort, logOffset, localAddress = '127.0.0.1') {
  const peer = `${localAddress.replaceAll('.', '\\.')}:${localPort}`;
  const pattern = new RegExp(`msg=connection_opened conn=(\\d+) peer=${peer}(?= |$)`, 'm');
  await waitFor(() => pattern.test(server.logs.slice(logOffset)), `connection_opened for ${peer}`);
  return Number(pattern.exec(server.logs.slice(logOffset))[1]);
}

// A client on a raw TCP socket. Received bytes pile up in `buffer`, and the
// read helpers wait until a whole HTTP response is there.
class RawClient {
  static connect(port, { localAddress } = {}) {
    return new Promise((resolve, reject) => {
      const socket = net.connect({ port, host: '127.0.0.1', localAddress });
      socket.once('connect', () => resolve(new RawClient(socket)));
      socket.once('error', reject);
    });
  }

  constructor(socket) {
    this.socket = socket;
    // Kept, because a closed socket no longer reports it.
    this.localPort = socket.localPort;
    this.buffer = Buffer.alloc(0);
    this.isClosed = false;
    this.wakeups = [];
    socket.on('data', (chunk) => {
      this.buffer = Buffer.concat([this.buffer, chunk]);
      this.wake();
    });
    // harkd may reset a connection that it closes with our bytes unread, so
    // write and reset errors count as a close, not a failure.
    socket.on('error', () => {});
    this.closed = new Promise((resolve) => {
      socket.on('close', () => {
        this.isClosed = true;
        this.wake();
        resolve();
      });
    });
  }

  wake() {
    for (const wakeup of this.wakeups.splice(0)) wakeup();
  }

  write(bytes) {
    if (!this.socket.destroyed) this.socket.write(bytes);
  }

  destroy() {
    this.socket.destroy();
  }

  // Waits until extract() returns something other than undefined, and
  // returns that. `description` names the awaited item in errors.
  async waitFor(extract, description, timeoutMs = TIMEOUT_MS) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const result = extract();
      if (result !== undefined) return result;
      if (this.isClosed) {
        const unparsed = `${this.buffer.length} bytes unparsed: ${JSON.stringify(this.buffer.toString('latin1').slice(0, 200))}`;
        throw new Error(`connection closed while waiting for ${description} (${unparsed})`);
      }
      const remaining = deadline - Date.now();
      if (remaining <= 0) throw new Error(`timed out waiting for ${description}`);
      await new Promise((resolve) => {
        const timer = setTimeout(resolve, remaining);
        this.wakeups.push(() => { clearTimeout(timer); resolve(); });
      });
    }
  }

  // Reads an HTTP response head, and its body when it has a Content-Length.
  readResponse(timeoutMs = TIMEOUT_MS) {
    return this.waitFor(() => {
      const end = this.buffer.indexOf('\r\n\r\n');
      if (end < 0) return undefined;
      const lines = this.buffer.subarray(0, end).toString('latin1').split('\r\n');
      const status = Number(/^HTTP\/1\.1 (\d{3}) /.exec(lines[0])?.[1]);
      const headers = {};
      for (const line of lines.slice(1)) {
        const colon = line.indexOf(':');
        headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
      }
      const bodyLength = Number(headers['content-length'] ?? 0);
      if (this.buffer.length < end + 4 + bodyLength) return undefined;
      const body = this.buffer.subarray(end + 4, end + 4 + bodyLength).toString('utf8');
      this.buffer = this.buffer.subarray(end + 4 + bodyLength);
      return { status, statusLine: lines[0], headers, body };
    }, 'an HTTP response', timeoutMs);
  }

  // Resolves once the server has closed the TCP connection.
  async expectTcpClose(timeoutMs = TIMEOUT_MS) {
    let timer;
    const timeout = new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`server kept the TCP connection open for ${timeoutMs} ms`)),
                         timeoutMs);
    });
    try {
      await Promise.race([this.closed, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }
}

// Opens a raw WebSocket and checks the 101 response.
async function openRawWebSocket(port) {
  const client = await RawClient.connect(port);
  const key = crypto.randomBytes(16).toString('base64');
  client.write(`GET ${SOCKET_PATH} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\n` +
               `Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: ${key}\r\n\r\n`);
  const response = await client.readResponse();
  assert.equal(response.status, 101, response.statusLine);
  return client;
}

// Checks the status, the JSON content type and the {"error": "..."} body, and
// returns the error message.
function assertJsonError(response, status) {
  assert.equal(response.status, status, `status, body ${response.body}`);
  assert.match(response.headers['content-type'] ?? '', /^application\/json/);
  const body = JSON.parse(response.body);
  assert.deepEqual(Object.keys(body), ['error']);
  assert.equal(typeof body.error, 'string');
  assert.ok(body.error.length > 0, 'error message is empty');
  return body.error;
}

// Writes `chunk` on `socket` again and again, waiting for the socket to drain
// between writes, until `stop()` is true, the socket closes, `maxBytes` are
// written or `timeoutMs` passes. Returns the number of bytes written.
async function flood(socket, chunk, { stop, maxBytes, timeoutMs }) {
  const deadline = Date.now() + timeoutMs;
  let written = 0;
  while (written < maxBytes && !socket.destroyed && !stop() && Date.now() < deadline) {
    written += chunk.length;
    if (socket.write(chunk)) continue;

    // Wakes up at least every 50 ms, so `stop()` is checked while harkd is
    // not reading.
    await new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        socket.off('drain', done);
        socket.off('close', done);
        resolve();
      };
      const timer = setTimeout(done, 50);
      socket.once('drain', done);
      socket.once('close', done);
    });
  }
  return written;
}

// A client from the `ws` package that sends heartbeats and checks the replies.
class GoodClient {
  static open(port, options = {}) {
    const ws = new WebSocket(`ws://127.0.0.1:${port}${SOCKET_PATH}`, options);
    return new Promise((resolve, reject) => {
      ws.once('open', () => resolve(new GoodClient(ws)));
      ws.once('error', reject);
    });
  }

  constructor(ws) {
    this.ws = ws;
    this.ref = 0;
    this.messages = [];
    this.waiters = [];
    ws.on('message', (data) => {
      const waiter = this.waiters.shift();
      if (waiter) waiter(data.toString('utf8'));
      else this.messages.push(data.toString('utf8'));
    });
  }

  next(timeoutMs = TIMEOUT_MS) {
    if (this.messages.length > 0) return Promise.resolve(this.messages.shift());
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters.splice(this.waiters.indexOf(waiter), 1);
        reject(new Error(`no heartbeat reply in ${timeoutMs} ms (ws readyState ${this.ws.readyState})`));
      }, timeoutMs);
      const waiter = (message) => { clearTimeout(timer); resolve(message); };
      this.waiters.push(waiter);
    });
  }

  // Sends one heartbeat, checks the reply and returns the round trip in ms.
  async heartbeat() {
    this.ref += 1;
    assert.equal(this.ws.readyState, WebSocket.OPEN, 'the well-behaved client was disconnected');
    const started = performance.now();
    this.ws.send(heartbeatFrame(this.ref));
    assert.equal(await this.next(), heartbeatReply(this.ref));
    return performance.now() - started;
  }

  // Sends heartbeats back to back, 5 ms apart, until `stop()` is true, and
  // returns the longest round trip in ms.
  async worstHeartbeatUntil(stop) {
    let worst = 0;
    while (!stop()) {
      worst = Math.max(worst, await this.heartbeat());
      await sleep(5);
    }
    return worst;
  }

  close() {
    this.ws.terminate();
  }
}

// Starts harkd with `args` and a well-behaved client, checks after each test
// that harkd is still running and that the client still gets replies, and
// checks at the end that harkd exits with status 0 on SIGTERM.
function withServer(args, goodClientOptions = {}) {
  const context = { server: null, good: null };
  before(async () => {
    context.server = await startHarkd(args);
    context.good = await GoodClient.open(context.server.port, goodClientOptions);
    await context.good.heartbeat();
  });
  afterEach(async () => {
    assert.equal(context.server.exitCode, null, `harkd exited:\n${logTail(context.server)}`);
    assert.equal(context.server.exitSignal, null, `harkd was killed:\n${logTail(context.server)}`);
    await context.good.heartbeat();
  });
  after(async () => {
    context.good?.close();
    if (context.server) {
      assert.deepEqual(await context.server.stop(), { code: 0, signal: null }, logTail(context.server));
    }
  });
  return context;
}

// Opens a raw WebSocket that never reads, floods it with `frame` until harkd
// closes it, and checks that harkd logged slow_consumer_closed and then
// connection_closed for it. Returns the number of bytes written.
async function expectSlowConsumerClosed(server, limit, frame, { maxBytes = 64 * 1024 * 1024, timeoutMs = 8000 } = {}) {
  const logOffset = server.logs.length;
  const client = await openRawWebSocket(server.port);
  const conn = await connectionId(server, client.localPort, logOffset);
  client.socket.pause();
  try {
    const closedLogged = () => logLines(server, 'connection_closed', conn).length > 0;
    const chunk = repeatFrame(frame, Math.ceil(256 * 1024 / frame.length));
    const written = await flood(client.socket, chunk, { stop: closedLogged, maxBytes, timeoutMs });
    await waitFor(closedLogged, `connection_closed conn=${conn} after ${written} bytes of pings`, 2000);

    const overflow = logLines(server, 'slow_consumer_closed', conn);
    assert.equal(overflow.length, 1, `slow_consumer_closed conn=${conn} lines:\n${logTail(server)}`);
    assert.match(overflow[0].text, new RegExp(`limit=${limit}(?= |$)`));
    const closed = logLines(server, 'connection_closed', conn);
    assert.ok(server.logs.indexOf(overflow[0].text) < server.logs.indexOf(closed[0].text),
              'connection_closed was logged before slow_consumer_closed');
    return written;
  } finally {
    client.destroy();
  }
}

describe('output limit', () => {
  const context = withServer(['--max-output-bytes', String(SMALL_OUTPUT_LIMIT), '--log-level', 'debug']);

  test('unread 125-byte pongs close the socket', async () => {
    await expectSlowConsumerClosed(context.server, SMALL_OUTPUT_LIMIT, maskedFrame(OP.ping, crypto.randomBytes(125)));
  });

  test('unread empty pongs close the socket', async () => {
    await expectSlowConsumerClosed(context.server, SMALL_OUTPUT_LIMIT, maskedFrame(OP.ping));
  });

  test('pipelined asset requests do not stall others', async () => {
    const { server, good } = context;
    const logOffset = server.logs.length;
    const flooder = await RawClient.connect(server.port);
    flooder.socket.pause();
    const conn = await connectionId(server, flooder.localPort, logOffset);
    const closedLogged = () => logLines(server, 'connection_closed', conn).length > 0;
    let finished = false;

    // phoenix.mjs is about 58 KB, so 2000 responses would be about 116 MB.
    // The missing files at the end show whether harkd went on handling
    // requests after the output limit: each would log static_file_missing.
    const heartbeats = good.worstHeartbeatUntil(() => finished || closedLogged());
    flooder.write('GET /assets/phoenix.mjs HTTP/1.1\r\nHost: localhost\r\n\r\n'.repeat(2000) +
                  'GET /nothere.css HTTP/1.1\r\nHost: localhost\r\n\r\n'.repeat(10));
    try {
      await waitFor(closedLogged, `connection_closed conn=${conn}`, TIMEOUT_MS);
      const worst = await heartbeats;
      assert.equal(logLines(server, 'slow_consumer_closed', conn).length, 1, logTail(server));
      assert.ok(worst < 200, `the worst heartbeat round trip during the flood was ${worst.toFixed(1)} ms`);
      assert.deepEqual(logLines(server, 'static_file_missing', conn), [],
                       'harkd handled requests after the output limit');
    } finally {
      finished = true;
      flooder.destroy();
      await heartbeats.catch(() => {});
    }
  });
});

describe('output limit memory', () => {
  // The default limit of 16 MiB. Counted in payload bytes alone, it would let
  // about 8 million 2-byte pongs queue, an estimated 300 MB with their
  // allocations, before harkd closed the socket.
  const context = withServer(['--log-level', 'debug']);

  test('unread empty pongs stay under 100 MB', async () => {
    const { server } = context;
    const pid = server.proc.pid;
    const rssBefore = procStatusBytes(pid, 'VmRSS');
    const maxGrowth = 100 * 1000 * 1000;

    // Stops the flood early once the growth is over the bound, so a failing
    // build does not take the machine's memory.
    let peakGrowth = 0;
    const frame = maskedFrame(OP.ping);
    const logOffset = server.logs.length;
    const client = await openRawWebSocket(server.port);
    const conn = await connectionId(server, client.localPort, logOffset);
    client.socket.pause();
    try {
      const stop = () => {
        peakGrowth = Math.max(peakGrowth, procStatusBytes(pid, 'VmRSS') - rssBefore);
        return peakGrowth > maxGrowth || logLines(server, 'connection_closed', conn).length > 0;
      };
      const chunk = repeatFrame(frame, 64 * 1024);
      const written = await flood(client.socket, chunk, { stop, maxBytes: 128 * 1024 * 1024, timeoutMs: 15000 });
      peakGrowth = Math.max(peakGrowth, procStatusBytes(pid, 'VmHWM') - rssBefore);
      assert.ok(peakGrowth <= maxGrowth,
                `harkd's RSS grew by ${(peakGrowth / 1e6).toFixed(1)} MB after ${written} bytes of empty pings`);
      await waitFor(() => logLines(server, 'connection_closed', conn).length > 0,
                    `connection_closed conn=${conn} after ${written} bytes of empty pings`, 2000);
      const overflow = logLines(server, 'slow_consumer_closed', conn);
      assert.equal(overflow.length, 1, logTail(server));
      assert.match(overflow[0].text, new RegExp(`limit=${DEFAULT_OUTPUT_LIMIT}(?= |$)`));
    } finally {
      client.destroy();
    }
  });
});

describe('closing socket with stuck write', () => {
  // A limit far above what the test queues, so the socket is closed by the
  // protocol error and not by the output limit.
  const context = withServer(['--max-output-bytes', String(256 * 1024 * 1024), '--log-level', 'debug']);

  test('linger deadline closes it', async () => {
    const { server } = context;
    const logOffset = server.logs.length;
    const client = await openRawWebSocket(server.port);
    const conn = await connectionId(server, client.localPort, logOffset);
    client.socket.pause();
    try {
      // 24 MB of pings queue about 23 MB of pongs, far more than the kernel
      // buffers take while the client does not read, so harkd's write stays
      // stuck. The timing checks below confirm it.
      const ping = maskedFrame(OP.ping, crypto.randomBytes(125));
      const chunk = repeatFrame(ping, 2048);
      const written = await flood(client.socket, chunk, { stop: () => false, maxBytes: 24e6, timeoutMs: 10000 });
      assert.ok(written >= 24e6, `only ${written} bytes of pings were written`);

      // Opcode 3 is reserved, so harkd closes with 1002 behind the pongs.
      client.write(maskedFrame(0x3, 'x'));
      await waitFor(() => logLines(server, 'websocket_protocol_error', conn).length > 0,
                    `websocket_protocol_error conn=${conn}`, 10000);
      await waitFor(() => logLines(server, 'connection_closed', conn).length > 0,
                    `connection_closed conn=${conn} within 4 s of the protocol error`, 4000);

      const errorTime = logLines(server, 'websocket_protocol_error', conn)[0].time;
      const closedTime = logLines(server, 'connection_closed', conn)[0].time;
      assert.ok(closedTime - errorTime <= 4000, `closed ${closedTime - errorTime} ms after the protocol error`);
      // A close well before the linger deadline means the write was not
      // stuck, and then this test did not reach the deadline at all.
      assert.ok(closedTime - errorTime >= LINGER_MS - 500,
                `closed ${closedTime - errorTime} ms after the protocol error: the write was not stuck`);
      assert.equal(logLines(server, 'slow_consumer_closed', conn).length, 0, 'the output limit closed it');
    } finally {
      client.destroy();
    }
  });
});

describe('request timeout', () => {
  const timeoutMs = 500;
  const context = withServer(['--handshake-timeout-ms', String(timeoutMs)]);

  async function expectTimeout(client, started) {
    const response = await client.readResponse(2000);
    const elapsed = Date.now() - started;
    const message = assertJsonError(response, 408);
    assert.match(message, /time/);
    assert.equal(response.headers.connection, 'close');
    assert.ok(elapsed >= timeoutMs - 100, `408 came after ${elapsed} ms, before the ${timeoutMs} ms timeout`);
    await client.expectTcpClose(Math.max(2000 - (Date.now() - started), 100));
  }

  test('request sent byte by byte gets 408', async () => {
    const client = await RawClient.connect(context.server.port);
    const request = Buffer.from('GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Padding: ' + 'x'.repeat(100));
    let sent = 0;
    const started = Date.now();
    const drip = setInterval(() => {
      if (sent < request.length && !client.isClosed) client.write(request.subarray(sent, ++sent));
    }, 100);
    client.write(request.subarray(0, ++sent));
    try {
      await expectTimeout(client, started);
    } finally {
      clearInterval(drip);
      client.destroy();
    }
  });

  test('silent connection gets 408', async () => {
    const client = await RawClient.connect(context.server.port);
    try {
      await expectTimeout(client, Date.now());
    } finally {
      client.destroy();
    }
  });

  test('normal requests are not timed out', async () => {
    const client = await RawClient.connect(context.server.port);
    try {
      client.write('GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n');
      const first = await client.readResponse();
      assert.equal(first.status, 200, first.statusLine);

      // Waiting between two requests on a keep-alive connection is not an
      // unfinished request.
      await sleep(2 * timeoutMs);
      assert.equal(client.buffer.length, 0, `unexpected bytes: ${client.buffer.toString('latin1')}`);
      client.write('GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n');
      const second = await client.readResponse();
      assert.equal(second.status, 200, second.statusLine);
      assert.equal(second.body, '{"status":"ok"}');
    } finally {
      client.destroy();
    }
  });
});

// Sends GET /healthz on `client` and checks the 200.
async function expectAccepted(client, description) {
  client.write('GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n');
  const response = await client.readResponse();
  assert.equal(response.status, 200, `${description}: ${response.statusLine}`);
}

// Reads the 503 that harkd sends to a connection over a cap, checks it, and
// returns the error message.
async function expectRejected(client) {
  const response = await client.readResponse();
  const message = assertJsonError(response, 503);
  assert.equal(response.headers['retry-after'], '5');
  assert.equal(response.headers.connection, 'close');
  await client.expectTcpClose();
  return message;
}

// Destroys `client` and waits until harkd has freed its connection.
async function closeAndWait(server, client, conn) {
  client.destroy();
  await waitFor(() => logLines(server, 'connection_closed', conn).length > 0, `connection_closed conn=${conn}`);
}

describe('connection caps', () => {
  describe('--max-connections 3', () => {
    // The well-behaved client uses one of the 3 connections.
    const context = withServer(['--max-connections', '3', '--log-level', 'debug']);

    test('4th connection gets 503 until one closes', async () => {
      const { server } = context;
      const logOffset = server.logs.length;
      const clients = [];
      try {
        for (let i = 0; i < 2; i++) {
          const client = await RawClient.connect(server.port);
          clients.push(client);
          await expectAccepted(client, `connection ${i + 2}`);
        }
        const fourth = await RawClient.connect(server.port);
        clients.push(fourth);
        assert.match(await expectRejected(fourth), /too many connections/);

        const firstConn = await connectionId(server, clients[0].localPort, logOffset);
        const fourthConn = await connectionId(server, fourth.localPort, logOffset);
        await closeAndWait(server, clients[0], firstConn);
        await closeAndWait(server, fourth, fourthConn);

        const replacement = await RawClient.connect(server.port);
        clients.push(replacement);
        await expectAccepted(replacement, 'connection after one closed');
      } finally {
        for (const client of clients) client.destroy();
      }
    });
  });

  describe('--max-connections-per-ip 2', () => {
    // The well-behaved client comes from its own address, so it uses none of
    // 127.0.0.1's connections.
    const context = withServer(['--max-connections-per-ip', '2', '--log-level', 'debug'],
                               { localAddress: '127.0.0.3' });

    test('3rd connection from one address gets 503', async () => {
      const { server } = context;
      const logOffset = server.logs.length;
      const clients = [];
      try {
        for (let i = 0; i < 2; i++) {
          const client = await RawClient.connect(server.port, { localAddress: '127.0.0.1' });
          clients.push(client);
          await expectAccepted(client, `connection ${i + 1} from 127.0.0.1`);
        }
        const third = await RawClient.connect(server.port, { localAddress: '127.0.0.1' });
        clients.push(third);
        assert.match(await expectRejected(third), /too many connections from this address/);

        const other = await RawClient.connect(server.port, { localAddress: '127.0.0.2' });
        clients.push(other);
        await expectAccepted(other, 'connection from 127.0.0.2');

        const firstConn = await connectionId(server, clients[0].localPort, logOffset);
        const thirdConn = await connectionId(server, third.localPort, logOffset);
        await closeAndWait(server, clients[0], firstConn);
        await closeAndWait(server, third, thirdConn);
        const replacement = await RawClient.connect(server.port, { localAddress: '127.0.0.1' });
        clients.push(replacement);
        await expectAccepted(replacement, 'connection from 127.0.0.1 after one closed');
      } finally {
        for (const client of clients) client.destroy();
      }
    });
  });
});

// Sends one request with node:http on a new connection and resolves with
// { status, headers, body }.
function httpRequest(server, { method = 'GET', path, body, headers = {} }) {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port: server.port, method, path, headers, agent: false });
    req.on('response', (res) => {
      const chunks = [];
      res.on('data', (chunk) => chunks.push(chunk));
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers,
                                     body: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.on('error', reject);
    if (body !== undefined) {
      req.setHeader('Content-Length', Buffer.byteLength(body));
      req.write(body);
    }
    req.end();
  });
}

function postBroadcast(server, body) {
  return httpRequest(server, {
    method: 'POST',
    path: '/api/broadcast',
    body,
    headers: { 'Content-Type': 'application/json' },
  });
}

describe('http edge cases', () => {
  const context = withServer([]);

  test('h2c upgrade on healthz closes after 200', async () => {
    const client = await RawClient.connect(context.server.port);
    try {
      client.write('GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade, HTTP2-Settings\r\n' +
                   'Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n' +
                   'GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n');
      const response = await client.readResponse();
      assert.equal(response.status, 200, response.statusLine);
      assert.equal(response.headers.connection, 'close');
      assert.equal(response.body, '{"status":"ok"}');
      await client.expectTcpClose();
      assert.equal(client.buffer.toString('latin1'), '', 'the pipelined request got an answer');
    } finally {
      client.destroy();
    }
  });

  test('Expect: 100-continue gets 100 first', async () => {
    const client = await RawClient.connect(context.server.port);
    try {
      const body = JSON.stringify({ topic: 'room:continue', event: 'e', payload: { n: 1 } });
      client.write(`POST /api/broadcast HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n` +
                   `Content-Length: ${body.length}\r\nExpect: 100-continue\r\n\r\n`);
      const interim = await client.readResponse();
      assert.equal(interim.statusLine, 'HTTP/1.1 100 Continue');
      assert.deepEqual(interim.headers, {});
      assert.equal(interim.body, '');

      client.write(body);
      const response = await client.readResponse();
      assert.equal(response.status, 200, `${response.statusLine} ${response.body}`);
      assert.equal(response.body, '{"status":"ok"}');
    } finally {
      client.destroy();
    }
  });

  test('absolute-form target gets 200', async () => {
    const port = context.server.port;
    for (const target of [`http://127.0.0.1:${port}/healthz`, `http://127.0.0.1:${port}/healthz?check=1`]) {
      const client = await RawClient.connect(port);
      try {
        client.write(`GET ${target} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\n\r\n`);
        const response = await client.readResponse();
        assert.equal(response.status, 200, `GET ${target}: ${response.statusLine} ${response.body}`);
        assert.equal(response.body, '{"status":"ok"}');
      } finally {
        client.destroy();
      }
    }
  });

  test('broadcast of a phx_ event gets 400', async () => {
    for (const event of ['phx_reply', 'phx_join', 'phx_']) {
      const body = JSON.stringify({ topic: 'room:reserved', event, payload: {} });
      const message = assertJsonError(await postBroadcast(context.server, body), 400);
      assert.match(message, /phx_/, `event ${event}`);
    }
  });

  test('broadcast of invalid JSON gets 400', async () => {
    const invalid = [
      ['truncated object', '{"topic":'],
      ['invalid UTF-8', Buffer.concat([Buffer.from('{"topic":"room:'), Buffer.from([0xff]),
                                      Buffer.from('","event":"e","payload":{}}')])],
      ['trailing comma', '{"topic":"room:x","event":"e","payload":{},}'],
    ];
    for (const [name, body] of invalid) {
      const message = assertJsonError(await postBroadcast(context.server, body), 400);
      assert.match(message, /not valid JSON/, name);
    }

    // Valid JSON of the wrong shape gets its own message.
    const message = assertJsonError(await postBroadcast(context.server, '[1,2]'), 400);
    assert.match(message, /must be a JSON object/);
    assert.doesNotMatch(message, /not valid JSON/);
  });
});

describe('client log rate limit', () => {
  // A server of its own, so that no other test's lines share the window.
  const context = withServer([]);

  test('2000 missing files log at most 50 lines', async () => {
    const { server } = context;
    const count = 2000;
    const request = 'GET /nothere.css HTTP/1.1\r\nHost: localhost\r\n\r\n';
    const client = await RawClient.connect(server.port);
    try {
      client.write(request.repeat(count - 1) + request.replace('\r\n\r\n', '\r\nConnection: close\r\n\r\n'));
      await client.expectTcpClose();
      const statuses = client.buffer.toString('latin1').match(/HTTP\/1\.1 \d{3} /g) ?? [];
      assert.equal(statuses.length, count);
      assert.ok(statuses.every((status) => status === 'HTTP/1.1 404 '), 'a response was not 404');
    } finally {
      client.destroy();
    }

    const missing = logLines(server, 'static_file_missing');
    assert.ok(missing.length > 0, 'no static_file_missing line');
    const first = missing[0].time;
    const firstSecond = missing.filter((line) => line.time - first < 1000);
    assert.ok(firstSecond.length <= CLIENT_LOG_LINES_PER_SECOND,
              `${firstSecond.length} static_file_missing lines in the first second`);

    // The next window's first client error line reports what was left out.
    await sleep(Math.max(0, first + 1100 - Date.now()));
    const after = await RawClient.connect(server.port);
    try {
      after.write(request);
      assert.equal((await after.readResponse()).status, 404);
    } finally {
      after.destroy();
    }
    await waitFor(() => logLines(server, 'log_lines_suppressed').length > 0, 'a log_lines_suppressed line');

    // Every missing file is either a line or counted as suppressed.
    const suppressed = logLines(server, 'log_lines_suppressed')
      .map((line) => Number(/ count=(\d+)/.exec(line.text)?.[1]));
    assert.ok(suppressed.every((n) => n > 0), `suppressed counts ${suppressed}`);
    const lastMissing = logLines(server, 'static_file_missing').at(-1);
    const firstSuppressed = logLines(server, 'log_lines_suppressed')[0];
    assert.ok(server.logs.indexOf(firstSuppressed.text) < server.logs.indexOf(lastMissing.text),
              'log_lines_suppressed was not logged before the next window\'s first line');
    const logged = logLines(server, 'static_file_missing').length;
    assert.equal(logged + suppressed.reduce((sum, n) => sum + n, 0), count + 1,
                 `${logged} lines and suppressed counts ${suppressed}`);
  });
});

describe('shutdown while clients send', () => {
  // Opens `count` clients that each send a heartbeat every 2 ms, sends
  // SIGTERM, and returns each client's close code and harkd's exit.
  async function shutdownUnderLoad(count) {
    const server = await startHarkd([]);
    const clients = [];
    try {
      for (let i = 0; i < count; i++) {
        const ws = new WebSocket(`${server.wsUrl}${SOCKET_PATH}`);
        const client = { ws, code: null, timer: null };
        client.closed = new Promise((resolve) => ws.on('close', (code) => {
          clearInterval(client.timer);
          client.code = code;
          resolve();
        }));
        ws.on('error', () => {});
        await new Promise((resolve, reject) => { ws.once('open', resolve); ws.once('error', reject); });
        let ref = 0;
        client.timer = setInterval(() => {
          if (ws.readyState === WebSocket.OPEN) ws.send(heartbeatFrame(`${i}.${++ref}`));
        }, 2);
        clients.push(client);
      }
      await sleep(200);

      const exit = await server.stop();
      let timer;
      const timeout = new Promise((resolve) => { timer = setTimeout(resolve, TIMEOUT_MS); });
      await Promise.race([Promise.all(clients.map((client) => client.closed)), timeout]);
      clearTimeout(timer);
      return { exit, codes: clients.map((client) => client.code), logs: server.logs };
    } finally {
      for (const client of clients) {
        clearInterval(client.timer);
        client.ws.terminate();
      }
      await server.stop('SIGKILL');
    }
  }

  test('every client gets 1001, three runs', async () => {
    for (let run = 1; run <= 3; run++) {
      const { exit, codes, logs } = await shutdownUnderLoad(10);
      assert.deepEqual(codes, Array(10).fill(1001), `run ${run}: close codes`);
      assert.deepEqual(exit, { code: 0, signal: null }, `run ${run}: harkd exit\n${logs.slice(-4000)}`);
    }
  });
});
