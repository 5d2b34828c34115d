//! Catalog paths are outside input: a forged or damaged catalog could name `/etc/passwd`,
//! `../../root/.ssh/authorized_keys`, or a link to somewhere else followed by a file "inside" it,
//! and restore often runs as root. This module is the one place where a catalog path becomes a
//! file on disk.
//!
//! Every path is checked ([`validate`]) before anything is written, and every write is rooted at
//! a directory restore chose (the data directory, a tablespace location, a `--link-map` target):
//! directories are created and opened one component at a time with `mkdirat`/`openat` and
//! `O_NOFOLLOW`, files are created with `O_CREAT|O_EXCL|O_NOFOLLOW`. A symbolic link anywhere
//! below the root therefore stops the write with an error instead of being followed, even if it
//! appeared after the checks.

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::errno::Errno;
use nix::fcntl::{openat, renameat, OFlag};
use nix::sys::stat::{mkdirat, Mode};
use nix::unistd::{symlinkat, unlinkat, UnlinkatFlags};

#[derive(Debug, thiserror::Error)]
pub enum PathError {
    #[error("the backup catalog names an unsafe path {path:?} ({why}); it was refused before anything was written. The catalog is damaged or forged: restore another backup")]
    Unsafe { path: String, why: &'static str },
    #[error(
        "{path} is a symbolic link or not a directory; restore never writes through a link (nothing was written there)"
    )]
    Link { path: PathBuf },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

/// Checks a path from a catalog: relative, non-empty, no `.`, `..` or empty components, no NUL,
/// nothing PostgreSQL's configuration could not carry (newline).
pub fn validate(path: &str) -> Result<(), PathError> {
    let bad = |why| {
        Err(PathError::Unsafe {
            path: path.to_string(),
            why,
        })
    };
    if path.is_empty() {
        return bad("empty");
    }
    if path.starts_with('/') {
        return bad("absolute");
    }
    if path.contains('\0') {
        return bad("contains NUL");
    }
    if path.contains('\n') || path.contains('\r') {
        return bad("contains a line break");
    }
    for c in path.split('/') {
        match c {
            "" => return bad("empty component"),
            "." => return bad("'.' component"),
            ".." => return bad("'..' component"),
            _ => {}
        }
    }
    Ok(())
}

/// Checks an absolute destination (a tablespace location from the catalog, a `--link-map` or
/// `--tablespace-map` target): absolute, and normal apart from the leading `/`.
pub fn validate_absolute(path: &str) -> Result<(), PathError> {
    match path.strip_prefix('/') {
        None => Err(PathError::Unsafe {
            path: path.to_string(),
            why: "not absolute",
        }),
        Some("") => Err(PathError::Unsafe {
            path: path.to_string(),
            why: "the root directory",
        }),
        Some(rest) => validate(rest.trim_end_matches('/')).map_err(|e| match e {
            PathError::Unsafe { why, .. } => PathError::Unsafe {
                path: path.to_string(),
                why,
            },
            other => other,
        }),
    }
}

/// Where one catalog entry is written: a root directory restore chose and a validated relative
/// path below it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dest {
    pub root: Arc<PathBuf>,
    pub rel: String,
}

impl Dest {
    /// `rel` is validated here, so every `Dest` is safe to write.
    pub fn new(root: Arc<PathBuf>, rel: &str) -> Result<Dest, PathError> {
        validate(rel)?;
        Ok(Dest {
            root,
            rel: rel.to_string(),
        })
    }

    /// The full path, for messages and read-only use.
    pub fn full(&self) -> PathBuf {
        self.root.join(&self.rel)
    }

    fn split(&self) -> (Vec<&str>, &str) {
        let mut parts: Vec<&str> = self.rel.split('/').collect();
        let last = parts.pop().unwrap_or_default();
        (parts, last)
    }

    /// The directory holding this entry.
    pub fn parent_dir(&self) -> Result<Dest, PathError> {
        match self.rel.rsplit_once('/') {
            Some((dir, _)) => Dest::new(self.root.clone(), dir),
            None => Err(PathError::Unsafe {
                path: self.rel.clone(),
                why: "no parent",
            }),
        }
    }

    /// Same root, another last component (the temporary name of `global/pg_control`).
    pub fn with_name(&self, name: &str) -> Result<Dest, PathError> {
        let (dirs, _) = self.split();
        let mut rel = dirs.join("/");
        if !rel.is_empty() {
            rel.push('/');
        }
        rel.push_str(name);
        Dest::new(self.root.clone(), &rel)
    }
}

fn io(path: PathBuf) -> impl FnOnce(Errno) -> PathError {
    move |e| match e {
        Errno::ELOOP | Errno::ENOTDIR => PathError::Link { path },
        e => PathError::Io {
            path,
            source: std::io::Error::from(e),
        },
    }
}

fn owned(fd: RawFd) -> OwnedFd {
    // SAFETY: `fd` was just returned by a successful openat and is owned by nobody else.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

fn open_root(root: &Path) -> Result<OwnedFd, PathError> {
    let fd = openat(
        None,
        root,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(io(root.to_path_buf()))?;
    Ok(owned(fd))
}

/// Opens (creating with 0700 if `create`) each directory of `comps` below `root`, never following
/// a link.
fn walk(root: &Path, comps: &[&str], create: bool) -> Result<OwnedFd, PathError> {
    let mut fd = open_root(root)?;
    let mut here = root.to_path_buf();
    for c in comps {
        here.push(c);
        if create {
            match mkdirat(Some(fd.as_raw_fd()), *c, Mode::from_bits_truncate(0o700)) {
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(e) => return Err(io(here)(e)),
            }
        }
        let next = openat(
            Some(fd.as_raw_fd()),
            *c,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(io(here.clone()))?;
        fd = owned(next);
    }
    Ok(fd)
}

/// Creates the directory `d` (and missing parents) with mode 0700, through no link.
pub fn mkdir_all(d: &Dest) -> Result<(), PathError> {
    let comps: Vec<&str> = d.rel.split('/').collect();
    walk(&d.root, &comps, true).map(drop)
}

/// Opens the directory `d` (for fchmod, fchown, fsync), through no link.
pub fn open_dir(d: &Dest) -> Result<File, PathError> {
    let comps: Vec<&str> = d.rel.split('/').collect();
    walk(&d.root, &comps, false).map(File::from)
}

/// Opens a root directory itself (for fchown and fsync).
pub fn open_root_dir(root: &Path) -> Result<File, PathError> {
    open_root(root).map(File::from)
}

/// Creates the file `d`, which must not exist, mode 0600, through no link (parents are created
/// 0700 when missing).
pub fn create_file(d: &Dest) -> Result<File, PathError> {
    let (dirs, name) = d.split();
    let parent = walk(&d.root, &dirs, true)?;
    let flags = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let fd = openat(Some(parent.as_raw_fd()), name, flags, Mode::from_bits_truncate(0o600)).map_err(io(d.full()))?;
    Ok(File::from(owned(fd)))
}

/// Opens the existing regular file `d` for writing, through no link.
pub fn open_nofollow(d: &Dest) -> Result<File, PathError> {
    open_with(d, OFlag::O_WRONLY)
}

/// Opens the existing regular file `d` for reading, through no link; `None` when missing.
pub fn open_read(d: &Dest) -> Result<Option<File>, PathError> {
    match open_with(d, OFlag::O_RDONLY) {
        Ok(f) => Ok(Some(f)),
        Err(PathError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn open_with(d: &Dest, mode: OFlag) -> Result<File, PathError> {
    let (dirs, name) = d.split();
    let parent = walk(&d.root, &dirs, false)?;
    let fd = openat(
        Some(parent.as_raw_fd()),
        name,
        mode | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(io(d.full()))?;
    Ok(File::from(owned(fd)))
}

/// Creates the symbolic link `d` pointing at `target` (tablespaces and mapped links only).
pub fn symlink(d: &Dest, target: &Path) -> Result<(), PathError> {
    let (dirs, name) = d.split();
    let parent = walk(&d.root, &dirs, true)?;
    symlinkat(target, Some(parent.as_raw_fd()), name).map_err(io(d.full()))
}

/// Removes the file or link `d`; a missing one (or a missing parent) is not an error.
pub fn remove(d: &Dest) -> Result<(), PathError> {
    let (dirs, name) = d.split();
    let parent = match walk(&d.root, &dirs, false) {
        Ok(p) => p,
        Err(PathError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    match unlinkat(Some(parent.as_raw_fd()), name, UnlinkatFlags::NoRemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => Ok(()),
        Err(e) => Err(io(d.full())(e)),
    }
}

/// Renames `from` to `to_name` in the same directory, then fsyncs that directory.
pub fn rename_synced(from: &Dest, to_name: &str) -> Result<(), PathError> {
    let (dirs, name) = from.split();
    let parent = walk(&from.root, &dirs, false)?;
    let pfd = parent.as_raw_fd();
    renameat(Some(pfd), name, Some(pfd), to_name).map_err(io(from.full()))?;
    File::from(parent).sync_all().map_err(|source| PathError::Io {
        path: from.full(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validate_refuses_escapes() {
        for bad in [
            "",
            "/etc/passwd",
            "a/../b",
            "..",
            "./a",
            "a//b",
            "a/",
            "a/.",
            "a\0b",
            "a\nb",
        ] {
            assert!(validate(bad).is_err(), "{bad:?} must be refused");
        }
        for good in [
            "base/1/1259",
            "global/pg_control",
            "pg_tblspc/16384/PG_15/5/1",
            "a..b",
            ".hidden",
        ] {
            validate(good).unwrap_or_else(|e| panic!("{good:?}: {e}"));
        }
    }

    #[test]
    fn validate_absolute_paths() {
        assert!(validate_absolute("/srv/ts").is_ok());
        assert!(validate_absolute("/srv/ts/").is_ok());
        for bad in ["srv", "/", "/srv/../etc", "/srv//x"] {
            assert!(validate_absolute(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn never_writes_through_a_link() {
        let tmp = tempfile::tempdir().unwrap();
        let root = Arc::new(tmp.path().join("data"));
        let outside = tmp.path().join("outside");
        std::fs::create_dir_all(&*root).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("evil")).unwrap();
        let d = Dest::new(root.clone(), "evil/file").unwrap();
        assert!(matches!(create_file(&d), Err(PathError::Link { .. })));
        assert!(matches!(
            mkdir_all(&Dest::new(root.clone(), "evil/sub").unwrap()),
            Err(PathError::Link { .. })
        ));
        // A link as the last component is not opened either.
        std::os::unix::fs::symlink(outside.join("f"), root.join("lnk")).unwrap();
        std::fs::write(outside.join("f"), b"x").unwrap();
        assert!(open_nofollow(&Dest::new(root.clone(), "lnk").unwrap()).is_err());
        assert!(create_file(&Dest::new(root.clone(), "lnk").unwrap()).is_err());
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 1, "nothing new outside");
        assert_eq!(std::fs::read(outside.join("f")).unwrap(), b"x");
    }

    #[test]
    fn creates_renames_and_removes() {
        let tmp = tempfile::tempdir().unwrap();
        let root = Arc::new(tmp.path().to_path_buf());
        let d = Dest::new(root.clone(), "global/pg_control").unwrap();
        let t = d.with_name("pg_control.tmp").unwrap();
        assert_eq!(t.rel, "global/pg_control.tmp");
        create_file(&t).unwrap();
        assert!(create_file(&t).is_err(), "O_EXCL");
        rename_synced(&t, "pg_control").unwrap();
        assert!(d.full().exists());
        remove(&d).unwrap();
        remove(&d).unwrap();
        assert!(!d.full().exists());
        assert!(open_read(&d).unwrap().is_none());
    }
}
