// SocketReader's arena bookkeeping, driven the way Node's onread drives it
// (next() gives the buffer of the coming read, callback() says what
// arrived), without a socket.
import { describe, expect, it } from "vitest";
import { SocketReader } from "../../src/actors/socket-reader.js";

describe("SocketReader", () => {
  it("a read that finishes a direct target and runs on past it: the rest stays queued, its arena bytes are not reused", () => {
    const r = new SocketReader();
    const queued: Buffer[] = [];
    r.sink = { bytes: (c) => void queued.push(c) };
    r.recycle();
    // Into a fresh arena (the negotiation's first one is never reused): fill that one, all consumed.
    const first = r.next();
    r.callback(first.length - 100, first);
    queued.length = 0;
    r.consumed();
    // The arena slice for the next read is handed out first ...
    const arena = r.next();
    // ... then the loop asks for a payload of 10 bytes straight into its target; once it is full the
    // loop finds its queue empty (the rest of this read is not queued yet) and says so.
    const target = Buffer.alloc(10);
    r.direct(target, 0, () => r.consumed());
    const read = Buffer.from("0123456789NEXT-REQUEST");
    read.copy(arena);
    r.callback(read.length, arena);
    expect(target.toString()).toBe("0123456789");
    expect(Buffer.concat(queued).toString()).toBe("NEXT-REQUEST");
    // The next read must not land on the queued bytes.
    const following = r.next();
    following.fill(0x21);
    expect(Buffer.concat(queued).toString()).toBe("NEXT-REQUEST");
  });
});
