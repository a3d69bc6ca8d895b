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
