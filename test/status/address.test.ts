// The server's address on the status page, as people write it.
import { describe, expect, it } from "vitest";
import { displayAddress } from "../../src/status/address.js";

describe("displayAddress", () => {
  it("decodes the socket path", () => {
    expect(displayAddress(`nbd+unix:///?socket=${encodeURIComponent("/tmp/s.sock")}`)).toBe("nbd+unix:///?socket=/tmp/s.sock");
    expect(displayAddress(`nbd+unix:///?socket=${encodeURIComponent("/run/user/1000/nbd état.sock")}`)).toBe("nbd+unix:///?socket=/run/user/1000/nbd%20état.sock");
  });

  it("keeps encoded what would change how the URI reads", () => {
    expect(displayAddress(`nbd+unix:///?socket=${encodeURIComponent("/tmp/a&b#c%d.sock")}`)).toBe("nbd+unix:///?socket=/tmp/a%26b%23c%25d.sock");
    expect(displayAddress("nbd+unix:///?socket=%zz")).toBe("nbd+unix:///?socket=%zz");
  });

  it("leaves TCP addresses alone and names stdin/stdout", () => {
    expect(displayAddress("nbd://localhost:10809")).toBe("nbd://localhost:10809");
    expect(displayAddress("nbd://[::1]:10809")).toBe("nbd://[::1]:10809");
    expect(displayAddress("")).toBe("stdin/stdout");
  });
});
