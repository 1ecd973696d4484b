//! Which kernel modules a kernel target must load to reach its 9p root.
//!
//! A distribution kernel has its virtio PCI, virtio console and 9p drivers
//! as modules. This module finds the kernel's modules directory (a `modules`
//! setting, `<rootfs>/lib/modules/<release>` or `/usr/lib/modules`), reads
//! `modules.dep` and `modules.builtin`, and answers with the modules to load
//! in dependency order, or that everything is built in. Kernels without a
//! modules directory are judged by their config (`config-<release>` beside
//! the image, the `.config` of the build tree the image sits in); with
//! neither, the drivers are taken to be built in, as in a kernel built for
//! vmtest. It only reads files: `initramfs.rs` packs the modules it names.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};

/// A kernel's modules directory, the one holding `modules.dep`.
#[derive(Debug, Clone, PartialEq)]
pub struct ModulesDir {
    pub path: PathBuf,
    /// Whether the guest already sees it at `/lib/modules/<release>`
    /// (it lies in the rootfs there).
    pub in_rootfs: bool,
}

/// What a kernel needs before it can mount its root.
#[derive(Debug, Clone, PartialEq)]
pub enum RootDrivers {
    /// Nothing: the drivers are built in (or nothing says otherwise).
    BuiltIn,
    /// These module files (absolute host paths), loaded in this order.
    Modules { dir: ModulesDir, load: Vec<PathBuf> },
}

/// The drivers a kernel target's guest needs: its virtio transport, the
/// console ports the agent and output use, and the 9p root.
pub fn root_drivers(arch: &str) -> [&'static str; 4] {
    let transport = if arch == "s390x" { "virtio_ccw" } else { "virtio_pci" };
    [transport, "virtio_console", "9pnet_virtio", "9p"]
}

/// The Kconfig symbol behind each module name that [`root_drivers`] uses.
fn symbol(module: &str) -> &'static str {
    match module {
        "virtio_ccw" => "CONFIG_VIRTIO_CCW",
        "virtio_console" => "CONFIG_VIRTIO_CONSOLE",
        "9pnet_virtio" => "CONFIG_NET_9P_VIRTIO",
        "9p" => "CONFIG_9P_FS",
        _ => "CONFIG_VIRTIO_PCI",
    }
}

/// Where a kernel and its modules come from.
pub struct Inputs<'a> {
    pub kernel: &'a Path,
    pub release: &'a str,
    pub arch: &'a str,
    pub rootfs: &'a Path,
    /// The target's `modules` setting.
    pub configured: Option<&'a Path>,
}

/// Decides what the kernel must load to reach its root.
pub fn plan(inputs: &Inputs) -> Result<RootDrivers> {
    let mut searched = Vec::new();
    if let Some(dir) = find_dir(inputs, &mut searched)? {
        return from_modules_dir(inputs, dir);
    }
    if let Some(tree) = build_tree(inputs.kernel) {
        let config = tree.join(".config");
        return from_config(inputs, &config, &searched, Some(&tree));
    }
    let beside = inputs.kernel.parent().unwrap_or(Path::new("/"));
    let configs = [
        beside.join(format!("config-{}", inputs.release)),
        beside.join("config"),
        inputs.rootfs.join("boot").join(format!("config-{}", inputs.release)),
    ];
    if let Some(config) = configs.iter().find(|c| is_kernel_config(c)) {
        return from_config(inputs, config, &searched, None);
    }
    log::debug!(
        "kernel {}: no modules or config for release {} (searched {}); assuming its drivers are built in",
        inputs.kernel.display(),
        inputs.release,
        list(&searched)
    );
    Ok(RootDrivers::BuiltIn)
}

/// The modules directory: the configured one (which must exist), else the
/// rootfs's. Records every path looked at in `searched`.
fn find_dir(inputs: &Inputs, searched: &mut Vec<PathBuf>) -> Result<Option<ModulesDir>> {
    let release = inputs.release;
    let in_rootfs = [
        inputs.rootfs.join("lib/modules").join(release),
        inputs.rootfs.join("usr/lib/modules").join(release),
    ];
    let same_as_rootfs = |dir: &Path| {
        let dir = dir.canonicalize().ok();
        in_rootfs.iter().any(|r| dir.is_some() && r.canonicalize().ok() == dir)
    };
    if let Some(base) = inputs.configured {
        let candidates = [
            base.to_path_buf(),
            base.join(release),
            base.join("lib/modules").join(release),
            base.join("usr/lib/modules").join(release),
        ];
        return match candidates.iter().find(|c| is_modules_dir(c)) {
            Some(dir) => Ok(Some(ModulesDir {
                in_rootfs: same_as_rootfs(dir),
                path: dir.clone(),
            })),
            None => bail!(
                "modules {}: no modules for kernel release {release} there (looked in {}); \
                 point it at the directory holding modules.dep (or kernel/), or at one with {release}/ or \
                 lib/modules/{release}/ inside",
                base.display(),
                list(&candidates)
            ),
        };
    }
    for dir in &in_rootfs {
        searched.push(dir.clone());
        if is_modules_dir(dir) {
            return Ok(Some(ModulesDir {
                path: dir.clone(),
                in_rootfs: true,
            }));
        }
    }
    Ok(None)
}

/// Whether `dir` holds a kernel's modules: indexed by depmod (`modules.dep`),
/// or as a package unpacked without its maintainer scripts left them
/// (`kernel/`, `modules.order`).
fn is_modules_dir(dir: &Path) -> bool {
    dir.join("modules.dep").is_file() || dir.join("kernel").is_dir() || dir.join("modules.order").is_file()
}

/// The plan from a modules directory's `modules.dep` and `modules.builtin`.
fn from_modules_dir(inputs: &Inputs, dir: ModulesDir) -> Result<RootDrivers> {
    let dep_path = dir.path.join("modules.dep");
    let dep = match std::fs::read_to_string(&dep_path) {
        Ok(dep) => dep,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            log::info!(
                "{}: no modules.dep (depmod never ran there); reading the dependencies from the modules \
                 themselves. For modprobe in the guest, run `depmod -b ROOTFS {}`",
                dir.path.display(),
                inputs.release
            );
            dependencies_from_modules(&dir.path, &root_drivers(inputs.arch))?
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", dep_path.display())),
    };
    // An older depmod may not have written modules.builtin: nothing built in.
    let builtin = std::fs::read_to_string(dir.path.join("modules.builtin")).unwrap_or_default();
    match resolve(&dep, &builtin, &root_drivers(inputs.arch)) {
        Ok(load) if load.is_empty() => Ok(RootDrivers::BuiltIn),
        Ok(load) => Ok(RootDrivers::Modules {
            load: load.iter().map(|rel| dir.path.join(rel)).collect(),
            dir,
        }),
        Err(missing) => Err(missing_drivers(inputs, &missing, &format!("{}", dir.path.display()))),
    }
}

/// The plan from a kernel config: built in, or an error saying what is missing.
fn from_config(inputs: &Inputs, config: &Path, searched: &[PathBuf], tree: Option<&Path>) -> Result<RootDrivers> {
    let text = std::fs::read_to_string(config).with_context(|| format!("reading {}", config.display()))?;
    let values = parse_config(&text);
    let drivers = root_drivers(inputs.arch);
    let missing: Vec<&str> = drivers
        .iter()
        .copied()
        .filter(|m| !values.contains_key(symbol(m)))
        .collect();
    if !missing.is_empty() {
        return Err(missing_drivers(inputs, &missing, &config.display().to_string()));
    }
    if drivers.iter().all(|m| values.get(symbol(m)) == Some(&'y')) {
        return Ok(RootDrivers::BuiltIn);
    }
    let release = inputs.release;
    if let Some(tree) = tree {
        bail!(
            "kernel {} was built with its virtio and 9p drivers as modules (per {}): install them with \
             `make -C {} modules_install INSTALL_MOD_PATH=DIR` and set modules = \"DIR\" (--modules DIR)",
            inputs.kernel.display(),
            config.display(),
            tree.display()
        );
    }
    Err(anyhow!(
        "kernel {} (release {release}) has its virtio and 9p drivers as modules (per {}), but no modules \
         for release {release} were found; searched {}. Install the kernel's modules, or set modules = \
         \"DIR\" (--modules DIR) to the directory holding its modules.dep",
        inputs.kernel.display(),
        config.display(),
        list(searched)
    ))
}

/// The error for drivers a kernel has neither built in nor as modules.
fn missing_drivers(inputs: &Inputs, missing: &[&str], source: &str) -> anyhow::Error {
    let kernel = inputs.kernel.display();
    let release = inputs.release;
    if missing.contains(&"9p") || missing.contains(&"9pnet_virtio") {
        return anyhow!(
            "kernel {kernel} (release {release}) has no 9p support (neither built in nor a module, per \
             {source}), so it cannot share a root filesystem over 9p as vmtest's kernel targets do. Use a \
             kernel with CONFIG_9P_FS and CONFIG_NET_9P_VIRTIO: on Debian, linux-image-amd64 (not \
             linux-image-cloud-amd64); or boot a disk image instead"
        );
    }
    anyhow!(
        "kernel {kernel} (release {release}) lacks {} (neither built in nor a module, per {source}); \
         vmtest's guests need {}",
        missing.join(", "),
        missing.iter().map(|m| symbol(m)).collect::<Vec<_>>().join(" and ")
    )
}

/// A `modules.dep` for `wanted` and everything they depend on, made from
/// the module files below `dir` (their `.modinfo` section's `depends=`), as
/// depmod would have written it.
fn dependencies_from_modules(dir: &Path, wanted: &[&str]) -> Result<String> {
    let mut files = BTreeMap::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(next) = pending.pop() {
        let entries = std::fs::read_dir(&next).with_context(|| format!("reading {}", next.display()))?;
        for entry in entries.flatten() {
            let path = entry.path();
            let kind = entry.file_type()?;
            if kind.is_dir() {
                pending.push(path);
            } else if kind.is_file() && path.to_string_lossy().contains(".ko") {
                let rel = path.strip_prefix(dir).unwrap_or(&path).to_string_lossy().into_owned();
                files.insert(module_name(&rel), rel);
            }
        }
    }
    let mut dep = String::new();
    let mut queue: Vec<String> = wanted.iter().map(|w| w.to_string()).collect();
    let mut seen = BTreeSet::new();
    while let Some(name) = queue.pop() {
        if !seen.insert(name.clone()) {
            continue;
        }
        let Some(rel) = files.get(&name) else {
            continue; // built in, or missing: `resolve` tells which
        };
        let bytes = decompressed(&dir.join(rel))?;
        let needs = modinfo_depends(&bytes);
        let paths: Vec<&str> = needs.iter().filter_map(|n| files.get(n).map(String::as_str)).collect();
        dep.push_str(&format!("{rel}: {}\n", paths.join(" ")));
        queue.extend(needs);
    }
    Ok(dep)
}

/// The module names in a module's `depends=` modinfo string.
fn modinfo_depends(module: &[u8]) -> Vec<String> {
    const KEY: &[u8] = b"\0depends=";
    let Some(at) = memchr::memmem::find(module, KEY) else {
        return Vec::new();
    };
    let value = &module[at + KEY.len()..];
    let end = value.iter().position(|&b| b == 0).unwrap_or(value.len());
    String::from_utf8_lossy(&value[..end])
        .split(',')
        .filter(|n| !n.is_empty())
        .map(|n| n.replace('-', "_"))
        .collect()
}

/// The module files (relative to the modules directory, as `modules.dep`
/// names them) to load for `wanted`, dependencies first; built-in modules
/// are left out. `Err` lists the wanted modules that exist nowhere.
pub fn resolve<'a>(dep: &str, builtin: &str, wanted: &[&'a str]) -> Result<Vec<String>, Vec<&'a str>> {
    let mut deps: BTreeMap<String, (&str, Vec<&str>)> = BTreeMap::new();
    for line in dep.lines() {
        let Some((path, rest)) = line.split_once(':') else {
            continue;
        };
        deps.insert(module_name(path), (path.trim(), rest.split_whitespace().collect()));
    }
    let builtin: BTreeSet<String> = builtin
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(module_name)
        .collect();
    let missing: Vec<&str> = wanted
        .iter()
        .copied()
        .filter(|m| !builtin.contains(*m) && !deps.contains_key(*m))
        .collect();
    if !missing.is_empty() {
        return Err(missing);
    }
    let mut order = Vec::new();
    let mut seen = BTreeSet::new();
    for module in wanted {
        visit(module, &deps, &builtin, &mut seen, &mut order);
    }
    Ok(order)
}

/// Depth-first: a module's dependencies (from its own `modules.dep` line),
/// then the module itself.
fn visit(
    name: &str,
    deps: &BTreeMap<String, (&str, Vec<&str>)>,
    builtin: &BTreeSet<String>,
    seen: &mut BTreeSet<String>,
    order: &mut Vec<String>,
) {
    if builtin.contains(name) || !seen.insert(name.to_string()) {
        return;
    }
    let Some((path, needs)) = deps.get(name) else {
        return;
    };
    for dep in needs {
        visit(&module_name(dep), deps, builtin, seen, order);
    }
    order.push(path.to_string());
}

/// The module name of a path in `modules.dep`: the file name before `.ko`,
/// with `-` read as `_` as the kernel does.
pub fn module_name(path: &str) -> String {
    let file = path.trim().rsplit('/').next().unwrap_or_default();
    let stem = file.split(".ko").next().unwrap_or(file);
    stem.replace('-', "_")
}

/// `CONFIG_X=y|m` lines of a kernel config, by symbol.
fn parse_config(text: &str) -> BTreeMap<&str, char> {
    text.lines()
        .filter_map(|line| {
            let (key, value) = line.split_once('=')?;
            let value = match value.trim() {
                "y" => 'y',
                "m" => 'm',
                _ => return None,
            };
            key.starts_with("CONFIG_").then_some((key, value))
        })
        .collect()
}

/// Whether `path` looks like a kernel config (it says whether modules exist).
fn is_kernel_config(path: &Path) -> bool {
    path.is_file()
        && std::fs::read_to_string(path).is_ok_and(|t| {
            t.lines()
                .any(|l| l == "CONFIG_MODULES=y" || l == "# CONFIG_MODULES is not set")
        })
}

/// The root of the kernel build tree an image sits in (`arch/x86/boot/bzImage`,
/// or `vmlinux` at the top), recognised by its `.config` and `Makefile`.
fn build_tree(kernel: &Path) -> Option<PathBuf> {
    kernel.ancestors().skip(1).take(4).find_map(|dir| {
        (dir.join(".config").is_file() && dir.join("Makefile").is_file() && dir.join("Kconfig").is_file())
            .then(|| dir.to_path_buf())
    })
}

fn list(paths: &[PathBuf]) -> String {
    if paths.is_empty() {
        return "nothing".into();
    }
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// A module file's contents, decompressed according to its extension.
pub fn decompressed(path: &Path) -> Result<Vec<u8>> {
    use std::io::Read;
    let raw = std::fs::read(path).with_context(|| format!("reading module {}", path.display()))?;
    let name = path.to_string_lossy();
    let mut out = Vec::with_capacity(raw.len() * 3);
    let result = if name.ends_with(".ko.xz") {
        lzma_rs::xz_decompress(&mut &raw[..], &mut out).map_err(|e| anyhow::anyhow!("{e:?}"))
    } else if name.ends_with(".ko.zst") {
        ruzstd::decoding::StreamingDecoder::new(&raw[..])
            .map_err(|e| anyhow::anyhow!("{e}"))
            .and_then(|mut d| d.read_to_end(&mut out).map(drop).map_err(Into::into))
    } else if name.ends_with(".ko.gz") {
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map(drop)
            .map_err(Into::into)
    } else if name.ends_with(".ko") {
        return Ok(raw);
    } else {
        bail!(
            "module {}: unknown compression (expected .ko, .ko.xz, .ko.zst or .ko.gz)",
            path.display()
        );
    };
    result.with_context(|| format!("decompressing module {}", path.display()))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEP: &str = "\
kernel/fs/netfs/netfs.ko:
kernel/fs/fscache/fscache.ko: kernel/fs/netfs/netfs.ko
kernel/fs/9p/9p.ko: kernel/net/9p/9pnet.ko kernel/fs/fscache/fscache.ko kernel/fs/netfs/netfs.ko
kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio_pci_modern_dev.ko:
kernel/drivers/virtio/virtio_pci_legacy_dev.ko:
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_legacy_dev.ko \
kernel/drivers/virtio/virtio_pci_modern_dev.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/char/virtio_console.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/net/9p/9pnet.ko:
kernel/net/9p/9pnet_virtio.ko: kernel/net/9p/9pnet.ko kernel/drivers/virtio/virtio.ko \
kernel/drivers/virtio/virtio_ring.ko
";

    #[test]
    fn dependencies_come_first_and_once() {
        let load = resolve(DEP, "", &root_drivers("x86_64")).unwrap();
        assert_eq!(
            load,
            [
                "kernel/drivers/virtio/virtio_pci_legacy_dev.ko",
                "kernel/drivers/virtio/virtio_pci_modern_dev.ko",
                "kernel/drivers/virtio/virtio_ring.ko",
                "kernel/drivers/virtio/virtio.ko",
                "kernel/drivers/virtio/virtio_pci.ko",
                "kernel/drivers/char/virtio_console.ko",
                "kernel/net/9p/9pnet.ko",
                "kernel/net/9p/9pnet_virtio.ko",
                "kernel/fs/netfs/netfs.ko",
                "kernel/fs/fscache/fscache.ko",
                "kernel/fs/9p/9p.ko",
            ]
        );
    }

    #[test]
    fn built_in_modules_are_left_out() {
        let builtin = "kernel/drivers/virtio/virtio.ko\nkernel/drivers/virtio/virtio_ring.ko\n\
                       kernel/drivers/virtio/virtio_pci.ko\nkernel/drivers/char/virtio_console.ko\n";
        let load = resolve(DEP, builtin, &root_drivers("x86_64")).unwrap();
        assert_eq!(load[..2], ["kernel/net/9p/9pnet.ko", "kernel/net/9p/9pnet_virtio.ko"]);
        assert!(!load.iter().any(|m| m.contains("virtio/")), "{load:?}");
    }

    #[test]
    fn everything_built_in_needs_nothing() {
        let builtin = "kernel/drivers/virtio/virtio_pci.ko\nkernel/drivers/char/virtio_console.ko\n\
                       kernel/net/9p/9pnet_virtio.ko\nkernel/fs/9p/9p.ko\n";
        assert_eq!(resolve("", builtin, &root_drivers("x86_64")), Ok(vec![]));
    }

    #[test]
    fn compressed_modules_keep_their_names() {
        let dep = "kernel/fs/9p/9p.ko.xz: kernel/net/9p/9pnet.ko.xz\nkernel/net/9p/9pnet.ko.xz:\n";
        assert_eq!(
            resolve(dep, "", &["9p"]),
            Ok(vec!["kernel/net/9p/9pnet.ko.xz".into(), "kernel/fs/9p/9p.ko.xz".into()])
        );
        assert_eq!(
            module_name("kernel/drivers/char/hw_random/virtio-rng.ko.zst"),
            "virtio_rng"
        );
    }

    #[test]
    fn a_kernel_without_9p_reports_what_is_missing() {
        let dep = "kernel/drivers/virtio/virtio_pci.ko:\nkernel/drivers/char/virtio_console.ko:\n";
        assert_eq!(
            resolve(dep, "", &root_drivers("x86_64")),
            Err(vec!["9pnet_virtio", "9p"])
        );
    }

    fn inputs<'a>(kernel: &'a Path, rootfs: &'a Path, configured: Option<&'a Path>) -> Inputs<'a> {
        Inputs {
            kernel,
            release: "6.1.0-9-amd64",
            arch: "x86_64",
            rootfs,
            configured,
        }
    }

    #[test]
    fn config_decides_without_modules() {
        let dir = tempfile::tempdir().unwrap();
        let kernel = dir.path().join("vmlinuz-6.1.0-9-amd64");
        std::fs::write(&kernel, "").unwrap();
        let rootfs = dir.path().join("root");
        let config = dir.path().join("config-6.1.0-9-amd64");
        let all_y = "CONFIG_MODULES=y\nCONFIG_VIRTIO_PCI=y\nCONFIG_VIRTIO_CONSOLE=y\n\
                     CONFIG_NET_9P_VIRTIO=y\nCONFIG_9P_FS=y\n";
        std::fs::write(&config, all_y).unwrap();
        assert_eq!(plan(&inputs(&kernel, &rootfs, None)).unwrap(), RootDrivers::BuiltIn);

        std::fs::write(&config, all_y.replace("CONFIG_9P_FS=y", "CONFIG_9P_FS=m")).unwrap();
        let err = plan(&inputs(&kernel, &rootfs, None)).unwrap_err().to_string();
        assert!(err.contains("no modules for release 6.1.0-9-amd64 were found"), "{err}");
        assert!(
            err.contains(&format!("{}/lib/modules/6.1.0-9-amd64", rootfs.display())),
            "{err}"
        );
        assert!(
            err.contains(&format!("{}/usr/lib/modules/6.1.0-9-amd64", rootfs.display())),
            "{err}"
        );

        std::fs::write(
            &config,
            "CONFIG_MODULES=y\nCONFIG_VIRTIO_PCI=m\nCONFIG_VIRTIO_CONSOLE=m\n",
        )
        .unwrap();
        let err = plan(&inputs(&kernel, &rootfs, None)).unwrap_err().to_string();
        assert!(err.contains("has no 9p support"), "{err}");
        assert!(err.contains("linux-image-amd64"), "{err}");
    }

    #[test]
    fn a_build_tree_is_judged_by_its_config() {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("linux");
        let kernel = tree.join("arch/x86/boot/bzImage");
        std::fs::create_dir_all(kernel.parent().unwrap()).unwrap();
        for file in ["Makefile", "Kconfig"] {
            std::fs::write(tree.join(file), "").unwrap();
        }
        let config = "CONFIG_MODULES=y\nCONFIG_VIRTIO_PCI=y\nCONFIG_VIRTIO_CONSOLE=y\n\
                      CONFIG_NET_9P_VIRTIO=y\nCONFIG_9P_FS=y\n";
        std::fs::write(tree.join(".config"), config).unwrap();
        let rootfs = dir.path().join("root");
        assert_eq!(plan(&inputs(&kernel, &rootfs, None)).unwrap(), RootDrivers::BuiltIn);
        std::fs::write(tree.join(".config"), config.replace("9P_FS=y", "9P_FS=m")).unwrap();
        let err = plan(&inputs(&kernel, &rootfs, None)).unwrap_err().to_string();
        assert!(
            err.contains(&format!("make -C {} modules_install", tree.display())),
            "{err}"
        );
    }

    #[test]
    fn configured_modules_accept_several_layouts() {
        let dir = tempfile::tempdir().unwrap();
        let kernel = dir.path().join("bzImage");
        let tree = dir.path().join("mods/lib/modules/6.1.0-9-amd64");
        std::fs::create_dir_all(&tree).unwrap();
        std::fs::write(tree.join("modules.dep"), DEP).unwrap();
        let rootfs = dir.path().join("root");
        for base in [
            dir.path().join("mods"),
            dir.path().join("mods/lib/modules"),
            tree.clone(),
        ] {
            let RootDrivers::Modules { dir: found, load } = plan(&inputs(&kernel, &rootfs, Some(&base))).unwrap()
            else {
                panic!("expected modules")
            };
            assert_eq!(
                found,
                ModulesDir {
                    path: tree.clone(),
                    in_rootfs: false
                }
            );
            assert_eq!(load.last().unwrap(), &tree.join("kernel/fs/9p/9p.ko"));
        }
        let err = plan(&inputs(&kernel, &rootfs, Some(dir.path())))
            .unwrap_err()
            .to_string();
        assert!(err.contains("no modules for kernel release 6.1.0-9-amd64"), "{err}");
    }

    /// A module file as far as `modinfo_depends` reads it.
    fn fake_module(depends: &str) -> Vec<u8> {
        format!("\x7fELF...\0license=GPL\0depends={depends}\0name=x\0").into_bytes()
    }

    #[test]
    fn modinfo_names_the_dependencies() {
        assert_eq!(
            modinfo_depends(&fake_module("virtio,virtio-ring")),
            ["virtio", "virtio_ring"]
        );
        assert!(modinfo_depends(&fake_module("")).is_empty());
        assert!(modinfo_depends(b"no modinfo here").is_empty());
    }

    #[test]
    fn modules_without_modules_dep_are_resolved_from_their_modinfo() {
        // As mmdebstrap's extract variant leaves a kernel package: the
        // modules and modules.builtin, but no modules.dep.
        let dir = tempfile::tempdir().unwrap();
        let rootfs = dir.path().join("root");
        let tree = rootfs.join("usr/lib/modules/6.1.0-9-arm64");
        for (rel, depends) in [
            ("kernel/drivers/virtio/virtio_pci.ko", "virtio_ring,virtio"),
            ("kernel/drivers/virtio/virtio_ring.ko", "virtio"),
            ("kernel/drivers/virtio/virtio.ko", ""),
            ("kernel/drivers/char/virtio_console.ko", "virtio_ring,virtio"),
            ("kernel/net/9p/9pnet.ko", ""),
            ("kernel/net/9p/9pnet_virtio.ko", "9pnet,virtio_ring,virtio"),
            ("kernel/fs/9p/9p.ko", "9pnet,netfs"),
            ("kernel/fs/netfs/netfs.ko", ""),
            ("kernel/drivers/net/dummy.ko", ""),
        ] {
            let path = tree.join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, fake_module(depends)).unwrap();
        }
        std::fs::write(tree.join("modules.builtin"), "kernel/fs/netfs/netfs.ko\n").unwrap();
        let kernel = dir.path().join("vmlinuz");
        let inputs = Inputs {
            kernel: &kernel,
            release: "6.1.0-9-arm64",
            arch: "aarch64",
            rootfs: &rootfs,
            configured: None,
        };
        let RootDrivers::Modules { dir: found, load } = plan(&inputs).unwrap() else {
            panic!("expected modules")
        };
        assert!(found.in_rootfs);
        let names: Vec<String> = load.iter().map(|p| module_name(&p.to_string_lossy())).collect();
        assert_eq!(
            names,
            [
                "virtio",
                "virtio_ring",
                "virtio_pci",
                "virtio_console",
                "9pnet",
                "9pnet_virtio",
                "9p"
            ]
        );
    }

    #[test]
    fn compressed_modules_are_decompressed() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let module = b"\x7fELF a module".repeat(100);
        let gz = dir.path().join("m.ko.gz");
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&module).unwrap();
        std::fs::write(&gz, enc.finish().unwrap()).unwrap();
        assert_eq!(decompressed(&gz).unwrap(), module);
        let xz = dir.path().join("m.ko.xz");
        let mut packed = Vec::new();
        lzma_rs::xz_compress(&mut &module[..], &mut packed).unwrap();
        std::fs::write(&xz, packed).unwrap();
        assert_eq!(decompressed(&xz).unwrap(), module);
        let zst = dir.path().join("m.ko.zst");
        let packed = ruzstd::encoding::compress_to_vec(&module[..], ruzstd::encoding::CompressionLevel::Fastest);
        std::fs::write(&zst, packed).unwrap();
        assert_eq!(decompressed(&zst).unwrap(), module);
        let plain = dir.path().join("m.ko");
        std::fs::write(&plain, &module).unwrap();
        assert_eq!(decompressed(&plain).unwrap(), module);
        assert!(decompressed(&dir.path().join("m.ko.bz2")).is_err());
    }
}
