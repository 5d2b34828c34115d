//! The packing thread: turns the server's tar streams into catalog entries and bundle bytes.
//!
//! The replication connection hands over `BackupEvent`s; this thread reads the tar archives in
//! them with the `tar` crate as they arrive (one archive per tablespace), sends file contents
//! through the [`BundleWriter`], records directories and tablespace links, and keeps the server's
//! manifest for the final check. It never holds more than one read buffer of file data.

use std::collections::HashMap;
use std::io::Read;

use bytes::{Buf, Bytes};
use tokio::sync::mpsc;

use super::bundle::{AddFileError, BundleError, BundleWriter};
use super::manifest::Received;
use crate::progress::Progress;
use crate::protocol::BackupEvent;
use crate::repository::catalog::{BundleEntry, DirEntry, FileEntry, LinkEntry};

#[derive(Debug, thiserror::Error)]
pub enum PackError {
    #[error("the backup stream is not what PostgreSQL sends: {0}")]
    Stream(String),
    #[error("reading tar archive {archive}: {source}")]
    Tar { archive: String, source: std::io::Error },
    #[error("file {path}: {source}")]
    File { path: String, source: AddFileError },
    #[error(transparent)]
    Bundle(#[from] BundleError),
    #[error(transparent)]
    Incremental(#[from] super::incremental::IncrementalError),
}

/// Everything the packer learned.
pub struct Packed {
    pub files: Vec<FileEntry>,
    pub directories: Vec<DirEntry>,
    pub symlinks: Vec<LinkEntry>,
    pub bundles: Vec<BundleEntry>,
    pub manifest: Option<Vec<u8>>,
    pub received: HashMap<String, Received>,
    pub owner: Option<(u32, u32)>,
    pub size: u64,
}

/// Reads one archive's data messages as a byte stream; stops (EOF) at the next non-data event,
/// which it leaves in `stash` for the outer loop.
struct ArchiveReader<'a> {
    rx: &'a mut mpsc::Receiver<BackupEvent>,
    stash: &'a mut Option<BackupEvent>,
    cur: Bytes,
    ended: bool,
    progress: &'a dyn Progress,
}

impl Read for ArchiveReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.cur.is_empty() {
            if self.ended {
                return Ok(0);
            }
            match self.rx.blocking_recv() {
                Some(BackupEvent::ArchiveData(b)) => self.cur = b,
                Some(BackupEvent::Progress(n)) => self.progress.position(n),
                Some(other) => {
                    *self.stash = Some(other);
                    self.ended = true;
                }
                None => self.ended = true,
            }
        }
        let n = out.len().min(self.cur.len());
        out[..n].copy_from_slice(&self.cur[..n]);
        self.cur.advance(n);
        Ok(n)
    }
}

/// Normalizes a tar member name and refuses anything that could escape the data directory.
fn clean_path(prefix: &str, raw: &std::path::Path) -> Result<String, PackError> {
    let s = raw
        .to_str()
        .ok_or_else(|| PackError::Stream(format!("non-UTF-8 file name {}", raw.display())))?;
    let s = s.trim_start_matches("./").trim_end_matches('/');
    if s.is_empty() || s.starts_with('/') || s.split('/').any(|c| c == ".." || c.is_empty()) {
        return Err(PackError::Stream(format!("unsafe file name '{s}' in archive")));
    }
    Ok(format!("{prefix}{s}"))
}

/// The largest `backup_manifest` kept in memory: about ten million files' worth. The manifest is
/// the one part of the stream that is buffered whole, so a server sending endless manifest data
/// must not exhaust memory.
const MAX_MANIFEST_BYTES: usize = 2 << 30;

/// Adds `data` to the manifest being received, refusing to grow it past `limit`.
fn append_manifest(manifest: &mut Vec<u8>, data: &[u8], limit: usize) -> Result<(), PackError> {
    if manifest.len().saturating_add(data.len()) > limit {
        return Err(PackError::Stream(format!(
            "the server's backup_manifest exceeds {limit} bytes; refusing to buffer it"
        )));
    }
    manifest.extend_from_slice(data);
    Ok(())
}

/// Drives the whole stream. Runs on a blocking thread.
pub fn pack(
    mut rx: mpsc::Receiver<BackupEvent>,
    mut bundles: BundleWriter,
    progress: &dyn Progress,
) -> Result<Packed, PackError> {
    let mut out = Packed {
        files: Vec::new(),
        directories: Vec::new(),
        symlinks: Vec::new(),
        bundles: Vec::new(),
        manifest: None,
        received: HashMap::new(),
        owner: None,
        size: 0,
    };
    let result = pack_inner(&mut rx, &mut bundles, progress, &mut out);
    match result {
        Ok(()) => {
            out.bundles = bundles.finish()?;
            Ok(out)
        }
        Err(e) => {
            bundles.abandon();
            Err(e)
        }
    }
}

fn pack_inner(
    rx: &mut mpsc::Receiver<BackupEvent>,
    bundles: &mut BundleWriter,
    progress: &dyn Progress,
    out: &mut Packed,
) -> Result<(), PackError> {
    let mut stash: Option<BackupEvent> = None;
    let mut buf = vec![0u8; 256 * 1024];
    let mut head = Vec::new();
    loop {
        let ev = match stash.take() {
            Some(ev) => ev,
            None => match rx.blocking_recv() {
                Some(ev) => ev,
                None => return Ok(()),
            },
        };
        match ev {
            BackupEvent::NewArchive { name, .. } => {
                let prefix = if name == "base.tar" {
                    String::new()
                } else if let Some(oid) = name
                    .strip_suffix(".tar")
                    .filter(|o| o.bytes().all(|b| b.is_ascii_digit()))
                {
                    format!("pg_tblspc/{oid}/")
                } else {
                    return Err(PackError::Stream(format!(
                        "unexpected archive '{name}' (compressed or non-tar output?)"
                    )));
                };
                let mut reader = ArchiveReader {
                    rx,
                    stash: &mut stash,
                    cur: Bytes::new(),
                    ended: false,
                    progress,
                };
                let tar_err = |source| PackError::Tar {
                    archive: name.clone(),
                    source,
                };
                {
                    let mut archive = tar::Archive::new(&mut reader);
                    // Raw entries: PostgreSQL writes plain ustar headers only (names over 99 bytes
                    // are an error on its side), so GNU long-name and PAX members are refused
                    // below as unexpected types, instead of the tar crate buffering whatever size
                    // they claim.
                    for entry in archive.entries().map_err(tar_err)?.raw(true) {
                        let mut entry = entry.map_err(tar_err)?;
                        let header = entry.header().clone();
                        let path = clean_path(&prefix, &entry.path().map_err(tar_err)?)?;
                        let kind = header.entry_type();
                        if !(kind.is_dir() || kind.is_symlink() || kind.is_file() || kind.is_contiguous()) {
                            return Err(PackError::Stream(format!(
                                "unexpected tar member type {kind:?} for {path}"
                            )));
                        }
                        let mode = header.mode().map_err(tar_err)? & 0o7777;
                        if out.owner.is_none() {
                            if let (Ok(uid), Ok(gid)) = (header.uid(), header.gid()) {
                                out.owner = Some((uid as u32, gid as u32));
                            }
                        }
                        match kind {
                            tar::EntryType::Directory => out.directories.push(DirEntry { path, mode }),
                            tar::EntryType::Symlink => {
                                let target = entry
                                    .link_name()
                                    .map_err(tar_err)?
                                    .and_then(|t| t.to_str().map(str::to_string))
                                    .ok_or_else(|| PackError::Stream(format!("symlink {path} without a target")))?;
                                out.symlinks.push(LinkEntry { path, target });
                            }
                            tar::EntryType::Regular | tar::EntryType::Continuous => {
                                let mtime = header.mtime().unwrap_or(0) as i64;
                                let incremental = super::incremental::is_incremental_path(&path);
                                let file_err = |source| PackError::File {
                                    path: path.clone(),
                                    source,
                                };
                                let (pieces, crc, size) = if incremental {
                                    let mut tap = super::incremental::HeaderTap::new(&mut entry, &mut head);
                                    bundles.add_file(&mut tap, &mut buf).map_err(file_err)?
                                } else {
                                    bundles.add_file(&mut entry, &mut buf).map_err(file_err)?
                                };
                                let incremental = if incremental {
                                    Some(super::incremental::parse_header(&path, &head, size)?)
                                } else {
                                    None
                                };
                                out.size += size;
                                out.received.insert(path.clone(), Received { size, crc32c: crc });
                                out.files.push(FileEntry {
                                    path,
                                    size,
                                    mode,
                                    mtime,
                                    pieces,
                                    incremental,
                                });
                            }
                            other => {
                                return Err(PackError::Stream(format!(
                                    "unexpected tar member type {other:?} for {path}"
                                )))
                            }
                        }
                    }
                }
                // The tar end-of-archive blocks (if sent) are left in the reader: drain them.
                std::io::copy(&mut reader, &mut std::io::sink()).map_err(tar_err)?;
            }
            BackupEvent::ManifestStart => {
                let mut manifest = Vec::new();
                loop {
                    match rx.blocking_recv() {
                        Some(BackupEvent::ManifestData(b)) | Some(BackupEvent::ArchiveData(b)) => {
                            append_manifest(&mut manifest, &b, MAX_MANIFEST_BYTES)?
                        }
                        Some(BackupEvent::Progress(n)) => progress.position(n),
                        Some(other) => {
                            stash = Some(other);
                            break;
                        }
                        None => break,
                    }
                }
                out.manifest = Some(manifest);
            }
            BackupEvent::Progress(n) => progress.position(n),
            BackupEvent::ArchiveData(_) | BackupEvent::ManifestData(_) => {
                return Err(PackError::Stream("data outside of an archive".into()));
            }
        }
    }
}

#[cfg(test)]
#[path = "packer_prop_tests.rs"]
mod prop_tests;
