//! Keeps the data directory to its owner: chat history and password hashes
//! are not for other local users. Directories are 0700 and files 0600,
//! without touching the process umask (it is process-wide).

use std::fs::{self, DirBuilder, Permissions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

/// The mode of the data directory and of every directory in it.
pub const DIR_MODE: u32 = 0o700;
/// The mode of every file in the data directory (as sled and palaver make
/// them: tightening only takes bits away).
pub const FILE_MODE: u32 = 0o600;
/// The bits other local users would use: never set on what palaver keeps.
const GROUP_AND_OTHER: u32 = 0o077;

/// Creates `dir` (and missing parents) with mode 0700 before anything is
/// written in it; an existing directory loses its group and other bits
/// (logged; a directory the process cannot change, e.g. one it does not own,
/// stays as it is, with a warning).
pub fn private_dir(dir: &Path) -> io::Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)?;
    match tighten(dir) {
        Ok(None) => {}
        Ok(Some(was)) => tracing::info!(
            path = %dir.display(),
            was = format_args!("{was:o}"),
            "the directory was open to other local users: restricted to its owner"
        ),
        Err(e) => tracing::warn!(
            path = %dir.display(),
            error = %e,
            "cannot restrict the directory to its owner: other local users may read it"
        ),
    }
    Ok(())
}

/// Takes group and other bits off every file and directory under `dir`:
/// sled creates its files with the umask's mode (usually 0644), and a copy
/// restored from a backup may have any. Symlinks are left alone. A failure
/// is logged, not returned: the 0700 directory is what keeps others out,
/// this is the second lock (files sled creates later, snapshots and blobs,
/// get the umask's mode until the next start, inside that directory).
pub fn tighten_tree(dir: &Path) {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            tracing::warn!(path = %dir.display(), error = %e, "cannot list the directory to restrict its permissions");
            return;
        }
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let outcome = match entry.file_type() {
            Ok(kind) if kind.is_dir() => {
                let outcome = tighten(&path);
                tighten_tree(&path);
                outcome
            }
            Ok(kind) if kind.is_file() => tighten(&path),
            _ => Ok(None),
        };
        if let Err(e) = outcome {
            tracing::warn!(path = %path.display(), error = %e, "cannot restrict permissions to the owner");
        }
    }
}

/// Removes the group and other bits of `path` (of its target, for a
/// symlinked data directory), if it has any: the mode it had then.
fn tighten(path: &Path) -> io::Result<Option<u32>> {
    let mode = fs::metadata(path)?.permissions().mode() & 0o7777;
    if mode & GROUP_AND_OTHER == 0 {
        return Ok(None);
    }
    fs::set_permissions(path, Permissions::from_mode(mode & !GROUP_AND_OTHER))?;
    Ok(Some(mode))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn a_new_directory_is_0700_and_an_existing_one_is_tightened() {
        let tmp = tempfile::tempdir().unwrap();
        let fresh = tmp.path().join("a/b");
        private_dir(&fresh).unwrap();
        assert_eq!(mode(&fresh), DIR_MODE);

        let loose = tmp.path().join("loose");
        fs::create_dir(&loose).unwrap();
        fs::set_permissions(&loose, Permissions::from_mode(0o755)).unwrap();
        private_dir(&loose).unwrap();
        assert_eq!(mode(&loose), DIR_MODE);
    }

    #[test]
    fn a_tree_loses_group_and_other_bits_and_symlinks_are_not_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("outside");
        fs::write(&outside, b"not ours").unwrap();
        fs::set_permissions(&outside, Permissions::from_mode(0o644)).unwrap();
        let root = tmp.path().join("db");
        fs::create_dir_all(root.join("blobs")).unwrap();
        fs::write(root.join("conf"), b"x").unwrap();
        fs::write(root.join("blobs/1"), b"x").unwrap();
        fs::set_permissions(root.join("conf"), Permissions::from_mode(0o664)).unwrap();
        fs::set_permissions(root.join("blobs/1"), Permissions::from_mode(0o644)).unwrap();
        fs::set_permissions(root.join("blobs"), Permissions::from_mode(0o775)).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("link")).unwrap();

        tighten_tree(&root);
        assert_eq!(mode(&root.join("conf")), FILE_MODE);
        assert_eq!(mode(&root.join("blobs/1")), FILE_MODE);
        assert_eq!(mode(&root.join("blobs")), DIR_MODE);
        assert_eq!(mode(&outside), 0o644, "the symlink's target is not ours");
    }
}
