//! The tenant-attack suite: each way one namespace's author could claim another's names, grants
//! or rights, tried for real as a namespace-scoped user (impersonated: `edit` in one namespace and
//! the nhi.dev kinds there, nothing else), refused at admission with a message; and, in
//! namespaces left out of admission, refused by the operator at issuance (PolicyDenied) with
//! nothing outside the policy signed or bound. The same users' legitimate requests succeed.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use nhi_operator::api::{Entitlement, IdentityPolicy, MachineIdentity};
use nhi_operator::verify::{
    Purpose, Revocation, TrustBundle, certificates_from_pem, verify_identity,
};
use serde_json::json;
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use crate::policy_fixtures::*;
use crate::support::*;
use crate::tenant_setup::ADMISSION_OFF_LABEL;

/// A client acting as `user` (impersonated by the tests' admin credentials).
async fn acting_as(user: &str) -> Client {
    let kc = Kubeconfig::read_from(kubeconfig_path()).expect("kubeconfig");
    let mut cfg = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("config");
    cfg.auth_info.impersonate = Some(user.to_string());
    cfg.auth_info.impersonate_groups = Some(vec!["system:authenticated".into()]);
    Client::try_from(cfg).expect("client")
}

/// Lets `user` do in `ns` what the role `edit` allows, plus the nhi.dev `verbs` on
/// `resources` (MachineIdentities and/or Entitlements).
pub async fn grant_tenant(client: &Client, ns: &str, user: &str, edit: bool, resources: &[&str]) {
    let roles: Api<Role> = Api::namespaced(client.clone(), ns);
    let bindings: Api<RoleBinding> = Api::namespaced(client.clone(), ns);
    let role = format!("nhi-author-{user}");
    let role_obj: Role = serde_json::from_value(json!({
        "metadata": {"name": role},
        "rules": [{"apiGroups": ["nhi.dev"], "resources": resources,
                   "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"]}]
    }))
    .unwrap();
    roles
        .create(&PostParams::default(), &role_obj)
        .await
        .unwrap();
    let bind = |name: String, kind: &str, role: String| -> RoleBinding {
        serde_json::from_value(json!({
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": role},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]
        }))
        .unwrap()
    };
    let pp = PostParams::default();
    bindings
        .create(&pp, &bind(format!("{user}-nhi"), "Role", role))
        .await
        .unwrap();
    if edit {
        let b = bind(format!("{user}-edit"), "ClusterRole", "edit".into());
        bindings.create(&pp, &b).await.unwrap();
    }
}

/// A namespace governed by `policy` alone (labelled out of the default policy), optionally out
/// of admission.
async fn governed_namespace(client: &Client, prefix: &str, admission: bool) -> TestNamespace {
    let mut labels = vec![("nhi.dev/identity-policy", prefix)];
    if !admission {
        labels.push((ADMISSION_OFF_LABEL, "off"));
    }
    TestNamespace::create_labelled(client, prefix, &labels).await
}

/// A namespace governed by a policy of its own that claims the grants `<prefix>.*` for it alone
/// (`prefix`: the namespace's name without dashes, unique to the test), with `more` added to the
/// policy's spec.
struct ClaimingNamespace {
    ns: TestNamespace,
    prefix: String,
    policy: ClusterPolicy,
}

async fn claiming_namespace(
    client: &Client,
    tag: &str,
    more: serde_json::Value,
) -> ClaimingNamespace {
    let ns = governed_namespace(client, tag, true).await;
    let prefix = ns.name.replace('-', "");
    let mut spec = json!({
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns.name}},
        "grants": {"allowed": [format!("{prefix}.*")], "exclusive": true}
    });
    if let (Some(spec), Some(more)) = (spec.as_object_mut(), more.as_object()) {
        spec.extend(more.clone());
    }
    let policy = ClusterPolicy::create(client, &ns.name, spec).await;
    ClaimingNamespace { ns, prefix, policy }
}

fn owner() -> serde_json::Value {
    json!({"team": "t"})
}

#[tokio::test]
async fn a_tenant_cannot_claim_another_namespaces_names_grants_or_rights_at_admission() {
    let admin = client().await;
    // The platform reserves <prefix>.* for the payments namespace, and allows Kubernetes rules
    // there (pods create, configmaps get).
    let claiming = claiming_namespace(
        &admin,
        "tpay",
        json!({"kubernetesAccess": true,
               "kubernetesRules": [{"apiGroups": [""], "resources": ["pods", "configmaps"], "verbs": ["create", "get"]}]}),
    )
    .await;
    let (pay, prefix) = (&claiming.ns, claiming.prefix.clone());
    let shop = TestNamespace::create_labelled(&admin, "tshop", &[]).await;
    grant_tenant(
        &admin,
        &shop.name,
        "mallory",
        true,
        &["machineidentities", "entitlements"],
    )
    .await;
    grant_tenant(&admin, &shop.name, "ivan", false, &["machineidentities"]).await;
    grant_tenant(
        &admin,
        &pay.name,
        "alice",
        true,
        &["machineidentities", "entitlements"],
    )
    .await;
    grant_tenant(
        &admin,
        &pay.name,
        "dave",
        false,
        &["machineidentities", "entitlements"],
    )
    .await;
    let mallory = acting_as("mallory").await;
    let shop_mis: Api<MachineIdentity> = Api::namespaced(mallory.clone(), &shop.name);
    let shop_ents: Api<Entitlement> = Api::namespaced(mallory.clone(), &shop.name);

    // 1. Another namespace's service names, a wildcard over them, the API server's name.
    let pay_ns = &pay.name;
    for (name, dns) in [
        ("mitm", format!("payments-api.{pay_ns}.svc")),
        ("wild", format!("*.{pay_ns}.svc")),
        ("apiserver", "kubernetes.default.svc".to_string()),
    ] {
        let spec = json!({"owner": owner(), "secretName": format!("{name}-id"),
                          "certificate": {"dnsNames": [format!("api.{}.svc", shop.name), dns]}});
        let message = refused(&shop_mis, &identity(name, spec)).await;
        assert!(
            message.contains("spec.certificate.dnsNames")
                && message.contains(&dns)
                && message.contains("IdentityPolicy nhi-default"),
            "{message}"
        );
    }
    // ...while its own service names are fine.
    let own = json!({"owner": owner(), "secretName": "api-id",
                     "certificate": {"dnsNames": [format!("api.{}.svc", shop.name),
                                                  format!("api.{}.svc.cluster.local", shop.name)]}});
    shop_mis
        .create(&PostParams::default(), &identity("api", own))
        .await
        .expect("own service names are admitted");

    // 2. A grant reserved for payments.
    let steal = json!({"subjects": {"names": ["api"]}, "grants": [format!("{prefix}.process")],
                       "justification": "j"});
    let message = refused(&shop_ents, &entitlement("steal", steal)).await;
    assert!(
        message.contains("spec.grants")
            && message.contains("reserved for other namespaces")
            && message.contains(&format!("IdentityPolicy {pay_ns}")),
        "{message}"
    );
    let mine =
        json!({"subjects": {"names": ["api"]}, "grants": ["shop.read"], "justification": "j"});
    shop_ents
        .create(&PostParams::default(), &entitlement("mine", mine))
        .await
        .expect("an unreserved grant is admitted");

    // 3. Kubernetes rights: nothing off the allowlist, never the floor, never more than held.
    let secrets = json!({"subjects": {"names": ["api"]}, "grants": ["shop.read"], "justification": "j",
                         "kubernetes": {"rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]}});
    let message = refused(&shop_ents, &entitlement("secrets", secrets)).await;
    assert!(message.contains("get on secrets"), "{message}");
    let pods = || {
        entitlement(
            "pods",
            json!({"subjects": {"names": ["api"]}, "grants": [format!("{prefix}.deploy")], "justification": "j",
                   "kubernetes": {"rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["create"]}]}}),
        )
    };
    let dave: Api<Entitlement> = Api::namespaced(acting_as("dave").await, pay_ns);
    let message = refused(&dave, &pods()).await;
    assert!(
        message.contains("dave may only grant permissions they hold")
            && message.contains("create on pods"),
        "{message}"
    );
    let alice: Api<Entitlement> = Api::namespaced(acting_as("alice").await, pay_ns);
    alice
        .create(&PostParams::default(), &pods())
        .await
        .expect("alice holds pods create (edit): admitted");

    // 4. Subjects by forgeable labels, and protected labels set by whoever may not grant.
    let by_label = json!({"subjects": {"selector": {"matchLabels": {"tier": "frontend"}}},
                          "grants": ["shop.read"], "justification": "j"});
    let message = refused(&shop_ents, &entitlement("frontend", by_label)).await;
    assert!(message.contains("tier not protected"), "{message}");
    let by_absence = json!({"subjects": {"selector": {"matchExpressions": [
                                {"key": "subject.nhi.dev/tier", "operator": "DoesNotExist"}]}},
                            "grants": ["shop.read"], "justification": "j"});
    let message = refused(&shop_ents, &entitlement("not-frontend", by_absence)).await;
    assert!(
        message.contains("DoesNotExist on subject.nhi.dev/tier"),
        "{message}"
    );
    let mut labelled = identity(
        "sneaky",
        json!({"owner": owner(), "secretName": "sneaky-id"}),
    );
    labelled.metadata.labels =
        Some([("subject.nhi.dev/tier".to_string(), "frontend".to_string())].into());
    let ivan: Api<MachineIdentity> = Api::namespaced(acting_as("ivan").await, &shop.name);
    let message = refused(&ivan, &labelled).await;
    assert!(
        message.contains("subject.nhi.dev/tier")
            && message.contains("only users who may create Entitlements"),
        "{message}"
    );
    shop_mis
        .create(&PostParams::default(), &labelled)
        .await
        .expect("mallory may create Entitlements: she may set the label");
    // And the tenant cannot write policies at all.
    let policies: Api<IdentityPolicy> = Api::all(mallory);
    let attempt: IdentityPolicy = serde_json::from_value(json!({
        "apiVersion": "nhi.dev/v1alpha1", "kind": "IdentityPolicy",
        "metadata": {"name": format!("{}-mine", shop.name)},
        "spec": {"namespaceSelector": {}, "grants": {"allowed": ["*"]}}
    }))
    .unwrap();
    let denied = policies.create(&PostParams::default(), &attempt).await;
    assert!(
        matches!(denied, Err(kube::Error::Api(ref s)) if s.code == 403),
        "{denied:?}"
    );
}

#[tokio::test]
async fn a_wildcard_name_cannot_cover_a_name_another_namespace_claims() {
    // edge claims api.<x>.example alone; shop may use *.<x>.example otherwise: the wildcard
    // would be valid for edge's name, so it is refused (a plain name under it is not).
    let admin = client().await;
    let shop = governed_namespace(&admin, "wshop", true).await;
    let domain = format!("{}.example", shop.name);
    let _open = ClusterPolicy::create(
        &admin,
        &shop.name,
        json!({"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": shop.name}},
               "dnsNames": {"allowed": [format!("*.{domain}")]}}),
    )
    .await;
    let _edge = ClusterPolicy::create(
        &admin,
        &format!("{}-edge", shop.name),
        json!({"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "edge"}},
               "dnsNames": {"allowed": [format!("api.{domain}")], "exclusive": true}}),
    )
    .await;
    let mis: Api<MachineIdentity> = shop.api();
    let wild = json!({"owner": owner(), "secretName": "wild-id",
                      "certificate": {"dnsNames": [format!("*.{domain}")]}});
    let message = refused(&mis, &identity("wild", wild)).await;
    assert!(
        message.contains("reserved for other namespaces"),
        "{message}"
    );
    let web = json!({"owner": owner(), "secretName": "web-id",
                     "certificate": {"dnsNames": [format!("web.{domain}")]}});
    mis.create(&PostParams::default(), &identity("web", web))
        .await
        .expect("a name the claim does not cover is admitted");
}

/// The DNS names of a PEM certificate.
fn dns_names(pem_text: &str) -> Vec<String> {
    let chain = certificates_from_pem(pem_text).expect("PEM");
    let (_, cert) = X509Certificate::from_der(chain[0].as_ref()).expect("a certificate");
    let san = cert.subject_alternative_name().ok().flatten();
    san.map(|s| {
        s.value
            .general_names
            .iter()
            .filter_map(|n| match n {
                GeneralName::DNSName(d) => Some(d.to_string()),
                _ => None,
            })
            .collect()
    })
    .unwrap_or_default()
}

fn grants(secret: &Secret) -> Vec<String> {
    let chain = certificates_from_pem(&secret_text(secret, "tls.crt")).unwrap();
    let trust = TrustBundle::from_pem(&secret_text(secret, "ca.crt")).unwrap();
    let v = verify_identity(
        &chain,
        &trust,
        Revocation::NotChecked,
        Purpose::Client,
        OffsetDateTime::now_utc(),
    )
    .expect("verifies");
    v.grants.iter().cloned().collect()
}

/// Waits for the Ready condition of identity `name` to be PolicyDenied; returns its message.
async fn policy_denied(api: &Api<MachineIdentity>, name: &str) -> String {
    wait_for(
        Duration::from_secs(10),
        &format!("{name}: Ready=False PolicyDenied"),
        || async {
            let mi = api.get(name).await.ok()?;
            let c = condition(&mi, "Ready")?;
            (c.status == "False"
                && c.reason == "PolicyDenied"
                && mi.status.as_ref()?.serial_number.is_some())
            .then(|| c.message.clone())
        },
    )
    .await
}

#[tokio::test]
async fn without_admission_the_operator_signs_and_binds_nothing_outside_the_policy() {
    let admin = client().await;
    // A namespace out of admission, under the default policy (no label of its own).
    let shop =
        TestNamespace::create_labelled(&admin, "ishop", &[(ADMISSION_OFF_LABEL, "off")]).await;
    let claiming = claiming_namespace(&admin, "ipay", json!({})).await;
    let (pay, prefix) = (&claiming.ns, claiming.prefix.clone());
    let env = OperatorNamespace::start_in(shop, &["--kubernetes-access"]).await;
    let ns = env.ns.clone();
    let mis = env.identities();
    let ents = env.entitlements();
    let secrets: Api<Secret> = Api::namespaced(env.client.clone(), &ns);

    // Another namespace's names: issued without them, not Ready, said why.
    env.create_identity(
        "mitm",
        json!({"owner": owner(), "secretName": "mitm-id", "kubernetesAccess": {"enabled": true},
               "certificate": {"dnsNames": [format!("api.{ns}.svc"), format!("payments-api.{}.svc", pay.name),
                                            format!("*.{}.svc", pay.name)]}}),
    )
    .await;
    let message = policy_denied(&mis, "mitm").await;
    assert!(
        message.contains("spec.certificate.dnsNames[1]")
            && !message.contains("the built-in default")
            && message.contains("IdentityPolicy nhi-default")
            && message.contains("spec.kubernetesAccess.enabled"),
        "{message}"
    );
    let secret = secrets.get("mitm-id").await.unwrap();
    assert_eq!(
        dns_names(&secret_text(&secret, "tls.crt")),
        vec![format!("api.{ns}.svc")]
    );
    assert!(
        !secret.data.as_ref().unwrap().contains_key("kubeconfig"),
        "no Kubernetes credential where access is refused"
    );

    // A reserved grant, forgeable label selection (mitm labels itself as the selector asks),
    // the floor: each Entitlement refused, nothing bound, no grant in any certificate.
    mis.patch(
        "mitm",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"tier": "frontend"}}})),
    )
    .await
    .unwrap();
    let before = env.op.settle(Controller::Identities).await;
    for (name, spec, field) in [
        (
            "steal",
            json!({"subjects": {"names": ["mitm"]}, "grants": [format!("{prefix}.process")], "justification": "j"}),
            "spec.grants[0]",
        ),
        (
            "by-label",
            json!({"subjects": {"selector": {"matchLabels": {"tier": "frontend"}}}, "grants": ["shop.read"], "justification": "j"}),
            "spec.subjects.selector.matchLabels",
        ),
        (
            "secrets",
            json!({"subjects": {"names": ["mitm"]}, "grants": ["shop.read"], "justification": "j",
                           "kubernetes": {"rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]}}),
            "spec.kubernetes.rules[0]",
        ),
    ] {
        env.create_entitlement(name, spec).await;
        let (c, status) =
            wait_for_entitlement_condition(&ents, name, "Ready", Duration::from_secs(10), |c| {
                c.reason == "PolicyDenied"
            })
            .await;
        assert!(c.message.contains(field), "{name}: {}", c.message);
        assert_eq!(status.bound_count, 0, "{name}");
        assert!(
            status.kubernetes.is_none_or(|k| k.role_binding.is_none()),
            "{name}"
        );
    }
    // The identity controller has looked at mitm since (the Entitlements naming or selecting it
    // re-queue it): only now does "no grant" mean something.
    env.op
        .wait_reconciled_since(Controller::Identities, before)
        .await;
    let roles: Api<Role> = Api::namespaced(env.client.clone(), &ns);
    assert!(
        roles
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .is_empty(),
        "no Role written"
    );
    let mi = mis.get("mitm").await.unwrap();
    assert!(mi.status.unwrap().entitlements.is_empty());
    assert!(grants(&secrets.get("mitm-id").await.unwrap()).is_empty());
}

#[tokio::test]
async fn a_policy_that_drops_a_grant_revokes_the_certificates_carrying_it_within_seconds() {
    let admin = client().await;
    let ClaimingNamespace {
        ns: pay,
        prefix,
        policy,
    } = claiming_namespace(&admin, "rpay", json!({})).await;
    let env = OperatorNamespace::start_in(pay, &[]).await;
    let ns = env.ns.clone();
    let secrets: Api<Secret> = Api::namespaced(env.client.clone(), &ns);
    env.create_identity("api", json!({"owner": owner(), "secretName": "api-id"}))
        .await;
    env.create_entitlement(
        "process",
        json!({"subjects": {"names": ["api"]}, "grants": [format!("{prefix}.process")], "justification": "j"}),
    )
    .await;
    let granted = wait_for(
        Duration::from_secs(10),
        "a certificate carrying the grant",
        || async {
            let s = secrets.get("api-id").await.ok()?;
            grants(&s)
                .contains(&format!("{prefix}.process"))
                .then_some(s)
        },
    )
    .await;
    let old_serial = serial_of(&granted).unwrap();

    // The platform narrows the policy: the grant leaves the certificate, and the old one is
    // revoked.
    let started = Instant::now();
    let api: Api<IdentityPolicy> = Api::all(admin.clone());
    api.patch(
        &policy.name,
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"grants": {"allowed": [format!("{prefix}.read")]}}})),
    )
    .await
    .unwrap();
    let configmaps: Api<ConfigMap> = Api::namespaced(env.client.clone(), &ns);
    wait_for(
        Duration::from_secs(5),
        "the old serial on the CRL",
        || async {
            let cm = configmaps.get("nhi-trust").await.ok()?;
            let crl = cm.data?.get("crl.pem")?.clone();
            crl_serials(&crl)
                .iter()
                .any(|s| {
                    s.eq_ignore_ascii_case(old_serial.trim_start_matches('0'))
                        || s.eq_ignore_ascii_case(&old_serial)
                })
                .then_some(())
        },
    )
    .await;
    let elapsed = started.elapsed();
    let now = secrets.get("api-id").await.unwrap();
    assert_ne!(serial_of(&now).as_deref(), Some(old_serial.as_str()));
    assert!(grants(&now).is_empty(), "the grant left the certificate");
    let (c, _) = wait_for_entitlement_condition(
        &env.entitlements(),
        "process",
        "Ready",
        Duration::from_secs(5),
        |c| c.reason == "PolicyDenied",
    )
    .await;
    assert!(c.message.contains("is not allowed"), "{}", c.message);
    eprintln!("policy change -> old serial on the CRL: {elapsed:?}");
}

#[tokio::test]
async fn an_identity_re_created_under_a_bound_name_inherits_nothing() {
    let env = OperatorNamespace::start("repin", &[]).await;
    let mis = env.identities();
    let secrets: Api<Secret> = Api::namespaced(env.client.clone(), &env.ns);
    env.create_identity(
        "checkout",
        json!({"owner": owner(), "secretName": "checkout-id"}),
    )
    .await;
    env.create_entitlement(
        "checkout-pays",
        json!({"subjects": {"names": ["checkout"]}, "grants": ["payments.process"], "justification": "j"}),
    )
    .await;
    wait_for(
        Duration::from_secs(10),
        "checkout carrying the grant",
        || async {
            let s = secrets.get("checkout-id").await.ok()?;
            grants(&s)
                .contains(&"payments.process".to_string())
                .then_some(())
        },
    )
    .await;
    let ents = env.entitlements();
    let pinned = wait_for(Duration::from_secs(10), "the subject pinned", || async {
        let status = ents.get("checkout-pays").await.ok()?.status?;
        (!status.pinned_subjects.is_empty()).then_some(status.pinned_subjects)
    })
    .await;
    let first_uid = mis.get("checkout").await.unwrap().metadata.uid.unwrap();
    assert_eq!(pinned[0].uid, first_uid);

    // Deleted, and re-created by someone under the same name.
    mis.delete("checkout", &DeleteParams::default())
        .await
        .unwrap();
    wait_for(Duration::from_secs(20), "checkout gone", || async {
        mis.get_opt("checkout").await.ok()?.is_none().then_some(())
    })
    .await;
    env.create_identity(
        "checkout",
        json!({"owner": owner(), "secretName": "checkout-id"}),
    )
    .await;
    let mi = wait_ready(&mis, "checkout", Duration::from_secs(10)).await;
    assert_ne!(mi.metadata.uid.as_deref(), Some(first_uid.as_str()));
    let (c, _) = wait_for_entitlement_condition(
        &ents,
        "checkout-pays",
        "Ready",
        Duration::from_secs(10),
        |c| c.message.contains("re-created"),
    )
    .await;
    assert!(c.message.contains("not bound: checkout"), "{}", c.message);
    let secret = secrets.get("checkout-id").await.unwrap();
    assert!(
        grants(&secret).is_empty(),
        "the re-created identity carries no grant"
    );
    assert!(mi.status.unwrap().entitlements.is_empty());

    // Changing the Entitlement's spec binds the new identity.
    ents.patch(
        "checkout-pays",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"justification": "PAY-8: the new checkout"}})),
    )
    .await
    .unwrap();
    wait_for(
        Duration::from_secs(10),
        "the new checkout carrying the grant",
        || async {
            let s = secrets.get("checkout-id").await.ok()?;
            grants(&s)
                .contains(&"payments.process".to_string())
                .then_some(())
        },
    )
    .await;
}
