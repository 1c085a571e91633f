//! Tests for `mdgate keygen`: modes, no overwrite, free selectors, the
//! report, and that its configuration lines load.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, UNIX_EPOCH};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

use super::*;

/// 2026-05-01T00:00:00Z.
fn may_2026() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_777_593_600)
}

fn args(dir: &Path) -> KeygenArgs {
    KeygenArgs {
        fqdn: "Server1.Example.org".into(),
        dir: dir.to_path_buf(),
        selector_prefix: String::new(),
        next: false,
    }
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).expect("stat").permissions().mode() & 0o777
}

#[test]
fn writes_owner_only_keys_and_a_certificate_for_the_fqdn() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let g = run(&args(tmp.path()), may_2026()).expect("keygen");
    let p = &g.plan;
    assert_eq!(g.fqdn, "server1.example.org");
    assert_eq!(p.signing_selector, "sig2026a");
    assert_eq!(p.tls_selector, "tls2026a");
    assert_eq!(p.signing_key_file, tmp.path().join("signing-sig2026a.key"));
    assert_eq!(p.tls_key_file, tmp.path().join("tls-tls2026a.key"));
    assert_eq!(p.tls_cert_file, tmp.path().join("tls-tls2026a.crt"));
    assert_eq!(mode(&p.signing_key_file), 0o600);
    assert_eq!(mode(&p.tls_key_file), 0o600);
    assert_eq!(mode(&p.tls_cert_file), 0o644);

    // The signing key loads through the secret-file path.
    let key = SigningKey::load(&p.signing_key_file, "sig2026a").expect("load");
    assert_eq!(key.spki_b64(), g.signing_spki_b64);

    // The certificate names only the FQDN and carries the TLS key.
    let cert_pem = fs::read_to_string(&p.tls_cert_file).expect("cert");
    let der = CertificateDer::from_pem_slice(cert_pem.as_bytes()).expect("pem");
    let peer = crate::tls::peer_identity(&der).expect("one DNS SAN");
    assert_eq!(peer.fqdn(), "server1.example.org");
    assert_eq!(STANDARD.encode(peer.spki_sha256()), g.tls_spki_sha256_b64);
    let tls_key = fs::read_to_string(&p.tls_key_file).expect("key");
    let renewed =
        pki::self_signed_with_key(&pki::LeafSpec::dns(&["server1.example.org"]), &tls_key)
            .expect("key matches");
    assert_eq!(
        pki::spki_sha256_of_pem(&renewed).expect("spki"),
        *peer.spki_sha256()
    );
}

#[test]
fn the_report_has_the_config_lines_and_no_secret() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let g = run(&args(tmp.path()), may_2026()).expect("keygen");
    let report = g.report();
    assert!(!report.contains("PRIVATE"), "{report}");
    for path in [&g.plan.signing_key_file, &g.plan.tls_key_file] {
        let pem = fs::read_to_string(path).expect("read");
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        assert!(!report.contains(&body[..20]), "secret in report");
    }
    let dir = tmp.path().display();
    for line in [
        "[keys]".to_owned(),
        format!("signing_key_file = \"{dir}/signing-sig2026a.key\""),
        "signing_selector = \"sig2026a\"".to_owned(),
        "tls_selector = \"tls2026a\"".to_owned(),
        "[federation.tls]".to_owned(),
        format!("cert_file = \"{dir}/tls-tls2026a.crt\""),
        format!("key_file = \"{dir}/tls-tls2026a.key\""),
    ] {
        assert!(report.lines().any(|l| l == line), "{line} not in\n{report}");
    }
    assert!(report.contains(&g.signing_spki_b64));
    assert!(!report.contains("next_"));

    // Pasted into a configuration, the lines load.
    let config = format!(
        "[server]\nfqdn = \"server1.example.org\"\n[public]\nplain_http = true\n\
         [store]\npath = \"{dir}/mdgate.db\"\n{}\n[federation.trust]\npinned_spki_sha256 = [\"{}\"]\n",
        report
            .split_once("Add to the configuration:\n")
            .expect("lines")
            .1
            .split_once("\nPublish")
            .expect("end")
            .0,
        g.tls_spki_sha256_b64
    );
    let c = crate::config::load_str(&config, &tmp.path().join("mdgate.toml"))
        .unwrap_or_else(|e| panic!("{}\n{config}", e.report()));
    let keys = c.keys.expect("keys");
    assert_eq!(keys.signing.selector, "sig2026a");
    assert_eq!(keys.tls_selector, "tls2026a");
}

#[test]
fn next_keys_get_a_new_letter_and_rotation_lines() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let first = run(&args(tmp.path()), may_2026()).expect("first");
    let mut next = args(tmp.path());
    next.next = true;
    let second = run(&next, may_2026()).expect("second");
    assert_eq!(second.plan.signing_selector, "sig2026b");
    assert_eq!(second.plan.tls_selector, "tls2026b");
    assert_ne!(second.signing_spki_b64, first.signing_spki_b64);
    let report = second.report();
    for line in [
        "next_signing_selector = \"sig2026b\"",
        "next_tls_selector = \"tls2026b\"",
    ] {
        assert!(report.lines().any(|l| l == line), "{line} not in\n{report}");
    }
    assert!(report.contains("do not sign with them"), "{report}");
    // The first run's files are untouched.
    assert!(SigningKey::load(&first.plan.signing_key_file, "sig2026a").is_ok());
    let third = run(&args(tmp.path()), may_2026()).expect("third");
    assert_eq!(third.plan.signing_selector, "sig2026c");
}

#[test]
fn selectors_skip_any_file_that_mentions_them() {
    let tmp = tempfile::tempdir().expect("tempdir");
    fs::write(tmp.path().join("signing-sig2026a.key.bak"), "old").expect("write");
    fs::write(tmp.path().join("tls-tls2026b.crt"), "old").expect("write");
    let p = plan(tmp.path(), "", 2026).expect("plan");
    assert_eq!(p.signing_selector, "sig2026c");
    assert_eq!(p.tls_selector, "tls2026c");
    // Another prefix is another name space, but anything containing the
    // candidate counts.
    let p = plan(tmp.path(), "hq-", 2026).expect("plan");
    assert_eq!(p.signing_selector, "hq-sig2026a");
    // Another year starts again at a.
    assert_eq!(
        plan(tmp.path(), "", 2027).expect("plan").signing_selector,
        "sig2027a"
    );
    for letter in 'a'..='z' {
        fs::write(tmp.path().join(format!("signing-sig2028{letter}.key")), "x").expect("write");
    }
    assert!(matches!(
        plan(tmp.path(), "", 2028),
        Err(KeygenError::NoFreeSelector { .. })
    ));
}

#[test]
fn never_overwrites_and_cleans_up_after_itself() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mine = tmp.path().join("signing-sig2026a.key");
    let theirs = tmp.path().join("tls-tls2026a.key");
    fs::write(&theirs, "existing key").expect("write");
    let cert = tmp.path().join("tls-tls2026a.crt");
    let e = write_all(
        &[
            (&mine, b"new signing key".as_slice(), true),
            (&theirs, b"new tls key".as_slice(), true),
            (&cert, b"cert".as_slice(), false),
        ],
        tmp.path(),
    )
    .expect_err("must refuse");
    assert!(
        matches!(&e, KeygenError::Exists { path } if *path == theirs),
        "{e}"
    );
    assert!(e.to_string().contains("refusing to overwrite"), "{e}");
    assert_eq!(fs::read_to_string(&theirs).expect("read"), "existing key");
    assert!(
        !mine.exists(),
        "the file created before the failure is removed"
    );
    assert!(!cert.exists());

    // The certificate is never overwritten either.
    fs::write(&cert, "existing cert").expect("write");
    let e = write_all(&[(&cert, b"cert".as_slice(), false)], tmp.path()).expect_err("cert");
    assert!(matches!(e, KeygenError::Exists { .. }));
    assert_eq!(fs::read_to_string(&cert).expect("read"), "existing cert");
}

#[test]
fn directory_is_created_owner_only() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("etc/mdgate/keys");
    run(&args(&dir), may_2026()).expect("keygen");
    assert_eq!(mode(&dir), 0o700);
    let file = tmp.path().join("file");
    fs::write(&file, "x").expect("write");
    assert!(matches!(
        run(&args(&file), may_2026()),
        Err(KeygenError::NotADirectory { .. })
    ));
}

#[test]
fn bad_arguments_are_refused_before_anything_is_written() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("keys");
    let mut a = args(&dir);
    a.fqdn = "*.example.org".into();
    assert!(matches!(run(&a, may_2026()), Err(KeygenError::Fqdn { .. })));
    for prefix in ["-x", "HQ", "a_b", &"p".repeat(60)] {
        let mut a = args(&dir);
        a.selector_prefix = prefix.to_owned();
        assert!(
            matches!(run(&a, may_2026()), Err(KeygenError::Prefix { .. })),
            "{prefix}"
        );
    }
    assert!(!dir.exists());
}

#[test]
fn years() {
    let at = |secs: i64| UNIX_EPOCH + Duration::from_secs(secs as u64);
    assert_eq!(year_of(at(0)), 1970);
    assert_eq!(year_of(at(1_767_225_599)), 2025); // 2025-12-31T23:59:59Z
    assert_eq!(year_of(at(1_767_225_600)), 2026); // 2026-01-01T00:00:00Z
    assert_eq!(year_of(at(1_709_164_800)), 2024); // 2024-02-29
    assert_eq!(year_of(at(4_107_542_400)), 2100); // 2100-03-01
    assert_eq!(year_of(UNIX_EPOCH - Duration::from_secs(1)), 1969);
}
