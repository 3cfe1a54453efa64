// A TCP proxy on a free loopback port that forwards every connection to an
// upstream address, and that a test can cut to simulate a network partition.
//
// cut(mode) starts a partition until heal():
// - 'refuse' (the default) destroys every open connection and closes each
//   new one at once, as a server that drops every connection would;
// - 'blackhole' destroys every open connection and accepts new ones but
//   never forwards a byte, as a dropped route would;
// - 'stall' keeps every connection open but delays the bytes sent either
//   way until heal(), as a partition that sends no reset would. New
//   connections are treated as in 'blackhole'.
// heal() forwards again: delayed bytes are delivered in order, and
// connections accepted during the cut are closed so that their clients
// reconnect.
//
// NOTE: connections are closed with destroy() (a FIN), not resetAndDestroy()
// (a RST). With resetAndDestroy() on Node 20.20 the test process sometimes
// spun in native code after the last test and never exited.
import net from 'node:net';

export class TcpProxy {
  constructor({ upstreamPort, upstreamHost = '127.0.0.1' }) {
    this.upstreamPort = upstreamPort;
    this.upstreamHost = upstreamHost;
    this.mode = 'open';
    this.pairs = new Set();
    this.blackholedClients = new Set();
    this.stats = { accepted: 0, forwarded: 0, refused: 0, blackholed: 0 };
    this.server = net.createServer((client) => this.accept(client));
    this.port = 0;
  }

  listen() {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(0, '127.0.0.1', () => {
        this.port = this.server.address().port;
        resolve(this);
      });
    });
  }

  accept(client) {
    this.stats.accepted += 1;
    client.on('error', () => {});
    if (this.mode === 'refuse') {
      this.stats.refused += 1;
      client.destroy();
      return;
    }
    if (this.mode !== 'open') {
      this.stats.blackholed += 1;
      this.blackholedClients.add(client);
      client.on('close', () => this.blackholedClients.delete(client));
      // Reading and dropping keeps the client's writes from backing up, as
      // a route that loses packets would.
      client.on('data', () => {});
      return;
    }
    this.forward(client);
  }

  forward(client) {
    const upstream = net.connect({ host: this.upstreamHost, port: this.upstreamPort });
    const pair = { client, upstream, stalled: [] };
    this.pairs.add(pair);
    this.stats.forwarded += 1;

    // Either side closing or failing ends the whole connection, as one TCP
    // connection would.
    const end = () => {
      if (!this.pairs.delete(pair)) return;
      client.destroy();
      upstream.destroy();
    };
    upstream.on('error', end);
    upstream.on('close', end);
    client.on('close', end);
    client.on('error', end);
    client.on('data', (chunk) => this.relay(pair, upstream, chunk));
    upstream.on('data', (chunk) => this.relay(pair, client, chunk));
  }

  relay(pair, to, chunk) {
    if (this.mode === 'stall') pair.stalled.push([to, chunk]);
    else to.write(chunk);
  }

  // Number of connections being forwarded now.
  get connectionCount() {
    return this.pairs.size;
  }

  // Starts a partition. `mode` is 'refuse', 'blackhole' or 'stall'.
  cut(mode = 'refuse') {
    if (!['refuse', 'blackhole', 'stall'].includes(mode)) throw new Error(`unknown cut mode '${mode}'`);
    this.mode = mode;
    if (mode === 'stall') return;
    for (const pair of [...this.pairs]) {
      this.pairs.delete(pair);
      pair.client.destroy();
      pair.upstream.destroy();
    }
  }

  heal() {
    this.mode = 'open';
    for (const pair of this.pairs) {
      for (const [to, chunk] of pair.stalled.splice(0)) to.write(chunk);
    }
    for (const client of [...this.blackholedClients]) client.destroy();
    this.blackholedClients.clear();
  }

  close() {
    this.cut('refuse');
    this.heal();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}

// Starts a proxy that forwards to upstreamHost:upstreamPort and resolves
// with it once it listens. Clients connect to its `port`.
export function startTcpProxy(options) {
  return new TcpProxy(options).listen();
}
