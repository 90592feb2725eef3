//! The runtime's one table of loaded modules. Every kernel (an attention kernel rendered from
//! its spec, an APB module, any other source) is compiled through the kernel cache (memory,
//! then disk, then NVRTC), loaded into the runtime's context once, and found again by its
//! [`ModuleKey`].

use crate::cache::{CacheHit, CacheSource, KernelCache};
use crate::compile::CompiledKernel;
use crate::driver::{load_cubin, set_max_dynamic_shared};
use crate::error::{invalid, DriverContext, Result};
use crate::runtime::Runtime;
use cudarc::driver::{CudaFunction, CudaModule};
use flashgen_codegen::{fits_shared_memory, Arch, KernelSource, KernelSpec};
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

/// What names a module in a runtime's table (and its entry in the kernel cache).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ModuleKey {
    /// An attention kernel: rendered by codegen from its spec on a miss and cached under its
    /// key ([`KernelCache::key`](crate::KernelCache::key): the spec's hash and its rendered
    /// source's digest).
    Spec(KernelSpec),
    /// Any other module, by a stable digest of everything its source is rendered from; equal
    /// digests must render equal sources. [`KernelSource::digest`] of a finished source
    /// ([`ModuleKey::of`]), or a hash computed without rendering, such as codegen's
    /// `ApbModule::hash`.
    Digest(String),
}

impl ModuleKey {
    /// The key of a finished source: its digest.
    pub fn of(source: &KernelSource) -> Self {
        ModuleKey::Digest(source.digest())
    }
}

impl fmt::Display for ModuleKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModuleKey::Spec(spec) => write!(f, "{spec}"),
            ModuleKey::Digest(digest) => write!(f, "source {}", &digest[..digest.len().min(16)]),
        }
    }
}

/// A compiled module loaded into a runtime's context.
pub struct LoadedModule {
    pub key: ModuleKey,
    pub compiled: Arc<CompiledKernel>,
    /// Where the CUBIN came from when the module was loaded.
    pub source: CacheSource,
    module: Arc<CudaModule>,
    /// The entry function (`compiled.kernel_name`), its dynamic shared-memory limit raised to
    /// the source's.
    pub(crate) function: CudaFunction,
}

/// An attention kernel's loaded module ([`ModuleKey::Spec`]).
pub type LoadedKernel = LoadedModule;

impl LoadedModule {
    /// The spec of an attention kernel; `None` for other modules.
    pub fn spec(&self) -> Option<KernelSpec> {
        match self.key {
            ModuleKey::Spec(spec) => Some(spec),
            ModuleKey::Digest(_) => None,
        }
    }

    /// The entry function, the source's `kernel_name`.
    pub fn entry(&self) -> &CudaFunction {
        &self.function
    }

    /// The function `name` of the module (an `extern "C"` entry point of its source).
    pub fn function(&self, name: &str) -> Result<CudaFunction> {
        if name == self.compiled.kernel_name {
            return Ok(self.function.clone());
        }
        self.module
            .load_function(name)
            .while_(|| format!("finding {name} in its module"))
    }
}

/// The modules loaded into one runtime's context, by key.
#[derive(Default)]
pub(crate) struct ModuleTable {
    loaded: Mutex<HashMap<ModuleKey, Arc<LoadedModule>>>,
}

impl ModuleTable {
    fn get(&self, key: &ModuleKey) -> Option<Arc<LoadedModule>> {
        self.loaded
            .lock()
            .expect("module table lock")
            .get(key)
            .cloned()
    }

    /// Keeps `module`, unless another thread loaded its key meanwhile: then that one is kept and
    /// returned, so every caller shares one module.
    fn keep(&self, module: LoadedModule) -> Arc<LoadedModule> {
        self.loaded
            .lock()
            .expect("module table lock")
            .entry(module.key.clone())
            .or_insert_with(|| Arc::new(module))
            .clone()
    }
}

impl Runtime {
    /// The module of the source named by `digest` (a stable digest of everything the source is
    /// rendered from, see [`ModuleKey::Digest`]), loaded into this context: from the module
    /// table, else compiled through the kernel cache (memory, then disk, then NVRTC; `source`
    /// is called only then) and loaded. Its functions are [`LoadedModule::function`].
    pub fn load_module(
        &self,
        digest: &str,
        source: impl FnOnce() -> Result<KernelSource>,
    ) -> Result<Arc<LoadedModule>> {
        self.load(ModuleKey::Digest(digest.to_string()), |cache, arch| {
            cache.get_or_compile_digest(digest, arch, source)
        })
    }

    /// [`load_module`](Self::load_module) of a finished source, keyed by its digest.
    pub fn load_source(&self, source: &KernelSource) -> Result<Arc<LoadedModule>> {
        self.load_module(&source.digest(), || Ok(source.clone()))
    }

    /// The path of every module: the table, else `fetch` from the kernel cache, checked against
    /// the device's shared memory, loaded into the context with its entry function's dynamic
    /// shared-memory limit raised to the source's, and kept.
    pub(crate) fn load(
        &self,
        key: ModuleKey,
        fetch: impl FnOnce(&KernelCache, Arch) -> Result<CacheHit>,
    ) -> Result<Arc<LoadedModule>> {
        if let Some(module) = self.modules.get(&key) {
            return Ok(module);
        }
        let hit = fetch(self.cache(), self.arch())?;
        if let Some(w) = hit.warning.clone() {
            self.push_warning(w);
        }
        let kernel = &hit.kernel;
        let smem = kernel.dynamic_shared_bytes;
        let info = self.info();
        let static_smem = kernel.report.static_shared_bytes;
        if let Err(e) = fits_shared_memory(smem, static_smem, info.max_shared_per_block_optin) {
            let (arg, what) = match &key {
                ModuleKey::Spec(spec) => ("spec", spec.to_string()),
                ModuleKey::Digest(_) => ("source", kernel.kernel_name.clone()),
            };
            return Err(invalid(
                arg,
                format!(
                    "{what} needs {} bytes of shared memory per block; {} allows {}",
                    e.needed, info.name, e.limit
                ),
            ));
        }
        let name = &kernel.kernel_name;
        let module = load_cubin(self.context(), &kernel.cubin, name)?;
        let function = module
            .load_function(name)
            .while_(|| format!("finding {name} in its module"))?;
        if smem > 0 {
            set_max_dynamic_shared(&function, smem, name)?;
        }
        Ok(self.modules.keep(LoadedModule {
            key,
            compiled: hit.kernel,
            source: hit.source,
            module,
            function,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_name_specs_and_sources() {
        let spec =
            flashgen_codegen::parse_spec("dense,d64,bf16", flashgen_codegen::Arch::SM80).unwrap();
        assert_eq!(ModuleKey::Spec(spec).to_string(), spec.to_string());
        let source = KernelSource {
            kernel_name: "k".into(),
            code: "extern \"C\" __global__ void k() {}".into(),
            threads: 32,
            shared_bytes: 0,
        };
        let key = ModuleKey::of(&source);
        assert_eq!(key, ModuleKey::Digest(source.digest()));
        assert!(key.to_string().starts_with("source "));
        let mut edited = source.clone();
        edited.code.push(' ');
        assert_ne!(key, ModuleKey::of(&edited));
    }

    /// NVRTC only: a module named by a digest compiles once; later lookups, in memory or on
    /// disk, never ask for its source.
    #[test]
    fn digest_keyed_sources_compile_once() {
        let dir = std::env::temp_dir().join(format!("flashgen-module-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let source = crate::compile::tests::tiny_source("flashgen_tiny_digest");
        let digest = "a render-free digest of the tiny source";
        let cache = KernelCache::new(Some(dir.clone()));
        let first = cache
            .get_or_compile_digest(digest, Arch::SM80, || Ok(source.clone()))
            .unwrap();
        assert!(matches!(first.source, CacheSource::Compiled { .. }));
        let again = cache
            .get_or_compile_digest(digest, Arch::SM80, || {
                panic!("a memory hit must not render")
            })
            .unwrap();
        assert_eq!(again.source, CacheSource::Memory);
        let from_disk = KernelCache::new(Some(dir.clone()))
            .get_or_compile_digest(digest, Arch::SM80, || panic!("a disk hit must not render"))
            .unwrap();
        assert_eq!(from_disk.source, CacheSource::Disk);
        assert_eq!(*from_disk.kernel, *first.kernel);
        // The source's own digest is another key.
        let by_source = cache.get_or_compile_source(&source, Arch::SM80).unwrap();
        assert!(matches!(by_source.source, CacheSource::Compiled { .. }));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn send_sync<T: Send + Sync>() {}

    #[test]
    fn modules_can_be_shared_across_threads() {
        send_sync::<LoadedModule>();
        send_sync::<ModuleTable>();
        send_sync::<ModuleKey>();
    }
}
