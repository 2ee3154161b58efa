//! Where `scripts/test-assets.sh` put the external test assets. Free of
//! dependencies, so a crate's own tests can include this file with
//! `#[path]` where depending on the test kit would be circular; the library
//! crates stay free of environment and file access.

/// Where `scripts/test-assets.sh` put the external test assets
/// (`CONSENTRY_TEST_ASSETS`, else `~/.cache/consentry-test-assets`), for
/// tests: the directory of one fetched package, e.g. `simple-hl7-3.3.0`.
/// Missing assets fail the test that needs them: a skipped check would
/// pass without checking anything.
pub fn test_asset_dir(package: &str) -> std::path::PathBuf {
    let root = std::env::var_os("CONSENTRY_TEST_ASSETS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache/consentry-test-assets")
        });
    let dir = root.join(package);
    assert!(
        dir.join(".complete").exists(),
        "test assets missing in {}: run scripts/test-assets.sh (make test does)",
        root.display()
    );
    dir
}
