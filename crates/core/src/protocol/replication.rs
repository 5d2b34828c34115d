//! Physical replication commands that pgvault needs for backups: IDENTIFY_SYSTEM and
//! BASE_BACKUP (PostgreSQL 15+ option syntax). BASE_BACKUP's output is handed out message by
//! message so that a multi-terabyte cluster streams through pgvault without being buffered.

use bytes::{Buf, Bytes};
use postgres_protocol::message::backend::Message;

use super::connection::{column_names, decode_data_row, log_notice, server_error, unexpected, Connection};
use super::error::ProtocolError;
use super::params::quote_literal;
use crate::lsn::Lsn;

/// What IDENTIFY_SYSTEM says about the server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SystemIdentity {
    /// The cluster's unique id (pg_control's system identifier).
    pub system_identifier: u64,
    pub timeline: u32,
    /// Current WAL flush position.
    pub xlogpos: Lsn,
    /// Database of the session; `None` for physical replication.
    pub dbname: Option<String>,
}

/// Options of BASE_BACKUP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BaseBackupOptions {
    pub label: String,
    /// CHECKPOINT 'fast' (else 'spread').
    pub fast_checkpoint: bool,
    /// MANIFEST 'yes': the server sends a backup manifest (JSON) after the archives.
    pub manifest: bool,
    /// PROGRESS: tablespace sizes are estimated first and progress messages are sent.
    pub progress: bool,
    /// WAL: include the WAL needed to make the backup consistent in base.tar.
    pub wal: bool,
    /// WAIT: have the server wait for the WAL to be archived. pgvault waits itself.
    pub wait_for_archive: bool,
    /// MAX_RATE in kB/s (32..=1048576).
    pub max_rate_kb: Option<u32>,
    /// TABLESPACE_MAP: put a `tablespace_map` file into base.tar instead of relying on the
    /// pg_tblspc symlinks, as pg_basebackup does for tar output (needed to relocate
    /// tablespaces on restore).
    pub tablespace_map: bool,
}

impl Default for BaseBackupOptions {
    fn default() -> Self {
        BaseBackupOptions {
            label: "pgvault base backup".into(),
            fast_checkpoint: true,
            manifest: true,
            progress: false,
            wal: false,
            wait_for_archive: false,
            max_rate_kb: None,
            tablespace_map: true,
        }
    }
}

impl BaseBackupOptions {
    /// The BASE_BACKUP command text.
    pub fn command(&self) -> Result<String, ProtocolError> {
        let mut opts = vec![format!("LABEL {}", quote_literal(&self.label)?)];
        opts.push(format!(
            "CHECKPOINT '{}'",
            if self.fast_checkpoint { "fast" } else { "spread" }
        ));
        opts.push(format!("MANIFEST '{}'", if self.manifest { "yes" } else { "no" }));
        if self.progress {
            opts.push("PROGRESS".into());
        }
        if self.wal {
            opts.push("WAL".into());
        }
        opts.push(format!("WAIT {}", if self.wait_for_archive { "true" } else { "false" }));
        if let Some(rate) = self.max_rate_kb {
            if !(32..=1_048_576).contains(&rate) {
                return Err(ProtocolError::Config(format!(
                    "max_rate of {rate} kB/s is outside what PostgreSQL accepts (32 to 1048576 kB/s): change it or leave it unset"
                )));
            }
            opts.push(format!("MAX_RATE {rate}"));
        }
        if self.tablespace_map {
            opts.push("TABLESPACE_MAP".into());
        }
        Ok(format!("BASE_BACKUP ( {} )", opts.join(", ")))
    }
}

/// Size of the CopyData messages carrying an uploaded manifest.
const UPLOAD_CHUNK: usize = 64 * 1024;

/// `command` (a `BASE_BACKUP ( … )` text) with the INCREMENTAL option added.
fn incremental_command(command: &str) -> String {
    match command.strip_suffix(" )") {
        Some(head) => format!("{head}, INCREMENTAL )"),
        None => format!("{command} INCREMENTAL"),
    }
}

/// One tablespace of the backup, as listed before the archives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TablespaceInfo {
    /// `None` for the main data directory.
    pub oid: Option<u32>,
    /// `None` for the main data directory.
    pub location: Option<String>,
    /// Estimated size; only with `progress`.
    pub size_kb: Option<i64>,
}

/// One piece of a BASE_BACKUP stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BackupEvent {
    /// A new tar archive starts: `base.tar` or `<oid>.tar`.
    NewArchive {
        name: String,
        tablespace_location: Option<String>,
    },
    /// The next bytes of the current archive.
    ArchiveData(Bytes),
    /// Bytes done so far, in total over all archives.
    Progress(u64),
    /// The archives are over; the manifest follows.
    ManifestStart,
    /// The next bytes of the manifest.
    ManifestData(Bytes),
}

/// How the backup ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackupEnd {
    pub stop_lsn: Lsn,
    pub stop_timeline: u32,
}

/// A running BASE_BACKUP. Read it with [`next`](Self::next) until `None`, then call
/// [`finish`](Self::finish). Dropping it earlier leaves the connection unusable.
pub struct BaseBackupStream<'a> {
    pub start_lsn: Lsn,
    pub start_timeline: u32,
    pub tablespaces: Vec<TablespaceInfo>,
    conn: &'a mut Connection,
    in_manifest: bool,
    seen_archive: bool,
    copy_done: bool,
}

impl std::fmt::Debug for BaseBackupStream<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BaseBackupStream")
            .field("start_lsn", &self.start_lsn)
            .field("start_timeline", &self.start_timeline)
            .field("tablespaces", &self.tablespaces)
            .field("copy_done", &self.copy_done)
            .finish()
    }
}

impl Connection {
    /// IDENTIFY_SYSTEM (replication connections only).
    pub async fn identify_system(&mut self) -> Result<SystemIdentity, ProtocolError> {
        self.ensure_replication("IDENTIFY_SYSTEM")?;
        let rows = self.simple_query("IDENTIFY_SYSTEM").await?;
        let row = rows
            .first()
            .ok_or_else(|| ProtocolError::Protocol("IDENTIFY_SYSTEM returned no row".into()))?;
        parse_identify_system(row)
    }

    /// Starts BASE_BACKUP and reads up to the first archive: the start position and the
    /// tablespace list are in the returned stream.
    pub async fn base_backup(&mut self, opts: &BaseBackupOptions) -> Result<BaseBackupStream<'_>, ProtocolError> {
        let command = opts.command()?;
        self.start_base_backup(command).await
    }

    /// An incremental BASE_BACKUP (PostgreSQL 17+): `UPLOAD_MANIFEST` sends the parent backup's
    /// `backup_manifest`, then `BASE_BACKUP (…, INCREMENTAL)` on the same connection. Files the
    /// server sends incrementally are named `INCREMENTAL.<name>` in the archives. The server
    /// refuses (an error naming the cause) when it lacks WAL summaries back to the parent.
    pub async fn incremental_base_backup(
        &mut self,
        opts: &BaseBackupOptions,
        parent_manifest: &[u8],
    ) -> Result<BaseBackupStream<'_>, ProtocolError> {
        self.upload_manifest(parent_manifest).await?;
        let command = incremental_command(&opts.command()?);
        self.start_base_backup(command).await
    }

    /// `UPLOAD_MANIFEST`: the server answers CopyIn; the manifest goes in CopyData messages.
    pub async fn upload_manifest(&mut self, manifest: &[u8]) -> Result<(), ProtocolError> {
        self.ensure_replication("UPLOAD_MANIFEST")?;
        self.ensure_idle()?;
        postgres_protocol::message::frontend::query("UPLOAD_MANIFEST", self.write_buf())
            .map_err(|e| ProtocolError::Config(format!("cannot send UPLOAD_MANIFEST: {e}")))?;
        self.flush().await?;
        let context = format!("uploading the parent's backup_manifest to {}", self.describe_endpoint());
        let mut error = None;
        loop {
            match self.read_message().await? {
                Message::CopyInResponse(_) => {
                    for chunk in manifest.chunks(UPLOAD_CHUNK) {
                        let buf = self.write_buf();
                        buf.extend_from_slice(b"d");
                        buf.extend_from_slice(&(chunk.len() as i32 + 4).to_be_bytes());
                        buf.extend_from_slice(chunk);
                        self.flush().await?;
                    }
                    postgres_protocol::message::frontend::copy_done(self.write_buf());
                    self.flush().await?;
                }
                Message::CommandComplete(_) | Message::RowDescription(_) | Message::DataRow(_) => {}
                Message::NoticeResponse(body) => log_notice(body.fields()),
                Message::ErrorResponse(body) => error = Some(server_error(body.fields(), Some(context.clone()))),
                Message::ReadyForQuery(_) => break,
                other => return Err(unexpected(&other, "UPLOAD_MANIFEST")),
            }
        }
        match error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    async fn start_base_backup(&mut self, command: String) -> Result<BaseBackupStream<'_>, ProtocolError> {
        self.ensure_replication("BASE_BACKUP")?;
        tracing::debug!(%command, endpoint = %self.describe_endpoint(), "starting base backup");
        postgres_protocol::message::frontend::query(&command, self.write_buf())
            .map_err(|e| ProtocolError::Config(format!("cannot send BASE_BACKUP: {e}")))?;
        self.flush().await?;

        let context = format!("starting BASE_BACKUP on {}", self.describe_endpoint());
        let mut result_sets: Vec<Vec<Vec<Option<String>>>> = Vec::new();
        loop {
            match self.read_message().await? {
                Message::RowDescription(body) => {
                    tracing::trace!(columns = ?column_names(&body)?, "BASE_BACKUP result set");
                    result_sets.push(Vec::new());
                }
                Message::DataRow(body) => {
                    let row = decode_data_row(&body)?;
                    result_sets
                        .last_mut()
                        .ok_or_else(|| ProtocolError::Protocol("DataRow before RowDescription in BASE_BACKUP".into()))?
                        .push(row);
                }
                Message::CommandComplete(_) => {}
                Message::NoticeResponse(body) => log_notice(body.fields()),
                Message::ErrorResponse(body) => {
                    let err = server_error(body.fields(), Some(context));
                    self.drain_to_ready().await?;
                    return Err(err);
                }
                Message::CopyOutResponse(_) => break,
                Message::ReadyForQuery(_) => {
                    return Err(ProtocolError::Protocol(
                        "BASE_BACKUP ended before sending any archive".into(),
                    ))
                }
                other => return Err(unexpected(&other, "the start of BASE_BACKUP")),
            }
        }
        let (start_lsn, start_timeline) = result_sets
            .first()
            .and_then(|set| set.first())
            .map(|row| parse_position(row, "BASE_BACKUP start position"))
            .transpose()?
            .ok_or_else(|| ProtocolError::Protocol("BASE_BACKUP sent no start position".into()))?;
        let tablespaces = match result_sets.get(1) {
            Some(rows) => rows.iter().map(|r| parse_tablespace(r)).collect::<Result<_, _>>()?,
            None => Vec::new(),
        };
        self.in_copy = true;
        Ok(BaseBackupStream {
            start_lsn,
            start_timeline,
            tablespaces,
            conn: self,
            in_manifest: false,
            seen_archive: false,
            copy_done: false,
        })
    }
}

impl BaseBackupStream<'_> {
    /// The next event; `None` once the server has sent CopyDone.
    pub async fn next(&mut self) -> Result<Option<BackupEvent>, ProtocolError> {
        if self.copy_done {
            return Ok(None);
        }
        loop {
            match self.conn.read_message().await? {
                Message::CopyData(body) => {
                    let event = decode_copy_payload(body.into_bytes(), self.in_manifest, self.seen_archive)?;
                    match &event {
                        BackupEvent::ManifestStart => self.in_manifest = true,
                        BackupEvent::NewArchive { .. } => self.seen_archive = true,
                        _ => {}
                    }
                    return Ok(Some(event));
                }
                Message::CopyDone => {
                    self.copy_done = true;
                    return Ok(None);
                }
                Message::NoticeResponse(body) => log_notice(body.fields()),
                Message::ErrorResponse(body) => {
                    let err = server_error(
                        body.fields(),
                        Some(format!("streaming BASE_BACKUP from {}", self.conn.describe_endpoint())),
                    );
                    self.conn.drain_to_ready().await?;
                    self.conn.in_copy = false;
                    return Err(err);
                }
                other => return Err(unexpected(&other, "the BASE_BACKUP stream")),
            }
        }
    }

    /// Reads the end of the backup (stop position and timeline) up to ReadyForQuery. Events
    /// not yet read are skipped with a warning.
    pub async fn finish(mut self) -> Result<BackupEnd, ProtocolError> {
        let mut skipped = 0u64;
        while let Some(event) = self.next().await? {
            if let BackupEvent::ArchiveData(b) | BackupEvent::ManifestData(b) = event {
                skipped += b.len() as u64;
            }
        }
        if skipped > 0 {
            tracing::warn!(
                skipped_bytes = skipped,
                "BaseBackupStream::finish skipped unread backup data"
            );
        }
        let context = format!("finishing BASE_BACKUP on {}", self.conn.describe_endpoint());
        let mut end = None;
        let mut error = None;
        loop {
            match self.conn.read_message().await? {
                Message::RowDescription(_) | Message::CommandComplete(_) => {}
                Message::DataRow(body) => {
                    if end.is_none() {
                        end = Some(parse_position(&decode_data_row(&body)?, "BASE_BACKUP end position")?);
                    }
                }
                Message::NoticeResponse(body) => log_notice(body.fields()),
                Message::ErrorResponse(body) => {
                    error = Some(server_error(body.fields(), Some(context.clone())));
                }
                Message::ReadyForQuery(_) => break,
                other => return Err(unexpected(&other, "the end of BASE_BACKUP")),
            }
        }
        self.conn.in_copy = false;
        if let Some(err) = error {
            return Err(err);
        }
        let (stop_lsn, stop_timeline) =
            end.ok_or_else(|| ProtocolError::Protocol("BASE_BACKUP sent no end position".into()))?;
        Ok(BackupEnd {
            stop_lsn,
            stop_timeline,
        })
    }
}

/// Decodes one CopyData payload of a BASE_BACKUP stream (PostgreSQL 15+ format).
pub(crate) fn decode_copy_payload(
    mut payload: Bytes,
    in_manifest: bool,
    seen_archive: bool,
) -> Result<BackupEvent, ProtocolError> {
    if payload.is_empty() {
        return Err(ProtocolError::Protocol("empty CopyData in BASE_BACKUP".into()));
    }
    let kind = payload.get_u8();
    match kind {
        b'n' => {
            let name = take_cstr(&mut payload, "archive name")?;
            let location = take_cstr(&mut payload, "tablespace location")?;
            Ok(BackupEvent::NewArchive {
                name,
                tablespace_location: (!location.is_empty()).then_some(location),
            })
        }
        b'd' if in_manifest => Ok(BackupEvent::ManifestData(payload)),
        b'd' if seen_archive => Ok(BackupEvent::ArchiveData(payload)),
        b'd' => Err(ProtocolError::Protocol(
            "BASE_BACKUP data arrived before any archive was announced".into(),
        )),
        b'p' => {
            if payload.len() < 8 {
                return Err(ProtocolError::Protocol("short BASE_BACKUP progress message".into()));
            }
            let done = payload.get_i64();
            Ok(BackupEvent::Progress(done.max(0) as u64))
        }
        b'm' => Ok(BackupEvent::ManifestStart),
        other => Err(ProtocolError::Protocol(format!(
            "unknown BASE_BACKUP CopyData kind {:?}; is the server newer than this pgvault understands?",
            other as char
        ))),
    }
}

fn take_cstr(buf: &mut Bytes, what: &str) -> Result<String, ProtocolError> {
    let end = buf
        .iter()
        .position(|b| *b == 0)
        .ok_or_else(|| ProtocolError::Protocol(format!("BASE_BACKUP {what} is not NUL-terminated")))?;
    let s = String::from_utf8(buf.split_to(end).to_vec())
        .map_err(|_| ProtocolError::Protocol(format!("BASE_BACKUP {what} is not UTF-8")))?;
    buf.advance(1);
    Ok(s)
}

fn column<'r>(row: &'r [Option<String>], i: usize, what: &str) -> Result<&'r str, ProtocolError> {
    row.get(i)
        .and_then(|c| c.as_deref())
        .ok_or_else(|| ProtocolError::Protocol(format!("{what}: column {i} is missing or NULL")))
}

fn parse_lsn(text: &str, what: &str) -> Result<Lsn, ProtocolError> {
    text.parse()
        .map_err(|e| ProtocolError::Protocol(format!("{what}: {e}")))
}

pub(crate) fn parse_position(row: &[Option<String>], what: &str) -> Result<(Lsn, u32), ProtocolError> {
    let lsn = parse_lsn(column(row, 0, what)?, what)?;
    let tli = column(row, 1, what)?
        .parse()
        .map_err(|_| ProtocolError::Protocol(format!("{what}: timeline is not a number")))?;
    Ok((lsn, tli))
}

pub(crate) fn parse_tablespace(row: &[Option<String>]) -> Result<TablespaceInfo, ProtocolError> {
    let what = "BASE_BACKUP tablespace list";
    let oid = row
        .first()
        .and_then(|c| c.as_deref())
        .map(|s| s.parse::<u32>())
        .transpose()
        .map_err(|_| ProtocolError::Protocol(format!("{what}: spcoid is not a number")))?;
    let location = row.get(1).cloned().flatten();
    let size_kb = row
        .get(2)
        .and_then(|c| c.as_deref())
        .map(|s| s.parse::<i64>())
        .transpose()
        .map_err(|_| ProtocolError::Protocol(format!("{what}: size is not a number")))?;
    Ok(TablespaceInfo { oid, location, size_kb })
}

pub(crate) fn parse_identify_system(row: &[Option<String>]) -> Result<SystemIdentity, ProtocolError> {
    let what = "IDENTIFY_SYSTEM";
    let system_identifier = column(row, 0, what)?
        .parse()
        .map_err(|_| ProtocolError::Protocol(format!("{what}: systemid is not a number")))?;
    let timeline = column(row, 1, what)?
        .parse()
        .map_err(|_| ProtocolError::Protocol(format!("{what}: timeline is not a number")))?;
    let xlogpos = parse_lsn(column(row, 2, what)?, what)?;
    let dbname = row.get(3).cloned().flatten();
    Ok(SystemIdentity {
        system_identifier,
        timeline,
        xlogpos,
        dbname,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_the_incremental_option() {
        let cmd = BaseBackupOptions::default().command().unwrap();
        let inc = incremental_command(&cmd);
        assert!(inc.starts_with("BASE_BACKUP ( LABEL"), "{inc}");
        assert!(inc.ends_with(", TABLESPACE_MAP, INCREMENTAL )"), "{inc}");
    }

    #[test]
    fn builds_base_backup_commands() {
        let opts = BaseBackupOptions {
            label: "pgvault 'nightly'".into(),
            progress: true,
            wal: true,
            max_rate_kb: Some(1024),
            ..Default::default()
        };
        assert_eq!(
            opts.command().unwrap(),
            "BASE_BACKUP ( LABEL 'pgvault ''nightly''', CHECKPOINT 'fast', MANIFEST 'yes', PROGRESS, WAL, WAIT false, MAX_RATE 1024, TABLESPACE_MAP )"
        );
        let opts = BaseBackupOptions {
            label: "x".into(),
            fast_checkpoint: false,
            manifest: false,
            wait_for_archive: true,
            tablespace_map: false,
            ..Default::default()
        };
        assert_eq!(
            opts.command().unwrap(),
            "BASE_BACKUP ( LABEL 'x', CHECKPOINT 'spread', MANIFEST 'no', WAIT true )"
        );
        let too_slow = BaseBackupOptions {
            max_rate_kb: Some(1),
            ..Default::default()
        };
        assert!(too_slow.command().unwrap_err().to_string().contains("32 to 1048576"));
        let nul = BaseBackupOptions {
            label: "a\0b".into(),
            ..Default::default()
        };
        assert!(nul.command().is_err());
    }

    #[test]
    fn decodes_copy_payloads() {
        let ev = decode_copy_payload(Bytes::from_static(b"nbase.tar\0\0"), false, false).unwrap();
        assert_eq!(
            ev,
            BackupEvent::NewArchive {
                name: "base.tar".into(),
                tablespace_location: None
            }
        );
        let ev = decode_copy_payload(Bytes::from_static(b"n16385.tar\0/srv/ts\0"), false, true).unwrap();
        assert_eq!(
            ev,
            BackupEvent::NewArchive {
                name: "16385.tar".into(),
                tablespace_location: Some("/srv/ts".into())
            }
        );
        assert_eq!(
            decode_copy_payload(Bytes::from_static(b"dabc"), false, true).unwrap(),
            BackupEvent::ArchiveData(Bytes::from_static(b"abc"))
        );
        assert_eq!(
            decode_copy_payload(Bytes::from_static(b"d{}"), true, true).unwrap(),
            BackupEvent::ManifestData(Bytes::from_static(b"{}"))
        );
        assert!(decode_copy_payload(Bytes::from_static(b"dabc"), false, false).is_err());
        let mut p = vec![b'p'];
        p.extend_from_slice(&12345i64.to_be_bytes());
        assert_eq!(
            decode_copy_payload(Bytes::from(p), false, true).unwrap(),
            BackupEvent::Progress(12345)
        );
        assert!(decode_copy_payload(Bytes::from_static(b"p\0\0"), false, true).is_err());
        assert_eq!(
            decode_copy_payload(Bytes::from_static(b"m"), false, true).unwrap(),
            BackupEvent::ManifestStart
        );
        assert!(decode_copy_payload(Bytes::from_static(b"nbase.tar"), false, false).is_err());
        assert!(decode_copy_payload(Bytes::from_static(b"z"), false, false).is_err());
        assert!(decode_copy_payload(Bytes::new(), false, false).is_err());
    }

    #[test]
    fn parses_rows() {
        let s = |v: &str| Some(v.to_string());
        let id = parse_identify_system(&[s("7301234567890123456"), s("1"), s("0/3000148"), None]).unwrap();
        assert_eq!(id.system_identifier, 7301234567890123456);
        assert_eq!(id.timeline, 1);
        assert_eq!(id.xlogpos, Lsn(0x3000148));
        assert_eq!(id.dbname, None);
        assert!(parse_identify_system(&[s("x"), s("1"), s("0/0"), None]).is_err());
        assert_eq!(
            parse_position(&[s("1/2"), s("3")], "t").unwrap(),
            (Lsn(0x1_0000_0002), 3)
        );
        assert!(parse_position(&[None, s("3")], "t").is_err());
        assert_eq!(
            parse_tablespace(&[s("16385"), s("/srv/ts"), s("42")]).unwrap(),
            TablespaceInfo {
                oid: Some(16385),
                location: Some("/srv/ts".into()),
                size_kb: Some(42)
            }
        );
        assert_eq!(
            parse_tablespace(&[None, None, None]).unwrap(),
            TablespaceInfo {
                oid: None,
                location: None,
                size_kb: None
            }
        );
    }
}
