'use strict';
// A TCP relay between SDK clients and the Chorus server, so a test can cut one client's
// connection and keep it away (refuse it) while others keep writing, then let it back in.
// It relays bytes only (WebSocket frames pass through untouched).
//
//   const px = await startProxy(srv.port);   // px.port, px.wsUrl, px.baseUrl
//   srv.newClient('b', { clientOptions: { twilsock: { uri: px.wsUrl } } });
//   px.cut();        // destroy every relayed connection and refuse new ones
//   px.resume();     // accept again
//   await px.close();

const net = require('node:net');

async function startProxy(targetPort, targetHost = '127.0.0.1') {
  const conns = new Set();
  let refusing = false;
  let accepted = 0;
  let refused = 0;
  const server = net.createServer((client) => {
    if (refusing) {
      refused += 1;
      client.destroy();
      return;
    }
    accepted += 1;
    const upstream = net.connect(targetPort, targetHost);
    const pair = { client, upstream };
    conns.add(pair);
    const drop = () => {
      conns.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    client.on('error', drop);
    upstream.on('error', drop);
    client.on('close', drop);
    upstream.on('close', drop);
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  const { port } = server.address();
  return {
    port,
    baseUrl: `http://127.0.0.1:${port}`,
    wsUrl: `ws://127.0.0.1:${port}/v3/wsconnect`,
    get accepted() { return accepted; },
    get refused() { return refused; },
    get open() { return conns.size; },
    /** Drop every relayed connection (abruptly, like a network failure) and refuse new ones. */
    cut() {
      refusing = true;
      for (const { client, upstream } of conns) {
        client.resetAndDestroy ? client.resetAndDestroy() : client.destroy();
        upstream.destroy();
      }
      conns.clear();
    },
    resume() {
      refusing = false;
    },
    /**
     * Stop. { gentle: true } closes the relayed connections with a FIN even when data is unread
     * (destroying such a socket sends a reset): twilio-sync 0.5's twilsock, once shut down, has no
     * error handler left on its socket, and a reset then throws ECONNRESET out of the process.
     */
    close({ gentle = false } = {}) {
      refusing = true;
      for (const { client, upstream } of conns) {
        if (gentle) {
          client.unpipe(upstream);
          upstream.unpipe(client);
          client.resume();
          client.end();
          upstream.end();
          continue;
        }
        client.destroy();
        upstream.destroy();
      }
      conns.clear();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}

module.exports = { startProxy };
