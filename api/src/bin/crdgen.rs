//! Writes the CRDs generated from the `prewarm-api` types into `manifests/crds/`.

use std::path::Path;
use std::process::ExitCode;

use prewarm_api::crd;

fn main() -> ExitCode {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(crd::CHECKED_IN_DIR);
    match write_all(&dir) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("crdgen: {message}");
            ExitCode::FAILURE
        }
    }
}

fn write_all(dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let crds = crd::all().map_err(|e| format!("merging CRD versions: {e}"))?;
    for (file, definition) in crds {
        let text = crd::render(&definition).map_err(|e| format!("rendering {file}: {e}"))?;
        let path = dir.join(file);
        std::fs::write(&path, text).map_err(|e| format!("writing {}: {e}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
