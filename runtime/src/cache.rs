//! The kernel cache: compiled CUBINs in memory and on disk, keyed by everything that changes the
//! binary. Disk entries are written atomically and checked on read (magic, format, key, length,
//! digest); anything that does not check out is recompiled and overwritten, never trusted.

use crate::compile::{compile, compile_options, nvrtc_version, CompiledKernel, ResourceReport};
use crate::error::{Error, Result};
use crate::files::read_regular;
use flashgen_codegen::{render, spec_hash, Arch, KernelSource, KernelSpec, KERNEL_ABI_VERSION};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

const MAGIC: &[u8; 16] = b"FLASHGEN-CUBIN\0\0";
const FORMAT_VERSION: u32 = 1;

/// The largest entry read from disk. Our CUBINs are well under a megabyte; anything past this
/// is not an entry we wrote (e.g. a link to `/dev/zero`) and is rejected, not read whole.
pub const MAX_ENTRY_BYTES: u64 = 64 << 20;

/// Where a kernel came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheSource {
    Memory,
    Disk,
    Compiled { millis: u64 },
}

/// A compiled kernel and where it came from.
#[derive(Clone, Debug)]
pub struct CacheHit {
    pub kernel: Arc<CompiledKernel>,
    pub source: CacheSource,
    /// A disk entry that was found and rejected, or a write that failed (the cache then works
    /// from memory only; the kernel itself is fine).
    pub warning: Option<String>,
}

/// Memory + disk cache of compiled kernels.
pub struct KernelCache {
    dir: Option<PathBuf>,
    memory: Mutex<HashMap<String, Arc<CompiledKernel>>>,
}

impl KernelCache {
    /// The cache at `$FLASHGEN_CACHE_DIR`, else the user cache dir's `flashgen` folder, else
    /// memory only.
    pub fn from_env() -> Self {
        Self::new(default_dir())
    }

    /// A cache over `dir` (memory only with `None`).
    pub fn new(dir: Option<PathBuf>) -> Self {
        KernelCache {
            dir,
            memory: Mutex::new(HashMap::new()),
        }
    }

    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// The cache key of a spec on an arch with the loaded NVRTC.
    pub fn key(spec: &KernelSpec, arch: Arch) -> Result<String> {
        let (major, minor) = nvrtc_version()?;
        Ok(key_for(spec, &rendered_digest(spec)?, arch, (major, minor)))
    }

    /// Returns the compiled kernel for a validated spec, compiling it on a miss.
    pub fn get_or_compile(&self, spec: &KernelSpec, arch: Arch) -> Result<CacheHit> {
        self.get_or_compile_with(spec, arch, || render_spec(spec))
    }

    /// Returns the compiled kernel of source that is not an attention kernel's, keyed by the
    /// source itself ([`KernelSource::digest`]).
    pub fn get_or_compile_source(&self, source: &KernelSource, arch: Arch) -> Result<CacheHit> {
        self.get_or_compile_digest(&source.digest(), arch, || Ok(source.clone()))
    }

    /// Returns the compiled kernel of the source named by `digest`, a stable digest of
    /// everything it is rendered from (equal digests, equal sources: [`KernelSource::digest`],
    /// or a render-free hash such as codegen's `ApbModule::hash`), producing the source with
    /// `source` only on a miss.
    pub fn get_or_compile_digest(
        &self,
        digest: &str,
        arch: Arch,
        source: impl FnOnce() -> Result<KernelSource>,
    ) -> Result<CacheHit> {
        let key = digest_key(digest, arch, nvrtc_version()?);
        self.get_or_compile_keyed(key, arch, source)
    }

    /// As [`get_or_compile`](Self::get_or_compile), with the source of a miss produced by
    /// `source` (which must be what `spec` renders to: the key is the spec's).
    fn get_or_compile_with(
        &self,
        spec: &KernelSpec,
        arch: Arch,
        source: impl FnOnce() -> Result<KernelSource>,
    ) -> Result<CacheHit> {
        self.get_or_compile_keyed(Self::key(spec, arch)?, arch, source)
    }

    /// The cache lookup under `key`, compiling `source` on a miss.
    fn get_or_compile_keyed(
        &self,
        key: String,
        arch: Arch,
        source: impl FnOnce() -> Result<KernelSource>,
    ) -> Result<CacheHit> {
        if let Some(kernel) = self.memory.lock().expect("cache lock").get(&key) {
            return Ok(CacheHit {
                kernel: kernel.clone(),
                source: CacheSource::Memory,
                warning: None,
            });
        }
        let mut warning = None;
        if let Some(path) = self.path(&key) {
            match read_entry(&path, &key) {
                Ok(Some(kernel)) if kernel.arch == arch => {
                    let kernel = Arc::new(kernel);
                    self.remember(&key, &kernel);
                    return Ok(CacheHit {
                        kernel,
                        source: CacheSource::Disk,
                        warning: None,
                    });
                }
                Ok(Some(_)) => {
                    warning = Some(format!(
                        "cache entry {} is for another arch; recompiled",
                        path.display()
                    ))
                }
                Ok(None) => {}
                Err(reason) => {
                    warning = Some(format!(
                        "cache entry {} rejected ({reason}); recompiled",
                        path.display()
                    ))
                }
            }
        }
        let (kernel, millis) = compile(&source()?, arch)?;
        let kernel = Arc::new(kernel);
        if let Some(path) = self.path(&key) {
            if let Err(e) = write_entry(&path, &key, &kernel) {
                let note = format!("kernel cache write to {} failed: {e}", path.display());
                warning = Some(match warning {
                    Some(w) => format!("{w}; {note}"),
                    None => note,
                });
            }
        }
        self.remember(&key, &kernel);
        Ok(CacheHit {
            kernel,
            source: CacheSource::Compiled {
                millis: millis as u64,
            },
            warning,
        })
    }

    fn remember(&self, key: &str, kernel: &Arc<CompiledKernel>) {
        self.memory
            .lock()
            .expect("cache lock")
            .insert(key.to_string(), kernel.clone());
    }

    fn path(&self, key: &str) -> Option<PathBuf> {
        self.dir.as_ref().map(|d| d.join(format!("{key}.cubin")))
    }
}

/// `$FLASHGEN_CACHE_DIR`, else the user cache dir's `flashgen` folder.
pub fn default_dir() -> Option<PathBuf> {
    match std::env::var_os("FLASHGEN_CACHE_DIR") {
        Some(dir) if !dir.is_empty() => Some(PathBuf::from(dir)),
        _ => dirs::cache_dir().map(|d| d.join("flashgen")),
    }
}

/// The common end of both keys: the compile options, then the digest in hex.
fn finish_key(mut h: Sha256, arch: Arch) -> String {
    for option in compile_options(arch) {
        h.update(option.as_bytes());
        h.update([0]);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// What `spec` renders to, or the renderer's error with its causes.
fn render_spec(spec: &KernelSpec) -> Result<KernelSource> {
    render(spec).map_err(|e| {
        let mut text = e.to_string();
        let mut cause = std::error::Error::source(&e);
        while let Some(c) = cause {
            text.push_str(&format!(": {c}"));
            cause = c.source();
        }
        Error::Render(text)
    })
}

/// The digest of the source `spec` renders to ([`KernelSource::digest`]), rendered once per
/// spec in a process (tens of microseconds). Part of the key because the spec hash covers the
/// spec and the templates but not the renderer's own code: a kernel compiled by an older
/// renderer must never be loaded for a newer one.
pub fn rendered_digest(spec: &KernelSpec) -> Result<String> {
    static DIGESTS: OnceLock<Mutex<HashMap<KernelSpec, String>>> = OnceLock::new();
    let digests = DIGESTS.get_or_init(Default::default);
    let known = digests
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(spec)
        .cloned();
    if let Some(d) = known {
        return Ok(d);
    }
    let d = render_spec(spec)?.digest();
    digests
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(*spec, d.clone());
    Ok(d)
}

/// The key: a digest of the spec hash (spec + templates), the rendered source's digest
/// ([`rendered_digest`]), NVRTC version, arch, options and ABI.
pub fn key_for(spec: &KernelSpec, rendered: &str, arch: Arch, nvrtc: (i32, i32)) -> String {
    let mut h = Sha256::new();
    h.update(spec_hash(spec).as_bytes());
    h.update([0]);
    h.update(rendered.as_bytes());
    h.update(
        format!(
            "|nvrtc {}.{}|{}|abi {KERNEL_ABI_VERSION}|",
            nvrtc.0,
            nvrtc.1,
            arch.sm_name()
        )
        .as_bytes(),
    );
    finish_key(h, arch)
}

/// The key of source that is not an attention kernel's: its digest (of name, text and launch
/// shape), NVRTC version, arch and options (a different prefix from spec keys, so the two never
/// collide).
pub fn source_key(source: &KernelSource, arch: Arch, nvrtc: (i32, i32)) -> String {
    digest_key(&source.digest(), arch, nvrtc)
}

/// The key of the source named by `digest` (see
/// [`get_or_compile_digest`](KernelCache::get_or_compile_digest)).
pub fn digest_key(digest: &str, arch: Arch, nvrtc: (i32, i32)) -> String {
    let mut h = Sha256::new();
    h.update(b"source|");
    h.update(digest.as_bytes());
    h.update(format!("|nvrtc {}.{}|{}|", nvrtc.0, nvrtc.1, arch.sm_name()).as_bytes());
    finish_key(h, arch)
}

fn encode_payload(kernel: &CompiledKernel) -> Vec<u8> {
    let mut out = Vec::with_capacity(kernel.cubin.len() + kernel.log.len() + 256);
    let put_bytes = |out: &mut Vec<u8>, bytes: &[u8]| {
        out.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
        out.extend_from_slice(bytes);
    };
    put_bytes(&mut out, kernel.kernel_name.as_bytes());
    put_bytes(&mut out, kernel.log.as_bytes());
    let r = &kernel.report;
    for v in [
        kernel.arch.major,
        kernel.arch.minor,
        kernel.threads,
        kernel.dynamic_shared_bytes,
        r.registers,
        r.spill_stores_bytes,
        r.spill_loads_bytes,
        r.stack_frame_bytes,
        r.static_shared_bytes,
    ] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    put_bytes(&mut out, &kernel.cubin);
    out
}

/// Reads fields off a byte slice; every read is bounds-checked.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> std::result::Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err("truncated".into());
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn u32(&mut self) -> std::result::Result<u32, String> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn u64(&mut self) -> std::result::Result<u64, String> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    fn bytes(&mut self) -> std::result::Result<&'a [u8], String> {
        let n = self.u64()?;
        let n = usize::try_from(n).map_err(|_| "length out of range".to_string())?;
        self.take(n)
    }
    fn string(&mut self) -> std::result::Result<String, String> {
        String::from_utf8(self.bytes()?.to_vec()).map_err(|_| "text is not UTF-8".to_string())
    }
}

fn decode_payload(payload: &[u8]) -> std::result::Result<CompiledKernel, String> {
    let mut r = Reader(payload);
    let kernel_name = r.string()?;
    let log = r.string()?;
    let mut v = [0u32; 9];
    for x in &mut v {
        *x = r.u32()?;
    }
    let cubin = r.bytes()?.to_vec();
    if !r.0.is_empty() {
        return Err("trailing bytes".into());
    }
    if !cubin.starts_with(b"\x7fELF") {
        return Err("payload is not an ELF image".into());
    }
    Ok(CompiledKernel {
        kernel_name,
        arch: Arch::new(v[0], v[1]),
        cubin,
        log,
        threads: v[2],
        dynamic_shared_bytes: v[3],
        report: ResourceReport {
            registers: v[4],
            spill_stores_bytes: v[5],
            spill_loads_bytes: v[6],
            stack_frame_bytes: v[7],
            static_shared_bytes: v[8],
        },
    })
}

/// Writes an entry atomically: a temporary file in the same folder, synced, then renamed.
pub fn write_entry(path: &Path, key: &str, kernel: &CompiledKernel) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let payload = encode_payload(kernel);
    let mut bytes = Vec::with_capacity(payload.len() + 128);
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    bytes.extend_from_slice(key.as_bytes());
    bytes.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&Sha256::digest(&payload));
    bytes.extend_from_slice(&payload);
    let tmp = dir.join(format!(
        ".{key}.{}.{:?}.tmp",
        std::process::id(),
        std::thread::current().id()
    ));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Reads an entry: `Ok(None)` when absent, `Err(reason)` when present but not trustworthy
/// (including anything but a regular file, or one over [`MAX_ENTRY_BYTES`]).
pub fn read_entry(path: &Path, key: &str) -> std::result::Result<Option<CompiledKernel>, String> {
    let bytes = match read_regular(path, MAX_ENTRY_BYTES) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => return Err(e.to_string()),
        Err(e) => return Err(format!("unreadable: {e}")),
    };
    let mut r = Reader(&bytes);
    if r.take(MAGIC.len())? != MAGIC {
        return Err("not a flashgen cache file".into());
    }
    if r.u32()? != FORMAT_VERSION {
        return Err("written by another cache format".into());
    }
    if r.take(key.len())? != key.as_bytes() {
        return Err("entry belongs to another key".into());
    }
    let len = r.u64()?;
    let digest = r.take(32)?.to_vec();
    if r.0.len() as u64 != len {
        return Err(format!("payload is {} bytes, header says {len}", r.0.len()));
    }
    if Sha256::digest(r.0).as_slice() != digest.as_slice() {
        return Err("payload digest mismatch".into());
    }
    decode_payload(r.0).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kernel() -> CompiledKernel {
        CompiledKernel {
            kernel_name: "k".into(),
            arch: Arch::SM90,
            cubin: b"\x7fELF and some machine code".to_vec(),
            log: "ptxas info : Used 1 registers".into(),
            report: ResourceReport {
                registers: 1,
                ..Default::default()
            },
            threads: 128,
            dynamic_shared_bytes: 4096,
        }
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("flashgen-cache-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn entries_round_trip() {
        let dir = temp_dir("round-trip");
        let path = dir.join("a.cubin");
        write_entry(&path, "a", &kernel()).unwrap();
        assert_eq!(read_entry(&path, "a").unwrap(), Some(kernel()));
        assert_eq!(
            read_entry(&dir.join("missing.cubin"), "missing").unwrap(),
            None
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn every_kind_of_damage_is_rejected() {
        let dir = temp_dir("damage");
        let path = dir.join("a.cubin");
        write_entry(&path, "a", &kernel()).unwrap();
        let good = std::fs::read(&path).unwrap();

        // A flipped byte anywhere in the payload breaks the digest; in the header, the magic,
        // version, key or length.
        for at in [0, 17, 21, 60, good.len() - 1, good.len() / 2] {
            let mut bad = good.clone();
            bad[at] ^= 0x40;
            std::fs::write(&path, &bad).unwrap();
            assert!(read_entry(&path, "a").is_err(), "flip at {at} accepted");
        }
        for cut in [0, 10, 30, good.len() - 1] {
            std::fs::write(&path, &good[..cut]).unwrap();
            assert!(
                read_entry(&path, "a").is_err(),
                "truncation at {cut} accepted"
            );
        }
        // Another key's entry under this key's name.
        std::fs::write(&path, &good).unwrap();
        assert_eq!(
            read_entry(&path, "b").unwrap_err(),
            "entry belongs to another key"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Through the cache with the hand-written kernel of the compile tests (no templates).
    mod tiny {
        use super::*;
        use crate::compile::tests::tiny_source;

        const ARCH: Arch = Arch::SM80;

        fn spec(text: &str) -> KernelSpec {
            flashgen_codegen::parse_spec(text, ARCH).unwrap()
        }

        fn get(cache: &KernelCache, spec: &KernelSpec) -> CacheHit {
            cache
                .get_or_compile_with(spec, ARCH, || Ok(tiny_source("flashgen_tiny")))
                .unwrap()
        }

        fn compiled(hit: &CacheHit) -> bool {
            matches!(hit.source, CacheSource::Compiled { .. })
        }

        fn entry(dir: &Path, spec: &KernelSpec) -> PathBuf {
            dir.join(format!("{}.cubin", KernelCache::key(spec, ARCH).unwrap()))
        }

        #[test]
        fn memory_then_disk() {
            let dir = temp_dir("tiny-round-trip");
            let a = spec("dense,d64,bf16,m64n64w4s1");
            let cache = KernelCache::new(Some(dir.clone()));
            let first = get(&cache, &a);
            assert!(compiled(&first));
            assert_eq!(first.warning, None);
            assert!(first.kernel.cubin.starts_with(b"\x7fELF"));
            let again = get(&cache, &a);
            assert_eq!(again.source, CacheSource::Memory);
            assert!(Arc::ptr_eq(&first.kernel, &again.kernel));

            let fresh = KernelCache::new(Some(dir.clone()));
            let from_disk = fresh
                .get_or_compile_with(&a, ARCH, || panic!("a disk hit must not compile"))
                .unwrap();
            assert_eq!(from_disk.source, CacheSource::Disk);
            assert_eq!(*from_disk.kernel, *first.kernel);
            // Only the entry is left in the folder: no temporary files.
            let names: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
            assert_eq!(names.len(), 1);
            std::fs::remove_dir_all(&dir).unwrap();
        }

        #[test]
        fn damaged_truncated_and_foreign_entries_are_recompiled_and_overwritten() {
            let dir = temp_dir("tiny-damage");
            let (a, b) = (
                spec("dense,d64,bf16,m64n64w4s1"),
                spec("dense,d64,bf16,causal,m64n64w4s1"),
            );
            let good = get(&KernelCache::new(Some(dir.clone())), &a);
            get(&KernelCache::new(Some(dir.clone())), &b);
            let (path_a, path_b) = (entry(&dir, &a), entry(&dir, &b));
            let bytes = std::fs::read(&path_a).unwrap();
            let mut flipped = bytes.clone();
            flipped[bytes.len() - 100] ^= 1;
            let foreign = std::fs::read(&path_b).unwrap();
            for (damage, reason) in [
                (flipped, "digest mismatch"),
                (bytes[..bytes.len() - 1].to_vec(), "header says"),
                (bytes[..20].to_vec(), "truncated"),
                (foreign, "another key"),
            ] {
                std::fs::write(&path_a, &damage).unwrap();
                let hit = get(&KernelCache::new(Some(dir.clone())), &a);
                assert!(compiled(&hit), "{reason}: {:?}", hit.source);
                let warning = hit.warning.unwrap_or_default();
                assert!(warning.contains(reason), "{reason}: {warning}");
                assert_eq!(hit.kernel.cubin, good.kernel.cubin);
                // Overwritten with a good entry.
                let again = get(&KernelCache::new(Some(dir.clone())), &a);
                assert_eq!(again.source, CacheSource::Disk, "{reason}");
            }
            std::fs::remove_dir_all(&dir).unwrap();
        }

        #[test]
        fn an_unusable_folder_degrades_to_memory_with_a_warning() {
            let dir = temp_dir("tiny-unusable");
            let file = dir.join("file");
            std::fs::write(&file, b"not a folder").unwrap();
            let cache = KernelCache::new(Some(file.join("cache")));
            let a = spec("dense,d64,bf16,m64n64w4s1");
            let hit = get(&cache, &a);
            assert!(compiled(&hit));
            let warning = hit.warning.unwrap_or_default();
            assert!(warning.contains("kernel cache write"), "{warning}");
            assert_eq!(get(&cache, &a).source, CacheSource::Memory);
            std::fs::remove_dir_all(&dir).unwrap();
        }

        #[test]
        fn a_failed_source_is_an_error_and_nothing_is_cached() {
            let dir = temp_dir("tiny-failed");
            let cache = KernelCache::new(Some(dir.clone()));
            let a = spec("dense,d64,bf16,m64n64w4s1");
            let err = cache
                .get_or_compile_with(&a, ARCH, || Err(Error::Render("broken".into())))
                .unwrap_err();
            assert!(matches!(err, Error::Render(_)), "{err:?}");
            let mut broken = tiny_source("flashgen_tiny");
            broken.code.push_str("this does not parse");
            let err = cache
                .get_or_compile_with(&a, ARCH, || Ok(broken))
                .unwrap_err();
            assert!(matches!(err, Error::Compile { .. }), "{err:?}");
            assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
            assert!(compiled(&get(&cache, &a)));
            std::fs::remove_dir_all(&dir).unwrap();
        }

        #[test]
        fn hand_written_source_is_cached_in_memory_and_on_disk() {
            let dir = temp_dir("tiny-source");
            let source = tiny_source("flashgen_tiny");
            let cache = KernelCache::new(Some(dir.clone()));
            let first = cache.get_or_compile_source(&source, ARCH).unwrap();
            assert!(compiled(&first));
            let again = cache.get_or_compile_source(&source, ARCH).unwrap();
            assert_eq!(again.source, CacheSource::Memory);
            let fresh = KernelCache::new(Some(dir.clone()));
            let from_disk = fresh.get_or_compile_source(&source, ARCH).unwrap();
            assert_eq!(from_disk.source, CacheSource::Disk);
            assert_eq!(*from_disk.kernel, *first.kernel);
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }

    #[test]
    fn source_keys_separate_text_arch_and_nvrtc() {
        let source = KernelSource {
            kernel_name: "k".into(),
            code: "extern \"C\" __global__ void k() {}".into(),
            threads: 32,
            shared_bytes: 0,
        };
        let a = source_key(&source, Arch::SM90, (13, 0));
        assert_eq!(a, source_key(&source, Arch::SM90, (13, 0)));
        assert_ne!(a, source_key(&source, Arch::SM80, (13, 0)));
        assert_ne!(a, source_key(&source, Arch::SM90, (13, 1)));
        let mut edited = source.clone();
        edited.code.push(' ');
        assert_ne!(a, source_key(&edited, Arch::SM90, (13, 0)));
    }

    #[test]
    fn keys_separate_arch_nvrtc_and_spec() {
        let spec = flashgen_codegen::parse_spec("dense,d128,bf16,causal", Arch::SM90).unwrap();
        let r = rendered_digest(&spec).unwrap();
        let a = key_for(&spec, &r, Arch::SM90, (13, 0));
        assert_eq!(a, key_for(&spec, &r, Arch::SM90, (13, 0)));
        assert_ne!(a, key_for(&spec, &r, Arch::SM80, (13, 0)));
        assert_ne!(a, key_for(&spec, &r, Arch::SM90, (13, 1)));
        let lse = spec.with_lse(true);
        assert_ne!(
            a,
            key_for(&lse, &rendered_digest(&lse).unwrap(), Arch::SM90, (13, 0))
        );
        // A renderer change (another source for the same spec and templates) is another key.
        assert_ne!(a, key_for(&spec, "another source", Arch::SM90, (13, 0)));
        assert_eq!(r, render(&spec).unwrap().digest());
    }
}
