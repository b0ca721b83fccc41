// libext2fs's errors as messages a client can act on.

/** libext2fs error codes (EXT2_ET_BASE 2133571328 + index), in our words. */
const EXT2_ERRORS: Record<number, string> = {
  2133571347: "not an ext2/3/4 filesystem (bad superblock magic)",
  2133571348: "filesystem revision too high",
  2133571350: "cannot read the group descriptors",
  2133571352: "corrupt group descriptor (block bitmap location)",
  2133571353: "corrupt group descriptor (inode bitmap location)",
  2133571354: "corrupt group descriptor (inode table location)",
  2133571356: "cannot read an inode bitmap",
  2133571358: "cannot read a block bitmap",
  2133571360: "cannot read the inode table",
  2133571362: "unexpected block size",
  2133571363: "corrupt directory",
  2133571364: "short read (the filesystem is larger than the export below?)",
  2133571365: "short write",
  2133571387: "a block group has no inode table",
  2133571388: "corrupt superblock",
  2133571392: "too many symbolic links",
  2133571395: "filesystem has unsupported features",
  2133571396: "filesystem has unsupported read-only features",
  2133571398: "out of memory",
  2133571400: "no free block in the filesystem",
  2133571422: "corrupt resize inode",
  2133571447: "corrupt extent header",
  2133571473: "bad group descriptor size",
  2133571474: "inode checksum mismatch",
  2133571475: "inode bitmap checksum mismatch",
  2133571476: "extent block checksum mismatch",
  2133571478: "directory block checksum mismatch",
  2133571480: "superblock checksum mismatch",
  2133571484: "block bitmap checksum mismatch",
};

export function ext2Message(err: unknown): string {
  const e = err as { errno?: number; message?: string };
  if (typeof e?.errno === "number" && EXT2_ERRORS[e.errno]) return EXT2_ERRORS[e.errno]!;
  if (typeof e?.errno === "number" && e.errno > 1 << 20) return `corrupt filesystem (libext2fs error ${e.errno})`;
  return String(e?.message ?? err).split("\n")[0]!;
}
