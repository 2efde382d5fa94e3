//! Files only their owner may read: key material, databases of SCRAM
//! secrets and MLS state, decrypted history. Directories are 0700 and
//! files 0600 when created, and trees written by earlier versions (or
//! copied in with a looser mode) are tightened at start-up.

use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// The mode of a private directory.
pub const DIR_MODE: u32 = 0o700;
/// The mode of a private file.
pub const FILE_MODE: u32 = 0o600;

/// Creates `dir` (with its missing parents, each 0700) unless it exists,
/// and makes it 0700.
pub fn private_dir(dir: &Path) -> io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)?;
    set_mode(dir, DIR_MODE)
}

/// Makes `path` 0600, creating it empty if missing: a database file made
/// this way before SQLite opens it gives its journal and WAL files the
/// same mode.
pub fn private_file(path: &Path) -> io::Result<()> {
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(FILE_MODE)
        .open(path)?;
    set_mode(path, FILE_MODE)
}

/// Options that create a file 0600 (an existing file keeps its mode).
pub fn private_options() -> std::fs::OpenOptions {
    let mut options = std::fs::OpenOptions::new();
    options.mode(FILE_MODE);
    options
}

/// Makes `dir` and every directory under it 0700 and every file 0600;
/// symbolic links are left alone (and not followed).
pub fn tighten_tree(dir: &Path) -> io::Result<()> {
    let meta = std::fs::symlink_metadata(dir)?;
    if meta.file_type().is_symlink() {
        return Ok(());
    }
    if !meta.is_dir() {
        return tighten(dir, &meta, FILE_MODE);
    }
    tighten(dir, &meta, DIR_MODE)?;
    for entry in std::fs::read_dir(dir)? {
        tighten_tree(&entry?.path())?;
    }
    Ok(())
}

fn tighten(path: &Path, meta: &std::fs::Metadata, mode: u32) -> io::Result<()> {
    if meta.permissions().mode() & 0o777 != mode {
        set_mode(path, mode)?;
    }
    Ok(())
}

fn set_mode(path: &Path, mode: u32) -> io::Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path)
            .expect("metadata")
            .permissions()
            .mode()
            & 0o777
    }

    #[test]
    fn created_private_and_earlier_trees_tightened() {
        let root = tempfile_dir();
        let dir = root.join("a/b");
        private_dir(&dir).expect("dir");
        assert_eq!(mode(&root.join("a")), DIR_MODE);
        assert_eq!(mode(&dir), DIR_MODE);
        let db = dir.join("db.sqlite3");
        private_file(&db).expect("file");
        assert_eq!(mode(&db), FILE_MODE);

        let loose = root.join("a/loose");
        std::fs::create_dir(&loose).expect("dir");
        set_mode(&loose, 0o755).expect("chmod");
        let file = loose.join("key.pem");
        std::fs::write(&file, "secret").expect("write");
        set_mode(&file, 0o644).expect("chmod");
        tighten_tree(&root.join("a")).expect("tighten");
        assert_eq!(mode(&loose), DIR_MODE);
        assert_eq!(mode(&file), FILE_MODE);
        assert_eq!(std::fs::read_to_string(&file).expect("read"), "secret");
        std::fs::remove_dir_all(&root).expect("clean up");
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "tern-private-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        ));
        std::fs::create_dir(&dir).expect("temp dir");
        dir
    }
}
