/**
 * The JSON shapes of the project rows the API answers with. The routes send the rows as PostgreSQL
 * returns them: bigint and numeric columns arrive as text (no precision lost), timestamptz as a Date
 * that JSON writes as ISO 8601. These schemas validate nothing; they are the OpenAPI document's, and
 * test/http/openapi.test.ts checks real answers against them.
 */
import { z } from 'zod';
import { isoTime } from '../core/time';
import { UPLOAD_KINDS, type UploadKind } from '../storage/uploads';
import { PROJECT_STATUSES } from './projects';

const bigintText = z.string().regex(/^\d+$/).describe('bigint, as decimal text');

export const projectObject = z.object({
  id: z.uuid(),
  name: z.string(),
  tags: z.array(z.string()),
  settings: z.record(z.string(), z.unknown()),
  status: z.enum(PROJECT_STATUSES),
  owner_id: bigintText.nullable().describe('null once the owner account is deleted'),
  lead_finding_id: bigintText.nullable(),
  created_at: isoTime,
  updated_at: isoTime,
});

export const memberObject = z.object({
  user_id: bigintText,
  username: z.string(),
  role: z.enum(['owner', 'member']),
  added_at: isoTime.nullable().describe('null for the owner'),
  added_by: bigintText.nullable(),
});

export const noteObject = z.object({
  id: bigintText,
  project_id: z.uuid(),
  parent_id: bigintText.nullable(),
  title: z.string(),
  body: z.string(),
  position: z.number().int(),
  created_at: isoTime,
});

export const findingObject = z.object({
  id: bigintText,
  project_id: z.uuid(),
  title: z.string(),
  description: z.string(),
  score: z.string().describe('exact decimal, as text'),
  confidence: z.number().nullable(),
  severity: z.enum(['unknown', 'critical', 'high', 'medium', 'low', 'info']).describe('computed by the database from score'),
  reference_code: z.string().nullable(),
  data: z.record(z.string(), z.unknown()),
  created_at: isoTime,
});

export const uploadObject = z.object({
  id: z.uuid(),
  project_id: z.uuid(),
  kind: z.enum(Object.keys(UPLOAD_KINDS) as [UploadKind, ...UploadKind[]]),
  name: z.string().describe('the client\'s file name (base name only), for display'),
  content_type: z.string().describe('as the client declared it for the part'),
  size: bigintText.describe('bytes'),
  sha256: z.string().regex(/^[0-9a-f]{64}$/),
  created_at: isoTime,
});
