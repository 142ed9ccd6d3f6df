//! Whether the pod a PodCertificateRequest names is the one running and asked for this signer:
//! the node's admission checks kubelets' requests, but anyone allowed to create requests could
//! name any pod, copying its uid, ServiceAccount and node (readable to whoever may get pods).
//! A pod that has no `podCertificate` volume for the signer never asked for its identity.

use k8s_openapi::api::core::v1::Pod;

/// The verdict on the named pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PodCheck {
    Matches,
    /// The pod is gone, is not the one named, or has no volume for this signer: why.
    Differs(String),
}

/// What the request says of its pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamedPod<'a> {
    pub name: &'a str,
    pub uid: &'a str,
    pub service_account: &'a str,
    pub node: &'a str,
}

/// Checks `pod` (as read now; None: it does not exist) against what the request names, and
/// that it has a `podCertificate` volume for `signer`.
pub fn pod_check(pod: Option<&Pod>, named: &NamedPod<'_>, signer: &str) -> PodCheck {
    let Some(pod) = pod else {
        return PodCheck::Differs(format!("pod {} does not exist", named.name));
    };
    let spec = pod.spec.as_ref();
    let actual = NamedPod {
        name: named.name,
        uid: pod.metadata.uid.as_deref().unwrap_or_default(),
        service_account: spec
            .and_then(|s| s.service_account_name.as_deref())
            .unwrap_or("default"),
        node: spec
            .and_then(|s| s.node_name.as_deref())
            .unwrap_or_default(),
    };
    if actual != *named {
        return PodCheck::Differs(format!(
            "pod {} is (uid {}, ServiceAccount {}, node {}), the request names (uid {}, \
             ServiceAccount {}, node {})",
            named.name,
            actual.uid,
            actual.service_account,
            actual.node,
            named.uid,
            named.service_account,
            named.node
        ));
    }
    let asks = spec
        .and_then(|s| s.volumes.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|v| v.projected.as_ref()?.sources.as_ref())
        .flatten()
        .filter_map(|source| source.pod_certificate.as_ref())
        .any(|p| p.signer_name == signer);
    match asks {
        true => PodCheck::Matches,
        false => PodCheck::Differs(format!(
            "pod {} has no podCertificate volume for {signer}",
            named.name
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(signer: &str) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web-0", "uid": "u1"},
            "spec": {"serviceAccountName": "web", "nodeName": "n1", "containers": [],
                     "volumes": [{"name": "id", "projected": {"sources": [
                         {"podCertificate": {"signerName": signer, "keyType": "ECDSAP256"}}]}}]}
        }))
        .unwrap()
    }

    const S: &str = crate::podcert::DEFAULT_SIGNER_NAME;

    fn named<'a>(uid: &'a str, sa: &'a str) -> NamedPod<'a> {
        NamedPod {
            name: "web-0",
            uid,
            service_account: sa,
            node: "n1",
        }
    }

    #[test]
    fn the_pod_running_with_a_volume_for_the_signer_matches() {
        assert_eq!(
            pod_check(Some(&pod(S)), &named("u1", "web"), S),
            PodCheck::Matches
        );
    }

    #[test]
    fn a_gone_pod_another_uid_or_account_or_no_volume_for_us_differ() {
        let differs = |c: PodCheck, text: &str| match c {
            PodCheck::Differs(why) => assert!(why.contains(text), "{why}"),
            PodCheck::Matches => panic!("matched"),
        };
        differs(pod_check(None, &named("u1", "web"), S), "does not exist");
        differs(pod_check(Some(&pod(S)), &named("u2", "web"), S), "uid u2");
        differs(
            pod_check(Some(&pod(S)), &named("u1", "admin"), S),
            "ServiceAccount admin",
        );
        differs(
            pod_check(Some(&pod("example.com/other")), &named("u1", "web"), S),
            "no podCertificate volume for nhi.dev/identity",
        );
        // A pod asking another operator's signer is not this one's.
        differs(
            pod_check(Some(&pod(S)), &named("u1", "web"), "bench.nhi.dev/identity"),
            "no podCertificate volume for bench.nhi.dev/identity",
        );
    }
}
