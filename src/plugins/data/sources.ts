// <FILE and <(SCRIPT) for the data format: their bytes, or a slice of them
// read without reading further than its end (so </dev/urandom[:512] and
// an endless script sliced with [:N] terminate). A slice that asks for
// more bytes than there are is an error, as for any other expression.

import { spawn } from "node:child_process";
import { open } from "node:fs/promises";
import { Image } from "./image.js";
import { DataFormatError } from "./parse.js";
import { fromImage, type Piece } from "./pieces.js";

/** Output beyond this is collected into a sparse image instead of one Buffer. */
const BUFFER_LIMIT = 64 << 20;
const READ_CHUNK = 1 << 20;

/** Collects a byte stream, skipping the first `from` bytes, up to `to` bytes. */
class Collector {
  private chunks: Buffer[] = [];
  private held = 0;
  private img: Image | null = null;
  /** Bytes of the stream seen so far (including skipped ones). */
  seen = 0;

  constructor(
    private from: number,
    private to: number | undefined,
  ) {}

  /** Whether the slice is complete (nothing more is needed). */
  get full(): boolean {
    return this.to !== undefined && this.seen >= this.to;
  }

  /** How many more bytes are wanted (Infinity without an end). */
  get wanted(): number {
    return this.to === undefined ? Infinity : this.to - this.seen;
  }

  add(b: Buffer): void {
    const start = Math.max(0, this.from - this.seen);
    const end = this.to === undefined ? b.length : Math.min(b.length, this.to - this.seen);
    this.seen += b.length;
    if (end <= start) return;
    const part = b.subarray(start, end);
    if (this.img) {
      this.img.write(part, this.img.size);
      this.img.size += part.length;
      return;
    }
    this.chunks.push(Buffer.from(part));
    this.held += part.length;
    if (this.held > BUFFER_LIMIT) {
      this.img = new Image();
      for (const c of this.chunks) {
        this.img.write(c, this.img.size);
        this.img.size += c.length;
      }
      this.chunks = [];
    }
  }

  /** The collected bytes; `what` names the source in a short-slice error. */
  result(what: string): Piece {
    const total = this.seen;
    if (this.from > total || (this.to !== undefined && this.to > total)) {
      throw new DataFormatError(
        `${what}[${this.from}:${this.to ?? ""}] does not describe a valid slice: there are only ${total} bytes`,
      );
    }
    if (this.img) return fromImage(this.img);
    return { k: "bytes", b: this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks) };
  }
}

/** The bytes of a file, or of [from, to) of it. */
export async function readFileSlice(path: string, from = 0, to?: number): Promise<Piece> {
  const what = `<${path}`;
  let fh;
  try {
    fh = await open(path, "r");
  } catch (e) {
    throw new DataFormatError(`${what}: ${(e as Error).message}`);
  }
  try {
    const st = await fh.stat();
    const c = new Collector(from, to);
    // Regular files are read from `from` on; devices and pipes are read
    // from the start and the head skipped.
    let pos: number | null = null;
    if (st.isFile()) c.seen = pos = Math.min(from, st.size);
    const buf = Buffer.alloc(READ_CHUNK);
    while (!c.full) {
      const want = Math.min(READ_CHUNK, c.wanted);
      const { bytesRead } = await fh.read(buf, 0, want, pos);
      if (bytesRead === 0) break;
      c.add(buf.subarray(0, bytesRead));
      if (pos !== null) pos += bytesRead;
    }
    return c.result(what);
  } catch (e) {
    if (e instanceof DataFormatError) throw e;
    throw new DataFormatError(`${what}: ${(e as Error).message}`);
  } finally {
    await fh.close();
  }
}

/** A short form of a script for messages. */
function scriptName(script: string): string {
  const one = script.replace(/\s+/g, " ").trim();
  return `<(${one.length > 40 ? one.slice(0, 37) + "..." : one})`;
}

/**
 * The output of `/bin/sh -c SCRIPT` (the user's own command line, as
 * nbdkit runs it with popen), or [from, to) of it. Without an end the
 * script must exit with status 0; with one, the script is stopped once the
 * slice is read, so its status does not matter (nbdkit ignores it too).
 */
export function runScriptSlice(script: string, from = 0, to?: number): Promise<Piece> {
  const what = scriptName(script);
  return new Promise((resolve, reject) => {
    const c = new Collector(from, to);
    const child = spawn("/bin/sh", ["-c", script], { stdio: ["ignore", "pipe", "inherit"] });
    let failed: Error | null = null;
    let stopped = false;
    child.on("error", (e) => (failed = new DataFormatError(`${what}: ${e.message}`)));
    child.stdout.on("data", (b: Buffer) => {
      if (stopped) return;
      c.add(b);
      if (c.full) {
        stopped = true;
        child.stdout.destroy();
        child.kill("SIGTERM");
        // A script that ignores SIGTERM is not waited for forever.
        const t = setTimeout(() => child.kill("SIGKILL"), 2000);
        child.once("exit", () => clearTimeout(t));
      }
    });
    child.on("close", (code, signal) => {
      if (failed) return reject(failed);
      if (!stopped && (code !== 0 || signal !== null) && to === undefined) {
        const how = signal !== null ? `killed by ${signal}` : `exit status ${code}`;
        return reject(new DataFormatError(`${what}: the command failed (${how})`));
      }
      try {
        resolve(c.result(what));
      } catch (e) {
        if (!stopped && (code !== 0 || signal !== null)) {
          const how = signal !== null ? `killed by ${signal}` : `exit status ${code}`;
          (e as Error).message += ` (the command failed: ${how})`;
        }
        reject(e);
      }
    });
  });
}
