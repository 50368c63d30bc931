/**
 * Archive format v1's manifest.json (DESIGN §3). The zod schema is the one source of truth: it
 * validates a manifest read from an archive, and the TypeScript types are inferred from it. Literal
 * keys: operators' tools read them.
 */
import { z } from 'zod';

export const ARCHIVE_FORMAT = 1;
/** Where table entries live in the zip (re-exported by src/archive). */
export const DB_PREFIX = 'db/';

export { APP_NAME, APP_VERSION } from './version';

export const manifestColumnSchema = z.object({ name: z.string().min(1), type: z.string() });

export const manifestTableSchema = z.object({
  schema: z.string().min(1),
  name: z.string().min(1),
  entry: z.string().startsWith(DB_PREFIX),
  columns: z.array(manifestColumnSchema).min(1),
  rows: z.number().int().nonnegative(),
  bytes: z.number().int().nonnegative(),
  sha256: z.string().regex(/^[0-9a-f]{64}$/),
});

export const manifestSequenceSchema = z.object({
  schema: z.string(),
  name: z.string(),
  /** A number when it is a safe integer, else its decimal text. */
  last_value: z.union([z.number().int(), z.string().regex(/^-?\d+$/)]),
  is_called: z.boolean(),
});

export const manifestFolderSchema = z.object({ files: z.number().int().nonnegative(), bytes: z.number().int().nonnegative() });

export const manifestSchema = z.object({
  format: z.number().int(),
  app: z.object({ name: z.string(), version: z.string() }),
  postgres: z.object({ server_version: z.string() }),
  migrations: z.array(z.string()),
  started_at: z.string(),
  finished_at: z.string(),
  tables: z.array(manifestTableSchema),
  sequences: z.array(manifestSequenceSchema),
  files: z.record(z.string(), manifestFolderSchema),
  file_errors: z.array(z.object({ path: z.string(), error: z.string() })),
});

export type ManifestColumn = z.infer<typeof manifestColumnSchema>;
export type ManifestTable = z.infer<typeof manifestTableSchema>;
export type ManifestSequence = z.infer<typeof manifestSequenceSchema>;
export type ManifestFolder = z.infer<typeof manifestFolderSchema>;
export type Manifest = z.infer<typeof manifestSchema>;
