// Who is on the other end of a socket, for preconnect (the ip filter).
// The peer of a unix socket: getsockopt(SO_PEERCRED) through koffi (what
// the kernel recorded at connect). Where koffi is unavailable, the older
// way: `ss -xpn` (our socket's inode -> the peer row's pid), uid/gid from
// /proc/PID/status. Looked up only when a filter asks.

import { execFile } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import type { Duplex } from "node:stream";
import type { PeerInfo } from "../backend/types.js";
import { canReadPeerCredentials, peerCredentials } from "../sys/peercred.js";

export function peerOf(socket: Duplex): PeerInfo {
  if (!(socket instanceof net.Socket)) return { family: "stdio" };
  const address = socket.remoteAddress;
  if (address) {
    const v4 = net.isIPv4(address) || address.startsWith("::ffff:") && net.isIPv4(address.slice(7));
    return { family: v4 ? "ipv4" : "ipv6", address: address.startsWith("::ffff:") && v4 ? address.slice(7) : address, port: socket.remotePort };
  }
  let cached: Promise<{ pid: number; uid: number; gid: number } | null> | null = null;
  return { family: "unix", credentials: () => (cached ??= unixPeerCredentials(socket)) };
}

async function unixPeerCredentials(socket: net.Socket): Promise<{ pid: number; uid: number; gid: number } | null> {
  const fd = (socket as unknown as { _handle?: { fd?: number } })._handle?.fd;
  if (fd === undefined || fd < 0) return null;
  if (canReadPeerCredentials()) {
    try {
      return peerCredentials(fd);
    } catch {
      return null;
    }
  }
  return viaSs(fd);
}

async function viaSs(fd: number): Promise<{ pid: number; uid: number; gid: number } | null> {
  let inode: string;
  try {
    inode = /socket:\[(\d+)\]/.exec(fs.readlinkSync(`/proc/self/fd/${fd}`))?.[1] ?? "";
  } catch {
    return null;
  }
  if (!inode) return null;
  const out = await new Promise<string>((resolve) => {
    execFile("ss", ["-xpnH"], { timeout: 5000, maxBuffer: 16 * 1024 * 1024 }, (err, stdout) => resolve(err ? "" : stdout));
  });
  // Row of the peer: "... LOCAL_INODE * PEER_INODE users:(("prog",pid=N,fd=M))" with PEER_INODE = ours.
  for (const line of out.split("\n")) {
    const m = /\s(\d+)\s+\S+\s+(\d+)\s+users:\(\("[^"]*",pid=(\d+)/.exec(line);
    if (m && m[2] === inode && m[1] !== inode) {
      const pid = Number(m[3]);
      try {
        const status = fs.readFileSync(`/proc/${pid}/status`, "utf8");
        const uid = Number(/^Uid:\s+(\d+)/m.exec(status)?.[1]);
        const gid = Number(/^Gid:\s+(\d+)/m.exec(status)?.[1]);
        return { pid, uid, gid };
      } catch {
        return null;
      }
    }
  }
  return null;
}
