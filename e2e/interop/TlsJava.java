// The interop matrix's Java cell (e2e/test-interop.sh): JSSE on both ends, with the files as a
// workload gets them (the agent's directory), read the way a Java service without extra
// libraries reads PEM: the key through PKCS8EncodedKeySpec, certificates and CRLs through
// CertificateFactory. A server requiring client certificates, checked by PKIX against ca.crt
// with the CRLs of crl.pem; the client identity is accepted, the revoked one refused.
//
//   java TlsJava.java SERVER_DIR CLIENT_DIR REVOKED_DIR HOSTNAME
import java.io.*;
import java.net.*;
import java.nio.charset.StandardCharsets;
import java.nio.file.*;
import java.security.*;
import java.security.cert.*;
import java.security.spec.PKCS8EncodedKeySpec;
import java.util.*;
import java.util.concurrent.*;
import javax.net.ssl.*;

public class TlsJava {
    static byte[] pemBlock(String text, String label) {
        String begin = "-----BEGIN " + label + "-----", end = "-----END " + label + "-----";
        int a = text.indexOf(begin), b = text.indexOf(end);
        if (a < 0 || b < 0) throw new IllegalArgumentException("no " + label + " block");
        return Base64.getMimeDecoder().decode(text.substring(a + begin.length(), b));
    }

    static PrivateKey key(Path file) throws Exception {
        byte[] der = pemBlock(Files.readString(file), "PRIVATE KEY");
        for (String alg : new String[] {"EC", "RSA", "Ed25519"}) {
            try {
                return KeyFactory.getInstance(alg).generatePrivate(new PKCS8EncodedKeySpec(der));
            } catch (Exception e) {
                // the next algorithm
            }
        }
        throw new IllegalArgumentException(file + ": no KeyFactory reads this PKCS#8 key");
    }

    // The CERTIFICATE blocks of a PEM file (identity.pem holds the key first, which
    // CertificateFactory does not skip).
    static List<X509Certificate> certs(Path file) throws Exception {
        List<X509Certificate> out = new ArrayList<>();
        String text = Files.readString(file), begin = "-----BEGIN CERTIFICATE-----";
        CertificateFactory cf = CertificateFactory.getInstance("X.509");
        for (int at = text.indexOf(begin); at >= 0; at = text.indexOf(begin, at + 1)) {
            byte[] der = pemBlock(text.substring(at), "CERTIFICATE");
            out.add((X509Certificate) cf.generateCertificate(new ByteArrayInputStream(der)));
        }
        return out;
    }

    static KeyManager[] keyManagers(Path dir, String keyFile) throws Exception {
        KeyStore ks = KeyStore.getInstance("PKCS12");
        ks.load(null, null);
        Path certFile = dir.resolve(keyFile.equals("identity.pem") ? "identity.pem" : "tls.crt");
        ks.setKeyEntry("identity", key(dir.resolve(keyFile)), new char[0],
                certs(certFile).toArray(new X509Certificate[0]));
        KeyManagerFactory kmf = KeyManagerFactory.getInstance("PKIX");
        kmf.init(ks, new char[0]);
        return kmf.getKeyManagers();
    }

    static TrustManager[] trustManagers(Path dir, boolean withCrl) throws Exception {
        KeyStore ts = KeyStore.getInstance("PKCS12");
        ts.load(null, null);
        int i = 0;
        for (X509Certificate c : certs(dir.resolve("ca.crt"))) ts.setCertificateEntry("ca" + i++, c);
        PKIXBuilderParameters params = new PKIXBuilderParameters(ts, new X509CertSelector());
        if (withCrl) {
            Collection<? extends CRL> crls;
            try (InputStream in = Files.newInputStream(dir.resolve("crl.pem"))) {
                crls = CertificateFactory.getInstance("X.509").generateCRLs(in);
            }
            params.addCertStore(CertStore.getInstance("Collection", new CollectionCertStoreParameters(crls)));
            params.setRevocationEnabled(true);
        } else {
            params.setRevocationEnabled(false);
        }
        TrustManagerFactory tmf = TrustManagerFactory.getInstance("PKIX");
        tmf.init(new CertPathTrustManagerParameters(params));
        return tmf.getTrustManagers();
    }

    static String spiffeId(X509Certificate c) throws Exception {
        if (c.getSubjectAlternativeNames() == null) return "";
        for (List<?> san : c.getSubjectAlternativeNames()) {
            if ((Integer) san.get(0) == 6) return (String) san.get(1);
        }
        return "";
    }

    static String call(int port, Path dir, String keyFile, String hostname) throws Exception {
        SSLContext ctx = SSLContext.getInstance("TLS");
        ctx.init(keyManagers(dir, keyFile), trustManagers(dir, false), null);
        try (SSLSocket s = (SSLSocket) ctx.getSocketFactory().createSocket("127.0.0.1", port)) {
            s.setSoTimeout(10000);
            SSLParameters p = s.getSSLParameters();
            p.setServerNames(List.of(new SNIHostName(hostname)));
            p.setEndpointIdentificationAlgorithm("HTTPS");
            s.setSSLParameters(p);
            s.startHandshake();
            String line = new BufferedReader(new InputStreamReader(s.getInputStream(), StandardCharsets.UTF_8)).readLine();
            return line == null ? "" : line.trim();
        }
    }

    public static void main(String[] args) throws Exception {
        Path server = Paths.get(args[0]), client = Paths.get(args[1]), revoked = Paths.get(args[2]);
        String hostname = args[3];
        SSLContext sctx = SSLContext.getInstance("TLS");
        sctx.init(keyManagers(server, "tls.key"), trustManagers(server, true), null);
        SSLServerSocket listener = (SSLServerSocket) sctx.getServerSocketFactory()
                .createServerSocket(0, 16, InetAddress.getByName("127.0.0.1"));
        listener.setNeedClientAuth(true);
        List<String> serverErrors = new CopyOnWriteArrayList<>();
        Thread t = new Thread(() -> {
            while (true) {
                try (SSLSocket s = (SSLSocket) listener.accept()) {
                    try {
                        s.startHandshake();
                        X509Certificate peer = (X509Certificate) s.getSession().getPeerCertificates()[0];
                        s.getOutputStream().write((spiffeId(peer) + "\n").getBytes(StandardCharsets.UTF_8));
                    } catch (Exception e) {
                        Throwable root = e;
                        while (root.getCause() != null) root = root.getCause();
                        serverErrors.add(e.getMessage() + " / " + root.getMessage());
                    }
                } catch (IOException closed) {
                    return;
                }
            }
        });
        t.setDaemon(true);
        t.start();
        int port = listener.getLocalPort();
        boolean ok = true;
        for (String keyFile : new String[] {"tls.key", "identity.pem"}) {
            try {
                String id = call(port, client, keyFile, hostname);
                System.out.println("client (" + keyFile + ") accepted as " + id);
                ok &= id.startsWith("spiffe://");
            } catch (Exception e) {
                System.out.println("client (" + keyFile + ") not accepted: " + e);
                ok = false;
            }
        }
        try {
            String id = call(port, revoked, "tls.key", hostname);
            if (id.startsWith("spiffe://")) {
                System.out.println("revoked client NOT refused: " + id);
                ok = false;
            } else {
                System.out.println("revoked client got no answer");
            }
        } catch (Exception e) {
            System.out.println("revoked client refused: " + e);
        }
        Thread.sleep(200);
        System.out.println("server saw: " + String.join("; ", serverErrors));
        ok &= serverErrors.stream().anyMatch(m -> m.toLowerCase().contains("revoked"));
        listener.close();
        System.exit(ok ? 0 : 1);
    }
}
