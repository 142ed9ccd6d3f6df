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

/// The link swapped to publish a version: the one the reload library reads through.
pub use nhi_identity::reload::snapshot::DATA_LINK;
const DATA_TMP: &str = "..data_tmp";

/// How the files are written.
#[derive(Clone, Copy, Debug)]
pub struct Modes {
    /// Mode of files that may hold secrets: private keys (`tls.key`, `identity.pem`,
    /// `kubeconfig`) and any file not known to be public.
    pub key: u32,
    /// Mode of the files known to hold only public material (`tls.crt`, `ca.crt`, `crl.pem`).
    pub other: u32,
}

impl Default for Modes {
    /// Keys readable by the owner and the group (pair with the pod's `fsGroup` when the program
    /// runs as another user), the rest by everyone, as kubelet's default.
    fn default() -> Self {
        Modes {
            key: 0o640,
            other: 0o644,
        }
    }
}

impl Modes {
    /// A file is public only when known to be: a key added to the Secret later is private.
    fn of(&self, name: &str) -> u32 {
        match name {
            "tls.crt" | "ca.crt" | "crl.pem" => self.other,
            _ => self.key,
        }
    }
}

/// Whether `name` may be written as a file of the directory (a Secret key, never a path).
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
}

/// Whether `name` is a version directory this writer made (`..<nanoseconds>_<8 hex>`).
fn is_version_name(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("..") else {
        return false;
    };
    let Some((nanos, suffix)) = rest.split_once('_') else {
        return false;
    };
    !nanos.is_empty()
        && nanos.chars().all(|c| c.is_ascii_digit())
        && suffix.len() == 8
        && suffix.chars().all(|c| c.is_ascii_hexdigit())
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

fn sync_dir(path: &Path) -> io::Result<()> {
    fs::File::open(path)?.sync_all()
}

/// Writes a new version directory and swaps `..data` to it.
fn write_version(
    dir: &Path,
    files: &BTreeMap<String, Vec<u8>>,
    now: OffsetDateTime,
    modes: Modes,
) -> io::Result<()> {
    let version = format!(
        "..{}_{:08x}",
        now.unix_timestamp_nanos(),
        rand::random::<u32>()
    );
    let version_dir = dir.join(&version);
    fs::create_dir(&version_dir)?;
    let written = (|| {
        for (name, content) in files {
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(modes.of(name))
                .open(version_dir.join(name))?;
            f.write_all(content)?;
            f.sync_all()?;
        }
        sync_dir(&version_dir)?;
        // The swap: a new link beside the old one, renamed over it in one step.
        let tmp = dir.join(DATA_TMP);
        let _ = fs::remove_file(&tmp);
        symlink(&version, &tmp)?;
        fs::rename(&tmp, dir.join(DATA_LINK))?;
        sync_dir(dir)
    })();
    if written.is_err()
        && fs::read_link(dir.join(DATA_LINK)).ok().as_deref() != Some(Path::new(&version))
    {
        // Not swapped in: leave nothing behind (a full volume would otherwise fill up).
        let _ = fs::remove_dir_all(&version_dir);
        let _ = fs::remove_file(dir.join(DATA_TMP));
    }
    written
}

/// Makes each visible name a link through `..data`, replacing whatever stands there (a plain
/// file from an earlier writer, a link elsewhere) in one rename.
fn link_visible(dir: &Path, files: &BTreeMap<String, Vec<u8>>) -> io::Result<()> {
    for name in files.keys() {
        let visible = dir.join(name);
        let wanted = Path::new(DATA_LINK).join(name);
        match fs::symlink_metadata(&visible) {
            Ok(m) if m.file_type().is_symlink() && fs::read_link(&visible)? == wanted => continue,
            Ok(m) if m.is_dir() => {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} is a directory", visible.display()),
                ));
            }
            _ => {}
        }
        let tmp = dir.join(format!("..{name}.tmp"));
        let _ = fs::remove_file(&tmp);
        symlink(&wanted, &tmp)?;
        fs::rename(&tmp, &visible)?;
    }
    Ok(())
}

/// Removes versions other than the current one and links to files the current one lacks: only
/// what this writer makes (version directories by name, links into `..data`).
fn clean(dir: &Path, files: &BTreeMap<String, Vec<u8>>) -> io::Result<()> {
    let current = fs::read_link(dir.join(DATA_LINK))?;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let kind = entry.file_type()?;
        if kind.is_dir() && is_version_name(&name) && Path::new(&name) != current {
            fs::remove_dir_all(entry.path())?;
        } else if kind.is_symlink()
            && !name.starts_with('.')
            && !files.contains_key(&name)
            && fs::read_link(entry.path())?.starts_with(DATA_LINK)
        {
            fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

/// Projects `files` into `dir`. Returns whether a new version was written (false: the current
/// version holds exactly these files). The visible links and the clean-up are done every time,
/// so a write interrupted after the swap is completed by the next call.
pub fn project(
    dir: &Path,
    files: &BTreeMap<String, Vec<u8>>,
    now: OffsetDateTime,
    modes: Modes,
) -> io::Result<bool> {
    if let Some(bad) = files.keys().find(|k| !valid_name(k)) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("refusing to write a file named {bad:?}"),
        ));
    }
    fs::create_dir_all(dir)?;
    let changed = current(dir).as_ref() != Some(files);
    if changed {
        write_version(dir, files, now, modes)?;
    }
    link_visible(dir, files)?;
    clean(dir, files)?;
    Ok(changed)
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
    fn only_files_known_to_be_public_are_readable_by_everyone() {
        let modes = Modes::default();
        for public in ["tls.crt", "ca.crt", "crl.pem"] {
            assert_eq!(modes.of(public), 0o644, "{public}");
        }
        for private in [
            "tls.key",
            "identity.pem",
            "kubeconfig",
            "token",
            "password.txt",
        ] {
            assert_eq!(modes.of(private), 0o640, "{private}");
        }
    }

    #[test]
    fn versions_swap_atomically_behind_stable_visible_names() {
        let dir = tempfile::tempdir().unwrap();
        let now = OffsetDateTime::now_utc();
        let v1 = files(&[("tls.crt", "A"), ("tls.key", "a"), ("ca.crt", "CA")]);
        assert!(project(dir.path(), &v1, now, Modes::default()).unwrap());
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
        assert_eq!(
            mode, 0o640,
            "the key is readable by its owner and group only"
        );
        // The same content again: nothing written.
        assert!(!project(dir.path(), &v1, now, Modes::default()).unwrap());
        assert_eq!(fs::read_link(dir.path().join(DATA_LINK)).unwrap(), first);
        // A new version: ..data moves, the old version is gone, a dropped key disappears.
        let v2 = files(&[("tls.crt", "B"), ("tls.key", "b")]);
        assert!(project(dir.path(), &v2, now, Modes::default()).unwrap());
        assert_eq!(fs::read_to_string(dir.path().join("tls.crt")).unwrap(), "B");
        assert_ne!(fs::read_link(dir.path().join(DATA_LINK)).unwrap(), first);
        assert!(!dir.path().join(&first).exists());
        assert!(fs::symlink_metadata(dir.path().join("ca.crt")).is_err());
        assert!(!dir.path().join(DATA_TMP).exists());
        assert_eq!(current(dir.path()).unwrap(), v2);
    }

    #[test]
    fn plain_files_of_an_earlier_writer_are_replaced_and_an_interrupted_write_is_completed() {
        let dir = tempfile::tempdir().unwrap();
        let now = OffsetDateTime::now_utc();
        std::fs::write(dir.path().join("tls.crt"), "OLD").unwrap();
        std::fs::write(dir.path().join("notes.txt"), "mine").unwrap();
        let v1 = files(&[("tls.crt", "A"), ("tls.key", "a")]);
        assert!(project(dir.path(), &v1, now, Modes::default()).unwrap());
        assert_eq!(fs::read_to_string(dir.path().join("tls.crt")).unwrap(), "A");
        assert_eq!(
            fs::read_to_string(dir.path().join("notes.txt")).unwrap(),
            "mine",
            "not ours: kept"
        );
        // A crash right after the swap: visible links missing, a stale version left behind.
        fs::remove_file(dir.path().join("tls.key")).unwrap();
        fs::create_dir(dir.path().join("..1_0000abcd")).unwrap();
        assert!(
            !project(dir.path(), &v1, now, Modes::default()).unwrap(),
            "same content"
        );
        assert_eq!(fs::read_to_string(dir.path().join("tls.key")).unwrap(), "a");
        assert!(!dir.path().join("..1_0000abcd").exists());
    }

    #[test]
    fn refuses_names_that_are_not_plain_file_names() {
        let dir = tempfile::tempdir().unwrap();
        let now = OffsetDateTime::now_utc();
        for bad in ["../escape", "..data", "a/b", ""] {
            assert!(
                project(dir.path(), &files(&[(bad, "x")]), now, Modes::default()).is_err(),
                "{bad:?}"
            );
        }
    }
}
