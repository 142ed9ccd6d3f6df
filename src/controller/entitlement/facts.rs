//! Observe: what an Entitlement reconcile decides from, gathered before anything is written: the
//! Entitlement, the identities of its namespace as binding sees them, its Role and RoleBinding
//! as they exist (read only when it has or had Kubernetes rules), the moment.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::{Api, Client, ResourceExt};
use time::OffsetDateTime;

use super::context::EntitlementContext;
use super::error::EntitlementError;
use super::status::SubjectCertificate;
use nhi_api::condition::find_condition;
use nhi_api::{Entitlement, MachineIdentity};
use nhi_core::entitle::rbac::rbac_name;
use nhi_core::issue::kube_client::kube_user;
use nhi_core::lifecycle::verdict::REVIEW_OVERDUE;
use nhi_core::policy::EffectivePolicy;
use nhi_core::policy::identity::kubernetes_access_allowed_by;
use nhi_identity::timestamp::parse_rfc3339;

/// What a reconcile of one Entitlement decides from.
pub struct Facts {
    pub now: OffsetDateTime,
    pub entitlement: Arc<Entitlement>,
    pub namespace: String,
    /// Whether the identity and policy caches have completed their first list (subjects and
    /// what may be given come from them).
    pub identities_synced: bool,
    /// The policy of the Entitlement's namespace.
    pub policy: EffectivePolicy,
    /// The identities of the namespace that are not being deleted.
    pub identities: Vec<Identity>,
    /// Whether Kubernetes access is enabled.
    pub kubernetes_access: bool,
    /// The Entitlement's Role and RoleBinding, when they were looked at.
    pub rbac: Option<ExistingRbac>,
    /// The fingerprint of the status this operator wrote moments ago (the cache may lag).
    pub status_just_written: Option<u64>,
}

/// An identity as binding sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub uid: String,
    pub labels: BTreeMap<String, String>,
    /// Its name and what its current certificate carries.
    pub certificate: SubjectCertificate,
}

/// The Role and RoleBinding named for the Entitlement, as they exist.
#[derive(Clone, Debug, Default)]
pub struct ExistingRbac {
    pub role: Option<Role>,
    pub binding: Option<RoleBinding>,
}

/// Gathers the facts of a reconcile of `ent`.
pub async fn observe(
    ent: Arc<Entitlement>,
    ctx: &EntitlementContext,
) -> Result<Facts, EntitlementError> {
    let namespace = ent.namespace().ok_or(EntitlementError::NotNamespaced)?;
    let (policy, namespace_known) = ctx.policies.effective(&namespace);
    let now = OffsetDateTime::now_utc();
    let identities: Vec<Identity> = ctx
        .identities
        .in_namespace(&namespace)
        .iter()
        .filter(|mi| mi.metadata.deletion_timestamp.is_none())
        .map(|mi| identity(mi, &policy, now, &|serial| ctx.revoker.is_revoked(serial)))
        .collect();
    let had = ent.status.as_ref().is_some_and(|s| s.kubernetes.is_some());
    let wanted = ent.spec.kubernetes.is_some();
    let deleting = ent.metadata.deletion_timestamp.is_some();
    let identities_synced = ctx.health.identities_synced.load(Ordering::Relaxed)
        && ctx.policies.is_synced()
        && namespace_known;
    let looked_at = (had || wanted) && ctx.kubernetes_access && !deleting && identities_synced;
    let rbac = match looked_at {
        true => Some(existing_rbac(&ctx.client, &namespace, &ent.name_any()).await?),
        false => None,
    };
    Ok(Facts {
        now,
        policy,
        identities_synced,
        kubernetes_access: ctx.kubernetes_access,
        status_just_written: ent
            .metadata
            .uid
            .as_deref()
            .and_then(|uid| ctx.recent_statuses.recent(uid)),
        entitlement: ent,
        namespace,
        identities,
        rbac,
    })
}

/// An identity as binding sees it; it has Kubernetes access (a user to bind) only when it asks
/// for it, its namespace's `policy` allows it, and it is not suspended (a lapsed review takes
/// its user out of every RoleBinding at once, not when its client certificate expires).
fn identity(
    mi: &MachineIdentity,
    policy: &EffectivePolicy,
    now: OffsetDateTime,
    revoked: &dyn Fn(&str) -> bool,
) -> Identity {
    let status = mi.status.clone().unwrap_or_default();
    let suspended = find_condition(&status.conditions, "Ready")
        .is_some_and(|c| !c.is_true() && c.reason == REVIEW_OVERDUE);
    let access = mi.wants_kubernetes_access() && kubernetes_access_allowed_by(policy) && !suspended;
    let kube_users = match access {
        true => bound_users(mi, &status, now, revoked),
        false => vec![],
    };
    Identity {
        uid: mi.metadata.uid.clone().unwrap_or_default(),
        labels: mi.labels().clone(),
        certificate: SubjectCertificate {
            kubernetes_access: access,
            kube_users,
            identity: mi.name_any(),
            grants: status.entitlements.into_iter().collect(),
            serial_number: status.serial_number,
            thumbprint_sha256: status.thumbprint_sha256,
            not_after: status.not_after.map(String::from),
        },
    }
}

/// The users to bind for an identity with Kubernetes access: its current client certificate's,
/// and the issuance users of its earlier certificates that have not expired and are not revoked
/// (on the record, or in its last revocation).
fn bound_users(
    mi: &MachineIdentity,
    status: &nhi_api::MachineIdentityStatus,
    now: OffsetDateTime,
    revoked: &dyn Fn(&str) -> bool,
) -> Vec<String> {
    let Some(current) = &status.kubernetes_access else {
        return vec![];
    };
    let last_revoked = status
        .last_revocation
        .as_ref()
        .map(|r| r.serial_numbers.as_slice())
        .unwrap_or_default();
    let namespace = mi.metadata.namespace.as_deref().unwrap_or_default();
    let mut users = vec![current.user.clone()];
    for p in &status.previous_certificates {
        let unexpired = parse_rfc3339(&p.not_after).is_some_and(|t| t > now);
        let was_revoked = revoked(&p.serial_number)
            || last_revoked
                .iter()
                .any(|s| s.eq_ignore_ascii_case(&p.serial_number));
        let user = kube_user(namespace, &mi.name_any(), &p.serial_number);
        if unexpired && !was_revoked && !users.contains(&user) {
            users.push(user);
        }
    }
    users
}

/// The Role and RoleBinding named for Entitlement `name` in `namespace`.
pub async fn existing_rbac(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<ExistingRbac, kube::Error> {
    let roles: Api<Role> = Api::namespaced(client.clone(), namespace);
    let bindings: Api<RoleBinding> = Api::namespaced(client.clone(), namespace);
    let rbac_name = rbac_name(name);
    Ok(ExistingRbac {
        role: roles.get_opt(&rbac_name).await?,
        binding: bindings.get_opt(&rbac_name).await?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> OffsetDateTime {
        time::macros::datetime!(2026-12-05 10:00 UTC)
    }

    #[test]
    fn a_renewal_keeps_the_previous_user_bound_and_a_revocation_does_not() {
        let mi: MachineIdentity = serde_json::from_value(serde_json::json!({
            "apiVersion": "nhi.dev/v1alpha1", "kind": "MachineIdentity",
            "metadata": {"name": "tf", "namespace": "ops", "uid": "u"},
            "spec": {"owner": {"team": "t"}, "secretName": "tf-id", "kubernetesAccess": {"enabled": true}},
            "status": {
                "serialNumber": "40000000000000000000000000000003",
                "kubernetesAccess": {"user": "nhi:ops:tf:0000000000000003",
                                     "clientCertificateNotAfter": "2026-12-05T11:00:00Z"},
                "previousCertificates": [
                    {"serialNumber": "40000000000000000000000000000001", "notAfter": "2026-12-05T09:59:00Z"},
                    {"serialNumber": "40000000000000000000000000000002", "notAfter": "2026-12-05T10:30:00Z"},
                    {"serialNumber": "40000000000000000000000000000004", "notAfter": "2026-12-05T10:40:00Z"}
                ],
                "lastRevocation": {"reason": "RevokeRequested", "revokedAt": "2026-12-05T09:00:00Z",
                                   "serialNumbers": ["40000000000000000000000000000004"]}
            }
        }))
        .unwrap();
        let policy = crate::controller::identity::plan::tests::open_policy("ops");
        let users = |revoked: &dyn Fn(&str) -> bool| {
            identity(&mi, &policy, now(), revoked)
                .certificate
                .kube_users
        };
        // Current, and the previous one still valid (the expired one and the one the last
        // revocation names are not).
        assert_eq!(
            users(&|_| false),
            vec![
                "nhi:ops:tf:0000000000000003".to_string(),
                "nhi:ops:tf:0000000000000002".to_string()
            ]
        );
        // Revoked on the record (an earlier revocation): not bound either.
        assert_eq!(
            users(&|s| s.ends_with('2')),
            vec!["nhi:ops:tf:0000000000000003".to_string()]
        );
    }

    #[test]
    fn a_suspended_identity_is_no_user_to_bind() {
        let mut mi: MachineIdentity = serde_json::from_value(serde_json::json!({
            "apiVersion": "nhi.dev/v1alpha1", "kind": "MachineIdentity",
            "metadata": {"name": "tf", "namespace": "ops", "uid": "u"},
            "spec": {"owner": {"team": "t"}, "secretName": "tf-id", "kubernetesAccess": {"enabled": true}}
        }))
        .unwrap();
        let policy = crate::controller::identity::plan::tests::open_policy("ops");
        assert!(
            identity(&mi, &policy, now(), &|_| false)
                .certificate
                .kubernetes_access
        );
        mi.status = Some(nhi_api::MachineIdentityStatus {
            conditions: vec![nhi_api::Condition::new(
                "Ready",
                false,
                REVIEW_OVERDUE,
                "suspended",
            )],
            ..Default::default()
        });
        assert!(
            !identity(&mi, &policy, now(), &|_| false)
                .certificate
                .kubernetes_access
        );
    }
}
