//! Tests for loading, validation, error positions, secrets and the example.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::file::{
    ConfigFile, FederationSection, KeysSection, StoreSection, TlsSection, TrustSection,
};
use super::load::{load_file_with_env, load_text_with_env, Env};
use super::position::Positions;
use super::*;

/// A temporary directory holding the files a configuration names.
struct Fixture {
    dir: tempfile::TempDir,
    env: Env,
}

impl Fixture {
    /// `public.crt`, `public.key` (0600), `federation.crt`,
    /// `federation.key` (0600) and `ca.pem` in a fresh directory, which is
    /// also the state directory.
    fn new() -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let env = Env {
            credentials_directory: None,
            state_directory: Some(dir.path().join("state")),
        };
        let fixture = Fixture { dir, env };
        fixture.write("public.crt", "CERT", 0o644);
        fixture.write("public.key", "PUBLIC-KEY-MATERIAL", 0o600);
        fixture.write("federation.crt", "CERT", 0o644);
        fixture.write("federation.key", "FEDERATION-KEY-MATERIAL", 0o600);
        fixture.write("ca.pem", "CA", 0o644);
        fixture
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, name: &str, content: &str, mode: u32) -> PathBuf {
        let path = self.path(name);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).expect("mkdir");
        }
        fs::write(&path, content).expect("write");
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).expect("chmod");
        path
    }

    /// A real Ed25519 signing key in PKCS#8 PEM.
    fn signing_key(&self, name: &str, mode: u32) -> PathBuf {
        let key = crate::token::SigningKey::generate("fixture").expect("generate");
        self.write(name, &key.to_pkcs8_pem(), mode)
    }

    fn origin(&self) -> PathBuf {
        self.path("mdgate.toml")
    }

    fn load(&self, text: &str) -> Result<Config, ConfigError> {
        load_text_with_env(text, &self.origin(), &self.env)
    }

    /// Loads `text`, which must fail, and returns the first error.
    fn error(&self, text: &str) -> ConfigError {
        match self.load(text) {
            Ok(config) => panic!("expected an error, got {config:?}"),
            Err(e) => e,
        }
    }
}

/// The smallest valid configuration (relative to the fixture directory).
const MINIMAL: &str = r#"[server]
fqdn = "a.example.org"

[public.tls]
cert_file = "public.crt"
key_file = "public.key"
"#;

/// `MINIMAL` plus a federation listener trusting `ca.pem`.
const WITH_FEDERATION: &str = r#"[server]
fqdn = "a.example.org"

[public.tls]
cert_file = "public.crt"
key_file = "public.key"

[federation.tls]
cert_file = "federation.crt"
key_file = "federation.key"

[federation.trust]
ca_file = "ca.pem"
"#;

fn line_col(e: &ConfigError) -> Option<(usize, usize)> {
    e.position.map(|p| (p.line, p.column))
}

// ---------------------------------------------------------------- defaults

#[test]
fn minimal_file_gets_documented_defaults() {
    let fx = Fixture::new();
    let c = fx.load(MINIMAL).expect("valid");
    assert_eq!(c.source, fx.origin());
    assert_eq!(c.server.fqdn, "a.example.org");
    assert_eq!(c.upstream.authority.as_str(), "127.0.0.1:7000");
    assert_eq!(c.upstream.connect_timeout, Duration::from_secs(2));
    assert_eq!(c.upstream.response_timeout, Duration::from_secs(30));
    assert_eq!(c.upstream.pool_idle_timeout, Duration::from_secs(90));
    assert_eq!(c.upstream.pool_max_idle, 32);
    assert!(!c.upstream.request_gzip, "gzip is opt-in");
    assert_eq!(c.public.listen, "0.0.0.0:443".parse().unwrap());
    let tls = c.public.tls.as_ref().expect("tls");
    assert_eq!(tls.cert_file, fx.path("public.crt"));
    assert_eq!(tls.key_file, fx.path("public.key"));
    let d = Limits::defaults();
    assert_eq!(c.public.limits.max_header_bytes, d.max_header_bytes);
    assert_eq!(c.public.limits.max_headers, d.max_headers);
    assert_eq!(c.public.limits.max_body_bytes, d.max_body_bytes);
    assert_eq!(c.public.limits.header_read_timeout, d.header_read_timeout);
    assert_eq!(c.public.limits.idle_timeout, d.idle_timeout);
    assert!(c.federation.is_none());
    assert_eq!(c.admin.listen, "127.0.0.1:9090".parse().unwrap());
    // STATE_DIRECTORY is the default directory for the store.
    let Store::Sqlite { path } = &c.store;
    assert_eq!(path, &fx.path("state").join("mdgate.db"));
    assert_eq!(c.log.format, LogFormat::Text);
    assert_eq!(c.log.filter, "info");
    assert_eq!(c.runtime.workers, 0);
    assert_eq!(c.runtime.drain_timeout, Duration::from_secs(30));
    assert_eq!(c.dns, Dns::defaults());
    assert!(c.warnings().is_empty());
}

#[test]
fn store_defaults_to_var_lib_without_state_directory() {
    let mut fx = Fixture::new();
    fx.env.state_directory = None;
    let c = fx.load(MINIMAL).expect("valid");
    let Store::Sqlite { path } = &c.store;
    assert_eq!(path, Path::new("/var/lib/mdgate/mdgate.db"));
}

#[test]
fn federation_with_ca_and_pins() {
    let fx = Fixture::new();
    let pin_hex = "ab".repeat(32);
    let text = format!(
        "{WITH_FEDERATION}pinned_spki_sha256 = [\"{pin_hex}\", \"{}\"]\n",
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
    );
    let c = fx.load(&text).expect("valid");
    let f = c.federation.expect("federation");
    assert_eq!(f.listen, "0.0.0.0:8443".parse().unwrap());
    assert_eq!(f.tls.key_file, fx.path("federation.key"));
    assert_eq!(f.trust.ca_file, Some(fx.path("ca.pem")));
    assert_eq!(f.trust.pinned_spki_sha256, vec![[0xab; 32], [0; 32]]);
}

#[test]
fn relative_paths_resolve_against_the_config_directory() {
    let fx = Fixture::new();
    fx.write("tls/sub.crt", "CERT", 0o644);
    fx.write("tls/sub.key", "KEY", 0o400);
    let absolute_ca = fx.path("ca.pem");
    let text = format!(
        r#"[server]
fqdn = "a.example.org"
[public.tls]
cert_file = "tls/sub.crt"
key_file = "./tls/../tls/sub.key"
[federation.tls]
cert_file = "federation.crt"
key_file = "federation.key"
[federation.trust]
ca_file = "{}"
[store]
path = "db/mdgate.db"
"#,
        absolute_ca.display()
    );
    let c = fx.load(&text).expect("valid");
    let tls = c.public.tls.expect("tls");
    assert_eq!(tls.cert_file, fx.path("tls/sub.crt"));
    assert_eq!(tls.key_file, fx.path("./tls/../tls/sub.key"));
    assert_eq!(
        c.federation.expect("federation").trust.ca_file,
        Some(absolute_ca)
    );
    let Store::Sqlite { path } = &c.store;
    assert_eq!(path, &fx.path("db/mdgate.db"));
}

#[test]
fn fqdn_is_normalised_to_lower_case_without_trailing_dot() {
    let fx = Fixture::new();
    let text = MINIMAL.replace("a.example.org", "Records.Example.ORG.");
    assert_eq!(
        fx.load(&text).expect("valid").server.fqdn,
        "records.example.org"
    );
}

#[test]
fn plain_http_is_allowed_with_a_warning() {
    let fx = Fixture::new();
    let text = "[server]\nfqdn = \"a.example.org\"\n[public]\nlisten = \"127.0.0.1:8080\"\nplain_http = true\n";
    let c = fx.load(text).expect("valid");
    assert!(c.public.tls.is_none());
    assert_eq!(c.warnings().len(), 1);
    assert!(summary(&c).contains("public 127.0.0.1:8080 (plain http"));
}

// ----------------------------------------------------- unknown keys, types

#[test]
fn unknown_key_at_top_level() {
    let fx = Fixture::new();
    let e = fx.error(&format!("{MINIMAL}\nbogus = 1\n"));
    assert_eq!(e.key.as_deref(), Some("public.tls.bogus"));
    // After [public.tls], `bogus` belongs to that table: that is TOML.
    assert!(matches!(&*e.kind, ErrorKind::UnknownKey { key, table, .. }
        if key == "bogus" && table == "[public.tls]"));

    let e = fx.error(&format!("bogus = 1\n{MINIMAL}"));
    assert_eq!(e.key.as_deref(), Some("bogus"));
    assert_eq!(line_col(&e), Some((1, 1)));
    assert!(
        matches!(&*e.kind, ErrorKind::UnknownKey { table, expected, .. }
        if table == "the top-level table" && expected.contains("`server`"))
    );
}

#[test]
fn unknown_table_is_named() {
    let fx = Fixture::new();
    let e = fx.error(&format!("{MINIMAL}[publc]\nlisten = \"0.0.0.0:1\"\n"));
    assert_eq!(e.key.as_deref(), Some("publc"));
    assert_eq!(line_col(&e), Some((7, 2)));
}

#[test]
fn unknown_key_nested_with_line_and_column() {
    let fx = Fixture::new();
    let text = format!("{MINIMAL}\n[public.limits]\nmax_headers = 10\n  max_body = 5\n");
    let e = fx.error(&text);
    assert_eq!(e.key.as_deref(), Some("public.limits.max_body"));
    assert_eq!(line_col(&e), Some((10, 3)));
    assert!(
        matches!(&*e.kind, ErrorKind::UnknownKey { key, table, expected }
        if key == "max_body" && table == "[public.limits]" && expected.contains("max_body_bytes"))
    );
    assert_eq!(
        e.to_string(),
        format!(
            "mdgate: {}:10:3: public.limits.max_body: unknown key `max_body` in \
             [public.limits] (expected one of `max_header_bytes`, `max_headers`, \
             `max_body_bytes`, `header_read_timeout`, `idle_timeout`)",
            fx.origin().display()
        )
    );
}

#[test]
fn unknown_key_in_inline_and_dotted_tables() {
    let fx = Fixture::new();
    let text = format!(
        "{MINIMAL}[federation]\ntls = {{ cert_file = \"c\", key_file = \"k\", pem = 1 }}\n"
    );
    let e = fx.error(&text);
    assert_eq!(e.key.as_deref(), Some("federation.tls.pem"));
    assert_eq!(line_col(&e), Some((8, 42)));

    let text = "server.fqdn = \"a.example.org\"\nserver.name = \"x\"\n";
    let e = fx.error(text);
    assert_eq!(e.key.as_deref(), Some("server.name"));
    assert_eq!(line_col(&e), Some((2, 8)));
}

#[test]
fn wrong_type_points_at_the_value() {
    let fx = Fixture::new();
    let cases: &[(&str, &str, (usize, usize), &str)] = &[
        (
            "[public.limits]\nmax_headers = \"many\"\n",
            "public.limits.max_headers",
            (9, 15),
            "invalid type: string",
        ),
        (
            "[public.limits]\nmax_body_bytes = -1\n",
            "public.limits.max_body_bytes",
            (9, 18),
            "invalid value",
        ),
        (
            "[public]\nplain_http = \"yes\"\n",
            "public.plain_http",
            (9, 14),
            "expected a boolean",
        ),
        (
            "[log]\nformat = \"xml\"\n",
            "log.format",
            (9, 10),
            "unknown variant `xml`",
        ),
        (
            "[runtime]\nworkers = 2.5\n",
            "runtime.workers",
            (9, 11),
            "invalid type",
        ),
        (
            "[federation.trust]\npinned_spki_sha256 = \"ab\"\n",
            "federation.trust.pinned_spki_sha256",
            (9, 22),
            "invalid type",
        ),
    ];
    for (tail, key, at, reason) in cases {
        let e = fx.error(&format!("{MINIMAL}\n{tail}"));
        assert_eq!(e.key.as_deref(), Some(*key), "{tail}");
        assert_eq!(line_col(&e), Some(*at), "{tail}");
        assert!(
            matches!(&*e.kind, ErrorKind::Invalid(m) if m.contains(reason)),
            "{tail}: {e}"
        );
    }
}

#[test]
fn missing_required_key_in_a_table() {
    let fx = Fixture::new();
    let text = "[server]\nfqdn = \"a.example.org\"\n\n[public.tls]\ncert_file = \"public.crt\"\n";
    let e = fx.error(text);
    assert_eq!(e.key.as_deref(), Some("public.tls.key_file"));
    assert_eq!(line_col(&e), Some((4, 1)));
    assert!(matches!(&*e.kind, ErrorKind::Missing(_)));
}

#[test]
fn syntax_error_has_a_position_and_no_key() {
    let fx = Fixture::new();
    let e = fx.error("[server]\nfqdn = \"a.example.org\nx = 1\n");
    assert_eq!(e.key, None);
    assert_eq!(e.position.map(|p| p.line), Some(2));
    assert!(matches!(&*e.kind, ErrorKind::Syntax(_)));

    let e = fx.error("[server]\nfqdn = \"a\"\n[server]\n");
    assert_eq!(line_col(&e), Some((3, 1)));
    assert!(!e.to_string().contains('\n'), "one line: {e}");
}

// ------------------------------------------------------------- durations

#[test]
fn durations_parse_with_units() {
    let ok: &[(&str, Duration)] = &[
        ("500ms", Duration::from_millis(500)),
        ("10s", Duration::from_secs(10)),
        ("2m", Duration::from_secs(120)),
        ("1h", Duration::from_secs(3600)),
        ("1m30s", Duration::from_secs(90)),
        (" 0s ", Duration::ZERO),
    ];
    for (text, want) in ok {
        assert_eq!(parse_duration(text).as_ref(), Ok(want), "{text}");
    }
    for text in [
        "",
        "10",
        "ten s",
        "1.5s",
        "10 s",
        "5d",
        "s",
        "-1s",
        "99999999999999999999h",
    ] {
        assert!(parse_duration(text).is_err(), "{text:?} should fail");
    }
    for d in [500, 1000, 90_000, 120_000, 3_600_000] {
        let d = Duration::from_millis(d);
        assert_eq!(parse_duration(&format_duration(d)), Ok(d));
    }
}

#[test]
fn bad_durations_are_reported_at_their_key() {
    let fx = Fixture::new();
    let cases: &[(&str, &str, &str)] = &[
        (
            "[upstream]\nconnect_timeout = \"2 seconds\"\n",
            "upstream.connect_timeout",
            "invalid duration",
        ),
        (
            "[upstream]\nconnect_timeout = 5\n",
            "upstream.connect_timeout",
            "write \"5s\"",
        ),
        (
            "[upstream]\nconnect_timeout = \"0s\"\n",
            "upstream.connect_timeout",
            "greater than zero",
        ),
        (
            "[upstream]\nconnect_timeout = \"2h\"\n",
            "upstream.connect_timeout",
            "maximum of 1m",
        ),
        (
            "[public.limits]\nidle_timeout = \"1d\"\n",
            "public.limits.idle_timeout",
            "unknown unit",
        ),
        (
            "[runtime]\ndrain_timeout = \"0ms\"\n",
            "runtime.drain_timeout",
            "greater than zero",
        ),
    ];
    for (tail, key, reason) in cases {
        let e = fx.error(&format!("{MINIMAL}\n{tail}"));
        assert_eq!(e.key.as_deref(), Some(*key), "{tail}");
        assert_eq!(e.position.map(|p| p.line), Some(9), "{tail}");
        assert!(e.to_string().contains(reason), "{tail}: {e}");
    }
}

// ------------------------------------------------------------ validation

#[test]
fn fqdn_table() {
    let good: &[(&str, &str)] = &[
        ("a.example.org", "a.example.org"),
        ("A.Example.Org.", "a.example.org"),
        ("xn--bcher-kva.example", "xn--bcher-kva.example"),
        ("a-b.c0.example", "a-b.c0.example"),
        ("localhost.localdomain", "localhost.localdomain"),
    ];
    for (text, want) in good {
        assert_eq!(parse_fqdn(text).as_deref(), Ok(*want), "{text}");
    }
    let long_label = format!("{}.example.org", "a".repeat(64));
    let long_name = format!("{}org", "abcdefgh.".repeat(28));
    let bad: Vec<&str> = vec![
        "",
        ".",
        "localhost",
        "*.example.org",
        "192.0.2.1",
        "::1",
        "[::1]",
        "a..example.org",
        ".example.org",
        "-a.example.org",
        "a-.example.org",
        "a_b.example.org",
        "a b.example.org",
        "bücher.example",
        "a.example.org..",
        "example.123",
        &long_label,
        &long_name,
    ];
    for text in bad {
        assert!(parse_fqdn(text).is_err(), "{text:?} should be refused");
    }
}

#[test]
fn bad_fqdn_and_missing_fqdn() {
    let fx = Fixture::new();
    let e = fx.error(&MINIMAL.replace("a.example.org", "*.example.org"));
    assert_eq!(e.key.as_deref(), Some("server.fqdn"));
    assert_eq!(line_col(&e), Some((2, 8)));
    assert!(e.to_string().contains("wildcard"));

    let e = fx.error(&MINIMAL.replace("fqdn = \"a.example.org\"", ""));
    assert_eq!(e.key.as_deref(), Some("server.fqdn"));
    // No value: the position is the [server] table's.
    assert_eq!(line_col(&e), Some((1, 1)));
    assert!(matches!(&*e.kind, ErrorKind::Missing(_)));

    let e = fx.error("[public]\nplain_http = true\n");
    assert_eq!(e.key.as_deref(), Some("server.fqdn"));
    assert_eq!(e.position, None);
}

#[test]
fn public_needs_tls_unless_plain_http() {
    let fx = Fixture::new();
    let e = fx.error("[server]\nfqdn = \"a.example.org\"\n[public]\nlisten = \"0.0.0.0:443\"\n");
    assert_eq!(e.key.as_deref(), Some("public.tls"));
    assert_eq!(line_col(&e), Some((3, 1)));
    assert!(matches!(&*e.kind, ErrorKind::Missing(m) if m.contains("plain_http = true")));

    let e = fx.error(&format!("{MINIMAL}[public]\nplain_http = true\n"));
    assert_eq!(e.key.as_deref(), Some("public.plain_http"));
    assert_eq!(line_col(&e), Some((8, 14)));
}

#[test]
fn federation_needs_tls_and_trust() {
    let fx = Fixture::new();
    let e = fx.error(&format!(
        "{MINIMAL}[federation]\nlisten = \"0.0.0.0:8443\"\n"
    ));
    let keys: Vec<_> = e.all().map(|e| e.key.clone().unwrap_or_default()).collect();
    assert_eq!(keys, ["federation.tls", "federation.trust"]);

    let e = fx.error(&WITH_FEDERATION.replace("ca_file = \"ca.pem\"", "pinned_spki_sha256 = []"));
    assert_eq!(e.key.as_deref(), Some("federation.trust"));
    assert!(e.also.is_empty());
}

#[test]
fn bad_pin_is_reported_with_its_index() {
    let fx = Fixture::new();
    let good = "ab".repeat(32);
    let text = format!("{WITH_FEDERATION}pinned_spki_sha256 = [\"{good}\", \"abcd\"]\n");
    let e = fx.error(&text);
    assert_eq!(
        e.key.as_deref(),
        Some("federation.trust.pinned_spki_sha256[1]")
    );
    assert_eq!(line_col(&e), Some((14, 91)));
    assert!(e.to_string().contains("64 hex digits"));
}

#[test]
fn pin_table() {
    let colons = vec!["AB"; 32].join(":");
    let ok: Vec<(String, [u8; 32])> = vec![
        ("ab".repeat(32), [0xab; 32]),
        ("AB".repeat(32), [0xab; 32]),
        (colons, [0xab; 32]),
        (
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".into(),
            [0; 32],
        ),
        (
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".into(),
            [0; 32],
        ),
    ];
    for (text, want) in ok {
        assert_eq!(parse_pin(&text), Ok(want), "{text}");
    }
    for text in [
        "",
        "ab",
        &"ab".repeat(31),
        &"ab".repeat(33),
        &"zz".repeat(32),
        "AAAA",
    ] {
        assert!(parse_pin(text).is_err(), "{text:?} should be refused");
    }
}

#[test]
fn upstream_url_table() {
    let ok: &[(&str, &str)] = &[
        ("http://127.0.0.1:7000", "127.0.0.1:7000"),
        ("http://127.0.0.1:7000/", "127.0.0.1:7000"),
        ("http://accessmd.internal", "accessmd.internal:80"),
        ("http://[::1]:7000", "[::1]:7000"),
    ];
    for (text, want) in ok {
        assert_eq!(
            parse_upstream_url(text).map(|a| a.to_string()).as_deref(),
            Ok(*want),
            "{text}"
        );
    }
    let bad: &[(&str, &str)] = &[
        ("https://127.0.0.1:7000", "https is not supported"),
        ("127.0.0.1:7000", "http://"),
        ("ftp://127.0.0.1", "scheme"),
        ("http://127.0.0.1:7000/api", "path"),
        ("http://127.0.0.1:7000/?a=b", "path or query"),
        (
            "http://user:hunter2@127.0.0.1:7000",
            "user name or password",
        ),
        ("not a url", "not a valid URL"),
    ];
    for (text, reason) in bad {
        let e = parse_upstream_url(text).expect_err(text);
        assert!(e.contains(reason), "{text}: {e}");
        assert!(!e.contains("hunter2"), "password echoed: {e}");
    }
}

#[test]
fn duplicate_listen_addresses() {
    let fx = Fixture::new();
    let e = fx.error(&format!("{MINIMAL}[admin]\nlisten = \"0.0.0.0:443\"\n"));
    assert_eq!(e.key.as_deref(), Some("admin.listen"));
    assert_eq!(line_col(&e), Some((8, 10)));
    assert!(matches!(&*e.kind, ErrorKind::AddressConflict { other, .. }
        if other == "public.listen (0.0.0.0:443)"));

    // Reported even when the listener's table has other problems.
    let e = fx.error("[server]\nfqdn = \"a.example.org\"\n[admin]\nlisten = \"0.0.0.0:443\"\n");
    let keys: Vec<_> = e.all().map(|e| e.key.clone().unwrap_or_default()).collect();
    assert_eq!(keys, ["admin.listen", "public.tls"]);

    // A specific address under a wildcard on the same port conflicts too.
    let text = format!("{WITH_FEDERATION}[admin]\nlisten = \"127.0.0.1:8443\"\n");
    let e = fx.error(&text);
    assert_eq!(e.key.as_deref(), Some("admin.listen"));

    let cases: &[(&str, &str, bool)] = &[
        ("0.0.0.0:443", "0.0.0.0:443", true),
        ("0.0.0.0:443", "127.0.0.1:443", true),
        ("[::]:443", "127.0.0.1:443", true),
        ("0.0.0.0:443", "[::1]:443", false),
        ("127.0.0.1:443", "127.0.0.2:443", false),
        ("0.0.0.0:443", "0.0.0.0:8443", false),
        ("127.0.0.1:0", "127.0.0.1:0", false),
    ];
    for (a, b, conflict) in cases {
        let text = format!(
            "{WITH_FEDERATION}[public]\nlisten = \"{a}\"\n[federation]\nlisten = \"{b}\"\n"
        );
        // [public] and [federation] after their sub-tables: valid TOML.
        let result = fx.load(&text);
        assert_eq!(result.is_err(), *conflict, "{a} vs {b}: {result:?}");
    }
}

#[test]
fn limits_and_workers_are_bounded() {
    let fx = Fixture::new();
    let cases: &[(&str, &str)] = &[
        (
            "[public.limits]\nmax_headers = 0\n",
            "public.limits.max_headers",
        ),
        (
            "[public.limits]\nmax_body_bytes = 0\n",
            "public.limits.max_body_bytes",
        ),
        (
            "[public.limits]\nmax_header_bytes = 4096\n",
            "public.limits.max_header_bytes",
        ),
        ("[runtime]\nworkers = 1025\n", "runtime.workers"),
        (
            "[upstream]\npool_max_idle = 1000000\n",
            "upstream.pool_max_idle",
        ),
        ("[admin]\nlisten = \"localhost:9090\"\n", "admin.listen"),
        ("[log]\nfilter = \"\"\n", "log.filter"),
        ("[log]\nfilter = \"mdgate=loud\"\n", "log.filter"),
    ];
    for (tail, key) in cases {
        let e = fx.error(&format!("{MINIMAL}\n{tail}"));
        assert_eq!(e.key.as_deref(), Some(*key), "{tail}: {e}");
        assert_eq!(e.position.map(|p| p.line), Some(9), "{tail}");
    }
    let ok = format!("{MINIMAL}[runtime]\nworkers = 1024\n[upstream]\npool_max_idle = 0\n");
    fx.load(&ok).expect("bounds are inclusive");
}

#[test]
fn all_validation_errors_are_reported_in_file_order() {
    let fx = Fixture::new();
    let text = "[server]\nfqdn = \"bad_name.example\"\n\n[upstream]\nurl = \"https://x\"\n\n[runtime]\nworkers = 5000\n";
    let e = fx.error(text);
    let got: Vec<_> = e
        .all()
        .map(|e| (e.key.clone().unwrap_or_default(), line_col(e)))
        .collect();
    assert_eq!(
        got,
        [
            ("server.fqdn".to_owned(), Some((2, 8))),
            ("upstream.url".to_owned(), Some((5, 7))),
            ("runtime.workers".to_owned(), Some((8, 11))),
            // No [public] at all: nowhere to point.
            ("public.tls".to_owned(), None),
        ]
    );
    assert!(e.to_string().ends_with("(and 3 more errors)"), "{e}");
    let report = e.report();
    assert_eq!(report.lines().count(), 5);
    assert!(report.ends_with("test failed"));
    assert!(report.lines().all(|l| l.starts_with("mdgate: ")));
}

// ------------------------------------------------------------------ store

#[test]
fn store_table() {
    let fx = Fixture::new();
    let cases: &[(&str, &str, &str)] = &[
        (
            "url = \"postgres://mdgate:hunter2@db/mdgate\"",
            "store.url",
            "not supported by this version",
        ),
        (
            "url = \"postgresql://db/mdgate\"",
            "store.url",
            "not supported by this version",
        ),
        (
            "url = \"mysql://db/mdgate\"",
            "store.url",
            "not a supported store URL",
        ),
        ("password_file = \"pw\"", "store.password_file", "remove it"),
        ("path = \"\"", "store.path", "empty path"),
        ("path = \".\"", "store.path", "is a directory"),
    ];
    for (line, key, reason) in cases {
        let e = fx.error(&format!("{MINIMAL}[store]\n{line}\n"));
        assert_eq!(e.key.as_deref(), Some(*key), "{line}");
        assert_eq!(e.position.map(|p| p.line), Some(8), "{line}");
        assert!(e.to_string().contains(reason), "{line}: {e}");
        assert!(!e.to_string().contains("hunter2"), "password echoed: {e}");
    }
    let e = fx.error(&format!("{MINIMAL}[store]\nurl = \"postgres://db/x\"\n"));
    assert!(matches!(&*e.kind, ErrorKind::Unsupported(_)));
}

// ---------------------------------------------------------------- secrets

#[test]
fn group_readable_key_is_refused_with_position_and_advice() {
    let fx = Fixture::new();
    let key = fx.write("public.key", "KEY", 0o644);
    let e = fx.error(MINIMAL);
    assert_eq!(e.key.as_deref(), Some("public.tls.key_file"));
    assert!(matches!(
        &*e.kind,
        ErrorKind::File(SecretError::Readable { mode: 0o644, .. })
    ));
    assert_eq!(
        e.to_string(),
        format!(
            "mdgate: {}:6:12: public.tls.key_file: {} is readable by group or others \
             (mode 0644); run chmod 600 on it",
            fx.origin().display(),
            key.display()
        )
    );
}

#[test]
fn secret_file_modes() {
    let fx = Fixture::new();
    let cases: &[(u32, bool)] = &[
        (0o600, true),
        (0o400, true),
        (0o700, true),
        (0o640, false),
        (0o604, false),
        (0o620, false),
        (0o601, false),
        (0o660, false),
    ];
    for (mode, ok) in cases {
        let path = fx.write("secret", "s3cret", *mode);
        let result = read_secret_file(&path);
        assert_eq!(result.is_ok(), *ok, "mode {mode:o}: {result:?}");
        if *ok {
            assert_eq!(result.expect("ok"), b"s3cret");
        } else {
            let message = result.expect_err("refused").to_string();
            assert!(message.contains(&format!("(mode 0{mode:o})")), "{message}");
            assert!(message.contains("chmod 600"), "{message}");
        }
    }
}

#[test]
fn secret_must_be_an_existing_regular_file() {
    let fx = Fixture::new();
    let e = read_secret_file(&fx.path("absent")).expect_err("absent");
    assert!(matches!(e, SecretError::NotFound { .. }), "{e}");
    let e = read_secret_file(fx.dir.path()).expect_err("directory");
    assert!(
        matches!(
            e,
            SecretError::NotRegular {
                kind: "directory",
                ..
            }
        ),
        "{e}"
    );

    let e = fx.error(&MINIMAL.replace("public.crt", "missing.crt"));
    assert_eq!(e.key.as_deref(), Some("public.tls.cert_file"));
    assert_eq!(line_col(&e), Some((5, 13)));
    assert!(matches!(
        &*e.kind,
        ErrorKind::File(SecretError::NotFound { .. })
    ));
    assert!(e.to_string().contains("missing.crt does not exist"), "{e}");

    // Certificates need not be private, only readable.
    fx.write("public.crt", "CERT", 0o644);
    let e = fx.error(&MINIMAL.replace("public.crt", "."));
    assert!(e.to_string().contains("not a regular file"), "{e}");
}

#[test]
fn systemd_credentials() {
    let mut fx = Fixture::new();
    let text = MINIMAL.replace("\"public.key\"", "\"credential:public-key\"");

    let e = fx.error(&text);
    assert!(matches!(
        &*e.kind,
        ErrorKind::File(SecretError::NoCredentialsDirectory { .. })
    ));
    assert!(e.to_string().contains("LoadCredential=public-key:"), "{e}");

    fx.env.credentials_directory = Some(fx.path("creds"));
    let key = fx.write("creds/public-key", "KEY", 0o400);
    let c = fx.load(&text).expect("valid");
    assert_eq!(c.public.tls.expect("tls").key_file, key);

    // The permission check still applies.
    fx.write("creds/public-key", "KEY", 0o440);
    assert!(fx.load(&text).is_err());

    for name in ["", "..", "a/b"] {
        let bad = MINIMAL.replace("\"public.key\"", &format!("\"credential:{name}\""));
        let e = fx.error(&bad);
        assert!(
            matches!(
                &*e.kind,
                ErrorKind::File(SecretError::BadCredentialName { .. })
            ),
            "{e}"
        );
    }
}

#[test]
fn debug_output_never_holds_key_material() {
    let fx = Fixture::new();
    let c = fx.load(WITH_FEDERATION).expect("valid");
    let debug = format!("{c:?}");
    assert!(!debug.contains("KEY-MATERIAL"), "{debug}");
    assert!(debug.contains("public.key"));
}

// ------------------------------------------------------- upstream accounts

/// `MINIMAL` plus a federation account and two enrolled doctors, whose
/// password files exist with mode 0600.
fn with_accounts(fx: &Fixture) -> String {
    fx.write("federation.password", "FEDERATION-PASSWORD\n", 0o600);
    fx.write("dr-a.password", "DR-A-PASSWORD", 0o600);
    fx.write("dr-b.password", "DR-B-PASSWORD", 0o400);
    format!(
        r#"{MINIMAL}
[upstream.federation_account]
username = "federation"
password_file = "federation.password"

[[upstream.enrolled]]
username = "dr.a"
password_file = "dr-a.password"

[[upstream.enrolled]]
username = "dr.b"
password_file = "dr-b.password"
"#
    )
}

#[test]
fn no_upstream_accounts_by_default() {
    let fx = Fixture::new();
    let c = fx.load(MINIMAL).expect("valid");
    assert_eq!(c.upstream.federation_account, None);
    assert!(c.upstream.enrolled.is_empty());
}

#[test]
fn upstream_accounts_are_loaded_in_order_without_their_passwords() {
    let fx = Fixture::new();
    let c = fx.load(&with_accounts(&fx)).expect("valid");
    assert_eq!(
        c.upstream.federation_account,
        Some(UpstreamAccount {
            username: "federation".into(),
            password_file: fx.path("federation.password"),
        })
    );
    let enrolled: Vec<_> = c
        .upstream
        .enrolled
        .iter()
        .map(|a| (a.username.as_str(), a.password_file.clone()))
        .collect();
    assert_eq!(
        enrolled,
        [
            ("dr.a", fx.path("dr-a.password")),
            ("dr.b", fx.path("dr-b.password")),
        ]
    );
    // Only paths are configuration: no password is read into it.
    let debug = format!("{c:?}");
    assert!(!debug.contains("DR-A-PASSWORD"), "{debug}");
    assert!(!debug.contains("FEDERATION-PASSWORD"), "{debug}");
}

#[test]
fn upstream_account_password_files_must_be_private() {
    let fx = Fixture::new();
    let text = with_accounts(&fx);
    fx.write("dr-b.password", "DR-B-PASSWORD", 0o640);
    let e = fx.error(&text);
    assert_eq!(e.key.as_deref(), Some("upstream.enrolled[1].password_file"));
    assert!(matches!(
        &*e.kind,
        ErrorKind::File(SecretError::Readable { mode: 0o640, .. })
    ));
    assert!(!e.report().contains("DR-B-PASSWORD"));
    let (line, _) = line_col(&e).expect("placed");
    assert_eq!(
        text.lines().nth(line - 1),
        Some("password_file = \"dr-b.password\"")
    );

    fs::remove_file(fx.path("federation.password")).expect("rm");
    let e = fx.error(&text);
    assert_eq!(
        e.key.as_deref(),
        Some("upstream.federation_account.password_file")
    );
    assert!(matches!(
        &*e.kind,
        ErrorKind::File(SecretError::NotFound { .. })
    ));
}

#[test]
fn upstream_account_passwords_from_systemd_credentials() {
    let mut fx = Fixture::new();
    let text = format!(
        "{MINIMAL}[upstream.federation_account]\nusername = \"federation\"\n\
         password_file = \"credential:fed-pw\"\n"
    );
    let e = fx.error(&text);
    assert!(matches!(
        &*e.kind,
        ErrorKind::File(SecretError::NoCredentialsDirectory { .. })
    ));
    fx.env.credentials_directory = Some(fx.path("creds"));
    let pw = fx.write("creds/fed-pw", "pw", 0o400);
    let c = fx.load(&text).expect("valid");
    assert_eq!(
        c.upstream
            .federation_account
            .expect("account")
            .password_file,
        pw
    );
}

#[test]
fn upstream_account_tables_need_both_keys_and_no_others() {
    let fx = Fixture::new();
    fx.write("pw", "pw", 0o600);
    let e = fx.error(&format!(
        "{MINIMAL}[upstream.federation_account]\nusername = \"federation\"\n"
    ));
    assert_eq!(
        e.key.as_deref(),
        Some("upstream.federation_account.password_file")
    );
    assert!(matches!(&*e.kind, ErrorKind::Missing(_)), "{e}");

    let e = fx.error(&format!(
        "{MINIMAL}[[upstream.enrolled]]\nusername = \"a\"\npassword_file = \"pw\"\npassword = \"x\"\n"
    ));
    assert!(
        matches!(&*e.kind, ErrorKind::UnknownKey { key, .. } if key == "password"),
        "{e}"
    );
}

#[test]
fn upstream_account_usernames_are_checked() {
    let fx = Fixture::new();
    fx.write("pw", "pw", 0o600);
    let long = "x".repeat(256);
    let cases = [
        ("", "empty"),
        (" dr", "white space"),
        ("dr\\u0007", "control character"),
        (long.as_str(), "longer than 255"),
    ];
    for (name, message) in cases {
        let text = format!(
            "{MINIMAL}[[upstream.enrolled]]\nusername = \"{name}\"\npassword_file = \"pw\"\n"
        );
        let e = fx.error(&text);
        assert_eq!(
            e.key.as_deref(),
            Some("upstream.enrolled[0].username"),
            "{name:?}"
        );
        assert!(e.to_string().contains(message), "{name:?}: {e}");
    }
    // 255 characters fit.
    let fits = "x".repeat(255);
    let text =
        format!("{MINIMAL}[[upstream.enrolled]]\nusername = \"{fits}\"\npassword_file = \"pw\"\n");
    fx.load(&text).expect("255 characters are accepted");
}

#[test]
fn an_upstream_account_is_listed_once() {
    let fx = Fixture::new();
    let text = with_accounts(&fx).replace("\"dr.b\"", "\"federation\"");
    let e = fx.error(&text);
    assert_eq!(e.key.as_deref(), Some("upstream.enrolled[1].username"));
    assert!(
        e.to_string()
            .contains("already configured in upstream.federation_account"),
        "{e}"
    );
}

#[test]
fn example_upstream_accounts_load_when_uncommented() {
    let mut fx = Fixture::new();
    fx.env.credentials_directory = Some(fx.path("creds"));
    fx.write("creds/mdgate-federation-password", "pw", 0o600);
    fx.write("upstream/dr.example.password", "pw", 0o600);
    let upstream_dir = format!("{}/", fx.path("upstream").display());
    let mut text = String::new();
    let mut in_accounts = false;
    for line in example_in(&fx).lines() {
        if line.starts_with("# [upstream.federation_account]") {
            in_accounts = true;
        }
        if in_accounts && (line.starts_with("# [") || line.contains(" = ")) {
            text.push_str(line.trim_start_matches("# "));
        } else {
            text.push_str(line);
        }
        if line.starts_with('[') && !line.contains("upstream") {
            in_accounts = false;
        }
        text.push('\n');
    }
    let text = text.replace("/etc/mdgate/upstream/", &upstream_dir);
    let c = fx.load(&text).expect("example accounts are valid");
    assert_eq!(
        c.upstream.federation_account.map(|a| a.username).as_deref(),
        Some("federation")
    );
    assert_eq!(c.upstream.enrolled.len(), 1);
}

// ------------------------------------------------------- files and check

#[test]
fn load_reads_the_file_and_reports_a_missing_one() {
    let fx = Fixture::new();
    fs::write(fx.origin(), MINIMAL).expect("write");
    let c = load_file_with_env(&fx.origin(), &fx.env).expect("valid");
    assert_eq!(c.source, fx.origin());

    let missing = fx.path("nope.toml");
    let e = load_file_with_env(&missing, &fx.env).expect_err("missing");
    assert!(matches!(&*e.kind, ErrorKind::Read(_)));
    assert!(
        e.to_string().starts_with(&format!(
            "mdgate: {}: cannot read the configuration file:",
            missing.display()
        )),
        "{e}"
    );
}

#[test]
fn check_gives_a_summary_line() {
    let fx = Fixture::new();
    let text = format!(
        "{WITH_FEDERATION}pinned_spki_sha256 = [\"{}\"]\n[store]\npath = \"x.db\"\n",
        "00".repeat(32)
    );
    fs::write(fx.origin(), text).expect("write");
    let line = check(&fx.origin()).expect("valid");
    assert_eq!(
        line,
        format!(
            "configuration file {} test is successful: fqdn a.example.org, public 0.0.0.0:443 (tls), \
             federation 0.0.0.0:8443 (mtls, ca, 1 pin), admin 127.0.0.1:9090, store sqlite {}",
            fx.origin().display(),
            fx.path("x.db").display()
        )
    );
}

// --------------------------------------------------------------------- keys

/// `MINIMAL` plus a `[keys]` table whose signing key exists.
fn with_keys(fx: &Fixture, extra: &str) -> String {
    fx.signing_key("signing.key", 0o600);
    format!(
        "{MINIMAL}\n[keys]\nsigning_key_file = \"signing.key\"\n\
         signing_selector = \"sig2026a\"\ntls_selector = \"tls2026a\"\n{extra}"
    )
}

#[test]
fn keys_are_optional() {
    let fx = Fixture::new();
    assert!(fx.load(MINIMAL).expect("valid").keys.is_none());
}

#[test]
fn keys_with_defaults() {
    let fx = Fixture::new();
    let c = fx.load(&with_keys(&fx, "")).expect("valid");
    let keys = c.keys.expect("keys");
    assert_eq!(
        keys,
        Keys {
            signing: SigningKeyFile {
                key_file: fx.path("signing.key"),
                selector: "sig2026a".into(),
            },
            tls_selector: "tls2026a".into(),
            next_signing: None,
            next_tls: None,
            previous_signing: None,
            previous_tls: None,
            clock_skew: Duration::from_secs(60),
        }
    );
}

#[test]
fn keys_with_next_keys_during_rotation() {
    let fx = Fixture::new();
    fx.signing_key("next.key", 0o400);
    fx.write("next-tls.crt", "CERT", 0o644);
    let extra = "next_signing_key_file = \"next.key\"\nnext_signing_selector = \"sig2026b\"\n\
                 next_tls_selector = \"tls2026b\"\nnext_tls_cert_file = \"next-tls.crt\"\n\
                 clock_skew = \"0s\"\n";
    let c = fx.load(&with_keys(&fx, extra)).expect("valid");
    let keys = c.keys.clone().expect("keys");
    assert_eq!(
        keys.next_signing,
        Some(SigningKeyFile {
            key_file: fx.path("next.key"),
            selector: "sig2026b".into(),
        })
    );
    assert_eq!(
        keys.next_tls,
        Some(NextTlsKey {
            selector: "tls2026b".into(),
            cert_file: fx.path("next-tls.crt"),
        })
    );
    assert_eq!(keys.clock_skew, Duration::ZERO);
    assert!(
        summary(&c).ends_with(", keys sig2026a tls2026a (next sig2026b tls2026b)"),
        "{}",
        summary(&c)
    );
}

#[test]
fn keys_with_previous_keys_after_a_switch() {
    let fx = Fixture::new();
    fx.signing_key("old.key", 0o600);
    fx.write("old-tls.crt", "CERT", 0o644);
    let extra =
        "previous_signing_key_file = \"old.key\"\nprevious_signing_selector = \"sig2025a\"\n\
                 previous_tls_selector = \"tls2025a\"\nprevious_tls_cert_file = \"old-tls.crt\"\n";
    let c = fx.load(&with_keys(&fx, extra)).expect("valid");
    let keys = c.keys.clone().expect("keys");
    assert_eq!(
        keys.previous_signing,
        Some(SigningKeyFile {
            key_file: fx.path("old.key"),
            selector: "sig2025a".into(),
        })
    );
    assert_eq!(
        keys.previous_tls,
        Some(NextTlsKey {
            selector: "tls2025a".into(),
            cert_file: fx.path("old-tls.crt"),
        })
    );
    assert!(
        summary(&c).ends_with(", keys sig2026a tls2026a (previous sig2025a tls2025a)"),
        "{}",
        summary(&c)
    );
    // Pairs are both-or-neither, and selectors stay distinct.
    let e = fx.error(&with_keys(&fx, "previous_tls_selector = \"tls2025a\"\n"));
    assert_eq!(e.key.as_deref(), Some("keys.previous_tls_selector"));
    assert!(
        e.to_string().contains("previous_tls_cert_file is required"),
        "{e}"
    );
    let clash =
        "previous_signing_key_file = \"old.key\"\nprevious_signing_selector = \"sig2026a\"\n";
    let e = fx.error(&with_keys(&fx, clash));
    assert_eq!(e.key.as_deref(), Some("keys.previous_signing_selector"));
}

#[test]
fn key_file_readable_by_others_is_refused() {
    let fx = Fixture::new();
    let text = with_keys(&fx, "");
    fx.signing_key("wide.key", 0o644);
    let e = fx.error(&text.replace("\"signing.key\"", "\"wide.key\""));
    assert_eq!(e.key.as_deref(), Some("keys.signing_key_file"));
    assert!(
        matches!(
            &*e.kind,
            ErrorKind::File(SecretError::Readable { mode: 0o644, .. })
        ),
        "{e}"
    );
    assert!(e.to_string().contains("run chmod 600"), "{e}");
}

#[test]
fn signing_key_must_be_ed25519() {
    let fx = Fixture::new();
    let text = with_keys(&fx, "");
    let (_, p256) = crate::tls::pki::self_signed("a.example.org").expect("p256");
    fx.write("tls.key", &p256, 0o600);
    fx.write("junk.key", "not a key", 0o600);
    let e = fx.error(&text.replace("\"signing.key\"", "\"tls.key\""));
    assert_eq!(e.key.as_deref(), Some("keys.signing_key_file"));
    assert!(e.to_string().contains("not an Ed25519 key"), "{e}");
    let e = fx.error(&text.replace("\"signing.key\"", "\"junk.key\""));
    assert!(e.to_string().contains("PKCS#8 PEM"), "{e}");
    assert!(!e.to_string().contains("not a key"), "{e}");
    let e = fx.error(&text.replace("\"signing.key\"", "\"missing.key\""));
    assert!(
        matches!(&*e.kind, ErrorKind::File(SecretError::NotFound { .. })),
        "{e}"
    );
}

#[test]
fn keys_errors_are_all_reported() {
    let fx = Fixture::new();
    let text = format!(
        "{MINIMAL}\n[keys]\nsigning_selector = \"Sig_1\"\ntls_selector = \"-tls\"\n\
         next_signing_selector = \"sig2\"\nnext_tls_cert_file = \"public.crt\"\n\
         clock_skew = \"11m\"\n"
    );
    let e = fx.error(&text);
    let keys: Vec<_> = e.all().map(|e| e.key.clone().unwrap_or_default()).collect();
    assert_eq!(
        keys,
        [
            // Absent: placed at its table.
            "keys.signing_key_file",
            "keys.signing_selector",
            "keys.tls_selector",
            "keys.next_signing_selector",
            "keys.next_tls_cert_file",
            "keys.clock_skew",
        ],
        "{}",
        e.report()
    );
    let report = e.report();
    assert!(report.contains("\"Sig_1\" is not a selector"), "{report}");
    assert!(
        report.contains("next_signing_key_file is required"),
        "{report}"
    );
    assert!(report.contains("next_tls_selector is required"), "{report}");
    assert!(report.contains("maximum of 10m"), "{report}");
    assert!(
        report.contains("required: the Ed25519 signing key"),
        "{report}"
    );
}

#[test]
fn selectors_must_be_distinct() {
    let fx = Fixture::new();
    let e = fx.error(&with_keys(&fx, "").replace("tls2026a", "sig2026a"));
    assert_eq!(e.key.as_deref(), Some("keys.tls_selector"));
    assert!(
        e.to_string()
            .contains("selector \"sig2026a\" is also keys.signing_selector"),
        "{e}"
    );
    fx.write("next.crt", "CERT", 0o644);
    let extra = "next_tls_selector = \"tls2026a\"\nnext_tls_cert_file = \"next.crt\"\n";
    let e = fx.error(&with_keys(&fx, extra));
    assert_eq!(e.key.as_deref(), Some("keys.next_tls_selector"));
}

#[test]
fn keys_unknown_field_is_named() {
    let fx = Fixture::new();
    let e = fx.error(&with_keys(&fx, "signing_key = \"x\"\n"));
    assert_eq!(e.key.as_deref(), Some("keys.signing_key"));
    assert!(matches!(&*e.kind, ErrorKind::UnknownKey { .. }), "{e}");
}

// ---------------------------------------------------------------- positions

#[test]
fn positions_count_characters_and_lines() {
    let text = "a = \"é\"\nb = 1\n";
    assert_eq!(Position::at(text, 0), Position { line: 1, column: 1 });
    assert_eq!(Position::at(text, 10), Position { line: 2, column: 2 });
    // Columns count characters, not bytes: "é" is two bytes.
    let text = "x = \"é\" y";
    assert_eq!(Position::at(text, 9), Position { line: 1, column: 9 });
    assert_eq!(
        Position::at(text, 100),
        Position {
            line: 1,
            column: 10
        }
    );
}

#[test]
fn positions_map_keys_and_spans() {
    let text = "[a]\nb = [1, 2]\n[a.c]\nd = { e = 1 }\n";
    let p = Positions::parse(text).expect("toml");
    let start = |key: &str| p.span_of(key).map(|s| s.start);
    assert_eq!(start("a.b"), Some(8));
    assert_eq!(start("a.b[1]"), Some(12));
    assert_eq!(start("a.c.d.e"), Some(31));
    // Absent keys fall back to the nearest table in the text.
    assert_eq!(start("a.c.zz"), Some(15));
    assert_eq!(start("zz"), None);
    assert_eq!(p.key_at(&(12..13)), Some("a.b[1]"));
    assert_eq!(p.key_at(&(4..5)), Some("a.b"));
}

// ------------------------------------------------------------- the example

const EXAMPLE: &str = include_str!("../../config.example.toml");

/// The example with its `/etc/mdgate/tls/` files created in a temporary
/// directory.
fn example_in(fx: &Fixture) -> String {
    fx.write("tls/public.crt", "CERT", 0o644);
    fx.write("tls/public.key", "KEY", 0o600);
    fx.write("tls/federation.crt", "CERT", 0o644);
    fx.write("tls/federation.key", "KEY", 0o600);
    fx.write("tls/peers-ca.pem", "CA", 0o644);
    fx.signing_key("keys/signing-sig2026a.key", 0o600);
    let tls_dir = format!("{}/", fx.path("tls").display());
    let keys_dir = format!("{}/", fx.path("keys").display());
    EXAMPLE
        .replace("/etc/mdgate/tls/", &tls_dir)
        .replace("/etc/mdgate/keys/", &keys_dir)
}

#[test]
fn example_loads_once_its_files_exist() {
    let fx = Fixture::new();
    let c = fx.load(&example_in(&fx)).expect("example is valid");
    assert_eq!(c.server.fqdn, "records.example.org");
    assert!(c.public.tls.is_some());
    assert!(c.federation.is_some());
    let keys = c.keys.as_ref().expect("keys");
    assert_eq!(keys.signing.selector, "sig2026a");
    assert_eq!(keys.tls_selector, "tls2026a");
    assert!(c.warnings().is_empty());

    // Without the files, only file errors remain.
    let e = fx.error(EXAMPLE);
    assert!(
        e.all().all(|e| matches!(&*e.kind, ErrorKind::File(_))),
        "{}",
        e.report()
    );
}

#[test]
fn example_values_are_the_defaults() {
    // Every value the example sets that has a default must equal it.
    let defaults = ConfigFile {
        federation: Some(FederationSection::default()),
        keys: Some(KeysSection::default()),
        ..ConfigFile::default()
    };
    let defaults = toml::Value::try_from(&defaults).expect("serialize");
    let example: toml::Value = toml::from_str(EXAMPLE).expect("example parses");
    let mut compared = 0;
    for (key, value) in leaves(&example, "") {
        if let Some(default) = lookup(&defaults, &key) {
            // Durations may be spelt differently ("60s" and "1m").
            let same = match (&value, default) {
                (toml::Value::String(a), toml::Value::String(b)) => {
                    a == b || parse_duration(a).is_ok() && parse_duration(a) == parse_duration(b)
                }
                (a, b) => a == b,
            };
            assert!(
                same,
                "{key} = {value} in config.example.toml; the default is {default}"
            );
            compared += 1;
        }
    }
    assert!(compared >= 23, "only {compared} keys compared");
}

#[test]
fn example_mentions_every_key() {
    // A struct literal naming every field: a new field breaks this build
    // until it is added here, and then this test wants it in the example.
    let tls = || TlsSection {
        cert_file: "c".into(),
        key_file: "k".into(),
    };
    let account = || super::file::UpstreamAccountSection {
        username: "u".into(),
        password_file: "p".into(),
    };
    let full = ConfigFile {
        server: super::file::ServerSection {
            fqdn: Some("a.example.org".into()),
        },
        public: super::file::PublicSection {
            tls: Some(tls()),
            ..Default::default()
        },
        federation: Some(FederationSection {
            tls: Some(tls()),
            trust: Some(TrustSection {
                ca_file: Some("ca".into()),
                pinned_spki_sha256: vec![String::new()],
                web_ca_file: Some("w".into()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        upstream: super::file::UpstreamSection {
            federation_account: Some(account()),
            enrolled: vec![account()],
            ..Default::default()
        },
        store: StoreSection {
            path: Some("p".into()),
            url: Some("u".into()),
            password_file: Some("f".into()),
        },
        dns: super::file::DnsSection {
            trust_anchor_file: Some("a".into()),
            ..Default::default()
        },
        keys: Some(KeysSection {
            signing_key_file: Some("k".into()),
            signing_selector: Some("s".into()),
            tls_selector: Some("t".into()),
            next_signing_key_file: Some("k".into()),
            next_signing_selector: Some("s".into()),
            next_tls_selector: Some("t".into()),
            next_tls_cert_file: Some("c".into()),
            previous_signing_key_file: Some("k".into()),
            previous_signing_selector: Some("s".into()),
            previous_tls_selector: Some("t".into()),
            previous_tls_cert_file: Some("c".into()),
            ..Default::default()
        }),
        notify: super::file::NotifySection {
            webhook_url: Some("u".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    let full = toml::Value::try_from(&full).expect("serialize");
    let wanted: BTreeSet<String> = keys(&full, "").into_iter().collect();
    let documented = documented_keys(EXAMPLE);
    let missing: Vec<_> = wanted.difference(&documented).collect();
    assert!(
        missing.is_empty(),
        "keys missing from config.example.toml: {missing:?}"
    );
    let unknown: Vec<_> = documented.difference(&wanted).collect();
    assert!(
        unknown.is_empty(),
        "config.example.toml has unknown keys: {unknown:?}"
    );
}

/// Dotted keys (tables and values) of a TOML value; the elements of an
/// array of tables share the array's key.
fn keys(value: &toml::Value, prefix: &str) -> Vec<String> {
    let mut out = Vec::new();
    match value {
        toml::Value::Table(table) => {
            for (k, v) in table {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                out.extend(keys(v, &key));
                out.push(key);
            }
        }
        toml::Value::Array(elements) => {
            for element in elements.iter().filter(|e| e.is_table()) {
                out.extend(keys(element, prefix));
            }
        }
        _ => {}
    }
    out
}

/// Non-table values with their dotted keys.
fn leaves(value: &toml::Value, prefix: &str) -> Vec<(String, toml::Value)> {
    match value {
        toml::Value::Table(table) => table
            .iter()
            .flat_map(|(k, v)| {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                leaves(v, &key)
            })
            .collect(),
        other => vec![(prefix.to_owned(), other.clone())],
    }
}

fn lookup<'a>(value: &'a toml::Value, key: &str) -> Option<&'a toml::Value> {
    key.split('.').try_fold(value, |v, k| v.get(k))
}

/// Keys the example sets or shows commented out (`# key = ...`), with the
/// tables they are in.
fn documented_keys(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut table = String::new();
    for line in text.lines() {
        let line = line.trim();
        // Tables may be shown commented out too, and arrays of tables
        // (`[[a.b]]`) name their elements' table.
        let code = line.strip_prefix("# ").unwrap_or(line);
        let header = code
            .strip_prefix("[[")
            .and_then(|l| l.strip_suffix("]]"))
            .or_else(|| code.strip_prefix('[').and_then(|l| l.strip_suffix(']')));
        if let Some(name) = header {
            table = name.to_owned();
            let mut partial = String::new();
            for part in name.split('.') {
                if !partial.is_empty() {
                    partial.push('.');
                }
                partial.push_str(part);
                out.insert(partial.clone());
            }
            continue;
        }
        let code = line.strip_prefix("# ").unwrap_or(line);
        let Some((key, _)) = code.split_once(" = ") else {
            continue;
        };
        if key
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            out.insert(format!("{table}.{key}"));
        }
    }
    out
}

// ------------------------------------------------------------------ policy

#[test]
fn policy_defaults_to_the_route_table() {
    let fx = Fixture::new();
    let c = fx.load(MINIMAL).expect("valid");
    assert_eq!(c.policy, crate::policy::Policy::default());
}

#[test]
fn policy_can_narrow_a_role() {
    use crate::policy::{Role, RouteId};
    let fx = Fixture::new();
    let text = format!(
        "{MINIMAL}\n[policy]\nviewer = [\"record\", \"profile\", \"vitals\"]\n\
         contributor = [\"record\", \"profile\", \"vitals\", \"ask_question\"]\n"
    );
    let c = fx.load(&text).expect("valid");
    let viewer: Vec<_> = c.policy.routes(Role::Viewer).iter().collect();
    assert_eq!(viewer, [RouteId::Record, RouteId::Profile, RouteId::Vitals]);
    let contributor: Vec<_> = c.policy.routes(Role::Contributor).iter().collect();
    assert_eq!(
        contributor,
        [
            RouteId::Record,
            RouteId::Profile,
            RouteId::Vitals,
            RouteId::AskQuestion
        ]
    );
    // Narrowing one role leaves the other at its default; an empty list
    // turns a role off.
    let text = format!("{MINIMAL}\n[policy]\nviewer = []\n");
    let c = fx.load(&text).expect("valid");
    assert!(c.policy.routes(Role::Viewer).is_empty());
    assert_eq!(c.policy.routes(Role::Contributor).iter().count(), 7);
}

#[test]
fn policy_unknown_route_is_placed() {
    let fx = Fixture::new();
    // MINIMAL is 6 lines; [policy] is on line 8.
    let text = format!("{MINIMAL}\n[policy]\nviewer = [\"record\", \"feed\"]\n");
    let e = fx.error(&text);
    assert_eq!(e.key.as_deref(), Some("policy.viewer[1]"));
    assert_eq!(line_col(&e), Some((9, 21)));
    assert_eq!(
        e.to_string(),
        format!(
            "mdgate: {}:9:21: policy.viewer[1]: unknown route `feed`; the routes are \
             record, profile, vitals, symptoms, answers, questions, ask_question",
            fx.origin().display()
        )
    );
}

#[test]
fn policy_cannot_widen_the_table() {
    let fx = Fixture::new();
    let cases: &[(&str, &str, &str)] = &[
        (
            "viewer = [\"record\", \"ask_question\"]",
            "policy.viewer[1]",
            "route `ask_question` needs the contributor role; viewer cannot be given it",
        ),
        (
            "viewer = [\"vitals\", \"vitals\"]",
            "policy.viewer[1]",
            "route `vitals` is listed twice",
        ),
        (
            "contributor = [\"record\", \"ask_question\"]",
            "policy.contributor",
            "contributor must keep every route viewer has; add `profile`",
        ),
        (
            "viewer = [\"Record\"]",
            "policy.viewer[0]",
            "unknown route `Record`",
        ),
        (
            "contributor = [\"delete_question\"]",
            "policy.contributor[0]",
            "unknown route `delete_question`",
        ),
    ];
    for (line, key, message) in cases {
        let text = format!("{MINIMAL}\n[policy]\n{line}\n");
        let e = fx.error(&text);
        assert_eq!(e.key.as_deref(), Some(*key), "{line}");
        assert_eq!(e.position.map(|p| p.line), Some(9), "{line}");
        assert!(e.to_string().contains(message), "{line}: {e}");
    }
}

#[test]
fn policy_reports_every_bad_entry_and_unknown_keys() {
    let fx = Fixture::new();
    let text = format!(
        "{MINIMAL}\n[policy]\nviewer = [\"x\", \"record\", \"y\"]\ncontributor = [\"z\"]\n"
    );
    let e = fx.error(&text);
    let keys: Vec<_> = e.all().map(|e| e.key.clone().unwrap_or_default()).collect();
    assert_eq!(
        keys,
        [
            "policy.viewer[0]",
            "policy.viewer[2]",
            "policy.contributor[0]"
        ]
    );

    let e = fx.error(&format!("{MINIMAL}\n[policy]\nadmin = [\"record\"]\n"));
    assert_eq!(e.key.as_deref(), Some("policy.admin"));
    assert!(matches!(&*e.kind, ErrorKind::UnknownKey { .. }), "{e}");

    let e = fx.error(&format!("{MINIMAL}\n[policy]\nviewer = \"record\"\n"));
    assert_eq!(e.key.as_deref(), Some("policy.viewer"));
}

// -------------------------------------------------------------------- dns

#[test]
fn dns_table_parses() {
    let fx = Fixture::new();
    fx.write(
        "anchor.txt",
        "example.test. 3600 IN DNSKEY 257 3 15 79czomKDblLUbz0dv085TRjk5zYOeWJOqEqxKbWGwvM=\n",
        0o644,
    );
    let text = format!(
        r#"{MINIMAL}
[dns]
nameservers = ["192.0.2.53:5353", "192.0.2.54", "[2001:db8::53]:53"]
timeout = "500ms"
dnssec = "validate"
trust_anchor_file = "anchor.txt"
min_ttl = "30s"
max_ttl = "2h"
negative_ttl = "5m"
stale_if_error = "0s"
cache_entries = 5
"#
    );
    let dns = fx.load(&text).expect("valid").dns;
    assert_eq!(
        dns.nameservers,
        vec![
            "192.0.2.53:5353".parse().unwrap(),
            "192.0.2.54:53".parse().unwrap(),
            "[2001:db8::53]:53".parse().unwrap()
        ]
    );
    assert_eq!(dns.timeout, Duration::from_millis(500));
    assert_eq!(dns.dnssec, DnssecMode::Validate);
    assert_eq!(dns.trust_anchor_file, Some(fx.path("anchor.txt")));
    assert_eq!(dns.min_ttl, Duration::from_secs(30));
    assert_eq!(dns.max_ttl, Duration::from_secs(7200));
    assert_eq!(dns.negative_ttl, Duration::from_secs(300));
    assert_eq!(dns.stale_if_error, Duration::ZERO);
    assert_eq!(dns.cache_entries, 5);
}

#[test]
fn dns_table_errors_name_the_key() {
    let fx = Fixture::new();
    fx.write("junk.txt", "not a dnskey\n", 0o644);
    let cases: &[(&str, &str, &str)] = &[
        (
            "nameservers = [\"dns.example.org\"]",
            "dns.nameservers[0]",
            "not an IP address",
        ),
        ("timeout = \"0s\"", "dns.timeout", "greater than zero"),
        ("dnssec = \"on\"", "dns.dnssec", "unknown variant"),
        (
            "trust_anchor_file = \"junk.txt\"",
            "dns.trust_anchor_file",
            "dnssec = \"validate\"",
        ),
        (
            "dnssec = \"validate\"\ntrust_anchor_file = \"junk.txt\"",
            "dns.trust_anchor_file",
            "DNSKEY",
        ),
        (
            "dnssec = \"validate\"\ntrust_anchor_file = \"missing.txt\"",
            "dns.trust_anchor_file",
            "missing.txt",
        ),
        ("min_ttl = \"2h\"", "dns.min_ttl", "longer than the maximum"),
        (
            "min_ttl = \"10m\"\nmax_ttl = \"5m\"",
            "dns.max_ttl",
            "shorter than min_ttl",
        ),
        (
            "stale_if_error = \"2d\"",
            "dns.stale_if_error",
            "unknown unit",
        ),
        (
            "stale_if_error = \"25h\"",
            "dns.stale_if_error",
            "longer than the maximum",
        ),
        ("cache_entries = 0", "dns.cache_entries", "at least 1"),
        ("ttl = \"1m\"", "dns.ttl", "unknown key"),
    ];
    for (body, key, message) in cases {
        let e = fx.error(&format!("{MINIMAL}\n[dns]\n{body}\n"));
        assert_eq!(e.key.as_deref(), Some(*key), "{body}: {}", e.report());
        assert!(e.to_string().contains(message), "{body}: {e}");
        assert!(e.position.is_some(), "{body}: {e}");
    }
}

// ------------------------------------------------------- access and notify

#[test]
fn access_and_notify_defaults_and_values() {
    let fx = Fixture::new();
    let c = fx.load(MINIMAL).expect("valid");
    assert_eq!(c.access, crate::config::Access::default());
    assert_eq!(c.notify.webhook_url, None);
    assert_eq!(c.notify.webhook_timeout, Duration::from_secs(5));

    let c = fx
        .load(&format!(
            "{MINIMAL}\n[access]\ncode_ttl = \"5m\"\ncode_attempts = 5\nmax_grant = \"48h\"\n\
             [notify]\nwebhook_url = \"https://hooks.example.org/mdgate\"\nwebhook_timeout = \"2s\"\n"
        ))
        .expect("valid");
    assert_eq!(c.access.code_ttl, Duration::from_secs(300));
    assert_eq!(c.access.code_attempts, 5);
    assert_eq!(c.access.max_grant, Duration::from_secs(48 * 3600));
    assert_eq!(
        c.notify.webhook_url.as_ref().map(|u| u.to_string()),
        Some("https://hooks.example.org/mdgate".to_owned())
    );
    assert_eq!(c.notify.webhook_timeout, Duration::from_secs(2));
}

#[test]
fn bad_access_and_notify_values_are_reported_at_their_key() {
    let fx = Fixture::new();
    let cases: &[(&str, &str, &str)] = &[
        (
            "[access]\ncode_attempts = 0\n",
            "access.code_attempts",
            "at least 1",
        ),
        (
            "[access]\ncode_ttl = \"2h\"\n",
            "access.code_ttl",
            "maximum",
        ),
        (
            "[access]\nsession_idle = \"13h\"\n",
            "access.session_idle",
            "longer than access.session_max",
        ),
        (
            "[notify]\nwebhook_url = \"ftp://x.example.org/\"\n",
            "notify.webhook_url",
            "http:// or https://",
        ),
    ];
    for (tail, key, reason) in cases {
        let e = fx.error(&format!("{MINIMAL}\n{tail}"));
        assert_eq!(e.key.as_deref(), Some(*key), "{tail}");
        assert!(e.to_string().contains(reason), "{tail}: {e}");
    }
}
