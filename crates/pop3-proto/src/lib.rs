//! Sans-IO POP3 protocol core.
//!
//! Bytes from a socket go into a [`LineFramer`], which enforces size limits before any
//! grammar parsing (RFC 2449 section 4 caps command lines). Lines become [`Command`]s
//! (RFC 1939, RFC 2449 CAPA, RFC 2595 STLS, RFC 5034 AUTH, RFC 6856 UTF8). A [`Session`]
//! turns each command into bytes to send and at most one [`Action`] the I/O layer must
//! carry out (verify credentials, open the maildrop, stream a message, start TLS, commit
//! deletions, close) before it feeds the session again. Messages go out through the
//! streaming [`DotStuffer`], which never holds a whole message in memory.
//!
//! Nothing in this crate performs I/O or knows an async runtime.
#![forbid(unsafe_code)]

pub mod capa;
pub mod command;
pub mod framer;
pub mod keyword;
pub mod response;
pub mod session;
pub mod stuffing;

pub use capa::Capabilities;
pub use command::{Command, MsgNumber, ParseError};
pub use framer::{Frame, LineFramer};
pub use keyword::CommandKind;
pub use response::RespCode;
pub use sasl::{ChannelBinding, Mechanism, Secret};
pub use session::{
    Action, AuthOutcome, AuthRequest, MessageMeta, OpenFailure, Session, SessionConfig, TlsInfo,
};
pub use stuffing::{DotStuffer, OctetCounter, crlf_size};
