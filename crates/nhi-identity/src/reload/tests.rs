//! Tests of the reloading identity against real directory layouts: a kubelet Secret volume
//! (`..data` swap), a `subPath`-style in-place rewrite, refused updates, and live TLS handshakes.
//! Every identity directory carries a current `crl.pem`, as the default options require.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use time::OffsetDateTime;

use super::test_layout::{TestCa, TestLeaf, fresh_crl, publish_identity, write_plain};
use super::test_tls::{Connection, WAIT, served, start_pair, wait_until};
use super::*;

/// Publishes `leaf` with `ca`'s bundle and a current CRL of `ca`.
pub(super) fn publish(dir: &Path, n: u32, leaf: &TestLeaf, ca: &TestCa) -> Instant {
    publish_identity(dir, n, leaf, &ca.bundle(), Some(&fresh_crl(ca)))
}

pub(super) fn events_only() -> ReloadOptions {
    ReloadOptions {
        // Long enough that only the directory watch can see the updates in these tests.
        poll_interval: Duration::from_secs(3600),
        watch_events: true,
        debounce: Duration::from_millis(20),
        ..ReloadOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubelet_symlink_swap_is_seen_and_the_watch_survives_it() {
    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    let now = OffsetDateTime::now_utc();
    let first = ca.leaf(now);
    publish(dir.path(), 1, &first, &ca);
    let identity = ReloadingIdentity::load(dir.path(), events_only()).unwrap();
    assert_eq!(identity.current().serial_hex, first.info.serial_hex);
    let changes = Arc::new(AtomicU64::new(0));
    let seen = changes.clone();
    identity.on_change(move |_| {
        seen.fetch_add(1, Ordering::SeqCst);
    });
    let watch = identity.spawn_watch();
    assert!(watch.watching_events());

    for (n, leaf) in [(2, ca.leaf(now)), (3, ca.leaf(now))] {
        publish(dir.path(), n, &leaf, &ca);
        wait_until(&format!("generation {n}"), WAIT, || {
            identity.current().serial_hex == leaf.info.serial_hex
        })
        .await;
        assert_eq!(identity.not_after(), leaf.info.not_after);
    }
    assert_eq!(identity.reloads(), 2);
    assert_eq!(changes.load(Ordering::SeqCst), 2);
    assert_eq!(identity.refused_reloads(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subpath_in_place_rewrite_is_caught_by_the_poller() {
    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    let now = OffsetDateTime::now_utc();
    let first = ca.leaf(now);
    write_plain(dir.path(), &first.chain_pem, &first.key_pem, &ca.bundle());
    std::fs::write(dir.path().join("crl.pem"), fresh_crl(&ca)).unwrap();
    let options = ReloadOptions {
        poll_interval: Duration::from_millis(100),
        watch_events: false,
        debounce: Duration::from_millis(20),
        ..ReloadOptions::default()
    };
    let identity = ReloadingIdentity::load(dir.path(), options).unwrap();
    let watch = identity.spawn_watch();
    assert!(!watch.watching_events());

    let second = ca.leaf(now);
    write_plain(dir.path(), &second.chain_pem, &second.key_pem, &ca.bundle());
    wait_until("the rewritten files", WAIT, || {
        identity.current().serial_hex == second.info.serial_hex
    })
    .await;
}

/// A registry's metrics as Prometheus text.
#[cfg(feature = "metrics")]
fn metrics_text(registry: &prometheus_client::registry::Registry) -> String {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_that_does_not_match_is_refused_and_the_previous_identity_kept() {
    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    let now = OffsetDateTime::now_utc();
    let first = ca.leaf(now);
    publish(dir.path(), 1, &first, &ca);
    let identity = ReloadingIdentity::load(dir.path(), events_only()).unwrap();
    #[cfg(feature = "metrics")]
    let registry = {
        let mut registry = prometheus_client::registry::Registry::with_prefix("app");
        identity.register_metrics(&mut registry);
        registry
    };
    let _watch = identity.spawn_watch();

    let (second, stranger) = (ca.leaf(now), ca.leaf(now));
    let mismatched = TestLeaf {
        key_pem: stranger.key_pem.clone(),
        ..second.clone()
    };
    publish(dir.path(), 2, &mismatched, &ca);
    wait_until("the refusal", WAIT, || identity.refused_reloads() == 1).await;
    assert_eq!(identity.current().serial_hex, first.info.serial_hex);
    // Looking again at the same bad files refuses them without counting them twice.
    assert!(matches!(
        identity.reload_now(),
        Err(ReloadError::Invalid(InvalidIdentity::KeyMismatch))
    ));
    assert_eq!(identity.refused_reloads(), 1);
    #[cfg(feature = "metrics")]
    {
        let text = metrics_text(&registry);
        assert!(
            text.contains("app_identity_reloads_refused_total 1"),
            "{text}"
        );
        assert!(text.contains("app_identity_reloads_total 0"), "{text}");
    }

    publish(dir.path(), 3, &second, &ca);
    wait_until("the repaired identity", WAIT, || {
        identity.current().serial_hex == second.info.serial_hex
    })
    .await;
    assert_eq!(identity.refused_reloads(), 1);
    #[cfg(feature = "metrics")]
    {
        let text = metrics_text(&registry);
        assert!(text.contains("app_identity_reloads_total 1"), "{text}");
        assert!(
            text.contains(&format!(
                "app_identity_expiry_timestamp_seconds {}",
                second.info.not_after.unix_timestamp()
            )),
            "{text}"
        );
    }
}

#[test]
fn expired_and_foreign_leaves_are_refused() {
    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    let now = OffsetDateTime::now_utc();
    let first = ca.leaf(now);
    publish(dir.path(), 1, &first, &ca);
    let identity = ReloadingIdentity::load(dir.path(), ReloadOptions::default()).unwrap();
    assert_eq!(identity.reload_now().unwrap(), ReloadOutcome::Unchanged);

    let expired = ca.leaf(now - time::Duration::hours(2));
    publish(dir.path(), 2, &expired, &ca);
    assert!(matches!(
        identity.reload_now(),
        Err(ReloadError::Invalid(InvalidIdentity::Expired { .. }))
    ));
    let foreign = TestCa::new().leaf(now);
    publish(dir.path(), 3, &foreign, &ca);
    assert!(matches!(
        identity.reload_now(),
        Err(ReloadError::Invalid(InvalidIdentity::Untrusted(_)))
    ));
    assert_eq!(identity.refused_reloads(), 2);
    assert_eq!(identity.current().serial_hex, first.info.serial_hex);

    // With nothing valid to start from, loading fails.
    assert!(matches!(
        ReloadingIdentity::load(dir.path(), ReloadOptions::default()),
        Err(ReloadError::Invalid(InvalidIdentity::Untrusted(_)))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_handshakes_use_the_swapped_identity_while_live_connections_continue() {
    let ca = TestCa::new();
    let now = OffsetDateTime::now_utc();
    let (server_dir, client_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (server_first, client_first) = (ca.leaf(now), ca.leaf(now));
    publish(server_dir.path(), 1, &server_first, &ca);
    publish(client_dir.path(), 1, &client_first, &ca);
    let server = ReloadingIdentity::load(server_dir.path(), events_only()).unwrap();
    let client = ReloadingIdentity::load(client_dir.path(), events_only()).unwrap();
    let _watches = (server.spawn_watch(), client.spawn_watch());

    let (addr, connector, server_task) = start_pair(&server, &client).await;

    let mut live = Connection::open(&connector, addr).await;
    assert_eq!(live.server_serial, server_first.info.serial_hex);
    assert_eq!(live.request().await, client_first.info.serial_hex);

    // The server's identity rotates: new handshakes present the new certificate.
    let server_second = ca.leaf(now);
    let swapped = publish(server_dir.path(), 2, &server_second, &ca);
    let deadline = swapped + WAIT;
    loop {
        let fresh = Connection::open(&connector, addr).await;
        if fresh.server_serial == server_second.info.serial_hex {
            break;
        }
        assert_eq!(fresh.server_serial, server_first.info.serial_hex);
        assert!(
            Instant::now() < deadline,
            "the new server certificate was never presented"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    eprintln!(
        "reload latency, ..data swap to the first handshake with the new certificate: {:?}",
        swapped.elapsed()
    );

    // The client's identity rotates too: the server sees the new client certificate.
    let client_second = ca.leaf(now);
    publish(client_dir.path(), 2, &client_second, &ca);
    wait_until("the client's new identity", WAIT, || {
        client.current().serial_hex == client_second.info.serial_hex
    })
    .await;
    let mut fresh = Connection::open(&connector, addr).await;
    assert_eq!(fresh.server_serial, server_second.info.serial_hex);
    assert_eq!(fresh.request().await, client_second.info.serial_hex);

    // The connection opened before both rotations still works, with the identities it began with.
    assert_eq!(live.request().await, client_first.info.serial_hex);
    assert_eq!(live.server_serial, server_first.info.serial_hex);
    server_task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trust_roots_swap_in_place_under_a_live_server_config() {
    let (old_ca, new_ca) = (TestCa::new(), TestCa::new());
    let both = format!("{}{}", old_ca.bundle(), new_ca.bundle());
    let now = OffsetDateTime::now_utc();
    let (server_dir, client_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // `crl.pem` of a CA rotation: one CRL per CA (a server trusting only the old root sets
    // the new one's aside).
    let crls = format!("{}{}", fresh_crl(&old_ca), fresh_crl(&new_ca));
    let server_leaf = old_ca.leaf(now);
    let server_write =
        |n, bundle: &str| publish_identity(server_dir.path(), n, &server_leaf, bundle, Some(&crls));
    server_write(1, &old_ca.bundle());
    // A client already signed by the new CA, trusting both.
    let client_leaf = new_ca.leaf(now);
    publish_identity(client_dir.path(), 1, &client_leaf, &both, Some(&crls));
    let server = ReloadingIdentity::load(server_dir.path(), events_only()).unwrap();
    let client = ReloadingIdentity::load(client_dir.path(), events_only()).unwrap();
    let _watch = server.spawn_watch();
    let (addr, connector, server_task) = start_pair(&server, &client).await;

    // The server does not trust the new CA yet: the client is refused.
    assert!(
        !served(&connector, addr).await,
        "a client of an untrusted CA was served"
    );

    // The bundle gains the new root: the same config now accepts the client.
    server_write(2, &both);
    wait_until("the new bundle", WAIT, || server.reloads() == 1).await;
    let mut connection = Connection::open(&connector, addr).await;
    assert_eq!(connection.request().await, client_leaf.info.serial_hex);
    assert_eq!(server.refused_crl_reloads(), 0);
    server_task.abort();
}

#[test]
fn servers_never_resume_a_session_past_a_rotation() {
    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    publish(dir.path(), 1, &ca.leaf(OffsetDateTime::now_utc()), &ca);
    let identity = ReloadingIdentity::load(dir.path(), events_only()).unwrap();
    for auth in [ClientAuth::Required, ClientAuth::Optional, ClientAuth::None] {
        let config = identity.server_config_with(auth).unwrap();
        assert_eq!(config.send_tls13_tickets, 0);
        assert!(!config.session_storage.can_cache());
        assert!(!config.ticketer.enabled());
    }
}
