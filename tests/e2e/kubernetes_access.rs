//! Kubernetes API access end to end: an identity's own client certificate (CSR approved by the
//! operator), a kubeconfig in its Secret, and exactly the permissions its Entitlement grants,
//! enforced by the real RBAC authorizer.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::config::Kubeconfig;
use kube::{Api, Client};
use serde_json::json;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::support::*;

/// kubectl authenticated only by `kubeconfig` (not the tests' admin credentials).
fn kubectl_as(kubeconfig: &Path, args: &[&str]) -> Output {
    let bin = std::env::var("NHI_E2E_KUBECTL").unwrap_or_else(|_| "kubectl".into());
    let cache = std::env::temp_dir().join(format!("nhi-e2e-kubectl-as-{}", std::process::id()));
    Command::new(bin)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .env_remove("KUBECONFIG")
        .env("KUBECACHEDIR", cache)
        .output()
        .expect("kubectl runs")
}

fn forbidden(out: &Output) -> bool {
    !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("forbidden")
}

fn configmap(name: &str) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name}, "data": {"k": "v"}})).unwrap()
}

/// Waits for the identity's Secret to hold a kubeconfig other than `not`, writes it to `path`
/// and returns it.
async fn wait_for_kubeconfig(
    secrets: &Api<Secret>,
    name: &str,
    not: Option<&str>,
    path: &Path,
    timeout: Duration,
) -> String {
    let kubeconfig = wait_for(timeout, "a kubeconfig in the identity Secret", || async {
        let s = secrets.get_opt(name).await.ok().flatten()?;
        let k = secret_text(&s, "kubeconfig");
        (!k.is_empty() && Some(k.as_str()) != not).then_some(k)
    })
    .await;
    std::fs::write(path, &kubeconfig).unwrap();
    kubeconfig
}

/// The serial of the client certificate embedded in a kubeconfig.
fn client_serial(kubeconfig: &str) -> String {
    use base64::Engine;
    let v: serde_json::Value = serde_yaml::from_str(kubeconfig).unwrap();
    let data = v["users"][0]["user"]["client-certificate-data"]
        .as_str()
        .unwrap();
    let pem = base64::engine::general_purpose::STANDARD
        .decode(data)
        .unwrap();
    let der = nhi_identity::pem_chain::pem_certificates(&String::from_utf8(pem).unwrap()).unwrap();
    let (_, cert) = X509Certificate::from_der(&der[0]).unwrap();
    hex::encode(cert.raw_serial())
}

/// The rule every test grants: read ConfigMaps.
fn read_configmaps() -> serde_json::Value {
    json!({"rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}]})
}

#[tokio::test]
async fn an_identity_uses_the_api_with_exactly_the_permissions_of_its_entitlement() {
    let mut env =
        OperatorNamespace::start("kacc", &["--kubernetes-access", "--metrics-per-identity"]).await;
    let (client, ns) = (&env.client, env.ns.as_str());
    let other = TestNamespace::create(client, "kother").await;
    let (mis, ents, secrets) = (env.identities(), env.entitlements(), env.secrets());
    for (api, n) in [
        (Api::<ConfigMap>::namespaced(client.clone(), ns), "settings"),
        (
            Api::<ConfigMap>::namespaced(client.clone(), &other.name),
            "elsewhere",
        ),
    ] {
        api.create(&PostParams::default(), &configmap(n))
            .await
            .unwrap();
    }
    env.create_identity(
        "terraform",
        json!({"owner": {"team": "platform"}, "secretName": "terraform-identity",
               "certificate": {"ttl": "10m"}, "kubernetesAccess": {"enabled": true}}),
    )
    .await;
    env.create_identity(
        "plain",
        json!({"owner": {"team": "platform"}, "secretName": "plain-identity"}),
    )
    .await;
    env.create_entitlement(
        "terraform-reads-config",
        json!({"subjects": {"names": ["terraform"]}, "grants": [],
               "kubernetes": read_configmaps(),
               "justification": "INFRA-12: terraform plans read cluster settings"}),
    )
    .await;
    let ready = wait_ready(&mis, "terraform", Duration::from_secs(20)).await;
    let access = ready
        .status
        .unwrap()
        .kubernetes_access
        .expect("status reports the credential");
    // The user is this issuance's: its certificate's serial ends the name.
    let serial = mis
        .get("terraform")
        .await
        .unwrap()
        .status
        .unwrap()
        .serial_number
        .unwrap();
    let user = access.user.clone();
    assert_eq!(
        user,
        format!("nhi:{ns}:terraform:{}", &serial[serial.len() - 16..])
    );
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    let first = wait_for_kubeconfig(
        &secrets,
        "terraform-identity",
        None,
        &kubeconfig,
        Duration::from_secs(10),
    )
    .await;

    // Who it is: its own user, no groups but the one every authenticated user has.
    let whoami = kubectl_as(&kubeconfig, &["auth", "whoami", "-o", "json"]);
    assert!(
        whoami.status.success(),
        "{}",
        String::from_utf8_lossy(&whoami.stderr)
    );
    let info: serde_json::Value = serde_json::from_slice(&whoami.stdout).unwrap();
    assert_eq!(info["status"]["userInfo"]["username"], user);
    assert_eq!(
        info["status"]["userInfo"]["groups"],
        json!(["system:authenticated"])
    );

    // What it may do: list ConfigMaps here (once the RoleBinding exists)...
    wait_for(
        Duration::from_secs(5),
        "listing ConfigMaps with the identity's kubeconfig",
        || async {
            kubectl_as(&kubeconfig, &["get", "configmaps", "-n", ns, "-o", "name"])
                .status
                .success()
                .then_some(())
        },
    )
    .await;
    let listed = kubectl_as(
        &kubeconfig,
        &["get", "configmap", "settings", "-n", ns, "-o", "name"],
    );
    assert_eq!(
        String::from_utf8_lossy(&listed.stdout).trim(),
        "configmap/settings"
    );
    // ...and nothing else: no delete, no Secrets, no other namespace.
    assert!(forbidden(&kubectl_as(
        &kubeconfig,
        &["delete", "configmap", "settings", "-n", ns]
    )));
    assert!(forbidden(&kubectl_as(
        &kubeconfig,
        &["get", "secrets", "-n", ns]
    )));
    assert!(forbidden(&kubectl_as(
        &kubeconfig,
        &["get", "configmaps", "-n", &other.name]
    )));

    // The Entitlement reports the Role and the binding; no CSR is left behind.
    let status = wait_for(
        Duration::from_secs(5),
        "the Entitlement to report its RoleBinding",
        || async {
            let s = ents.get("terraform-reads-config").await.ok()?.status?;
            let k = s.kubernetes.clone()?;
            (k.users == vec![user.clone()] && k.role_binding.is_some()).then_some(s)
        },
    )
    .await;
    assert!(
        status
            .conditions
            .iter()
            .any(|c| c.type_ == "KubernetesRBAC" && c.status == "True")
    );
    let csrs: Api<CertificateSigningRequest> = Api::all(client.clone());
    let left = csrs
        .list(
            &ListParams::default().labels(&format!("{}=terraform", nhi_operator::labels::IDENTITY)),
        )
        .await
        .unwrap();
    assert!(left.items.is_empty(), "completed CSRs are deleted");
    // An identity without kubernetesAccess never gets a kubeconfig.
    wait_ready(&mis, "plain", Duration::from_secs(10)).await;
    let plain = secrets.get("plain-identity").await.unwrap();
    assert!(!plain.data.unwrap().contains_key("kubeconfig"));
    assert!(first.contains("client-key-data"));
    let status_json = serde_json::to_string(&mis.get("terraform").await.unwrap().status).unwrap();
    assert!(!status_json.contains("PRIVATE KEY") && !status_json.contains("client-key-data"));

    // Rules that would pass on the operator's own powers (it may read Secrets) are refused at
    // admission, whoever asks (the operator refuses them too: see the tenancy tests).
    let refused = ents
        .create(
            &PostParams::default(),
            &entitlement(
                "terraform-reads-secrets",
                json!({"subjects": {"names": ["terraform"]},
                       "kubernetes": {"rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]},
                       "justification": "should never be granted"}),
            ),
        )
        .await
        .expect_err("admission refuses Secrets");
    assert!(refused.to_string().contains("get on secrets"), "{refused}");
    assert!(forbidden(&kubectl_as(
        &kubeconfig,
        &["get", "secrets", "-n", ns]
    )));

    // A restart (or a leader change) keeps the access: the RoleBinding is not rebuilt empty.
    // The restarted operator has judged the identity (it records its certificate's expiry) and
    // the Entitlement (a change to it, made once the caches synced, has been reconciled).
    env.op.restart();
    env.op.wait_ready(Duration::from_secs(20)).await;
    wait_for(
        Duration::from_secs(20),
        "the restarted operator to judge terraform",
        || async {
            let (_, metrics) = env.op.get("/metrics").await?;
            metrics
                .contains(&format!(
                    "nhi_certificate_expiry_timestamp_seconds{{namespace=\"{ns}\",name=\"terraform\"}}"
                ))
                .then_some(())
        },
    )
    .await;
    let before = env.op.settle(Controller::Entitlements).await;
    ents.patch(
        "terraform-reads-config",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {"e2e/touched": "after-restart"}}})),
    )
    .await
    .unwrap();
    env.op
        .wait_reconciled_since(Controller::Entitlements, before)
        .await;
    env.op.settle(Controller::Identities).await;
    assert!(
        kubectl_as(&kubeconfig, &["get", "configmaps", "-n", ns])
            .status
            .success(),
        "access survives an operator restart"
    );

    // Deleting the Entitlement takes the permission away within 5 s.
    let deleted = Instant::now();
    ents.delete("terraform-reads-config", &DeleteParams::default())
        .await
        .unwrap();
    wait_for(
        Duration::from_secs(5),
        "the kubeconfig to lose its permission",
        || async {
            forbidden(&kubectl_as(&kubeconfig, &["get", "configmaps", "-n", ns])).then_some(())
        },
    )
    .await;
    eprintln!(
        "Entitlement deleted -> listing ConfigMaps forbidden: {:?}",
        deleted.elapsed()
    );
}

#[tokio::test]
async fn the_client_certificate_rotates_and_access_ends_at_expires_at() {
    let env = OperatorNamespace::start("krot", &["--kubernetes-access"]).await;
    let ns = env.ns.as_str();
    let secrets = env.secrets();
    // Renewed at 10 to 15 % of 5 minutes: 30 to 45 s. The Entitlement carries no grant, so the
    // certificate is not capped at its expiresAt (a capped one is not renewed early).
    env.create_identity(
        "ci-job",
        json!({"owner": {"team": "ci"}, "secretName": "ci-job-identity",
               "certificate": {"ttl": "5m", "renewalPercent": 10},
               "kubernetesAccess": {"enabled": true}}),
    )
    .await;
    let expires_at =
        OffsetDateTime::now_utc().replace_nanosecond(0).unwrap() + time::Duration::seconds(80);
    env.create_entitlement(
        "ci-reads-config",
        json!({"subjects": {"names": ["ci-job"]},
               "kubernetes": read_configmaps(),
               "expiresAt": expires_at.format(&Rfc3339).unwrap(),
               "justification": "CI-5: a deploy window"}),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let (first_path, second_path) = (dir.path().join("first"), dir.path().join("second"));
    let first = wait_for_kubeconfig(
        &secrets,
        "ci-job-identity",
        None,
        &first_path,
        Duration::from_secs(20),
    )
    .await;
    let can_list = |p: &Path| {
        kubectl_as(p, &["get", "configmaps", "-n", ns])
            .status
            .success()
    };
    wait_for(
        Duration::from_secs(5),
        "the first kubeconfig to work",
        || async { can_list(&first_path).then_some(()) },
    )
    .await;

    // A rotation brings a new client certificate; both the new and the old kubeconfig work.
    let second = wait_for_kubeconfig(
        &secrets,
        "ci-job-identity",
        Some(&first),
        &second_path,
        Duration::from_secs(60),
    )
    .await;
    assert_ne!(
        client_serial(&first),
        client_serial(&second),
        "a new client certificate"
    );
    assert!(can_list(&second_path), "the rotated kubeconfig works");
    assert!(
        can_list(&first_path),
        "the previous kubeconfig keeps working until it expires"
    );

    // At expiresAt the binding goes: within 5 s, listing is forbidden.
    let wait = (expires_at - OffsetDateTime::now_utc()).unsigned_abs();
    tokio::time::sleep(wait).await;
    let expired = Instant::now();
    wait_for(
        Duration::from_secs(5),
        "access to end at expiresAt",
        || async {
            forbidden(&kubectl_as(&second_path, &["get", "configmaps", "-n", ns])).then_some(())
        },
    )
    .await;
    eprintln!(
        "expiresAt -> listing ConfigMaps forbidden: {:?}",
        expired.elapsed()
    );
}

#[tokio::test]
async fn kubernetes_access_is_refused_clearly_when_the_operator_does_not_offer_it() {
    let env = OperatorNamespace::start("knone", &[]).await;
    let mis = env.identities();
    let ents = env.entitlements();
    env.create_identity(
        "wants-api",
        json!({"owner": {"team": "x"}, "secretName": "wants-api-identity",
               "kubernetesAccess": {"enabled": true}}),
    )
    .await;
    env.create_entitlement(
        "wants-rbac",
        json!({"subjects": {"names": ["wants-api"]}, "kubernetes": read_configmaps(),
               "justification": "j"}),
    )
    .await;
    wait_for(
        Duration::from_secs(10),
        "KubernetesAccessDisabled on the identity",
        || async {
            let mi = mis.get("wants-api").await.ok()?;
            condition(&mi, "Ready")
                .filter(|c| c.reason == "KubernetesAccessDisabled")
                .map(|_| ())
        },
    )
    .await;
    wait_for_entitlement_condition(
        &ents,
        "wants-rbac",
        "KubernetesRBAC",
        Duration::from_secs(10),
        |c| c.reason == "RoleRefused" && c.message.contains("--kubernetes-access"),
    )
    .await;
}

/// How soon a Role or RoleBinding changed by someone else is put back.
const PUT_RIGHT: Duration = Duration::from_secs(3);

#[tokio::test]
async fn roles_and_bindings_changed_by_someone_else_are_put_right() {
    let env = OperatorNamespace::start("kfix", &["--kubernetes-access"]).await;
    env.create_identity(
        "deployer",
        json!({"owner": {"team": "platform"}, "secretName": "deployer-identity",
               "kubernetesAccess": {"enabled": true}}),
    )
    .await;
    env.create_entitlement(
        "deployer-reads-config",
        json!({"subjects": {"names": ["deployer"]}, "kubernetes": read_configmaps(),
               "justification": "DEP-1: deploys read settings"}),
    )
    .await;
    let ents = env.entitlements();
    let ready = wait_ready(&env.identities(), "deployer", Duration::from_secs(20)).await;
    let user = ready.status.unwrap().kubernetes_access.unwrap().user;
    let rbac = wait_for(
        Duration::from_secs(20),
        "the Entitlement to report its Role and RoleBinding",
        || async {
            let k = ents
                .get("deployer-reads-config")
                .await
                .ok()?
                .status?
                .kubernetes?;
            (k.users == vec![user.clone()] && k.role_binding.is_some()).then_some(k)
        },
    )
    .await;
    let (roles, bindings): (Api<Role>, Api<RoleBinding>) = (env.api(), env.api());
    let binding_name = rbac.role_binding.unwrap();
    let rules = roles.get(&rbac.role).await.unwrap().rules;
    let subjects = bindings.get(&binding_name).await.unwrap().subjects;
    assert!(
        subjects
            .iter()
            .flatten()
            .any(|s| s.kind == "User" && s.name == user),
        "{subjects:?}"
    );

    // Bound, and nothing left to do: from here on only a watch event makes the operator look.
    wait_for_entitlement_condition(
        &ents,
        "deployer-reads-config",
        "Ready",
        Duration::from_secs(10),
        |c| c.status == "True",
    )
    .await;
    env.op.settle(Controller::Entitlements).await;

    // Someone empties the RoleBinding, then widens the Role: each time, the operator sees it at
    // once and puts it back (one at a time, so that each watch is proven; it takes tens of
    // milliseconds, and an operator that only re-lists them now and then misses the bound).
    bindings
        .patch(
            &binding_name,
            &PatchParams::default(),
            &Patch::Merge(json!({"subjects": null})),
        )
        .await
        .unwrap();
    let changed = Instant::now();
    wait_for(PUT_RIGHT, "the RoleBinding put back", || async {
        (bindings.get(&binding_name).await.ok()?.subjects == subjects).then_some(())
    })
    .await;
    eprintln!("RoleBinding emptied -> put back: {:?}", changed.elapsed());
    roles
        .patch(
            &rbac.role,
            &PatchParams::default(),
            &Patch::Merge(
                json!({"rules": [{"apiGroups": [""], "resources": ["configmaps"],
                                  "verbs": ["get", "list", "delete"]}]}),
            ),
        )
        .await
        .unwrap();
    let changed = Instant::now();
    wait_for(PUT_RIGHT, "the Role put back", || async {
        (roles.get(&rbac.role).await.ok()?.rules == rules).then_some(())
    })
    .await;
    eprintln!("Role widened -> put back: {:?}", changed.elapsed());
}

/// A kubeconfig for the operator with limited RBAC: no access to Pods, and `configmaps` get and
/// list to give away. In the chart-RBAC run (e2e/test-chart-rbac.sh) that is the Helm chart's
/// ServiceAccount (`NHI_E2E_OPERATOR_KUBECONFIG`); otherwise a ServiceAccount made here, allowed
/// in `ns` only what the operator does there (the chart's rules, namespaced). The file is in `dir`.
async fn limited_operator_kubeconfig(client: &Client, ns: &str, dir: &Path) -> PathBuf {
    if let Some(chart) = std::env::var_os("NHI_E2E_OPERATOR_KUBECONFIG") {
        return PathBuf::from(chart);
    }
    let name = "limited-operator";
    let rules = json!([
        {"apiGroups": ["nhi.dev"], "resources": ["machineidentities", "entitlements"],
         "verbs": ["get", "list", "watch", "patch", "delete"]},
        {"apiGroups": ["nhi.dev"],
         "resources": ["machineidentities/status", "entitlements/status"], "verbs": ["patch"]},
        {"apiGroups": ["nhi.dev"], "resources": ["machineidentities/finalizers"],
         "verbs": ["update"]},
        {"apiGroups": [""], "resources": ["secrets"],
         "verbs": ["get", "list", "watch", "create", "patch"]},
        {"apiGroups": [""], "resources": ["configmaps"],
         "verbs": ["get", "list", "watch", "create", "patch", "update", "delete"]},
        {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]},
        {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["roles", "rolebindings"],
         "verbs": ["get", "list", "watch", "create", "patch", "delete"]},
    ]);
    let objects = [
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name}}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
               "metadata": {"name": name}, "rules": rules}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
               "metadata": {"name": name},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
               "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": ns}]}),
    ];
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    accounts
        .create(
            &PostParams::default(),
            &serde_json::from_value(objects[0].clone()).unwrap(),
        )
        .await
        .expect("create the ServiceAccount");
    Api::<Role>::namespaced(client.clone(), ns)
        .create(
            &PostParams::default(),
            &serde_json::from_value(objects[1].clone()).unwrap(),
        )
        .await
        .expect("create the Role");
    Api::<RoleBinding>::namespaced(client.clone(), ns)
        .create(
            &PostParams::default(),
            &serde_json::from_value(objects[2].clone()).unwrap(),
        )
        .await
        .expect("create the RoleBinding");
    policy_reader(client, ns, name).await;
    let token = accounts
        .create_token_request(name, &PostParams::default(), &TokenRequest::default())
        .await
        .expect("a token for the ServiceAccount")
        .status
        .expect("the token")
        .token;
    // The tests' own kubeconfig, its user replaced by the ServiceAccount's token.
    let admin = Kubeconfig::read_from(kubeconfig_path()).expect("the tests' kubeconfig");
    let cluster = admin.clusters.first().expect("a cluster").clone();
    let kubeconfig = json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [cluster],
        "users": [{"name": name, "user": {"token": token}}],
        "contexts": [{"name": name, "context": {"cluster": cluster.name, "user": name}}],
        "current-context": name,
    });
    let path = dir.join("limited-operator.kubeconfig");
    std::fs::write(&path, serde_yaml::to_string(&kubeconfig).unwrap()).unwrap();
    path
}

#[tokio::test]
async fn a_role_the_operator_cannot_grant_is_refused_with_the_apiservers_message() {
    // The operator runs with limited RBAC (see limited_operator_kubeconfig): a Role granting
    // what it does not hold itself (listing Pods; it may get them, for the pod-certificate
    // signer) is refused by the apiserver, and said so.
    let client = client().await;
    let namespace = TestNamespace::create(&client, "kesc").await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = limited_operator_kubeconfig(&client, &namespace.name, dir.path()).await;
    let mut env =
        OperatorNamespace::start_in_as(namespace, &["--kubernetes-access"], kubeconfig).await;
    let ents = env.entitlements();
    env.create_entitlement(
        "too-much",
        json!({"subjects": {"names": ["x"]},
               "kubernetes": {"rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}]},
               "justification": "j"}),
    )
    .await;
    let (refused, _) =
        wait_for_entitlement_condition(&ents, "too-much", "Ready", Duration::from_secs(10), |c| {
            c.reason == "RoleRefused"
        })
        .await;
    let refused = refused.message;
    assert!(refused.contains("forbidden"), "{refused}");
    eprintln!("refused: {refused}");
    assert!(env.op.alive(), "the operator is still running");
}

/// Lets ServiceAccount `account` of `ns` read what every operator reads cluster-wide: the
/// IdentityPolicies and the namespaces' labels (a ClusterRoleBinding owned by the namespace, so
/// it goes with it).
async fn policy_reader(client: &Client, ns: &str, account: &str) {
    use k8s_openapi::api::core::v1::Namespace;
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
    let role: ClusterRole = serde_json::from_value(json!({
        "metadata": {"name": "nhi-e2e-policy-reader"},
        "rules": [
            {"apiGroups": ["nhi.dev"], "resources": ["identitypolicies"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get", "list", "watch"]},
        ]
    }))
    .unwrap();
    Api::<ClusterRole>::all(client.clone())
        .patch(
            "nhi-e2e-policy-reader",
            &PatchParams::apply("nhi-e2e").force(),
            &Patch::Apply(&role),
        )
        .await
        .expect("the policy reader ClusterRole");
    let namespace = Api::<Namespace>::all(client.clone()).get(ns).await.unwrap();
    let binding: ClusterRoleBinding = serde_json::from_value(json!({
        "metadata": {"name": format!("{ns}-{account}"), "ownerReferences": [{
            "apiVersion": "v1", "kind": "Namespace", "name": ns,
            "uid": namespace.metadata.uid.unwrap()}]},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "nhi-e2e-policy-reader"},
        "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": ns}]
    }))
    .unwrap();
    Api::<ClusterRoleBinding>::all(client.clone())
        .create(&PostParams::default(), &binding)
        .await
        .expect("the policy reader ClusterRoleBinding");
}

/// Each issuance has a Kubernetes user of its own and the RoleBinding names only the current one:
/// a revocation cuts off the old kubeconfig as soon as the new certificate is issued, while the
/// new kubeconfig works (against the apiserver's real RBAC authorizer).
#[tokio::test]
async fn a_revoked_identitys_kubeconfig_is_forbidden_at_once_and_the_new_one_works() {
    let env = OperatorNamespace::start("krevoke", &["--kubernetes-access"]).await;
    let ns = env.ns.as_str();
    let (mis, secrets) = (env.identities(), env.secrets());
    env.create_identity(
        "runner",
        json!({"owner": {"team": "platform"}, "secretName": "runner-identity",
               "kubernetesAccess": {"enabled": true}}),
    )
    .await;
    env.create_entitlement(
        "runner-reads-config",
        json!({"subjects": {"names": ["runner"]}, "kubernetes": read_configmaps(),
               "justification": "RUN-1: jobs read settings"}),
    )
    .await;
    wait_ready(&mis, "runner", Duration::from_secs(20)).await;
    let dir = tempfile::tempdir().unwrap();
    let (old_path, new_path) = (dir.path().join("old"), dir.path().join("new"));
    let old = wait_for_kubeconfig(
        &secrets,
        "runner-identity",
        None,
        &old_path,
        Duration::from_secs(10),
    )
    .await;
    let may_list = |path: &Path| kubectl_as(path, &["get", "configmaps", "-n", ns]);
    wait_for(
        Duration::from_secs(5),
        "the old kubeconfig listing",
        || async { may_list(&old_path).status.success().then_some(()) },
    )
    .await;

    let asked = Instant::now();
    mis.patch(
        "runner",
        &PatchParams::default(),
        &Patch::Merge(
            json!({"metadata": {"annotations": {"nhi.dev/revoke-requested": "e2e-kube"}}}),
        ),
    )
    .await
    .unwrap();
    wait_for(
        Duration::from_secs(2),
        "the revoked kubeconfig forbidden",
        || async { forbidden(&may_list(&old_path)).then_some(()) },
    )
    .await;
    let cut_off = asked.elapsed();
    wait_for_kubeconfig(
        &secrets,
        "runner-identity",
        Some(&old),
        &new_path,
        Duration::from_secs(10),
    )
    .await;
    wait_for(
        Duration::from_secs(5),
        "the new kubeconfig listing",
        || async { may_list(&new_path).status.success().then_some(()) },
    )
    .await;
    assert!(forbidden(&may_list(&old_path)), "the old one came back");
    eprintln!("revoke -> old kubeconfig forbidden: {cut_off:?}");
}
