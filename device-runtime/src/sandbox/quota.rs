//! The `/data` quota (`limits.data`), enforced when a write is made.
//!
//! The WASI preview 1 calls that can make the directory take more space
//! are shadowed in the linker by wrappers that work out, before the call,
//! how much it can add at most, reserve that much and only then hand the
//! very same arguments to wasmtime-wasi's own implementation (the ABI
//! functions its linker calls, `p1::wasi_snapshot_preview1::*`). A call
//! that would take the directory over its quota returns `ENOSPC` to the
//! guest, and nothing is written.
//!
//! Those ABI functions are public in wasmtime-wasi 48 but not meant as its
//! interface (its source says so); calling them is what lets the wrappers
//! delegate instead of reimplementing WASI. wasmtime-wasi is pinned
//! (`=48.0.8`): an upgrade must check their signatures again (the compiler
//! does) and that they still take the guest's memory as their glue gives
//! it (`with_guest`).
//!
//! | call | growth reserved |
//! |---|---|
//! | `fd_write`, `fd_pwrite` to a regular file | the blocks the file grows by, from its size, its position (or the offset; the end for an append-mode file) and the bytes in all the iovecs |
//! | `fd_filestat_set_size` | the blocks between the old and the new size |
//! | `path_open` with `O_CREAT` of a file that does not exist | one block |
//! | `path_create_directory`, `path_symlink`, `path_link` of a path that does not exist | one block |
//!
//! `fd_allocate` is not shadowed: wasmtime-wasi 48 answers it `ENOTSUP`
//! without allocating. Removing, truncating and renaming free space and are
//! not shadowed.
//!
//! Usage counts every file by its size rounded up to whole 4 KiB blocks,
//! and every file, directory and link as at least one block, whatever the
//! host file system allocates (a sparse file counts its full size). It is
//! measured from the directory at start, so a directory left above a
//! lowered quota may shrink but not grow. Between measures it is kept as an
//! upper bound (every reservation is added, nothing freed is subtracted),
//! and measured again only when a reservation would not fit.

use std::path::{Path, PathBuf};

use wasmtime::{AsContextMut as _, Caller, Extern, Linker};
use wasmtime_wasi::p1::types::{Errno, Fd, Fdflags, Filetype, Lookupflags};
use wasmtime_wasi::p1::wasi_snapshot_preview1::{self as p1, WasiSnapshotPreview1 as _};
use wasmtime_wasi::runtime::in_tokio;
use wiggle::{GuestMemory, GuestPtr};

use super::run::Ctx;

/// The unit usage is counted in.
const BLOCK: u64 = 4096;
/// The WASI module the wrappers shadow.
const MODULE: &str = "wasi_snapshot_preview1";
/// Most iovecs one write may name (Linux's `IOV_MAX`; more is `EINVAL`).
const MAX_IOVS: u32 = 1024;
/// `oflags` bits of `path_open`.
const O_CREAT: i32 = 1;
const O_EXCL: i32 = 4;

/// The quota of one instance's `/data`.
pub(crate) struct DataQuota {
    dir: PathBuf,
    limit: u64,
    /// At least the directory's usage.
    used: u64,
}

impl DataQuota {
    /// The quota of `dir`, with its present usage.
    pub(crate) fn measure(dir: &Path, limit: u64) -> std::io::Result<DataQuota> {
        Ok(DataQuota { dir: dir.to_owned(), limit, used: usage(dir)? })
    }

    /// Reserves `growth` bytes; false if they do not fit. Nothing that does
    /// not grow is ever refused, even above the quota.
    fn reserve(&mut self, growth: u64) -> bool {
        if growth == 0 {
            return true;
        }
        if self.used.saturating_add(growth) > self.limit {
            // The counter only ever over-estimates: measure before refusing.
            match usage(&self.dir) {
                Ok(used) => self.used = used,
                Err(_) => return false,
            }
        }
        if self.used.saturating_add(growth) > self.limit {
            return false;
        }
        self.used += growth;
        true
    }
}

/// What a file of `len` bytes counts for.
fn blocks(len: u64) -> u64 {
    len.div_ceil(BLOCK).max(1).saturating_mul(BLOCK)
}

/// The usage of everything under `dir` (not `dir` itself). Links are not
/// followed; an entry removed during the walk is skipped.
fn usage(dir: &Path) -> std::io::Result<u64> {
    let mut total = 0u64;
    let mut pending = vec![dir.to_owned()];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d)? {
            let entry = entry?;
            let meta = match entry.metadata() {
                Ok(m) => m,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            if meta.is_dir() {
                pending.push(entry.path());
                total = total.saturating_add(BLOCK);
            } else {
                total = total.saturating_add(blocks(meta.len()));
            }
        }
    }
    Ok(total)
}

/// An errno, as the ABI returns it.
fn errno(e: Errno) -> i32 {
    e as i32
}

/// Runs `f` with the instance state and the guest's memory, as
/// wasmtime-wasi's own linker glue does before calling its ABI functions.
fn with_guest<R>(
    caller: &mut Caller<'_, Ctx>,
    f: impl FnOnce(&mut Ctx, &mut GuestMemory<'_>) -> wasmtime::Result<R>,
) -> wasmtime::Result<R> {
    let fuel = caller.as_context_mut().hostcall_fuel();
    let Some(Extern::Memory(memory)) = caller.get_export("memory") else {
        wasmtime::bail!("missing required memory export");
    };
    let (bytes, ctx) = memory.data_and_store_mut(caller);
    ctx.wasi.set_hostcall_fuel(fuel);
    f(ctx, &mut GuestMemory::Unshared(bytes))
}

/// The answer of a WASI call that failed with `e`: its errno, or the trap.
fn fail(e: wasmtime_wasi::p1::types::Error) -> wasmtime::Result<i32> {
    e.downcast().map(errno)
}

/// Reserves what writing `len` bytes to `fd` at `at` (`None`: its
/// position) can add, then calls `write`. Anything but a regular file
/// (stdio: the log has its own cap) goes straight to `write`.
fn write_file(
    ctx: &mut Ctx,
    mem: &mut GuestMemory<'_>,
    fd: i32,
    iovs: i32,
    iovs_len: i32,
    at: Option<u64>,
    write: impl FnOnce(&mut Ctx, &mut GuestMemory<'_>) -> wasmtime::Result<i32>,
) -> wasmtime::Result<i32> {
    let stat = match in_tokio(ctx.wasi.fd_filestat_get(mem, Fd::from(fd))) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    if !matches!(stat.filetype, Filetype::RegularFile) {
        return write(ctx, mem);
    }
    let Some(len) = iovec_bytes(mem, iovs, iovs_len) else { return Ok(errno(Errno::Inval)) };
    let append = match in_tokio(ctx.wasi.fd_fdstat_get(mem, Fd::from(fd))) {
        Ok(s) => s.fs_flags.contains(Fdflags::APPEND),
        Err(e) => return fail(e),
    };
    let start = match (append, at) {
        (true, _) => stat.size,
        (false, Some(offset)) => offset,
        (false, None) => match ctx.wasi.fd_tell(mem, Fd::from(fd)) {
            Ok(pos) => pos,
            Err(e) => return fail(e),
        },
    };
    let end = stat.size.max(start.saturating_add(len));
    grow(ctx, mem, blocks(end).saturating_sub(blocks(stat.size)), write)
}

/// Calls `op` if `growth` bytes fit the quota; `ENOSPC` otherwise.
fn grow(
    ctx: &mut Ctx,
    mem: &mut GuestMemory<'_>,
    growth: u64,
    op: impl FnOnce(&mut Ctx, &mut GuestMemory<'_>) -> wasmtime::Result<i32>,
) -> wasmtime::Result<i32> {
    if ctx.quota.as_mut().is_some_and(|q| !q.reserve(growth)) {
        return Ok(errno(Errno::Nospc));
    }
    op(ctx, mem)
}

/// Whether `path` (`len` bytes of guest memory) names an entry, a link
/// included, in directory `fd`: creating it there adds nothing, and the
/// call answers `EEXIST` by itself.
fn exists(ctx: &mut Ctx, mem: &mut GuestMemory<'_>, fd: i32, path: i32, len: i32) -> bool {
    let path = GuestPtr::<str>::new((path as u32, len as u32));
    in_tokio(ctx.wasi.path_filestat_get(mem, Fd::from(fd), Lookupflags::empty(), path)).is_ok()
}

/// One block for a new entry at `path` in `fd`, nothing for one that exists.
fn entry(ctx: &mut Ctx, mem: &mut GuestMemory<'_>, fd: i32, path: i32, len: i32) -> u64 {
    if exists(ctx, mem, fd, path, len) { 0 } else { BLOCK }
}

/// Bytes in the `len` iovecs at `iovs`; `None` if there are more than
/// [`MAX_IOVS`]. An iovec outside memory counts nothing here: the call
/// itself refuses it.
fn iovec_bytes(mem: &GuestMemory<'_>, iovs: i32, len: i32) -> Option<u64> {
    let len = u32::try_from(len).ok().filter(|&n| n <= MAX_IOVS)?;
    let GuestMemory::Unshared(bytes) = mem else { return Some(u64::MAX) };
    let base = iovs as u32 as usize;
    let total = (0..len as usize)
        .filter_map(|i| bytes.get(base + 8 * i + 4..base + 8 * i + 8))
        .map(|b| u64::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]])))
        .sum();
    Some(total)
}

/// Shadows the WASI calls that can grow `/data` (see the module doc).
pub(crate) fn add_to_linker(linker: &mut Linker<Ctx>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    linker.func_wrap(
        MODULE,
        "fd_write",
        |mut caller: Caller<'_, Ctx>, fd: i32, iovs: i32, iovs_len: i32, nwritten: i32| {
            with_guest(&mut caller, |ctx, mem| {
                write_file(ctx, mem, fd, iovs, iovs_len, None, |ctx, mem| {
                    in_tokio(p1::fd_write(&mut ctx.wasi, mem, fd, iovs, iovs_len, nwritten))
                })
            })
        },
    )?;
    linker.func_wrap(
        MODULE,
        "fd_pwrite",
        |mut caller: Caller<'_, Ctx>, fd: i32, iovs: i32, iovs_len: i32, offset: i64, nwritten: i32| {
            with_guest(&mut caller, |ctx, mem| {
                write_file(ctx, mem, fd, iovs, iovs_len, Some(offset as u64), |ctx, mem| {
                    in_tokio(p1::fd_pwrite(&mut ctx.wasi, mem, fd, iovs, iovs_len, offset, nwritten))
                })
            })
        },
    )?;
    linker.func_wrap(MODULE, "fd_filestat_set_size", |mut caller: Caller<'_, Ctx>, fd: i32, size: i64| {
        with_guest(&mut caller, |ctx, mem| {
            let old = match in_tokio(ctx.wasi.fd_filestat_get(mem, Fd::from(fd))) {
                Ok(s) => s.size,
                Err(e) => return fail(e),
            };
            let growth = blocks(size as u64).saturating_sub(blocks(old));
            grow(ctx, mem, growth, |ctx, mem| in_tokio(p1::fd_filestat_set_size(&mut ctx.wasi, mem, fd, size)))
        })
    })?;
    linker.func_wrap(
        MODULE,
        "path_open",
        |mut caller: Caller<'_, Ctx>,
         dirfd: i32,
         dirflags: i32,
         path: i32,
         path_len: i32,
         oflags: i32,
         base: i64,
         inheriting: i64,
         fdflags: i32,
         opened: i32| {
            with_guest(&mut caller, |ctx, mem| {
                let open = |ctx: &mut Ctx, mem: &mut GuestMemory<'_>, oflags: i32| {
                    let wasi = &mut ctx.wasi;
                    in_tokio(p1::path_open(
                        wasi, mem, dirfd, dirflags, path, path_len, oflags, base, inheriting, fdflags, opened,
                    ))
                };
                if oflags & O_CREAT == 0 {
                    return open(ctx, mem, oflags);
                }
                // Without O_EXCL an existing file is simply opened: try
                // that first, so only a file that will be created costs.
                if oflags & O_EXCL == 0 {
                    let code = open(ctx, mem, oflags & !O_CREAT)?;
                    if code != errno(Errno::Noent) {
                        return Ok(code);
                    }
                }
                grow(ctx, mem, BLOCK, |ctx, mem| open(ctx, mem, oflags))
            })
        },
    )?;
    linker.func_wrap(
        MODULE,
        "path_create_directory",
        |mut caller: Caller<'_, Ctx>, fd: i32, path: i32, len: i32| {
            with_guest(&mut caller, |ctx, mem| {
                let growth = entry(ctx, mem, fd, path, len);
                grow(ctx, mem, growth, |ctx, mem| {
                    in_tokio(p1::path_create_directory(&mut ctx.wasi, mem, fd, path, len))
                })
            })
        },
    )?;
    linker.func_wrap(
        MODULE,
        "path_symlink",
        |mut caller: Caller<'_, Ctx>, old: i32, old_len: i32, fd: i32, new: i32, new_len: i32| {
            with_guest(&mut caller, |ctx, mem| {
                let growth = entry(ctx, mem, fd, new, new_len);
                grow(ctx, mem, growth, |ctx, mem| {
                    in_tokio(p1::path_symlink(&mut ctx.wasi, mem, old, old_len, fd, new, new_len))
                })
            })
        },
    )?;
    linker.func_wrap(
        MODULE,
        "path_link",
        |mut caller: Caller<'_, Ctx>,
         old_fd: i32,
         flags: i32,
         old: i32,
         old_len: i32,
         new_fd: i32,
         new: i32,
         new_len: i32| {
            with_guest(&mut caller, |ctx, mem| {
                let growth = entry(ctx, mem, new_fd, new, new_len);
                grow(ctx, mem, growth, |ctx, mem| {
                    in_tokio(p1::path_link(&mut ctx.wasi, mem, old_fd, flags, old, old_len, new_fd, new, new_len))
                })
            })
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_counts_whole_blocks_and_every_entry() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(usage(dir.path()).unwrap(), 0);
        std::fs::write(dir.path().join("empty"), b"").unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/a"), vec![1; 4097]).unwrap();
        assert_eq!(usage(dir.path()).unwrap(), BLOCK + BLOCK + 2 * BLOCK);

        let mut q = DataQuota::measure(dir.path(), 5 * BLOCK).unwrap();
        assert!(q.reserve(BLOCK), "the fifth block fits");
        std::fs::write(dir.path().join("b"), vec![1; 4096]).unwrap();
        assert!(!q.reserve(1), "a sixth does not");
        // Space freed is seen when the counter runs out.
        std::fs::remove_dir_all(dir.path().join("sub")).unwrap();
        assert!(q.reserve(3 * BLOCK));
        assert!(q.reserve(0), "what does not grow always passes");
    }
}
