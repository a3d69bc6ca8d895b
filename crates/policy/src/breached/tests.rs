use super::*;

/// A deterministic stream of digests (splitmix64), so the false-positive counts below
/// are the same on every run.
struct Digests(u64);

impl Iterator for Digests {
    type Item = Sha1Digest;
    fn next(&mut self) -> Option<Sha1Digest> {
        let mut d = [0u8; 20];
        for chunk in d.chunks_mut(8) {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            chunk.copy_from_slice(&z.to_le_bytes()[..chunk.len()]);
        }
        Some(d)
    }
}

fn hex(d: &Sha1Digest) -> String {
    d.iter().map(|b| format!("{b:02X}")).collect()
}

fn corpus(dir: &Path, lines: &[String]) -> PathBuf {
    let path = dir.join("pwned.txt");
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path
}

#[test]
fn lines_of_the_pwned_passwords_format_parse() {
    let d = password_digest("password");
    assert_eq!(hex(&d), "5BAA61E4C9B93F3F0682250B6CF8331B7EE68FD8");
    let e = |s: &str| parse_line(s.as_bytes());
    assert_eq!(
        e("5BAA61E4C9B93F3F0682250B6CF8331B7EE68FD8:52256179"),
        Line::Entry(d, Some(52_256_179))
    );
    assert_eq!(
        e("5baa61e4c9b93f3f0682250b6cf8331b7ee68fd8:3\r\n"),
        Line::Entry(d, Some(3))
    );
    assert_eq!(
        e("5BAA61E4C9B93F3F0682250B6CF8331B7EE68FD8"),
        Line::Entry(d, None)
    );
    assert_eq!(e(""), Line::Blank);
    assert_eq!(e("  \r\n"), Line::Blank);
    for bad in [
        "5BAA61E4C9B93F3F0682250B6CF8331B7EE68FD:1",
        "5BAA61E4C9B93F3F0682250B6CF8331B7EE68FD8F:1",
        "ZBAA61E4C9B93F3F0682250B6CF8331B7EE68FD8:1",
        "5BAA61E4C9B93F3F0682250B6CF8331B7EE68FD8:lots",
        "5BAA61E4C9B93F3F0682250B6CF8331B7EE68FD8:-1",
        "8846F7EAEE8FB117AD06BDD830B7586C:1",
        "password",
    ] {
        assert_eq!(e(bad), Line::Malformed, "{bad}");
    }
}

#[test]
fn members_are_found_and_random_non_members_are_not() {
    let dir = tempfile::tempdir().unwrap();
    let members: Vec<Sha1Digest> = Digests(1).take(2_000).collect();
    let mut lines: Vec<String> = members
        .iter()
        .enumerate()
        .map(|(i, d)| format!("{}:{}", hex(d), i + 1))
        .collect();
    lines.push(format!("{}:52256179", hex(&password_digest("password"))));
    let path = corpus(dir.path(), &lines);
    let out = dir.path().join("breached.filter");
    let report = build(&path, &out, 1).unwrap();
    assert_eq!(report.entries, 2_001);
    assert_eq!((report.bad_lines, report.below_min_count), (0, 0));

    let filter = BreachedFilter::open(&out).unwrap().unwrap();
    for d in &members {
        assert!(filter.contains(d).unwrap(), "member {} not found", hex(d));
    }
    assert!(filter.contains_password("password").unwrap());
    assert!(
        !filter
            .contains_password("a password that is not there")
            .unwrap()
    );
    // 200,000 non-members at 5.5e-7 expect 0.11 false positives.
    let false_positives = Digests(2)
        .take(200_000)
        .filter(|d| filter.contains(d).unwrap())
        .count();
    assert!(false_positives <= 1, "{false_positives} false positives");
}

#[test]
fn the_array_is_filled_as_the_documented_rate_needs() {
    // The false-positive rate of a Bloom filter is (fraction of bits set)^k; with 30
    // bits per entry and k = 20 about 48.7% of the bits are set, so the rate is about
    // 5.5e-7. Measure the fill of a real build rather than trust the formula.
    let dir = tempfile::tempdir().unwrap();
    let lines: Vec<String> = Digests(3)
        .take(50_000)
        .map(|d| format!("{}:1", hex(&d)))
        .collect();
    let path = corpus(dir.path(), &lines);
    let out = dir.path().join("breached.filter");
    build(&path, &out, 1).unwrap();
    let bytes = std::fs::read(&out).unwrap();
    let ones: u64 = bytes[HEADER_LEN as usize..]
        .iter()
        .map(|b| u64::from(b.count_ones()))
        .sum();
    let fill = ones as f64 / ((bytes.len() as u64 - HEADER_LEN) * 8) as f64;
    let rate = fill.powi(HASHES as i32);
    assert!((0.47..0.50).contains(&fill), "fill {fill}");
    assert!(rate < 1e-6, "false-positive rate {rate}");
    assert!(
        (rate / FALSE_POSITIVE_RATE - 1.0).abs() < 0.5,
        "measured {rate}, documented {FALSE_POSITIVE_RATE}"
    );
}

#[test]
fn the_file_format_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let members: Vec<Sha1Digest> = Digests(4).take(1_000).collect();
    let lines: Vec<String> = members.iter().map(|d| format!("{}:7", hex(d))).collect();
    let path = corpus(dir.path(), &lines);
    let out = dir.path().join("breached.filter");
    let report = build(&path, &out, 1).unwrap();

    let bytes = std::fs::read(&out).unwrap();
    assert_eq!(&bytes[0..8], b"PPLRBRF1");
    assert_eq!(u32::from_le_bytes(bytes[8..12].try_into().unwrap()), 1);
    assert_eq!(
        u32::from_le_bytes(bytes[12..16].try_into().unwrap()),
        HASHES
    );
    let bits = u64::from_le_bytes(bytes[16..24].try_into().unwrap());
    assert_eq!(bits, 30_016, "1000 entries x 30 bits, rounded up to 64");
    assert_eq!(u64::from_le_bytes(bytes[24..32].try_into().unwrap()), 1_000);
    assert_eq!(bytes.len() as u64, 32 + bits / 8);
    assert_eq!(report.file_bytes, bytes.len() as u64);

    // The documented layout is enough to look a member up by hand.
    let by_hand = |d: &Sha1Digest| {
        let h1 = u64::from_le_bytes(d[0..8].try_into().unwrap());
        let h2 = u64::from_le_bytes(d[8..16].try_into().unwrap()) | 1;
        (0..20u64).all(|i| {
            let x = h1.wrapping_add(i.wrapping_mul(h2));
            let bit = ((x as u128 * bits as u128) >> 64) as u64;
            bytes[32 + (bit / 8) as usize] & (1 << (bit % 8)) != 0
        })
    };
    assert!(members.iter().all(by_hand));

    let filter = BreachedFilter::open(&out).unwrap().unwrap();
    assert_eq!(
        (filter.entries(), filter.bits(), filter.hashes()),
        (1_000, bits, HASHES)
    );
    assert!(members.iter().all(|d| filter.contains(d).unwrap()));

    // A second build replaces the file whole and leaves no temporary file behind.
    let fewer = corpus(dir.path(), &lines[..10]);
    build(&fewer, &out, 1).unwrap();
    let filter = BreachedFilter::open(&out).unwrap().unwrap();
    assert_eq!(filter.entries(), 10);
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
}

#[test]
fn damaged_and_missing_files_are_told_apart() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("breached.filter");
    assert!(BreachedFilter::open(&out).unwrap().is_none());
    let lines: Vec<String> = Digests(5).take(100).map(|d| hex(&d)).collect();
    build(&corpus(dir.path(), &lines), &out, 1).unwrap();
    let good = std::fs::read(&out).unwrap();
    let corrupt = |bytes: &[u8]| {
        std::fs::write(&out, bytes).unwrap();
        match BreachedFilter::open(&out) {
            Err(FilterError::Corrupt { why, .. }) => why,
            other => panic!("{other:?}"),
        }
    };
    assert!(corrupt(&good[..good.len() - 1]).contains("size"));
    assert!(corrupt(&good[..10]).contains("header"));
    let mut bad = good.clone();
    bad[0] = b'X';
    assert!(corrupt(&bad).contains("magic"));
    let mut bad = good.clone();
    bad[8] = 2;
    assert!(corrupt(&bad).contains("version"));
    let mut bad = good;
    bad[16] = bad[16].wrapping_add(1);
    assert!(corrupt(&bad).contains("array size"));
}

#[test]
fn malformed_lines_are_counted_and_counts_filter() {
    let dir = tempfile::tempdir().unwrap();
    let d: Vec<Sha1Digest> = Digests(6).take(4).collect();
    let lines = vec![
        format!("{}:100", hex(&d[0])),
        "not a hash".to_string(),
        format!("{}:2\r", hex(&d[1]).to_lowercase()),
        String::new(),
        format!("{}:1", hex(&d[2])),
        format!("{}", hex(&d[3])),
        "0123:5".to_string(),
    ];
    let path = corpus(dir.path(), &lines);
    let out = dir.path().join("breached.filter");
    let report = build(&path, &out, 2).unwrap();
    assert_eq!(
        report,
        BuildReport {
            entries: 3,
            below_min_count: 1,
            bad_lines: 2,
            first_bad_lines: vec![2, 7],
            file_bytes: report.file_bytes,
        }
    );
    let filter = BreachedFilter::open(&out).unwrap().unwrap();
    assert!(filter.contains(&d[0]).unwrap());
    assert!(filter.contains(&d[1]).unwrap());
    assert!(filter.contains(&d[3]).unwrap(), "no count: kept");
}

#[test]
fn a_corpus_without_entries_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("breached.filter");
    let empty = corpus(dir.path(), &[String::new()]);
    assert!(matches!(
        build(&empty, &out, 1),
        Err(FilterError::EmptyCorpus { hint: "", .. })
    ));
    let ntlm = corpus(dir.path(), &["8846F7EAEE8FB117AD06BDD830B7586C:3".into()]);
    match build(&ntlm, &out, 1) {
        Err(e @ FilterError::EmptyCorpus { .. }) => assert!(e.to_string().contains("NTLM")),
        other => panic!("{other:?}"),
    }
    let range = corpus(
        dir.path(),
        &["1E4C9B93F3F0682250B6CF8331B7EE68FD8:52256179".into()],
    );
    match build(&range, &out, 1) {
        Err(e @ FilterError::EmptyCorpus { .. }) => assert!(e.to_string().contains("prefix")),
        other => panic!("{other:?}"),
    }
    assert!(!out.exists());
}
