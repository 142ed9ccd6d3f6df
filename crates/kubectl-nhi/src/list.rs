//! `kubectl nhi list`: the inventory of identities, one line each.

use clap::Args;
use kube::Api;
use kube::api::ListParams;
use nhi_api::MachineIdentity;
use nhi_api::condition::find_condition;
use nhi_identity::timestamp::parse_rfc3339;
use serde::Serialize;
use time::OffsetDateTime;

use crate::cluster::{GlobalArgs, connect};
use crate::dates::{ReviewStanding, expires, parse_date, review_standing, today_utc};
use crate::error::{PluginError, Target, from_kube};
use crate::output::{Format, structured, table};

/// `kubectl nhi list [-A] [-o table|json|yaml]`.
#[derive(Args, Debug)]
pub struct ListArgs {
    /// List identities in every namespace.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Format::Table)]
    pub output: Format,
}

/// One identity in the inventory. These field names are the stable `-o json|yaml` output.
#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct IdentityRow {
    pub namespace: String,
    pub name: String,
    /// `spec.owner.team`.
    pub owner: String,
    /// `spec.owner.contact`, when given.
    pub contact: Option<String>,
    /// `Kind/name` of `spec.workloadRef`, or null.
    pub workload: Option<String>,
    /// `spec.reviewBy` (YYYY-MM-DD), or null.
    pub review_by: Option<String>,
    /// `overdue`, `dueSoon` (within 14 days), `current`, or null without a review date.
    pub review: Option<&'static str>,
    /// Whole days from today (UTC) to `reviewBy`; negative once passed.
    pub review_days_left: Option<i64>,
    /// `status.notAfter` of the current certificate (RFC 3339), or null.
    pub not_after: Option<String>,
    /// `status.serialNumber` of the current certificate, or null.
    pub serial_number: Option<String>,
    /// `status.entitlements`: the grants the current certificate carries.
    pub grants: Vec<String>,
    /// Pod certificates (`spec.podCertificates`): the ServiceAccount covered and how many
    /// certificates its pods hold, or null.
    pub pod_certificates: Option<PodCertificatesRow>,
    /// `Ready`, the Ready condition's reason when it is not True (for example `ReviewOverdue`,
    /// `WorkloadMissing`), `Pending` before the operator has written a status, `Terminating`
    /// while being deleted.
    pub state: String,
}

/// The pod certificates of an identity.
#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PodCertificatesRow {
    pub service_account: String,
    /// `status.podCertificates.outstanding`: issued and not expired.
    pub outstanding: i32,
}

/// The state shown for an identity, from its Ready condition.
pub fn state_of(mi: &MachineIdentity) -> String {
    if mi.metadata.deletion_timestamp.is_some() {
        return "Terminating".to_string();
    }
    let ready = mi
        .status
        .as_ref()
        .and_then(|s| find_condition(&s.conditions, "Ready"));
    match ready {
        None => "Pending".to_string(),
        Some(c) if c.is_true() => "Ready".to_string(),
        Some(c) if c.reason.is_empty() => "NotReady".to_string(),
        Some(c) => c.reason.to_string(),
    }
}

/// The inventory line of one identity at `now`.
pub fn row_of(mi: &MachineIdentity, now: OffsetDateTime) -> IdentityRow {
    let spec = &mi.spec;
    let status = mi.status.clone().unwrap_or_default();
    let review_date = spec.review_by.as_deref().and_then(parse_date);
    IdentityRow {
        namespace: mi.metadata.namespace.clone().unwrap_or_default(),
        name: mi.metadata.name.clone().unwrap_or_default(),
        owner: spec.owner.team.clone(),
        contact: spec.owner.contact.clone(),
        workload: spec
            .workload_ref
            .as_ref()
            .map(|w| format!("{}/{}", w.kind, w.name)),
        review_by: spec.review_by.clone(),
        review: review_date.map(|d| match review_standing(d, now) {
            ReviewStanding::Overdue => "overdue",
            ReviewStanding::DueSoon(_) => "dueSoon",
            ReviewStanding::Current => "current",
        }),
        review_days_left: review_date.map(|d| (d - today_utc(now)).whole_days()),
        not_after: status.not_after.map(String::from),
        serial_number: status.serial_number,
        grants: status.entitlements,
        pod_certificates: spec.pod_certificates.as_ref().map(|p| PodCertificatesRow {
            service_account: p.service_account_name.clone(),
            outstanding: status
                .pod_certificates
                .as_ref()
                .map(|c| c.outstanding)
                .unwrap_or(0),
        }),
        state: state_of(mi),
    }
}

/// The table headers, with NAMESPACE first when listing every namespace.
pub fn headers(all_namespaces: bool) -> Vec<&'static str> {
    let mut h = vec![
        "NAME",
        "OWNER",
        "WORKLOAD",
        "REVIEW-BY",
        "EXPIRES",
        "GRANTS",
        "POD-CERTS",
        "STATE",
    ];
    if all_namespaces {
        h.insert(0, "NAMESPACE");
    }
    h
}

/// The table cells of a row at `now`.
pub fn cells(row: &IdentityRow, now: OffsetDateTime, all_namespaces: bool) -> Vec<String> {
    let dash = || "-".to_string();
    let review = match (&row.review_by, row.review, row.review_days_left) {
        (None, _, _) => dash(),
        (Some(d), Some("overdue"), _) => format!("{d} (overdue)"),
        (Some(d), Some("dueSoon"), Some(0)) => format!("{d} (due today)"),
        (Some(d), Some("dueSoon"), Some(n)) => format!("{d} (due in {n}d)"),
        (Some(d), _, _) => d.clone(),
    };
    let expiry = row
        .not_after
        .as_deref()
        .and_then(parse_rfc3339)
        .map(|t| expires(t, now))
        .unwrap_or_else(dash);
    let grants = if row.grants.is_empty() {
        dash()
    } else {
        row.grants.join(",")
    };
    let mut c = vec![
        row.name.clone(),
        row.owner.clone(),
        row.workload.clone().unwrap_or_else(dash),
        review,
        expiry,
        grants,
        row.pod_certificates
            .as_ref()
            .map(|p| format!("{} ({})", p.service_account, p.outstanding))
            .unwrap_or_else(dash),
        row.state.clone(),
    ];
    if all_namespaces {
        c.insert(0, row.namespace.clone());
    }
    c
}

/// Runs `list`.
pub async fn run(global: &GlobalArgs, args: &ListArgs) -> Result<String, PluginError> {
    let cluster = connect(global).await?;
    let api: Api<MachineIdentity> = if args.all_namespaces {
        Api::all(cluster.client.clone())
    } else {
        Api::namespaced(cluster.client.clone(), &cluster.namespace)
    };
    let list = api
        .list(&ListParams::default())
        .await
        .map_err(|e| from_kube(e, Target::Identities))?;
    let now = OffsetDateTime::now_utc();
    let mut rows: Vec<IdentityRow> = list.items.iter().map(|mi| row_of(mi, now)).collect();
    rows.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    if let Some(text) = structured(&rows, args.output)? {
        return Ok(text);
    }
    if rows.is_empty() {
        let place = if args.all_namespaces {
            "any namespace".to_string()
        } else {
            format!("the {} namespace", cluster.namespace)
        };
        eprintln!("No machine identities found in {place}.");
        return Ok(String::new());
    }
    let lines: Vec<Vec<String>> = rows
        .iter()
        .map(|r| cells(r, now, args.all_namespaces))
        .collect();
    Ok(table(&headers(args.all_namespaces), &lines))
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn identity(json: serde_json::Value) -> MachineIdentity {
        serde_json::from_value(json).unwrap()
    }

    fn ready(reason: &str, status: &str) -> serde_json::Value {
        serde_json::json!({"type": "Ready", "status": status, "reason": reason,
                           "message": "", "lastTransitionTime": "2026-03-01T00:00:00Z"})
    }

    const NOW: OffsetDateTime = datetime!(2026-03-01 12:00 UTC);

    #[test]
    fn a_ready_identity() {
        let mi = identity(serde_json::json!({
            "apiVersion": "nhi.dev/v1alpha1", "kind": "MachineIdentity",
            "metadata": {"name": "checkout", "namespace": "shop"},
            "spec": {"owner": {"team": "payments", "contact": "pay@example.com"},
                     "workloadRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "checkout"},
                     "reviewBy": "2026-06-30", "secretName": "checkout-identity"},
            "status": {"conditions": [ready("CertificateValid", "True")],
                       "notAfter": "2026-03-01T12:42:00Z", "serialNumber": "4a1f",
                       "entitlements": ["payments.process", "payments.refund"]}
        }));
        let row = row_of(&mi, NOW);
        assert_eq!(row.state, "Ready");
        assert_eq!(row.workload.as_deref(), Some("Deployment/checkout"));
        assert_eq!(row.review, Some("current"));
        assert_eq!(row.review_days_left, Some(121));
        assert_eq!(
            cells(&row, NOW, true),
            [
                "shop",
                "checkout",
                "payments",
                "Deployment/checkout",
                "2026-06-30",
                "in 42m",
                "payments.process,payments.refund",
                "-",
                "Ready"
            ]
        );
        let json = serde_json::to_value(&row).unwrap();
        for key in [
            "namespace",
            "name",
            "owner",
            "contact",
            "workload",
            "reviewBy",
            "review",
            "reviewDaysLeft",
            "notAfter",
            "serialNumber",
            "grants",
            "podCertificates",
            "state",
        ] {
            assert!(json.get(key).is_some(), "missing {key}: {json}");
        }
    }

    #[test]
    fn pod_certificates_show_the_service_account_and_how_many() {
        let mi = identity(serde_json::json!({
            "apiVersion": "nhi.dev/v1alpha1", "kind": "MachineIdentity",
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"owner": {"team": "t"}, "secretName": "web",
                     "podCertificates": {"serviceAccountName": "web-sa"}},
            "status": {"podCertificates": {"outstanding": 3, "certificates": []}}
        }));
        let row = row_of(&mi, NOW);
        assert_eq!(cells(&row, NOW, false)[6], "web-sa (3)");
        let json = serde_json::to_value(&row).unwrap();
        assert_eq!(json["podCertificates"]["outstanding"], 3);
    }

    #[test]
    fn overdue_due_soon_and_pending() {
        let base = |review: &str, status: serde_json::Value| {
            identity(serde_json::json!({
                "apiVersion": "nhi.dev/v1alpha1", "kind": "MachineIdentity",
                "metadata": {"name": "ci", "namespace": "build"},
                "spec": {"owner": {"team": "platform"}, "reviewBy": review, "secretName": "ci"},
                "status": status,
            }))
        };
        let overdue = row_of(
            &base(
                "2026-02-27",
                serde_json::json!({"conditions": [ready("ReviewOverdue", "False")],
                                   "notAfter": "2026-02-28T00:00:00Z"}),
            ),
            NOW,
        );
        assert_eq!(overdue.review, Some("overdue"));
        assert_eq!(overdue.review_days_left, Some(-2));
        assert_eq!(
            cells(&overdue, NOW, false),
            [
                "ci",
                "platform",
                "-",
                "2026-02-27 (overdue)",
                "expired",
                "-",
                "-",
                "ReviewOverdue"
            ]
        );
        let soon = row_of(&base("2026-03-06", serde_json::json!({})), NOW);
        assert_eq!(soon.state, "Pending");
        assert_eq!(cells(&soon, NOW, false)[3], "2026-03-06 (due in 5d)");
        assert_eq!(cells(&soon, NOW, false)[4], "-");
        let today = row_of(&base("2026-03-01", serde_json::json!({})), NOW);
        assert_eq!(cells(&today, NOW, false)[3], "2026-03-01 (due today)");
    }

    #[test]
    fn state_follows_the_ready_condition() {
        let mut mi = identity(serde_json::json!({
            "apiVersion": "nhi.dev/v1alpha1", "kind": "MachineIdentity",
            "metadata": {"name": "x"},
            "spec": {"owner": {"team": "t"}, "secretName": "x"},
        }));
        assert_eq!(state_of(&mi), "Pending");
        mi.status = Some(
            serde_json::from_value(
                serde_json::json!({"conditions": [ready("WorkloadMissing", "False")]}),
            )
            .unwrap(),
        );
        assert_eq!(state_of(&mi), "WorkloadMissing");
        mi.status = Some(
            serde_json::from_value(serde_json::json!({"conditions": [ready("", "Unknown")]}))
                .unwrap(),
        );
        assert_eq!(state_of(&mi), "NotReady");
        mi.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            ));
        assert_eq!(state_of(&mi), "Terminating");
    }

    #[test]
    fn headers_match_cells() {
        assert_eq!(headers(true).len(), 9);
        assert_eq!(headers(false).len(), 8);
        assert_eq!(headers(true)[0], "NAMESPACE");
    }
}
