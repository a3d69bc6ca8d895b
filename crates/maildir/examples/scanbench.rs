//! Times `Maildir::scan` on a real Maildir, five times:
//!
//!     cargo run --release -p maildir --example scanbench -- /tmp/poplar-bench/mail/bulk/Maildir first
//!
//! With `first`, the listing cache is removed before each scan (a first open); without,
//! scans after the first read the cache (a warm open). Also prints how long freeing the
//! listing takes. Use a copy of a Maildir: the cache file is written into it.

fn main() {
    let root = std::env::args().nth(1).expect("maildir");
    let first = std::env::args().nth(2).as_deref() == Some("first");
    let md = maildir::Maildir::new(&root);
    for _ in 0..5 {
        if first {
            let _ = std::fs::remove_file(md.root().join("poplar-listing"));
        }
        let t = std::time::Instant::now();
        let l = md.scan().unwrap();
        let el = t.elapsed();
        let t2 = std::time::Instant::now();
        drop(l);
        eprintln!("scan {:?} drop {:?}", el, t2.elapsed());
    }
}
