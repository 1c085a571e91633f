//! Grant tokens: the round trip, each refusal with its reason, the bearer
//! header rules, and the verification cache.

use std::sync::LazyLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use http::header::AUTHORIZATION;
use http::{HeaderMap, HeaderValue};
use jsonwebtoken::Algorithm;
use proptest::prelude::*;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::*;

const T0: i64 = 1_795_500_000;
const ISSUER: &str = "server1.example.org";
const CLIENT: &str = "server2.example.org";
const CERT: [u8; 32] = [7; 32];
const OTHER_CERT: [u8; 32] = [8; 32];
const SKEW: Duration = Duration::from_secs(60);

fn at(secs: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs as u64)
}

fn now() -> SystemTime {
    at(T0)
}

fn key(selector: &str) -> SigningKey {
    let seed = Sha256::digest(selector.as_bytes()).into();
    SigningKey::from_seed(selector, &seed).expect("key")
}

fn claims() -> GrantClaims {
    GrantClaims {
        issuer: ISSUER.into(),
        patient: Uuid::parse_str("0b8f1d3e-5a57-4a39-9d3b-1f0c1a2b3c4d").expect("uuid"),
        client: CLIENT.into(),
        actor: format!("drhouse@{CLIENT}"),
        role: Role::Viewer,
        not_before: T0 - 10,
        expires_at: T0 + 3600,
        issued_at: T0 - 10,
        id: Uuid::parse_str("6f9a0c1e-2b3d-4e5f-8a9b-0c1d2e3f4a5b").expect("uuid"),
        cert_sha256: CERT,
    }
}

fn token(k: &SigningKey) -> String {
    issue(k, &claims()).expect("issue")
}

fn wire() -> Value {
    serde_json::to_value(claims()).expect("json")
}

/// Any header and payload, validly signed by `k`.
fn forge(header: &Value, payload: &Value, k: &SigningKey) -> String {
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(payload.to_string())
    );
    let sig = jsonwebtoken::crypto::sign(input.as_bytes(), k.encoding_key(), Algorithm::EdDSA)
        .expect("sign");
    format!("{input}.{sig}")
}

fn header(kid: &str) -> Value {
    json!({"alg": "EdDSA", "kid": kid, "typ": GRANT_TYP})
}

/// The payload with one change, signed properly.
fn forge_claims(k: &SigningKey, change: impl FnOnce(&mut Value)) -> String {
    let mut payload = wire();
    change(&mut payload);
    forge(&header(k.selector()), &payload, k)
}

fn refusal(token: &str, k: &SigningKey) -> GrantError {
    verify_grant(token, k.verifying_key(), ISSUER, now(), SKEW).expect_err("must be refused")
}

fn headers(values: &[&str]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for v in values {
        map.append(AUTHORIZATION, HeaderValue::from_str(v).expect("value"));
    }
    map
}

fn verifier(k: &SigningKey) -> GrantVerifier {
    GrantVerifier::with_selectors(
        ISSUER,
        vec![(k.selector().to_owned(), k.verifying_key().clone())],
        SKEW,
        1000,
    )
}

#[test]
fn round_trip() {
    let k = key("sig2026a");
    let t = token(&k);
    let segments: Vec<&str> = t.split('.').collect();
    let decode = |s: &str| -> Value {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(s).expect("b64")).expect("json")
    };
    assert_eq!(
        decode(segments[0]),
        json!({"alg": "EdDSA", "kid": "sig2026a", "typ": "mdgate-grant+jwt"})
    );
    // The wire names, exactly (docs/protocol.md § Grant tokens).
    assert_eq!(
        decode(segments[1]),
        json!({
            "iss": ISSUER,
            "sub": "0b8f1d3e-5a57-4a39-9d3b-1f0c1a2b3c4d",
            "aud": ISSUER,
            "azp": CLIENT,
            "act": {"sub": "drhouse@server2.example.org"},
            "scope": "viewer",
            "exp": T0 + 3600,
            "nbf": T0 - 10,
            "iat": T0 - 10,
            "jti": "6f9a0c1e-2b3d-4e5f-8a9b-0c1d2e3f4a5b",
            "cnf": {"x5t#S256": URL_SAFE_NO_PAD.encode(CERT)},
        })
    );
    let got = verify_grant(&t, k.verifying_key(), ISSUER, now(), SKEW).expect("verify");
    assert_eq!(got, claims());
    let delivered = verify_delivered(&t, k.verifying_key(), ISSUER, CLIENT, &CERT, now(), SKEW)
        .expect("delivered");
    assert_eq!(delivered, claims());
    // Contributor round-trips too.
    let c = GrantClaims {
        role: Role::Contributor,
        ..claims()
    };
    let t = issue(&k, &c).expect("issue");
    assert_eq!(
        verify_grant(&t, k.verifying_key(), ISSUER, now(), SKEW).expect("verify"),
        c
    );
}

#[test]
fn wrong_alg_is_refused() {
    let k = key("sig1");
    for (alg, reason) in [
        ("HS256", "alg_not_allowed"),
        ("ES256", "alg_not_allowed"),
        ("none", "alg_none"),
    ] {
        let t = forge(
            &json!({"alg": alg, "kid": "sig1", "typ": GRANT_TYP}),
            &wire(),
            &k,
        );
        assert_eq!(refusal(&t, &k).reason(), reason, "{alg}");
    }
}

#[test]
fn wrong_typ_is_refused() {
    let k = key("sig1");
    // A key document or any other object signed by the same key is not a
    // grant.
    let t = jws::sign(&k, "mdgate-keys+jwt", &claims()).expect("sign");
    assert_eq!(refusal(&t, &k).reason(), "typ_mismatch");
    let t = forge(&json!({"alg": "EdDSA", "kid": "sig1"}), &wire(), &k);
    assert_eq!(refusal(&t, &k).reason(), "typ_mismatch");
}

#[test]
fn missing_exp_is_refused() {
    let k = key("sig1");
    let t = forge_claims(&k, |p| {
        p.as_object_mut().expect("object").remove("exp");
    });
    assert_eq!(refusal(&t, &k).reason(), "exp_missing");
    // nbf and iat are required by the grant profile too.
    for member in ["nbf", "iat"] {
        let t = forge_claims(&k, |p| {
            p.as_object_mut().expect("object").remove(member);
        });
        assert_eq!(refusal(&t, &k).reason(), "claims_invalid", "{member}");
    }
}

#[test]
fn expired_reports_the_observed_skew() {
    let k = key("sig1");
    let t = token(&k);
    let exp = claims().expires_at;
    let e = verify_grant(
        &t,
        k.verifying_key(),
        ISSUER,
        at(exp + 95),
        Duration::from_secs(30),
    )
    .expect_err("expired");
    assert_eq!(e.reason(), "token_expired");
    assert_eq!(e.observed_skew(), Some(-95));
    assert!(e.to_string().contains("95 s ago"), "{e}");
    // Within the tolerance it is still accepted.
    assert!(verify_grant(
        &t,
        k.verifying_key(),
        ISSUER,
        at(exp + 29),
        Duration::from_secs(30)
    )
    .is_ok());
}

#[test]
fn not_yet_valid_reports_the_observed_skew() {
    let k = key("sig1");
    let t = issue(
        &k,
        &GrantClaims {
            not_before: T0 + 95,
            issued_at: T0,
            ..claims()
        },
    )
    .expect("issue");
    let e = verify_grant(
        &t,
        k.verifying_key(),
        ISSUER,
        now(),
        Duration::from_secs(30),
    )
    .expect_err("early");
    assert_eq!(e.reason(), "token_not_yet_valid");
    assert_eq!(e.observed_skew(), Some(95));
}

#[test]
fn wrong_issuer_or_audience_is_refused() {
    let k = key("sig1");
    let t = token(&k);
    let e = verify_grant(&t, k.verifying_key(), "server9.example.org", now(), SKEW)
        .expect_err("issuer");
    assert_eq!(e.reason(), "wrong_issuer");
    assert_eq!(e.observed_skew(), None);
    // A token for another server's listener, even signed by our key.
    let t = forge_claims(&k, |p| p["aud"] = json!(CLIENT));
    assert_eq!(refusal(&t, &k).reason(), "wrong_audience");
    // aud as an array is not the profile.
    let t = forge_claims(&k, |p| p["aud"] = json!([ISSUER]));
    assert_eq!(refusal(&t, &k).reason(), "claims_invalid");
}

#[test]
fn wrong_key_or_kid_is_refused() {
    let k = key("sig1");
    let other = key("sig2");
    let t = token(&k);
    assert_eq!(refusal(&t, &other).reason(), "bad_signature");
    // The verifier with selectors refuses a kid it does not hold before any
    // signature arithmetic.
    let v = verifier(&other);
    let e = v.check(&t, &CERT, now()).expect_err("unknown kid");
    assert_eq!(e, GrantError::UnknownKey { kid: "sig1".into() });
    assert_eq!(e.reason(), "unknown_kid");
    assert_eq!(v.verifications(), 0);
    // A token naming our selector but signed by another key.
    let forged = forge(&header("sig2"), &wire(), &k);
    let e = v.check(&forged, &CERT, now()).expect_err("bad signature");
    assert_eq!(e.reason(), "bad_signature");
    // Bad kid syntax is the JWS layer's refusal.
    let t = forge(&header("Sig/1"), &wire(), &k);
    assert_eq!(refusal(&t, &k).reason(), "kid_invalid");
}

#[test]
fn tampered_payload_is_refused() {
    let k = key("sig1");
    let t = token(&k);
    let mut payload = wire();
    payload["scope"] = json!("contributor");
    let mut parts: Vec<String> = t.split('.').map(str::to_owned).collect();
    parts[1] = URL_SAFE_NO_PAD.encode(payload.to_string());
    let tampered = parts.join(".");
    assert_eq!(refusal(&tampered, &k).reason(), "bad_signature");
}

#[test]
fn claims_are_strict() {
    let k = key("sig1");
    type Change = Box<dyn FnOnce(&mut Value)>;
    let cases: Vec<(&str, Change)> = vec![
        ("unknown member", Box::new(|p| p["extra"] = json!(1))),
        (
            "unknown act member",
            Box::new(|p| p["act"]["iss"] = json!("x")),
        ),
        (
            "unknown cnf member",
            Box::new(|p| p["cnf"]["jkt"] = json!("x")),
        ),
        (
            "upper-case sub",
            Box::new(|p| p["sub"] = json!("0B8F1D3E-5A57-4A39-9D3B-1F0C1A2B3C4D")),
        ),
        (
            "simple jti",
            Box::new(|p| p["jti"] = json!("6f9a0c1e2b3d4e5f8a9b0c1d2e3f4a5b")),
        ),
        ("unknown role", Box::new(|p| p["scope"] = json!("admin"))),
        (
            "role list",
            Box::new(|p| p["scope"] = json!("viewer contributor")),
        ),
        (
            "actor of another server",
            Box::new(|p| p["act"]["sub"] = json!("drhouse@server3.example.org")),
        ),
        (
            "actor without user",
            Box::new(|p| p["act"]["sub"] = json!("@server2.example.org")),
        ),
        (
            "short cnf",
            Box::new(|p| p["cnf"]["x5t#S256"] = json!("AAAA")),
        ),
        (
            "padded cnf",
            Box::new(|p| {
                p["cnf"]["x5t#S256"] = json!(format!("{}=", URL_SAFE_NO_PAD.encode(CERT)))
            }),
        ),
        ("exp not after nbf", Box::new(|p| p["exp"] = json!(T0 - 10))),
        (
            "float exp",
            Box::new(|p| p["exp"] = json!((T0 + 3600) as f64)),
        ),
    ];
    for (what, change) in cases {
        let t = forge_claims(&k, change);
        let e = refusal(&t, &k);
        assert_eq!(e.reason(), "claims_invalid", "{what}: {e}");
    }
    // A duplicate member (two parsers could read different values).
    let text = wire()
        .to_string()
        .replacen('{', r#"{"scope":"contributor","#, 1);
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header("sig1").to_string()),
        URL_SAFE_NO_PAD.encode(text)
    );
    let sig = jsonwebtoken::crypto::sign(input.as_bytes(), k.encoding_key(), Algorithm::EdDSA)
        .expect("sign");
    assert_eq!(
        refusal(&format!("{input}.{sig}"), &k).reason(),
        "claims_invalid"
    );
}

#[test]
fn delivered_token_must_name_us_and_our_certificate() {
    let k = key("sig1");
    let t = token(&k);
    let e = verify_delivered(
        &t,
        k.verifying_key(),
        ISSUER,
        CLIENT,
        &OTHER_CERT,
        now(),
        SKEW,
    )
    .expect_err("cert");
    assert_eq!(e, GrantError::WrongCertificate);
    assert_eq!(e.reason(), "wrong_certificate");
    let e = verify_delivered(
        &t,
        k.verifying_key(),
        ISSUER,
        "server3.example.org",
        &CERT,
        now(),
        SKEW,
    )
    .expect_err("client");
    assert_eq!(e.reason(), "wrong_client");
    let e = verify_delivered(&t, k.verifying_key(), CLIENT, CLIENT, &CERT, now(), SKEW)
        .expect_err("issuer");
    assert_eq!(e.reason(), "wrong_issuer");
}

#[test]
fn oversized_tokens_are_refused() {
    let k = key("sig1");
    let big = "a".repeat(MAX_GRANT_BYTES + 1);
    assert_eq!(refusal(&big, &k), GrantError::TooLarge);
    assert_eq!(
        verifier(&k).check(&big, &CERT, now()).expect_err("big"),
        GrantError::TooLarge
    );
}

#[test]
fn bearer_takes_exactly_one_token() {
    assert_eq!(bearer(&HeaderMap::new()), Ok(None));
    assert_eq!(
        bearer(&headers(&["Bearer abc.def-_.x"])),
        Ok(Some("abc.def-_.x"))
    );
    // Case-insensitive scheme, extra spaces tolerated, padding allowed.
    assert_eq!(bearer(&headers(&["bearer abc"])), Ok(Some("abc")));
    assert_eq!(bearer(&headers(&["BEARER   abc=="])), Ok(Some("abc==")));

    let e = bearer(&headers(&["Bearer a", "Bearer b"])).expect_err("two headers");
    assert_eq!(e, GrantError::SeveralTokens);
    assert_eq!(e.reason(), "several_tokens");
    // Even when the second is of another scheme.
    assert_eq!(
        bearer(&headers(&["Bearer a", "Basic dXNlcjpwYXNz"])),
        Err(GrantError::SeveralTokens)
    );
    // Two headers folded into one by an intermediary.
    assert_eq!(
        bearer(&headers(&["Bearer a, Bearer b"])),
        Err(GrantError::SeveralTokens)
    );

    let e = bearer(&headers(&["Basic dXNlcjpwYXNz"])).expect_err("basic");
    assert_eq!(e, GrantError::NotBearer);
    assert_eq!(e.reason(), "authorization_not_bearer");
    assert_eq!(bearer(&headers(&["Bearerabc"])), Err(GrantError::NotBearer));

    for bad in [
        "Bearer",
        "Bearer ",
        "Bearer a b",
        "Bearer ===",
        "Bearer a\"b",
    ] {
        let e = bearer(&headers(&[bad])).expect_err(bad);
        assert_eq!(e.reason(), "authorization_malformed", "{bad:?}");
    }
    let mut map = HeaderMap::new();
    map.insert(
        AUTHORIZATION,
        HeaderValue::from_bytes(b"Bearer \xff").expect("obs-text"),
    );
    assert_eq!(
        bearer(&map).expect_err("non-ascii").reason(),
        "authorization_malformed"
    );
}

#[test]
fn bearer_accepts_exactly_the_b64token_characters() {
    // RFC 6750 §2.1, checked byte by byte: ALPHA / DIGIT / "-" / "." / "_"
    // / "~" / "+" / "/" anywhere, "=" only at the end; every other byte a
    // header value can hold is refused.
    for b in (0x21u8..=0x7e).chain(0x80..=0xff) {
        let allowed = b.is_ascii_alphanumeric() || b"-._~+/".contains(&b);
        let mut value = b"Bearer a".to_vec();
        value.push(b);
        value.push(b'a');
        let mut map = HeaderMap::new();
        map.insert(
            AUTHORIZATION,
            HeaderValue::from_bytes(&value).expect("a header value"),
        );
        match bearer(&map) {
            Ok(Some(token)) => assert!(allowed, "byte {b:#04x} accepted in {token:?}"),
            Ok(None) => panic!("byte {b:#04x}: no token seen"),
            Err(e) => {
                assert!(!allowed, "byte {b:#04x} refused: {e:?}");
                let reason = e.reason();
                assert!(
                    reason == "authorization_malformed" || reason == "several_tokens",
                    "byte {b:#04x}: {reason}"
                );
            }
        }
    }
    // The same in a long token, where bytes are checked 32 at a time: the
    // byte first in a block, inside one, last in one, and in the tail.
    let long = "a".repeat(100);
    for at in [0, 13, 31, 32, 63, 64, 95, 97, 99] {
        for b in (0x21u8..=0x7e).chain(0x80..=0xff) {
            let allowed = b.is_ascii_alphanumeric() || b"-._~+/".contains(&b);
            let mut token = long.clone().into_bytes();
            token[at] = b;
            let mut value = b"Bearer ".to_vec();
            value.extend_from_slice(&token);
            let mut map = HeaderMap::new();
            map.insert(
                AUTHORIZATION,
                HeaderValue::from_bytes(&value).expect("a header value"),
            );
            let got = bearer(&map);
            // "=" is allowed as the token's last bytes only.
            let ok = allowed || (b == b'=' && at == token.len() - 1);
            assert_eq!(
                got.is_ok(),
                ok,
                "byte {b:#04x} at {at}: {:?}",
                got.map_err(|e| e.reason())
            );
            if let Ok(t) = got {
                assert_eq!(t.map(str::as_bytes), Some(&token[..]));
            }
        }
    }
    // "=" is padding: at the end only.
    assert_eq!(bearer(&headers(&["Bearer ab=="])), Ok(Some("ab==")));
    assert_eq!(
        bearer(&headers(&["Bearer a=b"])).map_err(|e| e.reason()),
        Err("authorization_malformed")
    );
}

#[test]
fn bearer_takes_the_header_values_that_to_str_takes() {
    // The visible-ASCII check runs 32 bytes at a time; it must agree with
    // `HeaderValue::to_str` for every byte a header value can hold, in a
    // block and in the tail. A value `to_str` refuses is malformed.
    let tail = "b".repeat(80);
    for at in [10, 39, 40, 71, 85] {
        for b in (0x09u8..=0x09).chain(0x20..=0x7e).chain(0x80..=0xff) {
            let mut value = format!("Bearer {tail}").into_bytes();
            value[at] = b;
            let header = HeaderValue::from_bytes(&value).expect("a header value");
            let visible = header.to_str().is_ok();
            let mut map = HeaderMap::new();
            map.insert(AUTHORIZATION, header);
            match bearer(&map) {
                Err(GrantError::MalformedAuthorization(why)) => {
                    assert_eq!(
                        why == "not visible ASCII",
                        !visible,
                        "byte {b:#04x} at {at}"
                    )
                }
                other => assert!(visible, "byte {b:#04x} at {at}: {other:?}"),
            }
        }
    }
}

#[test]
fn cache_verifies_each_token_once() {
    let k = key("sig1");
    let v = verifier(&k);
    let t = token(&k);
    let first = v.check(&t, &CERT, now()).expect("first");
    assert_eq!(v.verifications(), 1);
    let second = v.check(&t, &CERT, at(T0 + 100)).expect("second");
    assert_eq!(v.verifications(), 1, "a hit must not verify again");
    assert!(Arc::ptr_eq(&first, &second));
    assert_eq!(*second, claims());

    // A stolen token on another connection, from the cache.
    let e = v.check(&t, &OTHER_CERT, now()).expect_err("stolen");
    assert_eq!(e, GrantError::WrongCertificate);
    assert_eq!(v.verifications(), 1);

    // Times are re-checked on a hit: expired, with the skew reported.
    let exp = claims().expires_at;
    let e = v.check(&t, &CERT, at(exp + 60)).expect_err("expired");
    assert_eq!(e.reason(), "token_expired");
    assert_eq!(e.observed_skew(), Some(-60));
    assert!(v.check(&t, &CERT, at(exp + 59)).is_ok());
    // And a clock set back before nbf.
    let e = v.check(&t, &CERT, at(T0 - 200)).expect_err("early");
    assert_eq!(e.reason(), "token_not_yet_valid");
    assert_eq!(e.observed_skew(), Some(190));
    assert_eq!(v.verifications(), 1);

    // Another token is verified on its own.
    let t2 = issue(
        &k,
        &GrantClaims {
            id: Uuid::from_u128(2),
            ..claims()
        },
    )
    .expect("issue");
    v.check(&t2, &CERT, now()).expect("t2");
    assert_eq!(v.verifications(), 2);
}

#[test]
fn a_forgery_with_a_cached_signature_is_not_a_hit() {
    let k = key("sig1");
    let v = verifier(&k);
    let t = token(&k);
    v.check(&t, &CERT, now()).expect("genuine");
    assert_eq!(v.verifications(), 1);
    // Same signature (hence same cache key), other claims.
    let signature = t.rsplit('.').next().expect("signature");
    let mut payload = wire();
    payload["scope"] = json!("contributor");
    let forged = format!(
        "{}.{}.{signature}",
        URL_SAFE_NO_PAD.encode(header("sig1").to_string()),
        URL_SAFE_NO_PAD.encode(payload.to_string())
    );
    let e = v.check(&forged, &CERT, now()).expect_err("forged");
    assert_eq!(e.reason(), "bad_signature");
    assert_eq!(v.verifications(), 2, "a forgery is verified, not served");
    // The genuine token is still cached.
    assert_eq!(
        v.check(&t, &CERT, now()).expect("genuine").role,
        Role::Viewer
    );
    assert_eq!(v.verifications(), 2);
    // A token shorter than a key is simply verified (and refused).
    assert!(v.check("a.b.c", &CERT, now()).is_err());
}

#[test]
fn failures_are_not_cached() {
    let k = key("sig1");
    let v = verifier(&k);
    let t = token(&k);
    let early = at(claims().not_before - 120);
    assert!(v.check(&t, &CERT, early).is_err());
    assert!(v.check(&t, &CERT, now()).is_ok());
    assert_eq!(v.verifications(), 2);
}

#[test]
fn cache_entries_do_not_outlive_exp() {
    let k = key("sig1");
    let v = verifier(&k);
    // Accepted within the skew after exp: verified, but not kept.
    let t = token(&k);
    let exp = claims().expires_at;
    v.check(&t, &CERT, at(exp + 10)).expect("within skew");
    v.check(&t, &CERT, at(exp + 10)).expect("within skew");
    assert_eq!(v.verifications(), 2);

    // A token with one second left leaves the cache after a second, by the
    // cache's own clock.
    let v = verifier(&k);
    let short = issue(
        &k,
        &GrantClaims {
            expires_at: T0 + 1,
            ..claims()
        },
    )
    .expect("issue");
    v.check(&short, &CERT, now()).expect("fresh");
    v.check(&short, &CERT, now()).expect("cached");
    assert_eq!(v.verifications(), 1);
    std::thread::sleep(Duration::from_millis(1200));
    v.check(&short, &CERT, now()).expect("verified again");
    assert_eq!(v.verifications(), 2);
}

#[test]
fn keys_without_selectors_are_tried_in_turn() {
    let k = key("sig1");
    let previous = key("sig0");
    let v = GrantVerifier::new(
        ISSUER,
        vec![previous.verifying_key().clone(), k.verifying_key().clone()],
        SKEW,
        100,
    );
    let t = token(&k);
    v.check(&t, &CERT, now()).expect("second key");
    assert_eq!(v.verifications(), 2);
    v.check(&t, &CERT, now()).expect("cached");
    assert_eq!(v.verifications(), 2);
    let stranger = key("sig9");
    let e = v
        .check(&token(&stranger), &CERT, now())
        .expect_err("no key");
    assert_eq!(e.reason(), "bad_signature");
    let empty = GrantVerifier::new(ISSUER, Vec::new(), SKEW, 100);
    assert_eq!(
        empty.check(&t, &CERT, now()).expect_err("none").reason(),
        "unknown_kid"
    );
}

#[test]
fn next_and_previous_keys_verify_by_kid() {
    let current = key("sig2026b");
    let previous = key("sig2026a");
    let next = key("sig2027a");
    let v = GrantVerifier::with_selectors(
        ISSUER,
        [&current, &next, &previous]
            .into_iter()
            .map(|k| (k.selector().to_owned(), k.verifying_key().clone()))
            .collect(),
        SKEW,
        100,
    );
    for k in [&current, &next, &previous] {
        assert!(v.check(&token(k), &CERT, now()).is_ok(), "{}", k.selector());
    }
    assert_eq!(v.verifications(), 3, "one verification per token, by kid");
}

#[test]
fn claims_serde_uses_the_wire_names() {
    let value = serde_json::to_value(claims()).expect("json");
    assert_eq!(value["azp"], CLIENT);
    assert_eq!(value["cnf"]["x5t#S256"], URL_SAFE_NO_PAD.encode(CERT));
    let back: GrantClaims = serde_json::from_value(value).expect("back");
    assert_eq!(back, claims());
}

/// The key and token the property tests share (signing per case would
/// dominate their run time).
static SIG1: LazyLock<(SigningKey, String)> = LazyLock::new(|| {
    let k = key("sig1");
    let t = token(&k);
    (k, t)
});

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..1024)) {
        let k = &SIG1.0;
        let text = String::from_utf8_lossy(&bytes);
        prop_assert!(verify_grant(&text, k.verifying_key(), ISSUER, now(), SKEW).is_err());
        let v = verifier(k);
        prop_assert!(v.check(&text, &CERT, now()).is_err());
        if let Ok(value) = HeaderValue::from_bytes(&bytes) {
            let mut map = HeaderMap::new();
            map.insert(AUTHORIZATION, value);
            let _ = bearer(&map);
        }
    }

    #[test]
    fn random_dotted_segments_never_panic(
        segments in proptest::collection::vec("[A-Za-z0-9_=+/-]{0,120}", 0..5)
    ) {
        let k = &SIG1.0;
        let text = segments.join(".");
        prop_assert!(verify_grant(&text, k.verifying_key(), ISSUER, now(), SKEW).is_err());
    }

    #[test]
    fn any_one_character_change_is_refused(pos in 0usize..2000, c in "[A-Za-z0-9_.=-]") {
        let (k, good) = &*SIG1;
        let pos = pos % good.len();
        let mut changed = good.clone();
        changed.replace_range(pos..pos + 1, &c);
        prop_assume!(&changed != good);
        prop_assert!(verify_grant(&changed, k.verifying_key(), ISSUER, now(), SKEW).is_err());
        prop_assert!(verifier(k).check(&changed, &CERT, now()).is_err());
    }
}
