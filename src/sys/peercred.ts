// getsockopt(SO_PEERCRED): the process on the other end of a unix socket,
// as the kernel recorded it when that process connected.

import { endianness } from "node:os";
import { E, errno, libc, sysError } from "./libc.js";

const SOL_SOCKET = 1;
const SO_PEERCRED = 17;
const UCRED_SIZE = 12; // struct ucred { pid_t pid; uid_t uid; gid_t gid; }

export interface PeerCredentials {
  pid: number;
  uid: number;
  gid: number;
}

/** Whether peerCredentials can be called here (koffi and libc on Linux). */
export function canReadPeerCredentials(): boolean {
  return libc() !== null;
}

/** SO_PEERCRED of the unix socket open at fd. Throws (with .code) on failure. */
export function peerCredentials(fd: number): PeerCredentials {
  const l = libc();
  if (l === null) throw sysError("getsockopt", E.ENOSYS, "koffi is not available");
  const val = Buffer.alloc(UCRED_SIZE);
  const len = Buffer.alloc(4);
  const le = endianness() === "LE";
  if (le) len.writeUInt32LE(UCRED_SIZE);
  else len.writeUInt32BE(UCRED_SIZE);
  if ((l.getsockopt(fd, SOL_SOCKET, SO_PEERCRED, val, len) as number) !== 0) {
    throw sysError("getsockopt SO_PEERCRED", errno(l));
  }
  const got = le ? len.readUInt32LE() : len.readUInt32BE();
  if (got < UCRED_SIZE) throw sysError("getsockopt SO_PEERCRED", E.EINVAL, `short answer (${got} bytes)`);
  const int = (off: number) => (le ? val.readInt32LE(off) : val.readInt32BE(off));
  const uint = (off: number) => (le ? val.readUInt32LE(off) : val.readUInt32BE(off));
  return { pid: int(0), uid: uint(4), gid: uint(8) };
}
