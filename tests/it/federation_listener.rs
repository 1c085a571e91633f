//! The federation listener: mutual TLS is required, the peer's identity is
//! its certificate's single DNS name, and nothing outside `/federation/v1/`
//! is served (let alone forwarded).

use std::time::Duration;

use mdgate::tls::pki::{self, LeafSpec, TestCa};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::gate::{self, Gate, GateOptions, FQDN};
use crate::support::Upstream;

fn pem(pair: (String, String)) -> String {
    format!("{}{}", pair.0, pair.1)
}

async fn federation_gate(up: &Upstream) -> Gate {
    let mut opts = GateOptions::new(up.base());
    opts.federation = true;
    Gate::start(opts).await
}

async fn identity(
    gate: &Gate,
    client_pem: Option<&str>,
) -> Result<reqwest::Response, reqwest::Error> {
    gate.federation_client(client_pem)
        .get(format!("{}/federation/v1/identity", gate.federation_base()))
        .send()
        .await
}

async fn failures(gate: &Gate, reason: &str) -> f64 {
    // The failure is counted once the server side finishes its handshake.
    for _ in 0..50 {
        let m = gate.metrics().await;
        let v = gate::metric(&m, &format!("mdgate_tls_handshake_failures_total{{listener=\"federation\",reason=\"{reason}\"}}"));
        if v > 0.0 {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    0.0
}

#[tokio::test]
async fn a_known_peer_is_identified_by_its_dns_name() {
    let up = Upstream::start().await;
    let gate = federation_gate(&up).await;
    let peer = pem(gate.ca.issue(&["hospital.example.org"]).unwrap());
    let resp = identity(&gate, Some(&peer))
        .await
        .expect("mutual TLS succeeds");
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body,
        json!({"server": FQDN, "peer": "hospital.example.org"})
    );
    gate.stop().await;
}

#[tokio::test]
async fn no_client_certificate_is_refused_in_the_handshake() {
    let up = Upstream::start().await;
    let gate = federation_gate(&up).await;
    assert!(identity(&gate, None).await.is_err());
    assert!(failures(&gate, "no_client_cert").await >= 1.0);
    gate.stop().await;
}

#[tokio::test]
async fn an_unknown_certificate_is_refused() {
    let up = Upstream::start().await;
    let gate = federation_gate(&up).await;
    let stranger_ca = TestCa::new().unwrap();
    let stranger = pem(stranger_ca.issue(&["hospital.example.org"]).unwrap());
    assert!(identity(&gate, Some(&stranger)).await.is_err());
    // Test CAs share one subject name, so the chain builder finds a
    // candidate issuer whose signature does not verify: `bad_certificate`.
    // A CA with another name gives `unknown_issuer`; both refuse.
    let refused =
        failures(&gate, "bad_certificate").await + failures(&gate, "unknown_issuer").await;
    assert!(refused >= 1.0, "{}", gate.metrics().await);
    let self_signed = pem(pki::self_signed("hospital.example.org").unwrap());
    assert!(identity(&gate, Some(&self_signed)).await.is_err());
    gate.stop().await;
}

#[tokio::test]
async fn a_certificate_naming_several_servers_is_refused() {
    let up = Upstream::start().await;
    let gate = federation_gate(&up).await;
    let two = pem(gate
        .ca
        .issue_with(&LeafSpec::dns(&["a.example.org", "b.example.org"]))
        .unwrap());
    assert!(identity(&gate, Some(&two)).await.is_err());
    assert!(failures(&gate, "identity").await >= 1.0);
    gate.stop().await;
}

#[tokio::test]
async fn pinned_keys_admit_self_signed_peers() {
    let up = Upstream::start().await;
    let (cert, key) = pki::self_signed("clinic.example.net").unwrap();
    let pin = hex::encode(pki::spki_sha256_of_pem(&cert).unwrap());
    let mut opts = GateOptions::new(up.base());
    opts.federation = true;
    opts.federation_trust_ca = false;
    opts.federation_trust = format!("pinned_spki_sha256 = [\"{pin}\"]");
    let gate = Gate::start(opts).await;
    let resp = identity(&gate, Some(&format!("{cert}{key}")))
        .await
        .expect("pinned peer admitted");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["peer"], "clinic.example.net");
    let other = pem(pki::self_signed("clinic.example.net").unwrap());
    assert!(
        identity(&gate, Some(&other)).await.is_err(),
        "same name, other key"
    );
    assert!(failures(&gate, "not_pinned").await >= 1.0);
    gate.stop().await;
}

#[tokio::test]
async fn nothing_outside_the_federation_prefix_is_served_or_forwarded() {
    let Some(up) = Upstream::emulator_only(
        "federation 404",
        "needs the emulator's record of received requests",
        Default::default(),
    )
    .await
    else {
        return;
    };
    let gate = federation_gate(&up).await;
    let peer = pem(gate.ca.issue(&["hospital.example.org"]).unwrap());
    let client = gate.federation_client(Some(&peer));
    for path in [
        "/api/symptom/codes",
        "/api/login",
        "/",
        "/federation/v1/../../api/symptom/codes",
        "/federation/v2/identity",
        "/federation/v1/unknown",
        "/federation/v1",
    ] {
        let resp = client
            .get(format!("{}{path}", gate.federation_base()))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::NOT_FOUND, "{path}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"], "not_found", "{path}");
    }
    let resp = client
        .post(format!("{}/api/login", gate.federation_base()))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert!(crate::support::forwarded(&up).is_empty());
    gate.stop().await;
}

#[tokio::test]
async fn reload_keeps_the_last_good_certificate() {
    let up = Upstream::start().await;
    let gate = Gate::start(GateOptions::new(up.base())).await;
    let request =
        format!("GET /api/symptom/codes HTTP/1.1\r\nHost: {FQDN}\r\nConnection: close\r\n\r\n");
    let (_, before) = gate
        .raw(FQDN, request.as_bytes(), Duration::from_secs(5))
        .await;
    assert!(!before.is_empty());

    // A broken certificate file: the reload fails, the old one stays.
    std::fs::write(
        gate.dir.path().join("public.crt"),
        "-----BEGIN CERTIFICATE-----\nnot a cert\n",
    )
    .unwrap();
    let running = gate.running.as_ref().unwrap();
    assert_eq!(running.reload(), 1);
    let (resp, during) = gate
        .raw(FQDN, request.as_bytes(), Duration::from_secs(5))
        .await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert_eq!(during[0], before[0], "still the old certificate");

    // A good new pair: the reload succeeds and new handshakes present it.
    let (cert, key) = gate.ca.issue(&[FQDN]).unwrap();
    gate::write_pair(gate.dir.path(), "public", &cert, &key);
    assert_eq!(running.reload(), 0);
    let (_, after) = gate
        .raw(FQDN, request.as_bytes(), Duration::from_secs(5))
        .await;
    assert_ne!(after[0], before[0], "the new certificate is served");
    let metrics = gate.metrics().await;
    assert_eq!(
        gate::metric(
            &metrics,
            "mdgate_certificate_reloads_total{listener=\"public\",result=\"failed\"}"
        ),
        1.0
    );
    assert_eq!(
        gate::metric(
            &metrics,
            "mdgate_certificate_reloads_total{listener=\"public\",result=\"ok\"}"
        ),
        1.0
    );
    gate.stop().await;
}

#[tokio::test]
async fn allow_and_deny_lists_apply_after_trust() {
    let up = Upstream::start().await;
    let start = |trust: &str| {
        let mut opts = GateOptions::new(up.base());
        opts.federation = true;
        opts.federation_trust = trust.to_owned();
        Gate::start(opts)
    };
    // Trusted by the CA, but on the deny-list.
    let gate = start("deny = [\"clinic.example.org\"]").await;
    let hospital = pem(gate.ca.issue(&["hospital.example.org"]).unwrap());
    assert_eq!(
        identity(&gate, Some(&hospital))
            .await
            .expect("not denied")
            .status(),
        StatusCode::OK
    );
    let clinic = pem(gate.ca.issue(&["clinic.example.org"]).unwrap());
    assert!(identity(&gate, Some(&clinic)).await.is_err());
    assert!(failures(&gate, "denied").await >= 1.0);
    gate.stop().await;
    // Trusted by the CA, but not on the allow-list.
    let gate = start("allow = [\"hospital.example.org\"]").await;
    let hospital = pem(gate.ca.issue(&["hospital.example.org"]).unwrap());
    assert_eq!(
        identity(&gate, Some(&hospital))
            .await
            .expect("allowed")
            .status(),
        StatusCode::OK
    );
    let lab = pem(gate.ca.issue(&["lab.example.org"]).unwrap());
    assert!(identity(&gate, Some(&lab)).await.is_err());
    assert!(failures(&gate, "not_allowed").await >= 1.0);
    gate.stop().await;
}
