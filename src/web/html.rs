//! HTML building blocks: escaping, the page frame (head, inline style,
//! header with the sign-out button), and the small formatters every page
//! uses (times, durations, roles).
//!
//! Every piece of text that did not come from this file goes through
//! [`esc`], in element content and in (always double-quoted) attribute
//! values alike. Pages are written with `write!` into a `String`; writing
//! to a `String` cannot fail, so the `fmt::Result`s are ignored with `_`.

use std::fmt::{self, Write as _};
use std::sync::LazyLock;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use sha2::{Digest, Sha256};

use crate::policy::Role;
use crate::store::UnixMillis;

/// Text made safe for HTML element content and double- or single-quoted
/// attribute values: `&`, `<`, `>`, `"` and `'` become character
/// references; nothing else changes.
pub struct Escaped<'a>(pub &'a str);

/// Wraps `s` for escaping when it is formatted.
pub fn esc(s: &str) -> Escaped<'_> {
    Escaped(s)
}

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        // Copy runs of safe text in one go, replace the five specials.
        while let Some(i) = rest.find(['&', '<', '>', '"', '\'']) {
            f.write_str(&rest[..i])?;
            f.write_str(match rest.as_bytes()[i] {
                b'&' => "&amp;",
                b'<' => "&lt;",
                b'>' => "&gt;",
                b'"' => "&quot;",
                _ => "&#39;",
            })?;
            rest = &rest[i + 1..];
        }
        f.write_str(rest)
    }
}

/// `s` escaped, as an owned string.
pub fn escape(s: &str) -> String {
    esc(s).to_string()
}

/// The page style. Served inline and allowed by its hash in the CSP, so
/// no `style="..."` attribute may appear anywhere.
pub const STYLE: &str = "\
:root{color-scheme:light dark;--fg:#1a1a1a;--bg:#fff;--muted:#5a5a5a;--line:#c8c8c8;\
--accent:#0b5cad;--bad:#a4161a;--good:#1b6e2b;--box:#f3f5f8}\
@media (prefers-color-scheme:dark){:root{--fg:#eee;--bg:#141414;--muted:#b0b0b0;\
--line:#444;--accent:#7ab7ff;--bad:#ff8a8a;--good:#7fd68f;--box:#1f2329}}\
*{box-sizing:border-box}\
body{margin:0;font:1.05rem/1.5 system-ui,-apple-system,\"Segoe UI\",Roboto,sans-serif;\
color:var(--fg);background:var(--bg)}\
header,main,footer{max-width:44rem;margin:0 auto;padding:0.75rem 1rem}\
header{display:flex;flex-wrap:wrap;gap:0.5rem;align-items:center;justify-content:space-between;\
border-bottom:1px solid var(--line)}\
header .who{color:var(--muted)}\
h1{font-size:1.5rem;margin:0.5rem 0}h2{font-size:1.2rem;margin:1.5rem 0 0.5rem}\
a{color:var(--accent)}\
label{display:block;font-weight:600;margin:0.75rem 0 0.25rem}\
input,select,textarea{width:100%;font:inherit;padding:0.6rem;min-height:3rem;\
border:1px solid var(--line);border-radius:0.4rem;background:var(--bg);color:var(--fg)}\
textarea{min-height:6rem}\
input.code{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:1.4rem;\
letter-spacing:0.15em;text-transform:uppercase}\
button{font:inherit;font-weight:600;min-height:3rem;min-width:6rem;padding:0.6rem 1.2rem;\
border-radius:0.4rem;border:1px solid var(--accent);background:var(--accent);color:var(--bg);\
cursor:pointer;margin:0.5rem 0.5rem 0 0}\
button.secondary{background:transparent;color:var(--accent)}\
button.danger{background:var(--bad);border-color:var(--bad);color:var(--bg)}\
:focus-visible{outline:3px solid var(--accent);outline-offset:2px}\
.card{border:1px solid var(--line);border-radius:0.5rem;padding:0.75rem 1rem;margin:0.75rem 0;\
background:var(--box)}\
.notice{border-left:0.3rem solid var(--good);padding:0.5rem 0.75rem;background:var(--box)}\
.error{border-left:0.3rem solid var(--bad);padding:0.5rem 0.75rem;background:var(--box)}\
.muted{color:var(--muted)}\
.qr svg{display:block;width:100%;max-width:18rem;height:auto;margin:0 auto;background:#fff}\
.payload{font-family:ui-monospace,Menlo,Consolas,monospace;word-break:break-all;font-size:0.9rem}\
.bigcode{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:2.6rem;font-weight:700;\
letter-spacing:0.12em;text-align:center;margin:1rem 0;word-spacing:0.6em}\
.scroll{overflow-x:auto}\
table{border-collapse:collapse;width:100%;font-size:0.95rem}\
th,td{text-align:left;padding:0.4rem 0.5rem;border-bottom:1px solid var(--line);vertical-align:top}\
caption{text-align:left;font-weight:600;padding:0.25rem 0}\
dl{display:grid;grid-template-columns:max-content 1fr;gap:0.25rem 1rem}dt{font-weight:600}dd{margin:0}\
pre{overflow-x:auto;background:var(--box);padding:0.75rem;border-radius:0.4rem}\
ul.plain{list-style:none;padding:0}ul.plain li{margin:0.1rem 0}ul.plain a{display:inline-block;padding:0.6rem 0}\
video{width:100%;max-width:24rem}\
";

/// `'sha256-…'` of a script or style body, for the CSP.
pub fn csp_hash(body: &str) -> String {
    format!(
        "'sha256-{}'",
        STANDARD.encode(Sha256::digest(body.as_bytes()))
    )
}

static STYLE_HASH: LazyLock<String> = LazyLock::new(|| csp_hash(STYLE));

/// The `Content-Security-Policy` of a page; `script` is the one inline
/// script the page may run (only the doctor's page has one).
pub fn content_security_policy(script: Option<&str>) -> String {
    let script_src = match script {
        Some(body) => format!("script-src {}; ", csp_hash(body)),
        None => String::new(),
    };
    format!(
        "default-src 'none'; img-src 'self' data:; style-src {}; {script_src}\
         form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        *STYLE_HASH
    )
}

/// Who is signed in, for the page header.
pub struct Header<'a> {
    pub display_name: &'a str,
    pub username: &'a str,
    /// The CSRF token for the sign-out form.
    pub csrf: &'a str,
}

/// One page, before it becomes a response.
pub struct Page {
    pub title: String,
    pub body: String,
    /// `<meta http-equiv="refresh">` after this many seconds...
    pub refresh: Option<u32>,
    /// ...to this path of the site (else the page itself).
    pub refresh_to: Option<String>,
    /// The inline script (also allowed in the CSP by its hash).
    pub script: Option<&'static str>,
}

impl Page {
    pub fn new(title: impl Into<String>, body: String) -> Page {
        Page {
            title: title.into(),
            body,
            refresh: None,
            refresh_to: None,
            script: None,
        }
    }

    /// The whole document.
    pub fn render(&self, header: Option<&Header<'_>>) -> String {
        let mut out = String::with_capacity(self.body.len() + STYLE.len() + 1024);
        out.push_str("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">");
        out.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">");
        match (self.refresh, &self.refresh_to) {
            (Some(s), Some(to)) => {
                let _ = write!(
                    out,
                    "<meta http-equiv=\"refresh\" content=\"{s};url={}\">",
                    esc(to)
                );
            }
            (Some(s), None) => {
                let _ = write!(out, "<meta http-equiv=\"refresh\" content=\"{s}\">");
            }
            (None, _) => {}
        }
        let _ = write!(
            out,
            "<title>{} · mdgate</title><style>{STYLE}</style></head><body>",
            esc(&self.title)
        );
        out.push_str("<header><span><strong>mdgate</strong> <span class=\"muted\">record sharing</span></span>");
        if let Some(h) = header {
            let _ = write!(
                out,
                "<form method=\"post\" action=\"/federation/sign-out\">\
                 <span class=\"who\">{} ({})</span> \
                 <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
                 <button class=\"secondary\" type=\"submit\">Sign out</button></form>",
                esc(h.display_name),
                esc(h.username),
                esc(h.csrf)
            );
        }
        out.push_str("</header><main>");
        out.push_str(&self.body);
        out.push_str("</main>");
        if let Some(script) = self.script {
            let _ = write!(out, "<script>{script}</script>");
        }
        out.push_str("</body></html>\n");
        out
    }
}

/// A `<p>` with a message for the person; `error` picks the style and
/// makes it an alert for screen readers.
pub fn message(out: &mut String, text: &str, error: bool) {
    if error {
        let _ = write!(out, "<p class=\"error\" role=\"alert\">{}</p>", esc(text));
    } else {
        let _ = write!(out, "<p class=\"notice\" role=\"status\">{}</p>", esc(text));
    }
}

/// The hidden CSRF field every form carries.
pub fn csrf_field(out: &mut String, token: &str) {
    let _ = write!(
        out,
        "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        esc(token)
    );
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// `24 Nov 2026, 08:30 UTC`. The server cannot know the reader's time
/// zone without scripts, so it says which one it uses.
pub fn time(ms: UnixMillis) -> String {
    let Ok(t) = time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000)) else {
        return "(unknown time)".to_owned();
    };
    format!(
        "{} {} {}, {:02}:{:02} UTC",
        t.day(),
        MONTHS[usize::from(u8::from(t.month())) - 1],
        t.year(),
        t.hour(),
        t.minute()
    )
}

/// `30 days`, `4 hours`, `90 minutes`: the largest unit that is exact
/// (minutes, rounded up, as a last resort).
pub fn duration(d: Duration) -> String {
    const DAY: u64 = 86_400;
    const HOUR: u64 = 3_600;
    let s = d.as_secs();
    let (n, unit) = if s >= DAY && s.is_multiple_of(DAY) {
        (s / DAY, "day")
    } else if s >= HOUR && s.is_multiple_of(HOUR) {
        (s / HOUR, "hour")
    } else {
        (s.div_ceil(60).max(1), "minute")
    };
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

/// What a role lets the doctor do, in plain words.
pub fn role(role: Role) -> &'static str {
    match role {
        Role::Viewer => "read your record",
        Role::Contributor => "read your record and ask you questions",
    }
}

/// A role as a choice in the patient's approval form.
pub fn role_choice(role: Role) -> &'static str {
    match role {
        Role::Viewer => "Only read",
        Role::Contributor => "Read and ask questions",
    }
}

/// A role's name for a doctor's page.
pub fn role_name(role: Role) -> &'static str {
    match role {
        Role::Viewer => "Viewer (read the record)",
        Role::Contributor => "Contributor (read, and ask questions)",
    }
}
