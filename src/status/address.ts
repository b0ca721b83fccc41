// The server's address as people write it: nbdstate builds its NBD URI
// with the socket path percent-encoded (nbd+unix:///?socket=%2Ftmp%2Fs.sock),
// which is right for a machine and hard to read; the page shows the path
// decoded, as in nbdkit's and libnbd's documentation. Characters that would
// change how the URI reads (%, &, #, spaces and controls) stay encoded.

const KEEP = /[%&#\s\p{Cc}]/u;

function decodeValue(v: string): string {
  let s: string;
  try {
    s = decodeURIComponent(v);
  } catch {
    return v;
  }
  return [...s].map((ch) => (KEEP.test(ch) ? encodeURIComponent(ch) : ch)).join("");
}

/** nbd+unix:///?socket=%2Ftmp%2Fs.sock -> nbd+unix:///?socket=/tmp/s.sock; "" (stdin/stdout) -> "stdin/stdout". */
export function displayAddress(uri: string): string {
  if (uri === "") return "stdin/stdout";
  const q = uri.indexOf("?");
  if (q < 0) return uri;
  const query = uri
    .slice(q + 1)
    .split("&")
    .map((kv) => {
      const eq = kv.indexOf("=");
      return eq < 0 ? kv : `${kv.slice(0, eq)}=${decodeValue(kv.slice(eq + 1))}`;
    })
    .join("&");
  return `${uri.slice(0, q)}?${query}`;
}
