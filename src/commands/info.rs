//! `flashgen info`: the GPU, driver, NVRTC, kernel cache and template version.

use super::{arch_of, first_line, with_sources, ArchSource};
use crate::output::outln;
use flashgen_codegen::{template_digest, KERNEL_ABI_VERSION};
use flashgen_runtime::config::{discover, ConfigOrigin};
use flashgen_runtime::{
    cache, device_count, driver_version, nvrtc_version, GpuIdentity, Runtime, TunedConfig,
};
use std::path::Path;
use std::process::ExitCode;

/// `13020` → `13.2`.
pub fn format_cuda_version(v: i32) -> String {
    format!("{}.{}", v / 1000, v % 1000 / 10)
}

/// Bytes as GiB with one decimal.
pub fn format_gib(bytes: usize) -> String {
    format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
}

/// The number of cache entries in a cache folder, `None` when it cannot be listed.
fn cache_entries(dir: &Path) -> Option<usize> {
    let entries = std::fs::read_dir(dir).ok()?;
    Some(
        entries
            .filter_map(|e| e.ok())
            .filter(|e| e.path().extension().is_some_and(|x| x == "cubin"))
            .count(),
    )
}

/// Prints one `label: value` line with the values aligned.
fn field(label: &str, value: impl std::fmt::Display) {
    outln!("{:<14}{value}", format!("{label}:"));
}

/// The tuned config the runtime would find: where, tuned on what, its entries, whether it
/// applies to this GPU, and every warning the runtime would give about it.
fn tuned_config(runtime: &flashgen_runtime::Result<Runtime>) {
    let Some((path, origin)) = discover(None) else {
        field(
            "Tuned config",
            "none (heuristic default tiles; `flashgen tune` writes one)",
        );
        return;
    };
    let origin = match origin {
        ConfigOrigin::Env => "from FLASHGEN_CONFIG",
        _ => "in the user config dir",
    };
    field("Tuned config", format!("{} ({origin})", path.display()));
    let (config, mut warnings) = match TunedConfig::load_checked(&path) {
        Ok(loaded) => loaded,
        Err(e) => {
            field("  status", "not used: heuristic default tiles apply");
            field("  error", with_sources(&e));
            return;
        }
    };
    let skipped = warnings.len();
    let nvrtc = nvrtc_version().ok();
    let status = match runtime {
        Ok(rt) => {
            let gpu = GpuIdentity::from(rt.info());
            let mut found =
                config.check_matches(&gpu, nvrtc.unwrap_or_default(), template_digest());
            if nvrtc.is_none() {
                found.retain(|w| !w.contains("NVRTC"));
            }
            warnings.extend(found);
            match config.tuned_on.gpu_matches(&gpu) {
                true => "used for this GPU",
                false => "not used: tuned on another GPU (heuristic default tiles apply)",
            }
        }
        Err(_) => {
            warnings.extend(config.check_build(nvrtc, template_digest()));
            "not compared with a GPU (none usable)"
        }
    };
    field("  tuned on", config.tuned_on.gpu_text());
    field(
        "  entries",
        format!("{} usable, {skipped} skipped", config.entries.len()),
    );
    if !config.decode.is_empty() {
        field("  decode", format!("{} usable", config.decode.len()));
    }
    field("  status", status);
    for w in warnings {
        field("  warning", w);
    }
}

pub fn run() -> anyhow::Result<ExitCode> {
    outln!("flashgen {}", env!("CARGO_PKG_VERSION"));

    let runtime = Runtime::new(0);
    match &runtime {
        Ok(rt) => {
            let info = rt.info();
            let count = device_count().unwrap_or(1);
            field(
                "GPU",
                format!(
                    "{} (device {} of {count}, compute capability {}.{}, {})",
                    info.name, info.ordinal, info.arch.major, info.arch.minor, info.arch
                ),
            );
            field("SMs", info.sm_count);
            field("Memory", format_gib(info.total_memory));
            field(
                "Shared mem",
                format!(
                    "{} bytes per block (opt-in)",
                    info.max_shared_per_block_optin
                ),
            );
            field("CUDA driver", format_cuda_version(info.driver_version));
        }
        Err(e) => {
            let why = with_sources(e);
            field("GPU", format!("none usable: {}", first_line(&why)));
            match driver_version() {
                Ok(v) => field("CUDA driver", format_cuda_version(v)),
                Err(d) if with_sources(&d) == why => field("CUDA driver", "not available"),
                Err(d) => field(
                    "CUDA driver",
                    format!("not available: {}", first_line(&with_sources(&d))),
                ),
            }
        }
    }

    match nvrtc_version() {
        Ok((major, minor)) => field("NVRTC", format!("{major}.{minor}")),
        Err(e) => field("NVRTC", format!("not available: {}", with_sources(&e))),
    }

    let from_env = std::env::var_os("FLASHGEN_CACHE_DIR").is_some_and(|v| !v.is_empty());
    match cache::default_dir() {
        Some(dir) => {
            let origin = if from_env {
                "from FLASHGEN_CACHE_DIR"
            } else {
                "default; FLASHGEN_CACHE_DIR moves it"
            };
            let entries = match cache_entries(&dir) {
                Some(n) => format!("{n} entries"),
                None => "not created yet".to_string(),
            };
            field(
                "Kernel cache",
                format!("{} ({origin}; {entries})", dir.display()),
            );
        }
        None => field(
            "Kernel cache",
            "memory only (no user cache folder; set FLASHGEN_CACHE_DIR)",
        ),
    }
    tuned_config(&runtime);
    field("Templates", template_digest());
    field("Kernel ABI", KERNEL_ABI_VERSION);
    let (arch, source) = arch_of(&runtime);
    match source {
        ArchSource::Gpu => field("Default arch", format!("{arch} (the GPU's)")),
        ArchSource::Fallback(_) => field("Default arch", format!("{arch} (no usable GPU)")),
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_and_sizes_read_well() {
        assert_eq!(format_cuda_version(13000), "13.0");
        assert_eq!(format_cuda_version(12080), "12.8");
        assert_eq!(format_cuda_version(13020), "13.2");
        assert_eq!(format_gib(80 * (1 << 30)), "80.0 GiB");
        assert_eq!(format_gib(85_051_572_224), "79.2 GiB");
    }
}
