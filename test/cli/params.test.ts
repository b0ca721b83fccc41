import { describe, it, expect } from "vitest";
import { resolveParams } from "../../src/cli/params.js";
import { CliError } from "../../src/cli/errors.js";

describe("resolveParams", () => {
  it("splits KEY=VALUE at the first '='", () => {
    expect(resolveParams(["a=b", "c=d=e", "x.y-z=1"], undefined, "p")).toEqual([
      ["a", "b"],
      ["c", "d=e"],
      ["x.y-z", "1"],
    ]);
  });

  it("gives a bare VALUE to the magic config key, in order", () => {
    expect(resolveParams(["1M", "allocator=sparse"], "size", "memory")).toEqual([
      ["size", "1M"],
      ["allocator", "sparse"],
    ]);
  });

  it("gives a bare VALUE after KEY=VALUE to the magic key too (as nbdkit does)", () => {
    expect(resolveParams(["size=1M", "2M"], "size", "memory")).toEqual([
      ["size", "1M"],
      ["size", "2M"],
    ]);
  });

  it("treats words whose part before '=' is not a key as bare values", () => {
    expect(resolveParams(["./a=b", "=1M", "_x=1", "a b=c"], "file", "file")).toEqual([
      ["file", "./a=b"],
      ["file", "=1M"],
      ["file", "_x=1"],
      ["file", "a b=c"],
    ]);
  });

  it("keeps empty values and leaves sizes unparsed", () => {
    expect(resolveParams(["k=", "size=1G"], undefined, "p")).toEqual([
      ["k", ""],
      ["size", "1G"],
    ]);
  });

  it("rejects a bare VALUE when the plugin has no magic config key", () => {
    expect(() => resolveParams(["foo"], undefined, "pattern")).toThrow(CliError);
    expect(() => resolveParams(["a=b", "foo"], undefined, "pattern")).toThrow(
      "expecting key=value on the command line but got: foo (plugin 'pattern' has no magic config key)",
    );
  });
});
