// The S3 side of the S3 plugin: one S3Client (AWS SDK v3) for every
// connection, and the few object calls the plugin makes, each reporting a
// failure as one line. Bodies are streamed into the caller's buffer.

import http from "node:http";
import https from "node:https";
import {
  DeleteObjectCommand, GetObjectCommand, HeadBucketCommand, HeadObjectCommand, ListObjectsV2Command, PutObjectCommand,
  S3Client, type S3ClientConfig,
} from "@aws-sdk/client-s3";

export interface StoreSettings {
  bucket: string;
  endpoint?: string;
  credentials?: { accessKeyId: string; secretAccessKey: string; sessionToken?: string };
}

/** An object that is not there (reads as zeros in block mode). */
export const MISSING = Symbol("missing");

function describe(e: unknown): string {
  const err = e as { name?: string; message?: string; Code?: string; $metadata?: { httpStatusCode?: number } };
  const status = err.$metadata?.httpStatusCode;
  const name = err.Code ?? err.name ?? "Error";
  const msg = (err.message ?? String(e)).split("\n")[0]!;
  const text = msg && msg !== name && msg !== "UnknownError" ? `${name}: ${msg}` : name;
  return status ? `${text} (HTTP ${status})` : text;
}

function isMissing(e: unknown): boolean {
  const err = e as { name?: string; $metadata?: { httpStatusCode?: number } };
  return err.name === "NoSuchKey" || err.name === "NotFound" || err.$metadata?.httpStatusCode === 404;
}

/** The region the SDK should sign for: the environment's, else us-east-1 for a custom endpoint. */
function region(endpoint: string | undefined): string | undefined {
  const r = process.env.AWS_REGION || process.env.AWS_DEFAULT_REGION;
  if (r) return r;
  // Without an endpoint the SDK looks in ~/.aws/config itself; S3-compatible
  // servers (Ceph, MinIO, s3rver) accept any region, so do not make them set one.
  return endpoint ? "us-east-1" : undefined;
}

export class ObjectStore {
  readonly client: S3Client;
  readonly bucket: string;

  constructor(s: StoreSettings) {
    this.bucket = s.bucket;
    // The SDK prints a nine-line notice about its future Node.js versions
    // on every start under Node 20; the server log is one line per event.
    process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= "true";
    const agent = { keepAlive: true, maxSockets: 64 };
    const config: S3ClientConfig = {
      region: region(s.endpoint),
      endpoint: s.endpoint,
      // Custom endpoints (Ceph, MinIO, s3rver) are addressed by path, as boto3 does for them.
      forcePathStyle: s.endpoint !== undefined,
      credentials: s.credentials,
      // The SDK's default CRC32 trailers (aws-chunked uploads) are not
      // understood by many S3-compatible servers; send checksums only
      // where S3 requires them.
      requestChecksumCalculation: "WHEN_REQUIRED",
      responseChecksumValidation: "WHEN_REQUIRED",
      // Standard retry mode: backoff with jitter on 5xx, throttling and broken connections.
      maxAttempts: 5,
      requestHandler: { httpAgent: new http.Agent(agent), httpsAgent: new https.Agent(agent) },
    };
    this.client = new S3Client(config);
  }

  where(key: string): string {
    return `s3://${this.bucket}/${key}`;
  }

  destroy(): void {
    this.client.destroy();
  }

  async checkBucket(): Promise<void> {
    try {
      await this.client.send(new HeadBucketCommand({ Bucket: this.bucket }));
    } catch (e) {
      throw new Error(`bucket ${this.bucket}: ${isMissing(e) ? "no such bucket" : describe(e)}`);
    }
  }

  /** The object's size, or MISSING. */
  async size(key: string): Promise<number | typeof MISSING> {
    try {
      const r = await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: key }));
      return r.ContentLength ?? 0;
    } catch (e) {
      if (isMissing(e)) return MISSING;
      throw new Error(`HeadObject ${this.where(key)}: ${describe(e)}`);
    }
  }

  /**
   * Read `length` bytes at `start` of the object into buf at `at`. Returns
   * the object's total size, or MISSING (buf untouched); an object too
   * short for the range is not read (the caller checks the size returned). A body cut off
   * mid-transfer is asked for again (from where it stopped), twice at most.
   */
  async read(key: string, start: number, length: number, buf: Buffer, at: number): Promise<number | typeof MISSING> {
    let got = 0;
    for (let attempt = 0; ; attempt++) {
      let total: number;
      let body: AsyncIterable<Uint8Array>;
      try {
        const r = await this.client.send(
          new GetObjectCommand({ Bucket: this.bucket, Key: key, Range: `bytes=${start + got}-${start + length - 1}` }),
        );
        const m = /\/([0-9]+)$/.exec(r.ContentRange ?? "");
        total = m ? Number(m[1]) : (r.ContentLength ?? 0);
        body = r.Body as AsyncIterable<Uint8Array>;
        // Shorter than asked: the caller decides what that means (buf left as it is).
        if (total < start + length) {
          (r.Body as { destroy?: () => void } | undefined)?.destroy?.();
          return total;
        }
      } catch (e) {
        if (isMissing(e)) return MISSING;
        // 416: the range starts past the object's end; its size is then unknown here.
        if ((e as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode === 416) {
          const size = await this.size(key);
          return size === MISSING ? MISSING : Math.min(size, start);
        }
        throw new Error(`GetObject ${this.where(key)}: ${describe(e)}`);
      }
      try {
        for await (const chunk of body) {
          if (got + chunk.length > length) throw new Error(`more than the ${length} bytes asked for`);
          buf.set(chunk, at + got);
          got += chunk.length;
        }
        if (got < length) throw new Error(`the object is shorter than ${start + length} bytes (got ${got} of ${length})`);
        return total;
      } catch (e) {
        const retryable = !/asked for|shorter/.test((e as Error).message ?? "");
        if (!retryable || attempt >= 2) throw new Error(`GetObject ${this.where(key)}: ${describe(e)}`);
      }
    }
  }

  async put(key: string, body: Buffer): Promise<void> {
    try {
      await this.client.send(new PutObjectCommand({ Bucket: this.bucket, Key: key, Body: body, ContentLength: body.length }));
    } catch (e) {
      throw new Error(`PutObject ${this.where(key)}: ${describe(e)}`);
    }
  }

  async delete(key: string): Promise<void> {
    try {
      await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: key }));
    } catch (e) {
      if (isMissing(e)) return;
      throw new Error(`DeleteObject ${this.where(key)}: ${describe(e)}`);
    }
  }

  /**
   * Keys (with sizes) under `prefix`, in order, strictly after `after` and
   * up to `last` inclusive: one or more ListObjectsV2 pages.
   */
  async list(prefix: string, after: string | undefined, last: string): Promise<{ key: string; size: number }[]> {
    const out: { key: string; size: number }[] = [];
    let token: string | undefined;
    for (;;) {
      let r;
      try {
        r = await this.client.send(
          new ListObjectsV2Command({ Bucket: this.bucket, Prefix: prefix, StartAfter: token ? undefined : after, ContinuationToken: token, MaxKeys: 1000 }),
        );
      } catch (e) {
        throw new Error(`ListObjectsV2 ${this.where(prefix)}: ${describe(e)}`);
      }
      for (const o of r.Contents ?? []) {
        if (!o.Key) continue;
        if (o.Key > last) return out;
        out.push({ key: o.Key, size: o.Size ?? 0 });
      }
      if (!r.IsTruncated || !r.NextContinuationToken) return out;
      token = r.NextContinuationToken;
    }
  }
}
