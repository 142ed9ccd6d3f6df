//! The example relying service as the e2e tests run it (an mTLS server authorizing routes by
//! grant), curl as its independent client, and identity directories as kubelet projects them.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use k8s_openapi::api::core::v1::Secret;

use crate::support::*;

/// Writes an identity Secret's files into a directory, the way kubelet projects a Secret volume.
pub fn project(secret: &Secret, dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for key in ["tls.crt", "tls.key", "ca.crt"] {
        std::fs::write(dir.join(key), secret_text(secret, key)).unwrap();
    }
}

/// A running relying service; killed on drop.
pub struct RelyingService {
    child: Child,
    pub port: u16,
}

impl RelyingService {
    pub fn start(
        identity_dir: &Path,
        routes: &[&str],
        trusted_namespaces: &[&str],
    ) -> RelyingService {
        Self::start_with_crl(identity_dir, routes, trusted_namespaces, None)
    }

    /// Like [`RelyingService::start`], checking revocation against the CRL file `crl`.
    pub fn start_with_crl(
        identity_dir: &Path,
        routes: &[&str],
        trusted_namespaces: &[&str],
        crl: Option<&Path>,
    ) -> RelyingService {
        Self::start_with_args(identity_dir, routes, trusted_namespaces, crl, &[])
    }

    /// Like [`RelyingService::start_with_crl`], with `extra` flags (`--accept-tasks`).
    pub fn start_with_args(
        identity_dir: &Path,
        routes: &[&str],
        trusted_namespaces: &[&str],
        crl: Option<&Path>,
        extra: &[&str],
    ) -> RelyingService {
        let mut cmd = Command::new(example_binary("relying_service", "NHI_E2E_RELYING_SERVICE"));
        cmd.args(extra);
        cmd.args(["--listen", "127.0.0.1:0", "--identity-dir"])
            .arg(identity_dir);
        for r in routes {
            cmd.args(["--route", r]);
        }
        for ns in trusted_namespaces {
            cmd.args(["--trusted-namespace", ns]);
        }
        match crl {
            Some(crl) => cmd.arg("--crl").arg(crl),
            None => cmd.arg("--no-revocation-check"),
        };
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the relying service starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
        RelyingService { child, port }
    }

    /// Sends `GET path` with curl (an independent TLS client) presenting the identity in
    /// `client_dir`, trusting `ca.crt` from it, and returns the HTTP status.
    pub fn status_for(&self, server_name: &str, client_dir: &Path, path: &str) -> u16 {
        let out = Command::new("curl")
            .args([
                "-sS",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--max-time",
                "10",
            ])
            .arg("--resolve")
            .arg(format!("{server_name}:{}:127.0.0.1", self.port))
            .arg("--cacert")
            .arg(client_dir.join("ca.crt"))
            .arg("--cert")
            .arg(client_dir.join("tls.crt"))
            .arg("--key")
            .arg(client_dir.join("tls.key"))
            .arg(format!("https://{server_name}:{}{path}", self.port))
            .output()
            .expect("curl runs");
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("curl: {}", String::from_utf8_lossy(&out.stderr)))
    }
}

impl Drop for RelyingService {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
