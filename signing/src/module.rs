//! What a Wasm module needs, checked against its config before anything
//! compiles it: its imports against the capabilities the config grants,
//! and its memory's declared minimum against `limits.memory`. `gantry-sign
//! container` refuses to sign a release that fails, and the device refuses
//! to install one, with the same check and the same words.
//!
//! Only the module's header sections are read (types, imports, memories),
//! in one pass bounded by the module's size; nothing is compiled.

use crate::config::ContainerConfig;

/// WASI preview 1's module name.
pub const WASI_P1: &str = "wasi_snapshot_preview1";
/// Gantry's host API module name.
pub const GANTRY: &str = "gantry";

/// Bytes in one Wasm page.
const PAGE: u64 = 64 << 10;

/// The capability a WASI preview-1 function needs: `Some("")` for the base
/// set every container gets, `None` for what is never granted
/// (`proc_raise`).
///
/// The base set acts only on descriptors the container holds: its stdio
/// and the directories its config mounts (without a mount, every `path_*`
/// call fails with `EBADF`). The `sock_*` functions act only on sockets
/// the runtime hands a container, and it hands none: a module linked with
/// socket stubs installs, and a call answers `EBADF` or `ENOTSOCK`.
pub fn wasi_capability(function: &str) -> Option<&'static str> {
    Some(match function {
        "args_get" | "args_sizes_get" => "wasi:args",
        "environ_get" | "environ_sizes_get" => "wasi:env",
        "clock_res_get" | "clock_time_get" => "wasi:clocks",
        "random_get" => "wasi:random",
        "path_create_directory"
        | "path_filestat_get"
        | "path_filestat_set_times"
        | "path_link"
        | "path_open"
        | "path_readlink"
        | "path_remove_directory"
        | "path_rename"
        | "path_symlink"
        | "path_unlink_file" => "",
        "sock_accept" | "sock_recv" | "sock_send" | "sock_shutdown" => "",
        "fd_advise"
        | "fd_allocate"
        | "fd_close"
        | "fd_datasync"
        | "fd_fdstat_get"
        | "fd_fdstat_set_flags"
        | "fd_fdstat_set_rights"
        | "fd_filestat_get"
        | "fd_filestat_set_size"
        | "fd_filestat_set_times"
        | "fd_pread"
        | "fd_prestat_dir_name"
        | "fd_prestat_get"
        | "fd_pwrite"
        | "fd_read"
        | "fd_readdir"
        | "fd_renumber"
        | "fd_seek"
        | "fd_sync"
        | "fd_tell"
        | "fd_write"
        | "poll_oneoff"
        | "proc_exit"
        | "sched_yield" => "",
        _ => return None,
    })
}

/// The capability a Gantry host function needs (`""`: always available).
pub fn gantry_capability(function: &str) -> Option<&'static str> {
    Some(match function {
        "log" => "gantry:log",
        "kv_get" | "kv_put" => "gantry:kv",
        "sensor_read" => "gantry:sensor",
        "heartbeat" => "",
        _ => return None,
    })
}

/// Longest import module or field name kept in a refusal, in bytes.
const MAX_SHOWN_NAME: usize = 64;
/// Most refused imports named in one refusal (the count says how many).
pub const MAX_SHOWN_IMPORTS: usize = 32;

/// One import the config does not allow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefusedImport {
    /// Import module (cut to 64 bytes).
    pub module: String,
    /// Import name (cut to 64 bytes).
    pub name: String,
    /// Why it is refused.
    pub why: Why,
}

/// Why an import is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Why {
    /// From a module no container may import from.
    UnknownModule,
    /// Not a function (a memory, table, global or tag).
    NotAFunction,
    /// Gantry does not provide it.
    NotProvided,
    /// It needs this capability, which the config does not grant.
    NotGranted(&'static str),
}

impl core::fmt::Display for RefusedImport {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}.{} (", self.module, self.name)?;
        match &self.why {
            Why::UnknownModule => f.write_str("a module no container may import from)"),
            Why::NotAFunction => f.write_str("not a function)"),
            Why::NotProvided => f.write_str("not provided by Gantry)"),
            Why::NotGranted(cap) => write!(f, "needs the capability {cap:?}, not granted)"),
        }
    }
}

/// Why a module does not fit its config.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ModuleRefused {
    /// It is not a Wasm module Gantry can read.
    #[error("not a valid Wasm module: {0}")]
    Invalid(String),
    /// It imports what the config does not grant: every such import, up to
    /// [`MAX_SHOWN_IMPORTS`], in the module's order.
    #[error("{} import{} not granted by the config: {}{}", .total, if *.total == 1 { " is" } else { "s are" },
        .shown.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "),
        if *.total > .shown.len() { ", ..." } else { "" })]
    Imports {
        /// The first refused imports.
        shown: Vec<RefusedImport>,
        /// How many were refused.
        total: usize,
    },
    /// Its memory's declared minimum is above `limits.memory`.
    #[error("its memory starts at {minimum} bytes, above limits.memory ({limit} bytes)")]
    Memory {
        /// The declared minimum, in bytes.
        minimum: u64,
        /// The config's limit.
        limit: u64,
    },
}

/// What [`check`] read from a module.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ModuleInfo {
    /// Imports, as (module, name, is a function), in order.
    pub imports: Vec<(String, String, bool)>,
    /// The largest declared minimum of its memories (defined or imported),
    /// in bytes.
    pub memory_minimum: u64,
}

/// Reads a module's imports and memory minimum without compiling it.
pub fn read(wasm: &[u8]) -> Result<ModuleInfo, ModuleRefused> {
    use wasmparser::{Parser, Payload, TypeRef};
    let invalid = |e: wasmparser::BinaryReaderError| ModuleRefused::Invalid(e.to_string());
    let mut info = ModuleInfo::default();
    let mut memory = |m: wasmparser::MemoryType| {
        let page = m.page_size_log2.map_or(PAGE, |log| 1u64.checked_shl(log).unwrap_or(u64::MAX));
        info.memory_minimum = info.memory_minimum.max(m.initial.saturating_mul(page));
    };
    let mut imports = Vec::new();
    for payload in Parser::new(0).parse_all(wasm) {
        match payload.map_err(invalid)? {
            Payload::ImportSection(section) => {
                for import in section.into_imports() {
                    let import = import.map_err(invalid)?;
                    if let TypeRef::Memory(m) = import.ty {
                        memory(m);
                    }
                    imports.push((
                        import.module.to_owned(),
                        import.name.to_owned(),
                        matches!(import.ty, TypeRef::Func(_)),
                    ));
                }
            }
            Payload::MemorySection(section) => {
                for m in section {
                    memory(m.map_err(invalid)?);
                }
            }
            // Code is not looked at: the compiler validates it.
            Payload::CodeSectionStart { .. } | Payload::End(_) => break,
            _ => {}
        }
    }
    info.imports = imports;
    Ok(info)
}

/// Checks `wasm` against `config` before anything compiles it: every
/// import must be granted, and the memory's declared minimum must fit
/// `limits.memory`.
pub fn check(wasm: &[u8], config: &ContainerConfig) -> Result<ModuleInfo, ModuleRefused> {
    let info = read(wasm)?;
    check_imports(info.imports.iter().map(|(m, n, f)| (m.as_str(), n.as_str(), *f)), config)?;
    if info.memory_minimum > config.limits.memory_bytes {
        return Err(ModuleRefused::Memory { minimum: info.memory_minimum, limit: config.limits.memory_bytes });
    }
    Ok(info)
}

/// Checks imports, given as (module, name, is a function), against the
/// config's capabilities; the refusal names every import refused.
pub fn check_imports<'a>(
    imports: impl IntoIterator<Item = (&'a str, &'a str, bool)>,
    config: &ContainerConfig,
) -> Result<(), ModuleRefused> {
    let granted = |cap: &str| cap.is_empty() || config.capabilities.iter().any(|c| c == cap);
    let (mut shown, mut total) = (Vec::new(), 0usize);
    for (module, name, is_function) in imports {
        let cap = match module {
            WASI_P1 => Some(wasi_capability(name)),
            GANTRY => Some(gantry_capability(name)),
            _ => None,
        };
        let why = match cap {
            None => Why::UnknownModule,
            Some(_) if !is_function => Why::NotAFunction,
            Some(None) => Why::NotProvided,
            Some(Some(cap)) if !granted(cap) => Why::NotGranted(cap),
            Some(Some(_)) => continue,
        };
        total += 1;
        if shown.len() < MAX_SHOWN_IMPORTS {
            shown.push(RefusedImport { module: cut(module), name: cut(name), why });
        }
    }
    if total == 0 { Ok(()) } else { Err(ModuleRefused::Imports { shown, total }) }
}

/// `s` cut to [`MAX_SHOWN_NAME`] bytes on a character boundary.
fn cut(s: &str) -> String {
    let mut end = s.len().min(MAX_SHOWN_NAME);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(caps: &[&str], memory: &str) -> ContainerConfig {
        let caps: Vec<String> = caps.iter().map(|c| format!("{c:?}")).collect();
        ContainerConfig::from_toml(&format!(
            "name = \"x\"\nversion = \"1\"\ncapabilities = [{}]\n[limits]\nmemory = \"{memory}\"\n",
            caps.join(", ")
        ))
        .unwrap()
    }

    #[test]
    fn imports_need_their_capability() {
        let c = config(&[], "16 MiB");
        let base = [(WASI_P1, "fd_write", true), (WASI_P1, "proc_exit", true), (GANTRY, "heartbeat", true)];
        check_imports(base, &c).unwrap();
        let err = check_imports([(WASI_P1, "random_get", true)], &c).unwrap_err();
        assert!(err.to_string().contains("\"wasi:random\""), "{err}");
        check_imports([(WASI_P1, "random_get", true)], &config(&["wasi:random"], "16 MiB")).unwrap();
        check_imports([(GANTRY, "kv_put", true)], &config(&["gantry:kv"], "16 MiB")).unwrap();
        assert!(check_imports([(GANTRY, "log", true)], &config(&["gantry:kv"], "16 MiB")).is_err());
        // Socket stubs and paths link without a capability: they act only on
        // descriptors the config hands out.
        check_imports([(WASI_P1, "sock_shutdown", true), (WASI_P1, "path_open", true)], &c).unwrap();
        assert!(check_imports([(WASI_P1, "path_bogus", true)], &c).is_err(), "only the functions WASI defines");
        assert!(check_imports([(WASI_P1, "proc_raise", true)], &c).is_err());
        assert!(check_imports([(GANTRY, "launch_missiles", true)], &c).is_err());
        assert!(check_imports([("env", "memory", false)], &c).is_err());
    }

    /// Every function of WASI preview 1 (its witx), and nothing else, is
    /// known to the table: granted with a capability or always, except
    /// `proc_raise`. What is granted is what the linker defines
    /// (wasmtime-wasi's preview-1 linker defines all of them).
    #[test]
    fn the_table_knows_exactly_the_functions_of_wasi_preview_1() {
        const PREVIEW_1: [&str; 46] = [
            "args_get",
            "args_sizes_get",
            "environ_get",
            "environ_sizes_get",
            "clock_res_get",
            "clock_time_get",
            "fd_advise",
            "fd_allocate",
            "fd_close",
            "fd_datasync",
            "fd_fdstat_get",
            "fd_fdstat_set_flags",
            "fd_fdstat_set_rights",
            "fd_filestat_get",
            "fd_filestat_set_size",
            "fd_filestat_set_times",
            "fd_pread",
            "fd_prestat_get",
            "fd_prestat_dir_name",
            "fd_pwrite",
            "fd_read",
            "fd_readdir",
            "fd_renumber",
            "fd_seek",
            "fd_sync",
            "fd_tell",
            "fd_write",
            "path_create_directory",
            "path_filestat_get",
            "path_filestat_set_times",
            "path_link",
            "path_open",
            "path_readlink",
            "path_remove_directory",
            "path_rename",
            "path_symlink",
            "path_unlink_file",
            "poll_oneoff",
            "proc_exit",
            "proc_raise",
            "sched_yield",
            "random_get",
            "sock_accept",
            "sock_recv",
            "sock_send",
            "sock_shutdown",
        ];
        for f in PREVIEW_1 {
            assert_eq!(wasi_capability(f).is_none(), f == "proc_raise", "{f}");
        }
        for f in ["path_", "path_bogus", "fd_", "sock_open", "thread_spawn", ""] {
            assert!(wasi_capability(f).is_none(), "{f}");
        }
    }

    #[test]
    fn a_refusal_names_every_refused_import() {
        let c = config(&[], "16 MiB");
        let imports = [
            (WASI_P1, "random_get", true),
            (WASI_P1, "fd_write", true),
            ("env", "f", true),
            (WASI_P1, "proc_raise", true),
            (WASI_P1, "fd_read", false),
        ];
        let Err(ModuleRefused::Imports { shown, total }) = check_imports(imports, &c) else { panic!() };
        assert_eq!(total, 4);
        let whys: Vec<_> = shown.iter().map(|r| r.why.clone()).collect();
        assert_eq!(whys, [Why::NotGranted("wasi:random"), Why::UnknownModule, Why::NotProvided, Why::NotAFunction]);
        let text = check_imports(imports, &c).unwrap_err().to_string();
        assert!(text.starts_with("4 imports are not granted"), "{text}");
        assert!(text.contains("env.f (a module no container") && text.contains("proc_raise"), "{text}");

        // Thousands of refused imports with long names: the refusal stays bounded.
        let long = "n".repeat(10_000);
        let many: Vec<_> = (0..5000).map(|_| ("env", long.as_str(), true)).collect();
        let Err(ModuleRefused::Imports { shown, total }) = check_imports(many.iter().copied(), &c) else { panic!() };
        assert_eq!((shown.len(), total), (MAX_SHOWN_IMPORTS, 5000));
        assert!(shown.iter().all(|r| r.name.len() == MAX_SHOWN_NAME));
        let text = check_imports(many.iter().copied(), &c).unwrap_err().to_string();
        assert!(text.len() < 8 << 10 && text.ends_with(", ..."), "{}", text.len());
    }

    /// A minimal module: a memory of `pages` pages and one import.
    fn module(pages: u8, import: &str) -> Vec<u8> {
        let mut m = b"\0asm\x01\0\0\0".to_vec();
        // type section: one type () -> ()
        m.extend([1, 4, 1, 0x60, 0, 0]);
        // import section: wasi_snapshot_preview1.<import> func type 0
        let mut body = vec![1u8, WASI_P1.len() as u8];
        body.extend(WASI_P1.as_bytes());
        body.push(import.len() as u8);
        body.extend(import.as_bytes());
        body.extend([0, 0]);
        m.push(2);
        m.push(body.len() as u8);
        m.extend(body);
        // memory section: one memory, min `pages`
        m.extend([5, 3, 1, 0, pages]);
        m
    }

    #[test]
    fn memory_minimum_and_imports_are_read_without_compiling() {
        let info = read(&module(3, "fd_write")).unwrap();
        assert_eq!(info.memory_minimum, 3 * PAGE);
        assert_eq!(info.imports, [(WASI_P1.to_owned(), "fd_write".to_owned(), true)]);
        // 2 pages (128 KiB) fit 128 KiB; 3 do not.
        check(&module(2, "fd_write"), &config(&[], "128 KiB")).unwrap();
        let err = check(&module(3, "fd_write"), &config(&[], "128 KiB")).unwrap_err();
        assert_eq!(err, ModuleRefused::Memory { minimum: 3 * PAGE, limit: 128 << 10 });
        assert!(check(&module(1, "random_get"), &config(&[], "128 KiB")).is_err());
        // Cut anywhere: an error inside a section, never a panic; a cut at
        // a section's end is a shorter valid module.
        let whole = module(3, "fd_write");
        let ends = [8, 14, whole.len() - 5];
        for cut in 0..whole.len() {
            assert_eq!(read(&whole[..cut]).is_ok(), ends.contains(&cut), "cut at {cut}");
        }
        assert!(matches!(read(b"not wasm"), Err(ModuleRefused::Invalid(_))));
    }
}
