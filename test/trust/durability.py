# One round of the durability test: random writes, each acknowledged with
# FUA or followed by a flush, logged (offset, sha of the data) to a journal
# line by line before sending (P) and after the acknowledgement (A); the test kills the server
# with SIGKILL at some point and then checks every journaled write.
# Usage: durability.py URI JOURNAL SEED
import hashlib, random, sys
import nbd

uri, journal, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
rng = random.Random(seed)
h = nbd.NBD()
h.connect_uri(uri)
size = h.get_size()
with open(journal, "a") as j:
    try:
        while True:
            ln = rng.choice([512, 4096, 65536])
            off = rng.randrange(0, (size - ln) // 512) * 512
            data = rng.randbytes(ln)
            sha = hashlib.sha256(data).hexdigest()
            # P: about to write (may land even if never acknowledged); A: acknowledged.
            j.write("P %d %d %s\n" % (off, ln, sha))
            j.flush()
            if rng.random() < 0.5:
                h.pwrite(data, off, nbd.CMD_FLAG_FUA)
            else:
                h.pwrite(data, off)
                h.flush()
            j.write("A %d %d %s\n" % (off, ln, sha))
            j.flush()
    except nbd.Error:
        pass  # the server was killed
