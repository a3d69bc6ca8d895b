//! The TRANSACTION state (RFC 1939 section 5): STAT, LIST, RETR, DELE, NOOP, RSET, TOP,
//! UIDL over one snapshot of the maildrop. Deletions are only marks until QUIT; so is
//! the record of which messages were retrieved in full, for the retention policy
//! (RFC 2449 section 6.7, EXPIRE) that UPDATE applies.

use crate::command::{Command, MsgNumber};
use crate::response;

use super::Action;

/// What the session knows of one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageMeta {
    /// Octets as RETR sends them before byte-stuffing (CRLF line ends).
    pub size: u64,
    /// The unique-id listing (RFC 1939 section 7).
    pub uidl: String,
}

/// The signed-in user's maildrop as this session sees it.
#[derive(Debug)]
pub(super) struct Maildrop {
    messages: Vec<MessageMeta>,
    deleted: Vec<bool>,
    /// Sent in full by RETR (TOP does not count).
    retrieved: Vec<bool>,
    /// Signed in with a read-only credential: DELE is refused, nothing is removed.
    read_only: bool,
}

/// What UPDATE must do to the maildrop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct UpdatePlan {
    /// Messages to remove, ascending.
    pub delete: Vec<usize>,
    /// Messages to mark retrieved (flag seen, start the retention period), ascending.
    pub retrieved: Vec<usize>,
}

/// Why a message-number argument does not name a message.
enum Lookup {
    Invalid,
    NoSuch,
    Deleted,
}

impl Maildrop {
    pub(super) fn new(messages: Vec<MessageMeta>, read_only: bool) -> Self {
        let deleted = vec![false; messages.len()];
        let retrieved = vec![false; messages.len()];
        Self {
            messages,
            deleted,
            retrieved,
            read_only,
        }
    }

    pub(super) fn len(&self) -> usize {
        self.messages.len()
    }

    /// Records that message `index` is being sent in full (RETR).
    pub(super) fn mark_retrieved(&mut self, index: usize) {
        if let Some(r) = self.retrieved.get_mut(index) {
            *r = true;
        }
    }

    /// UPDATE under a retention of `expire_days` (`None`: no retention). DELE'd
    /// messages are removed. With a retention, retrieved messages are marked so they
    /// expire that many days later; with 0 days (`EXPIRE 0`) they are removed now, as
    /// if DELE'd. RSET unmarks deletions, not retrievals: a retrieval has happened.
    pub(super) fn update_plan(&self, expire_days: Option<u32>) -> UpdatePlan {
        // A read-only session leaves the maildrop exactly as it was: no retention
        // either, since that would delete what it retrieved, later or at once.
        let expire_days = expire_days.filter(|_| !self.read_only);
        let (deleted, retrieved) = (&self.deleted, &self.retrieved);
        let indexes = |keep: &dyn Fn(usize) -> bool| -> Vec<usize> {
            (0..self.messages.len()).filter(|&i| keep(i)).collect()
        };
        match expire_days {
            None => UpdatePlan {
                delete: indexes(&|i| deleted[i]),
                retrieved: Vec::new(),
            },
            Some(0) => UpdatePlan {
                delete: indexes(&|i| deleted[i] || retrieved[i]),
                retrieved: Vec::new(),
            },
            Some(_) => UpdatePlan {
                delete: indexes(&|i| deleted[i]),
                retrieved: indexes(&|i| retrieved[i] && !deleted[i]),
            },
        }
    }

    fn live(&self) -> impl Iterator<Item = (usize, &MessageMeta)> {
        self.messages
            .iter()
            .enumerate()
            .filter(|(i, _)| !self.deleted[*i])
    }

    /// Messages and octets not marked deleted (STAT, LIST). The octets saturate: sizes
    /// come from the store, which should never report sums past `u64`, but a wrong
    /// total is better than a panic.
    fn totals(&self) -> (usize, u64) {
        self.live().fold((0, 0), |(n, octets), (_, m)| {
            (n + 1, octets.saturating_add(m.size))
        })
    }

    pub(super) fn summary(&self) -> String {
        let (n, octets) = self.totals();
        format!("{n} messages ({octets} octets)")
    }

    fn lookup(&self, arg: MsgNumber) -> Result<usize, Lookup> {
        let MsgNumber::Number(n) = arg else {
            return Err(Lookup::Invalid);
        };
        let index = usize::try_from(n)
            .ok()
            .and_then(|n| n.checked_sub(1))
            .filter(|&i| i < self.messages.len())
            .ok_or(Lookup::NoSuch)?;
        if self.deleted[index] {
            return Err(Lookup::Deleted);
        }
        Ok(index)
    }

    /// Resolves a message number or writes the `-ERR` that says why not.
    fn find(&self, arg: MsgNumber, out: &mut Vec<u8>) -> Option<usize> {
        match self.lookup(arg) {
            Ok(i) => Some(i),
            Err(e) => {
                let text = match e {
                    Lookup::Invalid => "invalid message number",
                    Lookup::NoSuch => "no such message",
                    Lookup::Deleted => "message is deleted",
                };
                response::err(out, None, text);
                None
            }
        }
    }

    /// The status line before a message, once the I/O layer could open it.
    pub(super) fn message_status(&self, index: usize, top_lines: Option<u64>, out: &mut Vec<u8>) {
        match top_lines {
            None => response::ok(out, &format!("{} octets", self.messages[index].size)),
            Some(_) => response::ok(out, "top of message follows"),
        }
    }

    pub(super) fn handle(&mut self, cmd: Command, out: &mut Vec<u8>) -> Action {
        match cmd {
            Command::Stat => {
                let (n, octets) = self.totals();
                response::ok(out, &format!("{n} {octets}"));
            }
            Command::List(None) => {
                response::ok(out, &self.summary());
                let mut size = Vec::with_capacity(20);
                for (i, m) in self.live() {
                    size.clear();
                    response::push_decimal(&mut size, m.size);
                    response::numbered(out, i + 1, &size);
                }
                response::end(out);
            }
            Command::List(Some(arg)) => {
                if let Some(i) = self.find(arg, out) {
                    response::ok(out, &format!("{} {}", i + 1, self.messages[i].size));
                }
            }
            Command::Uidl(None) => {
                response::ok(out, "unique-id listing follows");
                for (i, m) in self.live() {
                    response::numbered(out, i + 1, m.uidl.as_bytes());
                }
                response::end(out);
            }
            Command::Uidl(Some(arg)) => {
                if let Some(i) = self.find(arg, out) {
                    response::ok(out, &format!("{} {}", i + 1, self.messages[i].uidl));
                }
            }
            Command::Retr(arg) => {
                if let Some(index) = self.find(arg, out) {
                    return Action::SendMessage {
                        index,
                        top_lines: None,
                    };
                }
            }
            Command::Top(arg, lines) => {
                let Some(lines) = lines else {
                    response::err(out, None, "invalid number of lines");
                    return Action::None;
                };
                if let Some(index) = self.find(arg, out) {
                    return Action::SendMessage {
                        index,
                        top_lines: Some(lines),
                    };
                }
            }
            Command::Dele(_) if self.read_only => response::err(
                out,
                None,
                "read-only access: messages cannot be deleted in this session",
            ),
            Command::Dele(arg) => {
                if let Some(i) = self.find(arg, out) {
                    self.deleted[i] = true;
                    response::ok(out, &format!("message {} deleted", i + 1));
                }
            }
            Command::Rset => {
                self.deleted.fill(false);
                response::ok(out, &format!("maildrop has {}", self.summary()));
            }
            _ => response::err(out, None, "command not valid in this state"),
        }
        Action::None
    }
}
