// Unix datagram sockets (what /dev/log is), which Node.js core does not
// offer: socket(2), bind(2), sendto(2) and recv(2) through koffi. Every
// call is non-blocking (SOCK_NONBLOCK, MSG_DONTWAIT), so the event loop
// never waits on a full syslog daemon: a send that cannot be made at once
// fails with EAGAIN and the caller decides (the log sink falls back).

import { endianness } from "node:os";
import { E, errno, libc, libcUnavailable, sysError } from "./libc.js";

const AF_UNIX = 1;
const SOCK_DGRAM = 2;
const SOCK_NONBLOCK = 0o4000;
const SOCK_CLOEXEC = 0o2000000;
const MSG_DONTWAIT = 0x40;
/** No SIGPIPE if the reader went away. */
const MSG_NOSIGNAL = 0x4000;
/** sizeof(struct sockaddr_un): sa_family_t (2 bytes) + sun_path[108]. */
const SOCKADDR_UN = 110;

/** struct sockaddr_un for PATH (NUL-terminated; sun_path holds 107 bytes and the NUL). */
function sockaddr(path: string): Buffer {
  const name = Buffer.from(path, "utf8");
  if (name.length > SOCKADDR_UN - 3) throw new Error(`${path}: unix socket path longer than 107 bytes`);
  const sa = Buffer.alloc(SOCKADDR_UN);
  if (endianness() === "LE") sa.writeUInt16LE(AF_UNIX, 0);
  else sa.writeUInt16BE(AF_UNIX, 0);
  name.copy(sa, 2);
  return sa;
}

export class UnixDgramSocket {
  private fd: number;

  /** A new unbound datagram socket; throws where libc cannot be reached. */
  constructor() {
    const l = libc();
    if (!l) throw new Error(libcUnavailable());
    const fd = l.socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0) as number;
    if (fd < 0) throw sysError("socket", errno(l));
    this.fd = fd;
  }

  private lib() {
    const l = libc();
    if (!l || this.fd < 0) throw new Error("unix datagram socket is closed");
    return l;
  }

  /** Take datagrams sent to PATH (the receiving side, as a syslog daemon). */
  bind(path: string): void {
    const l = this.lib();
    const sa = sockaddr(path);
    if ((l.bind(this.fd, sa, sa.length) as number) < 0) throw sysError("bind", errno(l), path);
  }

  /** Send one datagram to PATH at once, or throw (ENOENT, ECONNREFUSED, EAGAIN...). */
  sendTo(msg: Buffer, path: string): void {
    const l = this.lib();
    const sa = sockaddr(path);
    const n = Number(l.sendto(this.fd, msg, msg.length, MSG_DONTWAIT | MSG_NOSIGNAL, sa, sa.length));
    if (n < 0) throw sysError("sendto", errno(l), path);
  }

  /** The next datagram waiting, or null if none is (never blocks). */
  receive(max = 65536): Buffer | null {
    const l = this.lib();
    const buf = Buffer.alloc(max);
    const n = Number(l.recv(this.fd, buf, max, MSG_DONTWAIT));
    if (n >= 0) return buf.subarray(0, n);
    const e = errno(l);
    if (e === E.EAGAIN) return null;
    throw sysError("recv", e);
  }

  close(): void {
    const l = libc();
    if (l && this.fd >= 0) l.close(this.fd);
    this.fd = -1;
  }
}
