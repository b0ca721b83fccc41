# Runs a list of NBD requests against one server and prints what happened,
# as JSON, so the same list can be compared between nbdkit and nbdstate.
#
#   policy-probe.py URI OPS_JSON
#
# OPS_JSON is a list of requests:
#   ["pread", off, len, flags?]          -> sha256 prefix of the bytes
#   ["pwrite", off, len, seed, flags?]   -> "ok"  (bytes: (seed + i) % 251 + 1)
#   ["pwritez", off, len, flags?]        -> "ok"  (zero bytes, as data)
#   ["rewrite", off, len]                -> "ok"  (writes back the bytes it reads)
#   ["zero"|"trim"|"cache", off, len, flags?]
#   ["flush"]
#   ["strict", mode]                     libnbd's strict mode (0: bad requests reach the server)
#   ["extents", off, len, flags?]        -> [[length, type], ...] within [off, off+len), merged
#   ["aio_pwrites", [[off, len, seed], ...]]  all in flight at once
#   ["disk"]                             -> sha256 prefix of the whole disk
# flags: a list of "fua", "fast", "nohole", "reqone".
# A failed request gives "E:ERRNO". Output: {"size", "ops"}, or {"connect": "E:..."}.
import errno
import hashlib
import json
import sys

import nbd

FLAGS = {
    "fua": nbd.CMD_FLAG_FUA,
    "fast": nbd.CMD_FLAG_FAST_ZERO,
    "nohole": nbd.CMD_FLAG_NO_HOLE,
    "reqone": nbd.CMD_FLAG_REQ_ONE,
}


def flags_of(names):
    f = 0
    for n in names or []:
        f |= FLAGS[n]
    return f


def data(length, seed):
    return bytes(((seed + i) % 251) + 1 for i in range(length))


def digest(b):
    return hashlib.sha256(b).hexdigest()[:16]


def err(e):
    if e.errnum:
        return "E:" + errno.errorcode.get(e.errnum, str(e.errnum))
    return "E:" + (e.string or "error").split(":")[0]


def read_all(h, size):
    out = hashlib.sha256()
    pos = 0
    while pos < size:
        n = min(size - pos, 4 * 1024 * 1024)
        out.update(h.pread(n, pos))
        pos += n
    return out.hexdigest()[:16]


def run(h, op):
    kind = op[0]
    if kind == "pread":
        return digest(h.pread(op[2], op[1], flags_of(op[3] if len(op) > 3 else [])))
    if kind == "pwrite":
        h.pwrite(data(op[2], op[3]), op[1], flags_of(op[4] if len(op) > 4 else []))
        return "ok"
    if kind == "pwritez":
        h.pwrite(bytes(op[2]), op[1], flags_of(op[3] if len(op) > 3 else []))
        return "ok"
    if kind == "rewrite":
        h.pwrite(h.pread(op[2], op[1]), op[1])
        return "ok"
    if kind in ("zero", "trim", "cache"):
        fn = {"zero": h.zero, "trim": h.trim, "cache": h.cache}[kind]
        fn(op[2], op[1], flags_of(op[3] if len(op) > 3 else []))
        return "ok"
    if kind == "strict":
        h.set_strict_mode(op[1])
        return "ok"
    if kind == "flush":
        h.flush()
        return "ok"
    if kind == "extents":
        out = []

        def cb(ctx, off, entries, e):
            if ctx == nbd.CONTEXT_BASE_ALLOCATION:
                for i in range(0, len(entries), 2):
                    out.append([entries[i], entries[i + 1]])
            return 0

        h.block_status(op[2], op[1], cb, flags_of(op[3] if len(op) > 3 else []))
        # nbdkit may describe more than was asked (to the end of a page),
        # nbdstate never, and the memory plugins split data into extents
        # differently: compare the part asked for, same types merged.
        clipped, total = [], 0
        for length, kind_ in out:
            if total >= op[2]:
                break
            length = min(length, op[2] - total)
            total += length
            if clipped and clipped[-1][1] == kind_:
                clipped[-1][0] += length
            else:
                clipped.append([length, kind_])
        return clipped
    if kind == "aio_pwrites":
        cookies = [h.aio_pwrite(data(n, seed), off) for off, n, seed in op[1]]
        results = []
        for c in cookies:
            while not h.aio_command_completed(c):
                h.poll(-1)
            results.append("ok")
        return results
    if kind == "disk":
        return read_all(h, h.get_size())
    raise ValueError("unknown op %r" % (kind,))


def main():
    uri = sys.argv[1]
    ops = json.loads(sys.argv[2])
    h = nbd.NBD()
    h.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
    try:
        h.connect_uri(uri)
    except nbd.Error as e:
        print(json.dumps({"connect": err(e)}))
        return
    result = {"size": h.get_size(), "ops": []}
    for op in ops:
        try:
            result["ops"].append(run(h, op))
        except nbd.Error as e:
            result["ops"].append(err(e))
    try:
        h.shutdown()
    except nbd.Error:
        pass
    print(json.dumps(result))


main()
