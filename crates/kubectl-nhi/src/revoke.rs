//! `kubectl nhi revoke <name>`: asks the operator to revoke an identity's certificates now, and
//! waits for its answer in `status.lastRevocation`.

use std::time::{Duration, Instant};

use clap::{ArgAction, Args};
use kube::Api;
use kube::api::{Patch, PatchParams};
use nhi_api::MachineIdentity;
use nhi_api::condition::find_condition;
use nhi_core::labels::REVOKE_REQUESTED;
use nhi_identity::timestamp::rfc3339;
use time::OffsetDateTime;

use crate::cluster::{GlobalArgs, connect};
use crate::dates::parse_timeout;
use crate::error::{PluginError, Target, from_kube};
use crate::review::FIELD_MANAGER;

/// How often the identity is read while waiting.
const POLL: Duration = Duration::from_millis(250);

/// `kubectl nhi revoke <name> [--wait=false] [--timeout 30s]`.
#[derive(Args, Debug)]
pub struct RevokeArgs {
    /// The MachineIdentity whose certificates to revoke.
    pub name: String,
    /// Wait for the operator to confirm the revocation (`--wait=false` to only ask).
    #[arg(long, action = ArgAction::Set, num_args = 0..=1, default_value_t = true,
          default_missing_value = "true", value_name = "BOOL")]
    pub wait: bool,
    /// How long to wait for the operator (`30s`, `2m`, ...).
    #[arg(long, default_value = "30s")]
    pub timeout: String,
}

/// A fresh request value: the time and a random suffix, so that two requests never look alike.
pub fn request_value(now: OffsetDateTime, random: u32) -> String {
    format!("{}-{random:08x}", rfc3339(now))
}

/// The JSON merge patch that asks for a revocation.
pub fn revoke_patch(request: &str) -> serde_json::Value {
    serde_json::json!({"metadata": {"annotations": {REVOKE_REQUESTED: request}}})
}

/// What the operator did about a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The serial numbers put on the CRL.
    pub revoked: Vec<String>,
    /// The serial of a certificate issued since, if any.
    pub new_serial: Option<String>,
}

/// The operator's answer to `request`, once `status.lastRevocation.request` shows it.
pub fn answer_to(mi: &MachineIdentity, request: &str) -> Option<Answer> {
    let status = mi.status.as_ref()?;
    let last = status.last_revocation.as_ref()?;
    if last.request.as_deref() != Some(request) {
        return None;
    }
    let new_serial = status
        .serial_number
        .clone()
        .filter(|s| !last.serial_numbers.contains(s));
    Some(Answer {
        revoked: last.serial_numbers.clone(),
        new_serial,
    })
}

/// The operator's refusal of `request` (over a revocation quota), once the status shows it.
pub fn refusal_of<'a>(
    mi: &'a MachineIdentity,
    request: &str,
) -> Option<&'a nhi_api::RefusedRevocation> {
    mi.status
        .as_ref()?
        .refused_revocation
        .as_deref()
        .filter(|r| r.request == request)
}

/// Whether the operator will issue a new certificate after a revocation: not while the identity
/// is suspended for an overdue review, nor while it is being deleted.
pub fn expects_new_certificate(mi: &MachineIdentity) -> bool {
    let suspended = mi
        .status
        .as_ref()
        .and_then(|s| find_condition(&s.conditions, "Ready"))
        .is_some_and(|c| !c.is_true() && c.reason == "ReviewOverdue");
    !suspended && mi.metadata.deletion_timestamp.is_none()
}

/// The report printed once the operator has answered.
pub fn describe(ns: &str, name: &str, answer: &Answer, expecting_new: bool) -> String {
    let mut out = format!("machineidentity {ns}/{name} revoked\n");
    if answer.revoked.is_empty() {
        out.push_str("revoked serials: none (no unexpired certificate)\n");
    } else {
        out.push_str(&format!("revoked serials: {}\n", answer.revoked.join(", ")));
    }
    match (&answer.new_serial, expecting_new) {
        (Some(serial), _) => out.push_str(&format!("new serial:      {serial}\n")),
        (None, true) => out.push_str("new serial:      not issued yet\n"),
        (None, false) => out.push_str("new serial:      none (the identity is suspended)\n"),
    }
    out
}

/// Runs `revoke`.
pub async fn run(global: &GlobalArgs, args: &RevokeArgs) -> Result<String, PluginError> {
    let timeout = parse_timeout(&args.timeout).ok_or_else(|| {
        PluginError::Invalid(format!(
            "--timeout must be a duration such as 30s or 2m, got {:?}",
            args.timeout
        ))
    })?;
    let cluster = connect(global).await?;
    let ns = cluster.namespace.clone();
    let target = Target::Identity {
        namespace: &ns,
        name: &args.name,
    };
    let api: Api<MachineIdentity> = Api::namespaced(cluster.client.clone(), &ns);
    // A read first, so that a missing identity is reported as such rather than as a failed patch.
    api.get(&args.name)
        .await
        .map_err(|e| from_kube(e, target))?;
    let request = request_value(OffsetDateTime::now_utc(), rand::random());
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.to_string()),
        ..Default::default()
    };
    api.patch(&args.name, &params, &Patch::Merge(revoke_patch(&request)))
        .await
        .map_err(|e| from_kube(e, target))?;
    if !args.wait {
        return Ok(format!(
            "revocation of machineidentity {ns}/{} requested ({REVOKE_REQUESTED}={request}); the operator answers in status.lastRevocation\n",
            args.name
        ));
    }
    let deadline = Instant::now() + timeout;
    let (mut answer, mut mi) = loop {
        let mi = read_while_waiting(&api, &ns, &args.name, target).await?;
        if let Some(answer) = answer_to(&mi, &request) {
            break (answer, mi);
        }
        if let Some(refused) = refusal_of(&mi, &request) {
            return Err(PluginError::RevocationRefused {
                namespace: ns.clone(),
                name: args.name.clone(),
                reason: refused.reason.clone(),
                message: refused.message.clone(),
            });
        }
        if Instant::now() >= deadline {
            return Err(PluginError::NoAnswer(args.timeout.clone()));
        }
        tokio::time::sleep(POLL).await;
    };
    // The new certificate may follow the revocation in a later status write.
    while answer.new_serial.is_none() && expects_new_certificate(&mi) && Instant::now() < deadline {
        tokio::time::sleep(POLL).await;
        mi = read_while_waiting(&api, &ns, &args.name, target).await?;
        if let Some(next) = answer_to(&mi, &request) {
            answer = next;
        }
    }
    Ok(describe(
        &ns,
        &args.name,
        &answer,
        expects_new_certificate(&mi),
    ))
}

/// Reads the identity; its disappearance is an error of its own.
async fn read_while_waiting(
    api: &Api<MachineIdentity>,
    ns: &str,
    name: &str,
    target: Target<'_>,
) -> Result<MachineIdentity, PluginError> {
    api.get_opt(name)
        .await
        .map_err(|e| from_kube(e, target))?
        .ok_or_else(|| PluginError::DeletedWhileWaiting {
            namespace: ns.to_string(),
            name: name.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn identity(status: serde_json::Value) -> MachineIdentity {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "nhi.dev/v1alpha1", "kind": "MachineIdentity",
            "metadata": {"name": "checkout", "namespace": "shop"},
            "spec": {"owner": {"team": "payments"}, "secretName": "checkout"},
            "status": status,
        }))
        .unwrap()
    }

    #[test]
    fn a_refusal_answers_only_its_own_request() {
        let mi = identity(serde_json::json!({"refusedRevocation": {
            "request": "r2", "reason": "RevocationQuotaExceeded",
            "message": "identity shop/checkout already has 32 revoked certificates",
            "refusedAt": "2026-03-01T12:00:00Z"}}));
        assert_eq!(
            refusal_of(&mi, "r2").map(|r| r.reason.as_str()),
            Some("RevocationQuotaExceeded")
        );
        assert!(refusal_of(&mi, "r1").is_none());
        assert!(answer_to(&mi, "r2").is_none());
    }

    #[test]
    fn requests_are_unique_and_patched_as_an_annotation() {
        let now = datetime!(2026-03-01 12:00 UTC);
        let a = request_value(now, 1);
        let b = request_value(now, 0xdead_beef);
        assert_eq!(a, "2026-03-01T12:00:00Z-00000001");
        assert_ne!(a, b);
        assert_eq!(
            revoke_patch(&b),
            serde_json::json!({"metadata": {"annotations": {"nhi.dev/revoke-requested": b}}})
        );
    }

    #[test]
    fn only_the_answer_to_this_request_counts() {
        let revocation = |request: &str| {
            serde_json::json!({"reason": "RevokeRequested", "revokedAt": "2026-03-01T12:00:01Z",
                               "serialNumbers": ["aa", "bb"], "request": request})
        };
        let old =
            identity(serde_json::json!({"serialNumber": "aa", "lastRevocation": revocation("r0")}));
        assert_eq!(answer_to(&old, "r1"), None);
        assert_eq!(answer_to(&identity(serde_json::json!({})), "r1"), None);

        let same_cert =
            identity(serde_json::json!({"serialNumber": "aa", "lastRevocation": revocation("r1")}));
        assert_eq!(
            answer_to(&same_cert, "r1"),
            Some(Answer {
                revoked: vec!["aa".into(), "bb".into()],
                new_serial: None
            })
        );
        let renewed =
            identity(serde_json::json!({"serialNumber": "cc", "lastRevocation": revocation("r1")}));
        assert_eq!(
            answer_to(&renewed, "r1").unwrap().new_serial.as_deref(),
            Some("cc")
        );
    }

    #[test]
    fn a_suspended_identity_gets_no_new_certificate() {
        let ready = |status: &str, reason: &str| {
            identity(
                serde_json::json!({"conditions": [{"type": "Ready", "status": status,
                "reason": reason, "message": "", "lastTransitionTime": "2026-03-01T00:00:00Z"}]}),
            )
        };
        assert!(!expects_new_certificate(&ready("False", "ReviewOverdue")));
        assert!(expects_new_certificate(&ready("True", "CertificateValid")));
        assert!(expects_new_certificate(&ready("False", "Issuing")));
    }

    #[test]
    fn the_report_names_revoked_and_new_serials() {
        let answer = Answer {
            revoked: vec!["aa".into(), "bb".into()],
            new_serial: Some("cc".into()),
        };
        assert_eq!(
            describe("shop", "checkout", &answer, true),
            "machineidentity shop/checkout revoked\nrevoked serials: aa, bb\nnew serial:      cc\n"
        );
        let suspended = Answer {
            revoked: vec![],
            new_serial: None,
        };
        let text = describe("shop", "checkout", &suspended, false);
        assert!(text.contains("none (no unexpired certificate)") && text.contains("suspended"));
    }
}
