// Types for the parts of the npm `ext2fs` package (libext2fs in
// WebAssembly, CommonJS, no types of its own) that the ext2 filter uses.

declare module "ext2fs" {
  namespace ext2fs {
    interface Stats {
      mode: number;
      size: number;
      ino: number;
      blocks: number;
      isFile(): boolean;
      isDirectory(): boolean;
      isSymbolicLink(): boolean;
    }
    interface Promises {
      /** Resolves to a FileHandle; only its `fd` is used (the fd-based calls below take it). */
      open(path: string, flags: number, mode?: number): Promise<{ fd: number }>;
      close(fd: number): Promise<void>;
      read(fd: number, buf: Buffer, off: number, len: number, pos: number): Promise<{ bytesRead: number }>;
      write(fd: number, buf: Buffer, off: number, len: number, pos: number): Promise<{ bytesWritten: number }>;
      fstat(fd: number): Promise<Stats>;
      lstat(path: string): Promise<Stats>;
      /** Names are decoded as UTF-8 whatever the options say (a bug of the package). */
      readdir(path: string): Promise<string[]>;
    }
    /** A mounted filesystem (callback API; `promises` is the promise API). */
    interface Fs {
      promises: Promises;
    }
    /** libext2fs's errors: errno (or an ext2 error code) and a code name. */
    interface ErrnoException extends Error {
      errno: number;
      code: string;
    }
    /** Mount the filesystem on a file-disk Disk (flags RW: writes go to the Disk). */
    function mount(disk: unknown, offset?: number): Promise<Fs>;
    /** Close every file, write the metadata back (ext2fs_close), flush the Disk. */
    function umount(fs: Fs): Promise<void>;
  }
  export = ext2fs;
}

declare module "ext2fs/lib/binding.js" {
  /** The raw libext2fs calls (one queued WebAssembly call each). */
  const binding: {
    stat_i_blocks(fd: number): Promise<number>;
  };
  export = binding;
}
