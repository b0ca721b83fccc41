// The script protocol's methods from thread_model on, shared by the sh and
// eval plugins (nbdkit-sh-plugin(3), "Methods"): arguments exactly as
// nbdkit passes them, each missing method (status 2) nbdkit's default.

import { NbdError } from "../../backend/types.js";
import type { ConnectionInfo, ExportEntry, ListParams, Plugin, ServerServices } from "../../backend/types.js";
import { NBD_EINVAL, NBD_EIO, NBD_ENOTSUP, NBD_EOVERFLOW } from "../../protocol/constants.js";
import { parseSize } from "../../backend/size.js";
import { unexpectedFalse, type CallOptions, type ScriptHost, type ShHandle } from "./host.js";
import {
  chomp, flagsString, parseBlockSize, parseDefaultExport, parseExports, parseExtents, parseMode, parseThreadModel,
} from "./parse.js";
import * as S from "./status.js";

type Callbacks = Omit<Plugin<ShHandle>, "name" | "config" | "configComplete" | "magicConfigKey" | "load">;

const bool = (b: boolean) => (b ? "true" : "false");

/**
 * nbdkit sends ENOTSUP only for a fast zero and EOVERFLOW only for a read
 * with DF (which scripts never see), EINVAL otherwise: a script's error on
 * a data request is mapped alike.
 */
function onWire(e: unknown, keepNotsup = false): never {
  if (e instanceof NbdError && ((e.errno === NBD_ENOTSUP && !keepNotsup) || e.errno === NBD_EOVERFLOW)) {
    throw new NbdError(NBD_EINVAL, e.message);
  }
  throw e;
}

/** Call a method whose status 3 is an error: its stdout (status 0) or null (2, missing). */
export async function callText(host: ScriptHost, method: string, args: readonly string[], o?: CallOptions): Promise<Buffer | null> {
  const r = await host.call(method, args, o);
  if (r.status === S.FALSE) throw unexpectedFalse(host.who(method), method);
  return r.status === S.OK ? r.stdout : null;
}

export function scriptMethods(host: ScriptHost): Callbacks & { threadModel(): Promise<void> } {
  const who = (m: string) => host.who(m);
  const text = (method: string, args: readonly string[], o?: CallOptions) => callText(host, method, args, o);

  /** A question: 0 is true, 3 false, 2 (missing) the default. */
  async function ask<D>(method: string, h: ShHandle, def: D): Promise<boolean | D> {
    const r = await host.call(method, [h.id], { handle: h });
    return r.status === S.OK ? true : r.status === S.FALSE ? false : def;
  }

  async function canFlush(h: ShHandle): Promise<boolean> {
    return (h.canFlush ??= await ask("can_flush", h, false));
  }
  async function scriptCanZero(h: ShHandle): Promise<boolean> {
    return (h.canZero ??= await ask("can_zero", h, false));
  }

  async function defaultExport(p: ListParams): Promise<string> {
    const out = await text("default_export", [bool(p.readonly), bool(p.tls)]);
    return out === null ? "" : parseDefaultExport(out.toString("utf8"));
  }

  return {
    /** Asked after config_complete, as nbdkit does; without the method the safe serialize_all_requests. */
    async threadModel() {
      const out = await text("thread_model", []);
      host.threadModel = out === null ? "serialize_all_requests" : parseThreadModel(out.toString("utf8"));
    },

    dumpPlugin: () => host.dumpPlugin(),

    async getReady() {
      await text("get_ready", []);
    },

    async afterFork(services: ServerServices) {
      host.afterFork(services);
      await text("after_fork", []);
    },

    async unload() {
      // Errors are ignored, as nbdkit does; then $tmpdir goes.
      try {
        await host.call("unload", []);
      } catch {
        /* ignored */
      }
      host.removeTmpdir();
    },

    async preconnect(readonly: boolean) {
      await text("preconnect", [bool(readonly)]);
    },

    async listExports(p: ListParams): Promise<ExportEntry[]> {
      const out = await text("list_exports", [bool(p.readonly), bool(p.tls)]);
      if (out === null) return [{ name: await defaultExport(p) }];
      return parseExports(out.toString("utf8"));
    },

    defaultExport,

    async open(readonly: boolean, exportName: string, tls: boolean, conn?: ConnectionInfo): Promise<ShHandle> {
      // An NBD string holds no NUL, so this can only be a bug upstream; argv could not carry it.
      if (exportName.includes("\0")) throw new NbdError(NBD_EINVAL, "sh: export name contains NUL");
      const release = host.threadModel === "serialize_connections" ? await host.connections.acquire() : null;
      try {
        const out = await text("open", [bool(readonly), exportName, bool(tls)], { conn });
        // The handle is any string less one final newline; as a C string it ends at a NUL.
        let id = out === null ? "" : chomp(out.toString("utf8"));
        const nul = id.indexOf("\0");
        if (nul >= 0) id = id.slice(0, nul);
        return { id, conn, serial: host.handleSerial(), release };
      } catch (e) {
        release?.();
        throw e;
      }
    },

    async close(h: ShHandle) {
      try {
        await host.call("close", [h.id], { handle: h });
      } catch {
        /* ignored, as nbdkit does */
      } finally {
        h.release?.();
        h.release = null;
      }
    },

    async exportDescription(h: ShHandle) {
      const out = await text("export_description", [h.id], { handle: h });
      return out === null ? null : chomp(out.toString("utf8"));
    },

    async getSize(h: ShHandle) {
      const out = await text("get_size", [h.id], { handle: h });
      if (out === null) throw new NbdError(NBD_EIO, `${who("get_size")}: the get_size method is required`);
      const s = chomp(out.toString("utf8"));
      try {
        return parseSize(s);
      } catch {
        throw new NbdError(NBD_EIO, `${who("get_size")}: could not parse output from get_size method: ${s}`);
      }
    },

    async blockSize(h: ShHandle) {
      const out = await text("block_size", [h.id], { handle: h });
      return out === null ? null : parseBlockSize(who("block_size"), out.toString("utf8"));
    },

    canWrite: (h) => ask("can_write", h, false),
    canFlush,
    isRotational: (h) => ask("is_rotational", h, false),
    canTrim: (h) => ask("can_trim", h, false),
    // nbdkit emulates zeroing with pwrite when the script's can_zero is
    // false (or missing): WRITE_ZEROES is offered either way.
    async canZero(h) {
      await scriptCanZero(h);
      return true;
    },
    async canFastZero(h) {
      const r = await ask("can_fast_zero", h, null);
      // Missing: fast zero can be promised when zero is emulated (it fails at once).
      return r ?? !(await scriptCanZero(h));
    },
    canExtents: (h) => ask("can_extents", h, false),
    async canFua(h) {
      const out = await text("can_fua", [h.id], { handle: h });
      if (out !== null) return parseMode(who("can_fua"), "can_fua", out.toString("utf8"));
      return (await canFlush(h)) ? "emulate" : "none";
    },
    canMultiConn: (h) => ask("can_multi_conn", h, false),
    async canCache(h) {
      const out = await text("can_cache", [h.id], { handle: h });
      return out === null ? "none" : parseMode(who("can_cache"), "can_cache", out.toString("utf8"));
    },

    async pread(h, buf, offset) {
      const count = buf.length;
      let r;
      try {
        r = await host.call("pread", [h.id, String(count), String(offset)], { handle: h, into: buf });
      } catch (e) {
        onWire(e);
      }
      const w = who("pread");
      if (r.status === S.MISSING) throw new NbdError(NBD_EIO, `${w}: the pread method is required`);
      if (r.status === S.FALSE) throw unexpectedFalse(w, "pread");
      if (r.length !== count) {
        throw new NbdError(NBD_EIO, `${w}: incorrect amount of data read: expecting ${count} bytes but received ${r.length} bytes from the script`);
      }
    },

    async pwrite(h, buf, offset, flags) {
      const out = await text("pwrite", [h.id, String(buf.length), String(offset), flagsString(flags)], { handle: h, input: buf }).catch(onWire);
      if (out === null) throw new NbdError(NBD_EIO, `${who("pwrite")}: pwrite not implemented`);
    },

    async flush(h) {
      await text("flush", [h.id], { handle: h }).catch(onWire);
    },

    async trim(h, count, offset, flags) {
      await text("trim", [h.id, String(count), String(offset), flagsString(flags)], { handle: h }).catch(onWire);
    },

    async zero(h, count, offset, flags) {
      // ENOTSUP makes the server fall back to pwrite (or fail a fast zero).
      if (!(await scriptCanZero(h))) throw new NbdError(NBD_ENOTSUP, "zero is emulated with pwrite");
      const out = await text("zero", [h.id, String(count), String(offset), flagsString(flags)], { handle: h }).catch((e) => onWire(e, true));
      if (out === null) throw new NbdError(NBD_ENOTSUP, `${who("zero")}: zero falling back to pwrite`);
    },

    async extents(h, count, offset, flags) {
      const out = await text("extents", [h.id, String(count), String(offset), flagsString(flags)], { handle: h }).catch(onWire);
      const w = who("extents");
      if (out === null) throw new NbdError(NBD_EIO, `${w}: can_extents returned true, but extents method is not defined`);
      return parseExtents(w, out.toString("utf8"), offset, count);
    },

    async cache(h, count, offset) {
      await text("cache", [h.id, String(count), String(offset)], { handle: h }).catch(onWire);
    },
  };
}
