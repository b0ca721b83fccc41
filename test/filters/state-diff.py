# Differential test for filters: the same random sequence of requests
# against two servers running the same command line (nbdkit and nbdstate),
# comparing every reply (success or errno), and at the end every byte.
#
# Usage: state-diff.py URI_A URI_B SEED COUNT [options]
#   --ops=read,write,zero,trim,flush,cache,status,oob   which requests
#   --align=N      offsets and lengths are multiples of N (default 1)
#   --unaligned=P  with --align, a fraction P of requests is unaligned
#   --maxlen=N     longest request (default 256K)
#   --exact-status block status must be equal, not only sound
#   --conns=N      N connections to each server, requests round-robin
import random, sys
import nbd

args = [a for a in sys.argv[1:] if not a.startswith("--")]
opts = dict(a[2:].split("=", 1) if "=" in a else (a[2:], "1") for a in sys.argv[1:] if a.startswith("--"))
uri_a, uri_b, seed, count = args[0], args[1], int(args[2]), int(args[3])
ops = opts.get("ops", "read,write,write,zero,trim,flush,status,cache,oob").split(",")
align = int(opts.get("align", "1"))
unaligned = float(opts.get("unaligned", "0"))
maxlen = int(opts.get("maxlen", str(256 * 1024)))
exact = "exact-status" in opts
conns = int(opts.get("conns", "1"))
rng = random.Random(seed)

def connect(uri):
    h = nbd.NBD()
    h.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
    h.connect_uri(uri)
    h.set_strict_mode(0)  # let unaligned or out-of-range requests reach the server
    return h

A = [connect(uri_a) for _ in range(conns)]
B = [connect(uri_b) for _ in range(conns)]
size = A[0].get_size()
if B[0].get_size() != size:
    print("MISMATCH size %d vs %d" % (size, B[0].get_size()))
    sys.exit(1)

def outcome(fn):
    try:
        r = fn()
        return ("ok", bytes(r) if isinstance(r, (bytes, bytearray)) else r)
    except nbd.Error as e:
        return ("err", e.errnum)

def extents(h, length, offset):
    out = []
    def cb(meta, off, ents, err):
        if meta == nbd.CONTEXT_BASE_ALLOCATION:
            out.extend(ents)
        return 0
    h.block_status(length, offset, cb)
    return out

def pick():
    a = align if rng.random() >= unaligned else 1
    off = rng.randrange(0, size // a) * a
    ln = rng.randrange(1, max(1, min(maxlen, size - off) // a) + 1) * a
    return off, ln

for i in range(count):
    op = rng.choice(ops)
    off, ln = pick()
    fua = nbd.CMD_FLAG_FUA if rng.random() < 0.3 else 0
    k = i % conns
    if op == "read":
        f = lambda h: h.pread(ln, off)
    elif op == "write":
        data = rng.randbytes(ln) if rng.random() < 0.7 else bytes(ln)
        f = lambda h: h.pwrite(data, off, fua)
    elif op == "zero":
        flags = fua | (nbd.CMD_FLAG_NO_HOLE if rng.random() < 0.5 else 0)
        f = lambda h: h.zero(ln, off, flags)
    elif op == "trim":
        f = lambda h: h.trim(ln, off, fua)
    elif op == "flush":
        f = lambda h: h.flush()
    elif op == "cache":
        f = lambda h: h.cache(ln, off)
    elif op == "status":
        if exact:
            # The same map of the requested range: extents clipped to it and
            # merged when adjacent ones have the same type (a server may
            # split or overshoot them differently).
            def f(h):
                ex, out, pos = extents(h, ln, off), [], off
                for j in range(0, len(ex), 2):
                    n = min(ex[j], off + ln - pos)
                    if n <= 0:
                        break
                    if out and out[-1][1] == ex[j + 1]:
                        out[-1][0] += n
                    else:
                        out.append([n, ex[j + 1]])
                    pos += n
                return repr(out)
        else:
            # Soundness: every run reported ZERO reads back as zeroes.
            def f(h):
                ex, pos = extents(h, ln, off), off
                for j in range(0, len(ex), 2):
                    end = min(pos + ex[j], off + ln)
                    if ex[j + 1] & nbd.STATE_ZERO and any(h.pread(end - pos, pos)):
                        return "ZERO claimed for non-zero bytes at %d..%d" % (pos, end)
                    pos = end
                    if pos >= off + ln:
                        break
                return "sound"
    else:  # out of bounds read or write
        bad = size + rng.randrange(0, 4096) // align * align
        f = (lambda h: h.pread(512, bad)) if rng.random() < 0.5 else (lambda h: h.pwrite(b"x" * 512, bad))
    ra, rb = outcome(lambda: f(A[k])), outcome(lambda: f(B[k]))
    if ra != rb:
        show = lambda r: repr(r if r[0] == "err" or op == "status" else r[0])[:300]
        print("MISMATCH at step %d (%s off=%d len=%d): %s vs %s" % (i, op, off, ln, show(ra), show(rb)))
        sys.exit(1)

step = 1024 * 1024
for off in range(0, size, step):
    n = min(step, size - off)
    ra, rb = outcome(lambda: A[0].pread(n, off)), outcome(lambda: B[0].pread(n, off))
    if ra != rb:
        print("MISMATCH in final content at offset %d" % off)
        sys.exit(1)
print("OK", count)
