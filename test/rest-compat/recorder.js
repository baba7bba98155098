'use strict';
// An HTTP relay on loopback that records what each request looked like (method, path and query,
// Content-Type, User-Agent) before passing it to the Chorus server untouched, Host header
// included, so absolute URLs in responses point back at the relay.
//
//   const rec = await startRecorder(srv.port);   // rec.baseUrl, rec.requests
//   client.sync.baseUrl = rec.baseUrl;
//   rec.requests.filter((r) => r.userAgent.includes('twilio-node/3.28.1'))
//   await rec.close();

const http = require('node:http');

async function startRecorder(targetPort, targetHost = '127.0.0.1') {
  const requests = [];
  const agent = new http.Agent({ keepAlive: true });
  const server = http.createServer((req, res) => {
    const u = new URL(req.url, 'http://relay');
    requests.push({
      method: req.method,
      path: u.pathname,
      query: u.searchParams,
      contentType: req.headers['content-type'] || '',
      userAgent: req.headers['user-agent'] || '',
    });
    const up = http.request({ host: targetHost, port: targetPort, method: req.method, path: req.url, headers: req.headers, agent }, (ur) => {
      res.writeHead(ur.statusCode, ur.headers);
      ur.pipe(res);
    });
    up.on('error', (e) => {
      res.writeHead(502, { 'content-type': 'text/plain' });
      res.end(`relay: ${e.message}`);
    });
    req.pipe(up);
  });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  const { port } = server.address();
  return {
    port,
    baseUrl: `http://127.0.0.1:${port}`,
    requests,
    close() {
      agent.destroy();
      server.closeAllConnections();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}

module.exports = { startRecorder };
