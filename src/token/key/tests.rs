//! Tests for loading, generating and encoding Ed25519 keys.

use super::*;

#[test]
fn selectors() {
    for ok in ["a", "sig2026a", "tls-2026-b", "0", &"a".repeat(63)] {
        assert!(valid_selector(ok), "{ok}");
    }
    for bad in ["", "-a", "Sig", "a_b", "a.b", "é", &"a".repeat(64), " a"] {
        assert!(!valid_selector(bad), "{bad}");
    }
}

#[test]
fn generated_key_round_trips_through_pem() {
    let key = SigningKey::generate("sig2026a").expect("generate");
    let pem = key.to_pkcs8_pem();
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
    let again = SigningKey::from_pkcs8_pem("sig2026a", pem.as_bytes()).expect("parse");
    assert_eq!(again.verifying_key(), key.verifying_key());
    assert_eq!(key.spki_der().len(), 44);
    assert!(key.spki_b64().starts_with("MCowBQYDK2VwAyEA"));
    let from_spki = VerifyingKey::from_spki_der(key.spki_der()).expect("spki");
    assert_eq!(&from_spki, key.verifying_key());
}

#[test]
fn generated_keys_are_pkcs8_v1_as_openssl_writes() {
    let key = SigningKey::generate("s").expect("generate");
    assert_eq!(key.pkcs8.len(), 48);
    assert!(key.pkcs8.starts_with(&ED25519_PKCS8_V1_PREFIX));
    // ring's v2 form (public key included) is still accepted on load.
    let rng = ring::rand::SystemRandom::new();
    let v2 = Ed25519KeyPair::generate_pkcs8(&rng).expect("v2");
    assert!(SigningKey::from_pkcs8_der("s", v2.as_ref()).is_ok());
}

#[test]
fn from_seed_matches_rfc8032() {
    // RFC 8032 §7.1, test 1.
    let seed: [u8; 32] =
        hex::decode("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
            .expect("hex")
            .try_into()
            .expect("32");
    let key = SigningKey::from_seed("s", &seed).expect("seed");
    assert_eq!(
        hex::encode(key.verifying_key().raw()),
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
    );
}

#[test]
fn openssl_style_v1_key_is_accepted() {
    // RFC 8410 §10.3's example private key (PKCS#8 v1, no public key).
    let pem = "-----BEGIN PRIVATE KEY-----\n\
               MC4CAQAwBQYDK2VwBCIEINTuctv5E1hK1bbY8fdp+K06/nwoy/HU++CXqI9EdVhC\n\
               -----END PRIVATE KEY-----\n";
    let key = SigningKey::from_pkcs8_pem("sig1", pem.as_bytes()).expect("v1");
    // The matching public key from RFC 8410 §10.1.
    assert_eq!(
        key.spki_b64(),
        "MCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE="
    );
}

#[test]
fn wrong_keys_are_refused_without_quoting_them() {
    let (_, p256_pem) = crate::tls::pki::self_signed("a.example.org").expect("p256");
    let e = SigningKey::from_pkcs8_pem("sig1", p256_pem.as_bytes()).expect_err("p256");
    assert!(matches!(e, KeyError::NotEd25519 { .. }), "{e}");

    let e = SigningKey::from_pkcs8_pem(
        "sig1",
        b"-----BEGIN PRIVATE KEY-----\nQUJD!!\n-----END PRIVATE KEY-----\n",
    )
    .expect_err("garbage");
    assert!(matches!(e, KeyError::Pem { .. }), "{e}");
    assert!(!e.to_string().contains("QUJD"));

    let key = SigningKey::generate("sig1").expect("generate");
    let two = format!("{}{}", key.to_pkcs8_pem(), key.to_pkcs8_pem());
    let e = SigningKey::from_pkcs8_pem("sig1", two.as_bytes()).expect_err("two blocks");
    assert!(matches!(e, KeyError::Pem { .. }), "{e}");

    let e = SigningKey::generate("Bad_Selector").expect_err("selector");
    assert!(matches!(e, KeyError::Selector { .. }), "{e}");
    assert!(!format!("{key:?}").contains("PRIVATE"));
}

#[test]
fn key_files_readable_by_others_are_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("signing.key");
    let key = SigningKey::generate("sig1").expect("generate");
    crate::tls::pki::write_private(&path, key.to_pkcs8_pem().as_bytes()).expect("write");
    let loaded = SigningKey::load(&path, "sig1").expect("0600 is fine");
    assert_eq!(loaded.verifying_key(), key.verifying_key());
    assert_eq!(loaded.selector(), "sig1");
    for mode in [0o644, 0o640, 0o604] {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
        let e = SigningKey::load(&path, "sig1").expect_err("readable by others");
        assert!(
            matches!(e, KeyError::File(SecretError::Readable { .. })),
            "{mode:o}: {e}"
        );
    }
    let e = SigningKey::load(&dir.path().join("missing.key"), "sig1").expect_err("missing");
    assert!(
        matches!(e, KeyError::File(SecretError::NotFound { .. })),
        "{e}"
    );
}

#[test]
fn spki_must_be_exact() {
    let key = SigningKey::generate("s").expect("generate");
    let spki = key.spki_der().to_vec();
    assert!(VerifyingKey::from_spki_der(&spki[..43]).is_err());
    let mut longer = spki.clone();
    longer.push(0);
    assert!(VerifyingKey::from_spki_der(&longer).is_err());
    let mut other_alg = spki;
    other_alg[8] = 0x71; // id-Ed448
    assert!(VerifyingKey::from_spki_der(&other_alg).is_err());
}
