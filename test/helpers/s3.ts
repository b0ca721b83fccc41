// An S3 endpoint for the S3 plugin's tests: s3rver (npm) run as its own
// process on a loopback port, storing objects in a temp dir (so it can be
// stopped and started again with the data kept), or, when
// NBDSTATE_S3_BUCKET is set, the endpoint named by the environment:
//
//   NBDSTATE_S3_BUCKET    bucket to use (required for an external endpoint)
//   NBDSTATE_S3_ENDPOINT  endpoint URL (absent: AWS S3 itself)
//   AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_REGION
//
// The tests work under a fresh key prefix and delete what they wrote.
import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { join } from "node:path";
import { DeleteObjectCommand, ListObjectsV2Command, PutObjectCommand, S3Client } from "@aws-sdk/client-s3";
import { canConnect, freePort, makeTmpDir, REPO_ROOT, removeTmpDir, sleep } from "./server.js";

export interface S3Target {
  /** Undefined for AWS itself. */
  endpoint: string | undefined;
  bucket: string;
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken?: string;
  /** A fresh prefix for this run's keys. */
  prefix: string;
  /** Whether the server can be restarted (s3rver), keeping its data. */
  restartable: boolean;
  client: S3Client;
  restart(): Promise<void>;
  put(key: string, body: Buffer): Promise<void>;
  /** Keys under a prefix, with sizes. */
  list(prefix: string): Promise<{ key: string; size: number }[]>;
  /** Delete everything under this run's prefix, stop the server. */
  stop(): Promise<void>;
}

const live = new Set<ChildProcess>();
process.on("exit", () => {
  for (const c of live) c.kill("SIGKILL");
});

const S3RVER = join(REPO_ROOT, "node_modules", "s3rver", "bin", "s3rver.js");

async function spawnS3rver(dir: string, port: number, bucket: string): Promise<{ stop(): Promise<void> }> {
  const child = spawn(process.execPath, [S3RVER, "-d", dir, "-a", "127.0.0.1", "-p", String(port), "-s", "--configure-bucket", bucket], {
    stdio: ["ignore", "ignore", "pipe"],
  });
  live.add(child);
  let stderr = "";
  let exited = false;
  child.stderr!.setEncoding("utf8").on("data", (s: string) => (stderr += s));
  const exit = new Promise<void>((r) => child.on("exit", () => ((exited = true), live.delete(child), r())));
  const deadline = Date.now() + 15_000;
  while (!(await canConnect({ host: "127.0.0.1", port }))) {
    if (exited || Date.now() > deadline) {
      child.kill("SIGKILL");
      throw new Error(`s3rver did not start:\n${stderr}`);
    }
    await sleep(50);
  }
  return {
    async stop() {
      if (!exited) {
        child.kill("SIGTERM");
        const t = setTimeout(() => child.kill("SIGKILL"), 5000);
        await exit;
        clearTimeout(t);
      }
    },
  };
}

export async function s3Target(): Promise<S3Target> {
  const prefix = `nbdstate-test-${randomBytes(4).toString("hex")}`;
  const external = process.env.NBDSTATE_S3_BUCKET;
  let endpoint: string | undefined;
  let bucket: string;
  let accessKeyId: string;
  let secretAccessKey: string;
  let sessionToken: string | undefined;
  let restart = async () => {};
  let stopServer = async () => {};
  let restartable = false;
  if (external) {
    endpoint = process.env.NBDSTATE_S3_ENDPOINT || undefined;
    bucket = external;
    accessKeyId = process.env.AWS_ACCESS_KEY_ID ?? "";
    secretAccessKey = process.env.AWS_SECRET_ACCESS_KEY ?? "";
    sessionToken = process.env.AWS_SESSION_TOKEN;
    if (!accessKeyId || !secretAccessKey) throw new Error("NBDSTATE_S3_BUCKET is set: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY too");
  } else {
    const dir = makeTmpDir("s3rver-");
    const port = await freePort();
    bucket = "disks";
    endpoint = `http://127.0.0.1:${port}`;
    // s3rver's built-in account.
    accessKeyId = "S3RVER";
    secretAccessKey = "S3RVER";
    let server = await spawnS3rver(dir, port, bucket);
    restartable = true;
    restart = async () => {
      await server.stop();
      server = await spawnS3rver(dir, port, bucket);
    };
    stopServer = async () => {
      await server.stop();
      removeTmpDir(dir);
    };
  }
  const client = new S3Client({
    endpoint,
    region: process.env.AWS_REGION || "us-east-1",
    forcePathStyle: endpoint !== undefined,
    credentials: { accessKeyId, secretAccessKey, sessionToken },
    requestChecksumCalculation: "WHEN_REQUIRED",
    responseChecksumValidation: "WHEN_REQUIRED",
  });
  const list = async (p: string) => {
    const out: { key: string; size: number }[] = [];
    let token: string | undefined;
    do {
      const r = await client.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: p, ContinuationToken: token }));
      for (const o of r.Contents ?? []) out.push({ key: o.Key!, size: o.Size ?? 0 });
      token = r.IsTruncated ? r.NextContinuationToken : undefined;
    } while (token);
    return out;
  };
  return {
    endpoint,
    bucket,
    accessKeyId,
    secretAccessKey,
    sessionToken,
    prefix,
    restartable,
    client,
    restart: () => restart(),
    async put(key, body) {
      await client.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: body }));
    },
    list,
    async stop() {
      try {
        for (const o of await list(prefix)) await client.send(new DeleteObjectCommand({ Bucket: bucket, Key: o.key }));
      } finally {
        client.destroy();
        await stopServer();
      }
    },
  };
}
