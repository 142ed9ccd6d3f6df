//! Plan: what one look at the CA Secret does, decided from its [`Facts`] alone (pure): the CA to
//! put in place, the problems to report, the gauges, the pacing of re-issues, and the rotation's
//! next step (decided by [`crate::ca::rotation::next_step`]) as a write to the CA Secret.

use std::fmt;
use std::sync::Arc;
use std::time::Duration as StdDuration;

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use time::OffsetDateTime;

use super::facts::{Distribution, Facts};
use crate::ca::rotation::{
    Phase, RotationFacts, RotationPolicy, Step, Trigger, next_step, recheck_in, retire_after,
};
use crate::ca::rotation_state::{
    distributed_patch, drop_patch, phase_of, start_patch, switch_patch,
};
use crate::ca::store::secret_text;
use crate::ca::{CaMaterial, CertificateAuthority};
use nhi_core::labels::{CA_ROTATION_ANSWERED, MANAGED_BY, MANAGER, ROTATE_CA};
use nhi_core::revocation::crl_size::CRL_BUDGET;
use nhi_identity::timestamp::rfc3339;

/// How soon to look again when the CA Secret is gone.
const SECRET_MISSING_RECHECK: StdDuration = StdDuration::from_secs(30);
/// ...when its rotation annotations cannot be read.
const INVALID_RECHECK: StdDuration = StdDuration::from_secs(60);
/// ...when a rotation is wanted of a CA the operator did not make.
const UNSUPPORTED_RECHECK: StdDuration = StdDuration::from_secs(600);
/// ...when the switch waits for the revocation record to shrink.
const ROOM_RECHECK: StdDuration = StdDuration::from_secs(30);

/// What a look at the CA Secret does.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The CA the Secret holds, to sign with from now on (it differs from the one signing): the
    /// CRL is signed and published again and every identity is looked at.
    pub adopt: Option<Arc<CertificateAuthority>>,
    /// Problems to report, each once: a Warning Event (on the CA Secret, when there is one),
    /// a log line, a count.
    pub reports: Vec<Problem>,
    /// The CA's expiry and the rotation phase, for the gauges.
    pub gauges: Option<(i64, i64)>,
    /// When the CA now signing took over from one still retiring (re-issues are paced after
    /// it); None: no rotation is re-issuing. Not set when the phase is unknown.
    pub switched_at: Option<Option<OffsetDateTime>>,
    /// How far the next root has reached, for the log.
    pub progress: Option<String>,
    pub next: Next,
}

/// A problem to report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub reason: &'static str,
    pub note: String,
    /// Whether the CA Secret exists to carry the Event.
    pub on_secret: bool,
}

impl Problem {
    /// What tells this problem from another (a problem is reported once).
    pub fn key(&self) -> String {
        format!("{}: {}", self.reason, self.note)
    }
}

/// What the look does after that.
#[derive(Clone, Debug)]
pub enum Next {
    /// Look again after this long (or at the Secret's next change).
    Wait(StdDuration),
    /// Write to the CA Secret, then look again at once.
    Write(Write),
    /// Make the next root (off the runtime), then write what [`start`] makes of it.
    GenerateNext(Trigger),
    /// The step cannot be taken (a patch cannot be built from the Secret): the look fails.
    Fail(String),
}

/// A merge patch of the CA Secret at the version read (a conflict if it changed since), and the
/// Normal Event that says what it did.
#[derive(Clone)]
pub struct Write {
    pub patch: serde_json::Value,
    pub reason: &'static str,
    pub note: String,
}

/// The patch may carry a private key (the next CA's): never shown.
impl fmt::Debug for Write {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Write")
            .field("reason", &self.reason)
            .field("note", &self.note)
            .finish_non_exhaustive()
    }
}

/// The plan of the look whose facts are `facts`.
pub fn plan(facts: &Facts, policy: &RotationPolicy, reissue_rate: f64) -> Plan {
    let mut plan = Plan {
        adopt: None,
        reports: vec![],
        gauges: None,
        switched_at: None,
        progress: None,
        next: Next::Wait(SECRET_MISSING_RECHECK),
    };
    let Some(secret) = &facts.secret else {
        let location = &facts.location;
        plan.reports.push(Problem {
            reason: "CASecretMissing",
            note: format!(
                "the CA Secret {}/{} is gone; the CA in memory keeps signing until the operator restarts (which bootstraps a new one)",
                location.namespace, location.secret_name
            ),
            on_secret: false,
        });
        return deduplicated(plan, facts);
    };
    if let Some(held) = &facts.held {
        let (adopt, problem) = adoption(&facts.signing, held);
        plan.adopt = adopt;
        plan.reports.extend(problem);
    }
    let phase = match phase_of(secret.annotations()) {
        Ok(p) => p,
        Err(e) => {
            plan.reports.push(Problem {
                reason: "CARotationInvalid",
                note: e,
                on_secret: true,
            });
            plan.next = Next::Wait(INVALID_RECHECK);
            return deduplicated(plan, facts);
        }
    };
    let ca = facts.ca();
    plan.gauges = Some((ca.not_after().unix_timestamp(), phase.number()));
    plan.switched_at = Some(match &phase {
        Phase::Reissuing { switched_at, .. } if ca.retiring().is_some() => Some(*switched_at),
        _ => None,
    });
    let distributed = match (&phase, &facts.distribution) {
        (Phase::Publishing { started_at, .. }, Some(d)) => {
            let (done, progress, stalled) = distributed(d, ca, *started_at, facts.now, policy);
            plan.progress = Some(progress);
            plan.reports.extend(stalled);
            done
        }
        _ => false,
    };
    let annotations = secret.annotations();
    let rotation = RotationFacts {
        phase,
        now: facts.now,
        ca_not_after: ca.not_after(),
        // Made by the operator: a self-signed root in a Secret the operator created (a root
        // someone provided, from Git say, is theirs to replace).
        self_managed: ca.is_self_signed_root()
            && secret.labels().get(MANAGED_BY).map(String::as_str) == Some(MANAGER),
        requested: annotations.get(ROTATE_CA).map(String::as_str),
        answered: annotations.get(CA_ROTATION_ANSWERED).map(String::as_str),
        distributed,
        revocation_room: facts
            .record_crl_bytes
            .is_some_and(|one| one * 2 <= CRL_BUDGET),
    };
    plan.next = step(
        facts,
        secret,
        &rotation,
        policy,
        reissue_rate,
        &mut plan.reports,
    );
    deduplicated(plan, facts)
}

/// The rotation's next step as what the look does.
fn step(
    facts: &Facts,
    secret: &Secret,
    rotation: &RotationFacts<'_>,
    policy: &RotationPolicy,
    reissue_rate: f64,
    reports: &mut Vec<Problem>,
) -> Next {
    let ca = facts.ca();
    let rv = secret.resource_version().unwrap_or_default();
    let now = facts.now;
    match next_step(rotation, policy) {
        Step::Wait => Next::Wait(recheck_in(rotation, policy).unsigned_abs()),
        Step::Unsupported(trigger) => {
            let why = match trigger {
                Trigger::Requested(r) => format!("a rotation was requested ({ROTATE_CA}={r})"),
                Trigger::Expiring => format!("the CA ends at {}", rfc3339(ca.not_after())),
            };
            reports.push(Problem {
                reason: "CARotationUnsupported",
                note: format!(
                    "{why}, but the CA was provided (it is not a self-signed root the operator made): replace tls.crt, tls.key and ca.crt of the CA Secret with the successor, keeping the old root in ca.crt until its certificates expire"
                ),
                on_secret: true,
            });
            Next::Wait(UNSUPPORTED_RECHECK)
        }
        Step::Start(trigger) => Next::GenerateNext(trigger),
        Step::Distributed => Next::Write(Write {
            patch: distributed_patch(&rv, now),
            reason: "CARotationDistributed",
            note: format!(
                "every identity Secret and trust ConfigMap carries both roots; the new CA signs after {} (propagation to mounted volumes)",
                rfc3339(now + policy.propagation)
            ),
        }),
        Step::Switch => {
            let retire = retire_after(now, policy.max_ttl, ca.not_after());
            match switch_patch(&rv, &secret_text(secret), retire, now) {
                Ok(patch) => Next::Write(Write {
                    patch,
                    reason: "CARotationSwitched",
                    note: format!(
                        "the new CA signs; identities re-issue over {}s (at most {}/s); the old root stays trusted until {} (phase Reissuing)",
                        policy.spread.whole_seconds(),
                        reissue_rate,
                        rfc3339(retire)
                    ),
                }),
                Err(e) => Next::Fail(e),
            }
        }
        // Not loaded yet (a restart, a record that cannot be read): nothing to say yet.
        Step::AwaitRevocationRoom if facts.record_crl_bytes.is_none() => Next::Wait(ROOM_RECHECK),
        Step::AwaitRevocationRoom => {
            reports.push(Problem {
                reason: "CARotationAwaitingRevocationRoom",
                note: format!(
                    "the new CA is ready to sign, but from the switch on two CRLs list every revocation and the revocation record would not fit twice in the {CRL_BUDGET} bytes of a trust ConfigMap; the switch waits until revoked certificates expire (at most {}s), and meanwhile revocations are admitted only as far as two CRLs hold them",
                    policy.max_ttl.whole_seconds()
                ),
                on_secret: true,
            });
            Next::Wait(ROOM_RECHECK)
        }
        Step::Drop => match drop_patch(&rv, &secret_text(secret), now) {
            Ok(patch) => Next::Write(Write {
                patch,
                reason: "CARotationCompleted",
                note: "no unexpired certificate of the old CA remains: its root leaves every trust bundle; CA rotation complete".to_string(),
            }),
            Err(e) => Next::Fail(e),
        },
    }
}

/// Whether to put the CA a Secret holds (`held`) in place of the one `signing`: when it
/// differs; the problem to report when it cannot be loaded.
pub fn adoption(
    signing: &CertificateAuthority,
    held: &Result<Arc<CertificateAuthority>, String>,
) -> (Option<Arc<CertificateAuthority>>, Option<Problem>) {
    match held {
        Ok(held) if !signing.same_as(held) => (Some(held.clone()), None),
        Ok(_) => (None, None),
        Err(e) => (
            None,
            Some(Problem {
                reason: "CAInvalid",
                note: format!("{e}; the CA in memory keeps signing"),
                on_secret: true,
            }),
        ),
    }
}

/// The write that starts a rotation for `trigger`, publishing `next` next to the signing CA; a
/// note of why it cannot be written otherwise.
pub fn start(facts: &Facts, trigger: &Trigger, next: &CaMaterial) -> Result<Write, String> {
    let secret = facts.secret.as_ref().ok_or("the CA Secret is gone")?;
    let ca = facts.ca();
    let requested = secret.annotations().get(ROTATE_CA).map(String::as_str);
    let rv = secret.resource_version().unwrap_or_default();
    let patch = start_patch(
        &rv,
        ca.trust_bundle_pem(),
        next,
        trigger,
        requested,
        facts.now,
    )?;
    let why = match trigger {
        Trigger::Requested(r) => format!("requested ({ROTATE_CA}={r})"),
        Trigger::Expiring => format!("the CA ends at {}", rfc3339(ca.not_after())),
    };
    Ok(Write {
        patch,
        reason: "CARotationStarted",
        note: format!(
            "CA rotation started: {why}; the next root is published next to the current one in every trust bundle (phase Publishing)"
        ),
    })
}

/// Whether every identity Secret and trust ConfigMap carries `ca`'s bundle, and every trust
/// ConfigMap a CRL of each of its CAs (the next one's included); how far it is, for the log; the
/// problem to report when that has not happened long after the rotation started.
fn distributed(
    d: &Distribution,
    ca: &CertificateAuthority,
    started_at: OffsetDateTime,
    now: OffsetDateTime,
    policy: &RotationPolicy,
) -> (bool, String, Option<Problem>) {
    let crls = ca.crl_signers().len();
    let complete = |crl: &str| crl.matches("-----BEGIN X509 CRL-----").count() >= crls;
    let published = d
        .published
        .as_ref()
        .is_some_and(|p| p.ca_pem == ca.trust_bundle_pem() && complete(&p.crl_pem));
    let maps_behind = d
        .maps
        .iter()
        .filter(|(bundle, crl)| {
            bundle.as_deref() != Some(ca.trust_bundle_pem())
                || !crl.as_deref().is_some_and(complete)
        })
        .count();
    let (maps, secrets_behind, secrets) = (d.maps.len(), d.secrets_behind, d.secrets);
    let progress = format!(
        "secrets_behind={secrets_behind} secrets={secrets} maps_behind={maps_behind} maps={maps} published={published}"
    );
    let done = d.secrets_synced && published && secrets_behind == 0 && maps_behind == 0;
    let patience = (policy.propagation * 5i32).max(time::Duration::minutes(10));
    let stalled = (!done && now > started_at + patience).then(|| Problem {
        reason: "CARotationStalled",
        note: format!(
            "the next root has not reached every bundle since {}: {secrets_behind} of {secrets} identity Secrets and {maps_behind} of {maps} nhi-trust ConfigMaps are behind; the current CA keeps signing meanwhile",
            rfc3339(started_at)
        ),
        on_secret: true,
    });
    (done, progress, stalled)
}

/// The plan with each problem reported once: not again right after itself.
fn deduplicated(mut plan: Plan, facts: &Facts) -> Plan {
    let mut last = facts.last_reported.clone();
    plan.reports.retain(|p| {
        let key = p.key();
        let fresh = last.as_deref() != Some(key.as_str());
        last = Some(key);
        fresh
    });
    plan
}
