// Strict base64, as nbdkit decodes it with GnuTLS: the standard alphabet
// padded to a multiple of 4; whitespace (line breaks) is ignored. Node's
// own decoder silently skips bad characters, which would serve garbage.

export function decodeBase64(s: string): Buffer {
  const t = s.replace(/\s+/g, "");
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(t) || t.length % 4 !== 0) {
    throw new Error("base64: the value is not valid base64");
  }
  return Buffer.from(t, "base64");
}
