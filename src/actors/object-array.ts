// An empty array that already holds "any value" elements. A `[]` literal
// starts as an array of small integers and changes its hidden class on the
// first object pushed; the data path's per-connection arrays (queued
// chunks, reply parts, write targets) did that at every new connection,
// and V8 threw away the optimized request loop each time to learn the new
// class (about 100 ms of recompiling per nbdcopy run on two cores). Made
// here, every such array has the same class from its start.

export function objectArray<T>(): T[] {
  const a: unknown[] = [null];
  a.length = 0;
  return a as T[];
}
