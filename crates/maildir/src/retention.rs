//! Retention of retrieved messages: the policy behind RFC 2449 section 6.7 (EXPIRE).
//!
//! With a retention of N days, a message a POP3 client retrieved in full (RETR) in a
//! session that ended in the UPDATE state is kept N days, then deleted; a message never
//! retrieved is never deleted. Two marks say a message was retrieved, and both must be
//! there for it to expire:
//!
//! - the standard Maildir `S` (seen) flag in its name, so mail clients sharing the
//!   Maildir (IMAP through Dovecot, Courier) show it as read. [`Maildir::mark_retrieved`]
//!   renames the file into `cur/` with `:2,S`, or adds `S` to the flags it has. Only the
//!   info after `:` changes, so the unique part, the UIDL and the mtime stay the same.
//! - a line `<base name> <unix seconds>` in `<root>/poplar-retrieved`: the time of the
//!   first UPDATE that retrieved it (the base name is the file name before `:`).
//!
//! [`Maildir::expire_retrieved`], run when a maildrop is opened and before it is listed
//! to the client, deletes the messages that carry both marks and whose recorded time is
//! at least N days old. The time is recorded rather than read from the file: the mtime
//! is the delivery time (renames keep it; the listing order and Dovecot's received date
//! rest on it), the ctime changes whenever any program renames or chmods the file and
//! cannot be set back, and a message another program flagged `S` was not retrieved over
//! POP3. A record whose message is gone or no longer flagged `S` (a user marked it
//! unread again) is dropped. A lost or damaged record file can only make messages stay
//! longer, never go early.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io;
use std::path::Path;
use std::time::{Duration, SystemTime};

use crate::locate::Renames;
use crate::name::{SEEN, has_flag, parse_name, with_flag};
use crate::{Maildir, MessageEntry, StoreError};

/// The record file's name in the Maildir root.
pub const RETRIEVED_FILE: &str = "poplar-retrieved";

/// Retrieval times by base name, in seconds since the Unix epoch.
type Records = BTreeMap<String, u64>;

/// Some messages could not be flagged and recorded; all the others were.
#[derive(Debug, thiserror::Error)]
#[error("{} message(s) could not be marked retrieved: {first_error}", failed.len())]
pub struct MarkError {
    /// Indexes into the slice given to [`Maildir::mark_retrieved`] of the messages not
    /// marked (they will not expire).
    pub failed: Vec<usize>,
    /// The error of the first failure.
    pub first_error: io::Error,
}

impl Maildir {
    /// Marks messages of `listing` (the scan the session works on) retrieved in a
    /// session that reached UPDATE: flags each `S` (see the module documentation) and
    /// records `now` for those not recorded yet, so the first retrieval starts the
    /// retention period. A message renamed since the scan is followed as
    /// [`Maildir::delete`] follows it, never to another message. A message that is
    /// gone, or whose name has an info other than `:2,`, is left alone and not recorded.
    ///
    /// Call it under the maildrop lock. A rename never replaces another file.
    pub fn mark_retrieved(
        &self,
        listing: &[MessageEntry],
        entries: &[&MessageEntry],
        now: SystemTime,
    ) -> Result<(), MarkError> {
        let all_failed = |e| MarkError {
            failed: (0..entries.len()).collect(),
            first_error: e,
        };
        let mut records = load(&self.root).map_err(all_failed)?;
        let now = unix_secs(now);
        let (mut failed, mut first_error) = (Vec::new(), None);
        let (mut renames, mut touched, mut recorded) =
            (Renames::new(listing), BTreeSet::new(), Vec::new());
        for (i, entry) in entries.iter().enumerate() {
            match self.flag_seen(&mut renames, entry, &mut touched) {
                Ok(Some(base)) => {
                    if let Entry::Vacant(slot) = records.entry(base) {
                        slot.insert(now);
                        recorded.push(i);
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    failed.push(i);
                    first_error.get_or_insert(e);
                }
            }
        }
        for dir in touched {
            // Durability of the renames; they are done whatever this reports.
            let _ = File::open(&dir).and_then(|d| d.sync_all());
        }
        if !recorded.is_empty()
            && let Err(e) = save(&self.root, &records)
        {
            // Flagged but not recorded: these will simply never expire.
            failed.extend(recorded);
            failed.sort_unstable();
            first_error.get_or_insert(e);
        }
        match first_error {
            None => Ok(()),
            Some(first_error) => Err(MarkError {
                failed,
                first_error,
            }),
        }
    }

    /// Deletes the messages of `listing` (a fresh [`Maildir::scan`]) that were retrieved
    /// at least `keep` before `now` and are still flagged `S`, and forgets records that
    /// no longer apply. Returns how many messages were deleted; scan again if that is
    /// not zero. With no record file this reads one missing file and changes nothing.
    ///
    /// Call it under the maildrop lock. On an error some messages may have been deleted
    /// all the same: scan again.
    pub fn expire_retrieved(
        &self,
        listing: &[MessageEntry],
        keep: Duration,
        now: SystemTime,
    ) -> Result<usize, StoreError> {
        let records = load(&self.root)?;
        if records.is_empty() {
            return Ok(0);
        }
        let (now, keep) = (unix_secs(now), keep.as_secs());
        let mut kept = Records::new();
        let mut expired: Vec<(&MessageEntry, String, u64)> = Vec::new();
        for entry in listing {
            let Some(name) = entry.path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            let base = parse_name(name).base;
            let Some(&at) = records.get(base) else {
                continue;
            };
            if !has_flag(name, SEEN) {
                // Marked unread again by someone: the retrieval no longer counts.
                continue;
            }
            // A time in the future (the clock was set back) counts as now.
            if now.saturating_sub(at) >= keep {
                expired.push((entry, base.to_owned(), at));
            } else {
                kept.insert(base.to_owned(), at);
            }
        }
        let targets: Vec<&MessageEntry> = expired.iter().map(|(e, _, _)| *e).collect();
        let deleted = self.delete(listing, &targets);
        let mut count = expired.len();
        if let Err(e) = &deleted {
            count -= e.failed.len();
            // Still there: still recorded, to be tried again at the next sign-in.
            for &i in &e.failed {
                let (_, base, at) = &expired[i];
                kept.insert(base.clone(), *at);
            }
        }
        if kept != records {
            save(&self.root, &kept)?;
        }
        match deleted {
            Ok(()) => Ok(count),
            Err(e) => Err(StoreError::Io(e.first_error)),
        }
    }

    /// Flags one message `S`; returns its base name, or `None` if it is gone or its
    /// name cannot be flagged.
    fn flag_seen(
        &self,
        renames: &mut Renames<'_>,
        entry: &MessageEntry,
        touched: &mut BTreeSet<std::path::PathBuf>,
    ) -> io::Result<Option<String>> {
        let Some(path) = self.current_path(renames, entry)? else {
            return Ok(None);
        };
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            return Ok(None);
        };
        let Some(flagged) = with_flag(name, SEEN) else {
            return Ok(None);
        };
        let base = parse_name(name).base.to_owned();
        // A file with an info belongs in cur/ (the Maildir specification).
        let target = self.root.join("cur").join(flagged);
        if target == path {
            return Ok(Some(base));
        }
        // rename(2) would silently replace a file of that name; names are unique, but
        // no message may ever overwrite another.
        match fs::symlink_metadata(&target) {
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    "a file already has the flagged name",
                ));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        match fs::rename(&path, &target) {
            Ok(()) => {}
            // Renamed or deleted by another program just now: left unmarked.
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        }
        if let Some(dir) = path.parent() {
            touched.insert(dir.to_owned());
        }
        touched.insert(self.root.join("cur"));
        Ok(Some(base))
    }
}

/// Seconds since the Unix epoch (0 before it).
fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Reads the records; a missing file is none. Malformed lines are skipped: a damaged
/// file makes messages stay, never go.
fn load(root: &Path) -> io::Result<Records> {
    let text = match fs::read(root.join(RETRIEVED_FILE)) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Records::new()),
        Err(e) => return Err(e),
    };
    let mut records = Records::new();
    for line in text.lines() {
        let mut words = line.split_ascii_whitespace();
        if let (Some(base), Some(Ok(at)), None) =
            (words.next(), words.next().map(str::parse), words.next())
            && !base.starts_with('#')
        {
            records.insert(base.to_owned(), at);
        }
    }
    Ok(records)
}

/// Replaces the record file atomically; with no records, removes it.
fn save(root: &Path, records: &Records) -> io::Result<()> {
    if records.is_empty() {
        return match fs::remove_file(root.join(RETRIEVED_FILE)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        };
    }
    let mut text = String::from("# base-name first-retrieved (unix seconds), written by poplar\n");
    for (base, at) in records {
        // A name with whitespace could not be read back; such a message never expires.
        if !base.contains(|c: char| c.is_whitespace()) {
            text.push_str(&format!("{base} {at}\n"));
        }
    }
    crate::atomic::replace(root, RETRIEVED_FILE, &text)
}

#[cfg(test)]
mod tests;
