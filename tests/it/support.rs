//! Helpers for integration tests that talk to an access.md server.
//!
//! [`Upstream::start`] targets the real server named by `MDGATE_TEST_UPSTREAM`
//! (e.g. `http://10.0.0.5:7000`, with its admin password in
//! `MDGATE_TEST_UPSTREAM_ADMIN_PASSWORD`), or else starts the in-process
//! emulator on `127.0.0.1:0`. [`Client`] is one identity: it keeps that
//! identity's `JSESSIONID`, never decompresses (so tests see raw encodings)
//! and never follows redirects. Usernames are unique per call, so tests can
//! share one real server and run in parallel.

#![allow(dead_code)] // Not every test module uses every helper.

use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use mdgate::emulator::{Emulator, EmulatorHandle, EmulatorOptions};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// Names a real access.md server to test against.
pub const UPSTREAM_ENV: &str = "MDGATE_TEST_UPSTREAM";
/// The real server's admin password.
pub const ADMIN_PASSWORD_ENV: &str = "MDGATE_TEST_UPSTREAM_ADMIN_PASSWORD";

/// The server under test: a real access.md or an in-process emulator.
pub struct Upstream {
    base: String,
    admin_password: String,
    emulator: Option<EmulatorHandle>,
}

/// Whether a real server is configured; prints why `test` is skipped if so.
pub fn skip_on_real_server(test: &str, why: &str) -> bool {
    let real = std::env::var(UPSTREAM_ENV).is_ok();
    if real {
        eprintln!("skipping {test} against a real server: {why}");
    }
    real
}

/// A username no other test uses.
pub fn unique(tag: &str) -> String {
    format!("{tag}-{}", uuid::Uuid::new_v4().simple())
}

impl Upstream {
    /// The real server if configured, else an emulator with default options
    /// (request recording on).
    pub async fn start() -> Self {
        Self::start_with(EmulatorOptions::default()).await
    }

    /// Like [`Upstream::start`]; `options` only apply to the emulator.
    pub async fn start_with(options: EmulatorOptions) -> Self {
        if let Ok(base) = std::env::var(UPSTREAM_ENV) {
            let admin_password = std::env::var(ADMIN_PASSWORD_ENV).unwrap_or_else(|_| {
                panic!("{UPSTREAM_ENV} is set, so {ADMIN_PASSWORD_ENV} must be too")
            });
            return Upstream {
                base: base.trim_end_matches('/').to_owned(),
                admin_password,
                emulator: None,
            };
        }
        let options = EmulatorOptions {
            admin_password: Some(
                options
                    .admin_password
                    .unwrap_or_else(|| unique("pw").replace('-', "")),
            ),
            record_requests: true,
            ..options
        };
        let emulator = Emulator::bind("127.0.0.1:0".parse().unwrap(), options)
            .await
            .expect("emulator starts");
        Upstream {
            base: emulator.base_url(),
            admin_password: emulator.admin_password().to_owned(),
            emulator: Some(emulator),
        }
    }

    /// For tests that need emulator knobs: `None`, after printing why the
    /// test is skipped, when a real server is configured.
    pub async fn emulator_only(test: &str, why: &str, options: EmulatorOptions) -> Option<Self> {
        if skip_on_real_server(test, why) {
            return None;
        }
        Some(Self::start_with(options).await)
    }

    /// The emulator, when that is what runs.
    pub fn emulator(&self) -> Option<&EmulatorHandle> {
        self.emulator.as_ref()
    }

    /// The emulator, mutably (to attach a control listener).
    pub fn emulator_mut(&mut self) -> Option<&mut EmulatorHandle> {
        self.emulator.as_mut()
    }

    /// Whether this is a real access.md server.
    pub fn is_real(&self) -> bool {
        self.emulator.is_none()
    }

    /// `http://host:port`.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The admin password.
    pub fn admin_password(&self) -> &str {
        &self.admin_password
    }

    /// A fresh identity with an empty cookie jar.
    pub fn client(&self) -> Client {
        Client::new(&self.base)
    }

    /// A client logged in as `admin`.
    pub async fn admin(&self) -> Client {
        let client = self.client();
        let resp = client.login("admin", &self.admin_password).await;
        assert_eq!(resp.status, StatusCode::OK, "admin login: {}", resp.text());
        client
    }

    /// Signs up and logs in a patient (names `First`/`Last`).
    pub async fn patient(&self, tag: &str) -> Identity {
        let username = unique(tag);
        let password = "secret-pw".to_owned();
        let client = self.client();
        let resp = client
            .post_json(
                "/api/patient/signup",
                &json!({"username": username, "password": password,
                        "telephoneNumber": "0790000000", "firstName": "First", "lastName": "Last"}),
            )
            .await;
        assert_eq!(resp.status, StatusCode::OK, "signup: {}", resp.text());
        Identity::login(client, username, password).await
    }

    /// Creates a doctor through the admin and logs it in.
    pub async fn doctor(&self, tag: &str) -> Identity {
        let username = unique(tag);
        let password = "doctor-pw".to_owned();
        let resp = self
            .admin()
            .await
            .post_json(
                "/api/admin/doctor",
                &json!({"username": username, "password": password,
                        "firstName": "Doc", "lastName": tag}),
            )
            .await;
        assert_eq!(
            resp.status,
            StatusCode::OK,
            "create doctor: {}",
            resp.text()
        );
        Identity::login(self.client(), username, password).await
    }

    /// Links a patient to a doctor with a fresh code, and checks the link.
    pub async fn link(&self, doctor: &Identity, patient: &Identity) {
        let code = patient.mint_code().await;
        let resp = doctor
            .client
            .post_json("/api/doctor/patient/add", &json!({ "code": code }))
            .await;
        assert_eq!(resp.status, StatusCode::OK, "consume: {}", resp.text());
        let check = doctor
            .client
            .get(&format!("/api/doctor/patient/{}", patient.id))
            .await;
        assert_eq!(check.status, StatusCode::OK, "linked: {}", check.text());
    }

    /// Real servers produce notifications asynchronously: give them time.
    pub async fn settle(&self) {
        if self.is_real() {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// A logged-in account.
pub struct Identity {
    pub client: Client,
    pub username: String,
    pub password: String,
    pub id: i64,
    /// The login response.
    pub user: Value,
}

impl Identity {
    async fn login(client: Client, username: String, password: String) -> Self {
        let resp = client.login(&username, &password).await;
        assert_eq!(
            resp.status,
            StatusCode::OK,
            "login {username}: {}",
            resp.text()
        );
        let user = resp.json();
        let id = user["id"].as_i64().expect("user id");
        Identity {
            client,
            username,
            password,
            id,
            user,
        }
    }

    /// A patient's new link code (R11).
    pub async fn mint_code(&self) -> String {
        let resp = self.client.get("/api/patient/code").await;
        assert_eq!(resp.status, StatusCode::OK, "code: {}", resp.text());
        resp.json()["code"].as_str().expect("code").to_owned()
    }

    /// Reads notifications until `n` arrived (or 3 s passed, for real servers).
    pub async fn notifications(&self, n: usize) -> Vec<Value> {
        let mut all = Vec::new();
        for _ in 0..30 {
            let resp = self.client.get("/api/notification").await;
            assert_eq!(
                resp.status,
                StatusCode::OK,
                "notifications: {}",
                resp.text()
            );
            all.extend(resp.json().as_array().cloned().unwrap_or_default());
            if all.len() >= n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        all
    }
}

/// One identity's HTTP client: keeps its `JSESSIONID`, no gzip decoding.
pub struct Client {
    http: reqwest::Client,
    base: String,
    session: Mutex<Option<String>>,
}

impl Client {
    /// A client for `base` with an empty jar.
    pub fn new(base: &str) -> Self {
        let http = reqwest::Client::builder()
            .no_gzip()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30))
            .build()
            .expect("http client");
        Client {
            http,
            base: base.to_owned(),
            session: Mutex::new(None),
        }
    }

    /// A client for `base` that sends through `http` (e.g. a client set up
    /// for mdgate's TLS listener), with an empty jar.
    pub fn with_http(base: &str, http: reqwest::Client) -> Self {
        Client {
            http,
            base: base.to_owned(),
            session: Mutex::new(None),
        }
    }

    /// The `JSESSIONID` this identity holds.
    pub fn session(&self) -> Option<String> {
        self.session.lock().unwrap().clone()
    }

    /// Replaces (or clears) the held `JSESSIONID`.
    pub fn set_session(&self, session: Option<String>) {
        *self.session.lock().unwrap() = session;
    }

    /// Starts a request.
    pub fn call(&self, method: Method, path: &str) -> Call<'_> {
        Call {
            client: self,
            method,
            path: path.to_owned(),
            headers: HeaderMap::new(),
            body: None,
            use_jar: true,
        }
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.call(Method::GET, path).send().await
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> Resp {
        self.call(Method::POST, path).json(body).send().await
    }

    pub async fn put_json(&self, path: &str, body: &Value) -> Resp {
        self.call(Method::PUT, path).json(body).send().await
    }

    pub async fn delete(&self, path: &str) -> Resp {
        self.call(Method::DELETE, path).send().await
    }

    /// `POST /api/login`, sent with whatever session this client holds.
    pub async fn login(&self, username: &str, password: &str) -> Resp {
        self.post_json(
            "/api/login",
            &json!({"username": username, "password": password}),
        )
        .await
    }
}

/// A request being built.
pub struct Call<'c> {
    client: &'c Client,
    method: Method,
    path: String,
    headers: HeaderMap,
    body: Option<Vec<u8>>,
    use_jar: bool,
}

impl Call<'_> {
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
        self
    }

    /// A JSON body with the web UI's `Content-Type`.
    pub fn json(self, body: &Value) -> Self {
        self.header("Content-Type", "application/json")
            .raw_body(body.to_string())
    }

    /// A body sent as is (no `Content-Type` added).
    pub fn raw_body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = Some(body.into());
        self
    }

    /// Neither send nor update this client's session.
    pub fn without_jar(mut self) -> Self {
        self.use_jar = false;
        self
    }

    pub async fn send(self) -> Resp {
        let url = format!("{}{}", self.client.base, self.path);
        let mut req = self
            .client
            .http
            .request(self.method, url)
            .headers(self.headers);
        if self.use_jar {
            if let Some(session) = self.client.session() {
                req = req.header("Cookie", format!("JSESSIONID={session}"));
            }
        }
        if let Some(body) = self.body {
            req = req.body(body);
        }
        let resp = req.send().await.expect("request reaches the server");
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.bytes().await.expect("response body");
        let resp = Resp {
            status,
            headers,
            body,
        };
        if self.use_jar {
            if let Some(session) = resp.session_cookie() {
                self.client.set_session(Some(session));
            }
        }
        resp
    }
}

/// A response, body undecoded.
#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Resp {
    /// A header's first value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// All values of a header.
    pub fn headers_named(&self, name: &str) -> Vec<&str> {
        self.headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect()
    }

    /// The `Content-Type`.
    pub fn content_type(&self) -> Option<&str> {
        self.header("content-type")
    }

    /// The body, gunzipped if `Content-Encoding: gzip`.
    pub fn decoded(&self) -> Vec<u8> {
        if self.header("content-encoding") == Some("gzip") {
            use std::io::Read as _;
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(&self.body[..])
                .read_to_end(&mut out)
                .expect("valid gzip");
            out
        } else {
            self.body.to_vec()
        }
    }

    /// The decoded body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.decoded()).into_owned()
    }

    /// The decoded body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.decoded())
            .unwrap_or_else(|e| panic!("JSON body expected ({e}): {}", self.text()))
    }

    /// The `Set-Cookie` headers.
    pub fn set_cookies(&self) -> Vec<&str> {
        self.headers_named("set-cookie")
    }

    /// The `JSESSIONID` a `Set-Cookie` hands out, if any.
    pub fn session_cookie(&self) -> Option<String> {
        self.set_cookies().iter().find_map(|c| {
            let value = c.strip_prefix("JSESSIONID=")?;
            Some(value.split(';').next().unwrap_or("").to_owned())
        })
    }

    /// Asserts the access.md login page (401 or 403).
    pub fn assert_login_page(&self, status: StatusCode) {
        assert_eq!(self.status, status, "{}", self.text());
        assert_eq!(self.content_type(), Some("text/html"));
        assert!(self.text().contains("<login></login>"), "login page body");
    }

    /// Asserts an "empty 200": `text/plain`, zero-length body.
    pub fn assert_empty_200(&self) {
        assert_eq!(self.status, StatusCode::OK, "{}", self.text());
        assert_eq!(self.content_type(), Some("text/plain"));
        assert!(self.body.is_empty(), "empty body, got {:?}", self.text());
    }

    /// Asserts a 500 with an empty body (the crashed exception handler).
    pub fn assert_500_empty(&self) {
        assert_eq!(
            self.status,
            StatusCode::INTERNAL_SERVER_ERROR,
            "{}",
            self.text()
        );
        assert!(self.body.is_empty(), "empty body, got {:?}", self.text());
    }

    /// Asserts a 500 `text/plain` with exactly this message.
    pub fn assert_500_text(&self, message: &str) {
        assert_eq!(
            self.status,
            StatusCode::INTERNAL_SERVER_ERROR,
            "{}",
            self.text()
        );
        assert_eq!(self.content_type(), Some("text/plain"));
        assert_eq!(self.text(), message);
    }

    /// Asserts a Javalin 400 with this plain-text message.
    pub fn assert_400(&self, message: &str) {
        assert_eq!(self.status, StatusCode::BAD_REQUEST, "{}", self.text());
        assert_eq!(self.content_type(), Some("text/plain"));
        assert_eq!(self.text(), message);
    }
}

/// The keys of each object in a top-level JSON array, in document order.
pub fn element_keys(json: &str) -> Vec<Vec<String>> {
    serde_json::from_str::<Vec<Keys>>(json)
        .expect("a JSON array of objects")
        .into_iter()
        .map(|k| k.0)
        .collect()
}

/// The top-level keys of a JSON object, in document order.
pub fn keys_in_order(json: &str) -> Vec<String> {
    serde_json::from_str::<Keys>(json).expect("a JSON object").0
}

/// Object keys in document order (serde_json's `Value` sorts them).
struct Keys(Vec<String>);

impl<'de> serde::Deserialize<'de> for Keys {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Keys;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Keys, A::Error> {
                let mut keys = Vec::new();
                while let Some((key, _)) = map.next_entry::<String, serde::de::IgnoredAny>()? {
                    keys.push(key);
                }
                Ok(Keys(keys))
            }
        }
        d.deserialize_map(Visitor)
    }
}

/// What the emulator received, less mdgate's readiness probes.
pub fn forwarded(up: &Upstream) -> Vec<mdgate::emulator::RecordedRequest> {
    up.emulator()
        .expect("only with the emulator")
        .received()
        .into_iter()
        .filter(|r| r.header("user-agent") != Some(mdgate::serve::PROBE_USER_AGENT))
        .collect()
}
