//! Response encoding: status lines with RFC 2449/3206 extended response codes, and
//! multi-line responses.
//!
//! This module is the one place where an internal outcome becomes the bytes a client
//! sees; callers pick a [`RespCode`] and a text.

/// Extended response codes (RFC 2449 section 8, RFC 3206).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RespCode {
    /// `[IN-USE]`: the maildrop is locked by another session (RFC 2449 8.1.1).
    InUse,
    /// `[LOGIN-DELAY]`: signed in too soon after the last sign-in (RFC 2449 8.1.2).
    LoginDelay,
    /// `[SYS/TEMP]`: a temporary server problem (RFC 3206 section 4).
    SysTemp,
    /// `[SYS/PERM]`: a permanent server problem (RFC 3206 section 4).
    SysPerm,
    /// `[AUTH]`: the credentials were not accepted (RFC 3206 section 5).
    Auth,
}

impl RespCode {
    fn as_str(self) -> &'static str {
        match self {
            RespCode::InUse => "[IN-USE]",
            RespCode::LoginDelay => "[LOGIN-DELAY]",
            RespCode::SysTemp => "[SYS/TEMP]",
            RespCode::SysPerm => "[SYS/PERM]",
            RespCode::Auth => "[AUTH]",
        }
    }
}

/// Appends `+OK text\r\n`.
pub fn ok(out: &mut Vec<u8>, text: &str) {
    out.extend_from_slice(b"+OK");
    if !text.is_empty() {
        out.push(b' ');
        out.extend_from_slice(text.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
}

/// Appends `-ERR [CODE] text\r\n`.
pub fn err(out: &mut Vec<u8>, code: Option<RespCode>, text: &str) {
    out.extend_from_slice(b"-ERR ");
    if let Some(code) = code {
        out.extend_from_slice(code.as_str().as_bytes());
        out.push(b' ');
    }
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Appends one line of a multi-line response. The lines we generate ourselves never
/// start with `.`, but stuff anyway so the encoding is right by construction.
pub fn line(out: &mut Vec<u8>, text: &str) {
    if text.starts_with('.') {
        out.push(b'.');
    }
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Appends `N VALUE\r\n`, a line of a scan or unique-id listing (RFC 1939 sections
/// 5 and 7). It starts with a digit, so it never needs byte-stuffing.
pub fn numbered(out: &mut Vec<u8>, n: usize, value: &[u8]) {
    push_decimal(out, n as u64);
    out.push(b' ');
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Appends `n` in decimal ASCII.
pub fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// Appends the `.\r\n` that ends a multi-line response.
pub fn end(out: &mut Vec<u8>) {
    out.extend_from_slice(b".\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_codes() {
        let mut out = Vec::new();
        err(&mut out, Some(RespCode::InUse), "maildrop locked");
        ok(&mut out, "");
        line(&mut out, ".hidden");
        end(&mut out);
        assert_eq!(
            out,
            b"-ERR [IN-USE] maildrop locked\r\n+OK\r\n..hidden\r\n.\r\n"
        );
    }

    #[test]
    fn numbered_lines_and_decimals() {
        let mut out = Vec::new();
        numbered(&mut out, 7, b"uid-7");
        push_decimal(&mut out, 0);
        out.push(b' ');
        push_decimal(&mut out, u64::MAX);
        assert_eq!(out, b"7 uid-7\r\n0 18446744073709551615");
    }
}
