//! The breached-password filter: a Bloom filter over the SHA-1 digests of a breach
//! corpus in the Pwned Passwords file format (`SHA1HEX:COUNT` lines), kept in one file
//! that `poplar passwords load-breached` writes and the policy consults (NIST SP
//! 800-63B-4 §3.1.1.2: refuse passwords "obtained from previous breach corpuses").
//!
//! A Bloom filter rather than a sorted list or an xor/fuse filter, because it is built in
//! two streaming passes (count, then insert) in memory no larger than the file it
//! writes: the full Pwned Passwords corpus (about a billion lines) fits in about 3.5 GiB,
//! a 10-million-line one in 36 MiB. A lookup reads [`HASHES`] single bytes at computed
//! offsets, so the file is never read whole and never mapped.
//!
//! Sizing: [`BITS_PER_ENTRY`] = 30 bits per entry and [`HASHES`] = 20 bit positions,
//! which gives a false-positive rate of (1 − e^(−20/30))^20 ≈ 5.5 × 10⁻⁷, about one
//! strong password in 1.8 million wrongly called breached. There are no false negatives.
//!
//! File layout (little-endian integers):
//!
//! | bytes    | content                                                    |
//! | -------- | ---------------------------------------------------------- |
//! | 0..8     | magic `PPLRBRF1`                                           |
//! | 8..12    | format version, 1                                          |
//! | 12..16   | k, bit positions per entry                                 |
//! | 16..24   | m, bits in the array (a positive multiple of 64)           |
//! | 24..32   | n, entries inserted                                        |
//! | 32..     | the bit array, m / 8 bytes; bit i is bit i % 8 of byte i / 8 |
//!
//! Positions of a digest d: h1 = d\[0..8\] and h2 = d\[8..16\] | 1 as little-endian u64,
//! xᵢ = h1 + i·h2 (wrapping), positionᵢ = ⌊xᵢ · m / 2⁶⁴⌋ for i in 0..k (Kirsch and
//! Mitzenmacher's double hashing; SHA-1 digests are already uniform, so no further
//! hashing is needed).

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read as _, Write as _};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

use sha1::{Digest as _, Sha1};

/// Bits of the array per corpus entry.
pub const BITS_PER_ENTRY: u64 = 30;
/// Bit positions set and tested per entry.
pub const HASHES: u32 = 20;
/// The false-positive rate those two give: (1 − e^(−HASHES/BITS_PER_ENTRY))^HASHES.
pub const FALSE_POSITIVE_RATE: f64 = 5.5e-7;

const MAGIC: &[u8; 8] = b"PPLRBRF1";
const VERSION: u32 = 1;
const HEADER_LEN: u64 = 32;
/// How many malformed line numbers a build report keeps.
const BAD_LINES_KEPT: usize = 5;

/// A SHA-1 digest: the key of the filter.
pub type Sha1Digest = [u8; 20];

/// The SHA-1 digest of a password as the Pwned Passwords corpus has it (of its UTF-8).
pub fn password_digest(password: &str) -> Sha1Digest {
    Sha1::digest(password.as_bytes()).into()
}

/// A filter that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    /// Reading or writing failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Not a filter this version wrote, or cut short.
    #[error(
        "{path} is not a breached-password filter ({why}); build it again with `poplar passwords load-breached`"
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: &'static str,
    },
    /// The corpus held no usable line.
    #[error("{path} has no `SHA1HEX:COUNT` lines{hint}")]
    EmptyCorpus {
        /// The corpus.
        path: PathBuf,
        /// A hint when the file looks like another format.
        hint: &'static str,
    },
    /// The filter would not fit in this machine's address space.
    #[error("{path} has too many entries for a filter on this machine")]
    TooLarge {
        /// The corpus.
        path: PathBuf,
    },
    /// The corpus changed between the two passes.
    #[error("{path} changed while it was read; load it again")]
    Changed {
        /// The corpus.
        path: PathBuf,
    },
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> FilterError + '_ {
    move |source| FilterError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The bit positions of a digest in an array of `m` bits.
fn positions(digest: &Sha1Digest, m: u64, k: u32) -> impl Iterator<Item = u64> {
    let word = |i: usize| u64::from_le_bytes(digest[i..i + 8].try_into().expect("8 bytes"));
    let (h1, h2) = (word(0), word(8) | 1);
    (0..u64::from(k)).map(move |i| {
        let x = h1.wrapping_add(i.wrapping_mul(h2));
        ((u128::from(x) * u128::from(m)) >> 64) as u64
    })
}

/// An open filter file. Lookups read single bytes at computed offsets.
#[derive(Debug)]
pub struct BreachedFilter {
    file: File,
    path: PathBuf,
    bits: u64,
    hashes: u32,
    entries: u64,
}

impl BreachedFilter {
    /// Opens a filter and checks its header and size; `Ok(None)` when there is no file.
    pub fn open(path: &Path) -> Result<Option<Self>, FilterError> {
        let mut file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error(path)(e)),
        };
        let corrupt = |why| FilterError::Corrupt {
            path: path.to_owned(),
            why,
        };
        let mut header = [0u8; HEADER_LEN as usize];
        if let Err(e) = file.read_exact(&mut header) {
            return Err(match e.kind() {
                std::io::ErrorKind::UnexpectedEof => corrupt("shorter than its header"),
                _ => io_error(path)(e),
            });
        }
        if &header[0..8] != MAGIC {
            return Err(corrupt("wrong magic number"));
        }
        let u32_at = |i: usize| u32::from_le_bytes(header[i..i + 4].try_into().expect("4"));
        let u64_at = |i: usize| u64::from_le_bytes(header[i..i + 8].try_into().expect("8"));
        if u32_at(8) != VERSION {
            return Err(corrupt("unknown format version"));
        }
        let (hashes, bits, entries) = (u32_at(12), u64_at(16), u64_at(24));
        if hashes == 0 || hashes > 64 {
            return Err(corrupt("bad number of hashes"));
        }
        if bits == 0 || bits % 64 != 0 {
            return Err(corrupt("bad array size"));
        }
        let len = file.metadata().map_err(io_error(path))?.len();
        if len != HEADER_LEN + bits / 8 {
            return Err(corrupt("its size does not match its header"));
        }
        Ok(Some(BreachedFilter {
            file,
            path: path.to_owned(),
            bits,
            hashes,
            entries,
        }))
    }

    /// Whether the digest is (probably) in the corpus: never wrong for a member, wrong
    /// for a non-member with probability [`FALSE_POSITIVE_RATE`].
    pub fn contains(&self, digest: &Sha1Digest) -> Result<bool, FilterError> {
        let mut byte = [0u8; 1];
        for bit in positions(digest, self.bits, self.hashes) {
            self.file
                .read_exact_at(&mut byte, HEADER_LEN + bit / 8)
                .map_err(io_error(&self.path))?;
            if byte[0] & (1 << (bit % 8)) == 0 {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Whether a password (its UTF-8 SHA-1) is (probably) in the corpus.
    pub fn contains_password(&self, password: &str) -> Result<bool, FilterError> {
        self.contains(&password_digest(password))
    }

    /// Entries the filter was built from (distinct or not).
    pub fn entries(&self) -> u64 {
        self.entries
    }

    /// Size of the bit array, in bits.
    pub fn bits(&self) -> u64 {
        self.bits
    }

    /// Bit positions per entry.
    pub fn hashes(&self) -> u32 {
        self.hashes
    }
}

/// What a build read and wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BuildReport {
    /// Lines put in the filter.
    pub entries: u64,
    /// Well-formed lines left out for a count below the minimum.
    pub below_min_count: u64,
    /// Lines that are not `SHA1HEX[:COUNT]` (blank lines are not counted).
    pub bad_lines: u64,
    /// The first few of those, by line number (from 1).
    pub first_bad_lines: Vec<u64>,
    /// Size of the file written, bytes.
    pub file_bytes: u64,
}

/// One line of a corpus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// Empty or white space only.
    Blank,
    /// A digest, with its count when the line has one.
    Entry(Sha1Digest, Option<u64>),
    /// Not `SHA1HEX[:COUNT]`.
    Malformed,
}

/// Parses one corpus line. Hex digits may be of either case; surrounding white space
/// and a CR are ignored; a missing `:COUNT` counts as no count.
pub fn parse_line(line: &[u8]) -> Line {
    let line = line.trim_ascii();
    if line.is_empty() {
        return Line::Blank;
    }
    let (hex, count) = match line.iter().position(|&b| b == b':') {
        Some(i) => (&line[..i], Some(&line[i + 1..])),
        None => (line, None),
    };
    if hex.len() != 40 {
        return Line::Malformed;
    }
    let mut digest = [0u8; 20];
    for (out, pair) in digest.iter_mut().zip(hex.chunks_exact(2)) {
        let nibble = |c: u8| (c as char).to_digit(16);
        match (nibble(pair[0]), nibble(pair[1])) {
            (Some(hi), Some(lo)) => *out = ((hi << 4) | lo) as u8,
            _ => return Line::Malformed,
        }
    }
    match count.map(|c| {
        std::str::from_utf8(c)
            .ok()
            .and_then(|c| c.trim().parse::<u64>().ok())
    }) {
        None => Line::Entry(digest, None),
        Some(Some(n)) => Line::Entry(digest, Some(n)),
        Some(None) => Line::Malformed,
    }
}

/// Reads every line of `corpus`, handing each usable digest (count at least
/// `min_count`) to `each`; counts the rest into `report`.
fn scan(
    corpus: &Path,
    min_count: u64,
    report: &mut BuildReport,
    mut each: impl FnMut(&Sha1Digest),
    read: &mut dyn FnMut(u64),
) -> Result<(), FilterError> {
    let file = File::open(corpus).map_err(io_error(corpus))?;
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut line = Vec::with_capacity(64);
    let mut number = 0u64;
    let (mut bytes, mut told) = (0u64, 0u64);
    *report = BuildReport::default();
    loop {
        line.clear();
        let n = reader
            .read_until(b'\n', &mut line)
            .map_err(io_error(corpus))?;
        if n == 0 {
            read(bytes);
            return Ok(());
        }
        bytes += n as u64;
        if bytes - told >= 1 << 20 {
            told = bytes;
            read(bytes);
        }
        number += 1;
        match parse_line(&line) {
            Line::Blank => {}
            Line::Entry(_, Some(count)) if count < min_count => report.below_min_count += 1,
            Line::Entry(digest, _) => {
                report.entries += 1;
                each(&digest);
            }
            Line::Malformed => {
                report.bad_lines += 1;
                if report.first_bad_lines.len() < BAD_LINES_KEPT {
                    report.first_bad_lines.push(number);
                }
            }
        }
    }
}

/// Builds a filter from a corpus in the Pwned Passwords format and writes it to `out`
/// atomically (a temporary file in the same folder, synced, then renamed), so a server
/// or a CLI reading the old filter never sees half a file.
///
/// Two passes over the corpus: the first counts the entries to size the array, the
/// second sets their bits. Memory is the array alone (`BITS_PER_ENTRY` / 8 bytes per
/// entry). Entries whose count is below `min_count` are left out.
pub fn build(corpus: &Path, out: &Path, min_count: u64) -> Result<BuildReport, FilterError> {
    build_with_progress(corpus, out, min_count, |_, _| {})
}

/// [`build`], telling `progress` how far it got: the pass (1 or 2) and the bytes of the
/// corpus read in it, about every MiB.
pub fn build_with_progress(
    corpus: &Path,
    out: &Path,
    min_count: u64,
    mut progress: impl FnMut(u8, u64),
) -> Result<BuildReport, FilterError> {
    let mut report = BuildReport::default();
    scan(corpus, min_count, &mut report, |_| {}, &mut |bytes| {
        progress(1, bytes)
    })?;
    if report.entries == 0 {
        return Err(FilterError::EmptyCorpus {
            path: corpus.to_owned(),
            hint: other_format_hint(corpus)?,
        });
    }
    let expected = report.entries;
    let bits = expected
        .saturating_mul(BITS_PER_ENTRY)
        .div_ceil(64)
        .max(1)
        .saturating_mul(64);
    let words = usize::try_from(bits / 64).map_err(|_| FilterError::TooLarge {
        path: corpus.to_owned(),
    })?;
    let mut array = vec![0u64; words];
    scan(
        corpus,
        min_count,
        &mut report,
        |digest| {
            for bit in positions(digest, bits, HASHES) {
                array[(bit / 64) as usize] |= 1 << (bit % 64);
            }
        },
        &mut |bytes| progress(2, bytes),
    )?;
    if report.entries != expected {
        return Err(FilterError::Changed {
            path: corpus.to_owned(),
        });
    }
    report.file_bytes = HEADER_LEN + bits / 8;
    write_atomically(out, report.entries, bits, &array)?;
    Ok(report)
}

/// Names the format a corpus without a single SHA-1 line seems to be in, from the
/// position of the `:` on its first line.
fn other_format_hint(corpus: &Path) -> Result<&'static str, FilterError> {
    let file = File::open(corpus).map_err(io_error(corpus))?;
    let mut first = Vec::new();
    BufReader::new(file)
        .take(256)
        .read_until(b'\n', &mut first)
        .map_err(io_error(corpus))?;
    Ok(match first.iter().position(|&b| b == b':') {
        Some(32) => " (it looks like the NTLM edition; use the SHA-1 one)",
        Some(35) => {
            " (it looks like range answers, whose lines lack the first 5 hex digits; join each line to its range prefix)"
        }
        _ => "",
    })
}

fn write_atomically(out: &Path, entries: u64, bits: u64, array: &[u64]) -> Result<(), FilterError> {
    let folder = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let tmp = tempfile::Builder::new()
        .prefix(".breached-")
        .suffix(".tmp")
        .tempfile_in(folder)
        .map_err(io_error(folder))?;
    {
        let mut w = BufWriter::with_capacity(1 << 20, tmp.as_file());
        let mut header = Vec::with_capacity(HEADER_LEN as usize);
        header.extend_from_slice(MAGIC);
        header.extend_from_slice(&VERSION.to_le_bytes());
        header.extend_from_slice(&HASHES.to_le_bytes());
        header.extend_from_slice(&bits.to_le_bytes());
        header.extend_from_slice(&entries.to_le_bytes());
        w.write_all(&header).map_err(io_error(tmp.path()))?;
        for word in array {
            // Little-endian words put bit i at bit i % 8 of byte i / 8, as the lookup reads.
            w.write_all(&word.to_le_bytes())
                .map_err(io_error(tmp.path()))?;
        }
        w.flush().map_err(io_error(tmp.path()))?;
    }
    tmp.as_file().sync_all().map_err(io_error(tmp.path()))?;
    tmp.persist(out).map_err(|e| io_error(out)(e.error))?;
    // The rename itself survives a crash only once the folder is synced.
    File::open(folder)
        .and_then(|d| d.sync_all())
        .map_err(io_error(folder))?;
    Ok(())
}

#[cfg(test)]
mod tests;
