//! JWE A256GCM (`dir`) decrypt + encrypt of 1 KiB, 64 KiB and 1 MiB bodies — what an encrypted
//! request and its encrypted answer cost — side by side with `openssl speed -evp aes-256-gcm`
//! at the same block size, in one run on one core.
//!
//! `cargo bench --bench jwe` prints, per size, the round trip's time, its AES-GCM throughput
//! (each round trip passes the body through AES-GCM twice: 2 × size / time) and that
//! throughput as a ratio of openssl's bytes/s. Target: ≥ 0.8 at 1 MiB.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flowgate::http::jose::keys::{DirKey, Recipient};
use flowgate::http::jose::{screen, seal};
use zeroize::Zeroizing;

const SIZES: [usize; 3] = [1024, 64 * 1024, 1024 * 1024];

/// openssl's AES-256-GCM encryption bytes/s for blocks of `size`.
fn openssl(size: usize) -> Option<f64> {
    let out = Command::new("openssl")
        .args([
            "speed",
            "-seconds",
            "2",
            "-mr",
            "-evp",
            "aes-256-gcm",
            "-bytes",
        ])
        .arg(size.to_string())
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|line| line.strip_prefix("+F:"))
        .and_then(|line| line.rsplit(':').next())
        .and_then(|rate| rate.trim().parse().ok())
}

/// Round trips per second of decrypting a request JWE of `size` bytes of JSON and encrypting
/// the same body as the answer.
fn round_trips(size: usize) -> f64 {
    let key = Arc::new(DirKey::new(&[7; 32], "bench"));
    let recipient = Recipient::Dir(Arc::clone(&key));
    let body = format!("{{\"v\":\"{}\"}}", "x".repeat(size - 8));
    let request = seal(Zeroizing::new(body.into_bytes()), &recipient, None).unwrap();
    let once = || {
        let plaintext = screen(black_box(request.as_bytes()))
            .unwrap()
            .decrypt_dir(&key)
            .unwrap();
        black_box(seal(Zeroizing::new(plaintext), &recipient, None).unwrap());
    };
    for _ in 0..20 {
        once();
    }
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < Duration::from_secs(2) {
        once();
        n += 1;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    // `cargo test --benches` runs benches with `--bench` absent: nothing to measure then.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    println!("size      round trip   JWE AES-GCM bytes/s   openssl bytes/s   ratio");
    for size in SIZES {
        let per_second = round_trips(size);
        let jwe = 2.0 * size as f64 * per_second;
        let openssl = openssl(size);
        let ratio = openssl.map_or("n/a".to_owned(), |o| format!("{:.2}", jwe / o));
        println!(
            "{:>7}  {:>9.1} µs   {:>17.3e}   {:>15}   {ratio}",
            size,
            1e6 / per_second,
            jwe,
            openssl.map_or("n/a".to_owned(), |o| format!("{o:.3e}")),
        );
    }
}
