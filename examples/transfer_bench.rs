//! Transfer benchmark: export → seal → deliver → open → import across two
//! complete servers on loopback (two access.md emulators, two mdgates,
//! DNS, mutual TLS), for records of 1,000 / 10,000 / 100,000 vitals
//! measurements (`SIZES=1000,10000`).
//!
//! Run: `cargo build --release --bin accessmd-emulator --example
//! transfer_bench && target/release/examples/transfer_bench` (see
//! docs/benchmarks.md). The two emulators run as their own processes (the
//! `accessmd-emulator` binary beside this example's directory, or
//! `MDGATE_EMULATOR_BIN`), so that what an emulator holds (a whole record,
//! and each list it answers in one piece, as access.md does) stays out of
//! the figures. Both mdgates and this driver share this process: memory is
//! the growth of its peak RSS (VmHWM, reset before each stage) while
//! server1 exports, seals and delivers, then while server2 opens, checks
//! and imports. The emulators' own peaks are printed beside it.

use std::time::{Duration, Instant};

use mdgate::demo::testbed::{Site, Testbed, Upstreams};
use mdgate::federation::access::Access;
use mdgate::federation::transfer::{self, HandOver};
use mdgate::transfer::seal::{SealKey, Sealer};
use mdgate::upstream::{ops, Secret, SignedInUser, Vitals};

fn access(site: &Site) -> Access {
    site.running().access.clone().expect("access flow")
}

async fn sign_in(site: &Site, who: &mdgate::demo::testbed::Login) -> SignedInUser {
    access(site)
        .sign_in(&who.username, Secret::new(who.password.clone()))
        .await
        .expect("sign-in")
}

fn peak_kib() -> u64 {
    peak_kib_of("self")
}

/// VmHWM of `/proc/<pid>`, in KiB.
fn peak_kib_of(pid: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn reset_peak() {
    // Writing 5 resets VmHWM to the current RSS (Linux ≥ 4.0).
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

async fn one_size(n: usize) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let bed = Testbed::start_with(
        dir.path(),
        &["one", "two"],
        "",
        &Upstreams::Processes(emulator_bin()),
    )
    .await
    .expect("testbed");
    let (one, two) = (&bed.sites[0], &bed.sites[1]);
    let up1 = mdgate::upstream::AccessMd::new(
        &mdgate::config::load(&one.config_path)
            .expect("config")
            .upstream,
    );
    let patient = sign_in(one, &one.patient).await;
    let session = patient.patient_session(&up1).expect("patient session");
    let fill = Instant::now();
    for i in 0..n {
        session
            .report_vitals(&Vitals {
                heart_beats_per_minute: 60.0 + (i % 40) as f64,
                systolic_pressure: 118.0,
                diastolic_pressure: 79.0,
                blood_oxygenation: 97.0,
                breathing_rate: 15.0,
            })
            .await
            .expect("vitals");
    }
    eprintln!("filled {n} vitals in {:.1} s", fill.elapsed().as_secs_f64());

    let invitation = access(one)
        .new_invitation(&patient)
        .await
        .expect("invitation");
    let doctor = sign_in(two, &two.doctor).await;
    let started = transfer::start(&access(two), &doctor, &invitation.payload)
        .await
        .expect("start");
    let code = started.data.code.clone().expect("code");
    let pending = access(one)
        .patient_overview(&patient)
        .await
        .expect("overview")
        .pending[0]
        .id;
    let key = SealKey::generate();
    reset_peak();
    let base = peak_kib();
    let t0 = Instant::now();
    transfer::approve(&access(one), &patient, pending, &code, &key.to_b64url())
        .await
        .expect("approve");
    let mut exported = None;
    let delivered = loop {
        let list = transfer::patient_transfers(&access(one), &patient)
            .await
            .expect("list");
        let v = &list[0];
        if exported.is_none() && v.state() != "approved" {
            exported = Some(t0.elapsed());
        }
        if v.state() == "delivered" {
            break v.clone();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let to_delivered = t0.elapsed();
    let source_peak = peak_kib().saturating_sub(base);
    let id = started.transfer.id;
    let cipher = delivered.data.cipher_len.unwrap_or(0);

    reset_peak();
    let base = peak_kib();
    let t1 = Instant::now();
    transfer::hand_over(
        &access(two),
        id,
        HandOver {
            key: key.to_b64url(),
            approval: delivered.data.approval.clone().unwrap_or_default(),
            username: format!("bench{n}"),
            password: Secret::new("bench-pass".to_owned()),
        },
    )
    .await
    .expect("hand-over");
    let checked = t1.elapsed();
    loop {
        let v = transfer::handover_view(&access(two), id)
            .await
            .expect("view");
        if matches!(v.state(), "imported" | "confirmed")
            && !transfer::import_running(&access(two), id)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let import = t1.elapsed();
    let target_peak = peak_kib().saturating_sub(base);

    // Baseline in the same run: the upstream's own speed for the same
    // writes (R13 straight to the emulator, no mdgate), 1,000 of them.
    let up2 = mdgate::upstream::AccessMd::new(
        &mdgate::config::load(&two.config_path)
            .expect("config")
            .upstream,
    );
    let login = up2
        .login(&format!("bench{n}"), &Secret::new("bench-pass".to_owned()))
        .await
        .expect("login");
    let direct = mdgate::upstream::PatientSession::new(up2.clone(), login.user.id, login.session);
    let d0 = Instant::now();
    for _ in 0..1000 {
        direct
            .report_vitals(&Vitals {
                heart_beats_per_minute: 61.0,
                systolic_pressure: 118.0,
                diastolic_pressure: 79.0,
                blood_oxygenation: 97.0,
                breathing_rate: 15.0,
            })
            .await
            .expect("direct vitals");
    }
    let upstream_per_write = d0.elapsed() / 1000;

    // The encryption stage alone, on this record's bundle.
    let bundle =
        std::fs::read(two.dir.join("transfers").join(format!("{id}.bundle"))).expect("bundle");
    let mut sealer = Sealer::new(&key);
    let mut out = Vec::with_capacity(bundle.len() + bundle.len() / 1000 + 64);
    let s0 = Instant::now();
    for piece in bundle.chunks(64 * 1024) {
        sealer.push(piece, &mut out).expect("seal");
    }
    sealer.finish(&mut out).expect("seal");
    let seal_s = s0.elapsed().as_secs_f64();
    let _ = ops::R13;
    let emulator_peak = |site: &Site| {
        site.upstream_process
            .as_ref()
            .map_or(0, |p| peak_kib_of(&p.pid().to_string()) / 1024)
    };
    let (emulator_one, emulator_two) = (emulator_peak(one), emulator_peak(two));
    bed.shutdown().await;
    let mb = bundle.len() as f64 / 1e6;
    format!(
        "| {n} | {:.1} | {:.2} | {:.2} | {:.2} | {:.2} | {:.1} | {:.0} | {:.1} | {:.1} | {:.2} | {} / {} |",
        mb,
        exported.unwrap_or_default().as_secs_f64(),
        to_delivered.as_secs_f64(),
        checked.as_secs_f64(),
        import.as_secs_f64(),
        cipher as f64 / 1e6,
        mb / seal_s,
        source_peak as f64 / 1024.0,
        target_peak as f64 / 1024.0,
        import.as_secs_f64() / (upstream_per_write.as_secs_f64() * n as f64),
        emulator_one,
        emulator_two,
    )
}

/// The `accessmd-emulator` binary: `MDGATE_EMULATOR_BIN`, or the one
/// built beside `target/<profile>/examples/`.
fn emulator_bin() -> std::path::PathBuf {
    if let Some(bin) = std::env::var_os("MDGATE_EMULATOR_BIN") {
        return bin.into();
    }
    let exe = std::env::current_exe().expect("current exe");
    let bin = exe
        .parent()
        .and_then(|examples| examples.parent())
        .map(|profile| profile.join("accessmd-emulator"))
        .expect("target directory");
    assert!(
        bin.exists(),
        "{} is missing: cargo build --release --bin accessmd-emulator",
        bin.display()
    );
    bin
}

fn main() {
    let sizes: Vec<usize> = std::env::var("SIZES")
        .unwrap_or_else(|_| "1000,10000,100000".to_owned())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    println!("| vitals | bundle MB | exported s | delivered s | checked s | imported s | ciphertext MB | seal MB/s | mdgates' peak +MiB, export+delivery | mdgates' peak +MiB, open+import | import / upstream's own write time | emulators' peak MiB (one / two) |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for n in sizes {
        let line = rt.block_on(one_size(n));
        println!("{line}");
    }
}
