//! The issuance step of apply: key generation and signing (off the runtime, in
//! `spawn_blocking`), the Kubernetes client credential, and the Secret write. What became of it
//! is reported to the plan ([`plan::settle`]), which decides what follows.

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use time::OffsetDateTime;

use super::context::IdentityContext;
use super::facts::Facts;
use super::plan::{CredentialFailure, CredentialPlan, Issuance, IssueReport};
use crate::controller::error::ReconcileError;
use crate::controller::identity_secret::{Ownership, build_identity_secret, ownership};
use crate::controller::kube_access::{KubeCredential, obtain_kube_credential};
use nhi_core::issue::keys::generate_key;
use nhi_core::issue::leaf::{IssueError, IssuedCertificate, issue_leaf};
use nhi_core::labels::FIELD_MANAGER;

/// Where an issuance happens: the controller's context, the reconcile's facts, and the Secret
/// version judged ours (as this reconcile may have moved it on), or None to create the Secret.
struct Run<'a> {
    ctx: &'a IdentityContext,
    facts: &'a Facts,
    secret_version: Option<String>,
}

/// Issues the certificate `issuance` asks for and writes the Secret (at `secret_version`, or
/// created when None), as far as it goes.
pub(super) async fn issue(
    ctx: &IdentityContext,
    facts: &Facts,
    issuance: &Issuance,
    secret_version: Option<String>,
) -> Result<IssueReport, ReconcileError> {
    let run = &Run {
        ctx,
        facts,
        secret_version,
    };
    if let Some(kept) = &issuance.paced
        && let Some(until) = run.ctx.pacing.admit(run.facts.now)
    {
        let kept = kept.clone();
        return Ok(IssueReport::Paced { kept, until });
    }
    // One CA for the signature and the bundle written with it, even if a rotation swaps it.
    let ca = run.facts.ca.clone();
    let (request, alg, signer) = (issuance.request.clone(), issuance.key_algorithm, ca.clone());
    let signed: Result<IssuedCertificate, IssueError> = tokio::task::spawn_blocking(move || {
        let key = generate_key(alg).map_err(IssueError::Signing)?;
        issue_leaf(&signer, &request, &key, OffsetDateTime::now_utc())
    })
    .await?;
    let issued = match signed {
        Ok(i) => i,
        Err(e) => {
            return Ok(IssueReport::SigningFailed {
                ca_expires_too_soon: matches!(e, IssueError::CaExpiresTooSoon { .. }),
                message: e.to_string(),
            });
        }
    };
    // The Kubernetes client credential is renewed with the certificate, and written with it.
    let mut credential_failure = None;
    let credential = match issuance.credential {
        CredentialPlan::NotWanted => None,
        CredentialPlan::Disabled => return Ok(IssueReport::KubeAccessDisabled),
        CredentialPlan::Obtain => match obtain(run, issuance, &issued.info.serial_hex).await {
            None => return Ok(IssueReport::KubeAccessDisabled),
            Some(Ok(c)) => Some(c),
            // A failed credential keeps the current certificate while it is valid; without one,
            // the identity gets its certificate anyway (without a kubeconfig).
            Some(Err(failure)) if issuance.still_valid.is_some() => {
                return Ok(IssueReport::CredentialFailed {
                    reason: failure.reason,
                    message: failure.message,
                });
            }
            Some(Err(failure)) => {
                credential_failure = Some(failure);
                None
            }
        },
    };
    let secret = build_identity_secret(
        run.facts.identity.as_ref(),
        &issued,
        &ca,
        &issuance.inputs_hash,
        credential.as_ref(),
    );
    write_secret(run, secret, issued, credential, credential_failure).await
}

/// The identity's Kubernetes client credential; None when Kubernetes access is disabled.
async fn obtain(
    run: &Run<'_>,
    issuance: &Issuance,
    serial_hex: &str,
) -> Option<Result<KubeCredential, CredentialFailure>> {
    let endpoint = run.ctx.kube_endpoint.as_ref()?;
    let mi = run.facts.identity.as_ref();
    let ttl = issuance.request.ttl;
    let credential = obtain_kube_credential(&run.ctx.client, endpoint, mi, ttl, serial_hex);
    Some(credential.await.map_err(|e| CredentialFailure {
        reason: e.reason(),
        message: e.to_string(),
    }))
}

/// Writes the Secret: created when none was judged ours (if one exists after all, someone
/// else's or ours not yet cached, the create fails and it is looked at before anything else),
/// applied at the judged version otherwise (if it changed since, deleted and re-created by
/// someone else say, the write fails with a conflict and it is looked at again).
async fn write_secret(
    run: &Run<'_>,
    mut secret: Secret,
    issued: IssuedCertificate,
    credential: Option<KubeCredential>,
    credential_failure: Option<CredentialFailure>,
) -> Result<IssueReport, ReconcileError> {
    let api: Api<Secret> = Api::namespaced(run.ctx.client.clone(), &run.facts.namespace);
    let name = &run.facts.identity.spec.secret_name;
    let written = match &run.secret_version {
        None => {
            let pp = PostParams {
                field_manager: Some(FIELD_MANAGER.into()),
                ..Default::default()
            };
            match api.create(&pp, &secret).await {
                Ok(created) => created,
                Err(kube::Error::Api(s)) if s.code == 409 => {
                    let existing = api.get_opt(name).await?;
                    let meta = existing.as_ref().map(|s| &s.metadata);
                    if ownership(meta, &run.facts.identity) == Ownership::Foreign {
                        return Ok(IssueReport::SecretTaken { credential_failure });
                    }
                    return Ok(IssueReport::WriteConflicted {
                        created: true,
                        credential_failure,
                    });
                }
                Err(e) => return Err(e.into()),
            }
        }
        Some(version) => {
            secret.metadata.resource_version = Some(version.clone());
            let pp = PatchParams::apply(FIELD_MANAGER).force();
            match api.patch(name, &pp, &Patch::Apply(&secret)).await {
                Ok(written) => written,
                Err(kube::Error::Api(s)) if s.code == 409 || s.code == 404 => {
                    return Ok(IssueReport::WriteConflicted {
                        created: false,
                        credential_failure,
                    });
                }
                Err(e) => return Err(e.into()),
            }
        }
    };
    Ok(IssueReport::Written {
        info: issued.info,
        version: written.metadata.resource_version,
        credential: credential.map(|c| c.status),
        credential_failure,
    })
}
