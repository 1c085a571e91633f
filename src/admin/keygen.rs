//! `mdgate keygen`: create this server's keys.
//!
//! In one directory it writes an Ed25519 signing key and a P-256 TLS key
//! with a self-signed certificate whose only DNS name is the server's FQDN:
//!
//! ```text
//! signing-<prefix>sig<year><letter>.key   mode 0600   PKCS#8 PEM
//! tls-<prefix>tls<year><letter>.key       mode 0600   PKCS#8 PEM
//! tls-<prefix>tls<year><letter>.crt       mode 0644   self-signed, 1 year
//! ```
//!
//! The selectors (`sig2026a`, `tls2026a`) come from the current year and
//! the first letter that no file in the directory uses yet, so a second
//! run, say for a rotation, gets `sig2026b`. Both keys of one run share the
//! letter. Files are created with `O_EXCL` and their final mode from the
//! start ([`write_private`]): keygen never overwrites anything, and if some
//! file cannot be created it removes the ones this run created and fails.
//!
//! `--next` changes nothing on disk; it changes what is printed: the lines
//! for the `next_*` keys of `[keys]` and the rotation steps, since the new
//! keys must be published in DNS before they are used (`docs/protocol.md`
//! § Rotation). Keeping the same file names means nothing is renamed at the
//! switch; only the configuration lines move.
//!
//! The report printed lists the files, the public values and the
//! configuration lines. No secret is ever printed.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

use crate::tls::normalize_fqdn;
use crate::tls::pki::{self, write_private, PkiError};
use crate::token::{unix_seconds, valid_selector, KeyError, SigningKey};

/// What `mdgate keygen` was asked for.
#[derive(Debug, Clone)]
pub struct KeygenArgs {
    /// The server's FQDN (the certificate's only DNS name).
    pub fqdn: String,
    /// Where to write the files; created (mode 0700) if missing.
    pub dir: PathBuf,
    /// Put before the selectors' kind (`hq-` gives `hq-sig2026a`).
    pub selector_prefix: String,
    /// These are the next keys of a rotation.
    pub next: bool,
}

/// The selectors and files of one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub signing_selector: String,
    pub tls_selector: String,
    pub signing_key_file: PathBuf,
    pub tls_key_file: PathBuf,
    pub tls_cert_file: PathBuf,
}

/// What a run created.
#[derive(Debug, Clone)]
pub struct Generated {
    pub fqdn: String,
    pub plan: Plan,
    pub next: bool,
    /// Standard base64 of the signing key's SubjectPublicKeyInfo (DNS `k=`).
    pub signing_spki_b64: String,
    /// Standard base64 of SHA-256 over the TLS key's SubjectPublicKeyInfo
    /// (DNS `h=`, TLSA `3 1 1` in hex).
    pub tls_spki_sha256_b64: String,
}

/// Why keygen stopped. Files this run created before the failure are
/// removed again.
#[derive(Debug, thiserror::Error)]
pub enum KeygenError {
    #[error("invalid --fqdn {fqdn:?}: {reason}")]
    Fqdn { fqdn: String, reason: String },
    #[error(
        "invalid --selector-prefix {prefix:?}: selectors are [a-z0-9][a-z0-9-]{{0,62}}, \
         so use lower-case letters, digits and '-', not starting with '-', at most 54 characters"
    )]
    Prefix { prefix: String },
    #[error("{} exists and is not a directory", path.display())]
    NotADirectory { path: PathBuf },
    #[error("cannot use directory {}: {source}", path.display())]
    Dir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "refusing to overwrite {}: keygen never replaces an existing file; \
         nothing was written (move the file away or use another --dir)",
        path.display()
    )]
    Exists { path: PathBuf },
    #[error(
        "cannot write {}: {source}; the files this run created before it were removed \
         (if {} itself was created, it is incomplete: remove it)",
        path.display(),
        path.display()
    )]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "every selector from {first} to {last} is already used by a file in {}; \
         use another --dir or --selector-prefix",
        dir.display()
    )]
    NoFreeSelector {
        first: String,
        last: String,
        dir: PathBuf,
    },
    #[error("cannot generate the signing key: {0}")]
    SigningKey(#[from] KeyError),
    #[error("cannot generate the TLS key and certificate: {0}")]
    Tls(#[from] PkiError),
}

/// Runs keygen: checks the arguments, picks free selectors, writes the
/// three files.
pub fn run(args: &KeygenArgs, now: SystemTime) -> Result<Generated, KeygenError> {
    let fqdn = normalize_fqdn(&args.fqdn).map_err(|e| KeygenError::Fqdn {
        fqdn: args.fqdn.clone(),
        reason: e.to_string(),
    })?;
    let year = year_of(now);
    if !valid_selector(&format!("{}sig{year}a", args.selector_prefix)) {
        return Err(KeygenError::Prefix {
            prefix: args.selector_prefix.clone(),
        });
    }
    let dir = prepare_dir(&args.dir)?;
    let plan = plan(&dir, &args.selector_prefix, year)?;
    let signing = SigningKey::generate(&plan.signing_selector)?;
    let (cert_pem, tls_key_pem) = pki::self_signed(&fqdn)?;
    let tls_hash = pki::spki_sha256_of_pem(&cert_pem)?;
    write_all(
        &[
            (
                &plan.signing_key_file,
                signing.to_pkcs8_pem().as_bytes(),
                true,
            ),
            (&plan.tls_key_file, tls_key_pem.as_bytes(), true),
            (&plan.tls_cert_file, cert_pem.as_bytes(), false),
        ],
        &dir,
    )?;
    Ok(Generated {
        fqdn,
        plan,
        next: args.next,
        signing_spki_b64: signing.spki_b64(),
        tls_spki_sha256_b64: STANDARD.encode(tls_hash),
    })
}

/// Makes `dir` absolute and creates it (mode 0700) when missing.
fn prepare_dir(dir: &Path) -> Result<PathBuf, KeygenError> {
    let dir = std::path::absolute(dir).map_err(|source| KeygenError::Dir {
        path: dir.to_path_buf(),
        source,
    })?;
    match std::fs::metadata(&dir) {
        Ok(meta) if meta.is_dir() => Ok(dir),
        Ok(_) => Err(KeygenError::NotADirectory { path: dir }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .map_err(|source| KeygenError::Dir {
                    path: dir.clone(),
                    source,
                })?;
            Ok(dir)
        }
        Err(source) => Err(KeygenError::Dir { path: dir, source }),
    }
}

/// Picks the first letter whose selectors no file name in `dir` contains
/// (a backup such as `signing-sig2026a.key.bak` counts too), so a new key
/// never reuses a selector that may still be published.
pub fn plan(dir: &Path, prefix: &str, year: i64) -> Result<Plan, KeygenError> {
    let names: Vec<String> = std::fs::read_dir(dir)
        .map_err(|source| KeygenError::Dir {
            path: dir.to_path_buf(),
            source,
        })?
        .filter_map(|entry| entry.ok())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    let selector = |kind: &str, letter: char| format!("{prefix}{kind}{year}{letter}");
    for letter in 'a'..='z' {
        let sig = selector("sig", letter);
        let tls = selector("tls", letter);
        if names.iter().any(|n| n.contains(&sig) || n.contains(&tls)) {
            continue;
        }
        return Ok(Plan {
            signing_key_file: dir.join(format!("signing-{sig}.key")),
            tls_key_file: dir.join(format!("tls-{tls}.key")),
            tls_cert_file: dir.join(format!("tls-{tls}.crt")),
            signing_selector: sig,
            tls_selector: tls,
        });
    }
    Err(KeygenError::NoFreeSelector {
        first: selector("sig", 'a'),
        last: selector("sig", 'z'),
        dir: dir.to_path_buf(),
    })
}

/// Creates each file (never replacing one); on any failure removes the
/// files created here and reports the first error.
pub fn write_all(files: &[(&PathBuf, &[u8], bool)], dir: &Path) -> Result<(), KeygenError> {
    let mut created: Vec<&Path> = Vec::new();
    for (path, bytes, private) in files {
        let written = if *private {
            write_private(path, bytes)
        } else {
            write_public(path, bytes)
        };
        if let Err(source) = written {
            // Only files this run created are removed. `path` is left
            // alone: write_private's error does not say whether it created
            // the file before failing, and it may be someone else's.
            for ours in &created {
                let _ = std::fs::remove_file(ours);
            }
            return Err(if source.kind() == io::ErrorKind::AlreadyExists {
                KeygenError::Exists {
                    path: (*path).clone(),
                }
            } else {
                KeygenError::Write {
                    path: (*path).clone(),
                    source,
                }
            });
        }
        created.push(path.as_path());
    }
    // Make the new directory entries durable too; the files already are.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// A certificate: not secret, so 0644, but still never overwritten.
fn write_public(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// The proleptic Gregorian year of `now` in UTC (H. Hinnant's
/// days-to-civil algorithm, so no calendar crate is needed).
pub fn year_of(now: SystemTime) -> i64 {
    let days = unix_seconds(now).div_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let year = yoe + era * 400;
    // Months are counted from March: January and February (mp 10, 11)
    // belong to the next civil year.
    if mp >= 10 {
        year + 1
    } else {
        year
    }
}

impl Generated {
    /// What `mdgate keygen` prints: files, public values, configuration
    /// lines. Holds no secret.
    pub fn report(&self) -> String {
        let p = &self.plan;
        let file = |path: &Path| {
            path.file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
        };
        let dir = p
            .signing_key_file
            .parent()
            .map_or_else(String::new, |d| d.display().to_string());
        let mut out = String::new();
        let kind = if self.next { "next keys" } else { "keys" };
        out.push_str(&format!(
            "mdgate: created the {kind} of {} in {dir}:\n",
            self.fqdn
        ));
        out.push_str(&format!(
            "  {:<28} Ed25519 signing key, selector {} (mode 0600)\n",
            file(&p.signing_key_file),
            p.signing_selector
        ));
        out.push_str(&format!(
            "  {:<28} P-256 TLS key, selector {} (mode 0600)\n",
            file(&p.tls_key_file),
            p.tls_selector
        ));
        out.push_str(&format!(
            "  {:<28} self-signed certificate for {}, valid one year (mode 0644)\n\n",
            file(&p.tls_cert_file),
            self.fqdn
        ));
        out.push_str("Public values (not secret; `mdgate dns-records` prints the DNS records):\n");
        out.push_str(&format!(
            "  {}: SubjectPublicKeyInfo, base64: {}\n",
            p.signing_selector, self.signing_spki_b64
        ));
        out.push_str(&format!(
            "  {}: SHA-256 of the SubjectPublicKeyInfo, base64: {}\n\n",
            p.tls_selector, self.tls_spki_sha256_b64
        ));
        if self.next {
            self.next_steps(&mut out);
        } else {
            out.push_str("Add to the configuration:\n\n");
            self.current_lines(&mut out);
            out.push_str(
                "\nPublish the DNS records (`mdgate dns-records`) and check them from outside \
                 before peers are expected to trust this server.\n",
            );
        }
        out
    }

    fn current_lines(&self, out: &mut String) {
        let p = &self.plan;
        out.push_str("[keys]\n");
        out.push_str(&format!(
            "signing_key_file = {}\n",
            toml_path(&p.signing_key_file)
        ));
        out.push_str(&format!(
            "signing_selector = {}\n",
            toml_str(&p.signing_selector)
        ));
        out.push_str(&format!("tls_selector = {}\n\n", toml_str(&p.tls_selector)));
        out.push_str("[federation.tls]\n");
        out.push_str(&format!("cert_file = {}\n", toml_path(&p.tls_cert_file)));
        out.push_str(&format!("key_file = {}\n", toml_path(&p.tls_key_file)));
    }

    fn next_steps(&self, out: &mut String) {
        let p = &self.plan;
        out.push_str(
            "These are the NEXT keys: do not sign with them or present them yet; peers would \
             refuse them until their DNS records are visible (docs/protocol.md, Rotation).\n\n\
             1. Add to [keys], beside the current keys:\n\n",
        );
        out.push_str("[keys]\n");
        out.push_str(&format!(
            "next_signing_key_file = {}\n",
            toml_path(&p.signing_key_file)
        ));
        out.push_str(&format!(
            "next_signing_selector = {}\n",
            toml_str(&p.signing_selector)
        ));
        out.push_str(&format!(
            "next_tls_selector = {}\n",
            toml_str(&p.tls_selector)
        ));
        out.push_str(&format!(
            "next_tls_cert_file = {}\n\n",
            toml_path(&p.tls_cert_file)
        ));
        out.push_str(
            "2. Publish the new records and add the selectors to the index (`mdgate \
             dns-records`). Wait until `mdgate dns-records --check` sees them from outside and \
             the previous index's TTL has passed.\n\n\
             3. Switch: the keys in use now move to the previous_* lines (they stay published \
             until revoked), the next_* lines go, and the current keys become:\n\n",
        );
        self.current_lines(out);
        out.push_str(
            "\n4. After the old keys' last use plus the longest token lifetime and the TTL, \
             revoke them in DNS (empty k= or h=) or drop them from the index.\n",
        );
    }
}

/// A TOML basic string (quotes and backslashes escaped).
fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

fn toml_path(path: &Path) -> String {
    toml_str(&path.to_string_lossy())
}

#[cfg(test)]
mod tests;
