#!/usr/bin/env python3
"""The interop matrix's Python cells (e2e/test-interop.sh), with the files as a workload gets them
(the agent's directory: tls.crt, tls.key, ca.crt, crl.pem, identity.pem).

  tls_python.py ssl SERVER_DIR CLIENT_DIR REVOKED_DIR HOSTNAME
      Python's ssl module on both ends: a server requiring client certificates, checked against
      ca.crt and crl.pem; the client identity is accepted (the server answers its SPIFFE ID), the
      revoked one refused.
  tls_python.py pyca DIR REVOKED_DIR
      pyca/cryptography reads every file: the key (tls.key and identity.pem) matches the
      certificate, the chain verifies against ca.crt, and crl.pem lists the revoked serial.
  tls_python.py listed CRL_PEM CERT...
      Every certificate's serial is on a CRL of CRL_PEM (exit 1 otherwise).
"""
import os
import socket
import ssl
import sys
import threading
import time


def server_context(d):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(os.path.join(d, "tls.crt"), os.path.join(d, "tls.key"))
    ctx.load_verify_locations(cafile=os.path.join(d, "ca.crt"))
    ctx.load_verify_locations(cafile=os.path.join(d, "crl.pem"))
    ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def client_context(d, key_file="tls.key"):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if key_file == "identity.pem":
        ctx.load_cert_chain(os.path.join(d, "identity.pem"))
    else:
        ctx.load_cert_chain(os.path.join(d, "tls.crt"), os.path.join(d, key_file))
    ctx.load_verify_locations(cafile=os.path.join(d, "ca.crt"))
    return ctx


def spiffe_id(cert):
    return next((v for k, v in cert.get("subjectAltName", ()) if k == "URI"), "")


def serve(listener, ctx, errors):
    while True:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        try:
            with ctx.wrap_socket(conn, server_side=True) as tls:
                tls.sendall((spiffe_id(tls.getpeercert()) + "\n").encode())
        except (ssl.SSLError, OSError) as e:
            errors.append(str(e))


def call(port, ctx, hostname):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname=hostname) as tls:
            return tls.recv(4096).decode().strip()


def ssl_cell(server_dir, client_dir, revoked_dir, hostname):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    errors = []
    threading.Thread(target=serve, args=(listener, server_context(server_dir), errors), daemon=True).start()
    ok = True
    for key_file in ("tls.key", "identity.pem"):
        answer = call(port, client_context(client_dir, key_file), hostname)
        print(f"client ({key_file}) accepted as {answer}")
        ok &= answer.startswith("spiffe://")
    try:
        answer = call(port, client_context(revoked_dir), hostname)
        # TLS 1.3: the client may finish its side of the handshake before the refusal arrives.
        if answer.startswith("spiffe://"):
            print(f"revoked client NOT refused: {answer!r}")
            ok = False
        else:
            print(f"revoked client got no answer ({answer!r})")
    except (ssl.SSLError, OSError) as e:
        print(f"revoked client refused: {e}")
    deadline = time.monotonic() + 5
    while not errors and time.monotonic() < deadline:
        time.sleep(0.05)
    listener.close()
    print("server saw:", "; ".join(errors) or "no errors")
    ok &= any("revoked" in e for e in errors)
    return ok


def pyca_cell(d, revoked_dir):
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    def read(name, base=d):
        with open(os.path.join(base, name), "rb") as f:
            return f.read()

    chain = x509.load_pem_x509_certificates(read("tls.crt"))
    roots = x509.load_pem_x509_certificates(read("ca.crt"))
    spki = lambda k: k.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    for source in ("tls.key", "identity.pem"):
        key = serialization.load_pem_private_key(read(source), password=None)
        assert spki(key.public_key()) == spki(chain[0].public_key()), f"{source}: not the certificate's key"
        print(f"{source}: {type(key).__name__} matches the certificate")
    from cryptography.x509.verification import PolicyBuilder, Store
    # The client verifier (the identities are client certificates here).
    verifier = PolicyBuilder().store(Store(roots)).build_client_verifier()
    verified = verifier.verify(chain[0], chain[1:])
    print("chain verifies against ca.crt:", [str(n.value) for n in verified.subjects])
    revoked = x509.load_pem_x509_certificates(read("tls.crt", revoked_dir))[0]
    crls = crls_of(read("crl.pem"))
    listed = [c for c in crls if c.get_revoked_certificate_by_serial_number(revoked.serial_number)]
    signed = [c for c in listed if any(c.is_signature_valid(r.public_key()) for r in roots)]
    print(f"crl.pem: {len(crls)} CRL(s); the revoked serial listed by {len(signed)} with a valid signature")
    return bool(signed)


def crls_of(pem):
    from cryptography import x509

    return [x509.load_pem_x509_crl(b"-----BEGIN X509 CRL-----" + part)
            for part in pem.split(b"-----BEGIN X509 CRL-----")[1:]]


def listed(crl_file, cert_files):
    from cryptography import x509

    with open(crl_file, "rb") as f:
        crls = crls_of(f.read())
    missing = []
    for name in cert_files:
        with open(name, "rb") as f:
            serial = x509.load_pem_x509_certificates(f.read())[0].serial_number
        if not any(c.get_revoked_certificate_by_serial_number(serial) for c in crls):
            missing.append(f"{name} ({serial:x})")
    print("not listed:", ", ".join(missing) if missing else "none")
    return not missing


def main():
    mode = sys.argv[1]
    if mode == "ssl":
        ok = ssl_cell(*sys.argv[2:6])
    elif mode == "pyca":
        ok = pyca_cell(*sys.argv[2:4])
    else:
        ok = listed(sys.argv[2], sys.argv[3:])
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
