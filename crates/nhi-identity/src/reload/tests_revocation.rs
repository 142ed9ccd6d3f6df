//! Tests of peer revocation with live handshakes: CRLs in the identity directory (a projected
//! volume) or in a separate `nhi-trust` volume, revocations picked up by the watch, and every
//! way of having no usable CRL refusing peers in both directions.

use std::path::Path;
use std::time::Duration;

use rustls::{AlertDescription, CertificateError, Error};
use time::OffsetDateTime;

use super::test_layout::{TestCa, TestLeaf, fresh_crl, publish_identity, write_generation_files};
use super::test_tls::{Connection, WAIT, refusal, served, start_pair, wait_until};
use super::tests::{events_only, publish};
use super::*;

fn with(revocation: RevocationCheck) -> ReloadOptions {
    ReloadOptions {
        revocation,
        ..events_only()
    }
}

fn day() -> OffsetDateTime {
    OffsetDateTime::now_utc() + time::Duration::days(1)
}

/// Publishes generation `n` of an `nhi-trust` ConfigMap volume.
fn publish_trust(dir: &Path, n: u32, ca: &TestCa, crl: &str) {
    write_generation_files(dir, n, &[("ca.crt", &ca.bundle()), ("crl.pem", crl)]);
}

/// What the client sees when the server refuses its certificate.
fn server_alert(description: AlertDescription) -> Option<Error> {
    Some(Error::AlertReceived(description))
}

/// What the client sees when it refuses the server's certificate.
fn client_verdict(error: CertificateError) -> Option<Error> {
    Some(Error::InvalidCertificate(error))
}

/// One CA, a server and a client identity directory, each with a current CRL.
struct Pair {
    ca: TestCa,
    server_leaf: TestLeaf,
    client_leaf: TestLeaf,
    server_dir: tempfile::TempDir,
    client_dir: tempfile::TempDir,
}

impl Pair {
    fn new() -> Self {
        let ca = TestCa::new();
        let now = OffsetDateTime::now_utc();
        let pair = Pair {
            server_leaf: ca.leaf(now),
            client_leaf: ca.leaf(now),
            server_dir: tempfile::tempdir().unwrap(),
            client_dir: tempfile::tempdir().unwrap(),
            ca,
        };
        publish(pair.server_dir.path(), 1, &pair.server_leaf, &pair.ca);
        publish(pair.client_dir.path(), 1, &pair.client_leaf, &pair.ca);
        pair
    }

    /// Publishes generation `n` of the server's directory with `crl` (none when `None`).
    fn server_crl(&self, n: u32, crl: Option<&str>) {
        let bundle = self.ca.bundle();
        publish_identity(self.server_dir.path(), n, &self.server_leaf, &bundle, crl);
    }

    /// Publishes generation `n` of the client's directory with `crl` (none when `None`).
    fn client_crl(&self, n: u32, crl: Option<&str>) {
        let bundle = self.ca.bundle();
        publish_identity(self.client_dir.path(), n, &self.client_leaf, &bundle, crl);
    }

    fn load(&self, options: ReloadOptions) -> (ReloadingIdentity, ReloadingIdentity) {
        (
            ReloadingIdentity::load(self.server_dir.path(), options.clone()).unwrap(),
            ReloadingIdentity::load(self.client_dir.path(), options).unwrap(),
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_revoked_after_the_server_started_is_refused_at_its_next_handshake() {
    let pair = Pair::new();
    let other_client_dir = tempfile::tempdir().unwrap();
    let other_client = pair.ca.leaf(OffsetDateTime::now_utc());
    publish(other_client_dir.path(), 1, &other_client, &pair.ca);
    // The server reads `crl.pem` from a separate `nhi-trust` volume.
    let trust_dir = tempfile::tempdir().unwrap();
    publish_trust(trust_dir.path(), 1, &pair.ca, &fresh_crl(&pair.ca));
    let server_options = with(RevocationCheck::CrlInDir(trust_dir.path().to_owned()));
    let server = ReloadingIdentity::load(pair.server_dir.path(), server_options).unwrap();
    let client = ReloadingIdentity::load(pair.client_dir.path(), events_only()).unwrap();
    let other = ReloadingIdentity::load(other_client_dir.path(), events_only()).unwrap();
    let watch = server.spawn_watch();
    assert!(watch.watching_events());
    let (addr, connector, server_task) = start_pair(&server, &client).await;
    let other_connector = super::test_tls::connector(&other);
    assert!(served(&connector, addr).await);

    let revoked = pair.ca.crl(&[&pair.client_leaf], day());
    publish_trust(trust_dir.path(), 2, &pair.ca, &revoked);
    wait_until("the new CRL", WAIT, || server.crl_reloads() == 1).await;
    assert_eq!(
        refusal(&connector, addr).await,
        server_alert(AlertDescription::CertificateRevoked)
    );
    assert!(served(&other_connector, addr).await);
    assert_eq!(server.refused_crl_reloads(), 0);
    server_task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_whose_parent_is_revoked_is_refused_though_the_crl_does_not_list_it() {
    let pair = Pair::new();
    let task_dir = tempfile::tempdir().unwrap();
    let task = pair
        .ca
        .task_leaf(OffsetDateTime::now_utc(), &pair.client_leaf);
    publish(task_dir.path(), 1, &task, &pair.ca);
    let trust_dir = tempfile::tempdir().unwrap();
    publish_trust(trust_dir.path(), 1, &pair.ca, &fresh_crl(&pair.ca));
    let server_options = with(RevocationCheck::CrlInDir(trust_dir.path().to_owned()));
    let server = ReloadingIdentity::load(pair.server_dir.path(), server_options).unwrap();
    let client = ReloadingIdentity::load(pair.client_dir.path(), events_only()).unwrap();
    let task_identity = ReloadingIdentity::load(task_dir.path(), events_only()).unwrap();
    let _watch = server.spawn_watch();
    let (addr, _, server_task) = start_pair(&server, &client).await;
    let task_connector = super::test_tls::connector(&task_identity);
    assert!(served(&task_connector, addr).await, "the task before");

    // The CRL lists the parent only (the identity whose certificate delegated the task).
    let revoked = pair.ca.crl(&[&pair.client_leaf], day());
    publish_trust(trust_dir.path(), 2, &pair.ca, &revoked);
    wait_until("the new CRL", WAIT, || server.crl_reloads() == 1).await;
    assert_eq!(
        refusal(&task_connector, addr).await,
        server_alert(AlertDescription::CertificateRevoked),
        "the task dies with its parent"
    );
    server_task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_revoked_after_the_client_started_is_refused_by_the_client() {
    let pair = Pair::new();
    let (server, client) = pair.load(events_only());
    let _watch = client.spawn_watch();
    let (addr, connector, server_task) = start_pair(&server, &client).await;
    let mut live = Connection::open(&connector, addr).await;
    assert!(served(&connector, addr).await);

    let revoked = pair.ca.crl(&[&pair.server_leaf], day());
    pair.client_crl(2, Some(&revoked));
    wait_until("the new CRL", WAIT, || client.crl_reloads() == 1).await;
    assert_eq!(
        refusal(&connector, addr).await,
        client_verdict(CertificateError::Revoked)
    );
    // A connection verified before the revocation is left alone.
    assert_eq!(live.request().await, pair.client_leaf.info.serial_hex);
    server_task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_crl_pem_peers_are_refused_unless_revocation_is_disabled() {
    let pair = Pair::new();
    pair.server_crl(2, None);
    let (server, client) = pair.load(events_only());
    assert!(matches!(
        server.revocation(),
        RevocationStatus::Unavailable { .. }
    ));
    assert_eq!(server.refused_crl_reloads(), 1);
    let (addr, connector, server_task) = start_pair(&server, &client).await;
    assert_eq!(
        refusal(&connector, addr).await,
        server_alert(AlertDescription::UnknownCA)
    );
    server_task.abort();

    // The other way round: the client has no CRL and refuses the server.
    pair.server_crl(3, Some(&fresh_crl(&pair.ca)));
    pair.client_crl(2, None);
    let (server, client) = pair.load(events_only());
    let (addr, connector, server_task) = start_pair(&server, &client).await;
    assert_eq!(
        refusal(&connector, addr).await,
        client_verdict(CertificateError::UnknownRevocationStatus)
    );
    server_task.abort();

    // Neither has one, and both say they do not check.
    pair.server_crl(4, None);
    let (server, client) = pair.load(with(RevocationCheck::Disabled));
    assert_eq!(server.revocation(), RevocationStatus::Disabled);
    let (addr, connector, server_task) = start_pair(&server, &client).await;
    assert!(served(&connector, addr).await);
    assert_eq!(server.refused_crl_reloads(), 0);
    server_task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crl_pem_arriving_after_the_start_is_picked_up() {
    let pair = Pair::new();
    pair.server_crl(2, None);
    let (server, client) = pair.load(events_only());
    let _watch = server.spawn_watch();
    let (addr, connector, server_task) = start_pair(&server, &client).await;
    assert!(!served(&connector, addr).await);

    pair.server_crl(3, Some(&fresh_crl(&pair.ca)));
    wait_until("the CRL", WAIT, || server.crl_reloads() == 1).await;
    assert!(served(&connector, addr).await);
    assert!(matches!(
        server.revocation(),
        RevocationStatus::Checking { crls: 1, .. }
    ));
    server_task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_crl_refuses_every_peer() {
    let pair = Pair::new();
    let now = OffsetDateTime::now_utc();
    let stale = pair.ca.crl(&[], now - time::Duration::minutes(5));
    pair.client_crl(2, Some(&stale));
    let (server, client) = pair.load(events_only());
    assert!(matches!(
        client.revocation(),
        RevocationStatus::Unavailable { .. }
    ));
    let (addr, connector, server_task) = start_pair(&server, &client).await;
    assert_eq!(
        refusal(&connector, addr).await,
        client_verdict(CertificateError::UnknownRevocationStatus)
    );
    server_task.abort();

    // A CRL current at the load goes stale with nothing newer: the server refuses from then on.
    let soon = (now + time::Duration::seconds(4))
        .replace_nanosecond(0)
        .unwrap();
    pair.server_crl(2, Some(&pair.ca.crl(&[], soon)));
    pair.client_crl(3, Some(&fresh_crl(&pair.ca)));
    let (server, client) = pair.load(events_only());
    let (addr, connector, server_task) = start_pair(&server, &client).await;
    assert!(served(&connector, addr).await);
    let wait = soon - OffsetDateTime::now_utc() + time::Duration::seconds(1);
    tokio::time::sleep(Duration::try_from(wait).unwrap_or_default()).await;
    assert!(
        server
            .revocation()
            .refuses_every_peer_at(OffsetDateTime::now_utc())
    );
    assert_eq!(
        refusal(&connector, addr).await,
        server_alert(AlertDescription::UnknownCA)
    );
    server_task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crl_signed_by_another_ca_refuses_every_peer() {
    let pair = Pair::new();
    // A CRL of a CA the server does not trust.
    pair.server_crl(2, Some(&fresh_crl(&TestCa::new())));
    let (server, client) = pair.load(events_only());
    assert_eq!(
        server.revocation(),
        RevocationStatus::Unavailable {
            reason: InvalidCrl::NotFromBundle.to_string()
        }
    );
    let (addr, connector, server_task) = start_pair(&server, &client).await;
    assert_eq!(
        refusal(&connector, addr).await,
        server_alert(AlertDescription::UnknownCA)
    );
    server_task.abort();

    // A CRL in the name of the client's CA, signed by another key.
    pair.server_crl(3, Some(&fresh_crl(&pair.ca)));
    pair.client_crl(2, Some(&fresh_crl(&pair.ca.impostor())));
    let (server, client) = pair.load(events_only());
    assert!(matches!(
        client.revocation(),
        RevocationStatus::Unavailable { .. }
    ));
    let (addr, connector, server_task) = start_pair(&server, &client).await;
    assert_eq!(
        refusal(&connector, addr).await,
        client_verdict(CertificateError::UnknownRevocationStatus)
    );
    assert_eq!(client.refused_crl_reloads(), 1);
    server_task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_crl_update_keeps_the_previous_crl_and_is_counted() {
    let pair = Pair::new();
    let second_client_dir = tempfile::tempdir().unwrap();
    let second_client = pair.ca.leaf(OffsetDateTime::now_utc());
    publish(second_client_dir.path(), 1, &second_client, &pair.ca);
    pair.server_crl(2, Some(&pair.ca.crl(&[&pair.client_leaf], day())));
    let (server, revoked_client) = pair.load(events_only());
    let client = ReloadingIdentity::load(second_client_dir.path(), events_only()).unwrap();
    #[cfg(feature = "metrics")]
    let registry = {
        let mut registry = prometheus_client::registry::Registry::with_prefix("app");
        server.register_metrics(&mut registry);
        registry
    };
    let _watch = server.spawn_watch();
    let (addr, revoked_connector, server_task) = start_pair(&server, &revoked_client).await;
    let connector = super::test_tls::connector(&client);
    assert!(!served(&revoked_connector, addr).await);
    assert!(served(&connector, addr).await);

    pair.server_crl(
        3,
        Some("-----BEGIN X509 CRL-----\nMAA=\n-----END X509 CRL-----\n"),
    );
    wait_until("the refusal", WAIT, || server.refused_crl_reloads() == 1).await;
    // The previous CRL is still checked: the revoked client stays refused, the other served.
    assert_eq!(
        refusal(&revoked_connector, addr).await,
        server_alert(AlertDescription::CertificateRevoked)
    );
    assert!(served(&connector, addr).await);
    // Looking again at the same bad file refuses it without counting it twice.
    assert!(matches!(
        server.reload_now(),
        Err(ReloadError::Crl(InvalidCrl::Malformed(_)))
    ));
    assert_eq!(server.refused_crl_reloads(), 1);
    assert_eq!(server.refused_reloads(), 0);
    #[cfg(feature = "metrics")]
    {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains("app_identity_crl_reloads_refused_total 1"),
            "{text}"
        );
        assert!(text.contains("app_identity_crl_reloads_total 0"), "{text}");
    }

    // A good CRL revoking nobody replaces it.
    pair.server_crl(4, Some(&fresh_crl(&pair.ca)));
    wait_until("the good CRL", WAIT, || server.crl_reloads() == 1).await;
    assert!(served(&revoked_connector, addr).await);
    server_task.abort();
}
