// Running python3-libnbd scripts (/usr/bin/python3: the distribution's
// Python, which is where `import nbd` works) against a server.
import { PYTHON } from "./tools.js";
import { run, type RunResult } from "./server.js";

/**
 * Prepended to every script: imports, the URI in URI (argv[1]), and small
 * helpers. Scripts print "OK" as their last line when every assertion held.
 */
export const PRELUDE = String.raw`
import errno, os, sys
import nbd

URI = sys.argv[1]
EXTRA = sys.argv[2:]

def connect(uri=None, structured=True, meta=True, strict=False):
    """Connect with base:allocation requested; strict mode off so that bad
    requests reach the server instead of being refused by libnbd."""
    h = nbd.NBD()
    if meta:
        h.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
    if not structured:
        h.set_request_structured_replies(False)
    h.connect_uri(uri or URI)
    if not strict:
        h.set_strict_mode(0)
    return h

def expect_err(want, fn, *args):
    """fn(*args) must fail with errno 'want' (an int or a tuple of ints)."""
    wants = want if isinstance(want, tuple) else (want,)
    try:
        fn(*args)
    except nbd.Error as e:
        assert e.errnum in wants, "expected %s, got errno %s: %s" % (
            "/".join(errno.errorcode[w] for w in wants), e.errnum, e.string)
        return e
    raise AssertionError("expected %s, but the call succeeded" % "/".join(errno.errorcode[w] for w in wants))

def _short(v):
    r = repr(v)
    return r if len(r) <= 200 else r[:200] + "...(%d chars)" % len(r)

def eq(got, want, what=""):
    assert got == want, "%s: got %s, want %s" % (what, _short(got), _short(want))

def extents(h, count, offset, flags=0):
    """base:allocation extents as a list of (offset, length, flags)."""
    out = []
    def cb(ctx, off, entries, err):
        if ctx == nbd.CONTEXT_BASE_ALLOCATION:
            pos = off
            for i in range(0, len(entries), 2):
                out.append((pos, entries[i], entries[i + 1]))
                pos += entries[i]
        return 0
    h.block_status(count, offset, cb, flags)
    return out

def wait_all(h, cookies):
    """Poll until every aio command in cookies has completed (and retire them)."""
    pending = set(cookies)
    while pending:
        for c in list(pending):
            if h.aio_command_completed(c):
                pending.discard(c)
        if pending:
            h.poll(-1)

def pattern(offset, length):
    """The pattern plugin's bytes: each 8-byte big-endian word is its offset."""
    start = offset - offset % 8
    words = (offset + length - start + 7) // 8
    b = b"".join((start + 8 * i).to_bytes(8, "big") for i in range(words))
    return b[offset - start: offset - start + length]
`;

/** Run PRELUDE + script with argv [URI, ...extra]. */
export function runPython(script: string, uri: string, extra: string[] = [], timeoutMs = 60_000): Promise<RunResult> {
  return run(PYTHON, ["-c", PRELUDE + "\n" + script, uri, ...extra], { timeoutMs });
}

/** runPython, and throw (with the traceback) unless it exits 0 having printed OK. */
export async function pythonOk(script: string, uri: string, extra: string[] = [], timeoutMs = 60_000): Promise<RunResult> {
  const r = await runPython(script, uri, extra, timeoutMs);
  if (r.code !== 0 || !/^OK$/m.test(r.stdout)) {
    throw new Error(
      `python3-libnbd script failed (code ${r.code}, signal ${r.signal}${r.timedOut ? ", timed out" : ""})\n` +
        `stdout:\n${r.stdout}\nstderr:\n${r.stderr}`,
    );
  }
  return r;
}

/** Environment for nbdsh, a shell script that runs `python3 -m nbd`: Debian's python3 first on PATH. */
export function nbdshEnv(): NodeJS.ProcessEnv {
  return { ...process.env, PATH: `/usr/bin:${process.env.PATH ?? "/bin"}` };
}
