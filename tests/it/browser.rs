//! The pages in a real browser: Debian's Chromium, headless, driven over
//! WebDriver (chromedriver) with `fantoccini`.
//!
//! Skipped, with the reason printed, when `/usr/bin/chromedriver` is not
//! installed (`apt-get install chromium chromium-driver`).
//!
//! The patient's and the doctor's journeys are written once (`patient_*`,
//! `doctor_*` below) and run against the real `Web` with a small scripted
//! access flow here, which checks what only a browser can: that Chromium
//! sends `Origin` on our forms under our `Referrer-Policy`, keeps the
//! `HttpOnly; SameSite=Strict` cookie, applies the CSP without blocking
//! the inline style or the forms, and that a typed code goes through.

use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use mdgate::federation::access::{AccessError, DoctorRequest, NewInvitation, PatientOverview};
use mdgate::policy::{Role, RouteId};
use mdgate::store;
use mdgate::upstream::{
    self, NewQuestion, Secret, SessionCookie, SignInError, SignedInUser, UpstreamId,
};
use mdgate::web::{Backend, Web};
use uuid::Uuid;

use crate::web::{pages_base, serve_pages};
use mdgate::demo::testbed::{Site, Testbed};

/// Where Debian puts the driver.
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// Debian's browser.
pub const CHROMIUM: &str = "/usr/bin/chromium";

/// Whether the browser tests can run; prints why not.
pub fn browser_available(test: &str) -> bool {
    if Path::new(CHROMEDRIVER).exists() && Path::new(CHROMIUM).exists() {
        return true;
    }
    eprintln!(
        "skipping {test}: {CHROMEDRIVER} or {CHROMIUM} is missing \
         (apt-get install chromium chromium-driver)"
    );
    false
}

/// A chromedriver process and one headless Chromium session.
pub struct Browser {
    pub client: Client,
    driver: tokio::process::Child,
    /// Where screenshots go when `MDGATE_SCREENSHOTS` names a directory.
    shots: Option<std::path::PathBuf>,
}

impl Browser {
    /// Starts chromedriver on a free port and opens a phone-sized
    /// headless window. `hosts` maps names to loopback for the browser
    /// (`--host-resolver-rules`), so pages can be opened by FQDN.
    pub async fn start(hosts: &[&str]) -> Browser {
        Browser::start_with(hosts, &[]).await
    }

    /// As [`start`](Self::start), treating `origins` (plain-HTTP test
    /// pages, served over HTTPS in production) as secure contexts, which
    /// WebCrypto requires.
    pub async fn start_with(hosts: &[&str], origins: &[String]) -> Browser {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let driver = tokio::process::Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("chromedriver starts");
        let url = format!("http://127.0.0.1:{port}");
        let mut args = vec![
            "--headless=new".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--no-first-run".to_owned(),
            "--window-size=412,915".to_owned(),
        ];
        if !origins.is_empty() {
            args.push(format!(
                "--unsafely-treat-insecure-origin-as-secure={}",
                origins.join(",")
            ));
        }
        if !hosts.is_empty() {
            let rules: Vec<String> = hosts.iter().map(|h| format!("MAP {h} 127.0.0.1")).collect();
            args.push(format!("--host-resolver-rules={}", rules.join(",")));
        }
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".to_owned(),
            serde_json::json!({ "binary": CHROMIUM, "args": args }),
        );
        caps.insert("acceptInsecureCerts".to_owned(), serde_json::json!(true));
        let mut last = None;
        for _ in 0..100 {
            match ClientBuilder::new(HttpConnector::new())
                .capabilities(caps.clone())
                .connect(&url)
                .await
            {
                Ok(client) => {
                    return Browser {
                        client,
                        driver,
                        shots: std::env::var_os("MDGATE_SCREENSHOTS").map(Into::into),
                    }
                }
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("cannot reach chromedriver: {last:?}");
    }

    /// Saves a screenshot as `<name>.png` when asked to (see `shots`).
    pub async fn shot(&self, name: &str) {
        if let Some(dir) = &self.shots {
            let png = self.client.screenshot().await.expect("screenshot");
            std::fs::create_dir_all(dir).unwrap();
            std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
        }
    }

    pub async fn goto(&self, url: &str) {
        self.client.goto(url).await.expect("navigation");
    }

    pub async fn source(&self) -> String {
        self.client.source().await.expect("page source")
    }

    pub async fn path(&self) -> String {
        self.client
            .current_url()
            .await
            .expect("current URL")
            .path()
            .to_owned()
    }

    pub async fn fill(&self, css: &str, text: &str) {
        let e = self.client.find(Locator::Css(css)).await.expect(css);
        e.clear().await.expect("clear");
        e.send_keys(text).await.expect("typing");
    }

    pub async fn click(&self, css: &str) {
        let e = self.client.find(Locator::Css(css)).await.expect(css);
        e.click().await.expect("click");
    }

    pub async fn select(&self, css: &str, value: &str) {
        let e = self.client.find(Locator::Css(css)).await.expect(css);
        e.select_by_value(value).await.expect("select");
    }

    pub async fn text(&self, css: &str) -> String {
        let e = self.client.find(Locator::Css(css)).await.expect(css);
        e.text().await.expect("text")
    }

    /// Waits for `css` to appear (after a form post and redirect).
    pub async fn wait_for(&self, css: &str) {
        self.client
            .wait()
            .at_most(Duration::from_secs(20))
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css} never appeared: {e}"));
    }

    /// Waits until the page's path ends with `suffix` (after a click on a
    /// link: the page it was on may have the same elements).
    pub async fn wait_for_path(&self, suffix: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while !self.path().await.ends_with(suffix) {
            if tokio::time::Instant::now() > deadline {
                panic!("never reached …{suffix}: on {}", self.path().await);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until an element `css` shows text starting with `prefix`: the
    /// page after a form post, not the one the form was on, which may have
    /// had an element of the same kind.
    pub async fn wait_for_text(&self, css: &str, prefix: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(e) = self.client.find(Locator::Css(css)).await {
                // Stale while the next page loads: look again.
                if let Ok(text) = e.text().await {
                    if text.starts_with(prefix) {
                        return;
                    }
                }
            }
            if tokio::time::Instant::now() > deadline {
                panic!("{css} never read {prefix:?}:\n{}", self.source().await);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Reloads until the page source contains `needle` (pages that wait
    /// for the other server).
    pub async fn reload_until(&self, needle: &str, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if self.source().await.contains(needle) {
                return;
            }
            if tokio::time::Instant::now() > deadline {
                panic!("{needle:?} never appeared:\n{}", self.source().await);
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
            self.client.refresh().await.expect("reload");
        }
    }

    pub async fn close(mut self) {
        let _ = self.client.clone().close().await;
        let _ = self.driver.kill().await;
    }
}

// ------------------------------------------------------- the journeys

/// Signs in on `base` (`http://host:port`) and lands on `home`.
pub async fn sign_in(b: &Browser, base: &str, username: &str, password: &str, home: &str) {
    b.goto(&format!("{base}/federation/")).await;
    b.wait_for("#username").await;
    b.fill("#username", username).await;
    b.fill("#password", password).await;
    b.click("form[action='/federation/sign-in'] button[type=submit]")
        .await;
    // The sign-in page has an h1 too: wait for the page after the post.
    b.wait_for_path(home).await;
    b.wait_for("h1").await;
    assert_eq!(b.path().await, home, "{}", b.source().await);
}

/// On the patient's page: the pending request of `doctor`, a wrong code
/// first (tries left shown), then `code` as the doctor's page shows it;
/// the grant appears.
pub async fn patient_approves(b: &Browser, doctor: &str, code: &str) {
    b.reload_until(doctor, Duration::from_secs(20)).await;
    b.shot("patient-pending").await;
    let form = "form[action$='/approve']";
    b.fill(&format!("{form} input[name=code]"), "00000-00000")
        .await;
    b.click(&format!("{form} button[type=submit]:not([formaction])"))
        .await;
    b.wait_for("p.error").await;
    let error = b.text("p.error").await;
    assert!(
        error.contains("tries left") || error.contains("try left"),
        "{error}"
    );
    b.shot("patient-wrong-code").await;

    // Typed as a person would: lower case, a space instead of the dash.
    let typed = code.to_lowercase().replace('-', " ");
    b.fill(&format!("{form} input[name=code]"), &typed).await;
    b.click(&format!("{form} button[type=submit]:not([formaction])"))
        .await;
    b.wait_for_text("p.notice", "Approved.").await;
    let grants = b.text("#grants + *").await;
    assert!(!grants.contains("Nobody on another server"), "{grants}");
    assert!(b.source().await.contains(doctor));
    b.shot("patient-granted").await;
}

/// On the patient's page: revokes the (only) live grant.
pub async fn patient_revokes(b: &Browser) {
    b.click("form[action$='/revoke'] button").await;
    // The page before had a notice too ("Approved.").
    b.wait_for_text("p.notice", "Revoked.").await;
    assert!(b
        .source()
        .await
        .contains("Nobody on another server can read your record now."));
    b.shot("patient-revoked").await;
}

/// On the doctor's page: a request from a pasted payload; returns the
/// code the page shows (read from the page, as the patient would).
pub async fn doctor_requests_and_reads_code(b: &Browser, payload: &str) -> String {
    b.wait_for("#payload").await;
    // Chromium on Linux has no BarcodeDetector: the scan button stays
    // hidden, which the script decides (so it ran under the CSP).
    let scan_hidden = b
        .client
        .find(Locator::Css("#scan"))
        .await
        .unwrap()
        .attr("hidden")
        .await
        .unwrap();
    assert!(
        scan_hidden.is_some(),
        "no camera scan without BarcodeDetector"
    );
    b.fill("#payload", payload).await;
    b.select("#role", "contributor").await;
    b.select("#duration", "86400").await;
    b.click("form[action='/federation/doctor/requests'] button[type=submit]")
        .await;
    b.wait_for("#code").await;
    assert!(b.path().await.starts_with("/federation/doctor/requests/"));
    b.shot("doctor-code").await;
    let shown = b.text("#code").await;
    // Shown in two groups for reading aloud; typed with the dash.
    let groups: Vec<&str> = shown.split_whitespace().collect();
    assert_eq!(groups.len(), 2, "{shown:?}");
    groups.join("-")
}

// ---------------------------------------- a scripted access flow

const CODE: &str = "K7M2Q-9XH4T";
const PASSWORD: &str = "browser-pw";
const DOCTOR: &str = "dr-who@two.mdgate.test";

fn now_ms() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

#[derive(Default)]
struct Scripted {
    pending: Mutex<Vec<store::AccessRequest>>,
    grants: Mutex<Vec<store::Grant>>,
    requests: Mutex<Vec<DoctorRequest>>,
}

fn user(name: &str, role: upstream::Role) -> SignedInUser {
    SignedInUser {
        upstream_id: UpstreamId(3),
        username: name.to_owned(),
        role,
        display_name: name.to_owned(),
        session: SessionCookie::from_value("node0browser.node0").unwrap(),
    }
}

#[async_trait::async_trait]
impl Backend for Scripted {
    async fn sign_in(&self, username: &str, password: Secret) -> Result<SignedInUser, SignInError> {
        match (username, password.expose() == PASSWORD) {
            ("patient", true) => Ok(user(username, upstream::Role::Patient)),
            ("doctor", true) => Ok(user(username, upstream::Role::Doctor)),
            _ => Err(SignInError::WrongCredentials),
        }
    }

    async fn patient_overview(&self, _: &SignedInUser) -> Result<PatientOverview, AccessError> {
        Ok(PatientOverview {
            address: "p@one.mdgate.test".to_owned(),
            patient: store::Patient {
                federation_id: Uuid::nil(),
                upstream_id: 3,
                created_at: 0,
                moved_to: None,
            },
            pending: self.pending.lock().unwrap().clone(),
            grants: self.grants.lock().unwrap().clone(),
            log: Vec::new(),
        })
    }

    async fn new_invitation(&self, _: &SignedInUser) -> Result<NewInvitation, AccessError> {
        Ok(NewInvitation {
            payload: "mdgate:00000000-0000-4000-8000-000000000000@one.mdgate.test?invitation=x"
                .to_owned(),
            expires_at: now_ms() + 3_600_000,
        })
    }

    async fn approve(
        &self,
        _: &SignedInUser,
        request: Uuid,
        code: &str,
        role: Option<Role>,
        duration: Option<Duration>,
    ) -> Result<store::Grant, AccessError> {
        let mut pending = self.pending.lock().unwrap();
        let i = pending
            .iter()
            .position(|r| r.id == request)
            .ok_or(AccessError::NotFound)?;
        let canon = |s: &str| {
            s.chars()
                .filter(|c| c.is_ascii_alphanumeric())
                .collect::<String>()
                .to_uppercase()
        };
        if canon(code) != canon(CODE) {
            pending[i].attempts += 1;
            return Err(AccessError::WrongCode {
                attempts_left: 3 - pending[i].attempts,
            });
        }
        let req = pending.remove(i);
        let grant = store::Grant {
            id: Uuid::new_v4(),
            request_id: req.id,
            patient: Uuid::nil(),
            server_fqdn: req.server_fqdn.clone(),
            server_key_sha256: [0; 32],
            doctor: req.doctor.clone(),
            role: role.map_or(req.role.clone(), |r| r.as_str().to_owned()),
            not_before: now_ms() - 1,
            expires_at: now_ms() + duration.map_or(req.duration_ms, |d| d.as_millis() as i64),
            revoked_at: None,
        };
        self.grants.lock().unwrap().push(grant.clone());
        Ok(grant)
    }

    async fn deny(&self, _: &SignedInUser, _: Uuid) -> Result<(), AccessError> {
        Err(AccessError::NotFound)
    }

    async fn revoke(&self, _: &SignedInUser, grant: Uuid) -> Result<(), AccessError> {
        let mut grants = self.grants.lock().unwrap();
        let g = grants
            .iter_mut()
            .find(|g| g.id == grant)
            .ok_or(AccessError::NotFound)?;
        g.revoked_at = Some(now_ms());
        Ok(())
    }

    async fn start_request(
        &self,
        _: &SignedInUser,
        payload: &str,
        role: Role,
        duration: Duration,
    ) -> Result<DoctorRequest, AccessError> {
        if !payload.starts_with("mdgate:") {
            return Err(AccessError::BadInput(
                "the QR code is not an mdgate patient code",
            ));
        }
        let r = DoctorRequest {
            id: Uuid::new_v4(),
            patient_address: "p@one.mdgate.test".to_owned(),
            server: "one.mdgate.test".to_owned(),
            role,
            duration,
            code: Some(CODE.to_owned()),
            state: "pending",
            reason: None,
            created_at: now_ms(),
            expires_at: now_ms() + 600_000,
            granted_role: None,
            grant_expires_at: None,
            readable: false,
        };
        self.requests.lock().unwrap().push(r.clone());
        Ok(r)
    }

    async fn doctor_requests(&self, _: &SignedInUser) -> Result<Vec<DoctorRequest>, AccessError> {
        Ok(self.requests.lock().unwrap().clone())
    }

    async fn doctor_request(
        &self,
        _: &SignedInUser,
        id: Uuid,
    ) -> Result<DoctorRequest, AccessError> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .find(|r| r.id == id)
            .cloned()
            .ok_or(AccessError::NotFound)
    }

    async fn remote_read(
        &self,
        _: &SignedInUser,
        _: Uuid,
        _: RouteId,
    ) -> Result<serde_json::Value, AccessError> {
        Err(AccessError::Closed { state: "pending" })
    }

    async fn remote_ask(
        &self,
        _: &SignedInUser,
        _: Uuid,
        _: &NewQuestion,
    ) -> Result<(), AccessError> {
        Err(AccessError::Closed { state: "pending" })
    }

    async fn webfinger(&self, _: &str) -> Result<Option<serde_json::Value>, AccessError> {
        Ok(None)
    }
}

impl Scripted {
    fn add_pending(&self) {
        let id = Uuid::new_v4();
        self.pending.lock().unwrap().push(store::AccessRequest {
            id,
            kind: store::RequestKind::Access,
            patient: Uuid::nil(),
            invitation: Uuid::nil(),
            server_fqdn: "two.mdgate.test".to_owned(),
            doctor: DOCTOR.to_owned(),
            role: "contributor".to_owned(),
            duration_ms: 86_400_000,
            code_hash: [0; 32],
            requester_cert_sha256: None,
            attempts: 0,
            state: store::RequestState::Pending,
            created_at: now_ms(),
            expires_at: now_ms() + 600_000,
            decided_at: None,
            idempotency_key: id.to_string(),
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_pages_with_a_scripted_flow() {
    if !browser_available("browser_pages_with_a_scripted_flow") {
        return;
    }
    let backend = Arc::new(Scripted::default());
    let web = Arc::new(Web::with_backend(
        backend.clone(),
        &mdgate::config::Access::default(),
        Arc::new(mdgate::admin::Metrics::new()),
        Arc::new(mdgate::dns::SystemClock),
    ));
    let addr = serve_pages(web).await;
    let base = format!("http://127.0.0.1:{}", addr.port());
    let b = Browser::start(&[]).await;

    // A wrong password: the form again, with a message.
    b.goto(&format!("{base}/federation/")).await;
    b.fill("#username", "patient").await;
    b.fill("#password", "wrong").await;
    b.click("form[action='/federation/sign-in'] button[type=submit]")
        .await;
    b.wait_for("p.error").await;
    assert!(b.text("p.error").await.contains("wrong"));

    // The patient: QR code, then a request arrives and is approved.
    sign_in(&b, &base, "patient", PASSWORD, "/federation/patient").await;
    assert!(b.source().await.contains("<svg"), "the QR code");
    b.shot("patient-waiting").await;
    backend.add_pending();
    patient_approves(&b, DOCTOR, CODE).await;
    patient_revokes(&b).await;
    b.click("form[action='/federation/sign-out'] button").await;
    b.wait_for("#username").await;

    // The doctor: a request from a pasted payload, and its code.
    sign_in(&b, &base, "doctor", PASSWORD, "/federation/doctor").await;
    let code = doctor_requests_and_reads_code(
        &b,
        "mdgate:00000000-0000-4000-8000-000000000000@one.mdgate.test?invitation=x",
    )
    .await;
    assert_eq!(code, CODE);
    b.close().await;
}

// ------------------------------------------- the real flow, two servers

/// Both journeys on two complete servers (`mdgate::demo::testbed`): the
/// patient on `one` shows the QR text, the doctor on `two` pastes it and
/// gets the code, the patient types it, the doctor reads, the patient
/// revokes and the doctor's next read is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_real_flow_across_two_servers() {
    if !browser_available("browser_real_flow_across_two_servers") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let bed = Testbed::start(dir.path(), &["one", "two"], "")
        .await
        .unwrap_or_else(|e| panic!("testbed: {e}"));
    let (one, two) = (&bed.sites[0], &bed.sites[1]);
    // By name, so each site keeps its own cookies (cookies ignore ports).
    let (base1, base2) = (pages_base(one).await, pages_base(two).await);
    let by_name = |site: &Site, base: &str| base.replace("127.0.0.1", &site.fqdn);
    let (url1, url2) = (by_name(one, &base1), by_name(two, &base2));
    let url = |s: &Site| {
        if s.fqdn == one.fqdn {
            url1.clone()
        } else {
            url2.clone()
        }
    };
    let b = Browser::start(&[&one.fqdn, &two.fqdn]).await;

    sign_in(
        &b,
        &url(one),
        &one.patient.username,
        &one.patient.password,
        "/federation/patient",
    )
    .await;
    let payload = b.text("#payload").await;
    assert!(payload.starts_with("mdgate:"), "{payload}");

    sign_in(
        &b,
        &url(two),
        &two.doctor.username,
        &two.doctor.password,
        "/federation/doctor",
    )
    .await;
    let code = doctor_requests_and_reads_code(&b, &payload).await;
    let request_page = b.client.current_url().await.unwrap().to_string();

    b.goto(&format!("{}/federation/patient", url(one))).await;
    let doctor = format!("{}@{}", two.doctor.username, two.fqdn);
    patient_approves(&b, &doctor, &code).await;

    // The doctor's page learns of the grant and reads the record.
    b.goto(&request_page).await;
    b.reload_until("/record/profile", Duration::from_secs(30))
        .await;
    b.shot("doctor-approved").await;
    b.click("a[href$='/record/record']").await;
    b.wait_for_path("/record/record").await;
    b.wait_for("dl").await;
    assert!(b.source().await.contains("<dt>Name</dt>"));
    b.shot("doctor-record").await;
    b.click("a[href$='/record/vitals']").await;
    b.wait_for_path("/record/vitals").await;
    b.wait_for_text("h1", "Vital signs").await;

    // The patient revokes; the doctor's next read is refused.
    b.goto(&format!("{}/federation/patient", url(one))).await;
    patient_revokes(&b).await;
    assert!(
        b.source().await.contains("revoked the access of"),
        "the access log"
    );
    b.goto(&format!("{request_page}/record/vitals")).await;
    b.wait_for("h1").await;
    assert_ne!(b.text("h1").await, "Vital signs", "{}", b.source().await);
    b.shot("doctor-refused").await;
    b.close().await;
    bed.shutdown().await;
}

/// The transfer in the browser: the doctor starts a move, the patient
/// approves with the code while Chromium makes the key (WebCrypto), then
/// follows the link to the new home and hands the key over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_transfer_with_a_key_made_in_the_browser() {
    if !browser_available("browser_transfer_with_a_key_made_in_the_browser") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let bed = Testbed::start(dir.path(), &["one", "two"], "")
        .await
        .unwrap_or_else(|e| panic!("testbed: {e}"));
    let (one, two) = (&bed.sites[0], &bed.sites[1]);
    let (base1, base2) = (pages_base(one).await, pages_base(two).await);
    let url1 = base1.replace("127.0.0.1", &one.fqdn);
    let url2 = base2.replace("127.0.0.1", &two.fqdn);
    let b = Browser::start_with(&[&one.fqdn, &two.fqdn], &[url1.clone(), url2.clone()]).await;

    sign_in(
        &b,
        &url1,
        &one.patient.username,
        &one.patient.password,
        "/federation/patient",
    )
    .await;
    let payload = b.text("#payload").await;
    sign_in(
        &b,
        &url2,
        &two.doctor.username,
        &two.doctor.password,
        "/federation/doctor",
    )
    .await;
    b.fill("#transfer-payload", &payload).await;
    b.click("form[action='/federation/doctor/transfers'] button[type=submit]")
        .await;
    b.wait_for("#code").await;
    let code = b
        .text("#code")
        .await
        .split_whitespace()
        .collect::<Vec<_>>()
        .join("-");
    b.shot("transfer-doctor-code").await;

    // The patient approves; the key is made by the page's script.
    b.goto(&format!("{url1}/federation/patient")).await;
    b.reload_until("Approve the move", Duration::from_secs(20))
        .await;
    b.fill("form[data-transfer] input[name=code]", &code).await;
    b.click("form[data-transfer] button[type=submit]:not([formaction])")
        .await;
    b.reload_until("Continue on", Duration::from_secs(60)).await;
    b.shot("transfer-patient-continue").await;
    let href = b
        .client
        .find(Locator::Css("a[data-transfer]"))
        .await
        .unwrap()
        .attr("href")
        .await
        .unwrap()
        .expect("a link to the new home");
    assert!(
        href.contains("#approval=") && href.contains("&key="),
        "{href}"
    );

    // The new home's page, opened from that link (plain HTTP here).
    let target = href.replace(&format!("https://{}", two.fqdn), &url2);
    b.goto(&target).await;
    b.wait_for("#handover").await;
    let filled = b
        .client
        .find(Locator::Css("#key"))
        .await
        .unwrap()
        .prop("value")
        .await
        .unwrap()
        .unwrap_or_default();
    assert_eq!(filled.len(), 43, "the script filled the key from the link");
    b.fill("#username", "moved-in-browser").await;
    b.fill("#password", "browser-new-pw").await;
    b.fill("#password2", "browser-new-pw").await;
    b.click("#handover button[type=submit]").await;
    b.reload_until("Your record is here", Duration::from_secs(60))
        .await;
    b.shot("transfer-handed-over").await;
    b.close().await;

    // The old home confirms the move.
    let access1 = one.running().access.clone().unwrap();
    let patient = access1
        .sign_in(
            &one.patient.username,
            Secret::new(one.patient.password.clone()),
        )
        .await
        .unwrap();
    let mut state = String::new();
    for _ in 0..200 {
        let list = mdgate::federation::transfer::patient_transfers(&access1, &patient)
            .await
            .unwrap();
        state = list[0].state().to_owned();
        if state == "moved" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(state, "moved");
    bed.shutdown().await;
}
