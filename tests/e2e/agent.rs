//! `nhi-operator agent` against the local control plane: the identity directory follows the
//! Secret through rotations, and a program using the reload library picks each one up.

use std::time::{Duration, Instant};

use kube::api::{Patch, PatchParams};
use serde_json::json;

use crate::support::*;
use nhi_operator::reload::{ReloadOptions, ReloadingIdentity};

#[tokio::test]
async fn the_agent_keeps_the_directory_current_and_the_reload_library_follows() {
    let env = OperatorNamespace::start("agent", &[]).await;
    let ns = env.ns.as_str();
    let api = env.identities();
    env.create_identity(
        "worker",
        json!({"owner": {"team": "t"}, "secretName": "worker-identity"}),
    )
    .await;
    let first = wait_ready(&api, "worker", Duration::from_secs(10))
        .await
        .status
        .unwrap()
        .serial_number
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let identity_dir = dir.path().join("identity");
    let hook = dir.path().join("hook-ran");
    let _agent = start_agent(
        ns,
        "worker-identity",
        &identity_dir,
        &["--exec", &format!("echo changed >> {}", hook.display())],
    );
    let loaded = wait_for(
        Duration::from_secs(10),
        "the agent's first projection",
        || async { ReloadingIdentity::load(&identity_dir, ReloadOptions::default()).ok() },
    )
    .await;
    assert_eq!(loaded.current().serial_hex, first);
    // The namespace's CRL is written beside the identity (the reload library checks peers
    // against it); only public files are readable by everyone.
    assert_eq!(loaded.refused_crl_reloads(), 0, "no usable crl.pem");
    use std::os::unix::fs::PermissionsExt;
    let mode = |f: &str| {
        std::fs::metadata(identity_dir.join(f))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(
        (mode("crl.pem"), mode("tls.crt"), mode("tls.key")),
        (0o644, 0o644, 0o640)
    );
    assert!(
        std::fs::symlink_metadata(identity_dir.join("..data"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    let _watch = loaded.spawn_watch();

    // Three rotations (revocations on request, each issuing a new certificate): each reaches the
    // directory, and the program's identity follows without a restart.
    let mut previous = first;
    for round in 1..=3 {
        let request = format!("agent-test-{round}");
        api.patch(
            "worker",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"annotations": {"nhi.dev/revoke-requested": request}}}),
            ),
        )
        .await
        .unwrap();
        let asked = Instant::now();
        let next = wait_for(Duration::from_secs(10), "a new certificate", || async {
            let s = api.get("worker").await.ok()?.status?;
            let serial = s.serial_number?;
            (serial != previous && s.last_revocation?.request.as_deref() == Some(request.as_str()))
                .then_some(serial)
        })
        .await;
        wait_for(
            Duration::from_secs(10),
            "the reload library on the new certificate",
            || async { (loaded.current().serial_hex == next).then_some(()) },
        )
        .await;
        eprintln!(
            "rotation {round}: request -> new certificate in use by the program: {:?}",
            asked.elapsed()
        );
        previous = next;
    }
    assert_eq!(loaded.refused_reloads(), 0);
    // The hook runs right after each projection (the program may see the files first).
    wait_for(
        Duration::from_secs(5),
        "the hook run after each change",
        || async {
            let hooks = std::fs::read_to_string(&hook).unwrap_or_default();
            (hooks.lines().count() >= 4).then_some(())
        },
    )
    .await;
}
