//! Throughput of the transfer seal (`src/transfer/seal.rs`) on one thread,
//! against two baselines over the same data: SHA-256 (`sha2`, what
//! `seal_stream` also computes over the ciphertext) and ring's one-shot
//! AES-256-GCM seal in 64 KiB chunks. `seal_stream` (seal and hash, on a
//! current-thread runtime, into `tokio::io::sink`) is the path a server
//! runs.
//!
//! ```text
//! SIZE_MB=256 cargo run --release --example seal_bench
//! ```
//!
//! The buffer is pushed in 64 KiB pieces, as `seal_stream` reads it; the
//! opener gets the ciphertext in 64 KiB pieces too, which do not line up
//! with its 64 KiB + 17 byte chunks. Each figure is the best of three runs,
//! in MB/s (10^6 bytes of plaintext per second).

use std::hint::black_box;
use std::time::{Duration, Instant};

use mdgate::transfer::seal::{seal_stream, Opener, SealKey, Sealer};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use sha2::{Digest, Sha256};

const PIECE: usize = 64 * 1024;
const RUNS: usize = 3;

fn main() {
    let size_mb: usize = std::env::var("SIZE_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    let data = filler(size_mb << 20);
    let key = SealKey::generate();

    // The ciphertext the opener reads, made once outside the timings.
    let mut sealed = Vec::with_capacity(data.len() + data.len() / 1000 + 64);
    let mut sealer = Sealer::new(&key);
    sealer.push(&data, &mut sealed).expect("seal");
    sealer.finish(&mut sealed).expect("seal");

    let seal = best(|| {
        let mut sealer = Sealer::new(&key);
        let mut out = Vec::with_capacity(2 * PIECE);
        for piece in data.chunks(PIECE) {
            out.clear();
            sealer.push(piece, &mut out).expect("seal");
            black_box(&out);
        }
        out.clear();
        sealer.finish(&mut out).expect("seal");
        black_box(&out);
    });

    let mut opened_len = 0;
    let open = best(|| {
        let mut opener = Opener::new(&key);
        let mut out = Vec::with_capacity(2 * PIECE);
        for piece in sealed.chunks(PIECE) {
            out.clear();
            opener.push(piece, &mut out).expect("open");
            black_box(&out);
        }
        opened_len = opener.finish(&mut out).expect("open").plain_len;
    });
    assert_eq!(opened_len, data.len() as u64);

    // The whole server-side path: read, seal, hash the ciphertext, write.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let stream = best(|| {
        let sealed = runtime
            .block_on(seal_stream(&key, &data[..], tokio::io::sink()))
            .expect("seal_stream");
        black_box(sealed);
    });

    let sha = best(|| {
        black_box(Sha256::digest(&data));
    });

    let ring_key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &[7; 32]).expect("key"));
    let mut scratch = data.clone();
    let ring = best(|| {
        for (i, piece) in scratch.chunks_mut(PIECE).enumerate() {
            let mut nonce = [0; 12];
            nonce[4..].copy_from_slice(&(i as u64).to_be_bytes());
            let tag = ring_key
                .seal_in_place_separate_tag(
                    Nonce::assume_unique_for_key(nonce),
                    Aad::empty(),
                    piece,
                )
                .expect("ring seal");
            black_box(&tag);
        }
    });

    let rate = |d: Duration| data.len() as f64 / d.as_secs_f64() / 1e6;
    println!(
        "seal bench: {size_mb} MiB, {} KiB pieces, one thread, best of {RUNS}",
        PIECE / 1024
    );
    println!(
        "{:<34} {:>9} {:>9} {:>9}",
        "what", "MB/s", "/ ring", "/ sha256"
    );
    for (what, d) in [
        ("mdgate Sealer (aes-gcm STREAM)", seal),
        ("mdgate Opener (aes-gcm STREAM)", open),
        ("seal_stream (Sealer + SHA-256)", stream),
        ("ring AES-256-GCM seal, in place", ring),
        ("SHA-256 (sha2)", sha),
    ] {
        println!(
            "{what:<34} {:>9.0} {:>9.2} {:>9.2}",
            rate(d),
            rate(d) / rate(ring),
            rate(d) / rate(sha)
        );
    }
}

/// Wall time of the fastest of [`RUNS`] runs.
fn best(mut run: impl FnMut()) -> Duration {
    (0..RUNS)
        .map(|_| {
            let start = Instant::now();
            run();
            start.elapsed()
        })
        .min()
        .unwrap_or_default()
}

/// Bytes that neither compress nor repeat (xorshift), made quickly.
fn filler(len: usize) -> Vec<u8> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut data = Vec::with_capacity(len + 8);
    while data.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        data.extend_from_slice(&state.to_le_bytes());
    }
    data.truncate(len);
    data
}
