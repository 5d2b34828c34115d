//! Chunked STREAM framing (Hoang–Reyhanitabar–Rogaway–Vizár): cuts the
//! (compressed) byte stream into fixed-size chunks, each sealed with a nonce
//! that encodes its position and whether it is the last one.
//!
//! This is what turns "each chunk is authentic" into "the whole object is
//! authentic": a chunk moved elsewhere fails (counter), a stream cut at a
//! chunk boundary fails (no chunk opened with the last flag), and bytes after
//! the last chunk are refused. The same framing serves unencrypted objects
//! with a SHA-256 integrity tag, so they still detect damage and truncation.

use std::io::{self, BufRead, Read, Write};

use sha2::{Digest, Sha256};

use crate::format::aead::Aes256Gcm;
use crate::format::error::FormatError;
use crate::format::header::{read_full, NONCE_PREFIX_LEN};

/// Bytes appended to every chunk.
pub const TAG_LEN: usize = 16;

/// How chunks are protected: one framing, two sealers.
pub(crate) enum ChunkSealer {
    /// AES-256-GCM under the object's data key.
    Aes(Box<Aes256Gcm>),
    /// Unkeyed integrity tag: SHA-256(header || nonce || plaintext)[..16].
    /// Detects accidents (bit rot, truncation, reordering), not forgery.
    Digest,
}

impl ChunkSealer {
    fn digest_tag(header: &[u8], nonce: &[u8; 12], plain: &[u8]) -> [u8; TAG_LEN] {
        let mut h = Sha256::new();
        h.update(header);
        h.update(nonce);
        h.update(plain);
        let d = h.finalize();
        let mut tag = [0u8; TAG_LEN];
        tag.copy_from_slice(&d[..TAG_LEN]);
        tag
    }

    /// Seals `buf` (plaintext) in place and appends the tag.
    pub(crate) fn seal(&self, nonce: &[u8; 12], header: &[u8], buf: &mut Vec<u8>) -> Result<(), FormatError> {
        let tag: [u8; TAG_LEN] = match self {
            ChunkSealer::Aes(c) => c
                .seal_in_place(nonce, header, buf)
                .map_err(|_| FormatError::corrupt("chunk encryption failed"))?,
            ChunkSealer::Digest => Self::digest_tag(header, nonce, buf),
        };
        buf.extend_from_slice(&tag);
        Ok(())
    }

    /// Opens `chunk` (ciphertext || tag) in place. On success the plaintext
    /// is `chunk[..len - TAG_LEN]`; on failure an encrypted chunk's body is
    /// zeroed (see [`ChunkReader`] for the retry with the other last-flag).
    pub(crate) fn open(&self, nonce: &[u8; 12], header: &[u8], chunk: &mut [u8]) -> bool {
        if chunk.len() < TAG_LEN {
            return false;
        }
        let (body, tag) = chunk.split_at_mut(chunk.len() - TAG_LEN);
        match self {
            ChunkSealer::Aes(c) => {
                let mut t = [0u8; TAG_LEN];
                t.copy_from_slice(tag);
                c.open_in_place(nonce, header, body, &t).is_ok()
            }
            ChunkSealer::Digest => {
                let expect = Self::digest_tag(header, nonce, body);
                // Not secret: a plain comparison is fine for an unkeyed digest.
                expect[..] == tag[..]
            }
        }
    }
}

/// The metadata block's nonce: prefix(7) || 0xFFFFFFFF || 2. Its last byte is never 0 or 1,
/// so it can never equal a chunk nonce.
pub(crate) fn metadata_nonce(prefix: &[u8; NONCE_PREFIX_LEN]) -> [u8; 12] {
    let mut n = [0xFFu8; 12];
    n[..NONCE_PREFIX_LEN].copy_from_slice(prefix);
    n[11] = 2;
    n
}

/// nonce = prefix(7) || counter (u32 BE) || last flag (u8).
pub(crate) fn chunk_nonce(prefix: &[u8; NONCE_PREFIX_LEN], counter: u32, last: bool) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[..NONCE_PREFIX_LEN].copy_from_slice(prefix);
    n[NONCE_PREFIX_LEN..NONCE_PREFIX_LEN + 4].copy_from_slice(&counter.to_be_bytes());
    n[11] = u8::from(last);
    n
}

/// Per-object sealing state shared by writer and reader.
pub(crate) struct ChunkContext {
    pub sealer: ChunkSealer,
    /// The AAD of every chunk: the complete header bytes, preceded in v2 by the identity.
    pub header: Vec<u8>,
    /// v2 (identity-bound): a chunk that fails authentication may be a moved or swapped
    /// object, and the error says so.
    pub bound: bool,
    pub prefix: [u8; NONCE_PREFIX_LEN],
    pub chunk_size: usize,
}

/// Buffers plaintext and writes sealed chunks to `inner`. The header must
/// already have been written. A full chunk is only sealed once more data
/// arrives, so the final chunk is empty only for an empty stream.
pub(crate) struct ChunkWriter<W: Write> {
    inner: W,
    ctx: ChunkContext,
    buf: Vec<u8>,
    counter: u32,
    stored: u64,
    failed: Option<FormatError>,
}

impl<W: Write> ChunkWriter<W> {
    pub fn new(inner: W, ctx: ChunkContext, header_len: u64) -> Self {
        let cap = ctx.chunk_size + TAG_LEN;
        ChunkWriter {
            inner,
            ctx,
            buf: Vec::with_capacity(cap),
            counter: 0,
            stored: header_len,
            failed: None,
        }
    }

    fn fail(&mut self, e: FormatError) -> FormatError {
        self.failed = Some(e.duplicate());
        e
    }

    fn emit(&mut self, last: bool) -> Result<(), FormatError> {
        let nonce = chunk_nonce(&self.ctx.prefix, self.counter, last);
        self.ctx.sealer.seal(&nonce, &self.ctx.header, &mut self.buf)?;
        self.inner.write_all(&self.buf).map_err(FormatError::Io)?;
        self.stored += self.buf.len() as u64;
        self.buf.clear();
        if !last {
            self.counter = self.counter.checked_add(1).ok_or(FormatError::TooLarge {
                chunk_size: self.ctx.chunk_size as u32,
            })?;
        }
        Ok(())
    }

    fn write_inner(&mut self, mut data: &[u8]) -> Result<(), FormatError> {
        while !data.is_empty() {
            if self.buf.len() == self.ctx.chunk_size {
                self.emit(false)?;
            }
            let take = (self.ctx.chunk_size - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
        }
        Ok(())
    }

    /// Seals the final chunk and flushes; returns the sink and the total
    /// stored bytes (header included).
    pub fn finish(mut self) -> Result<(W, u64), FormatError> {
        if let Some(e) = &self.failed {
            return Err(e.duplicate());
        }
        self.emit(true)?;
        self.inner.flush().map_err(FormatError::Io)?;
        Ok((self.inner, self.stored))
    }
}

impl<W: Write> Write for ChunkWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if let Some(e) = &self.failed {
            return Err(e.duplicate().into_io());
        }
        match self.write_inner(data) {
            Ok(()) => Ok(data.len()),
            Err(e) => Err(self.fail(e).into_io()),
        }
    }

    /// Flushes the sink only: sealing a partial chunk would break framing.
    fn flush(&mut self) -> io::Result<()> {
        if let Some(e) = &self.failed {
            return Err(e.duplicate().into_io());
        }
        match self.inner.flush() {
            Ok(()) => Ok(()),
            Err(e) => Err(self.fail(FormatError::Io(e)).into_io()),
        }
    }
}

/// Reads sealed chunks from `inner` and yields authenticated plaintext.
/// Plaintext is only released after its chunk verified; EOF (`Ok(0)` /
/// empty `fill_buf`) is only reported after the final chunk verified.
pub(crate) struct ChunkReader<R: Read> {
    inner: R,
    ctx: ChunkContext,
    buf: Vec<u8>,
    pos: usize,
    /// Index of the next chunk to read.
    counter: u32,
    /// One byte read past a full chunk to learn whether it was the last.
    lookahead: Option<u8>,
    /// A copy of the sealed chunk, for the second try with the other last-flag: a failed
    /// AES-GCM open leaves zeros, not ciphertext.
    spare: Vec<u8>,
    done: bool,
    failed: Option<FormatError>,
}

impl<R: Read> ChunkReader<R> {
    pub fn new(inner: R, ctx: ChunkContext) -> Self {
        let cap = ctx.chunk_size + TAG_LEN;
        ChunkReader {
            inner,
            ctx,
            buf: Vec::with_capacity(cap),
            pos: 0,
            counter: 0,
            lookahead: None,
            spare: Vec::new(),
            done: false,
            failed: None,
        }
    }

    /// Opens the chunk in `buf` as chunk `idx` with last-flag `first`, or, if that fails and
    /// `retry`, with the other flag (only to say what is wrong: a stream cut after a chunk,
    /// or data after the final one). Returns the flag that opened it.
    fn open(&mut self, idx: u32, first: bool, retry: bool) -> Option<bool> {
        let keep = retry && matches!(self.ctx.sealer, ChunkSealer::Aes(_));
        if keep {
            self.spare.clear();
            self.spare.extend_from_slice(&self.buf);
        }
        for last in [first, !first].into_iter().take(1 + usize::from(retry)) {
            if last != first && keep {
                std::mem::swap(&mut self.buf, &mut self.spare);
            }
            let nonce = chunk_nonce(&self.ctx.prefix, idx, last);
            if self.ctx.sealer.open(&nonce, &self.ctx.header, &mut self.buf) {
                return Some(last);
            }
        }
        None
    }

    fn auth_failed(&self, idx: u32) -> FormatError {
        if self.ctx.bound {
            FormatError::NotThisObject {
                detail: format!("chunk {idx}"),
            }
        } else {
            FormatError::corrupt(format!("chunk {idx} failed authentication"))
        }
    }

    /// Reads, authenticates and decrypts the next chunk into `buf`.
    fn next_chunk(&mut self) -> Result<(), FormatError> {
        let want = self.ctx.chunk_size + TAG_LEN;
        let idx = self.counter;
        self.buf.clear();
        self.pos = 0;
        self.buf.resize(want, 0);
        let mut n = 0;
        if let Some(b) = self.lookahead.take() {
            self.buf[0] = b;
            n = 1;
        }
        n += read_full(&mut self.inner, &mut self.buf[n..])?;
        self.buf.truncate(n);

        let mut at_eof = n < want;
        if n == want {
            let mut one = [0u8; 1];
            if read_full(&mut self.inner, &mut one)? == 0 {
                at_eof = true;
            } else {
                self.lookahead = Some(one[0]);
            }
        }

        if at_eof {
            if n == 0 {
                return Err(FormatError::truncated(if idx == 0 {
                    "no chunks after the header".to_string()
                } else {
                    format!("ends after chunk {}, which is not the final chunk", idx - 1)
                }));
            }
            if n < TAG_LEN {
                return Err(FormatError::truncated(format!("ends inside chunk {idx}")));
            }
            match self.open(idx, true, n == want) {
                Some(true) => self.done = true,
                Some(false) => {
                    return Err(FormatError::truncated(format!(
                        "ends after chunk {idx}, which is not the final chunk"
                    )))
                }
                None => return Err(self.auth_failed(idx)),
            }
        } else {
            match self.open(idx, false, true) {
                Some(false) => {
                    self.counter = idx
                        .checked_add(1)
                        .ok_or_else(|| FormatError::corrupt("more chunks than the 32-bit chunk counter allows"))?;
                }
                Some(true) => {
                    return Err(FormatError::corrupt(format!(
                        "unexpected data after the final chunk {idx}"
                    )))
                }
                None => return Err(self.auth_failed(idx)),
            }
        }
        self.buf.truncate(n - TAG_LEN);
        Ok(())
    }
}

impl<R: Read> BufRead for ChunkReader<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if let Some(e) = &self.failed {
            return Err(e.duplicate().into_io());
        }
        while self.pos == self.buf.len() && !self.done {
            if let Err(e) = self.next_chunk() {
                self.buf.clear();
                self.pos = 0;
                self.failed = Some(e.duplicate());
                return Err(e.into_io());
            }
        }
        Ok(&self.buf[self.pos..])
    }

    fn consume(&mut self, amt: usize) {
        self.pos = (self.pos + amt).min(self.buf.len());
    }
}

impl<R: Read> Read for ChunkReader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let avail = self.fill_buf()?;
        let n = avail.len().min(out.len());
        out[..n].copy_from_slice(&avail[..n]);
        self.consume(n);
        Ok(n)
    }
}
