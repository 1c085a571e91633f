//! Demo (placeholder).
pub async fn run(_dir: Option<std::path::PathBuf>, _once: bool) -> Result<(), String> {
    Err("not built yet".into())
}
