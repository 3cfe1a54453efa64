// End-to-end tests of harkd's command line: flags, exit statuses, the
// HARK_LISTEN variable, log lines and signal handling.
import { test, describe, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import http from 'node:http';
import net from 'node:net';
import { mkdtemp, writeFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import WebSocket from 'ws';
import { startHarkd, harkdPath, waitFor } from './lib/harkd.mjs';

// Runs harkd with `args` until it exits, or kills it after timeoutMs.
// Resolves with { code, signal, stdout, stderr }.
function runHarkd(args, { env = {}, timeoutMs = 5000 } = {}) {
  return new Promise((resolve, reject) => {
    const proc = spawn(harkdPath, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    proc.stdout.on('data', (chunk) => { stdout += chunk; });
    proc.stderr.on('data', (chunk) => { stderr += chunk; });
    const timer = setTimeout(() => proc.kill('SIGKILL'), timeoutMs);
    proc.on('error', reject);
    proc.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

// Starts harkd without the harness's --listen flag and waits for its
// listening line. Resolves with { proc, port, logs(), stop() }.
function spawnListening(args, env) {
  const proc = spawn(harkdPath, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let logs = '';
  proc.stdout.on('data', (chunk) => { logs += chunk; });
  proc.stderr.on('data', (chunk) => { logs += chunk; });
  const exited = new Promise((resolve) => proc.on('exit', (code, signal) => resolve({ code, signal })));
  const stop = async () => {
    if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGTERM');
    return exited;
  };
  return waitFor(() => /msg=listening addr=\S+/.test(logs) || proc.exitCode !== null, 'the listening log line')
    .then(() => {
      if (proc.exitCode !== null) throw new Error(`harkd exited with ${proc.exitCode}:\n${logs}`);
      // The address may be IPv6 in brackets, so the port is after the last colon.
      const port = Number(/msg=listening addr=\S*:(\d+)/.exec(logs)[1]);
      return { proc, port, logs: () => logs, stop };
    }, async (error) => {
      await stop();
      throw new Error(`${error.message}:\n${logs}`);
    });
}

// Resolves with a TCP port that was free a moment ago.
function freePort() {
  return new Promise((resolve, reject) => {
    const probe = net.createServer();
    probe.once('error', reject);
    probe.listen(0, '127.0.0.1', () => {
      const { port } = probe.address();
      probe.close(() => resolve(port));
    });
  });
}

function getStatus(port, urlPath) {
  return new Promise((resolve, reject) => {
    http.get({ host: '127.0.0.1', port, path: urlPath, agent: false }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode));
    }).on('error', reject);
  });
}

// Opens a V2 WebSocket, joins `topic` and resolves with
// { ws, closed } where `closed` resolves with the close code.
async function openJoined(port, topic, { presence = true } = {}) {
  const ws = new WebSocket(`ws://127.0.0.1:${port}/socket/websocket?vsn=2.0.0`);
  const closed = new Promise((resolve) => ws.on('close', (code) => resolve(code)));
  await new Promise((resolve, reject) => { ws.once('open', resolve); ws.once('error', reject); });
  // Presence is on for every topic by default, so the reply is followed by
  // presence_state, and then by the socket's own presence_diff. Both may come
  // from another worker thread later than the reply; tests that read frames
  // after the join turn presence off.
  const expected = presence ? 2 : 1;
  const frames = [];
  const joined = new Promise((resolve) => {
    const onMessage = (data) => {
      frames.push(data.toString('utf8'));
      if (frames.length === expected) {
        ws.off('message', onMessage);
        resolve();
      }
    };
    ws.on('message', onMessage);
  });
  ws.send(JSON.stringify(['1', '1', topic, 'phx_join', {}]));
  await joined;
  assert.equal(frames[0], JSON.stringify(['1', '1', topic, 'phx_reply', { status: 'ok', response: {} }]));
  if (presence) assert.equal(frames[1], JSON.stringify(['1', null, topic, 'presence_state', {}]));
  return { ws, closed };
}

function postStatus(port, urlPath, body) {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path: urlPath, method: 'POST', agent: false }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode));
    });
    req.on('error', reject);
    req.setHeader('Content-Length', Buffer.byteLength(body));
    req.end(body);
  });
}

// Sends one text frame and resolves with the next frame as text.
function exchange(ws, frame) {
  const reply = new Promise((resolve) => ws.once('message', (data) => resolve(data.toString('utf8'))));
  ws.send(frame);
  return reply;
}

const flags = ['--listen', '--max-message-bytes', '--idle-timeout-ms', '--max-channels', '--max-body-bytes', '--log-level', '--web-root', '--phoenix-js'];

describe('harkd command line', () => {
  const cleanups = [];

  after(async () => {
    for (const cleanup of cleanups.splice(0)) await cleanup();
  });

  test('--help prints usage and exits 0', async () => {
    const { code, stdout } = await runHarkd(['--help']);
    assert.equal(code, 0);
    assert.match(stdout, /usage/i);
    for (const flag of [...flags, '--help', '--version']) assert.ok(stdout.includes(flag), `--help does not mention ${flag}`);
    assert.ok(stdout.includes('HARK_LISTEN'), '--help does not mention HARK_LISTEN');
  });

  test('--version prints the version', async () => {
    const { code, stdout } = await runHarkd(['--version']);
    assert.equal(code, 0);
    assert.match(stdout, /\b0\.1\.0\b/);
    assert.equal(stdout.trim().split('\n').length, 1, `more than one line: ${stdout}`);
  });

  test('bad flags exit 2 with a message', async () => {
    const cases = [
      [['--bogus'], '--bogus'],
      [['--listen', 'nonsense'], 'nonsense'],
      [['--listen', '127.0.0.1:99999'], '99999'],
      [['--listen', '127.0.0.1:'], '127.0.0.1:'],
      [['--max-message-bytes', '-5'], '-5'],
      [['--max-message-bytes', '12abc'], '12abc'],
      [['--idle-timeout-ms', 'soon'], 'soon'],
      [['--max-channels', 'many'], 'many'],
      [['--max-body-bytes', '1k'], '1k'],
      [['--log-level', 'loud'], 'loud'],
      [['--workers', '0'], '--workers'],
      [['--workers', '65'], '65'],
      [['--workers', 'all'], 'all'],
      [['--listen'], '--listen'],
    ];
    for (const [args, mention] of cases) {
      const { code, stdout, stderr } = await runHarkd(args);
      const commandLine = `harkd ${args.join(' ')}`;
      assert.equal(code, 2, `${commandLine}: exit status, stderr ${stderr}`);
      assert.ok(stderr.includes(mention), `${commandLine}: stderr does not mention ${mention}: ${stderr}`);
      assert.equal(stdout, '', `${commandLine}: wrote to stdout`);
    }
  });

  test('port in use exits 1', async () => {
    const first = await startHarkd();
    cleanups.push(() => first.stop());
    const { code, stderr } = await runHarkd(['--listen', `127.0.0.1:${first.port}`]);
    assert.equal(code, 1, `stderr: ${stderr}`);
    const lines = stderr.trim().split('\n');
    assert.equal(lines.length, 1, `expected one line, got: ${stderr}`);
    assert.ok(lines[0].includes(String(first.port)), `the error does not name port ${first.port}: ${lines[0]}`);
    assert.equal(await getStatus(first.port, '/healthz'), 200);
  });

  test('listening line has the log format', async () => {
    const server = await startHarkd();
    cleanups.push(() => server.stop());
    assert.match(server.logs, /^\S+ level=info msg=listening addr=127\.0\.0\.1:\d+/m);
  });

  test('SIGTERM closes websockets with 1001', async () => {
    const server = await startHarkd();
    cleanups.push(() => server.stop());
    const clients = [await openJoined(server.port, 'room:a'), await openJoined(server.port, 'room:b')];
    const { code, signal } = await server.stop('SIGTERM');
    assert.equal(signal, null);
    assert.equal(code, 0);
    for (const client of clients) assert.equal(await client.closed, 1001);
  });

  test('SIGINT exits 0', async () => {
    const server = await startHarkd();
    cleanups.push(() => server.stop());
    const client = await openJoined(server.port, 'room:a');
    const { code, signal } = await server.stop('SIGINT');
    assert.equal(signal, null);
    assert.equal(code, 0);
    assert.equal(await client.closed, 1001);
  });

  test('HARK_LISTEN sets the address', async () => {
    const port = await freePort();
    const server = await spawnListening([], { HARK_LISTEN: `127.0.0.1:${port}` });
    cleanups.push(server.stop);
    assert.equal(server.port, port);
    assert.equal(await getStatus(port, '/healthz'), 200);
  });

  test('--listen overrides HARK_LISTEN', async () => {
    const envPort = await freePort();
    const server = await spawnListening(['--listen', '127.0.0.1:0'], { HARK_LISTEN: `127.0.0.1:${envPort}` });
    cleanups.push(server.stop);
    assert.notEqual(server.port, envPort);
    assert.equal(await getStatus(server.port, '/healthz'), 200);
  });

  test('--max-channels limits joins', async () => {
    const server = await startHarkd(['--max-channels', '2', '--no-presence']);
    cleanups.push(() => server.stop());
    const { ws } = await openJoined(server.port, 'room:a', { presence: false });
    try {
      const second = await exchange(ws, '["2","2","room:b","phx_join",{}]');
      assert.equal(second, '["2","2","room:b","phx_reply",{"status":"ok","response":{}}]');
      const third = await exchange(ws, '["3","3","room:c","phx_join",{}]');
      assert.equal(third, '["3","3","room:c","phx_reply",{"status":"error","response":{"reason":"too many channels joined"}}]');
    } finally {
      ws.terminate();
    }
  });

  test('--max-message-bytes closes with 1009', async () => {
    const server = await startHarkd(['--max-message-bytes', '200', '--no-presence']);
    cleanups.push(() => server.stop());
    const { ws, closed } = await openJoined(server.port, 'room:a', { presence: false });
    const small = await exchange(ws, `["1","2","room:a","shout",{"text":"${'x'.repeat(100)}"}]`);
    assert.equal(small, '["1","2","room:a","phx_reply",{"status":"ok","response":{}}]');
    ws.send(`["1","3","room:a","shout",{"text":"${'x'.repeat(300)}"}]`);
    assert.equal(await closed, 1009);
  });

  test('--max-body-bytes limits the API', async () => {
    const server = await startHarkd(['--max-body-bytes', '100']);
    cleanups.push(() => server.stop());
    const small = JSON.stringify({ topic: 'room:a', event: 'e', payload: {} });
    assert.equal(await postStatus(server.port, '/api/broadcast', small), 200);
    const large = JSON.stringify({ topic: 'room:a', event: 'e', payload: { text: 'x'.repeat(200) } });
    assert.equal(await postStatus(server.port, '/api/broadcast', large), 413);
  });

  test('--listen accepts IPv6 loopback', async () => {
    const server = await spawnListening(['--listen', '[::1]:0']);
    cleanups.push(server.stop);
    const status = await new Promise((resolve, reject) => {
      http.get({ host: '::1', port: server.port, path: '/healthz', agent: false }, (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode));
      }).on('error', reject);
    });
    assert.equal(status, 200);

    // The logged address is written the way --listen takes it.
    assert.match(server.logs(), /msg=listening addr=\[::1\]:\d+ /);
  });

  test('--phoenix-js serves another file', async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'hark-js-'));
    cleanups.push(() => rm(dir, { recursive: true, force: true }));
    const file = path.join(dir, 'client.mjs');
    await writeFile(file, 'export const marker = 42;\n');
    const server = await startHarkd(['--phoenix-js', file]);
    cleanups.push(() => server.stop());
    const body = await new Promise((resolve, reject) => {
      http.get(`${server.url}/assets/phoenix.mjs`, { agent: false }, (res) => {
        let text = '';
        res.on('data', (chunk) => { text += chunk; });
        res.on('end', () => resolve(text));
      }).on('error', reject);
    });
    assert.equal(body, 'export const marker = 42;\n');
  });

  test('--web-root serves another folder', async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'hark-web-'));
    cleanups.push(() => rm(dir, { recursive: true, force: true }));
    await writeFile(path.join(dir, 'index.html'), '<!doctype html><title>other root</title>\n');
    const server = await startHarkd(['--web-root', dir]);
    cleanups.push(() => server.stop());
    const body = await new Promise((resolve, reject) => {
      http.get(`${server.url}/`, (res) => {
        let text = '';
        res.on('data', (chunk) => { text += chunk; });
        res.on('end', () => resolve(text));
      }).on('error', reject);
    });
    assert.equal(body, '<!doctype html><title>other root</title>\n');
  });
});
