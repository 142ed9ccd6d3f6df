//! The CA Secret's record of a rotation: the phase read from its annotations, and the JSON merge
//! patches that move it on (the keys and annotations a step changes, at the version it was read).

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value, json};
use time::OffsetDateTime;

use super::CaMaterial;
use super::rotation::{PUBLISHING, Phase, REISSUING, Trigger};
use crate::labels::{
    CA_ROTATION_ANSWERED, CA_ROTATION_COMPLETED_AT, CA_ROTATION_DISTRIBUTED_AT, CA_ROTATION_PHASE,
    CA_ROTATION_RETIRE_AFTER, CA_ROTATION_STARTED_AT, CA_ROTATION_SWITCHED_AT,
};
use nhi_identity::pem_chain::{pem_certificates, to_pem_chain};
use nhi_identity::timestamp::{parse_rfc3339, rfc3339};

/// Keys of the CA Secret.
pub mod keys {
    /// The signing CA's chain.
    pub const TLS_CRT: &str = "tls.crt";
    /// The signing CA's key.
    pub const TLS_KEY: &str = "tls.key";
    /// The trust bundle: every root a relying party trusts now.
    pub const CA_CRT: &str = "ca.crt";
    /// The next CA, published but not signing yet (phase Publishing).
    pub const NEXT_CRT: &str = "next.crt";
    pub const NEXT_KEY: &str = "next.key";
    /// The previous CA, trusted and signing its CRL until it retires (phase Reissuing).
    pub const RETIRING_CRT: &str = "retiring.crt";
    pub const RETIRING_KEY: &str = "retiring.key";
}

/// The rotation phase recorded in `annotations`; an error names the annotation that is wrong.
pub fn phase_of(annotations: &BTreeMap<String, String>) -> Result<Phase, String> {
    let time_of = |key: &str| -> Result<Option<OffsetDateTime>, String> {
        annotations
            .get(key)
            .map(|v| {
                parse_rfc3339(v).ok_or_else(|| format!("{key} is not an RFC 3339 time: {v:?}"))
            })
            .transpose()
    };
    let required = |key: &str| -> Result<OffsetDateTime, String> {
        time_of(key)?.ok_or_else(|| format!("{key} is missing"))
    };
    match annotations.get(CA_ROTATION_PHASE).map(String::as_str) {
        None | Some("") | Some("Idle") => Ok(Phase::Idle),
        Some(PUBLISHING) => Ok(Phase::Publishing {
            started_at: required(CA_ROTATION_STARTED_AT)?,
            distributed_at: time_of(CA_ROTATION_DISTRIBUTED_AT)?,
        }),
        Some(REISSUING) => Ok(Phase::Reissuing {
            switched_at: required(CA_ROTATION_SWITCHED_AT)?,
            retire_after: required(CA_ROTATION_RETIRE_AFTER)?,
        }),
        Some(other) => Err(format!(
            "{CA_ROTATION_PHASE} is {other:?}; expected Publishing or Reissuing"
        )),
    }
}

/// A merge patch of a Secret at `resource_version` setting `data` keys (None removes one) and
/// annotations.
pub fn patch(
    resource_version: &str,
    data: &[(&str, Option<&str>)],
    annotations: &[(&str, Option<String>)],
) -> Value {
    let data: Map<String, Value> = data
        .iter()
        .map(|(k, v)| {
            let v = v.map_or(Value::Null, |v| Value::String(STANDARD.encode(v)));
            (k.to_string(), v)
        })
        .collect();
    let annotations: Map<String, Value> = annotations
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone().map_or(Value::Null, Value::String)))
        .collect();
    json!({
        "metadata": {"resourceVersion": resource_version, "annotations": annotations},
        "data": data,
    })
}

/// `bundle` with the certificates of `pem` added (those not in it already).
pub fn bundle_with(bundle: &str, pem: &str) -> Result<String, String> {
    let mut certs = pem_certificates(bundle).map_err(|e| format!("ca.crt: {e}"))?;
    for cert in pem_certificates(pem).map_err(|e| format!("the new root: {e}"))? {
        if !certs.contains(&cert) {
            certs.push(cert);
        }
    }
    Ok(to_pem_chain(&certs))
}

/// `bundle` without the certificates of `pem`; never empty (an error instead).
pub fn bundle_without(bundle: &str, pem: &str) -> Result<String, String> {
    let gone = pem_certificates(pem).map_err(|e| format!("the retiring root: {e}"))?;
    let kept: Vec<Vec<u8>> = pem_certificates(bundle)
        .map_err(|e| format!("ca.crt: {e}"))?
        .into_iter()
        .filter(|c| !gone.contains(c))
        .collect();
    if kept.is_empty() {
        return Err("ca.crt would be left without a root".into());
    }
    Ok(to_pem_chain(&kept))
}

/// Starts a rotation: `next` is stored next to the signing CA, and its root joins the bundle.
/// A request is answered whatever the trigger (this rotation serves it).
pub fn start_patch(
    resource_version: &str,
    bundle: &str,
    next: &CaMaterial,
    trigger: &Trigger,
    requested: Option<&str>,
    now: OffsetDateTime,
) -> Result<Value, String> {
    let bundle = bundle_with(bundle, &next.cert_chain_pem)?;
    let answered = match trigger {
        Trigger::Requested(r) => Some(r.clone()),
        Trigger::Expiring => requested.map(str::to_string),
    };
    let mut annotations = vec![
        (CA_ROTATION_PHASE, Some(PUBLISHING.to_string())),
        (CA_ROTATION_STARTED_AT, Some(rfc3339(now))),
        (CA_ROTATION_DISTRIBUTED_AT, None),
        (CA_ROTATION_SWITCHED_AT, None),
        (CA_ROTATION_RETIRE_AFTER, None),
    ];
    if let Some(a) = answered {
        annotations.push((CA_ROTATION_ANSWERED, Some(a)));
    }
    Ok(patch(
        resource_version,
        &[
            (keys::NEXT_CRT, Some(&next.cert_chain_pem)),
            (keys::NEXT_KEY, Some(&next.key_pem)),
            (keys::CA_CRT, Some(&bundle)),
        ],
        &annotations,
    ))
}

/// Records that every bundle carries both roots. The time is rounded up to the second (the
/// annotation's precision), so the propagation wait is never cut short.
pub fn distributed_patch(resource_version: &str, now: OffsetDateTime) -> Value {
    let rounded_up = match now.nanosecond() {
        0 => now,
        _ => now + time::Duration::seconds(1),
    };
    patch(
        resource_version,
        &[],
        &[(CA_ROTATION_DISTRIBUTED_AT, Some(rfc3339(rounded_up)))],
    )
}

/// The CA Secret's keys, as text.
pub type SecretText = BTreeMap<String, String>;

/// Switches signing to the next CA: it becomes `tls.*`, the signing CA becomes `retiring.*`
/// (trusted and signing its CRL until `retire_after`). The bundle is unchanged.
pub fn switch_patch(
    resource_version: &str,
    data: &SecretText,
    retire_after: OffsetDateTime,
    now: OffsetDateTime,
) -> Result<Value, String> {
    let get = |k: &str| {
        data.get(k)
            .filter(|v| !v.trim().is_empty())
            .ok_or_else(|| format!("the CA Secret has no {k}"))
    };
    Ok(patch(
        resource_version,
        &[
            (keys::TLS_CRT, Some(get(keys::NEXT_CRT)?)),
            (keys::TLS_KEY, Some(get(keys::NEXT_KEY)?)),
            (keys::RETIRING_CRT, Some(get(keys::TLS_CRT)?)),
            (keys::RETIRING_KEY, Some(get(keys::TLS_KEY)?)),
            (keys::NEXT_CRT, None),
            (keys::NEXT_KEY, None),
        ],
        &[
            (CA_ROTATION_PHASE, Some(REISSUING.to_string())),
            (CA_ROTATION_SWITCHED_AT, Some(rfc3339(now))),
            (CA_ROTATION_RETIRE_AFTER, Some(rfc3339(retire_after))),
        ],
    ))
}

/// Ends the rotation: the retiring CA leaves the Secret and its root the bundle.
pub fn drop_patch(
    resource_version: &str,
    data: &SecretText,
    now: OffsetDateTime,
) -> Result<Value, String> {
    let bundle = data.get(keys::CA_CRT).map(String::as_str).unwrap_or("");
    let bundle = match data.get(keys::RETIRING_CRT) {
        Some(retiring) => bundle_without(bundle, retiring)?,
        None => bundle.to_string(),
    };
    Ok(patch(
        resource_version,
        &[
            (keys::CA_CRT, Some(&bundle)),
            (keys::RETIRING_CRT, None),
            (keys::RETIRING_KEY, None),
        ],
        &[
            (CA_ROTATION_PHASE, None),
            (CA_ROTATION_STARTED_AT, None),
            (CA_ROTATION_DISTRIBUTED_AT, None),
            (CA_ROTATION_SWITCHED_AT, None),
            (CA_ROTATION_RETIRE_AFTER, None),
            (CA_ROTATION_COMPLETED_AT, Some(rfc3339(now))),
        ],
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ca::CertificateAuthority;
    use time::Duration;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-11-23 12:00 UTC);

    fn root(name: &str) -> CaMaterial {
        CertificateAuthority::generate_root(name, Duration::days(30), OffsetDateTime::now_utc())
            .unwrap()
    }

    fn decoded(patch: &Value, key: &str) -> Option<String> {
        patch["data"][key]
            .as_str()
            .map(|v| String::from_utf8(STANDARD.decode(v).unwrap()).unwrap())
    }

    fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn phases_read_back_from_annotations() {
        assert_eq!(phase_of(&BTreeMap::new()), Ok(Phase::Idle));
        assert_eq!(
            phase_of(&annotations(&[
                (CA_ROTATION_PHASE, "Publishing"),
                (CA_ROTATION_STARTED_AT, "2026-11-23T12:00:00Z"),
            ])),
            Ok(Phase::Publishing {
                started_at: NOW,
                distributed_at: None
            })
        );
        assert_eq!(
            phase_of(&annotations(&[
                (CA_ROTATION_PHASE, "Reissuing"),
                (CA_ROTATION_SWITCHED_AT, "2026-11-23T12:00:00Z"),
                (CA_ROTATION_RETIRE_AFTER, "2026-11-23T13:00:00Z"),
            ])),
            Ok(Phase::Reissuing {
                switched_at: NOW,
                retire_after: NOW + Duration::hours(1)
            })
        );
        let bad = phase_of(&annotations(&[(CA_ROTATION_PHASE, "Reissuing")])).unwrap_err();
        assert!(bad.contains(CA_ROTATION_SWITCHED_AT), "{bad}");
        let bad = phase_of(&annotations(&[(CA_ROTATION_PHASE, "Sideways")])).unwrap_err();
        assert!(bad.contains("Sideways"), "{bad}");
    }

    #[test]
    fn a_rotation_publishes_both_roots_then_switches_then_drops_the_old_one() {
        let old = root("old");
        let next = root("next");
        let start = start_patch(
            "7",
            &old.cert_chain_pem,
            &next,
            &Trigger::Requested("r1".into()),
            Some("r1"),
            NOW,
        )
        .unwrap();
        assert_eq!(start["metadata"]["resourceVersion"], "7");
        assert_eq!(start["metadata"]["annotations"][CA_ROTATION_ANSWERED], "r1");
        assert_eq!(
            start["metadata"]["annotations"][CA_ROTATION_PHASE],
            "Publishing"
        );
        let bundle = decoded(&start, keys::CA_CRT).unwrap();
        assert_eq!(pem_certificates(&bundle).unwrap().len(), 2);
        assert!(bundle.starts_with(&old.cert_chain_pem));
        assert_eq!(decoded(&start, keys::NEXT_KEY).unwrap(), next.key_pem);

        let data: SecretText = [
            (keys::TLS_CRT, &old.cert_chain_pem),
            (keys::TLS_KEY, &old.key_pem),
            (keys::NEXT_CRT, &next.cert_chain_pem),
            (keys::NEXT_KEY, &next.key_pem),
            (keys::CA_CRT, &bundle),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
        let switch = switch_patch("8", &data, NOW + Duration::hours(1), NOW).unwrap();
        assert_eq!(
            decoded(&switch, keys::TLS_CRT).unwrap(),
            next.cert_chain_pem
        );
        assert_eq!(decoded(&switch, keys::TLS_KEY).unwrap(), next.key_pem);
        assert_eq!(
            decoded(&switch, keys::RETIRING_CRT).unwrap(),
            old.cert_chain_pem
        );
        assert!(switch["data"][keys::NEXT_KEY].is_null());
        assert!(switch["data"].get(keys::CA_CRT).is_none());

        let after_switch: SecretText = [
            (keys::TLS_CRT, &next.cert_chain_pem),
            (keys::RETIRING_CRT, &old.cert_chain_pem),
            (keys::CA_CRT, &bundle),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
        let done = drop_patch("9", &after_switch, NOW).unwrap();
        assert_eq!(decoded(&done, keys::CA_CRT).unwrap(), next.cert_chain_pem);
        assert!(done["data"][keys::RETIRING_KEY].is_null());
        assert!(done["metadata"]["annotations"][CA_ROTATION_PHASE].is_null());
        assert_eq!(
            done["metadata"]["annotations"][CA_ROTATION_COMPLETED_AT],
            "2026-11-23T12:00:00Z"
        );
    }

    #[test]
    fn the_distribution_time_is_never_earlier_than_it_happened() {
        let at = |p: Value| {
            parse_rfc3339(
                p["metadata"]["annotations"][CA_ROTATION_DISTRIBUTED_AT]
                    .as_str()
                    .unwrap(),
            )
            .unwrap()
        };
        assert_eq!(at(distributed_patch("1", NOW)), NOW);
        let later = NOW + Duration::milliseconds(300);
        assert_eq!(
            at(distributed_patch("1", later)),
            NOW + Duration::seconds(1)
        );
    }

    #[test]
    fn switching_without_a_prepared_ca_is_an_error_without_key_material() {
        let old = root("old");
        let data: SecretText = [
            (keys::TLS_CRT.to_string(), old.cert_chain_pem.clone()),
            (keys::TLS_KEY.to_string(), old.key_pem.clone()),
        ]
        .into_iter()
        .collect();
        let err = switch_patch("1", &data, NOW, NOW).unwrap_err();
        assert!(err.contains("next.crt"), "{err}");
        assert!(!err.contains("PRIVATE"));
    }

    #[test]
    fn bundles_gain_and_lose_roots_but_never_become_empty() {
        let a = root("a").cert_chain_pem;
        let b = root("b").cert_chain_pem;
        let both = bundle_with(&a, &b).unwrap();
        assert_eq!(bundle_with(&both, &b).unwrap(), both);
        assert_eq!(bundle_without(&both, &a).unwrap(), b);
        assert!(bundle_without(&a, &a).is_err());
    }
}
