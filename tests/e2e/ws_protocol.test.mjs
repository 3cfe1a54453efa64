// End-to-end tests of the WebSocket protocol layer (RFC 6455) of a real
// harkd: the upgrade handshake, control frames, fragmentation, and the close
// code sent for each protocol violation. Frames are written byte by byte on
// raw TCP sockets, because a WebSocket library refuses to send malformed ones.
// Beside them, a well-behaved client from the `ws` package must keep getting
// heartbeat replies after every violation.
import { test, describe, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import net from 'node:net';
import WebSocket from 'ws';
import { startHarkd } from './lib/harkd.mjs';

const SOCKET_PATH = '/socket/websocket?vsn=2.0.0';
const WS_GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';
const DEFAULT_MAX_MESSAGE = 1024 * 1024;
// Generous, because a sanitizer build on a busy machine can be slow to reply.
const TIMEOUT_MS = 5000;

const OP = { continuation: 0x0, text: 0x1, binary: 0x2, close: 0x8, ping: 0x9, pong: 0xa };

function heartbeatFrame(ref) {
  return `[null,"${ref}","phoenix","heartbeat",{}]`;
}

function heartbeatReply(ref) {
  return `[null,"${ref}","phoenix","phx_reply",{"status":"ok","response":{}}]`;
}

function acceptFor(key) {
  return crypto.createHash('sha1').update(key + WS_GUID).digest('base64');
}

// Builds one client frame. `length` overrides the declared payload length, so
// a test can send a header that announces more bytes than follow it, and
// `lengthForm` (7, 16 or 64) forces an extended length form even when a
// shorter one would do.
function buildFrame({ fin = true, rsv = 0, opcode, payload = Buffer.alloc(0), masked = true,
                      length, lengthForm } = {}) {
  const body = Buffer.isBuffer(payload) ? payload : Buffer.from(payload);
  const declared = length ?? body.length;
  let form = lengthForm;
  if (form === undefined) {
    if (declared < 126) form = 7;
    else if (declared <= 0xffff) form = 16;
    else form = 64;
  }

  const head = [(fin ? 0x80 : 0) | (rsv << 4) | opcode];
  const maskBit = masked ? 0x80 : 0;
  let extended = Buffer.alloc(0);
  if (form === 7) {
    head.push(maskBit | declared);
  } else if (form === 16) {
    head.push(maskBit | 126);
    extended = Buffer.alloc(2);
    extended.writeUInt16BE(declared);
  } else {
    head.push(maskBit | 127);
    extended = Buffer.alloc(8);
    extended.writeBigUInt64BE(BigInt(declared));
  }

  if (!masked) return Buffer.concat([Buffer.from(head), extended, body]);
  const mask = crypto.randomBytes(4);
  const masking = Buffer.from(body);
  for (let i = 0; i < masking.length; i++) masking[i] ^= mask[i & 3];
  return Buffer.concat([Buffer.from(head), extended, mask, masking]);
}

function closeBody(code, reason = Buffer.alloc(0)) {
  const body = Buffer.alloc(2);
  body.writeUInt16BE(code);
  return Buffer.concat([body, Buffer.isBuffer(reason) ? reason : Buffer.from(reason)]);
}

// A client on a raw TCP socket. Received bytes pile up in `buffer`, and the
// read helpers wait until a whole HTTP response or frame is there.
class RawClient {
  static connect(port) {
    return new Promise((resolve, reject) => {
      const socket = net.connect(port, '127.0.0.1');
      socket.once('connect', () => resolve(new RawClient(socket)));
      socket.once('error', reject);
    });
  }

  constructor(socket) {
    this.socket = socket;
    this.buffer = Buffer.alloc(0);
    this.isClosed = false;
    this.wakeups = [];
    socket.on('data', (chunk) => {
      this.buffer = Buffer.concat([this.buffer, chunk]);
      this.wake();
    });
    // The server may reset the connection when it closes with our bytes
    // unread, so write and reset errors count as a close, not a failure.
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

  sendFrame(options) {
    this.write(buildFrame(options));
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
        const unparsed = `${this.buffer.length} bytes unparsed`;
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
  readResponse() {
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
    }, 'an HTTP response');
  }

  // Reads one server frame.
  readFrame(timeoutMs = TIMEOUT_MS) {
    return this.waitFor(() => {
      const data = this.buffer;
      if (data.length < 2) return undefined;
      const masked = (data[1] & 0x80) !== 0;
      let length = data[1] & 0x7f;
      let offset = 2;
      if (length === 126) {
        if (data.length < 4) return undefined;
        length = data.readUInt16BE(2);
        offset = 4;
      } else if (length === 127) {
        if (data.length < 10) return undefined;
        length = Number(data.readBigUInt64BE(2));
        offset = 10;
      }
      if (masked) offset += 4;
      if (data.length < offset + length) return undefined;

      const frame = {
        fin: (data[0] & 0x80) !== 0,
        rsv: (data[0] >> 4) & 0x7,
        opcode: data[0] & 0x0f,
        masked,
        payload: Buffer.from(data.subarray(offset, offset + length)),
      };
      this.buffer = data.subarray(offset + length);
      return frame;
    }, 'a WebSocket frame', timeoutMs);
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

function randomKey() {
  return crypto.randomBytes(16).toString('base64');
}

// Sends an upgrade request and returns the client and the response. Headers
// given as null are left out.
async function requestUpgrade(port, { method = 'GET', path = SOCKET_PATH, headers = {} } = {}) {
  const all = {
    Host: `127.0.0.1:${port}`,
    Upgrade: 'websocket',
    Connection: 'Upgrade',
    'Sec-WebSocket-Version': '13',
    'Sec-WebSocket-Key': randomKey(),
    ...headers,
  };
  let request = `${method} ${path} HTTP/1.1\r\n`;
  for (const [name, value] of Object.entries(all)) {
    if (value !== null) request += `${name}: ${value}\r\n`;
  }
  request += '\r\n';

  const client = await RawClient.connect(port);
  client.write(request);
  const response = await client.readResponse();
  return { client, response, key: all['Sec-WebSocket-Key'] };
}

// Opens a raw WebSocket and checks the 101 response and its accept value.
async function openRaw(port) {
  const { client, response, key } = await requestUpgrade(port);
  assert.equal(response.status, 101, response.statusLine);
  assert.equal(response.headers.upgrade?.toLowerCase(), 'websocket');
  assert.equal(response.headers.connection?.toLowerCase(), 'upgrade');
  assert.equal(response.headers['sec-websocket-accept'], acceptFor(key));
  return client;
}

// Reads the server's next frame, checks that it is a close with `code` and a
// valid UTF-8 reason matching `reasonPattern` when one is given, and that the
// server then closes the TCP connection.
async function expectClose(client, code, reasonPattern) {
  const frame = await client.readFrame();
  assert.equal(frame.opcode, OP.close, `expected a close frame, got opcode ${frame.opcode}`);
  assert.equal(frame.masked, false, 'server frames must not be masked');
  assert.ok(frame.payload.length >= 2, 'close frame without a code');
  assert.equal(frame.payload.readUInt16BE(0), code);
  const reason = new TextDecoder('utf-8', { fatal: true }).decode(frame.payload.subarray(2));
  if (reasonPattern) assert.match(reason, reasonPattern);
  await client.expectTcpClose();
  return frame;
}

// Opens a raw socket, sends the frames, and expects a close with `code`.
async function violate(port, frames, code, reasonPattern) {
  const client = await openRaw(port);
  for (const frame of frames) client.sendFrame(frame);
  try {
    await expectClose(client, code, reasonPattern);
  } finally {
    client.destroy();
  }
}

// The channel layer also closes with 1007, on text that is not valid JSON, so
// the close reason is what shows that the frame layer rejected the UTF-8.
const UTF8_REASON = /UTF-8/;

// A client from the `ws` package that sends heartbeats and checks the replies.
class GoodClient {
  static open(port) {
    const ws = new WebSocket(`ws://127.0.0.1:${port}${SOCKET_PATH}`);
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

  async heartbeat() {
    this.ref += 1;
    assert.equal(this.ws.readyState, WebSocket.OPEN, 'the well-behaved client was disconnected');
    this.ws.send(heartbeatFrame(this.ref));
    assert.equal(await this.next(), heartbeatReply(this.ref));
  }

  close() {
    this.ws.terminate();
  }
}

// Starts harkd with `args` and a well-behaved client, and checks after each
// test that harkd is still running and that the client still gets replies.
function withServer(args) {
  const context = { server: null, good: null };
  before(async () => {
    context.server = await startHarkd(args);
    context.good = await GoodClient.open(context.server.port);
    await context.good.heartbeat();
  });
  afterEach(async () => {
    assert.equal(context.server.exitCode, null, `harkd exited:\n${context.server.logs}`);
    assert.equal(context.server.exitSignal, null, `harkd was killed:\n${context.server.logs}`);
    await context.good.heartbeat();
  });
  after(async () => {
    context.good?.close();
    await context.server?.stop();
  });
  return context;
}

describe('websocket handshake', () => {
  const context = withServer([]);

  test('upgrade returns 101 with the accept key', async () => {
    const client = await openRaw(context.server.port);
    client.destroy();
  });

  test('raw client gets heartbeat reply', async () => {
    const client = await openRaw(context.server.port);
    client.sendFrame({ opcode: OP.text, payload: heartbeatFrame('r1') });
    const frame = await client.readFrame();
    assert.equal(frame.opcode, OP.text);
    assert.equal(frame.fin, true);
    assert.equal(frame.masked, false);
    assert.equal(frame.payload.toString('utf8'), heartbeatReply('r1'));
    client.destroy();
  });

  test('wrong version gets 426', async () => {
    const { client, response } = await requestUpgrade(context.server.port, {
      headers: { 'Sec-WebSocket-Version': '8' },
    });
    assert.equal(response.status, 426, response.statusLine);
    assert.equal(response.headers['sec-websocket-version'], '13');
    client.destroy();
  });

  test('missing version gets 426', async () => {
    const { client, response } = await requestUpgrade(context.server.port, {
      headers: { 'Sec-WebSocket-Version': null },
    });
    assert.equal(response.status, 426, response.statusLine);
    assert.equal(response.headers['sec-websocket-version'], '13');
    client.destroy();
  });

  test('missing key gets 400', async () => {
    const { client, response } = await requestUpgrade(context.server.port, {
      headers: { 'Sec-WebSocket-Key': null },
    });
    assert.equal(response.status, 400, response.statusLine);
    client.destroy();
  });

  test('invalid keys get 400', async () => {
    const keys = [
      'dGhlIHNhbXBsZSBub25jZQ=',          // 23 characters
      'dGhlIHNhbXBsZSBub25jZQAA',         // 18 bytes
      'dGhlIHNhbXBsZSBub25jZ!==',         // not base64
      crypto.randomBytes(20).toString('base64'),
      'not a key',
    ];
    for (const key of keys) {
      const { client, response } = await requestUpgrade(context.server.port, {
        headers: { 'Sec-WebSocket-Key': key },
      });
      assert.equal(response.status, 400, `key ${JSON.stringify(key)}: ${response.statusLine}`);
      client.destroy();
    }
  });

  test('non-GET upgrade gets 400 or 405', async () => {
    const { client, response } = await requestUpgrade(context.server.port, {
      method: 'POST',
      headers: { 'Content-Length': '0' },
    });
    assert.ok([400, 405].includes(response.status), response.statusLine);
    client.destroy();
  });
});

describe('websocket control frames', () => {
  const context = withServer([]);

  test('ping gets pong with same payload', async () => {
    const client = await openRaw(context.server.port);
    const payload = crypto.randomBytes(125);
    client.sendFrame({ opcode: OP.ping, payload });
    const frame = await client.readFrame();
    assert.equal(frame.opcode, OP.pong);
    assert.equal(frame.fin, true);
    assert.equal(frame.masked, false);
    assert.deepEqual(frame.payload, payload);

    client.sendFrame({ opcode: OP.ping });
    const empty = await client.readFrame();
    assert.equal(empty.opcode, OP.pong);
    assert.equal(empty.payload.length, 0);
    client.destroy();
  });

  test('unsolicited pong gets no reply', async () => {
    const client = await openRaw(context.server.port);
    client.sendFrame({ opcode: OP.pong, payload: 'x' });
    client.sendFrame({ opcode: OP.text, payload: heartbeatFrame('after-pong') });
    const frame = await client.readFrame();
    assert.equal(frame.payload.toString('utf8'), heartbeatReply('after-pong'));
    client.destroy();
  });

  for (const code of [1000, 1001, 3000, 4999]) {
    test(`close ${code} is echoed`, async () => {
      const client = await openRaw(context.server.port);
      client.sendFrame({ opcode: OP.close, payload: closeBody(code, 'bye') });
      await expectClose(client, code);
    });
  }

  test('close without code gets empty close', async () => {
    const client = await openRaw(context.server.port);
    client.sendFrame({ opcode: OP.close });
    const frame = await client.readFrame();
    assert.equal(frame.opcode, OP.close);
    assert.equal(frame.payload.length, 0);
    await client.expectTcpClose();
  });
});

describe('websocket fragmentation', () => {
  const context = withServer([]);

  test('heartbeat in 3 fragments gets reply', async () => {
    const client = await openRaw(context.server.port);
    const text = heartbeatFrame('frag');
    client.sendFrame({ fin: false, opcode: OP.text, payload: text.slice(0, 10) });
    client.sendFrame({ fin: false, opcode: OP.continuation, payload: text.slice(10, 20) });
    client.sendFrame({ fin: true, opcode: OP.continuation, payload: text.slice(20) });
    const frame = await client.readFrame();
    assert.equal(frame.opcode, OP.text);
    assert.equal(frame.payload.toString('utf8'), heartbeatReply('frag'));
    client.destroy();
  });

  test('ping between fragments gets pong first', async () => {
    const client = await openRaw(context.server.port);
    const text = heartbeatFrame('frag-ping');
    client.sendFrame({ fin: false, opcode: OP.text, payload: text.slice(0, 5) });
    client.sendFrame({ opcode: OP.ping, payload: 'in between' });
    client.sendFrame({ fin: true, opcode: OP.continuation, payload: text.slice(5) });

    const pong = await client.readFrame();
    assert.equal(pong.opcode, OP.pong);
    assert.equal(pong.payload.toString('utf8'), 'in between');
    const reply = await client.readFrame();
    assert.equal(reply.payload.toString('utf8'), heartbeatReply('frag-ping'));
    client.destroy();
  });

  test('frames split across TCP writes', async () => {
    const client = await openRaw(context.server.port);
    const bytes = buildFrame({ opcode: OP.text, payload: heartbeatFrame('split') });
    for (const byte of bytes) {
      client.write(Buffer.from([byte]));
      await new Promise((resolve) => setImmediate(resolve));
    }
    const frame = await client.readFrame();
    assert.equal(frame.payload.toString('utf8'), heartbeatReply('split'));
    client.destroy();
  });

  test('16-bit length message gets reply', async () => {
    const client = await openRaw(context.server.port);
    // JSON allows whitespace between tokens, so padding keeps the heartbeat valid.
    const text = heartbeatFrame('long').replace('{}', `{}${' '.repeat(200)}`);
    client.sendFrame({ opcode: OP.text, payload: text });
    const frame = await client.readFrame();
    assert.equal(frame.payload.toString('utf8'), heartbeatReply('long'));
    client.destroy();
  });
});

describe('websocket protocol violations', () => {
  const context = withServer([]);
  const port = () => context.server.port;
  const text = (payload, options = {}) => ({ opcode: OP.text, payload, ...options });

  test('unmasked frame gets 1002', async () => {
    await violate(port(), [text(heartbeatFrame('x'), { masked: false })], 1002);
  });

  for (const rsv of [4, 2, 1]) {
    test(`reserved bit ${rsv} gets 1002`, async () => {
      await violate(port(), [text('x', { rsv })], 1002);
    });
  }

  test('unknown opcodes get 1002', async () => {
    for (const opcode of [0x3, 0x4, 0x5, 0x6, 0x7, 0xb, 0xc, 0xd, 0xe, 0xf]) {
      await violate(port(), [{ opcode, payload: 'x' }], 1002);
    }
  });

  test('fragmented ping gets 1002', async () => {
    await violate(port(), [{ fin: false, opcode: OP.ping, payload: 'p' }], 1002);
  });

  test('ping over 125 bytes gets 1002', async () => {
    await violate(port(), [{ opcode: OP.ping, payload: Buffer.alloc(126, 0x70) }], 1002);
  });

  test('continuation without message gets 1002', async () => {
    await violate(port(), [{ opcode: OP.continuation, payload: 'x' }], 1002);
  });

  test('new message inside fragmented one gets 1002', async () => {
    await violate(port(), [text('[null,', { fin: false }), text(heartbeatFrame('x'))], 1002);
  });

  test('non-minimal 16-bit length gets 1002', async () => {
    await violate(port(), [text('short', { lengthForm: 16 })], 1002);
  });

  test('non-minimal 64-bit length gets 1002', async () => {
    await violate(port(), [text(Buffer.alloc(200, 0x20), { lengthForm: 64 })], 1002);
  });

  test('64-bit length with top bit gets 1002', async () => {
    await violate(port(), [text('', { length: 2n ** 63n + 5n, lengthForm: 64 })], 1002);
  });

  test('invalid UTF-8 text gets 1007', async () => {
    const payload = Buffer.concat([Buffer.from('["bad '), Buffer.from([0xc0, 0xaf]), Buffer.from('"]')]);
    await violate(port(), [text(payload)], 1007, UTF8_REASON);
  });

  test('surrogate in UTF-8 text gets 1007', async () => {
    await violate(port(), [text(Buffer.from([0x22, 0xed, 0xa0, 0x80, 0x22]))], 1007, UTF8_REASON);
  });

  test('invalid UTF-8 across fragments gets 1007', async () => {
    await violate(port(), [
      text(Buffer.from([0x22, 0xe2, 0x82]), { fin: false }),
      { opcode: OP.continuation, payload: Buffer.from([0x41, 0x22]) },
    ], 1007, UTF8_REASON);
  });

  test('1-byte close body gets 1002', async () => {
    await violate(port(), [{ opcode: OP.close, payload: Buffer.from([0x03]) }], 1002);
  });

  for (const code of [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000]) {
    test(`close code ${code} gets 1002`, async () => {
      await violate(port(), [{ opcode: OP.close, payload: closeBody(code) }], 1002);
    });
  }

  test('invalid UTF-8 close reason gets 1007', async () => {
    const payload = closeBody(1000, Buffer.from([0xff]));
    await violate(port(), [{ opcode: OP.close, payload }], 1007, UTF8_REASON);
  });

  test('1 MiB + 1 message gets 1009', async () => {
    const client = await openRaw(port());
    // Only the first 64 KiB of the payload is sent. harkd closes without
    // reading the rest, so its kernel resets the connection, and a write still
    // pending then makes Node destroy the socket before it reads the close
    // frame that already arrived. 64 KiB goes out in one write.
    const payload = Buffer.alloc(64 * 1024, 0x20);
    client.sendFrame(text(payload, { length: DEFAULT_MAX_MESSAGE + 1 }));
    try {
      await expectClose(client, 1009);
    } finally {
      client.destroy();
    }
  });

  test('oversized header alone gets 1009', async () => {
    // No payload follows, so the server must decide from the header.
    await violate(port(), [text('', { length: DEFAULT_MAX_MESSAGE + 1 })], 1009);
  });

  test('1 MiB message is accepted', async () => {
    const client = await openRaw(port());
    const reply = heartbeatReply('mib');
    const base = heartbeatFrame('mib');
    const padded = base.replace('{}', `{}${' '.repeat(DEFAULT_MAX_MESSAGE - base.length)}`);
    assert.equal(padded.length, DEFAULT_MAX_MESSAGE);
    client.sendFrame(text(padded));
    const frame = await client.readFrame(2 * TIMEOUT_MS);
    assert.equal(frame.payload.toString('utf8'), reply);
    client.destroy();
  });
});

describe('websocket with --max-message-bytes 1000', () => {
  const context = withServer(['--max-message-bytes', '1000']);
  const port = () => context.server.port;

  function paddedHeartbeat(ref, length) {
    const base = heartbeatFrame(ref);
    return base.replace('{}', `{}${' '.repeat(length - base.length)}`);
  }

  test('1000-byte message is accepted', async () => {
    const client = await openRaw(port());
    client.sendFrame({ opcode: OP.text, payload: paddedHeartbeat('limit', 1000) });
    const frame = await client.readFrame();
    assert.equal(frame.payload.toString('utf8'), heartbeatReply('limit'));
    client.destroy();
  });

  test('1001-byte message gets 1009', async () => {
    await violate(port(), [{ opcode: OP.text, payload: paddedHeartbeat('over', 1001) }], 1009);
  });

  test('fragments over the limit get 1009', async () => {
    const text = paddedHeartbeat('frag-over', 1001);
    await violate(port(), [
      { fin: false, opcode: OP.text, payload: text.slice(0, 600) },
      { fin: true, opcode: OP.continuation, payload: text.slice(600) },
    ], 1009);
  });
});
