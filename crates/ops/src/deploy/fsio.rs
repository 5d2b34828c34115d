//! File writing for `deploy`: atomic replacement of generated files (a reader never sees half a
//! unit file) and exclusive creation of secrets (an existing secret is never replaced, even by a
//! second `deploy` racing this one).

use std::fs::{self, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::DeployError;

/// The contents of `path`, `None` when it does not exist.
pub(super) fn read_existing(path: &Path) -> Result<Option<Vec<u8>>, DeployError> {
    match fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(source) => Err(DeployError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn write_err(path: &Path) -> impl FnOnce(std::io::Error) -> DeployError + '_ {
    move |source| DeployError::Write {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `contents` to a temporary file beside `path` (mode `mode`, synced) and returns its path.
fn write_temp(path: &Path, contents: &[u8], mode: u32) -> Result<PathBuf, DeployError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(write_err(dir))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.pgvault-tmp-{}", std::process::id()));
    let _ = fs::remove_file(&tmp);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(write_err(&tmp))?;
    // The umask may have narrowed the mode; a unit file must stay readable (0644).
    f.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(write_err(&tmp))?;
    f.write_all(contents).map_err(write_err(&tmp))?;
    f.sync_all().map_err(write_err(&tmp))?;
    Ok(tmp)
}

/// Replaces `path` atomically with `contents`.
pub(super) fn replace(path: &Path, contents: &[u8], mode: u32) -> Result<(), DeployError> {
    let tmp = write_temp(path, contents, mode)?;
    fs::rename(&tmp, path).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        write_err(path)(e)
    })
}

/// Creates `path` with `contents`, failing (and leaving it alone) when it already exists.
pub(super) fn create_new(path: &Path, contents: &[u8], mode: u32) -> Result<(), DeployError> {
    let tmp = write_temp(path, contents, mode)?;
    // A hard link fails when the target exists: the secret appears whole or not at all.
    let linked = fs::hard_link(&tmp, path);
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Err(DeployError::BadExisting {
            path: path.to_path_buf(),
            message: "appeared while deploying; kept, run deploy again".into(),
        }),
        Err(e) => Err(write_err(path)(e)),
    }
}
