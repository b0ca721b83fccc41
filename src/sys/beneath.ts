// Open a path beneath a directory so that no component can lead out of
// it, even while other processes swap directories and symlinks around.
//
// openat(2) with O_NOFOLLOW only refuses a symlink as the LAST component;
// a directory earlier in the path can be replaced by a symlink to anywhere
// between a check and the open. Here resolution is done either by the
// kernel, openat2(2) with RESOLVE_BENEATH (Linux >= 5.6), or, where that is
// missing or refuses an absolute symlink, by walking the path one component
// at a time from file descriptors we hold, never letting the kernel follow
// a symlink or a "..".

import { fstatSync } from "node:fs";
import { constants as C } from "node:fs";
import { endianness } from "node:os";
import { E, errno, libc, sysError, type Libc } from "./libc.js";

/** Not in Node's fs.constants; the values of x86 and the generic Linux ABI (see libc.ts). */
export const O_PATH = 0o10000000;
export const O_CLOEXEC = 0o2000000;
const AT_FDCWD = -100;
const SYS_OPENAT2 = 437;
const RESOLVE_NO_MAGICLINKS = 0x02;
const RESOLVE_BENEATH = 0x08;
/** As the kernel's MAXSYMLINKS. */
const MAX_SYMLINKS = 40;

let openat2Works: boolean | undefined;

function openat2(l: Libc, dirfd: number, path: string, flags: number, resolve: number): number {
  const how = Buffer.alloc(24); // struct open_how { u64 flags, mode, resolve }
  const le = endianness() === "LE";
  (le ? how.writeBigUInt64LE : how.writeBigUInt64BE).call(how, BigInt(flags >>> 0), 0);
  (le ? how.writeBigUInt64LE : how.writeBigUInt64BE).call(how, BigInt(resolve), 16);
  return Number(l.syscall(SYS_OPENAT2, "int", dirfd, "const char *", path, "void *", how, "size_t", 24));
}

/** Whether openat2 can be used: a harmless probe, once (ENOSYS, or EPERM from a seccomp filter: no). */
function haveOpenat2(l: Libc): boolean {
  if (openat2Works === undefined) {
    if (process.arch !== "x64" && process.arch !== "arm64") {
      openat2Works = false; // 437 is its number on these two; elsewhere we walk
    } else {
      const fd = openat2(l, AT_FDCWD, "/", O_PATH | O_CLOEXEC | C.O_DIRECTORY, 0);
      openat2Works = fd >= 0;
      if (fd >= 0) l.close(fd);
    }
  }
  return openat2Works;
}

export interface BeneathOptions {
  /** Skip openat2 and walk (to test the walk where openat2 exists). */
  walkOnly?: boolean;
}

/** Whether openBeneath can be used at all (koffi and libc reachable). */
export function canOpenBeneath(): boolean {
  return libc() !== null;
}

/**
 * Open `path` (relative) beneath the directory open at `dirfd`, whose
 * canonical absolute path is `dirPath`, with open(2) `flags` (O_CLOEXEC,
 * O_NOCTTY and, for the final component, O_NOFOLLOW are added). Symlinks
 * are followed as long as every step stays beneath the directory: relative
 * ones, and absolute ones naming a path inside `dirPath`. A ".." above the
 * directory, or a symlink out of it, fails with EXDEV. Returns the new fd
 * (the caller closes it) or throws an Error with .code as Node's.
 */
export function openBeneath(dirfd: number, dirPath: string, path: string, flags: number, opts: BeneathOptions = {}): number {
  const l = libc();
  if (l === null) throw sysError("openat", E.ENOSYS, "koffi is not available");
  // openat2 refuses O_PATH with anything but O_CLOEXEC/O_DIRECTORY/O_NOFOLLOW.
  const all = flags & O_PATH ? flags | O_CLOEXEC : flags | O_CLOEXEC | C.O_NOCTTY;
  if (!opts.walkOnly && haveOpenat2(l)) {
    for (let attempt = 0; attempt < 8; attempt++) {
      const fd = openat2(l, dirfd, path, all, RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS);
      if (fd >= 0) return fd;
      const n = errno(l);
      // EAGAIN: a concurrent rename made the kernel unsure about a ".."; retry.
      if (n === E.EAGAIN) continue;
      // EXDEV also covers an absolute symlink, even one back into the
      // directory: let the walk decide that case.
      if (n === E.EXDEV) break;
      throw sysError("openat2", n);
    }
  }
  return walk(l, dirfd, dirPath, path, all);
}

function walk(l: Libc, dirfd: number, dirPath: string, path: string, flags: number): number {
  const held: number[] = []; // directories below dirfd, outermost first (we close them)
  const cur = () => (held.length > 0 ? held[held.length - 1]! : dirfd);
  const pending = path.split("/");
  let links = 0;
  const linkBuf = Buffer.alloc(4096);
  try {
    while (pending.length > 0) {
      const comp = pending.shift()!;
      if (comp === "" || comp === ".") continue;
      if (comp === "..") {
        if (held.length === 0) throw sysError("openat", E.EXDEV, "'..' above the directory");
        l.close(held.pop()!);
        continue;
      }
      // Look at the component itself, never through it.
      const fd = l.openat(cur(), comp, O_PATH | O_CLOEXEC | C.O_NOFOLLOW) as number;
      if (fd < 0) throw sysError("openat", errno(l));
      let st;
      try {
        st = fstatSync(fd);
      } catch (e) {
        l.close(fd);
        throw e;
      }
      if (st.isSymbolicLink()) {
        const n = Number(l.readlinkat(fd, "", linkBuf, linkBuf.length));
        const err = n < 0 ? errno(l) : 0;
        l.close(fd);
        if (n < 0) throw sysError("readlinkat", err);
        if (++links > MAX_SYMLINKS) throw sysError("openat", E.ELOOP);
        const target = linkBuf.toString("utf8", 0, n);
        if (target.startsWith("/")) {
          // Absolute: only a path inside the directory, resolved from it again.
          const prefix = dirPath.endsWith("/") ? dirPath : `${dirPath}/`;
          if (target !== dirPath && !target.startsWith(prefix)) throw sysError("openat", E.EXDEV, "symlink out of the directory");
          while (held.length > 0) l.close(held.pop()!);
          pending.unshift(...target.slice(prefix.length).split("/"));
        } else {
          pending.unshift(...target.split("/"));
        }
        continue;
      }
      if (pending.every((c) => c === "" || c === ".")) {
        // The last component: open it for real. O_NOFOLLOW refuses a symlink
        // swapped in since; anything else found here is still beneath.
        l.close(fd);
        const out = l.openat(cur(), comp, flags | C.O_NOFOLLOW) as number;
        if (out < 0) throw sysError("openat", errno(l));
        return out;
      }
      if (!st.isDirectory()) {
        l.close(fd);
        throw sysError("openat", E.ENOTDIR);
      }
      held.push(fd);
    }
    // The path named the directory itself (or one of its subdirectories, via "..").
    throw sysError("openat", E.EISDIR);
  } finally {
    for (const fd of held) l.close(fd);
  }
}
