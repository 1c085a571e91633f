//! The pages over HTTP on complete servers (`mdgate::demo::testbed`: an
//! access.md emulator and an mdgate per site, real DNS, real mutual TLS
//! between the sites): signing in, the CSRF refusals, the patient
//! approving a request from the other site with the doctor's code, a
//! wrong code, an upstream restart in the middle, and revocation.
//!
//! The client here is plain HTTP with a cookie jar and an `Origin`
//! header, as a browser sends them; `browser` drives a real one.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use mdgate::demo::testbed::{Login, Site, Testbed};
use mdgate::proxy::ConnInfo;
use mdgate::web::Web;
use reqwest::header::{self, HeaderMap};
use reqwest::{Method, StatusCode};
use tokio::net::TcpListener;

/// Serves `web` alone over plain HTTP on loopback (as a public listener
/// with `plain_http` would).
pub async fn serve_pages(web: Arc<Web>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, client)) = listener.accept().await else {
                return;
            };
            let web = web.clone();
            tokio::spawn(async move {
                let conn = ConnInfo {
                    listener: "public",
                    client,
                    tls: false,
                    sni: None,
                    peer: None,
                    framing_violation: OnceLock::new(),
                };
                let service = hyper::service::service_fn(move |req| {
                    let web = web.clone();
                    let conn = conn.clone();
                    async move { Ok::<_, Infallible>(web.handle(&conn, req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// The base URL of `site`'s pages: its public listener, which hands
/// `/federation/` and WebFinger to the pages.
pub async fn pages_base(site: &Site) -> String {
    site.public_url()
}

/// One browser's worth of state against one site's public listener.
struct Visitor {
    http: reqwest::Client,
    base: String,
    jar: HashMap<String, String>,
    origin: Option<String>,
    extra: Vec<(&'static str, String)>,
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Answer {
    fn location(&self) -> &str {
        self.headers
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// The value of the first element `attr_marker` opens (e.g.
    /// `id="payload">`), up to the next `<`, HTML entities decoded.
    fn element_text(&self, marker: &str) -> String {
        let start = self
            .body
            .find(marker)
            .unwrap_or_else(|| panic!("{marker} not on the page:\n{}", self.body))
            + marker.len();
        let end = self.body[start..].find('<').unwrap();
        unescape(&self.body[start..start + end])
    }

    fn csrf(&self) -> String {
        let marker = "name=\"csrf\" value=\"";
        let start = self.body.find(marker).expect("a form") + marker.len();
        let end = self.body[start..].find('"').unwrap();
        unescape(&self.body[start..start + end])
    }
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

fn encode(fields: &[(&str, &str)]) -> String {
    fields
        .iter()
        .map(|(k, v)| {
            format!(
                "{}={}",
                percent_encoding::utf8_percent_encode(k, percent_encoding::NON_ALPHANUMERIC),
                percent_encoding::utf8_percent_encode(v, percent_encoding::NON_ALPHANUMERIC)
            )
        })
        .collect::<Vec<_>>()
        .join("&")
}

impl Visitor {
    fn new(base: &str) -> Visitor {
        let base = base.to_owned();
        Visitor {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .no_proxy()
                .timeout(Duration::from_secs(20))
                .build()
                .unwrap(),
            origin: Some(base.clone()),
            base,
            jar: HashMap::new(),
            extra: Vec::new(),
        }
    }

    async fn send(&mut self, method: Method, path: &str, body: Option<String>) -> Answer {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if !self.jar.is_empty() {
            let cookie: Vec<String> = self.jar.iter().map(|(k, v)| format!("{k}={v}")).collect();
            req = req.header(header::COOKIE, cookie.join("; "));
        }
        if let Some(body) = body {
            req = req
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(body);
            if let Some(o) = &self.origin {
                req = req.header(header::ORIGIN, o.as_str());
            }
        }
        for (k, v) in &self.extra {
            req = req.header(*k, v.as_str());
        }
        let resp = req.send().await.expect("the public listener answers");
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.text().await.unwrap();
        for c in headers.get_all(header::SET_COOKIE) {
            let c = c.to_str().unwrap();
            let (pair, attrs) = c.split_once(';').unwrap_or((c, ""));
            let (name, value) = pair.split_once('=').unwrap();
            if attrs.contains("Max-Age=0") {
                self.jar.remove(name);
            } else {
                self.jar.insert(name.to_owned(), value.to_owned());
            }
        }
        Answer {
            status,
            headers,
            body,
        }
    }

    async fn get(&mut self, path: &str) -> Answer {
        self.send(Method::GET, path, None).await
    }

    async fn post(&mut self, path: &str, fields: &[(&str, &str)]) -> Answer {
        self.send(Method::POST, path, Some(encode(fields))).await
    }

    async fn sign_in(&mut self, login: &Login) -> Answer {
        let page = self.get("/federation/").await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        self.post(
            "/federation/sign-in",
            &[
                ("csrf", &page.csrf()),
                ("username", &login.username),
                ("password", &login.password),
            ],
        )
        .await
    }
}

async fn testbed(names: &[&str]) -> (tempfile::TempDir, Testbed) {
    let dir = tempfile::tempdir().unwrap();
    let bed = Testbed::start(dir.path(), names, "")
        .await
        .unwrap_or_else(|e| panic!("testbed: {e}"));
    (dir, bed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_sign_in_wrong_and_right() {
    let (_dir, bed) = testbed(&["one"]).await;
    let one = &bed.sites[0];
    let base = pages_base(one).await;

    let mut v = Visitor::new(&base);
    let wrong = v
        .sign_in(&Login {
            username: one.patient.username.clone(),
            password: "not the password".to_owned(),
        })
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED, "{}", wrong.body);
    assert!(wrong.body.contains("The username or the password is wrong"));
    assert!(!wrong.body.contains("not the password"));
    assert!(!v.jar.contains_key("mdgate"), "no session");

    let ok = v.sign_in(&one.patient).await;
    assert_eq!(ok.status, StatusCode::SEE_OTHER, "{}", ok.body);
    assert_eq!(ok.location(), "/federation/patient");
    let cookie = ok
        .headers
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|c| c.to_str().unwrap().to_owned())
        .find(|c| c.starts_with("mdgate="))
        .expect("session cookie");
    assert!(
        cookie.ends_with("; Path=/; HttpOnly; SameSite=Strict"),
        "{cookie}"
    );
    let page = v.get("/federation/patient").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(page.body.contains("<svg"), "a QR code");
    assert!(page.element_text("id=\"payload\">").starts_with("mdgate:"));
    assert_eq!(
        page.headers[header::X_CONTENT_TYPE_OPTIONS],
        "nosniff",
        "security headers"
    );

    let mut d = Visitor::new(&base);
    let ok = d.sign_in(&one.doctor).await;
    assert_eq!(ok.location(), "/federation/doctor");
    let page = d.get("/federation/doctor").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);

    // access.md down: a clear page, not an error dump.
    let mut bed = bed;
    bed.sites[0].stop_upstream().await;
    let mut late = Visitor::new(&base);
    let down = late.sign_in(&bed.sites[0].patient).await;
    assert_eq!(
        down.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        down.body
    );
    assert!(down.body.contains("not answering right now"));
    bed.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_refuse_forged_forms() {
    let (_dir, bed) = testbed(&["one"]).await;
    let one = &bed.sites[0];
    let mut v = Visitor::new(&pages_base(one).await);
    assert_eq!(v.sign_in(&one.patient).await.status, StatusCode::SEE_OTHER);
    let csrf = v.get("/federation/patient").await.csrf();

    // Missing token, wrong token.
    let r = v.post("/federation/patient/invitation", &[]).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    assert!(r.body.contains("Form not accepted"));
    let r = v
        .post("/federation/patient/invitation", &[("csrf", "AAAA")])
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // The right token from another origin, with no origin, or cross-site.
    v.origin = Some("http://evil.example".to_owned());
    let r = v
        .post("/federation/patient/invitation", &[("csrf", &csrf)])
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    v.origin = None;
    let r = v
        .post("/federation/patient/invitation", &[("csrf", &csrf)])
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    v.origin = Some(v.base.clone());
    v.extra = vec![("sec-fetch-site", "cross-site".to_owned())];
    let r = v
        .post("/federation/patient/invitation", &[("csrf", &csrf)])
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // And the genuine form goes through.
    v.extra = vec![("sec-fetch-site", "same-origin".to_owned())];
    let r = v
        .post("/federation/patient/invitation", &[("csrf", &csrf)])
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);

    // Unknown pages and methods.
    assert_eq!(
        v.get("/federation/nope").await.status,
        StatusCode::NOT_FOUND
    );
    let r = v.send(Method::PUT, "/federation/patient", None).await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    bed.shutdown().await;
}

/// The doctor on `two` asks for the patient on `one` through the pages;
/// returns the request's page path and the code it shows.
async fn doctor_asks(patient: &mut Visitor, doctor: &mut Visitor, role: &str) -> (String, String) {
    let page = patient.get("/federation/patient").await;
    let payload = page.element_text("id=\"payload\">");
    let form = doctor.get("/federation/doctor").await;
    let sent = doctor
        .post(
            "/federation/doctor/requests",
            &[
                ("csrf", &form.csrf()),
                ("payload", &payload),
                ("role", role),
                ("duration", "86400"),
            ],
        )
        .await;
    assert_eq!(sent.status, StatusCode::SEE_OTHER, "{}", sent.body);
    let path = sent.location().to_owned();
    let page = doctor.get(&path).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let code = page
        .element_text("id=\"code\" ")
        .split_once('>')
        .map(|(_, c)| c.split_whitespace().collect::<Vec<_>>().join("-"))
        .unwrap_or_default();
    assert_eq!(code.len(), 11, "code shown as two groups: {code:?}");
    (path, code)
}

/// Reloads the patient's page until a request is pending; returns the
/// page and the approve form's path.
async fn pending_request(patient: &mut Visitor, doctor_name: &str) -> (Answer, String) {
    for _ in 0..100 {
        let page = patient.get("/federation/patient").await;
        if page.body.contains(doctor_name) && page.body.contains("/approve\"") {
            let marker = "action=\"/federation/patient/requests/";
            let start = page.body.find(marker).unwrap() + "action=\"".len();
            let end = page.body[start..].find('"').unwrap();
            let path = page.body[start..start + end].to_owned();
            return (page, path);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no pending request from {doctor_name}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patient_approves_with_the_code_and_revokes_through_the_pages() {
    let (_dir, bed) = testbed(&["one", "two"]).await;
    let mut patient = Visitor::new(&pages_base(&bed.sites[0]).await);
    let mut doctor = Visitor::new(&pages_base(&bed.sites[1]).await);
    assert_eq!(
        patient.sign_in(&bed.sites[0].patient).await.status,
        StatusCode::SEE_OTHER
    );
    assert_eq!(
        doctor.sign_in(&bed.sites[1].doctor).await.status,
        StatusCode::SEE_OTHER
    );
    let doctor_name = format!("{}@{}", bed.sites[1].doctor.username, bed.sites[1].fqdn);

    let first = patient.get("/federation/patient").await;
    let payload = first.element_text("id=\"payload\">");
    let (request_path, code) = doctor_asks(&mut patient, &mut doctor, "contributor").await;
    let (page, approve) = pending_request(&mut patient, &doctor_name).await;
    let csrf = page.csrf();
    assert!(page.body.contains("Requests waiting for you (1)"));
    assert!(page.body.contains("Your code was used"), "single use");
    assert!(!page.body.contains(&payload));

    // A wrong code: the page says how many tries are left.
    let wrong = patient
        .post(&approve, &[("csrf", &csrf), ("code", "00000-00000")])
        .await;
    assert_eq!(
        wrong.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        wrong.body
    );
    assert!(wrong.body.contains("2 tries left"), "{}", wrong.body);

    // access.md restarts: the patient's upstream session is gone, which
    // approval needs (to link the patient to the federation account).
    bed.sites[0].emulator().restart();
    let ended = patient
        .post(&approve, &[("csrf", &csrf), ("code", &code)])
        .await;
    assert_eq!(ended.status, StatusCode::UNAUTHORIZED, "{}", ended.body);
    assert!(
        ended.body.contains("Please sign in again."),
        "{}",
        ended.body
    );
    assert!(ended.body.contains("action=\"/federation/sign-in\""));
    assert_eq!(
        patient.get("/federation/patient").await.location(),
        "/federation/",
        "the session is gone"
    );

    // Signed in again, the same request still waits; the code approves it.
    assert_eq!(
        patient.sign_in(&bed.sites[0].patient).await.status,
        StatusCode::SEE_OTHER
    );
    let (page, approve) = pending_request(&mut patient, &doctor_name).await;
    let ok = patient
        .post(
            &approve,
            &[
                ("csrf", &page.csrf()),
                ("code", &code.to_lowercase()),
                ("role", "viewer"),
            ],
        )
        .await;
    assert_eq!(ok.status, StatusCode::SEE_OTHER, "{}", ok.body);
    let page = patient.get("/federation/patient").await;
    assert!(page.body.contains("Approved."), "{}", page.body);
    assert!(page.body.contains("Requests waiting for you (0)"));
    assert!(page.body.contains("/revoke\""));

    // The doctor sees the approval and reads the record.
    let mut approved = None;
    for _ in 0..100 {
        let p = doctor.get(&request_path).await;
        if p.body.contains("/record/vitals\"") {
            approved = Some(p);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let approved = approved.expect("the grant reached the doctor's server");
    assert!(
        !approved.body.contains("Ask the patient a question"),
        "viewer only"
    );
    let record = doctor.get(&format!("{request_path}/record/record")).await;
    assert_eq!(record.status, StatusCode::OK, "{}", record.body);
    assert!(record.body.contains("<dt>Name</dt>"), "{}", record.body);

    // Revoke: effective at once.
    let marker = "action=\"/federation/patient/grants/";
    let start = page.body.find(marker).unwrap() + "action=\"".len();
    let end = page.body[start..].find('"').unwrap();
    let revoke = page.body[start..start + end].to_owned();
    let r = patient.post(&revoke, &[("csrf", &page.csrf())]).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let page = patient.get("/federation/patient").await;
    assert!(page.body.contains("Revoked."));
    assert!(page
        .body
        .contains("Nobody on another server can read your record now."));
    assert!(
        page.body.contains("revoked the access of"),
        "the access log"
    );
    let refused = doctor.get(&format!("{request_path}/record/vitals")).await;
    assert_ne!(refused.status, StatusCode::OK, "{}", refused.body);

    // The used code is never shown again (this session made a new one).
    assert!(!page.body.contains(&payload));

    // WebFinger knows the patient.
    let address = payload
        .trim_start_matches("mdgate:")
        .split('?')
        .next()
        .unwrap()
        .to_owned();
    let wf = patient
        .get(&format!("/.well-known/webfinger?resource=acct:{address}"))
        .await;
    assert_eq!(wf.status, StatusCode::OK, "{}", wf.body);
    assert_eq!(wf.headers[header::CONTENT_TYPE], "application/jrd+json");
    assert_eq!(wf.headers[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
    bed.shutdown().await;
}
