//! `kubectl nhi delegations NAME`: what an identity delegated, from its `status.delegation` (the
//! counts and the most recent children; the operator's audit log has every one).

use clap::Args;
use kube::Api;

use crate::cluster::{GlobalArgs, connect};
use crate::error::{PluginError, Target, from_kube};
use crate::output::{Format, fields, structured, table};
use nhi_api::{DelegationStatus, MachineIdentity};

#[derive(Args, Debug)]
pub struct DelegationsArgs {
    /// The MachineIdentity.
    pub name: String,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Format::Table)]
    pub output: Format,
}

/// The text report of `status` (None: the identity has delegated nothing yet).
pub fn render(name: &str, enabled: bool, status: Option<&DelegationStatus>) -> String {
    let Some(d) = status else {
        return match enabled {
            true => format!("{name} has delegated nothing yet\n"),
            false => format!("{name} does not allow delegation (spec.delegation)\n"),
        };
    };
    let mut out = fields(&[
        ("Identity", name.to_string()),
        ("Delegated", d.delegated.to_string()),
        ("Refused", d.refused.to_string()),
        (
            "Last",
            d.last_delegated_at.clone().unwrap_or_else(|| "-".into()),
        ),
    ]);
    if !d.recent.is_empty() {
        let rows: Vec<Vec<String>> = d
            .recent
            .iter()
            .map(|r| {
                vec![
                    r.delegated_at.clone(),
                    r.task_id.clone(),
                    r.serial_number.clone(),
                    r.grants.join(","),
                    r.not_after.clone(),
                    r.parent_serial_number.clone(),
                ]
            })
            .collect();
        out.push('\n');
        out.push_str(&table(
            &[
                "DELEGATED",
                "TASK",
                "SERIAL",
                "GRANTS",
                "NOT-AFTER",
                "PARENT-SERIAL",
            ],
            &rows,
        ));
    }
    out
}

/// Runs `delegations`.
pub async fn run(global: &GlobalArgs, args: &DelegationsArgs) -> Result<String, PluginError> {
    let cluster = connect(global).await?;
    let ns = cluster.namespace.clone();
    let api: Api<MachineIdentity> = Api::namespaced(cluster.client.clone(), &ns);
    let mi = api.get(&args.name).await.map_err(|e| {
        from_kube(
            e,
            Target::Identity {
                namespace: &ns,
                name: &args.name,
            },
        )
    })?;
    let status = mi.status.as_ref().and_then(|s| s.delegation.as_deref());
    if let Some(text) = structured(&status.cloned().unwrap_or_default(), args.output)? {
        return Ok(text);
    }
    Ok(render(
        &format!("{ns}/{}", args.name),
        mi.spec.delegation.is_some(),
        status,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use nhi_api::DelegationRecord;

    #[test]
    fn the_counts_and_the_recent_children_are_shown() {
        let status = DelegationStatus {
            delegated: 2,
            refused: 1,
            last_delegated_at: Some("2026-12-05T10:42:07Z".into()),
            recent: vec![DelegationRecord {
                serial_number: "7a".into(),
                task_id: "T-1".into(),
                grants: vec!["payments.refund".into()],
                delegated_at: "2026-12-05T10:42:07Z".into(),
                not_after: "2026-12-05T10:44:07Z".into(),
                parent_serial_number: "11".into(),
                ..Default::default()
            }],
        };
        let text = render("support/agent", true, Some(&status));
        assert!(text.contains("Delegated") && text.contains('2'), "{text}");
        assert!(
            text.contains("T-1") && text.contains("payments.refund"),
            "{text}"
        );
        assert!(render("a", false, None).contains("does not allow delegation"));
        assert!(render("a", true, None).contains("nothing yet"));
    }
}
