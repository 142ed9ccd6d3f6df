//! Fixtures of the tests that need IdentityPolicies of their own: a cluster-scoped policy removed
//! when dropped, and the refusal admission gives once it has seen a policy.

use std::time::Duration;

use kube::api::{DeleteParams, PostParams};
use kube::{Api, Client};
use nhi_operator::api::IdentityPolicy;
use serde_json::json;

use crate::support::{clean_up_from_drop, wait_for};

/// An IdentityPolicy deleted when dropped.
pub struct ClusterPolicy {
    pub name: String,
}

impl ClusterPolicy {
    pub async fn create(client: &Client, name: &str, spec: serde_json::Value) -> Self {
        let api: Api<IdentityPolicy> = Api::all(client.clone());
        let policy: IdentityPolicy = serde_json::from_value(json!({
            "apiVersion": "nhi.dev/v1alpha1", "kind": "IdentityPolicy",
            "metadata": {"name": name}, "spec": spec
        }))
        .expect("an IdentityPolicy");
        api.create(&PostParams::default(), &policy)
            .await
            .unwrap_or_else(|e| panic!("create IdentityPolicy {name}: {e}"));
        ClusterPolicy { name: name.into() }
    }
}

impl Drop for ClusterPolicy {
    fn drop(&mut self) {
        let name = std::mem::take(&mut self.name);
        clean_up_from_drop(move |client| async move {
            let api: Api<IdentityPolicy> = Api::all(client);
            let _ = api.delete(&name, &DeleteParams::default()).await;
        });
    }
}

/// The message of a creation admission refuses (403). Admission learns of new IdentityPolicies
/// through a cache: dry runs are tried until one is refused (10 s at most), then the creation
/// itself must be refused too.
pub async fn refused<K>(api: &Api<K>, obj: &K) -> String
where
    K: kube::Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let dry = PostParams {
        dry_run: true,
        ..Default::default()
    };
    wait_for(
        Duration::from_secs(10),
        "a refusal at admission",
        || async {
            match api.create(&dry, obj).await {
                Err(kube::Error::Api(s)) if s.code == 403 => Some(()),
                _ => None,
            }
        },
    )
    .await;
    match api.create(&PostParams::default(), obj).await {
        Err(kube::Error::Api(s)) if s.code == 403 => s.message,
        other => panic!("expected a refusal at admission, got {other:?}"),
    }
}
