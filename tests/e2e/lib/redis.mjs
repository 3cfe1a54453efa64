// Starts a real redis-server on a free loopback port for a test, and speaks
// RESP over node:net to it: one-shot commands (PING, PUBLISH, PUBSUB ...)
// and a subscriber connection that records every message it receives.
//
// The server keeps no data on disk (`--save '' --appendonly no`), so a
// restart on the same port starts empty, as a crashed Redis would.
import { spawn } from 'node:child_process';
import net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';

export const redisServerPath = process.env.REDIS_SERVER || 'redis-server';

// Resolves with a TCP port that was free on 127.0.0.1 a moment ago: the
// kernel picks it for a listener that is closed at once. Another process
// may take it before the caller binds it, so callers retry on failure.
export function freePort() {
  return new Promise((resolve, reject) => {
    const listener = net.createServer();
    listener.once('error', reject);
    listener.listen(0, '127.0.0.1', () => {
      const { port } = listener.address();
      listener.close(() => resolve(port));
    });
  });
}

// ---- RESP ----

// The error reply of a command (a RESP "-ERR ..." line).
export class RedisError extends Error {}

// Encodes a command as a RESP array of bulk strings. Arguments may be
// strings, numbers or Buffers, so binary payloads go through unchanged.
export function encodeCommand(args) {
  const parts = [Buffer.from(`*${args.length}\r\n`)];
  for (const arg of args) {
    const bytes = Buffer.isBuffer(arg) ? arg : Buffer.from(String(arg));
    parts.push(Buffer.from(`$${bytes.length}\r\n`), bytes, Buffer.from('\r\n'));
  }
  return Buffer.concat(parts);
}

// Parses one RESP2 value at `offset`. Returns { value, offset } with the
// offset after the value, or null when `buffer` does not contain the whole
// value yet. Bulk strings are Buffers, so binary payloads survive. A null
// bulk string or array is null, and an error reply is a RedisError.
export function parseReply(buffer, offset = 0) {
  const lineEnd = buffer.indexOf('\r\n', offset);
  if (lineEnd < 0) return null;
  const type = String.fromCharCode(buffer[offset]);
  const line = buffer.toString('utf8', offset + 1, lineEnd);
  const next = lineEnd + 2;

  switch (type) {
    case '+': return { value: line, offset: next };
    case '-': return { value: new RedisError(line), offset: next };
    case ':': return { value: Number(line), offset: next };
    case '$': {
      const length = Number(line);
      if (length < 0) return { value: null, offset: next };
      if (buffer.length < next + length + 2) return null;
      return { value: buffer.subarray(next, next + length), offset: next + length + 2 };
    }
    case '*': {
      const count = Number(line);
      if (count < 0) return { value: null, offset: next };
      const items = [];
      let at = next;
      for (let i = 0; i < count; i++) {
        const item = parseReply(buffer, at);
        if (!item) return null;
        items.push(item.value);
        at = item.offset;
      }
      return { value: items, offset: at };
    }
    default:
      throw new Error(`unexpected RESP type byte 0x${buffer[offset].toString(16)} in reply`);
  }
}

// Turns the Buffers of a parsed reply into UTF-8 strings, recursively.
export function replyToStrings(value) {
  if (Buffer.isBuffer(value)) return value.toString('utf8');
  if (Array.isArray(value)) return value.map(replyToStrings);
  return value;
}

// A connection that yields parsed replies in order.
class RespConnection {
  static open(port, timeoutMs) {
    return new Promise((resolve, reject) => {
      const socket = net.connect({ host: '127.0.0.1', port });
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new Error(`connecting to Redis on port ${port} timed out after ${timeoutMs} ms`));
      }, timeoutMs);
      socket.once('connect', () => {
        clearTimeout(timer);
        socket.removeAllListeners('error');
        resolve(new RespConnection(socket));
      });
      socket.once('error', (error) => {
        clearTimeout(timer);
        reject(error);
      });
    });
  }

  constructor(socket) {
    this.socket = socket;
    this.pending = Buffer.alloc(0);
    this.replies = [];
    this.waiters = [];
    this.closed = false;
    this.onPush = null;
    socket.on('data', (chunk) => this.receive(chunk));
    socket.on('error', () => {});
    socket.on('close', () => {
      this.closed = true;
      for (const waiter of this.waiters.splice(0)) waiter.reject(new Error('the Redis connection closed'));
    });
  }

  receive(chunk) {
    this.pending = Buffer.concat([this.pending, chunk]);
    for (;;) {
      const parsed = parseReply(this.pending);
      if (!parsed) break;
      this.pending = this.pending.subarray(parsed.offset);
      const waiter = this.waiters.shift();
      if (waiter) waiter.resolve(parsed.value);
      else if (this.onPush) this.onPush(parsed.value);
      else this.replies.push(parsed.value);
    }
  }

  // Sends one command and resolves with its reply. An error reply rejects
// with a RedisError.
  send(args, timeoutMs = 2000) {
    if (this.closed) return Promise.reject(new Error('the Redis connection is closed'));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        const index = this.waiters.indexOf(waiter);
        if (index >= 0) this.waiters.splice(index, 1);
        reject(new Error(`Redis ${String(args[0])} got no reply within ${timeoutMs} ms`));
      }, timeoutMs);
      const waiter = {
        resolve: (value) => {
          clearTimeout(timer);
          if (value instanceof RedisError) reject(value);
          else resolve(value);
        },
        reject: (error) => {
          clearTimeout(timer);
          reject(error);
        },
      };
      this.waiters.push(waiter);
      this.socket.write(encodeCommand(args));
    });
  }

  close() {
    this.socket.destroy();
  }
}

// Runs one command on a fresh connection to 127.0.0.1:`port` and resolves
// with its reply, bulk strings decoded as UTF-8 unless `raw` is set.
export async function redisCommand(port, args, { raw = false, timeoutMs = 2000 } = {}) {
  const connection = await RespConnection.open(port, timeoutMs);
  try {
    const reply = await connection.send(args, timeoutMs);
    return raw ? reply : replyToStrings(reply);
  } finally {
    connection.close();
  }
}

// A subscriber connection. Every message from SUBSCRIBE or PSUBSCRIBE is
// appended to `messages` as { channel, data }, with `data` a Buffer.
export class RedisSubscriber {
  static async open(port, { patterns = [], channels = [] } = {}) {
    const connection = await RespConnection.open(port, 2000);
    const subscriber = new RedisSubscriber(connection);
    // In subscribed mode every reply is pushed, confirmations included, so
    // they are counted here rather than matched to commands.
    connection.onPush = (value) => subscriber.push(value);
    const expected = patterns.length + channels.length;
    if (patterns.length > 0) connection.socket.write(encodeCommand(['PSUBSCRIBE', ...patterns]));
    if (channels.length > 0) connection.socket.write(encodeCommand(['SUBSCRIBE', ...channels]));
    const deadline = Date.now() + 2000;
    while (subscriber.confirmed < expected) {
      if (Date.now() > deadline || connection.closed) {
        connection.close();
        throw new Error(`Redis confirmed ${subscriber.confirmed} of ${expected} subscriptions`);
      }
      await sleep(5);
    }
    return subscriber;
  }

  constructor(connection) {
    this.connection = connection;
    this.messages = [];
    this.confirmed = 0;
  }

  push(value) {
    if (!Array.isArray(value)) return;
    const kind = replyToStrings(value[0]);
    if (kind === 'subscribe' || kind === 'psubscribe') this.confirmed += 1;
    if (kind === 'message') this.messages.push({ channel: replyToStrings(value[1]), data: value[2] });
    if (kind === 'pmessage') this.messages.push({ channel: replyToStrings(value[2]), data: value[3] });
  }

  close() {
    this.connection.close();
  }
}

// ---- redis-server ----

// Resolves once the server on `port` replies +PONG to PING, or rejects
// after timeoutMs or as soon as `proc` exits.
async function waitForPong(port, proc, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  let lastError = null;
  while (Date.now() < deadline) {
    if (proc.exitCode !== null || proc.signalCode !== null) {
      throw new Error(`redis-server exited (code ${proc.exitCode}, signal ${proc.signalCode})`);
    }
    try {
      if (await redisCommand(port, ['PING'], { timeoutMs: 500 }) === 'PONG') return;
    } catch (error) {
      lastError = error;
    }
    await sleep(20);
  }
  throw new Error(`redis-server on port ${port} got no reply to PING within ${timeoutMs} ms: ${lastError}`);
}

function spawnRedis(port) {
  const proc = spawn(redisServerPath, [
    '--port', String(port),
    '--bind', '127.0.0.1',
    '--save', '',
    '--appendonly', 'no',
  ], { stdio: ['ignore', 'pipe', 'pipe'] });
  const run = { proc, logs: '' };
  proc.stdout.on('data', (chunk) => { run.logs += chunk; });
  proc.stderr.on('data', (chunk) => { run.logs += chunk; });
  run.exited = new Promise((resolve) => {
    proc.on('exit', (code, signal) => resolve({ code, signal }));
  });
  return run;
}

// A redis-server process the test controls. `url` is what harkd's
// --cluster takes.
export class RedisServer {
  constructor(port) {
    this.port = port;
    this.url = `redis://127.0.0.1:${port}`;
    this.run = null;
    this.logs = '';
  }

  get running() {
    return this.run !== null && this.run.proc.exitCode === null && this.run.proc.signalCode === null;
  }

  async start(timeoutMs = 5000) {
    if (this.running) throw new Error(`redis-server on port ${this.port} is already running`);
    this.run = spawnRedis(this.port);
    try {
      await waitForPong(this.port, this.run.proc, timeoutMs);
    } catch (error) {
      this.run.proc.kill('SIGKILL');
      await this.run.exited;
      this.logs += this.run.logs;
      throw new Error(`${error.message}\n${this.run.logs}`);
    }
  }

  // Stops the server with SIGTERM (or `signal`) and resolves with
  // { code, signal } once it has exited.
  async stop(signal = 'SIGTERM') {
    if (!this.run) return { code: null, signal: null };
    if (this.running) this.run.proc.kill(signal);
    const result = await this.run.exited;
    this.logs += this.run.logs;
    return result;
  }

  // Stops the server and starts a new one on the same port. The new one is
  // empty and has no subscribers, as after a crash.
  async restart() {
    await this.stop();
    await this.start();
  }

  command(args, options) {
    return redisCommand(this.port, args, options);
  }

  subscribe(options) {
    return RedisSubscriber.open(this.port, options);
  }
}

// Starts redis-server on a free port (or on `port`) and resolves with a
// RedisServer once it replies to PING. A port picked here may be taken by
// another process before redis-server binds it, so that case is retried.
export async function startRedis({ port } = {}) {
  const attempts = port === undefined ? 3 : 1;
  let lastError = null;
  for (let i = 0; i < attempts; i++) {
    const server = new RedisServer(port ?? await freePort());
    try {
      await server.start();
      return server;
    } catch (error) {
      lastError = error;
    }
  }
  throw lastError;
}
