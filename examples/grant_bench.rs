//! Micro-benchmark of grant token checks: what a data request on the
//! federation listener pays for its token on a warm cache, against a full
//! verification (header, Ed25519 signature, times, claims).
//!
//! ```text
//! cargo run --release --example grant_bench [-- ITERATIONS]
//! ```
//!
//! Prints nanoseconds per operation; the figures go to
//! `docs/benchmarks.md`.

use std::hint::black_box;
use std::time::{Duration, Instant, SystemTime};

use mdgate::policy::Role;
use mdgate::token::{issue_grant, verify_grant, GrantClaims, GrantVerifier, SigningKey};
use sha2::{Digest, Sha256};
use uuid::Uuid;

const ISSUER: &str = "server1.example.org";
const CERT: [u8; 32] = [7; 32];

fn main() {
    let iterations: u32 = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000_000);
    let key = SigningKey::from_seed("sig2026a", &[42; 32]).expect("key");
    let now = SystemTime::now();
    let now_s = mdgate::token::unix_seconds(now);
    let claims = |id: u128| GrantClaims {
        issuer: ISSUER.into(),
        patient: Uuid::from_u128(0x0b8f_1d3e_5a57_4a39_9d3b_1f0c_1a2b_3c4d),
        client: "server2.example.org".into(),
        actor: "drhouse@server2.example.org".into(),
        role: Role::Viewer,
        not_before: now_s,
        expires_at: now_s + 30 * 86_400,
        issued_at: now_s,
        id: Uuid::from_u128(id),
        cert_sha256: CERT,
    };
    let token = issue_grant(&key, &claims(1)).expect("issue");
    let skew = Duration::from_secs(60);
    let verifier = GrantVerifier::with_selectors(
        ISSUER,
        vec![("sig2026a".into(), key.verifying_key().clone())],
        skew,
        100_000,
    );
    println!("token: {} bytes", token.len());

    // Full verification, as on a cache miss.
    let full_n = (iterations / 100).max(100);
    let full = per_op(full_n, || {
        black_box(verify_grant(
            black_box(&token),
            key.verifying_key(),
            ISSUER,
            now,
            skew,
        ))
        .expect("valid");
    });

    // Cache misses through the verifier: a new token each time.
    let tokens: Vec<String> = (0..2 * u128::from(full_n))
        .map(|i| issue_grant(&key, &claims(1000 + i)).expect("issue"))
        .collect();
    let mut next = tokens.iter();
    let miss = per_op(full_n, || {
        let t = next.next().expect("enough tokens");
        black_box(verifier.check(black_box(t), &CERT, now)).expect("valid");
    });

    // Warm cache: the same token again and again.
    verifier.check(&token, &CERT, now).expect("valid");
    let before = verifier.verifications();
    let hit = per_op(iterations, || {
        black_box(verifier.check(black_box(&token), black_box(&CERT), now)).expect("valid");
    });
    assert_eq!(verifier.verifications(), before, "hits must not verify");

    // For comparison: what keying the cache by SHA-256 of the token text
    // would add to every hit.
    let hash = per_op(iterations, || {
        black_box(Sha256::digest(black_box(token.as_bytes())));
    });

    println!("full verification (verify_grant):  {full:>9.0} ns/op  ({full_n} iterations)");
    println!("GrantVerifier::check, cache miss:  {miss:>9.0} ns/op  ({full_n} iterations)");
    println!("GrantVerifier::check, warm cache:  {hit:>9.0} ns/op  ({iterations} iterations)");
    println!("SHA-256 of the token (not used):   {hash:>9.0} ns/op");
    println!(
        "speed-up of a hit over a full verification: {:.0}x",
        full / hit
    );
}

/// Mean nanoseconds per call of `f` over `n` calls, after a short warm-up.
fn per_op(n: u32, mut f: impl FnMut()) -> f64 {
    for _ in 0..(n / 10).min(10_000) {
        f();
    }
    let start = Instant::now();
    for _ in 0..n {
        f();
    }
    start.elapsed().as_nanos() as f64 / f64::from(n)
}
