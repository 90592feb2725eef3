//! The on-disk kernel cache with real NVRTC compiles (needs libnvrtc, no GPU): hits from memory
//! and disk, damaged or foreign entries rejected and rewritten, entries that are not regular
//! files (a FIFO, a link to `/dev/zero`) or too large rejected unread, unwritable folders
//! tolerated.

use flashgen_codegen::{parse_spec, Arch, KernelSpec};
use flashgen_runtime::cache::read_entry;
use flashgen_runtime::{CacheHit, CacheSource, KernelCache};
use std::path::{Path, PathBuf};
use std::sync::Arc;

const ARCH: Arch = Arch::SM80;

fn spec(text: &str) -> KernelSpec {
    parse_spec(text, ARCH).unwrap()
}

fn small() -> KernelSpec {
    spec("dense,d64,bf16,m64n64w4s1")
}

/// A fresh folder under the system temp dir, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "flashgen-cache-disk-{name}-{}-{:?}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        make_writable(&self.0);
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn make_writable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path) {
        if meta.is_dir() {
            let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755));
        }
    }
}

fn entry_path(dir: &Path, spec: &KernelSpec) -> PathBuf {
    dir.join(format!("{}.cubin", KernelCache::key(spec, ARCH).unwrap()))
}

/// The names of the files in a folder, sorted.
fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn get(cache: &KernelCache, spec: &KernelSpec) -> CacheHit {
    cache
        .get_or_compile(spec, ARCH)
        .unwrap_or_else(|e| panic!("{spec}: {e}"))
}

#[track_caller]
fn assert_compiled(hit: &CacheHit) {
    assert!(
        matches!(hit.source, CacheSource::Compiled { .. }),
        "expected a compile, got {:?}",
        hit.source
    );
}

#[test]
fn compile_then_memory_then_disk() {
    let tmp = TempDir::new("round-trip");
    let dir = tmp.0.join("kernels");
    let spec = small();

    let cache = KernelCache::new(Some(dir.clone()));
    assert_eq!(cache.dir(), Some(dir.as_path()));
    let first = get(&cache, &spec);
    assert_compiled(&first);
    assert_eq!(first.warning, None);
    assert!(first.kernel.cubin.starts_with(b"\x7fELF"));
    assert_eq!(first.kernel.kernel_name, spec.kernel_name());
    assert_eq!(first.kernel.arch, ARCH);
    assert!(first.kernel.report.registers > 0);

    let second = get(&cache, &spec);
    assert_eq!(second.source, CacheSource::Memory);
    assert_eq!(second.warning, None);
    assert!(Arc::ptr_eq(&first.kernel, &second.kernel));

    // The folder was created and holds exactly the entry: no temporary files left behind.
    let path = entry_path(&dir, &spec);
    assert_eq!(
        files(&dir),
        [path.file_name().unwrap().to_string_lossy().into_owned()]
    );
    assert_eq!(
        read_entry(&path, &KernelCache::key(&spec, ARCH).unwrap()).unwrap(),
        Some((*first.kernel).clone())
    );

    let fresh = KernelCache::new(Some(dir.clone()));
    let from_disk = get(&fresh, &spec);
    assert_eq!(from_disk.source, CacheSource::Disk);
    assert_eq!(from_disk.warning, None);
    assert_eq!(from_disk.kernel.cubin, first.kernel.cubin);
    assert_eq!(*from_disk.kernel, *first.kernel);
    assert_eq!(get(&fresh, &spec).source, CacheSource::Memory);

    // Another spec is another entry.
    let other = spec_with_causal();
    assert_compiled(&get(&fresh, &other));
    assert_eq!(files(&dir).len(), 2);
    assert_ne!(entry_path(&dir, &other), path);
}

fn spec_with_causal() -> KernelSpec {
    spec("dense,d64,bf16,causal,m64n64w4s1")
}

/// Writes `bytes` over the entry, then checks that a fresh cache rejects it with a warning that
/// names `reason`, recompiles the same kernel, and leaves a valid entry a further cache reads.
#[track_caller]
fn assert_rejected_and_rewritten(dir: &Path, good: &CacheHit, bytes: &[u8], reason: &str) {
    let spec = small();
    let path = entry_path(dir, &spec);
    std::fs::write(&path, bytes).unwrap();

    let cache = KernelCache::new(Some(dir.to_path_buf()));
    let hit = get(&cache, &spec);
    assert_compiled(&hit);
    let warning = hit.warning.as_deref().unwrap_or_else(|| {
        panic!("no warning for a damaged entry ({reason})");
    });
    assert!(warning.contains("rejected"), "{warning}");
    assert!(
        warning.contains(reason),
        "expected {reason:?} in: {warning}"
    );
    assert!(
        warning.contains(&path.display().to_string()),
        "the warning names the file: {warning}"
    );
    assert_eq!(hit.kernel.cubin, good.kernel.cubin);

    let key = KernelCache::key(&spec, ARCH).unwrap();
    assert!(read_entry(&path, &key).unwrap().is_some());
    let again = get(&KernelCache::new(Some(dir.to_path_buf())), &spec);
    assert_eq!(again.source, CacheSource::Disk);
    assert_eq!(again.warning, None);
    assert_eq!(again.kernel.cubin, good.kernel.cubin);
}

#[test]
fn damaged_and_foreign_entries_are_recompiled() {
    let tmp = TempDir::new("damage");
    let dir = tmp.0.clone();
    let spec = small();
    let good = get(&KernelCache::new(Some(dir.clone())), &spec);
    let path = entry_path(&dir, &spec);
    let bytes = std::fs::read(&path).unwrap();
    assert!(bytes.len() > 1024, "entry is {} bytes", bytes.len());

    let mut flipped = bytes.clone();
    flipped[bytes.len() / 2] ^= 0x5a;
    assert_rejected_and_rewritten(&dir, &good, &flipped, "digest mismatch");

    assert_rejected_and_rewritten(&dir, &good, &bytes[..bytes.len() / 3], "header says");
    assert_rejected_and_rewritten(&dir, &good, &bytes[..40], "truncated");
    assert_rejected_and_rewritten(&dir, &good, b"", "truncated");
    assert_rejected_and_rewritten(
        &dir,
        &good,
        b"#!/bin/sh\necho this is not a kernel\n",
        "not a flashgen cache file",
    );

    // Another key's valid entry under this key's name.
    let other = spec_with_causal();
    assert_compiled(&get(&KernelCache::new(Some(dir.clone())), &other));
    let foreign = std::fs::read(entry_path(&dir, &other)).unwrap();
    assert_ne!(foreign, bytes);
    assert_rejected_and_rewritten(&dir, &good, &foreign, "entry belongs to another key");

    // The other entry was never touched.
    let other_hit = get(&KernelCache::new(Some(dir.clone())), &other);
    assert_eq!(other_hit.source, CacheSource::Disk);
}

#[test]
fn an_uncreatable_cache_dir_still_compiles() {
    let tmp = TempDir::new("uncreatable");
    let file = tmp.0.join("not-a-folder");
    std::fs::write(&file, b"a regular file").unwrap();
    let dir = file.join("cache");

    let cache = KernelCache::new(Some(dir.clone()));
    let hit = get(&cache, &small());
    assert_compiled(&hit);
    assert!(hit.kernel.cubin.starts_with(b"\x7fELF"));
    let warning = hit.warning.as_deref().expect("a warning about the write");
    assert!(
        warning.contains("kernel cache write") && warning.contains("failed"),
        "{warning}"
    );
    assert!(warning.contains(&dir.display().to_string()), "{warning}");
    assert!(!dir.exists());
    // The kernel is kept in memory.
    let again = get(&cache, &small());
    assert_eq!(again.source, CacheSource::Memory);
    assert!(Arc::ptr_eq(&hit.kernel, &again.kernel));
}

/// A folder that exists and takes no new files from this process: a 0o555 folder, or, for a
/// user who writes there anyway (root), `/proc/self`, where not even root creates files.
fn read_only_dir(tmp: &TempDir) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let dir = tmp.0.join("ro");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o555)).unwrap();
    let takes_files = |d: &Path| {
        let probe = d.join(".flashgen-probe");
        let ok = std::fs::write(&probe, b"x").is_ok();
        let _ = std::fs::remove_file(&probe);
        ok
    };
    if !takes_files(&dir) {
        return dir;
    }
    let proc_self = PathBuf::from("/proc/self");
    assert!(
        proc_self.is_dir() && !takes_files(&proc_self),
        "no read-only folder to test with: {} is writable here and /proc/self is missing or \
         writable",
        dir.display()
    );
    proc_self
}

#[test]
fn a_read_only_cache_dir_still_compiles() {
    let tmp = TempDir::new("read-only");
    let dir = read_only_dir(&tmp);
    let before = files(&dir);

    let cache = KernelCache::new(Some(dir.clone()));
    let hit = get(&cache, &small());
    assert_compiled(&hit);
    let warning = hit.warning.as_deref().expect("a warning about the write");
    assert!(
        warning.contains("kernel cache write") && warning.contains("failed"),
        "{warning}"
    );
    assert!(warning.contains(&dir.display().to_string()), "{warning}");
    let key = KernelCache::key(&small(), ARCH).unwrap();
    assert!(
        !files(&dir).iter().any(|f| f.contains(&key)),
        "no entry or temporary file in {}",
        dir.display()
    );
    if dir.starts_with(&tmp.0) {
        assert_eq!(files(&dir), before);
    }
    assert_eq!(get(&cache, &small()).source, CacheSource::Memory);
}

/// Puts `make(path)` where the entry of `small()` goes, then checks that a fresh cache
/// rejects it without blocking or reading it whole, recompiles, and replaces it with a valid
/// entry (leaving what it pointed to alone).
#[track_caller]
fn assert_special_entry_replaced(name: &str, make: impl FnOnce(&Path), reason: &str) {
    let tmp = TempDir::new(name);
    let dir = tmp.0.clone();
    let spec = small();
    let path = entry_path(&dir, &spec);
    make(&path);

    let (tx, rx) = std::sync::mpsc::channel();
    let worker_dir = dir.clone();
    std::thread::spawn(move || {
        let hit = KernelCache::new(Some(worker_dir)).get_or_compile(&small(), ARCH);
        let _ = tx.send(hit);
    });
    let hit = rx
        .recv_timeout(std::time::Duration::from_secs(120))
        .unwrap_or_else(|_| panic!("the cache hung on a {name} entry"))
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_compiled(&hit);
    let warning = hit.warning.as_deref().unwrap_or_default();
    assert!(
        warning.contains("rejected") && warning.contains(reason),
        "expected {reason:?} in: {warning}"
    );
    let meta = std::fs::symlink_metadata(&path).unwrap();
    assert!(meta.is_file(), "the entry was replaced by a regular file");
    let again = get(&KernelCache::new(Some(dir.clone())), &spec);
    assert_eq!(again.source, CacheSource::Disk);
    assert_eq!(again.kernel.cubin, hit.kernel.cubin);
}

#[test]
fn a_fifo_entry_is_recompiled_without_hanging() {
    assert_special_entry_replaced(
        "fifo",
        |path| {
            let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
            assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0, "mkfifo");
        },
        "not a regular file (a FIFO)",
    );
}

#[test]
fn an_entry_linked_to_dev_zero_is_recompiled_without_reading_it() {
    assert_special_entry_replaced(
        "dev-zero",
        |path| std::os::unix::fs::symlink("/dev/zero", path).unwrap(),
        "not a regular file (a device)",
    );
}

#[test]
fn an_oversized_entry_is_rejected_unread() {
    use flashgen_runtime::cache::MAX_ENTRY_BYTES;
    assert_special_entry_replaced(
        "oversized",
        // A sparse file: no disk space is used.
        |path| {
            let f = std::fs::File::create(path).unwrap();
            f.set_len(MAX_ENTRY_BYTES + 1).unwrap();
        },
        &format!("larger than {MAX_ENTRY_BYTES} bytes"),
    );
}

#[test]
fn a_memory_only_cache_compiles_once() {
    let cache = KernelCache::new(None);
    assert_eq!(cache.dir(), None);
    let first = get(&cache, &small());
    assert_compiled(&first);
    assert_eq!(first.warning, None);
    assert_eq!(get(&cache, &small()).source, CacheSource::Memory);
}
