//! Test helpers: identity directories laid out the way kubelet and naive writers write them.

use std::path::Path;
use std::time::Instant;

use rustls::crypto::CryptoProvider;

pub use crate::test_pki::{TestCa, TestLeaf};

pub fn provider() -> CryptoProvider {
    rustls::crypto::aws_lc_rs::default_provider()
}

/// Publishes generation `n` the way kubelet updates a Secret volume: a new timestamped
/// directory, a `..data_tmp` link renamed over `..data`, visible links into `..data`, and the
/// old generation removed. Returns the instant just before the swap.
pub fn write_generation(dir: &Path, n: u32, cert: &str, key: &str, ca: &str) -> Instant {
    write_generation_files(
        dir,
        n,
        &[("tls.crt", cert), ("tls.key", key), ("ca.crt", ca)],
    )
}

/// Publishes generation `n` holding exactly `files` (name, content), as [`write_generation`]
/// does: a projected volume with `crl.pem`, or a ConfigMap volume.
pub fn write_generation_files(dir: &Path, n: u32, files: &[(&str, &str)]) -> Instant {
    let generation = format!("..2026_01_01_00_00_{n:02}.{n:04}");
    std::fs::create_dir(dir.join(&generation)).unwrap();
    for (name, content) in files {
        std::fs::write(dir.join(&generation).join(name), content).unwrap();
    }
    std::os::unix::fs::symlink(&generation, dir.join("..data_tmp")).unwrap();
    let swapped = Instant::now();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    for (name, _) in files {
        if std::fs::symlink_metadata(dir.join(name)).is_err() {
            std::os::unix::fs::symlink(format!("..data/{name}"), dir.join(name)).unwrap();
        }
    }
    for entry in std::fs::read_dir(dir).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if name.starts_with("..2") && name != generation {
            std::fs::remove_dir_all(dir.join(name)).unwrap();
        }
    }
    swapped
}

/// Rewrites plain files in place, as a `subPath` mount or a naive writer would.
pub fn write_plain(dir: &Path, cert: &str, key: &str, ca: &str) {
    for (name, content) in [("tls.crt", cert), ("tls.key", key), ("ca.crt", ca)] {
        std::fs::write(dir.join(name), content).unwrap();
    }
}

/// A CRL of `ca` listing nothing, valid for a day.
pub fn fresh_crl(ca: &TestCa) -> String {
    ca.crl(
        &[],
        time::OffsetDateTime::now_utc() + time::Duration::days(1),
    )
}

/// Publishes generation `n` of a projected identity volume: `leaf`, `bundle` as `ca.crt`, and
/// `crl` as `crl.pem` (no such file when `None`).
pub fn publish_identity(
    dir: &Path,
    n: u32,
    leaf: &TestLeaf,
    bundle: &str,
    crl: Option<&str>,
) -> Instant {
    let mut files = vec![
        ("tls.crt", leaf.chain_pem.as_str()),
        ("tls.key", leaf.key_pem.as_str()),
        ("ca.crt", bundle),
    ];
    if let Some(crl) = crl {
        files.push(("crl.pem", crl));
    }
    write_generation_files(dir, n, &files)
}
