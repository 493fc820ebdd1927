//! Files that hold secrets or tenant data: created private to the service's user.
//!
//! Invariant: every directory created here is mode 0700 and every file 0600, from the moment it
//! exists (created with that mode, never chmod-ed afterwards), so no other local user can read
//! a key, a certificate's private key or a tenant's database, not even for an instant.

use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use anyhow::Context as _;

/// Creates `dir` and its missing parents, each mode 0700; an existing directory is left as is.
pub fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))
}

/// Creates an empty file at `path` (mode 0600) unless one exists: SQLite then opens it, and
/// gives its `-wal` and `-shm` files the same mode.
pub fn touch_private(path: &Path) -> anyhow::Result<()> {
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e).with_context(|| format!("creating {}", path.display())),
    }
}

/// Writes `bytes` to a new file at `path` (mode 0600) without ever replacing an existing one:
/// the bytes go to a temporary file first, which is then hard-linked into place.
pub fn write_new_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = write_temporary(path, bytes)?;
    let linked = std::fs::hard_link(&tmp, path);
    std::fs::remove_file(&tmp)?;
    linked.map_err(anyhow::Error::from)
}

/// Replaces the file at `path` (mode 0600) with `bytes` in one step: readers see the old file
/// or the new one, never a part.
pub fn replace_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = write_temporary(path, bytes)?;
    std::fs::rename(&tmp, path).or_else(|e| {
        let _ = std::fs::remove_file(&tmp);
        Err(e).with_context(|| format!("replacing {}", path.display()))
    })
}

/// A new private file beside `path` holding `bytes`, synced to disk.
fn write_temporary(path: &Path, bytes: &[u8]) -> anyhow::Result<PathBuf> {
    let tmp = path.with_extension(format!("tmp-{}", uuid::Uuid::new_v4()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    Ok(tmp)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn what_is_created_here_only_its_owner_can_read() {
        let root = std::env::temp_dir().join(format!("flowgate-files-{}", uuid::Uuid::new_v4()));
        let dir = root.join("a/b");
        create_private_dir(&dir).unwrap();
        touch_private(&dir.join("db")).unwrap();
        write_new_private(&dir.join("key"), b"k").unwrap();
        replace_private(&dir.join("record"), b"r").unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&root.join("a")), 0o700);
        assert_eq!(mode(&dir), 0o700);
        for file in ["db", "key", "record"] {
            assert_eq!(mode(&dir.join(file)), 0o600, "{file}");
        }
        std::fs::remove_dir_all(root).unwrap();
    }
}
