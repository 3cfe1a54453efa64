// Starts a real harkd process for a test and stops it afterwards.
//
// harkd is started with `--listen 127.0.0.1:0`, so the kernel picks a free
// port; harkd logs `msg=listening addr=127.0.0.1:PORT` once it accepts
// connections, and this helper reads the port from that line.
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
export const harkdPath = process.env.HARKD || path.join(root, 'build/harkd');

// HARK_E2E_ARGS adds flags to every harkd the tests start, so a suite can
// be run again with, for example, `--workers 1`.
const extraArgs = (process.env.HARK_E2E_ARGS || '').split(/\s+/).filter(Boolean);

export async function startHarkd(args = [], { env = {}, timeoutMs = 10000 } = {}) {
  const proc = spawn(harkdPath, ['--listen', '127.0.0.1:0', ...extraArgs, ...args], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const server = { proc, logs: '', port: 0, exitCode: null, exitSignal: null };
  const exited = new Promise((resolve) => {
    proc.on('exit', (code, signal) => {
      server.exitCode = code;
      server.exitSignal = signal;
      resolve({ code, signal });
    });
  });
  server.exited = exited;
  proc.stdout.on('data', (chunk) => { server.logs += chunk; });

  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`harkd did not start in ${timeoutMs} ms:\n${server.logs}`)), timeoutMs);
    proc.stderr.on('data', (chunk) => {
      server.logs += chunk;
      const match = /msg=listening addr=[^\s:]+:(\d+)/.exec(server.logs);
      if (match && !server.port) {
        server.port = Number(match[1]);
        clearTimeout(timer);
        resolve();
      }
    });
    exited.then(({ code, signal }) => {
      clearTimeout(timer);
      reject(new Error(`harkd exited early (code ${code}, signal ${signal}):\n${server.logs}`));
    });
  });

  server.url = `http://127.0.0.1:${server.port}`;
  server.wsUrl = `ws://127.0.0.1:${server.port}`;
  // Sends SIGTERM and waits for the exit; returns { code, signal }.
  server.stop = async (signal = 'SIGTERM') => {
    if (server.exitCode === null && server.exitSignal === null) proc.kill(signal);
    return exited;
  };
  return server;
}

// Resolves once `predicate()` is true, polling every 10 ms, or rejects after
// `timeoutMs` with `what` in the message.
export async function waitFor(predicate, what, timeoutMs = 5000) {
  const deadline = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}
