//! Times RETR's encoder (CRLF conversion and dot-stuffing) on a file, in the chunks the
//! server reads: `cargo run --release -p pop3-proto --example stuffbench -- FILE [CHUNK]`.
use std::time::Instant;

fn main() {
    let mut args = std::env::args().skip(1);
    let path = args.next().expect("usage: stuffbench FILE [CHUNK_BYTES]");
    let chunk: usize = args
        .next()
        .map_or(256 * 1024, |c| c.parse().expect("chunk size"));
    let data = std::fs::read(&path).expect("read file");
    let mut best = f64::MAX;
    let mut out = Vec::with_capacity(chunk * 2 + 64);
    let mut sent = 0usize;
    for _ in 0..20 {
        let t = Instant::now();
        let mut stuffer = pop3_proto::DotStuffer::retr();
        sent = 0;
        for piece in data.chunks(chunk) {
            out.clear();
            stuffer.encode(piece, &mut out);
            sent += out.len();
        }
        out.clear();
        stuffer.finish(&mut out);
        sent += out.len();
        best = best.min(t.elapsed().as_secs_f64());
    }
    let mb = data.len() as f64 / 1e6;
    println!(
        "{mb:.1} MB in, {:.1} MB out, chunks of {chunk}: best {:.2} ms = {:.0} MB/s ({:.3} ms/MB)",
        sent as f64 / 1e6,
        best * 1e3,
        mb / best,
        best * 1e3 / mb
    );
}
