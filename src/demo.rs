//! `mdgate demo`: a complete federation on loopback, for a first look.
//!
//! It starts a DNS server for the zone `mdgate.test`, and two servers
//! (`server1` and `server2`), each an access.md emulator with accounts and
//! an mdgate with freshly generated keys published in that DNS (see
//! [`testbed`]). It then runs the patient-approved access flow once,
//! printing each step, and stays up (unless `--once`) printing the URLs and
//! accounts so a person can do it again in a browser. Nothing here is used
//! by `mdgate serve`.

use std::path::PathBuf;

mod flow;
pub mod testbed;

type DemoResult<T> = Result<T, String>;

fn err<E: std::fmt::Display>(context: &'static str) -> impl Fn(E) -> String {
    move |e| format!("{context}: {e}")
}

/// Runs the demo in `dir` (a private temporary directory when `None`).
pub async fn run(dir: Option<PathBuf>, once: bool) -> DemoResult<()> {
    let (_temp, dir) = match dir {
        Some(d) => {
            std::fs::create_dir_all(&d).map_err(err("demo directory"))?;
            (None, d)
        }
        None => {
            let t = tempfile_dir()?;
            let p = t.clone();
            (Some(TempDirGuard(t)), p)
        }
    };
    let bed = testbed::Testbed::start(&dir, &["server1", "server2"], "").await?;
    println!("mdgate demo: two access.md servers federating through two mdgates, on loopback.");
    println!(
        "files (keys, certificates, configurations, stores): {}",
        dir.display()
    );
    println!(
        "DNS server for the zone {} (keys published there): {}",
        testbed::ZONE,
        bed.dns.addr()
    );
    for site in &bed.sites {
        let r = site.running();
        println!("{}:", site.fqdn);
        println!(
            "  access.md emulator (upstream): {}",
            site.emulator().base_url()
        );
        println!(
            "  pages (patients and doctors):  {}/federation/",
            site.public_url()
        );
        if let Some(fed) = r.federation_addr {
            println!("  federation listener (mTLS):    {fed}");
        }
        println!(
            "  admin (metrics):               http://{}/metrics",
            r.admin_addr
        );
    }

    flow::walk(&bed).await?;

    println!("\nTry it yourself in a browser:");
    for (i, site) in bed.sites.iter().enumerate() {
        let other = &bed.sites[1 - i];
        println!(
            "  {}: patient {} / {}, doctor {} / {}  ({}/federation/)",
            site.fqdn,
            site.patient.username,
            site.patient.password,
            site.doctor.username,
            site.doctor.password,
            site.public_url()
        );
        let _ = other;
    }
    println!(
        "  1. sign in as {} on {} and copy the QR payload under the code;",
        bed.sites[0].patient.username, bed.sites[0].fqdn
    );
    println!(
        "  2. sign in as {} on {} (another browser profile), paste it, and note the code;",
        bed.sites[1].doctor.username, bed.sites[1].fqdn
    );
    println!(
        "  3. back on the patient's page, type the code and approve; then read as the doctor."
    );
    println!(
        "  Check what server2 sees of server1: mdgate check-peer -c {} {}",
        bed.sites[1].config_path.display(),
        bed.sites[0].fqdn
    );
    if once {
        bed.shutdown().await;
        return Ok(());
    }
    println!("\nmdgate demo is running; press Ctrl-C to stop.");
    tokio::signal::ctrl_c().await.map_err(err("signal"))?;
    println!("stopping");
    bed.shutdown().await;
    Ok(())
}

/// A private temporary directory, removed when the demo ends.
fn tempfile_dir() -> DemoResult<PathBuf> {
    let base = std::env::temp_dir().join(format!("mdgate-demo-{}", std::process::id()));
    std::fs::create_dir_all(&base).map_err(err("demo directory"))?;
    let _ = std::fs::set_permissions(&base, std::os::unix::fs::PermissionsExt::from_mode(0o700));
    Ok(base)
}

struct TempDirGuard(PathBuf);

impl Drop for TempDirGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
