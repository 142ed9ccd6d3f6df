//! Observe: what one look at the CA Secret decides from: the Secret, the CA signing now, the CA
//! the Secret holds (loaded when its version was not adopted yet), and, while a rotation waits for
//! the next root to reach every bundle, how far it has.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::Api;
use kube::api::ListParams;
use kube::runtime::reflector::Store;
use time::OffsetDateTime;

use super::context::RotationContext;
use crate::ca::CertificateAuthority;
use crate::ca::rotation::Phase;
use crate::ca::rotation_state::phase_of;
use crate::ca::store::{CaLocation, load};
use crate::revoke::trust::{CA_KEY, CRL_KEY, TrustDocuments, trust_field_selector, trust_selector};
use nhi_api::MachineIdentity;

/// What a look at the CA Secret decides from.
pub struct Facts {
    pub now: OffsetDateTime,
    /// Where the CA Secret is.
    pub location: CaLocation,
    /// The CA Secret; None when it is gone.
    pub secret: Option<Secret>,
    /// The CA signing now.
    pub signing: Arc<CertificateAuthority>,
    /// The CA the Secret holds, when its version was not looked at before: loaded, or why not.
    pub held: Option<Result<Arc<CertificateAuthority>, String>>,
    /// How far the signing CA's bundle has reached, while a rotation waits for that.
    pub distribution: Option<Distribution>,
    /// The last problem reported (each is reported once).
    pub last_reported: Option<String>,
    /// PEM bytes the revocation record adds to one CRL; None before it is loaded.
    pub record_crl_bytes: Option<usize>,
}

impl Facts {
    /// The CA this look runs with: the one the Secret holds, when it loads, else the one
    /// signing.
    pub fn ca(&self) -> &Arc<CertificateAuthority> {
        match &self.held {
            Some(Ok(ca)) => ca,
            _ => &self.signing,
        }
    }
}

/// How far the signing CA's bundle (and a CRL of each of its CAs) has reached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Distribution {
    /// Whether the identity-Secret index has completed its first list.
    pub secrets_synced: bool,
    /// Identity Secrets of live identities whose bundle is behind, and how many there are.
    pub secrets_behind: usize,
    pub secrets: usize,
    /// The trust documents this operator last published.
    pub published: Option<Arc<TrustDocuments>>,
    /// The trust ConfigMaps' `ca.crt` and `crl.pem`.
    pub maps: Vec<(Option<String>, Option<String>)>,
}

/// Gathers the facts of a look at the CA Secret. `adopted`: the Secret version last looked at.
pub async fn observe(
    ctx: &RotationContext,
    identities: &Store<MachineIdentity>,
    location: &CaLocation,
    scope: Option<&str>,
    (adopted, last_reported): (Option<&str>, Option<String>),
) -> Result<Facts, kube::Error> {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &location.namespace);
    let secret = secrets.get_opt(&location.secret_name).await?;
    let held = secret
        .as_ref()
        .filter(|s| {
            s.metadata.resource_version.is_none()
                || s.metadata.resource_version.as_deref() != adopted
        })
        .map(|s| held_ca(s, location));
    let mut facts = Facts {
        now: OffsetDateTime::now_utc(),
        location: location.clone(),
        signing: ctx.ca.current(),
        held,
        secret,
        distribution: None,
        last_reported,
        record_crl_bytes: ctx.revoker.record_crl_bytes(),
    };
    let waiting = facts
        .secret
        .as_ref()
        .and_then(|s| phase_of(s.metadata.annotations.as_ref()?).ok())
        .is_some_and(|p| {
            matches!(
                p,
                Phase::Publishing {
                    distributed_at: None,
                    ..
                }
            )
        });
    if waiting {
        let ca = facts.ca().clone();
        facts.distribution = Some(distribution(ctx, identities, &ca, scope).await?);
    }
    Ok(facts)
}

/// The CA the Secret holds, or why it cannot be loaded.
pub fn held_ca(
    secret: &Secret,
    location: &CaLocation,
) -> Result<Arc<CertificateAuthority>, String> {
    load(secret, location)
        .map(Arc::new)
        .map_err(|e| e.to_string())
}

/// How far `ca`'s bundle has reached: the identity Secrets of identities that exist and are not
/// going away (those the identity controller updates), and the trust ConfigMaps, listed from the
/// watch cache (it may lag, and then the rotation waits; it never leads).
async fn distribution(
    ctx: &RotationContext,
    identities: &Store<MachineIdentity>,
    ca: &CertificateAuthority,
    scope: Option<&str>,
) -> Result<Distribution, kube::Error> {
    let live: std::collections::HashSet<String> = identities
        .state()
        .iter()
        .filter(|mi| mi.metadata.deletion_timestamp.is_none())
        .filter_map(|mi| mi.metadata.uid.clone())
        .collect();
    let (secrets_behind, secrets) = ctx
        .secrets
        .bundle_laggards(ca.bundle_fingerprint(), |uid| live.contains(uid));
    let configmaps: Api<ConfigMap> = crate::kube_api::scoped_api(ctx.client.clone(), scope);
    let params = ListParams::default()
        .labels(&trust_selector())
        .fields(&trust_field_selector())
        .match_any();
    let maps = configmaps
        .list(&params)
        .await?
        .items
        .into_iter()
        .map(|cm| {
            let data = cm.data.unwrap_or_default();
            (data.get(CA_KEY).cloned(), data.get(CRL_KEY).cloned())
        })
        .collect();
    Ok(Distribution {
        secrets_synced: ctx.health.secrets_synced.load(Ordering::Relaxed),
        secrets_behind,
        secrets,
        published: ctx.revoker.documents(),
        maps,
    })
}
