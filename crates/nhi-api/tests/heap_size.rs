//! The operator caches every MachineIdentity (100,000 on one replica): what one typical
//! identity takes on the heap, counted by this test binary's allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use nhi_api::MachineIdentity;

/// Counts the bytes asked of the system allocator, net of those given back.
struct Counting;

static BYTES: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        BYTES.fetch_add(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

/// An identity as the bench's are cached: one attribute, two DNS names, issued.
const IDENTITY: &str = r#"{
  "apiVersion": "nhi.dev/v1alpha1", "kind": "MachineIdentity",
  "metadata": {"creationTimestamp": "2026-12-06T09:05:24Z", "finalizers": ["nhi.dev/revoke-certificates"],
    "generation": 1, "name": "o0", "namespace": "bench-op-19b6e0", "resourceVersion": "393",
    "uid": "6f8111e7-b4fe-496f-b58c-6a7d7409cd3b"},
  "spec": {"attributes": {"project": "bench"},
    "certificate": {"dnsNames": ["o0.bench-op-19b6e0.svc", "o0.bench-op-19b6e0.svc.cluster.local"], "keyAlgorithm": "ECDSA-P256"},
    "owner": {"team": "bench"}, "secretName": "o0-id"},
  "status": {"conditions": [
      {"lastTransitionTime": "2026-12-06T09:05:24Z", "message": "certificate 4ec9210b58a0f65a6878fda42f0545a8 valid until 2026-12-06T12:05:24Z, renews at 2026-12-06T10:58:59Z", "observedGeneration": 1, "reason": "CertificateValid", "status": "True", "type": "Ready"},
      {"lastTransitionTime": "2026-12-06T09:05:24Z", "message": "the certificate is current", "observedGeneration": 1, "reason": "UpToDate", "status": "False", "type": "Issuing"}],
    "notAfter": "2026-12-06T12:05:24Z", "notBefore": "2026-12-06T09:04:24Z", "observedGeneration": 1,
    "renewalTime": "2026-12-06T10:58:59Z", "serialNumber": "4ec9210b58a0f65a6878fda42f0545a8",
    "spiffeID": "spiffe://cluster.local/ns/bench-op-19b6e0/mi/o0",
    "thumbprintSHA256": "2d326edecc5b84bb4b069f1169092c118879256b2d036885004f7f660f3e15fa"}
}"#;

#[test]
fn a_cached_identity_takes_little_heap() {
    let mi: MachineIdentity = serde_json::from_str(IDENTITY).unwrap();
    let before = BYTES.load(Ordering::Relaxed);
    let cached = std::sync::Arc::new(mi.clone());
    let bytes = BYTES.load(Ordering::Relaxed) - before;
    drop(cached);
    // Measured 1,721 bytes asked for (2,120 with the allocator's headers and rounding) once
    // spec.attributes was a sorted vector; a BTreeMap took 2,217 (2,616). A new allocation per
    // identity, or a map type with a large first node, fails here.
    assert!(bytes <= 1800, "a cached identity asks for {bytes} bytes");
}
