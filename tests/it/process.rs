//! The `mdgate` binary as an admin runs it: `check-config`, signals
//! (SIGHUP reload, SIGTERM drain) and what reaches its log.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mdgate::tls::pki::TestCa;
use reqwest::StatusCode;
use serde_json::Value;

use crate::fake::Stepper;
use crate::gate::{self, GateOptions, FQDN};
use crate::support::{self, Upstream};

const BIN: &str = env!("CARGO_BIN_EXE_mdgate");

/// A running `mdgate serve` process with its stderr collected.
struct Proc {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
    public: SocketAddr,
    admin: SocketAddr,
    dir: tempfile::TempDir,
    ca: TestCa,
}

impl Proc {
    async fn start(opts: GateOptions, env: &[(&str, &str)]) -> Proc {
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::new().unwrap();
        std::fs::write(dir.path().join("ca.crt"), ca.cert_pem()).unwrap();
        let (cert, key) = ca.issue(&[FQDN]).unwrap();
        gate::write_pair(dir.path(), "public", &cert, &key);
        let config = dir.path().join("mdgate.toml");
        std::fs::write(&config, gate::config_text(dir.path(), &opts)).unwrap();
        let mut cmd = Command::new(BIN);
        cmd.args(["serve", "-c"])
            .arg(&config)
            .args(["--log-format", "json"])
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("mdgate starts");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel::<(SocketAddr, SocketAddr)>();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    if v["fields"]["message"] == "mdgate started" {
                        let p = v["fields"]["public"].as_str().unwrap().parse().unwrap();
                        let a = v["fields"]["admin"].as_str().unwrap().parse().unwrap();
                        let _ = tx.send((p, a));
                    }
                }
                sink.lock().unwrap().push(line);
            }
        });
        let (public, admin) =
            tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(30)))
                .await
                .unwrap()
                .unwrap_or_else(|_| panic!("mdgate did not start: {:?}", log.lock().unwrap()));
        Proc {
            child,
            log,
            public,
            admin,
            dir,
            ca,
        }
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig}");
    }

    fn http(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(
                reqwest::Certificate::from_pem(self.ca.cert_pem().as_bytes()).unwrap(),
            )
            .resolve(FQDN, self.public)
            .http1_only()
            .no_proxy()
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap()
    }

    fn base(&self) -> String {
        format!("https://{FQDN}:{}", self.public.port())
    }

    fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    async fn wait_ready(&self) {
        for _ in 0..100 {
            if let Ok(r) = reqwest::get(format!("http://{}/ready", self.admin)).await {
                if r.status() == StatusCode::OK {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("never ready: {}", self.log_text());
    }

    /// Waits for the process to exit, returning its status code.
    async fn wait_exit(mut self, within: Duration) -> (Option<i32>, String) {
        let deadline = std::time::Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // Let the reader thread drain the pipe.
                tokio::time::sleep(Duration::from_millis(100)).await;
                return (status.code(), self.log_text());
            }
            if std::time::Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("mdgate did not exit: {}", self.log_text());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn check_config(path: &Path) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(["check-config", "-c"])
        .arg(path)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_config_accepts_a_good_file_and_locates_errors_in_a_bad_one() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new().unwrap();
    let (cert, key) = ca.issue(&[FQDN]).unwrap();
    gate::write_pair(dir.path(), "public", &cert, &key);
    let good = gate::config_text(dir.path(), &GateOptions::new("127.0.0.1:7000"));
    let path = dir.path().join("mdgate.toml");
    std::fs::write(&path, &good).unwrap();
    let (code, stdout, stderr) = check_config(&path);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("successful"), "{stdout}");

    // An unknown key: its file, line and column, and the key.
    let bad = good.replace(
        "connect_timeout = \"1s\"",
        "connect_timeout = \"1s\"\nconect_retries = 3",
    );
    std::fs::write(&path, &bad).unwrap();
    let line = bad
        .lines()
        .position(|l| l.starts_with("conect_retries"))
        .unwrap()
        + 1;
    let (code, _, stderr) = check_config(&path);
    assert_eq!(code, 64);
    assert!(
        stderr.contains(&format!("{}:{line}:1:", path.display())),
        "{stderr}"
    );
    assert!(stderr.contains("conect_retries"), "{stderr}");

    // A key file readable by others is refused with the fix to apply.
    std::fs::write(&path, &good).unwrap();
    let key_path = dir.path().join("public.key");
    std::fs::set_permissions(
        &key_path,
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    let (code, _, stderr) = check_config(&path);
    assert_eq!(code, 64);
    assert!(
        stderr.contains("public.tls.key_file") && stderr.contains("chmod 600"),
        "{stderr}"
    );

    // A bad value: the key and a reason.
    std::fs::set_permissions(
        &key_path,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    std::fs::write(&path, good.replace("workers = 1", "workers = \"many\"")).unwrap();
    let (code, _, stderr) = check_config(&path);
    assert_eq!(code, 64);
    assert!(stderr.contains("runtime.workers"), "{stderr}");
}

#[tokio::test]
async fn sighup_with_a_broken_certificate_keeps_serving_the_old_one() {
    let up = Upstream::start().await;
    let proc = Proc::start(GateOptions::new(up.base()), &[]).await;
    proc.wait_ready().await;
    let request =
        format!("GET /api/symptom/codes HTTP/1.1\r\nHost: {FQDN}\r\nConnection: close\r\n\r\n");
    let (_, before) = gate::raw_tls(
        proc.public,
        &proc.ca.cert_pem(),
        FQDN,
        request.as_bytes(),
        Duration::from_secs(5),
    )
    .await;

    std::fs::write(proc.dir.path().join("public.crt"), "garbage").unwrap();
    proc.signal("HUP");
    let mut seen = false;
    for _ in 0..100 {
        if proc.log_text().contains("certificate reload failed") {
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(seen, "reload failure logged: {}", proc.log_text());
    let (resp, after) = gate::raw_tls(
        proc.public,
        &proc.ca.cert_pem(),
        FQDN,
        request.as_bytes(),
        Duration::from_secs(5),
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert_eq!(after[0], before[0]);
    let resp = proc
        .http()
        .get(format!("{}/api/symptom/codes", proc.base()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test]
async fn sigterm_drains_in_flight_requests_then_exits() {
    let stepper = Stepper::start().await;
    let proc = Proc::start(GateOptions::new(&stepper.addr.to_string()), &[]).await;
    let http = proc.http();
    let mut resp = http
        .get(format!("{}/stream", proc.base()))
        .send()
        .await
        .unwrap();
    let first = resp.chunk().await.unwrap().unwrap();
    assert_eq!(&first[..], b"first;");

    proc.signal("TERM");
    // New connections are refused once the listeners close.
    let fresh = proc.http();
    let mut refused = false;
    for _ in 0..50 {
        if fresh
            .get(format!("{}/stream", proc.base()))
            .timeout(Duration::from_millis(500))
            .send()
            .await
            .is_err()
        {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(refused, "listener still accepting after SIGTERM");

    // The in-flight response still completes.
    stepper.release().await;
    let rest = resp.bytes().await.unwrap();
    assert_eq!(&rest[..], b"rest");
    let (code, log) = proc.wait_exit(Duration::from_secs(10)).await;
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("draining"), "{log}");
}

#[tokio::test]
async fn no_password_cookie_or_token_reaches_the_log() {
    let up = Upstream::start().await;
    let proc = Proc::start(GateOptions::new(up.base()), &[("RUST_LOG", "trace")]).await;
    proc.wait_ready().await;
    let patient = up.patient("logs").await;
    let client = support::Client::with_http(&proc.base(), proc.http());
    let login = client.login(&patient.username, &patient.password).await;
    assert_eq!(login.status, StatusCode::OK);
    let cookie = client.session().expect("session cookie");
    assert_eq!(
        client.get("/api/patient/profile").await.status,
        StatusCode::OK
    );
    let wrong = client.login(&patient.username, "not-the-password-42").await;
    assert_eq!(wrong.status, StatusCode::FORBIDDEN);
    let token = "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ4In0.c2VjcmV0LXNpZ25hdHVyZQ";
    let bearer = client
        .call(
            reqwest::Method::GET,
            "/api/patient/profile;jsessionid=leaked",
        )
        .header("authorization", &format!("Bearer {token}"))
        .send()
        .await;
    assert_eq!(bearer.status, StatusCode::BAD_REQUEST);

    proc.signal("TERM");
    let (code, log) = proc.wait_exit(Duration::from_secs(10)).await;
    assert_eq!(code, Some(0));
    // The log is not empty: requests were logged at trace level.
    assert!(log.lines().count() > 3, "{log}");
    assert!(log.contains("path_parameter"), "refusal logged: {log}");
    for secret in [
        patient.password.as_str(),
        "not-the-password-42",
        cookie.as_str(),
        token,
        "leaked",
    ] {
        assert!(!log.contains(secret), "{secret:?} reached the log:\n{log}");
    }
}

#[test]
fn the_demo_walks_through_and_exits() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["demo", "--once", "--dir"])
        .arg(dir.path())
        .env("MDGATE_LOG", "mdgate=trace,info")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        "federation address: ",
        "is pending; the doctor's page shows the code ",
        "approved: grant ",
        "the doctor's request is now approved",
        "heartBeatsPerMinute",
        "asked (contributor)",
        "refused: This request is already revoked.",
        "record.read",
    ] {
        assert!(stdout.contains(line), "{line:?} missing from:\n{stdout}");
    }
    // The whole flow at trace level: no password, code, token or cookie in
    // the log.
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("access request received"), "{log}");
    let code = stdout
        .split("shows the code ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("the code is printed");
    let fed_password = std::fs::read_to_string(
        dir.path()
            .join("server1")
            .join("federation-account.password"),
    )
    .unwrap();
    for secret in [
        code,
        &code.replace('-', ""),
        "doctor-pw",
        "patient-pw",
        fed_password.trim(),
        "eyJ",
        "JSESSIONID=",
        "Bearer ",
        "invitation=",
    ] {
        assert!(!log.contains(secret), "{secret:?} reached the log:\n{log}");
    }
    // The configuration it wrote is valid for check-config.
    let (code, _, stderr) = check_config(&dir.path().join("server1").join("mdgate.toml"));
    assert_eq!(code, 0, "{stderr}");
}

#[tokio::test]
async fn systemd_is_told_ready_reloading_and_stopping() {
    use tokio::net::UnixDatagram;
    let up = Upstream::start().await;
    let sockdir = tempfile::tempdir().unwrap();
    let path = sockdir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    let proc = Proc::start(
        GateOptions::new(up.base()),
        &[("NOTIFY_SOCKET", path.to_str().unwrap())],
    )
    .await;
    async fn recv(sock: &UnixDatagram, proc: &Proc) -> String {
        let mut buf = [0u8; 256];
        let n = match tokio::time::timeout(Duration::from_secs(30), sock.recv(&mut buf)).await {
            Ok(n) => n.unwrap(),
            Err(_) => panic!("no notification within 30 s; log:\n{}", proc.log_text()),
        };
        String::from_utf8_lossy(&buf[..n]).trim().to_owned()
    }
    assert_eq!(recv(&sock, &proc).await, "READY=1");
    proc.signal("HUP");
    assert_eq!(recv(&sock, &proc).await, "RELOADING=1");
    assert_eq!(recv(&sock, &proc).await, "READY=1");
    proc.signal("TERM");
    assert_eq!(recv(&sock, &proc).await, "STOPPING=1");
    let (code, _) = proc.wait_exit(Duration::from_secs(10)).await;
    assert_eq!(code, Some(0));
}
