//! The operator caches every MachineIdentity (100,000 on one replica): the inline size of the
//! type is paid once per identity, so the fields most identities leave unset are boxed.

use std::mem::size_of;

use nhi_api::{MachineIdentity, MachineIdentitySpec, MachineIdentityStatus};

#[test]
fn a_cached_identity_stays_small_inline() {
    // Measured 872 bytes (360 of them Kubernetes' ObjectMeta) once the rarely set optional
    // fields were boxed; it was 1,376 before. A new large inline field fails here: box it.
    assert!(
        size_of::<MachineIdentitySpec>() <= 256,
        "spec: {} bytes inline",
        size_of::<MachineIdentitySpec>()
    );
    assert!(
        size_of::<MachineIdentityStatus>() <= 288,
        "status: {} bytes inline",
        size_of::<MachineIdentityStatus>()
    );
    assert!(
        size_of::<MachineIdentity>() <= 896,
        "MachineIdentity: {} bytes inline",
        size_of::<MachineIdentity>()
    );
}

#[test]
fn the_short_status_texts_take_no_allocation() {
    let status: MachineIdentityStatus = serde_json::from_value(serde_json::json!({
        "conditions": [{
            "type": "Ready", "status": "True", "reason": "CertificateValid",
            "message": "certificate 589af7da9ba85afe5377da88456c9b65 valid until 2026-12-06T06:37:12Z",
            "lastTransitionTime": "2026-12-06T05:37:12Z", "observedGeneration": 1
        }],
        "notBefore": "2026-12-06T05:36:12Z",
        "notAfter": "2026-12-06T06:37:12Z",
        "renewalTime": "2026-12-06T06:15:25Z"
    }))
    .unwrap();
    let c = &status.conditions[0];
    for text in [&c.type_, &c.status, &c.reason, &c.last_transition_time] {
        assert!(!text.is_heap_allocated(), "{text}");
    }
    for text in [&status.not_before, &status.not_after, &status.renewal_time] {
        assert!(!text.as_ref().unwrap().is_heap_allocated());
    }
}
