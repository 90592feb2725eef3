//! Without libnvrtc or libcuda every entry point returns `Error::LibraryMissing` instead of
//! letting cudarc panic. The test binary re-runs itself with an empty loader path; where the
//! libraries still load (installed in a system folder), the child checks only that nothing
//! panics.

use flashgen_codegen::{parse_spec, Arch, KernelSource};
use flashgen_runtime::libs::{driver_present, nvrtc_present};
use flashgen_runtime::{
    compile, device_count, driver_version, nvrtc_version, Error, KernelCache, Runtime,
};
use std::process::Command;

const CHILD: &str = "FLASHGEN_MISSING_LIBRARIES_CHILD";

#[track_caller]
fn assert_missing<T: std::fmt::Debug>(result: flashgen_runtime::Result<T>, expected: &str) {
    match result {
        Err(Error::LibraryMissing { lib, hint }) => {
            assert_eq!(lib, expected);
            assert!(!hint.is_empty());
        }
        other => panic!("expected {expected} to be missing, got {other:?}"),
    }
}

fn tiny() -> KernelSource {
    KernelSource {
        kernel_name: "flashgen_tiny".into(),
        code: "extern \"C\" __global__ void flashgen_tiny(int* p) { *p = 1; }".into(),
        threads: 32,
        shared_bytes: 0,
    }
}

/// The checks, run in the child process.
#[test]
fn child_checks() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    let spec = parse_spec("dense,d64,bf16,m64n64w4s1", Arch::SM80).unwrap();
    if nvrtc_present() {
        // Found outside the loader path: whatever happens, it must not panic.
        let _ = nvrtc_version();
        let _ = compile(&tiny(), Arch::SM80);
    } else {
        assert_missing(nvrtc_version(), "libnvrtc");
        assert_missing(compile(&tiny(), Arch::SM80), "libnvrtc");
        assert_missing(KernelCache::key(&spec, Arch::SM80), "libnvrtc");
        assert_missing(
            KernelCache::new(None).get_or_compile(&spec, Arch::SM80),
            "libnvrtc",
        );
    }
    if driver_present() {
        let _ = device_count();
        let _ = driver_version();
        let _ = Runtime::new(0).map(|rt| rt.info().clone());
    } else {
        assert_missing(device_count(), "libcuda");
        assert_missing(driver_version(), "libcuda");
        assert_missing(Runtime::new(0).map(|rt| rt.info().clone()), "libcuda");
    }
    println!(
        "child: libnvrtc {}, libcuda {}",
        if nvrtc_present() {
            "present"
        } else {
            "missing"
        },
        if driver_present() {
            "present"
        } else {
            "missing"
        }
    );
}

#[test]
fn an_empty_loader_path_gives_typed_errors() {
    if std::env::var_os(CHILD).is_some() || std::env::var_os(BUILTINS_CHILD).is_some() {
        return;
    }
    let empty = std::env::temp_dir().join(format!("flashgen-no-libs-{}", std::process::id()));
    std::fs::create_dir_all(&empty).unwrap();
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["child_checks", "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .env("LD_LIBRARY_PATH", &empty)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir(&empty);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the child failed:\n{stdout}\n{stderr}"
    );
    // The test harness prints the test's name on the same line.
    let summary = stdout
        .lines()
        .find_map(|l| l.find("child: ").map(|at| &l[at..]))
        .unwrap_or_else(|| panic!("the child ran no checks:\n{stdout}\n{stderr}"));
    println!("{summary}");
}

const BUILTINS_CHILD: &str = "FLASHGEN_MISSING_BUILTINS_CHILD";

/// Run in a child whose loader path holds libnvrtc but not libnvrtc-builtins.
#[test]
fn child_checks_builtins() {
    if std::env::var_os(BUILTINS_CHILD).is_none() {
        return;
    }
    assert!(nvrtc_present());
    nvrtc_version().unwrap();
    match compile(&tiny(), Arch::SM80) {
        // Installed in a system folder as well: nothing to check.
        Ok(_) => println!("child: libnvrtc-builtins found outside the loader path"),
        result => {
            assert_missing(result, "libnvrtc-builtins");
            println!("child: libnvrtc-builtins missing");
        }
    }
}

/// libnvrtc loads libnvrtc-builtins from the loader path when it compiles; without it the
/// compile is a typed error that says so (not a compile error with NVRTC's message).
#[test]
fn missing_builtins_are_named() {
    if std::env::var_os(BUILTINS_CHILD).is_some() || std::env::var_os(CHILD).is_some() {
        return;
    }
    let path = std::env::var_os("LD_LIBRARY_PATH").unwrap_or_default();
    let Some(nvrtc) = std::env::split_paths(&path)
        .map(|dir| dir.join("libnvrtc.so.13"))
        .find(|lib| lib.exists())
    else {
        println!("libnvrtc.so.13 is not on LD_LIBRARY_PATH: skipped");
        return;
    };
    let dir = std::env::temp_dir().join(format!("flashgen-no-builtins-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let link = dir.join("libnvrtc.so.13");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&nvrtc, &link).unwrap();
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["child_checks_builtins", "--exact", "--nocapture"])
        .env(BUILTINS_CHILD, "1")
        .env("LD_LIBRARY_PATH", &dir)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("child: libnvrtc-builtins"),
        "the child failed:\n{stdout}\n{stderr}"
    );
}

/// In this process (whatever the loader path holds): opening a GPU never panics, and without
/// libcuda it is the typed error.
#[test]
fn opening_a_gpu_never_panics() {
    match Runtime::new(0) {
        Ok(rt) => assert!(rt.arch().is_supported()),
        Err(Error::LibraryMissing { lib, .. }) => {
            assert_eq!(lib, "libcuda");
            assert!(!driver_present());
        }
        Err(e) => assert!(driver_present(), "{e}"),
    }
    match Runtime::new(1 << 20) {
        Err(Error::NoDevice { ordinal, .. }) => assert_eq!(ordinal, 1 << 20),
        Err(Error::LibraryMissing { lib, .. }) => assert_eq!(lib, "libcuda"),
        other => panic!(
            "ordinal 2^20 must not open: {:?}",
            other.map(|rt| rt.info().clone())
        ),
    }
}
