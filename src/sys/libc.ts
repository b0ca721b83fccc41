// System calls Node.js does not offer, reached through the koffi FFI
// (prebuilt binaries inside its npm package: nothing is compiled on the
// user's machine). Loaded lazily, on first use; where koffi or libc cannot
// be loaded (another OS, an architecture whose constants we do not know),
// libc() returns null and callers fall back to what Node.js can do.
//
// Only synchronous calls that return at once are made here (lseek, fadvise,
// getsockopt, openat on a local directory): errno must be read on the same
// thread right after the call, which koffi's async calls cannot do.

import { createRequire } from "node:module";
import { constants as osConstants } from "node:os";
import type * as Koffi from "koffi";

/** A bound C function (koffi's KoffiFunction, which it does not export). */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Fn = ((...args: any[]) => any) & { async: (...args: any[]) => void };

export interface Libc {
  readonly koffi: typeof Koffi;
  /** off_t lseek(int fd, off_t offset, int whence), with a 64-bit off_t. */
  readonly lseek: Fn;
  /** int posix_fadvise(int fd, off_t offset, off_t len, int advice), 64-bit off_t; returns an errno. */
  readonly posixFadvise: Fn;
  /** int sync_file_range(int fd, off64_t offset, off64_t nbytes, unsigned flags); null if absent. */
  readonly syncFileRange: Fn | null;
  /** int openat(int dirfd, const char *path, int flags, ...). */
  readonly openat: Fn;
  /** ssize_t readlinkat(int dirfd, const char *path, char *buf, size_t size). */
  readonly readlinkat: Fn;
  /** long syscall(long number, ...). */
  readonly syscall: Fn;
  /** int getsockopt(int fd, int level, int name, void *val, socklen_t *len). */
  readonly getsockopt: Fn;
  /** int close(int fd). */
  readonly close: Fn;
  /** int socket(int domain, int type, int protocol). */
  readonly socket: Fn;
  /** int bind(int fd, const struct sockaddr *addr, socklen_t len). */
  readonly bind: Fn;
  /** ssize_t sendto(int fd, const void *buf, size_t len, int flags, const struct sockaddr *addr, socklen_t len). */
  readonly sendto: Fn;
  /** ssize_t recv(int fd, void *buf, size_t len, int flags). */
  readonly recv: Fn;
  /** int dup(int fd). */
  readonly dup: Fn;
  /** void *mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off); returns a pointer (MAP_FAILED is -1). */
  readonly mmap: Fn;
  /** int munmap(void *addr, size_t len). */
  readonly munmap: Fn;
  /** int madvise(void *addr, size_t len, int advice). */
  readonly madvise: Fn;
  /** int malloc_trim(size_t pad) (glibc); null elsewhere. */
  readonly mallocTrim: Fn | null;
}

/**
 * Architectures whose Linux ABI uses the generic values of the constants
 * below (O_PATH, SOL_SOCKET, SO_PEERCRED, errno numbers): x86 and the
 * asm-generic ones. Elsewhere (mips, sparc, powerpc, alpha...) we do not
 * guess.
 */
const GENERIC_ARCH = new Set(["x64", "ia32", "arm64", "arm", "riscv64", "loong64"]);

/** Of those, the 64-bit ones (off_t is 64 bits whatever the name). */
const LP64 = new Set(["x64", "arm64", "riscv64", "loong64"]);

let cached: Libc | null | undefined;
let whyNot = "";

/** The libc bindings, or null (see libcUnavailable for why). */
export function libc(): Libc | null {
  if (cached !== undefined) return cached;
  cached = null;
  if (process.platform !== "linux") {
    whyNot = `not on Linux (${process.platform})`;
    return null;
  }
  if (!GENERIC_ARCH.has(process.arch)) {
    whyNot = `system call constants unknown for ${process.arch}`;
    return null;
  }
  let koffi: typeof Koffi;
  try {
    koffi = createRequire(import.meta.url)("koffi") as typeof Koffi;
  } catch (e) {
    whyNot = `koffi cannot be loaded: ${(e as Error).message.split("\n")[0]}`;
    return null;
  }
  try {
    // libc.so.6 is glibc's; dlopen(NULL) finds libc's symbols already in
    // node's process (musl, or a glibc under another name).
    let lib: Koffi.LibraryHandle;
    try {
      lib = koffi.load("libc.so.6");
    } catch {
      lib = koffi.load(null);
    }
    // The *64 variants take a 64-bit off_t on 32-bit systems too; on 64-bit
    // systems (and in musl, which may lack the names) the plain ones do.
    const either = (a: string, b: string, proto: (name: string) => string): Fn => {
      try {
        return lib.func(proto(a));
      } catch (e) {
        if (!LP64.has(process.arch)) throw e; // never a 32-bit off_t
        return lib.func(proto(b));
      }
    };
    let mallocTrim: Fn | null = null;
    try {
      mallocTrim = lib.func("int malloc_trim(size_t pad)");
    } catch {
      mallocTrim = null;
    }
    let syncFileRange: Fn | null = null;
    try {
      syncFileRange = lib.func("int sync_file_range(int fd, int64_t offset, int64_t nbytes, unsigned int flags)");
    } catch {
      syncFileRange = null;
    }
    cached = {
      koffi,
      lseek: either("lseek64", "lseek", (n) => `int64_t ${n}(int fd, int64_t offset, int whence)`),
      posixFadvise: either("posix_fadvise64", "posix_fadvise", (n) => `int ${n}(int fd, int64_t offset, int64_t len, int advice)`),
      syncFileRange,
      openat: lib.func("int openat(int dirfd, const char *path, int flags, ...)"),
      readlinkat: lib.func("intptr_t readlinkat(int dirfd, const char *path, void *buf, size_t size)"),
      syscall: lib.func("long syscall(long number, ...)"),
      getsockopt: lib.func("int getsockopt(int fd, int level, int name, void *val, void *len)"),
      close: lib.func("int close(int fd)"),
      socket: lib.func("int socket(int domain, int type, int protocol)"),
      bind: lib.func("int bind(int fd, const void *addr, uint32_t len)"),
      sendto: lib.func("intptr_t sendto(int fd, const void *buf, size_t len, int flags, const void *addr, uint32_t alen)"),
      recv: lib.func("intptr_t recv(int fd, void *buf, size_t len, int flags)"),
      dup: lib.func("int dup(int fd)"),
      mmap: lib.func("void *mmap(void *addr, size_t len, int prot, int flags, int fd, int64_t off)"),
      munmap: lib.func("int munmap(void *addr, size_t len)"),
      madvise: lib.func("int madvise(void *addr, size_t len, int advice)"),
      mallocTrim,
    };
  } catch (e) {
    whyNot = `libc functions cannot be bound: ${(e as Error).message.split("\n")[0]}`;
    cached = null;
  }
  return cached;
}

/** Why libc() is null ("" if it is not, or was not tried yet). */
export function libcUnavailable(): string {
  libc();
  return whyNot;
}

/** errno after the last call (call right after it). */
export function errno(l: Libc): number {
  return l.koffi.errno();
}

const ERRNO_NAMES = new Map<number, string>(
  Object.entries(osConstants.errno).map(([name, n]) => [n, name] as [number, string]),
);

/** The name of an errno value ("ENXIO"), or "E<n>" if unknown. */
export function errnoName(n: number): string {
  return ERRNO_NAMES.get(n) ?? `E${n}`;
}

/** An Error like Node's own system errors: .code is the errno name, .errno the number. */
export function sysError(call: string, n: number, detail?: string): NodeJS.ErrnoException {
  const code = errnoName(n);
  const e = new Error(`${call}: ${code}${detail ? `: ${detail}` : ""}`) as NodeJS.ErrnoException;
  e.code = code;
  e.errno = -n;
  e.syscall = call;
  return e;
}

/** errno values, by name, as this system numbers them. */
export const E = osConstants.errno;
