// Wire constants from NetworkBlockDevice/nbd doc/proto.md.

export const NBDMAGIC = 0x4e42444d41474943n; // "NBDMAGIC"
export const IHAVEOPT = 0x49484156454f5054n; // "IHAVEOPT"
export const OPTION_REPLY_MAGIC = 0x3e889045565a9n;
export const CLISERV_MAGIC = 0x00420281861253n; // oldstyle; unused by the server

export const NBD_REQUEST_MAGIC = 0x25609513;
export const NBD_SIMPLE_REPLY_MAGIC = 0x67446698;
export const NBD_STRUCTURED_REPLY_MAGIC = 0x668e33ef;

// Handshake flags (server -> client, 16 bits).
export const NBD_FLAG_FIXED_NEWSTYLE = 1 << 0;
export const NBD_FLAG_NO_ZEROES = 1 << 1;
// Client flags (client -> server, 32 bits).
export const NBD_FLAG_C_FIXED_NEWSTYLE = 1 << 0;
export const NBD_FLAG_C_NO_ZEROES = 1 << 1;

// Transmission flags (16 bits).
export const NBD_FLAG_HAS_FLAGS = 1 << 0;
export const NBD_FLAG_READ_ONLY = 1 << 1;
export const NBD_FLAG_SEND_FLUSH = 1 << 2;
export const NBD_FLAG_SEND_FUA = 1 << 3;
export const NBD_FLAG_ROTATIONAL = 1 << 4;
export const NBD_FLAG_SEND_TRIM = 1 << 5;
export const NBD_FLAG_SEND_WRITE_ZEROES = 1 << 6;
export const NBD_FLAG_SEND_DF = 1 << 7;
export const NBD_FLAG_CAN_MULTI_CONN = 1 << 8;
export const NBD_FLAG_SEND_RESIZE = 1 << 9;
export const NBD_FLAG_SEND_CACHE = 1 << 10;
export const NBD_FLAG_SEND_FAST_ZERO = 1 << 11;
// "bit 12, NBD_FLAG_BLOCK_STATUS_PAYLOAD ... MUST NOT advertise this bit
// unless the client successfully negotiates extended headers".
export const NBD_FLAG_BLOCK_STATUS_PAYLOAD = 1 << 12;

// Options.
export const NBD_OPT_EXPORT_NAME = 1;
export const NBD_OPT_ABORT = 2;
export const NBD_OPT_LIST = 3;
export const NBD_OPT_PEEK_EXPORT = 4;
export const NBD_OPT_STARTTLS = 5;
export const NBD_OPT_INFO = 6;
export const NBD_OPT_GO = 7;
export const NBD_OPT_STRUCTURED_REPLY = 8;
export const NBD_OPT_LIST_META_CONTEXT = 9;
export const NBD_OPT_SET_META_CONTEXT = 10;
export const NBD_OPT_EXTENDED_HEADERS = 11;
// Experimental, not in the NBD spec (docs/list-hier.md): one level of the
// export tree. Numbers far above the assigned ones, so that no assigned
// option or reply is ever mistaken for them.
export const NBD_OPT_LIST_HIER = 0x4c48_0001;

export const OPTION_NAMES: Record<number, string> = {
  1: "NBD_OPT_EXPORT_NAME",
  2: "NBD_OPT_ABORT",
  3: "NBD_OPT_LIST",
  4: "NBD_OPT_PEEK_EXPORT",
  5: "NBD_OPT_STARTTLS",
  6: "NBD_OPT_INFO",
  7: "NBD_OPT_GO",
  8: "NBD_OPT_STRUCTURED_REPLY",
  9: "NBD_OPT_LIST_META_CONTEXT",
  10: "NBD_OPT_SET_META_CONTEXT",
  11: "NBD_OPT_EXTENDED_HEADERS",
  [NBD_OPT_LIST_HIER]: "NBD_OPT_LIST_HIER",
};

// Option replies.
export const NBD_REP_ACK = 1;
export const NBD_REP_SERVER = 2;
export const NBD_REP_INFO = 3;
export const NBD_REP_META_CONTEXT = 4;
/** Experimental (docs/list-hier.md): a directory of the export tree. */
export const NBD_REP_SERVER_DIR = 0x4c48;
const REP_ERR = 0x80000000;
export const NBD_REP_ERR_UNSUP = (REP_ERR | 1) >>> 0;
export const NBD_REP_ERR_POLICY = (REP_ERR | 2) >>> 0;
export const NBD_REP_ERR_INVALID = (REP_ERR | 3) >>> 0;
export const NBD_REP_ERR_PLATFORM = (REP_ERR | 4) >>> 0;
export const NBD_REP_ERR_TLS_REQD = (REP_ERR | 5) >>> 0;
export const NBD_REP_ERR_UNKNOWN = (REP_ERR | 6) >>> 0;
export const NBD_REP_ERR_SHUTDOWN = (REP_ERR | 7) >>> 0;
export const NBD_REP_ERR_BLOCK_SIZE_REQD = (REP_ERR | 8) >>> 0;
export const NBD_REP_ERR_TOO_BIG = (REP_ERR | 9) >>> 0;

// NBD_INFO types.
export const NBD_INFO_EXPORT = 0;
export const NBD_INFO_NAME = 1;
export const NBD_INFO_DESCRIPTION = 2;
export const NBD_INFO_BLOCK_SIZE = 3;

// Commands.
export const NBD_CMD_READ = 0;
export const NBD_CMD_WRITE = 1;
export const NBD_CMD_DISC = 2;
export const NBD_CMD_FLUSH = 3;
export const NBD_CMD_TRIM = 4;
export const NBD_CMD_CACHE = 5;
export const NBD_CMD_WRITE_ZEROES = 6;
export const NBD_CMD_BLOCK_STATUS = 7;
export const NBD_CMD_RESIZE = 8;

export const COMMAND_NAMES: Record<number, string> = {
  0: "NBD_CMD_READ",
  1: "NBD_CMD_WRITE",
  2: "NBD_CMD_DISC",
  3: "NBD_CMD_FLUSH",
  4: "NBD_CMD_TRIM",
  5: "NBD_CMD_CACHE",
  6: "NBD_CMD_WRITE_ZEROES",
  7: "NBD_CMD_BLOCK_STATUS",
  8: "NBD_CMD_RESIZE",
};

// Command flags (16 bits).
export const NBD_CMD_FLAG_FUA = 1 << 0;
export const NBD_CMD_FLAG_NO_HOLE = 1 << 1;
export const NBD_CMD_FLAG_DF = 1 << 2;
export const NBD_CMD_FLAG_REQ_ONE = 1 << 3;
export const NBD_CMD_FLAG_FAST_ZERO = 1 << 4;
export const NBD_CMD_FLAG_PAYLOAD_LEN = 1 << 5;

// Structured reply flags and types.
export const NBD_REPLY_FLAG_DONE = 1 << 0;
export const NBD_REPLY_TYPE_NONE = 0;
export const NBD_REPLY_TYPE_OFFSET_DATA = 1;
export const NBD_REPLY_TYPE_OFFSET_HOLE = 2;
export const NBD_REPLY_TYPE_BLOCK_STATUS = 5;
export const NBD_REPLY_TYPE_ERROR = (1 << 15) | 1;
export const NBD_REPLY_TYPE_ERROR_OFFSET = (1 << 15) | 2;

// base:allocation flags.
export const NBD_STATE_HOLE = 1 << 0;
export const NBD_STATE_ZERO = 1 << 1;
// qemu:dirty-bitmap:NAME flags (qemu's docs/interop/nbd.txt: "bit 0:
// NBD_STATE_DIRTY, set when the extent is dirty").
export const NBD_STATE_DIRTY = 1 << 0;

// Errors (values fixed by the spec, not the host's errno).
export const NBD_EPERM = 1;
export const NBD_EIO = 5;
export const NBD_ENOMEM = 12;
export const NBD_EINVAL = 22;
export const NBD_ENOSPC = 28;
export const NBD_EOVERFLOW = 75;
export const NBD_ENOTSUP = 95;
export const NBD_ESHUTDOWN = 108;

export const BASE_ALLOCATION = "base:allocation";

// Limits. "The server SHOULD enforce a limit of 4096 bytes" on strings.
export const MAX_STRING = 4096;
/** Largest READ/WRITE payload accepted (nbdkit uses 64 MiB too). */
export const MAX_REQUEST_SIZE = 64 * 1024 * 1024;
/** Largest option payload read from a client; anything larger is discarded. */
export const MAX_OPTION_LENGTH = 64 * 1024;
/** Option payloads up to this size are skipped (and refused); larger ones close the connection. */
export const MAX_SKIPPED_OPTION_LENGTH = 16 * 1024 * 1024;
/** How many options one connection may send before it is cut off. */
export const MAX_OPTIONS = 256;

// ---- Added for the client and wire helpers (src/client, src/protocol/wire.ts).

/** IANA port for NBD over TCP. */
export const NBD_DEFAULT_PORT = 10809;
/** Size of a (compact) request header: magic, flags, type, cookie, offset, length. */
export const NBD_REQUEST_SIZE = 28;
/** Size of a simple reply header: magic, error, cookie. */
export const NBD_SIMPLE_REPLY_SIZE = 16;
/** Size of a structured reply chunk header: magic, flags, type, cookie, length. */
export const NBD_STRUCTURED_REPLY_SIZE = 20;
/** Size of an option reply header: magic, option, type, length. */
export const NBD_OPTION_REPLY_SIZE = 20;
/** Bytes of zero padding after an NBD_OPT_EXPORT_NAME reply without NO_ZEROES. */
export const NBD_EXPORT_NAME_PADDING = 124;

// Extended headers (NBD_OPT_EXTENDED_HEADERS; doc/proto.md on the extension-ext-header branch).
export const NBD_EXTENDED_REQUEST_MAGIC = 0x21e41c71;
export const NBD_EXTENDED_REPLY_MAGIC = 0x6e8a278c;
export const NBD_REP_ERR_EXT_HEADER_REQD = (REP_ERR | 10) >>> 0;
export const NBD_REPLY_TYPE_BLOCK_STATUS_EXT = 6;

/** Option reply type -> name. */
export const REPLY_NAMES: Record<number, string> = {
  [NBD_REP_ACK]: "NBD_REP_ACK",
  [NBD_REP_SERVER]: "NBD_REP_SERVER",
  [NBD_REP_INFO]: "NBD_REP_INFO",
  [NBD_REP_META_CONTEXT]: "NBD_REP_META_CONTEXT",
  [NBD_REP_SERVER_DIR]: "NBD_REP_SERVER_DIR",
  [NBD_REP_ERR_UNSUP]: "NBD_REP_ERR_UNSUP",
  [NBD_REP_ERR_POLICY]: "NBD_REP_ERR_POLICY",
  [NBD_REP_ERR_INVALID]: "NBD_REP_ERR_INVALID",
  [NBD_REP_ERR_PLATFORM]: "NBD_REP_ERR_PLATFORM",
  [NBD_REP_ERR_TLS_REQD]: "NBD_REP_ERR_TLS_REQD",
  [NBD_REP_ERR_UNKNOWN]: "NBD_REP_ERR_UNKNOWN",
  [NBD_REP_ERR_SHUTDOWN]: "NBD_REP_ERR_SHUTDOWN",
  [NBD_REP_ERR_BLOCK_SIZE_REQD]: "NBD_REP_ERR_BLOCK_SIZE_REQD",
  [NBD_REP_ERR_TOO_BIG]: "NBD_REP_ERR_TOO_BIG",
  [NBD_REP_ERR_EXT_HEADER_REQD]: "NBD_REP_ERR_EXT_HEADER_REQD",
};

/** Structured reply chunk type -> name. */
export const REPLY_TYPE_NAMES: Record<number, string> = {
  [NBD_REPLY_TYPE_NONE]: "NBD_REPLY_TYPE_NONE",
  [NBD_REPLY_TYPE_OFFSET_DATA]: "NBD_REPLY_TYPE_OFFSET_DATA",
  [NBD_REPLY_TYPE_OFFSET_HOLE]: "NBD_REPLY_TYPE_OFFSET_HOLE",
  [NBD_REPLY_TYPE_BLOCK_STATUS]: "NBD_REPLY_TYPE_BLOCK_STATUS",
  [NBD_REPLY_TYPE_BLOCK_STATUS_EXT]: "NBD_REPLY_TYPE_BLOCK_STATUS_EXT",
  [NBD_REPLY_TYPE_ERROR]: "NBD_REPLY_TYPE_ERROR",
  [NBD_REPLY_TYPE_ERROR_OFFSET]: "NBD_REPLY_TYPE_ERROR_OFFSET",
};

/** NBD_INFO_* type -> name. */
export const INFO_NAMES: Record<number, string> = {
  [NBD_INFO_EXPORT]: "NBD_INFO_EXPORT",
  [NBD_INFO_NAME]: "NBD_INFO_NAME",
  [NBD_INFO_DESCRIPTION]: "NBD_INFO_DESCRIPTION",
  [NBD_INFO_BLOCK_SIZE]: "NBD_INFO_BLOCK_SIZE",
};

/** NBD error number -> errno name (the spec's fixed values). */
export const ERROR_NAMES: Record<number, string> = {
  [NBD_EPERM]: "EPERM",
  [NBD_EIO]: "EIO",
  [NBD_ENOMEM]: "ENOMEM",
  [NBD_EINVAL]: "EINVAL",
  [NBD_ENOSPC]: "ENOSPC",
  [NBD_EOVERFLOW]: "EOVERFLOW",
  [NBD_ENOTSUP]: "ENOTSUP",
  [NBD_ESHUTDOWN]: "ESHUTDOWN",
};
