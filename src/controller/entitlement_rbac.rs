//! Writes (or removes) an Entitlement's Role and RoleBinding. A Role the apiserver refuses (the
//! operator cannot grant what it does not hold), rules no Entitlement may grant, or a same-named
//! object that is not ours are outcomes to report, not errors. Objects not labelled for the
//! Entitlement are never changed or deleted.

use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::{Api, Client, ResourceExt};

use super::entitlement_status::RbacOutcome;
use crate::entitle::rbac::{RbacPlan, is_ours, rbac_name};
use crate::labels::FIELD_MANAGER;

/// Carries out `plan` in `namespace` for the Entitlement `entitlement`. Deletions only touch
/// objects labelled for it, and, when `owner_uid` is given, owned by exactly that object.
pub async fn apply_rbac(
    client: &Client,
    namespace: &str,
    entitlement: &str,
    owner_uid: Option<&str>,
    plan: RbacPlan,
) -> Result<RbacOutcome, kube::Error> {
    let roles: Api<Role> = Api::namespaced(client.clone(), namespace);
    let bindings: Api<RoleBinding> = Api::namespaced(client.clone(), namespace);
    let name = rbac_name(entitlement);
    let apply = PatchParams::apply(FIELD_MANAGER).force();
    let existing_role = roles.get_opt(&name).await?;
    let existing_binding = bindings.get_opt(&name).await?;
    let foreign = |meta: &kube::api::ObjectMeta| !is_ours(meta, entitlement, None);
    let remove_binding = || async {
        match &existing_binding {
            Some(b) if is_ours(&b.metadata, entitlement, owner_uid) => {
                delete_exactly(&bindings, &name, b.uid()).await
            }
            _ => Ok(()),
        }
    };
    match plan {
        RbacPlan::Remove => {
            remove_binding().await?;
            if let Some(r) = &existing_role
                && is_ours(&r.metadata, entitlement, owner_uid)
            {
                delete_exactly(&roles, &name, r.uid()).await?;
            }
            Ok(RbacOutcome::Removed)
        }
        RbacPlan::Refuse(message) => {
            remove_binding().await?;
            Ok(RbacOutcome::Refused { message })
        }
        RbacPlan::Apply { role, binding } => {
            if let Some(other) = [
                existing_role.as_ref().map(|r| (&r.metadata, "Role")),
                existing_binding
                    .as_ref()
                    .map(|b| (&b.metadata, "RoleBinding")),
            ]
            .into_iter()
            .flatten()
            .find(|(meta, _)| foreign(meta))
            {
                return Ok(RbacOutcome::Refused {
                    message: format!(
                        "{} {namespace}/{name} exists and is not managed by this Entitlement; it is left untouched",
                        other.1
                    ),
                });
            }
            match roles.patch(&name, &apply, &Patch::Apply(&*role)).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 403 || s.code == 422 => {
                    // Nothing may stay bound to a Role that does not say what it should.
                    remove_binding().await?;
                    return Ok(RbacOutcome::Refused { message: s.message });
                }
                Err(e) => return Err(e),
            }
            let users: Vec<String> = match &binding {
                Some(b) => b
                    .subjects
                    .iter()
                    .flatten()
                    .map(|s| s.name.clone())
                    .collect(),
                None => vec![],
            };
            match binding {
                Some(b) => match bindings.patch(&name, &apply, &Patch::Apply(&*b)).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(s)) if s.code == 403 || s.code == 422 => {
                        remove_binding().await?;
                        return Ok(RbacOutcome::Refused { message: s.message });
                    }
                    Err(e) => return Err(e),
                },
                None => remove_binding().await?,
            }
            Ok(RbacOutcome::Applied {
                role: role.name_any(),
                role_binding: (!users.is_empty()).then(|| name.clone()),
                users,
            })
        }
    }
}

/// Deletes `name` if it is still the object with `uid` (a precondition), absent or not.
async fn delete_exactly<K>(api: &Api<K>, name: &str, uid: Option<String>) -> Result<(), kube::Error>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid,
            resource_version: None,
        }),
        ..DeleteParams::background()
    };
    match api.delete(name, &params).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}
