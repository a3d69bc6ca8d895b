//! The maildrop side of a connection: lock and scan at sign-in, stream messages for
//! RETR and TOP in bounded chunks, and commit deletions in UPDATE.
//!
//! With a retention (`store.expire_days`, RFC 2449 section 6.7 EXPIRE), UPDATE also
//! marks the messages RETR sent (flag `S`, retrieval time recorded), and sign-in first
//! deletes the marked messages whose time is up, so the client never sees them. A
//! read-only session (a read-only app password) does neither: it changes no message.

use std::time::SystemTime;

use maildir::{Maildir, MessageEntry, StoreError};
use pop3_proto::{DotStuffer, MessageMeta, OpenFailure};
use tokio::io::AsyncWrite;

use super::lease::{Lease, LeaseError};
use super::{Connection, OpenMaildrop};

impl Connection {
    pub(super) async fn open_maildrop(&mut self) -> Result<Vec<MessageMeta>, OpenFailure> {
        let Some(path) = self.maildir_path.clone() else {
            return Err(OpenFailure::Unavailable);
        };
        // A read-only session leaves the maildrop as it was (README, app passwords):
        // no expiry at sign-in either, as UPDATE marks and deletes nothing for it.
        let retention = self
            .shared
            .config
            .store
            .retention()
            .filter(|_| !self.session.is_read_only());
        let (peer, user) = (self.peer, self.user.clone());
        // Across nodes first: a shared directory means a shared Maildir tree.
        let lease = if matches!(
            **self.shared.auth.directory(),
            directory::AnyDirectory::Postgres(_)
        ) {
            let ttl =
                std::time::Duration::from_secs(self.shared.config.directory.maildrop_lease_secs);
            let owner = format!("{}:{}", self.shared.node, self.id);
            match Lease::acquire(
                self.shared.auth.directory().clone(),
                path.to_string_lossy().into_owned(),
                owner,
                ttl,
                self.shutdown.clone(),
            )
            .await
            {
                Ok(lease) => Some(lease),
                Err(LeaseError::InUse) => {
                    tracing::info!(peer = %self.peer, user = ?self.user, "maildrop in use on another node");
                    return Err(OpenFailure::InUse);
                }
                Err(LeaseError::Unavailable(e)) => {
                    tracing::error!(peer = %self.peer, user = ?self.user, error = %e, "cannot take the maildrop lease");
                    return Err(OpenFailure::Unavailable);
                }
            }
        } else {
            None
        };
        let opened = tokio::task::spawn_blocking(move || {
            let maildir = Maildir::new(path);
            maildir.create()?;
            let guard = maildir.lock()?;
            let mut entries = maildir.scan()?;
            if let Some(keep) = retention {
                // Expiry is housekeeping: a failure is logged, never refuses sign-in.
                let expired = maildir.expire_retrieved(&entries, keep, SystemTime::now());
                match &expired {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(%peer, ?user, expired = n, "retention expired messages"),
                    Err(e) => tracing::error!(%peer, ?user, error = %e, "expiring retrieved messages failed"),
                }
                if !matches!(expired, Ok(0)) {
                    entries = maildir.scan()?;
                }
            }
            Ok::<_, StoreError>((maildir, guard, entries))
        })
        .await;
        match opened {
            Ok(Ok((maildir, guard, mut entries))) => {
                // The session keeps the UIDLs; the entries need only paths from now on.
                let metas = entries
                    .iter_mut()
                    .map(|e| MessageMeta {
                        size: e.size,
                        uidl: std::mem::take(&mut e.uidl),
                    })
                    .collect();
                self.maildrop = Some(OpenMaildrop {
                    maildir,
                    entries,
                    _guard: guard,
                    _lease: lease,
                    read_ahead: Default::default(),
                    last_sent: None,
                });
                Ok(metas)
            }
            Ok(Err(StoreError::InUse)) => {
                tracing::info!(peer = %self.peer, user = ?self.user, "maildrop in use");
                Err(OpenFailure::InUse)
            }
            Ok(Err(e)) => {
                tracing::error!(peer = %self.peer, user = ?self.user, error = %e, "cannot open maildrop");
                Err(store_failure(&e))
            }
            Err(e) => {
                tracing::error!(error = %e, "maildrop task failed");
                Err(OpenFailure::Unavailable)
            }
        }
    }

    /// Streams one message (RETR) or its top (TOP) in bounded chunks.
    pub(super) async fn send_message<S: AsyncWrite + Unpin>(
        &mut self,
        index: usize,
        top_lines: Option<u64>,
        stream: &mut S,
    ) -> std::io::Result<()> {
        // A client that pipelines RETRs (more commands already waiting) gets the
        // next small messages read in the same trip to a blocking thread: one hop
        // per batch instead of one per message.
        // Only once the client has asked for two consecutive messages: a client that
        // jumps about or repeats a message never makes the server read what it skips.
        let pipelining = top_lines.is_none() && self.framer.has_buffered();
        let opened = match &mut self.maildrop {
            Some(maildrop) => match take_read_ahead(&mut maildrop.read_ahead, index) {
                Some(bytes) => Some(Opened::Whole(bytes)),
                None => {
                    let maildir = maildrop.maildir.clone();
                    let sequential = index > 0 && maildrop.last_sent == Some(index - 1);
                    let wanted: Vec<(usize, MessageEntry)> = if pipelining && sequential {
                        ahead(&maildrop.entries, index)
                    } else {
                        vec![(index, maildrop.entries[index].clone())]
                    };
                    let read = tokio::task::spawn_blocking(move || open_batch(&maildir, wanted))
                        .await
                        .ok();
                    match read {
                        Some((first, rest)) => {
                            maildrop.read_ahead = rest;
                            first
                                .map_err(|e| tracing::warn!(error = %e, "cannot open message"))
                                .ok()
                        }
                        None => None,
                    }
                }
            },
            None => None,
        };
        if let Some(maildrop) = &mut self.maildrop
            && top_lines.is_none()
        {
            maildrop.last_sent = Some(index);
        }
        let Some(opened) = opened else {
            self.session
                .message_opened(index, top_lines, false, &mut self.out);
            return Ok(());
        };
        self.session
            .message_opened(index, top_lines, true, &mut self.out);
        if top_lines.is_none() {
            self.stats.retrieved += 1;
            self.shared.metrics.retrieved();
        }
        let mut stuffer = match top_lines {
            Some(n) => DotStuffer::top(n),
            None => DotStuffer::retr(),
        };
        match opened {
            Opened::Whole(bytes) => {
                stuffer.encode(&bytes, &mut self.out);
                stuffer.finish(&mut self.out);
            }
            Opened::Stream(file) => self.stream_message(file, stuffer, stream).await?,
        }
        Ok(())
    }

    /// Sends a large message in chunks of about [`MESSAGE_CHUNK`]. What the page cache
    /// holds is read and stuffed right here, which is a memory copy; a read that would
    /// wait for the disk goes to a blocking thread, one chunk at a time, so neither a
    /// slow disk stalls the other sessions of this worker nor a slow client holds a
    /// blocking thread.
    async fn stream_message<S: AsyncWrite + Unpin>(
        &mut self,
        file: std::fs::File,
        stuffer: DotStuffer,
        stream: &mut S,
    ) -> std::io::Result<()> {
        let mut filler = Filler {
            file,
            offset: 0,
            stuffer: Some(stuffer),
            chunk: vec![0u8; MESSAGE_CHUNK],
        };
        loop {
            let done = match filler.fill(&mut self.out, true)? {
                Some(done) => done,
                None => {
                    let mut out = std::mem::take(&mut self.out);
                    let (f, out, result) = tokio::task::spawn_blocking(move || {
                        let result = filler.fill(&mut out, false);
                        (filler, out, result)
                    })
                    .await
                    .map_err(|e| std::io::Error::other(format!("message read task failed: {e}")))?;
                    (filler, self.out) = (f, out);
                    result?.unwrap_or(false)
                }
            };
            if done {
                return Ok(());
            }
            self.write_out(stream).await?;
        }
    }

    /// UPDATE state: remove the messages marked deleted, mark the retrieved ones for
    /// the retention, then release the lock. Only a failed deletion is an error: a
    /// message that could not be marked simply never expires.
    pub(super) async fn update(
        &mut self,
        delete: Vec<usize>,
        retrieved: Vec<usize>,
    ) -> Result<(), ()> {
        let Some(mut maildrop) = self.maildrop.take() else {
            return Ok(());
        };
        let lease = maildrop._lease.take();
        if delete.is_empty() && retrieved.is_empty() {
            // Freeing a 100,000-message listing takes tens of milliseconds: do it
            // off the executor and answer QUIT at once. The lock is released now, so
            // the next session of this user never sees [IN-USE] for it.
            let OpenMaildrop {
                entries, _guard, ..
            } = maildrop;
            drop(_guard);
            if let Some(lease) = lease {
                lease.release().await;
            }
            tokio::task::spawn_blocking(move || drop(entries));
            return Ok(());
        }
        // Across nodes, another session may have the maildrop by now if this one's
        // lease lapsed (the database unreachable for a while): delete nothing then.
        if let Some(lease) = &lease
            && !lease.confirm().await
        {
            return Err(());
        }
        let user = self.user.clone();
        let count = delete.len();
        let peer = self.peer;
        let marked_user = user.clone();
        // The blocking task runs to completion even if this connection is cancelled,
        // so a shutdown never leaves half an UPDATE.
        // The lock (in `maildrop`) is released only after the deletions and marks, when
        // the closure ends.
        let result = tokio::task::spawn_blocking(move || {
            let pick = |indexes: &[usize]| -> Vec<&MessageEntry> {
                indexes.iter().map(|&i| &maildrop.entries[i]).collect()
            };
            // A message moved away meanwhile is followed only to its own file, never
            // to another message of the listing; not found, it is gone (deleted).
            let deleted = maildrop
                .maildir
                .delete(&maildrop.entries, &pick(&delete));
            if !retrieved.is_empty() {
                let marked = maildrop.maildir.mark_retrieved(
                    &maildrop.entries,
                    &pick(&retrieved),
                    SystemTime::now(),
                );
                if let Err(e) = marked {
                    tracing::warn!(%peer, user = ?marked_user, failed = e.failed.len(), error = %e.first_error, "marking retrieved messages failed; they will not expire");
                }
            }
            deleted
        })
        .await;
        // Released after the deletions, whatever became of them.
        if let Some(lease) = lease {
            lease.release().await;
        }
        match result {
            Ok(Ok(())) => {
                tracing::info!(peer = %self.peer, user = ?user, deleted = count, "maildrop updated");
                Ok(())
            }
            Ok(Err(e)) => {
                tracing::error!(peer = %self.peer, user = ?user, failed = e.failed.len(), error = %e.first_error, "deleting messages failed");
                Err(())
            }
            Err(e) => {
                tracing::error!(error = %e, "update task failed");
                Err(())
            }
        }
    }
}

/// Large messages are read and written in chunks of this size: few blocking hops and
/// write calls per megabyte, and still a bounded buffer per session.
pub(super) const MESSAGE_CHUNK: usize = 256 * 1024;

/// Messages up to this size are read whole in the task that opens them: one hop to a
/// blocking thread per message instead of one per read. Larger ones stream in chunks.
const READ_WHOLE: u64 = 128 * 1024;

/// Small messages read ahead for a pipelining client: (message index, octets).
pub(super) type ReadAhead = std::collections::VecDeque<(usize, Vec<u8>)>;

/// At most this much is read ahead for a pipelining client, in at most
/// [`READ_AHEAD_MESSAGES`] messages of at most [`READ_WHOLE`] octets each.
const READ_AHEAD_BYTES: u64 = 512 * 1024;
const READ_AHEAD_MESSAGES: usize = 64;

/// Message `index` and the small ones after it, within the read-ahead bounds.
fn ahead(entries: &[MessageEntry], index: usize) -> Vec<(usize, MessageEntry)> {
    let mut wanted = vec![(index, entries[index].clone())];
    let mut bytes = entries[index].size;
    for (i, e) in entries.iter().enumerate().skip(index + 1) {
        bytes = bytes.saturating_add(e.size);
        if e.size > READ_WHOLE || bytes > READ_AHEAD_BYTES || wanted.len() >= READ_AHEAD_MESSAGES {
            break;
        }
        wanted.push((i, e.clone()));
    }
    wanted
}

/// The message read ahead for `index`, if it is next; anything else read ahead is
/// dropped (the client asked for something else).
fn take_read_ahead(read_ahead: &mut ReadAhead, index: usize) -> Option<Vec<u8>> {
    match read_ahead.pop_front() {
        Some((i, bytes)) if i == index => Some(bytes),
        Some(_) => {
            read_ahead.clear();
            None
        }
        None => None,
    }
}

/// Opens the first message of `wanted` and reads the others whole (those that cannot
/// be read are simply not read ahead; their own RETR will say why).
fn open_batch(
    maildir: &Maildir,
    wanted: Vec<(usize, MessageEntry)>,
) -> (Result<Opened, StoreError>, ReadAhead) {
    let mut wanted = wanted.into_iter();
    let first = match wanted.next() {
        Some((_, entry)) => open(maildir, &entry),
        None => Err(StoreError::Gone),
    };
    let mut rest = ReadAhead::new();
    let mut budget = READ_AHEAD_BYTES;
    if first.is_ok() {
        for (i, entry) in wanted {
            match open(maildir, &entry) {
                // Within the budget by what was really read, whatever names claim.
                Ok(Opened::Whole(bytes)) if (bytes.len() as u64) <= budget => {
                    budget -= bytes.len() as u64;
                    rest.push_back((i, bytes));
                }
                _ => break,
            }
        }
    }
    (first, rest)
}

/// Reads a large message and dot-stuffs it, a chunk per call.
struct Filler {
    file: std::fs::File,
    /// Where the next read starts.
    offset: u64,
    /// `None` once the terminator is written.
    stuffer: Option<DotStuffer>,
    chunk: Vec<u8>,
}

impl Filler {
    /// Appends stuffed octets to `out` until it holds [`MESSAGE_CHUNK`] or the message
    /// and its terminator are in: `Some(true)` then. With `cached_only`, stops with
    /// `None` at the first read that would wait for the disk (what was appended stays).
    fn fill(&mut self, out: &mut Vec<u8>, cached_only: bool) -> std::io::Result<Option<bool>> {
        while out.len() < MESSAGE_CHUNK {
            let done = match &self.stuffer {
                None => return Ok(Some(true)),
                Some(stuffer) => stuffer.is_done(),
            };
            let n = if done {
                0
            } else {
                match self.read(cached_only) {
                    Ok(Some(n)) => n,
                    Ok(None) => return Ok(None),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                }
            };
            if n == 0 {
                if let Some(stuffer) = self.stuffer.take() {
                    stuffer.finish(out);
                }
                return Ok(Some(true));
            }
            self.offset += n as u64;
            if let Some(stuffer) = self.stuffer.as_mut() {
                stuffer.encode(&self.chunk[..n], out);
            }
        }
        Ok(Some(self.stuffer.is_none()))
    }

    /// One read at `offset`; `None` when `cached_only` and the data is not in the page
    /// cache (or the kernel cannot tell: then every chunk takes the blocking path).
    fn read(&mut self, cached_only: bool) -> std::io::Result<Option<usize>> {
        if cached_only {
            #[cfg(all(target_os = "linux", not(target_os = "android")))]
            {
                use rustix::io::{ReadWriteFlags, preadv2};
                let mut bufs = [std::io::IoSliceMut::new(&mut self.chunk)];
                // Anything but data (not cached, not supported, filtered, or 0, which
                // the blocking read then confirms as the end) takes the blocking path.
                return match preadv2(&self.file, &mut bufs, self.offset, ReadWriteFlags::NOWAIT) {
                    Ok(n) if n > 0 => Ok(Some(n)),
                    _ => Ok(None),
                };
            }
            #[cfg(not(all(target_os = "linux", not(target_os = "android"))))]
            return Ok(None);
        }
        std::os::unix::fs::FileExt::read_at(&self.file, &mut self.chunk, self.offset).map(Some)
    }
}

/// An opened message.
enum Opened {
    Whole(Vec<u8>),
    Stream(std::fs::File),
}

/// Opens a message (on a blocking thread), reading it at once when it is small.
fn open(maildir: &Maildir, entry: &MessageEntry) -> Result<Opened, StoreError> {
    use std::io::{Read as _, Seek as _};
    let mut file = maildir.open_message(entry)?;
    // The file's own length decides, not the size its name claims.
    let len = file.metadata()?.len();
    if len > READ_WHOLE {
        return Ok(Opened::Stream(file));
    }
    let mut bytes = Vec::with_capacity(len as usize);
    (&mut file).take(READ_WHOLE + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > READ_WHOLE {
        // It grew meanwhile: stream it from the start instead.
        file.rewind()?;
        return Ok(Opened::Stream(file));
    }
    Ok(Opened::Whole(bytes))
}

/// Store errors an administrator must fix are `[SYS/PERM]`; the rest may pass.
fn store_failure(e: &StoreError) -> OpenFailure {
    use std::io::ErrorKind::*;
    match e {
        StoreError::Io(io)
            if matches!(
                io.kind(),
                PermissionDenied | NotADirectory | ReadOnlyFilesystem
            ) =>
        {
            OpenFailure::Broken
        }
        _ => OpenFailure::Unavailable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The whole message through `Filler`, chunk by chunk, as `stream_message` drives it.
    fn stream_through_filler(path: &std::path::Path, cached_only: bool) -> Vec<u8> {
        let mut filler = Filler {
            file: std::fs::File::open(path).expect("open"),
            offset: 0,
            stuffer: Some(DotStuffer::retr()),
            chunk: vec![0u8; MESSAGE_CHUNK],
        };
        let (mut wire, mut out) = (Vec::new(), Vec::new());
        loop {
            let done = match filler.fill(&mut out, cached_only).expect("fill") {
                Some(done) => done,
                // Not cached (or no RWF_NOWAIT here): the blocking path continues.
                None => filler.fill(&mut out, false).expect("fill").unwrap_or(false),
            };
            wire.append(&mut out);
            if done {
                return wire;
            }
        }
    }

    #[test]
    fn read_ahead_bounds_survive_huge_sizes() {
        let entry = |size| MessageEntry {
            uidl: "u".into(),
            size,
            path: "/nonexistent".into(),
        };
        let entries = [entry(u64::MAX), entry(1), entry(1)];
        assert_eq!(ahead(&entries, 0).len(), 1);
        let entries = [entry(1), entry(u64::MAX - 1), entry(u64::MAX)];
        assert_eq!(ahead(&entries, 0).len(), 1);
    }

    #[test]
    fn chunked_streaming_sends_exactly_the_stuffed_message() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("msg");
        // Several chunks, with lines that start with a dot, at the chunk boundaries too.
        let mut msg = Vec::new();
        for boundary in 1..=3 {
            while msg.len() < boundary * MESSAGE_CHUNK - 1 {
                msg.push(if msg.len() % 70 == 69 { b'\n' } else { b'x' });
            }
            msg.push(b'\n');
            assert_eq!(msg.len(), boundary * MESSAGE_CHUNK);
            msg.extend_from_slice(b".at a chunk boundary\n");
        }
        let mut i = 0u64;
        while msg.len() < 3 * MESSAGE_CHUNK + 1000 {
            i += 1;
            let line = if i.is_multiple_of(7) {
                format!(".dot {i}\n")
            } else {
                format!("line {i} {}\n", "x".repeat((i % 90) as usize))
            };
            msg.extend_from_slice(line.as_bytes());
        }
        msg.extend_from_slice(b"last line without end");
        std::fs::write(&path, &msg).expect("write");
        let mut expected = Vec::new();
        let mut one_go = DotStuffer::retr();
        one_go.encode(&msg, &mut expected);
        one_go.finish(&mut expected);
        assert_eq!(stream_through_filler(&path, true), expected);
        assert_eq!(stream_through_filler(&path, false), expected);
    }
}
