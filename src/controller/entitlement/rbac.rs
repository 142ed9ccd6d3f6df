//! Carries out an Entitlement's RBAC writes (decided by [`super::plan::rbac_writes`]): applies or
//! deletes its Role and RoleBinding. A Role or RoleBinding the apiserver refuses (the operator
//! cannot grant what it does not hold, or the rules are invalid) is an outcome to report, not an
//! error. Objects not labelled for the Entitlement are never changed or deleted.

use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::{Api, Client};

use super::facts::existing_rbac;
use super::plan::{RbacDecision, RbacWrites, rbac_writes};
use super::status::RbacOutcome;
use nhi_core::entitle::rbac::{RbacPlan, rbac_name};
use nhi_core::labels::FIELD_MANAGER;

/// Carries out `writes` for Entitlement `entitlement` in `namespace`.
pub async fn write_rbac(
    client: &Client,
    namespace: &str,
    entitlement: &str,
    writes: RbacWrites,
) -> Result<RbacOutcome, kube::Error> {
    let roles: Api<Role> = Api::namespaced(client.clone(), namespace);
    let bindings: Api<RoleBinding> = Api::namespaced(client.clone(), namespace);
    let name = rbac_name(entitlement);
    let remove_binding = || async {
        match &writes.binding_to_delete {
            Some(uid) => delete_exactly(&bindings, &name, uid.clone()).await,
            None => Ok(()),
        }
    };
    let apply = PatchParams::apply(FIELD_MANAGER).force();
    if let Some(role) = &writes.role
        && let Some(message) = refused(roles.patch(&name, &apply, &Patch::Apply(&**role)).await)?
    {
        // Nothing may stay bound to a Role that does not say what it should.
        remove_binding().await?;
        return Ok(RbacOutcome::Refused { message });
    }
    match &writes.binding {
        Some(b) => {
            if let Some(message) =
                refused(bindings.patch(&name, &apply, &Patch::Apply(&**b)).await)?
            {
                remove_binding().await?;
                return Ok(RbacOutcome::Refused { message });
            }
        }
        None => remove_binding().await?,
    }
    if let Some(uid) = &writes.role_to_delete {
        delete_exactly(&roles, &name, uid.clone()).await?;
    }
    Ok(writes.outcome)
}

/// The apiserver's message when it refused an apply (403, 422), None when it took it.
fn refused<K>(result: Result<K, kube::Error>) -> Result<Option<String>, kube::Error> {
    match result {
        Ok(_) => Ok(None),
        Err(kube::Error::Api(s)) if s.code == 403 || s.code == 422 => Ok(Some(s.message)),
        Err(e) => Err(e),
    }
}

/// Removes the Role and RoleBinding of a deleted Entitlement whose uid was `owner_uid` (only the
/// objects it owns, not a re-created one's).
pub async fn remove_rbac(
    client: &Client,
    namespace: &str,
    entitlement: &str,
    owner_uid: &str,
) -> Result<(), kube::Error> {
    let existing = existing_rbac(client, namespace, entitlement).await?;
    let decision = rbac_writes(
        &existing,
        entitlement,
        namespace,
        Some(owner_uid),
        RbacPlan::Remove,
    );
    if let RbacDecision::Write(writes) = decision {
        write_rbac(client, namespace, entitlement, writes).await?;
    }
    Ok(())
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
