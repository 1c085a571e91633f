//! `mdgate dns-records` (and `--check`) and `mdgate check-peer` against a
//! real DNS server on loopback (UDP), real TLS and an in-process peer.

use std::net::Ipv4Addr;
use std::time::{Duration, SystemTime};

use mdgate::admin::checks::{Report, Status};
use mdgate::admin::dnsrecords;
use mdgate::dns::record::{self, KeyRecord, Selector};
use mdgate::dns::testserver::{Mode, TestDnsServer};
use mdgate::dns::KeyResolver;
use mdgate::tls::pki::{self, TestCa};
use mdgate::token::publish::KeyRole;
use mdgate::token::{DocKey, KeyAlg, KeyDocument, KeyMaterial, KeyUsage};
use serde_json::Value;

use crate::fed::{self, check_peer, load_zone, Peer, Us, UsOptions, US, ZONE};
use crate::gate::FQDN;

fn sel(s: &str) -> Selector {
    Selector::parse(s).unwrap()
}

/// The check named `name`, which must be there.
fn check<'a>(report: &'a Report, name: &str) -> &'a mdgate::admin::checks::Check {
    report
        .check(name)
        .unwrap_or_else(|| panic!("no check {name} in\n{}", report.human("next:")))
}

fn label(report: &Report, name: &str) -> Option<String> {
    check(report, name)
        .detail
        .get("label")
        .and_then(Value::as_str)
        .map(str::to_owned)
}

#[track_caller]
fn assert_status(report: &Report, name: &str, status: Status) {
    let c = check(report, name);
    assert_eq!(
        c.status,
        status,
        "{name}: {}\n\nfull report:\n{}",
        c.reason,
        report.human("next:")
    );
}

#[track_caller]
fn assert_fail(report: &Report, name: &str, wanted_label: &str, needle: &str) {
    assert_status(report, name, Status::Fail);
    assert_eq!(
        label(report, name).as_deref(),
        Some(wanted_label),
        "{name}: {}",
        check(report, name).reason
    );
    let reason = &check(report, name).reason;
    assert!(
        reason.contains(needle),
        "{name}: {reason:?} lacks {needle:?}"
    );
    assert!(!report.ok);
}

async fn resolver(dns: &TestDnsServer) -> KeyResolver {
    let config = mdgate::config::Dns {
        nameservers: vec![dns.addr()],
        timeout: Duration::from_millis(500),
        ..mdgate::config::Dns::defaults()
    };
    KeyResolver::new(&config, std::sync::Arc::new(mdgate::admin::Metrics::new())).unwrap()
}

async fn our_check(us: &Us, plan: &dnsrecords::ZonePlan) -> Report {
    dnsrecords::check_config(&us.config, plan).await.unwrap()
}

// ------------------------------------------------------------------ dns-records

#[tokio::test]
async fn dns_records_parse_back_into_this_servers_keys() {
    let dir = tempfile::tempdir().unwrap();
    let (dns, _) = fed::dns_server(false, dir.path()).await;
    let ca = TestCa::new().unwrap();
    let us = Us::new(
        &dns,
        &ca,
        UsOptions {
            next: true,
            ..UsOptions::default()
        },
    );
    let text = us.zone_text();
    load_zone(&dns, &text).await;

    // What a peer's resolver makes of the printed lines.
    let keys = resolver(&dns).await.peer_keys(US).await.expect("keys");
    let selectors: Vec<&str> = keys.index.selectors.iter().map(Selector::as_str).collect();
    assert_eq!(selectors, ["ustls1", "ussig1", "ustls2", "ussig2"]);
    assert_eq!(
        (keys.index.federation_port, keys.index.web_port),
        (8443, 443)
    );
    let record = |s: &str| -> KeyRecord {
        keys.records
            .iter()
            .find(|e| e.selector.as_str() == s)
            .and_then(|e| e.record.clone().ok())
            .unwrap_or_else(|| panic!("{s} in\n{text}"))
    };
    let cert_hash = |file: &str| {
        pki::spki_sha256_of_pem(&std::fs::read_to_string(us.dir.path().join(file)).unwrap())
            .unwrap()
    };
    assert!(record("ustls1").matches_spki(&cert_hash("federation.crt")));
    assert!(record("ustls2").matches_spki(&cert_hash("next.crt")));
    assert_eq!(record("ussig1").spki(), Some(us.signing.spki_der()));
    assert_eq!(record("ussig2").usage, record::KeyUse::Sig);

    // The TLSA lines pin both TLS keys at the federation port.
    let tlsa = resolver(&dns).await.probe_tlsa(US, 8443).await;
    let pins: Vec<[u8; 32]> = tlsa
        .records
        .iter()
        .filter_map(record::Tlsa::dane_ee_spki_sha256)
        .collect();
    assert_eq!(pins, [cert_hash("federation.crt"), cert_hash("next.crt")]);
    assert!(text.contains("NEXT KEYS: PUBLISH NOW, USE LATER"), "{text}");
}

#[tokio::test]
async fn dns_records_check_fails_until_the_records_are_published() {
    let dir = tempfile::tempdir().unwrap();
    let (dns, _) = fed::dns_server(false, dir.path()).await;
    let ca = TestCa::new().unwrap();
    let us = Us::new(
        &dns,
        &ca,
        UsOptions {
            next: true,
            ..UsOptions::default()
        },
    );
    let full = us.plan();

    // Nothing published.
    let report = our_check(&us, &full).await;
    assert_fail(&report, "index", "no_record", "not published yet");
    assert_fail(&report, "key.ustls1", "no_record", "NXDOMAIN");
    assert_fail(&report, "key.ussig1", "no_record", "not published yet");
    assert_status(&report, "next.key.ustls2", Status::Fail);
    assert!(check(&report, "next.key.ustls2")
        .reason
        .starts_with("not visible yet: do not switch"));
    assert!(dnsrecords::summary(&report).contains("do not switch"));

    // The current keys only (as before `keygen --next`): current ok, next
    // not visible.
    let mut current = full.clone();
    current.keys.retain(|k| k.role == KeyRole::Current);
    current.tlsa.retain(|t| t.role == KeyRole::Current);
    current
        .index
        .selectors
        .retain(|s| current.keys.iter().any(|k| &k.selector == s));
    load_zone(&dns, &current.zone_text()).await;
    let report = our_check(&us, &full).await;
    assert!(report.ok, "{}", report.human("next:"));
    for name in ["index", "key.ustls1", "key.ussig1", "tlsa.ustls1"] {
        assert_status(&report, name, Status::Pass);
    }
    // Index without the next selectors: their records are absent too.
    assert_fail_next(&report, "next.key.ussig2");

    // The next records, but not yet in the index.
    let next_only: String = full
        .zone_text()
        .lines()
        .filter(|l| !l.starts_with("_mdgate."))
        .map(|l| format!("{l}\n"))
        .collect();
    load_zone(&dns, &next_only).await;
    let report = our_check(&us, &full).await;
    assert!(check(&report, "next.key.ussig2")
        .reason
        .contains("the index does not list ussig2"));
    assert_fail_next(&report, "next.key.ussig2");

    // Everything: safe to switch.
    load_zone(&dns, &full.zone_text()).await;
    let report = our_check(&us, &full).await;
    assert!(report.ok, "{}", report.human("next:"));
    for name in ["next.key.ustls2", "next.key.ussig2", "next.tlsa.ustls2"] {
        assert_status(&report, name, Status::Pass);
        assert!(check(&report, name)
            .reason
            .starts_with("visible: safe to switch"));
    }
    assert!(dnsrecords::summary(&report).contains("safe to switch"));
}

#[track_caller]
fn assert_fail_next(report: &Report, name: &str) {
    assert_status(report, name, Status::Fail);
    assert!(
        check(report, name)
            .reason
            .starts_with("not visible yet: do not switch"),
        "{}",
        check(report, name).reason
    );
    // Next keys never decide the exit status.
    assert!(report.next.iter().any(|c| c.name == name));
}

#[tokio::test]
async fn dns_records_check_names_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let (dns, _) = fed::dns_server(false, dir.path()).await;
    let ca = TestCa::new().unwrap();
    let us = Us::new(&dns, &ca, UsOptions::default());
    let plan = us.plan();
    load_zone(&dns, &plan.zone_text()).await;
    assert!(our_check(&us, &plan).await.ok);

    // Another key under our selector.
    let other = KeyRecord::tls_hash(
        record::KeyAlgorithm::P256,
        &rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .unwrap()
            .public_key_der(),
    );
    let name = record::key_name(&sel("ustls1"), US);
    dns.set_txt(&name, &[&other.to_string()]).await.unwrap();
    let report = our_check(&us, &plan).await;
    assert_fail(
        &report,
        "key.ustls1",
        "key_mismatch",
        "a different key is published",
    );

    // Revoked.
    dns.set_txt(&name, &["v=mdgate1; u=tls; a=p256; h="])
        .await
        .unwrap();
    let report = our_check(&us, &plan).await;
    assert_fail(&report, "key.ustls1", "revoked", "revoked in DNS");

    // A TLSA record for another key (harmless while unsigned: a warning).
    load_zone(&dns, &plan.zone_text()).await;
    dns.set_tlsa(
        &record::tlsa_name(8443, US),
        &[record::Tlsa::dane_ee([9; 32])],
    )
    .await
    .unwrap();
    let report = our_check(&us, &plan).await;
    assert_status(&report, "tlsa.ustls1", Status::Warn);
    assert_eq!(
        label(&report, "tlsa.ustls1").as_deref(),
        Some("tlsa_mismatch")
    );
    assert!(report.ok);

    // The index with the wrong federation port.
    load_zone(&dns, &plan.zone_text()).await;
    dns.set_txt(
        &record::index_name(US),
        &["v=mdgate1; s=ustls1,ussig1; fp=9443; wp=443"],
    )
    .await
    .unwrap();
    let report = our_check(&us, &plan).await;
    assert_fail(&report, "index", "key_mismatch", "fp=9443");

    // SERVFAIL is not "not published".
    dns.set_mode(Mode::ServFail);
    let report = our_check(&us, &plan).await;
    assert_fail(&report, "index", "dns_servfail", "SERVFAIL");
    assert!(!check(&report, "index").reason.starts_with("not published"));
    assert_fail(&report, "key.ussig1", "dns_servfail", "SERVFAIL");

    // Nor is a timeout.
    dns.set_mode(Mode::Drop);
    let report = our_check(&us, &plan).await;
    assert_fail(&report, "index", "dns_timeout", "within the [dns] timeout");
}

#[tokio::test]
async fn dns_records_check_sees_dnssec_and_tlsa() {
    let dir = tempfile::tempdir().unwrap();
    let (dns, anchor) = fed::dns_server(true, dir.path()).await;
    let ca = TestCa::new().unwrap();
    let us = Us::new(
        &dns,
        &ca,
        UsOptions {
            dns: format!(
                "dnssec = \"validate\"\ntrust_anchor_file = \"{}\"\n",
                anchor.unwrap().display()
            ),
            ..UsOptions::default()
        },
    );
    let plan = us.plan();
    load_zone(&dns, &plan.zone_text()).await;
    let report = our_check(&us, &plan).await;
    assert!(report.ok, "{}", report.human(""));
    assert_status(&report, "dnssec", Status::Pass);
    assert_status(&report, "tlsa.ustls1", Status::Pass);

    // On a signed zone a wrong TLSA is a refusal.
    dns.set_tlsa(
        &record::tlsa_name(8443, US),
        &[record::Tlsa::dane_ee([9; 32])],
    )
    .await
    .unwrap();
    let report = our_check(&us, &plan).await;
    assert_fail(
        &report,
        "tlsa.ustls1",
        "tlsa_mismatch",
        "validating peers refuse",
    );

    // A forged answer is bogus, not absent.
    load_zone(&dns, &plan.zone_text()).await;
    dns.tamper_txt(
        &record::index_name(US),
        &["v=mdgate1; s=evil1; fp=8443; wp=443"],
    )
    .await
    .unwrap();
    let report = our_check(&us, &plan).await;
    assert_fail(&report, "index", "dnssec_bogus", "DNSSEC validation failed");
    assert_status(&report, "dnssec", Status::Fail);
}

/// Our configuration after the switch of a rotation: the next keys are
/// current, the current ones previous.
fn switched(us: &Us) -> mdgate::config::Config {
    let text = std::fs::read_to_string(&us.config_path).unwrap();
    let (head, _) = text.split_once("[keys]").unwrap();
    let head = head.replace(
        "[federation.tls]\ncert_file = \"federation.crt\"\nkey_file = \"federation.key\"",
        "[federation.tls]\ncert_file = \"next.crt\"\nkey_file = \"next.key\"",
    );
    let dir = us.dir.path().display();
    let text = format!(
        "{head}[keys]\n\
         signing_key_file = \"{dir}/signing-ussig2.key\"\nsigning_selector = \"ussig2\"\n\
         tls_selector = \"ustls2\"\n\
         previous_signing_key_file = \"{dir}/signing-ussig1.key\"\n\
         previous_signing_selector = \"ussig1\"\n\
         previous_tls_selector = \"ustls1\"\nprevious_tls_cert_file = \"federation.crt\"\n"
    );
    let path = us.dir.path().join("switched.toml");
    std::fs::write(&path, text).unwrap();
    mdgate::config::load(&path).unwrap_or_else(|e| panic!("{}", e.report()))
}

#[tokio::test]
async fn a_whole_rotation_checks_out_at_every_step() {
    let dir = tempfile::tempdir().unwrap();
    let (dns, _) = fed::dns_server(false, dir.path()).await;
    let ca = TestCa::new().unwrap();
    let us = Us::new(
        &dns,
        &ca,
        UsOptions {
            next: true,
            ..UsOptions::default()
        },
    );
    // 1-2. Next keys published ahead of use: safe to switch.
    let before = us.plan();
    load_zone(&dns, &before.zone_text()).await;
    let report = our_check(&us, &before).await;
    assert!(report.ok && dnsrecords::summary(&report).contains("safe to switch"));

    // 3. The switch: the records printed now keep the old keys live.
    let after = switched(&us);
    let plan = dnsrecords::plan(&after, &Us::args()).unwrap();
    let text = plan.zone_text();
    assert!(
        text.contains("Previous keys: no longer used, still live"),
        "{text}"
    );
    load_zone(&dns, &text).await;
    let report = dnsrecords::check_config(&after, &plan).await.unwrap();
    assert!(report.ok, "{}", report.human(""));
    assert_status(&report, "key.ussig2", Status::Pass);
    assert_status(&report, "previous.key.ussig1", Status::Pass);
    assert!(check(&report, "previous.key.ussig1")
        .reason
        .starts_with("still live (previous key)"));
    // The key document lists the previous keys as retired, so it agrees
    // with DNS while they are live...
    let keys = resolver(&dns).await.peer_keys(US).await.unwrap();
    let now = SystemTime::now();
    let jws = mdgate::token::publish::key_document(&after, now).unwrap();
    let doc = KeyDocument::verify(
        &jws,
        US,
        Duration::from_secs(60),
        |kid| {
            (kid == "ussig2").then(|| {
                mdgate::token::publish::own_keys(&after)
                    .unwrap()
                    .signing_key()
                    .verifying_key()
                    .clone()
            })
        },
        now,
    )
    .unwrap();
    let dns_keys = |keys: &mdgate::dns::PeerKeys| -> Vec<mdgate::token::DnsKey> {
        keys.records
            .iter()
            .filter_map(|e| {
                let r = e.record.as_ref().ok()?;
                Some(mdgate::token::DnsKey {
                    selector: e.selector.to_string(),
                    usage: match r.usage {
                        record::KeyUse::Tls => KeyUsage::Tls,
                        record::KeyUse::Sig => KeyUsage::Sig,
                    },
                    alg: match r.algorithm {
                        record::KeyAlgorithm::P256 => KeyAlg::P256,
                        record::KeyAlgorithm::Ed25519 => KeyAlg::Ed25519,
                    },
                    material: match &r.material {
                        record::KeyMaterial::Spki(d) => mdgate::token::DnsMaterial::Spki(d.clone()),
                        record::KeyMaterial::SpkiSha256(h) => {
                            mdgate::token::DnsMaterial::SpkiSha256(*h)
                        }
                        record::KeyMaterial::Revoked => mdgate::token::DnsMaterial::Revoked,
                    },
                })
            })
            .collect()
    };
    mdgate::token::compare(&doc, &dns_keys(&keys), now).expect("agree while previous live");

    // 4. Revoke the previous keys.
    let args = dnsrecords::DnsRecordsArgs {
        revoke_previous: true,
        ..Us::args()
    };
    let plan = dnsrecords::plan(&after, &args).unwrap();
    load_zone(&dns, &plan.zone_text()).await;
    let report = dnsrecords::check_config(&after, &plan).await.unwrap();
    assert!(report.ok, "{}", report.human(""));
    assert!(check(&report, "previous.key.ustls1")
        .reason
        .starts_with("revoked"));
    // ... and after they are revoked.
    let keys = resolver(&dns).await.peer_keys(US).await.unwrap();
    mdgate::token::compare(&doc, &dns_keys(&keys), now).expect("agree once revoked");
}

#[tokio::test]
async fn the_binary_prints_records_and_checks_them() {
    let dir = tempfile::tempdir().unwrap();
    let (dns, _) = fed::dns_server(false, dir.path()).await;
    let ca = TestCa::new().unwrap();
    let us = Us::new(&dns, &ca, UsOptions::default());
    let bin = env!("CARGO_BIN_EXE_mdgate");
    let config = us.config_path.to_str().unwrap().to_owned();

    // Listen ports of 0 cannot be published.
    let out = tokio::process::Command::new(bin)
        .args(["dns-records", "-c", &config])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--federation-port"));

    let ports = ["--federation-port", "8443", "--web-port", "443"];
    let out = tokio::process::Command::new(bin)
        .args(["dns-records", "-c", &config])
        .args(ports)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text, us.zone_text());

    let check = |json: bool| {
        let mut cmd = tokio::process::Command::new(bin);
        cmd.args(["dns-records", "-c", &config, "--check"])
            .args(ports);
        if json {
            cmd.arg("--json");
        }
        cmd.output()
    };
    let out = check(true).await.unwrap();
    assert_eq!(out.status.code(), Some(1), "not published yet");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["fqdn"], US);
    assert_eq!(report["ok"], false);

    load_zone(&dns, &text).await;
    let out = check(false).await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("✔ key.ustls1"), "{stdout}");
    assert!(stdout.contains("Current keys: all visible from outside."));
}

// ------------------------------------------------------------------ check-peer

/// A peer whose records are published, and us, admitted by it.
async fn published() -> (Peer, TestDnsServer, Us, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let (dns, _) = fed::dns_server(false, dir.path()).await;
    let peer = Peer::start("").await;
    peer.publish(&dns).await;
    let us = Us::new(
        &dns,
        &peer.gate.ca,
        UsOptions {
            web_ca_file: Some(peer.ca_file()),
            ..UsOptions::default()
        },
    );
    (peer, dns, us, dir)
}

#[tokio::test]
async fn check_peer_passes_against_a_correctly_published_peer() {
    let (peer, _dns, us, _dir) = published().await;
    let report = check_peer(&us, FQDN).await;
    assert!(report.ok, "{}", report.human(""));
    for name in [
        "dns.index",
        "dns.key.tls1",
        "dns.key.sig1",
        "dns.addr",
        "connect",
        "tls.handshake",
        "tls.name",
        "tls.validity",
        "tls.key",
        "federation.admits_us",
        "clock",
        "keydoc.fetch",
        "keydoc.signature",
        "keydoc.agreement",
    ] {
        assert_status(&report, name, Status::Pass);
    }
    // Without validation there is nothing to say about DNSSEC or DANE.
    assert_status(&report, "dns.dnssec", Status::Skip);
    assert_status(&report, "tls.dane", Status::Skip);
    assert!(check(&report, "federation.admits_us")
        .reason
        .contains(&format!("sees us as {US}")));

    // The JSON form is stable and complete.
    let json: Value = serde_json::from_str(&report.to_json()).unwrap();
    assert_eq!(json["fqdn"], FQDN);
    assert_eq!(json["ok"], true);
    let checks = json["checks"].as_array().unwrap();
    assert_eq!(checks.len(), report.checks.len());
    for c in checks {
        assert!(c["name"].is_string() && c["reason"].is_string() && c["detail"].is_object());
        assert!(["pass", "fail", "skip", "warn"].contains(&c["status"].as_str().unwrap()));
    }
    peer.stop().await;
}

#[tokio::test]
async fn check_peer_reads_the_key_document_the_peer_serves_itself() {
    let dir = tempfile::tempdir().unwrap();
    let (dns, _) = fed::dns_server(false, dir.path()).await;
    let peer = Peer::start("").await;
    peer.publish_served_document(&dns).await;
    let us = Us::new(
        &dns,
        &peer.gate.ca,
        UsOptions {
            web_ca_file: Some(peer.ca_file()),
            ..UsOptions::default()
        },
    );
    let report = check_peer(&us, FQDN).await;
    assert!(report.ok, "{}", report.human(""));
    for name in ["keydoc.fetch", "keydoc.signature", "keydoc.agreement"] {
        assert_status(&report, name, Status::Pass);
    }
    assert!(check(&report, "keydoc.fetch").reason.contains(&format!(
        ":{}/.well-known/mdgate/keys",
        peer.gate.public.port()
    )));
    peer.stop().await;
}

#[tokio::test]
async fn check_peer_without_records_says_no_record_and_skips_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let (dns, _) = fed::dns_server(false, dir.path()).await;
    dns.set_a(FQDN, Ipv4Addr::LOCALHOST).await.unwrap();
    let ca = TestCa::new().unwrap();
    let us = Us::new(&dns, &ca, UsOptions::default());
    let report = check_peer(&us, FQDN).await;
    assert_fail(&report, "dns.index", "no_record", "NXDOMAIN");
    assert!(check(&report, "dns.index")
        .reason
        .contains("publishes no mdgate keys"));
    assert_status(&report, "dns.addr", Status::Pass);
    for name in ["connect", "tls.key", "keydoc.fetch"] {
        assert_status(&report, name, Status::Skip);
    }
    assert!(check(&report, "connect").reason.contains("dns.index"));
}

#[tokio::test]
async fn check_peer_reports_a_record_for_another_key() {
    let (peer, dns, us, _dir) = published().await;
    let other = KeyRecord::tls_hash(
        record::KeyAlgorithm::P256,
        &rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .unwrap()
            .public_key_der(),
    );
    dns.set_txt(&record::key_name(&sel("tls1"), FQDN), &[&other.to_string()])
        .await
        .unwrap();
    let report = check_peer(&us, FQDN).await;
    assert_fail(
        &report,
        "tls.key",
        "key_mismatch",
        "matches none of the 1 live tls record",
    );
    // The handshake itself worked: the failure is blamed on the key.
    assert_status(&report, "tls.handshake", Status::Pass);
    assert_fail(
        &report,
        "keydoc.agreement",
        "channel_mismatch",
        "tls1 has a different key",
    );
    peer.stop().await;
}

#[tokio::test]
async fn check_peer_reports_a_certificate_naming_another_server() {
    let (peer, dns, us, _dir) = published().await;
    // alias.mdgate.test publishes the peer's keys and points at it, but
    // the peer's certificate names gate.mdgate.test.
    let alias = format!("alias.{ZONE}");
    let text = peer
        .zone_text()
        .replace(&format!("{FQDN}."), &format!("{alias}."));
    load_zone(&dns, &text).await;
    dns.set_a(&alias, Ipv4Addr::LOCALHOST).await.unwrap();
    let report = check_peer(&us, &alias).await;
    assert_fail(
        &report,
        "tls.name",
        "identity",
        &format!("names {FQDN}, not {alias}"),
    );
    // Its key is the published one all the same.
    assert_status(&report, "tls.key", Status::Pass);
    peer.stop().await;
}

#[tokio::test]
async fn check_peer_reports_a_revoked_key() {
    let (peer, dns, us, _dir) = published().await;
    dns.set_txt(
        &record::key_name(&sel("tls1"), FQDN),
        &["v=mdgate1; u=tls; a=p256; h="],
    )
    .await
    .unwrap();
    let report = check_peer(&us, FQDN).await;
    assert_status(&report, "dns.key.tls1", Status::Pass);
    assert!(check(&report, "dns.key.tls1").reason.contains("revoked"));
    assert_fail(&report, "tls.key", "revoked", "tls1's, which");
    assert_fail(
        &report,
        "keydoc.agreement",
        "channel_mismatch",
        "revoked in DNS",
    );
    peer.stop().await;
}

#[tokio::test]
async fn check_peer_reports_dnssec_bogus_with_validation_on() {
    let dir = tempfile::tempdir().unwrap();
    let (dns, anchor) = fed::dns_server(true, dir.path()).await;
    let peer = Peer::start("").await;
    peer.publish(&dns).await;
    let us = Us::new(
        &dns,
        &peer.gate.ca,
        UsOptions {
            web_ca_file: Some(peer.ca_file()),
            dns: format!(
                "dnssec = \"validate\"\ntrust_anchor_file = \"{}\"\n",
                anchor.unwrap().display()
            ),
            ..UsOptions::default()
        },
    );
    // Secure: DNSSEC and DANE pass.
    let report = check_peer(&us, FQDN).await;
    assert!(report.ok, "{}", report.human(""));
    assert_status(&report, "dns.dnssec", Status::Pass);
    assert_status(&report, "tls.dane", Status::Pass);

    // A TLSA record for another key: DANE refuses.
    dns.set_tlsa(
        &record::tlsa_name(peer.gate.federation.unwrap().port(), FQDN),
        &[record::Tlsa::dane_ee([9; 32])],
    )
    .await
    .unwrap();
    let report = check_peer(&us, FQDN).await;
    assert_fail(&report, "tls.dane", "tlsa_mismatch", "TLSA 3 1 1");

    // Forged: bogus, and nothing after the index is blamed.
    peer.publish(&dns).await;
    dns.tamper_txt(
        &record::index_name(FQDN),
        &["v=mdgate1; s=evil1; fp=1; wp=1"],
    )
    .await
    .unwrap();
    let report = check_peer(&us, FQDN).await;
    assert_fail(&report, "dns.index", "dnssec_bogus", "bogus");
    assert_status(&report, "dns.dnssec", Status::Fail);
    assert_status(&report, "connect", Status::Skip);
    peer.stop().await;
}

#[tokio::test]
async fn check_peer_keeps_servfail_nxdomain_and_timeouts_apart() {
    let (peer, dns, us, _dir) = published().await;
    dns.set_mode(Mode::ServFail);
    let report = check_peer(&us, FQDN).await;
    assert_fail(&report, "dns.index", "dns_servfail", "SERVFAIL");
    assert!(check(&report, "dns.index")
        .reason
        .contains("not the same as \"not published\""));
    assert_fail(&report, "dns.addr", "dns_servfail", "SERVFAIL");
    assert_status(&report, "connect", Status::Skip);

    dns.set_mode(Mode::Drop);
    let report = check_peer(&us, FQDN).await;
    assert_fail(&report, "dns.index", "dns_timeout", "timeout");
    assert_fail(&report, "dns.addr", "dns_timeout", "timeout");

    // An answer that says "nothing here" is no_record. (The index name
    // stays an empty non-terminal above the key records: NODATA.)
    dns.set_mode(Mode::Answer);
    dns.remove(&record::index_name(FQDN)).await.unwrap();
    let report = check_peer(&us, FQDN).await;
    assert_fail(&report, "dns.index", "no_record", "has no TXT record");
    peer.stop().await;
}

#[tokio::test]
async fn check_peer_reports_a_key_document_that_disagrees_with_dns() {
    let (peer, _dns, us, _dir) = published().await;
    let now = SystemTime::now();
    let doc = KeyDocument::new(
        FQDN,
        vec![
            DocKey {
                selector: "tls1".into(),
                usage: KeyUsage::Tls,
                alg: KeyAlg::P256,
                material: KeyMaterial::SpkiSha256([9; 32]),
                nbf: None,
                exp: None,
            },
            DocKey::signing(&peer.signing, None, None),
        ],
        now,
        Duration::from_secs(3600),
    );
    peer.web.set(&doc.sign(&peer.signing, now).unwrap());
    let report = check_peer(&us, FQDN).await;
    assert_status(&report, "keydoc.signature", Status::Pass);
    assert_fail(
        &report,
        "keydoc.agreement",
        "channel_mismatch",
        "tls1 has a different key",
    );
    assert_status(&report, "tls.key", Status::Pass);

    // Signed with a key DNS does not publish.
    let stranger = mdgate::token::SigningKey::generate("sig9").unwrap();
    let doc = KeyDocument::new(
        FQDN,
        vec![DocKey::signing(&stranger, None, None)],
        now,
        Duration::from_secs(3600),
    );
    peer.web.set(&doc.sign(&stranger, now).unwrap());
    let report = check_peer(&us, FQDN).await;
    assert_fail(&report, "keydoc.signature", "unknown_selector", "sig9");
    assert_status(&report, "keydoc.agreement", Status::Skip);
    peer.stop().await;
}

#[tokio::test]
async fn check_peer_says_when_the_peer_refuses_us() {
    let dir = tempfile::tempdir().unwrap();
    let (dns, _) = fed::dns_server(false, dir.path()).await;
    let peer = Peer::start("").await;
    peer.publish(&dns).await;
    // Our certificate comes from a CA the peer does not trust.
    let us = Us::new(
        &dns,
        &TestCa::new().unwrap(),
        UsOptions {
            web_ca_file: Some(peer.ca_file()),
            ..UsOptions::default()
        },
    );
    let report = check_peer(&us, FQDN).await;
    let refused = report
        .checks
        .iter()
        .find(|c| c.detail.get("label").and_then(Value::as_str) == Some("peer_refused"))
        .unwrap_or_else(|| panic!("no refusal in\n{}", report.human("")));
    assert!(
        refused
            .reason
            .contains("the peer refused our certificate: check that our records are visible"),
        "{}",
        refused.reason
    );
    // What we see of the peer is still checked.
    assert_status(&report, "tls.key", Status::Pass);
    assert_status(&report, "keydoc.agreement", Status::Pass);
    peer.stop().await;
}

fn ten_minutes_fast() -> SystemTime {
    SystemTime::now() + Duration::from_secs(600)
}

#[tokio::test]
async fn check_peer_warns_of_clock_skew() {
    let (peer, _dns, us, _dir) = published().await;
    let report = fed::check_peer_with_clock(&us, FQDN, ten_minutes_fast).await;
    assert_status(&report, "clock", Status::Warn);
    let reason = &check(&report, "clock").reason;
    assert!(
        reason.contains("s behind ours, beyond the tolerance of 60 s"),
        "{reason}"
    );
    peer.stop().await;
}

#[tokio::test]
async fn check_peer_on_an_invalid_name_fails_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (dns, _) = fed::dns_server(false, dir.path()).await;
    let us = Us::new(&dns, &TestCa::new().unwrap(), UsOptions::default());
    let report = check_peer(&us, "not a name").await;
    assert_fail(&report, "name", "invalid_name", "not a server name");
    assert_eq!(report.checks.len(), 1);
}
