// Shared contexts: one refcounted context per (layer, export, readonly),
// opened on first acquire (no earlier than afterFork) and closed at unload,
// run by the shared-handle machine (src/machines/shared-handle.ts).
//
// Each acquirer gets its own thin view whose data calls are counted as in
// flight, so closing drains them first; after the handle closes the view
// answers ESHUTDOWN instead of touching a closed handle.

import { NBD_ESHUTDOWN } from "../protocol/constants.js";
import { finalizeAndClose, openPrepared, type LayerNode, type Opened } from "./chain.js";
import { SharedHandle } from "./shared-handle.js";
import { NbdError, type Context, type OpenOptions } from "./types.js";

interface Entry {
  handle: SharedHandle<Opened>;
  key: string;
}

export class SharedContexts {
  private handles = new Map<string, Entry>();
  private views = new Map<Context, Entry>();

  /** Keys of open handles and their reference counts (for the status page). */
  describe(): { key: string; state: string; refs: number }[] {
    return [...this.handles.values()].map((e) => ({ key: e.key, state: e.handle.state, refs: e.handle.refs }));
  }

  async acquire(layer: LayerNode, o: OpenOptions): Promise<Context> {
    const readonly = o.readonly ?? false;
    const exportName = o.exportName ?? "";
    const tls = o.tls ?? false;
    // TLS is part of the key: a plugin may serve other data to TLS clients,
    // so a context opened for one must never serve a plain-text client.
    const key = `${layer.name}:${readonly ? "ro" : "rw"}${tls ? "+tls" : ""}:${exportName}`;
    let entry = this.handles.get(key);
    if (!entry) {
      const handle = new SharedHandle<Opened>({
        name: key,
        inspect: layer.inspect,
        log: (m) => layer.log(m),
        open: () => openPrepared(layer, { readonly, exportName, tls }),
        close: (opened) => finalizeAndClose(opened),
      });
      handle.afterFork();
      entry = { handle, key };
      this.handles.set(key, entry);
    }
    const opened = await entry.handle.acquire();
    const view = this.view(entry, opened.ctx);
    this.views.set(view, entry);
    return view;
  }

  owns(ctx: Context): boolean {
    return this.views.has(ctx);
  }

  async release(ctx: Context): Promise<void> {
    const entry = this.views.get(ctx);
    if (!entry) throw new Error("release of a context that is not shared (or released twice)");
    this.views.delete(ctx);
    entry.handle.release();
  }

  /** Unload: drain and close every shared handle whose layer is `layer`. */
  async unload(layer: LayerNode): Promise<void> {
    const prefix = `${layer.name}:`;
    for (const [key, e] of this.handles) {
      if (!key.startsWith(prefix)) continue;
      await e.handle.unload();
      this.handles.delete(key);
    }
  }

  private view(entry: Entry, ctx: Context): Context {
    const h = entry.handle;
    const closed = () => {
      const s = h.state;
      return s === "closed" || s === "closing";
    };
    // A rejected promise, never a synchronous throw: callers chain .then().
    const shut = () => Promise.reject(new NbdError(NBD_ESHUTDOWN, `shared context ${entry.key} is closed`));
    // Spelled out per method: no argument array or apply() per request.
    const v = Object.create(ctx) as Context & { memory: null };
    // Every call goes through the tracking below: no zero-copy side door.
    v.memory = null;
    v.pread = (b, o, f) => (closed() ? shut() : h.track(ctx.pread(b, o, f)));
    v.preadSparse = (b, o, f) => (closed() ? shut() : h.track(ctx.preadSparse(b, o, f)));
    v.pwrite = (b, o, f) => (closed() ? shut() : h.track(ctx.pwrite(b, o, f)));
    v.flush = (f) => (closed() ? shut() : h.track(ctx.flush(f)));
    v.trim = (c, o, f) => (closed() ? shut() : h.track(ctx.trim(c, o, f)));
    v.zero = (c, o, f) => (closed() ? shut() : h.track(ctx.zero(c, o, f)));
    v.extents = (c, o, f) => (closed() ? shut() : h.track(ctx.extents(c, o, f)));
    v.contextExtents = (n, c, o, f) => (closed() ? shut() : h.track(ctx.contextExtents(n, c, o, f)));
    v.cache = (c, o, f) => (closed() ? shut() : h.track(ctx.cache(c, o, f)));
    return v;
  }
}
