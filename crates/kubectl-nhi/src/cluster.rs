//! Connecting to the cluster the way kubectl does: the kubeconfig, its context and namespace, and
//! who the apiserver says the caller is.

use std::path::PathBuf;

use clap::Args;
use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use kube::api::PostParams;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};

use crate::error::{PluginError, Target, cause_chain, from_kube};

/// Flags every command takes, as kubectl spells them.
#[derive(Args, Debug, Clone, Default)]
pub struct GlobalArgs {
    /// The namespace (default: the kubeconfig context's namespace, else `default`).
    #[arg(short = 'n', long, global = true)]
    pub namespace: Option<String>,
    /// The kubeconfig context to use (default: the current context).
    #[arg(long, global = true)]
    pub context: Option<String>,
    /// The kubeconfig file (default: `$KUBECONFIG`, else `~/.kube/config`).
    #[arg(long, global = true)]
    pub kubeconfig: Option<PathBuf>,
}

/// A client and the namespace commands act in.
pub struct Cluster {
    pub client: Client,
    pub namespace: String,
}

/// Connects with the kubeconfig kubectl would use (or the in-cluster configuration).
pub async fn connect(args: &GlobalArgs) -> Result<Cluster, PluginError> {
    let options = KubeConfigOptions {
        context: args.context.clone(),
        ..Default::default()
    };
    let kubeconfig_error = |e: &dyn std::error::Error| PluginError::Kubeconfig(cause_chain(e));
    let config = match (&args.kubeconfig, &args.context) {
        (Some(path), _) => {
            let kc = Kubeconfig::read_from(path).map_err(|e| kubeconfig_error(&e))?;
            Config::from_custom_kubeconfig(kc, &options)
                .await
                .map_err(|e| kubeconfig_error(&e))?
        }
        (None, Some(_)) => Config::from_kubeconfig(&options)
            .await
            .map_err(|e| kubeconfig_error(&e))?,
        (None, None) => Config::infer().await.map_err(|e| kubeconfig_error(&e))?,
    };
    let namespace = args
        .namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    let client = Client::try_from(config).map_err(|e| PluginError::Connection(cause_chain(&e)))?;
    Ok(Cluster { client, namespace })
}

/// The caller's user name as the apiserver sees it (a SelfSubjectReview); when that API is not
/// available to the caller, the user name of the kubeconfig context.
pub async fn who_am_i(cluster: &Cluster, args: &GlobalArgs) -> Result<String, PluginError> {
    let reviews: Api<SelfSubjectReview> = Api::all(cluster.client.clone());
    let answer = reviews
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await;
    let from_apiserver = match answer {
        Ok(review) => review
            .status
            .and_then(|s| s.user_info)
            .and_then(|u| u.username)
            .filter(|u| !u.is_empty()),
        // Not served (an old cluster) or not allowed: fall back to the kubeconfig.
        Err(kube::Error::Api(_)) => None,
        Err(other) => return Err(from_kube(other, Target::Other)),
    };
    from_apiserver
        .or_else(|| kubeconfig_user(args))
        .ok_or_else(|| {
            PluginError::Invalid(
                "cannot tell who you are: the apiserver does not answer SelfSubjectReviews and the kubeconfig context names no user".to_string(),
            )
        })
}

/// The user name of the kubeconfig context in use.
fn kubeconfig_user(args: &GlobalArgs) -> Option<String> {
    let kc = match &args.kubeconfig {
        Some(path) => Kubeconfig::read_from(path).ok()?,
        None => Kubeconfig::read().ok()?,
    };
    context_user(&kc, args.context.as_deref())
}

/// The user of `context` (or of the current context) in a kubeconfig.
fn context_user(kc: &Kubeconfig, context: Option<&str>) -> Option<String> {
    let name = context.map(str::to_string).or(kc.current_context.clone())?;
    kc.contexts
        .iter()
        .find(|c| c.name == name)?
        .context
        .as_ref()?
        .user
        .clone()
        .filter(|u| !u.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_user_comes_from_the_chosen_or_current_context() {
        let kc: Kubeconfig = serde_yaml::from_str(
            r#"
apiVersion: v1
kind: Config
current-context: dev
contexts:
- name: dev
  context: {cluster: local, user: alice}
- name: prod
  context: {cluster: remote, user: bob}
- name: anonymous
  context: {cluster: remote}
"#,
        )
        .unwrap();
        assert_eq!(context_user(&kc, None).as_deref(), Some("alice"));
        assert_eq!(context_user(&kc, Some("prod")).as_deref(), Some("bob"));
        assert_eq!(context_user(&kc, Some("anonymous")), None);
        assert_eq!(context_user(&kc, Some("missing")), None);
    }
}
