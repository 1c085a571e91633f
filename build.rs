// Rebuild when a migration file is added: `sqlx::migrate!` embeds the
// directory's contents but only tracks files that already existed.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
