// One-of parameters (fuamode=, zeromode=, cachemode= ...): a clear one-line
// error naming the filter, the key and what is allowed.

export function parseChoice<T extends string>(
  filter: string, key: string, value: string, allowed: readonly T[], aliases: Readonly<Record<string, T>> = {},
): T {
  if ((allowed as readonly string[]).includes(value)) return value as T;
  const alias = Object.prototype.hasOwnProperty.call(aliases, value) ? aliases[value] : undefined;
  if (alias !== undefined) return alias;
  throw new Error(`${filter}: unknown ${key} '${value}' (expected one of: ${allowed.join(", ")})`);
}
