// The interop matrix's Node cell (e2e/test-interop.sh): Node's tls module on both ends, with the
// files as a workload gets them (the agent's directory). A server requiring client certificates,
// checked against ca.crt and crl.pem; the client identity is accepted (answered its SPIFFE ID),
// the revoked one refused.
//
//   node tls_node.js SERVER_DIR CLIENT_DIR REVOKED_DIR HOSTNAME
'use strict';
const fs = require('fs');
const path = require('path');
const tls = require('tls');

const [serverDir, clientDir, revokedDir, hostname] = process.argv.slice(2);
const read = (dir, name) => fs.readFileSync(path.join(dir, name));

const serverErrors = [];
const server = tls.createServer({
  cert: read(serverDir, 'tls.crt'),
  key: read(serverDir, 'tls.key'),
  ca: read(serverDir, 'ca.crt'),
  crl: read(serverDir, 'crl.pem'),
  requestCert: true,
  // Checked below, where the reason is known (a workload logs it).
  rejectUnauthorized: false,
}, (socket) => {
  if (!socket.authorized) {
    serverErrors.push(String(socket.authorizationError));
    socket.destroy();
    return;
  }
  const uri = (socket.getPeerCertificate().subjectaltname || '')
    .split(', ').find((n) => n.startsWith('URI:')) || '';
  socket.end(uri.slice(4) + '\n');
});
server.on('tlsClientError', (err) => serverErrors.push(err.message));

function call(port, dir, keyFile) {
  const files = keyFile === 'identity.pem'
    ? { cert: read(dir, 'identity.pem'), key: read(dir, 'identity.pem') }
    : { cert: read(dir, 'tls.crt'), key: read(dir, keyFile) };
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host: '127.0.0.1', port, servername: hostname, ca: read(dir, 'ca.crt'), ...files });
    let data = '';
    socket.setTimeout(10000, () => socket.destroy(new Error('timeout')));
    socket.on('data', (d) => { data += d; });
    socket.on('end', () => resolve(data.trim()));
    socket.on('error', reject);
  });
}

server.listen(0, '127.0.0.1', async () => {
  const { port } = server.address();
  let ok = true;
  try {
    for (const keyFile of ['tls.key', 'identity.pem']) {
      const id = await call(port, clientDir, keyFile);
      console.log(`client (${keyFile}) accepted as ${id}`);
      ok = ok && id.startsWith('spiffe://');
    }
  } catch (e) {
    console.log(`client not accepted: ${e.message}`);
    ok = false;
  }
  try {
    const id = await call(port, revokedDir, 'tls.key');
    // TLS 1.3: the client may finish its side of the handshake before the refusal arrives.
    if (id.startsWith('spiffe://')) {
      console.log(`revoked client NOT refused: ${JSON.stringify(id)}`);
      ok = false;
    } else {
      console.log(`revoked client got no answer (${JSON.stringify(id)})`);
    }
  } catch (e) {
    console.log(`revoked client refused: ${e.message}`);
  }
  await new Promise((r) => setTimeout(r, 200));
  console.log(`server saw: ${serverErrors.join('; ') || 'no errors'}`);
  ok = ok && serverErrors.some((m) => /revoked/i.test(m));
  server.close();
  process.exit(ok ? 0 : 1);
});
