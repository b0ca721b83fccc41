// Wire-level checks shared by the model tests: the payload of each option
// reply, and "this connection really is in transmission".
import { expect } from "vitest";
import type { OptionsEvent } from "../../src/machines/options.js";
import * as C from "../../src/protocol/constants.js";
import {
  decodeInfoReply, decodeMetaContextReply, decodeServerReply, decodeSimpleReplyHeader, decodeStructuredReplyHeader,
  encodeRequest, readU64,
} from "../../src/protocol/wire.js";
import type { OptionReply, RawConn } from "../helpers/raw.js";
import { waitFor } from "../helpers/server.js";
import { DESCRIPTION, SIZE, type InProcess } from "./inproc.js";

/** Check the data of one option reply frame. */
export async function readBack(r: OptionReply, ev: OptionsEvent, after: { context: { structuredReplies: boolean } }): Promise<void> {
  switch (r.type) {
    case C.NBD_REP_ACK:
      expect(r.data.length).toBe(0);
      break;
    case C.NBD_REP_SERVER:
      expect(decodeServerReply(r.data)).toEqual({ name: "", description: DESCRIPTION });
      break;
    case C.NBD_REP_INFO: {
      const info = decodeInfoReply(r.data);
      const infos = "infos" in ev ? ev.infos : [];
      if ("size" in info) {
        expect(info.size).toBe(SIZE);
        // "NBD_FLAG_SEND_DF ... only if structured replies have been negotiated".
        expect(info.transmissionFlags & C.NBD_FLAG_SEND_DF ? true : false).toBe(after.context.structuredReplies);
      } else {
        expect(infos).toContain(info.type);
        if ("name" in info) expect(info.name).toBe("");
        if ("description" in info) expect(info.description).toBe(DESCRIPTION);
        if ("minimum" in info) expect(info.minimum).toBeLessThanOrEqual(info.preferred);
      }
      break;
    }
    case C.NBD_REP_META_CONTEXT:
      expect(decodeMetaContextReply(r.data)).toEqual({ id: expect.any(Number), name: C.BASE_ALLOCATION });
      break;
    default:
      expect(r.type & 0x80000000, `reply 0x${r.type.toString(16)}`).not.toBe(0);
      expect(r.data.toString("utf8").length, "error replies carry a message").toBeGreaterThan(0);
  }
}

/** One READ answered (simple or structured as negotiated), then NBD_CMD_DISC closes the connection. */
export async function transmissionWorks(t: InProcess, conn: RawConn, structured: boolean): Promise<void> {
  expect(await waitFor(() => t.phases()[0] === "SERVING", 2000, 2), `phase ${t.phases()[0]}`).toBe(true);
  conn.write(encodeRequest(0, C.NBD_CMD_READ, 77n, 512, 512));
  if (structured) {
    const h = decodeStructuredReplyHeader(await conn.read(20, 3000));
    expect(h).toMatchObject({ flags: C.NBD_REPLY_FLAG_DONE, type: C.NBD_REPLY_TYPE_OFFSET_DATA, cookie: 77n, length: 8 + 512 });
    const body = await conn.read(8 + 512, 3000);
    expect(readU64(body, 0)).toBe(512);
  } else {
    expect(decodeSimpleReplyHeader(await conn.read(16, 3000))).toEqual({ error: 0, cookie: 77n });
    await conn.read(512, 3000);
  }
  conn.write(encodeRequest(0, C.NBD_CMD_DISC, 78n, 0, 0));
  expect(await conn.waitClosed(3000), "NBD_CMD_DISC closes the connection").toBe(true);
}
