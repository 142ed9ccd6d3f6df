//! Writes a set of files into a directory the way kubelet projects a Secret volume: each version
//! in its own hidden timestamped directory, `..data` pointing at the current one (swapped with an
//! atomic rename), and each visible file a symlink through `..data`. A reader that resolves
//! `..data` once sees one consistent version.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, symlink};
use std::path::Path;

use time::OffsetDateTime;

/// The link to the current version.
pub const DATA_LINK: &str = "..data";
const DATA_TMP: &str = "..data_tmp";

/// Files holding secrets are readable by the owner only.
fn mode_of(name: &str) -> u32 {
    match name {
        "tls.key" | "identity.pem" | "kubeconfig" => 0o600,
        _ => 0o644,
    }
}

/// Whether `name` may be written as a file of the directory (a Secret key, never a path).
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with("..")
        && name != "."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
}

/// The files of the current version, if there is one.
pub fn current(dir: &Path) -> Option<BTreeMap<String, Vec<u8>>> {
    let target = dir.join(DATA_LINK);
    let mut out = BTreeMap::new();
    for entry in fs::read_dir(&target).ok()? {
        let entry = entry.ok()?;
        let name = entry.file_name().to_string_lossy().into_owned();
        out.insert(name, fs::read(entry.path()).ok()?);
    }
    Some(out)
}

/// Projects `files` into `dir`. Returns false, writing nothing, when the current version holds
/// exactly these files.
pub fn project(
    dir: &Path,
    files: &BTreeMap<String, Vec<u8>>,
    now: OffsetDateTime,
) -> io::Result<bool> {
    if let Some(bad) = files.keys().find(|k| !valid_name(k)) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("refusing to write a file named {bad:?}"),
        ));
    }
    if current(dir).as_ref() == Some(files) {
        return Ok(false);
    }
    fs::create_dir_all(dir)?;
    let version = format!(
        "..{}_{:08x}",
        now.unix_timestamp_nanos(),
        rand::random::<u32>()
    );
    let version_dir = dir.join(&version);
    fs::create_dir(&version_dir)?;
    for (name, content) in files {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode_of(name))
            .open(version_dir.join(name))?;
        f.write_all(content)?;
        f.sync_all()?;
    }
    // The swap: a new link beside the old one, renamed over it in one step.
    let tmp = dir.join(DATA_TMP);
    let _ = fs::remove_file(&tmp);
    symlink(&version, &tmp)?;
    fs::rename(&tmp, dir.join(DATA_LINK))?;
    // Visible names: links through ..data, for the files of this version only.
    for name in files.keys() {
        let visible = dir.join(name);
        if fs::symlink_metadata(&visible).is_err() {
            symlink(Path::new(DATA_LINK).join(name), &visible)?;
        }
    }
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_link = entry.file_type()?.is_symlink();
        if name.starts_with("..") && name != DATA_LINK && name != version && !is_link {
            fs::remove_dir_all(entry.path())?;
        } else if is_link && !name.starts_with("..") && !files.contains_key(&name) {
            fs::remove_file(entry.path())?;
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn files(pairs: &[(&str, &str)]) -> BTreeMap<String, Vec<u8>> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn versions_swap_atomically_behind_stable_visible_names() {
        let dir = tempfile::tempdir().unwrap();
        let now = OffsetDateTime::now_utc();
        let v1 = files(&[("tls.crt", "A"), ("tls.key", "a"), ("ca.crt", "CA")]);
        assert!(project(dir.path(), &v1, now).unwrap());
        assert_eq!(fs::read_to_string(dir.path().join("tls.crt")).unwrap(), "A");
        let first = fs::read_link(dir.path().join(DATA_LINK)).unwrap();
        assert!(
            fs::symlink_metadata(dir.path().join("tls.key"))
                .unwrap()
                .file_type()
                .is_symlink()
        );
        let mode = fs::metadata(dir.path().join("tls.key"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "the key is readable by its owner only");
        // The same content again: nothing written.
        assert!(!project(dir.path(), &v1, now).unwrap());
        assert_eq!(fs::read_link(dir.path().join(DATA_LINK)).unwrap(), first);
        // A new version: ..data moves, the old version is gone, a dropped key disappears.
        let v2 = files(&[("tls.crt", "B"), ("tls.key", "b")]);
        assert!(project(dir.path(), &v2, now).unwrap());
        assert_eq!(fs::read_to_string(dir.path().join("tls.crt")).unwrap(), "B");
        assert_ne!(fs::read_link(dir.path().join(DATA_LINK)).unwrap(), first);
        assert!(!dir.path().join(&first).exists());
        assert!(fs::symlink_metadata(dir.path().join("ca.crt")).is_err());
        assert!(!dir.path().join(DATA_TMP).exists());
        assert_eq!(current(dir.path()).unwrap(), v2);
    }

    #[test]
    fn refuses_names_that_are_not_plain_file_names() {
        let dir = tempfile::tempdir().unwrap();
        let now = OffsetDateTime::now_utc();
        for bad in ["../escape", "..data", "a/b", ""] {
            assert!(
                project(dir.path(), &files(&[(bad, "x")]), now).is_err(),
                "{bad:?}"
            );
        }
    }
}
