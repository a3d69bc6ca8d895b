//! Rebuilds the crate when a migration changes: `sqlx::migrate!` embeds the files, but
//! on stable Rust cargo cannot see that dependency by itself.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
