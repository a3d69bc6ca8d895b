use super::*;
use crate::listing::LISTING_CACHE;
use crate::test_support::{age_dirs, maildir, put};

const DAY: u64 = 86_400;
const T0: u64 = 1_800_000_000;

fn at(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
}

fn names(md: &Maildir) -> Vec<String> {
    md.scan()
        .expect("scan")
        .iter()
        .map(|e| {
            let dir = e.path.parent().unwrap().file_name().unwrap();
            format!(
                "{}/{}",
                dir.to_string_lossy(),
                e.path.file_name().unwrap().to_string_lossy()
            )
        })
        .collect()
}

fn records(md: &Maildir) -> Records {
    load(md.root()).expect("load")
}

#[test]
fn marking_flags_seen_keeps_uidls_and_records_the_first_retrieval() {
    let (_dir, md) = maildir();
    put(&md, "new/1.a.host,S=2", b"a\n", 100);
    put(&md, "cur/2.b.host:2,FR", b"b\n", 101);
    put(&md, "cur/3.c.host:2,S", b"c\n", 102);
    put(&md, "new/4.d.host", b"d\n", 103);
    let before = md.scan().expect("scan");
    let targets: Vec<&MessageEntry> = before[..3].iter().collect();
    md.mark_retrieved(&before, &targets, at(T0)).expect("mark");
    assert_eq!(
        names(&md),
        [
            "cur/1.a.host,S=2:2,S",
            "cur/2.b.host:2,FRS",
            "cur/3.c.host:2,S",
            "new/4.d.host"
        ]
    );
    let after = md.scan().expect("scan");
    let uidls = |l: &[MessageEntry]| l.iter().map(|e| e.uidl.clone()).collect::<Vec<_>>();
    assert_eq!(uidls(&before), uidls(&after));
    let sizes = |l: &[MessageEntry]| l.iter().map(|e| e.size).collect::<Vec<_>>();
    assert_eq!(sizes(&before), sizes(&after));
    // The mtime (delivery time, the listing order) is kept.
    let meta = fs::metadata(md.root().join("cur/1.a.host,S=2:2,S")).expect("stat");
    assert_eq!(
        std::os::unix::fs::MetadataExt::mtime(&meta),
        100,
        "mtime kept"
    );
    let r = records(&md);
    assert_eq!(r.len(), 3);
    assert_eq!(r["1.a.host,S=2"], T0);
    assert_eq!(r["3.c.host"], T0);
    // Retrieved again later: the first retrieval still counts.
    let again = md.scan().expect("scan");
    md.mark_retrieved(&again, &[&again[0]], at(T0 + DAY))
        .expect("mark again");
    assert_eq!(records(&md)["1.a.host,S=2"], T0);
}

#[test]
fn marking_follows_renamed_files_and_skips_gone_ones() {
    let (_dir, md) = maildir();
    let a = put(&md, "new/1.a.host", b"a\n", 100);
    let b = put(&md, "new/2.b.host", b"b\n", 101);
    put(&md, "cur/3.c.host:1,odd", b"c\n", 102);
    let list = md.scan().expect("scan");
    // Another program moves one to cur/ with a flag, and deletes another.
    fs::rename(&a, md.root().join("cur/1.a.host:2,T")).expect("rename");
    fs::remove_file(&b).expect("rm");
    md.mark_retrieved(&list, &list.iter().collect::<Vec<_>>(), at(T0))
        .expect("mark");
    assert_eq!(names(&md), ["cur/1.a.host:2,ST", "cur/3.c.host:1,odd"]);
    assert_eq!(records(&md).keys().collect::<Vec<_>>(), ["1.a.host"]);
}

#[test]
fn marking_never_replaces_another_file() {
    let (_dir, md) = maildir();
    put(&md, "new/1.a.host", b"a\n", 100);
    let list = md.scan().expect("scan");
    // A (broken) duplicate already holds the flagged name.
    put(&md, "cur/1.a.host:2,S", b"other\n", 100);
    let err = md
        .mark_retrieved(&list, &[&list[0]], at(T0))
        .expect_err("clash");
    assert_eq!(err.failed, [0]);
    assert_eq!(
        fs::read(md.root().join("cur/1.a.host:2,S")).unwrap(),
        b"other\n"
    );
    assert!(md.root().join("new/1.a.host").exists());
    assert!(records(&md).is_empty());
}

#[test]
fn expiry_deletes_only_retrieved_seen_messages_old_enough() {
    let (_dir, md) = maildir();
    put(&md, "new/1.old.host", b"1\n", 100);
    put(&md, "new/2.young.host", b"2\n", 101);
    put(&md, "new/3.never.host", b"3\n", 102);
    // Flagged seen by another program (IMAP), never retrieved over POP3.
    put(&md, "cur/4.imap.host:2,S", b"4\n", 103);
    put(&md, "new/5.unread.host", b"5\n", 104);
    let list = md.scan().expect("scan");
    md.mark_retrieved(&list, &[&list[0], &list[4]], at(T0))
        .expect("mark");
    let list = md.scan().expect("scan");
    md.mark_retrieved(&list, &[&list[1]], at(T0 + 2 * DAY))
        .expect("mark");
    // Someone marked 5 unread again.
    fs::rename(
        md.root().join("cur/5.unread.host:2,S"),
        md.root().join("cur/5.unread.host:2,"),
    )
    .expect("rename");
    let keep = Duration::from_secs(3 * DAY);
    // Younger than three days: nothing goes, and every record stays but 5's.
    let list = md.scan().expect("scan");
    let expire =
        |list: &[MessageEntry], now| md.expire_retrieved(list, keep, at(now)).expect("expire");
    assert_eq!(expire(&list, T0 + 3 * DAY - 1), 0);
    assert_eq!(md.scan().expect("scan").len(), 5);
    assert_eq!(
        records(&md).keys().collect::<Vec<_>>(),
        ["1.old.host", "2.young.host"]
    );
    // Three days after its retrieval, 1 goes; 2 was retrieved later.
    assert_eq!(expire(&list, T0 + 3 * DAY), 1);
    assert_eq!(
        names(&md),
        [
            "cur/2.young.host:2,S",
            "new/3.never.host",
            "cur/4.imap.host:2,S",
            "cur/5.unread.host:2,"
        ]
    );
    assert_eq!(records(&md).keys().collect::<Vec<_>>(), ["2.young.host"]);
    let list = md.scan().expect("scan");
    assert_eq!(expire(&list, T0 + 100 * DAY), 1);
    assert_eq!(md.scan().expect("scan").len(), 3);
    // No record left: the file is gone, and expiry has nothing to do.
    assert!(!md.root().join(RETRIEVED_FILE).exists());
    let list = md.scan().expect("scan");
    assert_eq!(expire(&list, T0 + 1000 * DAY), 0);
}

#[test]
fn zero_days_expire_at_once_and_future_times_wait() {
    let (_dir, md) = maildir();
    put(&md, "new/1.a.host", b"a\n", 100);
    put(&md, "new/2.b.host", b"b\n", 101);
    let list = md.scan().expect("scan");
    md.mark_retrieved(&list, &[&list[0]], at(T0)).expect("mark");
    md.mark_retrieved(&list, &[&list[1]], at(T0 + 10 * DAY))
        .expect("mark");
    let list = md.scan().expect("scan");
    // The clock went back: a retrieval "in the future" is not old yet...
    let keep = Duration::from_secs(DAY);
    assert_eq!(
        md.expire_retrieved(&list, keep, at(T0 + DAY))
            .expect("expire"),
        1
    );
    // ...but with no retention at all it goes.
    let list = md.scan().expect("scan");
    assert_eq!(
        md.expire_retrieved(&list, Duration::ZERO, at(T0))
            .expect("expire"),
        1
    );
    assert!(md.scan().expect("scan").is_empty());
}

#[test]
fn a_damaged_record_keeps_messages() {
    let (_dir, md) = maildir();
    put(&md, "cur/1.a.host:2,S", b"a\n", 100);
    put(&md, "cur/2.b.host:2,S", b"b\n", 101);
    put(&md, "cur/3.c.host:2,S", b"c\n", 102);
    fs::write(
        md.root().join(RETRIEVED_FILE),
        "# comment\n1.a.host soon\n2.b.host 5 extra\n3.c.host 5\n\u{0}garbage\n",
    )
    .expect("write");
    let list = md.scan().expect("scan");
    let n = md
        .expire_retrieved(&list, Duration::from_secs(DAY), at(T0))
        .expect("expire");
    assert_eq!(n, 1);
    assert_eq!(names(&md), ["cur/1.a.host:2,S", "cur/2.b.host:2,S"]);
    assert!(!md.root().join(RETRIEVED_FILE).exists());
}

#[test]
fn the_listing_cache_follows_flagging_and_expiry() {
    let (_dir, md) = maildir();
    put(&md, "new/1.a.host", b"a\n", 100);
    put(&md, "new/2.b.host", b"b\n", 101);
    age_dirs(md.root());
    let list = md.scan().expect("scan");
    assert!(md.root().join(LISTING_CACHE).exists());
    md.mark_retrieved(&list, &[&list[0]], at(T0)).expect("mark");
    // The cached listing named new/1.a.host; the rename changed both directories.
    let list = md.scan().expect("scan");
    assert_eq!(list[0].path, md.root().join("cur/1.a.host:2,S"));
    age_dirs(md.root());
    let list = md.scan().expect("scan");
    let text = fs::read_to_string(md.root().join(LISTING_CACHE)).expect("cache");
    assert!(text.contains("cur/1.a.host:2,S"), "{text}");
    assert_eq!(
        md.expire_retrieved(&list, Duration::ZERO, at(T0))
            .expect("expire"),
        1
    );
    let list = md.scan().expect("scan");
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].uidl, "2.b.host");
}
