//! Tests for the key document: signing, verifying, the 7-day cap, content
//! rules, and each kind of channel mismatch.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::json;

use super::*;

const SERVER: &str = "server1.example.org";
const T0: i64 = 1_795_500_000;
const DAY: i64 = 24 * 3600;

fn at(secs: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs as u64)
}

fn skew() -> Duration {
    Duration::from_secs(60)
}

fn sig_key() -> SigningKey {
    SigningKey::generate("sig2026a").expect("generate")
}

fn tls_hash() -> [u8; 32] {
    [7; 32]
}

fn tls_entry() -> DocKey {
    DocKey {
        selector: "tls2026a".into(),
        usage: KeyUsage::Tls,
        alg: KeyAlg::P256,
        material: KeyMaterial::SpkiSha256(tls_hash()),
        nbf: Some(T0 - DAY),
        exp: Some(T0 + 365 * DAY),
    }
}

fn doc(key: &SigningKey) -> KeyDocument {
    KeyDocument::new(
        SERVER,
        vec![tls_entry(), DocKey::signing(key, Some(T0 - DAY), None)],
        at(T0),
        Duration::from_secs(DAY as u64),
    )
}

/// DNS as it should be for `doc(key)`.
fn dns(key: &SigningKey) -> Vec<DnsKey> {
    vec![
        DnsKey {
            selector: "tls2026a".into(),
            usage: KeyUsage::Tls,
            alg: KeyAlg::P256,
            material: DnsMaterial::SpkiSha256(tls_hash()),
        },
        DnsKey {
            selector: "sig2026a".into(),
            usage: KeyUsage::Sig,
            alg: KeyAlg::Ed25519,
            material: DnsMaterial::Spki(key.spki_der().to_vec()),
        },
    ]
}

/// A lookup that knows exactly `key`.
fn only(key: &SigningKey) -> impl FnOnce(&str) -> Option<VerifyingKey> + '_ {
    move |kid| (kid == key.selector()).then(|| key.verifying_key().clone())
}

fn verify_at(jws: &str, key: &SigningKey, now: i64) -> Result<KeyDocument, DocError> {
    KeyDocument::verify(jws, SERVER, skew(), only(key), at(now))
}

/// Signs any payload as a key document, bypassing `KeyDocument::sign`'s
/// checks, to see what a verifier does with what a peer might send.
fn sign_raw(key: &SigningKey, payload: serde_json::Value) -> String {
    jws::sign(key, KEYS_TYP, &payload).expect("sign")
}

fn raw_payload(key: &SigningKey) -> serde_json::Value {
    json!({
        "v": "mdgate1",
        "server": SERVER,
        "iat": T0,
        "exp": T0 + DAY,
        "keys": [
            {"sel": "sig2026a", "u": "sig", "a": "ed25519", "k": key.spki_b64(), "nbf": T0 - DAY}
        ]
    })
}

#[test]
fn sign_and_verify() {
    let key = sig_key();
    let document = doc(&key);
    assert_eq!(document.exp, T0 + DAY);
    let jws = document.sign(&key, at(T0)).expect("sign");
    let back = verify_at(&jws, &key, T0 + 10).expect("verify");
    assert_eq!(back, document);
    assert!(compare(&back, &dns(&key), at(T0 + 10)).is_ok());

    // The header is exactly the protocol's.
    let e = Expect::typ(KEYS_TYP, skew());
    let unverified = jws::parse(&jws, &e).expect("parse");
    assert_eq!(unverified.kid(), "sig2026a");
    assert_eq!(unverified.header().typ.as_deref(), Some(KEYS_TYP));
    // The wire form: k padded standard base64, h likewise, absent fields
    // left out.
    let payload: serde_json::Value = unverified.peek_unverified().expect("peek");
    assert_eq!(payload["v"], "mdgate1");
    assert_eq!(payload["keys"][0]["h"], STANDARD.encode(tls_hash()));
    assert!(payload["keys"][0].get("k").is_none());
    assert_eq!(payload["keys"][1]["k"], key.spki_b64());
    assert!(payload["keys"][1].get("exp").is_none());
}

#[test]
fn verify_refusals() {
    let key = sig_key();
    let jws = doc(&key).sign(&key, at(T0)).expect("sign");

    // DNS has no such signing key.
    let e = KeyDocument::verify(&jws, SERVER, skew(), |_| None, at(T0)).expect_err("unknown");
    assert!(
        matches!(e, DocError::UnknownKid { ref kid } if kid == "sig2026a"),
        "{e}"
    );

    // DNS has another key under that selector.
    let other = SigningKey::generate("sig2026a").expect("generate");
    let e = verify_at(&jws, &other, T0).expect_err("other key");
    assert!(
        matches!(e, DocError::Jwt(JwtError::BadSignature { .. })),
        "{e}"
    );

    // Fetched from another server.
    let e = KeyDocument::verify(&jws, "server2.example.org", skew(), only(&key), at(T0))
        .expect_err("server");
    assert!(matches!(e, DocError::ServerMismatch { .. }), "{e}");

    // Expired, with the skew in the message.
    let e = verify_at(&jws, &key, T0 + DAY + 95).expect_err("expired");
    assert_eq!(
        e.to_string(),
        "key document: token expired: exp was 95 s ago by this server's clock (tolerance 60 s)"
    );

    // Any other typ (a grant token, say) is not a key document.
    let grant = jws::sign(&key, "mdgate-grant+jwt", &raw_payload(&key)).expect("sign");
    let e = verify_at(&grant, &key, T0).expect_err("typ");
    assert!(matches!(e, DocError::Jwt(JwtError::WrongTyp { .. })), "{e}");
}

#[test]
fn lifetime_is_capped_at_seven_days() {
    let key = sig_key();
    let keys = vec![DocKey::signing(&key, None, None)];
    let long = KeyDocument::new(SERVER, keys, at(T0), Duration::from_secs(30 * DAY as u64));
    assert_eq!(long.exp - long.iat, 7 * DAY);

    // Signing refuses a longer one.
    let mut longer = long.clone();
    longer.exp += 1;
    assert!(matches!(
        longer.sign(&key, at(T0)),
        Err(DocError::ExceedsMaxLifetime { lifetime }) if lifetime == 7 * DAY + 1
    ));

    // A verifier uses the lesser of exp and iat + 7 days.
    let mut payload = raw_payload(&key);
    payload["exp"] = json!(T0 + 30 * DAY);
    let jws = sign_raw(&key, payload);
    let ok = verify_at(&jws, &key, T0 + DAY).expect("within 7 days");
    assert_eq!(ok.exp, T0 + 7 * DAY);
    let e = verify_at(&jws, &key, T0 + 8 * DAY).expect_err("past the cap");
    assert!(
        matches!(e, DocError::Jwt(JwtError::Expired { ago, .. }) if ago == DAY),
        "{e}"
    );
}

#[test]
fn signing_refuses_documents_peers_would_refuse() {
    let key = sig_key();
    // Not valid at the signing time.
    assert!(matches!(
        doc(&key).sign(&key, at(T0 + 2 * DAY)),
        Err(DocError::NotValidNow { .. })
    ));
    assert!(matches!(
        doc(&key).sign(&key, at(T0 - 1)),
        Err(DocError::NotValidNow { .. })
    ));
    // The signing key must be listed.
    let mut unlisted = doc(&key);
    unlisted.keys.retain(|k| k.usage != KeyUsage::Sig);
    assert!(matches!(
        unlisted.sign(&key, at(T0)),
        Err(DocError::SignerNotListed { .. })
    ));
    // Duplicate selectors.
    let mut twice = doc(&key);
    twice.keys.push(tls_entry());
    assert!(matches!(
        twice.sign(&key, at(T0)),
        Err(DocError::DuplicateSelector { .. })
    ));
    // Not a canonical FQDN.
    let mut upper = doc(&key);
    upper.server = "Server1.Example.org".into();
    assert!(matches!(
        upper.sign(&key, at(T0)),
        Err(DocError::InvalidServer { .. })
    ));
}

#[test]
fn verify_refuses_bad_content() {
    let key = sig_key();
    let sig = |extra: serde_json::Value| {
        let mut entry = json!({"sel": "sig2026a", "u": "sig", "a": "ed25519", "k": key.spki_b64()});
        for (k, v) in extra.as_object().expect("object") {
            if v.is_null() {
                entry.as_object_mut().expect("object").remove(k);
            } else {
                entry[k] = v.clone();
            }
        }
        entry
    };
    let with_keys = |keys: serde_json::Value| {
        let mut p = raw_payload(&key);
        p["keys"] = keys;
        sign_raw(&key, p)
    };
    let tls = |extra: serde_json::Value| {
        let mut entry = json!({"sel": "tls1", "u": "tls", "a": "p256"});
        for (k, v) in extra.as_object().expect("object") {
            entry[k] = v.clone();
        }
        entry
    };
    let h = STANDARD.encode(tls_hash());
    let cases: Vec<(&str, String)> = vec![
        (
            "sig with h",
            with_keys(json!([sig(json!({"k": null, "h": h}))])),
        ),
        ("sig p256", with_keys(json!([sig(json!({"a": "p256"}))]))),
        (
            "k and h",
            with_keys(json!([sig(json!({})), tls(json!({"k": "AAAA", "h": h}))])),
        ),
        (
            "neither",
            with_keys(json!([sig(json!({})), tls(json!({}))])),
        ),
        (
            "empty k",
            with_keys(json!([sig(json!({})), tls(json!({"k": ""}))])),
        ),
        (
            "bad b64",
            with_keys(json!([sig(json!({})), tls(json!({"k": "!!"}))])),
        ),
        (
            "short h",
            with_keys(json!([sig(json!({})), tls(json!({"h": "AAAA"}))])),
        ),
        (
            "sig not spki",
            with_keys(json!([sig(json!({"k": "AAAA"}))])),
        ),
        (
            "bad sel",
            with_keys(json!([sig(json!({})), tls(json!({"sel": "TLS", "h": h}))])),
        ),
        (
            "exp < nbf",
            with_keys(json!([sig(json!({"nbf": T0, "exp": T0 - 1}))])),
        ),
    ];
    for (name, jws) in cases {
        let e = verify_at(&jws, &key, T0).expect_err(name);
        assert!(matches!(e, DocError::InvalidKey { .. }), "{name}: {e}");
    }
    let dup = with_keys(json!([sig(json!({})), sig(json!({}))]));
    assert!(matches!(
        verify_at(&dup, &key, T0),
        Err(DocError::DuplicateSelector { .. })
    ));
    let unknown_usage = with_keys(json!([sig(json!({})), tls(json!({"u": "enc", "h": h}))]));
    assert!(matches!(
        verify_at(&unknown_usage, &key, T0),
        Err(DocError::Jwt(JwtError::Claims(_)))
    ));
    // Signed with a key it does not list.
    let other = tls(json!({"h": h}));
    assert!(matches!(
        verify_at(&with_keys(json!([other])), &key, T0),
        Err(DocError::SignerNotListed { .. })
    ));
    // Another protocol version.
    let mut p = raw_payload(&key);
    p["v"] = json!("mdgate2");
    assert!(matches!(
        verify_at(&sign_raw(&key, p), &key, T0),
        Err(DocError::Version { .. })
    ));
    // Unpadded k is fine (as in DNS).
    let unpadded = key.spki_b64().trim_end_matches('=').to_owned();
    assert!(verify_at(&with_keys(json!([sig(json!({"k": unpadded}))])), &key, T0).is_ok());
}

#[test]
fn compare_reports_every_difference() {
    let key = sig_key();
    let now = at(T0);
    let document = doc(&key);
    let good = dns(&key);
    assert_eq!(compare(&document, &good, now), Ok(()));

    let mismatch = |dns: &[DnsKey], doc: &KeyDocument| {
        compare(doc, dns, now).expect_err("mismatch").differences
    };
    let sel = |s: &str| s.to_owned();

    // A selector live in DNS that the document lacks.
    let mut extra = good.clone();
    extra.push(DnsKey {
        selector: "tls2026b".into(),
        usage: KeyUsage::Tls,
        alg: KeyAlg::Ed25519,
        material: DnsMaterial::SpkiSha256([1; 32]),
    });
    assert_eq!(
        mismatch(&extra, &document),
        vec![Difference::MissingFromDocument {
            selector: sel("tls2026b")
        }]
    );

    // A document key valid now that DNS does not list.
    assert_eq!(
        mismatch(&good[1..], &document),
        vec![Difference::MissingFromDns {
            selector: sel("tls2026a")
        }]
    );

    // Different usage, algorithm and material, all reported at once.
    let mut changed = good.clone();
    changed[0].usage = KeyUsage::Sig;
    changed[0].alg = KeyAlg::Ed25519;
    changed[0].material = DnsMaterial::SpkiSha256([8; 32]);
    assert_eq!(
        mismatch(&changed, &document),
        vec![
            Difference::Usage {
                selector: sel("tls2026a"),
                dns: KeyUsage::Sig,
                document: KeyUsage::Tls
            },
            Difference::Alg {
                selector: sel("tls2026a"),
                dns: KeyAlg::Ed25519,
                document: KeyAlg::P256
            },
            Difference::Material {
                selector: sel("tls2026a")
            },
        ]
    );

    // Revoked in DNS but still listed as valid.
    let mut revoked = good.clone();
    revoked[0].material = DnsMaterial::Revoked;
    let e = compare(&document, &revoked, now).expect_err("revoked");
    assert_eq!(
        e.differences,
        vec![Difference::RevokedButListed {
            selector: sel("tls2026a")
        }]
    );
    assert_eq!(e.reason(), "channel_mismatch");
    assert_eq!(
        e.to_string(),
        "key document and DNS disagree for server1.example.org: \
         tls2026a is revoked in DNS but valid in the document"
    );

    // Several kinds together.
    let mut many = vec![good[0].clone()];
    many[0].material = DnsMaterial::Revoked;
    many.push(extra[2].clone());
    let got = mismatch(&many, &document);
    assert_eq!(got.len(), 3, "{got:?}");
    assert!(got.contains(&Difference::MissingFromDns {
        selector: sel("sig2026a")
    }));
}

#[test]
fn compare_follows_validity_and_hashes() {
    let key = sig_key();
    let now = at(T0);
    let good = dns(&key);

    // A key that is no longer valid in the document may be revoked or
    // gone from DNS.
    let mut old = doc(&key);
    old.keys[0].exp = Some(T0 - 1);
    let mut revoked = good.clone();
    revoked[0].material = DnsMaterial::Revoked;
    assert_eq!(compare(&old, &revoked, now), Ok(()));
    assert_eq!(compare(&old, &good[1..], now), Ok(()));

    // A next key published in DNS early must still be in the document,
    // even before its nbf.
    let mut next = doc(&key);
    next.keys[0].nbf = Some(T0 + DAY);
    assert_eq!(compare(&next, &good, now), Ok(()));

    // k in one channel and h in the other name the same key when the
    // hash matches.
    let spki = SigningKey::generate("x").expect("k").spki_der().to_vec();
    let hash: [u8; 32] = Sha256::digest(&spki).into();
    let mut doc_k = doc(&key);
    doc_k.keys[0].material = KeyMaterial::Spki(spki.clone());
    let mut dns_h = good.clone();
    dns_h[0].material = DnsMaterial::SpkiSha256(hash);
    assert_eq!(compare(&doc_k, &dns_h, now), Ok(()));
    let mut doc_h = doc(&key);
    doc_h.keys[0].material = KeyMaterial::SpkiSha256(hash);
    let mut dns_k = good.clone();
    dns_k[0].material = DnsMaterial::Spki(spki);
    assert_eq!(compare(&doc_h, &dns_k, now), Ok(()));
    dns_k[0].material = DnsMaterial::Spki(key.spki_der().to_vec());
    assert!(compare(&doc_h, &dns_k, now).is_err());
}
