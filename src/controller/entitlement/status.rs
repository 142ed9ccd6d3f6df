//! Builds an Entitlement's status from its phase and its subjects' certificates (pure).

use std::collections::BTreeSet;

use time::OffsetDateTime;

use nhi_api::condition::{Condition, merge_conditions, without_transition_times};
use nhi_api::entitlement::{Binding, EntitlementStatus, KubernetesRbacStatus, MAX_LISTED_BINDINGS};
use nhi_core::entitle::resolve::Phase;
use nhi_identity::timestamp::rfc3339;

/// Condition type: every subject holds a certificate carrying the grants.
pub const READY: &str = "Ready";
/// Condition type: `expiresAt` has passed.
pub const EXPIRED: &str = "Expired";
/// Condition type: the Entitlement selects no identity.
pub const NO_SUBJECTS: &str = "NoSubjects";
/// Condition type: `spec.kubernetes` is materialised as a Role and RoleBinding.
pub const KUBERNETES_RBAC: &str = "KubernetesRBAC";

/// What became of the Entitlement's Role and RoleBinding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RbacOutcome {
    /// Written: the Role, the RoleBinding (absent when no subject has Kubernetes access) and the
    /// users bound.
    Applied {
        role: String,
        role_binding: Option<String>,
        users: Vec<String>,
    },
    /// The apiserver refused the Role or RoleBinding (typically: the operator cannot grant
    /// permissions it does not hold); its message.
    Refused { message: String },
    /// None exists (no rules, or outside the active window).
    Removed,
}

/// A selected identity, as far as binding goes: what its current certificate carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubjectCertificate {
    pub identity: String,
    /// Whether the identity has Kubernetes access enabled.
    pub kubernetes_access: bool,
    /// The Kubernetes users a RoleBinding names for it: its current client certificate's
    /// (`status.kubernetesAccess.user`) and those of its earlier certificates not expired and
    /// not revoked (a renewal keeps the previous kubeconfig working until it expires; a
    /// revocation or suspension cuts it off at once). Empty without Kubernetes access.
    pub kube_users: Vec<String>,
    /// The grants its current certificate carries (`status.entitlements`).
    pub grants: BTreeSet<String>,
    pub serial_number: Option<String>,
    pub thumbprint_sha256: Option<String>,
    pub not_after: Option<String>,
}

/// What the reconciler learned about an Entitlement.
#[derive(Clone, Debug, PartialEq)]
pub enum Assessment {
    /// The spec cannot be used (a timestamp or selector the schema could not check).
    Invalid { reason: String, message: String },
    /// The spec is usable: its phase and the identities it selects.
    Usable {
        phase: Phase,
        grants: BTreeSet<String>,
        subjects: Vec<SubjectCertificate>,
    },
}

/// The status after `assessment`, and whether some subjects are still waiting for a certificate
/// carrying the grants (the reconciler then looks again shortly).
pub fn desired_entitlement_status(
    previous: Option<&EntitlementStatus>,
    assessment: &Assessment,
    rbac: Option<&RbacOutcome>,
    justification: &str,
    generation: Option<i64>,
    now: OffsetDateTime,
) -> (EntitlementStatus, bool) {
    let prev = previous.cloned().unwrap_or_default();
    let mut status = EntitlementStatus {
        observed_generation: generation,
        justification: Some(justification.to_string()),
        ..Default::default()
    };
    let (mut conditions, pending) = match assessment {
        Assessment::Invalid { reason, message } => (
            vec![
                Condition::new(READY, false, reason, message.clone()),
                Condition::new(EXPIRED, false, reason, message.clone()),
            ],
            false,
        ),
        Assessment::Usable {
            phase,
            grants,
            subjects,
        } => usable_conditions(&mut status, *phase, grants, subjects),
    };
    if let Some(rbac) = rbac {
        let condition = rbac_condition(&mut status, &prev, &mut conditions, rbac);
        conditions.push(condition);
    }
    status.conditions = merge_conditions(&prev.conditions, conditions, generation, &rfc3339(now));
    (status, pending)
}

/// The bindings, and the `Ready`, `Expired` and `NoSubjects` conditions of a usable
/// Entitlement; whether some subjects wait for a certificate carrying the grants.
fn usable_conditions(
    status: &mut EntitlementStatus,
    phase: Phase,
    grants: &BTreeSet<String>,
    subjects: &[SubjectCertificate],
) -> (Vec<Condition>, bool) {
    let mut bindings: Vec<Binding> = match phase {
        Phase::Active => subjects.iter().filter_map(|s| binding(s, grants)).collect(),
        _ => vec![],
    };
    bindings.sort_by(|a, b| a.identity.cmp(&b.identity));
    status.bound_count = bindings.len() as i64;
    let unbound = subjects.len() - bindings.len();
    bindings.truncate(MAX_LISTED_BINDINGS);
    status.bindings = bindings;
    let grant_list = grants.iter().cloned().collect::<Vec<_>>().join(", ");
    let pending = phase == Phase::Active && !subjects.is_empty() && unbound > 0;
    let ready = match phase {
        Phase::Pending => Condition::new(
            READY,
            false,
            "NotYetActive",
            format!("{grant_list} not granted before notBefore"),
        ),
        Phase::Expired => Condition::new(
            READY,
            false,
            "Expired",
            format!("{grant_list} expired; no certificate carries them any more"),
        ),
        Phase::Active if subjects.is_empty() => Condition::new(
            READY,
            false,
            "NoSubjects",
            "no MachineIdentity in this namespace matches spec.subjects",
        ),
        Phase::Active if unbound > 0 => Condition::new(
            READY,
            false,
            "Binding",
            format!(
                "{unbound} of {} identities do not hold a certificate carrying {grant_list} yet",
                subjects.len()
            ),
        ),
        Phase::Active => Condition::new(
            READY,
            true,
            "Bound",
            format!(
                "{} identities hold a certificate carrying {grant_list}",
                subjects.len()
            ),
        ),
    };
    (
        vec![
            ready,
            expired_condition(phase),
            no_subjects_condition(subjects),
        ],
        pending,
    )
}

fn expired_condition(phase: Phase) -> Condition {
    match phase {
        Phase::Expired => Condition::new(EXPIRED, true, "Expired", "expiresAt has passed"),
        Phase::Pending => Condition::new(EXPIRED, false, "NotYetActive", "notBefore lies ahead"),
        Phase::Active => Condition::new(EXPIRED, false, "Active", "the grants apply"),
    }
}

fn no_subjects_condition(subjects: &[SubjectCertificate]) -> Condition {
    match subjects.is_empty() {
        true => Condition::new(
            NO_SUBJECTS,
            true,
            "NoSubjects",
            "no MachineIdentity in this namespace matches spec.subjects",
        ),
        false => Condition::new(
            NO_SUBJECTS,
            false,
            "SubjectsFound",
            format!("{} identities selected", subjects.len()),
        ),
    }
}

/// The `KubernetesRBAC` condition after `rbac`, with what the status records of it; a refusal
/// also makes `Ready` false.
fn rbac_condition(
    status: &mut EntitlementStatus,
    prev: &EntitlementStatus,
    conditions: &mut [Condition],
    rbac: &RbacOutcome,
) -> Condition {
    match rbac {
        RbacOutcome::Applied {
            role,
            role_binding,
            users,
        } => {
            status.kubernetes = Some(KubernetesRbacStatus {
                role: role.clone(),
                role_binding: role_binding.clone(),
                users: users.iter().take(MAX_LISTED_BINDINGS).cloned().collect(),
            });
            let shown = match users.len() {
                n if n > 5 => format!("{} and {} more", users[..5].join(", "), n - 5),
                _ => users.join(", "),
            };
            match role_binding {
                Some(b) => Condition::new(
                    KUBERNETES_RBAC,
                    true,
                    "Bound",
                    format!("Role {role} bound by RoleBinding {b} to {shown}"),
                ),
                None => Condition::new(
                    KUBERNETES_RBAC,
                    true,
                    "NoUsers",
                    format!(
                        "Role {role} exists; no selected identity has kubernetesAccess enabled"
                    ),
                ),
            }
        }
        RbacOutcome::Refused { message } => {
            // What may still exist stays recorded, so it is cleaned up later.
            status.kubernetes = prev.kubernetes.clone();
            // The grants may be bound, but the Kubernetes permissions are not: not Ready.
            if let Some(ready) = conditions.iter_mut().find(|c| c.type_ == READY) {
                *ready = Condition::new(READY, false, "RoleRefused", message.clone());
            }
            Condition::new(KUBERNETES_RBAC, false, "RoleRefused", message.clone())
        }
        RbacOutcome::Removed => Condition::new(
            KUBERNETES_RBAC,
            false,
            "NotActive",
            "no Role or RoleBinding exists outside the Entitlement's active window",
        ),
    }
}

/// The binding of a subject whose current certificate carries every grant.
fn binding(subject: &SubjectCertificate, grants: &BTreeSet<String>) -> Option<Binding> {
    if !grants.is_subset(&subject.grants) {
        return None;
    }
    Some(Binding {
        identity: subject.identity.clone(),
        serial_number: subject.serial_number.clone()?,
        thumbprint_sha256: subject.thumbprint_sha256.clone()?,
        not_after: subject.not_after.clone()?,
    })
}

/// Whether two statuses differ in anything but condition transition times.
pub fn entitlement_status_changed(
    old: Option<&EntitlementStatus>,
    new: &EntitlementStatus,
) -> bool {
    old.map(comparable_entitlement_status) != Some(comparable_entitlement_status(new))
}

/// The status with condition transition times blanked (what "changed" and "already written"
/// compare).
pub fn comparable_entitlement_status(status: &EntitlementStatus) -> EntitlementStatus {
    EntitlementStatus {
        conditions: without_transition_times(&status.conditions),
        ..status.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap()
    }

    fn grants(g: &[&str]) -> BTreeSet<String> {
        g.iter().map(|s| s.to_string()).collect()
    }

    fn subject(name: &str, carried: &[&str]) -> SubjectCertificate {
        SubjectCertificate {
            identity: name.into(),
            kubernetes_access: false,
            kube_users: vec![],
            grants: grants(carried),
            serial_number: Some(format!("{name}-serial")),
            thumbprint_sha256: Some(format!("{name}-thumb")),
            not_after: Some("2027-01-15T09:00:00Z".into()),
        }
    }

    fn ready(s: &EntitlementStatus) -> &Condition {
        s.conditions.iter().find(|c| c.type_ == READY).unwrap()
    }

    #[test]
    fn bound_when_every_subject_carries_the_grants() {
        let a = Assessment::Usable {
            phase: Phase::Active,
            grants: grants(&["payments.process"]),
            subjects: vec![
                subject("web", &["payments.process", "x.read"]),
                subject("api", &["payments.process"]),
            ],
        };
        let (s, pending) = desired_entitlement_status(None, &a, None, "TICKET-1", Some(3), now());
        assert!(!pending);
        assert!(ready(&s).is_true());
        assert_eq!(ready(&s).reason, "Bound");
        assert_eq!(s.bound_count, 2);
        assert_eq!(s.bindings[0].identity, "api", "sorted by identity");
        assert_eq!(s.bindings[0].thumbprint_sha256, "api-thumb");
        assert_eq!(s.justification.as_deref(), Some("TICKET-1"));
        assert_eq!(s.observed_generation, Some(3));
    }

    #[test]
    fn waits_for_subjects_without_the_grants() {
        let a = Assessment::Usable {
            phase: Phase::Active,
            grants: grants(&["payments.process", "payments.refund"]),
            subjects: vec![subject("api", &["payments.process"])],
        };
        let (s, pending) = desired_entitlement_status(None, &a, None, "j", None, now());
        assert!(pending);
        assert_eq!(ready(&s).reason, "Binding");
        assert!(s.bindings.is_empty());
    }

    #[test]
    fn phases_and_empty_selection() {
        for (phase, reason, expired) in [
            (Phase::Pending, "NotYetActive", false),
            (Phase::Expired, "Expired", true),
        ] {
            let a = Assessment::Usable {
                phase,
                grants: grants(&["a.b"]),
                subjects: vec![subject("api", &["a.b"])],
            };
            let (s, pending) = desired_entitlement_status(None, &a, None, "j", None, now());
            assert!(!pending);
            assert_eq!(ready(&s).reason, reason);
            assert!(
                s.bindings.is_empty(),
                "no binding outside the active window"
            );
            let e = s.conditions.iter().find(|c| c.type_ == EXPIRED).unwrap();
            assert_eq!(e.is_true(), expired);
        }
        let none = Assessment::Usable {
            phase: Phase::Active,
            grants: grants(&["a.b"]),
            subjects: vec![],
        };
        let (s, _) = desired_entitlement_status(None, &none, None, "j", None, now());
        assert_eq!(ready(&s).reason, "NoSubjects");
        assert!(
            s.conditions
                .iter()
                .any(|c| c.type_ == NO_SUBJECTS && c.is_true())
        );
    }

    #[test]
    fn bindings_are_listed_up_to_the_limit_and_all_counted() {
        let subjects = (0..300)
            .map(|i| subject(&format!("mi-{i:03}"), &["a.b"]))
            .collect();
        let a = Assessment::Usable {
            phase: Phase::Active,
            grants: grants(&["a.b"]),
            subjects,
        };
        let (s, _) = desired_entitlement_status(None, &a, None, "j", None, now());
        assert_eq!(s.bound_count, 300);
        assert_eq!(s.bindings.len(), MAX_LISTED_BINDINGS);
    }

    #[test]
    fn kubernetes_rbac_is_reported_and_a_refusal_is_not_ready() {
        let a = Assessment::Usable {
            phase: Phase::Active,
            grants: grants(&[]),
            subjects: vec![subject("tf", &[])],
        };
        let applied = RbacOutcome::Applied {
            role: "nhi-ent-x".into(),
            role_binding: Some("nhi-ent-x".into()),
            users: vec!["nhi:ns:tf".into()],
        };
        let (s, _) = desired_entitlement_status(None, &a, Some(&applied), "j", None, now());
        assert!(ready(&s).is_true());
        assert_eq!(s.kubernetes.as_ref().unwrap().users, vec!["nhi:ns:tf"]);
        let rbac = s
            .conditions
            .iter()
            .find(|c| c.type_ == KUBERNETES_RBAC)
            .unwrap();
        assert!(rbac.is_true());
        let refused = RbacOutcome::Refused {
            message: "roles.rbac.authorization.k8s.io \"nhi-ent-x\" is forbidden: user is attempting to grant RBAC permissions not currently held".into(),
        };
        let (s, _) = desired_entitlement_status(None, &a, Some(&refused), "j", None, now());
        assert_eq!(ready(&s).reason, "RoleRefused");
        assert!(ready(&s).message.contains("not currently held"));
        assert!(s.kubernetes.is_none());
    }

    #[test]
    fn recomputing_later_is_no_change() {
        let a = Assessment::Invalid {
            reason: "InvalidSelector".into(),
            message: "m".into(),
        };
        let (s, _) = desired_entitlement_status(None, &a, None, "j", Some(1), now());
        assert!(!ready(&s).is_true());
        let (again, _) = desired_entitlement_status(
            Some(&s),
            &a,
            None,
            "j",
            Some(1),
            now() + time::Duration::minutes(3),
        );
        assert!(!entitlement_status_changed(Some(&s), &again));
        assert!(entitlement_status_changed(None, &s));
    }
}
