//! What checking an API key costs a request: the time of one check, as every protected request
//! makes it (a SHA-256 of the presented secret, a look-up in the instance's key cache and a
//! comparison in constant time), measured over many checks. `scripts/bench` sets it beside the
//! CPU a request takes.
//!
//!     cargo run --release --example key_check_cost -- DATABASE_URL SECRET
//!
//! Loads the keys of the database at DATABASE_URL as an instance does, and checks SECRET (one
//! of them) over and over; prints the nanoseconds one check takes.

use std::time::Instant;

use orders::{app::authentication::KeyRing, storage};

const CHECKS: u32 = 200_000;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(url), Some(secret)) = (args.next(), args.next()) else {
        eprintln!("usage: key_check_cost DATABASE_URL SECRET");
        std::process::exit(2);
    };
    let (config, _tls) =
        storage::connection_string::parse(&url).expect("usable connection settings");
    let pool = storage::connect_pool(config, 1);
    let keys = KeyRing::default();
    keys.refresh(&pool).await.expect("the keys load");
    keys.authenticate(&secret)
        .expect("SECRET is a current key's");
    let started = Instant::now();
    for _ in 0..CHECKS {
        std::hint::black_box(keys.authenticate(std::hint::black_box(&secret)).is_ok());
    }
    println!("{}", started.elapsed().as_nanos() / u128::from(CHECKS));
}
