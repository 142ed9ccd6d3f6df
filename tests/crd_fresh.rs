//! The checked-in CRD YAML under `crds/` (and the Helm chart's copy, when present) must match what
//! the Rust types generate. Regenerate with `make crds`.

use std::path::Path;

#[test]
fn checked_in_crds_match_the_rust_types() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (file, yaml) in nhi_operator::api::crd_documents().expect("CRDs render") {
        for dir in ["crds", "charts/nhi-operator/crds"] {
            let path = root.join(dir).join(&file);
            if dir != "crds" && !root.join(dir).exists() {
                continue;
            }
            let on_disk = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{} is missing ({e}); run `make crds`", path.display()));
            assert!(
                on_disk == yaml,
                "{} is stale; run `make crds`",
                path.display()
            );
        }
    }
}
