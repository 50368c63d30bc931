/** Archive format v1's manifest.json (DESIGN §3). Literal keys: operators' tools read them. */

export const ARCHIVE_FORMAT = 1;

export interface ManifestColumn {
  name: string;
  type: string;
}

export interface ManifestTable {
  schema: string;
  name: string;
  entry: string;
  columns: ManifestColumn[];
  rows: number;
  bytes: number;
  sha256: string;
}

export interface ManifestSequence {
  schema: string;
  name: string;
  last_value: string | number;
  is_called: boolean;
}

export interface ManifestFolder {
  files: number;
  bytes: number;
}

export interface Manifest {
  format: number;
  app: { name: string; version: string };
  postgres: { server_version: string };
  migrations: string[];
  started_at: string;
  finished_at: string;
  tables: ManifestTable[];
  sequences: ManifestSequence[];
  files: Record<string, ManifestFolder>;
  file_errors: { path: string; error: string }[];
}

export const APP_NAME = 'coffer';
export const APP_VERSION = '0.1.0';
