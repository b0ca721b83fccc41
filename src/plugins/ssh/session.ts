// One SSH connection with its SFTP channel and the remote file open on it,
// through the ssh2 package. Large reads and writes are cut into pieces
// sent at once (SFTP answers them in order, so the pipe stays full), and a
// short read is asked again for the rest.

import ssh2, { type ConnectConfig, type SFTPWrapper } from "ssh2";

const { Client } = ssh2;
type Client = InstanceType<typeof Client>;

export interface SessionOptions {
  connect: ConnectConfig;
  path: string;
  readonly: boolean;
  /** create=true: make (or truncate) the file with this size and mode first. */
  create?: { size: number; mode: number };
}

/** Bytes per SFTP READ/WRITE request (OpenSSH accepts up to 255 KiB; 64 KiB is safe everywhere). */
const PIECE = 64 * 1024;

export class SshSession {
  private dead: Error | undefined;

  private constructor(
    private readonly conn: Client,
    private readonly sftp: SFTPWrapper,
    private readonly handle: Buffer,
    readonly size: number,
    readonly readonly: boolean,
    readonly canFsync: boolean,
    private readonly path: string,
  ) {
    const gone = (e?: Error) => {
      this.dead ??= e ?? new Error("the SSH connection closed");
    };
    conn.on("error", gone);
    conn.on("close", () => gone());
  }

  static async open(o: SessionOptions): Promise<SshSession> {
    const conn = new Client();
    try {
      await new Promise<void>((resolve, reject) => {
        conn.once("ready", () => resolve());
        conn.once("error", reject);
        conn.once("close", () => reject(new Error("the server closed the connection during authentication")));
        conn.connect(o.connect);
      });
      conn.on("error", () => {});
      const sftp = await new Promise<SFTPWrapper>((res, rej) => conn.sftp((e, s) => (e ? rej(e) : res(s))));
      if (o.create) {
        const h = await call<Buffer>((cb) => sftp.open(o.path, "w", { mode: o.create!.mode }, cb), `create ${o.path}`);
        await call((cb) => sftp.fsetstat(h, { size: o.create!.size }, cb), `set the size of ${o.path}`);
        await call((cb) => sftp.close(h, cb), `close ${o.path}`);
      }
      let readonly = o.readonly;
      let handle: Buffer;
      try {
        handle = await call<Buffer>((cb) => sftp.open(o.path, readonly ? "r" : "r+", cb), `open ${o.path}`);
      } catch (e) {
        // A file we may read but not write is served read-only (as the file plugin does).
        if (readonly || (e as { code?: number }).code !== 3 /* SSH_FX_PERMISSION_DENIED */) throw e;
        readonly = true;
        handle = await call<Buffer>((cb) => sftp.open(o.path, "r", cb), `open ${o.path}`);
      }
      const st = await call<{ size?: number }>((cb) => sftp.fstat(handle, cb), `stat ${o.path}`);
      const ext = (sftp as unknown as { _extensions?: Record<string, string> })._extensions ?? {};
      return new SshSession(conn, sftp, handle, st.size ?? 0, readonly, "fsync@openssh.com" in ext, o.path);
    } catch (e) {
      conn.end();
      throw e;
    }
  }

  private check(): void {
    if (this.dead) throw new Error(`${this.path}: ${this.dead.message}`);
  }

  async read(buf: Buffer, offset: number): Promise<void> {
    this.check();
    const jobs: Promise<void>[] = [];
    for (let at = 0; at < buf.length; at += PIECE) jobs.push(this.readPiece(buf, at, Math.min(PIECE, buf.length - at), offset + at));
    await Promise.all(jobs);
  }

  private async readPiece(buf: Buffer, at: number, len: number, pos: number): Promise<void> {
    while (len > 0) {
      const n = await call<number>((cb) => this.sftp.read(this.handle, buf, at, len, pos, cb), `read ${this.path}`);
      if (n === 0) {
        // Past the end of the file (it shrank): the rest reads as zeros, as the file plugin does.
        buf.fill(0, at, at + len);
        return;
      }
      at += n;
      pos += n;
      len -= n;
    }
  }

  async write(buf: Buffer, offset: number): Promise<void> {
    this.check();
    const jobs: Promise<void>[] = [];
    for (let at = 0; at < buf.length; at += PIECE) {
      const len = Math.min(PIECE, buf.length - at);
      jobs.push(call((cb) => this.sftp.write(this.handle, buf, at, len, offset + at, cb), `write ${this.path}`));
    }
    await Promise.all(jobs);
  }

  async fsync(): Promise<void> {
    this.check();
    await call((cb) => this.sftp.ext_openssh_fsync(this.handle, cb), `fsync ${this.path}`);
  }

  async close(): Promise<void> {
    if (!this.dead) await call((cb) => this.sftp.close(this.handle, cb), "close").catch(() => {});
    this.conn.end();
  }
}

/** An ssh2 callback call as a promise; failures name the operation. */
function call<T = void>(fn: (cb: (err: Error | null | undefined, v?: T) => void) => void, what: string): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    try {
      fn((err, v) => {
        if (err) {
          const e = new Error(`${what}: ${err.message}`) as Error & { code?: unknown };
          e.code = (err as Error & { code?: unknown }).code;
          reject(e);
        } else resolve(v as T);
      });
    } catch (e) {
      reject(new Error(`${what}: ${(e as Error).message}`));
    }
  });
}

