//! Tests for signing and verifying compact JWS: the round trip and each
//! refusal, one by one.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::*;

const TYP: &str = "mdgate-test+jwt";
const T0: i64 = 1_795_500_000;

fn at(secs: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs as u64)
}

fn now() -> SystemTime {
    at(T0)
}

fn key(selector: &str) -> SigningKey {
    SigningKey::generate(selector).expect("generate")
}

fn expect(skew: u64) -> Expect {
    Expect::typ(TYP, Duration::from_secs(skew))
}

/// Claims shaped like the grant tokens to come.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Grant {
    iss: String,
    sub: String,
    azp: String,
    scope: String,
    jti: String,
    cnf: Cnf,
    exp: i64,
    iat: i64,
    nbf: i64,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Cnf {
    #[serde(rename = "x5t#S256")]
    x5t_s256: String,
}

fn grant() -> Grant {
    Grant {
        iss: "server1.example.org".into(),
        sub: "patient@server1.example.org".into(),
        azp: "server2.example.org".into(),
        scope: "history:read".into(),
        jti: "4f1c".into(),
        cnf: Cnf {
            x5t_s256: "abc".into(),
        },
        exp: T0 + 600,
        iat: T0,
        nbf: T0,
    }
}

fn b64(json: &serde_json::Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(json).expect("json"))
}

/// A token with any header and payload text, signed by `key` (so that the
/// refusal tested is about the header or claims, not the signature).
fn forge_raw(header: &str, payload: &str, key: &SigningKey) -> String {
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(payload)
    );
    let sig = jsonwebtoken::crypto::sign(input.as_bytes(), key.encoding_key(), Algorithm::EdDSA)
        .expect("sign");
    format!("{input}.{sig}")
}

fn forge(header: serde_json::Value, payload: serde_json::Value, key: &SigningKey) -> String {
    forge_raw(&header.to_string(), &payload.to_string(), key)
}

fn good_header(kid: &str) -> serde_json::Value {
    json!({"alg": "EdDSA", "kid": kid, "typ": TYP})
}

fn check(
    token: &str,
    key: &SigningKey,
    expect: &Expect,
    now: SystemTime,
) -> Result<Grant, JwtError> {
    parse(token, expect)?
        .verify::<Grant>(key.verifying_key(), now)
        .map(|v| v.claims)
}

fn refusal(token: &str, key: &SigningKey) -> JwtError {
    check(token, key, &expect(60), now()).expect_err("must be refused")
}

#[test]
fn round_trip() {
    let k = key("sig2026a");
    let token = sign(&k, TYP, &grant()).expect("sign");
    let header: serde_json::Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(token.split('.').next().expect("header"))
            .expect("b64"),
    )
    .expect("json");
    assert_eq!(
        header,
        json!({"alg": "EdDSA", "kid": "sig2026a", "typ": TYP})
    );

    let e = expect(60);
    let unverified = parse(&token, &e).expect("parse");
    assert_eq!(unverified.kid(), "sig2026a");
    let peek: serde_json::Value = unverified.peek_unverified().expect("peek");
    assert_eq!(peek["iss"], "server1.example.org");
    let verified = unverified
        .verify::<Grant>(k.verifying_key(), now())
        .expect("verify");
    assert_eq!(verified.claims, grant());
    assert_eq!(verified.header.kid, "sig2026a");
    assert_eq!(verified.header.typ.as_deref(), Some(TYP));
    assert_eq!(
        verified.times,
        TimeClaims {
            exp: T0 + 600,
            nbf: Some(T0),
            iat: Some(T0)
        }
    );
    // A verifier that does not pin typ accepts it too.
    let any = Expect {
        typ: None,
        ..expect(60)
    };
    assert!(parse(&token, &any).is_ok());
}

#[test]
fn alg_none_is_refused() {
    let k = key("sig1");
    for alg in ["none", "None", "NONE"] {
        let header = json!({"alg": alg, "kid": "sig1", "typ": TYP});
        let unsigned = format!("{}.{}.", b64(&header), b64(&json!(grant())));
        assert_eq!(refusal(&unsigned, &k), JwtError::AlgNone, "{alg}");
        // Even with a (meaningless) signature attached.
        let signed = forge(header, json!(grant()), &k);
        assert_eq!(refusal(&signed, &k), JwtError::AlgNone, "{alg}");
    }
}

#[test]
fn hs256_with_the_public_key_as_secret_is_refused() {
    // The classic confusion: a verifier that takes alg from the token and
    // hands the public key to HMAC would accept this.
    let k = key("sig1");
    let mut header = jsonwebtoken::Header::new(Algorithm::HS256);
    header.kid = Some("sig1".into());
    header.typ = Some(TYP.into());
    for secret in [k.spki_der().to_vec(), k.spki_b64().into_bytes()] {
        let token = jsonwebtoken::encode(&header, &grant(), &EncodingKey::from_secret(&secret))
            .expect("hs");
        // Show that the forgery is "valid" under HMAC with the public key...
        let (input, sig) = token.rsplit_once('.').expect("dot");
        assert!(jsonwebtoken::crypto::verify(
            sig,
            input.as_bytes(),
            &DecodingKey::from_secret(&secret),
            Algorithm::HS256
        )
        .expect("hmac"));
        // ...and that we never get that far.
        assert_eq!(
            refusal(&token, &k),
            JwtError::AlgNotAllowed {
                alg: "HS256".into()
            }
        );
    }
}

#[test]
fn other_algorithms_are_refused() {
    let k = key("sig1");
    for alg in ["RS256", "ES256", "PS256", "HS512", "eddsa", "Ed25519", ""] {
        let token = forge(
            json!({"alg": alg, "kid": "sig1", "typ": TYP}),
            json!(grant()),
            &k,
        );
        assert_eq!(
            refusal(&token, &k),
            JwtError::AlgNotAllowed { alg: alg.into() },
            "{alg}"
        );
    }
    let no_alg = forge(json!({"kid": "sig1", "typ": TYP}), json!(grant()), &k);
    assert!(matches!(refusal(&no_alg, &k), JwtError::Header(_)));
}

#[test]
fn a_token_signed_by_another_key_is_refused() {
    // The token names sig-b (whose key the verifier fetches) but was
    // signed with sig-a's key.
    let a = key("sig-a");
    let b = key("sig-b");
    let token = forge(good_header("sig-b"), json!(grant()), &a);
    let e = expect(60);
    let unverified = parse(&token, &e).expect("header is fine");
    assert_eq!(unverified.kid(), "sig-b");
    assert_eq!(
        unverified
            .verify::<Grant>(b.verifying_key(), now())
            .expect_err("wrong key"),
        JwtError::BadSignature {
            kid: "sig-b".into()
        }
    );
    // Signature comes before time: an expired forgery is a bad signature.
    let mut old = grant();
    old.exp = T0 - 3600;
    let token = forge(good_header("sig-b"), json!(old), &a);
    assert!(matches!(refusal(&token, &b), JwtError::BadSignature { .. }));
}

#[test]
fn kid_is_required_and_must_be_a_selector() {
    let k = key("sig1");
    let token = forge(json!({"alg": "EdDSA", "typ": TYP}), json!(grant()), &k);
    assert_eq!(refusal(&token, &k), JwtError::MissingKid);
    for kid in ["", "../etc", "Sig1", "a.b", "-x"] {
        let token = forge(good_header(kid), json!(grant()), &k);
        assert_eq!(
            refusal(&token, &k),
            JwtError::InvalidKid { kid: kid.into() },
            "{kid}"
        );
    }
    let numeric = forge(
        json!({"alg": "EdDSA", "kid": 7, "typ": TYP}),
        json!(grant()),
        &k,
    );
    assert!(matches!(refusal(&numeric, &k), JwtError::Header(_)));
}

#[test]
fn typ_is_checked_when_asked() {
    let k = key("sig1");
    let wrong = sign(&k, "mdgate-keys+jwt", &grant()).expect("sign");
    assert_eq!(
        refusal(&wrong, &k),
        JwtError::WrongTyp {
            expected: TYP,
            found: Some("mdgate-keys+jwt".into())
        }
    );
    let missing = forge(json!({"alg": "EdDSA", "kid": "sig1"}), json!(grant()), &k);
    assert_eq!(
        refusal(&missing, &k),
        JwtError::WrongTyp {
            expected: TYP,
            found: None
        }
    );
    // RFC 7515 §4.1.9 equivalents are accepted.
    for typ in ["application/mdgate-test+jwt", "MDGATE-TEST+JWT"] {
        let token = sign(&k, typ, &grant()).expect("sign");
        assert!(check(&token, &k, &expect(60), now()).is_ok(), "{typ}");
    }
}

#[test]
fn expired_reports_the_skew() {
    let k = key("sig1");
    let mut g = grant();
    g.exp = T0 - 95;
    let token = sign(&k, TYP, &g).expect("sign");
    let e = check(&token, &k, &expect(30), now()).expect_err("expired");
    assert_eq!(
        e,
        JwtError::Expired {
            ago: 95,
            tolerance: 30
        }
    );
    assert_eq!(
        e.to_string(),
        "token expired: exp was 95 s ago by this server's clock (tolerance 30 s)"
    );
    assert_eq!(e.reason(), "token_expired");
    assert_eq!(e.observed_offset(), Some(-95));
    // Within the tolerance it is still good; at exp + tolerance it is not.
    assert!(check(&token, &k, &expect(96), now()).is_ok());
    assert!(check(&token, &k, &expect(95), now()).is_err());
    // With no tolerance, exp itself is too late (RFC 7519 §4.1.4).
    g.exp = T0;
    g.iat = T0 - 10;
    g.nbf = T0 - 10;
    let token = sign(&k, TYP, &g).expect("sign");
    assert!(check(&token, &k, &expect(0), now()).is_err());
    assert!(check(&token, &k, &expect(0), at(T0 - 1)).is_ok());
}

#[test]
fn not_yet_valid_reports_the_skew() {
    let k = key("sig1");
    let mut g = grant();
    g.nbf = T0 + 95;
    let token = sign(&k, TYP, &g).expect("sign");
    let e = check(&token, &k, &expect(30), now()).expect_err("nbf");
    assert_eq!(
        e.to_string(),
        "token not yet valid: nbf is 95 s ahead of this server's clock (tolerance 30 s)"
    );
    assert_eq!(e.reason(), "token_not_yet_valid");
    assert_eq!(e.observed_offset(), Some(95));
    assert!(check(&token, &k, &expect(95), now()).is_ok());

    let mut g = grant();
    g.iat = T0 + 120;
    let token = sign(&k, TYP, &g).expect("sign");
    assert_eq!(
        check(&token, &k, &expect(30), now()).expect_err("iat"),
        JwtError::IssuedInFuture {
            ahead: 120,
            tolerance: 30
        }
    );
}

#[test]
fn exp_is_required_and_times_are_integers() {
    let k = key("sig1");
    let token = forge(good_header("sig1"), json!({"sub": "x"}), &k);
    assert_eq!(refusal(&token, &k), JwtError::MissingExp);
    let token = forge(good_header("sig1"), json!({"exp": null}), &k);
    assert_eq!(refusal(&token, &k), JwtError::MissingExp);
    for exp in [json!(1.5e9), json!("1795500600"), json!(u64::MAX)] {
        let token = forge(good_header("sig1"), json!({ "exp": exp }), &k);
        assert!(matches!(refusal(&token, &k), JwtError::Payload(_)), "{exp}");
    }
    let token = forge_raw(&good_header("sig1").to_string(), "[1,2]", &k);
    assert!(matches!(refusal(&token, &k), JwtError::Payload(_)));
    // Signing without exp is refused too.
    assert!(matches!(
        sign(&k, TYP, &json!({"sub": "x"})),
        Err(SignError::MissingExp)
    ));
    assert!(matches!(
        sign(&k, TYP, &json!([1])),
        Err(SignError::NotAnObject)
    ));
    assert!(matches!(sign(&k, "", &grant()), Err(SignError::BadTyp)));
}

#[test]
fn lifetime_limit() {
    let k = key("sig1");
    let limited = Expect {
        max_lifetime: Some(Duration::from_secs(300)),
        ..expect(60)
    };
    let token = sign(&k, TYP, &grant()).expect("sign");
    assert_eq!(
        check(&token, &k, &limited, now()).expect_err("too long"),
        JwtError::LifetimeTooLong {
            lifetime: 600,
            max: 300
        }
    );
    let token = forge(good_header("sig1"), json!({"exp": T0 + 60}), &k);
    let e = parse(&token, &limited)
        .expect("parse")
        .verify::<serde_json::Value>(k.verifying_key(), now())
        .expect_err("no iat");
    assert_eq!(e, JwtError::MissingIat);
}

#[test]
fn tampered_payload_is_refused() {
    let k = key("sig1");
    let token = sign(&k, TYP, &grant()).expect("sign");
    let parts: Vec<&str> = token.split('.').collect();
    let mut g = grant();
    g.scope = "history:write".into();
    let tampered = format!("{}.{}.{}", parts[0], b64(&json!(g)), parts[2]);
    assert_eq!(
        refusal(&tampered, &k),
        JwtError::BadSignature { kid: "sig1".into() }
    );
}

#[test]
fn tampered_signature_is_refused() {
    let k = key("sig1");
    let token = sign(&k, TYP, &grant()).expect("sign");
    let (input, sig) = token.rsplit_once('.').expect("dot");
    // Change a character in the middle (the last one also carries padding
    // bits, which would make it a base64 error instead).
    let mut sig = sig.to_owned().into_bytes();
    sig[10] = if sig[10] == b'A' { b'B' } else { b'A' };
    let tampered = format!("{input}.{}", String::from_utf8(sig).expect("ascii"));
    assert_eq!(
        refusal(&tampered, &k),
        JwtError::BadSignature { kid: "sig1".into() }
    );
    // A header changed after signing (same kid, other typ) fails too.
    let other = URL_SAFE_NO_PAD
        .encode(json!({"alg": "EdDSA", "kid": "sig1", "typ": TYP, "x": 1}).to_string());
    let (_, rest) = token.split_once('.').expect("dot");
    assert!(matches!(
        refusal(&format!("{other}.{rest}"), &k),
        JwtError::BadSignature { .. }
    ));
}

#[test]
fn structure_is_checked() {
    let k = key("sig1");
    let token = sign(&k, TYP, &grant()).expect("sign");
    let (header, rest) = token.split_once('.').expect("dot");
    let (payload, signature) = rest.split_once('.').expect("dot");
    let malformed = [
        String::new(),
        header.to_owned(),
        format!("{header}.{payload}"),
        format!("{header}{payload}{signature}"),
        format!("{token}.{signature}"),
        format!(".{payload}.{signature}"),
        format!("{header}..{signature}"),
        format!("{header}.{payload}="),
        format!("{header}.{payload}.{signature}=="),
        format!("{header}.{payload}.{}", &signature[..40]),
        format!("{header}.{payload}+.{signature}"),
        format!("{header}=.{payload}.{signature}"),
    ];
    for bad in &malformed {
        let e = refusal(bad, &k);
        assert!(matches!(e, JwtError::Malformed(_)), "{bad:?}: {e:?}");
        assert_eq!(e.reason(), "token_malformed");
    }
    let huge = format!("{header}.{}.{signature}", "A".repeat(MAX_TOKEN_BYTES));
    assert_eq!(refusal(&huge, &k), JwtError::TooLarge);
    let not_json = format!("{}.{payload}.{signature}", URL_SAFE_NO_PAD.encode("{"));
    assert!(matches!(refusal(&not_json, &k), JwtError::Header(_)));
}

#[test]
fn crit_and_embedded_keys_are_refused() {
    let k = key("sig1");
    let crit = forge(
        json!({"alg": "EdDSA", "kid": "sig1", "typ": TYP, "crit": ["b64"], "b64": false}),
        json!(grant()),
        &k,
    );
    assert_eq!(refusal(&crit, &k), JwtError::Crit);
    for param in ["jwk", "jku", "x5u", "x5c"] {
        let mut header = good_header("sig1");
        header[param] = json!("https://attacker.example/key");
        let token = forge(header, json!(grant()), &k);
        assert_eq!(
            refusal(&token, &k),
            JwtError::EmbeddedKey { param },
            "{param}"
        );
    }
    // Unknown, harmless header parameters are ignored.
    let mut header = good_header("sig1");
    header["cty"] = json!("JWT");
    assert!(check(&forge(header, json!(grant()), &k), &k, &expect(60), now()).is_ok());
}

#[test]
fn duplicate_names_are_refused() {
    let k = key("sig1");
    let header = format!(r#"{{"alg":"EdDSA","kid":"sig1","typ":"{TYP}","alg":"none"}}"#);
    let token = forge_raw(&header, &json!(grant()).to_string(), &k);
    assert!(matches!(refusal(&token, &k), JwtError::Header(_)));

    let payload = format!(r#"{{"exp":{},"exp":{}}}"#, T0 - 1000, T0 + 1000);
    let token = forge_raw(&good_header("sig1").to_string(), &payload, &k);
    assert!(matches!(refusal(&token, &k), JwtError::Payload(_)));
}

#[test]
fn claims_of_the_wrong_shape() {
    let k = key("sig1");
    let token = forge(good_header("sig1"), json!({"exp": T0 + 60, "iss": 5}), &k);
    let e = refusal(&token, &k);
    assert!(matches!(e, JwtError::Claims(_)), "{e:?}");
    assert_eq!(e.reason(), "claims_invalid");
}
