//! Rotation continuity against the local control plane: an mTLS server and client (the
//! `mtls_echo` example, built on the reload library), each with its own short-lived identity kept
//! current by `nhi-operator agent`, talk without one failed handshake or request across identity
//! rotations and a CA rotation; a corrupted identity directory is refused.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use crate::support::*;
use nhi_identity::pem_chain::pem_certificates;
use nhi_operator::api::MachineIdentity;
use nhi_operator::reload::{ReloadOptions, ReloadingIdentity};

const SERVER_NAME: &str = "echo.nhi.test";

fn echo_binary() -> PathBuf {
    example_binary("mtls_echo", "NHI_E2E_MTLS_ECHO")
}

/// Starts the example in `mode` with its stdout in `log`.
fn start_echo(mode: &str, dir: &Path, addr: &str, log: &Path, extra: &[&str]) -> KillOnDrop {
    let out = std::fs::File::create(log).unwrap();
    let child = Command::new(echo_binary())
        .arg(mode)
        .arg("--identity-dir")
        .arg(dir)
        .args(["--addr", addr, "--server-name", SERVER_NAME])
        .args(extra)
        .stdout(Stdio::from(out))
        .stderr(Stdio::null())
        .spawn()
        .expect("mtls_echo starts");
    KillOnDrop(child)
}

/// The CA Secret's annotations and keys.
async fn ca_secret(client: &Client, ns: &str) -> Secret {
    Api::<Secret>::namespaced(client.clone(), ns)
        .get("nhi-ca")
        .await
        .expect("the CA Secret")
}

fn annotation<'a>(s: &'a Secret, key: &str) -> Option<&'a str> {
    s.annotations().get(key).map(String::as_str)
}

fn certificates_in(pem: &str) -> usize {
    pem_certificates(pem).map(|c| c.len()).unwrap_or(0)
}

/// What the test saw of the rotation while the client was talking.
#[derive(Default)]
struct Seen {
    server_serials: Vec<String>,
    client_serials: Vec<String>,
    requested: bool,
    /// During the overlap: roots in the trust ConfigMap, CRLs in it, roots in the server's
    /// mounted `ca.crt`.
    overlap: Option<(usize, usize, usize)>,
    /// Once distribution was recorded (before the switch): CRLs in the trust ConfigMap.
    distributed_crls: Option<usize>,
    /// How many serials each identity had when the rotation completed.
    completed_at: Option<(usize, usize)>,
}

#[tokio::test]
async fn no_rotation_breaks_a_handshake_or_a_request() {
    // Certificates of 20 s (renewed at about 13 s); a CA rotation whose steps take seconds.
    let env = OperatorNamespace::start(
        "continuity",
        &[
            "--default-ttl",
            "20s",
            "--min-ttl",
            "10s",
            "--max-ttl",
            "20s",
            "--ca-rotation-propagation",
            "3s",
            "--ca-rotation-spread",
            "4s",
        ],
    )
    .await;
    let (client, ns) = (&env.client, env.ns.as_str());
    let api = env.identities();
    for (name, spec) in [
        (
            "echo-server",
            json!({"owner": {"team": "t"}, "secretName": "echo-server-identity",
                   "certificate": {"dnsNames": [SERVER_NAME]}}),
        ),
        (
            "echo-client",
            json!({"owner": {"team": "t"}, "secretName": "echo-client-identity"}),
        ),
    ] {
        env.create_identity(name, spec).await;
    }
    let serial = |mi: MachineIdentity| mi.status.and_then(|s| s.serial_number).unwrap();
    let mut seen = Seen {
        server_serials: vec![serial(
            wait_ready(&api, "echo-server", Duration::from_secs(10)).await,
        )],
        client_serials: vec![serial(
            wait_ready(&api, "echo-client", Duration::from_secs(10)).await,
        )],
        ..Default::default()
    };
    let original_ca = secret_text(&ca_secret(client, ns).await, "tls.crt");

    let work = tempfile::tempdir().unwrap();
    let (server_dir, client_dir) = (work.path().join("server"), work.path().join("client"));
    let mut server_agent = Some(start_agent(ns, "echo-server-identity", &server_dir, &[]));
    let _client_agent = start_agent(ns, "echo-client-identity", &client_dir, &[]);
    for dir in [&server_dir, &client_dir] {
        wait_for(
            Duration::from_secs(10),
            "the agent's first projection, with crl.pem",
            || async {
                let identity = ReloadingIdentity::load(dir, ReloadOptions::default()).ok()?;
                (identity.refused_crl_reloads() == 0).then_some(identity)
            },
        )
        .await;
    }
    let addr = free_port().to_string();
    let server_log = work.path().join("server.log");
    let _server = start_echo("serve", &server_dir, &addr, &server_log, &[]);
    wait_for(Duration::from_secs(10), "the server listening", || async {
        std::fs::read_to_string(&server_log)
            .ok()?
            .contains("listening on")
            .then_some(())
    })
    .await;
    let client_log = work.path().join("client.log");
    let stop = work.path().join("stop");
    let mut caller = start_echo(
        "call",
        &client_dir,
        &addr,
        &client_log,
        &[
            "--duration",
            "240s",
            "--interval",
            "100ms",
            "--stop-file",
            stop.to_str().unwrap(),
        ],
    );

    // Watch the identities rotate; after the first rotation of both, ask for a CA rotation; stop
    // once it completed and both identities rotated again under the new CA alone.
    let secrets = env.secrets();
    let started = Instant::now();
    loop {
        assert!(
            started.elapsed() < Duration::from_secs(200),
            "the rotations did not complete in time: server serials {:?}, client serials {:?}, CA Secret {:?}",
            seen.server_serials,
            seen.client_serials,
            ca_secret(client, ns).await.metadata.annotations
        );
        for (name, serials) in [
            ("echo-server", &mut seen.server_serials),
            ("echo-client", &mut seen.client_serials),
        ] {
            if let Some(s) = api
                .get(name)
                .await
                .unwrap()
                .status
                .and_then(|s| s.serial_number)
                && serials.last() != Some(&s)
            {
                eprintln!("{name}: serial {s} at {:?}", started.elapsed());
                serials.push(s);
            }
        }
        let ca = ca_secret(client, ns).await;
        if !seen.requested && seen.server_serials.len() >= 2 && seen.client_serials.len() >= 2 {
            secrets
                .patch(
                    "nhi-ca",
                    &PatchParams::default(),
                    &Patch::Merge(
                        json!({"metadata": {"annotations": {"nhi.dev/rotate-ca": "continuity-1"}}}),
                    ),
                )
                .await
                .unwrap();
            seen.requested = true;
            eprintln!("CA rotation requested at {:?}", started.elapsed());
        }
        let phase = annotation(&ca, "nhi.dev/ca-rotation-phase");
        if phase == Some("Publishing")
            && annotation(&ca, "nhi.dev/ca-rotation-distributed-at").is_some()
            && seen.distributed_crls.is_none()
        {
            let (_, crl) = trust_documents(client, ns).await.unwrap();
            seen.distributed_crls = Some(pem::parse_many(&crl).unwrap().len());
        }
        if phase == Some("Reissuing") && seen.overlap.is_none() {
            let (roots, crl) = trust_documents(client, ns).await.unwrap();
            let mounted = std::fs::read_to_string(server_dir.join("ca.crt")).unwrap();
            seen.overlap = Some((
                certificates_in(&roots),
                pem::parse_many(&crl).unwrap().len(),
                certificates_in(&mounted),
            ));
            eprintln!("CA switched at {:?}", started.elapsed());
        }
        if seen.requested
            && phase.is_none()
            && annotation(&ca, "nhi.dev/ca-rotation-completed-at").is_some()
            && seen.completed_at.is_none()
        {
            seen.completed_at = Some((seen.server_serials.len(), seen.client_serials.len()));
            eprintln!("CA rotation completed at {:?}", started.elapsed());
        }
        if let Some((server_then, client_then)) = seen.completed_at
            && seen.server_serials.len() > server_then.max(4)
            && seen.client_serials.len() > client_then.max(4)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Once the last rotation reached the programs (the server's log shows a handshake with the
    // last certificate of each), stop the client.
    let (last_server, last_client) = (
        seen.server_serials.last().unwrap(),
        seen.client_serials.last().unwrap(),
    );
    wait_for(
        Duration::from_secs(20),
        "a handshake with the last certificates of both sides",
        || async {
            let log = std::fs::read_to_string(&server_log).ok()?;
            (log.contains(&format!("handshake server={last_server} "))
                && log.contains(&format!(" client={last_client}\n")))
            .then_some(())
        },
    )
    .await;
    std::fs::write(&stop, "").unwrap();
    let finish_by = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = caller.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < finish_by, "the client did not finish");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let client_out = std::fs::read_to_string(client_log).unwrap();
    let server_out = std::fs::read_to_string(&server_log).unwrap();
    let summary = client_out
        .lines()
        .find(|l| l.starts_with("summary "))
        .unwrap_or_else(|| panic!("no summary in the client's log:\n{client_out}"));
    eprintln!("{summary}");
    assert!(
        status.success() && summary.contains("failed_requests=0 failed_handshakes=0"),
        "failures across rotations:\n{client_out}"
    );
    let requests: u64 = summary
        .split_whitespace()
        .find_map(|f| f.strip_prefix("requests="))
        .unwrap()
        .parse()
        .unwrap();
    assert!(requests >= 500, "only {requests} requests");

    // Three rotations of both identities and one CA rotation, and the server's log shows every
    // serial each side had in use (all but the last, which may be too fresh to have been used).
    assert!(seen.server_serials.len() >= 5 && seen.client_serials.len() >= 5);
    for s in &seen.server_serials[..seen.server_serials.len() - 1] {
        assert!(
            server_out.contains(&format!("handshake server={s} ")),
            "the server's log never shows its serial {s}:\n{server_out}"
        );
    }
    for s in &seen.client_serials[..seen.client_serials.len() - 1] {
        assert!(
            server_out.contains(&format!(" client={s}\n")),
            "the server's log never shows the client's serial {s}:\n{server_out}"
        );
    }
    // And the client saw each of the server's certificates in its handshakes.
    let presented = summary
        .split_whitespace()
        .find_map(|f| f.strip_prefix("server_serials="))
        .unwrap();
    for s in &seen.server_serials[..seen.server_serials.len() - 1] {
        assert!(
            presented.contains(s.as_str()),
            "the client never saw {s}: {summary}"
        );
    }

    // The overlap published both roots (and a CRL per CA) before the new CA signed; at the end
    // the old root is gone from every bundle and the identities chain to the new CA.
    assert_eq!(
        seen.overlap,
        Some((2, 2, 2)),
        "trust ConfigMap roots, CRLs, mounted roots"
    );
    let ca = ca_secret(client, ns).await;
    let new_ca = secret_text(&ca, "tls.crt");
    assert_ne!(new_ca, original_ca);
    assert_eq!(secret_text(&ca, "ca.crt"), new_ca);
    assert!(
        ca.data
            .as_ref()
            .unwrap()
            .keys()
            .all(|k| !k.starts_with("retiring.") && !k.starts_with("next."))
    );
    let (roots, crl) = trust_documents(client, ns).await.unwrap();
    assert_eq!(roots, new_ca);
    assert_eq!(pem::parse_many(&crl).unwrap().len(), 1);
    for name in ["echo-server-identity", "echo-client-identity"] {
        let s = secrets.get(name).await.unwrap();
        assert_eq!(secret_text(&s, "ca.crt"), new_ca, "{name}");
    }
    wait_for(
        Duration::from_secs(10),
        "the mounted bundle without the old root",
        || async {
            (std::fs::read_to_string(server_dir.join("ca.crt")).ok()? == new_ca).then_some(())
        },
    )
    .await;
    let reasons: Vec<String> = events_for(client, ns, "nhi-ca")
        .await
        .into_iter()
        .map(|(r, _)| r)
        .collect();
    for phase in [
        "CARotationStarted",
        "CARotationDistributed",
        "CARotationSwitched",
        "CARotationCompleted",
    ] {
        assert!(
            reasons.iter().any(|r| r == phase),
            "no {phase} Event: {reasons:?}"
        );
    }

    // A corrupted directory (a key that does not match the certificate) is refused: the server
    // keeps serving its identity and counts the refusal.
    server_agent.take();
    let serving = wait_for(Duration::from_secs(10), "the server's stats", || async {
        server_stats(&client_dir, &addr)
    })
    .await;
    assert_eq!(serving.refused, 0);
    corrupt_key(&server_dir, &client_dir.join("tls.key"));
    let after = wait_for(Duration::from_secs(10), "the refusal counted", || async {
        server_stats(&client_dir, &addr).filter(|s| s.refused >= 1)
    })
    .await;
    assert_eq!(after.serial, serving.serial, "the server kept its identity");
    assert_eq!(
        after.presented, serving.serial,
        "handshakes present the kept identity"
    );
}

/// The server's answer to `stats`.
struct Stats {
    serial: String,
    presented: String,
    refused: u64,
}

/// Asks the server for its reload counters through the `stats` mode of the example.
fn server_stats(client_dir: &Path, addr: &str) -> Option<Stats> {
    let out = Command::new(echo_binary())
        .args(["stats", "--identity-dir"])
        .arg(client_dir)
        .args(["--addr", addr, "--server-name", SERVER_NAME])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let field = |name: &str| {
        text.split_whitespace()
            .find_map(|f| f.strip_prefix(&format!("{name}=")))
            .map(str::to_string)
    };
    Some(Stats {
        serial: field("serial")?,
        presented: field("presented")?,
        refused: field("refused")?.parse().ok()?,
    })
}

/// Swaps a new version into `dir` the way kubelet does, with `tls.key` replaced by `key_file`.
fn corrupt_key(dir: &Path, key_file: &Path) {
    let version = dir.join("..corrupted");
    std::fs::create_dir(&version).unwrap();
    for name in ["tls.crt", "ca.crt", "crl.pem"] {
        std::fs::copy(dir.join(name), version.join(name)).unwrap();
    }
    std::fs::copy(key_file, version.join("tls.key")).unwrap();
    let staged = dir.join("..data_tmp");
    std::os::unix::fs::symlink("..corrupted", &staged).unwrap();
    std::fs::rename(&staged, dir.join("..data")).unwrap();
}

/// Runs the example's client once against `addr` for a moment: whether every handshake and
/// request succeeded, and its output.
fn call_once(client_dir: &Path, addr: &str) -> (bool, String) {
    let out = Command::new(echo_binary())
        .args(["call", "--identity-dir"])
        .arg(client_dir)
        .args(["--addr", addr, "--server-name", SERVER_NAME])
        .args(["--duration", "300ms", "--interval", "100ms"])
        .output()
        .expect("mtls_echo runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The reload library fails closed on revocation: the agent writes the namespace's CRL beside
/// the identity, and a server built on the library refuses a client certificate at its first
/// handshake after the CRL listing it arrives.
#[tokio::test]
async fn a_client_revoked_after_the_server_started_is_refused_at_its_next_handshake() {
    let env = OperatorNamespace::start("revoked-peer", &[]).await;
    let (client, ns) = (&env.client, env.ns.as_str());
    let api = env.identities();
    env.create_identity(
        "echo-server",
        json!({"owner": {"team": "t"}, "secretName": "echo-server-identity",
               "certificate": {"dnsNames": [SERVER_NAME]}}),
    )
    .await;
    env.create_identity(
        "echo-client",
        json!({"owner": {"team": "t"}, "secretName": "echo-client-identity"}),
    )
    .await;
    wait_ready(&api, "echo-server", Duration::from_secs(10)).await;
    let revoked = wait_ready(&api, "echo-client", Duration::from_secs(10))
        .await
        .status
        .and_then(|s| s.serial_number)
        .unwrap();
    wait_for(Duration::from_secs(10), "the first CRL", || {
        trust_documents(client, ns)
    })
    .await;
    let work = tempfile::tempdir().unwrap();
    let server_dir = work.path().join("server");
    let _server_agent = start_agent(ns, "echo-server-identity", &server_dir, &[]);
    wait_for(
        Duration::from_secs(10),
        "the agent's projection with crl.pem",
        || async { server_dir.join("crl.pem").exists().then_some(()) },
    )
    .await;
    // The client keeps the certificate about to be revoked (a stolen copy, say).
    let client_dir = work.path().join("client");
    std::fs::create_dir(&client_dir).unwrap();
    let secret = env.secrets().get("echo-client-identity").await.unwrap();
    for key in ["tls.crt", "tls.key", "ca.crt"] {
        std::fs::write(client_dir.join(key), secret_text(&secret, key)).unwrap();
    }
    std::fs::copy(server_dir.join("crl.pem"), client_dir.join("crl.pem")).unwrap();
    let addr = free_port().to_string();
    let server_log = work.path().join("server.log");
    let _server = start_echo("serve", &server_dir, &addr, &server_log, &[]);
    wait_for(Duration::from_secs(10), "the server listening", || async {
        std::fs::read_to_string(&server_log)
            .ok()?
            .contains("listening on")
            .then_some(())
    })
    .await;
    let (ok, out) = call_once(&client_dir, &addr);
    assert!(ok, "refused before the revocation:\n{out}");

    api.patch(
        "echo-client",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {"nhi.dev/revoke-requested": "e2e-1"}}})),
    )
    .await
    .unwrap();
    let published = wait_for(
        Duration::from_secs(10),
        "the serial in the server's crl.pem",
        || async {
            let crl = std::fs::read_to_string(server_dir.join("crl.pem")).ok()?;
            crl_serials(&crl).contains(&revoked).then(Instant::now)
        },
    )
    .await;
    let refused = wait_for(
        Duration::from_secs(5),
        "the revoked client refused",
        || async {
            let (ok, out) = call_once(&client_dir, &addr);
            (!ok).then_some(out)
        },
    )
    .await;
    eprintln!(
        "revoked client refused {:?} after the CRL reached the server's directory:\n{refused}",
        published.elapsed()
    );
    // A client with a current certificate is still served.
    let fresh_dir = work.path().join("fresh");
    let _fresh_agent = start_agent(ns, "echo-client-identity", &fresh_dir, &[]);
    let (ok, out) = wait_for(Duration::from_secs(10), "a fresh client served", || async {
        let (ok, out) = call_once(&fresh_dir, &addr);
        ok.then_some((ok, out))
    })
    .await;
    assert!(ok, "{out}");
}
